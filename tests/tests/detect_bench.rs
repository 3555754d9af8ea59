//! Throughput of the userspace event path: correlator + detector + store, as exec runs it
//! (the session pipeline, `mcp_guard_analysis::pipeline::run`, on a one-thread runtime, the
//! store's writer thread, a real SQLite database on disk), compared with the store alone in the
//! same run, then paced at fixed rates to find what is sustained without a drop.
//!
//! Not a timed test: run it on purpose, in release mode for meaningful numbers:
//! `cargo test --release -p mcp-guard-tests --test detect_bench -- --ignored --nocapture`
//!
//! The events are made in-process (the kernel side is measured by tests/tests/bench.rs: ring
//! buffer 305k events/s): this measures what userspace does with them once read. The mix is
//! what a busy server produces: opens of library files, one connect per 20 events, calls of 50
//! events each started and ended through the same input queue the proxy uses.
//!
//! `exec_session_under_an_open_storm` is the whole path for real: `mcp-guard exec` (the release
//! binary: `cargo build --release --bins` first) runs the `opener` fixture opening one file as
//! fast as it can, N times; it reports how many of those opens reached the store and what exec
//! said was lost (ring buffer, store queue).
#![expect(
    clippy::cast_precision_loss,
    reason = "rates, shares and sizes for a report, to a few digits"
)]

use std::{sync::Arc, time::Duration, time::Instant};

use mcp_guard_tests::{bench::record, require_root, scratch_root, workspace_bin, workspace_root};

use mcp_guard_analysis::{
    Effect, Pipeline, PipelineConfig,
    correlate::CallFact,
    detect::{DetectConfig, Detector, Profile},
    event_record, input, pipeline,
};
use mcp_guard_model::{EgressVerdict, KernelEvent, KernelEventKind, SockOp, boot_ns_now};
use mcp_guard_policy as policy;
use mcp_guard_store::{StoreWriter, db_path};
use tokio::sync::oneshot;

const EVENTS: u64 = 200_000;
const PER_CALL: u64 = 50;

struct Run {
    secs: f64,
    /// Until the store had committed everything (its queue absorbs bursts: a run whose
    /// stored/s falls behind its events/s is not sustained, drops or not).
    stored_secs: f64,
    recorded: u64,
    written: u64,
    dropped: u64,
}

fn event(i: u64) -> KernelEvent {
    let kind = if i % 20 == 19 {
        KernelEventKind::Connect {
            addr: "127.0.0.1:443".parse().expect("addr"),
            proto: 6,
            op: SockOp::Connect,
            verdict: EgressVerdict::Allowed,
        }
    } else {
        KernelEventKind::Open {
            path: format!("/usr/lib/python3/dist-packages/mod{}.py", i % 500),
            flags: 0,
            result: Some(3),
        }
    };
    KernelEvent {
        ts_boot_ns: boot_ns_now(),
        cgroup_id: 1,
        pid: 1000 + (i % 4) as u32,
        tid: 1000 + (i % 4) as u32,
        server: Arc::from("bench"),
        session: Arc::from("bench-s"),
        kind,
    }
}

/// Sends `EVENTS` events (paced at `rate` per second, or as fast as they are taken) through
/// the session pipeline with call facts and the detector (`full`), or straight to the store.
fn run(dir: &std::path::Path, full: bool, rate: Option<u64>) -> Run {
    let _ = std::fs::remove_dir_all(dir);
    std::fs::create_dir_all(dir).expect("bench dir");
    let store = StoreWriter::spawn(db_path(dir));
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    let started = Instant::now();
    let (secs, recorded): (f64, u64) = rt.block_on(async {
        let (inputs, received) = input::channel();
        let (stop_tx, stop) = oneshot::channel();
        let home = std::path::PathBuf::from("/root");
        let pipeline = Pipeline::new(PipelineConfig {
            server: "bench".into(),
            session: "bench-s".into(),
            detector: Detector::new(
                DetectConfig::from_policy(&policy::builtin_default(), &home),
                "bench",
                "bench-s",
                Profile::default(),
                std::collections::HashSet::default(),
            ),
            observe: false,
        });
        let t0 = Instant::now();
        let to_store = store.clone();
        let task = tokio::spawn(pipeline::run(pipeline, received, stop, move |e| {
            if let Effect::Store(r) = e {
                to_store.send(*r);
            }
        }));
        let per_ms = rate.map(|r| (r / 1000).max(1));
        let mut tick = tokio::time::interval(Duration::from_millis(1));
        let mut direct = 0;
        for i in 0..EVENTS {
            if let Some(n) = per_ms
                && i % n == 0
            {
                tick.tick().await;
            }
            if !full {
                direct += 1;
                store.send(event_record(&event(i), format!("bench-s-e{i}")));
                continue;
            }
            if i % PER_CALL == 0 {
                let id = format!("c{}", i / PER_CALL);
                if i > 0 {
                    inputs.call_fact(|at_boot_ns| CallFact::Ended {
                        call_id: format!("c{}", i / PER_CALL - 1),
                        at_boot_ns,
                        tool: Some("read".into()),
                        result_bytes: Some(512),
                        denied: false,
                    });
                }
                inputs.call_fact(|at_boot_ns| CallFact::Started {
                    call_id: id,
                    tool: Some("read".into()),
                    at_boot_ns,
                });
            }
            assert!(inputs.kernel(event(i)).await, "pipeline alive");
        }
        let _ = stop_tx.send(());
        let outcome = task.await.expect("pipeline");
        (t0.elapsed().as_secs_f64(), outcome.events + direct)
    });
    store.flush(Duration::from_mins(1));
    let stored_secs = started.elapsed().as_secs_f64();
    let s = store.stats();
    Run {
        secs,
        stored_secs,
        recorded,
        written: s.written,
        dropped: s.dropped_queue_full + s.dropped_write_failed,
    }
}

