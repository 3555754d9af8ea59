//! Unit tests: schema, round trips, filters, `since`, retention, the writer's counters.
#![expect(
    clippy::unwrap_used,
    reason = "a test: a failed unwrap is the failure, with its line"
)]

use std::{fs, time::Duration};

use super::*;
use mcp_guard_model::{Attribution, Decision, Severity, Verdict};

/// A temporary state dir, removed on drop.
pub(crate) struct TempDir(pub PathBuf);

impl TempDir {
    pub(crate) fn new(tag: &str) -> Self {
        let n = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_nanos();
        let dir =
            std::env::temp_dir().join(format!("mcp-guard-store-{tag}-{}-{n}", std::process::id()));
        fs::create_dir_all(&dir).unwrap();
        TempDir(dir)
    }

    pub(crate) fn db(&self) -> PathBuf {
        db_path(&self.0)
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = fs::remove_dir_all(&self.0);
    }
}

pub(crate) fn call(id: &str, server: &str, tool: &str, at: Timestamp) -> CallRecord {
    CallRecord {
        call_id: id.into(),
        server: server.into(),
        session: format!("{server}-s1"),
        method: "tools/call".into(),
        tool: Some(tool.into()),
        request_id: "7".into(),
        started_at: at,
        ended_at: None,
        decision: Decision::Allowed,
        reason: None,
        error: None,
        result_bytes: None,
        audit: None,
    }
}

pub(crate) fn event(id: &str, server: &str, kind: EventKind, at: Timestamp) -> EventRecord {
    EventRecord {
        event_id: id.into(),
        ts: at,
        server: server.into(),
        session: format!("{server}-s1"),
        pid: 4242,
        kind,
        path: Some("/etc/hosts".into()),
        addr: None,
        port: None,
        host: None,
        verdict: Verdict::Allowed,
        call_id: None,
        attribution: Attribution::None,
        candidates: vec![],
        flags: Some(0),
        result: Some(3),
        argv: None,
        proto: None,
        would_deny: false,
        detail: None,
    }
}

pub(crate) fn alert(id: &str, server: &str, call_id: &str, at: Timestamp) -> AlertRecord {
    AlertRecord {
        alert_id: id.into(),
        ts: at,
        server: server.into(),
        session: format!("{server}-s1"),
        rule: "sensitive-read".into(),
        severity: Severity::High,
        call_id: Some(call_id.into()),
        tool: Some("get_weather".into()),
        // Each its own evidence: the same summary in a session would be a repeat.
        summary: format!("read ~/.aws/credentials ({id})"),
        event_ids: vec!["e1".into()],
        action: Some("alert".into()),
        count: 1,
        last_seen: at,
    }
}

fn ago(d: Duration) -> Timestamp {
    Timestamp::now().saturating_sub(d)
}

#[test]
fn schema_is_created_versioned_wal_and_indexed() {
    use std::os::unix::fs::PermissionsExt;
    let dir = TempDir::new("schema");
    let store = Store::open(&dir.db()).unwrap();
    let c = &store.conn;
    let mode: String = c
        .pragma_query_value(None, "journal_mode", |r| r.get(0))
        .unwrap();
    assert_eq!(mode, "wal");
    let vacuum: i64 = c
        .pragma_query_value(None, "auto_vacuum", |r| r.get(0))
        .unwrap();
    assert_eq!(
        vacuum, 2,
        "incremental auto_vacuum, so prune can shrink the file"
    );
    let version: i64 = c
        .query_row("SELECT max(version) FROM schema_version", [], |r| r.get(0))
        .unwrap();
    assert_eq!(version, schema::SCHEMA_VERSION);
    for index in [
        "events_server_ts",
        "events_call",
        "events_kind_ts",
        "calls_server_started",
    ] {
        let n: i64 = c
            .query_row(
                "SELECT count(*) FROM sqlite_master WHERE type = 'index' AND name = ?1",
                [index],
                |r| r.get(0),
            )
            .unwrap();
        assert_eq!(n, 1, "index {index}");
    }
    // The query the acceptance measures uses the (server, ts) index, not a scan.
    let plan: String = c
        .query_row(
            "EXPLAIN QUERY PLAN SELECT event_id FROM events WHERE server = 'a' AND ts >= 0 \
             ORDER BY ts, id",
            [],
            |r| r.get(3),
        )
        .unwrap();
    assert!(plan.contains("events_server_ts"), "{plan}");
    for file in ["mcp-guard.db", "mcp-guard.db-wal", "mcp-guard.db-shm"] {
        let mode = fs::metadata(dir.0.join(file)).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o600, "{file}");
    }
    drop(store);
    // Reopening migrates nothing and keeps one version row per migration.
    let store = Store::open(&dir.db()).unwrap();
    let rows: i64 = store
        .conn
        .query_row("SELECT count(*) FROM schema_version", [], |r| r.get(0))
        .unwrap();
    assert_eq!(rows, schema::SCHEMA_VERSION);
}

