//! Benchmark (ignored by default; run in release):
//! `cargo test --release -p mcp-guard-tests --test mcp_bench -- --ignored --nocapture`
//!
//! 10k small `tools/call` round trips to an echo tool, direct vs. through the proxy with the
//! default interceptors (tool access, pins, argument schema check, secret shapes) in one run, and
//! sustained pipelined throughput; prints p50/p99 added latency and the throughput ratio.

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

const ROUND_TRIPS: usize = 10_000;
const PIPELINED: usize = 50_000;

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
) -> (Vec<Duration>, f64) {
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
    let mut lat = Vec::with_capacity(ROUND_TRIPS);
    for i in 0..ROUND_TRIPS {
        let msg = call(i);
        let t = Instant::now();
        w.write_all(msg.as_bytes()).await.expect("write");
        w.flush().await.expect("flush");
        let l = lines.next_line().await.expect("read").expect("line");
        lat.push(t.elapsed());
        assert!(l.contains(&format!("ping {i}")), "{l}");
    }
    let t = Instant::now();
    let writer = async move {
        let mut buf = Vec::with_capacity(1 << 16);
        for i in 0..PIPELINED {
            buf.extend_from_slice(call(ROUND_TRIPS + i).as_bytes());
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
        for _ in 0..PIPELINED {
            lines.next_line().await.expect("read").expect("line");
        }
    };
    let (_w, ()) = tokio::join!(writer, reader);
    let rate = PIPELINED as f64 / t.elapsed().as_secs_f64();
    (lat, rate)
}

fn pct(v: &mut [Duration], p: f64) -> Duration {
    v.sort();
    v[((v.len() as f64 * p) as usize).min(v.len() - 1)]
}

#[test]
#[ignore = "benchmark: run in release with --ignored --nocapture"]
fn proxy_added_latency_and_throughput() {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime");
    rt.block_on(async {
        // Direct.
        let mut srv = spawn_echo();
        let (mut direct, direct_rate) = drive(
            srv.stdin.take().expect("stdin"),
            srv.stdout.take().expect("stdout"),
        )
        .await;

        // Through the proxy (in-process, as exec runs it), default interceptors plus pins.
        let mut srv = spawn_echo();
        let dir = std::env::temp_dir().join(format!("mcp-guard-bench-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        let mut cfg = ProxyConfig::new("bench");
        cfg.pins = Some(PinConfig {
            dir,
            poison: PoisonAction::Block,
        });
        let (client, proxy_side) = tokio::io::duplex(1 << 16);
        let (pi, po) = tokio::io::split(proxy_side);
        let proxy = tokio::spawn(mcp::run(
            pi,
            po,
            srv.stdin.take().expect("stdin"),
            srv.stdout.take().expect("stdout"),
            cfg,
            MemorySink::default(),
            None,
        ));
        let (cr, cw) = tokio::io::split(client);
        let (mut proxied, proxied_rate) = drive(cw, cr).await;
        proxy.abort();

        let (d50, d99) = (pct(&mut direct, 0.50), pct(&mut direct, 0.99));
        let (p50, p99) = (pct(&mut proxied, 0.50), pct(&mut proxied, 0.99));
        let us = |d: Duration| d.as_secs_f64() * 1e6;
        println!("round trips: {ROUND_TRIPS} tools/call, echo tool");
        println!("  direct   p50 {:8.1} us  p99 {:8.1} us", us(d50), us(d99));
        println!("  proxied  p50 {:8.1} us  p99 {:8.1} us", us(p50), us(p99));
        println!(
            "  added    p50 {:8.1} us  p99 {:8.1} us   (ratio p50 {:.2}x, p99 {:.2}x)",
            us(p50) - us(d50),
            us(p99) - us(d99),
            us(p50) / us(d50),
            us(p99) / us(d99)
        );
        println!("throughput: {PIPELINED} pipelined tools/call");
        println!(
            "  direct {direct_rate:10.0} msg/s  proxied {proxied_rate:10.0} msg/s  ratio {:.2}",
            proxied_rate / direct_rate
        );
    });
}
