//! Unit tests of what issue 20 added to the store: the schema upgrade, calls' arguments and
//! results, the server's facts, retention that keeps the evidence, the one-time conversion to
//! incremental vacuum.
#![expect(
    clippy::unwrap_used,
    reason = "a test: a failed unwrap is the failure, with its line"
)]

use std::{fs, time::Duration};

use super::{
    tests::{TempDir, alert, call, event},
    *,
};
use mcp_guard_model::{Attribution, CallAudit, ToolsListing};

fn ago(d: Duration) -> Timestamp {
    Timestamp::now().saturating_sub(d)
}

const DAY: Duration = Duration::from_hours(24);

#[test]
fn a_version_1_store_is_upgraded_and_its_alerts_cite_their_events() {
    let dir = TempDir::new("upgrade");
    {
        // A store as the previous release left it: migration 1 only, with an alert in it.
        let conn = rusqlite::Connection::open(dir.db()).unwrap();
        conn.execute_batch(schema::MIGRATIONS[0]).unwrap();
        conn.execute_batch(
            "CREATE TABLE schema_version (version INTEGER PRIMARY KEY, applied_at INTEGER NOT NULL);
             INSERT INTO schema_version VALUES (1, 0);
             INSERT INTO alerts (alert_id, ts, server, session, rule, severity, summary, event_ids)
               VALUES ('a1', 1, 's', 's1', 'r', 'high', 'x', '[\"e1\",\"e2\"]');
             INSERT INTO calls (call_id, server, session, method, request_id, started_at, decision)
               VALUES ('c1', 's', 's1', 'tools/call', '1', 1, 'allowed');",
        )
        .unwrap();
    }
    let mut store = Store::open(&dir.db()).unwrap();
    let version: i64 = store
        .conn
        .query_row("SELECT max(version) FROM schema_version", [], |r| r.get(0))
        .unwrap();
    assert_eq!(version, schema::SCHEMA_VERSION);
    let cited: Vec<String> = {
        let mut stmt = store
            .conn
            .prepare("SELECT event_id FROM alert_events WHERE alert_id = 'a1' ORDER BY 1")
            .unwrap();
        stmt.query_map([], |r| r.get(0))
            .unwrap()
            .collect::<Result<_, _>>()
            .unwrap()
    };
    assert_eq!(cited, ["e1", "e2"]);
    // The old call reads back without arguments; a new one keeps them.
    assert_eq!(store.call("c1").unwrap().unwrap().audit, None);
    let mut c = call("c2", "s", "read", Timestamp::now());
    c.audit = Some(CallAudit {
        arguments: Some(serde_json::json!({"path": "/etc/hosts"})),
        arguments_cut: 0,
        result: Some(serde_json::json!({"content": [{"type": "text", "text": "127.0.0.1"}]})),
        result_cut: 120,
        redacted: vec!["secret TOKEN".into()],
    });
    store.insert(c.clone()).unwrap();
    assert_eq!(store.call("c2").unwrap().unwrap(), c);
    // An alert's citations follow it when it is rewritten and go with it.
    let mut a = alert("a2", "s", "c2", Timestamp::now());
    a.event_ids = vec!["e3".into()];
    store.insert(a.clone()).unwrap();
    a.event_ids = vec!["e4".into()];
    store.insert(a).unwrap();
    let n = |sql: &str| -> i64 { store.conn.query_row(sql, [], |r| r.get(0)).unwrap() };
    assert_eq!(
        n("SELECT count(*) FROM alert_events WHERE alert_id = 'a2'"),
        1
    );
    assert_eq!(
        n("SELECT count(*) FROM alert_events WHERE event_id = 'e4'"),
        1
    );
    store.conn.execute("DELETE FROM alerts", []).unwrap();
    assert_eq!(n("SELECT count(*) FROM alert_events"), 0);
}