#[test]
fn a_newer_schema_is_refused_with_the_path() {
    let dir = TempDir::new("newer");
    let store = Store::open(&dir.db()).unwrap();
    store
        .conn
        .execute("INSERT INTO schema_version VALUES (99, 0)", [])
        .unwrap();
    drop(store);
    let err = Store::open(&dir.db()).unwrap_err();
    assert!(matches!(err, StoreError::TooNew { found: 99, .. }), "{err}");
    assert!(err.to_string().contains(&dir.db().display().to_string()));
}

#[test]
fn open_existing_names_the_missing_path_and_the_flag() {
    let dir = TempDir::new("missing");
    let err = Store::open_existing(&dir.db()).unwrap_err();
    let msg = err.to_string();
    assert!(msg.contains(&dir.db().display().to_string()), "{msg}");
    assert!(msg.contains("--state-dir"), "{msg}");
    assert!(!dir.db().exists(), "a query must not create the store");
}

#[test]
fn a_file_that_is_not_a_database_is_a_clear_error() {
    let dir = TempDir::new("garbage");
    fs::write(dir.db(), vec![b'x'; 4096]).unwrap();
    let err = Store::open_existing(&dir.db()).unwrap_err();
    let msg = err.to_string();
    assert!(msg.contains("cannot open the store"), "{msg}");
    assert!(msg.contains("not a database"), "{msg}");
}

#[test]
fn records_round_trip_with_every_field() {
    let dir = TempDir::new("roundtrip");
    let mut store = Store::open(&dir.db()).unwrap();
    let t = Timestamp::from_unix_nanos(1_795_464_903_123_456_789);
    let session = SessionRecord {
        session: "s1".into(),
        server: "weather".into(),
        started_at: t,
        ended_at: None,
        command: vec!["node".into(), "server.js".into()],
        policy: "weather".into(),
        pid: Some(99),
        observe: true,
        exit_status: None,
        facts: mcp_guard_model::ServerFacts::default(),
    };
    let mut c = call("c1", "weather", "get_weather", t);
    c.result_bytes = Some(1234);
    let mut e = event("e1", "weather", EventKind::Connect, t);
    e.path = None;
    e.addr = Some("203.0.113.9".into());
    e.port = Some(443);
    e.proto = Some("tcp".into());
    e.verdict = Verdict::Denied;
    e.attribution = Attribution::Ambiguous;
    e.candidates = vec!["c1".into(), "c2".into()];
    e.argv = Some(vec!["sh".into(), "-c".into()]);
    e.would_deny = true;
    e.detail = Some(serde_json::json!({"signal": 9}));
    let a = alert("a1", "weather", "c1", t);
    store
        .write(&[
            session.clone().into(),
            c.clone().into(),
            e.clone().into(),
            a.clone().into(),
        ])
        .unwrap();
    assert_eq!(store.session("s1").unwrap(), Some(session.clone()));
    assert_eq!(store.call("c1").unwrap(), Some(c.clone()));
    assert_eq!(store.events(&EventFilter::default()).unwrap(), vec![e]);
    assert_eq!(store.alerts(&AlertFilter::default()).unwrap(), vec![a]);

    // The response completes the call; the session's end completes the session.
    let mut done = c.clone();
    done.ended_at = Some(t.saturating_add(Duration::from_millis(20)));
    done.decision = Decision::Modified;
    done.reason = Some("secret redacted".into());
    done.result_bytes = None;
    store.insert(done.clone()).unwrap();
    let got = store.call("c1").unwrap().unwrap();
    assert_eq!(got.ended_at, done.ended_at);
    assert_eq!(got.decision, Decision::Modified);
    assert_eq!(
        got.result_bytes,
        Some(1234),
        "a later update keeps known details"
    );
    let mut ended = session;
    ended.ended_at = Some(t.saturating_add(Duration::from_secs(5)));
    ended.exit_status = Some(0);
    store.insert(ended.clone()).unwrap();
    assert_eq!(store.session("s1").unwrap(), Some(ended));
    assert_eq!(
        store.counts().unwrap(),
        Counts {
            sessions: 1,
            calls: 1,
            events: 1,
            alerts: 1
        }
    );
}

