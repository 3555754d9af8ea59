//! The README's main job (`cargo xtask demo`) runs here as in front of a new user, and what it
//! shows is asserted: the benign calls got the real servers' answers, every attack was stopped by
//! the layer that should stop it, and mcp-guard's store recorded it.

use std::{path::Path, process::Command};

use mcp_guard_tests::{mcp_guard, python, require_root, scratch_root, workspace_root};
use serde_json::Value;

#[test]
fn the_demo_shows_real_servers_working_and_every_attack_stopped() {
    require_root();
    let dir = scratch_root().join(format!("demo-{}", std::process::id()));
    let out = Command::new(python())
        .arg(workspace_root().join("xtask/demo/demo.py"))
        .arg(mcp_guard())
        .arg(workspace_root())
        .arg("--json")
        .env("MCP_GUARD_DEMO_DIR", &dir)
        .output()
        .expect("run the demo");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let describe = format!(
        "{stdout}\nstderr:\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(out.status.success(), "{describe}");
    let summary: Value = stdout
        .lines()
        .last()
        .and_then(|l| serde_json::from_str(l).ok())
        .unwrap_or_else(|| panic!("no JSON summary:\n{describe}"));
    let fs = &summary["filesystem"];
    let text = |v: &Value| v["text"].as_str().unwrap_or_default().to_string();

    // Ordinary work gets the real server's answers.
    assert_eq!(fs["list"]["is_error"], false, "{describe}");
    assert!(text(&fs["list"]).contains("notes.md"), "{describe}");
    assert!(
        text(&fs["read"]).contains("Ship the release on Friday."),
        "{describe}"
    );
    // The credential read reached the kernel and was stopped twice over: landlock refused the
    // open (EACCES) and the policy's `on_sensitive = "deny-call"` failed the call as soon as the
    // open was seen. Whichever answer reaches the client first, the secret does not.
    assert_eq!(fs["credentials"]["is_error"], true, "{describe}");
    let refused = text(&fs["credentials"]);
    // The error names the secret file but asks nothing of the model: the client gets it as the
    // server wrote it, and no result-poisoning alert is raised for it.
    assert!(
        refused.contains("EACCES") || refused.contains("denied by detection rule sensitive-read"),
        "{describe}"
    );
    assert!(
        !text(&fs["credentials"]).contains("demo/secret"),
        "{describe}"
    );
    // The tool the policy denies is hidden and refused by the proxy.
    let tools: Vec<&str> = fs["tools"]
        .as_array()
        .expect("tools")
        .iter()
        .filter_map(Value::as_str)
        .collect();
    assert!(tools.contains(&"read_text_file") && !tools.contains(&"write_file"));
    assert!(
        text(&fs["write"]).contains("denied by policy"),
        "{describe}"
    );
    assert!(!dir.join("home/project/x").exists(), "write_file never ran");

    // The fetch to a local service was stopped in the kernel: nothing reached it.
    assert_eq!(summary["fetch"]["fetch"]["is_error"], true, "{describe}");
    assert_eq!(summary["fetch"]["listener_hits"], 0, "{describe}");

    // The rug pull: the changed tool is hidden and refused, and an alert says so.
    let rug = &summary["rug_pull"];
    assert_eq!(rug["first_call"]["is_error"], false, "{describe}");
    assert!(
        !rug["second_tools"]
            .as_array()
            .expect("tools")
            .contains(&Value::from("echo"))
    );
    assert!(
        text(&rug["after_change"]).contains("changed since it was pinned"),
        "{describe}"
    );
    let alerts = summary["alerts"].as_array().expect("alerts");
    assert!(
        !alerts
            .iter()
            .any(|a| a["rule"] == "result-poisoning" && a["server"] == "filesystem"),
        "{describe}"
    );
    assert!(
        alerts
            .iter()
            .any(|a| a["rule"] == "tool-changed" && a["server"] == "tricky" && a["tool"] == "echo"),
        "{describe}"
    );

    // The kernel events in the store: the denied credential open and the denied connect.
    let events = summary["events"].as_array().expect("events");
    // Only what the scenarios are about: not the demo's own working directory, which `python -m`
    // would put on the fetch server's import path (the demo runs it with -P).
    let cwd = std::env::current_dir().expect("cwd");
    assert!(
        !events
            .iter()
            .any(|e| e["path"].as_str().is_some_and(|p| Path::new(p) == cwd)),
        "{describe}"
    );
    let calls = summary["calls"].as_array().expect("calls");
    let cred = dir.join("home/.aws/credentials");
    assert!(
        events.iter().any(|e| e["kind"] == "open"
            && e["verdict"] == "denied"
            && e["path"] == cred.to_str().expect("utf-8")),
        "{describe}"
    );
    let port = summary["fetch"]["port"].as_u64().expect("port");
    let connect = events
        .iter()
        .find(|e| {
            e["server"] == "fetch"
                && e["kind"] == "connect"
                && e["verdict"] == "denied"
                && e["addr"] == "127.0.0.1"
                && e["port"].as_u64() == Some(port)
        })
        .unwrap_or_else(|| panic!("the denied connect:\n{describe}"));

    // Both are attributed to the tool call that made them, and alerted naming that call.
    let cred_open = events
        .iter()
        .find(|e| e["path"] == cred.to_str().expect("utf-8"))
        .expect("the credential open");
    for (event, rule, tool) in [
        (cred_open, "sensitive-read", "read_text_file"),
        (connect, "new-egress", "fetch"),
    ] {
        assert_eq!(event["attribution"], "call", "{event}\n{describe}");
        let call_id = event["call_id"].as_str().expect("attributed to a call");
        let call = calls
            .iter()
            .find(|c| c["call_id"] == call_id)
            .unwrap_or_else(|| panic!("call {call_id} recorded:\n{describe}"));
        assert_eq!(call["tool"], tool, "{describe}");
        assert!(
            alerts.iter().any(|a| a["rule"] == rule
                && a["call_id"] == call_id
                && a["tool"] == tool
                && a["event_ids"]
                    .as_array()
                    .is_some_and(|ids| ids.contains(&event["event_id"]))),
            "a {rule} alert naming call {call_id}:\n{describe}"
        );
    }
    // The denied tool call is in the call history with its reason.
    assert!(
        calls
            .iter()
            .any(|c| c["tool"] == "write_file" && c["decision"] == "denied"),
        "{describe}"
    );
    // The agent's /metrics counted the same: the refused write, the alerts, the denied connect.
    let metrics: Vec<&str> = summary["metrics"]
        .as_array()
        .expect("metrics")
        .iter()
        .filter_map(|l| l.as_str())
        .collect();
    for want in [
        "mcp_guard_tool_calls_total{decision=\"denied\",server=\"filesystem\",tool=\"write_file\"} 1",
        "mcp_guard_alerts_total{rule=\"sensitive-read\"",
        "mcp_guard_kernel_events_total{kind=\"connect\",server=\"fetch\",verdict=\"denied\"}",
    ] {
        assert!(
            metrics.iter().any(|l| l.starts_with(want)),
            "/metrics has no {want}:\n{metrics:#?}\n{describe}"
        );
    }
    let _ = std::fs::remove_dir_all(&dir);
}
