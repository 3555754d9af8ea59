//! The running session's supervision, shared by the jail and the container backend: the pump
//! runs until the server exits, the client goes away, exec is signalled or the client's EOF
//! outlives its grace; then the server's tree is killed.

use std::time::Duration;

use tokio::sync::oneshot;

use super::{
    LocalFuture, Pump, STDIN_EOF_GRACE, SecretValues, ServerIn, ServerOut, ServerStdio,
    SessionInfo, say,
};

/// exec's TERM, INT and HUP handlers.
pub(super) type Signals<'a> = (
    &'a mut tokio::signal::unix::Signal,
    &'a mut tokio::signal::unix::Signal,
    &'a mut tokio::signal::unix::Signal,
);

/// Waits (briefly: every writer is dead by now) for the server's stderr to be written out.
pub(super) async fn drain_stderr(task: Option<tokio::task::JoinHandle<()>>) {
    if let Some(task) = task {
        let _ = tokio::time::timeout(Duration::from_secs(2), task).await;
    }
}

/// Kills everything the server is (called once, when the session ends).
pub(super) type KillTree = Box<dyn FnOnce() -> LocalFuture<'static, ()>>;

/// Runs the pump and waits until the session ends: the server exits (`exit` resolves to its
/// status), the client goes away, exec is signalled, or the client closed stdin and the server
/// outlived [`STDIN_EOF_GRACE`]. Then kills the server's tree, drains the pump and returns exec's
/// status. Shared by the jail and the container backend.
pub(super) async fn supervise(
    info: &SessionInfo,
    pump: Pump,
    (stdin, stdout): (ServerIn, ServerOut),
    secrets: SecretValues,
    mut exit: LocalFuture<'static, Option<i32>>,
    kill: KillTree,
    (term, int, hup): Signals<'_>,
) -> i32 {
    let (eof_tx, mut eof_rx) = oneshot::channel();
    let mut pump = pump(ServerStdio {
        stdin,
        stdout,
        client_eof: eof_tx,
        session: info.clone(),
        secrets,
    });
    let mut pump_done = false;
    let mut eof_seen = false;
    let grace = tokio::time::sleep(Duration::MAX / 4);
    tokio::pin!(grace);
    // Why the session ended, if exec ended it: the status to report.
    let mut ended_by: Option<i32> = None;
    let mut exited = false;
    let status = loop {
        tokio::select! {
            s = &mut exit => { exited = true; break s }
            r = &mut pump, if !pump_done => {
                pump_done = true;
                if let Err(e) = r {
                    // The client went away (stdout closed): nobody can use the server.
                    tracing::info!("client gone: {e}");
                    ended_by = Some(128 + libc::SIGPIPE);
                    break None;
                }
            }
            _ = &mut eof_rx, if !eof_seen => {
                eof_seen = true;
                grace.as_mut().reset(tokio::time::Instant::now() + STDIN_EOF_GRACE);
            }
            () = &mut grace, if eof_seen => {
                say(&format!(
                    "the client closed stdin and the server did not exit within {}s: killing it",
                    STDIN_EOF_GRACE.as_secs()
                ));
                ended_by = Some(128 + libc::SIGKILL);
                break None;
            }
            _ = term.recv() => { ended_by = Some(128 + libc::SIGTERM); break None; }
            _ = int.recv() => { ended_by = Some(128 + libc::SIGINT); break None; }
            _ = hup.recv() => { ended_by = Some(128 + libc::SIGHUP); break None; }
        }
    };
    kill().await;
    let status = match status {
        Some(s) => Some(s),
        None if !exited => exit.await,
        None => None,
    };
    // All writers are dead now: the pump drains what the server wrote and sees EOF.
    if !pump_done {
        let _ = tokio::time::timeout(Duration::from_secs(2), &mut pump).await;
    }
    drop(pump);
    ended_by.or(status).unwrap_or(1)
}
