//! The policy loop a user follows for a new server, on each of the six reference servers:
//! `exec --observe` records a session, `policy suggest` writes a policy from it, the policy passes
//! `policy check`, is one a reviewer can read (package roots rather than every file, a reason on
//! every line, the tools called, limits from the peaks), and the same session run enforced under
//! it answers the same and is denied nothing.

use std::{
    path::{Path, PathBuf},
    process::Command,
};

use mcp_guard_tests::{
    describe, fixture, fresh_dir, give_to_server_user, mcp_guard, npm_server, python, require_root,
    workspace_root,
};
use serde_json::Value;

/// A fresh directory outside /tmp (the jail gives the server a private /tmp of its own).
fn data_dir(tag: &str) -> PathBuf {
    fresh_dir("suggest-loop", tag)
}

fn venv_bin(name: &str) -> String {
    workspace_root()
        .join(".venv/bin")
        .join(name)
        .display()
        .to_string()
}

/// One session of the SDK client against `mcp-guard --state-dir STATE exec MODE --name NAME --
/// COMMAND`: its answer (server, tools, call).
fn session(
    mode: &[&str],
    state: &Path,
    name: &str,
    call: Option<(&str, &str)>,
    command: &[&str],
) -> Value {
    let mut client = Command::new(python());
    client.arg(fixture("mcp_client.py"));
    if let Some((tool, args)) = call {
        client.args(["--call", tool, args]);
    }
    client
        .arg("--")
        .arg(mcp_guard())
        .arg("--state-dir")
        .arg(state)
        .arg("exec")
        .args(mode)
        .args(["--name", name, "--"])
        .args(command);
    let output = client.output().expect("run the MCP client");
    assert!(
        output.status.success(),
        "{name} {mode:?} did not answer:\n{}",
        describe(&output)
    );
    serde_json::from_slice(&output.stdout).expect("client JSON")
}

/// The entry lines of a TOML array in `policy` (`  "x",  # why`).
fn entries(policy: &str) -> Vec<&str> {
    policy
        .lines()
        .filter(|l| l.trim_start().starts_with('"'))
        .collect()
}

/// Observe → suggest → check → enforce, for one server; returns the suggested policy and the two
/// answers (observed, enforced).
fn policy_loop(
    name: &str,
    dir: &Path,
    call: Option<(&str, &str)>,
    command: &[&str],
) -> (String, Value, Value) {
    let observed_state = dir.join("observed");
    let observed = session(&["--observe"], &observed_state, name, call, command);
    let out = Command::new(mcp_guard())
        .arg("--state-dir")
        .arg(&observed_state)
        .args(["policy", "suggest", "--server", name])
        .output()
        .expect("run policy suggest");
    assert!(out.status.success(), "{}", describe(&out));
    let policy = String::from_utf8(out.stdout).expect("UTF-8 policy");
    let file = dir.join(format!("{name}.toml"));
    std::fs::write(&file, &policy).expect("write the suggestion");
    let check = Command::new(mcp_guard())
        .args(["policy", "check"])
        .arg(&file)
        .output()
        .expect("run policy check");
    assert!(
        check.status.success(),
        "policy check rejected the suggestion:\n{policy}\n{}",
        describe(&check)
    );
    // Reviewable: one line per package root, and every line says why it is there.
    let lines = entries(&policy);
    let node = lines.iter().filter(|l| l.contains("node_modules")).count();
    assert!(
        node <= 1,
        "node_modules not collapsed to its root:\n{policy}"
    );
    for l in &lines {
        assert!(
            l.contains(",  # "),
            "a line without its reason: {l}\n{policy}"
        );
    }
    assert!(
        lines.len() < 60,
        "{} lines is not reviewable:\n{policy}",
        lines.len()
    );
    assert!(
        policy.contains("\n[limits]\nmemory = \""),
        "no memory limit from the peak:\n{policy}"
    );
    assert!(
        policy.contains("\npids = "),
        "no pids limit from the peak:\n{policy}"
    );
    if let Some((tool, _)) = call {
        assert!(
            policy.contains(&format!(
                "[tools]\nallow = [\n  \"{tool}\",  # tool: 1 call"
            )),
            "the called tool is not the allowlist:\n{policy}"
        );
    }

    let enforced_state = dir.join("enforced");
    let mode = ["--policy", file.to_str().expect("UTF-8 path")];
    let enforced = session(&mode, &enforced_state, name, call, command);
    let events = Command::new(mcp_guard())
        .arg("--state-dir")
        .arg(&enforced_state)
        .args(["events", "--server", name, "--json"])
        .output()
        .expect("run events");
    assert!(events.status.success(), "{}", describe(&events));
    let denied: Vec<Value> = String::from_utf8_lossy(&events.stdout)
        .lines()
        .map(|l| serde_json::from_str::<Value>(l).expect("event JSON"))
        .filter(|e| e["verdict"] != "allowed" || e["would_deny"] == true)
        .collect();
    assert!(
        denied.is_empty(),
        "the suggested policy denied what the observed session did:\n{denied:#?}\n{policy}"
    );
    assert_eq!(observed["server"], enforced["server"]);
    (policy, observed, enforced)
}

