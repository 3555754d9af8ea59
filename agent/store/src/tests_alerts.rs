//! Unit tests: an alert repeated in its session is one row with a count and the last time it
//! fired, for the queries, the agent's tail (which counts every occurrence), the export change
//! log, and stores written before alerts were counted.
#![expect(
    clippy::unwrap_used,
    reason = "a test: a failed unwrap is the failure, with its line"
)]

use super::*;
use crate::tests::{TempDir, alert};

fn repeat(id: &str, of: &AlertRecord, at: Timestamp, event: &str) -> AlertRecord {
    AlertRecord {
        alert_id: id.into(),
        ts: at,
        last_seen: at,
        call_id: Some(format!("call-{id}")),
        event_ids: vec![event.into()],
        ..of.clone()
    }
}

#[test]
fn a_repeat_in_the_session_counts_in_the_first_alert_and_other_evidence_gets_its_own() {
    let dir = TempDir::new("alerts-repeat");
    let mut store = Store::open(&dir.db()).unwrap();
    let t = |s: i64| Timestamp::from_unix_nanos(s * 1_000_000_000);
    let first = alert("a1", "weather", "c1", t(10));
    store.insert(first.clone()).unwrap();
    store.insert(repeat("a2", &first, t(20), "e2")).unwrap();
    store.insert(repeat("a3", &first, t(15), "e3")).unwrap();
    let all = store.alerts(&AlertFilter::default()).unwrap();
    assert_eq!(all.len(), 1, "{all:#?}");
    let a = &all[0];
    assert_eq!(a.alert_id, "a1");
    assert_eq!(a.count, 3);
    assert_eq!(a.ts, t(10), "ts stays the first time");
    assert_eq!(
        a.last_seen,
        t(20),
        "the latest, whatever the order they arrive in"
    );
    assert_eq!(a.event_ids, ["e1", "e2", "e3"]);
    // The repeat's call finds it, through the events it cites.
    store
        .insert(crate::tests::event("e2", "weather", EventKind::Open, t(20)))
        .unwrap();
    let mut e2 = store.events(&EventFilter::default()).unwrap().remove(0);
    e2.call_id = Some("call-a2".into());
    store.insert(e2).unwrap();
    let by_call = store
        .alerts(&AlertFilter {
            call: Some("call-a2".into()),
            ..AlertFilter::default()
        })
        .unwrap();
    assert_eq!(by_call.len(), 1);
    // The same alert written again is no repeat.
    store.insert(first.clone()).unwrap();
    assert_eq!(store.alerts(&AlertFilter::default()).unwrap()[0].count, 3);
    // Other evidence, another tool, another session: rows of their own.
    let other_evidence = AlertRecord {
        summary: "read ~/.ssh/id_rsa".into(),
        ..repeat("b1", &first, t(30), "e4")
    };
    let no_tool = AlertRecord {
        tool: None,
        ..repeat("b2", &first, t(31), "e5")
    };
    let other_session = AlertRecord {
        session: "weather-s2".into(),
        ..repeat("b3", &first, t(32), "e6")
    };
    for a in [&other_evidence, &no_tool, &other_session] {
        store.insert(a.clone()).unwrap();
    }
    store
        .insert(AlertRecord {
            alert_id: "b4".into(),
            ..no_tool.clone()
        })
        .unwrap();
    let all = store.alerts(&AlertFilter::default()).unwrap();
    let counts: Vec<(&str, u64)> = all.iter().map(|a| (a.alert_id.as_str(), a.count)).collect();
    assert_eq!(counts, [("a1", 3), ("b1", 1), ("b2", 2), ("b3", 1)]);
}

