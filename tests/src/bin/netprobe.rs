//! Test fixture: tries network operations and prints one result line per argument.
//!
//! Arguments: `tcp:ADDR:PORT` (connect), `udp:ADDR:PORT` (sendto from an unconnected socket),
//! `tcpn:COUNT:ADDR:PORT` (COUNT connects, for benchmarks). Output: `ok` or `errno N` per
//! argument. IPv6 addresses are written in brackets: `tcp:[::1]:5000`.
use std::{
    io::Write as _,
    net::{SocketAddr, TcpStream, UdpSocket},
};

fn errno(e: &std::io::Error) -> String {
    format!("errno {}", e.raw_os_error().unwrap_or(-1))
}

fn probe(arg: &str) -> String {
    let Some((kind, rest)) = arg.split_once(':') else {
        return format!("bad argument {arg}");
    };
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
                if let Err(e) = TcpStream::connect(addr) {
                    return errno(&e);
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

fn main() {
    let mut out = std::io::stdout().lock();
    for arg in std::env::args().skip(1) {
        let _ = writeln!(out, "{}", probe(&arg));
    }
}
