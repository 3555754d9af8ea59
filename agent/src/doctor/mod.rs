//! `mcp-guard doctor`: probes what this host supports, for real, and what that means for
//! enforcement.
//!
//! [`probe`] runs every probe and returns plain data that other modules (exec, to decide whether
//! to fail closed) can query with [`Report::is_available`]; [`run`] prints it for humans or as
//! JSON lines. Probes load and attach tiny programs, create and remove a temporary cgroup, and
//! fork short-lived children; nothing is left behind.

mod bpf;
mod host;
mod promises;

use std::{
    ffi::CString,
    io::{IsTerminal as _, Write as _},
    os::fd::{AsRawFd as _, FromRawFd as _, OwnedFd},
    path::{Path, PathBuf},
    process::ExitCode,
};

use serde::Serialize;

/// Everything the doctor checks. The JSON `capability` field is [`CapabilityId::name`].
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum CapabilityId {
    /// Running as root / the effective capabilities mcp-guard uses.
    Privileges,
    /// Kernel BTF at /sys/kernel/btf/vmlinux.
    Btf,
    /// tracefs mounted (mounted by the doctor when it was not).
    Tracefs,
    /// mcp-guard's own embedded eBPF programs load.
    EbpfObject,
    /// cgroup_sock_addr programs load, attach to a cgroup and judge a connect.
    CgroupSockAddr,
    /// The `connect_unix`/`sendmsg_unix` attach types (Linux 6.7+) for Unix socket verdicts.
    CgroupUnix,
    /// Tracepoint programs load and attach.
    Tracepoint,
    /// Raw tracepoint programs load and attach.
    RawTracepoint,
    /// BTF-typed raw tracepoints (tp_btf) load and attach.
    TpBtf,
    /// `bpf_send_signal` from tp_btf/sys_enter really kills a task.
    SendSignal,
    /// BPF LSM programs load and attach.
    Lsm,
    /// Ring buffer maps.
    Ringbuf,
    /// LPM trie maps.
    LpmTrie,
    /// Hash maps.
    HashMap,
    /// Landlock.
    Landlock,
    /// seccomp filter mode.
    Seccomp,
    /// A cgroup v2 hierarchy where cgroups can be created.
    CgroupV2,
    /// memory, pids and cpu controllers (v2 or v1) for `[limits]`.
    CgroupControllers,
    /// mount, pid, ipc and uts namespaces can be created.
    Namespaces,
    /// User namespaces can be created.
    UserNamespaces,
    /// A Docker-Engine-API endpoint answers (for the container backend).
    ContainerEngine,
    /// An mcp-guard agent listens on its socket (exec then hands sessions to it).
    Agent,
}

impl CapabilityId {
    /// Every capability, in report order.
    pub const ALL: [CapabilityId; 22] = [
        Self::Privileges,
        Self::Btf,
        Self::Tracefs,
        Self::EbpfObject,
        Self::CgroupSockAddr,
        Self::CgroupUnix,
        Self::Tracepoint,
        Self::RawTracepoint,
        Self::TpBtf,
        Self::SendSignal,
        Self::Lsm,
        Self::Ringbuf,
        Self::LpmTrie,
        Self::HashMap,
        Self::Landlock,
        Self::Seccomp,
        Self::CgroupV2,
        Self::CgroupControllers,
        Self::Namespaces,
        Self::UserNamespaces,
        Self::ContainerEngine,
        Self::Agent,
    ];

    /// The stable name used in output and JSON.
    pub fn name(self) -> &'static str {
        match self {
            Self::Privileges => "privileges",
            Self::Btf => "btf",
            Self::Tracefs => "tracefs",
            Self::EbpfObject => "ebpf_object",
            Self::CgroupSockAddr => "cgroup_sock_addr",
            Self::CgroupUnix => "cgroup_unix",
            Self::Tracepoint => "tracepoint",
            Self::RawTracepoint => "raw_tracepoint",
            Self::TpBtf => "tp_btf",
            Self::SendSignal => "send_signal",
            Self::Lsm => "lsm",
            Self::Ringbuf => "ringbuf",
            Self::LpmTrie => "lpm_trie",
            Self::HashMap => "hash_map",
            Self::Landlock => "landlock",
            Self::Seccomp => "seccomp",
            Self::CgroupV2 => "cgroup_v2",
            Self::CgroupControllers => "cgroup_controllers",
            Self::Namespaces => "namespaces",
            Self::UserNamespaces => "user_namespaces",
            Self::ContainerEngine => "container_engine",
            Self::Agent => "agent",
        }
    }

    /// Whether full enforcement needs it (the others only add to it or enable a backend).
    /// `cgroup_unix` is not: without it, what `[network] unix` promises is refused per launch.
    pub fn required(self) -> bool {
        !matches!(
            self,
            Self::Lsm
                | Self::CgroupUnix
                | Self::UserNamespaces
                | Self::ContainerEngine
                | Self::Agent
        )
    }
}

/// The outcome of one probe.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Status {
    /// Probed and works.
    Available,
    /// Probed and refused or missing (or the probe could not run at all).
    Unavailable,
    /// Works only in part.
    Degraded,
}

impl Status {
    /// The lowercase word used in output.
    pub fn word(self) -> &'static str {
        match self {
            Self::Available => "available",
            Self::Unavailable => "unavailable",
            Self::Degraded => "degraded",
        }
    }
}

/// One capability's result.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Check {
    /// What was checked.
    pub id: CapabilityId,
    /// The outcome.
    pub status: Status,
    /// What was measured (with the errno when refused).
    pub detail: String,
    /// What mcp-guard does because of it.
    pub consequence: String,
}

/// Every probe's result.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Report {
    /// One check per capability, in [`CapabilityId::ALL`] order.
    pub checks: Vec<Check>,
}

impl Report {
    /// The check for `id`.
    pub fn get(&self, id: CapabilityId) -> Option<&Check> {
        self.checks.iter().find(|c| c.id == id)
    }

    /// Whether `id` was probed and is fully available.
    pub fn is_available(&self, id: CapabilityId) -> bool {
        self.get(id).is_some_and(|c| c.status == Status::Available)
    }

    /// Required capabilities that are not fully available.
    pub fn missing(&self) -> Vec<CapabilityId> {
        CapabilityId::ALL
            .into_iter()
            .filter(|id| id.required() && !self.is_available(*id))
            .collect()
    }

    /// Whether the host can run mcp-guard's full enforcement.
    pub fn ok(&self) -> bool {
        self.missing().is_empty()
    }
}

/// A refused system call: its errno and, for BPF loads, the verifier log.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Errno {
    /// The errno value.
    pub errno: i32,
    /// The verifier log of a BPF load (empty when the kernel gave none); `None` for other calls.
    pub log: Option<String>,
}

impl Errno {
    /// The calling thread's last errno.
    fn last() -> Self {
        Self::bare(host::errno())
    }

    fn bare(errno: i32) -> Self {
        Self { errno, log: None }
    }
}