fn show(label: &str, r: &Run) {
    println!(
        "{label:<44} {:>7.0} events/s through  {:>7.0} stored/s  stored {:>6}  written {:>6}  dropped {:>6}",
        EVENTS as f64 / r.secs,
        r.written as f64 / r.stored_secs,
        r.recorded,
        r.written,
        r.dropped
    );
    record(
        "detect",
        &format!("{label}: through"),
        EVENTS as f64 / r.secs,
        "events/s",
    );
    record(
        "detect",
        &format!("{label}: dropped"),
        r.dropped as f64,
        "events",
    );
}

#[test]
#[ignore = "benchmark: cargo xtask bench (root, release)"]
fn correlator_detector_store_throughput() {
    let dir = std::env::temp_dir().join(format!("mcp-guard-detect-bench-{}", std::process::id()));
    println!(
        "{EVENTS} events per run, {PER_CALL} per call, SQLite in {}",
        dir.display()
    );
    let store_only = run(&dir, false, None);
    show("store only, unpaced", &store_only);
    let full = run(&dir, true, None);
    show("correlator + detector + store, unpaced", &full);
    println!(
        "ratio full/store-only events/s through: {:.2}",
        store_only.secs / full.secs
    );
    for rate in [20_000, 40_000, 80_000, 160_000] {
        let r = run(&dir, true, Some(rate));
        show(&format!("correlator + detector + store, {rate}/s"), &r);
    }
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
#[ignore = "benchmark: cargo xtask bench (root, release)"]
fn exec_session_under_an_open_storm() {
    require_root();
    let dir = scratch_root().join(format!("detect-storm-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).expect("dir");
    let opener = workspace_bin("opener").canonicalize().expect("opener");
    let tool_dir = opener.parent().expect("dir").display().to_string();
    let policy = std::fs::read_to_string(workspace_root().join("policies/default.toml"))
        .expect("default policy")
        .replacen(
            "\nexec = [\n",
            &format!("\nexec = [\n  \"{tool_dir}\",\n"),
            1,
        )
        .replacen(
            "\nread = [\n",
            &format!("\nread = [\n  \"{tool_dir}\",\n"),
            1,
        );
    let policy_path = dir.join("storm.toml");
    std::fs::write(&policy_path, policy).expect("policy");
    for n in [10_000u64, 50_000, 200_000] {
        let state = dir.join(format!("state-{n}"));
        let t0 = Instant::now();
        let out = std::process::Command::new(workspace_bin("mcp-guard"))
            .arg("--state-dir")
            .arg(&state)
            .args(["exec", "--passthrough", "--name", "storm", "--policy"])
            .arg(&policy_path)
            .arg("--")
            .arg(&opener)
            .args(["--loop", &n.to_string(), "/etc/hosts"])
            .output()
            .expect("exec");
        let wall = t0.elapsed().as_secs_f64();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        let opener_ns: f64 = String::from_utf8_lossy(&out.stdout)
            .lines()
            .next()
            .unwrap_or_default()
            .parse()
            .expect("opener's elapsed ns");
        let listed = std::process::Command::new(workspace_bin("mcp-guard"))
            .arg("--state-dir")
            .arg(&state)
            .args(["events", "--server", "storm", "--kind", "open", "--json"])
            .output()
            .expect("events");
        let stored = String::from_utf8_lossy(&listed.stdout)
            .lines()
            .filter(|l| l.contains("\"/etc/hosts\""))
            .count();
        let lost: Vec<String> = String::from_utf8_lossy(&out.stderr)
            .lines()
            .filter(|l| l.contains("lost") || l.contains("dropped"))
            .map(str::to_string)
            .collect();
        println!(
            "{n:>7} opens in {:>6.3} s ({:>7.0}/s): {stored:>7} stored ({:.1}%), exec wall {wall:.2} s; {}",
            opener_ns / 1e9,
            n as f64 / (opener_ns / 1e9),
            100.0 * stored as f64 / n as f64,
            if lost.is_empty() {
                "nothing reported lost".to_string()
            } else {
                lost.join(" | ")
            }
        );
        let share = 100.0 * stored as f64 / n as f64;
        record("detect", &format!("open storm {n}: stored"), share, "%");
    }
    let _ = std::fs::remove_dir_all(&dir);
}
