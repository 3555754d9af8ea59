//! The container backend against a real engine (podman serving the Docker Engine API, started by
//! the test helper when it is not running) with an image built offline from the venv's Python:
//! the real mcp-server-time answers the MCP Python SDK client through `mcp-guard exec`; egress
//! from a container that HAS a network is still judged by mcp-guard's eBPF (EPERM for a
//! non-allowed port, a connection for the allowed one); opens and connects are in `events`,
//! attributed to calls; a wrong digest and an unreachable engine refuse to launch; 100
//! sequential and 10 parallel sessions leave no container, cgroup or network namespace behind.
//!
//! Tests share the engine and count leftovers, so they run one at a time (a lock).

use std::{
    io::Write,
    net::TcpListener,
    path::{Path, PathBuf},
    process::{Command, Output, Stdio},
    sync::Mutex,
    time::{Duration, Instant},
};

use mcp_guard_tests::{
    agent::NOBODY, container_test_image, describe, fixture, mcp_guard, podman_engine, python,
    require_root, scratch_root, server_user,
};
use mcp_guard_tests::{bench::record, median};
use serde_json::Value;

static ONE_AT_A_TIME: Mutex<()> = Mutex::new(());

const PY: &str = "/opt/py/bin/python3";

struct Scene {
    dir: PathBuf,
    state: PathBuf,
    policy: PathBuf,
}

