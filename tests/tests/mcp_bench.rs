//! Benchmark (ignored by default): `cargo xtask bench --only mcp_bench`.
//!
//! 10k small `tools/call` round trips to an echo tool, direct vs. through the proxy with the
//! default interceptors (tool access, pins, the poisoning scanner, argument schema check, secret
//! shapes; and the same without the scanner, for its cost) in one run, and
//! sustained pipelined throughput; prints p50/p99 added latency, the proxy's own time per message
//! (line read to forwarded bytes written, measured inside the proxy: the rest of the added
//! latency is the extra pipe hops and wakeups), the throughput ratio (also without
//! interceptors), and the CPU time the proxy's thread spends per pipelined call. The proxy runs
//! as `exec` runs it: on a thread of its own with a current-thread runtime, each call recorded in
//! a SQLite store by the store writer's thread (exec's correlator is not run). On a shared 2-core
//! machine the rates swing with the load, so the direct and proxied connections are open side
//! by side and take the calls in alternating blocks: both paths see the same stretches of
//! noise, and the throughput ratio is the median of the blocks' ratios. The CPU per call is the
//! steadier number.
//!
//! The history's cost is measured the same way, side by side: one proxied connection records
//! each call's arguments and result (`[audit]` at its defaults: arguments, 4096 bytes of the
//! result, redacted on the store writer's thread), another records the calls without them.
//!
//! Two servers: the Rust echo fixture (the worst case for the ratios: it costs almost nothing,
//! so the proxy's cost dominates) and the real npm `@modelcontextprotocol/server-everything`
//! `echo` tool (what users run; node).
//!
//! `MCP_BENCH_CALLS=N` runs N pipelined calls and N/5 round trips instead (e.g. a short run under
//! `valgrind --tool=callgrind --separate-threads=yes`, whose instruction counts per proxy thread
//! are repeatable where timings on a shared machine are not). `MCP_BENCH_SERVERS=echo` (or
//! `everything`) runs one server only.
//!
//! `MCP_BENCH_NO_IDLE=1` (root) holds `/dev/cpu_dma_latency` at 0 for the run, so idle CPUs poll
//! instead of halting: on a VM whose halted vCPUs are slow to wake, this separates that wakeup
//! cost (paid on each of the proxy's two extra hops) from the proxy's own.
#![expect(
    clippy::cast_precision_loss,
    clippy::cast_possible_truncation,
    clippy::cast_sign_loss,
    reason = "benchmark clocks, rates and percentiles: clock_gettime fields are never negative, block counts small"
)]

use std::{
    process::Stdio,
    time::{Duration, Instant},
};