#[test]
fn filters_narrow_and_results_are_in_time_order() {
    let dir = TempDir::new("filters");
    let mut store = Store::open(&dir.db()).unwrap();
    let now = Timestamp::now();
    let mut records: Vec<Record> = Vec::new();
    // Inserted out of order: queries sort by time, not by insertion.
    for (i, secs) in [30u64, 10, 20, 40].iter().enumerate() {
        let at = now.saturating_sub(Duration::from_secs(*secs));
        let server = if i % 2 == 0 { "a" } else { "b" };
        let tool = if i < 2 { "read" } else { "write" };
        records.push(call(&format!("c{i}"), server, tool, at).into());
        let kind = if i == 3 {
            EventKind::Connect
        } else {
            EventKind::Open
        };
        let mut e = event(&format!("e{i}"), server, kind, at);
        if i == 1 {
            e.call_id = Some("c1".into());
            e.attribution = Attribution::Call;
        }
        records.push(e.into());
        records.push(alert(&format!("a{i}"), server, &format!("c{i}"), at).into());
    }
    store.write(&records).unwrap();

    let ids = |v: Vec<CallRecord>| v.into_iter().map(|c| c.call_id).collect::<Vec<_>>();
    assert_eq!(
        ids(store.calls(&CallFilter::default()).unwrap()),
        ["c3", "c0", "c2", "c1"]
    );
    let by_server = CallFilter {
        server: Some("a".into()),
        ..Default::default()
    };
    assert_eq!(ids(store.calls(&by_server).unwrap()), ["c0", "c2"]);
    let by_tool = CallFilter {
        tool: Some("write".into()),
        ..Default::default()
    };
    assert_eq!(ids(store.calls(&by_tool).unwrap()), ["c3", "c2"]);
    let since = CallFilter {
        since: Some(now.saturating_sub(Duration::from_secs(25))),
        ..Default::default()
    };
    assert_eq!(ids(store.calls(&since).unwrap()), ["c2", "c1"]);
    let last = CallFilter {
        limit: Some(2),
        ..Default::default()
    };
    assert_eq!(
        ids(store.calls(&last).unwrap()),
        ["c2", "c1"],
        "the latest, oldest first"
    );

    let eids = |v: Vec<EventRecord>| v.into_iter().map(|e| e.event_id).collect::<Vec<_>>();
    let kind = EventFilter {
        kind: Some("connect".into()),
        ..Default::default()
    };
    assert_eq!(eids(store.events(&kind).unwrap()), ["e3"]);
    let by_call = EventFilter {
        call: Some("c1".into()),
        ..Default::default()
    };
    assert_eq!(eids(store.events(&by_call).unwrap()), ["e1"]);
    let b_since = EventFilter {
        server: Some("b".into()),
        since: Some(now.saturating_sub(Duration::from_secs(35))),
        ..Default::default()
    };
    assert_eq!(eids(store.events(&b_since).unwrap()), ["e1"]);

    let alerts = store
        .alerts(&AlertFilter {
            server: Some("b".into()),
            ..Default::default()
        })
        .unwrap();
    assert_eq!(
        alerts
            .iter()
            .map(|a| a.alert_id.as_str())
            .collect::<Vec<_>>(),
        ["a3", "a1"]
    );
}

