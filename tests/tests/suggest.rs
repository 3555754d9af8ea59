//! `mcp-guard policy suggest`: a store filled through the store API → a policy that passes
//! `mcp-guard policy check` and holds what was observed (and no secrets).

use std::{fs, path::PathBuf, process::Command};

use mcp_guard_model::{
    Attribution, CallRecord, Decision, EventKind, EventRecord, SessionRecord, Timestamp, Verdict,
};
use mcp_guard_store::{self as store, Store};
use mcp_guard_tests::mcp_guard;

fn event(n: u32, kind: EventKind, path: Option<&str>, flags: u32, result: i64) -> EventRecord {
    EventRecord {
        event_id: format!("e{n}"),
        ts: Timestamp::now(),
        server: "weather".into(),
        session: "weather-s1".into(),
        pid: 4242,
        kind,
        path: path.map(str::to_string),
        addr: None,
        port: None,
        host: None,
        verdict: Verdict::Allowed,
        call_id: None,
        attribution: Attribution::None,
        candidates: vec![],
        flags: Some(flags),
        result: Some(result),
        argv: None,
        proto: None,
        would_deny: false,
        detail: None,
    }
}

#[test]
fn suggested_policy_passes_check_and_holds_what_was_seen() {
    let dir: PathBuf =
        std::env::temp_dir().join(format!("mcp-guard-it-suggest-{}", std::process::id()));
    let _ = fs::remove_dir_all(&dir);
    fs::create_dir_all(&dir).expect("state dir");
    let home = std::env::var("HOME").unwrap_or_else(|_| "/root".into());
    {
        let mut s = Store::open(&store::db_path(&dir)).expect("open store");
        s.insert(SessionRecord {
            session: "weather-s1".into(),
            server: "weather".into(),
            started_at: Timestamp::now(),
            ended_at: None,
            command: vec!["python3".into(), "weather.py".into()],
            policy: "default".into(),
            pid: Some(4242),
            observe: false,
            exit_status: None,
            facts: mcp_guard_model::ServerFacts::default(),
        })
        .expect("session");
        let wr = (libc::O_WRONLY | libc::O_CREAT) as u32;
        let mut n = 0;
        let mut add = |e: EventRecord| {
            n += 1;
            s.insert(EventRecord {
                event_id: format!("e{n}"),
                ..e
            })
            .expect("insert event");
        };
        add(event(
            0,
            EventKind::Open,
            Some("/usr/lib/python3.11/json/__init__.py"),
            0,
            3,
        ));
        add(event(
            0,
            EventKind::Open,
            Some("/usr/lib/python3.11/os.py"),
            0,
            3,
        ));
        add(event(0, EventKind::Open, Some("/srv/cache/w.json"), wr, 4));
        add(event(
            0,
            EventKind::Open,
            Some(&format!("{home}/.aws/credentials")),
            0,
            5,
        ));
        add(event(0, EventKind::Open, Some("/etc/shadow"), 0, -13));
        add(event(0, EventKind::Exec, Some("/usr/bin/python3.11"), 0, 0));
        let mut c = event(0, EventKind::Connect, None, 0, 0);
        c.addr = Some("127.0.0.1".into());
        c.port = Some(8080);
        add(c.clone());
        c.addr = Some("10.9.9.9".into());
        c.verdict = Verdict::Denied;
        add(c);
    }
    let out = Command::new(mcp_guard())
        .arg("--state-dir")
        .arg(&dir)
        .args(["policy", "suggest", "--server", "weather"])
        .output()
        .expect("run suggest");
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(
        out.status.success(),
        "suggest failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    for must in [
        "name = \"weather\"",
        "\"/usr/lib/python3.11\"",
        // A loose file stays itself; a package root is granted whole.
        "\"/srv/cache/w.json\"",
        "\"/usr/bin/python3.11\"",
        "\"127.0.0.1:8080\"",
    ] {
        assert!(text.contains(must), "missing {must} in:\n{text}");
    }
    assert!(
        !text.contains("/usr/lib/python3.11/json"),
        "covered by its parent:\n{text}"
    );
    for never in [".aws", "/etc", "10.9.9.9"] {
        assert!(
            !text.contains(never),
            "{never} must not be suggested:\n{text}"
        );
    }
    let file = dir.join("suggested.toml");
    fs::write(&file, &text).expect("write policy");
    let check = Command::new(mcp_guard())
        .args(["policy", "check"])
        .arg(&file)
        .output()
        .expect("run check");
    assert!(
        check.status.success(),
        "policy check rejected the suggestion:\n{text}\n{}",
        String::from_utf8_lossy(&check.stderr)
    );
    fs::remove_dir_all(&dir).expect("cleanup");
}

fn session(id: &str) -> SessionRecord {
    SessionRecord {
        session: id.into(),
        server: "weather".into(),
        started_at: Timestamp::now(),
        ended_at: None,
        command: vec!["node".into(), "weather.js".into()],
        policy: "default".into(),
        pid: Some(4242),
        observe: true,
        exit_status: Some(0),
        facts: mcp_guard_model::ServerFacts::default(),
    }
}

fn call(session: &str, n: u32, tool: &str) -> CallRecord {
    CallRecord {
        call_id: format!("{session}-{n}"),
        server: "weather".into(),
        session: session.into(),
        method: "tools/call".into(),
        tool: Some(tool.into()),
        request_id: n.to_string(),
        started_at: Timestamp::now(),
        ended_at: Some(Timestamp::now()),
        decision: Decision::Allowed,
        reason: None,
        error: None,
        result_bytes: Some(10),
        audit: None,
    }
}

