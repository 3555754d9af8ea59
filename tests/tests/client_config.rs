//! `mcp-guard client-config` run as a user would, on sample configs of Claude Desktop, Cursor
//! and VS Code: stdio servers are wrapped with `mcp-guard exec` and the shipped policy that fits
//! them, everything else stays as it was, a second run changes nothing, and `--write` keeps a
//! byte-identical backup of the original.

use std::{
    path::{Path, PathBuf},
    process::{Command, Output},
};

use mcp_guard_tests::fresh_dir;
use mcp_guard_tests::{mcp_guard, workspace_root};
use serde_json::{Value, json};

/// A fresh directory for one test's config files.
fn temp_dir(tag: &str) -> PathBuf {
    fresh_dir("client-config", tag)
}

fn policy_dir() -> PathBuf {
    workspace_root().join("policies")
}

/// Runs `mcp-guard --policy-dir policies/ client-config ARGS...`.
fn client_config(args: &[&str]) -> Output {
    Command::new(mcp_guard())
        .env_remove("MCP_GUARD_POLICY_DIR")
        .arg("--policy-dir")
        .arg(policy_dir())
        .arg("client-config")
        .args(args)
        .output()
        .expect("run mcp-guard client-config")
}

fn text(output: &Output) -> (String, String) {
    (
        String::from_utf8_lossy(&output.stdout).into_owned(),
        String::from_utf8_lossy(&output.stderr).into_owned(),
    )
}

fn ok(output: &Output) -> (String, String) {
    let (stdout, stderr) = text(output);
    assert_eq!(
        output.status.code(),
        Some(0),
        "stdout:\n{stdout}\nstderr:\n{stderr}"
    );
    (stdout, stderr)
}

fn files_in(dir: &Path) -> Vec<String> {
    let mut names: Vec<String> = std::fs::read_dir(dir)
        .expect("list dir")
        .map(|e| e.expect("entry").file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    names
}

const CLAUDE: &str = r#"{
  "globalShortcut": "Ctrl+Space",
  "mcpServers": {
    "filesystem": {
      "command": "npx",
      "args": ["-y", "@modelcontextprotocol/server-filesystem", "/home/u/Desktop", "/home/u/Downloads"]
    },
    "web": {
      "command": "uvx",
      "args": ["mcp-server-fetch"],
      "env": {"HTTPS_PROXY": "http://proxy.example.com:3128", "DEBUG": "1"}
    },
    "github": {
      "command": "npx",
      "args": ["-y", "@modelcontextprotocol/server-github"],
      "env": {"GITHUB_PERSONAL_ACCESS_TOKEN": "<token>"}
    },
    "my tool": {"command": "/opt/tools/bin/my-tool", "args": ["--verbose"]}
  },
  "preferences": {"quickEntry": true, "zoom": 1.25, "list": [1, "two", null]}
}
"#;

const CURSOR: &str = r#"{
  "mcpServers": {
    "git": {"command": "uvx", "args": ["mcp-server-git", "--repository", "/home/u/src/app"]},
    "memory": {"command": "npx", "args": ["-y", "@modelcontextprotocol/server-memory"], "env": {"MEMORY_FILE_PATH": "/home/u/.local/share/mcp-memory/memory.jsonl"}},
    "remote-docs": {"url": "https://docs.example.com/mcp", "headers": {"Authorization": "Bearer ${env:DOCS_TOKEN}"}}
  }
}
"#;

const VSCODE: &str = "{\n\t\"inputs\": [\n\t\t{\n\t\t\t\"type\": \"promptString\",\n\t\t\t\"id\": \"pg-url\",\n\t\t\t\"description\": \"Database URL\",\n\t\t\t\"password\": true\n\t\t}\n\t],\n\t\"servers\": {\n\t\t\"clock\": {\n\t\t\t\"type\": \"stdio\",\n\t\t\t\"command\": \"/home/u/.venv/bin/mcp-server-time\",\n\t\t\t\"args\": [\"--local-timezone\", \"UTC\"]\n\t\t},\n\t\t\"db\": {\n\t\t\t\"type\": \"stdio\",\n\t\t\t\"command\": \"npx\",\n\t\t\t\"args\": [\"-y\", \"@modelcontextprotocol/server-postgres\", \"${input:pg-url}\"],\n\t\t\t\"envFile\": \"${workspaceFolder}/.env\"\n\t\t},\n\t\t\"everything\": {\n\t\t\t\"command\": \"node\",\n\t\t\t\"args\": [\"/srv/mcp/node_modules/@modelcontextprotocol/server-everything/dist/index.js\"]\n\t\t},\n\t\t\"hosted\": {\n\t\t\t\"type\": \"http\",\n\t\t\t\"url\": \"https://api.example.com/mcp\"\n\t\t}\n\t}\n}\n";

