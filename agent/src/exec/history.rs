//! A session's history in the store: the proxy's captures in the store's form, what the server
//! said about itself as a session update, and the redactor every record passes on its way to
//! the disk.

use std::sync::Arc;

use mcp_guard_model::{ServerFacts, SessionFacts, SessionRecord, Timestamp, ToolsListing};
use mcp_guard_policy::Policy;
use mcp_guard_store::{self as store, RawJson, Redact, StoreHandle};

use super::{STORE_FLUSH_TIMEOUT, say};

use mcp_guard_proxy::{
    audit::{CallCapture, Captured, ServerFact},
    secrets::{RecordRedactor, SecretConfig},
};

/// The row that opens a session: started now, by this process, which owns the session and
/// lives exactly as long (what `servers_running` checks).
pub fn started_record(
    session: &str,
    server: &str,
    command: Vec<String>,
    policy: &Policy,
    observe: bool,
) -> SessionRecord {
    SessionRecord {
        session: session.to_owned(),
        server: server.to_owned(),
        started_at: Timestamp::now(),
        ended_at: None,
        command,
        policy: policy
            .source
            .as_ref()
            .map_or_else(|| policy.name.clone(), |p| p.display().to_string()),
        pid: Some(std::process::id()),
        observe,
        exit_status: None,
        facts: ServerFacts::default(),
    }
}

/// The proxy's capture of a call, as the store's writer takes it.
pub fn capture(c: CallCapture) -> store::CallCapture {
    let raw = |c: Captured| RawJson {
        text: c.text,
        total: c.total,
    };
    store::CallCapture {
        arguments: c.arguments.map(|(a, bound)| (raw(a), bound)),
        result: c.result.map(|r| (raw(r), c.result_bytes)),
    }
}

/// What the server said about itself, as an update of `session`'s row.
pub fn session_facts(session: &str, fact: ServerFact) -> SessionFacts {
    let mut facts = SessionFacts {
        session: session.to_string(),
        server_info: None,
        tools_listed: None,
    };
    match fact {
        ServerFact::Info(v) => facts.server_info = Some(v),
        ServerFact::Tools { sha256, tools } => {
            facts.tools_listed = Some(ToolsListing {
                at: Timestamp::now(),
                sha256,
                tools,
            });
        }
    }
    facts
}

/// The store's redactor: the session's record rules ([`RecordRedactor`]: injected values and the
/// secret rules, whatever the policy does with secrets in messages, so one it lets through to
/// the client still never reaches the disk), noting what it took out for a call's `redacted`.
struct StoreRedactor(RecordRedactor);

impl Redact for StoreRedactor {
    fn redact(&self, s: &mut String, what: &mut Vec<String>) {
        self.0.redact(s, what);
    }

    fn redact_member(&self, key: &str, s: &mut String, what: &mut Vec<String>) {
        self.0.redact_member(key, s, what);
    }

    fn unfinished_tail(&self, s: &str) -> usize {
        self.0.unfinished_tail(s)
    }
}

/// The redactor a session's store handle applies to every record (see [`StoreRedactor`]).
pub fn store_redactor(config: &SecretConfig) -> anyhow::Result<Arc<dyn Redact>> {
    Ok(Arc::new(StoreRedactor(RecordRedactor::new(config)?)))
}

/// Waits for the store to commit the session and close (nothing is sent after this), and says
/// on stderr what it could not keep.
pub(super) fn report_store(store: &StoreHandle) {
    let flushed = store.close(STORE_FLUSH_TIMEOUT);
    let stats = store.stats();
    let lost = stats.dropped_queue_full + stats.dropped_write_failed;
    if lost > 0 || !flushed {
        let recorded = if stats.lost_recorded >= lost {
            "; all of them are recorded as lost events".to_string()
        } else {
            format!(
                "; {} of them are recorded as lost events (the store refused the rest)",
                stats.lost_recorded
            )
        };
        say(&format!(
            "WARNING: the store {} did not keep everything: {} records dropped (queue full {}, \
             write failed {}){recorded}{}{}",
            store.path().display(),
            lost,
            stats.dropped_queue_full,
            stats.dropped_write_failed,
            stats
                .last_error
                .map(|e| format!("; last error: {e}"))
                .unwrap_or_default(),
            if flushed {
                String::new()
            } else {
                format!("; not flushed within {}s", STORE_FLUSH_TIMEOUT.as_secs())
            }
        ));
    }
}
