//! Host facts for the doctor: mount table and cgroup parsing, capabilities, and the probes that
//! run in a short-lived forked child (namespaces, seccomp, a process in a cgroup).

use std::{
    ffi::CString,
    io::{Read as _, Write as _},
    path::{Path, PathBuf},
    time::Duration,
};

use super::Errno;

/// The effective capability set from `/proc/self/status` text (`CapEff:` hex).
pub(super) fn parse_cap_eff(status: &str) -> Option<u64> {
    status
        .lines()
        .find_map(|l| l.strip_prefix("CapEff:"))
        .and_then(|hex| u64::from_str_radix(hex.trim(), 16).ok())
}

/// Capabilities mcp-guard uses, with their bit numbers (linux/capability.h): BPF and PERFMON to
/// load programs, `NET_ADMIN` for cgroup socket hooks, `SYS_ADMIN` for cgroups, mounts and
/// namespaces, SETUID/SETGID to drop a server to its user.
pub(super) const CAPS: [(&str, u32); 6] = [
    ("CAP_SETGID", 6),
    ("CAP_SETUID", 7),
    ("CAP_NET_ADMIN", 12),
    ("CAP_SYS_ADMIN", 21),
    ("CAP_PERFMON", 38),
    ("CAP_BPF", 39),
];

/// A unique name for a probe's temporary cgroup.
pub(super) fn temp_cgroup_name() -> String {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.subsec_nanos());
    format!("mcp-guard-doctor-{}-{nanos}", std::process::id())
}

/// Removes a cgroup directory, retrying briefly while a just-exited probe child is still being
/// accounted out of it.
pub(super) fn remove_cgroup(dir: &Path) -> std::io::Result<()> {
    let mut last = Ok(());
    for _ in 0..50 {
        last = std::fs::remove_dir(dir);
        match &last {
            Ok(()) => return Ok(()),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
            Err(e) if e.raw_os_error() == Some(libc::EBUSY) => {
                std::thread::sleep(Duration::from_millis(2));
            }
            Err(_) => return last,
        }
    }
    last
}

/// How a probe child ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum ChildEnd {
    /// It exited with this status (the probes use 0 for success, an errno otherwise).
    Exited(i32),
    /// A signal killed it.
    Signaled(i32),
}

/// Runs `f` in a forked child and returns how the child ended; `before_wait` runs in the parent
/// after the fork, with the child's pid, before it is reaped.
///
/// `f` runs after fork in a copy of a possibly multi-threaded process, so it must only make
/// async-signal-safe calls: raw syscalls on data prepared before the fork, no allocation.
pub(super) fn in_child(
    f: impl FnOnce() -> i32,
    before_wait: impl FnOnce(i32),
) -> Result<ChildEnd, Errno> {
    // SAFETY: the child only runs `f` (restricted to async-signal-safe calls, see above) and then
    // `_exit`s without running destructors or atexit handlers.
    let pid = unsafe { libc::fork() };
    if pid < 0 {
        return Err(Errno::last());
    }
    if pid == 0 {
        let code = f();
        // SAFETY: `_exit` ends the child immediately; it is async-signal-safe.
        unsafe { libc::_exit(code) };
    }
    before_wait(pid);
    let mut status = 0;
    loop {
        // SAFETY: `pid` is our own child and `status` is a valid out-pointer.
        let r = unsafe { libc::waitpid(pid, &raw mut status, 0) };
        if r == pid {
            break;
        }
        let e = Errno::last();
        if e.errno != libc::EINTR {
            return Err(e);
        }
    }
    if libc::WIFSIGNALED(status) {
        Ok(ChildEnd::Signaled(libc::WTERMSIG(status)))
    } else {
        Ok(ChildEnd::Exited(libc::WEXITSTATUS(status)))
    }
}

/// The calling thread's errno, for use in a probe child.
pub(super) fn errno() -> i32 {
    std::io::Error::last_os_error().raw_os_error().unwrap_or(0)
}

/// In a probe child: `unshare(flags)`, 0 on success, the errno otherwise.
pub(super) fn child_unshare(flags: libc::c_int) -> i32 {
    // SAFETY: unshare only affects this (child) process.
    if unsafe { libc::unshare(flags) } == 0 {
        0
    } else {
        errno()
    }
}

