//! The Unix socket verdicts: the `connect_unix` and `sendmsg_unix` programs (Linux 6.7+), their
//! allowlist keys and the kernel-side layout they read.
//!
//! aya 0.14 cannot load these (no attach type for them), so this module takes their relocated
//! instructions from the same object aya loaded, with the same map descriptors, and loads and
//! attaches them through `bpf(2)` itself ([`super::bpf_sys`]). A kernel without the attach types
//! refuses the load; [`UnixPrograms::load`] then says why and the guard carries on without them
//! (the launch refuses unless the policy accepts that, see `ServerSpec::unix_optional`).

use std::{
    collections::{HashMap as StdHashMap, HashSet},
    ffi::CString,
    os::fd::{AsFd as _, AsRawFd as _, BorrowedFd, OwnedFd, RawFd},
    path::Path,
    sync::Mutex,
};

use aya::{Ebpf, maps::Map};
use aya_obj::generated::bpf_insn;
use mcp_guard_ebpf::{SockAddrKernLayout, UNIX_PATH_LEN, UnixKey, maps, programs};

use super::{
    bpf_sys::{self, ATTACH_UNIX_CONNECT, ATTACH_UNIX_SENDMSG, PROG_CGROUP_SOCK_ADDR},
    btf_layout::{self, MemberType},
};

/// The programs, each with the attach type it was loaded for.
const PROGRAMS: [(&str, u32); 2] = [
    (programs::CONNECT_UNIX, ATTACH_UNIX_CONNECT),
    (programs::SENDMSG_UNIX, ATTACH_UNIX_SENDMSG),
];

/// A socket a server may reach, as the policy names it: an absolute path, or `@name` for an
/// abstract socket.
pub fn key(cgroup: u64, socket: &str) -> Result<UnixKey, String> {
    let mut key = UnixKey {
        cgroup,
        len: 0,
        path: [0; UNIX_PATH_LEN],
    };
    let bytes: Vec<u8> = match socket.strip_prefix('@') {
        Some(name) if !name.is_empty() => {
            let mut b = vec![0u8];
            b.extend_from_slice(name.as_bytes());
            b
        }
        Some(_) => {
            return Err(format!(
                "{socket:?}: an abstract name needs at least one byte"
            ));
        }
        None if socket.starts_with('/') && !socket.contains('\0') => socket.as_bytes().to_vec(),
        None => {
            return Err(format!(
                "{socket:?}: not an absolute path or @abstract name"
            ));
        }
    };
    if bytes.len() > UNIX_PATH_LEN {
        return Err(format!(
            "{socket:?}: longer than the {UNIX_PATH_LEN} bytes a Unix socket address holds"
        ));
    }
    key.path[..bytes.len()].copy_from_slice(&bytes);
    // A path is matched by its bytes alone; an abstract name by its length too (NULs count).
    #[expect(
        clippy::cast_possible_truncation,
        reason = "at most UNIX_PATH_LEN, checked above"
    )]
    let len = bytes.len() as u32;
    key.len = if bytes[0] == 0 { len } else { 0 };
    Ok(key)
}

/// How an address the kernel judged (`path` and `len` as in [`UnixKey`]) is shown: the path,
/// or `@` and the abstract name (NUL bytes inside it shown as `@`, as `ss` does); empty when the
/// kernel could not read it.
pub fn display(path: &[u8], len: u32) -> String {
    match path.split_first() {
        Some((0, _)) if len == 0 => String::new(),
        Some((0, name)) => {
            let name = &name[..(len as usize).saturating_sub(1).min(name.len())];
            let shown: Vec<u8> = name
                .iter()
                .map(|&b| if b == 0 { b'@' } else { b })
                .collect();
            format!("@{}", String::from_utf8_lossy(&shown))
        }
        _ => {
            let end = memchr::memchr(0, path).unwrap_or(path.len());
            String::from_utf8_lossy(&path[..end]).into_owned()
        }
    }
}