use mcp_guard::exec::proxy_sink::ProxySink;
use mcp_guard_proxy::{self as mcp, ProxyConfig, ProxyOutcome, pins::PinConfig};
use mcp_guard_store::StoreWriter;
use mcp_guard_tests::npm_server;
use mcp_guard_tests::{bench::record, median};
use tokio::{
    io::{AsyncBufReadExt, AsyncRead, AsyncWrite, AsyncWriteExt, BufReader, Lines},
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
async fn response<R: AsyncRead + Unpin>(lines: &mut Lines<BufReader<R>>) -> String {
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

/// A client's connection to a server, directly or through a proxy, initialized and with the
/// tools listed.
struct Conn {
    w: Box<dyn AsyncWrite + Unpin>,
    lines: Lines<BufReader<Box<dyn AsyncRead + Unpin>>>,
    /// The next request id.
    next: usize,
    /// Round-trip latencies so far.
    lat: Vec<Duration>,
    /// Pipelined calls per second, per block.
    rates: Vec<f64>,
}

impl Conn {
    async fn open(
        w: impl AsyncWrite + Unpin + 'static,
        r: impl AsyncRead + Unpin + 'static,
    ) -> Self {
        let mut c = Conn {
            w: Box::new(w),
            lines: BufReader::new(Box::new(r) as Box<dyn AsyncRead + Unpin>).lines(),
            next: 0,
            lat: Vec::new(),
            rates: Vec::new(),
        };
        let init = r#"{"jsonrpc":"2.0","id":"i","method":"initialize","params":{"protocolVersion":"2025-06-18","capabilities":{},"clientInfo":{"name":"bench","version":"1"}}}"#;
        let list = r#"{"jsonrpc":"2.0","id":"l","method":"tools/list"}"#;
        c.w.write_all(format!("{init}\n{list}\n").as_bytes())
            .await
            .expect("write");
        c.w.flush().await.expect("flush");
        for _ in 0..2 {
            response(&mut c.lines).await;
        }
        c
    }

    /// `n` calls, each sent when the previous one's answer is in.
    async fn round_trips(&mut self, n: usize) {
        for _ in 0..n {
            let i = self.next;
            self.next += 1;
            let msg = call(i);
            let t = Instant::now();
            self.w.write_all(msg.as_bytes()).await.expect("write");
            self.w.flush().await.expect("flush");
            let l = response(&mut self.lines).await;
            self.lat.push(t.elapsed());
            assert!(l.contains(&format!("ping {i}")), "{l}");
        }
    }

    /// `n` calls written in 32 KiB batches while the answers are read.
    async fn pipelined(&mut self, n: usize) {
        let first = self.next;
        self.next += n;
        let Conn { w, lines, .. } = self;
        let t = Instant::now();
        let writer = async move {
            let mut buf = Vec::with_capacity(1 << 16);
            for i in first..first + n {
                buf.extend_from_slice(call(i).as_bytes());
                if buf.len() > 32 * 1024 {
                    w.write_all(&buf).await.expect("write");
                    buf.clear();
                }
            }
            w.write_all(&buf).await.expect("write");
            w.flush().await.expect("flush");
        };
        let reader = async {
            for _ in 0..n {
                response(lines).await;
            }
        };
        tokio::join!(writer, reader);
        self.rates.push(n as f64 / t.elapsed().as_secs_f64());
    }
}

/// A proxy running on its own thread, and the CPU-time clock of that thread.
struct ProxyThread {
    thread: std::thread::JoinHandle<Option<ProxyOutcome>>,
    clock: libc::clockid_t,
    stop: tokio::sync::oneshot::Sender<()>,
}

/// Starts the proxy with `chain` in front of a fresh `server`, as `exec` runs it: alone on its
/// own thread, in a current-thread runtime (not sharing the client's runtime), with the client
/// on the other end of two pipes, and each call recorded in a store at `db` by its writer
/// thread; here with its own time per message measured. (exec's correlator, which also hears
/// of each call, is not run.)
async fn through_proxy(
    server: Server,
    cfg: &ProxyConfig,
    chain: mcp::interceptors::Chain,
    db: std::path::PathBuf,
) -> (Conn, ProxyThread) {
    // The store's redactor as exec gives it to a session (the default policy's).
    let redactor = mcp_guard::exec::history::store_redactor(
        &mcp_guard_proxy::secrets::SecretConfig::for_policy(
            &mcp_guard_policy::builtin_default().mcp,
            Vec::new(),
        ),
    )
    .expect("the store's redactor");
    let (proxy_in, to_proxy) = std::io::pipe().expect("pipe");
    let (from_proxy, proxy_out) = std::io::pipe().expect("pipe");
    let mut cfg = cfg.clone();
    cfg.timing = true;
    let (stop, stop_rx) = tokio::sync::oneshot::channel::<()>();
    let thread = std::thread::spawn(move || -> Option<ProxyOutcome> {
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
                // No analysis listens (its input is closed): the proxy's own cost is measured.
                ProxySink::new(
                    StoreWriter::spawn(db).redacting(Some(redactor)),
                    mcp_guard_analysis::input::channel().0,
                    &cfg.session,
                ),
                None,
            );
            tokio::select! {
                r = run => Some(r.expect("proxy")),
                _ = stop_rx => None,
            }
        })
    });
    let clock = thread_clock(&thread);
    let cw = pipe::Sender::from_owned_fd(to_proxy.into()).expect("client's pipe to the proxy");
    let cr =
        pipe::Receiver::from_owned_fd(from_proxy.into()).expect("client's pipe from the proxy");
    let conn = Conn::open(cw, cr).await;
    (
        conn,
        ProxyThread {
            thread,
            clock,
            stop,
        },
    )
}