impl std::fmt::Display for Errno {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}", errno_name(self.errno))?;
        let Some(log) = &self.log else {
            return Ok(());
        };
        // The verifier's reason is the last line before its statistics.
        let reason = log.lines().rev().map(str::trim).find(|l| {
            !l.is_empty() && !l.starts_with("processed ") && !l.starts_with("verification time")
        });
        match reason {
            Some(line) => write!(f, ", verifier: {line:?}"),
            None => write!(f, ", empty verifier log"),
        }
    }
}

/// `EPERM`-style name of an errno (the number for rare ones).
pub fn errno_name(errno: i32) -> String {
    let name = match errno {
        libc::EPERM => "EPERM",
        libc::ENOENT => "ENOENT",
        libc::EINTR => "EINTR",
        libc::E2BIG => "E2BIG",
        libc::EBADF => "EBADF",
        libc::EAGAIN => "EAGAIN",
        libc::ENOMEM => "ENOMEM",
        libc::EACCES => "EACCES",
        libc::EFAULT => "EFAULT",
        libc::EBUSY => "EBUSY",
        libc::EEXIST => "EEXIST",
        libc::ENODEV => "ENODEV",
        libc::EINVAL => "EINVAL",
        libc::ENOSPC => "ENOSPC",
        libc::EROFS => "EROFS",
        libc::ENOSYS => "ENOSYS",
        libc::EOPNOTSUPP => "EOPNOTSUPP",
        libc::ECONNREFUSED => "ECONNREFUSED",
        libc::EUSERS => "EUSERS",
        524 => "ENOTSUPP",
        _ => return format!("errno {errno}"),
    };
    name.to_string()
}

fn io_errno(e: &std::io::Error) -> String {
    match e.raw_os_error() {
        Some(n) => errno_name(n),
        None => e.to_string(),
    }
}

/// Collects checks in order; a check not recorded by the end is reported as not probed.
struct Builder {
    checks: Vec<Check>,
}

impl Builder {
    fn put(&mut self, id: CapabilityId, status: Status, detail: String, consequence: &str) {
        self.checks.push(Check {
            id,
            status,
            detail,
            consequence: consequence.to_string(),
        });
    }

    fn finish(mut self) -> Report {
        let checks = CapabilityId::ALL
            .into_iter()
            .map(|id| match self.checks.iter().position(|c| c.id == id) {
                Some(i) => self.checks.swap_remove(i),
                None => Check {
                    id,
                    status: Status::Unavailable,
                    detail: "not probed".to_string(),
                    consequence: "treated as missing".to_string(),
                },
            })
            .collect();
        Report { checks }
    }
}

/// Runs every probe on this host and returns the results.
pub fn probe() -> Report {
    let mut b = Builder { checks: Vec::new() };
    let mounts = crate::mounts::read().unwrap_or_default();
    probe_privileges(&mut b);
    let btf = probe_btf(&mut b);
    let tracefs = probe_tracefs(&mut b, &mounts);
    probe_tracepoint(&mut b, tracefs.as_deref());
    probe_raw_tracepoint(&mut b);
    probe_tp_btf(&mut b, btf.as_ref());
    probe_send_signal(&mut b, btf.as_ref());
    probe_lsm(&mut b, btf.as_ref());
    probe_maps(&mut b);
    probe_cgroups(&mut b, &mounts);
    probe_cgroup_unix(&mut b);
    probe_landlock(&mut b);
    probe_seccomp(&mut b);
    probe_namespaces(&mut b);
    probe_container_engine(&mut b);
    probe_agent(&mut b);
    b.finish()
}

fn probe_privileges(b: &mut Builder) {
    // SAFETY: geteuid has no preconditions and cannot fail.
    let euid = unsafe { libc::geteuid() };
    let eff = std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| host::parse_cap_eff(&s));
    let Some(eff) = eff else {
        b.put(
            CapabilityId::Privileges,
            Status::Unavailable,
            format!("euid {euid}; CapEff unreadable in /proc/self/status"),
            "cannot tell whether eBPF, cgroups and namespaces are permitted; run as root",
        );
        return;
    };
    let has = |bit: u32| eff & (1u64 << bit) != 0;
    let present: Vec<&str> = host::CAPS
        .iter()
        .filter(|(_, bit)| has(*bit))
        .map(|(n, _)| *n)
        .collect();
    let missing: Vec<&str> = host::CAPS
        .iter()
        .filter(|(_, bit)| !has(*bit))
        .map(|(n, _)| *n)
        .collect();
    let detail = format!(
        "euid {euid}, CapEff {eff:#x}: {}{}",
        present.join(" "),
        if missing.is_empty() {
            String::new()
        } else {
            format!("; missing {}", missing.join(" "))
        }
    );
    if missing.is_empty() {
        b.put(
            CapabilityId::Privileges,
            Status::Available,
            detail,
            "can load eBPF, manage cgroups, create namespaces and drop privileges for servers",
        );
    } else if present.is_empty() {
        b.put(
            CapabilityId::Privileges,
            Status::Unavailable,
            detail,
            "exec refuses to launch enforced servers (77); run mcp-guard as root",
        );
    } else {
        b.put(
            CapabilityId::Privileges,
            Status::Degraded,
            detail,
            "enforcements needing the missing capabilities are refused (77); run as root",
        );
    }
}

/// Parsed kernel BTF with the type ids the BTF-typed probes attach to.
struct KernelBtf {
    sys_enter: Option<u32>,
    lsm_file_open: Option<u32>,
}

fn probe_btf(b: &mut Builder) -> Option<KernelBtf> {
    use aya_obj::btf::{Btf, BtfKind};
    let path = Path::new("/sys/kernel/btf/vmlinux");
    let size = match std::fs::metadata(path) {
        Ok(m) => m.len(),
        Err(e) => {
            b.put(
                CapabilityId::Btf,
                Status::Unavailable,
                format!("{}: {}", path.display(), io_errno(&e)),
                "tp_btf programs cannot load: no file-access kills; needs CONFIG_DEBUG_INFO_BTF",
            );
            return None;
        }
    };
    match Btf::from_sys_fs() {
        Ok(btf) => {
            let sys_enter = btf
                .id_by_type_name_kind("btf_trace_sys_enter", BtfKind::Typedef)
                .ok();
            let lsm_file_open = btf
                .id_by_type_name_kind("bpf_lsm_file_open", BtfKind::Func)
                .ok();
            b.put(
                CapabilityId::Btf,
                Status::Available,
                format!(
                    "{} parsed ({} KiB); btf_trace_sys_enter {}",
                    path.display(),
                    size / 1024,
                    sys_enter.map_or("not found".to_string(), |id| format!("id {id}"))
                ),
                "tp_btf programs can read typed tracepoint arguments",
            );
            Some(KernelBtf {
                sys_enter,
                lsm_file_open,
            })
        }
        Err(e) => {
            b.put(
                CapabilityId::Btf,
                Status::Unavailable,
                format!("{} present but does not parse: {e}", path.display()),
                "tp_btf programs cannot load: no file-access kills",
            );
            None
        }
    }
}