#[test]
fn the_servers_facts_land_on_its_session_and_tool_lists_are_kept_when_they_change() {
    let dir = TempDir::new("facts");
    let mut store = Store::open(&dir.db()).unwrap();
    let s = SessionRecord {
        session: "s1".into(),
        server: "fs".into(),
        started_at: Timestamp::now(),
        ended_at: None,
        command: vec!["node".into()],
        policy: "default".into(),
        pid: None,
        observe: false,
        exit_status: None,
        facts: ServerFacts::default(),
    };
    let listing = |sha: &str| SessionFacts {
        session: "s1".into(),
        server_info: None,
        tools_listed: Some(ToolsListing {
            at: Timestamp::from_unix_nanos(5),
            sha256: sha.into(),
            tools: 3,
        }),
    };
    let info = serde_json::json!({"name": "secure-filesystem-server", "version": "0.2.0"});
    store
        .write(&[
            s.clone().into(),
            SessionFacts {
                session: "s1".into(),
                server_info: Some(info.clone()),
                tools_listed: None,
            }
            .into(),
            listing("aa").into(),
            listing("aa").into(),
            listing("bb").into(),
            // The session's end does not erase what the server said.
            SessionRecord {
                ended_at: Some(Timestamp::now()),
                exit_status: Some(0),
                ..s
            }
            .into(),
        ])
        .unwrap();
    let got = store.session("s1").unwrap().unwrap();
    assert_eq!(got.facts.server_info, Some(info));
    let shas: Vec<&str> = got
        .facts
        .tools_listed
        .iter()
        .map(|t| t.sha256.as_str())
        .collect();
    assert_eq!(shas, ["aa", "bb"]);
    // A server that changes its tools at every call grows the row only so far.
    let flips: Vec<Record> = (0..600).map(|i| listing(&format!("{i}")).into()).collect();
    store.write(&flips).unwrap();
    let got = store.session("s1").unwrap().unwrap();
    assert_eq!(got.facts.tools_listed.len(), 256);
    assert_eq!(got.facts.tools_listed.last().unwrap().sha256, "599");
}

/// Old plain records, an old alert citing one old event, its call; and new records.
fn history(store: &mut Store) {
    let old = ago(40 * DAY);
    let new = ago(DAY);
    let mut cited = event("cited", "a", EventKind::Open, old);
    cited.call_id = Some("c-alerted".into());
    cited.attribution = Attribution::Call;
    let mut a = alert("alert-old", "a", "c-alerted", old);
    a.event_ids = vec!["cited".into()];
    store
        .write(&[
            call("c-alerted", "a", "t", old).into(),
            call("c-plain", "a", "t", old).into(),
            cited.into(),
            event("plain-old", "a", EventKind::Open, old).into(),
            event("plain-new", "a", EventKind::Open, new).into(),
            a.into(),
        ])
        .unwrap();
}

#[test]
fn by_age_alerts_and_what_they_cite_outlive_plain_records() {
    let dir = TempDir::new("age-alerts");
    let mut store = Store::open(&dir.db()).unwrap();
    history(&mut store);
    let retention = Retention {
        max_age: Some(30 * DAY),
        alert_max_age: Some(90 * DAY),
        max_bytes: None,
        every: Duration::ZERO,
    };
    let stats = store.prune_with(retention).unwrap();
    assert_eq!(
        (stats.deleted.events, stats.deleted.calls),
        (1, 1),
        "{stats:?}"
    );
    let ids = |store: &Store| -> Vec<String> {
        store
            .events(&EventFilter::default())
            .unwrap()
            .into_iter()
            .map(|e| e.event_id)
            .collect()
    };
    assert_eq!(ids(&store), ["cited", "plain-new"]);
    assert!(store.call("c-alerted").unwrap().is_some());
    assert!(store.call("c-plain").unwrap().is_none());
    assert_eq!(store.counts().unwrap().alerts, 1);
    // Past the alerts' own limit they go too, and their events and call after them.
    let stats = store
        .prune_with(Retention {
            alert_max_age: Some(35 * DAY),
            ..retention
        })
        .unwrap();
    assert_eq!(stats.deleted.alerts, 1, "{stats:?}");
    assert_eq!(ids(&store), ["plain-new"]);
    assert!(store.call("c-alerted").unwrap().is_none());
}

