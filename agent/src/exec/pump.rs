//! The MCP proxy on exec's stdio seam: every JSON-RPC message between the client and the jailed
//! server passes the policy's interceptors; calls are recorded in the session's store, call facts
//! and findings go to the session's analysis.

use std::io;

use tokio::io::{AsyncReadExt, AsyncWriteExt};

use super::{ServerStdio, client_io, proxy_sink::ProxySink};
use mcp_guard_proxy::{self as mcp, ProxyConfig};

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

/// Byte-for-byte passthrough: exec stdin → server stdin (EOF propagated), server stdout → exec
/// stdout (flushed per read so replies are not held back).
pub async fn passthrough(io: ServerStdio) -> io::Result<()> {
    let ServerStdio {
        mut stdin,
        mut stdout,
        client_eof,
        ..
    } = io;
    let upstream = async move {
        let mut client = client_io::stdin();
        let mut buf = vec![0u8; 64 * 1024];
        loop {
            match client.read(&mut buf).await {
                Ok(0) | Err(_) => break,
                Ok(n) => {
                    // The server closed its stdin: nothing more can be delivered, but its
                    // stdout must still be carried.
                    if stdin.write_all(&buf[..n]).await.is_err() {
                        return std::future::pending::<()>().await;
                    }
                }
            }
        }
        drop(stdin);
        let _ = client_eof.send(());
        // Never completes: the pump ends with the downstream half.
        std::future::pending::<()>().await;
    };
    let downstream = async move {
        let mut client = client_io::stdout();
        let mut buf = vec![0u8; 64 * 1024];
        loop {
            let n = stdout.read(&mut buf).await?;
            if n == 0 {
                return Ok(());
            }
            client.write_all(&buf[..n]).await?;
            client.flush().await?;
        }
    };
    tokio::pin!(upstream);
    tokio::select! {
        r = downstream => r,
        () = &mut upstream => Ok(()),
    }
}