/// Finds tracefs, mounting it at /sys/kernel/tracing when it is not mounted anywhere.
fn probe_tracefs(b: &mut Builder, mounts: &[crate::mounts::Mount]) -> Option<PathBuf> {
    const CONSEQUENCE: &str = "syscall tracepoints can be attached by name";
    if let Some(m) = mounts.iter().find(|m| m.fstype == "tracefs") {
        b.put(
            CapabilityId::Tracefs,
            Status::Available,
            format!("mounted at {}", m.mount_point.display()),
            CONSEQUENCE,
        );
        return Some(m.mount_point.clone());
    }
    let target = Path::new("/sys/kernel/tracing");
    let mounted = nix::mount::mount(
        Some("tracefs"),
        target,
        Some("tracefs"),
        nix::mount::MsFlags::MS_NOSUID
            | nix::mount::MsFlags::MS_NODEV
            | nix::mount::MsFlags::MS_NOEXEC,
        None::<&str>,
    );
    match mounted {
        Ok(()) => {
            b.put(
                CapabilityId::Tracefs,
                Status::Available,
                format!("was not mounted; doctor mounted it at {}", target.display()),
                CONSEQUENCE,
            );
            Some(target.to_path_buf())
        }
        Err(e) => {
            b.put(
                CapabilityId::Tracefs,
                Status::Unavailable,
                format!(
                    "not mounted; mounting at {} failed: {}",
                    target.display(),
                    errno_name(e as i32)
                ),
                "tracepoint programs cannot be attached; mount tracefs (needs CAP_SYS_ADMIN)",
            );
            None
        }
    }
}

fn probe_tracepoint(b: &mut Builder, tracefs: Option<&Path>) {
    const CONSEQUENCE_OK: &str =
        "syscall tracepoints feed exec/open/connect events to the ring buffer";
    const CONSEQUENCE_NO: &str =
        "no tracepoint-fed kernel events; exec refuses policies that need them (77)";
    let Some(tracefs) = tracefs else {
        b.put(
            CapabilityId::Tracepoint,
            Status::Unavailable,
            "not probed: tracefs is unavailable".to_string(),
            CONSEQUENCE_NO,
        );
        return;
    };
    let candidates = ["syscalls/sys_enter_openat", "sched/sched_process_exec"];
    let mut errors = Vec::new();
    let found = candidates.iter().find_map(|ev| {
        let path = tracefs.join("events").join(ev).join("id");
        match std::fs::read_to_string(&path) {
            Ok(text) => match text.trim().parse::<u64>() {
                Ok(id) => Some((*ev, id)),
                Err(_) => {
                    errors.push(format!("{}: not a number", path.display()));
                    None
                }
            },
            Err(e) => {
                errors.push(format!("{}: {}", path.display(), io_errno(&e)));
                None
            }
        }
    });
    let Some((event, id)) = found else {
        b.put(
            CapabilityId::Tracepoint,
            Status::Unavailable,
            format!("no tracepoint id readable: {}", errors.join("; ")),
            CONSEQUENCE_NO,
        );
        return;
    };
    let result = bpf::load("doctor_tp", bpf::PROG_TRACEPOINT, 0, 0, &bpf::TRIVIAL)
        .map_err(|e| format!("load refused: {e}"))
        .and_then(|prog| {
            bpf::attach_tracepoint(&prog, id).map_err(|e| format!("attach to {event} refused: {e}"))
        });
    match result {
        Ok(_attached) => b.put(
            CapabilityId::Tracepoint,
            Status::Available,
            format!("loaded and attached to {event} (id {id}), then detached"),
            CONSEQUENCE_OK,
        ),
        Err(e) => b.put(
            CapabilityId::Tracepoint,
            Status::Unavailable,
            e,
            CONSEQUENCE_NO,
        ),
    }
}

fn probe_raw_tracepoint(b: &mut Builder) {
    let result = bpf::load(
        "doctor_rawtp",
        bpf::PROG_RAW_TRACEPOINT,
        0,
        0,
        &bpf::TRIVIAL,
    )
    .map_err(|e| format!("load refused: {e}"))
    .and_then(|prog| {
        bpf::raw_tracepoint_open(Some(c"sys_enter"), &prog)
            .map_err(|e| format!("attach to sys_enter refused: {e}"))
    });
    match result {
        Ok(_link) => b.put(
            CapabilityId::RawTracepoint,
            Status::Available,
            "loaded and attached to sys_enter, then detached".to_string(),
            "raw syscall hooks are available",
        ),
        Err(e) => b.put(
            CapabilityId::RawTracepoint,
            Status::Unavailable,
            e,
            "no raw syscall hooks; exec refuses policies that need them (77)",
        ),
    }
}

fn probe_tp_btf(b: &mut Builder, btf: Option<&KernelBtf>) {
    const CONSEQUENCE_NO: &str = "no sys_enter hook with readable arguments: mcp-guard's event and kill programs cannot attach; exec refuses to launch (77) unless --observe or [enforcement] allow_degraded";
    let Some(id) = btf.and_then(|k| k.sys_enter) else {
        b.put(
            CapabilityId::TpBtf,
            Status::Unavailable,
            "not probed: no BTF type btf_trace_sys_enter".to_string(),
            CONSEQUENCE_NO,
        );
        return;
    };
    let result = bpf::load(
        "doctor_tpbtf",
        bpf::PROG_TRACING,
        bpf::ATTACH_TRACE_RAW_TP,
        id,
        &bpf::TRIVIAL,
    )
    .map_err(|e| format!("load refused: {e}"))
    .and_then(|prog| {
        bpf::raw_tracepoint_open(None, &prog).map_err(|e| format!("attach refused: {e}"))
    });
    match result {
        Ok(_link) => b.put(
            CapabilityId::TpBtf,
            Status::Available,
            "tp_btf/sys_enter loaded and attached, then detached".to_string(),
            "file opens are seen at sys_enter with their path, and can be killed there",
        ),
        Err(e) => b.put(CapabilityId::TpBtf, Status::Unavailable, e, CONSEQUENCE_NO),
    }
}

