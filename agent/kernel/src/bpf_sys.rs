//! The few `bpf(2)` commands mcp-guard issues itself, for programs aya 0.14 cannot load or attach:
//! its `CgroupSockAddrAttachType` has no `connect_unix`/`sendmsg_unix` (attach types 49 and 50),
//! and the expected attach type must be given at load (the kernel refuses to attach a
//! `cgroup_sock_addr` program anywhere else).

use std::{
    ffi::{CStr, CString},
    io,
    os::fd::{AsRawFd as _, BorrowedFd, FromRawFd as _, OwnedFd},
    path::Path,
};

use aya_obj::generated::{bpf_insn, bpf_prog_info};

const BPF_PROG_LOAD: libc::c_long = 5;
const BPF_OBJ_PIN: libc::c_long = 6;
const BPF_OBJ_GET: libc::c_long = 7;
const BPF_OBJ_GET_INFO_BY_FD: libc::c_long = 15;
const BPF_LINK_CREATE: libc::c_long = 28;

/// `BPF_PROG_TYPE_CGROUP_SOCK_ADDR`.
pub(crate) const PROG_CGROUP_SOCK_ADDR: u32 = 18;
/// `BPF_CGROUP_UNIX_CONNECT` (Linux 6.7).
pub(crate) const ATTACH_UNIX_CONNECT: u32 = 49;
/// `BPF_CGROUP_UNIX_SENDMSG` (Linux 6.7).
pub(crate) const ATTACH_UNIX_SENDMSG: u32 = 50;

/// The leading part of `union bpf_attr` for `BPF_PROG_LOAD`, up to `attach_prog_fd`; the kernel
/// zero-fills the fields after `size_of` bytes. Padding is explicit so no byte is uninitialised.
/// The doctor's hand-assembled probe programs load with it too.
#[repr(C)]
#[derive(Default)]
pub struct ProgLoadAttr {
    pub prog_type: u32,
    pub insn_cnt: u32,
    pub insns: u64,
    pub license: u64,
    pub log_level: u32,
    pub log_size: u32,
    pub log_buf: u64,
    pub kern_version: u32,
    pub prog_flags: u32,
    pub prog_name: [u8; 16],
    pub prog_ifindex: u32,
    pub expected_attach_type: u32,
    pub prog_btf_fd: u32,
    pub func_info_rec_size: u32,
    pub func_info: u64,
    pub func_info_cnt: u32,
    pub line_info_rec_size: u32,
    pub line_info: u64,
    pub line_info_cnt: u32,
    pub attach_btf_id: u32,
    pub attach_prog_fd: u32,
    /// Explicit padding to the next 8 bytes; always zero.
    pub pad: u32,
}

/// `union bpf_attr` for `BPF_LINK_CREATE` with no target-specific options.
#[repr(C)]
#[derive(Default)]
struct LinkCreateAttr {
    prog_fd: u32,
    target_fd: u32,
    attach_type: u32,
    flags: u32,
}

/// `union bpf_attr` for `BPF_OBJ_PIN`.
#[repr(C)]
#[derive(Default)]
struct ObjPinAttr {
    pathname: u64,
    bpf_fd: u32,
    file_flags: u32,
}

/// `union bpf_attr` for `BPF_OBJ_GET_INFO_BY_FD`.
#[repr(C)]
#[derive(Default)]
struct InfoAttr {
    bpf_fd: u32,
    info_len: u32,
    info: u64,
}

/// Issues `cmd` with `attr`; the raw return value.
fn sys_bpf<T>(cmd: libc::c_long, attr: &mut T) -> io::Result<libc::c_long> {
    // SAFETY: `attr` is a live, fully initialised #[repr(C)] prefix of `union bpf_attr` for `cmd`
    // and we pass its exact size; every pointer inside it outlives the call.
    let ret = unsafe {
        libc::syscall(
            libc::SYS_bpf,
            cmd,
            std::ptr::from_mut(attr),
            std::mem::size_of::<T>(),
        )
    };
    if ret < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(ret)
}

/// A new descriptor returned by a successful `bpf(2)` command.
#[expect(
    clippy::cast_possible_truncation,
    reason = "bpf(2) returns an fd, an int, in a long"
)]
fn owned(ret: libc::c_long) -> OwnedFd {
    // SAFETY: PROG_LOAD, LINK_CREATE and OBJ_GET return a new fd on success that nothing else owns.
    unsafe { OwnedFd::from_raw_fd(ret as i32) }
}

/// Why a program did not load: the errno and the verifier's log.
#[derive(Debug)]
pub(crate) struct LoadError {
    /// What the kernel returned.
    pub error: io::Error,
    /// The verifier log (empty when the kernel refused before verifying).
    pub log: String,
}

impl std::fmt::Display for LoadError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        if self.log.is_empty() {
            write!(f, "{}", self.error)
        } else {
            // The verifier's conclusion is at the end.
            let tail: Vec<&str> = self.log.lines().rev().take(12).collect();
            let tail: Vec<&str> = tail.into_iter().rev().collect();
            write!(f, "{}; verifier: {}", self.error, tail.join(" | "))
        }
    }
}

