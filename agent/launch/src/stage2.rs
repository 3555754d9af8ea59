//! The stage-2 helper (`mcp-guard __jail-stage2`, started from `/proc/self/exe`) and its protocol.
//!
//! Process tree: launcher → helper (joins v1 cgroups, relays the exit status) → init (born in
//! the v2 cgroup as pid 1 of the new namespaces: handshake, mounts, builds landlock, reaps) →
//! server (inherited descriptors closed at exec, its own session without a terminal →
//! landlock → caps → seccomp → execve). Each sets `PR_SET_PDEATHSIG=SIGKILL` so a dead launcher
//! takes the tree down.
//!
//! Control socket on fd 3 (a socketpair end, close-on-exec in the helper):
//! launcher → helper: u32 LE length + JSON [`JailSpec`], later one [`GO`] byte;
//! helper → launcher: [`READY`] once in the cgroup; then either EOF when the server's execve
//! succeeded (the last copy of the socket closes on exec) or [`ERROR`], an exit code byte and a
//! message when the jail or the execve failed (the server never ran).

use std::{
    ffi::CString,
    io::{Read, Write},
    os::{
        fd::{AsRawFd, FromRawFd, OwnedFd, RawFd},
        unix::net::UnixStream,
    },
    path::{Path, PathBuf},
};

use nix::{
    sched::{CloneFlags, unshare},
    sys::wait::{WaitStatus, waitpid},
    unistd::{ForkResult, Gid, Pid, Uid, fork},
};

use super::{JailSpec, devices, landlock, mount_view};

/// The hidden subcommand that runs the helper.
pub const SUBCOMMAND: &str = "__jail-stage2";
/// The fd the control socket is passed on.
pub const CONTROL_FD: RawFd = 3;
/// Helper → launcher: in the cgroup, waiting for [`GO`].
pub const READY: u8 = b'R';
/// Launcher → helper: the kernel guard is attached; continue.
pub const GO: u8 = b'G';
/// Helper → launcher: the server did not start; an exit code byte and a message follow.
pub const ERROR: u8 = b'E';
/// Exit status of the helper when the jail could not be applied.
pub const EXIT_JAIL: i32 = 77;

/// A failure inside the helper: the exit status to use and what went wrong.
type Failure = (i32, String);

fn fail<E: std::fmt::Display>(what: &str) -> impl FnOnce(E) -> Failure + '_ {
    move |e| (EXIT_JAIL, format!("{what}: {e}"))
}

/// The helper was started without the launcher's control socket (by hand, say): it does nothing.
#[derive(Debug, thiserror::Error)]
#[error("{SUBCOMMAND} is internal to `mcp-guard exec`")]
pub struct NotFromLauncher;

/// Entry point of the helper; returns its exit status, or why it did not run (for the binary to
/// say).
pub fn main() -> Result<i32, NotFromLauncher> {
    // SAFETY: F_GETFD on an fd number only queries; no memory is passed.
    if unsafe { libc::fcntl(CONTROL_FD, libc::F_GETFD) } < 0 {
        return Err(NotFromLauncher);
    }
    Ok(run_helper())
}

/// The helper, once its control socket is there; its exit status.
fn run_helper() -> i32 {
    // SAFETY: the launcher passed the control socket on CONTROL_FD; nothing else owns it.
    let mut sock = UnixStream::from(unsafe { OwnedFd::from_raw_fd(CONTROL_FD) });
    // SAFETY: FD_CLOEXEC on our own fd; no memory is passed.
    unsafe { libc::fcntl(CONTROL_FD, libc::F_SETFD, libc::FD_CLOEXEC) };
    let spec = match read_spec(&mut sock) {
        Ok(spec) => spec,
        Err(msg) => {
            report(&mut sock, EXIT_JAIL, &msg);
            return EXIT_JAIL;
        }
    };
    match helper(&spec, sock) {
        Ok(code) | Err((code, _)) => code,
    }
}

fn read_spec(sock: &mut UnixStream) -> Result<JailSpec, String> {
    let mut len = [0u8; 4];
    sock.read_exact(&mut len)
        .map_err(|e| format!("reading the jail spec: {e}"))?;
    let mut buf = vec![0u8; u32::from_le_bytes(len) as usize];
    sock.read_exact(&mut buf)
        .map_err(|e| format!("reading the jail spec: {e}"))?;
    serde_json::from_slice(&buf).map_err(|e| format!("decoding the jail spec: {e}"))
}