/// Attaches a tp_btf/sys_enter program that sends SIGUSR2 to one forked child only, lets the
/// child make a syscall, and checks that the signal killed it.
fn probe_send_signal(b: &mut Builder, btf: Option<&KernelBtf>) {
    const CONSEQUENCE_NO: &str = "no in-kernel kill: mcp-guard's sys_enter program calls bpf_send_signal; exec refuses to launch (77) unless --observe or [enforcement] allow_degraded";
    let Some(id) = btf.and_then(|k| k.sys_enter) else {
        b.put(
            CapabilityId::SendSignal,
            Status::Unavailable,
            "not probed: no BTF type btf_trace_sys_enter".to_string(),
            CONSEQUENCE_NO,
        );
        return;
    };
    let mut fds = [0; 2];
    // SAFETY: pipe2 writes two fds into the array we pass.
    if unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_CLOEXEC) } != 0 {
        b.put(
            CapabilityId::SendSignal,
            Status::Unavailable,
            format!("not probed: pipe2 failed: {}", Errno::last()),
            CONSEQUENCE_NO,
        );
        return;
    }
    // SAFETY: pipe2 succeeded, so both are new fds owned by nobody else; owning them closes them
    // on every path.
    let (read_end, write_end) =
        unsafe { (OwnedFd::from_raw_fd(fds[0]), OwnedFd::from_raw_fd(fds[1])) };
    let (rfd, wfd) = (read_end.as_raw_fd(), write_end.as_raw_fd());
    let mut write_end = Some(write_end);
    let mut attach: Option<Result<(), String>> = None;
    let mut links = Vec::new();
    let end = host::in_child(
        || {
            let mut byte = 0u8;
            // SAFETY: read/getppid are async-signal-safe; the byte buffer is live.
            unsafe {
                libc::close(wfd);
                libc::read(rfd, std::ptr::from_mut(&mut byte).cast(), 1);
                // The first syscall after the go-ahead: the program must kill us on entry.
                libc::getppid();
            }
            0
        },
        |pid| {
            let r = bpf::load(
                "doctor_signal",
                bpf::PROG_TRACING,
                bpf::ATTACH_TRACE_RAW_TP,
                id,
                &bpf::send_signal_to(pid as u32, libc::SIGUSR2),
            )
            .map_err(|e| format!("load refused: {e}"))
            .and_then(|prog| {
                bpf::raw_tracepoint_open(None, &prog).map_err(|e| format!("attach refused: {e}"))
            })
            .map(|link| links.push(link));
            attach = Some(r);
            // The go-ahead: the child's read returns (on the byte, or on EOF if the write failed).
            if let Some(w) = write_end.take() {
                let _ = std::fs::File::from(w).write_all(b"x");
            }
        },
    );
    drop(links);
    drop(read_end);
    let attach = attach.unwrap_or_else(|| Err("fork failed".to_string()));
    match (attach, end) {
        (Ok(()), Ok(host::ChildEnd::Signaled(sig))) if sig == libc::SIGUSR2 => b.put(
            CapabilityId::SendSignal,
            Status::Available,
            "a tp_btf/sys_enter program's bpf_send_signal killed a probe child with SIGUSR2 at its next syscall"
                .to_string(),
            "sensitive-file access is killed in the kernel before the syscall runs",
        ),
        (Ok(()), end) => b.put(
            CapabilityId::SendSignal,
            Status::Unavailable,
            format!("program attached but the probe child was not killed by it: {end:?}"),
            CONSEQUENCE_NO,
        ),
        (Err(e), _) => b.put(CapabilityId::SendSignal, Status::Unavailable, e, CONSEQUENCE_NO),
    }
}

fn probe_lsm(b: &mut Builder, btf: Option<&KernelBtf>) {
    const FALLBACK: &str =
        "file-access kills use tp_btf sys_enter + bpf_send_signal instead; landlock still denies";
    let active = active_lsms();
    let active = active.as_str();
    let Some(id) = btf.and_then(|k| k.lsm_file_open) else {
        b.put(
            CapabilityId::Lsm,
            Status::Unavailable,
            format!("no BTF function bpf_lsm_file_open (active LSMs: {active:?})"),
            &format!("LSM BPF unavailable: {FALLBACK}"),
        );
        return;
    };
    let loaded = bpf::load(
        "doctor_lsm",
        bpf::PROG_LSM,
        bpf::ATTACH_LSM_MAC,
        id,
        &bpf::TRIVIAL,
    );
    match loaded {
        Err(e) => b.put(
            CapabilityId::Lsm,
            Status::Unavailable,
            format!("lsm/file_open load refused: {e} (active LSMs: {active})"),
            &format!("LSM BPF refused ({}): {FALLBACK}", errno_name(e.errno)),
        ),
        // `r0 = 0` allows every open, so the moment it is attached changes nothing.
        Ok(prog) => match bpf::raw_tracepoint_open(None, &prog) {
            Ok(_link) => b.put(
                CapabilityId::Lsm,
                Status::Available,
                format!("lsm/file_open loaded and attached, then detached (active LSMs: {active})"),
                "LSM hooks could deny file access in the kernel; enforcement does not depend on them",
            ),
            Err(e) => b.put(
                CapabilityId::Lsm,
                Status::Unavailable,
                format!("lsm/file_open loaded but attach refused: {e} (active LSMs: {active})"),
                &format!("LSM BPF refused ({}): {FALLBACK}", errno_name(e.errno)),
            ),
        },
    }
}

/// The active LSMs from securityfs, or why they are unknown.
fn active_lsms() -> String {
    match std::fs::read_to_string("/sys/kernel/security/lsm") {
        Ok(list) => list.trim().to_string(),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            "unknown, securityfs is not mounted".to_string()
        }
        Err(e) => format!("unknown, /sys/kernel/security/lsm: {}", io_errno(&e)),
    }
}

fn probe_maps(b: &mut Builder) {
    use aya::maps::MapType;
    let maps = [
        (
            CapabilityId::Ringbuf,
            MapType::RingBuf,
            "kernel events reach userspace through a ring buffer",
            "no event stream: exec refuses to launch (77) unless --observe or [enforcement] allow_degraded",
        ),
        (
            CapabilityId::LpmTrie,
            MapType::LpmTrie,
            "egress allowlists match networks by prefix",
            "no egress allowlists: exec refuses to launch (77) unless --observe or [enforcement] allow_degraded",
        ),
        (
            CapabilityId::HashMap,
            MapType::Hash,
            "per-server state (guarded cgroups, sensitive paths) is kept in the kernel",
            "no per-server kernel state: exec refuses to launch (77) unless --observe or [enforcement] allow_degraded",
        ),
    ];
    for (id, map_type, ok, no) in maps {
        match aya::sys::is_map_supported(map_type) {
            Ok(true) => b.put(
                id,
                Status::Available,
                format!("created and freed a {map_type:?} map"),
                ok,
            ),
            Ok(false) => b.put(
                id,
                Status::Unavailable,
                format!("the kernel does not know {map_type:?} maps (EINVAL)"),
                no,
            ),
            Err(e) => b.put(
                id,
                Status::Unavailable,
                format!(
                    "creating a {map_type:?} map refused: {}",
                    io_errno(&e.io_error)
                ),
                no,
            ),
        }
    }
}

fn probe_cgroups(b: &mut Builder, mounts: &[crate::mounts::Mount]) {
    let Some(root) = crate::mounts::cgroup2_mount(mounts) else {
        b.put(
            CapabilityId::CgroupV2,
            Status::Unavailable,
            "no cgroup2 mount in /proc/self/mountinfo".to_string(),
            "servers cannot be given their own cgroup: no egress filtering, exec refuses (77); mount cgroup2",
        );
        for id in [CapabilityId::EbpfObject, CapabilityId::CgroupSockAddr] {
            b.put(
                id,
                Status::Unavailable,
                "not probed: no cgroup v2".to_string(),
                "no egress filtering: exec refuses to launch (77) unless --observe or [enforcement] allow_degraded",
            );
        }
        probe_controllers(b, mounts, None);
        return;
    };
    let controllers = std::fs::read_to_string(root.join("cgroup.controllers")).unwrap_or_default();
    let subtree = std::fs::read_to_string(root.join("cgroup.subtree_control")).unwrap_or_default();
    let dir = root.join(host::temp_cgroup_name());
    match std::fs::create_dir(&dir) {
        Ok(()) => {
            b.put(
                CapabilityId::CgroupV2,
                Status::Available,
                format!(
                    "mounted at {}; controllers [{}], subtree_control [{}]; created and removed a cgroup there",
                    root.display(),
                    controllers.trim(),
                    subtree.trim()
                ),
                "each server runs in its own cgroup, which keys its egress rules and events",
            );
            probe_egress(b, &dir);
            if let Err(e) = host::remove_cgroup(&dir) {
                // Not fatal for the report, but say so: the brief is to leave nothing behind.
                eprintln!("mcp-guard doctor: could not remove {}: {e}", dir.display());
            }
        }
        Err(e) => {
            b.put(
                CapabilityId::CgroupV2,
                Status::Unavailable,
                format!("mounted at {} but creating a cgroup failed: {}", root.display(), io_errno(&e)),
                "servers cannot be given their own cgroup: exec refuses (77); run as root with a writable cgroup2 mount",
            );
            for id in [CapabilityId::EbpfObject, CapabilityId::CgroupSockAddr] {
                b.put(
                    id,
                    Status::Unavailable,
                    "not probed: no cgroup could be created".to_string(),
                    "no egress filtering: exec refuses to launch (77) unless --observe or [enforcement] allow_degraded",
                );
            }
        }
    }
    probe_controllers(b, mounts, Some((root, controllers.as_str())));
}

