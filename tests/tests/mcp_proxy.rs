//! End-to-end tests of the MCP proxy: the real MCP Python SDK client and real MCP servers (npm
//! `server-everything`, `server-filesystem`, PyPI `mcp-server-time`, and the misbehaving fixture
//! `tests/fixtures/tricky_server.py`), with the proxy running in-process between their stdio.
//!
//! These drive `mcp_guard_proxy::proxy::run` directly, the same function `mcp-guard exec` calls.

use std::{
    path::{Path, PathBuf},
    process::Stdio,
    sync::{Arc, Mutex},
    time::Duration,
};

use mcp_guard_model::names::StateKey;
use mcp_guard_proxy::{self as mcp, ProxyConfig, pins::PinConfig, session::MemorySink};
use mcp_guard_tests::{fixture, npm_server, python};
use serde_json::{Value, json};
use tokio::{
    io::{AsyncBufReadExt, AsyncWriteExt, BufReader},
    process::Command,
};

fn tmpdir(name: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!("mcp-guard-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).expect("create temp dir");
    d
}

fn everything() -> Vec<String> {
    vec![
        "node".into(),
        npm_server("@modelcontextprotocol/server-everything")
            .display()
            .to_string(),
        "stdio".into(),
    ]
}

fn filesystem(root: &Path) -> Vec<String> {
    vec![
        "node".into(),
        npm_server("@modelcontextprotocol/server-filesystem")
            .display()
            .to_string(),
        root.display().to_string(),
    ]
}

fn tricky(mode: &str) -> Vec<String> {
    vec![
        python().display().to_string(),
        fixture("tricky_server.py").display().to_string(),
        mode.into(),
    ]
}

fn time_server() -> Vec<String> {
    vec![
        python().display().to_string(),
        "-m".into(),
        "mcp_server_time".into(),
        "--local-timezone".into(),
        "UTC".into(),
    ]
}

fn rt() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("tokio runtime")
}

fn client_cmd(dir: &Path, actions: &Value, client_name: &str) -> (Command, PathBuf) {
    let acts = dir.join(format!("actions-{client_name}.json"));
    std::fs::write(&acts, actions.to_string()).expect("write actions");
    let out = dir.join(format!("out-{client_name}-{}.json", rand_suffix()));
    let mut c = Command::new(python());
    c.arg(fixture("mcp_sdk_actions.py"))
        .arg(&out)
        .arg(&acts)
        .arg(client_name);
    (c, out)
}

fn rand_suffix() -> u128 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .expect("clock")
        .as_nanos()
}

fn read_out(out: &Path) -> Value {
    let text = std::fs::read_to_string(out)
        .unwrap_or_else(|e| panic!("the client wrote no results to {} ({e})", out.display()));
    serde_json::from_str(&text).expect("client results are JSON")
}

/// The SDK client spawns the server itself: the baseline without mcp-guard.
fn direct(server: &[String], actions: &Value, dir: &Path) -> Value {
    let (mut c, out) = client_cmd(dir, actions, "direct");
    c.args(server).stderr(Stdio::null());
    let status = rt()
        .block_on(async { tokio::time::timeout(Duration::from_mins(1), c.status()).await })
        .expect("direct client finished in time")
        .expect("client runs");
    assert!(status.success(), "direct client failed: {status}");
    read_out(&out)
}

/// The SDK client talks to the proxy, which talks to the server.
fn proxied(
    server: &[String],
    actions: &Value,
    dir: &Path,
    client_name: &str,
    config: ProxyConfig,
) -> (Value, Arc<Mutex<MemorySink>>, mcp::ProxyOutcome) {
    let sink = Arc::new(Mutex::new(MemorySink::default()));
    let outcome = rt().block_on(async {
        let mut srv = Command::new(&server[0])
            .args(&server[1..])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .kill_on_drop(true)
            .spawn()
            .expect("spawn server");
        let (mut c, out) = client_cmd(dir, actions, client_name);
        let mut cli = c
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .kill_on_drop(true)
            .spawn()
            .expect("spawn client");
        let outcome = tokio::time::timeout(
            Duration::from_mins(1),
            mcp::run(
                cli.stdout.take().expect("client stdout"),
                cli.stdin.take().expect("client stdin"),
                srv.stdin.take().expect("server stdin"),
                srv.stdout.take().expect("server stdout"),
                config,
                sink.clone(),
                None,
            ),
        )
        .await
        .expect("the proxy ends when client and server are done")
        .expect("proxy runs");
        let status = cli.wait().await.expect("client exits");
        assert!(status.success(), "proxied client failed: {status}");
        let _ = srv.wait().await;
        (outcome, out)
    });
    let (outcome, out) = outcome;
    (read_out(&out), sink, outcome)
}

