//! `mcp-guard policy suggest`: a store filled through the store API → a policy that passes
//! `mcp-guard policy check` and holds what was observed (and no secrets).

use std::{fs, path::PathBuf, process::Command};

use mcp_guard_model::{Attribution, EventKind, EventRecord, SessionRecord, Timestamp, Verdict};
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
        "\"/srv/cache\"",
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
