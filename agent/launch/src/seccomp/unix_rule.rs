//! The Unix-socket rule, for a policy that lists no `[network] unix` sockets where the cgroup
//! `connect_unix`/`sendmsg_unix` programs (Linux 6.7) are missing: it keeps the pathname-socket
//! promise (the mount view hides only the jail's own /run and /tmp), and the abstract-socket
//! one where landlock's scopes (ABI 6) are missing too and the server needs the host's network
//! namespace (egress).
//!
//! Abstract sockets live in a network namespace; a server sharing the host's can name any of
//! them (a desktop's X11 and D-Bus sockets, systemd's, a container runtime's). Without
//! per-socket judgement, the server gets no socket it could point at an address:
//! - `socket(AF_UNIX, …)` fails with EPERM, whatever the type;
//! - `socketpair(AF_UNIX, …)` makes only stream and seqpacket pairs (with or without
//!   `SOCK_CLOEXEC`/`SOCK_NONBLOCK`), which are connected for life: `connect()` on them is
//!   EISCONN (even after the peer closed) and the kernel ignores or refuses a `sendto()`
//!   address. A datagram pair (`SOCK_DGRAM`, or `SOCK_RAW`, which `af_unix` makes a datagram
//!   socket) can `connect()` or `sendto()` any address, so it fails with EPERM.
//!
//! Compared on the low 32 bits, as the kernel reads these `int` arguments. The other routes to
//! a Unix socket are closed elsewhere: `io_uring`'s socket and connect operations (`io_uring` is
//! on the built-in deny list), another process's descriptors (`pidfd_getfd`, `ptrace` denied;
//! a socket cannot be opened through /proc), descriptors inherited from the launcher (closed
//! at exec; stdio are pipes), `SCM_RIGHTS` (needs a Unix socket to someone who has one),
//! `socketcall` and every i386 call (another audit arch: the filter kills the process), x32
//! calls (refused wholesale). The container backend never shares the host's network namespace.

use seccompiler::{BackendError, SeccompCmpArgLen, SeccompCmpOp, SeccompCondition, SeccompRule};

/// `socketpair` types that stay allowed: connected for life, never re-pointed at an address.
const PAIR_TYPES: [i32; 2] = [libc::SOCK_STREAM, libc::SOCK_SEQPACKET];

/// The flags `socket`/`socketpair` accept in the type argument beside the type.
const TYPE_FLAGS: [i32; 4] = [
    0,
    libc::SOCK_CLOEXEC,
    libc::SOCK_NONBLOCK,
    libc::SOCK_CLOEXEC | libc::SOCK_NONBLOCK,
];

/// (syscall number, rules denying it with EPERM) for `socket` and `socketpair`.
pub(super) fn rules() -> Result<Vec<(i64, Vec<SeccompRule>)>, BackendError> {
    let unix = || {
        SeccompCondition::new(
            0,
            SeccompCmpArgLen::Dword,
            SeccompCmpOp::Eq,
            libc::AF_UNIX as u64,
        )
    };
    let mut out = Vec::new();
    if let Some(nr) = super::number("socket") {
        out.push((nr, vec![SeccompRule::new(vec![unix()?])?]));
    }
    if let Some(nr) = super::number("socketpair") {
        // AF_UNIX and a type that is none of the allowed ones (each with each flag set).
        let mut conditions = vec![unix()?];
        for ty in PAIR_TYPES {
            for flags in TYPE_FLAGS {
                conditions.push(SeccompCondition::new(
                    1,
                    SeccompCmpArgLen::Dword,
                    SeccompCmpOp::Ne,
                    u64::from((ty | flags).cast_unsigned()),
                )?);
            }
        }
        out.push((nr, vec![SeccompRule::new(conditions)?]));
    }
    Ok(out)
}

#[cfg(test)]
#[expect(
    clippy::cast_possible_truncation,
    clippy::cast_possible_wrap,
    reason = "sockaddr_un fields and raw syscall results in the widths the socket ABI gives them"
)]
mod tests {
    use std::os::{
        fd::{AsRawFd as _, FromRawFd as _, OwnedFd, RawFd},
        linux::net::SocketAddrExt as _,
        unix::net::{SocketAddr, UnixDatagram, UnixListener},
    };

