//! No false positives on ordinary use: the real `@modelcontextprotocol/server-filesystem` and
//! `mcp-server-git`, under `mcp-guard exec` with copies of their shipped policies, doing their
//! normal work for a real SDK client (list, read, write, edit, search in the served directory;
//! git status, log, diff, add, commit, show on a scratch repository) raise no alert, while their
//! kernel events are recorded and attributed to the calls.
//!
//! Also: with a developer's `PATH` (version-manager shim directories first, none of them holding
//! the interpreter), each of server-filesystem, mcp-server-git and server-everything started
//! through `#!/usr/bin/env` raises no alert: `env` trying each `PATH` entry is the server's
//! launch, not an interpreter exec of its own.

use std::{
    path::{Path, PathBuf},
    process::Command,
};

use mcp_guard_tests::{
    fixture, fresh_dir, give_to_server_user, mcp_guard, npm_server, python, require_root,
    workspace_root,
};
use serde_json::{Value, json};

fn data_dir(tag: &str) -> PathBuf {
    fresh_dir("benign", tag)
}

/// `policies/NAME.toml` with the test environment's installs (workspace `tests/node_modules`
/// and `.venv`, which no shipped policy grants) added to `read` and `exec` and `writable` to
/// `write`; nothing else changed (as `tests/tests/reference_servers.rs` does).
fn test_policy(name: &str, dir: &Path, writable: &[PathBuf]) -> PathBuf {
    let list = |paths: &[PathBuf]| -> String {
        paths
            .iter()
            .map(|p| format!("  \"{}\",\n", p.display()))
            .collect()
    };
    let installs: Vec<PathBuf> = ["tests/node_modules", ".venv"]
        .iter()
        .map(|p| {
            workspace_root()
                .join(p)
                .canonicalize()
                .unwrap_or_else(|e| panic!("{p}: {e}: run `cargo xtask setup`"))
        })
        .collect();
    let shipped = std::fs::read_to_string(workspace_root().join(format!("policies/{name}.toml")))
        .expect("shipped policy");
    let mut text = String::new();
    for line in shipped.lines() {
        text.push_str(line);
        text.push('\n');
        match line {
            "read = [" | "exec = [" => text.push_str(&list(&installs)),
            "write = [" => text.push_str(&list(writable)),
            _ => {}
        }
    }
    let path = dir.join(format!("{name}.toml"));
    std::fs::write(&path, text).expect("write policy");
    path
}

/// Runs `steps` (`tests/fixtures/detect_client.py`) against `command` under exec; every call must
/// succeed. Returns the results.
fn run(policy: &Path, name: &str, state: &Path, steps: Value, command: &[&str]) -> Vec<Value> {
    run_with_path(policy, name, state, steps, command, None)
}

/// [`run`] with `PATH` set to `path` for mcp-guard and the server it starts.
#[expect(
    clippy::needless_pass_by_value,
    reason = "callers build the JSON in place with json!"
)]
fn run_with_path(
    policy: &Path,
    name: &str,
    state: &Path,
    steps: Value,
    command: &[&str],
    path: Option<&str>,
) -> Vec<Value> {
    let mut client = Command::new(python());
    if let Some(path) = path {
        client.env("PATH", path);
    }
    let out = client
        .arg(fixture("detect_client.py"))
        .arg(steps.to_string())
        .arg("--")
        .arg(mcp_guard())
        .arg("--state-dir")
        .arg(state)
        .args(["exec", "--policy"])
        .arg(policy)
        .args(["--name", name, "--"])
        .args(command)
        .output()
        .expect("run the SDK client");
    assert!(
        out.status.success(),
        "{name}: {}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    let results: Vec<Value> = serde_json::from_slice(&out.stdout).expect("client JSON");
    for r in &results {
        assert!(
            r["error"].is_null() && r["is_error"] == false,
            "{name}: an ordinary call failed: {r}"
        );
    }
    results
}

fn query(state: &Path, args: &[&str]) -> Vec<Value> {
    let out = Command::new(mcp_guard())
        .arg("--state-dir")
        .arg(state)
        .args(args)
        .output()
        .expect("query");
    assert!(out.status.success(), "{args:?}");
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(|l| serde_json::from_str(l).expect("a JSON line"))
        .collect()
}

#[expect(
    clippy::needless_pass_by_value,
    reason = "callers build the JSON in place with json!"
)]
fn call(tool: &str, args: Value) -> Value {
    json!({"call": tool, "args": args})
}

