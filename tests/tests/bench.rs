//! Overhead benchmarks of the kernel guard, with vs without in one run, printing ratios.
//!
//! Not a timed test: run it on purpose, as root, in release mode for meaningful numbers:
//! `cargo test --release -p mcp-guard-tests --test bench -- --ignored --nocapture`
//!
//! - 20k loopback TCP connects from a guarded cgroup (allowlisted port, events on) vs. an
//!   unguarded cgroup;
//! - 200k openat calls from a guarded cgroup (open events captured) vs. an unguarded cgroup, by
//!   wall time and by the opening thread's own CPU time (which leaves out the stretches when the
//!   event reader, another task or the hypervisor has its CPU; where the two agree, the gap is
//!   work done inside the guarded open itself);
//! - ring buffer throughput: open events delivered per second during that run, and drops;
//! - with `MCP_GUARD_BENCH_STATS=1`, the kernel's own price of a guarded open: run time of the
//!   syscall tracing programs (kernel BPF statistics) per open+close in the guarded loop, next to the unguarded
//!   loop's (the programs run there too and return at once). CPU counters are not available on
//!   every host; these are.
#![expect(
    clippy::cast_precision_loss,
    reason = "rates, shares and sizes for a report, to a few digits"
)]

mod kernel_common;

use std::{
    sync::{
        Arc,
        atomic::{AtomicU64, Ordering},
    },
    time::Instant,
};

use kernel_common::{TestCgroup, lines, listen};
use mcp_guard_kernel::loader::{Destination, EgressRule, KernelGuard, ServerSpec};
use mcp_guard_model::KernelEventKind;
use mcp_guard_tests::bench::record;
use mcp_guard_tests::require_root;

const CONNECTS: usize = 20_000;
const OPENS: usize = 200_000;
/// Plain and guarded runs alternate this many times; the best of each is compared, and so are
/// the runs pair by pair (median of the ratios), since a shared VM's speed drifts.
const ROUNDS: usize = 10;

fn timed(cg: &TestCgroup, program: &str, args: &[String]) -> f64 {
    let start = Instant::now();
    let out = cg.run(std::path::Path::new(program), args);
    let wall = start.elapsed().as_secs_f64();
    let got = lines(&out);
    assert!(got.iter().all(|l| l != "errno"), "{got:?}");
    wall
}

/// CPU time (user + system) this process (the event reader, not the children it runs) has used.
fn own_cpu() -> f64 {
    let mut usage = std::mem::MaybeUninit::<libc::rusage>::zeroed();
    // SAFETY: getrusage fills the struct it is given; RUSAGE_SELF always exists.
    let usage = unsafe {
        libc::getrusage(libc::RUSAGE_SELF, usage.as_mut_ptr());
        usage.assume_init()
    };
    let secs = |t: libc::timeval| t.tv_sec as f64 + t.tv_usec as f64 / 1e6;
    secs(usage.ru_utime) + secs(usage.ru_stime)
}

fn best(samples: &[f64]) -> f64 {
    samples.iter().copied().fold(f64::INFINITY, f64::min)
}

/// The median of guarded/plain over adjacent runs.
fn paired(plain: &[f64], guarded: &[f64]) -> f64 {
    let mut ratios: Vec<f64> = plain.iter().zip(guarded).map(|(p, g)| g / p).collect();
    ratios.sort_by(f64::total_cmp);
    ratios[ratios.len() / 2]
}

