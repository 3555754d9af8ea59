//! Shipping the history to the fleet, against real engines started by the tests themselves:
//! Debian's clickhouse-server and rsyslog, each test's own instance on its own ports.
//!
//! - a sink down during a burst of 10,000 events gets every one once it is back;
//! - an agent `SIGKILLed` mid-export resumes from its cursor, and ClickHouse holds each record
//!   exactly once after `FINAL`;
//! - two state dirs standing for two hosts ship to one ClickHouse, and `--fleet` queries show
//!   both, the same records as each host's own query, with the host;
//! - a secret injected into a server, or passed by a client as a named argument (`"password": ...`),
//!   reaches neither the store, `calls`, ClickHouse nor syslog;
//! - rsyslog receives valid RFC 5424 frames carrying OCSF JSON, one per record, and a path
//!   crafted to look like a second frame stays inside its own;
//! - TLS: a syslog receiver and a ClickHouse whose certificates chain to the configured CA get
//!   everything, an impostor with another CA's certificate gets nothing;
//! - an inline password, or a password file others can read, stops the agent (exit 78).
//!
//! Needs root (the agent loads its eBPF programs) and `cargo xtask setup`.
#![expect(
    clippy::cast_precision_loss,
    clippy::cast_possible_truncation,
    reason = "test record counts and rates: far below 2^32, shown to a few digits"
)]
#![expect(
    clippy::float_cmp,
    reason = "Prometheus samples of counters and gauges here are small integers, exact in f64"
)]

use std::{
    collections::{BTreeMap, BTreeSet},
    os::unix::fs::PermissionsExt as _,
    path::{Path, PathBuf},
    process::{Command, Output, Stdio},
    time::{Duration, Instant},
};

use mcp_guard_store::{Store, db_path};
use mcp_guard_tests::{
    agent::{Agent, PinDir},
    bench::record,
    certs::Pki,
    clickhouse::{self, ClickHouse},
    describe, fixture, fresh_dir, mcp_guard, prom, python, require_root,
    rsyslog::{Rsyslog, Tls},
    workspace_bin, workspace_root,
};
use serde_json::Value;

fn data_dir(tag: &str) -> PathBuf {
    fresh_dir("export", tag)
}

/// `[export]` naming this host, then `sinks`.
fn export_config(host: &str, sinks: &str) -> String {
    format!("[export]\nhost_name = \"{host}\"\nhost_id = \"id-{host}\"\n\n{sinks}")
}

fn clickhouse_sink(name: &str, url: &str, batch: usize) -> String {
    format!(
        "[[export.sink]]\nname = \"{name}\"\nkind = \"clickhouse\"\nurl = \"{url}\"\n\
         batch = {batch}\ninterval_ms = 100\ntimeout_ms = 10000\n\n"
    )
}

fn syslog_sink(name: &str, address: &str, batch: usize) -> String {
    format!(
        "[[export.sink]]\nname = \"{name}\"\nkind = \"syslog\"\naddress = \"{address}\"\n\
         batch = {batch}\ninterval_ms = 100\ntimeout_ms = 10000\n\n"
    )
}

/// Writes one session, `calls` calls and ten events per call into the state dir's store, as
/// an `exec` does (ids built from `tag`); panics unless all were written.
fn fill(state: &Path, tag: &str, calls: u64) -> u64 {
    let out = Command::new(workspace_bin("store_writer"))
        .arg(db_path(state))
        .arg(tag)
        .arg(calls.to_string())
        .output()
        .expect("run store_writer");
    assert!(out.status.success(), "{}", describe(&out));
    let stats: Value = serde_json::from_slice(&out.stdout).expect("store_writer JSON");
    assert_eq!(stats["flushed"], true, "{stats}");
    assert_eq!(stats["dropped_queue_full"], 0, "{stats}");
    assert_eq!(stats["dropped_write_failed"], 0, "{stats}");
    1 + calls * 11
}

/// A sample of the agent's metrics: `name{sink="..."}`.
fn metric(agent: &Agent, name: &str, sink: &str) -> Option<f64> {
    prom::metric(&agent.addr, &format!("{name}{{sink=\"{sink}\"}}"))
}

/// Waits until `ok` holds for the sink's `name` sample, at most `wait`; the last value.
fn wait_metric(
    agent: &Agent,
    name: &str,
    sink: &str,
    wait: Duration,
    ok: impl Fn(f64) -> bool,
) -> f64 {
    let series = format!("{name}{{sink=\"{sink}\"}}");
    prom::wait_metric(&agent.addr, &series, wait, ok, || agent.log())
}

/// The id of every record in the state dir's store.
fn stored_ids(state: &Path) -> BTreeSet<String> {
    let store = Store::open_existing(&db_path(state)).expect("store");
    let mut ids = BTreeSet::new();
    ids.extend(
        store
            .sessions(None)
            .expect("sessions")
            .into_iter()
            .map(|s| s.session),
    );
    ids.extend(
        store
            .calls(&mcp_guard_store::CallFilter::default())
            .expect("calls")
            .into_iter()
            .map(|c| c.call_id),
    );
    ids.extend(
        store
            .events(&mcp_guard_store::EventFilter::default())
            .expect("events")
            .into_iter()
            .map(|e| e.event_id),
    );
    ids.extend(
        store
            .alerts(&mcp_guard_store::AlertFilter::default())
            .expect("alerts")
            .into_iter()
            .map(|a| a.alert_id),
    );
    ids
}

/// Waits until `sink` has delivered at least `n` records and has nothing left.
fn wait_shipped(agent: &Agent, sink: &str, n: usize) {
    let wait = Duration::from_mins(1);
    wait_metric(agent, "mcp_guard_export_records_total", sink, wait, |v| {
        v >= n as f64
    });
    wait_metric(agent, "mcp_guard_export_lag_records", sink, wait, |v| {
        v == 0.0
    });
}