#[test]
fn by_size_a_flood_of_noise_goes_before_an_older_alert_and_its_events() {
    let dir = TempDir::new("size-alerts");
    let mut store = Store::open(&dir.db()).unwrap();
    history(&mut store);
    // The flood: many newer plain events, as a server would make to push the alert out.
    let start = ago(20 * DAY);
    let flood: Vec<Record> = (0..20_000u64)
        .map(|i| {
            let mut e = event(
                &format!("noise{i:06}"),
                "a",
                EventKind::Open,
                start.saturating_add(Duration::from_secs(i * 60)),
            );
            e.path = Some(format!("/tmp/noise/{}/{i}", "x".repeat(100)));
            e.into()
        })
        .collect();
    store.write(&flood).unwrap();
    let max = store.live_bytes().unwrap() / 3;
    let stats = store
        .prune_with(Retention {
            max_age: None,
            alert_max_age: None,
            max_bytes: Some(max),
            every: Duration::ZERO,
        })
        .unwrap();
    assert!(stats.bytes_after <= max, "{stats:?}");
    assert_eq!(stats.deleted.alerts, 0, "{stats:?}");
    assert!(store.alerts(&AlertFilter::default()).unwrap().len() == 1);
    let left = store.events(&EventFilter::default()).unwrap();
    assert_eq!(
        left.first().unwrap().event_id,
        "cited",
        "the cited event stays"
    );
    // The oldest plain records went first: the newest noise is there, the oldest is not.
    assert!(left.iter().any(|e| e.event_id == "noise019999"));
    assert!(!left.iter().any(|e| e.event_id == "noise000000"));
    assert!(!left.iter().any(|e| e.event_id == "plain-old"));
    // With nothing but evidence left over the limit, the oldest alert goes after all.
    let stats = store
        .prune_with(Retention {
            max_age: None,
            alert_max_age: None,
            max_bytes: Some(1),
            every: Duration::ZERO,
        })
        .unwrap();
    assert_eq!(stats.deleted.alerts, 1, "{stats:?}");
    assert_eq!(store.counts().unwrap().events, 0);
}

#[test]
fn a_store_without_incremental_vacuum_is_converted_once_and_then_shrinks() {
    let dir = TempDir::new("convert");
    {
        let conn = rusqlite::Connection::open(dir.db()).unwrap();
        conn.execute_batch("PRAGMA auto_vacuum = NONE; PRAGMA journal_mode = WAL;")
            .unwrap();
    }
    let mut store = Store::open(&dir.db()).unwrap();
    let av = |s: &Store| -> i64 {
        s.conn
            .pragma_query_value(None, "auto_vacuum", |r| r.get(0))
            .unwrap()
    };
    assert_eq!(av(&store), 0, "made without it");
    let start = ago(100 * DAY);
    let records: Vec<Record> = (0..20_000u64)
        .map(|i| {
            let mut e = event(
                &format!("e{i:06}"),
                "a",
                EventKind::Open,
                start.saturating_add(Duration::from_secs(i * 300)),
            );
            e.path = Some(format!("/home/user/{}/{i}", "y".repeat(80)));
            e.into()
        })
        .collect();
    store.write(&records).unwrap();
    store
        .conn
        .query_row("PRAGMA wal_checkpoint(TRUNCATE)", [], |_| Ok(()))
        .unwrap();
    let before = fs::metadata(dir.db()).unwrap().len();
    let stats = store
        .prune_with(Retention {
            max_age: Some(60 * DAY),
            alert_max_age: Some(60 * DAY),
            max_bytes: None,
            every: Duration::ZERO,
        })
        .unwrap();
    assert!(stats.deleted.events > 10_000, "{stats:?}");
    assert_eq!(av(&store), 2, "converted to incremental");
    let after = fs::metadata(dir.db()).unwrap().len();
    assert!(after < before * 2 / 3, "{before} -> {after}");
}

#[test]
fn the_writer_prunes_in_steps_while_it_keeps_writing() {
    let dir = TempDir::new("steps");
    {
        let mut store = Store::open(&dir.db()).unwrap();
        let old = ago(10 * DAY);
        let records: Vec<Record> = (0..30_000u64)
            .map(|i| event(&format!("old{i}"), "a", EventKind::Open, old).into())
            .collect();
        store.write(&records).unwrap();
    }
    let handle = StoreWriter::spawn_with(
        dir.db(),
        WriterConfig {
            retention: Some(Retention {
                max_age: Some(DAY),
                alert_max_age: Some(DAY),
                max_bytes: None,
                every: Duration::from_hours(1),
            }),
            ..Default::default()
        },
    );
    // Records keep coming while the pass runs; none is dropped, the pass finishes.
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    let mut i = 0;
    loop {
        assert!(handle.send(event(
            &format!("new{i}"),
            "a",
            EventKind::Open,
            Timestamp::now()
        )));
        i += 1;
        std::thread::sleep(Duration::from_millis(1));
        if i % 100 == 0 {
            assert!(handle.flush(Duration::from_secs(10)));
            let store = Store::open_existing(&dir.db()).unwrap();
            let counts = store.counts().unwrap();
            if counts.events == i {
                break;
            }
            assert!(std::time::Instant::now() < deadline, "{counts:?}");
        }
    }
    assert_eq!(handle.dropped(), 0, "{:?}", handle.stats());
}
