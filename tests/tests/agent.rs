//! `mcp-guard agent`: a real Prometheus scrapes the agent while real MCP sessions run under
//! `mcp-guard exec`, and sees the calls, the denial and the kernel events they caused.
#![expect(
    clippy::float_cmp,
    reason = "Prometheus samples of counters and gauges here are small integers, exact in f64"
)]

use std::{
    io::Write,
    os::unix::fs::PermissionsExt as _,
    path::{Path, PathBuf},
    process::{Child, Command, Stdio},
    time::{Duration, Instant},
};

use mcp_guard_tests::{
    agent::{self as harness, PinDir},
    everything_policy, fixture, mcp_guard, npm_server,
    prom::{self, Prometheus, free_port, http_get, http_get_as},
    python, require_root, scratch_root, workspace_root,
};

/// The agent (with its own socket and pin directory), killed on drop.
struct Agent {
    agent: harness::Agent,
    _pins: PinDir,
}

/// Starts an agent whose state dir is `state` (`<test dir>/state`), serving /metrics on `addr`,
/// logging to `log` (`<test dir>/<name>.log`).
fn start_agent(state: &Path, addr: &str, log: &Path) -> Agent {
    start_agent_with(state, addr, log, "")
}

/// [`start_agent`] with `config` in its config file.
fn start_agent_with(state: &Path, addr: &str, log: &Path, config: &str) -> Agent {
    let dir = state.parent().expect("state is in the test dir");
    let name = log.file_stem().and_then(|s| s.to_str()).expect("log name");
    let test = dir
        .file_name()
        .and_then(|s| s.to_str())
        .expect("test dir name");
    let pins = PinDir::new(&format!("{test}-{name}"));
    Agent {
        agent: harness::Agent::start_at(dir, &pins, config, addr, name),
        _pins: pins,
    }
}

/// policies/everything.toml with the test's installs readable and `get-sum` denied.
fn policy(dir: &Path) -> PathBuf {
    let installs = workspace_root()
        .join("tests/node_modules")
        .canonicalize()
        .expect("tests/node_modules: run `cargo xtask setup`");
    let text = everything_policy(&installs);
    let path = dir.join("everything.toml");
    std::fs::write(&path, text).expect("write the policy");
    path
}

/// One SDK client session through `mcp-guard exec`, calling `tool`; the client's output.
/// (Through the agent listening on `socket`, when given.)
fn session(
    state: &Path,
    policy: &Path,
    tool: &str,
    args: &str,
    socket: Option<&Path>,
) -> std::process::Output {
    let server = npm_server("@modelcontextprotocol/server-everything");
    let route: Vec<&std::ffi::OsStr> = match socket {
        Some(s) => vec!["--agent-socket".as_ref(), s.as_os_str()],
        None => vec!["--standalone".as_ref()],
    };
    Command::new(python())
        .arg(fixture("mcp_client.py"))
        .args(["--call", tool, args, "--"])
        .arg(mcp_guard())
        .arg("--state-dir")
        .arg(state)
        .arg("exec")
        .args(route)
        .arg("--policy")
        .arg(policy)
        .args(["--name", "everything", "--", "node"])
        .arg(&server)
        .arg("stdio")
        .output()
        .expect("run the MCP client")
}

