//! The real reference MCP servers, started under `mcp-guard exec --policy policies/NAME.toml`
//! (the shipped policy), answer a real MCP client (the MCP Python SDK's): initialize, tools/list
//! and one ordinary tool call each return what the server returns without mcp-guard.
//!
//! The shipped policies grant the usual install locations (npx's cache, uvx's, pyenv, global
//! prefixes). The test environment installs the servers elsewhere: the npm servers in
//! `tests/node_modules` and the PyPI ones in `.venv`, both inside the workspace, which no shipped
//! policy grants (nor should: a workspace is the user's own code). So each test runs a copy of
//! the shipped policy with exactly those directories added to `read` and `exec` (and, for the
//! servers that work on user files, the test's own data directory added to `write`, standing in
//! for ~/Desktop or ~/src). Nothing else is changed.

use std::{
    path::{Path, PathBuf},
    process::Command,
};

use mcp_guard_tests::{
    fixture, fresh_dir, give_to_server_user, mcp_guard, npm_server, python, require_root,
    workspace_root,
};
use serde_json::Value;

/// A fresh directory outside /tmp (the jail gives the server a private /tmp of its own).
fn data_dir(tag: &str) -> PathBuf {
    fresh_dir("reference", tag)
}

/// Where the test environment installed the servers, resolved (landlock follows symlinks).
fn install_dirs() -> Vec<PathBuf> {
    [
        workspace_root().join("tests/node_modules"),
        workspace_root().join(".venv"),
    ]
    .iter()
    .map(|p| {
        p.canonicalize()
            .unwrap_or_else(|e| panic!("{}: {e}: run `cargo xtask setup`", p.display()))
    })
    .collect()
}

fn toml_list(paths: &[PathBuf]) -> String {
    paths
        .iter()
        .map(|p| format!("  \"{}\",\n", p.display()))
        .collect()
}

/// A copy of `policies/NAME.toml` in `dir` with the test environment's install dirs added to
/// `read` and `exec`, and `writable` added to `write`.
fn test_policy(name: &str, dir: &Path, writable: &[PathBuf]) -> PathBuf {
    let shipped = workspace_root()
        .join("policies")
        .join(format!("{name}.toml"));
    let text = std::fs::read_to_string(&shipped).expect("read shipped policy");
    let installs = toml_list(&install_dirs());
    let note = "  # Added by tests/tests/reference_servers.rs: the test environment's installs.\n";
    let mut copy = String::new();
    let mut sections = 0;
    for line in text.lines() {
        copy.push_str(line);
        copy.push('\n');
        match line {
            "read = [" | "exec = [" => {
                copy.push_str(note);
                copy.push_str(&installs);
                sections += 1;
            }
            "write = [" if !writable.is_empty() => {
                copy.push_str("  # Added by the test: its data directory.\n");
                copy.push_str(&toml_list(writable));
            }
            _ => {}
        }
    }
    assert_eq!(sections, 2, "{name}.toml has no read/exec list to extend");
    let path = dir.join(format!("{name}.toml"));
    std::fs::write(&path, copy).expect("write test policy");
    let check = Command::new(mcp_guard())
        .args(["policy", "check"])
        .arg(&path)
        .output()
        .expect("run policy check");
    assert!(
        check.status.success(),
        "test copy of {name}.toml is invalid: {}",
        String::from_utf8_lossy(&check.stderr)
    );
    path
}

/// Runs the SDK client against `mcp-guard exec --policy POLICY --name NAME -- COMMAND`.
fn guarded_session(
    policy: &Path,
    name: &str,
    state: &Path,
    call: Option<(&str, &str)>,
    command: &[&str],
) -> Value {
    guarded_session_env(policy, name, state, call, command, &[])
}

/// [`guarded_session`] with variables added to the client's environment (which exec inherits).
fn guarded_session_env(
    policy: &Path,
    name: &str,
    state: &Path,
    call: Option<(&str, &str)>,
    command: &[&str],
    env: &[(&str, &str)],
) -> Value {
    let mut client = Command::new(python());
    client.arg(fixture("mcp_client.py"));
    client.envs(env.iter().copied());
    if let Some((tool, args)) = call {
        client.args(["--call", tool, args]);
    }
    client
        .arg("--")
        .arg(mcp_guard())
        .arg("--state-dir")
        .arg(state)
        .args(["exec", "--policy"])
        .arg(policy)
        .args(["--name", name, "--"])
        .args(command);
    let output = client.output().expect("run the MCP client");
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        output.status.success(),
        "{name} under mcp-guard did not answer:\nstdout:\n{stdout}\nstderr:\n{stderr}"
    );
    serde_json::from_str(&stdout).unwrap_or_else(|e| panic!("{e}: {stdout}\nstderr:\n{stderr}"))
}

