//! A session's history in the store: the proxy's captures in the store's form, what the server
//! said about itself as a session update, and the redactor every record passes on its way to
//! the disk.

use std::sync::Arc;

use mcp_guard_model::{SessionFacts, Timestamp, ToolsListing};
use mcp_guard_policy::Policy;
use mcp_guard_store::{self as store, RawJson, Redact};

use crate::mcp::{
    self,
    audit::{Captured, ServerFact},
    secrets::{Redactor, SecretConfig},
};

/// The proxy's capture of a call, as the store's writer takes it.
pub fn capture(c: mcp::audit::CallCapture) -> store::CallCapture {
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

/// The proxy's redactor for the store: the session's injected values, the policy's PII kinds,
/// and every secret shape the policy does not `ignore`, whatever the policy does with shapes in
/// messages (a shape it lets through to the client still never reaches the disk).
struct StoreRedactor(Redactor);

impl Redact for StoreRedactor {
    fn redact(&self, s: &mut String, what: &mut Vec<String>) {
        self.0.redact(s, true, what);
    }

    fn unfinished_tail(&self, s: &str) -> usize {
        self.0.unfinished_tail(s)
    }
}

/// The redactor a session's store handle applies to every record (see [`StoreRedactor`]).
pub fn store_redactor(
    policy: &Policy,
    secrets: &[(String, String)],
) -> anyhow::Result<Arc<dyn Redact>> {
    let mut config = SecretConfig::for_policy(&policy.mcp, secrets.to_vec());
    config.shapes = true;
    Ok(Arc::new(StoreRedactor(Redactor::new(&config)?)))
}
