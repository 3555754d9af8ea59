//! Server names and the state dir, attacked the way an unprivileged local user (`nobody`) who can
//! reach the agent's socket would: a server name is only a name (never a path into root's
//! writes), a name that belongs to another policy cannot be taken, a quarantine cannot be
//! escaped by renaming the server, what root writes under the state dir is private and never
//! follows a symlink someone planted, and `client-config --write` cannot be turned onto another
//! file by swapping the config's directory while root works on it.

use std::{
    io::Read,
    os::unix::fs::PermissionsExt,
    path::{Path, PathBuf},
    process::{Command, Output, Stdio},
    time::{Duration, Instant},
};

use mcp_guard_tests::{
    agent::{Agent, NOBODY, PinDir, Public},
    describe, fixture, mcp_guard, python, require_root, scratch_root, workspace_bin,
    workspace_root,
};

fn test_dir(name: &str) -> PathBuf {
    let dir = scratch_root()
        .join("mcp-guard-tests")
        .join(format!("trust-names-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).expect("test dir");
    dir
}

/// A policy for plain programs and the test's public files, written to `path` as `name`;
/// `more` is appended.
fn write_policy(path: &Path, name: &str, public: &Path, more: &str) {
    let public = public.display();
    std::fs::write(
        path,
        format!(
            "name = \"{name}\"\n[filesystem]\nread = [\"/usr\", \"/bin\", \"/lib\", \"/lib64\", \
             \"/etc\", \"{public}\"]\nexec = [\"/usr\", \"/bin\", \"/lib\", \"/lib64\", \
             \"{public}\"]\n{more}\n"
        ),
    )
    .expect("write policy");
}

/// Installs policy `name` in the agent's policy dir.
fn install_policy(dir: &Path, name: &str, public: &Path, more: &str) {
    let policies = dir.join("policies");
    std::fs::create_dir_all(&policies).expect("policy dir");
    write_policy(&policies.join(format!("{name}.toml")), name, public, more);
}

/// A shell command run as `nobody`.
fn as_nobody(script: &str) -> Output {
    Command::new("setpriv")
        .arg(format!("--reuid={NOBODY}"))
        .arg(format!("--regid={NOBODY}"))
        .args(["--clear-groups", "--", "/bin/sh", "-c", script])
        .output()
        .expect("setpriv")
}

/// The MCP SDK client (root) driving `command` (exec, as whoever it says) as its server: lists
/// the tools (which pins them) and calls `echo`.
fn mcp_client(command: &Command, cwd: &Path) -> Output {
    Command::new(python())
        .arg(fixture("mcp_client.py"))
        .args(["--call", "echo", r#"{"message": "hi"}"#, "--"])
        .arg(command.get_program())
        .args(command.get_args())
        .current_dir(cwd)
        .output()
        .expect("run the MCP client")
}

/// Every file and directory below `dir` (itself included), with its mode.
fn modes(dir: &Path) -> Vec<(PathBuf, bool, u32)> {
    let mut out = Vec::new();
    let meta = std::fs::symlink_metadata(dir).expect("stat");
    out.push((
        dir.to_path_buf(),
        meta.is_dir(),
        meta.permissions().mode() & 0o7777,
    ));
    if meta.is_dir() {
        for e in std::fs::read_dir(dir).expect("list").flatten() {
            out.extend(modes(&e.path()));
        }
    }
    out
}

/// An exec request sent straight to the agent's socket (argv: socket, server name), with stdin,
/// stdout, stderr and the working directory attached; prints the agent's first answer.
const RAW_CLIENT: &str = r#"
import json, os, socket, sys
s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
s.connect(sys.argv[1])
req = {"op": "exec", "policy": "shell", "name": sys.argv[2], "observe": False,
       "passthrough": True, "learn": False, "command": ["/bin/true"], "env": [], "umask": 18}
cwd = os.open(".", os.O_PATH)
socket.send_fds(s, [json.dumps(req).encode() + b"\n"], [0, 1, 2, cwd])
sys.stdout.write(s.makefile().readline())
"#;

/// The attack of the issue: `--name` with `..` walks root's pin write out of the state dir into
/// a directory nobody owns, where a planted `<name>.json.tmp` symlink points at a file of
/// root's. Before names were checked, root wrote the server's tool list into that file.
#[test]
fn a_traversal_name_cannot_make_root_overwrite_a_file() {
    require_root();
    let dir = test_dir("traversal");
    let pins = PinDir::new("trust-traversal");
    let public = Public::new("trust-traversal");
    let guard = public.copy(&mcp_guard(), "mcp-guard");
    let echo = public.copy(&workspace_bin("mcp_echo_server"), "mcp_echo_server");
    install_policy(&dir, "shell", &public.0, "");
    let agent = Agent::start(&dir, &pins, "");

    // Root's file, and the attacker's own directory with the planted symlink.
    let victim = dir.join("victim");
    std::fs::write(&victim, "precious\n").expect("victim");
    let attacker = public.0.join("attacker");
    std::fs::create_dir(&attacker).expect("attacker dir");
    std::os::unix::fs::chown(&attacker, Some(NOBODY), Some(NOBODY)).expect("chown");
    let planted = as_nobody(&format!(
        "ln -s '{}' '{}/x.json.tmp'",
        victim.display(),
        attacker.display()
    ));
    assert!(planted.status.success(), "{}", describe(&planted));
    let name = format!("{}{}/x", "../".repeat(32), attacker.display());

    // Through the agent, as nobody, with a client that lists the tools (which pins them).
    let mut exec = agent.exec(
        &guard,
        NOBODY,
        &["--policy", "shell", "--name", &name, "--"],
    );
    exec.arg(&echo);
    let attempt = mcp_client(&exec, &public.0);
    assert_eq!(
        std::fs::read_to_string(&victim).expect("victim"),
        "precious\n",
        "root overwrote the file the planted symlink names\nclient: {}\nagent:\n{}",
        describe(&attempt),
        agent.log()
    );
    assert!(
        !attacker.join("x.json").exists(),
        "root wrote into the attacker's directory"
    );

    // The agent checks the name itself: a client of nobody's own making (not mcp-guard exec,
    // which checks first) sends the request over the socket with its descriptors.
    let raw = Command::new("setpriv")
        .arg(format!("--reuid={NOBODY}"))
        .arg(format!("--regid={NOBODY}"))
        .args(["--clear-groups", "--", "/usr/bin/python3", "-c", RAW_CLIENT])
        .arg(&agent.socket)
        .arg(&name)
        .current_dir(&public.0)
        .stdin(Stdio::null())
        .output()
        .expect("raw client");
    let reply: serde_json::Value =
        serde_json::from_slice(&raw.stdout).unwrap_or_else(|e| panic!("{e}: {}", describe(&raw)));
    assert_eq!(reply["op"], "refused", "{reply}\nagent:\n{}", agent.log());
    assert_eq!(reply["code"], 78, "{reply}");

    // The refusal itself: 78, naming the problem, through the agent and standalone.
    let out = agent
        .exec(
            &guard,
            NOBODY,
            &["--policy", "shell", "--name", &name, "--", "/bin/true"],
        )
        .stdin(Stdio::null())
        .output()
        .expect("exec");
    assert_eq!(out.status.code(), Some(78), "{}", describe(&out));
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("--name"),
        "{}",
        describe(&out)
    );
    let out = Command::new(mcp_guard())
        .arg("--state-dir")
        .arg(dir.join("standalone-state"))
        .args([
            "exec",
            "--standalone",
            "--passthrough",
            "--name",
            "../../tmp/x",
        ])
        .args(["--", "/bin/true"])
        .stdin(Stdio::null())
        .output()
        .expect("exec");
    assert_eq!(out.status.code(), Some(78), "{}", describe(&out));
    drop(agent);
    let _ = std::fs::remove_dir_all(&dir);
}

/// A state dir others can write (as the unprivileged test once used): `nobody` makes `pins`
/// in it and plants `pins/shell.json.tmp`, the temp file root's exec writes the pins of server
/// `shell` to, as a symlink to a file of root's. Before, root wrote the tool list through it.
#[test]
fn a_symlink_planted_in_the_state_dir_is_not_followed() {
    require_root();
    let dir = test_dir("planted");
    let public = Public::new("trust-planted");
    let echo = public.copy(&workspace_bin("mcp_echo_server"), "mcp_echo_server");
    let policy = dir.join("shell.toml");
    write_policy(&policy, "shell", &public.0, "");
    let victim = dir.join("victim");
    std::fs::write(&victim, "precious\n").expect("victim");
    let state = public.0.join("state");
    std::fs::create_dir(&state).expect("state");
    std::fs::set_permissions(&state, std::fs::Permissions::from_mode(0o777)).expect("chmod");
    let planted = as_nobody(&format!(
        "mkdir '{state}/pins' && ln -s '{}' '{state}/pins/shell.json.tmp'",
        victim.display(),
        state = state.display()
    ));
    assert!(planted.status.success(), "{}", describe(&planted));

    let mut exec = Command::new(mcp_guard());
    exec.arg("--state-dir")
        .arg(&state)
        .args(["exec", "--standalone", "--policy"])
        .arg(&policy)
        .arg("--")
        .arg(&echo);
    let attempt = mcp_client(&exec, &public.0);
    assert_eq!(
        std::fs::read_to_string(&victim).expect("victim"),
        "precious\n",
        "root followed the planted symlink\nclient: {}",
        describe(&attempt)
    );
    let out = exec.stdin(Stdio::null()).output().expect("exec");
    assert_eq!(out.status.code(), Some(78), "{}", describe(&out));
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("writable by group or others"),
        "{}",
        describe(&out)
    );
    let _ = std::fs::remove_dir_all(&dir);
}

/// `nobody` may use policy `shell` but not `vault`; taking vault's name under shell would put
/// what the session learns into vault's server's profile (and mix pins, quarantine and
/// records). Refused through the agent; root may, and its state stays shell's.
#[test]
fn a_name_of_another_policy_is_refused_through_the_agent() {
    require_root();
    let dir = test_dir("taken");
    let pins = PinDir::new("trust-taken");
    let public = Public::new("trust-taken");
    let guard = public.copy(&mcp_guard(), "mcp-guard");
    install_policy(&dir, "shell", &public.0, "");
    install_policy(&dir, "vault", &public.0, "[access]\nusers = [\"root\"]");
    let agent = Agent::start(&dir, &pins, "");
    let args = [
        "--passthrough",
        "--learn",
        "--policy",
        "shell",
        "--name",
        "vault",
        "--",
        "/bin/true",
    ];
    let out = agent
        .exec(&guard, NOBODY, &args)
        .current_dir(&public.0)
        .stdin(Stdio::null())
        .output()
        .expect("exec");
    let profiles = agent.state.join("profiles");
    let written: Vec<_> = std::fs::read_dir(&profiles)
        .into_iter()
        .flatten()
        .flatten()
        .map(|e| e.path())
        .collect();
    assert!(
        !profiles.join("vault.json").exists() && !profiles.join("vault/vault.json").exists(),
        "nobody's session wrote vault's profile: {written:?}\n{}",
        describe(&out)
    );
    assert_eq!(out.status.code(), Some(78), "{}", describe(&out));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("belongs to policy vault") && err.contains("--policy vault"),
        "{err}"
    );

    // Root may (standalone here), and what it learns is kept under shell's name for vault.
    let out = Command::new(mcp_guard())
        .arg("--state-dir")
        .arg(&agent.state)
        .arg("--policy-dir")
        .arg(&agent.policies)
        .args(["exec", "--standalone"])
        .args(args)
        .current_dir(&public.0)
        .stdin(Stdio::null())
        .output()
        .expect("exec as root");
    assert_eq!(out.status.code(), Some(0), "{}", describe(&out));
    assert!(
        profiles.join("shell/vault.json").exists() && !profiles.join("vault/vault.json").exists(),
        "{:?}",
        modes(&profiles)
    );
    drop(agent);
    let _ = std::fs::remove_dir_all(&dir);
}

/// `nobody` runs a server as `qs` under policy `team`; root quarantines `qs`. Before, the same
/// server under the same policy started again as `--name other`.
#[test]
fn a_quarantined_server_cannot_start_under_another_name() {
    require_root();
    let dir = test_dir("quarantine");
    let pins = PinDir::new("trust-quarantine");
    let public = Public::new("trust-quarantine");
    let guard = public.copy(&mcp_guard(), "mcp-guard");
    install_policy(&dir, "team", &public.0, "");
    let agent = Agent::start(&dir, &pins, "");
    let run = |args: &[&str]| -> Output {
        let mut all = vec!["--passthrough"];
        all.extend_from_slice(args);
        all.extend_from_slice(&["--", "/bin/true"]);
        agent
            .exec(&guard, NOBODY, &all)
            .current_dir(&public.0)
            .stdin(Stdio::null())
            .output()
            .expect("exec")
    };
    let first = run(&["--policy", "team", "--name", "qs"]);
    assert_eq!(first.status.code(), Some(0), "{}", describe(&first));

    let q = Command::new(mcp_guard())
        .arg("--state-dir")
        .arg(&agent.state)
        .arg("--policy-dir")
        .arg(&agent.policies)
        .args(["quarantine", "qs", "--reason", "incident 7"])
        .output()
        .expect("quarantine");
    assert!(q.status.success(), "{}", describe(&q));

    let renamed = run(&["--policy", "team", "--name", "other"]);
    assert_eq!(
        renamed.status.code(),
        Some(77),
        "the quarantined server started under another name: {}",
        describe(&renamed)
    );
    let err = String::from_utf8_lossy(&renamed.stderr);
    assert!(
        err.contains("quarantined") && err.contains("incident 7") && err.contains("release qs"),
        "{err}"
    );
    // Its name is refused under any policy, the shared default included.
    let by_name = run(&["--name", "qs"]);
    assert_eq!(by_name.status.code(), Some(77), "{}", describe(&by_name));
    // Other servers under the shared default policy are not the quarantined one.
    let unrelated = run(&["--name", "unrelated"]);
    assert_eq!(unrelated.status.code(), Some(0), "{}", describe(&unrelated));

    let released = Command::new(mcp_guard())
        .arg("--state-dir")
        .arg(&agent.state)
        .args(["release", "qs"])
        .output()
        .expect("release");
    assert!(released.status.success(), "{}", describe(&released));
    let again = run(&["--policy", "team", "--name", "other"]);
    assert_eq!(again.status.code(), Some(0), "{}", describe(&again));
    drop(agent);
    let _ = std::fs::remove_dir_all(&dir);
}

/// Root's standalone exec, under umask 0, makes every directory of a fresh state dir 0700 or
/// 0750 and every file 0600 or 0640: the store, the pins (tool descriptions), the learned
/// profile. Before, they were 0777 / 0666 here (0755 / 0644 under the usual umask).
#[test]
fn a_standalone_exec_makes_the_state_dir_private() {
    require_root();
    let dir = test_dir("modes");
    let public = Public::new("trust-modes");
    let echo = public.copy(&workspace_bin("mcp_echo_server"), "mcp_echo_server");
    let policy = dir.join("echo.toml");
    write_policy(&policy, "echo", &public.0, "");
    let state = dir.join("var/lib/mcp-guard");
    let mut exec = Command::new("/bin/sh");
    exec.args(["-c", "umask 000; exec \"$@\"", "sh"])
        .arg(mcp_guard())
        .arg("--state-dir")
        .arg(&state)
        .args(["exec", "--standalone", "--learn", "--policy"])
        .arg(&policy)
        .arg("--")
        .arg(&echo);
    let out = mcp_client(&exec, &public.0);
    assert!(out.status.success(), "{}", describe(&out));
    let all = modes(&state);
    assert!(
        all.iter()
            .any(|(p, _, _)| p.ends_with("pins/echo/echo.json"))
            && all
                .iter()
                .any(|(p, _, _)| p.ends_with("profiles/echo/echo.json"))
            && all.iter().any(|(p, _, _)| p.ends_with("mcp-guard.db")),
        "{all:#?}"
    );
    let open: Vec<_> = all
        .iter()
        .filter(|(_, is_dir, mode)| {
            if *is_dir {
                ![0o700, 0o750].contains(mode)
            } else {
                ![0o600, 0o640].contains(mode)
            }
        })
        .map(|(p, _, mode)| format!("{} {mode:o}", p.display()))
        .collect();
    assert!(open.is_empty(), "not private: {open:#?}");
    let _ = std::fs::remove_dir_all(&dir);
}

/// The config's directory belongs to `nobody`. Its config is a FIFO: root's `client-config
/// --write` blocks reading it while nobody feeds it a config, swaps the directory for a symlink
/// to a directory of root's holding a file of the config's name, and only then ends the read.
/// Before, root resolved the path after reading, and replaced root's file (and wrote a backup
/// next to it); now the config is read, backed up and replaced through one descriptor of the
/// directory it was found in, and a FIFO is refused without waiting on it.
#[test]
fn client_config_write_cannot_be_turned_onto_another_file() {
    require_root();
    let dir = test_dir("client-config");
    let public = Public::new("trust-client-config");
    let home = public.0.join("home");
    std::fs::create_dir(&home).expect("home");
    std::os::unix::fs::chown(&home, Some(NOBODY), Some(NOBODY)).expect("chown");
    let etc = dir.join("etc");
    std::fs::create_dir(&etc).expect("victim dir");
    std::fs::write(etc.join("config.json"), "precious\n").expect("victim");
    let made = as_nobody(&format!(
        "mkdir '{0}/cfg' && mkfifo '{0}/cfg/config.json'",
        home.display()
    ));
    assert!(made.status.success(), "{}", describe(&made));

    let mut root = Command::new(mcp_guard())
        .arg("--policy-dir")
        .arg(workspace_root().join("policies"))
        .arg("client-config")
        .arg(home.join("cfg/config.json"))
        .arg("--write")
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("client-config");
    // nobody: open the FIFO (root's open returns), write a config, swap the directory, close.
    let config = r#"{"mcpServers": {"time": {"command": "uvx", "args": ["mcp-server-time"]}}}"#;
    let mut attacker = Command::new("setpriv")
        .arg(format!("--reuid={NOBODY}"))
        .arg(format!("--regid={NOBODY}"))
        .args(["--clear-groups", "--", "timeout", "20", "/bin/sh", "-c"])
        .arg(format!(
            "exec 3>'{home}/cfg/config.json' && printf '%s' '{config}' >&3 && \
             mv '{home}/cfg' '{home}/cfg.moved' && ln -s '{etc}' '{home}/cfg' && exec 3>&-",
            home = home.display(),
            etc = etc.display()
        ))
        .spawn()
        .expect("attacker");
    let deadline = Instant::now() + Duration::from_secs(30);
    let status = loop {
        if let Some(s) = root.try_wait().expect("wait") {
            break s;
        }
        assert!(Instant::now() < deadline, "client-config hangs");
        std::thread::sleep(Duration::from_millis(50));
    };
    let mut err = String::new();
    root.stderr
        .take()
        .expect("stderr")
        .read_to_string(&mut err)
        .expect("stderr");
    // The attacker blocks opening the FIFO when root does not read it: stop it (TERM, which
    // `timeout` passes on to its shell).
    let _ = Command::new("kill").arg(attacker.id().to_string()).status();
    let _ = attacker.wait();

    let victims: Vec<_> = std::fs::read_dir(&etc)
        .expect("list")
        .flatten()
        .map(|e| e.file_name())
        .collect();
    assert_eq!(
        std::fs::read_to_string(etc.join("config.json")).expect("victim"),
        "precious\n",
        "root replaced its own file through the swapped directory ({status}: {err})"
    );
    assert_eq!(victims.len(), 1, "root wrote there: {victims:?}");
    assert!(!status.success(), "{err}");
    assert!(err.contains("not a regular file"), "{err}");
    let _ = std::fs::remove_dir_all(&dir);
}