/// Sends an error to the launcher (best effort: it may be gone).
fn report(sock: &mut UnixStream, code: i32, msg: &str) {
    let mut out = vec![ERROR, u8::try_from(code).unwrap_or(1)];
    out.extend_from_slice(msg.as_bytes());
    let _ = sock.write_all(&out);
}

fn set_pdeathsig() {
    // SAFETY: PR_SET_PDEATHSIG takes a signal number; no memory is passed.
    unsafe { libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL, 0, 0, 0) };
}

fn exit_code(status: WaitStatus) -> Option<i32> {
    match status {
        WaitStatus::Exited(_, code) => Some(code),
        WaitStatus::Signaled(_, sig, _) => Some(128 + sig as i32),
        _ => None,
    }
}

fn wait_for(pid: Pid) -> i32 {
    loop {
        match waitpid(None, None) {
            Ok(status) if status.pid() == Some(pid) => {
                if let Some(code) = exit_code(status) {
                    return code;
                }
            }
            Err(nix::errno::Errno::ECHILD) => return EXIT_JAIL,
            _ => {}
        }
    }
}

/// The helper: v1 cgroups, then init forked straight into the v2 cgroup and the new namespaces
/// (clone3 with `CLONE_INTO_CGROUP`: moving a live task into a v2 cgroup waits for an RCU grace
/// period), then relay init's status. Kernels without clone3 get the old way:
/// write cgroup.procs, unshare, fork.
fn helper(spec: &JailSpec, mut sock: UnixStream) -> Result<i32, Failure> {
    let forked = join_v1_cgroups(spec).and_then(|()| fork_init(spec));
    match forked {
        Ok(None) => {
            let code = init(spec, sock);
            // SAFETY: _exit ends the forked child without running the parent's atexit hooks.
            unsafe { libc::_exit(code) }
        }
        Ok(Some(child)) => {
            // Only the server's copy may remain, so its execve closes the last one (EOF).
            drop(sock);
            Ok(wait_for(child))
        }
        Err((code, msg)) => {
            report(&mut sock, code, &msg);
            Err((code, msg))
        }
    }
}

/// The v1 hierarchies (hybrid hosts) carry limits and the peaks' accounting; init inherits the
/// membership of the thread that forks it, this one.
fn join_v1_cgroups(spec: &JailSpec) -> Result<(), Failure> {
    for dir in spec.cgroup_dirs.iter().skip(1) {
        join_v1(dir).map_err(fail(&format!("joining cgroup {}", dir.display())))?;
    }
    Ok(())
}

/// Moves the calling thread into the v1 cgroup `dir`. Through `tasks` with `0` (the caller
/// itself): for that one case the kernel skips the threadgroup lock, whose write side waits for
/// an RCU grace period, where a write to `cgroup.procs` always takes it. The thread is what
/// counts: [`fork_init`] forks from it, and a child is born in its parent thread's cgroups.
fn join_v1(dir: &Path) -> std::io::Result<()> {
    match std::fs::write(dir.join("tasks"), "0") {
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            std::fs::write(dir.join("cgroup.procs"), std::process::id().to_string())
        }
        other => other,
    }
}