/// The JSON of a raw RFC 5424 message from mcp-guard, after checking its header field by field
/// (RFC 5424 section 6: `<PRI>1 TIMESTAMP HOSTNAME APP-NAME PROCID MSGID SD MSG`).
fn rfc5424(line: &str, hostname: &str) -> (u8, String, Value) {
    fn fail(line: &str, what: &str) -> ! {
        panic!("not an RFC 5424 message from mcp-guard ({what}): {line:?}")
    }
    let bad = |what: &str| -> ! { fail(line, what) };
    let rest = line.strip_prefix('<').unwrap_or_else(|| bad("PRI"));
    let (pri, rest) = rest.split_once('>').unwrap_or_else(|| bad("PRI"));
    let pri: u8 = pri.parse().unwrap_or_else(|_| bad("PRI"));
    let mut fields = rest.splitn(8, ' ');
    let mut next = |what: &str| fields.next().unwrap_or_else(|| bad(what)).to_string();
    assert_eq!(next("VERSION"), "1", "{line}");
    let ts = next("TIMESTAMP");
    // 2026-11-23T20:15:03.123456Z: UTC, at most six fraction digits.
    let ok_ts = ts.len() == 27
        && ts.ends_with('Z')
        && ts.as_bytes()[10] == b'T'
        && ts.as_bytes()[19] == b'.'
        && chrono_like(&ts);
    assert!(ok_ts, "TIMESTAMP {ts:?}: {line}");
    assert_eq!(next("HOSTNAME"), hostname, "{line}");
    assert_eq!(next("APP-NAME"), "mcp-guard", "{line}");
    let procid = next("PROCID");
    assert!(procid.parse::<u32>().is_ok(), "PROCID {procid:?}: {line}");
    let msgid = next("MSGID");
    assert!(
        ["session", "call", "event", "alert"].contains(&msgid.as_str()),
        "MSGID {msgid:?}: {line}"
    );
    assert_eq!(next("STRUCTURED-DATA"), "-", "{line}");
    let msg = next("MSG");
    let json: Value = serde_json::from_str(&msg).unwrap_or_else(|e| bad(&format!("MSG JSON: {e}")));
    (pri, msgid, json)
}

fn chrono_like(ts: &str) -> bool {
    ts.bytes().enumerate().all(|(i, b)| match i {
        4 | 7 => b == b'-',
        10 => b == b'T',
        13 | 16 => b == b':',
        19 => b == b'.',
        26 => b == b'Z',
        _ => b.is_ascii_digit(),
    })
}

/// Checks the OCSF fields every event carries; the record's id.
fn ocsf_common(json: &Value, host: &str) -> String {
    for key in [
        "class_uid",
        "category_uid",
        "activity_id",
        "type_uid",
        "time",
        "severity_id",
    ] {
        assert!(json[key].is_u64(), "{key} in {json}");
    }
    assert_eq!(
        json["type_uid"].as_u64(),
        Some(
            json["class_uid"].as_u64().unwrap_or(0) * 100
                + json["activity_id"].as_u64().unwrap_or(0)
        ),
        "{json}"
    );
    assert_eq!(json["metadata"]["product"]["name"], "mcp-guard", "{json}");
    assert_eq!(json["metadata"]["version"], "1.3.0", "{json}");
    assert_eq!(json["device"]["hostname"], host, "{json}");
    assert!(json["unmapped"]["mcp_guard"].is_object(), "{json}");
    json["metadata"]["uid"]
        .as_str()
        .unwrap_or_else(|| panic!("metadata.uid in {json}"))
        .to_string()
}