fn config(server: &str, dir: &Path) -> ProxyConfig {
    let mut c = ProxyConfig::new(server);
    c.pins = Some(PinConfig {
        state_dir: dir.to_path_buf(),
        policy: server.into(),
    });
    c
}

fn tool_names(list: &Value) -> Vec<String> {
    list["tools"]
        .as_array()
        .expect("tools")
        .iter()
        .map(|t| t["name"].as_str().expect("name").to_string())
        .collect()
}

#[test]
fn everything_server_results_identical_with_and_without_the_proxy() {
    let dir = tmpdir("identical-everything");
    let actions = json!([
        {"op": "list_tools"},
        {"op": "call", "tool": "echo", "args": {"message": "hello through the proxy"}},
        {"op": "call", "tool": "get-sum", "args": {"a": 19, "b": 23}},
        {"op": "call", "tool": "get-structured-content", "args": {"location": "New York"}},
        {"op": "call", "tool": "no-such-tool", "args": {}},
    ]);
    let want = direct(&everything(), &actions, &dir);
    let (got, sink, outcome) = proxied(
        &everything(),
        &actions,
        &dir,
        "direct",
        config("everything", &dir),
    );
    assert_eq!(got, want, "results differ through the proxy");
    assert_eq!(outcome.denied + outcome.modified, 0, "{outcome:?}");
    let sink = sink.lock().expect("sink");
    let calls: Vec<_> = sink
        .calls
        .iter()
        .filter(|c| c.method == "tools/call")
        .collect();
    assert_eq!(calls.len(), 4, "{:?}", sink.calls);
    assert!(calls.iter().all(|c| c.decision == mcp::Decision::Allowed));
    // What the metrics need is on every record: a decision label and a measured duration.
    assert!(
        calls
            .iter()
            .all(|c| c.decision.as_str() == "allowed" && c.duration > Duration::ZERO),
        "{calls:?}"
    );
    assert_eq!(calls[0].tool.as_deref(), Some("echo"));
    assert!(sink.findings.is_empty(), "{:?}", sink.findings);
    // First sight pinned every tool.
    let key = StateKey::new("everything", "everything").expect("key");
    let pins = mcp::pins::load(&dir, &key).expect("pins");
    assert!(
        pins.tools.contains_key("get-sum"),
        "{:?}",
        pins.tools.keys()
    );
}

#[test]
fn time_server_results_identical_with_and_without_the_proxy() {
    let dir = tmpdir("identical-time");
    let actions = json!([
        {"op": "list_tools"},
        {"op": "call", "tool": "convert_time",
         "args": {"source_timezone": "UTC", "time": "12:00", "target_timezone": "Asia/Tokyo"}},
        {"op": "call", "tool": "convert_time",
         "args": {"source_timezone": "Nowhere/Invalid", "time": "12:00", "target_timezone": "UTC"}},
    ]);
    // convert_time answers with today's date (UTC): the two runs compare only when both saw
    // the same day, so a pair that straddles midnight is run again (a pair takes seconds).
    let utc_day = || {
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .expect("clock")
            .as_secs()
            / 86_400
    };
    let (want, got, outcome) = loop {
        let day = utc_day();
        let want = direct(&time_server(), &actions, &dir);
        let (got, _, outcome) = proxied(
            &time_server(),
            &actions,
            &dir,
            "direct",
            config("time", &dir),
        );
        if utc_day() == day {
            break (want, got, outcome);
        }
    };
    assert_eq!(got, want, "results differ through the proxy");
    assert_eq!(outcome.denied + outcome.modified, 0, "{outcome:?}");
}