/// Forks init into the v2 cgroup (first of `cgroup_dirs`) and, when enforcing, the new mount,
/// PID, IPC and UTS namespaces. `None` in the child.
#[expect(
    clippy::cast_possible_truncation,
    reason = "clone3(2) returns a pid, an int, in a long"
)]
fn fork_init(spec: &JailSpec) -> Result<Option<Pid>, Failure> {
    const CLONE_INTO_CGROUP: u64 = 0x2_0000_0000;
    let Some(v2) = spec.cgroup_dirs.first() else {
        if !spec.unprivileged {
            return Err((EXIT_JAIL, "no cgroup given".into()));
        }
        // Not root: no cgroup and no namespaces, a plain child.
        // SAFETY: the helper is single-threaded (a fresh exec, no runtime).
        return match unsafe { fork() }.map_err(fail("fork"))? {
            ForkResult::Child => Ok(None),
            ForkResult::Parent { child } => Ok(Some(child)),
        };
    };
    let ns = match &spec.enforce {
        Some(e) => {
            let net = if e.net_namespace {
                CloneFlags::CLONE_NEWNET
            } else {
                CloneFlags::empty()
            };
            CloneFlags::CLONE_NEWNS
                | CloneFlags::CLONE_NEWPID
                | CloneFlags::CLONE_NEWIPC
                | CloneFlags::CLONE_NEWUTS
                | net
        }
        None => CloneFlags::empty(),
    };
    let dir = std::fs::File::open(v2).map_err(fail(&format!("opening cgroup {}", v2.display())))?;
    // SAFETY: clone_args is plain integers; zero is "unset" for every field.
    let mut args: libc::clone_args = unsafe { std::mem::zeroed() };
    args.flags = u64::from(ns.bits().cast_unsigned()) | CLONE_INTO_CGROUP;
    args.exit_signal = libc::SIGCHLD as u64;
    args.cgroup = u64::from(dir.as_raw_fd().cast_unsigned());
    // SAFETY: a fork-like clone3 (no CLONE_VM, no stack): the single-threaded helper's child
    // continues here with its own copy of memory, as after fork().
    let r = unsafe {
        libc::syscall(
            libc::SYS_clone3,
            &raw mut args,
            std::mem::size_of::<libc::clone_args>(),
        )
    };
    match r {
        0 => Ok(None),
        pid if pid > 0 => Ok(Some(Pid::from_raw(pid as i32))),
        _ if nix::errno::Errno::last() == nix::errno::Errno::ENOSYS => {
            std::fs::write(v2.join("cgroup.procs"), std::process::id().to_string())
                .map_err(fail(&format!("joining cgroup {}", v2.display())))?;
            unshare(ns).map_err(fail("unshare(mount, pid, ipc, uts (, net) namespaces)"))?;
            // SAFETY: the helper is single-threaded (a fresh exec, no runtime).
            match unsafe { fork() }.map_err(fail("fork"))? {
                ForkResult::Child => Ok(None),
                ForkResult::Parent { child } => Ok(Some(child)),
            }
        }
        _ => Err(fail("clone3 into the cgroup and namespaces")(
            std::io::Error::last_os_error(),
        )),
    }
}

/// In the cgroup: says ready and waits for go (the kernel guard attaches in between).
fn handshake(sock: &mut UnixStream) -> Result<(), Failure> {
    sock.write_all(&[READY]).map_err(fail("control socket"))?;
    let mut go = [0u8; 1];
    sock.read_exact(&mut go).map_err(fail("waiting for go"))?;
    if go[0] != GO {
        return Err((EXIT_JAIL, "launcher did not say go".into()));
    }
    Ok(())
}

/// The init: pid 1 of the jail's PID namespace (when enforcing).
fn init(spec: &JailSpec, mut sock: UnixStream) -> i32 {
    set_pdeathsig();
    let prepared = (|| -> Result<Option<::landlock::RulesetCreated>, Failure> {
        handshake(&mut sock)?;
        let Some(enforce) = &spec.enforce else {
            return Ok(None);
        };
        if !spec.unprivileged {
            mount_private(spec).map_err(|e| (EXIT_JAIL, e))?;
        }
        if enforce.net_namespace {
            super::netns::loopback_up().map_err(|e| (EXIT_JAIL, e))?;
        }
        enforce
            .landlock
            .as_ref()
            .map(landlock::build)
            .transpose()
            .map_err(|e| (EXIT_JAIL, e))
    })();
    let ruleset = match prepared {
        Ok(r) => r,
        Err((code, msg)) => {
            report(&mut sock, code, &msg);
            return code;
        }
    };
    // SAFETY: init is single-threaded (forked from the single-threaded helper).
    match unsafe { fork() } {
        Ok(ForkResult::Child) => {
            let Err((code, msg)) = server(spec, ruleset);
            report(&mut sock, code, &msg);
            // SAFETY: see helper().
            unsafe { libc::_exit(code) }
        }
        Ok(ForkResult::Parent { child }) => {
            drop(sock);
            drop(ruleset);
            // As pid 1 it also reaps orphans re-parented to it; its exit kills the namespace.
            wait_for(child)
        }
        Err(e) => {
            report(&mut sock, EXIT_JAIL, &format!("fork: {e}"));
            EXIT_JAIL
        }
    }
}