#[test]
fn ordinary_filesystem_and_git_work_raises_no_alert() {
    require_root();
    let dir = data_dir("servers");
    let state = dir.join("state");

    let served = dir.join("served");
    std::fs::create_dir_all(served.join("notes")).expect("served dir");
    std::fs::write(served.join("notes/todo.md"), "- buy milk\n- call Bob\n").expect("seed");
    // The served dir is the server user's, as a user gives a server the dir it may write.
    give_to_server_user(&served);
    let policy = test_policy("filesystem", &dir, std::slice::from_ref(&served));
    let at = |rel: &str| served.join(rel).display().to_string();
    let server = npm_server("@modelcontextprotocol/server-filesystem");
    let served_arg = served.display().to_string();
    let fs = run(
        &policy,
        "filesystem",
        &state,
        json!([
            call("list_allowed_directories", json!({})),
            call("list_directory", json!({"path": at("")})),
            call("directory_tree", json!({"path": at("")})),
            call("read_text_file", json!({"path": at("notes/todo.md")})),
            call("get_file_info", json!({"path": at("notes/todo.md")})),
            call("create_directory", json!({"path": at("drafts")})),
            call(
                "write_file",
                json!({"path": at("drafts/plan.md"), "content": "# Plan\n"})
            ),
            call(
                "edit_file",
                json!({"path": at("drafts/plan.md"),
                "edits": [{"oldText": "# Plan", "newText": "# The plan"}]})
            ),
            call("search_files", json!({"path": at(""), "pattern": "plan"})),
            call(
                "read_multiple_files",
                json!({"paths": [at("notes/todo.md"), at("drafts/plan.md")]})
            ),
            call(
                "move_file",
                json!({"source": at("drafts/plan.md"), "destination": at("drafts/plan-v1.md")})
            ),
        ]),
        &["node", &server.display().to_string(), &served_arg],
    );
    assert!(
        fs[3]["text"]
            .as_str()
            .is_some_and(|t| t.contains("buy milk")),
        "{fs:?}"
    );
    assert_eq!(
        std::fs::read_to_string(served.join("drafts/plan-v1.md")).expect("written"),
        "# The plan\n"
    );

    let repo = dir.join("repo");
    std::fs::create_dir_all(&repo).expect("repo dir");
    let git = |args: &[&str]| {
        let status = Command::new("git")
            .arg("-C")
            .arg(&repo)
            .args([
                "-c",
                "user.name=Test",
                "-c",
                "user.email=test@example.invalid",
            ])
            .args(args)
            .status()
            .expect("run git");
        assert!(status.success(), "git {args:?}");
    };
    git(&["init", "-q", "-b", "main"]);
    std::fs::write(repo.join("README"), "scratch repo\n").expect("README");
    git(&["add", "README"]);
    git(&["commit", "-q", "-m", "first commit"]);
    std::fs::write(repo.join("README"), "scratch repo\nwith a change\n").expect("change");
    std::fs::write(repo.join("NEW"), "new file\n").expect("new");
    // Handed to the server user, as a user gives a server the repository it may work on (git
    // refuses a repository another user owns).
    give_to_server_user(&repo);
    let policy = test_policy("git", &dir, std::slice::from_ref(&repo));
    let r = repo.display().to_string();
    let results = run(
        &policy,
        "git",
        &state,
        json!([
            call("git_status", json!({"repo_path": r})),
            call("git_log", json!({"repo_path": r, "max_count": 5})),
            call("git_diff_unstaged", json!({"repo_path": r})),
            call("git_add", json!({"repo_path": r, "files": ["NEW"]})),
            call("git_diff_staged", json!({"repo_path": r})),
            call(
                "git_branch",
                json!({"repo_path": r, "branch_type": "local"})
            ),
            call("git_show", json!({"repo_path": r, "revision": "HEAD"})),
        ]),
        &[&workspace_root()
            .join(".venv/bin/mcp-server-git")
            .display()
            .to_string()],
    );
    assert!(
        results[2]["text"]
            .as_str()
            .is_some_and(|t| t.contains("with a change")),
        "{results:?}"
    );

    // The servers did real work in the kernel, attributed to their calls ...
    for server in ["filesystem", "git"] {
        let events = query(&state, &["events", "--json", "--server", server]);
        assert!(
            events.iter().any(|e| e["attribution"] == "call"),
            "{server}: no event attributed to a call: {} events",
            events.len()
        );
    }
    // ... and none of it is an alert.
    let alerts = query(&state, &["alerts", "--json"]);
    assert!(alerts.is_empty(), "false positives: {alerts:#?}");
    let _ = std::fs::remove_dir_all(&dir);
}

