//! One JSON-RPC request and what became of it.

use serde::{Deserialize, Serialize};

use super::{Decision, Timestamp};
use crate::audit::CallAudit;

/// One JSON-RPC request the client sent the server, and what became of it.
///
/// Send it when the request is seen (`ended_at: None`) and again when the response is: the store
/// keeps the latest version of each `call_id`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct CallRecord {
    /// Call id (unique in the store; e.g. built from the session id and a counter).
    pub call_id: String,
    /// Server name.
    pub server: String,
    /// Session id.
    pub session: String,
    /// JSON-RPC method, e.g. `tools/call`.
    pub method: String,
    /// Tool name for `tools/call`.
    pub tool: Option<String>,
    /// The JSON-RPC request id, as text.
    pub request_id: String,
    /// When the request was read from the client.
    pub started_at: Timestamp,
    /// When the response was written to the client; `None` while in flight.
    pub ended_at: Option<Timestamp>,
    /// What mcp-guard did with it.
    pub decision: Decision,
    /// Why it was denied or modified.
    pub reason: Option<String>,
    /// The JSON-RPC error the client got, if the response was one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    /// Size of the response's result in bytes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub result_bytes: Option<u64>,
    /// Its arguments and an excerpt of its result, redacted (fields `arguments`,
    /// `arguments_cut`, `result`, `result_cut`, `redacted`), as much as the policy keeps.
    #[serde(flatten, default)]
    pub audit: Option<CallAudit>,
}
