//! The agent's trust boundaries, tried the way a local attacker would: an unprivileged user who
//! can reach the agent's socket opens sessions without end or holds idle connections to lock
//! others out; any local user reads `/metrics`; an MCP client declares another client's name to
//! get its tools. Each against the real agent (root, its own socket, pins and dirs) and real
//! processes of other users.
#![expect(
    clippy::float_cmp,
    reason = "Prometheus samples of counters and gauges here are small integers, exact in f64"
)]

use std::{
    io::{BufRead, BufReader},
    os::unix::fs::{MetadataExt as _, PermissionsExt as _},
    path::{Path, PathBuf},
    process::{Child, Command, Stdio},
    time::{Duration, Instant},
};

use mcp_guard_tests::{
    agent::{Agent, NOBODY, Options, PinDir, Public},
    describe, everything_policy, fixture, mcp_guard, npm_server,
    prom::{self, http_get_as, unix_http_get},
    python, require_root, scratch_root, workspace_root,
};
use serde_json::{Value, json};

/// A second unprivileged user with a passwd entry on every Debian system (`daemon`).
const OTHER_USER: u32 = 1;

/// The system's Python, which every user may run (the test venv's may be under /root).
const SYSTEM_PYTHON: &str = "/usr/bin/python3";

fn test_dir(name: &str) -> PathBuf {
    let dir = scratch_root()
        .join("mcp-guard-tests")
        .join(format!("trust-agent-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).expect("test dir");
    dir
}

/// A policy for plain programs, installed in the agent's policy dir as `name`.
fn shell_policy(agent_dir: &Path, name: &str, extra: &Path) {
    let dir = agent_dir.join("policies");
    std::fs::create_dir_all(&dir).expect("policy dir");
    let extra = extra.display();
    std::fs::write(
        dir.join(format!("{name}.toml")),
        format!(
            "name = \"{name}\"\n[filesystem]\nread = [\"/usr\", \"/bin\", \"/lib\", \"/lib64\", \
             \"/etc\", \"{extra}\"]\nexec = [\"/usr\", \"/bin\", \"/lib\", \"/lib64\", \
             \"{extra}\"]\n"
        ),
    )
    .expect("write policy");
}

/// `script` run by the system Python as `uid` (its own gid, no other groups).
fn python_as(uid: u32, script: &str) -> Command {
    assert!(
        Path::new(SYSTEM_PYTHON).exists(),
        "{SYSTEM_PYTHON} is missing: run `cargo xtask setup` (Debian package python3)"
    );
    let mut cmd = Command::new("setpriv");
    cmd.arg(format!("--reuid={uid}"))
        .arg(format!("--regid={uid}"))
        .args(["--clear-groups", "--", SYSTEM_PYTHON, "-c", script]);
    cmd
}

fn wait_metric(agent: &Agent, name: &str, want: f64) {
    let within = Duration::from_secs(30);
    prom::wait_metric(&agent.addr, name, within, |v| v == want, || agent.log());
}

/// A session of `uid` through the agent whose server (`cat`) runs until exec's stdin closes.
fn held_session(agent: &Agent, guard: &Path, public: &Path, uid: u32) -> Child {
    agent
        .exec(
            guard,
            uid,
            &["--passthrough", "--policy", "shell", "--", "/bin/cat"],
        )
        .current_dir(public)
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start exec")
}

/// A one-shot session of `uid` (`/bin/true`).
fn quick_session(agent: &Agent, guard: &Path, public: &Path, uid: u32) -> std::process::Output {
    agent
        .exec(
            guard,
            uid,
            &["--passthrough", "--policy", "shell", "--", "/bin/true"],
        )
        .current_dir(public)
        .stdin(Stdio::null())
        .output()
        .expect("exec")
}

#[test]
fn an_unprivileged_user_is_held_to_max_sessions_per_user() {
    require_root();
    let dir = test_dir("cap");
    let pins = PinDir::new("trust-cap");
    let public = Public::new("trust-cap");
    let guard = public.copy(&mcp_guard(), "mcp-guard");
    shell_policy(&dir, "shell", &public.0);
    let agent = Agent::start(&dir, &pins, "max_sessions_per_user = 3\n");

    // nobody opens sessions up to the cap: each is a root worker and a jailed server.
    let mut held: Vec<Child> = (0..3)
        .map(|_| held_session(&agent, &guard, &public.0, NOBODY))
        .collect();
    wait_metric(&agent, "mcp_guard_servers_running", 3.0);

    // The next one is refused, naming the cap and its key, with the "try later" status.
    let out = quick_session(&agent, &guard, &public.0, NOBODY);
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(75), "{}", describe(&out));
    assert!(
        err.contains("max_sessions_per_user = 3") && err.contains("already runs 3 session(s)"),
        "{err}"
    );
    // The cap is per user: another user and root still get sessions.
    for uid in [OTHER_USER, 0] {
        let out = quick_session(&agent, &guard, &public.0, uid);
        assert!(out.status.success(), "uid {uid}: {}", describe(&out));
    }

    // One of nobody's sessions ends (its client closes stdin): a new one is accepted.
    let mut first = held.remove(0);
    drop(first.stdin.take());
    let status = first.wait().expect("reap exec");
    assert!(status.success(), "the first session: {status}");
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        let out = quick_session(&agent, &guard, &public.0, NOBODY);
        if out.status.success() {
            break;
        }
        assert_eq!(out.status.code(), Some(75), "{}", describe(&out));
        assert!(
            Instant::now() < deadline,
            "the ended session's place never came back: {}\n{}",
            describe(&out),
            agent.log()
        );
        std::thread::sleep(Duration::from_millis(200));
    }
    for mut c in held {
        drop(c.stdin.take());
        c.wait().expect("reap exec");
    }
    wait_metric(&agent, "mcp_guard_servers_running", 0.0);
    drop(agent);
    let _ = std::fs::remove_dir_all(&dir);
}