#[test]
fn a_sink_down_during_a_burst_gets_every_event_once_it_is_back() {
    require_root();
    let dir = data_dir("outage");
    let mut ch = ClickHouse::start(&dir.join("clickhouse"));
    let mut rs = Rsyslog::start(&dir.join("rsyslog"), None);
    // Both engines go down before the burst, on the ports the agent is configured with.
    ch.stop();
    rs.stop();
    let pins = PinDir::new("export-outage");
    let config = export_config(
        "vm-a",
        &(clickhouse_sink("fleet", &ch.url(), 2000) + &syslog_sink("siem", &rs.address(), 2000)),
    );
    let agent = Agent::start(&dir, &pins, &config);
    let total = fill(&agent.state, "burst", 1000);
    // While they are down: failures counted, the whole burst waiting, none of it lost.
    for sink in ["fleet", "siem"] {
        wait_metric(
            &agent,
            "mcp_guard_export_failures_total",
            sink,
            Duration::from_secs(30),
            |v| v >= 2.0,
        );
        wait_metric(
            &agent,
            "mcp_guard_export_lag_records",
            sink,
            Duration::from_secs(30),
            |v| v >= total as f64,
        );
        wait_metric(
            &agent,
            "mcp_guard_export_lag_seconds",
            sink,
            Duration::from_secs(30),
            |v| v > 0.0,
        );
    }
    ch.run();
    rs.run();
    let events = "SELECT count() FROM mcp_guard.events FINAL WHERE host_id = 'id-vm-a'";
    assert_eq!(
        ch.wait_count(events, 10_000, Duration::from_mins(2)),
        10_000,
        "{}",
        agent.log()
    );
    assert_eq!(
        ch.count(
            "SELECT count() FROM mcp_guard.calls FINAL WHERE host = 'vm-a' AND ended_ns IS NOT NULL"
        ),
        1000
    );
    assert_eq!(ch.count("SELECT count() FROM mcp_guard.sessions FINAL"), 1);
    let distinct = ch.count("SELECT count(DISTINCT event_id) FROM mcp_guard.events");
    assert_eq!(distinct, 10_000);
    // Every record reached rsyslog too, each as its own valid frame.
    assert!(
        rs.wait_for(total as usize, Duration::from_mins(2)) >= total as usize,
        "rsyslog has {} of {total}\n{}\n{}",
        rs.raw().len(),
        agent.log(),
        rs.log()
    );
    let mut ids = BTreeSet::new();
    for line in rs.raw() {
        let (_, msgid, json) = rfc5424(&line, "vm-a");
        let id = ocsf_common(&json, "vm-a");
        if msgid == "event" {
            ids.insert(id);
        }
    }
    let expected: BTreeSet<String> = (0..1000)
        .flat_map(|c| (0..10).map(move |e| format!("burst-e{c}-{e}")))
        .collect();
    assert_eq!(ids, expected, "events missing from syslog");
    for sink in ["fleet", "siem"] {
        wait_metric(
            &agent,
            "mcp_guard_export_lag_records",
            sink,
            Duration::from_secs(30),
            |v| v == 0.0,
        );
        let shipped = metric(&agent, "mcp_guard_export_records_total", sink).unwrap_or(0.0);
        assert!(shipped >= total as f64, "{sink}: {shipped} of {total}");
    }
    drop(agent);
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn an_agent_killed_mid_export_resumes_from_its_cursor() {
    require_root();
    let dir = data_dir("sigkill");
    let ch = ClickHouse::start(&dir.join("clickhouse"));
    let state = dir.join("state");
    // The history is there before the agent: 4 sessions, 4,000 calls, 40,000 events.
    let mut total = 0;
    for tag in ["k1", "k2", "k3", "k4"] {
        total += fill(&state, tag, 1000);
    }
    let pins = PinDir::new("export-sigkill");
    let batch = 1000;
    let config = export_config("vm-a", &clickhouse_sink("fleet", &ch.url(), batch));
    let mut agent = Agent::start(&dir, &pins, &config);
    // Kill it while ClickHouse has some of the history but not all.
    let deadline = Instant::now() + Duration::from_mins(1);
    while ch.count("SELECT count() FROM mcp_guard.events") < 1000 {
        assert!(
            Instant::now() < deadline,
            "nothing shipped:\n{}",
            agent.log()
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    agent.kill();
    let store = Store::open_existing(&db_path(&state)).expect("store");
    let cursor = store.export_cursor("fleet").expect("cursor");
    let left = store.export_lag(cursor).expect("lag").records;
    assert!(
        cursor > 0 && left > 0,
        "cursor {cursor}, {left} left: the kill came too late"
    );
    drop(store);
    let shipped_before: u64 = ["sessions", "calls", "events", "alerts"]
        .iter()
        .map(|t| ch.count(&format!("SELECT count() FROM mcp_guard.{t}")))
        .sum();
    assert!(
        shipped_before < total,
        "{shipped_before} of {total} before the kill"
    );

    let agent = Agent::start_at(&dir, &pins, &config, &agent.addr.clone(), "agent2");
    let events = "SELECT count() FROM mcp_guard.events FINAL";
    assert_eq!(
        ch.wait_count(events, 40_000, Duration::from_mins(2)),
        40_000,
        "{}",
        agent.log()
    );
    wait_metric(
        &agent,
        "mcp_guard_export_lag_records",
        "fleet",
        Duration::from_secs(30),
        |v| v == 0.0,
    );
    // Exactly once after FINAL, in every table.
    for (table, id, n) in [
        ("sessions", "session", 4),
        ("calls", "call_id", 4000),
        ("events", "event_id", 40_000),
    ] {
        assert_eq!(
            ch.count(&format!("SELECT count() FROM mcp_guard.{table} FINAL")),
            n,
            "{table}"
        );
        let dups = ch.count(&format!(
            "SELECT count() FROM (SELECT {id} FROM mcp_guard.{table} FINAL GROUP BY host_id, {id} \
             HAVING count() > 1)"
        ));
        assert_eq!(dups, 0, "{table}: duplicates after FINAL");
    }
    // Resumed from the cursor, not from the start: at most the batch in flight came twice.
    let raw: u64 = ["sessions", "calls", "events", "alerts"]
        .iter()
        .map(|t| ch.count(&format!("SELECT count() FROM mcp_guard.{t}")))
        .sum();
    assert!(
        raw <= total + batch as u64,
        "{raw} rows for {total} records: the restarted agent shipped more than the batch in flight again"
    );
    drop(agent);
    let _ = std::fs::remove_dir_all(&dir);
}

/// `mcp-guard ARGS` with the state dir and a wide terminal; its output.
fn cli(state: &Path, args: &[&str]) -> Output {
    Command::new(mcp_guard())
        .arg("--state-dir")
        .arg(state)
        .args(args)
        .env("COLUMNS", "200")
        .output()
        .expect("run mcp-guard")
}

fn json_lines(out: &Output) -> Vec<Value> {
    assert!(out.status.success(), "{}", describe(out));
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("not JSON ({e}): {l}")))
        .collect()
}

#[test]
fn two_hosts_ship_to_one_clickhouse_and_fleet_queries_show_both() {
    require_root();
    let dir = data_dir("fleet");
    let ch = ClickHouse::start(&dir.join("clickhouse"));
    let mut agents = Vec::new();
    let mut pins = Vec::new();
    for host in ["vm-a", "vm-b"] {
        let d = dir.join(host);
        std::fs::create_dir_all(&d).expect("host dir");
        let p = PinDir::new(&format!("export-fleet-{host}"));
        let agent = Agent::start(
            &d,
            &p,
            &export_config(host, &clickhouse_sink("fleet", &ch.url(), 500)),
        );
        // The same ids on both hosts: ids are unique per host, and the fleet keeps both.
        fill(&agent.state, "same", 5);
        agents.push(agent);
        pins.push(p);
    }
    // A connect with the name its server resolved (the record's `host`): ClickHouse keeps it
    // as `dst_host`, beside `host`, the machine.
    let mut connect = mcp_guard_model::EventRecord::new(
        "same-connect".into(),
        mcp_guard_model::Timestamp::now(),
        "server-same",
        "same",
        4242,
        mcp_guard_model::EventKind::Connect,
    );
    connect.addr = Some("203.0.113.7".into());
    connect.port = Some(443);
    connect.proto = Some("tcp".into());
    connect.host = Some("api.example.test".into());
    Store::open(&db_path(&agents[0].state))
        .and_then(|mut s| s.insert(connect))
        .expect("a connect event");
    assert_eq!(
        ch.wait_count(
            "SELECT count() FROM mcp_guard.events FINAL",
            101,
            Duration::from_mins(1)
        ),
        101
    );
    assert_eq!(
        ch.wait_count(
            "SELECT count() FROM mcp_guard.calls FINAL WHERE ended_ns IS NOT NULL",
            10,
            Duration::from_mins(1)
        ),
        10
    );
    let url = ch.url();
    let state_a = agents[0].state.clone();

    // The table: a HOST column first, both hosts, every event.
    let out = cli(&state_a, &["events", "--fleet", &url]);
    assert!(out.status.success(), "{}", describe(&out));
    let text = String::from_utf8_lossy(&out.stdout);
    let mut lines = text.lines();
    let header = lines.next().unwrap_or_default();
    assert!(header.starts_with("HOST  "), "{text}");
    let mut per_host = BTreeMap::new();
    for l in lines {
        *per_host
            .entry(l.split_whitespace().next().unwrap_or("").to_string())
            .or_insert(0) += 1;
    }
    assert_eq!(
        per_host,
        BTreeMap::from([("vm-a".to_string(), 51), ("vm-b".to_string(), 50)]),
        "{text}"
    );
    // The connect shows the name, as the host's own table does.
    assert!(
        text.lines()
            .any(|l| l.starts_with("vm-a") && l.contains("api.example.test:443 (203.0.113.7)")),
        "{text}"
    );

    // JSON: each host's records are exactly what that host's own query prints, plus `host`;
    // an event's own `host` (the resolved name) is `dst_host` there, as in ClickHouse. One key
    // each: serde_json keeps only the last of two `host`s, so a clash would show here.
    let fleet_out = cli(&state_a, &["events", "--fleet", &url, "--json"]);
    let connect_line = String::from_utf8_lossy(&fleet_out.stdout)
        .lines()
        .find(|l| l.contains("same-connect"))
        .map(str::to_string)
        .unwrap_or_default();
    assert_eq!(
        connect_line.matches("\"host\":").count(),
        1,
        "{connect_line}"
    );
    let fleet = json_lines(&fleet_out);
    let connect = fleet
        .iter()
        .find(|e| e["event_id"] == "same-connect")
        .expect("the connect in the fleet's events");
    assert_eq!(
        (&connect["host"], &connect["dst_host"]),
        (&Value::from("vm-a"), &Value::from("api.example.test")),
        "{connect}"
    );
    for (agent, host) in agents.iter().zip(["vm-a", "vm-b"]) {
        let mut local: Vec<Value> = json_lines(&cli(&agent.state, &["events", "--json"]));
        let mut mine: Vec<Value> = fleet
            .iter()
            .filter(|e| e["host"] == host)
            .map(|e| {
                let mut e = e.clone();
                if let Some(m) = e.as_object_mut() {
                    m.remove("host");
                    if let Some(dst) = m.remove("dst_host") {
                        m.insert("host".into(), dst);
                    }
                }
                e
            })
            .collect();
        let key = |v: &Value| v["event_id"].as_str().unwrap_or("").to_string();
        local.sort_by_key(key);
        mine.sort_by_key(key);
        assert_eq!(
            mine, local,
            "{host}: the fleet's events differ from the host's own"
        );
    }
    // In SQL: the resolved name in its own column, the machine in `host`.
    assert_eq!(
        ch.query(
            "SELECT host, dst_host, addr, port FROM mcp_guard.events FINAL \
             WHERE event_id = 'same-connect' FORMAT TSV"
        )
        .trim(),
        "vm-a\tapi.example.test\t203.0.113.7\t443"
    );
    assert_eq!(
        ch.count("SELECT count() FROM mcp_guard.events FINAL WHERE dst_host IS NULL"),
        100
    );
    let calls = json_lines(&cli(
        &state_a,
        &["calls", "--fleet", &url, "--tool", "read_file", "--json"],
    ));
    assert_eq!(calls.len(), 10, "{calls:?}");
    assert!(
        calls
            .iter()
            .all(|c| c["decision"] == "allowed" && c["ended_at"].is_string())
    );

    // The attack: a filter value that tries to leave its SQL string and match everything.
    let injected = cli(
        &state_a,
        &[
            "calls",
            "--fleet",
            &url,
            "--tool",
            "x' OR 1 = 1 OR tool = '",
            "--json",
        ],
    );
    assert!(injected.status.success(), "{}", describe(&injected));
    assert!(
        injected.stdout.is_empty(),
        "the filter was injected:\n{}",
        describe(&injected)
    );
    assert!(
        String::from_utf8_lossy(&injected.stderr).contains("no calls recorded"),
        "{}",
        describe(&injected)
    );

    // trace: the call with its ten events, from one host, named.
    let out = cli(&state_a, &["trace", "--fleet", &url, "same-c3"]);
    assert!(out.status.success(), "{}", describe(&out));
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        text.starts_with("call same-c3  read_file  on server-same  host vm-a"),
        "{text}"
    );
    assert_eq!(text.matches("open ").count(), 10, "{text}");
    let trace = json_lines(&cli(
        &state_a,
        &["trace", "--fleet", &url, "same-c3", "--json"],
    ));
    assert_eq!(trace.len(), 11, "{trace:?}");
    assert!(trace.iter().all(|l| l["host"] == "vm-a"), "{trace:?}");

    // sessions: each host's session with what its server said about itself (shipped when the
    // facts updated the session's row), the same as the host's own `sessions`, plus `host`.
    assert_eq!(
        ch.wait_count(
            "SELECT count() FROM mcp_guard.sessions FINAL WHERE position(record, 'same-srv') > 0",
            2,
            Duration::from_mins(1)
        ),
        2
    );
    let out = cli(&state_a, &["sessions", "--fleet", &url]);
    assert!(out.status.success(), "{}", describe(&out));
    let text = String::from_utf8_lossy(&out.stdout);
    let rows: Vec<&str> = text.lines().collect();
    assert!(
        rows.first()
            .is_some_and(|h| h.starts_with("HOST  ") && h.contains("SAYS IT IS")),
        "{text}"
    );
    assert_eq!(rows.len(), 3, "{text}");
    for (row, host) in rows[1..].iter().zip(["vm-a", "vm-b"]) {
        assert!(
            row.starts_with(host) && row.contains("same-srv 1.2.3") && row.contains("running"),
            "{text}"
        );
    }
    let fleet = json_lines(&cli(&state_a, &["sessions", "--fleet", &url, "--json"]));
    assert_eq!(fleet.len(), 2, "{fleet:?}");
    for (agent, host) in agents.iter().zip(["vm-a", "vm-b"]) {
        let local = json_lines(&cli(&agent.state, &["sessions", "--json"]));
        let mine: Vec<Value> = fleet
            .iter()
            .filter(|s| s["host"] == host)
            .map(|s| {
                let mut s = s.clone();
                s.as_object_mut().map(|m| m.remove("host"));
                s
            })
            .collect();
        assert_eq!(
            mine, local,
            "{host}: the fleet's sessions differ from the host's own"
        );
    }
    let none = cli(
        &state_a,
        &[
            "sessions",
            "--fleet",
            &url,
            "--server",
            "server-other",
            "--json",
        ],
    );
    assert!(
        none.status.success() && none.stdout.is_empty(),
        "{}",
        describe(&none)
    );
    drop(agents);
    drop(pins);
    let _ = std::fs::remove_dir_all(&dir);
}