/// A state dir and a container policy pinning the test image by `digest`.
fn scene(tag: &str, digest: &str, extra: &str) -> Scene {
    require_root();
    let engine = podman_engine();
    let (name, _) = container_test_image();
    let dir = scratch_root().join(format!("container-{tag}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).expect("scene dir");
    let policy = dir.join("policy.toml");
    std::fs::write(
        &policy,
        format!(
            "name = \"ctr-{tag}\"\n[isolation]\nbackend = \"container\"\nimage = \"{name}@{digest}\"\n\
             engine = \"{engine}\"\n[limits]\nmemory = \"512M\"\npids = 64\ncpu = 1.0\n{extra}"
        ),
    )
    .expect("policy");
    Scene {
        state: dir.join("state"),
        dir,
        policy,
    }
}

fn image_id() -> String {
    container_test_image().1
}

/// The MCP SDK client driving `mcp-guard exec` of `server` in the scene, calling `tool`.
fn sdk_call(s: &Scene, tool: &str, args: &str, server: &[&str]) -> Output {
    let mut cmd = Command::new(python());
    cmd.arg(fixture("mcp_client.py"))
        .args(["--call", tool, args, "--"])
        .arg(mcp_guard())
        .arg("--state-dir")
        .arg(&s.state)
        .arg("exec")
        .arg("--policy")
        .arg(&s.policy)
        .arg("--")
        .args(server);
    cmd.output().expect("mcp_client.py")
}

fn call_text(out: &Output) -> String {
    assert!(out.status.success(), "{}", describe(out));
    let v: Value = serde_json::from_slice(&out.stdout).expect("client JSON");
    assert_eq!(v["call"]["is_error"], false, "{}", describe(out));
    v["call"]["text"].as_str().expect("text").to_string()
}

fn events(s: &Scene) -> Vec<Value> {
    let out = Command::new(mcp_guard())
        .arg("--state-dir")
        .arg(&s.state)
        .args(["events", "--json"])
        .output()
        .expect("mcp-guard events");
    assert!(out.status.success(), "{}", describe(&out));
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(|l| serde_json::from_str(l).expect("event JSON"))
        .collect()
}

/// What the sessions could leave behind: containers, cgroups, network namespaces.
#[derive(Debug, PartialEq, Eq)]
struct Leftovers {
    containers: usize,
    cgroups_v2: usize,
    cgroups_pids_v1: usize,
    netns: usize,
}

fn count_dirs(dir: &Path) -> usize {
    std::fs::read_dir(dir).map_or(0, |d| d.flatten().filter(|e| e.path().is_dir()).count())
}

fn leftovers() -> Leftovers {
    let out = Command::new("podman")
        .args(["ps", "-aq"])
        .output()
        .expect("podman ps");
    let v2 = [
        "/sys/fs/cgroup/unified/mcp-guard",
        "/sys/fs/cgroup/mcp-guard",
    ]
    .iter()
    .map(|d| count_dirs(Path::new(d)))
    .sum();
    Leftovers {
        containers: String::from_utf8_lossy(&out.stdout).lines().count(),
        cgroups_v2: v2,
        cgroups_pids_v1: count_dirs(Path::new("/sys/fs/cgroup/pids/mcp-guard")),
        netns: std::fs::read_dir("/run/netns").map_or(0, std::iter::Iterator::count),
    }
}

fn bridge_gateway() -> String {
    let out = Command::new("podman")
        .args([
            "network",
            "inspect",
            "podman",
            "--format",
            "{{range .Subnets}}{{.Gateway}}{{end}}",
        ])
        .output()
        .expect("podman network inspect");
    assert!(out.status.success(), "{}", describe(&out));
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}

#[test]
fn mcp_server_time_in_a_container_answers_the_sdk_client() {
    let _one = ONE_AT_A_TIME
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner);
    let s = scene("time", &image_id(), "");
    let out = sdk_call(
        &s,
        "get_current_time",
        r#"{"timezone": "UTC"}"#,
        &[PY, "-m", "mcp_server_time", "--local-timezone", "UTC"],
    );
    let text = call_text(&out);
    assert!(text.contains("UTC"), "{text}");
    let v: Value = serde_json::from_slice(&out.stdout).expect("client JSON");
    assert_eq!(v["server"]["name"], "mcp-time", "{}", describe(&out));
    // The server really ran in the container, under the guard: its Python came from the image.
    let evs = events(&s);
    assert!(
        evs.iter().any(|e| e["kind"] == "open"
            && e["path"]
                .as_str()
                .is_some_and(|p| p.starts_with("/opt/py/lib/"))),
        "no open of the image's Python recorded: {} events",
        evs.len()
    );
    let _ = std::fs::remove_dir_all(&s.dir);
}

#[test]
fn networked_container_egress_is_judged_by_ebpf_and_attributed() {
    let _one = ONE_AT_A_TIME
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner);
    let allowed = TcpListener::bind("0.0.0.0:0").expect("listener");
    let denied = TcpListener::bind("0.0.0.0:0").expect("listener");
    let (ap, dp) = (
        allowed.local_addr().expect("addr").port(),
        denied.local_addr().expect("addr").port(),
    );
    let gw = bridge_gateway();
    // The container gets the engine's bridge network (the policy allows some egress), so only
    // mcp-guard's eBPF stands between it and the second listener.
    let s = scene(
        "egress",
        &image_id(),
        &format!("[network]\nallow = [\"{gw}:{ap}\"]\n"),
    );
    let server = [PY, "/srv/server.py"];
    let ok = call_text(&sdk_call(
        &s,
        "connect",
        &format!(r#"{{"host": "{gw}", "port": {ap}}}"#),
        &server,
    ));
    assert_eq!(ok, "connected", "the allowed destination must be reachable");
    let no = call_text(&sdk_call(
        &s,
        "connect",
        &format!(r#"{{"host": "{gw}", "port": {dp}}}"#),
        &server,
    ));
    assert_eq!(
        no, "errno 1 (EPERM)",
        "the engine's network would refuse with ECONNREFUSED or connect; EPERM is the eBPF verdict"
    );
    let read = call_text(&sdk_call(
        &s,
        "read_file",
        r#"{"path": "/etc/passwd"}"#,
        &server,
    ));
    assert!(read.starts_with("root:"), "{read}");

    let evs = events(&s);
    let connect = |port: u16, verdict: &str| {
        evs.iter().find(|e| {
            e["kind"] == "connect"
                && e["port"] == port
                && e["addr"] == gw.as_str()
                && e["verdict"] == verdict
        })
    };
    for (port, verdict) in [(ap, "allowed"), (dp, "denied")] {
        let e = connect(port, verdict)
            .unwrap_or_else(|| panic!("no {verdict} connect to {gw}:{port} in events"));
        assert_eq!(e["attribution"], "call", "{e}");
        assert!(e["call_id"].is_string(), "{e}");
    }
    // Python's startup may read /etc/passwd too (outside any call); the tool's open is in a call.
    let opens: Vec<&Value> = evs
        .iter()
        .filter(|e| e["kind"] == "open" && e["path"] == "/etc/passwd")
        .collect();
    assert!(
        opens
            .iter()
            .any(|e| e["attribution"] == "call" && e["call_id"].is_string()),
        "the read_file open of /etc/passwd is attributed to its call: {opens:?}"
    );
    let _ = std::fs::remove_dir_all(&s.dir);
}

#[test]
fn wrong_digest_or_unreachable_engine_refuses_to_launch() {
    let _one = ONE_AT_A_TIME
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner);
    let before = leftovers();
    let wrong = format!("sha256:{}", "0".repeat(64));
    let s = scene("digest", &wrong, "");
    let out = Command::new(mcp_guard())
        .arg("--state-dir")
        .arg(&s.state)
        .args(["exec", "--policy"])
        .arg(&s.policy)
        .args(["--", PY, "-c", "print('ran')"])
        .output()
        .expect("exec");
    assert_eq!(out.status.code(), Some(77), "{}", describe(&out));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("does not match the pinned digest"), "{err}");
    assert!(!String::from_utf8_lossy(&out.stdout).contains("ran"));
    assert_eq!(leftovers(), before, "a refused launch leaves nothing");

    let policy = std::fs::read_to_string(&s.policy)
        .expect("policy")
        .replace(&wrong, &image_id())
        .replace(
            "unix:///run/podman/podman.sock",
            "unix:///run/mcp-guard-no-such-engine.sock",
        );
    std::fs::write(&s.policy, policy).expect("policy");
    let out = Command::new(mcp_guard())
        .arg("--state-dir")
        .arg(&s.state)
        .args(["exec", "--policy"])
        .arg(&s.policy)
        .args(["--", PY, "-c", "print('ran')"])
        .output()
        .expect("exec");
    assert_eq!(out.status.code(), Some(77), "{}", describe(&out));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("is not reachable"), "{err}");
    let _ = std::fs::remove_dir_all(&s.dir);
}