#[test]
fn trace_has_the_calls_events_including_ambiguous_ones_and_alerts() {
    let dir = TempDir::new("trace");
    let mut store = Store::open(&dir.db()).unwrap();
    let t0 = ago(Duration::from_mins(1));
    let at = |ms: u64| t0.saturating_add(Duration::from_millis(ms));
    let mut c1 = call("c1", "w", "get_weather", at(0));
    c1.ended_at = Some(at(50));
    let c2 = call("c2", "w", "get_time", at(5));
    let mut mine = event("e-mine", "w", EventKind::Open, at(20));
    mine.call_id = Some("c1".into());
    mine.attribution = Attribution::Call;
    let mut shared = event("e-shared", "w", EventKind::Connect, at(10));
    shared.attribution = Attribution::Ambiguous;
    shared.candidates = vec!["c1".into(), "c2".into()];
    let mut other = event("e-other", "w", EventKind::Open, at(15));
    other.call_id = Some("c2".into());
    other.attribution = Attribution::Call;
    // Same candidate name in another session must not leak in.
    let mut foreign = shared.clone();
    foreign.event_id = "e-foreign".into();
    foreign.session = "elsewhere".into();
    store
        .write(&[
            c1.clone().into(),
            c2.into(),
            mine.into(),
            shared.into(),
            other.into(),
            foreign.into(),
            alert("a1", "w", "c1", at(21)).into(),
            alert("a2", "w", "c2", at(22)).into(),
        ])
        .unwrap();
    let trace = store.trace("c1").unwrap().unwrap();
    assert_eq!(trace.call, c1);
    assert_eq!(
        trace
            .events
            .iter()
            .map(|e| e.event_id.as_str())
            .collect::<Vec<_>>(),
        ["e-shared", "e-mine"]
    );
    assert_eq!(trace.alerts.len(), 1);
    assert_eq!(trace.alerts[0].alert_id, "a1");
    assert!(store.trace("nope").unwrap().is_none());
}

#[test]
fn prune_by_age_keeps_recent_records_and_running_sessions() {
    let dir = TempDir::new("age");
    let mut store = Store::open(&dir.db()).unwrap();
    let old = ago(Duration::from_hours(72));
    let new = ago(Duration::from_mins(1));
    let running = SessionRecord {
        session: "running".into(),
        server: "a".into(),
        started_at: old,
        ended_at: None,
        command: vec![],
        policy: "default".into(),
        pid: None,
        observe: false,
        exit_status: None,
        facts: mcp_guard_model::ServerFacts::default(),
    };
    let mut ended = running.clone();
    ended.session = "ended".into();
    ended.ended_at = Some(old);
    store
        .write(&[
            running.into(),
            ended.into(),
            call("old", "a", "t", old).into(),
            call("new", "a", "t", new).into(),
            event("old", "a", EventKind::Open, old).into(),
            event("new", "a", EventKind::Open, new).into(),
            alert("old", "a", "old", old).into(),
            alert("new", "a", "new", new).into(),
        ])
        .unwrap();
    let stats = store.prune(Some(Duration::from_hours(24)), None).unwrap();
    assert_eq!(
        stats.deleted,
        Counts {
            sessions: 1,
            calls: 1,
            events: 1,
            alerts: 1
        }
    );
    assert!(store.call("new").unwrap().is_some());
    assert!(store.call("old").unwrap().is_none());
    assert!(store.session("running").unwrap().is_some());
}

#[test]
fn prune_by_size_drops_the_oldest_and_shrinks_the_file() {
    let dir = TempDir::new("size");
    let mut store = Store::open(&dir.db()).unwrap();
    let start = ago(Duration::from_secs(10_000));
    let records: Vec<Record> = (0..20_000u64)
        .map(|i| {
            let mut e = event(
                &format!("e{i:06}"),
                "a",
                EventKind::Open,
                start.saturating_add(Duration::from_millis(i * 100)),
            );
            e.path = Some(format!("/home/user/project/src/some/deep/path/file{i}.rs"));
            e.into()
        })
        .collect();
    store.write(&records).unwrap();
    let before = store.live_bytes().unwrap();
    let file_before = fs::metadata(dir.db()).unwrap().len()
        + fs::metadata(dir.0.join("mcp-guard.db-wal")).map_or(0, |m| m.len());
    let max = before / 2;
    let stats = store.prune(None, Some(max)).unwrap();
    assert!(stats.bytes_after <= max, "{stats:?}");
    assert!(stats.deleted.events > 5_000, "{stats:?}");
    // Not far more than needed: the newest half survives.
    assert!(stats.deleted.events < 15_000, "{stats:?}");
    let left = store.events(&EventFilter::default()).unwrap();
    assert_eq!(left.last().unwrap().event_id, "e019999");
    assert!(left.first().unwrap().event_id.as_str() > "e004999");
    // The database file itself gives the space back (after a checkpoint).
    store
        .conn
        .query_row("PRAGMA wal_checkpoint(TRUNCATE)", [], |_| Ok(()))
        .unwrap();
    let file_after = fs::metadata(dir.db()).unwrap().len();
    assert!(
        file_after < file_before * 3 / 4,
        "{file_before} -> {file_after}"
    );
}

