//! The MCP proxy on exec's stdio seam: every JSON-RPC message between the client and the jailed
//! server passes the policy's interceptors; calls are recorded in the session's store, call facts
//! and findings go to the session's analysis.

use std::io;

use super::{ServerStdio, client_io, proxy_sink::ProxySink};
use crate::mcp::{self, ProxyConfig};

/// Runs the proxy between exec's stdin/stdout and the server until the server's stdout ends.
/// An `Err` means the client is gone (its stdout closed) or the proxy could not start.
pub async fn proxied(io: ServerStdio) -> io::Result<()> {
    let ServerStdio {
        stdin,
        stdout,
        client_eof,
        session,
        secrets,
    } = io;
    let mut config = ProxyConfig::from_policy(
        &session.policy,
        &session.server,
        &session.state_dir,
        secrets.0,
    );
    config.session = session.session.clone();
    config.tools.client_exe = session.client_exe.clone();
    config.observe = session.observe;
    config.audit = session.audit.clone();
    let sink = ProxySink::new(
        session.store.clone(),
        session.analysis.inputs(),
        &session.session,
    )
    .with_denials(session.analysis.take_denials());
    let outcome = mcp::run(
        client_io::stdin(),
        client_io::stdout(),
        stdin,
        stdout,
        config,
        sink,
        Some(client_eof),
    )
    .await
    .map_err(|e| io::Error::other(format!("MCP proxy: {e:#}")))?;
    match outcome.client_write_error {
        Some(e) => Err(io::Error::new(io::ErrorKind::BrokenPipe, e)),
        None => Ok(()),
    }
}