#[test]
fn the_tail_counts_every_occurrence_and_the_change_log_ships_the_latest_count() {
    let dir = TempDir::new("alerts-tail");
    let mut store = Store::open(&dir.db()).unwrap();
    store.enable_export(&["ch"]).unwrap();
    let t = |s: i64| Timestamp::from_unix_nanos(s * 1_000_000_000);
    let first = alert("a1", "weather", "c1", t(10));
    store.insert(first.clone()).unwrap();
    let mut tail = tail::Tail::from_now(&store).unwrap();
    let occurrences = |tail: &mut tail::Tail, store: &Store| -> u64 {
        tail.poll(store)
            .unwrap()
            .alerts
            .iter()
            .map(|a| a.count)
            .sum()
    };
    store.insert(repeat("a2", &first, t(20), "e2")).unwrap();
    store.insert(repeat("a3", &first, t(21), "e3")).unwrap();
    assert_eq!(occurrences(&mut tail, &store), 2);
    let other = AlertRecord {
        summary: "other".into(),
        ..repeat("b1", &first, t(22), "e4")
    };
    store.insert(other.clone()).unwrap();
    store.insert(repeat("b2", &other, t(23), "e5")).unwrap();
    assert_eq!(occurrences(&mut tail, &store), 2);
    assert_eq!(occurrences(&mut tail, &store), 0);
    store.insert(repeat("a4", &first, t(24), "e6")).unwrap();
    assert_eq!(occurrences(&mut tail, &store), 1);

    // Each repeat numbers the row again: the log ships it as it is now.
    let batch = store.changes_after(0, 100).unwrap();
    let shipped: Vec<(String, u64)> = batch
        .changes
        .iter()
        .filter_map(|c| match &c.record {
            Record::Alert(a) => Some((a.alert_id.clone(), a.count)),
            _ => None,
        })
        .collect();
    assert_eq!(shipped, [("b1".to_string(), 2), ("a1".to_string(), 4)]);
}

#[test]
fn a_store_written_before_alerts_were_counted_folds_its_repeats() {
    let dir = TempDir::new("alerts-migrate");
    {
        let conn = rusqlite::Connection::open(dir.db()).unwrap();
        conn.execute_batch(
            "CREATE TABLE schema_version (version INTEGER PRIMARY KEY, applied_at INTEGER NOT NULL);",
        )
        .unwrap();
        for (version, sql) in (1i64..).zip(schema::MIGRATIONS.iter().take(2)) {
            conn.execute_batch(sql).unwrap();
            conn.execute("INSERT INTO schema_version VALUES (?1, 0)", [version])
                .unwrap();
        }
        let insert = "INSERT INTO alerts (alert_id, ts, server, session, rule, severity, \
                      call_id, tool, summary, event_ids) VALUES (?1, ?2, 'fs', 's1', \
                      'sensitive-read', 'high', NULL, ?3, ?4, ?5)";
        for (id, ts, tool, summary, events) in [
            ("a1", 10, Some("read"), "opened ~/.ssh/id_rsa", r#"["e1"]"#),
            ("a2", 30, Some("read"), "opened ~/.ssh/id_rsa", r#"["e2"]"#),
            ("a3", 20, Some("read"), "opened ~/.ssh/id_rsa", r#"["e3"]"#),
            ("a4", 40, Some("read"), "opened ~/.netrc", r#"["e4"]"#),
            ("a5", 50, None, "opened ~/.ssh/id_rsa", r#"["e5"]"#),
            ("a6", 60, None, "opened ~/.ssh/id_rsa", r#"["e6"]"#),
        ] {
            conn.execute(insert, rusqlite::params![id, ts, tool, summary, events])
                .unwrap();
        }
    }
    let store = Store::open(&dir.db()).unwrap();
    let all = store.alerts(&AlertFilter::default()).unwrap();
    let rows: Vec<(&str, u64, i64)> = all
        .iter()
        .map(|a| (a.alert_id.as_str(), a.count, a.last_seen.unix_nanos()))
        .collect();
    assert_eq!(rows, [("a1", 3, 30), ("a4", 1, 40), ("a5", 2, 60)]);
    // Events of folded rows are no longer cited by an alert that is gone.
    let cited: i64 = store
        .conn
        .query_row(
            "SELECT count(*) FROM alert_events WHERE alert_id IN ('a2', 'a3', 'a6')",
            [],
            |r| r.get(0),
        )
        .unwrap();
    assert_eq!(cited, 0);
}
