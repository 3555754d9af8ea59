//! Benchmark (ignored by default; run in release):
//! `cargo test --release -p mcp-guard-tests --test mcp_bench -- --ignored --nocapture`
//!
//! 10k small `tools/call` round trips to an echo tool, direct vs. through the proxy with the
//! default interceptors (tool access, pins, argument schema check, secret shapes) in one run, and
//! sustained pipelined throughput; prints p50/p99 added latency, the proxy's own time per message
//! (line read to forwarded bytes written, measured inside the proxy: the rest of the added
//! latency is the extra pipe hops and wakeups), the throughput ratio (also without
//! interceptors), and the CPU time the proxy's thread spends per pipelined call. The proxy runs
//! as `exec` runs it: on a thread of its own with a current-thread runtime. On a shared 2-core
//! machine the rates swing with the load; the CPU per call is the steadier number.
//!
//! Two servers: the Rust echo fixture (the worst case for the ratios: it costs almost nothing,
//! so the proxy's cost dominates) and the real npm `@modelcontextprotocol/server-everything`
//! `echo` tool (what users run; node).
//!
//! `MCP_BENCH_CALLS=N` runs N pipelined calls and N/5 round trips instead (e.g. a short run under
//! `valgrind --tool=callgrind --separate-threads=yes`, whose instruction counts per proxy thread
//! are repeatable where timings on a shared machine are not). `MCP_BENCH_SERVERS=echo` (or
//! `everything`) runs one server only.

use std::{
    process::Stdio,
    time::{Duration, Instant},
};

use mcp_guard::mcp::{
    self, ProxyConfig, ProxyOutcome,
    pins::{PinConfig, PoisonAction},
    session::MemorySink,
};
use mcp_guard_tests::npm_server;
use tokio::{
    io::{AsyncBufReadExt, AsyncRead, AsyncWrite, AsyncWriteExt, BufReader},
    net::unix::pipe,
    process::{Child, Command},
};

/// Round trips and pipelined calls: 10k and 50k, or `MCP_BENCH_CALLS` / 5 and `MCP_BENCH_CALLS`.
fn counts() -> (usize, usize) {
    match std::env::var("MCP_BENCH_CALLS")
        .ok()
        .and_then(|n| n.parse::<usize>().ok())
    {
        Some(n) if n >= 5 => (n / 5, n),
        _ => (10_000, 50_000),
    }
}

/// The server behind the proxy (and called directly for the comparison).
#[derive(Clone, Copy, Debug)]
enum Server {
    /// The Rust fixture `mcp_echo_server`.
    Echo,
    /// npm `@modelcontextprotocol/server-everything` (its `echo` tool), on node.
    Everything,
}

impl Server {
    fn name(self) -> &'static str {
        match self {
            Server::Echo => "echo fixture (Rust)",
            Server::Everything => "server-everything (node)",
        }
    }

    fn spawn(self) -> Child {
        let mut cmd = match self {
            Server::Echo => Command::new(env!("CARGO_BIN_EXE_mcp_echo_server")),
            Server::Everything => {
                let mut c = Command::new("node");
                c.arg(npm_server("@modelcontextprotocol/server-everything"))
                    .arg("stdio");
                c
            }
        };
        cmd.stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .kill_on_drop(true)
            .spawn()
            .unwrap_or_else(|e| panic!("spawn {}: {e}", self.name()))
    }
}

/// The next response line (server-everything also sends notifications, e.g. log messages).
async fn response<R: AsyncRead + Unpin>(lines: &mut tokio::io::Lines<BufReader<R>>) -> String {
    loop {
        let l = lines.next_line().await.expect("read").expect("line");
        if !l.contains(r#""method":"notifications/"#) {
            return l;
        }
    }
}

fn call(id: usize) -> String {
    format!(
        r#"{{"jsonrpc":"2.0","id":{id},"method":"tools/call","params":{{"name":"echo","arguments":{{"message":"ping {id}"}}}}}}"#
    ) + "\n"
}