/// The opener fixture under a policy that kills a sensitive read: an exec, opens (one of a
/// path made to look like a second syslog frame), a kill and an alert, all recorded.
#[test]
fn rsyslog_receives_one_valid_rfc_5424_frame_with_ocsf_json_per_record() {
    require_root();
    let dir = data_dir("syslog");
    let rs = Rsyslog::start(&dir.join("rsyslog"), None);
    let pins = PinDir::new("export-syslog");
    let agent = Agent::start(
        &dir,
        &pins,
        &export_config("vm-a", &syslog_sink("siem", &rs.address(), 500)),
    );
    let home = dir.join("home");
    std::fs::create_dir_all(home.join(".aws")).expect("home");
    std::fs::write(home.join(".aws/credentials"), "[default]\n").expect("credentials");
    let work = dir.join("work");
    std::fs::create_dir_all(&work).expect("work");
    std::fs::write(work.join("present.txt"), "x").expect("present");
    for d in [&dir, &home, &home.join(".aws"), &work] {
        std::fs::set_permissions(d, std::fs::Permissions::from_mode(0o755)).expect("chmod");
    }
    let opener = workspace_bin("opener");
    let bindir = opener.parent().expect("bin dir").display().to_string();
    let policy = dir.join("policy.toml");
    std::fs::write(
        &policy,
        format!(
            "name = \"syslog-test\"\n[filesystem]\nread = [\"/usr\", \"/lib\", \"/lib64\", \"/bin\", \
             \"/etc/ld.so.cache\", \"/proc\", \"{bindir}\", \"{}\"]\nwrite = [\"/dev/null\"]\n\
             exec = [\"/usr\", \"/lib\", \"/lib64\", \"/bin\", \"{bindir}\"]\n[detect]\n\
             sensitive = [\"~/.aws/credentials\"]\non_sensitive = \"kill\"\n",
            work.display()
        ),
    )
    .expect("policy");
    let forged = "<11>1 2026-01-01T00:00:00Z forged mcp-guard 1 alert - {\"forged\":true}";
    let crafted = work.join(format!("x\n{forged}"));
    let out = Command::new(mcp_guard())
        .arg("--state-dir")
        .arg(&agent.state)
        .args([
            "exec",
            "--standalone",
            "--passthrough",
            "--name",
            "syslog-test",
            "--policy",
        ])
        .arg(&policy)
        .arg("--")
        .arg(&opener)
        .arg(work.join("present.txt"))
        .arg(&crafted)
        .arg(home.join(".aws/credentials"))
        .env("HOME", &home)
        .stdin(Stdio::null())
        .output()
        .expect("run mcp-guard exec");
    assert_eq!(out.status.code(), Some(128 + 9), "{}", describe(&out));

    // Every record the store holds reaches rsyslog (a record written again, as the session
    // when it ends, is sent again as it is then).
    let stored = stored_ids(&agent.state);
    wait_shipped(&agent, "siem", stored.len());
    let raw = rs.raw();
    let mut shipped = BTreeSet::new();
    let mut classes = BTreeSet::new();
    let mut crafted_seen = false;
    for line in &raw {
        let (pri, msgid, json) = rfc5424(line, "vm-a");
        shipped.insert(ocsf_common(&json, "vm-a"));
        assert_eq!(pri / 8, 16, "facility local0: {line}");
        let class = json["class_uid"].as_u64().unwrap_or(0);
        let record = &json["unmapped"]["mcp_guard"];
        match (msgid.as_str(), record["kind"].as_str()) {
            ("session", _) | ("event", Some("exec")) => assert_eq!(class, 1007, "{line}"),
            ("alert", _) => {
                assert_eq!(class, 2004, "{line}");
                assert_eq!(json["finding_info"]["title"], record["rule"], "{line}");
            }
            ("event", Some("killed")) => {
                assert_eq!(
                    (class, json["activity_id"].as_u64()),
                    (1007, Some(2)),
                    "{line}"
                );
            }
            ("event", Some("open")) => {
                assert_eq!(class, 1001, "{line}");
                assert_eq!(json["file"]["path"], record["path"], "{line}");
                crafted_seen |= json["file"]["path"].as_str() == crafted.to_str();
            }
            _ => {}
        }
        classes.insert((msgid, class));
    }
    assert!(
        crafted_seen,
        "no open of the crafted path:\n{}",
        raw.join("\n")
    );
    for want in [
        ("session", 1007),
        ("event", 1007),
        ("event", 1001),
        ("alert", 2004),
    ] {
        assert!(
            classes.contains(&(want.0.to_string(), want.1)),
            "no {want:?} in {classes:?}"
        );
    }
    // rsyslog's own RFC 5424 parser read every header the same way.
    let parsed = rs.parsed();
    assert_eq!(parsed.len(), raw.len());
    for p in &parsed {
        let f: Vec<&str> = p.split(' ').collect();
        assert_eq!(f.first(), Some(&"1"), "protocol version: {p}");
        assert_eq!(
            (f.get(2), f.get(3), f.get(6)),
            (Some(&"vm-a"), Some(&"mcp-guard"), Some(&"-")),
            "{p}"
        );
        assert_eq!(f.get(7), Some(&"local0"), "{p}");
    }
    assert!(
        !parsed.iter().any(|p| p.contains("forged")),
        "a forged frame was read as a message: {parsed:?}"
    );
    // The README's receiver (`%msg%`): each line one OCSF event, JSON as sent.
    let messages = rs.messages();
    assert_eq!(messages.len(), raw.len());
    for m in &messages {
        let json: Value =
            serde_json::from_str(m).unwrap_or_else(|e| panic!("%msg% is not JSON ({e}): {m:?}"));
        ocsf_common(&json, "vm-a");
    }
    drop(agent);
    let _ = std::fs::remove_dir_all(&dir);
}

