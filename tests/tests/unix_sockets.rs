//! Unix sockets from inside the jail, tried the way a hostile server would: connect to the
//! agent's socket, to a root-owned listener (mode 0777, so only the jail's rules stop it), to
//! podman's API socket and to an abstract socket; a datagram to a socket it was not given; and
//! `mcp-guard exec` run from inside a guarded server, through the agent. Each is refused, by
//! the layer named in the assertion, and what the kernel judged is in `mcp-guard events` with
//! its path and verdict and in the agent's metrics; the sockets `[network] unix` lists work.
//!
//! Three layers, each asserted on its own: the cgroup `connect_unix`/`sendmsg_unix` programs
//! (EPERM, recorded), the jail's own /run, /var/run, /dev/shm and /tmp (the path does not
//! exist: ENOENT), and the agent's refusal of a peer in a guarded cgroup. Needs root.

use std::{
    os::unix::{
        fs::PermissionsExt as _,
        net::{UnixDatagram, UnixListener},
    },
    path::{Path, PathBuf},
    process::{Command, Output, Stdio},
    sync::{
        Arc,
        atomic::{AtomicUsize, Ordering},
    },
    time::{Duration, Instant},
};

use mcp_guard_tests::{
    agent::{Agent, PinDir},
    describe, mcp_guard, podman_engine, prom, require_root, scratch_root, workspace_bin,
};

const EPERM: &str = "errno 1";
const ENOENT: &str = "errno 2";
const PODMAN: &str = "/run/podman/podman.sock";

/// The test's sockets and dirs: some in its own directory under /run (which the jail replaces),
/// some in a scratch directory the jail leaves as it is.
struct World {
    name: String,
    /// Scratch: agent, policy, a listener outside the hidden directories.
    dir: PathBuf,
    /// `/run/mcp-guard-unix-<test>-<pid>`.
    run: PathBuf,
    /// How many connections each stream listener accepted, by file name.
    accepted: Vec<(String, Arc<AtomicUsize>)>,
    /// Datagram receivers, kept open.
    dgram: Vec<UnixDatagram>,
}

impl World {
    fn new(test: &str) -> World {
        let name = format!("{test}-{}", std::process::id());
        let dir = scratch_root().join("unix-sockets").join(&name);
        let run = PathBuf::from(format!("/run/mcp-guard-unix-{name}"));
        for d in [&dir, &run] {
            let _ = std::fs::remove_dir_all(d);
            std::fs::create_dir_all(d).expect("test dir");
            std::fs::set_permissions(d, std::fs::Permissions::from_mode(0o755)).expect("chmod");
        }
        World {
            name,
            dir,
            run,
            accepted: Vec::new(),
            dgram: Vec::new(),
        }
    }

    /// A root-owned stream listener anyone may connect to (mode 0777); `@name` is abstract.
    fn listen(&mut self, at: &str) -> String {
        use std::os::linux::net::SocketAddrExt as _;
        let listener = if let Some(name) = at.strip_prefix('@') {
            UnixListener::bind_addr(
                &std::os::unix::net::SocketAddr::from_abstract_name(name).expect("abstract name"),
            )
        } else {
            let l = UnixListener::bind(at);
            std::fs::set_permissions(at, std::fs::Permissions::from_mode(0o777))
                .expect("chmod socket");
            l
        }
        .unwrap_or_else(|e| panic!("listen on {at}: {e}"));
        let count = Arc::new(AtomicUsize::new(0));
        let seen = count.clone();
        std::thread::spawn(move || {
            for conn in listener.incoming() {
                seen.fetch_add(1, Ordering::SeqCst);
                drop(conn);
            }
        });
        self.accepted.push((at.to_string(), count));
        at.to_string()
    }

    /// A root-owned datagram socket anyone may send to; `@name` is abstract.
    fn receive(&mut self, at: &str) -> String {
        use std::os::linux::net::SocketAddrExt as _;
        let sock = match at.strip_prefix('@') {
            Some(name) => UnixDatagram::bind_addr(
                &std::os::unix::net::SocketAddr::from_abstract_name(name).expect("abstract name"),
            ),
            None => UnixDatagram::bind(at),
        }
        .unwrap_or_else(|e| panic!("bind {at}: {e}"));
        if !at.starts_with('@') {
            std::fs::set_permissions(at, std::fs::Permissions::from_mode(0o777)).expect("chmod");
        }
        self.dgram.push(sock);
        at.to_string()
    }