/// In the new mount namespace: stop propagation to the host, the jail's own /tmp, /run,
/// /dev/shm (see [`mount_view`]), its own /dev ([`devices`]) and the PID namespace's own /proc.
fn mount_private(spec: &JailSpec) -> Result<(), String> {
    use nix::mount::{MsFlags, mount};
    let none: Option<&str> = None;
    mount(none, "/", none, MsFlags::MS_REC | MsFlags::MS_PRIVATE, none)
        .map_err(|e| format!("making / private in the jail's mount namespace: {e}"))?;
    // Worked out from the host's view, before the fresh mounts hide it.
    let granted = granted_paths(spec);
    let plan = mount_view::plan(&mount_view::HIDDEN, &granted);
    mount_view::apply(&plan)?;
    devices::mount(&granted)?;
    mount(
        Some("proc"),
        "/proc",
        Some("proc"),
        MsFlags::MS_NOSUID | MsFlags::MS_NODEV | MsFlags::MS_NOEXEC,
        none,
    )
    .map_err(|e| format!("mounting /proc for the jail's PID namespace: {e}"))?;
    Ok(())
}

/// Everything the server is granted by path: the policy's filesystem entries, its program and
/// the pathname sockets it may reach.
fn granted_paths(spec: &JailSpec) -> Vec<PathBuf> {
    spec.enforce
        .iter()
        .flat_map(|e| {
            e.landlock
                .iter()
                .flat_map(|l| l.read.iter().chain(&l.write).chain(&l.exec))
                .chain(&e.unix_sockets)
        })
        .chain(std::iter::once(&spec.program))
        .cloned()
        .collect()
}

/// The server child: landlock → caps and user → seccomp → execve. Returns only on failure.
fn server(
    spec: &JailSpec,
    ruleset: Option<::landlock::RulesetCreated>,
) -> Result<std::convert::Infallible, Failure> {
    // The helper is a Rust program, which ignores SIGPIPE; the server starts with defaults.
    // SAFETY: resetting a disposition to SIG_DFL and emptying the mask pass no dangling memory.
    unsafe {
        libc::signal(libc::SIGPIPE, libc::SIG_DFL);
        let mut set: libc::sigset_t = std::mem::zeroed();
        libc::sigemptyset(&raw mut set);
        libc::sigprocmask(libc::SIG_SETMASK, &raw const set, std::ptr::null_mut());
    }
    set_pdeathsig();
    // Nothing but stdio reaches the server unless the jail passes it on purpose (the pinned
    // script's fd, opened below): a descriptor exec inherited from whoever started it (an open
    // file, a pipe, a socket) would hand the server what its policy does not grant.
    close_inherited().map_err(fail("closing inherited descriptors"))?;
    // Its own session, without a controlling terminal: no TIOCSTI into the terminal exec runs
    // in (seccomp denies it too), no signals from its job control. Not exec is root: exec made
    // the helper a session leader already, and its process group is how exec kills the tree.
    if !spec.unprivileged {
        nix::unistd::setsid().map_err(fail("setsid"))?;
    }
    // Opened while still root and unrestricted, hashed, and exec'd as this very fd below.
    let pinned = spec
        .program_digest
        .as_deref()
        .map(|d| open_pinned(&spec.program, d))
        .transpose()?;
    if let Some(rs) = ruleset {
        landlock::restrict(rs).map_err(|e| (EXIT_JAIL, e))?;
    }
    let enforce = spec.enforce.is_some();
    // Not root: already the user, with no capabilities to drop (nor CAP_SETPCAP to drop the
    // bounding set with).
    if enforce && !spec.unprivileged {
        // The bounding set can only be emptied while CAP_SETPCAP is still held.
        caps::clear(None, caps::CapSet::Bounding).map_err(fail("dropping the bounding set"))?;
        caps::clear(None, caps::CapSet::Ambient).map_err(fail("dropping ambient caps"))?;
    }
    if !spec.unprivileged {
        let id = &spec.identity;
        let groups: Vec<Gid> = id.groups.iter().map(|&g| Gid::from_raw(g)).collect();
        nix::unistd::setgroups(&groups).map_err(fail("setgroups"))?;
        let gid = Gid::from_raw(id.gid);
        nix::unistd::setresgid(gid, gid, gid).map_err(fail("setresgid"))?;
        let uid = Uid::from_raw(id.uid);
        nix::unistd::setresuid(uid, uid, uid).map_err(fail("setresuid"))?;
    }
    // A uid change clears the parent-death signal.
    set_pdeathsig();
    if let Some(mask) = spec.umask {
        nix::sys::stat::umask(nix::sys::stat::Mode::from_bits_truncate(mask));
    }
    if let Some(enf) = &spec.enforce {
        for set in [
            caps::CapSet::Inheritable,
            caps::CapSet::Effective,
            caps::CapSet::Permitted,
        ] {
            caps::clear(None, set).map_err(fail("dropping capabilities"))?;
        }
        // SAFETY: PR_SET_NO_NEW_PRIVS takes integers only.
        if unsafe { libc::prctl(libc::PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) } != 0 {
            return Err(fail("no_new_privs")(std::io::Error::last_os_error()));
        }
        for &(resource, value) in &enf.rlimits {
            let lim = libc::rlimit {
                rlim_cur: value,
                rlim_max: value,
            };
            // SAFETY: lim is a valid rlimit for the duration of the call.
            if unsafe { libc::setrlimit(resource as _, &raw const lim) } != 0 {
                return Err(fail("setrlimit")(std::io::Error::last_os_error()));
            }
        }
        for program in &enf.seccomp {
            program.install().map_err(|e| (EXIT_JAIL, e))?;
        }
    }
    let cstr = |s: &str| CString::new(s).map_err(|_| (EXIT_JAIL, format!("{s:?} contains NUL")));
    let path = cstr(&spec.program.to_string_lossy())?;
    let argv = spec
        .argv
        .iter()
        .map(|a| cstr(a))
        .collect::<Result<Vec<_>, _>>()?;
    let envp = spec
        .env
        .iter()
        .map(|(k, v)| cstr(&format!("{k}={v}")))
        .collect::<Result<Vec<_>, _>>()?;
    let Err(e) = match &pinned {
        Some(fd) => nix::unistd::fexecve(fd, &argv, &envp),
        None => nix::unistd::execve(&path, &argv, &envp),
    };
    let code = if e == nix::errno::Errno::ENOENT {
        127
    } else {
        126
    };
    let hint = if e == nix::errno::Errno::EACCES && enforce {
        " (is it, and its interpreter, in the policy's [filesystem] exec set?)"
    } else {
        ""
    };
    Err((
        code,
        format!("execve {}: {e}{hint}", spec.program.display()),
    ))
}