#[test]
fn writer_batches_and_flush_waits_for_commit() {
    let dir = TempDir::new("writer");
    let handle = StoreWriter::spawn(dir.db());
    let now = Timestamp::now();
    for i in 0..5_000 {
        assert!(handle.send(event(&format!("e{i}"), "a", EventKind::Open, now)));
    }
    assert!(handle.flush(Duration::from_secs(30)));
    assert_eq!(handle.written(), 5_000);
    assert_eq!(handle.dropped(), 0);
    let store = Store::open_existing(&dir.db()).unwrap();
    assert_eq!(store.counts().unwrap().events, 5_000);
}

/// The writer looks for records on a tick while they flow and waits on the channel once they
/// stop: a record after a quiet spell is still written at once, and the last records before
/// every handle is dropped are written too.
#[test]
fn writer_goes_quiet_and_wakes_and_drains_on_close() {
    let dir = TempDir::new("writer-quiet");
    let handle = StoreWriter::spawn(dir.db());
    let now = Timestamp::now();
    // Gives the writer thread up to 5 s to get `done`.
    let within_5s = |done: &dyn Fn() -> bool| {
        let since = std::time::Instant::now();
        while !done() && since.elapsed() < Duration::from_secs(5) {
            std::thread::sleep(Duration::from_millis(1));
        }
    };
    assert!(handle.send(event("e1", "a", EventKind::Open, now)));
    within_5s(&|| handle.written() >= 1);
    assert_eq!(handle.written(), 1);
    // Long enough for a quiet tick: the writer now waits on the channel.
    std::thread::sleep(Duration::from_millis(50));
    assert!(handle.send(event("e2", "a", EventKind::Open, now)));
    within_5s(&|| handle.written() >= 2);
    assert_eq!(handle.written(), 2, "a record after a quiet spell");
    // Sent while the writer ticks, then every handle gone.
    assert!(handle.send(event("e3", "a", EventKind::Open, now)));
    drop(handle);
    let stored = || {
        Store::open_existing(&dir.db())
            .and_then(|s| s.counts())
            .map_or(0, |c| c.events)
    };
    within_5s(&|| stored() >= 3);
    assert_eq!(
        stored(),
        3,
        "the record sent just before the last handle was dropped"
    );
}

/// A writer that closes leaves no write-ahead log behind (the last connection moved it into
/// the database): the next process to open the store has none to read back. A record sent after
/// the close is still written.
#[test]
fn close_writes_everything_and_leaves_no_log_and_a_later_record_reopens() {
    let dir = TempDir::new("writer-close");
    let retention = Retention {
        max_age: Some(Duration::from_hours(1)),
        alert_max_age: Some(Duration::from_hours(1)),
        max_bytes: Some(1 << 30),
        every: Duration::from_millis(10),
    };
    let handle = StoreWriter::spawn_with(
        dir.db(),
        WriterConfig {
            retention: Some(retention),
            ..Default::default()
        },
    );
    let now = Timestamp::now();
    for i in 0..50 {
        assert!(handle.send(event(&format!("e{i}"), "a", EventKind::Open, now)));
    }
    let wal = dir.0.join(format!("{DB_FILE}-wal"));
    assert!(handle.close(Duration::from_secs(30)));
    assert_eq!(handle.written(), 50);
    // Retention is due every 10 ms: a closed writer does not open the store again for it.
    std::thread::sleep(Duration::from_millis(100));
    assert!(
        fs::metadata(&wal).map_or(true, |m| m.len() == 0),
        "the write-ahead log is left for the next open to read back"
    );
    assert_eq!(
        Store::open_existing(&dir.db())
            .unwrap()
            .counts()
            .unwrap()
            .events,
        50
    );
    assert!(handle.send(event("late", "a", EventKind::Open, now)));
    assert!(handle.flush(Duration::from_secs(30)));
    assert_eq!(handle.written(), 51);
    assert_eq!(handle.dropped(), 0);
}