/// Holds `n` connections to `socket` as `uid`, sending nothing; prints `held N refused M` once
/// they are open (M: those the agent answered and closed within a second), then waits for
/// stdin to close.
const HOG: &str = r#"
import resource, select, socket, sys, time
path, n = sys.argv[1], int(sys.argv[2])
soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
conns = []
for _ in range(n):
    s = socket.socket(socket.AF_UNIX)
    s.settimeout(2)
    try:
        s.connect(path)
    except OSError:
        s.close()
        break
    conns.append(s)
time.sleep(1)
poller = select.poll()
for s in conns:
    poller.register(s, select.POLLIN)
closed = len(poller.poll(0))
print(f"held {len(conns)} refused {closed}", flush=True)
sys.stdin.read()
"#;

#[test]
fn idle_connections_of_one_user_do_not_lock_another_out() {
    require_root();
    let dir = test_dir("idle");
    let pins = PinDir::new("trust-idle");
    let public = Public::new("trust-idle");
    let guard = public.copy(&mcp_guard(), "mcp-guard");
    shell_policy(&dir, "shell", &public.0);
    // Systemd's default descriptor limit for a service.
    let agent = Agent::start_with(
        &dir,
        &pins,
        "",
        &Options {
            nofile: Some(1024),
            ..Options::default()
        },
    );

    // nobody opens more connections than the agent has descriptors, and sends nothing.
    let mut hog = python_as(NOBODY, HOG)
        .arg(&agent.socket)
        .arg("1100")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start the idle connections");
    let mut line = String::new();
    BufReader::new(hog.stdout.take().expect("hog stdout"))
        .read_line(&mut line)
        .expect("hog report");
    let counts: Vec<usize> = line
        .split_whitespace()
        .filter_map(|w| w.parse().ok())
        .collect();
    if counts.len() != 2 {
        let _ = hog.kill();
        let out = hog.wait_with_output().expect("hog");
        panic!("the idle connections: {line:?} {}", describe(&out));
    }
    let (held, refused) = (counts[0], counts[1]);
    assert!(held >= 1000, "only {held} connections opened: {line}");

    // Another user's exec gets its session at once (well within the agent's request timeout).
    let started = Instant::now();
    let out = quick_session(&agent, &guard, &public.0, OTHER_USER);
    let took = started.elapsed();
    assert!(out.status.success(), "{}\n{}", describe(&out), agent.log());
    assert!(
        took < Duration::from_secs(5),
        "the other user's session took {took:?} behind nobody's {held} idle connections"
    );
    // nobody's connections past its share were answered and closed at once.
    assert!(
        refused + 8 >= held,
        "{refused} of {held} idle connections were refused"
    );
    assert!(
        agent.log().contains("connections from uid 65534 waiting"),
        "{}",
        agent.log()
    );
    drop(hog.stdin.take());
    let _ = hog.wait();
    drop(agent);
    let _ = std::fs::remove_dir_all(&dir);
}

