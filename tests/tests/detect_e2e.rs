//! Correlation and detection end to end: a real MCP server (MCP Python SDK) whose read-only
//! `get_weather` reads a planted `~/.aws/credentials` and sends it to a local listener its
//! deliberately broad policy allows. Driven through `mcp-guard exec` by the SDK client; the
//! alerts, events and trace are read back with mcp-guard's own commands.

use std::{
    io::Read,
    net::TcpListener,
    path::{Path, PathBuf},
    process::Command,
};

use mcp_guard_tests::{fixture, mcp_guard, python, require_root, scratch_root, workspace_root};
use serde_json::Value;

struct Scene {
    dir: PathBuf,
    home: PathBuf,
    state: PathBuf,
    policy: PathBuf,
}

/// The shipped default policy, widened the way a careless admin would: the whole home readable
/// and one local destination allowed.
fn scene(tag: &str, port: u16) -> Scene {
    scene_with(tag, &[port], &[])
}

/// [`scene`] with several allowed local ports and `(from, to)` replacements of the policy text.
fn scene_with(tag: &str, ports: &[u16], edits: &[(&str, &str)]) -> Scene {
    let dir = scratch_root().join(format!("detect-{tag}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    let home = dir.join("home");
    std::fs::create_dir_all(home.join(".aws")).expect("home");
    std::fs::write(
        home.join(".aws/credentials"),
        "[default]\naws_secret_access_key = planted-by-the-test\n",
    )
    .expect("plant credentials");
    std::fs::write(home.join("notes.txt"), "buy milk\n").expect("notes");
    let venv = workspace_root().join(".venv");
    let python_home = std::fs::canonicalize(venv.join("bin/python"))
        .expect("venv python")
        .parent()
        .and_then(Path::parent)
        .expect("python prefix")
        .to_path_buf();
    let venv = venv.canonicalize().expect("venv");
    let extra = |paths: &[&Path]| -> String {
        paths
            .iter()
            .map(|p| format!("  \"{}\",\n", p.display()))
            .collect()
    };
    let shipped = std::fs::read_to_string(workspace_root().join("policies/default.toml"))
        .expect("default policy");
    let allow: Vec<String> = ports.iter().map(|p| format!("\"127.0.0.1:{p}\"")).collect();
    let mut policy_text = shipped
        .replacen(
            "\nread = [\n",
            &format!(
                "\nread = [\n{}",
                extra(&[&home, &venv, &python_home, &fixture("")])
            ),
            1,
        )
        .replacen(
            "\nexec = [\n",
            &format!("\nexec = [\n{}", extra(&[&venv, &python_home])),
            1,
        )
        .replacen(
            "\nallow = []\n",
            &format!("\nallow = [{}]\n", allow.join(", ")),
            1,
        );
    for (from, to) in edits {
        assert!(policy_text.contains(from), "{from} in the default policy");
        policy_text = policy_text.replacen(from, to, 1);
    }
    let policy = dir.join("weather.toml");
    std::fs::write(&policy, policy_text).expect("policy");
    Scene {
        state: dir.join("state"),
        dir,
        home,
        policy,
    }
}

fn session(scene: &Scene, port: u16, tool: &str) -> Value {
    let out = Command::new(python())
        .arg(fixture("mcp_client.py"))
        .args(["--call", tool, r#"{"city": "Lyon"}"#, "--"])
        .arg(mcp_guard())
        .arg("--state-dir")
        .arg(&scene.state)
        .args(["exec", "--name", "weather", "--policy"])
        .arg(&scene.policy)
        .arg("--")
        .arg(workspace_root().join(".venv/bin/python"))
        .arg(fixture("weather_server.py"))
        .arg(port.to_string())
        .env("HOME", &scene.home)
        .output()
        .expect("run the SDK client");
    assert!(
        out.status.success(),
        "client failed: {}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).expect("client JSON")
}

fn query(scene: &Scene, args: &[&str]) -> Vec<Value> {
    let out = Command::new(mcp_guard())
        .arg("--state-dir")
        .arg(&scene.state)
        .args(args)
        .output()
        .expect("query");
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(|l| serde_json::from_str(l).expect("a JSON line"))
        .collect()
}

#[test]
fn credential_theft_in_a_read_only_tool_is_alerted_naming_the_call() {
    require_root();
    let listener = TcpListener::bind("127.0.0.1:0").expect("listen");
    let port = listener.local_addr().expect("addr").port();
    let received = std::thread::spawn(move || {
        let (mut conn, _) = listener.accept().expect("accept");
        let mut got = String::new();
        let _ = conn.read_to_string(&mut got);
        got
    });
    let scene = scene("theft", port);
    let answer = session(&scene, port, "get_weather");
    assert_eq!(answer["call"]["is_error"], false, "{answer}");
    assert!(
        received
            .join()
            .expect("listener")
            .contains("planted-by-the-test"),
        "the broad policy let it through: detection is what is tested"
    );

    let calls = query(&scene, &["calls", "--json", "--tool", "get_weather"]);
    assert_eq!(calls.len(), 1, "{calls:?}");
    let call_id = calls[0]["call_id"].as_str().expect("call id").to_string();
    let events = query(&scene, &["events", "--json", "--call", &call_id]);
    let cred = scene.home.join(".aws/credentials");
    let open = events
        .iter()
        .find(|e| e["kind"] == "open" && e["path"] == cred.to_str().expect("utf-8"))
        .unwrap_or_else(|| panic!("the credential open in the call: {events:?}"));
    let connect = events
        .iter()
        .find(|e| e["kind"] == "connect" && e["port"].as_u64() == Some(u64::from(port)))
        .unwrap_or_else(|| panic!("the connect in the call: {events:?}"));
    for e in [open, connect] {
        assert_eq!(e["attribution"], "call", "{e}");
        assert_eq!(e["call_id"], call_id.as_str(), "{e}");
    }

    let alerts = query(&scene, &["alerts", "--json"]);
    for rule in ["sensitive-read", "exfiltration"] {
        let alert = alerts
            .iter()
            .find(|a| a["rule"] == rule)
            .unwrap_or_else(|| panic!("a {rule} alert: {alerts:?}"));
        assert_eq!(alert["call_id"], call_id.as_str(), "{alert}");
        assert_eq!(alert["tool"], "get_weather", "{alert}");
        assert!(
            alert["event_ids"]
                .as_array()
                .is_some_and(|ids| ids.contains(&open["event_id"])),
            "{alert}"
        );
    }

    // The timeline shows the open before the connect.
    let trace = Command::new(mcp_guard())
        .arg("--state-dir")
        .arg(&scene.state)
        .args(["trace", &call_id])
        .output()
        .expect("trace");
    let text = String::from_utf8_lossy(&trace.stdout);
    let at_open = text.find("credentials").unwrap_or_else(|| panic!("{text}"));
    let at_connect = text
        .find(&format!(":{port}"))
        .unwrap_or_else(|| panic!("{text}"));
    assert!(at_open < at_connect, "{text}");
    let _ = std::fs::remove_dir_all(&scene.dir);
}

#[test]
fn an_honest_call_raises_no_alert() {
    require_root();
    let scene = scene("honest", 9);
    let answer = session(&scene, 9, "forecast");
    assert_eq!(answer["call"]["text"], "Lyon: cloudy, 18 C", "{answer}");
    let alerts = query(&scene, &["alerts", "--json"]);
    assert!(alerts.is_empty(), "{alerts:?}");
    let _ = std::fs::remove_dir_all(&scene.dir);
}

/// Runs `steps` (see `tests/fixtures/detect_client.py`) against the weather server under exec;
/// the fixture's exfiltration port is `port`. Returns one result per call.
#[expect(
    clippy::needless_pass_by_value,
    reason = "callers build the JSON in place with json!"
)]
fn script(scene: &Scene, port: u16, steps: Value, extra: &[&str]) -> Vec<Value> {
    let out = Command::new(python())
        .arg(fixture("detect_client.py"))
        .arg(steps.to_string())
        .arg("--")
        .arg(mcp_guard())
        .arg("--state-dir")
        .arg(&scene.state)
        .args(["exec", "--name", "weather", "--policy"])
        .arg(&scene.policy)
        .args(extra)
        .arg("--")
        .arg(workspace_root().join(".venv/bin/python"))
        .arg(fixture("weather_server.py"))
        .arg(port.to_string())
        .env("HOME", &scene.home)
        .output()
        .expect("run the SDK client");
    assert!(
        out.status.success(),
        "client failed: {}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).expect("client JSON")
}

#[expect(
    clippy::needless_pass_by_value,
    reason = "callers build the JSON in place with json!"
)]
fn call(tool: &str, args: Value) -> Value {
    serde_json::json!({"call": tool, "args": args})
}

/// A local listener that accepts and reads connections until the test ends.
fn sink_listener() -> u16 {
    let listener = TcpListener::bind("127.0.0.1:0").expect("listen");
    let port = listener.local_addr().expect("addr").port();
    std::thread::spawn(move || {
        for conn in listener.incoming().flatten() {
            let mut conn = conn;
            let _ = conn.read_to_end(&mut Vec::new());
        }
    });
    port
}

#[test]
fn deny_call_fails_the_call_in_flight_and_the_session_goes_on() {
    require_root();
    let scene = scene_with(
        "deny",
        &[9],
        &[("on_sensitive = \"alert\"", "on_sensitive = \"deny-call\"")],
    );
    let results = script(
        &scene,
        9,
        serde_json::json!([
            call("slow_weather", serde_json::json!({"city": "Lyon"})),
            call("forecast", serde_json::json!({"city": "Lyon"})),
        ]),
        &[],
    );
    let denied = &results[0];
    let error = denied["error"]
        .as_str()
        .unwrap_or_else(|| panic!("the client got an error, not the server's answer: {results:?}"));
    assert!(error.contains("sensitive-read"), "names the rule: {error}");
    assert!(
        denied["secs"].as_f64().is_some_and(|s| s < 2.5),
        "failed while the tool was still running (it takes 3 s): {denied}"
    );
    // The server's late answer to the failed call was dropped; the next call is answered.
    assert_eq!(results[1]["text"], "Lyon: cloudy, 18 C", "{results:?}");

    let calls = query(&scene, &["calls", "--json", "--tool", "slow_weather"]);
    assert_eq!(calls.len(), 1, "{calls:?}");
    assert_eq!(calls[0]["decision"], "denied", "{calls:?}");
    assert!(
        calls[0]["reason"]
            .as_str()
            .is_some_and(|r| r.contains("sensitive-read")),
        "{calls:?}"
    );
    let alerts = query(&scene, &["alerts", "--json"]);
    assert!(
        alerts
            .iter()
            .any(|a| a["rule"] == "sensitive-read" && a["call_id"] == calls[0]["call_id"]),
        "{alerts:?}"
    );
    let _ = std::fs::remove_dir_all(&scene.dir);
}

#[test]
fn under_observe_deny_call_is_recorded_not_acted_on() {
    require_root();
    let scene = scene_with(
        "deny-observe",
        &[9],
        &[("on_sensitive = \"alert\"", "on_sensitive = \"deny-call\"")],
    );
    let results = script(
        &scene,
        9,
        serde_json::json!([call("slow_weather", serde_json::json!({"city": "Lyon"}))]),
        &["--observe"],
    );
    assert_eq!(results[0]["text"], "Lyon: sunny, 21 C", "{results:?}");
    let alerts = query(&scene, &["alerts", "--json"]);
    let alert = alerts
        .iter()
        .find(|a| a["rule"] == "sensitive-read")
        .unwrap_or_else(|| panic!("still alerted: {alerts:?}"));
    assert_eq!(alert["action"], "deny-call", "{alert}");
    let calls = query(&scene, &["calls", "--json", "--tool", "slow_weather"]);
    assert_eq!(calls[0]["decision"], "allowed", "{calls:?}");
    let _ = std::fs::remove_dir_all(&scene.dir);
}

#[test]
fn secret_read_then_a_large_result_is_an_exfiltration_shape() {
    require_root();
    let scene = scene("large", 9);
    let results = script(
        &scene,
        9,
        serde_json::json!([call("weather_report", serde_json::json!({"city": "Lyon"}))]),
        &[],
    );
    assert!(
        results[0]["text"]
            .as_str()
            .is_some_and(|t| t.len() > 80 * 1024),
        "{}",
        &results[0].to_string()[..200.min(results[0].to_string().len())]
    );
    let calls = query(&scene, &["calls", "--json", "--tool", "weather_report"]);
    assert_eq!(calls.len(), 1, "{calls:?}");
    let alerts = query(&scene, &["alerts", "--json"]);
    let exfil = alerts
        .iter()
        .find(|a| a["rule"] == "exfiltration")
        .unwrap_or_else(|| panic!("an exfiltration alert: {alerts:?}"));
    assert_eq!(exfil["call_id"], calls[0]["call_id"], "{exfil}");
    assert_eq!(exfil["tool"], "weather_report", "{exfil}");
    assert!(
        exfil["summary"]
            .as_str()
            .is_some_and(|s| s.contains("returned")),
        "{exfil}"
    );
    // The control: a small answer after no secret raises nothing of the kind.
    assert_eq!(
        alerts
            .iter()
            .filter(|a| a["rule"] == "exfiltration")
            .count(),
        1,
        "{alerts:?}"
    );
    let _ = std::fs::remove_dir_all(&scene.dir);
}

#[test]
fn learned_behaviour_is_quiet_and_a_departure_is_alerted() {
    require_root();
    let (usual, other) = (sink_listener(), sink_listener());
    let scene = scene_with("learn", &[usual, other], &[]);
    let report = |port: u16| call("report", serde_json::json!({ "port": port }));

    // Learning: first-seen egress is recorded as normal, not alerted.
    let learnt = script(&scene, 9, serde_json::json!([report(usual)]), &["--learn"]);
    assert_eq!(learnt[0]["text"], "reported", "{learnt:?}");
    assert!(
        query(&scene, &["alerts", "--json"]).is_empty(),
        "nothing alerted while learning"
    );
    let profile: Value = serde_json::from_slice(
        // Kept per policy (the widened default keeps its name) and server.
        &std::fs::read(scene.state.join("profiles/default/weather.json")).expect("profile saved"),
    )
    .expect("profile JSON");
    assert!(
        profile["tools"]["report"]["egress"]
            .as_array()
            .is_some_and(|e| e.contains(&Value::from(format!("127.0.0.1:{usual}")))),
        "{profile}"
    );

    // Afterwards: the learned destination is quiet, a new one is alerted.
    let after = script(
        &scene,
        9,
        serde_json::json!([report(usual), report(other)]),
        &[],
    );
    assert!(after.iter().all(|r| r["text"] == "reported"), "{after:?}");
    let alerts = query(&scene, &["alerts", "--json"]);
    let calls = query(&scene, &["calls", "--json", "--tool", "report"]);
    assert_eq!(alerts.len(), 1, "only the departure: {alerts:?}");
    assert_eq!(alerts[0]["rule"], "new-egress", "{alerts:?}");
    assert!(
        alerts[0]["summary"]
            .as_str()
            .is_some_and(|s| s.contains(&format!(":{other}"))),
        "{alerts:?}"
    );
    let departed = calls
        .iter()
        .find(|c| c["call_id"] == alerts[0]["call_id"])
        .unwrap_or_else(|| panic!("the alert names a call: {alerts:?} {calls:?}"));
    assert_eq!(departed["tool"], "report");
    let _ = std::fs::remove_dir_all(&scene.dir);
}

#[test]
fn overlapping_calls_make_their_events_ambiguous_listing_both() {
    require_root();
    let scene = scene("overlap", 9);
    let results = script(
        &scene,
        9,
        serde_json::json!([{"parallel": [
            call("slow_read", serde_json::json!({})),
            call("slow_read", serde_json::json!({})),
        ]}]),
        &[],
    );
    assert!(
        results.iter().all(|r| r["text"] == "buy milk\n"),
        "{results:?}"
    );
    let calls = query(&scene, &["calls", "--json", "--tool", "slow_read"]);
    assert_eq!(calls.len(), 2, "{calls:?}");
    let mut ids: Vec<&str> = calls
        .iter()
        .map(|c| c["call_id"].as_str().expect("id"))
        .collect();
    ids.sort_unstable();
    let notes = scene.home.join("notes.txt");
    let events = query(&scene, &["events", "--json", "--kind", "open"]);
    let reads: Vec<&Value> = events
        .iter()
        .filter(|e| e["path"] == notes.to_str().expect("utf-8"))
        .collect();
    assert_eq!(reads.len(), 2, "one open per call: {events:?}");
    for e in reads {
        assert_eq!(e["attribution"], "ambiguous", "{e}");
        assert_eq!(e["call_id"], Value::Null, "{e}");
        let mut candidates: Vec<&str> = e["candidates"]
            .as_array()
            .unwrap_or_else(|| panic!("candidates listed: {e}"))
            .iter()
            .map(|c| c.as_str().expect("id"))
            .collect();
        candidates.sort_unstable();
        assert_eq!(candidates, ids, "{e}");
    }
    let _ = std::fs::remove_dir_all(&scene.dir);
}

#[test]
fn a_read_only_tool_that_writes_is_alerted_and_an_honest_one_is_not() {
    require_root();
    let scene = scene("readonly", 9);
    let results = script(
        &scene,
        9,
        serde_json::json!([
            call("forecast", serde_json::json!({"city": "Lyon"})),
            call("logged_weather", serde_json::json!({"city": "Lyon"})),
        ]),
        &[],
    );
    assert_eq!(results[1]["text"], "Lyon: sunny, 21 C", "{results:?}");
    let calls = query(&scene, &["calls", "--json", "--tool", "logged_weather"]);
    assert_eq!(calls.len(), 1, "{calls:?}");
    let alerts = query(&scene, &["alerts", "--json"]);
    assert_eq!(alerts.len(), 1, "{alerts:?}");
    assert_eq!(alerts[0]["rule"], "readonly-write", "{alerts:?}");
    assert_eq!(alerts[0]["call_id"], calls[0]["call_id"], "{alerts:?}");
    assert!(
        alerts[0]["summary"]
            .as_str()
            .is_some_and(|s| s.contains("/tmp/weather.log")),
        "{alerts:?}"
    );
    let _ = std::fs::remove_dir_all(&scene.dir);
}

/// One rule firing again and again on the same tool and evidence is one alert with a count and
/// the last time it fired, for `alerts` and `trace`; other evidence is an alert of its own.
#[test]
fn a_repeated_alert_is_one_row_with_a_count_and_other_evidence_another() {
    require_root();
    let scene = scene("repeat", 9);
    std::fs::write(scene.home.join(".netrc"), "machine example.com\n").expect("plant netrc");
    let read = |name: &str, times: u32| {
        call(
            "read_home_file",
            serde_json::json!({"name": name, "times": times}),
        )
    };
    let results = script(
        &scene,
        9,
        serde_json::json!([
            read(".aws/credentials", 2),
            read(".aws/credentials", 1),
            read(".netrc", 1)
        ]),
        &[],
    );
    assert!(results.iter().all(|r| r["text"] == "read"), "{results:?}");
    let alerts = query(&scene, &["alerts", "--json"]);
    let reads: Vec<&Value> = alerts
        .iter()
        .filter(|a| a["rule"] == "sensitive-read" && a["tool"] == "read_home_file")
        .collect();
    assert_eq!(reads.len(), 2, "one per evidence: {alerts:#?}");
    let cred = reads
        .iter()
        .find(|a| {
            a["summary"]
                .as_str()
                .is_some_and(|s| s.contains(".aws/credentials"))
        })
        .unwrap_or_else(|| panic!("{alerts:#?}"));
    // Three opens over two calls, in one row.
    assert!(cred["count"].as_u64().is_some_and(|n| n >= 2), "{cred}");
    let ts = cred["ts"].as_str().expect("ts");
    let last = cred["last_seen"].as_str().expect("last_seen");
    assert!(last > ts, "{cred}");
    let netrc = reads
        .iter()
        .find(|a| a["summary"].as_str().is_some_and(|s| s.contains(".netrc")))
        .unwrap_or_else(|| panic!("{alerts:#?}"));
    assert_eq!(netrc["count"], 1, "{netrc}");
    assert_eq!(netrc["last_seen"], netrc["ts"], "{netrc}");
    // The second call's trace shows the alert its open was counted in.
    let calls = query(&scene, &["calls", "--json", "--tool", "read_home_file"]);
    assert_eq!(calls.len(), 3, "{calls:?}");
    let second = calls[1]["call_id"].as_str().expect("call id");
    assert_ne!(cred["call_id"], second, "the row is the first call's");
    let trace = query(&scene, &["trace", second, "--json"]);
    assert!(
        trace
            .iter()
            .any(|l| l["type"] == "alert" && l["alert_id"] == cred["alert_id"]),
        "{trace:#?}"
    );
    // The table shows the count.
    let out = Command::new(mcp_guard())
        .arg("--state-dir")
        .arg(&scene.state)
        .arg("alerts")
        .output()
        .expect("alerts");
    let table = String::from_utf8_lossy(&out.stdout);
    assert!(
        table.lines().next().is_some_and(|h| h.contains("COUNT")),
        "{table}"
    );
    let _ = std::fs::remove_dir_all(&scene.dir);
}
