//! `exec` as a thin client of `mcp-guard agent`: an unprivileged user's exec hands its stdio to
//! the agent over the Unix socket; the agent checks who asks, runs the session as that user
//! with the eBPF programs it pinned once, and the session outlives the agent restarting.

use std::{
    io::{BufRead, BufReader, Write},
    path::{Path, PathBuf},
    process::{Child, Command, Stdio},
    time::{Duration, Instant},
};

use mcp_guard_tests::{
    agent::{Agent, NOBODY, PinDir, Public},
    describe, everything_policy, fixture, mcp_guard, npm_server, prom, python, require_root,
    scratch_root, server_user, workspace_bin, workspace_root,
};

fn test_dir(name: &str) -> PathBuf {
    let dir = scratch_root()
        .join("mcp-guard-tests")
        .join(format!("agent-sessions-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).expect("test dir");
    dir
}

/// A policy for plain programs (`sh`, `id`, the test fixtures in `extra`), installed in the
/// agent's policy dir as `name`; `more` is appended.
fn shell_policy(agent_dir: &Path, name: &str, extra: &Path, more: &str) {
    let dir = agent_dir.join("policies");
    std::fs::create_dir_all(&dir).expect("policy dir");
    let extra = extra.display();
    std::fs::write(
        dir.join(format!("{name}.toml")),
        format!(
            "name = \"{name}\"\n{more}\n[filesystem]\nread = [\"/usr\", \"/bin\", \"/lib\", \
             \"/lib64\", \"/etc\", \"{extra}\"]\nexec = [\"/usr\", \"/bin\", \"/lib\", \"/lib64\", \
             \"{extra}\"]\n"
        ),
    )
    .expect("write policy");
}

/// policies/everything.toml with `extra` readable and runnable, `get-sum` denied.
fn install_everything_policy(agent_dir: &Path, extra: &Path) {
    let dir = agent_dir.join("policies");
    std::fs::create_dir_all(&dir).expect("policy dir");
    std::fs::write(dir.join("everything.toml"), everything_policy(extra)).expect("write");
}

fn json_lines(out: &[u8]) -> Vec<serde_json::Value> {
    String::from_utf8_lossy(out)
        .lines()
        .filter(|l| !l.trim().is_empty())
        .map(|l| serde_json::from_str(l).expect("a JSON line"))
        .collect()
}

fn query(agent: &Agent, what: &[&str]) -> Vec<serde_json::Value> {
    let out = Command::new(mcp_guard())
        .arg("--state-dir")
        .arg(&agent.state)
        .args(what)
        .arg("--json")
        .output()
        .expect("query the store");
    assert!(out.status.success(), "{}", describe(&out));
    json_lines(&out.stdout)
}

#[test]
fn an_unprivileged_exec_runs_a_real_server_through_the_agent_as_itself() {
    require_root();
    let dir = test_dir("unpriv");
    let pins = PinDir::new("unpriv");
    let public = Public::new("unpriv");
    let guard = public.copy(&mcp_guard(), "mcp-guard");
    let modules = public.copy(&workspace_root().join("tests/node_modules"), "node_modules");
    let server = modules.join(
        npm_server("@modelcontextprotocol/server-everything")
            .strip_prefix(workspace_root().join("tests/node_modules"))
            .expect("the server is in tests/node_modules"),
    );
    install_everything_policy(&dir, &public.0);
    shell_policy(&dir, "shell", &public.0, "");
    shell_policy(&dir, "rootonly", &public.0, "[access]\nusers = [\"root\"]");
    shell_policy(&dir, "asroot", &public.0, "user = \"root\"");
    let agent = Agent::start(&dir, &pins, "");

    // The MCP Python SDK client (root) starts `exec` as nobody, which hands its stdio to the
    // agent; the real server answers through the agent's proxy.
    let exec = agent.exec(
        &guard,
        NOBODY,
        &["--policy", "everything", "--name", "everything", "--"],
    );
    let mut argv: Vec<String> = std::iter::once(exec.get_program())
        .chain(exec.get_args())
        .map(|a| a.to_string_lossy().into_owned())
        .collect();
    argv.extend([
        "node".to_string(),
        server.display().to_string(),
        "stdio".into(),
    ]);
    let out = Command::new(python())
        .arg(fixture("mcp_client.py"))
        .args([
            "--call",
            "echo",
            r#"{"message": "hello from nobody"}"#,
            "--",
        ])
        .args(&argv)
        .current_dir(&public.0)
        .output()
        .expect("run the MCP client");
    assert!(
        out.status.success(),
        "{}\nagent:\n{}",
        describe(&out),
        agent.log()
    );
    let answer: serde_json::Value = serde_json::from_slice(&out.stdout).expect("client JSON");
    assert!(
        answer["call"]["text"]
            .as_str()
            .is_some_and(|t| t.contains("hello from nobody")),
        "{answer}"
    );
    let tools: Vec<&str> = answer["tools"]
        .as_array()
        .expect("tools")
        .iter()
        .filter_map(|t| t.as_str())
        .collect();
    assert!(
        tools.contains(&"echo") && !tools.contains(&"get-sum"),
        "{tools:?}"
    );
    // Recorded in the agent's store: the call, and the server's kernel events (routed from the
    // agent's ring buffer to the session).
    let calls = query(&agent, &["calls", "--server", "everything"]);
    assert!(
        calls
            .iter()
            .any(|c| c["tool"] == "echo" && c["decision"] == "allowed"),
        "{calls:?}"
    );
    let execs = query(
        &agent,
        &["events", "--server", "everything", "--kind", "exec"],
    );
    assert!(
        execs
            .iter()
            .any(|e| e["path"].as_str().is_some_and(|p| p.ends_with("node"))),
        "{execs:?}"
    );

    // The server runs as the caller, in the caller's working directory, with the caller's
    // umask, and its status is exec's.
    let exec = agent.exec(
        &guard,
        NOBODY,
        &[
            "--passthrough",
            "--policy",
            "shell",
            "--",
            "/bin/sh",
            "-c",
            "id -u; pwd; umask; exit 7",
        ],
    );
    let out = Command::new("/bin/sh")
        .args(["-c", "umask 027; exec \"$@\"", "sh"])
        .arg(exec.get_program())
        .args(exec.get_args())
        .current_dir(&public.0)
        .stdin(Stdio::null())
        .output()
        .expect("exec");
    assert_eq!(out.status.code(), Some(7), "{}", describe(&out));
    assert_eq!(
        String::from_utf8_lossy(&out.stdout),
        format!("{NOBODY}\n{}\n0027\n", public.0.display())
    );

    // What the agent refuses an unprivileged caller, with exec's exit status and the reason.
    let policy_file = dir.join("policies/shell.toml").display().to_string();
    let refusals: [(&[&str], i32, &str); 4] = [
        (
            &["--passthrough", "--policy", &policy_file, "--", "/bin/true"],
            77,
            "for root only",
        ),
        (
            &[
                "--passthrough",
                "--observe",
                "--policy",
                "shell",
                "--",
                "/bin/true",
            ],
            77,
            "allow_observe",
        ),
        (
            &["--passthrough", "--policy", "rootonly", "--", "/bin/true"],
            77,
            "may not use policy rootonly",
        ),
        (
            &["--passthrough", "--policy", "asroot", "--", "/bin/true"],
            78,
            "only root may launch a server as another user",
        ),
    ];
    for (args, code, why) in refusals {
        let out = agent
            .exec(&guard, NOBODY, args)
            .stdin(Stdio::null())
            .output()
            .expect("exec");
        assert_eq!(
            out.status.code(),
            Some(code),
            "{args:?}: {}",
            describe(&out)
        );
        assert!(
            String::from_utf8_lossy(&out.stderr).contains(why),
            "{args:?}: {}",
            describe(&out)
        );
    }
    // Root may use a policy file; its server runs as the unprivileged server user unless the
    // policy says user = "root", and then that start says so.
    let as_root = dir.join("policies/asroot.toml").display().to_string();
    let (server_uid, _) = server_user();
    for (policy, uid) in [(&policy_file, server_uid), (&as_root, 0)] {
        let out = agent
            .exec(
                &guard,
                0,
                &[
                    "--passthrough",
                    "--policy",
                    policy,
                    "--",
                    "/bin/sh",
                    "-c",
                    "id -u",
                ],
            )
            .env_remove("SUDO_UID")
            .stdin(Stdio::null())
            .output()
            .expect("exec");
        assert!(out.status.success(), "{}", describe(&out));
        assert_eq!(String::from_utf8_lossy(&out.stdout), format!("{uid}\n"));
        assert_eq!(
            String::from_utf8_lossy(&out.stderr).contains("runs as root"),
            uid == 0,
            "{}",
            describe(&out)
        );
    }
    drop(agent);
    assert!(
        pins.pinned_cgroups().is_empty(),
        "{:?}",
        pins.pinned_cgroups()
    );
    let _ = std::fs::remove_dir_all(&dir);
}

/// A session through the agent, as nobody, whose server connects to 127.0.0.1:9 for each line
/// it reads and prints what it got. Port 9 is open to landlock (the policy allows
/// 10.0.0.0/8:9), so that address is judged by the eBPF programs alone.
struct Probe {
    child: Child,
    stdin: std::process::ChildStdin,
    stdout: BufReader<std::process::ChildStdout>,
}

/// A test's agent dir, pins and public copies of mcp-guard and the probe, with the policy.
struct ProbeSetup {
    dir: PathBuf,
    pins: PinDir,
    public: Public,
    guard: PathBuf,
    netprobe: PathBuf,
}

impl ProbeSetup {
    fn new(name: &str) -> ProbeSetup {
        let dir = test_dir(name);
        let public = Public::new(name);
        let guard = public.copy(&mcp_guard(), "mcp-guard");
        let netprobe = public.copy(&workspace_bin("netprobe"), "netprobe");
        shell_policy(
            &dir,
            "probe",
            &public.0,
            "[network]\nallow = [\"10.0.0.0/8:9\"]",
        );
        ProbeSetup {
            dir,
            pins: PinDir::new(name),
            public,
            guard,
            netprobe,
        }
    }

    fn start(&self, agent: &Agent) -> Probe {
        let script = format!(
            "while read go; do {} tcp:127.0.0.1:9; done",
            self.netprobe.display()
        );
        let mut child = agent
            .exec(
                &self.guard,
                NOBODY,
                &[
                    "--passthrough",
                    "--policy",
                    "probe",
                    "--",
                    "/bin/sh",
                    "-c",
                    &script,
                ],
            )
            .current_dir(&self.public.0)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .expect("start exec");
        Probe {
            stdin: child.stdin.take().expect("stdin"),
            stdout: BufReader::new(child.stdout.take().expect("stdout")),
            child,
        }
    }

    /// Waits until the agent's pinned attachments are all gone.
    fn wait_unpinned(&self) {
        let deadline = Instant::now() + Duration::from_secs(10);
        while !self.pins.pinned_cgroups().is_empty() {
            assert!(
                Instant::now() < deadline,
                "{:?}",
                self.pins.pinned_cgroups()
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }
}

impl Probe {
    /// One connect: its outcome (`errno 1` is EPERM).
    fn connect(&mut self) -> String {
        writeln!(self.stdin, "go").expect("write");
        let mut line = String::new();
        self.stdout
            .read_line(&mut line)
            .expect("the server's answer");
        line.trim().to_string()
    }

    fn running(&mut self) -> bool {
        self.child.try_wait().expect("exec").is_none()
    }

    /// SIGTERM to exec; its exit status.
    fn terminate(mut self) -> Option<i32> {
        let term = Command::new("kill")
            .arg(self.child.id().to_string())
            .status()
            .expect("kill(1)");
        assert!(term.success());
        self.child.wait().expect("reap exec").code()
    }
}

/// Waits until the store holds `n` denied connects of the probe.
fn wait_denied(agent: &Agent, n: usize) {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let events = query(agent, &["events", "--server", "probe", "--kind", "connect"]);
        let denied = events
            .iter()
            .filter(|e| e["verdict"] == "denied" && e["port"] == 9)
            .count();
        if denied == n {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "{denied} denied connects recorded, not {n}: {events:?}\n{}",
            agent.log()
        );
        std::thread::sleep(Duration::from_millis(200));
    }
}

#[test]
fn agent_restarts_leave_its_sessions_enforced_and_the_next_agent_adopts_them() {
    require_root();
    let setup = ProbeSetup::new("restart");
    let mut agent = Agent::start(&setup.dir, &setup.pins, "");
    let addr = agent.addr.clone();
    let mut probe = setup.start(&agent);
    assert_eq!(probe.connect(), "errno 1", "with the agent");
    prom::wait_metric_is(&addr, "mcp_guard_servers_running", 1.0);

    // SIGKILL: nothing of the agent's runs any more, the pinned programs still judge.
    agent.kill();
    assert_eq!(
        probe.connect(),
        "errno 1",
        "the connect while no agent runs"
    );
    assert!(probe.running(), "the session ended with the agent");

    // A new agent adopts the session: it reports it, and its events (those made while no
    // agent ran included) reach the session's record.
    let mut agent = Agent::start_at(&setup.dir, &setup.pins, "", &addr, "agent2");
    prom::wait_metric_is(&addr, "mcp_guard_servers_running", 1.0);
    assert!(
        agent.log().contains("1 server(s) guarded from before"),
        "{}",
        agent.log()
    );
    wait_denied(&agent, 2);

    // SIGHUP with a broken policy file: the agent keeps the last good one and says why.
    let file = setup.dir.join("policies/probe.toml");
    let good = std::fs::read_to_string(&file).expect("policy");
    std::fs::write(&file, format!("{good}bogus = 1\n")).expect("break the policy");
    let hup = Command::new("kill")
        .args(["-HUP", &agent.pid().to_string()])
        .status()
        .expect("kill -HUP");
    assert!(hup.success());
    let deadline = Instant::now() + Duration::from_secs(10);
    while !agent
        .log()
        .contains("keeping the last good version of policy probe")
    {
        assert!(Instant::now() < deadline, "{}", agent.log());
        std::thread::sleep(Duration::from_millis(100));
    }
    let out = agent
        .exec(
            &setup.guard,
            NOBODY,
            &["--passthrough", "--policy", "probe", "--", "/bin/true"],
        )
        .stdin(Stdio::null())
        .output()
        .expect("exec");
    assert!(out.status.success(), "{}", describe(&out));

    // SIGTERM drains: the agent stops at once, the session goes on, enforced.
    assert!(agent.terminate().success(), "{}", agent.log());
    assert_eq!(probe.connect(), "errno 1", "after SIGTERM");
    let agent = Agent::start_at(&setup.dir, &setup.pins, "", &addr, "agent3");
    prom::wait_metric_is(&addr, "mcp_guard_servers_running", 1.0);

    // exec's SIGTERM reaches the session through the agent: it ends as exec would (143).
    assert_eq!(probe.terminate(), Some(143), "{}", agent.log());
    prom::wait_metric_is(&addr, "mcp_guard_servers_running", 0.0);
    setup.wait_unpinned();
    drop(agent);
    let _ = std::fs::remove_dir_all(&setup.dir);
}

#[test]
fn an_upgraded_agent_moves_running_sessions_onto_its_own_programs() {
    require_root();
    let setup = ProbeSetup::new("upgrade");
    let mut agent = Agent::start(&setup.dir, &setup.pins, "");
    let addr = agent.addr.clone();
    let mut probe = setup.start(&agent);
    assert_eq!(probe.connect(), "errno 1", "before the upgrade");
    agent.kill();

    // Make the running session's programs and maps look like another build's: the next agent
    // (this build) loads its own beside them.
    let versions: Vec<PathBuf> = std::fs::read_dir(&setup.pins.0)
        .expect("pin dir")
        .flatten()
        .map(|e| e.path())
        .collect();
    assert_eq!(versions.len(), 1, "{versions:?}");
    let old = setup.pins.0.join("0000000000000000");
    std::fs::rename(&versions[0], &old).expect("rename on bpffs");
    let agent = Agent::start_at(&setup.dir, &setup.pins, "", &addr, "agent2");
    assert!(
        agent.log().contains("0 server(s) guarded from before"),
        "{}",
        agent.log()
    );

    // The worker reconnects; the new agent guards its cgroup with its own programs, then drops
    // it from the old build's maps, and the old build's directory goes.
    let deadline = Instant::now() + Duration::from_secs(20);
    while old.exists() {
        assert!(
            Instant::now() < deadline,
            "the old build's pins are still there:\n{}",
            agent.log()
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    assert_eq!(probe.connect(), "errno 1", "after the upgrade");
    wait_denied(&agent, 2);
    assert_eq!(probe.terminate(), Some(143));
    setup.wait_unpinned();
    drop(agent);
    let _ = std::fs::remove_dir_all(&setup.dir);
}

#[test]
fn a_known_only_agent_launches_only_servers_with_a_policy_of_their_own() {
    require_root();
    let dir = test_dir("known");
    let pins = PinDir::new("known");
    shell_policy(&dir, "shell", Path::new("/usr"), "");
    let agent = Agent::start(&dir, &pins, "known_only = true\n");
    let out = agent
        .exec(&mcp_guard(), 0, &["--passthrough", "--", "/bin/true"])
        .stdin(Stdio::null())
        .output()
        .expect("exec");
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(77), "{}", describe(&out));
    assert!(
        err.contains("known_only")
            && err.contains("policy suggest")
            && err.contains("--policy NAME"),
        "{err}"
    );
    let out = agent
        .exec(
            &mcp_guard(),
            0,
            &["--passthrough", "--policy", "shell", "--", "/bin/true"],
        )
        .stdin(Stdio::null())
        .output()
        .expect("exec");
    assert!(out.status.success(), "{}", describe(&out));
    drop(agent);
    let _ = std::fs::remove_dir_all(&dir);
}
