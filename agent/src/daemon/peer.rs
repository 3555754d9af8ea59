//! Who is at the other end of the agent's socket, beyond its uid: a process of a server that
//! mcp-guard guards is never a client. Its sessions would run under policies its user may use,
//! and a server running as root would be treated as root (`--observe`: no jail at all).
//!
//! The peer's cgroup is read from `/proc/<pid>/cgroup`, with the pid of `SO_PEERCRED` (taken when
//! it connected). A pid is only reused once its process is gone, so the reading counts only if
//! the same process is still alive after it: the peer's pidfd (`SO_PEERPIDFD`, Linux 6.5) says
//! so. Where there is none, the process must still be there under that pid.

use std::{
    io,
    os::fd::{AsRawFd, FromRawFd as _, OwnedFd, RawFd},
    path::Path,
};

use mcp_guard_launch::cgroup::PARENT;

/// Why the peer is refused, or `None` when it is not in a jailed server's cgroup.
pub fn jailed_peer(sock: RawFd, pid: Option<i32>) -> Option<String> {
    let Some(pid) = pid.filter(|p| *p > 0) else {
        return Some("the peer's process is unknown (no SO_PEERCRED pid)".into());
    };
    let pidfd = peer_pidfd(sock);
    let cgroup = std::fs::read_to_string(format!("/proc/{pid}/cgroup"));
    let alive = match &pidfd {
        Ok(fd) => pidfd_alive(fd),
        Err(_) => Path::new(&format!("/proc/{pid}")).exists(),
    };
    let (Ok(cgroup), true) = (cgroup, alive) else {
        return Some(format!(
            "process {pid} is gone: its cgroup cannot be checked"
        ));
    };
    let path = v2_path(&cgroup)?;
    in_jail_cgroup(path).then(|| {
        format!(
            "process {pid} runs in {path}, a cgroup of a server mcp-guard guards: a guarded \
             server cannot use the agent"
        )
    })
}

/// The cgroup v2 path in a `/proc/PID/cgroup` text (`0::/path`).
fn v2_path(text: &str) -> Option<&str> {
    text.lines().find_map(|l| l.strip_prefix("0::"))
}

/// Whether a cgroup v2 path is mcp-guard's or below it (every session's cgroup, and a
/// container's below its server's).
fn in_jail_cgroup(path: &str) -> bool {
    path.strip_prefix('/')
        .and_then(|p| p.strip_prefix(PARENT))
        .is_some_and(|rest| rest.is_empty() || rest.starts_with('/'))
}

/// The peer's pidfd.
fn peer_pidfd(sock: RawFd) -> io::Result<OwnedFd> {
    let mut fd: libc::c_int = -1;
    #[expect(
        clippy::cast_possible_truncation,
        reason = "the size of a c_int, a socklen_t"
    )]
    let mut len = std::mem::size_of::<libc::c_int>() as libc::socklen_t;
    // SAFETY: `fd` and `len` are valid out-pointers of the sizes given; `sock` is a socket the
    // caller holds open.
    let r = unsafe {
        libc::getsockopt(
            sock,
            libc::SOL_SOCKET,
            libc::SO_PEERPIDFD,
            (&raw mut fd).cast(),
            &raw mut len,
        )
    };
    if r < 0 || fd < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: SO_PEERPIDFD installed a new descriptor that nothing else owns.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

/// Whether the process behind `pidfd` still runs (signal 0 checks without sending).
fn pidfd_alive(pidfd: &OwnedFd) -> bool {
    // SAFETY: pidfd_send_signal with signal 0 and no siginfo only checks; the fd is ours.
    let r = unsafe {
        libc::syscall(
            libc::SYS_pidfd_send_signal,
            pidfd.as_raw_fd(),
            0,
            std::ptr::null::<libc::siginfo_t>(),
            0,
        )
    };
    r == 0
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mcp_guard_cgroups_are_jails_and_others_not() {
        assert!(in_jail_cgroup("/mcp-guard/time-12-ab"));
        assert!(in_jail_cgroup("/mcp-guard/srv-1-x/libpod-abc"));
        assert!(in_jail_cgroup("/mcp-guard"));
        assert!(!in_jail_cgroup("/mcp-guardian/x"));
        assert!(!in_jail_cgroup("/system.slice/mcp-guard.service"));
        assert!(!in_jail_cgroup("/"));
        assert_eq!(
            v2_path("12:pids:/x\n0::/mcp-guard/a\n"),
            Some("/mcp-guard/a")
        );
        assert_eq!(v2_path("12:pids:/x\n"), None);
    }

    #[test]
    fn this_process_is_not_jailed_and_a_dead_pid_is_refused() {
        let (a, _b) = std::os::unix::net::UnixStream::pair().expect("pair");
        assert_eq!(
            jailed_peer(a.as_raw_fd(), Some(std::process::id().cast_signed())),
            None
        );
        assert!(jailed_peer(a.as_raw_fd(), None).is_some());
    }
}
