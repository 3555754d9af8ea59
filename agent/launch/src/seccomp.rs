//! The seccomp filters: a built-in deny list plus the policy's `[syscalls] deny`, each denied call
//! failing with EPERM (not a kill: runtimes probe optional syscalls and must see an error);
//! `clone` creating namespaces denied by argument; `clone3` failing with ENOSYS so libc falls back
//! to `clone`, whose flags a filter can see; x32-ABI syscall numbers denied; the terminal
//! ioctls that type into or drive a terminal ([`DENIED_IOCTLS`]: TIOCSTI, TIOCLINUX) denied by
//! their request argument, compared on its low 32 bits as the kernel reads it. Where the
//! promises table picks them ([`Fallbacks`]): the truncate rule and the Unix-socket rule
//! ([`unix_rule`]).
//!
//! Compiled in the launcher (a compile error refuses the launch) and installed by the stage-2
//! child just before execve.

mod unix_rule;

use std::collections::BTreeMap;

use seccompiler::{
    BpfProgram, SeccompAction, SeccompCmpArgLen, SeccompCmpOp, SeccompCondition, SeccompFilter,
    SeccompRule, TargetArch, sock_filter,
};
use serde::{Deserialize, Serialize};

/// Syscalls denied to every server: kernel attack surface, other processes, the jail itself.
pub const BUILTIN_DENY: &[&str] = &[
    // Tracing and reading other processes.
    "ptrace",
    "process_vm_readv",
    "process_vm_writev",
    "pidfd_getfd",
    // Mounts and namespaces: the jail's own walls.
    "mount",
    "umount2",
    "pivot_root",
    "chroot",
    "unshare",
    "setns",
    "fsopen",
    "fsconfig",
    "fsmount",
    "fspick",
    "move_mount",
    "open_tree",
    "mount_setattr",
    // The kernel's large attack surfaces.
    "bpf",
    "perf_event_open",
    "io_uring_setup",
    "io_uring_enter",
    "io_uring_register",
    "userfaultfd",
    "keyctl",
    "add_key",
    "request_key",
    // Changing the running kernel or host.
    "kexec_load",
    "kexec_file_load",
    "init_module",
    "finit_module",
    "delete_module",
    "reboot",
    "swapon",
    "swapoff",
    "acct",
    "quotactl",
    "quotactl_fd",
    "syslog",
    // File handles bypass path-based checks.
    "open_by_handle_at",
    "name_to_handle_at",
    // Turns off ASLR and similar hardening.
    "personality",
];

/// `clone` flags that create namespaces (denied by argument filter).
const CLONE_NS_FLAGS: &[u64] = &[
    libc::CLONE_NEWUSER as u64,
    libc::CLONE_NEWNS as u64,
    libc::CLONE_NEWPID as u64,
    libc::CLONE_NEWNET as u64,
    libc::CLONE_NEWIPC as u64,
    libc::CLONE_NEWUTS as u64,
    libc::CLONE_NEWCGROUP as u64,
    libc::CLONE_NEWTIME as u64,
];

/// `ioctl` requests denied to every server: TIOCSTI pushes bytes into a terminal's input (a
/// server holding its user's terminal would type commands into the shell that started it),
/// TIOCLINUX can do the same through the console's selection paste.
#[expect(
    clippy::cast_possible_truncation,
    reason = "the kernel compares ioctl requests as 32-bit"
)]
pub const DENIED_IOCTLS: &[u32] = &[libc::TIOCSTI as u32, libc::TIOCLINUX as u32];

/// The `clone` flags that create namespaces (the container backend's seccomp profile denies them
/// by argument too).
pub fn clone_ns_flags() -> &'static [u64] {
    CLONE_NS_FLAGS
}

/// A compiled BPF program as plain data (it crosses the exec boundary to the stage-2 helper).
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Program(pub Vec<(u16, u8, u8, u32)>);

impl Program {
    fn from_bpf(p: BpfProgram) -> Self {
        Program(p.into_iter().map(|i| (i.code, i.jt, i.jf, i.k)).collect())
    }