    fn accepted(&self, at: &str) -> usize {
        self.accepted
            .iter()
            .find(|(a, _)| a == at)
            .map_or(0, |(_, n)| n.load(Ordering::SeqCst))
    }

    fn in_run(&self, file: &str) -> String {
        self.run.join(file).display().to_string()
    }

    fn abstract_name(&self, what: &str) -> String {
        format!("@mcp-guard-test-{}-{what}", self.name)
    }

    /// A policy for the netprobe fixture (and mcp-guard itself) as root, with `unix` listed.
    fn policy(&self, unix: &[&str], extra_read: &[&Path]) -> PathBuf {
        self.policy_allowing(unix, extra_read, &[])
    }

    /// [`World::policy`] with `[network] allow` entries: the server keeps the host's network.
    fn policy_allowing(&self, unix: &[&str], extra_read: &[&Path], allow: &[String]) -> PathBuf {
        let bindir = workspace_bin("netprobe")
            .parent()
            .expect("bin dir")
            .display()
            .to_string();
        let list = |v: &[String]| {
            v.iter()
                .map(|s| format!("{s:?}"))
                .collect::<Vec<_>>()
                .join(", ")
        };
        let unix: Vec<String> = unix.iter().map(std::string::ToString::to_string).collect();
        let mut read: Vec<String> = ["/usr", "/lib", "/lib64", "/bin", "/etc", "/proc"]
            .iter()
            .map(std::string::ToString::to_string)
            .collect();
        read.push(bindir.clone());
        read.extend(extra_read.iter().map(|p| p.display().to_string()));
        let path = self.dir.join("policy.toml");
        std::fs::write(
            &path,
            format!(
                "name = \"unix-probe\"\nuser = \"root\"\n[filesystem]\nread = [{}]\nwrite = \
                 [\"/tmp\", \"/dev/null\"]\nexec = [\"/usr\", \"/lib\", \"/lib64\", \"/bin\", \
                 {bindir:?}]\n[network]\nunix = [{}]\nallow = [{}]\n",
                list(&read),
                list(&unix),
                list(allow)
            ),
        )
        .expect("write policy");
        path
    }
}

impl Drop for World {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.run);
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// The netprobe fixture's report lines.
fn lines(out: &Output) -> Vec<String> {
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(str::to_string)
        .collect()
}

/// Runs netprobe with `probes` in the jail through `agent` (as root, with a policy file).
fn probe_via_agent(agent: &Agent, policy: &Path, probes: &[String]) -> Output {
    let netprobe = workspace_bin("netprobe");
    let mut args = vec![
        "--passthrough".to_string(),
        "--policy".into(),
        policy.display().to_string(),
        "--".into(),
        netprobe.display().to_string(),
    ];
    args.extend(probes.iter().cloned());
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    agent
        .exec(&mcp_guard(), 0, &args)
        .stdin(Stdio::null())
        .output()
        .expect("run exec through the agent")
}

fn events_json(state: &Path) -> Vec<serde_json::Value> {
    let out = Command::new(mcp_guard())
        .arg("--state-dir")
        .arg(state)
        .args(["events", "--server", "unix-probe", "--json"])
        .output()
        .expect("mcp-guard events");
    assert!(out.status.success(), "{}", describe(&out));
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter(|l| !l.trim().is_empty())
        .map(|l| serde_json::from_str(l).expect("a JSON line"))
        .collect()
}

/// Waits until the store has an event of `kind` for `path` with `verdict`; all events so far.
fn wait_event(state: &Path, kind: &str, path: &str, verdict: &str) -> Vec<serde_json::Value> {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let events = events_json(state);
        if events
            .iter()
            .any(|e| e["kind"] == kind && e["path"] == path && e["verdict"] == verdict)
        {
            return events;
        }
        assert!(
            Instant::now() < deadline,
            "no {kind} event for {path} with verdict {verdict}:\n{events:#?}"
        );
        std::thread::sleep(Duration::from_millis(200));
    }
}