/// Initializes, lists tools, then measures round trips and pipelined throughput.
async fn drive<W: AsyncWrite + Unpin, R: AsyncRead + Unpin>(
    mut w: W,
    r: R,
    cpu: impl Fn() -> Duration,
) -> (Vec<Duration>, f64, Duration) {
    let mut lines = BufReader::new(r).lines();
    let init = r#"{"jsonrpc":"2.0","id":"i","method":"initialize","params":{"protocolVersion":"2025-06-18","capabilities":{},"clientInfo":{"name":"bench","version":"1"}}}"#;
    w.write_all(
        format!(
            "{init}\n{}\n",
            r#"{"jsonrpc":"2.0","id":"l","method":"tools/list"}"#
        )
        .as_bytes(),
    )
    .await
    .expect("write");
    w.flush().await.expect("flush");
    for _ in 0..2 {
        response(&mut lines).await;
    }
    let (round_trips, pipelined) = counts();
    let mut lat = Vec::with_capacity(round_trips);
    for i in 0..round_trips {
        let msg = call(i);
        let t = Instant::now();
        w.write_all(msg.as_bytes()).await.expect("write");
        w.flush().await.expect("flush");
        let l = response(&mut lines).await;
        lat.push(t.elapsed());
        assert!(l.contains(&format!("ping {i}")), "{l}");
    }
    let t = Instant::now();
    let cpu0 = cpu();
    let writer = async move {
        let mut buf = Vec::with_capacity(1 << 16);
        for i in 0..pipelined {
            buf.extend_from_slice(call(round_trips + i).as_bytes());
            if buf.len() > 32 * 1024 {
                w.write_all(&buf).await.expect("write");
                buf.clear();
            }
        }
        w.write_all(&buf).await.expect("write");
        w.flush().await.expect("flush");
        w
    };
    let reader = async {
        for _ in 0..pipelined {
            response(&mut lines).await;
        }
    };
    let (_w, ()) = tokio::join!(writer, reader);
    let rate = pipelined as f64 / t.elapsed().as_secs_f64();
    (lat, rate, (cpu() - cpu0) / pipelined as u32)
}

/// What one run through the proxy measured.
struct Proxied {
    /// Round-trip latencies.
    lat: Vec<Duration>,
    /// Pipelined calls per second.
    rate: f64,
    /// The proxy thread's CPU time per pipelined call (request and response).
    cpu: Duration,
    /// The proxy's own time per message during the round trips (see `ProxyConfig::timing`):
    /// requests (client to server) and responses, each from read to the write issued and to
    /// written.
    requests: Vec<(Duration, Duration)>,
    responses: Vec<(Duration, Duration)>,
}