fn tools(answer: &Value) -> Vec<&str> {
    answer["tools"]
        .as_array()
        .expect("tools")
        .iter()
        .map(|t| t.as_str().expect("tool name"))
        .collect()
}

fn call_text(answer: &Value) -> &str {
    assert_eq!(answer["call"]["is_error"], false, "{answer}");
    answer["call"]["text"].as_str().expect("call text")
}

fn venv_bin(name: &str) -> String {
    workspace_root()
        .join(".venv/bin")
        .join(name)
        .display()
        .to_string()
}

#[test]
fn filesystem_server_answers_under_its_policy_and_cannot_leave_it() {
    require_root();
    let dir = data_dir("filesystem");
    let served = dir.join("served");
    let outside = dir.join("outside");
    std::fs::create_dir_all(&served).expect("create served dir");
    std::fs::create_dir_all(&outside).expect("create outside dir");
    std::fs::write(served.join("notes.txt"), "hello from the test\n").expect("write file");
    std::fs::write(outside.join("secret.txt"), "not for the model\n").expect("write file");
    // The policy grants `served` only; the server itself is told it may use all of `dir`, as a
    // too-broad client config would: the kernel holds the line the server's arguments do not.
    let policy = test_policy("filesystem", &dir, std::slice::from_ref(&served));
    let server = npm_server("@modelcontextprotocol/server-filesystem");
    let command = [
        "node",
        server.to_str().expect("UTF-8 path"),
        dir.to_str().expect("UTF-8 path"),
    ];
    let read = |path: &Path| {
        let args = format!("{{\"path\": \"{}\"}}", path.display());
        guarded_session(
            &policy,
            "filesystem",
            &dir.join("state"),
            Some(("read_text_file", &args)),
            &command,
        )
    };
    let answer = read(&served.join("notes.txt"));
    assert_eq!(answer["server"]["name"], "secure-filesystem-server");
    for tool in [
        "read_text_file",
        "write_file",
        "list_directory",
        "search_files",
    ] {
        assert!(tools(&answer).contains(&tool), "{answer}");
    }
    assert_eq!(call_text(&answer), "hello from the test\n");

    let denied = read(&outside.join("secret.txt"));
    assert_eq!(denied["call"]["is_error"], true, "{denied}");
    let text = denied["call"]["text"].as_str().expect("error text");
    assert!(
        text.contains("EACCES") || text.contains("permission denied"),
        "{denied}"
    );
    assert!(!text.contains("not for the model"), "{denied}");
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn memory_server_keeps_its_graph_where_the_policy_lets_it() {
    require_root();
    let dir = data_dir("memory");
    // Stands in for ~/.local/share/mcp-memory; MEMORY_FILE_PATH reaches the server because the
    // shipped policy passes it ([env] pass).
    let store = dir.join("mcp-memory");
    std::fs::create_dir_all(&store).expect("create memory dir");
    // The server user's, as the user's own ~/.local/share would be.
    give_to_server_user(&store);
    let file = store.join("memory.jsonl");
    let policy = test_policy("memory", &dir, std::slice::from_ref(&store));
    let server = npm_server("@modelcontextprotocol/server-memory");
    let answer = guarded_session_env(
        &policy,
        "memory",
        &dir.join("state"),
        Some((
            "create_entities",
            r#"{"entities": [{"name": "mcp-guard", "entityType": "project", "observations": ["jails MCP servers"]}]}"#,
        )),
        &["node", server.to_str().expect("UTF-8 path")],
        &[("MEMORY_FILE_PATH", file.to_str().expect("UTF-8 path"))],
    );
    assert_eq!(answer["server"]["name"], "memory-server");
    assert!(tools(&answer).contains(&"read_graph"), "{answer}");
    assert!(call_text(&answer).contains("mcp-guard"), "{answer}");
    let stored = std::fs::read_to_string(&file).expect("the memory file was written");
    assert!(stored.contains("jails MCP servers"), "{stored}");
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn everything_server_answers_under_its_policy() {
    require_root();
    let dir = data_dir("everything");
    let policy = test_policy("everything", &dir, &[]);
    let server = npm_server("@modelcontextprotocol/server-everything");
    let answer = guarded_session(
        &policy,
        "everything",
        &dir.join("state"),
        Some(("echo", "{\"message\": \"guarded\"}")),
        &["node", server.to_str().expect("UTF-8 path"), "stdio"],
    );
    assert_eq!(answer["server"]["name"], "mcp-servers/everything");
    assert!(tools(&answer).contains(&"get-sum"), "{answer}");
    assert_eq!(call_text(&answer), "Echo: guarded");
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn time_server_answers_under_its_policy() {
    require_root();
    let dir = data_dir("time");
    let policy = test_policy("time", &dir, &[]);
    let answer = guarded_session(
        &policy,
        "time",
        &dir.join("state"),
        Some(("get_current_time", "{\"timezone\": \"Europe/Paris\"}")),
        &[&venv_bin("mcp-server-time")],
    );
    assert_eq!(answer["server"]["name"], "mcp-time");
    assert_eq!(tools(&answer), ["get_current_time", "convert_time"]);
    let time: Value = serde_json::from_str(call_text(&answer)).expect("time JSON");
    assert_eq!(time["timezone"], "Europe/Paris", "{time}");
    assert!(
        time["datetime"].as_str().is_some_and(|d| d.len() >= 19),
        "{time}"
    );
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn git_server_answers_under_its_policy() {
    require_root();
    let dir = data_dir("git");
    let repo = dir.join("repo");
    std::fs::create_dir_all(&repo).expect("create repo dir");
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
    // Handed to the server user, as a user gives a server the repository it may work on (git
    // refuses a repository another user owns).
    give_to_server_user(&repo);
    let policy = test_policy("git", &dir, std::slice::from_ref(&repo));
    let args = format!(
        "{{\"repo_path\": \"{}\", \"max_count\": 1}}",
        repo.display()
    );
    let answer = guarded_session(
        &policy,
        "git",
        &dir.join("state"),
        Some(("git_log", &args)),
        &[&venv_bin("mcp-server-git")],
    );
    assert_eq!(answer["server"]["name"], "mcp-git");
    assert!(tools(&answer).contains(&"git_status"), "{answer}");
    assert!(
        call_text(&answer).contains("first commit under test"),
        "{answer}"
    );
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn fetch_server_answers_under_its_policy() {
    require_root();
    let dir = data_dir("fetch");
    let policy = test_policy("fetch", &dir, &[]);
    let answer = guarded_session(
        &policy,
        "fetch",
        &dir.join("state"),
        None,
        &[&venv_bin("mcp-server-fetch")],
    );
    assert_eq!(answer["server"]["name"], "mcp-fetch");
    assert_eq!(tools(&answer), ["fetch"]);
    let _ = std::fs::remove_dir_all(&dir);
}

/// End to end: `client-config` wraps a client's entry, and the wrapped entry, run as the client
/// would run it, starts the real server jailed under the policy client-config chose.
#[test]
fn a_config_wrapped_by_client_config_starts_the_real_server() {
    require_root();
    let dir = data_dir("client-config");
    // The policy dir holds the test copy of time.toml; client-config finds it by the package.
    let policy_dir = dir.join("policies");
    std::fs::create_dir_all(&policy_dir).expect("create policy dir");
    test_policy("time", &policy_dir, &[]);
    let config = dir.join("claude_desktop_config.json");
    let original = serde_json::json!({
        "mcpServers": {"clock": {"command": venv_bin("mcp-server-time"), "args": ["--local-timezone", "UTC"]}}
    });
    std::fs::write(&config, original.to_string()).expect("write config");
    let output = Command::new(mcp_guard())
        .arg("--policy-dir")
        .arg(&policy_dir)
        .arg("client-config")
        .arg(&config)
        .output()
        .expect("run client-config");
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(output.status.success(), "{stderr}");
    assert!(
        stderr.contains("clock: wrapped with policy time (matches the package mcp-server-time)"),
        "{stderr}"
    );
    let wrapped: Value = serde_json::from_slice(&output.stdout).expect("JSON config");
    let entry = &wrapped["mcpServers"]["clock"];
    let mut command = vec![entry["command"].as_str().expect("command").to_string()];
    command.extend(
        entry["args"]
            .as_array()
            .expect("args")
            .iter()
            .map(|a| a.as_str().expect("string arg").to_string()),
    );
    let mut client = Command::new(python());
    client
        .arg(fixture("mcp_client.py"))
        .args([
            "--call",
            "get_current_time",
            "{\"timezone\": \"Asia/Tokyo\"}",
            "--",
        ])
        .args(&command)
        // exec's state (the client does not pass --state-dir; the environment does).
        .env("MCP_GUARD_STATE_DIR", dir.join("state"));
    let output = client.output().expect("run the MCP client");
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(
        output.status.success(),
        "{command:?}:\n{stdout}\n{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let answer: Value = serde_json::from_str(&stdout).expect("client JSON");
    assert_eq!(answer["server"]["name"], "mcp-time");
    let time: Value = serde_json::from_str(call_text(&answer)).expect("time JSON");
    assert_eq!(time["timezone"], "Asia/Tokyo", "{time}");
    let _ = std::fs::remove_dir_all(&dir);
}