/// Marks every descriptor above stderr close-on-exec: the server's execve closes them, while the
/// control socket stays usable until then to report a failed exec. `close_range` with
/// `CLOSE_RANGE_CLOEXEC` (Linux 5.11), else each entry of /proc/self/fd.
fn close_inherited() -> std::io::Result<()> {
    // SAFETY: close_range takes integers only; with CLOSE_RANGE_CLOEXEC it closes nothing.
    let r = unsafe {
        libc::syscall(
            libc::SYS_close_range,
            3u32,
            u32::MAX,
            libc::CLOSE_RANGE_CLOEXEC,
        )
    };
    if r == 0 {
        return Ok(());
    }
    let e = std::io::Error::last_os_error();
    match e.raw_os_error() {
        // ENOSYS: no close_range (before 5.9); EINVAL: no CLOSE_RANGE_CLOEXEC (5.9, 5.10).
        Some(libc::ENOSYS | libc::EINVAL) => cloexec_each_open_fd(),
        _ => Err(e),
    }
}

/// [`close_inherited`] without `close_range`: every fd above stderr that /proc/self/fd lists.
fn cloexec_each_open_fd() -> std::io::Result<()> {
    let fds: Vec<RawFd> = std::fs::read_dir("/proc/self/fd")?
        .flatten()
        .filter_map(|e| e.file_name().to_str()?.parse().ok())
        .filter(|&fd| fd > 2)
        .collect();
    for fd in fds {
        // SAFETY: F_GETFD/F_SETFD on an fd number pass no memory; one that closed since (the
        // directory's own) fails EBADF, which is fine.
        unsafe {
            let flags = libc::fcntl(fd, libc::F_GETFD);
            if flags >= 0 {
                libc::fcntl(fd, libc::F_SETFD, flags | libc::FD_CLOEXEC);
            }
        }
    }
    Ok(())
}