    use seccompiler::{BpfProgram, sock_filter};

    use super::super::{Fallbacks, build};

    /// An abstract address as the kernel takes it: (`sockaddr_un`, length).
    fn abstract_addr(name: &str) -> (libc::sockaddr_un, libc::socklen_t) {
        // SAFETY: all-zero is a valid sockaddr_un.
        let mut sun: libc::sockaddr_un = unsafe { std::mem::zeroed() };
        sun.sun_family = libc::AF_UNIX as libc::sa_family_t;
        for (i, b) in name.bytes().enumerate() {
            sun.sun_path[i + 1] = b as libc::c_char;
        }
        let len = std::mem::offset_of!(libc::sockaddr_un, sun_path) + 1 + name.len();
        (sun, len as libc::socklen_t)
    }

    fn name(what: &str) -> String {
        format!("mcp-guard-seccomp-unix-{}-{what}", std::process::id())
    }

    /// The filters, with or without the Unix rule, compiled before any fork.
    fn programs(no_unix: bool) -> Vec<BpfProgram> {
        let fallbacks = Fallbacks {
            no_unix,
            ..Fallbacks::default()
        };
        build(&[], fallbacks)
            .expect("filter builds")
            .iter()
            .map(|p| {
                p.0.iter()
                    .map(|&(code, jt, jf, k)| sock_filter { code, jt, jf, k })
                    .collect()
            })
            .collect()
    }