#[test]
fn a_digest_pin_without_tag_finds_the_image_whatever_its_tag() {
    let _one = ONE_AT_A_TIME
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner);
    // The test image is tagged only `:<content hash>`; `name@digest` must not look for
    // `name:latest`, as `docker run name@digest` does not.
    let (name, id) = container_test_image();
    let (repo, _tag) = name.rsplit_once(':').expect("the test image has a tag");
    let out = Command::new("podman")
        .args([
            "image",
            "inspect",
            "--format",
            "{{range .RepoDigests}}{{.}} {{end}}",
            &name,
        ])
        .output()
        .expect("podman image inspect");
    assert!(out.status.success(), "{}", describe(&out));
    let listed = String::from_utf8_lossy(&out.stdout).to_string();
    let repo_digest = listed
        .split_whitespace()
        .find_map(|d| d.strip_prefix(&format!("{repo}@")))
        .unwrap_or_else(|| panic!("no repo digest of {repo} in {listed:?}"))
        .to_string();
    for (what, digest) in [
        ("repo digest", repo_digest.as_str()),
        ("image id", id.as_str()),
    ] {
        let s = scene("untagged", digest, "");
        let policy = std::fs::read_to_string(&s.policy)
            .expect("policy")
            .replace(&format!("{name}@"), &format!("{repo}@"));
        assert!(
            policy.contains(&format!("image = \"{repo}@{digest}\"")),
            "{policy}"
        );
        std::fs::write(&s.policy, policy).expect("policy");
        let out = echo_session(&s);
        assert!(
            out.status.success() && String::from_utf8_lossy(&out.stdout) == "hello\n",
            "{what}: {}",
            describe(&out)
        );
        let _ = std::fs::remove_dir_all(&s.dir);
    }
}