/// Loads `insns` as a program of `prog_type` that expects `expected_attach_type`.
pub(crate) fn prog_load(
    name: &str,
    prog_type: u32,
    expected_attach_type: u32,
    insns: &[bpf_insn],
    license: &CStr,
) -> Result<OwnedFd, LoadError> {
    let mut prog_name = [0u8; 16];
    for (dst, src) in prog_name.iter_mut().zip(name.bytes().take(15)) {
        *dst = src;
    }
    let too_big = |_| io::Error::from(io::ErrorKind::InvalidInput);
    let attempt = |log: &mut [u8]| {
        let mut attr = ProgLoadAttr {
            prog_type,
            insn_cnt: u32::try_from(insns.len()).map_err(too_big)?,
            insns: insns.as_ptr() as u64,
            license: license.as_ptr() as u64,
            log_level: u32::from(!log.is_empty()),
            log_size: u32::try_from(log.len()).map_err(too_big)?,
            log_buf: if log.is_empty() {
                0
            } else {
                log.as_mut_ptr() as u64
            },
            prog_name,
            expected_attach_type,
            ..ProgLoadAttr::default()
        };
        sys_bpf(BPF_PROG_LOAD, &mut attr).map(owned)
    };
    // Without a log first: a verifier log costs verification time and memory.
    match attempt(&mut []) {
        Ok(fd) => Ok(fd),
        Err(error) => {
            let mut log = vec![0u8; 1 << 20];
            let _ = attempt(&mut log);
            let log = CStr::from_bytes_until_nul(&log)
                .map(|c| c.to_string_lossy().trim().to_string())
                .unwrap_or_default();
            Err(LoadError { error, log })
        }
    }
}

/// Attaches `prog` to the cgroup `cgroup` at `attach_type` through a `bpf_link` (which coexists
/// with other programs there); closing the link, or unpinning it, detaches.
pub(crate) fn link_create(
    prog: BorrowedFd<'_>,
    cgroup: BorrowedFd<'_>,
    attach_type: u32,
) -> io::Result<OwnedFd> {
    let mut attr = LinkCreateAttr {
        prog_fd: prog.as_raw_fd().cast_unsigned(),
        target_fd: cgroup.as_raw_fd().cast_unsigned(),
        attach_type,
        flags: 0,
    };
    sys_bpf(BPF_LINK_CREATE, &mut attr).map(owned)
}

/// Pins a program or link at `path` on bpffs.
pub(crate) fn obj_pin(fd: BorrowedFd<'_>, path: &Path) -> io::Result<()> {
    let c = CString::new(path.as_os_str().as_encoded_bytes())
        .map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "NUL in a pin path"))?;
    let mut attr = ObjPinAttr {
        pathname: c.as_ptr() as u64,
        bpf_fd: fd.as_raw_fd().cast_unsigned(),
        file_flags: 0,
    };
    sys_bpf(BPF_OBJ_PIN, &mut attr).map(drop)
}

/// Opens the object pinned at `path` on bpffs (the caller needs read and write access to it).
pub(crate) fn obj_get(path: &Path) -> io::Result<OwnedFd> {
    let c = CString::new(path.as_os_str().as_encoded_bytes())
        .map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "NUL in a pin path"))?;
    let mut attr = ObjPinAttr {
        pathname: c.as_ptr() as u64,
        bpf_fd: 0,
        file_flags: 0,
    };
    sys_bpf(BPF_OBJ_GET, &mut attr).map(owned)
}

/// How many instructions the verifier processed for the program `prog` (Linux 5.16+; `None`
/// before, or when the kernel does not say).
pub(crate) fn verified_insns(prog: BorrowedFd<'_>) -> Option<u32> {
    // SAFETY: `bpf_prog_info` is plain integers and a bitfield: all zeroes is a valid value.
    let mut info: bpf_prog_info = unsafe { std::mem::zeroed() };
    #[expect(
        clippy::cast_possible_truncation,
        reason = "the size of a kernel struct, a __u32"
    )]
    let mut attr = InfoAttr {
        bpf_fd: prog.as_raw_fd().cast_unsigned(),
        info_len: std::mem::size_of::<bpf_prog_info>() as u32,
        info: std::ptr::from_mut(&mut info) as u64,
    };
    // The kernel writes at most `info_len` bytes (fewer when its struct is older) into `info`.
    sys_bpf(BPF_OBJ_GET_INFO_BY_FD, &mut attr).ok()?;
    (info.verified_insns > 0).then_some(info.verified_insns)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn attrs_have_the_kernel_layout() {
        // expected_attach_type sits at byte 68 of union bpf_attr for BPF_PROG_LOAD.
        assert_eq!(std::mem::offset_of!(ProgLoadAttr, expected_attach_type), 68);
        // attach_btf_id sits at byte 108 of union bpf_attr for BPF_PROG_LOAD.
        assert_eq!(std::mem::offset_of!(ProgLoadAttr, attach_btf_id), 108);
        assert_eq!(std::mem::size_of::<LinkCreateAttr>(), 16);
        assert_eq!(std::mem::size_of::<ObjPinAttr>(), 16);
        assert_eq!(std::mem::size_of::<bpf_insn>(), 8);
    }
}
