//! Test fixture: tries network operations and prints one result line per argument.
//!
//! Arguments: `tcp:ADDR:PORT` (connect), `udp:ADDR:PORT` (sendto from an unconnected socket),
//! `tcpn:COUNT:ADDR:PORT` (COUNT connects, for benchmarks), `unix:PATH` (a stream connect),
//! `unixdg:PATH` (a datagram sendto from an unbound socket), `stat:PATH` (following links),
//! `bind:ADDR:PORT` (a TCP listener), `mbind:ADDR:PORT` (a bound MPTCP socket),
//! `ubind:ADDR:PORT` (a bound UDP socket), `pairconnect:TYPE:PATH` and `pairsend:TYPE:PATH`
//! (a Unix `socketpair` of TYPE `stream`, `seqpacket` or `dgram`, its peer closed, then a
//! connect to PATH or a datagram sent to it: re-pointing a pair). Output: `ok` or
//! `errno N` per argument. IPv6 addresses are written in brackets: `tcp:[::1]:5000`; an
//! abstract Unix socket is `@name`.
#![expect(
    clippy::cast_possible_truncation,
    reason = "socket address families and sizes, in the widths the socket ABI gives them"
)]
use std::{
    io::Write as _,
    net::{SocketAddr, TcpStream, UdpSocket},
};

fn errno(e: &std::io::Error) -> String {
    format!("errno {}", e.raw_os_error().unwrap_or(-1))
}

/// A Unix socket address: a path, or `@name` for an abstract one.
fn unix_addr(s: &str) -> std::io::Result<std::os::unix::net::SocketAddr> {
    use std::os::linux::net::SocketAddrExt as _;
    match s.strip_prefix('@') {
        Some(name) => std::os::unix::net::SocketAddr::from_abstract_name(name.as_bytes()),
        None => std::os::unix::net::SocketAddr::from_pathname(s),
    }
}

fn probe_unix(kind: &str, target: &str) -> String {
    use std::os::unix::net::{UnixDatagram, UnixStream};
    let result = unix_addr(target).and_then(|addr| match kind {
        "unix" => UnixStream::connect_addr(&addr).map(drop),
        _ => UnixDatagram::unbound().and_then(|s| s.send_to_addr(b"probe", &addr).map(drop)),
    });
    match result {
        Ok(()) => "ok".into(),
        Err(e) => errno(&e),
    }
}

/// A Unix socketpair of `TYPE`, the peer closed, pointed at `TARGET` (`TYPE:TARGET`).
fn probe_pair(kind: &str, rest: &str) -> String {
    use std::os::fd::{FromRawFd as _, OwnedFd};
    let Some((ty, target)) = rest.split_once(':') else {
        return format!("bad argument {kind}:{rest}");
    };
    let ty = match ty {
        "stream" => libc::SOCK_STREAM,
        "seqpacket" => libc::SOCK_SEQPACKET,
        "dgram" => libc::SOCK_DGRAM,
        other => return format!("bad socket type {other}"),
    };
    let addr = match unix_addr(target) {
        Ok(a) => a,
        Err(e) => return errno(&e),
    };
    let mut fds = [-1; 2];
    // SAFETY: socketpair(2) into a live array of two ints.
    if unsafe { libc::socketpair(libc::AF_UNIX, ty | libc::SOCK_CLOEXEC, 0, fds.as_mut_ptr()) } < 0
    {
        return errno(&std::io::Error::last_os_error());
    }
    // SAFETY: both fds were just made and are owned here only.
    let (ours, peer) = unsafe { (OwnedFd::from_raw_fd(fds[0]), OwnedFd::from_raw_fd(fds[1])) };
    drop(peer);
    let result = match kind {
        "pairconnect" => connect_fd(&ours, &addr),
        _ => sendto_fd(&ours, &addr),
    };
    match result {
        Ok(()) => "ok".into(),
        Err(e) => errno(&e),
    }
}

