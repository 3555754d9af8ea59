//! Fixture: one producer process writing to a shared store through the batched writer, as an
//! `exec` process does. `store_writer DB TAG N` sends one session (and what its server said
//! about itself), N calls and 10×N events,
//! waits for them to be committed, and prints the writer's counters as one JSON line.

use std::{process::ExitCode, time::Duration};

use mcp_guard_model::{
    Attribution, CallRecord, Decision, EventKind, EventRecord, SessionFacts, SessionRecord,
    Timestamp, Verdict,
};
use mcp_guard_store::StoreWriter;

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().collect();
    let [_, db, tag, n] = args.as_slice() else {
        eprintln!("usage: store_writer DB TAG N");
        return ExitCode::from(2);
    };
    let Ok(n) = n.parse::<u64>() else {
        eprintln!("N must be a number");
        return ExitCode::from(2);
    };
    let handle = StoreWriter::spawn(db);
    let server = format!("server-{tag}");
    let session = tag.clone();
    let mut refused = 0u64;
    let mut send = |r: mcp_guard_model::Record| refused += u64::from(!handle.send(r));
    send(
        SessionRecord {
            session: session.clone(),
            server: server.clone(),
            started_at: Timestamp::now(),
            ended_at: None,
            command: vec!["store_writer".into(), tag.clone()],
            policy: "default".into(),
            pid: Some(std::process::id()),
            observe: false,
            exit_status: None,
            facts: mcp_guard_model::ServerFacts::default(),
        }
        .into(),
    );
    send(mcp_guard_model::Record::Facts(SessionFacts {
        session: session.clone(),
        server_info: Some(serde_json::json!({ "name": format!("{tag}-srv"), "version": "1.2.3" })),
        tools_listed: None,
    }));
    for c in 0..n {
        let call_id = format!("{tag}-c{c}");
        let mut call = CallRecord {
            call_id: call_id.clone(),
            server: server.clone(),
            session: session.clone(),
            method: "tools/call".into(),
            tool: Some("read_file".into()),
            request_id: c.to_string(),
            started_at: Timestamp::now(),
            ended_at: None,
            decision: Decision::Allowed,
            reason: None,
            error: None,
            result_bytes: None,
            audit: None,
        };
        send(call.clone().into());
        for e in 0..10 {
            send(
                EventRecord {
                    event_id: format!("{tag}-e{c}-{e}"),
                    ts: Timestamp::now(),
                    server: server.clone(),
                    session: session.clone(),
                    pid: std::process::id(),
                    kind: EventKind::Open,
                    path: Some(format!("/srv/data/{tag}/{c}/{e}.txt")),
                    addr: None,
                    port: None,
                    host: None,
                    verdict: Verdict::Allowed,
                    call_id: Some(call_id.clone()),
                    attribution: Attribution::Call,
                    candidates: vec![],
                    flags: Some(0),
                    result: Some(3),
                    argv: None,
                    proto: None,
                    would_deny: false,
                    detail: None,
                }
                .into(),
            );
        }
        // The response completes the call record.
        call.ended_at = Some(Timestamp::now());
        send(call.into());
    }
    let flushed = handle.flush(Duration::from_mins(1));
    let stats = handle.stats();
    println!(
        "{}",
        serde_json::json!({
            "flushed": flushed,
            "refused": refused,
            "written": stats.written,
            "dropped_queue_full": stats.dropped_queue_full,
            "dropped_write_failed": stats.dropped_write_failed,
            "last_error": stats.last_error,
        })
    );
    ExitCode::SUCCESS
}
