//! The MCP layer's policy keys, each proved end to end: the MCP Python SDK client drives
//! `mcp-guard exec --policy FILE -- SERVER` (jailed, with the proxy) against real servers
//! (npm `server-everything`, `server-filesystem`) and the misbehaving fixture
//! `tests/fixtures/tricky_server.py`. Each policy is the shipped default plus the test
//! environment's install directories plus the keys under test.
//!
//! Also here: `mcp-guard pins list|approve` against a real rug pull, and the proxy re-listing
//! tools itself when the server announces `notifications/tools/list_changed`.

use std::{
    path::{Path, PathBuf},
    process::Command,
};

use mcp_guard_tests::{
    describe, fixture, give_to_server_user, mcp_guard, npm_server, python, require_root,
    scratch_root, workspace_root,
};
use serde_json::{Value, json};

struct Scene {
    dir: PathBuf,
}

impl Scene {
    /// One state dir per policy: the pins of one server must not make another's tools look like
    /// shadowing ones.
    fn state(&self, policy: &Path) -> PathBuf {
        let name = policy.file_stem().expect("policy file name");
        self.dir.join("state").join(name)
    }
}

fn scene(tag: &str) -> Scene {
    require_root();
    let dir = scratch_root().join(format!("mcp-policy-{tag}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).expect("scene dir");
    Scene { dir }
}

fn canon(p: &Path) -> PathBuf {
    p.canonicalize()
        .unwrap_or_else(|e| panic!("{}: {e}: run `cargo xtask setup`", p.display()))
}

/// The shipped default policy named `name`, able to run the test environment's servers, with
/// `writable` added to `write` and `tools_and_mcp` replacing its `[tools]` section.
fn policy(scene: &Scene, name: &str, writable: &[&Path], tools_and_mcp: &str) -> PathBuf {
    let venv = workspace_root().join(".venv");
    let python_home = canon(&venv.join("bin/python"))
        .parent()
        .and_then(Path::parent)
        .expect("python prefix")
        .to_path_buf();
    let installs = [
        canon(&venv),
        python_home,
        canon(&workspace_root().join("tests/node_modules")),
    ];
    let list = |paths: &[&Path]| -> String {
        paths
            .iter()
            .map(|p| format!("  \"{}\",\n", p.display()))
            .collect()
    };
    let install_refs: Vec<&Path> = installs.iter().map(PathBuf::as_path).collect();
    let mut readable = install_refs.clone();
    let fixtures = fixture("");
    readable.push(&fixtures);
    let shipped = std::fs::read_to_string(workspace_root().join("policies/default.toml"))
        .expect("default policy");
    let default_tools =
        "[tools]\n# Every tool the server offers is visible and callable.\ndeny = []\n";
    assert!(
        shipped.contains(default_tools),
        "default.toml's [tools] changed"
    );
    let text = shipped
        .replacen("name = \"default\"", &format!("name = \"{name}\""), 1)
        .replacen(
            "\nread = [\n",
            &format!("\nread = [\n{}", list(&readable)),
            1,
        )
        .replacen(
            "\nexec = [\n",
            &format!("\nexec = [\n{}", list(&install_refs)),
            1,
        )
        .replacen(
            "\nwrite = [\n",
            &format!("\nwrite = [\n{}", list(writable)),
            1,
        )
        .replacen(default_tools, tools_and_mcp, 1);
    let path = scene.dir.join(format!("{name}.toml"));
    std::fs::write(&path, text).expect("write policy");
    let check = Command::new(mcp_guard())
        .args(["policy", "check"])
        .arg(&path)
        .output()
        .expect("policy check");
    assert!(
        check.status.success(),
        "test policy invalid: {}",
        describe(&check)
    );
    path
}

fn everything() -> Vec<String> {
    vec![
        "/usr/bin/node".into(),
        canon(&npm_server("@modelcontextprotocol/server-everything"))
            .display()
            .to_string(),
        "stdio".into(),
    ]
}

fn filesystem(root: &Path) -> Vec<String> {
    vec![
        "/usr/bin/node".into(),
        canon(&npm_server("@modelcontextprotocol/server-filesystem"))
            .display()
            .to_string(),
        root.display().to_string(),
    ]
}

fn tricky(mode: &str) -> Vec<String> {
    vec![
        canon(&python()).display().to_string(),
        fixture("tricky_server.py").display().to_string(),
        mode.into(),
    ]
}

/// Runs the SDK client (as `client`) against `mcp-guard exec --policy POLICY -- SERVER`; returns
/// its results: `[initialize, one entry per action]`.
fn session(
    scene: &Scene,
    policy: &Path,
    client: &str,
    server: &[String],
    actions: &Value,
) -> Value {
    session_named(scene, policy, None, client, server, actions)
}

/// [`session`] with the server named `name` (`exec --name`) instead of after the policy.
fn session_named(
    scene: &Scene,
    policy: &Path,
    name: Option<&str>,
    client: &str,
    server: &[String],
    actions: &Value,
) -> Value {
    let n = std::fs::read_dir(&scene.dir).map_or(0, Iterator::count);
    let acts = scene.dir.join(format!("actions-{n}.json"));
    let out = scene.dir.join(format!("out-{n}.json"));
    std::fs::write(&acts, actions.to_string()).expect("actions");
    let run = Command::new(python())
        .arg(fixture("mcp_sdk_actions.py"))
        .arg(&out)
        .arg(&acts)
        .arg(client)
        .arg(mcp_guard())
        .arg("--state-dir")
        .arg(scene.state(policy))
        .args(["exec", "--policy"])
        .arg(policy)
        .args(name.iter().flat_map(|n| ["--name", n]))
        .arg("--")
        .args(server)
        .output()
        .expect("run the SDK client");
    assert!(run.status.success(), "client failed: {}", describe(&run));
    let text = std::fs::read_to_string(&out)
        .unwrap_or_else(|e| panic!("no results ({e}): {}", describe(&run)));
    serde_json::from_str(&text).expect("client results are JSON")
}

fn tool_names(entry: &Value) -> Vec<String> {
    entry["tools"]
        .as_array()
        .unwrap_or_else(|| panic!("not a tool list: {entry}"))
        .iter()
        .map(|t| t["name"].as_str().expect("name").to_string())
        .collect()
}

#[track_caller]
fn refused(entry: &Value, needle: &str) {
    let err = entry["error"]
        .as_str()
        .unwrap_or_else(|| panic!("not refused: {entry}"));
    assert!(
        err.contains("mcp-guard") && err.contains(needle),
        "{err:?} lacks {needle:?}"
    );
}

#[track_caller]
fn text(entry: &Value) -> String {
    entry["result"]["content"][0]["text"]
        .as_str()
        .unwrap_or_else(|| panic!("no text result: {entry}"))
        .to_string()
}

fn mcp_guard_json(scene: &Scene, policy: &Path, args: &[&str]) -> Vec<Value> {
    let out = Command::new(mcp_guard())
        .arg("--state-dir")
        .arg(scene.state(policy))
        .args(args)
        .output()
        .expect("run mcp-guard");
    assert!(out.status.success(), "{args:?}: {}", describe(&out));
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{e}: {l}")))
        .collect()
}

#[test]
fn argument_rules_and_client_scoping_from_the_policy() {
    let scene = scene("args");
    let policy = policy(
        &scene,
        "everything-args",
        &[],
        r#"[tools]
[tools.clients]
narrow-ide = ["echo", "get-sum"]
[tools.args.echo]
message = { regex = "[a-z ]+", max_length = 12 }
[tools.args.get-sum]
a = { enum = [1, 2, 3] }
"#,
    );
    let actions = json!([
        {"op": "list_tools"},
        {"op": "call", "tool": "echo", "args": {"message": "hello"}},
        {"op": "call", "tool": "echo", "args": {"message": "HELLO"}},
        {"op": "call", "tool": "echo", "args": {"message": "far too long here"}},
        {"op": "call", "tool": "get-sum", "args": {"a": 2, "b": 40}},
        {"op": "call", "tool": "get-sum", "args": {"a": 7, "b": 40}},
        {"op": "call", "tool": "get-env", "args": {}},
    ]);
    let got = session(&scene, &policy, "narrow-ide", &everything(), &actions);
    let mut names = tool_names(&got[1]);
    names.sort();
    assert_eq!(names, vec!["echo", "get-sum"], "scoped by clientInfo.name");
    assert_eq!(text(&got[2]), "Echo: hello");
    refused(&got[3], "does not match");
    refused(&got[4], "longer than 12");
    assert!(text(&got[5]).contains("42"), "{}", got[5]);
    refused(&got[6], "must be one of [1,2,3]");
    refused(&got[7], "not available to client \"narrow-ide\"");

    // Another client is not narrowed; the argument rules still apply to it.
    let got = session(&scene, &policy, "wide-ide", &everything(), &actions);
    assert!(tool_names(&got[1]).contains(&"get-env".to_string()));
    refused(&got[3], "does not match");
    assert!(got[7]["result"].is_object(), "{}", got[7]);

    // Every decision was recorded with its reason.
    let calls = mcp_guard_json(&scene, &policy, &["calls", "--json"]);
    let denied = calls.iter().filter(|c| c["decision"] == "denied").count();
    assert_eq!(denied, 4 + 3, "{calls:#?}");
}

#[test]
fn path_prefix_pii_kinds_and_secret_shape_actions_from_the_policy() {
    let scene = scene("fs");
    let root = scene.dir.join("root");
    let allowed = root.join("allowed");
    std::fs::create_dir_all(&allowed).expect("dirs");
    // The served tree is the server user's, as a user gives a server the dir it may write.
    give_to_server_user(&root);
    let contact = allowed.join("contact.txt");
    std::fs::write(
        &contact,
        "mail bob@example.org phone 415-555-2671 key AKIAIOSFODNN7EXAMPLE\n",
    )
    .expect("plant");
    let outside = root.join("outside.txt");
    std::fs::write(&outside, "not for you\n").expect("plant");
    let written = allowed.join("written.txt");
    let policy = policy(
        &scene,
        "fs-pii",
        &[&root],
        &format!(
            r#"[tools]
[tools.args.read_text_file]
path = {{ path_prefix = ["{allowed}"] }}
[mcp.pii]
enabled = true
kinds = ["email"]
[mcp.secret_shapes]
in_arguments = "redact"
in_results = "alert"
"#,
            allowed = allowed.display()
        ),
    );
    let actions = json!([
        {"op": "call", "tool": "read_text_file", "args": {"path": contact.display().to_string()}},
        {"op": "call", "tool": "read_text_file", "args": {"path": outside.display().to_string()}},
        {"op": "call", "tool": "read_text_file",
         "args": {"path": format!("{}/../outside.txt", allowed.display())}},
        {"op": "call", "tool": "write_file",
         "args": {"path": written.display().to_string(), "content": "k=AKIAIOSFODNN7EXAMPLE"}},
    ]);
    let got = session(&scene, &policy, "ide", &filesystem(&root), &actions);
    let t = text(&got[1]);
    assert!(t.contains("mail [REDACTED:email]"), "e-mail scrubbed: {t}");
    assert!(
        t.contains("415-555-2671"),
        "phone is not a chosen kind: {t}"
    );
    assert!(
        t.contains("AKIAIOSFODNN7EXAMPLE"),
        "in_results = alert passes it: {t}"
    );
    refused(&got[2], "must be an absolute path under");
    refused(&got[3], "must be an absolute path under");
    assert_eq!(
        std::fs::read_to_string(&written).expect("written"),
        "k=[REDACTED:aws-access-key]",
        "in_arguments = redact: the server never got the key"
    );
    let alerts = mcp_guard_json(&scene, &policy, &["alerts", "--json"]);
    let rules: Vec<&str> = alerts.iter().filter_map(|a| a["rule"].as_str()).collect();
    assert!(rules.contains(&"secret-in-result"), "{alerts:#?}");
    assert!(rules.contains(&"secret-in-arguments"), "{alerts:#?}");
}

#[test]
fn poisoned_descriptions_stripped_or_only_alerted_by_policy() {
    let scene = scene("poison");
    let actions = json!([
        {"op": "list_tools"},
        {"op": "call", "tool": "tagged", "args": {"message": "x"}},
    ]);
    let strip = policy(
        &scene,
        "poison-strip",
        &[],
        "[tools]\n[mcp]\npoisoned_descriptions = \"strip\"\n",
    );
    let got = session(&scene, &strip, "ide", &tricky("poison"), &actions);
    let tools = got[1]["tools"].as_array().expect("tools");
    // Hidden text and the sentences that carry the attack are taken out; the rest stays.
    let description = |name: &str| {
        tools
            .iter()
            .find(|t| t["name"] == name)
            .unwrap_or_else(|| panic!("{name} hidden: {tools:?}"))["description"]
            .as_str()
            .unwrap_or_default()
            .to_string()
    };
    assert_eq!(description("add"), "Adds.");
    assert_eq!(description("tagged"), "Looks harmless.");
    assert_eq!(description("ansi"), "Shows a color.");
    assert_eq!(description("bidi"), "Reverses text.");
    assert_eq!(text(&got[2]), "x");
    let alerts = mcp_guard_json(&scene, &strip, &["alerts", "--json"]);
    assert!(
        alerts.iter().any(|a| a["rule"] == "tool-poisoning"
            && a["tool"] == "add"
            && a["summary"]
                .as_str()
                .is_some_and(|s| s.contains("stripped") && s.contains("id_rsa"))),
        "the finding shows what was removed: {alerts:#?}"
    );

    let alert = policy(
        &scene,
        "poison-alert",
        &[],
        "[tools]\n[mcp]\npoisoned_descriptions = \"alert\"\n",
    );
    let got = session(&scene, &alert, "ide", &tricky("poison"), &actions);
    assert_eq!(tool_names(&got[1]).len(), 5, "alert hides nothing");
    let alerts = mcp_guard_json(&scene, &alert, &["alerts", "--json"]);
    assert!(
        alerts
            .iter()
            .filter(|a| a["rule"] == "tool-poisoning")
            .count()
            >= 4,
        "{alerts:#?}"
    );
}

/// A server whose description, schema, results and prompts are poisoned, under three policies:
/// each channel gets the action its key names, and the alerts name the tool and the reason.
#[test]
fn a_poisoned_server_gets_each_channels_action() {
    let scene = scene("channels");
    let actions = json!([
        {"op": "list_tools"},
        {"op": "call", "tool": "add", "args": {"message": "x"}},
        {"op": "call", "tool": "fetch_page", "args": {"message": "x"}},
        {"op": "list_prompts"},
        {"op": "call", "tool": "echo", "args": {"message": "plain"}},
    ]);
    let names = |got: &Value| {
        let mut n = tool_names(&got[1]);
        n.sort();
        n
    };
    let alerts = |policy: &Path| mcp_guard_json(&scene, policy, &["alerts", "--json"]);
    let has = |alerts: &[Value], rule: &str, tool: Option<&str>, needle: &str| {
        alerts.iter().any(|a| {
            a["rule"] == rule
                && tool.is_none_or(|t| a["tool"] == t)
                && a["summary"].as_str().is_some_and(|s| s.contains(needle))
        })
    };

    // Defaults: definitions and schemas blocked, results stripped, prompts hidden.
    let defaults = policy(&scene, "channels-default", &[], "[tools]\n");
    let got = session(&scene, &defaults, "ide", &tricky("poisoned"), &actions);
    assert_eq!(names(&got), vec!["echo", "fetch_page"]);
    refused(&got[2], "poisoned");
    let page = text(&got[3]);
    assert!(
        page.contains("Welcome to the docs") && page.contains("Install with pip"),
        "{page}"
    );
    assert!(
        !page.contains("netrc") && !page.contains("curl") && !page.contains('\u{1b}'),
        "{page}"
    );
    let prompts: Vec<&str> = got[4]["prompts"]
        .as_array()
        .expect("prompts")
        .iter()
        .filter_map(|p| p["name"].as_str())
        .collect();
    assert_eq!(prompts, vec!["summarize"]);
    assert_eq!(text(&got[5]), "plain");
    let a = alerts(&defaults);
    assert!(
        has(&a, "tool-poisoning", Some("add"), "<IMPORTANT>"),
        "{a:#?}"
    );
    assert!(
        has(&a, "tool-poisoning", Some("convert"), "schema"),
        "{a:#?}"
    );
    assert!(
        has(&a, "result-poisoning", Some("fetch_page"), "stripped"),
        "{a:#?}"
    );
    assert!(
        has(&a, "result-poisoning", Some("fetch_page"), "netrc"),
        "{a:#?}"
    );
    assert!(has(&a, "prompt-poisoning", None, "review"), "{a:#?}");

    // Descriptions only alerted, schemas stripped, results fail the call, prompts alerted.
    let mixed = policy(
        &scene,
        "channels-mixed",
        &[],
        "[tools]\n[mcp]\npoisoned_descriptions = \"alert\"\npoisoned_schemas = \"strip\"\npoisoned_results = \"fail\"\npoisoned_prompts = \"alert\"\n",
    );
    let got = session(&scene, &mixed, "ide", &tricky("poisoned"), &actions);
    assert_eq!(names(&got), vec!["add", "convert", "echo", "fetch_page"]);
    let tools = got[1]["tools"].as_array().expect("tools");
    let convert = tools
        .iter()
        .find(|t| t["name"] == "convert")
        .expect("convert");
    assert!(
        !convert.to_string().contains("id_rsa"),
        "schema stripped: {convert}"
    );
    assert!(
        text(&got[2]).contains('x'),
        "alert passes the call: {}",
        got[2]
    );
    refused(&got[3], "the result of tool \"fetch_page\" is poisoned");
    assert_eq!(got[4]["prompts"].as_array().map(Vec::len), Some(2));
    let a = alerts(&mixed);
    assert!(
        has(&a, "tool-poisoning", Some("add"), "passed (alert only)"),
        "{a:#?}"
    );
    assert!(
        has(
            &a,
            "result-poisoning",
            Some("fetch_page"),
            "the call failed"
        ),
        "{a:#?}"
    );

    // Results blocked: the call answers with an error result that names the reason.
    let block = policy(
        &scene,
        "channels-block",
        &[],
        "[tools]\n[mcp]\npoisoned_results = \"block\"\n",
    );
    let got = session(&scene, &block, "ide", &tricky("poisoned"), &actions);
    assert_eq!(got[3]["result"]["is_error"], true, "{}", got[3]);
    assert!(
        text(&got[3]).contains("mcp-guard withheld this result"),
        "{}",
        got[3]
    );
    assert!(!got[3].to_string().contains("netrc"), "{}", got[3]);
}

/// Two servers under one state dir (one policy): the filesystem server first, then a server
/// with a tool of the same name, a look-alike of one of its tools and a tool whose description
/// steers its `read_text_file`. The same name is normal and stays; the look-alike and the
/// steering are shadowing, hidden and refused, and the alerts say which tool they imitate/steer
/// (once per session, however often the client lists the tools).
#[test]
fn shadowing_is_behaviour_not_a_shared_name() {
    let scene = scene("shadow");
    let root = scene.dir.join("root");
    std::fs::create_dir_all(&root).expect("root");
    give_to_server_user(&root);
    let shared = policy(&scene, "shadow", &[&root], "[tools]\n");
    let fs = session_named(
        &scene,
        &shared,
        Some("files"),
        "ide",
        &filesystem(&root),
        &json!([{"op": "list_tools"}]),
    );
    let fs_tools = tool_names(&fs[1]);
    assert!(
        ["read_file", "read_text_file", "write_file"]
            .iter()
            .all(|t| fs_tools.contains(&t.to_string())),
        "{fs_tools:?}"
    );
    let got = session_named(
        &scene,
        &shared,
        Some("notes"),
        "ide",
        &tricky("shadow"),
        &json!([
            {"op": "list_tools"},
            {"op": "call", "tool": "read_file", "args": {"message": "same name"}},
            {"op": "call", "tool": "write_fiIe", "args": {"message": "x"}},
            {"op": "call", "tool": "sync_notes", "args": {"message": "x"}},
            {"op": "list_tools"},
        ]),
    );
    let mut names = tool_names(&got[1]);
    names.sort();
    assert_eq!(names, vec!["echo", "read_file"]);
    assert_eq!(text(&got[2]), "same name");
    refused(&got[3], "write_fiIe");
    refused(&got[4], "sync_notes");
    let alerts = mcp_guard_json(&scene, &shared, &["alerts", "--json"]);
    let shadowing = |tool: &str, needle: &str| {
        alerts.iter().any(|a| {
            a["rule"] == "tool-shadowing"
                && a["tool"] == tool
                && a["summary"].as_str().is_some_and(|s| s.contains(needle))
        })
    };
    assert!(shadowing("write_fiIe", "write_file"), "{alerts:#?}");
    // Listed twice, alerted once.
    assert_eq!(tool_names(&got[5]).len(), 2);
    assert_eq!(
        alerts
            .iter()
            .filter(|a| a["rule"] == "tool-shadowing" && a["tool"] == "write_fiIe")
            .count(),
        1,
        "{alerts:#?}"
    );
    assert!(shadowing("sync_notes", "read_text_file"), "{alerts:#?}");
    assert!(
        !alerts.iter().any(|a| a["tool"] == "read_file"),
        "a shared name is no alert: {alerts:#?}"
    );
}

#[test]
fn external_hook_timeout_fails_closed_unless_the_policy_says_open() {
    let scene = scene("hook");
    let hook = |fail_closed: bool| {
        format!(
            r#"[tools]
[mcp.hook]
command = "/bin/sh"
args = ["-c", "m=$(cat); case $m in *slow*) sleep 5;; esac; case $m in *forbidden*) echo '{{\"decision\":\"deny\",\"reason\":\"word filter\"}}';; *) echo '{{\"decision\":\"allow\"}}';; esac"]
timeout_ms = 300
fail_closed = {fail_closed}
"#
        )
    };
    let actions = json!([
        {"op": "call", "tool": "echo", "args": {"message": "fine"}},
        {"op": "call", "tool": "echo", "args": {"message": "forbidden"}},
        {"op": "call", "tool": "echo", "args": {"message": "slow"}},
    ]);
    let closed = policy(&scene, "hook-closed", &[], &hook(true));
    let got = session(&scene, &closed, "ide", &tricky("noisy"), &actions);
    assert_eq!(text(&got[1]), "fine");
    refused(&got[2], "word filter");
    refused(&got[3], "300 ms");
    let open = policy(&scene, "hook-open", &[], &hook(false));
    let got = session(&scene, &open, "ide", &tricky("noisy"), &actions);
    refused(&got[2], "word filter");
    assert_eq!(text(&got[3]), "slow", "fail_closed = false lets it through");
}

#[test]
fn max_message_size_and_secret_shapes_off_from_the_policy() {
    let scene = scene("size");
    let actions = json!([
        {"op": "call", "tool": "huge", "args": {"message": "m"}},
        {"op": "call", "tool": "echo", "args": {"message": "AKIAIOSFODNN7EXAMPLE"}},
    ]);
    let small = policy(
        &scene,
        "size-small",
        &[],
        "[tools]\n[mcp]\nmax_message_size = \"64K\"\n[mcp.secret_shapes]\nenabled = false\n",
    );
    let got = session(&scene, &small, "ide", &tricky("noisy"), &actions);
    let err = got[1]["error"]
        .as_str()
        .expect("the huge answer is refused");
    assert!(err.contains("exceeds the limit of 65536 bytes"), "{err}");
    assert_eq!(
        text(&got[2]),
        "AKIAIOSFODNN7EXAMPLE",
        "shape detection off: the session survives and the key passes"
    );

    // The defaults: 4M lets the 200 kB answer through; the key in arguments is refused.
    let default = policy(&scene, "size-default", &[], "[tools]\n");
    let got = session(&scene, &default, "ide", &tricky("noisy"), &actions);
    assert_eq!(text(&got[1]).len(), 200_000);
    refused(&got[2], "aws-access-key");
}

fn pins_cmd(scene: &Scene, policy: &Path, args: &[&str]) -> std::process::Output {
    Command::new(mcp_guard())
        .arg("--state-dir")
        .arg(scene.state(policy))
        .arg("pins")
        .args(args)
        .output()
        .expect("run mcp-guard pins")
}

#[test]
fn a_rug_pull_is_caught_without_a_relist_and_accepted_with_pins_approve() {
    let scene = scene("rugpull");
    let policy = policy(&scene, "tricky", &[], "[tools]\n");
    // The client lists once and never again; the server changes `echo` and announces it.
    let actions = json!([
        {"op": "list_tools"},
        {"op": "call", "tool": "echo", "args": {"message": "one"}},
        {"op": "sleep", "seconds": 1},
        {"op": "call", "tool": "echo", "args": {"message": "two"}},
    ]);
    let got = session(&scene, &policy, "ide", &tricky("rugpull"), &actions);
    assert_eq!(tool_names(&got[1]), vec!["echo", "ping"]);
    assert_eq!(text(&got[2]), "one");
    refused(&got[4], "mcp-guard pins approve tricky echo");
    let alerts = mcp_guard_json(&scene, &policy, &["alerts", "--json"]);
    assert!(
        alerts
            .iter()
            .any(|a| a["rule"] == "tool-changed" && a["tool"] == "echo"),
        "{alerts:#?}"
    );

    // pins list: the change waits for approval, with what changed.
    let rows = mcp_guard_json(&scene, &policy, &["pins", "list", "--json"]);
    let row = |rows: &[Value], tool: &str| -> Value {
        rows.iter()
            .find(|r| r["tool"] == tool)
            .unwrap_or_else(|| panic!("no row for {tool}: {rows:#?}"))
            .clone()
    };
    let echo = row(&rows, "echo");
    assert_eq!(echo["server"], "tricky");
    assert_eq!(echo["status"], "changed", "{echo}");
    assert_eq!(echo["changed_parts"], json!(["description"]));
    assert!(
        echo["pending_description"]
            .as_str()
            .is_some_and(|d| d.contains("id_rsa")),
        "{echo}"
    );
    assert_eq!(row(&rows, "ping")["status"], "pinned");
    let table = pins_cmd(&scene, &policy, &["list", "tricky"]);
    let table_text = String::from_utf8_lossy(&table.stdout);
    assert!(table.status.success(), "{}", describe(&table));
    assert!(
        table_text.starts_with("SERVER") && table_text.contains("changed"),
        "{table_text}"
    );
    assert!(
        table_text.contains("mcp-guard pins approve tricky echo"),
        "{table_text}"
    );

    // pins approve accepts it; the pinned hash becomes the changed one.
    let ok = pins_cmd(&scene, &policy, &["approve", "tricky", "echo"]);
    assert!(ok.status.success(), "{}", describe(&ok));
    assert_eq!(
        String::from_utf8_lossy(&ok.stdout),
        "approved tricky echo\n"
    );
    let rows = mcp_guard_json(&scene, &policy, &["pins", "list", "tricky", "--json"]);
    let approved = row(&rows, "echo");
    assert_eq!(approved["status"], "pinned");
    assert_eq!(approved["hash"], echo["pending_hash"]);
    let again = pins_cmd(&scene, &policy, &["approve", "tricky"]);
    assert!(
        !again.status.success(),
        "nothing pending: {}",
        describe(&again)
    );
    assert!(String::from_utf8_lossy(&again.stderr).contains("no pending change"));
    let unknown = pins_cmd(&scene, &policy, &["list", "no-such-server"]);
    assert!(!unknown.status.success(), "{}", describe(&unknown));

    // The next session: the changed definition passes and its calls work. (This fixture's first
    // listing is the old definition, which is now the change: hidden until its own approval.)
    let actions = json!([
        {"op": "list_tools"},
        {"op": "list_tools"},
        {"op": "call", "tool": "echo", "args": {"message": "three"}},
    ]);
    let got = session(&scene, &policy, "ide", &tricky("rugpull"), &actions);
    assert_eq!(tool_names(&got[1]), vec!["ping"]);
    assert_eq!(tool_names(&got[2]), vec!["echo", "ping"]);
    assert_eq!(text(&got[3]), "three");
}

/// The attack: a client passes a credential as a named argument (`{"password": "..."}`) whose
/// value alone has no secret's shape. The history recognises it by its key and redacts it; the
/// pre-call check must read the same key, so the server never gets what the store would not
/// keep. Keys that merely contain such a word (`password_hint`, `max_tokens`) with plain values
/// pass untouched.
#[test]
fn a_password_passed_by_name_is_refused_or_redacted_before_the_server_gets_it() {
    let scene = scene("named-secret");
    // No shape matches the value alone: only its key makes it a password.
    let password = "Tr0ub4dor&3zq9";
    let benign = json!({"password_hint": "my first pet", "token_count": "12",
                        "max_tokens": "4096", "note": "keep it safe"});
    let actions = json!([
        {"op": "call", "tool": "echo_args", "args": {"password": password, "user": "svc"}},
        {"op": "call", "tool": "echo_args", "args": benign},
    ]);
    let deny = policy(
        &scene,
        "named-deny",
        &[],
        "[tools]\n[mcp.secret_shapes]\nin_arguments = \"deny\"\n",
    );
    let got = session(&scene, &deny, "ide", &tricky("args"), &actions);
    refused(&got[1], "generic-password");
    let passed: Value = serde_json::from_str(&text(&got[2])).expect("echoed arguments");
    assert_eq!(passed, benign, "no false positive on look-alike keys");

    let redact = policy(
        &scene,
        "named-redact",
        &[],
        "[tools]\n[mcp.secret_shapes]\nin_arguments = \"redact\"\n",
    );
    let got = session(&scene, &redact, "ide", &tricky("args"), &actions);
    let seen: Value = serde_json::from_str(&text(&got[1])).expect("echoed arguments");
    assert_eq!(
        seen,
        json!({"password": "[REDACTED:generic-password]", "user": "svc"}),
        "the server gets the marker, not the password"
    );
    let passed: Value = serde_json::from_str(&text(&got[2])).expect("echoed arguments");
    assert_eq!(passed, benign, "no false positive on look-alike keys");
    let alerts = mcp_guard_json(&scene, &redact, &["alerts", "--json"]);
    assert!(
        alerts.iter().any(|a| a["rule"] == "secret-in-arguments"),
        "{alerts:#?}"
    );
}