fn call_ok(answer: &Value) -> &str {
    assert_eq!(answer["call"]["is_error"], false, "{answer}");
    answer["call"]["text"].as_str().expect("call text")
}

#[test]
fn filesystem_server_policy_loop() {
    require_root();
    let dir = data_dir("filesystem");
    let served = dir.join("served");
    std::fs::create_dir_all(&served).expect("served dir");
    std::fs::write(served.join("notes.txt"), "hello from the test\n").expect("write file");
    give_to_server_user(&served);
    let server = npm_server("@modelcontextprotocol/server-filesystem");
    let args = format!("{{\"path\": \"{}\"}}", served.join("notes.txt").display());
    let (policy, observed, enforced) = policy_loop(
        "filesystem",
        &dir,
        Some(("read_text_file", &args)),
        &[
            "node",
            server.to_str().expect("UTF-8"),
            served.to_str().expect("UTF-8"),
        ],
    );
    assert_eq!(call_ok(&observed), "hello from the test\n");
    assert_eq!(call_ok(&enforced), call_ok(&observed));
    // The file the call read is granted, by the call that read it.
    assert!(
        policy.contains(&format!(
            "\"{}\",  # file: 1 open in 1 session, during read_text_file ×1",
            served.join("notes.txt").display()
        )),
        "{policy}"
    );
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn memory_server_policy_loop() {
    require_root();
    let dir = data_dir("memory");
    let server = npm_server("@modelcontextprotocol/server-memory");
    let (_, observed, enforced) = policy_loop(
        "memory",
        &dir,
        Some(("read_graph", "{}")),
        &["node", server.to_str().expect("UTF-8")],
    );
    assert_eq!(call_ok(&enforced), call_ok(&observed));
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn everything_server_policy_loop() {
    require_root();
    let dir = data_dir("everything");
    let server = npm_server("@modelcontextprotocol/server-everything");
    let (_, observed, enforced) = policy_loop(
        "everything",
        &dir,
        Some(("echo", "{\"message\": \"suggested\"}")),
        &["node", server.to_str().expect("UTF-8"), "stdio"],
    );
    assert_eq!(call_ok(&observed), "Echo: suggested");
    assert_eq!(call_ok(&enforced), "Echo: suggested");
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn time_server_policy_loop() {
    require_root();
    let dir = data_dir("time");
    let (policy, observed, enforced) = policy_loop(
        "time",
        &dir,
        Some(("get_current_time", "{\"timezone\": \"Europe/Paris\"}")),
        &[&venv_bin("mcp-server-time")],
    );
    for answer in [&observed, &enforced] {
        let time: Value = serde_json::from_str(call_ok(answer)).expect("time JSON");
        assert_eq!(time["timezone"], "Europe/Paris", "{time}");
    }
    // The Python environment is one root, not its hundreds of modules.
    let venv = workspace_root()
        .join(".venv")
        .canonicalize()
        .expect(".venv");
    assert!(
        policy.contains(&format!("\"{}\",  # python environment: ", venv.display()))
            || policy.contains(&format!(
                "\"{}\",  # python environment: ",
                workspace_root().join(".venv").display()
            )),
        "{policy}"
    );
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn git_server_policy_loop() {
    require_root();
    let dir = data_dir("git");
    let repo = dir.join("repo");
    std::fs::create_dir_all(&repo).expect("repo dir");
    let git = |args: &[&str]| {
        let status = Command::new("git")
            .arg("-C")
            .arg(&repo)
            .args(args)
            .status()
            .expect("run git");
        assert!(status.success(), "git {args:?}");
    };
    git(&["init", "-q", "-b", "main"]);
    std::fs::write(repo.join("README"), "test repo\n").expect("write README");
    git(&["add", "README"]);
    git(&[
        "-c",
        "user.name=Test",
        "-c",
        "user.email=test@example.invalid",
        "commit",
        "-q",
        "-m",
        "first commit under test",
    ]);
    give_to_server_user(&repo);
    let args = format!(
        "{{\"repo_path\": \"{}\", \"max_count\": 1}}",
        repo.display()
    );
    let (_, observed, enforced) = policy_loop(
        "git",
        &dir,
        Some(("git_log", &args)),
        &[&venv_bin("mcp-server-git")],
    );
    assert!(
        call_ok(&observed).contains("first commit under test"),
        "{observed}"
    );
    assert!(
        call_ok(&enforced).contains("first commit under test"),
        "{enforced}"
    );
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn fetch_server_policy_loop() {
    require_root();
    let dir = data_dir("fetch");
    let (_, observed, enforced) =
        policy_loop("fetch", &dir, None, &[&venv_bin("mcp-server-fetch")]);
    assert_eq!(observed["tools"], enforced["tools"]);
    let _ = std::fs::remove_dir_all(&dir);
}