#[test]
#[ignore = "benchmark: cargo xtask bench (root, release)"]
fn kernel_guard_overhead() {
    require_root();
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .expect("runtime");
    let guard = KernelGuard::load().expect("load");
    // MCP_GUARD_BENCH_STATS=1: the kernel times every program run (while this fd is held),
    // which itself costs each run two clock reads: the ratios are then not the plain ones.
    let stats = std::env::var_os("MCP_GUARD_BENCH_STATS")
        .map(|_| aya::sys::enable_stats(aya::sys::Stats::RunTime).expect("enable BPF stats"));
    // MCP_GUARD_BENCH_NO_READER=1: nothing drains the ring buffer, so the guarded open loop
    // measures the kernel side alone (events past the buffer's capacity are counted as drops).
    let no_reader = std::env::var_os("MCP_GUARD_BENCH_NO_READER").is_some();
    let mut rx = rt.block_on(async { guard.events() }).expect("events");
    let scratch = kernel_common::TempDir::new("bench");
    let target = scratch.join("target");
    let target_str = target.display().to_string();
    let opens_seen = Arc::new(AtomicU64::new(0));
    let all_seen = Arc::new(AtomicU64::new(0));
    {
        let (opens, all) = (opens_seen.clone(), all_seen.clone());
        rt.spawn(async move {
            if no_reader {
                std::future::pending::<()>().await;
            }
            while let Some(ev) = rx.recv().await {
                all.fetch_add(1, Ordering::Relaxed);
                if matches!(&ev.kind, KernelEventKind::Open { path, .. } if *path == target_str) {
                    opens.fetch_add(1, Ordering::Relaxed);
                }
            }
        });
    }
    let port = listen("127.0.0.1:0");
    let plain = TestCgroup::new("bench-plain");
    let guarded = TestCgroup::new("bench-guarded");
    let _h = rt
        .block_on(guard.add_server(
            &guarded.dir,
            ServerSpec {
                server: "bench".into(),
                session: "b".into(),
                egress: vec![EgressRule {
                    dest: Destination::Net("127.0.0.1/32".parse().expect("net")),
                    port_lo: port,
                    port_hi: port,
                }],
                // About cost, not the Unix-socket promise (tests/tests/unix_sockets.rs): this
                // runs on kernels without connect_unix too.
                unix_optional: true,
                ..Default::default()
            },
        ))
        .expect("guard");

    let netprobe = env!("CARGO_BIN_EXE_netprobe");
    let connect_args = vec![format!("tcpn:{CONNECTS}:127.0.0.1:{port}")];
    let (mut c_plain, mut c_guarded) = (Vec::new(), Vec::new());
    for _ in 0..ROUNDS {
        c_plain.push(timed(&plain, netprobe, &connect_args));
        c_guarded.push(timed(&guarded, netprobe, &connect_args));
    }

    let opener = env!("CARGO_BIN_EXE_opener");
    std::fs::write(&target, "x").expect("bench file");
    let open_args = vec![
        "--loop".to_string(),
        OPENS.to_string(),
        target.display().to_string(),
    ];
    // Program run time (ns) summed over the tracing programs, per program.
    let prog_ns = || -> Vec<(&'static str, u128, u64)> {
        guard
            .trace_program_stats()
            .into_iter()
            .map(|(name, t, n)| (name, t.as_nanos(), n))
            .collect()
    };
    // Per loop: the programs' ns per open+close (sys_enter, sys_exit) and their runs per open.
    let mut kernel_ns: std::collections::BTreeMap<&str, Vec<(f64, f64, f64)>> =
        std::collections::BTreeMap::new();
    // Per loop: wall and the opening thread's CPU time, in seconds.
    let mut loop_secs = |cg: &TestCgroup, label: &'static str| -> (f64, f64) {
        let before = prog_ns();
        let out = lines(&cg.run(std::path::Path::new(opener), &open_args));
        let after = prog_ns();
        let per_open = |name: &str| -> (f64, f64) {
            let b = before
                .iter()
                .find(|p| p.0 == name)
                .map_or((0, 0), |p| (p.1, p.2));
            let a = after
                .iter()
                .find(|p| p.0 == name)
                .map_or((0, 0), |p| (p.1, p.2));
            (
                (a.0 - b.0) as f64 / OPENS as f64,
                (a.1 - b.1) as f64 / OPENS as f64,
            )
        };
        let (enter, runs_e) = per_open(mcp_guard_ebpf::programs::SYS_ENTER);
        let (exit, runs_x) = per_open(mcp_guard_ebpf::programs::SYS_EXIT);
        kernel_ns
            .entry(label)
            .or_default()
            .push((enter, exit, runs_e + runs_x));
        let ns = |i: usize| -> f64 { out[i].parse::<f64>().expect("opener's ns") / 1e9 };
        (ns(0), ns(1))
    };
    let drops_before: u64 = guard.dropped().expect("drops").values().sum();
    let (mut o_plain, mut o_guarded) = (Vec::new(), Vec::new());
    let (mut cpu_plain, mut cpu_guarded) = (Vec::new(), Vec::new());
    let mut throughput = Vec::new();
    // The reader's CPU time per delivered event: steadier than wall time on a shared machine.
    let mut reader_cpu = Vec::new();
    for _ in 0..ROUNDS {
        let (wall, cpu) = loop_secs(&plain, "unguarded");
        o_plain.push(wall);
        cpu_plain.push(cpu);
        let before = opens_seen.load(Ordering::Relaxed);
        let start = Instant::now();
        let cpu_before = own_cpu();
        let (wall, cpu) = loop_secs(&guarded, "guarded");
        o_guarded.push(wall);
        cpu_guarded.push(cpu);
        // Let the reader finish draining what the run produced.
        let expected = before + OPENS as u64;
        while !no_reader
            && opens_seen.load(Ordering::Relaxed) < expected
            && start.elapsed().as_secs() < 30
        {
            std::thread::sleep(std::time::Duration::from_millis(5));
        }
        let delivered = opens_seen.load(Ordering::Relaxed) - before;
        throughput.push((delivered, start.elapsed().as_secs_f64()));
        reader_cpu.push((own_cpu() - cpu_before) / delivered.max(1) as f64);
    }
    let drops: std::collections::BTreeMap<_, _> = guard.dropped().expect("drops");
    let drops_after: u64 = drops.values().sum();

    let (cp, cg) = (best(&c_plain), best(&c_guarded));
    let (op, og) = (best(&o_plain), best(&o_guarded));
    println!("connects: {CONNECTS} loopback TCP, best of {ROUNDS}");
    println!(
        "  unguarded {:.3}s ({:.1} us/connect), guarded {:.3}s ({:.1} us/connect), ratio {:.3} (paired median {:.3})",
        cp,
        cp * 1e6 / CONNECTS as f64,
        cg,
        cg * 1e6 / CONNECTS as f64,
        cg / cp,
        paired(&c_plain, &c_guarded)
    );
    println!("opens: {OPENS} openat+close, best of {ROUNDS}");
    println!(
        "  unguarded {:.3}s ({:.0} ns/open), guarded+events {:.3}s ({:.0} ns/open), ratio {:.3} (paired median {:.3})",
        op,
        op * 1e9 / OPENS as f64,
        og,
        og * 1e9 / OPENS as f64,
        og / op,
        paired(&o_plain, &o_guarded)
    );
    let (cpu_p, cpu_g) = (best(&cpu_plain), best(&cpu_guarded));
    println!(
        "  the opening thread's CPU time: unguarded {:.0} ns/open, guarded+events {:.0} ns/open, ratio {:.3} (paired median {:.3})",
        cpu_p * 1e9 / OPENS as f64,
        cpu_g * 1e9 / OPENS as f64,
        cpu_g / cpu_p,
        paired(&cpu_plain, &cpu_guarded)
    );
    for (label, runs) in kernel_ns.iter().filter(|_| stats.is_some()) {
        let shown: Vec<String> = runs
            .iter()
            .map(|(enter, exit, n)| format!("{enter:.0}+{exit:.0} ns ({n:.1} runs)"))
            .collect();
        println!(
            "  kernel: sys_enter+sys_exit programs per open+close, {label}: {}",
            shown.join(", ")
        );
    }
    let mut rates: Vec<f64> = throughput
        .iter()
        .map(|(n, secs)| *n as f64 / secs)
        .collect();
    rates.sort_by(f64::total_cmp);
    println!(
        "ring buffer: {} open events per run delivered (run start to last delivery) at \
         {:.0} / {:.0} / {:.0} events/s (min / median / max of {ROUNDS})",
        throughput.iter().map(|t| t.0).min().unwrap_or(0),
        rates[0],
        rates[rates.len() / 2],
        rates[rates.len() - 1]
    );
    reader_cpu.sort_by(f64::total_cmp);
    println!(
        "event reader CPU per delivered open event: {:.0} ns (min), {:.0} ns (median)",
        reader_cpu[0] * 1e9,
        reader_cpu[reader_cpu.len() / 2] * 1e9
    );
    println!(
        "drops during the open runs: {} ({drops:?}); events seen in total: {}",
        drops_after - drops_before,
        all_seen.load(Ordering::Relaxed)
    );
    record("kernel", "connect guarded/unguarded", cg / cp, "ratio");
    record("kernel", "open guarded+events/unguarded", og / op, "ratio");
    record(
        "kernel",
        "opener CPU guarded/unguarded",
        cpu_g / cpu_p,
        "ratio",
    );
    record(
        "kernel",
        "ring buffer median",
        rates[rates.len() / 2],
        "events/s",
    );
    record(
        "kernel",
        "event reader CPU per event, median",
        reader_cpu[reader_cpu.len() / 2] * 1e9,
        "ns",
    );
    let delivered: u64 = throughput.iter().map(|t| t.0).sum();
    assert!(
        no_reader || delivered + (drops_after - drops_before) >= (ROUNDS * OPENS) as u64,
        "every open event is delivered or counted as dropped"
    );
}