/// One short passthrough session: the container echoes its stdin.
fn echo_session(s: &Scene) -> Output {
    echo_session_logged(s, "warn")
}

/// [`echo_session`] with exec's log filter (`MCP_GUARD_LOG`).
fn echo_session_logged(s: &Scene, log: &str) -> Output {
    let mut child = Command::new(mcp_guard())
        .env("MCP_GUARD_LOG", log)
        .arg("--state-dir")
        .arg(&s.state)
        .args(["exec", "--passthrough", "--policy"])
        .arg(&s.policy)
        .args([
            "--",
            PY,
            "-S",
            "-c",
            "import sys; sys.stdout.write(sys.stdin.read())",
        ])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("exec");
    child
        .stdin
        .take()
        .expect("stdin")
        .write_all(b"hello\n")
        .expect("write");
    child.wait_with_output().expect("exec output")
}

#[test]
fn hundred_sequential_and_ten_parallel_sessions_leave_nothing_behind() {
    let _one = ONE_AT_A_TIME
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner);
    let gw = bridge_gateway();
    // With a network, so that each session also gets (and must lose) a network namespace.
    let s = scene(
        "leaks",
        &image_id(),
        &format!("[network]\nallow = [\"{gw}:9\"]\n"),
    );
    let before = leftovers();
    let started = Instant::now();
    for i in 0..100 {
        let out = echo_session(&s);
        assert!(out.status.success(), "session {i}: {}", describe(&out));
        assert_eq!(out.stdout, b"hello\n", "session {i}: {}", describe(&out));
    }
    let sequential = started.elapsed();
    let started = Instant::now();
    let outs: Vec<Output> = std::thread::scope(|scope| {
        let handles: Vec<_> = (0..10).map(|_| scope.spawn(|| echo_session(&s))).collect();
        handles
            .into_iter()
            .map(|h| h.join().expect("session thread"))
            .collect()
    });
    for (i, out) in outs.iter().enumerate() {
        assert!(out.status.success(), "parallel {i}: {}", describe(out));
        assert_eq!(out.stdout, b"hello\n", "parallel {i}: {}", describe(out));
    }
    eprintln!(
        "100 sequential sessions {:.1}s, 10 parallel {:.1}s",
        sequential.as_secs_f64(),
        started.elapsed().as_secs_f64()
    );
    // The engine tears network namespaces down asynchronously: give it a moment.
    let deadline = Instant::now() + Duration::from_secs(10);
    while leftovers() != before && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(200));
    }
    assert_eq!(leftovers(), before, "containers, cgroups or netns leaked");
    let _ = std::fs::remove_dir_all(&s.dir);
}

