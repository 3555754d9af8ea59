//! `mcp-guard __pycache-compile SPEC`: the jail the pinned packages' bytecode cache is compiled
//! in (`supply::pycache`). A fresh single-threaded process (started from `/proc/self/exe`) that
//! inherits the interpreter as an open file descriptor the launcher has hashed and checked
//! against the pin, confines itself and executes that very descriptor (`fexecve`): what compiles
//! is what was verified, whatever the path holds by then.
//!
//! The compiler writes nothing: landlock grants it no write anywhere (it sends the compiled
//! bytecode on stdout, and the launcher writes the files). It reads only the trees the spec
//! names, has no network (a new network namespace; landlock denies TCP; seccomp denies
//! `socket`/`connect`), and runs as `nobody` with one capability, `CAP_DAC_READ_SEARCH` (the
//! interpreter may live under a directory only root may enter, as `/root/.pyenv`), which also
//! keeps other `nobody` processes from tracing it or reaching into its descriptors. Without
//! root it runs as its caller, with the same landlock and seccomp confinement.

use std::{
    collections::BTreeMap,
    ffi::CString,
    os::fd::{BorrowedFd, RawFd},
    path::PathBuf,
};

use landlock::{
    ABI, Access, AccessFs, AccessNet, CompatLevel, Compatible, Ruleset, RulesetAttr,
    RulesetCreatedAttr, Scope, path_beneath_rules,
};
use serde::{Deserialize, Serialize};

/// The hidden subcommand.
pub const SUBCOMMAND: &str = "__pycache-compile";
/// Exit status when the jail could not be set up (the interpreter never ran).
pub const EXIT_SETUP: i32 = 77;
/// The newest landlock ABI whose rights are asked for.
const MAX_ABI: i32 = 7;

/// What the helper runs, as plain data (one argument on its command line).
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct CompileSpec {
    /// The inherited descriptor of the verified interpreter.
    pub fd: RawFd,
    /// The interpreter's argv.
    pub argv: Vec<String>,
    /// Trees it may read.
    pub read: Vec<PathBuf>,
    /// Trees it may read and execute (the interpreter, its libraries, the dynamic loader).
    pub exec: Vec<PathBuf>,
}

/// Syscalls the compiler has no use for; denied with EPERM.
const DENIED: &[libc::c_long] = &[
    libc::SYS_socket,
    libc::SYS_connect,
    libc::SYS_open_by_handle_at,
    libc::SYS_name_to_handle_at,
    libc::SYS_ptrace,
    libc::SYS_process_vm_readv,
    libc::SYS_process_vm_writev,
    libc::SYS_bpf,
    libc::SYS_io_uring_setup,
    libc::SYS_mount,
    libc::SYS_unshare,
    libc::SYS_setns,
    libc::SYS_keyctl,
    libc::SYS_add_key,
    libc::SYS_request_key,
    libc::SYS_perf_event_open,
    libc::SYS_userfaultfd,
];

/// Why the helper could not set up its jail (the interpreter never ran): the binary says it and
/// exits with [`EXIT_SETUP`].
#[derive(Debug, thiserror::Error)]
#[error("{SUBCOMMAND}: {0}")]
pub struct SetupFailed(String);

/// Entry point of the helper; returns only on failure (success execs).
pub fn main(spec: &str) -> Result<std::convert::Infallible, SetupFailed> {
    run(spec).map_err(SetupFailed)
}

fn run(spec: &str) -> Result<std::convert::Infallible, String> {
    let spec: CompileSpec = serde_json::from_str(spec).map_err(|e| format!("the spec: {e}"))?;
    let fd = spec.fd;
    // SAFETY: F_GETFD on an fd number only queries; no memory is passed.
    if fd < 3 || unsafe { libc::fcntl(fd, libc::F_GETFD) } < 0 {
        return Err(format!(
            "no interpreter on fd {fd}: {SUBCOMMAND} is internal"
        ));
    }
    // SAFETY: the launcher passed the verified interpreter on this fd and nothing in this
    // process closes it before the exec.
    let interpreter = unsafe { BorrowedFd::borrow_raw(fd) };
    let root = nix::unistd::geteuid().is_root();
    if root {
        nix::sched::unshare(nix::sched::CloneFlags::CLONE_NEWNET)
            .map_err(|e| format!("a network namespace of its own: {e}"))?;
    }
    let ruleset = landlock_rules(&spec)?;
    let seccomp = seccomp_filter()?;
    if root {
        become_nobody()?;
    }
    // SAFETY: PR_SET_PDEATHSIG takes a signal number (a uid change cleared it).
    unsafe { libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL, 0, 0, 0) };
    // SAFETY: PR_SET_NO_NEW_PRIVS takes integers only.
    if unsafe { libc::prctl(libc::PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) } != 0 {
        return Err(format!("no_new_privs: {}", std::io::Error::last_os_error()));
    }
    let status = ruleset
        .restrict_self()
        .map_err(|e| format!("landlock: {e}"))?;
    if status.ruleset != landlock::RulesetStatus::FullyEnforced {
        return Err(format!(
            "landlock ruleset not fully enforced ({:?})",
            status.ruleset
        ));
    }
    seccompiler::apply_filter(&seccomp).map_err(|e| format!("seccomp: {e}"))?;
    // A `#!` interpreter gets its script as /dev/fd/N: the fd must survive the exec.
    let mut head = [0u8; 2];
    // SAFETY: pread into a live 2-byte buffer from an fd we hold.
    let n = unsafe { libc::pread(fd, head.as_mut_ptr().cast(), 2, 0) };
    // SAFETY: F_SETFD on our own fd; no memory is passed.
    unsafe {
        if n == 2 && head == *b"#!" {
            libc::fcntl(fd, libc::F_SETFD, 0);
        } else {
            libc::fcntl(fd, libc::F_SETFD, libc::FD_CLOEXEC);
        }
    }
    let cstr = |s: &str| CString::new(s).map_err(|_| format!("{s:?} contains NUL"));
    let argv = spec
        .argv
        .iter()
        .map(|a| cstr(a))
        .collect::<Result<Vec<_>, _>>()?;
    let envp: [CString; 0] = [];
    let Err(e) = nix::unistd::fexecve(interpreter, &argv, &envp);
    Err(format!("fexecve of the verified interpreter: {e}"))
}