    /// Runs `call` in a forked child under `programs` (none: no filter) and returns its errno
    /// (0: it succeeded). `call` makes raw syscalls only (the test is multithreaded).
    fn errno_in_child(programs: &[BpfProgram], call: impl FnOnce() -> libc::c_long) -> i32 {
        // SAFETY: the test's own fork; the child only makes raw syscalls and _exits.
        let pid = unsafe { libc::fork() };
        if pid == 0 {
            // SAFETY: PR_SET_NO_NEW_PRIVS takes integers only.
            unsafe { libc::prctl(libc::PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) };
            for p in programs {
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

    fn connect(fd: RawFd, addr: &(libc::sockaddr_un, libc::socklen_t)) -> libc::c_long {
        // SAFETY: a live sockaddr_un of the given length.
        unsafe { libc::connect(fd, (&raw const addr.0).cast(), addr.1) }.into()
    }

    fn sendto(fd: RawFd, addr: &(libc::sockaddr_un, libc::socklen_t)) -> libc::c_long {
        // SAFETY: a live 1-byte buffer and a live sockaddr_un of the given length.
        let r = unsafe {
            libc::sendto(
                fd,
                b"x".as_ptr().cast(),
                1,
                libc::MSG_DONTWAIT,
                (&raw const addr.0).cast(),
                addr.1,
            )
        };
        r as libc::c_long
    }

    /// `socket(AF_UNIX, ty)` then connect (stream) or sendto (datagram) `addr`.
    fn socket_then_reach(
        family: u64,
        ty: i32,
        addr: &(libc::sockaddr_un, libc::socklen_t),
    ) -> libc::c_long {
        // SAFETY: a raw socket(2) with integer arguments; the whole 64-bit family register.
        let fd = unsafe { libc::syscall(libc::SYS_socket, family, ty, 0) };
        if fd < 0 {
            return fd;
        }
        if ty & 0xf == libc::SOCK_STREAM {
            connect(fd as RawFd, addr)
        } else {
            sendto(fd as RawFd, addr)
        }
    }

    /// `socketpair(AF_UNIX, ty)`, the peer closed, then `reach` on the kept end.
    fn pair_then(
        ty: i32,
        reach: impl FnOnce(RawFd) -> libc::c_long,
    ) -> impl FnOnce() -> libc::c_long {
        move || {
            let mut fds = [-1; 2];
            // SAFETY: a raw socketpair(2) into a live array of two ints.
            let r = unsafe {
                libc::syscall(libc::SYS_socketpair, libc::AF_UNIX, ty, 0, fds.as_mut_ptr())
            };
            if r < 0 {
                return r;
            }
            // SAFETY: closing the pair's other end, ours.
            unsafe { libc::close(fds[1]) };
            reach(fds[0])
        }
    }

    /// Whether anyone connected to `listener` (non-blocking).
    fn was_reached(listener: &UnixListener) -> bool {
        listener.set_nonblocking(true).expect("nonblocking");
        listener.accept().is_ok()
    }

    /// The attack: a server sharing the host's network namespace reaches a host process's
    /// abstract socket. It works without the rule; with it every way in fails with EPERM, and
    /// what a runtime needs (a stream or seqpacket pair, an IP socket) still works.
    #[test]
    fn with_the_rule_a_host_abstract_socket_is_out_of_reach() {
        let stream_name = name("stream");
        let stream = UnixListener::bind_addr(
            &SocketAddr::from_abstract_name(&stream_name).expect("abstract name"),
        )
        .expect("listen");
        let dgram_name = name("dgram");
        let dgram = UnixDatagram::bind_addr(
            &SocketAddr::from_abstract_name(&dgram_name).expect("abstract name"),
        )
        .expect("bind");
        dgram.set_nonblocking(true).expect("nonblocking");
        let to_stream = abstract_addr(&stream_name);
        let to_dgram = abstract_addr(&dgram_name);
        let af_unix = libc::AF_UNIX as u64;
        let stream_ty = libc::SOCK_STREAM | libc::SOCK_CLOEXEC;
        let mut buf = [0u8; 8];

        // Without the rule: the connect and the datagram get through.
        let none = programs(false);
        assert_eq!(
            errno_in_child(&none, || socket_then_reach(af_unix, stream_ty, &to_stream)),
            0
        );
        assert!(was_reached(&stream), "the connect got through");
        assert_eq!(
            errno_in_child(&none, || socket_then_reach(
                af_unix,
                libc::SOCK_DGRAM,
                &to_dgram
            )),
            0
        );
        assert_eq!(dgram.recv(&mut buf).expect("the datagram got through"), 1);
        let dgram_pair = pair_then(libc::SOCK_DGRAM, |fd| sendto(fd, &to_dgram));
        assert_eq!(errno_in_child(&none, dgram_pair), 0);
        assert_eq!(dgram.recv(&mut buf).expect("the pair's datagram"), 1);

        // With it: EPERM, whatever the type, flags or upper bits.
        let rule = programs(true);
        for (family, ty) in [
            (af_unix, stream_ty),
            (af_unix, libc::SOCK_SEQPACKET),
            (af_unix, libc::SOCK_DGRAM | libc::SOCK_NONBLOCK),
            (af_unix, libc::SOCK_RAW),
            (af_unix | 1 << 32, stream_ty),
        ] {
            let target = if ty & 0xf == libc::SOCK_STREAM {
                &to_stream
            } else {
                &to_dgram
            };
            assert_eq!(
                errno_in_child(&rule, || socket_then_reach(family, ty, target)),
                libc::EPERM,
                "socket({family:#x}, {ty:#x})"
            );
        }
        for ty in [
            libc::SOCK_DGRAM,
            libc::SOCK_DGRAM | libc::SOCK_CLOEXEC | libc::SOCK_NONBLOCK,
            // af_unix turns a raw socket into a datagram one.
            libc::SOCK_RAW,
        ] {
            let call = pair_then(ty, |fd| sendto(fd, &to_dgram));
            assert_eq!(
                errno_in_child(&rule, call),
                libc::EPERM,
                "socketpair {ty:#x}"
            );
        }
        assert!(!was_reached(&stream), "nothing connected under the rule");
        assert!(dgram.recv(&mut buf).is_err(), "no datagram under the rule");

        // What runtimes use stays: stream and seqpacket pairs (libuv, asyncio, tokio) and IP.
        for ty in [
            libc::SOCK_STREAM,
            libc::SOCK_STREAM | libc::SOCK_CLOEXEC | libc::SOCK_NONBLOCK,
            libc::SOCK_SEQPACKET | libc::SOCK_CLOEXEC,
        ] {
            assert_eq!(
                errno_in_child(&rule, pair_then(ty, |_| 0)),
                0,
                "socketpair {ty:#x}"
            );
        }
        let inet = || {
            // SAFETY: a raw socket(2) with integer arguments.
            unsafe { libc::syscall(libc::SYS_socket, libc::AF_INET, libc::SOCK_STREAM, 0) }
        };
        assert_eq!(errno_in_child(&rule, inet), 0);
    }

    /// A non-blocking listener of type `ty` on the abstract `name` (std has no seqpacket one;
    /// an abstract name is found only by a socket of the same type).
    fn listener(ty: i32, name: &str) -> OwnedFd {
        let addr = abstract_addr(name);
        // SAFETY: socket(2) with integer arguments.
        let fd = unsafe { libc::socket(libc::AF_UNIX, ty | libc::SOCK_NONBLOCK, 0) };
        assert!(fd >= 0, "socket: {}", std::io::Error::last_os_error());
        // SAFETY: the fd was just made and is owned here only.
        let fd = unsafe { OwnedFd::from_raw_fd(fd) };
        // SAFETY: a live sockaddr_un of the given length on an open fd.
        let bound = unsafe { libc::bind(fd.as_raw_fd(), (&raw const addr.0).cast(), addr.1) };
        // SAFETY: listen(2) on an open fd.
        assert!(bound == 0 && unsafe { libc::listen(fd.as_raw_fd(), 8) } == 0);
        fd
    }

    /// Whether anyone connected to `fd`, a non-blocking listener.
    fn reached(fd: &OwnedFd) -> bool {
        // SAFETY: accept(2) on an open fd without an address buffer.
        let c = unsafe { libc::accept(fd.as_raw_fd(), std::ptr::null_mut(), std::ptr::null_mut()) };
        if c >= 0 {
            // SAFETY: closing the connection just accepted.
            unsafe { libc::close(c) };
        }
        c >= 0
    }

    /// The kernel's `af_unix` semantics the rule rests on, without any filter: a stream or
    /// seqpacket pair cannot be re-pointed at an address, even once its peer is gone; a
    /// datagram pair can.
    #[test]
    fn stream_and_seqpacket_pairs_cannot_be_pointed_at_an_address() {
        for (ty, what) in [
            (libc::SOCK_STREAM, "stream"),
            (libc::SOCK_SEQPACKET, "seqpacket"),
        ] {
            let listen_name = name(&format!("pair-{what}"));
            let l = listener(ty, &listen_name);
            let target = abstract_addr(&listen_name);
            // The same call on a fresh socket reaches the listener: the name is right.
            let fresh = || {
                // SAFETY: socket(2) with integer arguments.
                let fd = unsafe { libc::socket(libc::AF_UNIX, ty, 0) };
                connect(fd, &target)
            };
            assert_eq!(
                errno_in_child(&[], fresh),
                0,
                "{what}: a fresh socket connects"
            );
            assert!(reached(&l), "{what}");
            let e = errno_in_child(&[], pair_then(ty, |fd| connect(fd, &target)));
            assert_eq!(e, libc::EISCONN, "connect on a {what} pair");
            let e = errno_in_child(&[], pair_then(ty, |fd| sendto(fd, &target)));
            assert_ne!(e, 0, "sendto on a {what} pair");
            assert!(!reached(&l), "a {what} pair reached the listener");
        }
        let dgram_name = name("pair-dgram");
        let dgram = UnixDatagram::bind_addr(
            &SocketAddr::from_abstract_name(&dgram_name).expect("abstract name"),
        )
        .expect("bind");
        dgram.set_nonblocking(true).expect("nonblocking");
        let to_dgram = abstract_addr(&dgram_name);
        let e = errno_in_child(
            &[],
            pair_then(libc::SOCK_DGRAM, |fd| connect(fd, &to_dgram)),
        );
        assert_eq!(e, 0, "a datagram pair connects elsewhere");
        let e = errno_in_child(&[], pair_then(libc::SOCK_DGRAM, |fd| sendto(fd, &to_dgram)));
        assert_eq!(e, 0, "a datagram pair sends elsewhere");
        let mut buf = [0u8; 4];
        assert_eq!(dgram.recv(&mut buf).expect("the pair's datagram"), 1);
    }
}