/// A random token in a file, owned by root with `mode`.
fn token_file(dir: &Path, mode: u32) -> (PathBuf, String) {
    let mut bytes = [0u8; 24];
    std::fs::File::open("/dev/urandom")
        .and_then(|mut f| std::io::Read::read_exact(&mut f, &mut bytes))
        .expect("urandom");
    let token: String = bytes.iter().map(|b| format!("{b:02x}")).collect();
    let path = dir.join("metrics.token");
    std::fs::write(&path, format!("{token}\n")).expect("token file");
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(mode)).expect("chmod");
    (path, token)
}

/// Starts an agent that must refuse to start; its exit status and stderr.
fn refused_start(dir: &Path, pins: &PinDir, config: &str) -> (Option<i32>, String) {
    let config_path = dir.join("refused.toml");
    std::fs::write(&config_path, config).expect("config");
    let mut child = Command::new(mcp_guard())
        .arg("--state-dir")
        .arg(dir.join("state"))
        .arg("--policy-dir")
        .arg(dir.join("policies"))
        .arg("agent")
        .arg("--config")
        .arg(&config_path)
        .arg("--socket")
        .arg(dir.join("refused.sock"))
        .arg("--bpf-dir")
        .arg(&pins.0)
        .args(["--metrics", "127.0.0.1:0"])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start the agent");
    let deadline = Instant::now() + Duration::from_secs(20);
    let status = loop {
        if let Some(status) = child.try_wait().expect("agent status") {
            break status;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            panic!("the agent started with {config:?}");
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    let mut err = String::new();
    std::io::Read::read_to_string(&mut child.stderr.take().expect("stderr"), &mut err)
        .expect("stderr");
    (status.code(), err)
}

#[test]
fn metrics_demand_the_bearer_token_of_a_root_only_file() {
    require_root();
    let dir = test_dir("token");
    let pins = PinDir::new("trust-token");
    let (file, token) = token_file(&dir, 0o600);
    let agent = Agent::start(
        &dir,
        &pins,
        &format!("metrics_token_file = \"{}\"\n", file.display()),
    );

    // Any local user can connect to the loopback port: without the token, nothing.
    for wrong in [None, Some("0123456789abcdef0123456789abcdef")] {
        let (status, body) = http_get_as(&agent.addr, "/metrics", wrong).expect("answer");
        assert_eq!(status, 401, "token {wrong:?}: {body}");
        assert!(!body.contains("mcp_guard_"), "{body}");
    }
    let (status, body) = http_get_as(&agent.addr, "/metrics", Some(&token)).expect("answer");
    assert_eq!(status, 200, "{body}");
    for name in ["mcp_guard_servers_running", "mcp_guard_bpf_stats_enabled"] {
        assert!(body.contains(name), "no {name} in:\n{body}");
    }
    drop(agent);

    // A token others could read (or that another user owns) is no protection: the agent
    // refuses to start, saying why.
    let config = format!("metrics_token_file = \"{}\"\n", file.display());
    for (mode, owner, why) in [
        (0o644, 0, "mode 0644"),
        (0o640, 0, "mode 0640"),
        (0o600, NOBODY, "not root"),
    ] {
        std::fs::set_permissions(&file, std::fs::Permissions::from_mode(mode)).expect("chmod");
        std::os::unix::fs::chown(&file, Some(owner), None).expect("chown");
        let (code, err) = refused_start(&dir, &pins, &config);
        assert_eq!(code, Some(78), "mode {mode:o} owner {owner}: {err}");
        assert!(
            err.contains("metrics_token_file") && err.contains(why),
            "mode {mode:o} owner {owner}: {err}"
        );
    }
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn metrics_on_a_unix_socket_are_for_root_and_its_group_only() {
    require_root();
    let dir = test_dir("unix");
    let pins = PinDir::new("trust-unix");
    // In a directory every user may enter: the socket's own mode is what decides.
    let public = Public::new("trust-unix");
    let socket = public.0.join("metrics.sock");
    // Another user's group may scrape (e.g. the collector's); nobody may not.
    let mut agent = Agent::start_with(
        &dir,
        &pins,
        "metrics_socket_group = \"daemon\"\n",
        &Options {
            metrics: Some(format!("unix:{}", socket.display())),
            ..Options::default()
        },
    );
    let meta = std::fs::metadata(&socket).expect("metrics socket");
    assert_eq!(meta.mode() & 0o777, 0o660, "{:o}", meta.mode());
    assert_eq!((meta.uid(), meta.gid()), (0, OTHER_USER));
    let (status, body) = unix_http_get(&socket, "/metrics", None).expect("root's scrape");
    assert_eq!(status, 200, "{body}");
    assert!(body.contains("mcp_guard_servers_running"), "{body}");

    let connect = r#"
import socket, sys
s = socket.socket(socket.AF_UNIX)
try:
    s.connect(sys.argv[1])
except OSError as e:
    print(f"errno {e.errno}")
    sys.exit(0)
s.sendall(b"GET /metrics HTTP/1.0\r\nHost: x\r\n\r\n")
data = b""
while True:
    chunk = s.recv(65536)
    if not chunk:
        break
    data += chunk
print(data.split(b"\r\n", 1)[0].decode())
print("servers_running" if b"mcp_guard_servers_running" in data else "no metrics")
"#;
    let run = |uid: u32| {
        let out = python_as(uid, connect)
            .arg(&socket)
            .output()
            .expect("connect as another user");
        assert!(out.status.success(), "uid {uid}: {}", describe(&out));
        String::from_utf8_lossy(&out.stdout).into_owned()
    };
    assert_eq!(run(NOBODY).trim(), "errno 13", "nobody's connect");
    let member = run(OTHER_USER);
    assert!(
        member.contains(" 200 OK") && member.contains("servers_running"),
        "the group's scrape: {member}"
    );
    // A stopping agent takes its socket with it.
    assert!(agent.terminate().success(), "{}", agent.log());
    assert!(!socket.exists(), "the agent left its metrics socket behind");
    let _ = std::fs::remove_dir_all(&dir);
}

/// The everything server's policy (`extra` readable and runnable), with `get-sum` visible only
/// to the client named `ide` that runs from `ide_exe`, and `echo` to every other client.
fn scoped_policy(extra: &Path, ide_exe: &str) -> String {
    everything_policy(extra).replace("deny = [\"get-sum\"]", "deny = []")
        + &format!(
            "\n[tools.clients]\nide = {{ tools = [\"echo\", \"get-sum\"], exe = [\"{ide_exe}\"] }}\n\
             \"*\" = [\"echo\"]\n"
        )
}

/// The MCP Python SDK client declaring `client_name`, starting `command` as its server; its
/// results `[initialize, tools/list, get-sum call, echo call]`.
fn sdk_session(dir: &Path, client_name: &str, command: &[String], cwd: &Path) -> Vec<Value> {
    let n = std::fs::read_dir(dir).map_or(0, Iterator::count);
    let actions = dir.join(format!("actions-{n}.json"));
    let out = dir.join(format!("out-{n}.json"));
    std::fs::write(
        &actions,
        json!([
            {"op": "list_tools"},
            {"op": "call", "tool": "get-sum", "args": {"a": 1, "b": 2}},
            {"op": "call", "tool": "echo", "args": {"message": "scoped"}},
        ])
        .to_string(),
    )
    .expect("actions");
    let run = Command::new(python())
        .arg(fixture("mcp_sdk_actions.py"))
        .arg(&out)
        .arg(&actions)
        .arg(client_name)
        .args(command)
        .current_dir(cwd)
        .output()
        .expect("run the SDK client");
    assert!(run.status.success(), "client failed: {}", describe(&run));
    let text = std::fs::read_to_string(&out)
        .unwrap_or_else(|e| panic!("no results ({e}): {}", describe(&run)));
    serde_json::from_str::<Value>(&text)
        .expect("results")
        .as_array()
        .cloned()
        .expect("a list")
}

fn tools(results: &[Value]) -> Vec<String> {
    let mut names: Vec<String> = results[1]["tools"]
        .as_array()
        .unwrap_or_else(|| panic!("no tool list: {results:?}"))
        .iter()
        .filter_map(|t| t["name"].as_str().map(str::to_string))
        .collect();
    names.sort();
    names
}

/// `command` started through `shell` (`/bin/sh` or `/bin/bash`), which stays its parent.
fn through(shell: &str, command: &[String]) -> Vec<String> {
    let mut argv = vec![
        shell.to_string(),
        "-c".into(),
        "\"$@\"; exit $?".into(),
        "sh".into(),
    ];
    argv.extend_from_slice(command);
    argv
}

/// The honest client gets its scope; the same client running from another executable but
/// declaring the same name gets the scope of what it runs as (`"*"`).
#[track_caller]
fn check_scopes(honest: &[Value], impostor: &[Value]) {
    assert_eq!(tools(honest), ["echo", "get-sum"], "{honest:?}");
    let sum = honest[2]["result"]["content"][0]["text"]
        .as_str()
        .unwrap_or_else(|| panic!("get-sum refused to the real ide: {honest:?}"));
    assert!(sum.contains('3'), "{sum}");
    assert_eq!(tools(impostor), ["echo"], "{impostor:?}");
    let err = impostor[2]["error"]
        .as_str()
        .unwrap_or_else(|| panic!("get-sum answered to the impostor: {impostor:?}"));
    assert!(
        err.contains("mcp-guard") && err.contains("\"*\"") && err.contains("/usr/bin/bash"),
        "{err}"
    );
    assert!(
        impostor[3]["result"]["content"][0]["text"]
            .as_str()
            .is_some_and(|t| t.contains("scoped")),
        "{impostor:?}"
    );
}

#[test]
fn a_client_claiming_another_clients_name_gets_the_scope_of_its_executable() {
    require_root();
    let dir = test_dir("scope");
    let server = npm_server("@modelcontextprotocol/server-everything");

    // Standalone: the client (the SDK, on the venv's Python) starts exec itself.
    let installs = workspace_root()
        .join("tests/node_modules")
        .canonicalize()
        .expect("tests/node_modules: run `cargo xtask setup`");
    let ide = python().canonicalize().expect("venv python");
    let policy = dir.join("scoped.toml");
    std::fs::write(
        &policy,
        scoped_policy(&installs, &ide.display().to_string()),
    )
    .expect("policy");
    let exec: Vec<String> = [
        mcp_guard().display().to_string(),
        "--state-dir".into(),
        dir.join("state").display().to_string(),
        "exec".into(),
        "--standalone".into(),
        "--policy".into(),
        policy.display().to_string(),
        "--".into(),
        "node".into(),
        server.display().to_string(),
        "stdio".into(),
    ]
    .into();
    let honest = sdk_session(&dir, "ide", &exec, &dir);
    // Another program (here bash) declaring "ide".
    let impostor = sdk_session(&dir, "ide", &through("/bin/bash", &exec), &dir);
    check_scopes(&honest, &impostor);

    // Through the agent, as nobody: the agent reads the client's executable itself.
    let pins = PinDir::new("trust-scope");
    let public = Public::new("trust-scope");
    let guard = public.copy(&mcp_guard(), "mcp-guard");
    let modules = public.copy(&installs, "node_modules");
    let public_server = modules.join(
        server
            .strip_prefix(&installs)
            .or_else(|_| server.strip_prefix(workspace_root().join("tests/node_modules")))
            .expect("the server is in tests/node_modules"),
    );
    let policies = dir.join("agent/policies");
    std::fs::create_dir_all(&policies).expect("policy dir");
    // `/bin/sh` as written: the agent matches it by what it resolves to (dash).
    std::fs::write(
        policies.join("everything.toml"),
        scoped_policy(&public.0, "/bin/sh"),
    )
    .expect("policy");
    let agent = Agent::start(&dir.join("agent"), &pins, "");
    let exec: Vec<String> = [
        "setpriv".into(),
        format!("--reuid={NOBODY}"),
        format!("--regid={NOBODY}"),
        "--clear-groups".into(),
        "--".into(),
    ]
    .into_iter()
    .collect();
    let client = |shell: &str| {
        let inner: Vec<String> = [
            guard.display().to_string(),
            "exec".into(),
            "--agent-socket".into(),
            agent.socket.display().to_string(),
            "--policy".into(),
            "everything".into(),
            "--".into(),
            "node".into(),
            public_server.display().to_string(),
            "stdio".into(),
        ]
        .into();
        let mut argv = exec.clone();
        argv.extend(through(shell, &inner));
        argv
    };
    let honest = sdk_session(&dir, "ide", &client("/bin/sh"), &public.0);
    let impostor = sdk_session(&dir, "ide", &client("/bin/bash"), &public.0);
    check_scopes(&honest, &impostor);
    drop(agent);
    let _ = std::fs::remove_dir_all(&dir);
}