/// The kernel error with the doctor capability that reports the same thing and how to fix it.
pub fn explain_kernel(e: &crate::kernel::loader::KernelError) -> String {
    use crate::kernel::loader::KernelError;
    use mcp_guard_ebpf::programs;
    let (cap, fix) = match e {
        KernelError::Btf(_) => (
            CapabilityId::Btf,
            "a kernel built with CONFIG_DEBUG_INFO_BTF=y is needed",
        ),
        KernelError::Program { name, .. }
            if [programs::SYS_ENTER, programs::SYS_EXIT].contains(name) =>
        {
            (
                CapabilityId::TpBtf,
                "tp_btf programs need Linux 5.5+ with BTF, and root (CAP_BPF + CAP_PERFMON)",
            )
        }
        KernelError::Program { .. } | KernelError::Cgroup { .. } => (
            CapabilityId::CgroupSockAddr,
            "cgroup_sock_addr programs need a cgroup v2 hierarchy and root (CAP_BPF + \
             CAP_NET_ADMIN)",
        ),
        KernelError::UnixUnavailable(_) => (
            CapabilityId::CgroupUnix,
            "the cgroup connect_unix/sendmsg_unix programs need Linux 6.7+; on an older kernel \
             run under --observe, or set [enforcement] allow_degraded = true to run without them",
        ),
        KernelError::Resolve(_) => {
            return format!(
                "eBPF kernel guard: {e} (a host name in [network] allow could not be resolved: \
                 check /etc/resolv.conf and the name)"
            );
        }
        _ => (
            CapabilityId::EbpfObject,
            "run as root (or with CAP_BPF + CAP_NET_ADMIN + CAP_PERFMON) on Linux 5.8+ with BTF",
        ),
    };
    format!(
        "eBPF kernel guard unavailable: {} (`mcp-guard doctor` reports this as {}: unavailable); \
         {fix}",
        error_chain(e),
        cap.name()
    )
}

/// `e` with its sources, so an aya error shows the syscall's errno (a source whose text is
/// already in the message is not repeated).
fn error_chain(e: &dyn std::error::Error) -> String {
    let mut out = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        let text = s.to_string();
        if !out.contains(&text) {
            out.push_str(": ");
            out.push_str(&text);
        }
        source = s.source();
    }
    out
}

/// Loads mcp-guard's own embedded object (egress and tp_btf programs), guards the temporary
/// cgroup `dir` with an empty allowlist and checks that a connect from a child placed in it is
/// refused. Dropping the handle and the guard detaches everything before the cgroup is removed.
fn probe_egress(b: &mut Builder, dir: &Path) {
    use crate::kernel::loader::{KernelGuard, ServerSpec};
    const NO: &str = "no egress filtering: exec refuses to launch (77) unless --observe or [enforcement] allow_degraded";
    let guard = match KernelGuard::load() {
        Ok(g) => {
            b.put(
                CapabilityId::EbpfObject,
                Status::Available,
                format!(
                    "mcp-guard's embedded connect4/connect6/sendmsg4/sendmsg6, bind4/bind6 and tp_btf \
                     sys_enter/sys_exit programs loaded; the tp_btf ones attached; \
                     connect_unix/sendmsg_unix {}",
                    match g.unix_status() {
                        Ok(()) => "loaded".to_string(),
                        Err(why) => format!("skipped: {why}"),
                    }
                ),
                "mcp-guard's own programs run on this kernel",
            );
            g
        }
        Err(e) => {
            b.put(
                CapabilityId::EbpfObject,
                Status::Unavailable,
                error_chain(&e),
                "mcp-guard's kernel guard cannot load: exec refuses to launch (77) unless --observe or [enforcement] allow_degraded",
            );
            b.put(
                CapabilityId::CgroupSockAddr,
                Status::Unavailable,
                "not probed: the programs did not load".to_string(),
                NO,
            );
            return;
        }
    };
    let spec = ServerSpec {
        server: "mcp-guard-doctor".to_string(),
        session: "doctor".to_string(),
        // Egress is probed here; the unix programs have their own line (cgroup_unix).
        unix_optional: true,
        ..ServerSpec::default()
    };
    // add_server is async; its own thread and runtime keep `probe` callable from async code too
    // (a nested block_on would panic).
    let added = std::thread::scope(|scope| {
        scope
            .spawn(|| {
                let runtime = tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()
                    .map_err(|e| format!("not probed: tokio runtime: {e}"))?;
                runtime
                    .block_on(guard.add_server_with(dir, spec, None))
                    .map_err(|e| {
                        format!(
                            "attaching to {} refused: {}",
                            dir.display(),
                            error_chain(&e)
                        )
                    })
            })
            .join()
            .unwrap_or_else(|_| Err("not probed: the attach thread panicked".to_string()))
    });
    let handle = match added {
        Ok(h) => h,
        Err(e) => {
            b.put(CapabilityId::CgroupSockAddr, Status::Unavailable, e, NO);
            return;
        }
    };
    let procs = match CString::new(
        dir.join("cgroup.procs")
            .into_os_string()
            .into_encoded_bytes(),
    ) {
        Ok(p) => p,
        Err(e) => {
            b.put(
                CapabilityId::CgroupSockAddr,
                Status::Unavailable,
                format!("cgroup path: {e}"),
                NO,
            );
            return;
        }
    };
    // Port 9 (discard): if the verdict let it through, the kernel answers ECONNREFUSED instead.
    let end = host::in_child(|| host::child_connect_from_cgroup(&procs, 9), |_| {});
    drop(handle);
    drop(guard);
    match end {
        Ok(host::ChildEnd::Exited(libc::EPERM)) => b.put(
            CapabilityId::CgroupSockAddr,
            Status::Available,
            "attached to a temporary cgroup under the v2 mount; a connect from a process in it got EPERM; detached and removed".to_string(),
            "per-server egress is filtered in the kernel at connect/sendmsg",
        ),
        Ok(host::ChildEnd::Exited(255)) => b.put(CapabilityId::CgroupSockAddr, Status::Unavailable, "attached, but a probe process could not join the cgroup".to_string(), NO),
        Ok(end) => b.put(
            CapabilityId::CgroupSockAddr,
            Status::Unavailable,
            format!("attached, but a denied connect from the cgroup ended as {}", match end {
                host::ChildEnd::Exited(0) => "connected".to_string(),
                host::ChildEnd::Exited(n) => errno_name(n),
                host::ChildEnd::Signaled(s) => format!("signal {s}"),
            }),
            NO,
        ),
        Err(e) => b.put(CapabilityId::CgroupSockAddr, Status::Unavailable, format!("not probed: fork failed: {e}"), NO),
    }
}

