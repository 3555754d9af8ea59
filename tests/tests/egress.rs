//! Egress enforcement on the real kernel: cgroup connect4/6 + sendmsg4/6 verdicts per server.
//!
//! Needs root. Each test makes its own cgroup(s) under the cgroup v2 mount and runs the
//! `netprobe` fixture inside, which reports `ok` or `errno N` per attempt.

mod kernel_common;

use std::{net::IpAddr, time::Duration};

use kernel_common::{
    EPERM, TempDir, TestCgroup, free_port, lines, listen, netprobe, run_outside, runtime,
};
use mcp_guard_kernel::{
    loader::{Destination, EgressRule, KernelGuard, ServerSpec},
    resolve::NameResolver,
};
use mcp_guard_model::KernelEventKind;
use mcp_guard_tests::require_root;

fn net(rule: &str, port: u16) -> EgressRule {
    EgressRule {
        dest: Destination::Net(rule.parse().expect("test network")),
        port_lo: port,
        port_hi: port,
    }
}

fn spec(egress: Vec<EgressRule>) -> ServerSpec {
    ServerSpec {
        server: "probe".into(),
        session: "s1".into(),
        egress,
        // About egress, not the Unix-socket promise (tests/tests/unix_sockets.rs): this
        // runs on kernels without connect_unix too.
        unix_optional: true,
        ..Default::default()
    }
}

fn probe(cgroup: Option<&TestCgroup>, args: &[String]) -> Vec<String> {
    let out = match cgroup {
        Some(cg) => cg.run(&netprobe(), args),
        None => run_outside(&netprobe(), args),
    };
    lines(&out)
}

/// A TCP listener on both 127.0.0.1 and `::1` with the same port.
fn listen_dual() -> u16 {
    for _ in 0..50 {
        let v4 = std::net::TcpListener::bind("127.0.0.1:0").expect("bind v4");
        let port = v4.local_addr().expect("addr").port();
        if let Ok(v6) = std::net::TcpListener::bind(("::1", port)) {
            for l in [v4, v6] {
                std::thread::spawn(move || {
                    for s in l.incoming() {
                        drop(s);
                    }
                });
            }
            return port;
        }
    }
    panic!("no port free on both 127.0.0.1 and ::1");
}

#[test]
fn foundation_object_loads_and_connect4_denies_inside_only() {
    require_root();
    let guard = KernelGuard::load().expect("the eBPF object loads and its tracepoints attach");
    let cg = TestCgroup::new("found");
    let port = listen("127.0.0.1:0");
    let _server = runtime()
        .block_on(guard.add_server(&cg.dir, spec(vec![])))
        .expect("guard the cgroup");
    let target = vec![format!("tcp:127.0.0.1:{port}")];
    assert_eq!(
        probe(Some(&cg), &target),
        [EPERM],
        "inside the guarded cgroup"
    );
    assert_eq!(probe(None, &target), ["ok"], "outside the cgroup");
}

#[test]
fn allowlist_by_address_port_family_and_mapped_v4() {
    require_root();
    let guard = KernelGuard::load().expect("load");
    let a = listen_dual();
    let b = listen("127.0.0.1:0");
    let rt = runtime();
    // v4only lists 127.0.0.1:A; dual also lists [::1]:A.
    let v4only = TestCgroup::new("v4only");
    let dual = TestCgroup::new("dual");
    let _h1 = rt
        .block_on(guard.add_server(&v4only.dir, spec(vec![net("127.0.0.1/32", a)])))
        .expect("guard v4only");
    let _h2 = rt
        .block_on(guard.add_server(
            &dual.dir,
            spec(vec![net("127.0.0.1/32", a), net("::1/128", a)]),
        ))
        .expect("guard dual");

    let args: Vec<String> = [
        format!("tcp:127.0.0.1:{a}"),
        format!("tcp:127.0.0.1:{b}"),
        format!("tcp:[::1]:{a}"),
        format!("tcp:[::ffff:127.0.0.1]:{a}"),
        format!("tcp:[::ffff:127.0.0.1]:{b}"),
        format!("udp:127.0.0.1:{b}"),
        format!("udp:127.0.0.1:{a}"),
        format!("udp:[::1]:{b}"),
    ]
    .into();
    assert_eq!(
        probe(Some(&v4only), &args),
        ["ok", EPERM, EPERM, "ok", EPERM, EPERM, "ok", EPERM],
        "v4-only allowlist: {args:?}"
    );
    assert_eq!(
        probe(Some(&dual), &args),
        ["ok", EPERM, "ok", "ok", EPERM, EPERM, "ok", EPERM],
        "allowlist with [::1]: {args:?}"
    );
    assert_eq!(
        probe(None, &args),
        ["ok"; 8],
        "a process outside the guarded cgroups is unaffected: {args:?}"
    );
}