/// Version-manager shim directories (pyenv, nvm, cargo) under `dir`, each holding some other
/// program but not the interpreter; a `PATH` with them first.
fn shim_path(dir: &Path, after: &[&Path]) -> String {
    let mut entries = Vec::new();
    for (shim, other) in [
        (".pyenv/shims", "pip"),
        (".nvm/versions/current/bin", "corepack"),
        (".cargo/bin", "rustup"),
    ] {
        let d = dir.join(shim);
        std::fs::create_dir_all(&d).expect("shim dir");
        std::fs::write(d.join(other), "#!/bin/sh\nexit 1\n").expect("shim");
        entries.push(d.display().to_string());
    }
    entries.extend(after.iter().map(|p| p.display().to_string()));
    entries.extend(["/usr/local/bin", "/usr/bin", "/bin"].map(String::from));
    entries.join(":")
}

#[test]
fn a_path_of_version_manager_shims_before_the_interpreter_raises_no_alert() {
    require_root();
    let dir = data_dir("shims");
    let state = dir.join("state");
    let bin = workspace_root().join("tests/node_modules/.bin");
    let venv_bin = workspace_root().join(".venv/bin");
    let path = shim_path(&dir, &[&venv_bin]);

    let served = dir.join("served");
    std::fs::create_dir_all(&served).expect("served dir");
    std::fs::write(served.join("todo.md"), "- buy milk\n").expect("seed");
    give_to_server_user(&served);
    let policy = test_policy("filesystem", &dir, std::slice::from_ref(&served));
    let todo = served.join("todo.md").display().to_string();
    // `#!/usr/bin/env node`: env tries every shim directory before /usr/bin.
    let fs = run_with_path(
        &policy,
        "filesystem",
        &state,
        json!([
            call("list_allowed_directories", json!({})),
            call("read_text_file", json!({"path": todo})),
        ]),
        &[
            &bin.join("mcp-server-filesystem").display().to_string(),
            &served.display().to_string(),
        ],
        Some(&path),
    );
    assert!(
        fs[1]["text"]
            .as_str()
            .is_some_and(|t| t.contains("buy milk")),
        "{fs:?}"
    );

    let everything = test_policy("everything", &dir, &[]);
    let ev = run_with_path(
        &everything,
        "everything",
        &state,
        json!([call("echo", json!({"message": "hello"}))]),
        &[
            &bin.join("mcp-server-everything").display().to_string(),
            "stdio",
        ],
        Some(&path),
    );
    assert!(
        ev[0]["text"].as_str().is_some_and(|t| t.contains("hello")),
        "{ev:?}"
    );

    let repo = dir.join("repo");
    std::fs::create_dir_all(&repo).expect("repo dir");
    let status = Command::new("git")
        .arg("-C")
        .arg(&repo)
        .args(["init", "-q", "-b", "main"])
        .status()
        .expect("git init");
    assert!(status.success());
    give_to_server_user(&repo);
    let git_policy = test_policy("git", &dir, std::slice::from_ref(&repo));
    let r = repo.display().to_string();
    // env looks `mcp-server-git` up through the shims too, then its own shebang names python.
    let git = run_with_path(
        &git_policy,
        "git",
        &state,
        json!([call("git_status", json!({"repo_path": r}))]),
        &["/usr/bin/env", "mcp-server-git"],
        Some(&path),
    );
    assert!(
        git[0]["text"].as_str().is_some_and(|t| t.contains("main")),
        "{git:?}"
    );

    // env's attempts through the shims were recorded ...
    let execs = query(&state, &["events", "--json", "--kind", "exec"]);
    assert!(
        execs.iter().any(|e| e["path"]
            .as_str()
            .is_some_and(|p| p.contains(".pyenv/shims/"))),
        "no exec attempt through the shims: {execs:#?}"
    );
    // ... and none of it is an alert.
    let alerts = query(&state, &["alerts", "--json"]);
    assert!(alerts.is_empty(), "false positives: {alerts:#?}");
    let _ = std::fs::remove_dir_all(&dir);
}
