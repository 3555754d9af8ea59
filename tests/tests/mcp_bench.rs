//! Benchmark (ignored by default; run in release):
//! `cargo test --release -p mcp-guard-tests --test mcp_bench -- --ignored --nocapture`
//!
//! 10k small `tools/call` round trips to an echo tool, direct vs. through the proxy with the
//! default interceptors (tool access, pins, argument schema check, secret shapes) in one run, and
//! sustained pipelined throughput; prints p50/p99 added latency, the throughput ratio (also
//! without interceptors), and the CPU time the proxy's thread spends per pipelined call. The
//! proxy runs as `exec` runs it: on a thread of its own with a current-thread runtime. On a
//! shared 2-core machine the rates swing with the load; the CPU per call is the steadier number.
//!
//! `MCP_BENCH_CALLS=N` runs N pipelined calls and N/5 round trips instead (e.g. a short run under
//! `valgrind --tool=callgrind --separate-threads=yes`, whose instruction counts per proxy thread
//! are repeatable where timings on a shared machine are not).

use std::{
    process::Stdio,
    time::{Duration, Instant},
};

use mcp_guard::mcp::{
    self, ProxyConfig,
    pins::{PinConfig, PoisonAction},
    session::MemorySink,
};
use tokio::{
    io::{AsyncBufReadExt, AsyncRead, AsyncWrite, AsyncWriteExt, BufReader},
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

fn spawn_echo() -> Child {
    Command::new(env!("CARGO_BIN_EXE_mcp_echo_server"))
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .expect("spawn echo server")
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
        lines.next_line().await.expect("read").expect("line");
    }
    let (round_trips, pipelined) = counts();
    let mut lat = Vec::with_capacity(round_trips);
    for i in 0..round_trips {
        let msg = call(i);
        let t = Instant::now();
        w.write_all(msg.as_bytes()).await.expect("write");
        w.flush().await.expect("flush");
        let l = lines.next_line().await.expect("read").expect("line");
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
            lines.next_line().await.expect("read").expect("line");
        }
    };
    let (_w, ()) = tokio::join!(writer, reader);
    let rate = pipelined as f64 / t.elapsed().as_secs_f64();
    (lat, rate, (cpu() - cpu0) / pipelined as u32)
}

/// Runs [`drive`] through the proxy with `chain` in front of a fresh echo server. The proxy runs
/// as `exec` runs it: alone on its own thread, in a current-thread runtime (not sharing the
/// client's runtime). Returns the latencies, the pipelined rate, and the CPU time the proxy's
/// thread used per pipelined call (request and response).
async fn through_proxy(
    cfg: &ProxyConfig,
    chain: mcp::interceptors::Chain,
) -> (Vec<Duration>, f64, Duration) {
    let (client, proxy_side) = tokio::io::duplex(1 << 16);
    let cfg = cfg.clone();
    let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
    let proxy = std::thread::spawn(move || {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("proxy runtime");
        rt.block_on(async move {
            let mut srv = spawn_echo();
            let (pi, po) = tokio::io::split(proxy_side);
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
                r = run => { r.expect("proxy"); }
                _ = stop_rx => {}
            }
        });
    });
    let clock = thread_clock(&proxy);
    let (cr, cw) = tokio::io::split(client);
    let out = drive(cw, cr, || clock_time(clock)).await;
    let _ = stop_tx.send(());
    proxy.join().expect("proxy thread");
    out
}

/// The CPU-time clock of a running thread.
fn thread_clock(t: &std::thread::JoinHandle<()>) -> libc::clockid_t {
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
    v.sort();
    v[((v.len() as f64 * p) as usize).min(v.len() - 1)]
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
        // Direct.
        let mut srv = spawn_echo();
        let (mut direct, direct_rate, _) = drive(
            srv.stdin.take().expect("stdin"),
            srv.stdout.take().expect("stdout"),
            || Duration::ZERO,
        )
        .await;

        // Through the proxy (in-process, as exec runs it), default interceptors plus pins.
        let dir = std::env::temp_dir().join(format!("mcp-guard-bench-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        let mut cfg = ProxyConfig::new("bench");
        cfg.pins = Some(PinConfig {
            dir,
            poison: PoisonAction::Block,
        });
        let chain = mcp::proxy::build_chain(&cfg).expect("chain");
        let (mut proxied, proxied_rate, proxied_cpu) = through_proxy(&cfg, chain).await;
        // The same without interceptors: what framing, parsing, session tracking and the
        // plumbing cost on their own.
        let (_, bare_rate, bare_cpu) =
            through_proxy(&cfg, mcp::interceptors::Chain::new()).await;

        let (d50, d99) = (pct(&mut direct, 0.50), pct(&mut direct, 0.99));
        let (p50, p99) = (pct(&mut proxied, 0.50), pct(&mut proxied, 0.99));
        let us = |d: Duration| d.as_secs_f64() * 1e6;
        let (round_trips, pipelined) = counts();
        println!("round trips: {round_trips} tools/call, echo tool");
        println!("  direct   p50 {:8.1} us  p99 {:8.1} us", us(d50), us(d99));
        println!("  proxied  p50 {:8.1} us  p99 {:8.1} us", us(p50), us(p99));
        println!(
            "  added    p50 {:8.1} us  p99 {:8.1} us   (ratio p50 {:.2}x, p99 {:.2}x)",
            us(p50) - us(d50),
            us(p99) - us(d99),
            us(p50) / us(d50),
            us(p99) / us(d99)
        );
        println!("throughput: {pipelined} pipelined tools/call");
        println!(
            "  direct {direct_rate:10.0} msg/s  proxied {proxied_rate:10.0} msg/s  ratio {:.2}",
            proxied_rate / direct_rate
        );
        println!(
            "  proxied without interceptors {bare_rate:10.0} msg/s  ratio {:.2}",
            bare_rate / direct_rate
        );
        println!(
            "proxy CPU per pipelined call (request + response): {:.2} us with the default interceptors, {:.2} us without",
            us(proxied_cpu),
            us(bare_cpu)
        );
    });
}