/// Waits until one series of the agent's /metrics reaches `min` (the agent counts what its
/// store tail reads, a moment after the events are stored).
fn wait_metric(agent: &Agent, series: &str, min: f64) {
    let within = Duration::from_secs(10);
    prom::wait_metric(&agent.addr, series, within, |v| v >= min, || agent.log());
}

#[test]
fn a_jailed_server_reaches_only_the_unix_sockets_its_policy_lists() {
    require_root();
    podman_engine();
    let mut w = World::new("reach");
    let pins = PinDir::new("unix-reach");
    let agent = Agent::start(&w.dir.join("agent"), &pins, "");
    let agent_sock = agent.socket.display().to_string();
    let root_sock = w.listen(&w.in_run("root.sock"));
    let outside_sock = w.listen(&w.dir.join("outside.sock").display().to_string());
    let listed_sock = w.listen(&w.in_run("listed.sock"));
    let abstract_unlisted = w.listen(&w.abstract_name("unlisted"));
    let abstract_listed = w.listen(&w.abstract_name("listed"));
    let dg_listed = w.receive(&w.in_run("dg-listed.sock"));
    let dg_unlisted = w.receive(&w.in_run("dg-unlisted.sock"));
    // /etc/resolv.conf on a systemd-resolved host: a granted path that is a symlink into /run.
    std::fs::create_dir_all(w.run.join("resolve")).expect("mkdir");
    std::fs::write(w.run.join("resolve/stub.conf"), "nameserver 127.0.0.53\n").expect("write");
    let resolv = w.dir.join("resolv.conf");
    std::os::unix::fs::symlink(w.run.join("resolve/stub.conf"), &resolv).expect("symlink");
    let policy = w.policy(
        &[&listed_sock, &abstract_listed, &dg_listed],
        &[resolv.as_path()],
    );
    let var_run = format!(
        "/var/run/{}",
        w.run.file_name().expect("name").to_string_lossy()
    );

    let probes = [
        // Refused by the kernel programs, wherever the socket is.
        format!("unix:{root_sock}"),
        format!("unix:{outside_sock}"),
        format!("unix:{agent_sock}"),
        format!("unix:{PODMAN}"),
        format!("unix:{abstract_unlisted}"),
        format!("unixdg:{dg_unlisted}"),
        // Listed: they work.
        format!("unix:{listed_sock}"),
        format!("unix:{abstract_listed}"),
        format!("unixdg:{dg_listed}"),
        // The jail's own /run: what is not listed or granted is not there at all.
        format!("stat:{root_sock}"),
        format!("stat:{var_run}/root.sock"),
        format!("stat:{PODMAN}"),
        format!("stat:{listed_sock}"),
        format!("stat:{}", resolv.display()),
    ];
    let out = probe_via_agent(&agent, &policy, &probes);
    let want = [
        EPERM, EPERM, EPERM, EPERM, EPERM, EPERM, "ok", "ok", "ok", ENOENT, ENOENT, ENOENT, "ok",
        "ok",
    ];
    assert_eq!(
        lines(&out),
        want,
        "probes {probes:#?}\n{}\nagent:\n{}",
        describe(&out),
        agent.log()
    );
    for refused in [&root_sock, &outside_sock, &abstract_unlisted] {
        assert_eq!(w.accepted(refused), 0, "{refused} saw a connection");
    }
    assert_eq!(w.accepted(&listed_sock), 1);
    assert_eq!(w.accepted(&abstract_listed), 1);
    let mut buf = [0u8; 16];
    w.dgram[0]
        .set_read_timeout(Some(Duration::from_secs(5)))
        .expect("timeout");
    assert_eq!(w.dgram[0].recv(&mut buf).expect("the listed datagram"), 5);

    // Every attempt is in the event stream with its path and verdict.
    let state = &agent.state;
    let mut events = Vec::new();
    for (kind, path, verdict) in [
        ("connect", root_sock.as_str(), "denied"),
        ("connect", outside_sock.as_str(), "denied"),
        ("connect", agent_sock.as_str(), "denied"),
        ("connect", PODMAN, "denied"),
        ("connect", abstract_unlisted.as_str(), "denied"),
        ("sendmsg", dg_unlisted.as_str(), "denied"),
        ("connect", listed_sock.as_str(), "allowed"),
        ("connect", abstract_listed.as_str(), "allowed"),
        ("sendmsg", dg_listed.as_str(), "allowed"),
    ] {
        events = wait_event(state, kind, path, verdict);
    }
    assert!(
        events
            .iter()
            .filter(|e| e["path"] == root_sock.as_str())
            .all(|e| e["addr"].is_null() && e["call_id"].is_null()),
        "{events:#?}"
    );
    // And counted.
    let series = |kind: &str, verdict: &str| {
        format!(
            "mcp_guard_kernel_events_total{{kind=\"{kind}\",server=\"unix-probe\",verdict=\"{verdict}\"}}"
        )
    };
    wait_metric(&agent, &series("connect", "denied"), 5.0);
    wait_metric(&agent, &series("connect", "allowed"), 2.0);
    wait_metric(&agent, &series("sendmsg", "denied"), 1.0);
    wait_metric(&agent, &series("sendmsg", "allowed"), 1.0);
}