fn suggest(dir: &std::path::Path, extra: &[&str]) -> String {
    let out = Command::new(mcp_guard())
        .arg("--state-dir")
        .arg(dir)
        .args(["policy", "suggest", "--server", "weather"])
        .args(extra)
        .output()
        .expect("run suggest");
    assert!(
        out.status.success(),
        "suggest failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).expect("UTF-8")
}

/// Two sessions merge into one policy: package roots instead of files, the host name the address
/// was resolved from, the tools called (with their calls), limits from the higher peak, and a
/// reason on each line; `--session` keeps to the sessions named.
#[test]
fn suggestion_merges_sessions_into_roots_names_tools_and_limits() {
    let dir: PathBuf =
        std::env::temp_dir().join(format!("mcp-guard-it-suggest-merge-{}", std::process::id()));
    let _ = fs::remove_dir_all(&dir);
    fs::create_dir_all(&dir).expect("state dir");
    let modules = "/opt/weather/node_modules";
    {
        let mut s = Store::open(&store::db_path(&dir)).expect("open store");
        let mut n = 0;
        for id in ["weather-s1", "weather-s2"] {
            s.insert(session(id)).expect("session");
            for (i, tool) in (0u32..).zip(["get_forecast", "get_alerts"].iter()) {
                // s1 calls get_forecast only; s2 both.
                if id == "weather-s1" && i == 1 {
                    continue;
                }
                s.insert(call(id, i, tool)).expect("call");
            }
            let mut add = |mut e: EventRecord| {
                n += 1;
                e.event_id = format!("m{n}");
                e.session = id.into();
                s.insert(e).expect("insert event");
            };
            for file in 0..150 {
                add(event(
                    0,
                    EventKind::Open,
                    Some(&format!("{modules}/pkg{file}/lib/index.js")),
                    0,
                    3,
                ));
            }
            let mut resolve = event(0, EventKind::Resolve, None, 0, 0);
            resolve.detail = Some(serde_json::json!({
                "name": "api.weather.example", "addrs": ["192.0.2.7"], "ttl_secs": 60, "error": null
            }));
            add(resolve);
            let mut c = event(0, EventKind::Connect, None, 0, 0);
            c.addr = Some("192.0.2.7".into());
            c.port = Some(443);
            c.call_id = Some(format!("{id}-0"));
            c.attribution = Attribution::Call;
            add(c);
            // Addresses the server's own DNS named (the event's `host`): one entry for both.
            let mut gh = event(0, EventKind::Connect, None, 0, 0);
            gh.addr = Some(
                if id == "weather-s1" {
                    "140.82.112.5"
                } else {
                    "140.82.112.6"
                }
                .into(),
            );
            gh.port = Some(443);
            gh.host = Some("api.github.com".into());
            add(gh);
            let mut usage = event(0, EventKind::Other("usage".into()), None, 0, 0);
            let peak: u64 = if id == "weather-s1" {
                40 << 20
            } else {
                100 << 20
            };
            usage.detail = Some(serde_json::json!({
                "memory_peak_bytes": peak, "pids_peak": if id == "weather-s1" { 12 } else { 9 }
            }));
            add(usage);
        }
    }
    let text = suggest(&dir, &[]);
    let modules_lines: Vec<&str> = text.lines().filter(|l| l.contains(modules)).collect();
    assert_eq!(
        modules_lines,
        [format!(
            "  \"{modules}\",  # node packages: 300 opens (e.g. .../pkg0/lib/index.js, .../pkg1/lib/index.js) in 2 sessions, outside tool calls"
        )],
        "{text}"
    );
    assert!(
        text.contains(
            "allow = [\n  \"api.github.com:443\",  # host: 2 connects (e.g. 140.82.112.5, 140.82.112.6) in 2 sessions, outside tool calls\n  \"api.weather.example:443\",  # host: 2 connects (e.g. 192.0.2.7) in 2 sessions, during get_forecast ×2\n]"
        ),
        "{text}"
    );
    assert!(!text.contains("192.0.2.7:443"), "{text}");
    assert!(!text.contains("\"140.82.112.5:443\""), "{text}");
    assert!(
        text.contains(
            "[tools]\nallow = [\n  \"get_alerts\",  # tool: 1 call in 1 session\n  \"get_forecast\",  # tool: 2 calls in 2 sessions\n]"
        ),
        "{text}"
    );
    // The higher of each peak, doubled (memory rounded up to 16 MiB).
    assert!(
        text.contains("memory = \"208M\"  # peak 100.0 MiB over 2 sessions, ×2 headroom"),
        "{text}"
    );
    assert!(
        text.contains("pids = 24  # peak 12 tasks over 2 sessions, ×2 headroom"),
        "{text}"
    );
    assert!(
        text.contains("of 2 sessions (weather-s1, weather-s2)"),
        "{text}"
    );

    let only = suggest(&dir, &["--session", "weather-s1"]);
    assert!(only.contains("of 1 session (weather-s1)"), "{only}");
    assert!(!only.contains("get_alerts"), "{only}");
    assert!(only.contains("memory = \"80M\""), "{only}");

    let file = dir.join("merged.toml");
    fs::write(&file, &text).expect("write policy");
    let check = Command::new(mcp_guard())
        .args(["policy", "check"])
        .arg(&file)
        .output()
        .expect("run check");
    assert!(
        check.status.success(),
        "policy check rejected the suggestion:\n{text}\n{}",
        String::from_utf8_lossy(&check.stderr)
    );
    fs::remove_dir_all(&dir).expect("cleanup");
}
