//! Benchmark fixture: loads the network from inside a test cgroup and prints the elapsed
//! nanoseconds.
//!
//! `netload MODE COUNT ADDR:PORT`:
//! - `tcprr`: COUNT one-byte round trips on one TCP connection (`TCP_NODELAY`) to an echo peer;
//! - `tcpstream`: COUNT MiB written to a sink in 64 KiB writes, until the peer has read them all
//!   (it closes when it sees the end);
//! - `udprr`: COUNT 32-byte round trips on a connected UDP socket to an echo peer;
//! - `dns`: COUNT A queries, one at a time, to a DNS server (ADDR:PORT, normally port 53), each
//!   waiting for its answer.

use std::{
    io::{Read as _, Write as _},
    net::{Shutdown, SocketAddr, TcpStream, UdpSocket},
    time::{Duration, Instant},
};

use mcp_guard_tests::dns::a_query;

const TIMEOUT: Duration = Duration::from_secs(10);

fn tcp(addr: SocketAddr) -> std::io::Result<TcpStream> {
    let s = TcpStream::connect(addr)?;
    s.set_nodelay(true)?;
    s.set_read_timeout(Some(TIMEOUT))?;
    Ok(s)
}

fn udp(addr: SocketAddr) -> std::io::Result<UdpSocket> {
    let s = UdpSocket::bind("127.0.0.1:0")?;
    s.connect(addr)?;
    s.set_read_timeout(Some(TIMEOUT))?;
    Ok(s)
}

fn run(mode: &str, count: usize, addr: SocketAddr) -> std::io::Result<Duration> {
    match mode {
        "tcprr" => {
            let mut s = tcp(addr)?;
            let mut byte = [0u8; 1];
            let start = Instant::now();
            for _ in 0..count {
                s.write_all(b"x")?;
                s.read_exact(&mut byte)?;
            }
            Ok(start.elapsed())
        }
        "tcpstream" => {
            let mut s = tcp(addr)?;
            let chunk = vec![0x5au8; 64 * 1024];
            let start = Instant::now();
            for _ in 0..count * 16 {
                s.write_all(&chunk)?;
            }
            s.shutdown(Shutdown::Write)?;
            // The peer closes once it has read everything.
            let mut rest = Vec::new();
            s.read_to_end(&mut rest)?;
            Ok(start.elapsed())
        }
        "udprr" => {
            let s = udp(addr)?;
            let msg = [0x5au8; 32];
            let mut buf = [0u8; 64];
            let start = Instant::now();
            for _ in 0..count {
                s.send(&msg)?;
                s.recv(&mut buf)?;
            }
            Ok(start.elapsed())
        }
        "dns" => {
            let s = udp(addr)?;
            let mut buf = [0u8; 1500];
            let start = Instant::now();
            for i in 0..count {
                let id = u16::try_from(i % 65_536).unwrap_or(0);
                s.send(&a_query(id, &format!("q{i}.netload.test")))?;
                loop {
                    let n = s.recv(&mut buf)?;
                    // An answer to this query (a late one to an earlier query is skipped).
                    if n >= 2 && buf[..2] == id.to_be_bytes() {
                        break;
                    }
                }
            }
            Ok(start.elapsed())
        }
        other => Err(std::io::Error::other(format!("unknown mode {other}"))),
    }
}

fn main() -> std::process::ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let parsed = match args.as_slice() {
        [mode, count, addr] => count
            .parse::<usize>()
            .ok()
            .zip(addr.parse::<SocketAddr>().ok())
            .map(|(n, a)| (mode.as_str(), n, a)),
        _ => None,
    };
    let Some((mode, count, addr)) = parsed else {
        eprintln!("usage: netload tcprr|tcpstream|udprr|dns COUNT ADDR:PORT");
        return std::process::ExitCode::from(2);
    };
    match run(mode, count, addr) {
        Ok(elapsed) => {
            println!("{}", elapsed.as_nanos());
            std::process::ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("netload {mode}: {e}");
            std::process::ExitCode::FAILURE
        }
    }
}