/// Whether this kernel runs the Unix socket programs (`kernel::unix::probe`).
fn probe_cgroup_unix(b: &mut Builder) {
    match crate::kernel::unix::probe() {
        Ok(()) => b.put(
            CapabilityId::CgroupUnix,
            Status::Available,
            "connect_unix and sendmsg_unix programs load, and the kernel BTF describes the \
             address they judge"
                .to_string(),
            "connect/sendmsg to Unix sockets are limited to [network] unix in the kernel",
        ),
        Err(why) => b.put(
            CapabilityId::CgroupUnix,
            Status::Unavailable,
            why,
            "connect/sendmsg to Unix sockets are not judged in the kernel: the jail's own /run, \
             /var/run, /dev/shm and /tmp keep pathname sockets, and abstract ones are kept or \
             refused as the promises below say",
        ),
    }
}

/// Where the memory, pids and cpu controllers are, and whether a cgroup can be made there.
fn probe_controllers(b: &mut Builder, mounts: &[crate::mounts::Mount], v2: Option<(&Path, &str)>) {
    let mut found = Vec::new();
    let mut lacking = Vec::new();
    for controller in ["memory", "pids", "cpu"] {
        let in_v2 = v2.filter(|(_, list)| list.split_whitespace().any(|c| c == controller));
        let place = match in_v2 {
            Some((root, _)) => Some((root, "v2")),
            None => crate::mounts::cgroup1_mount(mounts, controller).map(|p| (p, "v1")),
        };
        let Some((mount, version)) = place else {
            lacking.push(format!("{controller} (not mounted)"));
            continue;
        };
        // The file a limit is written to: its presence in a fresh cgroup proves the controller
        // is active there (on v2 that needs it in the parent's cgroup.subtree_control).
        let limit_file = match (version, controller) {
            ("v2", c) => format!("{c}.max"),
            (_, "memory") => "memory.limit_in_bytes".to_string(),
            (_, "pids") => "pids.max".to_string(),
            _ => "cpu.cfs_quota_us".to_string(),
        };
        let dir = mount.join(host::temp_cgroup_name());
        if let Err(e) = std::fs::create_dir(&dir) {
            lacking.push(format!(
                "{controller}: {version} {} (mkdir: {})",
                mount.display(),
                io_errno(&e)
            ));
            continue;
        }
        let active = dir.join(&limit_file).exists();
        let removed = host::remove_cgroup(&dir);
        match (active, removed) {
            (true, Ok(())) => found.push(format!("{controller}: {version} {}", mount.display())),
            (false, _) => lacking.push(format!(
                "{controller}: {version} {} has no {limit_file} in a new cgroup (add +{controller} to its cgroup.subtree_control)",
                mount.display()
            )),
            (true, Err(e)) => lacking.push(format!(
                "{controller}: {version} {} (rmdir: {})",
                mount.display(),
                io_errno(&e)
            )),
        }
    }
    let detail = if lacking.is_empty() {
        format!(
            "{}; a new cgroup in each had its limit file",
            found.join(", ")
        )
    } else {
        format!(
            "{}{}missing {}",
            found.join(", "),
            if found.is_empty() { "" } else { "; " },
            lacking.join(", ")
        )
    };
    let (status, consequence) = match (found.is_empty(), lacking.is_empty()) {
        (_, true) => (
            Status::Available,
            "[limits] memory, pids and cpu are applied through these controllers",
        ),
        (false, false) => (
            Status::Degraded,
            "[limits] on a missing controller are refused (77)",
        ),
        (true, false) => (Status::Unavailable, "[limits] are refused (77)"),
    };
    b.put(CapabilityId::CgroupControllers, status, detail, consequence);
}

fn probe_landlock(b: &mut Builder) {
    const NO: &str = "no filesystem confinement: [filesystem] policies are refused (77)";
    let active = active_lsms();
    let abi = crate::launch::landlock::abi()
        .map(i64::from)
        .map_err(|e| Errno::bare(e.raw_os_error().unwrap_or(0)));
    match abi {
        Ok(abi) => match host::landlock_ruleset_works() {
            Ok(()) => b.put(
                CapabilityId::Landlock,
                Status::Available,
                format!("ABI {abi}, a ruleset was created: covers {}", host::landlock_coverage(abi)),
                if abi >= 4 {
                    "servers are confined to their [filesystem] paths; TCP is also restrictable by landlock"
                } else {
                    "servers are confined to their [filesystem] paths (egress is eBPF's job)"
                },
            ),
            Err(e) => b.put(CapabilityId::Landlock, Status::Unavailable, format!("ABI {abi} but creating a ruleset failed: {e}"), NO),
        },
        Err(e) => b.put(
            CapabilityId::Landlock,
            Status::Unavailable,
            format!(
                "landlock_create_ruleset(VERSION) failed: {} (active LSMs: {}; add landlock to lsm= on the kernel command line)",
                errno_name(e.errno),
                active
            ),
            NO,
        ),
    }
}

fn probe_seccomp(b: &mut Builder) {
    const NO: &str = "no syscall filter: exec refuses to run enforced (77)";
    let actions = [
        ("kill_process", 0x8000_0000u32),
        ("errno", 0x0005_0000),
        ("user_notif", 0x7fc0_0000),
        ("log", 0x7ffc_0000),
    ];
    let avail: Vec<&str> = actions
        .iter()
        .filter(|(_, a)| host::seccomp_action_available(*a))
        .map(|(n, _)| *n)
        .collect();
    match host::in_child(host::child_seccomp_filter, |_| {}) {
        Ok(host::ChildEnd::Exited(0)) => b.put(
            CapabilityId::Seccomp,
            Status::Available,
            format!(
                "a child installed a filter (SECCOMP_SET_MODE_FILTER); actions: {}",
                avail.join(" ")
            ),
            "servers run under the built-in syscall deny list plus [syscalls]",
        ),
        Ok(host::ChildEnd::Exited(n)) => b.put(
            CapabilityId::Seccomp,
            Status::Unavailable,
            format!("installing a filter failed: {}", errno_name(n)),
            NO,
        ),
        Ok(host::ChildEnd::Signaled(s)) => b.put(
            CapabilityId::Seccomp,
            Status::Unavailable,
            format!("probe child died of signal {s}"),
            NO,
        ),
        Err(e) => b.put(
            CapabilityId::Seccomp,
            Status::Unavailable,
            format!("not probed: fork failed: {e}"),
            NO,
        ),
    }
}

