//! The executable an MCP client runs from: the parent of the `mcp-guard exec` process, read from
//! `/proc/<ppid>/exe` (the kernel's record of what that process executed; the client cannot
//! choose what it says, unlike `clientInfo.name`). `[tools.clients]` rules with `exe` match it.
//!
//! Standalone, exec reads its own parent. Through the agent, the agent reads the parent of the
//! peer the socket reports (`SO_PEERCRED`'s pid), with the caller's file-system identity: it sees
//! what the caller could see of its own processes, and needs no ptrace capability. In both cases
//! the parent is read again afterwards: had it exited in between (the process then gets a new
//! parent), its pid could have been reused, so the answer is dropped. Through the agent the peer
//! is also checked to be alive still (its pidfd), so its pid was not reused either.
//!
//! Unknown (`None`) when the parent runs as another user, is not dumpable, or is gone: then no
//! executable-bound rule matches.

use std::{
    os::fd::{AsRawFd, BorrowedFd, FromRawFd, OwnedFd},
    path::{Path, PathBuf},
};

/// The executable of this process's parent (standalone `exec`).
pub fn of_own_parent() -> Option<PathBuf> {
    let parent = std::os::unix::process::parent_id();
    let exe = exe_of(parent)?;
    (std::os::unix::process::parent_id() == parent).then_some(exe)
}

/// The executable of the parent of `pid`, the agent's peer on `peer` (`SO_PEERCRED`), read with
/// file-system uid `uid` and gid `gid` (the peer's).
pub fn of_peer_parent(peer: BorrowedFd<'_>, pid: u32, uid: u32, gid: u32) -> Option<PathBuf> {
    let pidfd = peer_pidfd(peer);
    // Credentials are per thread: this one reads with the caller's and then ends.
    std::thread::scope(|s| {
        s.spawn(|| {
            if uid != 0 && !as_user(uid, gid) {
                return None;
            }
            let parent = parent_of(pid)?;
            let exe = exe_of(parent)?;
            let same_parent = parent_of(pid) == Some(parent);
            let peer_alive = pidfd.as_ref().is_none_or(|fd| alive(fd.as_raw_fd()));
            (same_parent && peer_alive).then_some(exe)
        })
        .join()
        .ok()
        .flatten()
    })
}

/// `readlink /proc/<pid>/exe`.
fn exe_of(pid: u32) -> Option<PathBuf> {
    std::fs::read_link(Path::new("/proc").join(pid.to_string()).join("exe")).ok()
}

/// `PPid:` of `/proc/<pid>/status`.
fn parent_of(pid: u32) -> Option<u32> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    status
        .lines()
        .find_map(|l| l.strip_prefix("PPid:"))
        .and_then(|v| v.trim().parse().ok())
        .filter(|p| *p != 0)
}

/// Sets this thread's file-system uid and gid (the ptrace access check on `/proc/<pid>/exe`
/// compares them with the target's ids); true when both took.
#[expect(
    clippy::cast_possible_truncation,
    clippy::cast_sign_loss,
    reason = "setfsuid(2)/setfsgid(2) return the previous id, a 32-bit uid_t, in a long"
)]
fn as_user(uid: u32, gid: u32) -> bool {
    // SAFETY: setfsgid/setfsuid take plain integers and change only the calling thread's
    // credentials (raw syscalls: no libc broadcast to other threads); -1 (u32::MAX) only reads
    // the current value back.
    unsafe {
        libc::syscall(libc::SYS_setfsgid, gid);
        libc::syscall(libc::SYS_setfsuid, uid);
        libc::syscall(libc::SYS_setfsgid, u32::MAX) as u32 == gid
            && libc::syscall(libc::SYS_setfsuid, u32::MAX) as u32 == uid
    }
}

/// The peer's pidfd (`SO_PEERPIDFD`, Linux 6.5+); `None` on older kernels.
fn peer_pidfd(peer: BorrowedFd<'_>) -> Option<OwnedFd> {
    let mut fd: libc::c_int = -1;
    #[expect(
        clippy::cast_possible_truncation,
        reason = "the size of a c_int, a socklen_t"
    )]
    let mut len = std::mem::size_of::<libc::c_int>() as libc::socklen_t;
    // SAFETY: getsockopt writes at most `len` bytes into `fd`, which is a c_int of that size.
    let r = unsafe {
        libc::getsockopt(
            peer.as_raw_fd(),
            libc::SOL_SOCKET,
            libc::SO_PEERPIDFD,
            (&raw mut fd).cast(),
            &raw mut len,
        )
    };
    // SAFETY: on success the kernel installed a new descriptor for this process; it is owned
    // here alone.
    (r == 0 && fd >= 0).then(|| unsafe { OwnedFd::from_raw_fd(fd) })
}

/// Whether the process of `pidfd` has not exited (a pidfd polls readable once it has).
fn alive(pidfd: libc::c_int) -> bool {
    let mut p = libc::pollfd {
        fd: pidfd,
        events: libc::POLLIN,
        revents: 0,
    };
    // SAFETY: one valid pollfd, zero timeout.
    let n = unsafe { libc::poll(&raw mut p, 1, 0) };
    n == 0
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_the_parent_of_a_peer_and_of_itself() {
        use std::os::fd::AsFd as _;
        let mine = of_own_parent().expect("the test's parent");
        assert!(mine.is_absolute(), "{}", mine.display());
        // A child that connects back: its parent is this test process.
        let (a, b) = std::os::unix::net::UnixStream::pair().expect("pair");
        let exe = std::env::current_exe().expect("current exe");
        let child = std::process::Command::new("/bin/sh")
            .args(["-c", "sleep 5"])
            .spawn()
            .expect("child");
        // SO_PEERCRED of a socketpair is this process; its parent is the harness.
        let peer = of_peer_parent(a.as_fd(), std::process::id(), 0, 0);
        assert_eq!(peer, Some(mine.clone()));
        // The child's parent is this test binary.
        assert_eq!(
            exe_of(parent_of(child.id()).expect("child's parent")),
            Some(exe.canonicalize().expect("canonical"))
        );
        drop((a, b));
        let mut child = child;
        let _ = child.kill();
        let _ = child.wait();
    }
}
