//! A session and what its server said about itself.

use serde::{Deserialize, Serialize};

use super::{Timestamp, is_false};

/// One run of one MCP server under `mcp-guard exec` (or the agent).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct SessionRecord {
    /// Session id (unique across hosts' exec processes; other ids may build on it).
    pub session: String,
    /// Server name.
    pub server: String,
    /// When the server was launched.
    pub started_at: Timestamp,
    /// When it ended; `None` while running.
    pub ended_at: Option<Timestamp>,
    /// The server command and its arguments.
    pub command: Vec<String>,
    /// The policy applied: a name, a path, or `default`.
    pub policy: String,
    /// The pid of the `mcp-guard exec` that owns the session (alive exactly while it runs).
    #[serde(default)]
    pub pid: Option<u32>,
    /// Observe mode (nothing enforced).
    #[serde(default, skip_serializing_if = "is_false")]
    pub observe: bool,
    /// Exit status (128+signal when killed by a signal); `None` while running.
    pub exit_status: Option<i32>,
    /// What the server said about itself ([`SessionFacts`] fill it in; never written with the
    /// session's own record).
    #[serde(flatten, default)]
    pub facts: ServerFacts,
}

/// What a server said about itself in a session: which server, which version, which tools.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct ServerFacts {
    /// From its `initialize` answer: `name`, `version` (and `title`) of `serverInfo`,
    /// `protocolVersion`, `capabilities`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub server_info: Option<serde_json::Value>,
    /// Its `tools/list` answers, each time the list changed.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub tools_listed: Vec<ToolsListing>,
}

/// One `tools/list` answer, by digest.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ToolsListing {
    /// When it reached the proxy.
    pub at: Timestamp,
    /// SHA-256 (hex) of the canonical JSON of its `tools` (keys sorted, no spaces).
    pub sha256: String,
    /// How many tools it listed.
    pub tools: u64,
}

/// An update of a session's [`ServerFacts`]: the `initialize` answer, or one more tool list
/// (added when its digest differs from the last one's).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct SessionFacts {
    /// Session id.
    pub session: String,
    /// The server's `initialize` answer, as in [`ServerFacts::server_info`].
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub server_info: Option<serde_json::Value>,
    /// A `tools/list` answer.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tools_listed: Option<ToolsListing>,
}
