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
    let dir = scratch_root().join(format!("detect-{tag}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    let home = dir.join("home");
    std::fs::create_dir_all(home.join(".aws")).expect("home");
    std::fs::write(
        home.join(".aws/credentials"),
        "[default]\naws_secret_access_key = planted-by-the-test\n",
    )
    .expect("plant credentials");
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
    let policy_text = shipped
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
            &format!("\nallow = [\"127.0.0.1:{port}\"]\n"),
            1,
        );
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