    /// Installs the filter on the calling thread (`no_new_privs` must be set or `CAP_SYS_ADMIN` held).
    pub fn install(&self) -> Result<(), String> {
        let bpf: BpfProgram = self
            .0
            .iter()
            .map(|&(code, jt, jf, k)| sock_filter { code, jt, jf, k })
            .collect();
        seccompiler::apply_filter(&bpf).map_err(|e| format!("installing seccomp filter: {e}"))
    }
}

/// Why the filter could not be built.
#[derive(Debug, thiserror::Error)]
pub enum SeccompError {
    /// A syscall name unknown on this architecture.
    #[error("unknown syscall {0:?} in [syscalls] deny")]
    Unknown(String),
    /// seccompiler refused the filter.
    #[error("building the seccomp filter: {0}")]
    Build(String),
    /// This architecture is not supported.
    #[error("seccomp filters are not built for this architecture ({0})")]
    Arch(&'static str),
}

/// The syscall number of `name` on this architecture.
fn number(name: &str) -> Option<i64> {
    mcp_guard_policy::syscall_number(name)
}

/// The rules that keep a promise where a stronger mechanism is missing (the promises table
/// says which).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Fallbacks {
    /// No landlock truncate right (ABI < 3): the truncation promise ([`truncate_rules`]).
    pub truncate: bool,
    /// Neither `connect_unix` programs nor landlock scopes, and egress: no Unix sockets by
    /// address at all ([`unix_rule`]).
    pub no_unix: bool,
}

/// Builds the filters, in install order: the deny list (EPERM), clone3 (ENOSYS), x32 (EPERM),
/// with the rules `fallbacks` asks for.
pub fn build(extra_deny: &[String], fallbacks: Fallbacks) -> Result<Vec<Program>, SeccompError> {
    let arch = TargetArch::try_from(std::env::consts::ARCH)
        .map_err(|_| SeccompError::Arch(std::env::consts::ARCH))?;
    let build = |e: seccompiler::BackendError| SeccompError::Build(e.to_string());

    let mut rules: BTreeMap<i64, Vec<SeccompRule>> = BTreeMap::new();
    for name in BUILTIN_DENY
        .iter()
        .copied()
        .chain(extra_deny.iter().map(String::as_str))
    {
        // Built-in names missing on an architecture (e.g. no separate umount2) are skipped.
        match number(name) {
            Some(nr) => {
                rules.insert(nr, Vec::new());
            }
            None if BUILTIN_DENY.contains(&name) => {}
            None => return Err(SeccompError::Unknown(name.to_string())),
        }
    }
    let clone_nr = number("clone").ok_or(SeccompError::Arch(std::env::consts::ARCH))?;
    // Each rule is one flag bit set; rules are OR-ed. The flags are clone's first argument on
    // x86_64 and aarch64.
    let clone_rules = CLONE_NS_FLAGS
        .iter()
        .map(|&flag| {
            SeccompCondition::new(
                0,
                SeccompCmpArgLen::Qword,
                SeccompCmpOp::MaskedEq(flag),
                flag,
            )
            .and_then(|c| SeccompRule::new(vec![c]))
        })
        .collect::<Result<Vec<_>, _>>()
        .map_err(build)?;
    // A policy denying clone outright wins over the argument filter.
    rules.entry(clone_nr).or_insert(clone_rules);
    // ioctl's request is an `unsigned int` in the kernel, which ignores the register's upper
    // half: a 32-bit comparison, or TIOCSTI with a high bit set would pass the filter and still
    // be TIOCSTI to the kernel. The request is ioctl's second argument.
    let ioctl_nr = number("ioctl").ok_or(SeccompError::Arch(std::env::consts::ARCH))?;
    let ioctl_rules = DENIED_IOCTLS
        .iter()
        .map(|&request| {
            SeccompCondition::new(
                1,
                SeccompCmpArgLen::Dword,
                SeccompCmpOp::Eq,
                u64::from(request),
            )
            .and_then(|c| SeccompRule::new(vec![c]))
        })
        .collect::<Result<Vec<_>, _>>()
        .map_err(build)?;
    // As with clone: a policy denying ioctl outright wins.
    rules.entry(ioctl_nr).or_insert(ioctl_rules);
    let mut nosys_calls = vec![number("clone3").ok_or(SeccompError::Arch(std::env::consts::ARCH))?];
    if fallbacks.no_unix {
        for (nr, call_rules) in unix_rule::rules().map_err(build)? {
            // A policy denying the call outright wins.
            rules.entry(nr).or_insert(call_rules);
        }
    }
    if fallbacks.truncate {
        for (nr, call_rules) in truncate_rules().map_err(build)? {
            // A policy denying the call outright wins.
            rules.entry(nr).or_insert(call_rules);
        }
        // openat2's flags are in a struct a filter cannot read: ENOSYS, and libc and runtimes
        // fall back to openat, whose flags it can.
        if let Some(nr) = number("openat2") {
            nosys_calls.push(nr);
        }
    }
    let deny = SeccompFilter::new(
        rules,
        SeccompAction::Allow,
        SeccompAction::Errno(libc::EPERM as u32),
        arch,
    )
    .map_err(build)?;

    let nosys = SeccompFilter::new(
        nosys_calls.into_iter().map(|nr| (nr, Vec::new())).collect(),
        SeccompAction::Allow,
        SeccompAction::Errno(libc::ENOSYS as u32),
        arch,
    )
    .map_err(build)?;

    let mut programs = vec![
        Program::from_bpf(
            BpfProgram::try_from(deny).map_err(|e| SeccompError::Build(e.to_string()))?,
        ),
        Program::from_bpf(
            BpfProgram::try_from(nosys).map_err(|e| SeccompError::Build(e.to_string()))?,
        ),
    ];
    if cfg!(target_arch = "x86_64") {
        programs.push(x32_filter());
    }
    Ok(programs)
}