/// Read (and exec) the spec's trees; no write anywhere; no TCP; scoped signals and abstract
/// sockets. Built while still root, so trees only root may enter can be opened.
fn landlock_rules(spec: &CompileSpec) -> Result<landlock::RulesetCreated, String> {
    const LANDLOCK_CREATE_RULESET_VERSION: libc::c_uint = 1;
    // SAFETY: with a null attr and size 0 and the VERSION flag the kernel reads no memory.
    let kabi = unsafe {
        libc::syscall(
            libc::SYS_landlock_create_ruleset,
            std::ptr::null::<libc::c_void>(),
            0usize,
            LANDLOCK_CREATE_RULESET_VERSION,
        )
    };
    if kabi < 1 {
        return Err(
            "landlock is not available: the compiler could write anywhere its user may; not \
             compiling"
                .into(),
        );
    }
    let version = i32::try_from(kabi).unwrap_or(MAX_ABI).min(MAX_ABI);
    let abi = ABI::from(version);
    let err = |e: landlock::RulesetError| format!("landlock: {e}");
    let read = AccessFs::ReadFile | AccessFs::ReadDir;
    let exec = read | AccessFs::Execute;
    let mut ruleset = Ruleset::default()
        .set_compatibility(CompatLevel::HardRequirement)
        .handle_access(AccessFs::from_all(abi))
        .map_err(err)?;
    if version >= 4 {
        ruleset = ruleset
            .handle_access(AccessNet::from_all(abi))
            .map_err(err)?;
    }
    if version >= 6 {
        ruleset = ruleset.scope(Scope::from_all(abi)).map_err(err)?;
    }
    ruleset
        .create()
        .map_err(err)?
        .add_rules(path_beneath_rules(&spec.read, read))
        .map_err(err)?
        .add_rules(path_beneath_rules(&spec.exec, exec))
        .map_err(err)
}

fn seccomp_filter() -> Result<seccompiler::BpfProgram, String> {
    use seccompiler::{SeccompAction, SeccompFilter, TargetArch};
    let arch = TargetArch::try_from(std::env::consts::ARCH).map_err(|e| format!("seccomp: {e}"))?;
    let rules: BTreeMap<i64, Vec<seccompiler::SeccompRule>> =
        DENIED.iter().map(|&n| (n, Vec::new())).collect();
    let filter = SeccompFilter::new(
        rules,
        SeccompAction::Allow,
        SeccompAction::Errno(libc::EPERM as u32),
        arch,
    )
    .map_err(|e| format!("seccomp: {e}"))?;
    filter.try_into().map_err(|e| format!("seccomp: {e}"))
}

/// Root → `nobody` with `CAP_DAC_READ_SEARCH` alone (permitted, effective, inheritable and
/// ambient, so it survives the exec), every other capability gone from the bounding set.
fn become_nobody() -> Result<(), String> {
    use caps::{CapSet, Capability};
    use nix::unistd::{Gid, Uid, User};
    let (uid, gid) = match User::from_name("nobody") {
        Ok(Some(u)) => (u.uid, u.gid),
        _ => (Uid::from_raw(65534), Gid::from_raw(65534)),
    };
    let keep = Capability::CAP_DAC_READ_SEARCH;
    for cap in caps::all() {
        if cap != keep {
            caps::drop(None, CapSet::Bounding, cap)
                .map_err(|e| format!("dropping {cap} from the bounding set: {e}"))?;
        }
    }
    nix::unistd::setgroups(&[gid]).map_err(|e| format!("setgroups: {e}"))?;
    nix::unistd::setresgid(gid, gid, gid).map_err(|e| format!("setresgid: {e}"))?;
    // SAFETY: PR_SET_KEEPCAPS takes integers only.
    if unsafe { libc::prctl(libc::PR_SET_KEEPCAPS, 1, 0, 0, 0) } != 0 {
        return Err(format!(
            "keeping capabilities: {}",
            std::io::Error::last_os_error()
        ));
    }
    nix::unistd::setresuid(uid, uid, uid).map_err(|e| format!("setresuid: {e}"))?;
    let only = std::iter::once(keep).collect::<caps::CapsHashSet>();
    for set in [CapSet::Permitted, CapSet::Effective, CapSet::Inheritable] {
        caps::set(None, set, &only).map_err(|e| format!("setting {set:?} capabilities: {e}"))?;
    }
    caps::clear(None, CapSet::Ambient).map_err(|e| format!("ambient capabilities: {e}"))?;
    caps::raise(None, CapSet::Ambient, keep).map_err(|e| format!("ambient capabilities: {e}"))?;
    Ok(())
}