/// The config with every wrapped server turned back into what it wrapped; a wrapper whose shape
/// is not `MCP_GUARD --policy-dir POLICIES exec --policy P --name N -- CMD ARGS...` fails.
fn unwrap_all(config: &Value, servers_key: &str, guard: &str) -> (Value, Vec<(String, String)>) {
    let mut config = config.clone();
    let mut policies = Vec::new();
    let servers = config[servers_key].as_object_mut().expect("servers object");
    for (name, entry) in servers.iter_mut() {
        if entry["command"] != guard {
            continue;
        }
        let args: Vec<String> = entry["args"]
            .as_array()
            .expect("args")
            .iter()
            .map(|a| a.as_str().expect("string").to_string())
            .collect();
        let dir = policy_dir().display().to_string();
        assert_eq!(
            args[..7],
            [
                "--policy-dir",
                dir.as_str(),
                "exec",
                "--policy",
                args[4].as_str(),
                "--name",
                args[6].as_str()
            ],
            "{name}: {args:?}"
        );
        assert_eq!(args[7], "--", "{name}: {args:?}");
        policies.push((name.clone(), args[4].clone()));
        entry["command"] = json!(args[8]);
        entry["args"] = json!(args[9..]);
    }
    (config, policies)
}

/// One format: print, check the wrapping against the original, run again on the output.
fn check_format(
    tag: &str,
    original: &str,
    servers_key: &str,
    expected_policies: &[(&str, &str)],
    expected_stderr: &[&str],
) {
    let dir = temp_dir(tag);
    let file = dir.join("config.json");
    std::fs::write(&file, original).expect("write config");
    let guard = mcp_guard().display().to_string();

    let (stdout, stderr) = ok(&client_config(&[file.to_str().expect("UTF-8 path")]));
    let wrapped: Value = serde_json::from_str(&stdout).expect("stdout is the JSON config");
    let before: Value = serde_json::from_str(original).expect("original is JSON");
    // With no --mcp-guard, the wrapper runs this very binary by its absolute path.
    let (unwrapped, policies) = unwrap_all(&wrapped, servers_key, &guard);
    assert_eq!(unwrapped, before, "wrapping changed more than command/args");
    let mut policies: Vec<(&str, &str)> = policies
        .iter()
        .map(|(s, p)| (s.as_str(), p.as_str()))
        .collect();
    policies.sort_unstable();
    let mut expected = expected_policies.to_vec();
    expected.sort_unstable();
    assert_eq!(policies, expected, "stderr:\n{stderr}");
    for line in expected_stderr {
        assert!(stderr.contains(line), "missing {line:?} in:\n{stderr}");
    }
    // The file itself is untouched without --write.
    assert_eq!(std::fs::read_to_string(&file).expect("read"), original);
    assert_eq!(files_in(&dir), ["config.json"]);

    // Idempotent: the wrapped config comes back byte for byte.
    let again = dir.join("again.json");
    std::fs::write(&again, &stdout).expect("write wrapped config");
    let (stdout2, stderr2) = ok(&client_config(&[again.to_str().expect("UTF-8 path")]));
    assert_eq!(stdout2, stdout, "a second run changed the config");
    assert!(!stderr2.contains("wrapped with"), "{stderr2}");
    assert!(
        stderr2.contains("already runs under mcp-guard"),
        "{stderr2}"
    );
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn claude_desktop_config_is_wrapped() {
    check_format(
        "claude",
        CLAUDE,
        "mcpServers",
        &[
            ("filesystem", "filesystem"),
            ("web", "fetch"),
            ("github", "github"),
            ("my tool", "default"),
        ],
        &[
            "format mcpServers",
            "filesystem: wrapped with policy filesystem (matches the server name",
            "web: wrapped with policy fetch (matches the package mcp-server-fetch)",
            "my tool: wrapped with policy default (no my-tool.toml in",
            "my tool: runs as --name my-tool",
            // The proxy is passed by the fetch policy; DEBUG is not.
            "web: env DEBUG will be scrubbed",
            "github: env GITHUB_PERSONAL_ACCESS_TOKEN will be replaced by policy github's [secrets]",
            "github: note: env GITHUB_PERSONAL_ACCESS_TOKEN is written in plain text in this file, and policy github sets it",
        ],
    );
}

#[test]
fn cursor_config_is_wrapped_and_remote_servers_left_alone() {
    check_format(
        "cursor",
        CURSOR,
        "mcpServers",
        &[("git", "git"), ("memory", "memory")],
        &[
            "remote-docs: left unchanged: not a stdio server (a URL server at https://docs.example.com/mcp)",
            "git: wrapped with policy git",
            "memory: wrapped with policy memory",
        ],
    );
}

#[test]
fn vscode_config_is_wrapped() {
    check_format(
        "vscode",
        VSCODE,
        "servers",
        &[
            ("clock", "time"),
            ("db", "postgres"),
            ("everything", "everything"),
        ],
        &[
            "format servers (VS Code mcp.json)",
            "clock: wrapped with policy time (matches the package mcp-server-time)",
            "db: wrapped with policy postgres (matches the package @modelcontextprotocol/server-postgres)",
            "hosted: left unchanged: not a stdio server (type \"http\" at https://api.example.com/mcp)",
        ],
    );
}

#[test]
fn write_keeps_a_byte_identical_backup_and_a_second_write_changes_nothing() {
    let dir = temp_dir("write");
    let file = dir.join("claude_desktop_config.json");
    std::fs::write(&file, CLAUDE).expect("write config");
    let path = file.to_str().expect("UTF-8 path");
    let (printed, _) = ok(&client_config(&[
        "--mcp-guard",
        "/usr/local/bin/mcp-guard",
        path,
    ]));

    let (stdout, stderr) = ok(&client_config(&[
        "--write",
        "--mcp-guard",
        "/usr/local/bin/mcp-guard",
        path,
    ]));
    assert_eq!(stdout, "", "--write prints nothing to stdout");
    let names = files_in(&dir);
    assert_eq!(names.len(), 2, "{names:?}");
    let backup = dir.join(&names[1]);
    assert!(
        names[1].starts_with("claude_desktop_config.json.mcp-guard-backup-2"),
        "{names:?}"
    );
    assert!(stderr.contains(&backup.display().to_string()), "{stderr}");
    assert_eq!(
        std::fs::read(&backup).expect("read backup"),
        CLAUDE.as_bytes(),
        "the backup is the original, byte for byte"
    );
    assert_eq!(
        std::fs::read_to_string(&file).expect("read rewritten"),
        printed,
        "--write writes what the print run showed"
    );
    let rewritten: Value = serde_json::from_str(&printed).expect("JSON");
    assert_eq!(
        rewritten["mcpServers"]["web"]["command"],
        "/usr/local/bin/mcp-guard"
    );

    let (_, stderr) = ok(&client_config(&[
        "--write",
        "--mcp-guard",
        "/usr/local/bin/mcp-guard",
        path,
    ]));
    assert!(stderr.contains("nothing to change"), "{stderr}");
    assert_eq!(files_in(&dir), names, "a second --write made another file");
    assert_eq!(std::fs::read_to_string(&file).expect("read"), printed);
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn bad_input_is_refused_and_the_file_untouched() {
    let dir = temp_dir("bad");
    let cases: &[(&str, &str, i32, &str)] = &[
        (
            "list.json",
            "[1, 2, 3]\n",
            1,
            "unknown MCP client config format",
        ),
        (
            "settings.json",
            "{\"editor.fontSize\": 14}\n",
            1,
            "no servers entry among its keys (editor.fontSize)",
        ),
        ("loose.json", "{\n  'servers': {}\n}\n", 1, "loose.json:2:"),
    ];
    for (name, content, code, message) in cases {
        let file = dir.join(name);
        std::fs::write(&file, content).expect("write config");
        let output = client_config(&["--write", file.to_str().expect("UTF-8 path")]);
        let (stdout, stderr) = text(&output);
        assert_eq!(output.status.code(), Some(*code), "{name}: {stderr}");
        assert!(stderr.contains(message), "{name}: {stderr}");
        assert!(stderr.contains("not changed"), "{name}: {stderr}");
        assert_eq!(stdout, "");
        assert_eq!(std::fs::read_to_string(&file).expect("read"), *content);
    }
    assert_eq!(
        files_in(&dir),
        ["list.json", "loose.json", "settings.json"],
        "no backup or temp file is left"
    );

    // A policy that does not exist: EX_CONFIG, nothing written.
    let file = dir.join("claude.json");
    std::fs::write(&file, CLAUDE).expect("write config");
    let output = client_config(&[
        "--write",
        "--policy-for",
        "web=no-such-policy",
        file.to_str().expect("UTF-8 path"),
    ]);
    let (_, stderr) = text(&output);
    assert_eq!(output.status.code(), Some(78), "{stderr}");
    assert!(
        stderr.contains("no policy named \"no-such-policy\""),
        "{stderr}"
    );
    // A server the file does not have.
    let output = client_config(&[
        "--policy-for",
        "wbe=fetch",
        file.to_str().expect("UTF-8 path"),
    ]);
    let (_, stderr) = text(&output);
    assert_eq!(output.status.code(), Some(1), "{stderr}");
    assert!(stderr.contains("--policy-for names wbe"), "{stderr}");
    // Malformed flag: a usage error.
    let output = client_config(&["--policy-for", "web", file.to_str().expect("UTF-8 path")]);
    assert_eq!(output.status.code(), Some(2), "{:?}", text(&output));
    assert_eq!(std::fs::read_to_string(&file).expect("read"), CLAUDE);
    assert_eq!(
        files_in(&dir),
        ["claude.json", "list.json", "loose.json", "settings.json"]
    );
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn explicit_policy_files_are_written_as_absolute_paths() {
    let dir = temp_dir("explicit");
    let file = dir.join("c.json");
    std::fs::write(&file, CURSOR).expect("write config");
    let policy = policy_dir().join("time.toml");
    let spec = format!("git={}", policy.display());
    let (stdout, stderr) = ok(&client_config(&[
        "--policy-for",
        &spec,
        file.to_str().expect("UTF-8 path"),
    ]));
    let config: Value = serde_json::from_str(&stdout).expect("JSON");
    assert_eq!(
        config["mcpServers"]["git"]["args"][4],
        policy.display().to_string()
    );
    assert!(stderr.contains("given by --policy-for"), "{stderr}");
    let _ = std::fs::remove_dir_all(&dir);
}

/// VS Code's `mcp.json` as people write it: comments and trailing commas.
const JSONC: &str = r#"{
  // Servers for this workspace.
  "servers": {
    "git": {
      "type": "stdio",
      "command": "uvx", // from PyPI
      "args": ["mcp-server-git", "--repository", "/home/u/src/app"],
    },
    /* the clock */
    "time": {"command": "uvx", "args": ["mcp-server-time"]},
  },
  "inputs": [],
}
"#;

#[test]
fn jsonc_keeps_its_comments_and_unwrap_restores_the_original() {
    let dir = temp_dir("jsonc");
    let file = dir.join("mcp.json");
    std::fs::write(&file, JSONC).expect("write config");
    let f = file.to_str().expect("UTF-8 path");
    let guard = "/usr/local/bin/mcp-guard";
    let (_, stderr) = ok(&client_config(&["--mcp-guard", guard, "--write", f]));
    assert!(stderr.contains("git: wrapped with policy git"), "{stderr}");
    let wrapped = std::fs::read_to_string(&file).expect("read");
    for kept in [
        "// Servers for this workspace.",
        "// from PyPI",
        "/* the clock */",
        "\"type\": \"stdio\",",
        "\"inputs\": [],\n}",
    ] {
        assert!(wrapped.contains(kept), "{kept:?} lost:\n{wrapped}");
    }
    assert!(
        wrapped.contains(&format!(
            "\"command\": \"{guard}\", // from PyPI\n      \"args\": [\"--policy-dir\", \"{}\", \
             \"exec\", \"--policy\", \"git\", \"--name\", \"git\", \"--\", \"uvx\", \
             \"mcp-server-git\", \"--repository\", \"/home/u/src/app\"],",
            policy_dir().display()
        )),
        "{wrapped}"
    );
    // A second run changes nothing: both already run under mcp-guard.
    let (_, stderr) = ok(&client_config(&["--mcp-guard", guard, "--write", f]));
    assert!(stderr.contains("nothing to change"), "{stderr}");
    // --unwrap gives back the file as it was, comments and all.
    let (_, stderr) = ok(&client_config(&[
        "--mcp-guard",
        guard,
        "--unwrap",
        "--write",
        f,
    ]));
    assert!(
        stderr.contains("git: unwrapped: runs uvx again"),
        "{stderr}"
    );
    assert_eq!(std::fs::read_to_string(&file).expect("read"), JSONC);
    // Plain JSON unwraps too.
    let plain = dir.join("claude.json");
    std::fs::write(&plain, CLAUDE).expect("write config");
    let p = plain.to_str().expect("UTF-8 path");
    ok(&client_config(&["--mcp-guard", guard, "--write", p]));
    assert_ne!(std::fs::read_to_string(&plain).expect("read"), CLAUDE);
    let (_, stderr) = ok(&client_config(&[
        "--mcp-guard",
        guard,
        "--unwrap",
        "--write",
        p,
    ]));
    assert!(stderr.contains("unwrapped"), "{stderr}");
    let back: Value =
        serde_json::from_str(&std::fs::read_to_string(&plain).expect("read")).expect("JSON");
    let original: Value = serde_json::from_str(CLAUDE).expect("JSON");
    assert_eq!(back, original);
    let _ = std::fs::remove_dir_all(&dir);
}

/// A browser server whose entry points Playwright's caches somewhere of its own. The shipped
/// `playwright` policy fixes those variables with `[env] set`, so the entry's values never reach
/// the server: the report must say so, and must not call them scrubbed.
const PLAYWRIGHT: &str = r#"{
  "mcpServers": {
    "browser": {
      "command": "npx",
      "args": ["@playwright/mcp@latest"],
      "env": {"PLAYWRIGHT_BROWSERS_PATH": "/opt/ms-playwright", "XDG_CACHE_HOME": "/home/u/.cache", "DEBUG": "pw:api", "HTTPS_PROXY": "http://proxy.example.com:3128"}
    }
  }
}
"#;

#[test]
fn variables_the_policy_sets_are_reported_as_overridden_not_scrubbed() {
    let dir = temp_dir("env-set");
    let file = dir.join("config.json");
    std::fs::write(&file, PLAYWRIGHT).expect("write config");
    let (stdout, stderr) = ok(&client_config(&[file.to_str().expect("UTF-8 path")]));
    let config: Value = serde_json::from_str(&stdout).expect("stdout is the JSON config");
    let args = config["mcpServers"]["browser"]["args"]
        .as_array()
        .expect("args");
    let policy = args.iter().position(|a| a == "--policy").expect("--policy") + 1;
    assert_eq!(args[policy], "playwright", "{args:?}");
    // The entry's env is written back as it was: exec, not client-config, decides.
    assert_eq!(
        config["mcpServers"]["browser"]["env"]["XDG_CACHE_HOME"],
        "/home/u/.cache"
    );
    let overridden = "browser: env PLAYWRIGHT_BROWSERS_PATH, XDG_CACHE_HOME will be overridden by \
                      policy playwright's [env] set (PLAYWRIGHT_BROWSERS_PATH=~/.cache/ms-playwright, \
                      XDG_CACHE_HOME=/tmp/.cache): the server gets the policy's value, not this file's";
    assert!(
        stderr.contains(overridden),
        "missing {overridden:?} in:\n{stderr}"
    );
    // DEBUG is dropped; the proxy is passed; the two the policy sets are not "scrubbed".
    assert_only_debug_scrubbed(&stderr);
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn identity_variables_are_reported_as_set_by_the_jail_not_scrubbed() {
    // HOME, USER, LOGNAME and TMPDIR are never taken from the caller: the jail sets them for the
    // user the server runs as, whatever [env] pass says. Only [env] set fixes one.
    let dir = temp_dir("env-identity");
    let file = dir.join("config.json");
    let config = PLAYWRIGHT.replace(
        r#""DEBUG": "pw:api","#,
        r#""DEBUG": "pw:api", "HOME": "/home/u", "TMPDIR": "/var/tmp/u", "LOGNAME": "u","#,
    );
    assert_ne!(config, PLAYWRIGHT);
    std::fs::write(&file, config).expect("write config");
    let (_, stderr) = ok(&client_config(&[file.to_str().expect("UTF-8 path")]));
    let identity = "browser: env HOME, TMPDIR, LOGNAME will be set by the jail for the user the \
                    server runs as (HOME its home, USER and LOGNAME its name, TMPDIR /tmp), not \
                    taken from this file; [env] set in a copy of the policy fixes one";
    assert!(
        stderr.contains(identity),
        "missing {identity:?} in:\n{stderr}"
    );
    // Only DEBUG is dropped; the three the jail sets are not "scrubbed".
    assert_only_debug_scrubbed(&stderr);
    let _ = std::fs::remove_dir_all(&dir);
}

/// The one variable of the playwright entry said to be scrubbed is DEBUG.
fn assert_only_debug_scrubbed(stderr: &str) {
    let scrubbed: Vec<&str> = stderr
        .lines()
        .filter(|l| l.contains("will be scrubbed"))
        .collect();
    assert_eq!(scrubbed.len(), 1, "{stderr}");
    assert!(
        scrubbed[0].starts_with("browser: env DEBUG will be scrubbed"),
        "{stderr}"
    );
}