#[test]
fn the_agent_refuses_a_client_inside_a_guarded_cgroup() {
    require_root();
    let w = World::new("peer");
    let pins = PinDir::new("unix-peer");
    let agent = Agent::start(&w.dir.join("agent"), &pins, "");
    let agent_sock = agent.socket.display().to_string();
    // The agent's socket is listed, so neither the kernel programs nor the mount view stop the
    // connect: only the agent's look at who is calling does.
    let policy = w.policy(&[&agent_sock], &[]);
    let inner = [
        "--agent-socket".to_string(),
        agent_sock.clone(),
        "--passthrough".into(),
        "--".into(),
        "/bin/true".into(),
    ];
    let mut args = vec![
        "--passthrough".to_string(),
        "--policy".into(),
        policy.display().to_string(),
        "--".into(),
        mcp_guard().display().to_string(),
        "exec".into(),
    ];
    args.extend(inner);
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let out = agent
        .exec(&mcp_guard(), 0, &args)
        .stdin(Stdio::null())
        .output()
        .expect("run exec through the agent");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(77), "{}", describe(&out));
    assert!(
        stderr.contains("a guarded server cannot use the agent"),
        "{}",
        describe(&out)
    );
    assert!(
        agent.log().contains("refused: process"),
        "agent log:\n{}",
        agent.log()
    );
    // The connect itself was let through (listed) and recorded.
    wait_event(&agent.state, "connect", &agent_sock, "allowed");
}

#[test]
fn standalone_exec_enforces_too_and_observe_only_reports() {
    require_root();
    let mut w = World::new("standalone");
    let root_sock = w.listen(&w.in_run("root.sock"));
    let listed_sock = w.listen(&w.in_run("listed.sock"));
    let policy = w.policy(&[&listed_sock], &[]);
    let state = w.dir.join("state");
    let run = |observe: bool| {
        let mut cmd = Command::new(mcp_guard());
        cmd.arg("--state-dir")
            .arg(&state)
            .args(["exec", "--standalone", "--passthrough", "--policy"])
            .arg(&policy);
        if observe {
            cmd.arg("--observe");
        }
        cmd.arg("--")
            .arg(workspace_bin("netprobe"))
            .arg(format!("unix:{root_sock}"))
            .arg(format!("unix:{listed_sock}"))
            .stdin(Stdio::null())
            .output()
            .expect("run exec")
    };
    let out = run(false);
    assert_eq!(lines(&out), [EPERM, "ok"], "{}", describe(&out));
    wait_event(&state, "connect", &root_sock, "denied");
    wait_event(&state, "connect", &listed_sock, "allowed");
    assert_eq!(w.accepted(&root_sock), 0);
    // Under --observe the same connect goes through, and is reported as one the policy would
    // have denied: the enforced run could have failed.
    let out = run(true);
    assert_eq!(lines(&out), ["ok", "ok"], "{}", describe(&out));
    let events = events_json(&state);
    assert!(
        events.iter().any(|e| e["path"] == root_sock.as_str()
            && e["verdict"] == "allowed"
            && e["would_deny"] == true),
        "{events:#?}"
    );
    assert_eq!(w.accepted(&root_sock), 1);
}