fn probe_namespaces(b: &mut Builder) {
    let kinds = [
        ("mount", libc::CLONE_NEWNS),
        ("pid", libc::CLONE_NEWPID),
        ("ipc", libc::CLONE_NEWIPC),
        ("uts", libc::CLONE_NEWUTS),
    ];
    let mut ok = Vec::new();
    let mut refused = Vec::new();
    for (name, flag) in kinds {
        match host::in_child(|| host::child_unshare(flag), |_| {}) {
            Ok(host::ChildEnd::Exited(0)) => ok.push(name),
            Ok(host::ChildEnd::Exited(n)) => refused.push(format!("{name} ({})", errno_name(n))),
            Ok(host::ChildEnd::Signaled(s)) => refused.push(format!("{name} (signal {s})")),
            Err(e) => refused.push(format!("{name} (fork: {e})")),
        }
    }
    let detail = if refused.is_empty() {
        format!("a child unshared each of {}", ok.join(", "))
    } else {
        format!(
            "unshared [{}]; refused {}",
            ok.join(", "),
            refused.join(", ")
        )
    };
    let (status, consequence) = match (ok.is_empty(), refused.is_empty()) {
        (_, true) => (
            Status::Available,
            "servers get private mount, pid, ipc and uts namespaces",
        ),
        (false, false) => (
            Status::Degraded,
            "the jail cannot isolate the refused namespaces: exec refuses (77)",
        ),
        (true, false) => (
            Status::Unavailable,
            "no namespace isolation: exec refuses (77)",
        ),
    };
    b.put(CapabilityId::Namespaces, status, detail, consequence);

    let sysctls: Vec<String> = [
        "/proc/sys/user/max_user_namespaces",
        "/proc/sys/kernel/unprivileged_userns_clone",
        "/proc/sys/kernel/apparmor_restrict_unprivileged_userns",
    ]
    .iter()
    .filter_map(|p| {
        let v = std::fs::read_to_string(p).ok()?;
        let name = p.trim_start_matches("/proc/sys/").replace('/', ".");
        Some(format!("{name}={}", v.trim()))
    })
    .collect();
    let sysctls = sysctls.join(" ");
    match host::in_child(|| host::child_unshare(libc::CLONE_NEWUSER), |_| {}) {
        Ok(host::ChildEnd::Exited(0)) => b.put(
            CapabilityId::UserNamespaces,
            Status::Available,
            format!("a child unshared CLONE_NEWUSER; {sysctls}"),
            "available to the jail; as root it does not depend on them",
        ),
        other => b.put(
            CapabilityId::UserNamespaces,
            Status::Unavailable,
            format!(
                "unshare(CLONE_NEWUSER) in a child: {}; {sysctls}",
                match other {
                    Ok(host::ChildEnd::Exited(n)) => errno_name(n),
                    Ok(host::ChildEnd::Signaled(s)) => format!("signal {s}"),
                    Err(e) => format!("fork failed: {e}"),
                }
            ),
            "servers get no user namespace; as root the jail still drops to the policy's user and capabilities",
        ),
    }
}

/// Whether `exec` here would hand its session to an agent (the socket `exec` uses by default).
fn probe_agent(b: &mut Builder) {
    let socket = crate::ipc::socket_path(None);
    match std::os::unix::net::UnixStream::connect(&socket) {
        Ok(_) => b.put(
            CapabilityId::Agent,
            Status::Available,
            format!("an agent listens on {}", socket.display()),
            "exec hands its sessions to the agent: they run as the calling user with the \
             agent's pinned eBPF programs, and exec needs no privilege",
        ),
        Err(e) => b.put(
            CapabilityId::Agent,
            Status::Unavailable,
            format!("no agent listens on {}: {}", socket.display(), io_errno(&e)),
            "exec runs each session itself: it needs root for full enforcement (start \
             `mcp-guard agent`, e.g. systemctl start mcp-guard, to serve unprivileged users)",
        ),
    }
}

fn probe_container_engine(b: &mut Builder) {
    let docker_host = std::env::var("DOCKER_HOST").ok();
    let mut tried = Vec::new();
    if let Some(h) = docker_host.as_deref().filter(|h| !h.starts_with("unix://")) {
        tried.push(format!("DOCKER_HOST={h} (only unix:// is supported)"));
    }
    for socket in host::engine_sockets(docker_host.as_deref()) {
        match host::engine_ping(&socket) {
            Ok(answer) => {
                let address = format!("unix://{}", socket.display());
                // Its own thread and runtime: probe() may be called from async code.
                let about = std::thread::scope(|scope| {
                    scope
                        .spawn(|| {
                            tokio::runtime::Builder::new_current_thread()
                                .enable_all()
                                .build()
                                .map_err(|e| e.to_string())
                                .and_then(|rt| {
                                    rt.block_on(crate::launch::container::engine_info(&address))
                                })
                        })
                        .join()
                        .unwrap_or_else(|_| Err("the engine probe panicked".into()))
                });
                let detail = match about {
                    Ok(i) => format!(
                        "{}: reachable ({}), cgroup manager {}, runtime {}",
                        i.address, i.version, i.cgroup_driver, i.runtime
                    ),
                    Err(e) => format!(
                        "GET /_ping on {}: {answer}; /version: {e}",
                        socket.display()
                    ),
                };
                b.put(
                    CapabilityId::ContainerEngine,
                    Status::Available,
                    detail,
                    "the container backend can run servers through the Docker Engine API",
                );
                return;
            }
            Err(e) => tried.push(format!("{}: {}", socket.display(), io_errno(&e))),
        }
    }
    b.put(
        CapabilityId::ContainerEngine,
        Status::Unavailable,
        format!("no engine answered: {}", tried.join("; ")),
        "only the container backend is unavailable; jailed servers are unaffected",
    );
}

/// JSON line for one capability. Contract (field names are stable):
/// `{"capability": name, "status": "available"|"unavailable"|"degraded", "required": bool,
/// "detail": what was measured, "consequence": what mcp-guard does because of it}`.
#[derive(Serialize)]
struct JsonCheck<'a> {
    capability: &'static str,
    status: Status,
    required: bool,
    detail: &'a str,
    consequence: &'a str,
}

/// The last JSON line. Contract: `{"summary": true, "ok": bool, "missing": [capability names]}`,
/// where `missing` lists the required capabilities that are not `available`.
#[derive(Serialize)]
struct JsonSummary {
    summary: bool,
    ok: bool,
    missing: Vec<&'static str>,
}

