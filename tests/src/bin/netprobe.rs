//! Test fixture: tries network operations and prints one result line per argument.
//!
//! Arguments: `tcp:ADDR:PORT` (connect), `udp:ADDR:PORT` (sendto from an unconnected socket),
//! `tcpn:COUNT:ADDR:PORT` (COUNT connects, for benchmarks), `unix:PATH` (a stream connect),
//! `unixdg:PATH` (a datagram sendto from an unbound socket), `stat:PATH` (following links). Output: `ok` or
//! `errno N` per argument. IPv6 addresses are written in brackets: `tcp:[::1]:5000`; an
//! abstract Unix socket is `@name`.
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

fn probe(arg: &str) -> String {
    let Some((kind, rest)) = arg.split_once(':') else {
        return format!("bad argument {arg}");
    };
    match kind {
        "unix" | "unixdg" => return probe_unix(kind, rest),
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

/// Closes with RST instead of FIN: thousands of benchmark connects leave no TIME_WAIT behind to
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
            (&linger as *const libc::linger).cast(),
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