/// The promise itself, on whatever kernel this is: a hostile server's connect to a root-owned
/// socket under /run and to an abstract socket, neither listed, reaches nothing, and the
/// listed socket works. Where the cgroup unix programs run (Linux 6.7+) they refuse (EPERM);
/// where they do not, `mcp-guard doctor` names what keeps each promise instead (the jail's own
/// /run: the path is not there, ENOENT; its network namespace, for a policy without egress:
/// the abstract name is not there, ECONNREFUSED).
#[test]
fn unlisted_sockets_are_out_of_reach_by_whatever_this_kernel_has() {
    require_root();
    let mut w = World::new("reach-any");
    let root_sock = w.listen(&w.in_run("root.sock"));
    let abstract_unlisted = w.listen(&w.abstract_name("unlisted"));
    let listed_sock = w.listen(&w.in_run("listed.sock"));
    let policy = w.policy(&[&listed_sock], &[]);
    let doctor = Command::new(mcp_guard())
        .args(["doctor", "--json"])
        .output()
        .expect("mcp-guard doctor --json");
    let report: Vec<serde_json::Value> = String::from_utf8_lossy(&doctor.stdout)
        .lines()
        .filter_map(|l| serde_json::from_str(l).ok())
        .collect();
    let line = |key: &str, name: &str| {
        report
            .iter()
            .find(|v| v[key] == name)
            .unwrap_or_else(|| panic!("doctor reports {key} {name}: {report:#?}"))
            .clone()
    };
    let programs = line("capability", "cgroup_unix")["status"] == "available";
    let kept_by = |promise: &str| line("promise", promise)["without_egress"]["mechanism"].clone();
    let expected = if programs {
        assert_eq!(kept_by("unix_pathname"), "cgroup_unix");
        assert_eq!(kept_by("unix_abstract"), "cgroup_unix");
        [EPERM, EPERM, "ok"]
    } else {
        // doctor's table is for a policy that lists no sockets (the seccomp rule); this one
        // lists a socket, so the mount view keeps the pathname promise for it.
        assert_eq!(kept_by("unix_pathname"), "seccomp_unix");
        assert_eq!(kept_by("unix_abstract"), "net_namespace");
        [ENOENT, "errno 111", "ok"]
    };
    let out = Command::new(mcp_guard())
        .arg("--state-dir")
        .arg(w.dir.join("state"))
        .args(["exec", "--standalone", "--passthrough", "--policy"])
        .arg(&policy)
        .arg("--")
        .arg(workspace_bin("netprobe"))
        .arg(format!("unix:{root_sock}"))
        .arg(format!("unix:{abstract_unlisted}"))
        .arg(format!("unix:{listed_sock}"))
        .stdin(Stdio::null())
        .output()
        .expect("run exec");
    assert_eq!(lines(&out), expected, "{}", describe(&out));
    assert_eq!(w.accepted(&root_sock), 0);
    assert_eq!(w.accepted(&abstract_unlisted), 0);
}

/// A server without egress that lists no Unix sockets, reading a directory that holds a host
/// process's socket (a gpg or ssh agent under the user's home, say): the jail's mount view
/// hides only its own /run, /tmp and /dev/shm, so on a kernel without the cgroup unix programs
/// (6.1) the connect used to get through. The programs (Linux 6.7+) or the seccomp rule refuse
/// it now; a named socket in the read set is as out of reach as an abstract one.
#[test]
fn a_server_listing_no_unix_sockets_reaches_none_in_its_read_set() {
    require_root();
    let mut w = World::new("read-set");
    let readable = w.listen(&w.dir.join("agent.sock").display().to_string());
    let dir = w.dir.clone();
    let policy = w.policy(&[], &[&dir]);
    let out = Command::new(mcp_guard())
        .arg("--state-dir")
        .arg(w.dir.join("state"))
        .args(["exec", "--standalone", "--passthrough", "--policy"])
        .arg(&policy)
        .arg("--")
        .arg(workspace_bin("netprobe"))
        .arg(format!("unix:{readable}"))
        .stdin(Stdio::null())
        .output()
        .expect("run exec");
    assert_eq!(lines(&out), [EPERM], "{}", describe(&out));
    assert_eq!(w.accepted(&readable), 0);
}