/// The truncation promise without landlock's truncate right (ABI < 3, which checks neither
/// `truncate(2)` nor an open with `O_TRUNC` that does not write): `truncate(2)` is denied, and
/// so is `open`/`openat` with `O_TRUNC` and a read-only access mode. An open for writing is
/// landlock's (write set only), and `ftruncate` needs such a descriptor.
fn truncate_rules() -> Result<Vec<(i64, Vec<SeccompRule>)>, seccompiler::BackendError> {
    let trunc = libc::O_TRUNC as u64;
    let accmode = libc::O_ACCMODE as u64;
    let read_only_trunc = |flags_arg: u8| -> Result<SeccompRule, seccompiler::BackendError> {
        SeccompRule::new(vec![
            SeccompCondition::new(
                flags_arg,
                SeccompCmpArgLen::Dword,
                SeccompCmpOp::MaskedEq(trunc),
                trunc,
            )?,
            SeccompCondition::new(
                flags_arg,
                SeccompCmpArgLen::Dword,
                SeccompCmpOp::MaskedEq(accmode),
                libc::O_RDONLY as u64,
            )?,
        ])
    };
    let mut out = Vec::new();
    if let Some(nr) = number("truncate") {
        out.push((nr, Vec::new()));
    }
    // open(path, flags, mode) has no number on aarch64; openat(dirfd, path, flags, mode).
    if let Some(nr) = number("open") {
        out.push((nr, vec![read_only_trunc(1)?]));
    }
    if let Some(nr) = number("openat") {
        out.push((nr, vec![read_only_trunc(2)?]));
    }
    Ok(out)
}

/// x32 syscalls share the `x86_64` audit arch but set bit 30 of the number; seccompiler's
/// per-number rules would not match them, so they are refused wholesale.
#[expect(
    clippy::cast_possible_truncation,
    reason = "classic BPF opcodes are 16-bit"
)]
fn x32_filter() -> Program {
    const X32_BIT: u32 = 0x4000_0000;
    const LD_W_ABS: u16 = (libc::BPF_LD | libc::BPF_W | libc::BPF_ABS) as u16;
    const JSET_K: u16 = (libc::BPF_JMP | libc::BPF_JSET | libc::BPF_K) as u16;
    const RET_K: u16 = (libc::BPF_RET | libc::BPF_K) as u16;
    Program(vec![
        // seccomp_data.nr is at offset 0.
        (LD_W_ABS, 0, 0, 0),
        (JSET_K, 0, 1, X32_BIT),
        (RET_K, 0, 0, libc::SECCOMP_RET_ERRNO | libc::EPERM as u32),
        (RET_K, 0, 0, libc::SECCOMP_RET_ALLOW),
    ])
}