/// A raw connect(2) of `s` to `addr` (std has no connect on an existing stream socket).
fn connect_fd(
    s: &impl std::os::fd::AsRawFd,
    addr: &std::os::unix::net::SocketAddr,
) -> std::io::Result<()> {
    let (sun, len) = sockaddr_un(addr);
    // SAFETY: a live sockaddr_un of `len` bytes on an open fd.
    let r = unsafe { libc::connect(s.as_raw_fd(), (&raw const sun).cast(), len) };
    if r == 0 {
        Ok(())
    } else {
        Err(std::io::Error::last_os_error())
    }
}

/// A raw sendto(2) of one byte from `s` to `addr`.
fn sendto_fd(
    s: &impl std::os::fd::AsRawFd,
    addr: &std::os::unix::net::SocketAddr,
) -> std::io::Result<()> {
    let (sun, len) = sockaddr_un(addr);
    // SAFETY: a live 1-byte buffer and a live sockaddr_un of `len` bytes on an open fd.
    let r = unsafe {
        libc::sendto(
            s.as_raw_fd(),
            b"x".as_ptr().cast(),
            1,
            libc::MSG_DONTWAIT | libc::MSG_NOSIGNAL,
            (&raw const sun).cast(),
            len,
        )
    };
    if r >= 0 {
        Ok(())
    } else {
        Err(std::io::Error::last_os_error())
    }
}

/// `addr` as the kernel takes it.
fn sockaddr_un(addr: &std::os::unix::net::SocketAddr) -> (libc::sockaddr_un, libc::socklen_t) {
    use std::os::linux::net::SocketAddrExt as _;
    // SAFETY: all-zero is a valid sockaddr_un.
    let mut sun: libc::sockaddr_un = unsafe { std::mem::zeroed() };
    sun.sun_family = libc::AF_UNIX as libc::sa_family_t;
    let (lead, bytes): (usize, &[u8]) = match (addr.as_abstract_name(), addr.as_pathname()) {
        (Some(name), _) => (1, name),
        (None, Some(path)) => (0, path.as_os_str().as_encoded_bytes()),
        (None, None) => (0, &[]),
    };
    for (i, b) in bytes.iter().take(sun.sun_path.len() - 1 - lead).enumerate() {
        sun.sun_path[lead + i] = libc::c_char::from_ne_bytes([*b]);
    }
    // An abstract name is its bytes after the leading NUL; a path ends with one.
    let len = std::mem::offset_of!(libc::sockaddr_un, sun_path) + bytes.len() + 1;
    (sun, len as libc::socklen_t)
}

fn probe(arg: &str) -> String {
    let Some((kind, rest)) = arg.split_once(':') else {
        return format!("bad argument {arg}");
    };
    match kind {
        "unix" | "unixdg" => return probe_unix(kind, rest),
        "pairconnect" | "pairsend" => return probe_pair(kind, rest),
        "stat" => {
            return match std::fs::metadata(rest) {
                Ok(_) => "ok".into(),
                Err(e) => errno(&e),
            };
        }
        _ => {}
    }
    let (count, rest) = if kind == "tcpn" {
        let Some((n, rest)) = rest.split_once(':') else {
            return format!("bad argument {arg}");
        };
        (n.parse::<usize>().unwrap_or(1), rest)
    } else {
        (1, rest)
    };
    let addr: SocketAddr = match rest.parse() {
        Ok(a) => a,
        Err(e) => return format!("bad address {rest}: {e}"),
    };
    match kind {
        "tcp" | "tcpn" => {
            for _ in 0..count {
                match TcpStream::connect(addr) {
                    Ok(stream) if count > 1 => reset_on_close(&stream),
                    Ok(_) => {}
                    Err(e) => return errno(&e),
                }
            }
            "ok".into()
        }
        "bind" => match std::net::TcpListener::bind(addr) {
            Ok(_) => "ok".into(),
            Err(e) => errno(&e),
        },
        "mbind" => mptcp_bind(addr),
        "ubind" => match UdpSocket::bind(addr) {
            Ok(_) => "ok".into(),
            Err(e) => errno(&e),
        },
        "udp" => {
            let bind: SocketAddr = if addr.is_ipv4() {
                "0.0.0.0:0".parse().expect("literal")
            } else {
                "[::]:0".parse().expect("literal")
            };
            let socket = match UdpSocket::bind(bind) {
                Ok(s) => s,
                Err(e) => return errno(&e),
            };
            match socket.send_to(b"probe", addr) {
                Ok(_) => "ok".into(),
                Err(e) => errno(&e),
            }
        }
        _ => format!("bad kind {kind}"),
    }
}