/// Where `struct bpf_sock_addr_kern` keeps the address (`uaddr`) and its length (`uaddrlen`,
/// added with the unix attach types in 6.7), from the kernel's BTF (read once per process).
pub fn kernel_layout() -> Result<SockAddrKernLayout, String> {
    static LAYOUT: std::sync::OnceLock<Result<SockAddrKernLayout, String>> =
        std::sync::OnceLock::new();
    LAYOUT.get_or_init(read_layout).clone()
}

fn read_layout() -> Result<SockAddrKernLayout, String> {
    let btf = btf_layout::Btf::parse(btf_layout::vmlinux()?)?;
    let m = btf.struct_members("bpf_sock_addr_kern", &["uaddr", "uaddrlen"])?;
    if m[0].ty != MemberType::Pointer || m[1].ty != MemberType::Int(4) {
        return Err(format!(
            "bpf_sock_addr_kern has an unexpected layout (uaddr {:?}, uaddrlen {:?})",
            m[0].ty, m[1].ty
        ));
    }
    // The program masks the offsets to a byte; a struct that large would be a surprise.
    if m[0].offset > 0xf8 || m[1].offset > 0xfc {
        return Err("bpf_sock_addr_kern's address members lie past byte 252".into());
    }
    Ok(SockAddrKernLayout {
        valid: 1,
        uaddr: m[0].offset,
        uaddrlen: m[1].offset,
        pad: 0,
    })
}

/// Whether this kernel can run the unix programs: it knows their attach types (a two-instruction
/// program loads for them) and its BTF describes the context they read. Cheap: for a launch to
/// say what it runs without before it starts.
pub fn probe() -> Result<(), String> {
    PROBED.get_or_init(probe_kernel).clone()
}

/// [`probe`]'s answer in this process, once known.
static PROBED: std::sync::OnceLock<Result<(), String>> = std::sync::OnceLock::new();

/// Takes [`probe`]'s answer from whoever already asked this kernel (a session worker from the
/// agent that started it), so this process does not parse the kernel's BTF again. No effect
/// once this process has its own answer.
pub fn assume_probe(answer: Result<(), String>) {
    let _ = PROBED.set(answer);
}

fn probe_kernel() -> Result<(), String> {
    // The attach types first: on an older kernel that is the reason to give.
    let insn = |code: u8, imm: i32| bpf_insn {
        code,
        _bitfield_align_1: [],
        _bitfield_1: bpf_insn::new_bitfield_1(0, 0),
        off: 0,
        imm,
    };
    // r0 = 1 (allow); exit.
    let trivial = [insn(0xb7, 1), insn(0x95, 0)];
    for (name, attach) in PROGRAMS {
        bpf_sys::prog_load(name, PROG_CGROUP_SOCK_ADDR, attach, &trivial, c"GPL").map_err(|e| {
            format!("this kernel has no cgroup {name} attach type (Linux 6.7+): {e}")
        })?;
    }
    kernel_layout().map(drop)
}

/// The loaded unix programs, and (unpinned) the attachments made with them.
pub(crate) struct UnixPrograms {
    progs: Vec<(&'static str, u32, OwnedFd)>,
    /// Links of a guard that pins nothing: they detach when it is dropped.
    links: Mutex<Vec<OwnedFd>>,
}

/// The descriptor of a map aya created, for the variants this object uses.
fn map_fd(map: &Map) -> Option<RawFd> {
    let (Map::Array(data)
    | Map::HashMap(data)
    | Map::LpmTrie(data)
    | Map::PerCpuArray(data)
    | Map::PerCpuHashMap(data)
    | Map::LruHashMap(data)
    | Map::RingBuf(data)) = map
    else {
        return None;
    };
    Some(data.fd().as_fd().as_raw_fd())
}

/// Both programs' instructions, relocated against a loaded object's maps and ready for the
/// verifier: plain data, so [`UnixPrograms::verify`] can run in a thread of its own while the
/// object's other programs are verified.
pub(crate) struct RelocatedUnix {
    progs: Vec<(&'static str, u32, Vec<bpf_insn>, CString)>,
}

impl UnixPrograms {
    /// Loads both programs from `object` (the object `ebpf` was loaded from), relocated
    /// against `ebpf`'s maps, and writes the kernel layout they read. Call it before any map is
    /// taken out of `ebpf`. `Err`: why this kernel cannot run them.
    pub(crate) fn load(ebpf: &mut Ebpf, object: &[u8]) -> Result<Self, String> {
        Self::relocate(ebpf, object)?.verify()
    }