/// Whether this kernel has seccomp filtering (`PR_GET_SECCOMP` fails with EINVAL without it).
pub fn available() -> bool {
    // SAFETY: PR_GET_SECCOMP takes no pointer arguments.
    let r = unsafe { libc::prctl(libc::PR_GET_SECCOMP, 0, 0, 0, 0) };
    r >= 0 && std::path::Path::new("/proc/sys/kernel/seccomp/actions_avail").exists()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn builds_builtin_and_extra() {
        let p = build(&["getpriority".to_string()], Fallbacks::default()).expect("filter builds");
        assert!(p.len() >= 2);
        assert!(p[0].0.len() > BUILTIN_DENY.len());
    }

    /// Installs the filters in a forked child and runs `ioctl(fd, request)` there on /dev/null,
    /// with `request` as the whole 64-bit register; returns the child's errno (the kernel alone
    /// answers ENOTTY: /dev/null is no terminal).
    fn ioctl_errno_under_filter(request: u64) -> i32 {
        // Built before the fork: the child of a multithreaded test must not allocate.
        let programs: Vec<BpfProgram> = build(&[], Fallbacks::default())
            .expect("filter builds")
            .iter()
            .map(|p| {
                p.0.iter()
                    .map(|&(code, jt, jf, k)| sock_filter { code, jt, jf, k })
                    .collect()
            })
            .collect();
        let null = std::fs::File::open("/dev/null").expect("/dev/null");
        // SAFETY: the test's own fork; the child only makes raw syscalls and _exits.
        let pid = unsafe { libc::fork() };
        if pid == 0 {
            // SAFETY: PR_SET_NO_NEW_PRIVS takes integers only.
            unsafe { libc::prctl(libc::PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) };
            for p in &programs {
                if seccompiler::apply_filter(p).is_err() {
                    // SAFETY: ends the forked child.
                    unsafe { libc::_exit(200) };
                }
            }
            let c = b'x';
            // SAFETY: a raw ioctl on an open fd with a pointer to a live byte.
            let r = unsafe {
                libc::syscall(
                    libc::SYS_ioctl,
                    std::os::fd::AsRawFd::as_raw_fd(&null),
                    request,
                    &raw const c,
                )
            };
            let e = if r == 0 {
                0
            } else {
                std::io::Error::last_os_error()
                    .raw_os_error()
                    .unwrap_or(255)
            };
            // SAFETY: ends the forked child.
            unsafe { libc::_exit(e) };
        }
        let mut status = 0;
        // SAFETY: reaping our own child into a valid int.
        unsafe { libc::waitpid(pid, &raw mut status, 0) };
        assert!(libc::WIFEXITED(status), "child status {status}");
        libc::WEXITSTATUS(status)
    }

    #[test]
    fn terminal_injection_ioctls_are_denied_whatever_the_upper_bits() {
        assert_eq!(DENIED_IOCTLS, [0x5412, 0x541c], "TIOCSTI, TIOCLINUX");
        let (sti, linux) = (0x5412u64, 0x541cu64);
        // The kernel reads the request as 32 bits: with high bits set it is still TIOCSTI.
        for request in [sti, sti | 0xdead_0000_0000, linux, linux | 1 << 32] {
            assert_eq!(
                ioctl_errno_under_filter(request),
                libc::EPERM,
                "{request:#x}"
            );
        }
        // Other requests pass the filter and get the kernel's answer.
        assert_eq!(
            ioctl_errno_under_filter(0x5413), // TIOCGWINSZ
            libc::ENOTTY
        );
    }

    /// Runs `call` in a forked child under the filters (with or without the truncate rule)
    /// and returns its errno (0: the call succeeded).
    fn errno_under(truncate_rule: bool, call: impl FnOnce() -> libc::c_long) -> i32 {
        let fallbacks = Fallbacks {
            truncate: truncate_rule,
            ..Fallbacks::default()
        };
        let programs: Vec<BpfProgram> = build(&[], fallbacks)
            .expect("filter builds")
            .iter()
            .map(|p| {
                p.0.iter()
                    .map(|&(code, jt, jf, k)| sock_filter { code, jt, jf, k })
                    .collect()
            })
            .collect();
        // SAFETY: the test's own fork; the child only makes raw syscalls and _exits.
        let pid = unsafe { libc::fork() };
        if pid == 0 {
            // SAFETY: PR_SET_NO_NEW_PRIVS takes integers only.
            unsafe { libc::prctl(libc::PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) };
            for p in &programs {
                if seccompiler::apply_filter(p).is_err() {
                    // SAFETY: ends the forked child.
                    unsafe { libc::_exit(200) };
                }
            }
            let e = if call() >= 0 {
                0
            } else {
                // SAFETY: reads the calling thread's errno.
                unsafe { *libc::__errno_location() }
            };
            // SAFETY: ends the forked child.
            unsafe { libc::_exit(e) };
        }
        let mut status = 0;
        // SAFETY: reaping our own child into a valid int.
        unsafe { libc::waitpid(pid, &raw mut status, 0) };
        assert!(libc::WIFEXITED(status), "child status {status}");
        libc::WEXITSTATUS(status)
    }

    /// The attack landlock before ABI 3 lets through: truncating a file the server may only
    /// read (or one outside every set) with truncate(2) or a read-only open with `O_TRUNC`.
    #[test]
    fn the_truncate_rule_denies_truncation_without_a_write_open() {
        let dir = std::env::temp_dir().join(format!("mcpg-seccomp-trunc-{}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("temp dir");
        let file = dir.join("victim");
        let path = std::ffi::CString::new(file.as_os_str().as_encoded_bytes()).expect("path");
        let p = path.as_ptr();
        let refill = || std::fs::write(&file, b"keep me").expect("write victim");
        let len = || std::fs::metadata(&file).expect("victim").len();
        let openat = |flags: libc::c_int| {
            // SAFETY: a raw openat with a live NUL-terminated path; the fd leaks into a child
            // that exits at once.
            unsafe { libc::syscall(libc::SYS_openat, libc::AT_FDCWD, p, flags, 0) }
        };
        let truncate = || {
            // SAFETY: a raw truncate with a live NUL-terminated path.
            unsafe { libc::syscall(libc::SYS_truncate, p, 0) }
        };
        let open_ro_trunc = || openat(libc::O_RDONLY | libc::O_TRUNC);
        let open_wr_trunc = || openat(libc::O_WRONLY | libc::O_TRUNC);
        let open_ro = || openat(libc::O_RDONLY);
        // Without the rule each truncation works (root here; DAC is what the server has).
        for (name, call) in [
            ("truncate", &truncate as &dyn Fn() -> libc::c_long),
            ("open O_RDONLY|O_TRUNC", &open_ro_trunc),
        ] {
            refill();
            assert_eq!(errno_under(false, call), 0, "{name}");
            assert_eq!(len(), 0, "{name} truncated without the rule");
        }
        // With it both fail and the file keeps its bytes.
        for (name, call) in [
            ("truncate", &truncate as &dyn Fn() -> libc::c_long),
            ("open O_RDONLY|O_TRUNC", &open_ro_trunc),
        ] {
            refill();
            assert_eq!(errno_under(true, call), libc::EPERM, "{name}");
            assert_eq!(len(), 7, "{name} left the file alone");
        }
        // A read-only open and an open for writing pass (landlock judges the latter).
        assert_eq!(errno_under(true, open_ro), 0);
        refill();
        assert_eq!(errno_under(true, open_wr_trunc), 0);
        // openat2 carries its flags in a struct: ENOSYS, and callers fall back to openat.
        let how = [0u64; 3];
        // SAFETY: a raw openat2 with a live path and a zeroed open_how of the right size.
        let openat2 = || unsafe {
            libc::syscall(
                libc::SYS_openat2,
                libc::AT_FDCWD,
                p,
                how.as_ptr(),
                std::mem::size_of_val(&how),
            )
        };
        assert_eq!(errno_under(true, openat2), libc::ENOSYS);
        assert_eq!(errno_under(false, openat2), 0);
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn unknown_extra_is_an_error() {
        assert!(matches!(
            build(&["no_such_call".to_string()], Fallbacks::default()),
            Err(SeccompError::Unknown(_))
        ));
    }
}