/// In a probe child: joins the cgroup whose `cgroup.procs` path is given, then tries a TCP connect
/// to 127.0.0.1:`port`; returns 0 if it connected, the errno otherwise, 255 if joining failed.
pub(super) fn child_connect_from_cgroup(procs: &CString, port: u16) -> i32 {
    // SAFETY: plain open/write/close/socket/connect syscalls on data built before the fork.
    unsafe {
        let fd = libc::open(procs.as_ptr(), libc::O_WRONLY | libc::O_CLOEXEC);
        if fd < 0 {
            return 255;
        }
        let ok = libc::write(fd, b"0\n".as_ptr().cast(), 2) == 2;
        libc::close(fd);
        if !ok {
            return 255;
        }
        let sock = libc::socket(libc::AF_INET, libc::SOCK_STREAM | libc::SOCK_CLOEXEC, 0);
        if sock < 0 {
            return errno();
        }
        #[expect(
            clippy::cast_possible_truncation,
            reason = "AF_INET, a c_int, in sa_family_t"
        )]
        let addr = libc::sockaddr_in {
            sin_family: libc::AF_INET as libc::sa_family_t,
            sin_port: port.to_be(),
            sin_addr: libc::in_addr {
                s_addr: u32::from_be_bytes([127, 0, 0, 1]).to_be(),
            },
            sin_zero: [0; 8],
        };
        #[expect(
            clippy::cast_possible_truncation,
            reason = "the size of a sockaddr_in, a socklen_t"
        )]
        let r = libc::connect(
            sock,
            std::ptr::from_ref(&addr).cast(),
            std::mem::size_of::<libc::sockaddr_in>() as libc::socklen_t,
        );
        if r == 0 { 0 } else { errno() }
    }
}

/// In a probe child: installs an allow-everything seccomp filter (after `no_new_privs`), 0 on
/// success, the errno otherwise.
pub(super) fn child_seccomp_filter() -> i32 {
    // BPF_RET | BPF_K with SECCOMP_RET_ALLOW.
    let allow = [libc::sock_filter {
        code: 0x06,
        jt: 0,
        jf: 0,
        k: libc::SECCOMP_RET_ALLOW,
    }];
    let prog = libc::sock_fprog {
        len: 1,
        filter: allow.as_ptr().cast_mut(),
    };
    // SAFETY: prctl and seccomp on this (child) process; `prog` points at a live one-instruction
    // filter.
    unsafe {
        if libc::prctl(libc::PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) != 0 {
            return errno();
        }
        if libc::syscall(
            libc::SYS_seccomp,
            libc::SECCOMP_SET_MODE_FILTER,
            0,
            std::ptr::from_ref(&prog),
        ) != 0
        {
            return errno();
        }
    }
    0
}

/// Whether the kernel knows seccomp return action `action` (`SECCOMP_GET_ACTION_AVAIL`).
pub(super) fn seccomp_action_available(action: u32) -> bool {
    // SAFETY: SECCOMP_GET_ACTION_AVAIL only reads the u32 it is pointed at.
    unsafe {
        libc::syscall(
            libc::SYS_seccomp,
            libc::SECCOMP_GET_ACTION_AVAIL,
            0,
            std::ptr::from_ref(&action),
        ) == 0
    }
}

/// Creates (and closes) a real landlock ruleset handling file reads, proving rulesets work.
pub(super) fn landlock_ruleset_works() -> Result<(), Errno> {
    // struct landlock_ruleset_attr, first field only: LANDLOCK_ACCESS_FS_READ_FILE.
    let handled_access_fs: u64 = 1 << 2;
    // SAFETY: attr points at a live u64 whose size we pass; the result is a new fd we close.
    let fd = unsafe {
        libc::syscall(
            libc::SYS_landlock_create_ruleset,
            std::ptr::from_ref(&handled_access_fs),
            std::mem::size_of::<u64>(),
            0u32,
        )
    };
    if fd < 0 {
        return Err(Errno::last());
    }
    #[expect(
        clippy::cast_possible_truncation,
        reason = "landlock_create_ruleset(2) returns an fd, an int, in a long"
    )]
    // SAFETY: `fd` is the ruleset fd just returned and owned by nobody else.
    unsafe {
        libc::close(fd as i32)
    };
    Ok(())
}

/// What landlock ABI `abi` can restrict, for the report.
pub(super) fn landlock_coverage(abi: i64) -> String {
    let mut parts = vec!["filesystem read/write/execute"];
    if abi >= 2 {
        parts.push("cross-directory rename/link (2)");
    }
    if abi >= 3 {
        parts.push("truncate (3)");
    }
    if abi >= 4 {
        parts.push("TCP bind/connect (4)");
    }
    if abi >= 5 {
        parts.push("device ioctl (5)");
    }
    if abi >= 6 {
        parts.push("abstract-unix-socket and signal scoping (6)");
    }
    if abi >= 7 {
        parts.push("audit logging control (7)");
    }
    parts.join(", ")
}