impl ProxyThread {
    /// Ends the proxy (whose client, `conn`, is dropped first) and returns its own timings of
    /// the first `round_trips` calls: requests (client to server) and responses, each from read
    /// to the write issued and to written (see `ProxyConfig::timing`).
    async fn finish(
        self,
        conn: Conn,
        round_trips: usize,
    ) -> (Vec<(Duration, Duration)>, Vec<(Duration, Duration)>) {
        // With the client's side closed, the proxy closes the server's stdin and ends with the
        // server's output. A server slow to exit is cut short (the timings are then missing).
        drop(conn);
        let t = Instant::now();
        while !self.thread.is_finished() && t.elapsed() < Duration::from_secs(5) {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        let _ = self.stop.send(());
        let outcome = self
            .thread
            .join()
            .expect("proxy thread")
            .unwrap_or_default();
        // The round trips' messages: after `initialize` and `tools/list`.
        let round_trips =
            |v: Vec<(Duration, Duration)>| v.into_iter().skip(2).take(round_trips).collect();
        (
            round_trips(outcome.client_to_server),
            round_trips(outcome.server_to_client),
        )
    }
}

/// The CPU-time clock of a running thread.
fn thread_clock<T>(t: &std::thread::JoinHandle<T>) -> libc::clockid_t {
    use std::os::unix::thread::JoinHandleExt;
    let mut clock: libc::clockid_t = 0;
    // SAFETY: the thread is running (joined only later); the call writes only `clock`.
    let rc = unsafe { libc::pthread_getcpuclockid(t.as_pthread_t(), &raw mut clock) };
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
    unsafe { libc::clock_gettime(clock, &raw mut ts) };
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

/// How many blocks each measurement is cut into (see [`compare`]).
const BLOCKS: usize = 10;

/// Direct vs. proxied (default interceptors, and none) against `server`; prints the results.
///
/// The three connections are open at once, and the calls go to them in alternating blocks
/// (the order rotating from block to block), so that each sees the same stretches of a noisy
/// machine: measured one after the other, a quiet or busy second decided the ratios.
async fn compare(server: Server) {
    let mut srv = server.spawn();
    let direct = Conn::open(
        srv.stdin.take().expect("stdin"),
        srv.stdout.take().expect("stdout"),
    )
    .await;
    // Through the proxy (in-process, as exec runs it), default interceptors plus pins.
    let dir =
        std::env::temp_dir().join(format!("mcp-guard-bench-{}-{server:?}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).expect("bench dir");
    let mut cfg = ProxyConfig::new("bench");
    cfg.pins = Some(PinConfig {
        state_dir: dir.clone(),
        policy: "bench".into(),
    });
    let chain = mcp::proxy::build_chain(&cfg).expect("chain");
    let (proxied, proxy) = through_proxy(server, &cfg, chain, dir.join("default.db")).await;
    // The chain before the poisoning scanner and the secrets catalog: no scanner, and the eight
    // secret shapes it had then (as a rules file), for what both cost.
    let mut unscanned_cfg = cfg.clone();
    unscanned_cfg.scan = None;
    let eight = mcp_guard_tests::fixture("secrets/eight-shapes.toml");
    unscanned_cfg.secrets.rules =
        Some(mcp_guard_secrets::read_file(&eight).expect("eight-shapes.toml"));
    unscanned_cfg.pins = Some(PinConfig {
        state_dir: dir.join("unscanned"),
        policy: "bench".into(),
    });
    let chain = mcp::proxy::build_chain(&unscanned_cfg).expect("chain");
    let (unscanned, unscanned_proxy) =
        through_proxy(server, &unscanned_cfg, chain, dir.join("unscanned.db")).await;
    // The same, with each call's arguments and result recorded as `[audit]`'s defaults keep them.
    let mut audited_cfg = cfg.clone();
    audited_cfg.audit = mcp_guard::history::audit_config(
        &mcp_guard_policy::Audit::default(),
        &mcp_guard::history::AuditDefaults::default(),
    );
    let chain = mcp::proxy::build_chain(&audited_cfg).expect("chain");
    let (audited, audited_proxy) =
        through_proxy(server, &audited_cfg, chain, dir.join("audited.db")).await;
    // The same without interceptors: what framing, parsing, session tracking and the plumbing
    // cost on their own.
    let (bare, bare_proxy) = through_proxy(
        server,
        &cfg,
        mcp::interceptors::Chain::new(),
        dir.join("bare.db"),
    )
    .await;
    let mut conns = [direct, proxied, audited, bare, unscanned];

    let (round_trips, pipelined) = counts();
    for b in 0..BLOCKS {
        for k in 0..conns.len() {
            conns[(b + k) % conns.len()]
                .round_trips(round_trips / BLOCKS)
                .await;
        }
    }
    let cpu_before = [
        clock_time(proxy.clock),
        clock_time(bare_proxy.clock),
        clock_time(audited_proxy.clock),
        clock_time(unscanned_proxy.clock),
    ];
    for b in 0..BLOCKS {
        for k in 0..conns.len() {
            conns[(b + k) % conns.len()]
                .pipelined(pipelined / BLOCKS)
                .await;
        }
    }
    let per_call = |clock, before: Duration| {
        clock_time(clock)
            .checked_sub(before)
            .expect("the clock only grows")
            / (pipelined / BLOCKS * BLOCKS) as u32
    };
    let (cpu, bare_cpu, audited_cpu, unscanned_cpu) = (
        per_call(proxy.clock, cpu_before[0]),
        per_call(bare_proxy.clock, cpu_before[1]),
        per_call(audited_proxy.clock, cpu_before[2]),
        per_call(unscanned_proxy.clock, cpu_before[3]),
    );
    let [direct, proxied, audited, bare, unscanned] = conns;
    let (d_lat, d_rates) = (direct.lat, direct.rates);
    let (mut p_lat, p_rates) = (proxied.lat.clone(), proxied.rates.clone());
    let (mut a_lat, a_rates) = (audited.lat.clone(), audited.rates.clone());
    let b_rates = bare.rates.clone();
    let measured = p_lat.len();
    let (requests, responses) = proxy.finish(proxied, measured).await;
    let (a_requests, a_responses) = audited_proxy.finish(audited, measured).await;
    bare_proxy.finish(bare, 0).await;
    unscanned_proxy.finish(unscanned, 0).await;
    // The records really went to SQLite (not dropped for a store that would not open).
    let sent = (round_trips + pipelined) as u64;
    let stored = || {
        mcp_guard_store::Store::open(&dir.join("default.db"))
            .and_then(|s| s.counts())
            .map_or(0, |c| c.calls)
    };
    let waited = Instant::now();
    while stored() < sent && waited.elapsed() < Duration::from_secs(10) {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let recorded = stored();
    // The audited path's store holds the arguments and results.
    let audited_rows = mcp_guard_store::Store::open(&dir.join("audited.db"))
        .and_then(|s| {
            s.calls(&mcp_guard_store::CallFilter {
                tool: Some("echo".into()),
                limit: Some(1),
                ..Default::default()
            })
        })
        .map_or(0, |c| c.into_iter().filter(|c| c.audit.is_some()).count());
    let _ = std::fs::remove_dir_all(&dir);

    let mut d_lat = d_lat;
    let (d50, d99) = (pct(&mut d_lat, 0.50), pct(&mut d_lat, 0.99));
    let (p50, p99) = (pct(&mut p_lat, 0.50), pct(&mut p_lat, 0.99));
    println!("== {}", server.name());
    println!(
        "round trips: {measured} tools/call to the echo tool per path, in {BLOCKS} alternating blocks"
    );
    println!("  direct   p50 {:8.1} us  p99 {:8.1} us", us(d50), us(d99));
    println!("  proxied  p50 {:8.1} us  p99 {:8.1} us", us(p50), us(p99));
    println!(
        "  added    p50 {:8.1} us  p99 {:8.1} us   (ratio p50 {:.2}x, p99 {:.2}x)",
        us(p50) - us(d50),
        us(p99) - us(d99),
        us(p50) / us(d50),
        us(p99) / us(d99)
    );
    let (a50, a99) = (pct(&mut a_lat, 0.50), pct(&mut a_lat, 0.99));
    println!(
        "  with arguments and results recorded: proxied p50 {:8.1} us  p99 {:8.1} us; added p50 {:8.1} us  p99 {:8.1} us",
        us(a50),
        us(a99),
        us(a50) - us(d50),
        us(a99) - us(d99),
    );
    for (what, times) in [
        ("request ", &requests),
        ("response", &responses),
        ("request, recorded ", &a_requests),
        ("response, recorded", &a_responses),
    ] {
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
    // Per block, the proxied rate over the direct rate of the same block.
    let ratios =
        |rates: &[f64]| -> Vec<f64> { rates.iter().zip(&d_rates).map(|(p, d)| p / d).collect() };
    println!(
        "throughput: {} pipelined tools/call per path, in {BLOCKS} alternating blocks",
        pipelined / BLOCKS * BLOCKS
    );
    println!(
        "  direct {:10.0} msg/s  proxied {:10.0} msg/s (medians of the blocks)  ratio {:.2} (median of the blocks' ratios; min {:.2}, max {:.2})",
        median(d_rates.clone()),
        median(p_rates.clone()),
        median(ratios(&p_rates)),
        ratios(&p_rates).into_iter().fold(f64::INFINITY, f64::min),
        ratios(&p_rates).into_iter().fold(0.0, f64::max),
    );
    println!(
        "  proxied without interceptors {:10.0} msg/s  ratio {:.2}",
        median(b_rates.clone()),
        median(ratios(&b_rates))
    );
    println!(
        "  proxied with arguments and results recorded {:10.0} msg/s  ratio {:.2}",
        median(a_rates.clone()),
        median(ratios(&a_rates))
    );
    println!(
        "proxy CPU per pipelined call (request + response): {:.2} us with the default interceptors, {:.2} us with arguments and results recorded too, {:.2} us without interceptors",
        us(cpu),
        us(audited_cpu),
        us(bare_cpu)
    );
    println!(
        "  without the poisoning scanner, with the eight secret shapes of before the catalog {:.2} us: scanner and catalog cost {:.2}x",
        us(unscanned_cpu),
        us(cpu) / us(unscanned_cpu)
    );
    println!(
        "the recorded path's last echo call kept its arguments and result: {}",
        audited_rows == 1
    );
    println!("calls recorded in the proxied path's store: {recorded} of {sent}");
    let name = server.name();
    let r =
        |what: &str, value: f64, unit: &str| record("mcp", &format!("{name}: {what}"), value, unit);
    r("added p50", us(p50) - us(d50), "us");
    r("added p99", us(p99) - us(d99), "us");
    r("added p50, recorded", us(a50) - us(d50), "us");
    r(
        "throughput proxied/direct",
        median(ratios(&p_rates)),
        "ratio",
    );
    r(
        "throughput recorded/direct",
        median(ratios(&a_rates)),
        "ratio",
    );
    r("proxy CPU per call", us(cpu), "us");
    r("proxy CPU per call, recorded", us(audited_cpu), "us");
    r(
        "scanner and catalog CPU, now/before",
        us(cpu) / us(unscanned_cpu),
        "ratio",
    );
}

#[test]
#[ignore = "benchmark: cargo xtask bench (root, release)"]
fn proxy_added_latency_and_throughput() {
    let no_idle = std::env::var("MCP_BENCH_NO_IDLE").is_ok_and(|v| !v.is_empty() && v != "0");
    let _no_idle = no_idle.then(|| {
        let mut qos = std::fs::OpenOptions::new()
            .write(true)
            .open("/dev/cpu_dma_latency")
            .expect("MCP_BENCH_NO_IDLE: /dev/cpu_dma_latency (needs root)");
        std::io::Write::write_all(&mut qos, &0i32.to_ne_bytes()).expect("latency request");
        println!("MCP_BENCH_NO_IDLE: CPUs kept out of idle states for this run");
        // The request holds while the file is open.
        qos
    });
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