#[test]
fn prometheus_scrapes_the_calls_denials_and_kernel_events_of_real_sessions() {
    require_root();
    let dir = scratch_root()
        .join("mcp-guard-tests")
        .join(format!("agent-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).expect("test dir");
    let state = dir.join("state");
    let addr = format!("127.0.0.1:{}", free_port());
    // /metrics behind a bearer token in a file only root may read; Prometheus reads its copy.
    let token = "c2VjcmV0LXRva2VuLWZvci10aGUtc2NyYXBl";
    let token_file = dir.join("metrics.token");
    std::fs::write(&token_file, format!("{token}\n")).expect("token file");
    std::fs::set_permissions(&token_file, std::fs::Permissions::from_mode(0o600)).expect("chmod");
    let _agent = start_agent_with(
        &state,
        &addr,
        &dir.join("agent.log"),
        &format!("metrics_token_file = \"{}\"\n", token_file.display()),
    );
    let (status, _) = http_get(&addr, "/metrics").expect("scrape without the token");
    assert_eq!(status, 401, "/metrics without the token");

    // The exposition is valid for Prometheus's own checker.
    let (_, body) = http_get_as(&addr, "/metrics", Some(token)).expect("scrape");
    let mut promtool = Command::new("promtool")
        .args(["check", "metrics"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("run promtool (Debian package prometheus: cargo xtask setup)");
    promtool
        .stdin
        .take()
        .expect("promtool stdin")
        .write_all(body.as_bytes())
        .expect("feed promtool");
    let checked = promtool.wait_with_output().expect("promtool");
    assert!(
        checked.status.success(),
        "promtool check metrics: {}{}",
        String::from_utf8_lossy(&checked.stdout),
        String::from_utf8_lossy(&checked.stderr)
    );

    let prom = Prometheus::start_with_token(&dir.join("prometheus"), &addr, Some(&token_file));
    prom.wait_for("up{job=\"mcp-guard\"}", Duration::from_secs(20), |v| {
        v == 1.0
    });

    let policy = policy(&dir);
    let allowed = session(&state, &policy, "echo", "{\"message\": \"counted\"}", None);
    assert!(
        allowed.status.success() && String::from_utf8_lossy(&allowed.stdout).contains("counted"),
        "echo through exec: {}",
        String::from_utf8_lossy(&allowed.stderr)
    );
    let denied = session(&state, &policy, "get-sum", "{\"a\": 1, \"b\": 2}", None);
    let said = format!(
        "{}{}",
        String::from_utf8_lossy(&denied.stdout),
        String::from_utf8_lossy(&denied.stderr)
    );
    assert!(said.contains("policy"), "get-sum was not refused: {said}");

    let wait = Duration::from_secs(30);
    let echo = prom.wait_for(
        "mcp_guard_tool_calls_total{server=\"everything\",tool=\"echo\",decision=\"allowed\"}",
        wait,
        |v| v >= 1.0,
    );
    assert_eq!(echo, 1.0, "one echo call");
    prom.wait_for(
        "mcp_guard_tool_calls_total{server=\"everything\",tool=\"get-sum\",decision=\"denied\"}",
        wait,
        |v| v == 1.0,
    );
    prom.wait_for(
        "mcp_guard_tool_call_duration_seconds_count{server=\"everything\",tool=\"echo\"}",
        wait,
        |v| v == 1.0,
    );
    // Both servers were started by exec and opened files: the kernel saw it.
    prom.wait_for(
        "sum(mcp_guard_kernel_events_total{server=\"everything\",kind=\"exec\"})",
        wait,
        |v| v >= 2.0,
    );
    prom.wait_for(
        "sum(mcp_guard_kernel_events_total{server=\"everything\",kind=\"open\"})",
        wait,
        |v| v >= 10.0,
    );
    prom.wait_for("mcp_guard_servers_running", wait, |v| v == 0.0);
    prom.wait_for("mcp_guard_bpf_stats_enabled", wait, |v| v == 1.0);
    drop(prom);
    let _ = std::fs::remove_dir_all(&dir);
}

/// `mcp-guard exec --passthrough` of `sleep`, stdin held open so it runs until killed.
fn long_session(state: &Path, policy: &Path) -> Child {
    // A sleep this test alone runs, so it can tell when the server itself is up: until then a
    // quarantine meets the launch, not a running server.
    let seconds = format!("300.{}", std::process::id());
    let mut child = Command::new(mcp_guard())
        .arg("--state-dir")
        .arg(state)
        .args(["exec", "--passthrough", "--policy"])
        .arg(policy)
        .args(["--", "/bin/sleep", &seconds])
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start exec");
    let cmdline = format!("/bin/sleep\0{seconds}\0");
    let deadline = Instant::now() + Duration::from_secs(30);
    while !std::fs::read_dir("/proc")
        .expect("/proc")
        .flatten()
        .any(|p| std::fs::read(p.path().join("cmdline")).is_ok_and(|c| c == cmdline.as_bytes()))
    {
        if let Some(status) = child.try_wait().expect("wait exec") {
            panic!("exec ended before its server ran: {status}");
        }
        assert!(Instant::now() < deadline, "the server never started");
        std::thread::sleep(Duration::from_millis(50));
    }
    child
}

#[test]
fn quarantine_kills_running_sessions_and_refuses_launches_until_release() {
    require_root();
    let dir = scratch_root()
        .join("mcp-guard-tests")
        .join(format!("quarantine-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).expect("test dir");
    let state = dir.join("state");
    let policy = dir.join("qsrv.toml");
    std::fs::write(
        &policy,
        "name = \"qsrv\"\n[filesystem]\nread = [\"/usr\", \"/bin\", \"/lib\", \"/lib64\", \"/etc\"]\n\
         exec = [\"/usr\", \"/bin\"]\n",
    )
    .expect("write policy");
    let addr = format!("127.0.0.1:{}", free_port());
    let _agent = start_agent(&state, &addr, &dir.join("agent.log"));

    let mut running = long_session(&state, &policy);
    // The agent sees the live session.
    prom::wait_metric_is(&addr, "mcp_guard_servers_running", 1.0);

    let q = Command::new(mcp_guard())
        .arg("--state-dir")
        .arg(&state)
        .args(["quarantine", "qsrv", "--reason", "incident 42"])
        .output()
        .expect("quarantine");
    let said = String::from_utf8_lossy(&q.stdout);
    assert!(q.status.success(), "quarantine: {q:?}");
    assert!(said.contains("1 running session(s) killed"), "{said}");
    // The running session ends with its server killed (128 + SIGKILL).
    let deadline = Instant::now() + Duration::from_secs(15);
    let status = loop {
        if let Some(status) = running.try_wait().expect("wait exec") {
            break status;
        }
        assert!(
            Instant::now() < deadline,
            "the quarantined session still runs"
        );
        std::thread::sleep(Duration::from_millis(100));
    };
    assert_eq!(status.code(), Some(137), "exec's status after the kill");
    prom::wait_metric_is(&addr, "mcp_guard_servers_running", 0.0);

    // A new launch is refused, saying how to lift it, and nothing runs.
    let refused = Command::new(mcp_guard())
        .arg("--state-dir")
        .arg(&state)
        .args(["exec", "--passthrough", "--policy"])
        .arg(&policy)
        .args(["--", "/bin/true"])
        .stdin(Stdio::null())
        .output()
        .expect("exec while quarantined");
    let err = String::from_utf8_lossy(&refused.stderr);
    assert_eq!(refused.status.code(), Some(77), "{err}");
    assert!(
        err.contains("quarantined") && err.contains("incident 42") && err.contains("release qsrv"),
        "{err}"
    );

    // Both actions are in the history.
    let events = Command::new(mcp_guard())
        .arg("--state-dir")
        .arg(&state)
        .args([
            "events",
            "--server",
            "qsrv",
            "--kind",
            "quarantine",
            "--json",
        ])
        .output()
        .expect("events");
    let listed = String::from_utf8_lossy(&events.stdout);
    assert!(
        listed.contains("\"kind\":\"quarantine\"") && listed.contains("incident 42"),
        "{listed}"
    );

    let released = Command::new(mcp_guard())
        .arg("--state-dir")
        .arg(&state)
        .args(["release", "qsrv"])
        .output()
        .expect("release");
    assert!(released.status.success(), "release: {released:?}");
    let again = Command::new(mcp_guard())
        .arg("--state-dir")
        .arg(&state)
        .args(["exec", "--passthrough", "--policy"])
        .arg(&policy)
        .args(["--", "/bin/true"])
        .stdin(Stdio::null())
        .output()
        .expect("exec after release");
    assert!(
        again.status.success(),
        "after release: {}",
        String::from_utf8_lossy(&again.stderr)
    );
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn twenty_concurrent_sessions_through_the_agent_lose_nothing_in_the_store_or_the_metrics() {
    require_root();
    let dir = scratch_root()
        .join("mcp-guard-tests")
        .join(format!("agent-twenty-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).expect("test dir");
    let state = dir.join("state");
    let addr = format!("127.0.0.1:{}", free_port());
    let agent = start_agent(&state, &addr, &dir.join("agent.log"));
    let policy = policy(&dir);
    let sessions: Vec<_> = (0..20)
        .map(|i| {
            let (state, policy) = (state.clone(), policy.clone());
            let socket = agent.agent.socket.clone();
            std::thread::spawn(move || {
                session(
                    &state,
                    &policy,
                    "echo",
                    &format!("{{\"message\": \"n{i}\"}}"),
                    Some(&socket),
                )
            })
        })
        .collect();
    for (i, s) in sessions.into_iter().enumerate() {
        let out = s.join().expect("session thread");
        assert!(
            out.status.success() && String::from_utf8_lossy(&out.stdout).contains(&format!("n{i}")),
            "session {i}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    // Every session's call is in the store, each from its own session.
    let calls = Command::new(mcp_guard())
        .arg("--state-dir")
        .arg(&state)
        .args([
            "calls",
            "--server",
            "everything",
            "--tool",
            "echo",
            "--json",
        ])
        .output()
        .expect("calls");
    let lines: Vec<serde_json::Value> = String::from_utf8_lossy(&calls.stdout)
        .lines()
        .map(|l| serde_json::from_str(l).expect("calls JSON"))
        .collect();
    assert_eq!(lines.len(), 20, "{lines:#?}");
    let sessions: std::collections::BTreeSet<&str> =
        lines.iter().filter_map(|c| c["session"].as_str()).collect();
    assert_eq!(sessions.len(), 20, "{lines:#?}");
    // And the agent counted all of them.
    let want =
        "mcp_guard_tool_calls_total{decision=\"allowed\",server=\"everything\",tool=\"echo\"} 20";
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let body = http_get(&addr, "/metrics")
            .map(|(_, b)| b)
            .unwrap_or_default();
        if body.lines().any(|l| l == want) {
            break;
        }
        assert!(Instant::now() < deadline, "no `{want}` in:\n{body}");
        std::thread::sleep(Duration::from_millis(200));
    }
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn a_sigkilled_agent_leaves_sessions_enforced_and_a_restarted_one_reports_them() {
    require_root();
    let dir = scratch_root()
        .join("mcp-guard-tests")
        .join(format!("agent-kill-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).expect("test dir");
    let state = dir.join("state");
    let netprobe = mcp_guard_tests::workspace_bin("netprobe");
    let bin_dir = netprobe.parent().expect("target dir").display().to_string();
    let policy = dir.join("probe.toml");
    // Port 9 is open to landlock (10.0.0.0/8:9 is allowed), so 127.0.0.1:9 is judged by eBPF.
    std::fs::write(
        &policy,
        format!(
            "name = \"probe\"\n[filesystem]\nread = [\"/usr\", \"/bin\", \"/lib\", \"/lib64\", \
             \"/etc\", \"{bin_dir}\"]\nexec = [\"/usr\", \"/bin\", \"{bin_dir}\"]\n\
             [network]\nallow = [\"10.0.0.0/8:9\"]\n"
        ),
    )
    .expect("write policy");
    let addr = format!("127.0.0.1:{}", free_port());
    let mut agent = start_agent(&state, &addr, &dir.join("agent.log"));

    // The server waits for a line, then connects to a denied address, then idles.
    let script = format!("read go; {} tcp:127.0.0.1:9; sleep 300", netprobe.display());
    let mut session = Command::new(mcp_guard())
        .arg("--state-dir")
        .arg(&state)
        .args(["exec", "--passthrough", "--policy"])
        .arg(&policy)
        .args(["--", "/bin/sh", "-c", &script])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("start exec");
    prom::wait_metric_is(&addr, "mcp_guard_servers_running", 1.0);

    // SIGKILL: no cleanup of any kind runs in the agent.
    agent.agent.kill();
    assert!(
        http_get(&addr, "/metrics").is_none(),
        "the agent still answers"
    );

    let mut stdin = session.stdin.take().expect("session stdin");
    writeln!(stdin, "go").expect("tell the server to connect");
    let mut line = String::new();
    std::io::BufRead::read_line(
        &mut std::io::BufReader::new(session.stdout.take().expect("session stdout")),
        &mut line,
    )
    .expect("the server's answer");
    assert_eq!(line.trim(), "errno 1", "the connect after the agent died");
    assert!(
        session.try_wait().expect("exec").is_none(),
        "the session ended with the agent"
    );

    // A new agent finds the live session.
    let _agent = start_agent(&state, &addr, &dir.join("agent2.log"));
    prom::wait_metric_is(&addr, "mcp_guard_servers_running", 1.0);
    // SIGTERM: exec kills the server's cgroup and records the end.
    let term = Command::new("kill")
        .arg(session.id().to_string())
        .status()
        .expect("kill(1)");
    assert!(term.success());
    session.wait().expect("reap exec");
    prom::wait_metric_is(&addr, "mcp_guard_servers_running", 0.0);
    drop(stdin);
    let _ = std::fs::remove_dir_all(&dir);
}