#[test]
fn filesystem_denied_tool_is_hidden_and_refused_and_planted_secrets_are_redacted() {
    let dir = tmpdir("filesystem");
    let root = dir.join("root");
    std::fs::create_dir_all(&root).expect("root");
    let token = "tok-9f8e7d6c5b4a3210";
    let notes = root.join("notes.txt");
    std::fs::write(
        &notes,
        format!("deploy token: {token}\naws: AKIAIOSFODNN7EXAMPLE\nplain line\n"),
    )
    .expect("plant");
    let victim = root.join("written.txt");
    let actions = json!([
        {"op": "list_tools"},
        {"op": "call", "tool": "write_file",
         "args": {"path": victim.display().to_string(), "content": "should never be written"}},
        {"op": "call", "tool": "read_text_file", "args": {"path": notes.display().to_string()}},
    ]);
    let mut cfg = config("filesystem", &dir);
    cfg.tools.policy = "fs-readonly".into();
    cfg.tools.deny = vec!["write_file".into()];
    cfg.secrets.values = vec![("DEPLOY_TOKEN".into(), token.into())];
    let (got, sink, _) = proxied(&filesystem(&root), &actions, &dir, "ide", cfg);

    let names = tool_names(&got[1]);
    assert!(names.contains(&"read_text_file".to_string()), "{names:?}");
    assert!(
        !names.contains(&"write_file".to_string()),
        "write_file still listed: {names:?}"
    );

    let err = got[2]["error"]
        .as_str()
        .expect("write_file refused with an error");
    assert!(
        err.contains("write_file") && err.contains("fs-readonly"),
        "{err}"
    );
    assert!(!victim.exists(), "the denied call reached the server");

    let text = got[3]["result"]["content"][0]["text"]
        .as_str()
        .expect("file text");
    assert!(!text.contains(token), "secret leaked: {text}");
    assert!(text.contains("[REDACTED:secret DEPLOY_TOKEN]"), "{text}");
    assert!(
        text.contains("[REDACTED:aws-access-key]") && text.contains("plain line"),
        "{text}"
    );

    let sink = sink.lock().expect("sink");
    let rec = |tool: &str| {
        sink.calls
            .iter()
            .find(|c| c.tool.as_deref() == Some(tool))
            .unwrap_or_else(|| panic!("no record for {tool}: {:?}", sink.calls))
    };
    assert_eq!(rec("write_file").decision, mcp::Decision::Denied);
    assert!(rec("write_file").duration > Duration::ZERO);
    assert_eq!(rec("read_text_file").decision, mcp::Decision::Modified);
    assert!(rec("read_text_file").reason.contains("DEPLOY_TOKEN"));
}

#[test]
fn per_client_scoping_narrows_the_tools_one_client_sees() {
    let dir = tmpdir("scoping");
    let actions = json!([
        {"op": "list_tools"},
        {"op": "call", "tool": "get-sum", "args": {"a": 1, "b": 2}},
    ]);
    let mut cfg = config("everything", &dir);
    cfg.tools.per_client = mcp_guard_proxy::client_scope::ClientScopes::by_name([(
        "narrow-ide",
        vec!["echo".to_string()],
    )]);
    let (narrow, _, _) = proxied(&everything(), &actions, &dir, "narrow-ide", cfg.clone());
    assert_eq!(tool_names(&narrow[1]), vec!["echo"]);
    assert!(
        narrow[2]["error"]
            .as_str()
            .expect("refused")
            .contains("narrow-ide")
    );
    let (wide, _, _) = proxied(&everything(), &actions, &dir, "other-ide", cfg);
    assert!(tool_names(&wide[1]).len() > 5);
    assert!(wide[2]["result"].is_object(), "{}", wide[2]);
}

#[test]
fn a_changed_tool_description_is_caught_and_blocked_until_approved() {
    let dir = tmpdir("rugpull");
    let actions = json!([
        {"op": "list_tools"},
        {"op": "call", "tool": "echo", "args": {"message": "one"}},
        {"op": "list_tools"},
        {"op": "call", "tool": "echo", "args": {"message": "two"}},
    ]);
    let (got, sink, _) = proxied(
        &tricky("rugpull"),
        &actions,
        &dir,
        "ide",
        config("tricky", &dir),
    );
    assert_eq!(tool_names(&got[1]), vec!["echo", "ping"]);
    assert_eq!(got[2]["result"]["content"][0]["text"], "one");
    assert_eq!(
        tool_names(&got[3]),
        vec!["ping"],
        "the changed tool is hidden"
    );
    let err = got[4]["error"].as_str().expect("changed tool refused");
    assert!(err.contains("mcp-guard pins approve tricky echo"), "{err}");
    let sink = sink.lock().expect("sink");
    assert!(
        sink.findings
            .iter()
            .any(|f| f.rule == "tool-changed" && f.tool.as_deref() == Some("echo")),
        "{:?}",
        sink.findings
    );
    drop(sink);

    // After approval a new session sees the new definition.
    let key = StateKey::new("tricky", "tricky").expect("key");
    let approved = mcp::pins::approve(&dir, &key, Some("echo")).expect("approve");
    assert_eq!(approved, vec!["echo"]);
    let again = json!([{"op": "list_tools"}, {"op": "list_tools"}]);
    let (got, _, _) = proxied(
        &tricky("rugpull"),
        &again,
        &dir,
        "ide",
        config("tricky", &dir),
    );
    // The first listing is the old definition again: a change, so blocked once more.
    assert_eq!(tool_names(&got[1]), vec!["ping"]);
    assert_eq!(tool_names(&got[2]), vec!["echo", "ping"]);
}