#[test]
fn container_is_hardened_as_the_policy_says() {
    let _one = ONE_AT_A_TIME
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner);
    let s = scene("hardened", &image_id(), "[syscalls]\ndeny = [\"getcpu\"]\n");
    let probe = "import ctypes, resource\n\
        l = ctypes.CDLL(None, use_errno=True)\n\
        def sc(*a):\n    r = l.syscall(*a); return (r, ctypes.get_errno() if r < 0 else 0)\n\
        st = dict(x.split(':\\t', 1) for x in open('/proc/self/status').read().splitlines() if ':\\t' in x)\n\
        try:\n    open('/rootfs-write', 'w'); ro = 0\n\
        except OSError as e:\n    ro = e.errno\n\
        open('/tmp/ok', 'w').write('x')\n\
        def lim(*paths):\n    for p in paths:\n        try:\n            return open(p).read().strip()\n        except OSError:\n            pass\n\
        print(lim('/sys/fs/cgroup/pids/pids.max', '/sys/fs/cgroup/pids.max'), \
        lim('/sys/fs/cgroup/memory/memory.limit_in_bytes', '/sys/fs/cgroup/memory.max'))\n\
        print(sc(135, 0xffffffff), sc(272, 0x20000), sc(309, 0, 0, 0), st['Seccomp'].strip(), \
        st['CapEff'].strip(), st['NoNewPrivs'].strip(), ro, \
        resource.getrlimit(resource.RLIMIT_NOFILE)[0] > 0)\n\
        print([sc(16, 0, ctypes.c_ulong(r), 0) for r in (0x5412, 0x100005412, 0x541c, 0x5413)])";
    let out = Command::new(mcp_guard())
        .arg("--state-dir")
        .arg(&s.state)
        .args(["exec", "--passthrough", "--policy"])
        .arg(&s.policy)
        .args(["--", PY, "-S", "-c", probe])
        .stdin(Stdio::null())
        .output()
        .expect("exec");
    assert!(out.status.success(), "{}", describe(&out));
    // The policy's pids and memory limits (v1 or v2, whichever the host has); personality,
    // unshare(CLONE_NEWNS) and the policy's getcpu fail with EPERM (1) under the jail's deny
    // list as an engine profile; seccomp filter mode 2; no capabilities; no_new_privs; the root
    // filesystem is read-only (EROFS 30) while /tmp is a writable tmpfs. TIOCSTI and TIOCLINUX
    // are refused by the profile (EPERM), also with a high bit set in the request; another
    // ioctl on the same (not a terminal) stdin gets the kernel's ENOTTY (25).
    assert_eq!(
        String::from_utf8_lossy(&out.stdout).trim(),
        "64 536870912\n(-1, 1) (-1, 1) (-1, 1) 2 0000000000000000 1 30 True\n\
         [(-1, 1), (-1, 1), (-1, 1), (-1, 25)]",
        "{}",
        describe(&out)
    );
    let _ = std::fs::remove_dir_all(&s.dir);
}

#[test]
fn the_container_runs_as_the_servers_user_never_the_images() {
    let _one = ONE_AT_A_TIME
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner);
    let s = scene("identity", &image_id(), "");
    let ids = |sudo: Option<(u32, u32)>| {
        let mut cmd = Command::new(mcp_guard());
        cmd.arg("--state-dir")
            .arg(&s.state)
            .args(["exec", "--passthrough", "--policy"])
            .arg(&s.policy)
            .args([
                "--",
                PY,
                "-S",
                "-c",
                "import os; print(os.getuid(), os.geteuid(), os.getgid())",
            ])
            .env_remove("SUDO_UID")
            .env_remove("SUDO_GID")
            .env_remove("SUDO_USER")
            .stdin(Stdio::null());
        if let Some((uid, gid)) = sudo {
            cmd.env("SUDO_UID", uid.to_string())
                .env("SUDO_GID", gid.to_string());
        }
        let out = cmd.output().expect("exec");
        assert!(out.status.success(), "{}", describe(&out));
        String::from_utf8_lossy(&out.stdout).trim().to_string()
    };
    // The image's default user is root: a user who ran exec through sudo gets their own uid and
    // gid, root without sudo the unprivileged server user.
    assert_eq!(
        ids(Some((NOBODY, NOBODY))),
        format!("{NOBODY} {NOBODY} {NOBODY}")
    );
    let (uid, gid) = server_user();
    assert_eq!(ids(None), format!("{uid} {uid} {gid}"));
    let _ = std::fs::remove_dir_all(&s.dir);
}