fn count(haystack: &[u8], needle: &str) -> usize {
    let n = needle.as_bytes();
    haystack.windows(n.len()).filter(|w| *w == n).count()
}

#[test]
fn no_injected_secret_reaches_the_store_clickhouse_or_syslog() {
    require_root();
    let dir = data_dir("secret");
    let ch = ClickHouse::start(&dir.join("clickhouse"));
    let rs = Rsyslog::start(&dir.join("rsyslog"), None);
    let pins = PinDir::new("export-secret");
    let agent = Agent::start(
        &dir,
        &pins,
        &export_config(
            "vm-a",
            &(clickhouse_sink("fleet", &ch.url(), 500) + &syslog_sink("siem", &rs.address(), 500)),
        ),
    );
    let mut bytes = [0u8; 16];
    std::fs::File::open("/dev/urandom")
        .and_then(|mut f| std::io::Read::read_exact(&mut f, &mut bytes))
        .expect("read /dev/urandom");
    let value: String = bytes.iter().map(|b| format!("{b:02x}")).collect();
    let secrets = dir.join("secrets");
    std::fs::create_dir_all(&secrets).expect("mkdir secrets");
    std::fs::set_permissions(&secrets, std::fs::Permissions::from_mode(0o700)).expect("chmod");
    let secret = secrets.join("token");
    std::fs::write(&secret, &value).expect("write the secret");
    std::fs::set_permissions(&secret, std::fs::Permissions::from_mode(0o600)).expect("chmod");

    // The leaky server, pinned and fixed by its policy, gets LEAK_TOKEN and leaks it in a
    // child's argv, its tool result and its stderr (tests/tests/trust_secrets.rs).
    let py = workspace_root().join(".venv/bin/python");
    let server = fixture("leaky_server.py");
    let pinned = Command::new(mcp_guard())
        .arg("--state-dir")
        .arg(&agent.state)
        .args(["policy", "pin", "--no-deps", "--"])
        .arg(&py)
        .arg(&server)
        .output()
        .expect("run policy pin");
    assert!(pinned.status.success(), "{}", describe(&pinned));
    let pins_table = String::from_utf8(pinned.stdout).expect("UTF-8 pins");
    let venv = workspace_root().join(".venv").canonicalize().expect("venv");
    let python_home = py
        .canonicalize()
        .expect("venv python")
        .parent()
        .and_then(Path::parent)
        .expect("python prefix")
        .to_path_buf();
    let list = |paths: &[&Path]| -> String {
        paths
            .iter()
            .map(|p| format!("  \"{}\",\n", p.display()))
            .collect()
    };
    let policy_text = std::fs::read_to_string(workspace_root().join("policies/default.toml"))
        .expect("default policy")
        .replacen("name = \"default\"", "name = \"leaky\"", 1)
        .replacen(
            "\nread = [\n",
            &format!("\nread = [\n{}", list(&[&venv, &python_home, &fixture("")])),
            1,
        )
        .replacen(
            "\nexec = [\n",
            &format!("\nexec = [\n{}", list(&[&venv, &python_home])),
            1,
        );
    let policy = dir.join("leaky.toml");
    std::fs::write(
        &policy,
        format!(
            "{policy_text}\n[secrets]\nLEAK_TOKEN = {{ file = \"{}\" }}\n\n\
             [mcp.secret_shapes]\nin_arguments = \"alert\"\n\n{pins_table}",
            secret.display()
        ),
    )
    .expect("write policy");
    // The attack on the history: a client passes credentials as named arguments, which only
    // their names make recognisable (each JSON string redacted alone keeps them). The proxy
    // refuses such a call by default; `in_arguments = "alert"` lets it reach the server, so what
    // is checked here is that the history still never keeps the values.
    let password = format!("hunter2{}", &value[..10]);
    let aws_secret = format!("{}{}", &value[..20].to_uppercase(), &value[12..32]);
    let arguments = serde_json::json!({
        "password": password,
        "aws_secret_access_key": aws_secret,
    })
    .to_string();
    for args in ["{}", arguments.as_str()] {
        let out = Command::new(python())
            .arg(fixture("mcp_client.py"))
            .args(["--call", "leak", args, "--"])
            .arg(mcp_guard())
            .arg("--state-dir")
            .arg(&agent.state)
            .args(["exec", "--standalone", "--name", "leaky", "--policy"])
            .arg(&policy)
            .arg("--")
            .arg(&py)
            .arg(&server)
            .output()
            .expect("run the MCP client");
        assert!(out.status.success(), "{}", describe(&out));
    }
    let calls = cli(&agent.state, &["calls", "--json"]);
    assert!(calls.status.success(), "{}", describe(&calls));
    let with_args = json_lines(&calls)
        .into_iter()
        .find(|c| c["arguments"].get("password").is_some())
        .unwrap_or_else(|| panic!("no call with the arguments: {}", describe(&calls)));
    assert!(
        with_args["arguments"]["password"]
            .as_str()
            .is_some_and(|p| p.starts_with("[REDACTED:"))
            && with_args["arguments"]["aws_secret_access_key"]
                .as_str()
                .is_some_and(|p| p.starts_with("[REDACTED:")),
        "{with_args}"
    );

    // Shipped, all of it.
    let records = stored_ids(&agent.state).len();
    for sink in ["fleet", "siem"] {
        wait_shipped(&agent, sink, records);
    }
    assert!(
        rs.raw().len() >= records,
        "{} of {records} in syslog",
        rs.raw().len()
    );
    let mut shipped = Vec::new();
    for table in ["sessions", "calls", "events", "alerts"] {
        shipped.extend(
            ch.query(&format!(
                "SELECT * FROM mcp_guard.{table} FORMAT TabSeparated"
            ))
            .into_bytes(),
        );
    }
    let mut leaks = Vec::new();
    let secrets = [&value[..], &value[..12], &password, &aws_secret];
    let has_secret = |bytes: &[u8]| secrets.iter().any(|s| count(bytes, s) > 0);
    for (what, bytes) in [
        ("ClickHouse", shipped.clone()),
        ("syslog", rs.files()),
        ("calls --json", calls.stdout.clone()),
    ] {
        if has_secret(&bytes) {
            leaks.push(what.to_string());
        }
    }
    let state = &agent.state;
    for file in ["mcp-guard.db", "mcp-guard.db-wal", "mcp-guard.db-shm"] {
        if let Ok(bytes) = std::fs::read(state.join(file))
            && [&value, &password, &aws_secret]
                .iter()
                .any(|s| count(&bytes, s) > 0)
        {
            leaks.push(file.to_string());
        }
    }
    assert!(leaks.is_empty(), "the secret leaked to {leaks:?}");
    // What was shipped is the redacted record: the child's argv names the secret, not its value.
    let marker = "[REDACTED:secret LEAK_TOKEN]";
    assert!(
        count(&shipped, marker) > 0,
        "no redacted argv in ClickHouse"
    );
    assert!(count(&rs.files(), marker) > 0, "no redacted argv in syslog");
    drop(agent);
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn tls_sinks_deliver_to_servers_their_ca_signed_and_nothing_to_an_impostor() {
    require_root();
    let dir = data_dir("tls");
    let pki = Pki::new(&dir.join("pki"), "fleet");
    // The impostor answers on a sink's address with a certificate from a CA of its own.
    let impostor = Pki::new(&dir.join("pki"), "impostor");
    let rs = Rsyslog::start(
        &dir.join("rsyslog"),
        Some(&Tls {
            ca: pki.ca.clone(),
            cert: pki.cert.clone(),
            key: pki.key.clone(),
        }),
    );
    let fake = Rsyslog::start(
        &dir.join("impostor"),
        Some(&Tls {
            ca: impostor.ca.clone(),
            cert: impostor.cert.clone(),
            key: impostor.key.clone(),
        }),
    );
    let password = "correct horse battery staple";
    let ch = ClickHouse::start_with(
        &dir.join("clickhouse"),
        &clickhouse::Options {
            writer_password: Some(password.into()),
            https: Some(clickhouse::Https {
                cert: pki.cert.clone(),
                key: pki.key.clone(),
            }),
        },
    );
    let pw_file = dir.join("clickhouse.password");
    std::fs::write(&pw_file, format!("{password}\n")).expect("password file");
    std::fs::set_permissions(&pw_file, std::fs::Permissions::from_mode(0o600)).expect("chmod");
    let https = format!("https://localhost:{}", ch.https_port.expect("https port"));
    let sinks = format!(
        "[[export.sink]]\nname = \"siem\"\nkind = \"syslog\"\naddress = \"{}\"\ntls = true\n\
         ca_file = \"{}\"\nserver_name = \"localhost\"\ninterval_ms = 100\ntimeout_ms = 5000\n\n\
         [[export.sink]]\nname = \"mitm\"\nkind = \"syslog\"\naddress = \"{}\"\ntls = true\n\
         ca_file = \"{}\"\ninterval_ms = 100\ntimeout_ms = 5000\n\n\
         [[export.sink]]\nname = \"fleet\"\nkind = \"clickhouse\"\nurl = \"{https}\"\n\
         user = \"writer\"\npassword_file = \"{}\"\nca_file = \"{}\"\ninterval_ms = 100\n\n",
        rs.address(),
        pki.ca.display(),
        fake.address(),
        pki.ca.display(),
        pw_file.display(),
        pki.ca.display(),
    );
    let pins = PinDir::new("export-tls");
    let agent = Agent::start(&dir, &pins, &export_config("vm-a", &sinks));
    let total = fill(&agent.state, "tls", 20);
    assert_eq!(
        ch.wait_count(
            "SELECT count() FROM mcp_guard.events FINAL",
            200,
            Duration::from_mins(1)
        ),
        200,
        "{}",
        agent.log()
    );
    assert!(
        rs.wait_for(total as usize, Duration::from_mins(1)) >= total as usize,
        "{}\n{}",
        agent.log(),
        rs.log()
    );
    for line in rs.raw() {
        rfc5424(&line, "vm-a");
    }
    // The impostor got nothing: every attempt failed verification, and all of it waits.
    wait_metric(
        &agent,
        "mcp_guard_export_failures_total",
        "mitm",
        Duration::from_secs(30),
        |v| v >= 2.0,
    );
    assert_eq!(
        metric(&agent, "mcp_guard_export_lag_records", "mitm"),
        Some(total as f64),
        "{}",
        agent.log()
    );
    assert_eq!(fake.raw().len(), 0, "the impostor received messages");
    assert!(
        !agent.log().contains(password),
        "the password is in the log"
    );
    drop(agent);
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn an_inline_password_or_one_others_can_read_stops_the_agent() {
    require_root();
    let dir = data_dir("config");
    let run = |config: &str| -> Output {
        let path = dir.join("agent.toml");
        std::fs::write(&path, config).expect("config");
        Command::new(mcp_guard())
            .arg("--state-dir")
            .arg(dir.join("state"))
            .args(["agent", "--config"])
            .arg(&path)
            .arg("--socket")
            .arg(dir.join("agent.sock"))
            .args([
                "--bpf-dir",
                "/sys/fs/bpf/mcp-guard-test-export-config-never",
            ])
            .stdin(Stdio::null())
            .output()
            .expect("run the agent")
    };
    let inline = "[export]\n[[export.sink]]\nname = \"fleet\"\nkind = \"clickhouse\"\n\
                  url = \"http://127.0.0.1:8123\"\nuser = \"writer\"\npassword = \"hunter2-inline\"\n";
    let out = run(inline);
    assert_eq!(out.status.code(), Some(78), "{}", describe(&out));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("password") && err.contains("line 2") && err.contains("password_file"),
        "{err}"
    );
    assert!(
        !err.contains("hunter2-inline"),
        "the error repeats the password: {err}"
    );
    let in_url = inline
        .replace("http://127.0.0.1", "http://writer:hunter2-url@127.0.0.1")
        .replace("password = \"hunter2-inline\"\n", "");
    let out = run(&in_url);
    assert_eq!(out.status.code(), Some(78), "{}", describe(&out));
    assert!(
        !String::from_utf8_lossy(&out.stderr).contains("hunter2-url"),
        "{}",
        describe(&out)
    );
    let pw = dir.join("readable.password");
    std::fs::write(&pw, "hunter2-file\n").expect("password file");
    std::fs::set_permissions(&pw, std::fs::Permissions::from_mode(0o644)).expect("chmod");
    let readable = inline.replace(
        "password = \"hunter2-inline\"",
        &format!("password_file = \"{}\"", pw.display()),
    );
    let out = run(&readable);
    assert_eq!(out.status.code(), Some(78), "{}", describe(&out));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("chmod 0600") && !err.contains("hunter2-file"),
        "{err}"
    );
    let _ = std::fs::remove_dir_all(&dir);
}