#[test]
fn writer_counts_what_it_cannot_write_and_never_blocks() {
    // A state dir that cannot be created: a regular file sits where its parent should be.
    let dir = TempDir::new("unwritable");
    let blocker = dir.0.join("file");
    fs::write(&blocker, b"").unwrap();
    let handle = StoreWriter::spawn_with(
        db_path(&blocker.join("state")),
        WriterConfig {
            capacity: 16,
            ..Default::default()
        },
    );
    let now = Timestamp::now();
    let started = std::time::Instant::now();
    let mut accepted = 0u64;
    for i in 0..1_000 {
        accepted += u64::from(handle.send(event(&format!("e{i}"), "a", EventKind::Open, now)));
    }
    assert!(
        started.elapsed() < Duration::from_secs(1),
        "send must not block"
    );
    assert!(handle.flush(Duration::from_secs(10)));
    let stats = handle.stats();
    assert_eq!(stats.written, 0);
    assert_eq!(handle.dropped(), 1_000, "{stats:?}");
    assert_eq!(stats.dropped_write_failed, accepted, "{stats:?}");
    assert_eq!(stats.dropped_queue_full, 1_000 - accepted, "{stats:?}");
    let err = stats.last_error.unwrap();
    assert!(err.contains("cannot create"), "{err}");
}

#[test]
fn writer_applies_retention() {
    let dir = TempDir::new("retention");
    let handle = StoreWriter::spawn_with(
        dir.db(),
        WriterConfig {
            retention: Some(Retention {
                max_age: Some(Duration::from_hours(1)),
                alert_max_age: Some(Duration::from_hours(1)),
                max_bytes: None,
                every: Duration::from_millis(50),
            }),
            ..Default::default()
        },
    );
    handle.send(event(
        "old",
        "a",
        EventKind::Open,
        ago(Duration::from_hours(2)),
    ));
    handle.send(event("new", "a", EventKind::Open, Timestamp::now()));
    assert!(handle.flush(Duration::from_secs(10)));
    let store = Store::open_existing(&dir.db()).unwrap();
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    loop {
        let ids: Vec<String> = store
            .events(&EventFilter::default())
            .unwrap()
            .into_iter()
            .map(|e| e.event_id)
            .collect();
        if ids == ["new"] {
            break;
        }
        assert!(std::time::Instant::now() < deadline, "not pruned: {ids:?}");
        std::thread::sleep(Duration::from_millis(20));
    }
}

#[test]
fn a_lock_held_beyond_the_busy_timeout_drops_and_counts_then_recovers() {
    let dir = TempDir::new("busy");
    let handle = StoreWriter::spawn_with(
        dir.db(),
        WriterConfig {
            busy_timeout: Duration::from_millis(100),
            ..Default::default()
        },
    );
    let now = Timestamp::now();
    handle.send(event("first", "a", EventKind::Open, now));
    assert!(handle.flush(Duration::from_secs(10)));
    assert_eq!(handle.written(), 1);

    // Another process's long write transaction, as a stuck writer would hold it.
    let other = rusqlite::Connection::open(dir.db()).unwrap();
    other.execute_batch("BEGIN IMMEDIATE").unwrap();
    let started = std::time::Instant::now();
    assert!(
        handle.send(event("blocked", "a", EventKind::Open, now)),
        "send never waits"
    );
    assert!(started.elapsed() < Duration::from_millis(50));
    assert!(handle.flush(Duration::from_secs(10)));
    let stats = handle.stats();
    assert_eq!(stats.dropped_write_failed, 1, "{stats:?}");
    assert!(
        stats.last_error.as_deref().unwrap().contains("locked"),
        "{stats:?}"
    );
    other.execute_batch("COMMIT").unwrap();

    handle.send(event("after", "a", EventKind::Open, now));
    assert!(handle.flush(Duration::from_secs(10)));
    assert_eq!(handle.written(), 2, "{:?}", handle.stats());
    // The gap is in the store too: a `lost` event of the session, with the reason and count.
    assert_eq!(handle.stats().lost_recorded, 1, "{:?}", handle.stats());
    let store = Store::open_existing(&dir.db()).unwrap();
    let lost = store
        .events(&EventFilter {
            kind: Some(LOST_KIND.into()),
            ..Default::default()
        })
        .unwrap();
    assert_eq!(lost.len(), 1, "{lost:?}");
    assert_eq!(lost[0].session, "a-s1");
    let detail = lost[0].detail.clone().unwrap();
    assert_eq!(detail["reason"], STORE_WRITE_FAILED);
    assert_eq!(detail["count"], 1);
    assert_eq!(detail["pid"], std::process::id());
}