fn timed_ok(cmd: &mut Command) -> f64 {
    let start = Instant::now();
    let out = cmd.stdin(Stdio::null()).output().expect("spawn");
    let t = start.elapsed().as_secs_f64();
    assert!(out.status.success(), "{}", describe(&out));
    t
}

/// Start-up to exit of a trivial server (`python3 -S -c pass`), median of 20 each: through
/// mcp-guard's container backend, the engine's own `podman run` of the same image with the same
/// hardening, and mcp-guard's jail backend with the host's Python.
/// `cargo test -p mcp-guard-tests --test container -- --ignored --nocapture`
#[test]
#[ignore = "benchmark: cargo xtask bench (root, release)"]
fn startup_container_vs_podman_run_vs_jail() {
    const N: usize = 20;
    let _one = ONE_AT_A_TIME
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner);
    let (name, id) = container_test_image();
    let s = scene("bench", &id, "");
    // The system Python (the venv's lives under /root, which the jailed user cannot traverse).
    let host_py = PathBuf::from("/usr/bin/python3");
    assert!(host_py.exists(), "/usr/bin/python3 is missing");
    let jail_policy = s.dir.join("jail.toml");
    std::fs::write(
        &jail_policy,
            "name = \"bench-jail\"\n[filesystem]\nread = [\"/usr\", \"/lib\", \"/lib64\", \"/etc\"]\n\
             exec = [\"/usr\", \"/lib\", \"/lib64\", \"/bin\"]\n[limits]\nmemory = \"512M\"\npids = 64\ncpu = 1.0\n",
    )
    .expect("jail policy");
    let (mut guarded, mut engine, mut jail) = (Vec::new(), Vec::new(), Vec::new());
    for _ in 0..N {
        guarded.push(timed_ok(
            Command::new(mcp_guard())
                .arg("--state-dir")
                .arg(&s.state)
                .args(["exec", "--passthrough", "--policy"])
                .arg(&s.policy)
                .args(["--", PY, "-S", "-c", "pass"]),
        ));
        engine.push(timed_ok(Command::new("podman").args([
            "run",
            "--rm",
            "-i",
            "--runtime",
            "runc",
            "--read-only",
            "--network",
            "none",
            "--cap-drop",
            "ALL",
            "--security-opt",
            "no-new-privileges",
            "--ulimit",
            "nofile=16384:16384",
            "--ulimit",
            "nproc=4096:4096",
            "--memory",
            "512m",
            "--pids-limit",
            "64",
            &name,
            PY,
            "-S",
            "-c",
            "pass",
        ])));
        jail.push(timed_ok(
            Command::new(mcp_guard())
                .arg("--state-dir")
                .arg(&s.state)
                .args(["exec", "--passthrough", "--policy"])
                .arg(&jail_policy)
                .arg("--")
                .arg(&host_py)
                .args(["-S", "-c", "pass"]),
        ));
    }
    let (g, e, j) = (median(guarded), median(engine), median(jail));
    println!(
        "start-up to exit, median of {N}: mcp-guard container {:.0} ms, podman run {:.0} ms \
         (container/podman {:.2}x), mcp-guard jail {:.0} ms (container/jail {:.2}x)",
        g * 1e3,
        e * 1e3,
        g / e,
        j * 1e3,
        g / j
    );
    record("container", "start-up, container", g * 1e3, "ms");
    record("container", "container/podman run", g / e, "ratio");
    record("container", "container/jail", g / j, "ratio");
    let _ = std::fs::remove_dir_all(&s.dir);
}