/// This process's CPU time (user + system), all threads.
fn process_cpu() -> Duration {
    let mut usage = std::mem::MaybeUninit::<libc::rusage>::zeroed();
    // SAFETY: getrusage writes a whole rusage into the buffer it is given, which is sized for it.
    let rc = unsafe { libc::getrusage(libc::RUSAGE_SELF, usage.as_mut_ptr()) };
    assert_eq!(rc, 0, "getrusage: {}", std::io::Error::last_os_error());
    // SAFETY: getrusage succeeded, so it initialised the struct.
    let usage = unsafe { usage.assume_init() };
    let tv = |t: libc::timeval| {
        Duration::from_secs(u64::try_from(t.tv_sec).unwrap_or(0))
            + Duration::from_micros(u64::try_from(t.tv_usec).unwrap_or(0))
    };
    tv(usage.ru_utime) + tv(usage.ru_stime)
}

/// A process's CPU time (user + system, all its threads) from /proc.
fn pid_cpu(pid: u32) -> Duration {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    // After the command's closing parenthesis: state is field 3, utime 14, stime 15.
    let fields: Vec<&str> = stat
        .rsplit_once(')')
        .map(|(_, rest)| rest.split_whitespace().collect())
        .unwrap_or_default();
    let ticks = |i: usize| {
        fields
            .get(i - 3)
            .and_then(|f| f.parse::<u64>().ok())
            .unwrap_or(0)
    };
    // SAFETY: sysconf only reads a configuration value.
    let hz = u64::try_from(unsafe { libc::sysconf(libc::_SC_CLK_TCK) })
        .unwrap_or(100)
        .max(1);
    Duration::from_millis((ticks(14) + ticks(15)) * 1000 / hz)
}