/// Runs [`drive`] through the proxy with `chain` in front of a fresh `server`. The proxy runs
/// as `exec` runs it: alone on its own thread, in a current-thread runtime (not sharing the
/// client's runtime), with the client on the other end of two pipes, here with its own time
/// per message measured.
async fn through_proxy(
    server: Server,
    cfg: &ProxyConfig,
    chain: mcp::interceptors::Chain,
) -> Proxied {
    let (proxy_in, to_proxy) = std::io::pipe().expect("pipe");
    let (from_proxy, proxy_out) = std::io::pipe().expect("pipe");
    let mut cfg = cfg.clone();
    cfg.timing = true;
    let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
    let proxy = std::thread::spawn(move || -> Option<ProxyOutcome> {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("proxy runtime");
        rt.block_on(async move {
            let mut srv = server.spawn();
            let pi = pipe::Receiver::from_owned_fd(proxy_in.into()).expect("proxy stdin");
            let po = pipe::Sender::from_owned_fd(proxy_out.into()).expect("proxy stdout");
            let (si, so) = (
                srv.stdin.take().expect("stdin"),
                srv.stdout.take().expect("stdout"),
            );
            let run = mcp::proxy::run_with_chain(
                pi,
                po,
                si,
                so,
                &cfg,
                chain,
                MemorySink::default(),
                None,
            );
            tokio::select! {
                r = run => Some(r.expect("proxy")),
                _ = stop_rx => None,
            }
        })
    });
    let clock = thread_clock(&proxy);
    let cw = pipe::Sender::from_owned_fd(to_proxy.into()).expect("client's pipe to the proxy");
    let cr =
        pipe::Receiver::from_owned_fd(from_proxy.into()).expect("client's pipe from the proxy");
    let (lat, rate, cpu) = drive(cw, cr, || clock_time(clock)).await;
    // The client's side is closed now: the proxy closes the server's stdin and ends with the
    // server's output. A server slow to exit is cut short (the timings are then missing).
    let t = Instant::now();
    while !proxy.is_finished() && t.elapsed() < Duration::from_secs(5) {
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let _ = stop_tx.send(());
    let outcome = proxy.join().expect("proxy thread").unwrap_or_default();
    // The round trips' messages: after `initialize` and `tools/list`.
    let round_trips =
        |v: Vec<(Duration, Duration)>| v.into_iter().skip(2).take(lat.len()).collect();
    Proxied {
        requests: round_trips(outcome.client_to_server),
        responses: round_trips(outcome.server_to_client),
        lat,
        rate,
        cpu,
    }
}

/// The CPU-time clock of a running thread.
fn thread_clock<T>(t: &std::thread::JoinHandle<T>) -> libc::clockid_t {
    use std::os::unix::thread::JoinHandleExt;
    let mut clock: libc::clockid_t = 0;
    // SAFETY: the thread is running (joined only later); the call writes only `clock`.
    let rc = unsafe { libc::pthread_getcpuclockid(t.as_pthread_t(), &mut clock) };
    assert_eq!(rc, 0, "pthread_getcpuclockid");
    clock
}

/// The CPU time (user + system) `clock` has counted.
fn clock_time(clock: libc::clockid_t) -> Duration {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: clock_gettime writes only into `ts`.
    unsafe { libc::clock_gettime(clock, &mut ts) };
    Duration::new(ts.tv_sec as u64, ts.tv_nsec as u32)
}

fn pct(v: &mut [Duration], p: f64) -> Duration {
    if v.is_empty() {
        return Duration::ZERO;
    }
    v.sort();
    v[((v.len() as f64 * p) as usize).min(v.len() - 1)]
}

fn us(d: Duration) -> f64 {
    d.as_secs_f64() * 1e6
}

/// [`drive`] against a fresh `server`, directly: its round-trip latencies and pipelined rate.
async fn direct(server: Server) -> (Vec<Duration>, f64) {
    let mut srv = server.spawn();
    let (lat, rate, _) = drive(
        srv.stdin.take().expect("stdin"),
        srv.stdout.take().expect("stdout"),
        || Duration::ZERO,
    )
    .await;
    (lat, rate)
}

/// Direct vs. proxied (default interceptors, and none) against `server`; prints the results.
async fn compare(server: Server) {
    let (mut direct_lat, direct_rate) = direct(server).await;

    // Through the proxy (in-process, as exec runs it), default interceptors plus pins.
    let dir =
        std::env::temp_dir().join(format!("mcp-guard-bench-{}-{server:?}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    let mut cfg = ProxyConfig::new("bench");
    cfg.pins = Some(PinConfig {
        dir: dir.clone(),
        poison: PoisonAction::Block,
    });
    let chain = mcp::proxy::build_chain(&cfg).expect("chain");
    let mut p = through_proxy(server, &cfg, chain).await;
    // The same without interceptors: what framing, parsing, session tracking and the plumbing
    // cost on their own.
    let bare = through_proxy(server, &cfg, mcp::interceptors::Chain::new()).await;
    let _ = std::fs::remove_dir_all(&dir);
    // Direct again: how far the machine drifted while the proxied runs ran.
    let (mut direct_after, _) = direct(server).await;

    let (d50, d99) = (pct(&mut direct_lat, 0.50), pct(&mut direct_lat, 0.99));
    let (p50, p99) = (pct(&mut p.lat, 0.50), pct(&mut p.lat, 0.99));
    let (round_trips, pipelined) = counts();
    println!("== {}", server.name());
    println!("round trips: {round_trips} tools/call, echo tool");
    println!("  direct   p50 {:8.1} us  p99 {:8.1} us", us(d50), us(d99));
    println!("  proxied  p50 {:8.1} us  p99 {:8.1} us", us(p50), us(p99));
    println!(
        "  direct again p50 {:8.1} us  p99 {:8.1} us",
        us(pct(&mut direct_after, 0.50)),
        us(pct(&mut direct_after, 0.99))
    );
    println!(
        "  added    p50 {:8.1} us  p99 {:8.1} us   (ratio p50 {:.2}x, p99 {:.2}x)",
        us(p50) - us(d50),
        us(p99) - us(d99),
        us(p50) / us(d50),
        us(p99) / us(d99)
    );
    for (what, times) in [("request ", &p.requests), ("response", &p.responses)] {
        let mut issued: Vec<Duration> = times.iter().map(|t| t.0).collect();
        let mut written: Vec<Duration> = times.iter().map(|t| t.1).collect();
        println!(
            "  in the proxy, {what}: read to write(2) issued p50 {:6.1} us p99 {:6.1} us; to written p50 {:6.1} us p99 {:6.1} us",
            us(pct(&mut issued, 0.50)),
            us(pct(&mut issued, 0.99)),
            us(pct(&mut written, 0.50)),
            us(pct(&mut written, 0.99)),
        );
    }
    println!("throughput: {pipelined} pipelined tools/call");
    println!(
        "  direct {direct_rate:10.0} msg/s  proxied {:10.0} msg/s  ratio {:.2}",
        p.rate,
        p.rate / direct_rate
    );
    println!(
        "  proxied without interceptors {:10.0} msg/s  ratio {:.2}",
        bare.rate,
        bare.rate / direct_rate
    );
    println!(
        "proxy CPU per pipelined call (request + response): {:.2} us with the default interceptors, {:.2} us without",
        us(p.cpu),
        us(bare.cpu)
    );
}

#[test]
#[ignore = "benchmark: run in release with --ignored --nocapture"]
fn proxy_added_latency_and_throughput() {
    // The client gets a thread of its own; the proxy another (see `through_proxy`).
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    rt.block_on(async {
        let only = std::env::var("MCP_BENCH_SERVERS").unwrap_or_default();
        for (name, server) in [("echo", Server::Echo), ("everything", Server::Everything)] {
            if only.is_empty() || only.split(',').any(|s| s == name) {
                compare(server).await;
            }
        }
    });
}