    /// The first half of [`Self::load`], the one that needs `ebpf`: relocates both programs
    /// against its maps and writes the kernel layout they read.
    pub(crate) fn relocate(ebpf: &mut Ebpf, object: &[u8]) -> Result<RelocatedUnix, String> {
        probe()?;
        let layout = kernel_layout()?;
        let mut obj = aya_obj::Object::parse(object).map_err(|e| format!("parsing: {e}"))?;
        // As aya does: every function's section, so calls are told from map references.
        let text_sections: HashSet<usize> = obj.functions.keys().map(|(s, _)| *s).collect();
        let wanted: Vec<&str> = PROGRAMS.iter().map(|(n, _)| *n).collect();
        let others: HashSet<String> = obj
            .programs
            .keys()
            .filter(|n| !wanted.contains(&n.as_str()))
            .cloned()
            .collect();
        // Only these programs and the shared functions are relocated (aya relocated the rest).
        obj.programs
            .retain(|name, _| wanted.contains(&name.as_str()));
        obj.functions.retain(|_, f| !others.contains(&f.name));
        let fds: StdHashMap<String, RawFd> = ebpf
            .maps()
            .filter_map(|(name, map)| Some((name.to_string(), map_fd(map)?)))
            .collect();
        let maps: Vec<(&str, RawFd, &aya_obj::Map)> = obj
            .maps
            .iter()
            .filter_map(|(name, m)| Some((name.as_str(), *fds.get(name)?, m)))
            .collect();
        // `relocate_maps` borrows the object mutably while the map definitions are borrowed
        // from it: relocate a copy.
        let mut reloc = obj.clone();
        reloc
            .relocate_maps(maps.into_iter(), &text_sections)
            .map_err(|e| format!("relocating maps: {e}"))?;
        reloc
            .relocate_calls(&text_sections)
            .map_err(|e| format!("relocating calls: {e}"))?;
        let map = ebpf
            .map_mut(maps::UNIX_LAYOUT)
            .ok_or(format!("the eBPF object has no map {}", maps::UNIX_LAYOUT))?;
        let mut array: aya::maps::Array<&mut aya::maps::MapData, SockAddrKernLayout> =
            aya::maps::Array::try_from(map).map_err(|e| e.to_string())?;
        array.set(0, layout, 0).map_err(|e| e.to_string())?;
        let mut progs = Vec::new();
        for (name, attach) in PROGRAMS {
            let program = reloc
                .programs
                .get(name)
                .ok_or(format!("the eBPF object has no program {name}"))?;
            let function = reloc
                .functions
                .get(&program.function_key())
                .ok_or(format!("the eBPF object has no code for {name}"))?;
            progs.push((
                name,
                attach,
                function.instructions.clone(),
                program.license.clone(),
            ));
        }
        Ok(RelocatedUnix { progs })
    }
}

impl RelocatedUnix {
    /// The second half of [`UnixPrograms::load`]: hands both programs to the verifier.
    pub(crate) fn verify(self) -> Result<UnixPrograms, String> {
        let mut progs = Vec::new();
        for (name, attach, insns, license) in self.progs {
            let fd = bpf_sys::prog_load(name, PROG_CGROUP_SOCK_ADDR, attach, &insns, &license)
                .map_err(|e| format!("loading {name}: {e}"))?;
            progs.push((name, attach, fd));
        }
        Ok(UnixPrograms {
            progs,
            links: Mutex::default(),
        })
    }
}

impl UnixPrograms {
    /// Attaches both programs to `cgroup`. With `pins`, each link is pinned there (named after
    /// its program) and outlives this process; without, it lives as long as `self`.
    pub(crate) fn attach(&self, cgroup: BorrowedFd<'_>, pins: Option<&Path>) -> Result<(), String> {
        for (name, attach, prog) in &self.progs {
            let link = bpf_sys::link_create(prog.as_fd(), cgroup, *attach)
                .map_err(|e| format!("attaching {name}: {e}"))?;
            match pins {
                Some(dir) => {
                    let path = dir.join(name);
                    let _ = std::fs::remove_file(&path);
                    bpf_sys::obj_pin(link.as_fd(), &path)
                        .map_err(|e| format!("pinning {}: {e}", path.display()))?;
                }
                None => self
                    .links
                    .lock()
                    .unwrap_or_else(std::sync::PoisonError::into_inner)
                    .push(link),
            }
        }
        Ok(())
    }