/// Renders `report` as JSON lines; the field names are a contract for scripts:
///
/// - one line per capability, in [`CapabilityId::ALL`] order:
///   `{"capability": "<CapabilityId::name>", "status": "available"|"unavailable"|"degraded",
///   "required": bool, "detail": "<what was measured, errno when refused>",
///   "consequence": "<what mcp-guard does because of it>"}`
/// - then one line per promise (`crate::promises`), in `Promise::ALL` order: which mechanism
///   keeps it on this host for a policy with egress and one without (see
///   `promises::render_json` for the fields);
/// - then one summary line: `{"summary": true, "ok": bool, "missing": ["<name>", ...]}`, where
///   `missing` lists the required capabilities whose status is not `available` and `ok` is
///   `missing == []` (the exit status is 0 exactly when `ok`).
pub fn render_json(report: &Report) -> String {
    let mut out = String::new();
    for c in &report.checks {
        let line = JsonCheck {
            capability: c.id.name(),
            status: c.status,
            required: c.id.required(),
            detail: &c.detail,
            consequence: &c.consequence,
        };
        out.push_str(&serde_json::to_string(&line).unwrap_or_default());
        out.push('\n');
    }
    out.push_str(&promises::render_json(report));
    let summary = JsonSummary {
        summary: true,
        ok: report.ok(),
        missing: report
            .missing()
            .into_iter()
            .map(CapabilityId::name)
            .collect(),
    };
    out.push_str(&serde_json::to_string(&summary).unwrap_or_default());
    out.push('\n');
    out
}

/// Renders `report` as an aligned table; `color` adds ANSI colours to the status column.
pub fn render_table(report: &Report, color: bool) -> String {
    let name_w = report
        .checks
        .iter()
        .map(|c| c.id.name().len())
        .max()
        .unwrap_or(10)
        .max(10);
    let mut out = format!(
        "{:<name_w$}  {:<13}  {:<8}  DETAIL\n",
        "CAPABILITY", "STATUS", "NEED"
    );
    let indent = name_w + 2 + 13 + 2 + 8 + 2;
    for c in &report.checks {
        let (symbol, ansi) = match c.status {
            Status::Available => ("✓", "32"),
            Status::Unavailable => ("✗", "31"),
            Status::Degraded => ("~", "33"),
        };
        let status = format!("{symbol} {:<11}", c.status.word());
        let status = if color {
            format!("\x1b[{ansi}m{status}\x1b[0m")
        } else {
            status
        };
        let need = if c.id.required() {
            "required"
        } else {
            "optional"
        };
        out.push_str(&format!(
            "{:<name_w$}  {status}  {need:<8}  {}\n",
            c.id.name(),
            c.detail
        ));
        out.push_str(&format!("{:indent$}→ {}\n", "", c.consequence));
    }
    out.push_str(&promises::render_table(report));
    let missing: Vec<&str> = report
        .missing()
        .into_iter()
        .map(CapabilityId::name)
        .collect();
    let optional: Vec<&str> = report
        .checks
        .iter()
        .filter(|c| !c.id.required() && c.status != Status::Available)
        .map(|c| c.id.name())
        .collect();
    if missing.is_empty() {
        out.push_str("OK: this host can run mcp-guard's full enforcement");
        if !optional.is_empty() {
            out.push_str(&format!(
                " (optional, not available: {})",
                optional.join(", ")
            ));
        }
        out.push('\n');
    } else {
        out.push_str(&format!(
            "NOT OK: missing for full enforcement: {}\n",
            missing.join(", ")
        ));
    }
    out
}

/// `mcp-guard doctor [--json]`: probes, prints, and exits 0 when full enforcement is possible,
/// 1 otherwise.
pub fn run(json: bool) -> ExitCode {
    let report = probe();
    let stdout = std::io::stdout();
    let text = if json {
        render_json(&report)
    } else {
        render_table(&report, stdout.is_terminal())
    };
    // A closed stdout (e.g. `| head`) must not turn the verdict into a panic.
    let _ = stdout.lock().write_all(text.as_bytes());
    if report.ok() {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(1)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn report(statuses: &[(CapabilityId, Status)]) -> Report {
        let mut b = Builder { checks: Vec::new() };
        for (id, s) in statuses {
            b.put(*id, *s, "measured".into(), "so");
        }
        b.finish()
    }

    #[test]
    fn unprobed_capabilities_are_never_available() {
        let r = report(&[(CapabilityId::Landlock, Status::Available)]);
        assert_eq!(r.checks.len(), CapabilityId::ALL.len());
        assert!(r.is_available(CapabilityId::Landlock));
        assert!(!r.is_available(CapabilityId::Seccomp));
        assert_eq!(
            r.get(CapabilityId::Seccomp).map(|c| c.detail.as_str()),
            Some("not probed")
        );
        assert!(!r.ok());
    }

    #[test]
    fn optional_and_degraded_decide_the_verdict() {
        let all: Vec<_> = CapabilityId::ALL
            .iter()
            .map(|id| {
                (
                    *id,
                    if id.required() {
                        Status::Available
                    } else {
                        Status::Unavailable
                    },
                )
            })
            .collect();
        assert!(report(&all).ok(), "optional capabilities do not block");
        let mut degraded = all.clone();
        degraded[0].1 = Status::Degraded;
        let r = report(&degraded);
        assert_eq!(r.missing(), vec![CapabilityId::Privileges]);
        let json = render_json(&r);
        let last = json.lines().last().expect("summary line");
        let v: serde_json::Value = serde_json::from_str(last).expect("json");
        assert_eq!(v["summary"], true);
        assert_eq!(v["ok"], false);
        assert_eq!(v["missing"][0], "privileges");
        let table = render_table(&r, false);
        assert!(!table.contains('\x1b'), "no colour when asked for none");
        assert!(
            table
                .trim_end()
                .ends_with("missing for full enforcement: privileges")
        );
    }

    #[test]
    fn names_are_unique_and_lsm_is_optional() {
        let mut names: Vec<_> = CapabilityId::ALL.iter().map(|c| c.name()).collect();
        names.sort_unstable();
        names.dedup();
        assert_eq!(names.len(), CapabilityId::ALL.len());
        assert!(!CapabilityId::Lsm.required());
        assert!(!CapabilityId::ContainerEngine.required());
        assert!(!CapabilityId::Agent.required());
        assert!(CapabilityId::CgroupSockAddr.required());
        assert_eq!(errno_name(libc::EPERM), "EPERM");
        assert_eq!(errno_name(524), "ENOTSUPP");
        let refused = Errno {
            errno: libc::EACCES,
            log: Some("0: R0=ctx\ninvalid mem access 'scalar'\nprocessed 2 insns\n".into()),
        };
        assert_eq!(
            refused.to_string(),
            "EACCES, verifier: \"invalid mem access 'scalar'\""
        );
        let empty = Errno {
            errno: libc::EPERM,
            log: Some(String::new()),
        };
        assert_eq!(empty.to_string(), "EPERM, empty verifier log");
        assert_eq!(Errno::bare(libc::ENOENT).to_string(), "ENOENT");
    }

    #[test]
    fn kernel_refusals_name_the_doctor_capability_that_reports_them() {
        use crate::kernel::loader::KernelError;
        let cases = [
            (KernelError::MissingMap("EVENTS"), CapabilityId::EbpfObject),
            (
                KernelError::Cgroup {
                    path: "/sys/fs/cgroup/x".into(),
                    source: std::io::Error::from_raw_os_error(libc::ENOENT),
                },
                CapabilityId::CgroupSockAddr,
            ),
            (
                KernelError::UnixUnavailable("no attach type".into()),
                CapabilityId::CgroupUnix,
            ),
        ];
        for (e, cap) in cases {
            let text = explain_kernel(&e);
            assert!(
                text.contains(&format!("reports this as {}: unavailable", cap.name())),
                "{text}"
            );
        }
    }
}