/// Binds an MPTCP stream socket to `addr`.
fn mptcp_bind(addr: SocketAddr) -> String {
    use std::os::fd::{FromRawFd as _, OwnedFd};
    let family = if addr.is_ipv4() {
        libc::AF_INET
    } else {
        libc::AF_INET6
    };
    // SAFETY: socket(2) with constant arguments.
    let fd = unsafe { libc::socket(family, libc::SOCK_STREAM, libc::IPPROTO_MPTCP) };
    if fd < 0 {
        return errno(&std::io::Error::last_os_error());
    }
    // SAFETY: `fd` was just opened and is owned here only.
    let _owned = unsafe { OwnedFd::from_raw_fd(fd) };
    // SAFETY: all-zero is a valid sockaddr_storage.
    let mut storage: libc::sockaddr_storage = unsafe { std::mem::zeroed() };
    let len = match addr {
        SocketAddr::V4(a) => {
            let sin = libc::sockaddr_in {
                sin_family: libc::AF_INET as libc::sa_family_t,
                sin_port: a.port().to_be(),
                sin_addr: libc::in_addr {
                    s_addr: u32::from_ne_bytes(a.ip().octets()),
                },
                sin_zero: [0; 8],
            };
            // SAFETY: sockaddr_storage is larger than and aligned for sockaddr_in.
            unsafe { std::ptr::write((&raw mut storage).cast(), sin) };
            size_of::<libc::sockaddr_in>()
        }
        SocketAddr::V6(a) => {
            let sin6 = libc::sockaddr_in6 {
                sin6_family: libc::AF_INET6 as libc::sa_family_t,
                sin6_port: a.port().to_be(),
                sin6_flowinfo: 0,
                sin6_addr: libc::in6_addr {
                    s6_addr: a.ip().octets(),
                },
                sin6_scope_id: 0,
            };
            // SAFETY: sockaddr_storage is larger than and aligned for sockaddr_in6.
            unsafe { std::ptr::write((&raw mut storage).cast(), sin6) };
            size_of::<libc::sockaddr_in6>()
        }
    };
    // SAFETY: `storage` holds a valid address of `len` bytes; `fd` is open.
    let r = unsafe { libc::bind(fd, (&raw const storage).cast(), len as libc::socklen_t) };
    if r == 0 {
        "ok".into()
    } else {
        errno(&std::io::Error::last_os_error())
    }
}

/// Closes with RST instead of FIN: thousands of benchmark connects leave no `TIME_WAIT` behind to
/// slow down the ephemeral port search of later runs.
fn reset_on_close(stream: &TcpStream) {
    use std::os::fd::AsRawFd as _;
    let linger = libc::linger {
        l_onoff: 1,
        l_linger: 0,
    };
    // SAFETY: setsockopt on a socket we own, with a correctly sized linger struct.
    unsafe {
        libc::setsockopt(
            stream.as_raw_fd(),
            libc::SOL_SOCKET,
            libc::SO_LINGER,
            (&raw const linger).cast(),
            size_of::<libc::linger>() as libc::socklen_t,
        );
    }
}

fn main() {
    let mut out = std::io::stdout().lock();
    for arg in std::env::args().skip(1) {
        let _ = writeln!(out, "{}", probe(&arg));
    }
}