/// `sink` without its `batch` line: the sink's default batch.
fn without_batch(sink: &str) -> String {
    sink.lines()
        .filter(|l| !l.starts_with("batch ="))
        .map(|l| format!("{l}\n"))
        .collect()
}

/// The most memory this process has held (resident), in MiB.
fn max_rss_mib() -> f64 {
    let mut usage = std::mem::MaybeUninit::<libc::rusage>::zeroed();
    // SAFETY: getrusage writes a whole rusage into the buffer it is given, which is sized for it.
    let rc = unsafe { libc::getrusage(libc::RUSAGE_SELF, usage.as_mut_ptr()) };
    assert_eq!(rc, 0, "getrusage: {}", std::io::Error::last_os_error());
    // SAFETY: getrusage succeeded, so it initialised the struct.
    let usage = unsafe { usage.assume_init() };
    usage.ru_maxrss as f64 / 1024.0
}

/// Export throughput, the agent's exporter in this process (the same `Exporter` the agent runs,
/// nothing else running in the process), from a store of 20,000 calls with ten events each to a
/// local ClickHouse, then to a local rsyslog configured as the README says. Prints records/s
/// and the exporter's CPU per record (this process's CPU while it ran: the exporter's threads
/// and a 100 ms progress poll), and the receiving engine's CPU per record.
///
/// Not a timed test: run it on purpose, in release mode for meaningful numbers:
/// `cargo test --release -p mcp-guard-tests --test export -- --ignored --nocapture`
#[test]
#[ignore = "benchmark: run with --ignored --nocapture"]
fn bench_export_throughput() {
    use mcp_guard::{
        daemon::Config,
        export::{Exporter, Prepared},
        metrics::Metrics,
    };
    let dir = data_dir("bench");
    let ch = ClickHouse::start(&dir.join("clickhouse"));
    // The receiver the README gives users (the other tests' receiver also keeps each message
    // raw and parsed, three writes per message, which is the test's need, not a user's).
    let rs = Rsyslog::start_readme(&dir.join("rsyslog"));
    let state = dir.join("state");
    // 20 sessions of 1,000 calls with ten events each (the writer's queue takes 1,000 at once).
    let total: u64 = (0..20)
        .map(|i| fill(&state, &format!("bench{i}"), 1000))
        .sum();
    let db = db_path(&state);
    // Numbering the history for shipping happens once, when the first sink is configured.
    let t = Instant::now();
    let numbered = Store::open(&db)
        .and_then(|mut s| s.enable_export(&["clickhouse"]))
        .expect("enable export");
    assert_eq!(numbered, total);
    println!(
        "export bench: {total} records; numbering them for export took {:.2}s",
        t.elapsed().as_secs_f64()
    );
    for (name, sink) in [
        // Each sink's default batch: what a user gets.
        (
            "clickhouse",
            without_batch(&clickhouse_sink("clickhouse", &ch.url(), 1)),
        ),
        (
            "rsyslog",
            without_batch(&syslog_sink("rsyslog", &rs.address(), 1)),
        ),
    ] {
        let config = Config::parse(&export_config("bench", &sink)).expect("config");
        let prepared = Prepared::new(&config.export, None).expect("sink");
        let metrics = Metrics::new()
            .and_then(|m| m.export_metrics())
            .expect("metrics");
        let store = Store::open_existing(&db).expect("store");
        let engine = if name == "clickhouse" {
            ch.pid()
        } else {
            rs.pid()
        }
        .expect("engine pid");
        let engine_cpu = pid_cpu(engine);
        let cpu = process_cpu();
        let start = Instant::now();
        let exporter = Exporter::start(prepared, &db, metrics);
        let mut shipped = false;
        while start.elapsed() < Duration::from_mins(10) {
            std::thread::sleep(Duration::from_millis(100));
            // Cheap, so the poll's own CPU stays out of the exporter's: anything after the
            // cursor? (Counting the backlog would scan it ten times a second.)
            let cursor = store.export_cursor(name).expect("cursor");
            if cursor > 0
                && store
                    .changes_after(cursor, 1)
                    .expect("changes")
                    .changes
                    .is_empty()
            {
                shipped = true;
                break;
            }
        }
        let secs = start.elapsed().as_secs_f64();
        let cpu = process_cpu()
            .checked_sub(cpu)
            .expect("CPU time only grows")
            .as_secs_f64();
        exporter.stop(Duration::from_secs(10));
        // Before the check below reads the receiver's whole file into memory.
        let rss = max_rss_mib();
        assert!(shipped, "{name}: not shipped within 600 s");
        // Where it went: every record, once.
        let landed = if name == "clickhouse" {
            ["sessions", "calls", "events", "alerts"]
                .iter()
                .map(|t| ch.count(&format!("SELECT count() FROM mcp_guard.{t} FINAL")))
                .sum::<u64>()
        } else {
            rs.wait_for(total as usize, Duration::from_mins(2)) as u64
        };
        assert_eq!(landed, total, "{name}");
        let written = start.elapsed().as_secs_f64();
        let engine_cpu = pid_cpu(engine)
            .checked_sub(engine_cpu)
            .expect("CPU time only grows")
            .as_secs_f64();
        println!(
            "export bench: {name}: {total} records delivered in {secs:.2}s = {:.0} records/s; \
             exporter CPU {cpu:.2}s = {:.1} us/record; {name} CPU {engine_cpu:.2}s = {:.1} \
             us/record; all in the engine after {written:.2}s; this process's peak RSS so far \
             {rss:.0} MiB; load average {}",
            total as f64 / secs,
            cpu * 1e6 / total as f64,
            engine_cpu * 1e6 / total as f64,
            std::fs::read_to_string("/proc/loadavg")
                .unwrap_or_default()
                .split_whitespace()
                .take(3)
                .collect::<Vec<_>>()
                .join(" "),
        );
        let bench = format!("export {name}");
        record(&bench, "throughput", total as f64 / secs, "records/s");
        record(
            &bench,
            "exporter CPU",
            cpu * 1e6 / total as f64,
            "us/record",
        );
        record(
            &bench,
            "engine CPU",
            engine_cpu * 1e6 / total as f64,
            "us/record",
        );
    }
    let _ = std::fs::remove_dir_all(&dir);
}