#[test]
fn a_sigkilled_exec_leaves_nothing_after_the_next_session() {
    let _one = ONE_AT_A_TIME
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner);
    let s = scene("sigkill", &image_id(), "");
    let before = leftovers();
    let mut child = Command::new(mcp_guard())
        .arg("--state-dir")
        .arg(&s.state)
        .args(["exec", "--passthrough", "--policy"])
        .arg(&s.policy)
        .args(["--", PY, "-S", "-c", "import sys; sys.stdin.read()"])
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("exec");
    let label = format!("label=io.mcp-guard.exec-pid={}", child.id());
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let out = Command::new("podman")
            .args(["ps", "-q", "--filter", &label])
            .output()
            .expect("podman ps");
        if !out.stdout.is_empty() {
            break;
        }
        assert!(Instant::now() < deadline, "the container never ran");
        std::thread::sleep(Duration::from_millis(100));
    }
    // SIGKILL: exec runs no cleanup at all.
    child.kill().expect("SIGKILL exec");
    let _ = child.wait();
    assert_ne!(leftovers(), before, "exec's death alone removes nothing");
    let out = echo_session_logged(&s, "mcp_guard_launch::container=debug");
    assert!(out.status.success(), "{}", describe(&out));
    assert_eq!(
        leftovers(),
        before,
        "the next session removed the dead exec's container and cgroups: {}",
        describe(&out)
    );
    let _ = std::fs::remove_dir_all(&s.dir);
}

#[test]
fn a_container_gets_its_secrets_only_for_the_fixed_command_and_its_stderr_is_redacted() {
    let _one = ONE_AT_A_TIME
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner);
    let value: String = std::fs::read("/proc/sys/kernel/random/uuid")
        .map(|u| String::from_utf8_lossy(&u).trim().replace('-', ""))
        .expect("a random value");
    let s = scene("secrets", &image_id(), "");
    let secret = s.dir.join("token");
    std::fs::write(&secret, &value).expect("write the secret");
    // The fixed command: the digest of the token on stdout, the token itself on stderr.
    let fixed = "import hashlib, os, sys; t = os.environ.get('TOKEN', ''); \
                 print(hashlib.sha256(t.encode()).hexdigest()); print('leak', t, file=sys.stderr)";
    let policy = format!(
        "{}\n[secrets]\nTOKEN = {{ file = \"{}\" }}\n",
        std::fs::read_to_string(&s.policy).expect("policy"),
        secret.display()
    );
    std::fs::write(&s.policy, &policy).expect("policy");
    let run = |args: &[&str]| {
        Command::new(mcp_guard())
            .arg("--state-dir")
            .arg(&s.state)
            .args(["exec", "--standalone", "--passthrough", "--policy"])
            .arg(&s.policy)
            .arg("--")
            .args(args)
            .stdin(Stdio::null())
            .output()
            .expect("exec")
    };
    // The caller's own command reads the environment: no token, and stderr says why.
    let attack = "import os, sys; t = os.environ.get('TOKEN', 'none'); print(t); \
                  print(t, file=sys.stderr)";
    let out = run(&[PY, "-S", "-c", attack]);
    assert!(out.status.success(), "{}", describe(&out));
    let both = [out.stdout.clone(), out.stderr.clone()].concat();
    assert!(
        !String::from_utf8_lossy(&both).contains(&value),
        "the caller's command read the secret:\n{}",
        describe(&out)
    );
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("secrets TOKEN withheld"),
        "{}",
        describe(&out)
    );
    // Once the policy fixes its command, that command gets it; what it writes on stderr is
    // redacted.
    std::fs::write(
        &s.policy,
        format!("command = [\"{PY}\", \"-S\", \"-c\", \"{fixed}\"]\n{policy}"),
    )
    .expect("policy");
    let out = run(&[]);
    assert!(out.status.success(), "{}", describe(&out));
    let digest = mcp_guard_supply::sha256_bytes(value.as_bytes());
    assert_eq!(
        String::from_utf8_lossy(&out.stdout).trim(),
        &digest["sha256:".len()..],
        "{}",
        describe(&out)
    );
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        !stderr.contains(&value) && stderr.contains("leak [REDACTED:secret TOKEN]"),
        "{}",
        describe(&out)
    );
    let _ = std::fs::remove_dir_all(&s.dir);
}