/// Where a Docker-Engine-API socket may be, in order: `DOCKER_HOST` (unix:// only), Docker's and
/// Podman's default sockets.
pub(super) fn engine_sockets(docker_host: Option<&str>) -> Vec<PathBuf> {
    let mut out = Vec::new();
    if let Some(path) = docker_host.and_then(|h| h.strip_prefix("unix://")) {
        out.push(PathBuf::from(path));
    }
    out.push(PathBuf::from("/var/run/docker.sock"));
    out.push(PathBuf::from("/run/podman/podman.sock"));
    out
}

/// `GET /_ping` over a unix socket; Ok(the status line and body) when the engine answered 200.
pub(super) fn engine_ping(socket: &Path) -> std::io::Result<String> {
    let mut stream = std::os::unix::net::UnixStream::connect(socket)?;
    stream.set_read_timeout(Some(Duration::from_millis(500)))?;
    stream.set_write_timeout(Some(Duration::from_millis(500)))?;
    stream.write_all(b"GET /_ping HTTP/1.0\r\nHost: docker\r\n\r\n")?;
    let mut response = Vec::new();
    stream.take(4096).read_to_end(&mut response)?;
    let text = String::from_utf8_lossy(&response);
    let status = text.lines().next().unwrap_or("").trim().to_string();
    if status.split(' ').nth(1) == Some("200") {
        let body = text.split("\r\n\r\n").nth(1).unwrap_or("").trim();
        Ok(format!("{status}, body {body:?}"))
    } else {
        Err(std::io::Error::other(format!("answered {status:?}")))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cap_eff_parses_and_bits_are_right() {
        let status = "Name:\tx\nCapInh:\t0000000000000000\nCapEff:\t000001ffffffffff\nCapBnd:\t0\n";
        let eff = parse_cap_eff(status).expect("CapEff");
        assert_eq!(eff, 0x1ff_ffff_ffff);
        for (_, bit) in CAPS {
            assert!(eff & (1 << bit) != 0);
        }
        assert_eq!(parse_cap_eff("CapEff:\tzz\n"), None);
        assert_eq!(parse_cap_eff(""), None);
    }

    #[test]
    fn landlock_coverage_grows_with_the_abi() {
        assert!(!landlock_coverage(1).contains("TCP"));
        assert!(landlock_coverage(4).contains("TCP bind/connect"));
        assert!(!landlock_coverage(5).contains("scoping"));
        assert!(landlock_coverage(6).contains("scoping"));
    }

    #[test]
    fn engine_ping_accepts_200_and_rejects_other_answers() {
        let dir = std::env::temp_dir().join(format!("mcp-guard-ping-{}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("temp dir");
        for (answer, ok) in [
            ("HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nOK", true),
            ("HTTP/1.1 404 Not Found\r\n\r\n", false),
        ] {
            let sock = dir.join("engine.sock");
            let _ = std::fs::remove_file(&sock);
            let listener = std::os::unix::net::UnixListener::bind(&sock).expect("bind");
            let server = std::thread::spawn(move || {
                let (mut conn, _) = listener.accept().expect("accept");
                let mut request = [0u8; 256];
                let n = conn.read(&mut request).expect("read request");
                conn.write_all(answer.as_bytes()).expect("answer");
                String::from_utf8_lossy(&request[..n]).into_owned()
            });
            let result = engine_ping(&sock);
            let request = server.join().expect("server thread");
            assert!(request.starts_with("GET /_ping HTTP/1.0\r\n"), "{request}");
            assert_eq!(result.is_ok(), ok, "{answer:?} -> {result:?}");
            if ok {
                assert!(result.expect("ok").contains("\"OK\""));
            }
        }
        let _ = std::fs::remove_dir_all(&dir);
        assert!(engine_ping(Path::new("/nonexistent/engine.sock")).is_err());
    }

    #[test]
    fn docker_host_unix_socket_comes_first() {
        let s = engine_sockets(Some("unix:///tmp/d.sock"));
        assert_eq!(s[0], Path::new("/tmp/d.sock"));
        assert_eq!(engine_sockets(Some("tcp://1.2.3.4:2375")).len(), 2);
    }
}