/// A server with egress shares the host's network namespace, where a host process listens on
/// abstract Unix sockets (a desktop's X11 and D-Bus, systemd's): the hostile server tries them
/// every way it can — a stream connect, a datagram, a socket elsewhere on disk, and a
/// `socketpair` re-pointed at the name — and reaches none, while its allowed TCP egress works.
/// Where the cgroup unix programs run (Linux 6.7+) they refuse; where neither they nor
/// landlock's scopes exist (6.1), a network namespace would cut the egress, and the jail's
/// seccomp rule takes Unix sockets away instead (its policy lists none). Before that rule, the
/// launch was refused there (exit 77, `promise unix_abstract`).
#[test]
fn an_egress_server_listing_no_unix_sockets_reaches_none_of_the_host_s() {
    require_root();
    let mut w = World::new("egress-none");
    let stream = w.listen(&w.abstract_name("stream"));
    let dgram = w.receive(&w.abstract_name("dgram"));
    let outside = w.listen(&w.dir.join("outside.sock").display().to_string());
    let tcp = std::net::TcpListener::bind("127.0.0.1:0").expect("listen");
    let port = tcp.local_addr().expect("addr").port();
    let policy = w.policy_allowing(&[], &[], &[format!("127.0.0.1:{port}")]);
    let doctor = Command::new(mcp_guard())
        .args(["doctor", "--json"])
        .output()
        .expect("mcp-guard doctor --json");
    let kept_by = String::from_utf8_lossy(&doctor.stdout)
        .lines()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .find(|v| v["promise"] == "unix_abstract")
        .map_or_else(
            || panic!("doctor reports unix_abstract\n{}", describe(&doctor)),
            |v| v["with_egress"]["mechanism"].clone(),
        );
    assert!(
        kept_by == "cgroup_unix" || kept_by == "seccomp_unix",
        "unix_abstract with egress kept by {kept_by}"
    );
    let out = Command::new(mcp_guard())
        .arg("--state-dir")
        .arg(w.dir.join("state"))
        .args(["exec", "--standalone", "--passthrough", "--policy"])
        .arg(&policy)
        .arg("--")
        .arg(workspace_bin("netprobe"))
        .arg(format!("unix:{stream}"))
        .arg(format!("unixdg:{dgram}"))
        .arg(format!("unix:{outside}"))
        .arg(format!("pairconnect:stream:{stream}"))
        .arg(format!("pairsend:stream:{dgram}"))
        .arg(format!("pairconnect:dgram:{dgram}"))
        .arg(format!("pairsend:dgram:{dgram}"))
        .arg(format!("tcp:127.0.0.1:{port}"))
        .stdin(Stdio::null())
        .output()
        .expect("run exec");
    let eisconn = format!("errno {}", libc::EISCONN);
    // A stream pair's connect: the programs judge it before af_unix sees the pair is
    // connected; under the seccomp rule af_unix refuses it (the pair is connected for life).
    let pair_connect = if kept_by == "cgroup_unix" {
        EPERM
    } else {
        &eisconn
    };
    assert_eq!(
        lines(&out),
        [
            EPERM,
            EPERM,
            EPERM,
            pair_connect,
            &eisconn,
            EPERM,
            EPERM,
            "ok"
        ],
        "unix_abstract kept by {kept_by}\n{}",
        describe(&out)
    );
    assert_eq!(w.accepted(&stream), 0);
    assert_eq!(w.accepted(&outside), 0);
    let mut buf = [0u8; 16];
    w.dgram[0].set_nonblocking(true).expect("nonblocking");
    assert!(w.dgram[0].recv(&mut buf).is_err(), "a datagram got through");
}