#[test]
fn poisoned_descriptions_are_flagged_and_blocked() {
    let dir = tmpdir("poison");
    let actions = json!([
        {"op": "list_tools"},
        {"op": "call", "tool": "add", "args": {"message": "x"}},
    ]);
    let (got, sink, _) = proxied(
        &tricky("poison"),
        &actions,
        &dir,
        "ide",
        config("poison", &dir),
    );
    assert_eq!(tool_names(&got[1]), vec!["echo"]);
    assert!(
        got[2]["error"]
            .as_str()
            .expect("refused")
            .contains("poisoned")
    );
    let sink = sink.lock().expect("sink");
    let flagged: Vec<(&str, &str)> = sink
        .findings
        .iter()
        .filter(|f| f.rule == "tool-poisoning")
        .map(|f| (f.tool.as_deref().unwrap_or(""), f.summary.as_str()))
        .collect();
    let reason = |t: &str| {
        flagged
            .iter()
            .find(|(n, _)| *n == t)
            .map_or_else(|| panic!("{t} not flagged: {flagged:?}"), |(_, s)| *s)
    };
    assert!(reason("add").contains("<IMPORTANT>"), "{flagged:?}");
    // The hidden text is shown decoded, as the model would have read it.
    assert!(
        reason("tagged").contains("tag characters") && reason("tagged").contains("send secrets")
    );
    assert!(
        reason("ansi").contains("ANSI") && reason("ansi").contains("ignore previous instructions")
    );
    assert!(reason("bidi").contains("U+202E"));
}