/// An alert repeated in its session is one stored row whose count grows: it is shipped again,
/// ClickHouse ends with the latest count after `FINAL`, syslog gets the update as an OCSF
/// Update, and `mcp_guard_alerts_total` counts every occurrence.
#[test]
fn a_repeated_alert_reaches_clickhouse_with_its_latest_count() {
    require_root();
    let dir = data_dir("repeat");
    let ch = ClickHouse::start(&dir.join("clickhouse"));
    let rs = Rsyslog::start(&dir.join("rsyslog"), None);
    let pins = PinDir::new("export-repeat");
    let config = export_config(
        "vm-r",
        &(clickhouse_sink("fleet", &ch.url(), 100) + &syslog_sink("siem", &rs.address(), 100)),
    );
    let agent = Agent::start(&dir, &pins, &config);
    let t0 = mcp_guard_model::Timestamp::now();
    let alert = |id: &str, s: u64| mcp_guard_model::AlertRecord {
        alert_id: id.into(),
        ts: t0.saturating_add(Duration::from_secs(s)),
        server: "weather".into(),
        session: "weather-s1".into(),
        rule: "sensitive-read".into(),
        severity: mcp_guard_model::Severity::High,
        call_id: Some(format!("c-{id}")),
        tool: Some("get_weather".into()),
        summary: "tool get_weather opened sensitive path /root/.aws/credentials".into(),
        event_ids: vec![format!("e-{id}")],
        action: Some("alert".into()),
        count: 1,
        last_seen: t0.saturating_add(Duration::from_secs(s)),
    };
    let mut store = Store::open(&db_path(&agent.state)).expect("store");
    store.insert(alert("r-a1", 0)).expect("first");
    wait_shipped(&agent, "fleet", 1);
    wait_shipped(&agent, "siem", 1);
    store.insert(alert("r-a2", 5)).expect("repeat");
    store.insert(alert("r-a3", 9)).expect("repeat");
    wait_shipped(&agent, "fleet", 2);
    wait_shipped(&agent, "siem", 2);
    let latest = ch.query(
        "SELECT alert_id, count, last_seen_ns - ts_ns FROM mcp_guard.alerts FINAL \
         WHERE host_id = 'id-vm-r' FORMAT TSV",
    );
    assert_eq!(latest.trim(), "r-a1\t3\t9000000000", "{}", agent.log());
    // Syslog: the first message creates the finding, a later one updates it with its count.
    let alerts: Vec<Value> = rs
        .raw()
        .iter()
        .map(|l| rfc5424(l, "vm-r"))
        .filter(|(_, msgid, _)| msgid == "alert")
        .map(|(_, _, json)| json)
        .collect();
    assert_eq!(alerts[0]["activity_id"], 1, "{alerts:#?}");
    let last = alerts.last().expect("an alert message");
    assert_eq!(
        (last["activity_id"].clone(), last["count"].clone()),
        (2.into(), 3.into())
    );
    // Every occurrence counted, though the store holds one alert.
    prom::wait_metric(
        &agent.addr,
        r#"mcp_guard_alerts_total{rule="sensitive-read",server="weather",severity="high"}"#,
        Duration::from_secs(30),
        |v| v == 3.0,
        || agent.log(),
    );
    drop(agent);
    let _ = std::fs::remove_dir_all(&dir);
}
