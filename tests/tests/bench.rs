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
//! - the DNS capture programs (`cgroup_skb`, on every session's cgroup): TCP and UDP round trips
//!   and TCP throughput to a loopback peer (not DNS: the programs return at once) and DNS
//!   lookups per second (copied to the ring buffer and parsed), in one guarded cgroup with the
//!   two programs attached and detached in turn.
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
use mcp_guard_kernel::loader::{Destination, EgressRule, KernelGuard, ServerSpec, cgroup_id};
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

/// The benchmarks' runtime: one worker, for the event reader.
fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .expect("runtime")
}

/// With `MCP_GUARD_BENCH_STATS=1`, the kernel times every program run while the returned fd is
/// held. That costs each run two clock reads: the ratios are then not the plain ones.
fn kernel_stats() -> Option<std::os::fd::OwnedFd> {
    std::env::var_os("MCP_GUARD_BENCH_STATS")
        .map(|_| aya::sys::enable_stats(aya::sys::Stats::RunTime).expect("enable BPF stats"))
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
    let rt = runtime();
    let guard = KernelGuard::load().expect("load");
    let stats = kernel_stats();
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

const ROUND_TRIPS: usize = 20_000;
const STREAM_MIB: usize = 256;
const LOOKUPS: usize = 5_000;
/// The DNS responder of this benchmark (its own address: no test uses 127.0.75.0/24).
const BENCH_RESOLVER: std::net::Ipv4Addr = std::net::Ipv4Addr::new(127, 0, 75, 53);

/// A loopback TCP peer serving each connection in a thread of its own with `serve`; its port.
fn tcp_peer(serve: fn(std::net::TcpStream)) -> u16 {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let port = listener.local_addr().expect("addr").port();
    std::thread::spawn(move || {
        for stream in listener.incoming().flatten() {
            std::thread::spawn(move || serve(stream));
        }
    });
    port
}

/// The echo peer of `netload tcprr`.
fn echo(mut stream: std::net::TcpStream) {
    use std::io::{Read as _, Write as _};
    let _ = stream.set_nodelay(true);
    let mut buf = [0u8; 4096];
    while let Ok(n @ 1..) = stream.read(&mut buf) {
        if stream.write_all(&buf[..n]).is_err() {
            break;
        }
    }
}

/// The sink of `netload tcpstream`: reads to the end, then closes.
fn sink(mut stream: std::net::TcpStream) {
    let _ = std::io::copy(&mut stream, &mut std::io::sink());
}

/// A UDP echo peer for `netload udprr`; its port.
fn udp_echo() -> u16 {
    let socket = std::net::UdpSocket::bind("127.0.0.1:0").expect("bind");
    let port = socket.local_addr().expect("addr").port();
    std::thread::spawn(move || {
        let mut buf = [0u8; 2048];
        while let Ok((n, from)) = socket.recv_from(&mut buf) {
            let _ = socket.send_to(&buf[..n], from);
        }
    });
    port
}

/// An A record for whatever is asked.
fn answer_any(query: &hickory_proto::op::Message) -> Vec<Vec<u8>> {
    use mcp_guard_tests::dns::{a_record, answer_to};
    let mut answer = answer_to(query);
    if let Some(q) = query.queries().first() {
        let asked = q.name().to_ascii();
        answer.add_answer(a_record(
            asked.trim_end_matches('.'),
            std::net::Ipv4Addr::new(127, 0, 75, 10),
        ));
    }
    answer.to_vec().map(|a| vec![a]).unwrap_or_default()
}

/// The two DNS capture programs, loaded from the guard's pins, attached to one cgroup at will.
struct DnsCapture {
    cgroup: std::fs::File,
    programs: Vec<(
        aya::programs::CgroupSkb,
        aya::programs::CgroupSkbAttachType,
        Option<aya::programs::cgroup_skb::CgroupSkbLinkId>,
    )>,
}

impl DnsCapture {
    /// Takes over the capture programs the guard attached to `cgroup` (their links were pinned
    /// below `pins`, the guard's object directory, and go when the pins go): detached after this.
    fn take_over(pins: &std::path::Path, cgroup: &std::path::Path) -> DnsCapture {
        use aya::programs::{CgroupSkb, CgroupSkbAttachType};
        use mcp_guard_ebpf::programs::{DNS_EGRESS, DNS_INGRESS};
        let id = cgroup_id(cgroup).expect("cgroup id");
        let links = pins.join("cgroups").join(id.to_string());
        let mut programs = Vec::new();
        for (name, ty) in [
            (DNS_EGRESS, CgroupSkbAttachType::Egress),
            (DNS_INGRESS, CgroupSkbAttachType::Ingress),
        ] {
            let link = links.join(name);
            std::fs::remove_file(&link)
                .unwrap_or_else(|e| panic!("the guard pinned no {}: {e}", link.display()));
            let prog = CgroupSkb::from_pin(pins.join(format!("prog_{name}")), ty)
                .unwrap_or_else(|e| panic!("the pinned {name}: {e}"));
            programs.push((prog, ty, None));
        }
        DnsCapture {
            cgroup: std::fs::File::open(cgroup).expect("open the cgroup"),
            programs,
        }
    }

    /// Run time and runs of both programs so far (counted only while BPF stats are on).
    fn stats(&self) -> (u128, u64) {
        self.programs
            .iter()
            .filter_map(|(prog, _, _)| prog.info().ok())
            .fold((0, 0), |(t, n), info| {
                (t + info.run_time().as_nanos(), n + info.run_count())
            })
    }

    fn set(&mut self, on: bool) {
        for (prog, ty, link) in &mut self.programs {
            match (on, link.take()) {
                (true, None) => {
                    *link = Some(
                        prog.attach(&self.cgroup, *ty, aya::programs::CgroupAttachMode::Single)
                            .expect("attach a DNS program"),
                    );
                }
                (false, Some(id)) => prog.detach(id).expect("detach a DNS program"),
                (_, kept) => *link = kept,
            }
        }
    }
}

/// The DNS capture programs' per-packet price: every session's cgroup carries them, and they
/// see every packet of the server, DNS or not.
#[test]
#[ignore = "benchmark: cargo xtask bench (root, release)"]
fn dns_capture_overhead() {
    require_root();
    let rt = runtime();
    // Pinned, as the agent does: the programs and each cgroup's links are files there.
    let stats = kernel_stats();
    let base = mcp_guard_tests::agent::PinDir::new("bench-dns");
    let guard = KernelGuard::load_pinned(&base.0).expect("load");
    let mut rx = rt.block_on(async { guard.events() }).expect("events");
    let dns_seen = Arc::new(AtomicU64::new(0));
    {
        let seen = dns_seen.clone();
        rt.spawn(async move {
            while let Some(ev) = rx.recv().await {
                if matches!(ev.kind, KernelEventKind::Dns(_)) {
                    seen.fetch_add(1, Ordering::Relaxed);
                }
            }
        });
    }
    let cg = TestCgroup::new("bench-dns");
    let _h = rt
        .block_on(guard.add_server(
            &cg.dir,
            ServerSpec {
                server: "bench-dns".into(),
                session: "d".into(),
                egress: vec![EgressRule {
                    dest: Destination::Net("127.0.0.0/8".parse().expect("net")),
                    port_lo: 1,
                    port_hi: u16::MAX,
                }],
                unix_optional: true,
                ..Default::default()
            },
        ))
        .expect("guard");
    let objects: Vec<std::path::PathBuf> = std::fs::read_dir(&base.0)
        .expect("pin dir")
        .flatten()
        .map(|e| e.path())
        .collect();
    let [pins] = objects.as_slice() else {
        panic!("one object directory in {}: {objects:?}", base.0.display());
    };
    let mut capture = DnsCapture::take_over(pins, &cg.dir);
    let _responder = mcp_guard_tests::dns::Responder::start(BENCH_RESOLVER, answer_any);

    let netload = env!("CARGO_BIN_EXE_netload");
    let loads: [(&str, usize, String); 4] = [
        (
            "tcprr",
            ROUND_TRIPS,
            format!("127.0.0.1:{}", tcp_peer(echo)),
        ),
        ("udprr", ROUND_TRIPS, format!("127.0.0.1:{}", udp_echo())),
        (
            "tcpstream",
            STREAM_MIB,
            format!("127.0.0.1:{}", tcp_peer(sink)),
        ),
        ("dns", LOOKUPS, format!("{BENCH_RESOLVER}:53")),
    ];
    let secs = |mode: &str, count: usize, addr: &str| -> f64 {
        let out = lines(&cg.run(
            std::path::Path::new(netload),
            &[mode.to_string(), count.to_string(), addr.to_string()],
        ));
        out[0].parse::<f64>().expect("netload's ns") / 1e9
    };
    // Per load: (without, with) seconds per round, alternating; which goes first alternates too.
    let mut runs: Vec<(Vec<f64>, Vec<f64>)> = vec![(Vec::new(), Vec::new()); loads.len()];
    let mut dns_events = (0u64, 0u64);
    // Per load, attached runs only: the programs' run time (ns) and runs.
    let mut kernel: Vec<(u128, u64)> = vec![(0, 0); loads.len()];
    for round in 0..ROUNDS {
        for (i, (mode, count, addr)) in loads.iter().enumerate() {
            for on in [round % 2 == 1, round % 2 == 0] {
                capture.set(on);
                let before = dns_seen.load(Ordering::Relaxed);
                let (t0, n0) = capture.stats();
                let t = secs(mode, *count, addr);
                let (t1, n1) = capture.stats();
                kernel[i].0 += t1 - t0;
                kernel[i].1 += n1 - n0;
                if *mode == "dns" {
                    // Let the reader catch up, then count what this run produced.
                    let start = Instant::now();
                    while on
                        && dns_seen.load(Ordering::Relaxed) < before + 2 * *count as u64
                        && start.elapsed().as_secs() < 10
                    {
                        std::thread::sleep(std::time::Duration::from_millis(5));
                    }
                    let n = dns_seen.load(Ordering::Relaxed) - before;
                    if on {
                        dns_events.1 += n;
                    } else {
                        dns_events.0 += n;
                    }
                }
                if on {
                    runs[i].1.push(t);
                } else {
                    runs[i].0.push(t);
                }
            }
        }
    }
    capture.set(false);

    println!("DNS capture programs, detached vs attached, best of {ROUNDS} (paired median ratio)");
    for ((mode, count, _), (off, on)) in loads.iter().zip(&runs) {
        let (b_off, b_on) = (best(off), best(on));
        let ratio = paired(off, on);
        let (unit, rate) = match *mode {
            "tcpstream" => ("MiB/s", true),
            "dns" => ("lookups/s", true),
            _ => ("us/round trip", false),
        };
        let per = |n: f64, s: f64| if rate { n / s } else { s * 1e6 / n };
        let n = *count as f64;
        println!(
            "  {mode}: detached {:.2} {unit}, attached {:.2} {unit}; time ratio {:.3} (paired median {ratio:.3})",
            per(n, b_off),
            per(n, b_on),
            b_on / b_off,
        );
        record(
            "dns_capture",
            &format!("{mode} attached/detached time"),
            ratio,
            "ratio",
        );
        record(
            "dns_capture",
            &format!("{mode} detached"),
            per(n, b_off),
            unit,
        );
        record(
            "dns_capture",
            &format!("{mode} attached"),
            per(n, b_on),
            unit,
        );
    }
    for ((mode, count, _), (ns, n)) in loads.iter().zip(&kernel).filter(|_| stats.is_some()) {
        println!(
            "  kernel, {mode}: {:.0} ns per program run, {:.2} runs per unit ({n} runs)",
            *ns as f64 / (*n).max(1) as f64,
            *n as f64 / (ROUNDS * count) as f64
        );
        record(
            "dns_capture",
            &format!("{mode} kernel ns per run"),
            *ns as f64 / (*n).max(1) as f64,
            "ns",
        );
    }
    println!(
        "  DNS events read: {} with the programs attached, {} detached ({} lookups each way)",
        dns_events.1,
        dns_events.0,
        ROUNDS * LOOKUPS
    );
    // The switch worked: detached, nothing was captured; attached, the lookups were.
    assert_eq!(dns_events.0, 0, "captured while detached");
    assert!(dns_events.1 > 0, "nothing captured while attached");
}