/// Drives the proxy with raw lines (no SDK: it cannot send malformed JSON) against a real server.
#[test]
fn malformed_and_oversized_messages_get_errors_and_the_session_survives() {
    rt().block_on(async {
        let server = tricky("noisy");
        let mut srv = Command::new(&server[0])
            .args(&server[1..])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .kill_on_drop(true)
            .spawn()
            .expect("spawn server");
        let (client, proxy_side) = tokio::io::duplex(1 << 20);
        let (proxy_in, proxy_out) = tokio::io::split(proxy_side);
        let mut cfg = ProxyConfig::new("noisy");
        cfg.max_message_bytes = 4096;
        let (eof_tx, eof_rx) = tokio::sync::oneshot::channel();
        let proxy = tokio::spawn(mcp::run(
            proxy_in,
            proxy_out,
            srv.stdin.take().expect("stdin"),
            srv.stdout.take().expect("stdout"),
            cfg,
            MemorySink::default(),
            Some(eof_tx),
        ));
        let (rd, mut wr) = tokio::io::split(client);
        let mut lines = BufReader::new(rd).lines();
        let mut ask = async |line: String| -> Value {
            wr.write_all(format!("{line}\n").as_bytes()).await.expect("write");
            let l = tokio::time::timeout(Duration::from_secs(10), lines.next_line())
                .await
                .expect("an answer, not a hang")
                .expect("read")
                .expect("a line");
            serde_json::from_str(&l).expect("JSON answer")
        };
        let init = ask(json!({"jsonrpc":"2.0","id":0,"method":"initialize","params":{
            "protocolVersion":"2025-06-18","capabilities":{},"clientInfo":{"name":"raw","version":"1"}}})
            .to_string())
        .await;
        assert_eq!(init["result"]["serverInfo"]["name"], "tricky-noisy");

        let e = ask("{not json".into()).await;
        assert_eq!((e["id"].clone(), e["error"]["code"].clone()), (Value::Null, json!(-32700)));
        let e = ask(r#"{"jsonrpc":"2.0","id":5,"method":"tools/call","params":{"name":"echo","Name":"noisy"}}"#.into()).await;
        assert_eq!(e["error"]["code"], -32600, "{e}");
        assert!(e["error"]["message"].as_str().expect("msg").contains("duplicate key"));
        let e = ask(r#"{"jsonrpc":"1.0","id":6,"method":"x"}"#.into()).await;
        assert_eq!((e["id"].clone(), e["error"]["code"].clone()), (json!(6), json!(-32600)));
        let big = format!(r#"{{"jsonrpc":"2.0","id":7,"method":"tools/call","params":{{"name":"echo","arguments":{{"message":"{}"}}}}}}"#, "y".repeat(10_000));
        let e = ask(big).await;
        assert_eq!((e["id"].clone(), e["error"]["code"].clone()), (json!(7), json!(-32700)), "{e}");

        // The server's garbage line is dropped; its duplicate-key response becomes an error.
        let e = ask(json!({"jsonrpc":"2.0","id":8,"method":"tools/call","params":{"name":"noisy","arguments":{"message":"m"}}}).to_string()).await;
        assert_eq!(e["id"], 8, "{e}");
        assert!(e["error"]["message"].as_str().expect("msg").contains("duplicate key"), "{e}");
        // An oversized response is answered with an error for its id instead of a hang.
        let e = ask(json!({"jsonrpc":"2.0","id":9,"method":"tools/call","params":{"name":"huge","arguments":{"message":"m"}}}).to_string()).await;
        assert_eq!(e["id"], 9, "{e}");
        assert!(e["error"]["message"].as_str().expect("msg").contains("exceeds the limit"), "{e}");

        // Still alive: a normal call works, and its (late, valid) predecessor is not delivered.
        let ok = ask(json!({"jsonrpc":"2.0","id":10,"method":"tools/call","params":{"name":"echo","arguments":{"message":"alive"}}}).to_string()).await;
        assert_eq!(ok["result"]["content"][0]["text"], "alive", "{ok}");
        // A batch: one good request, one invalid element.
        let b = ask(r#"[{"jsonrpc":"2.0","id":11,"method":"x"},{"jsonrpc":"2.0"}]"#.into()).await;
        let b = b.as_array().expect("batch answer").clone();
        assert!(b.iter().any(|m| m["error"]["code"] == -32600), "{b:?}");

        wr.shutdown().await.expect("close the client's side");
        tokio::time::timeout(Duration::from_secs(10), eof_rx)
            .await
            .expect("client EOF reported in time")
            .expect("client EOF reported");
        let outcome = tokio::time::timeout(Duration::from_secs(10), proxy)
            .await
            .expect("the proxy ends once the client closes")
            .expect("join")
            .expect("proxy result");
        assert_eq!(outcome.malformed_from_client, 5, "{outcome:?}");
        assert_eq!(outcome.malformed_from_server, 3, "{outcome:?}");
    });
}

#[test]
fn argument_checks_and_the_external_hook_refuse_before_the_server() {
    let dir = tmpdir("args-hook");
    let actions = json!([
        {"op": "list_tools"},
        {"op": "call", "tool": "get-sum", "args": {"a": "one", "b": 2}},
        {"op": "call", "tool": "echo", "args": {"message": "this is far too long"}},
        {"op": "call", "tool": "echo", "args": {"message": "forbidden"}},
        {"op": "call", "tool": "echo", "args": {"message": "fine"}},
    ]);
    let mut cfg = config("everything", &dir);
    cfg.args.rules = [(
        "echo".to_string(),
        vec![mcp::args::ArgRule {
            arg: "message".into(),
            check: mcp::args::ArgCheck::MaxLen(12),
        }],
    )]
    .into();
    cfg.hook = Some(mcp::hook::HookConfig {
        command: "/bin/sh".into(),
        args: vec![
            "-c".into(),
            r#"if grep -q forbidden; then echo '{"decision":"deny","reason":"word filter"}'; else echo '{"decision":"allow"}'; fi"#.into(),
        ],
        timeout: Duration::from_secs(5),
        results: false,
        fail_open: false,
    });
    let (got, sink, _) = proxied(&everything(), &actions, &dir, "ide", cfg);
    let err = |i: usize| {
        got[i]["error"]
            .as_str()
            .unwrap_or_else(|| panic!("call {i} not refused: {}", got[i]))
            .to_string()
    };
    assert!(
        err(2).contains("mcp-guard") && err(2).contains("arguments.a"),
        "{}",
        err(2)
    );
    assert!(err(3).contains("longer than 12"), "{}", err(3));
    assert!(err(4).contains("word filter"), "{}", err(4));
    assert_eq!(got[5]["result"]["content"][0]["text"], "Echo: fine");
    let denied = sink
        .lock()
        .expect("sink")
        .calls
        .iter()
        .filter(|c| c.decision == mcp::Decision::Denied)
        .count();
    assert_eq!(denied, 3);
}

/// pydantic (the MCP Python SDK, FastMCP) lists a nested model's fields under `$defs` behind a
/// `$ref`: a call whose nested argument breaks them is refused before the server, as is one that
/// breaks `format`, `minItems` or `uniqueItems` (the server itself dedups the set and books it).
#[test]
fn nested_model_arguments_are_checked_against_the_listed_schema() {
    let dir = tmpdir("nested-models");
    let server = vec![
        python().display().to_string(),
        fixture("nested_model_server.py").display().to_string(),
    ];
    let trip = |traveler: Value, leaves: &str, stops: Value| json!({"trip": {"traveler": traveler, "leaves": leaves, "stops": stops}});
    let ann = json!({"name": "Ann", "age": 30});
    let at = "2026-01-01T10:00:00Z";
    let actions = json!([
        {"op": "list_tools"},
        {"op": "call", "tool": "book", "args": trip(ann.clone(), at, json!(["x"]))},
        {"op": "call", "tool": "book", "args": trip(json!({"name": "Ann", "age": -5}), at, json!(["x"]))},
        {"op": "call", "tool": "book", "args": trip(json!({"name": "ann; id", "age": 5}), at, json!(["x"]))},
        {"op": "call", "tool": "book", "args": trip(ann.clone(), "next tuesday", json!(["x"]))},
        {"op": "call", "tool": "book", "args": trip(ann.clone(), at, json!([]))},
        {"op": "call", "tool": "book", "args": trip(ann, at, json!(["x", "x"]))},
    ]);
    let (got, sink, _) = proxied(&server, &actions, &dir, "ide", config("nested", &dir));
    assert_eq!(
        got[2]["result"]["content"][0]["text"], "booked Ann",
        "{}",
        got[2]
    );
    for (i, at) in [
        (3, "arguments.trip.traveler.age"),
        (4, "arguments.trip.traveler.name"),
        (5, "arguments.trip.leaves"),
        (6, "arguments.trip.stops"),
        (7, "arguments.trip.stops"),
    ] {
        let err = got[i]["error"]
            .as_str()
            .unwrap_or_else(|| panic!("call {i} reached the server: {}", got[i]));
        assert!(
            err.contains("mcp-guard: refused call of \"book\"") && err.contains(at),
            "call {i}: {err}"
        );
    }
    let denied = sink
        .lock()
        .expect("sink")
        .calls
        .iter()
        .filter(|c| c.decision == mcp::Decision::Denied)
        .count();
    assert_eq!(denied, 5);
}

#[test]
fn observe_mode_reports_what_it_would_do_and_forwards_unchanged() {
    let dir = tmpdir("observe");
    let root = dir.join("root");
    std::fs::create_dir_all(&root).expect("root");
    let target = root.join("observed.txt");
    let actions = json!([
        {"op": "list_tools"},
        {"op": "call", "tool": "write_file",
         "args": {"path": target.display().to_string(), "content": "written"}},
    ]);
    let mut cfg = config("fs-observe", &dir);
    cfg.tools.deny = vec!["write_file".into()];
    cfg.observe = true;
    let (got, sink, outcome) = proxied(&filesystem(&root), &actions, &dir, "ide", cfg);
    assert!(tool_names(&got[1]).contains(&"write_file".to_string()));
    assert!(got[2]["result"].is_object(), "{}", got[2]);
    assert_eq!(
        std::fs::read_to_string(&target).expect("written"),
        "written"
    );
    assert_eq!(outcome.denied + outcome.modified, 0);
    let sink = sink.lock().expect("sink");
    let would: Vec<&str> = sink
        .findings
        .iter()
        .filter(|f| f.rule == "observe")
        .map(|f| f.summary.as_str())
        .collect();
    assert!(
        would
            .iter()
            .any(|s| s.contains("would have refused tools/call")),
        "{would:?}"
    );
    assert!(
        would
            .iter()
            .any(|s| s.contains("would have modified tools/list")),
        "{would:?}"
    );
}