/// Opens the pinned program and checks its digest on that fd. A `#!` script keeps the fd across
/// the exec: the kernel hands its interpreter `/dev/fd/N`, the same open file.
fn open_pinned(program: &Path, expected: &str) -> Result<std::fs::File, Failure> {
    use std::io::{Seek, SeekFrom};
    let mut f = std::fs::File::open(program)
        .map_err(fail(&format!("opening the pinned {}", program.display())))?;
    let actual = mcp_guard_supply::sha256_reader(&mut f)
        .map_err(fail(&format!("hashing the pinned {}", program.display())))?;
    if actual != expected {
        return Err((
            EXIT_JAIL,
            format!(
                "supply-chain pin: {} changed between the check and the exec: expected \
                 {expected}, found {actual}; refusing to exec",
                program.display()
            ),
        ));
    }
    let mut head = [0u8; 2];
    f.seek(SeekFrom::Start(0))
        .and_then(|_| f.read(&mut head))
        .map_err(fail(&format!("reading {}", program.display())))?;
    if head == *b"#!" {
        // SAFETY: clearing FD_CLOEXEC on an fd we own; no memory is passed.
        unsafe { libc::fcntl(f.as_raw_fd(), libc::F_SETFD, 0) };
    }
    Ok(f)
}

/// The launcher's view of the helper's last message.
#[derive(Debug, PartialEq, Eq)]
pub enum Outcome {
    /// The server's execve succeeded.
    Started,
    /// It did not; exit with this status after printing the message.
    Failed(i32, String),
}

/// Decodes what the helper sent after [`GO`] (everything up to EOF).
pub fn outcome(bytes: &[u8]) -> Outcome {
    match bytes {
        [] => Outcome::Started,
        [ERROR, code, msg @ ..] => {
            Outcome::Failed(i32::from(*code), String::from_utf8_lossy(msg).into_owned())
        }
        other => Outcome::Failed(
            EXIT_JAIL,
            format!(
                "unexpected message from the jail helper: {:?}",
                String::from_utf8_lossy(other)
            ),
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cloexec(f: &std::fs::File) -> bool {
        // SAFETY: F_GETFD on an fd we own; no memory is passed.
        let flags = unsafe { libc::fcntl(f.as_raw_fd(), libc::F_GETFD) };
        flags & libc::FD_CLOEXEC != 0
    }

    fn inheritable_fd() -> std::fs::File {
        let f = std::fs::File::open("/dev/null").expect("/dev/null");
        // SAFETY: clearing FD_CLOEXEC on an fd we own; no memory is passed.
        unsafe { libc::fcntl(f.as_raw_fd(), libc::F_SETFD, 0) };
        assert!(!cloexec(&f));
        f
    }

    #[test]
    fn inherited_descriptors_are_closed_at_exec_with_close_range_and_without() {
        let f = inheritable_fd();
        close_inherited().expect("close_range");
        assert!(cloexec(&f), "close_range marks it");
        // The fallback for kernels without close_range (or its CLOEXEC flag), run here for real.
        let f = inheritable_fd();
        cloexec_each_open_fd().expect("/proc/self/fd");
        assert!(cloexec(&f), "the /proc/self/fd walk marks it");
    }

    #[test]
    fn the_pinned_program_is_hashed_on_the_fd_that_is_returned_for_exec() {
        let dir = std::env::temp_dir().join(format!("stage2-pin-{}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("mkdir");
        let elf = dir.join("prog");
        std::fs::write(&elf, b"\x7fELF not really").expect("write");
        let script = dir.join("script");
        std::fs::write(&script, b"#!/bin/sh\necho hi\n").expect("write");
        let digest = |p: &Path| mcp_guard_supply::sha256_file(p).expect("hash");

        let f = open_pinned(&elf, &digest(&elf)).expect("matching digest opens");
        assert!(cloexec(&f), "a binary's fd must not leak into the server");
        let f = open_pinned(&script, &digest(&script)).expect("matching digest opens");
        assert!(
            !cloexec(&f),
            "a script's fd stays open for its interpreter (/dev/fd/N)"
        );

        let wrong = digest(&script);
        let (code, msg) = open_pinned(&elf, &wrong).expect_err("a changed program is refused");
        assert_eq!(code, EXIT_JAIL);
        assert!(msg.contains(&elf.display().to_string()), "{msg}");
        assert!(msg.contains(&format!("expected {wrong}")), "{msg}");
        assert!(msg.contains(&format!("found {}", digest(&elf))), "{msg}");
        let _ = std::fs::remove_dir_all(&dir);
    }
}