    /// The verifier's instruction count for the program `name` (see [`bpf_sys::verified_insns`]).
    pub(crate) fn verified_insns(&self, name: &str) -> Option<u32> {
        let (_, _, fd) = self.progs.iter().find(|(n, _, _)| *n == name)?;
        bpf_sys::verified_insns(fd.as_fd())
    }

    /// The programs [`Self::pin_programs`] pinned in `dir`, opened again (a standalone exec's
    /// verified set, see `loader::slots`).
    pub(crate) fn from_pins(dir: &Path) -> Result<Self, String> {
        let mut progs = Vec::new();
        for (name, attach) in PROGRAMS {
            let path = dir.join(format!("prog_{name}"));
            let fd =
                bpf_sys::obj_get(&path).map_err(|e| format!("opening {}: {e}", path.display()))?;
            progs.push((name, attach, fd));
        }
        Ok(UnixPrograms {
            progs,
            links: Mutex::default(),
        })
    }

    /// Where each program is pinned in `dir` by [`Self::pin_programs`].
    pub(crate) fn pin_paths(dir: &Path) -> impl Iterator<Item = std::path::PathBuf> {
        PROGRAMS
            .into_iter()
            .map(move |(name, _)| dir.join(format!("prog_{name}")))
    }

    /// Pins the programs in `dir` (as `prog_<name>`), for inspection with bpftool.
    pub(crate) fn pin_programs(&self, dir: &Path) -> Result<(), String> {
        for (name, _, prog) in &self.progs {
            let path = dir.join(format!("prog_{name}"));
            let _ = std::fs::remove_file(&path);
            bpf_sys::obj_pin(prog.as_fd(), &path)
                .map_err(|e| format!("pinning {}: {e}", path.display()))?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn policy_entries_become_keys_and_back() {
        let k = key(7, "/run/postgresql/.s.PGSQL.5432").expect("a path");
        assert_eq!(
            (k.len, &k.path[..30]),
            (0, &b"/run/postgresql/.s.PGSQL.5432\0"[..])
        );
        assert_eq!(display(&k.path, k.len), "/run/postgresql/.s.PGSQL.5432");
        let a = key(7, "@my-name").expect("abstract");
        assert_eq!((a.len, a.path[0], &a.path[1..8]), (8, 0, &b"my-name"[..]));
        assert_eq!(display(&a.path, a.len), "@my-name");
        assert_eq!(display(b"\0a\0b\0\0", 4), "@a@b");
        assert_eq!(display(&[0; 8], 0), "", "unreadable");
        assert!(key(7, "@").is_err());
        assert!(key(7, "relative.sock").is_err());
        assert!(key(7, &format!("/{}", "x".repeat(UNIX_PATH_LEN))).is_err());
        assert!(key(7, &format!("/{}", "x".repeat(UNIX_PATH_LEN - 1))).is_ok());
    }

    #[test]
    fn the_running_kernel_runs_them() {
        // SAFETY: geteuid has no preconditions.
        if unsafe { libc::geteuid() } == 0 {
            assert_eq!(probe(), Ok(()));
        }
    }

    #[test]
    fn the_running_kernel_has_the_layout() {
        let l = kernel_layout().expect("a 6.7+ kernel with BTF");
        assert_eq!(l.valid, 1);
        assert!(l.uaddr > 0 && l.uaddrlen > l.uaddr, "{l:?}");
    }
}