#[test]
fn observe_mode_reports_but_does_not_deny() {
    require_root();
    let guard = KernelGuard::load().expect("load");
    let cg = TestCgroup::new("observe");
    let b = listen("127.0.0.1:0");
    let _h = runtime()
        .block_on(guard.add_server(
            &cg.dir,
            ServerSpec {
                observe: true,
                ..spec(vec![])
            },
        ))
        .expect("guard");
    assert_eq!(probe(Some(&cg), &[format!("tcp:127.0.0.1:{b}")]), ["ok"]);
}

#[test]
fn allowed_host_name_resolves_and_dns_reaches_only_the_resolvers() {
    require_root();
    let guard = KernelGuard::load().expect("load");
    let dir = TempDir::new("hosts");
    let hosts = dir.join("hosts");
    std::fs::write(&hosts, "127.0.0.1 guarded-service.test\n").expect("write hosts");
    let a = listen("127.0.0.1:0");
    let b = listen("127.0.0.1:0");
    let rt = runtime();
    let mut events = rt.block_on(async { guard.events() }).expect("event stream");
    let resolver = NameResolver::with_hosts_file(&hosts).expect("resolver");
    let nameserver: IpAddr = *resolver
        .nameservers()
        .first()
        .expect("/etc/resolv.conf names a resolver");
    let cg = TestCgroup::new("names");
    let _h = rt
        .block_on(guard.add_server_with(
            &cg.dir,
            spec(vec![EgressRule {
                dest: Destination::Host("guarded-service.test".into()),
                port_lo: a,
                port_hi: a,
            }]),
            Some(resolver),
        ))
        .expect("guard with a host name");
    let ns = match nameserver {
        IpAddr::V4(v4) => v4.to_string(),
        IpAddr::V6(v6) => format!("[{v6}]"),
    };
    let other_port = free_port();
    let args: Vec<String> = [
        format!("tcp:127.0.0.1:{a}"),
        format!("tcp:127.0.0.1:{b}"),
        format!("udp:{ns}:53"),
        format!("udp:{ns}:{other_port}"),
    ]
    .into();
    assert_eq!(
        probe(Some(&cg), &args),
        ["ok", EPERM, "ok", EPERM],
        "{args:?}"
    );

    let resolved = rt.block_on(async {
        tokio::time::timeout(Duration::from_secs(5), async {
            while let Some(ev) = events.recv().await {
                if let KernelEventKind::Resolve { name, addrs, .. } = ev.kind {
                    return Some((name, addrs));
                }
            }
            None
        })
        .await
    });
    let (name, addrs) = resolved
        .expect("a resolve event within 5s")
        .expect("event stream open");
    assert_eq!(name, "guarded-service.test");
    assert_eq!(addrs, vec!["127.0.0.1".parse::<IpAddr>().expect("addr")]);
}

/// Runs netprobe in the cgroup directory `dir` (a child of a test cgroup).
fn probe_in(dir: &std::path::Path, args: &[String]) -> Vec<String> {
    use std::os::{fd::AsRawFd as _, unix::process::CommandExt as _};
    let procs = std::fs::File::options()
        .write(true)
        .open(dir.join("cgroup.procs"))
        .expect("open cgroup.procs");
    let fd = procs.as_raw_fd();
    let mut cmd = std::process::Command::new(netprobe());
    // SAFETY: the hook only calls write(2) on an fd inherited from the parent: async-signal safe.
    unsafe {
        cmd.pre_exec(move || {
            if libc::write(fd, b"0".as_ptr().cast(), 1) != 1 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
    let out = cmd
        .args(args)
        .stdin(std::process::Stdio::null())
        .output()
        .expect("run netprobe");
    lines(&out)
}

/// A container runtime makes the container's cgroup below the guarded one: before mcp-guard
/// registers it (or if it never can), its connects are judged by the guarded ancestor's
/// allowlist in the kernel, never let through unjudged; registered as a member, the same.
#[test]
fn unregistered_child_cgroup_is_judged_by_its_guarded_ancestor() {
    require_root();
    let guard = KernelGuard::load().expect("load");
    let a = listen("127.0.0.1:0");
    let b = listen("127.0.0.1:0");
    let cg = TestCgroup::new("ancestor");
    let mut handle = runtime()
        .block_on(guard.add_server(&cg.dir, spec(vec![net("127.0.0.1/32", a)])))
        .expect("guard the parent");
    let leaf = cg.dir.join("leaf").join("deeper");
    std::fs::create_dir_all(&leaf).expect("child cgroups");
    let args = vec![format!("tcp:127.0.0.1:{a}"), format!("tcp:127.0.0.1:{b}")];
    assert_eq!(
        probe_in(&leaf, &args),
        ["ok", EPERM],
        "an unregistered descendant gets the parent's verdicts"
    );
    handle.add_member(&leaf).expect("register the leaf");
    assert_eq!(
        probe_in(&leaf, &args),
        ["ok", EPERM],
        "a registered member gets the server's verdicts"
    );
    drop(handle);
    std::fs::remove_dir(&leaf).expect("rmdir leaf");
    std::fs::remove_dir(cg.dir.join("leaf")).expect("rmdir leaf parent");
}
