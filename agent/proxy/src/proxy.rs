//! The proxy: reads each side's newline-delimited JSON-RPC, applies the interceptor chain, and
//! writes to the other side. An untouched message is forwarded as its original bytes, in order.
//!
//! `exec` calls [`run`] with the client's stdio, the server's stdio, a [`ProxyConfig`] and a sink.
//! The proxy ends when the server closes its stdout (after the client's side is drained); when
//! the client closes its stdin the server's stdin is closed and the server's remaining output is
//! still delivered.
//!
//! The parts, each with one job: `config` (what the proxy is told, and the chain it builds),
//! `pump` (the run loop: a reader per side, the writers, the call-denial and re-list tasks),
//! `state` (what both directions share, and the helpers every handler uses), `client` and
//! `server` (the handlers for a frame from each side), `relist` (the proxy's own `tools/list`
//! after a `list_changed`, and holding tool calls until it is checked), and `outbox` (the
//! output of one frame per side, and the writers that coalesce it).

mod client;
mod config;
mod outbox;
mod pump;
mod relist;
mod server;
mod state;

use std::time::Duration;

pub use config::{ProxyConfig, build_chain};
pub use pump::{run, run_with_chain};

/// Why the proxy stopped, and what it saw.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ProxyOutcome {
    /// Messages read from the client (batch elements counted singly).
    pub client_messages: u64,
    /// Messages read from the server.
    pub server_messages: u64,
    /// Calls refused.
    pub denied: u64,
    /// Messages changed.
    pub modified: u64,
    /// Client lines answered with a parse/invalid-request error.
    pub malformed_from_client: u64,
    /// Server lines dropped as malformed or oversized.
    pub malformed_from_server: u64,
    /// Set when writing to the client failed (the client is gone; `exec` ends the session).
    pub client_write_error: Option<String>,
    /// With [`ProxyConfig::timing`]: for each client frame forwarded, in order, the time from
    /// its line fully read to its output handed to `write(2)` to the server (the proxy's own
    /// work and queueing), and to that write returned (with the system call, which also wakes
    /// the reader on the other end). Empty otherwise.
    pub client_to_server: Vec<(Duration, Duration)>,
    /// The same for each server frame forwarded to the client.
    pub server_to_client: Vec<(Duration, Duration)>,
}
