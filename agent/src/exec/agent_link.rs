//! A session worker's link to the agent's kernel guard: asks the agent to guard the session's
//! cgroup with its pinned programs, receives the cgroup's kernel events, and survives the agent
//! restarting (the pinned programs keep enforcing meanwhile; the worker reconnects and the new
//! agent adopts the cgroup and delivers what queued up in the ring buffer).

use std::{path::PathBuf, time::Duration};

use tokio::{
    io::{AsyncBufReadExt, AsyncWriteExt, BufReader, Lines},
    net::{
        UnixStream,
        unix::{OwnedReadHalf, OwnedWriteHalf},
    },
    sync::{mpsc, oneshot},
};

use crate::ipc::{self, GuardCommand, GuardReply, GuardRequest, Request};
use mcp_guard_kernel::events::KernelEvent;

/// How often a worker whose agent went away tries to reach the next one.
const RECONNECT_EVERY: Duration = Duration::from_millis(200);

/// The link to the agent for one session.
pub struct AgentLink {
    commands: mpsc::UnboundedSender<Command>,
    task: tokio::task::JoinHandle<()>,
    cgroup_id: u64,
}

enum Command {
    Flush(oneshot::Sender<()>),
    Release,
}

type Conn = (Lines<BufReader<OwnedReadHalf>>, OwnedWriteHalf);

impl AgentLink {
    /// Asks the agent at `socket` to guard the request's cgroup; the cgroup's events go to
    /// `events` from then on. An `Err` is the agent's refusal (or that it cannot be reached).
    pub async fn connect(
        socket: PathBuf,
        request: GuardRequest,
        events: mpsc::Sender<KernelEvent>,
    ) -> Result<AgentLink, String> {
        let (conn, cgroup_id) = open(&socket, &request).await?;
        let (commands, rx) = mpsc::unbounded_channel();
        let adopt = GuardRequest {
            adopt: true,
            ..request
        };
        let task = tokio::spawn(run(conn, socket, adopt, events, rx));
        Ok(AgentLink {
            commands,
            task,
            cgroup_id,
        })
    }

    /// The cgroup id the agent guards.
    pub fn cgroup_id(&self) -> u64 {
        self.cgroup_id
    }

    /// Returns once every event the kernel produced before the call is on the events channel,
    /// or after `wait` (the agent is away): `false` then.
    pub async fn flush(&self, wait: Duration) -> bool {
        let (reply, done) = oneshot::channel();
        if self.commands.send(Command::Flush(reply)).is_err() {
            return false;
        }
        matches!(tokio::time::timeout(wait, done).await, Ok(Ok(())))
    }

    /// Tells the agent the server is gone (it drops the maps and pins) and closes the link.
    pub async fn release(self) {
        let _ = self.commands.send(Command::Release);
        let _ = tokio::time::timeout(Duration::from_secs(2), self.task).await;
    }
}

/// Connects, sends the request and reads the answer.
async fn open(socket: &std::path::Path, request: &GuardRequest) -> Result<(Conn, u64), String> {
    let stream = UnixStream::connect(socket)
        .await
        .map_err(|e| format!("the agent at {}: {e}", socket.display()))?;
    let (read, mut write) = stream.into_split();
    write
        .write_all(&ipc::line(&Request::Guard(request.clone())))
        .await
        .map_err(|e| format!("the agent at {}: {e}", socket.display()))?;
    let mut lines = BufReader::new(read).lines();
    let answer = lines
        .next_line()
        .await
        .map_err(|e| format!("the agent at {}: {e}", socket.display()))?
        .ok_or_else(|| format!("the agent at {} closed the connection", socket.display()))?;
    match serde_json::from_str::<GuardReply>(&answer) {
        Ok(GuardReply::Guarded { cgroup_id }) => Ok(((lines, write), cgroup_id)),
        Ok(GuardReply::Error { message }) => Err(message),
        Ok(other) => Err(format!("the agent answered {other:?}")),
        Err(e) => Err(format!("the agent's answer is unreadable: {e}")),
    }
}

async fn run(
    conn: Conn,
    socket: PathBuf,
    adopt: GuardRequest,
    events: mpsc::Sender<KernelEvent>,
    mut commands: mpsc::UnboundedReceiver<Command>,
) {
    let mut conn = Some(conn);
    let mut flushes: Vec<oneshot::Sender<()>> = Vec::new();
    loop {
        let Some((lines, write)) = conn.as_mut() else {
            // The agent is away: try again, and keep taking commands meanwhile.
            tokio::select! {
                () = tokio::time::sleep(RECONNECT_EVERY) => {
                    match open(&socket, &adopt).await {
                        Ok((mut c, _)) => {
                            tracing::info!("the agent is back: session adopted");
                            for _ in &flushes {
                                let _ = c.1.write_all(&ipc::line(&GuardCommand::Flush)).await;
                            }
                            conn = Some(c);
                        }
                        Err(e) => tracing::debug!("reconnecting to the agent: {e}"),
                    }
                }
                cmd = commands.recv() => match cmd {
                    Some(Command::Flush(reply)) => flushes.push(reply),
                    Some(Command::Release) | None => return,
                },
            }
            continue;
        };
        tokio::select! {
            line = lines.next_line() => if let Ok(Some(line)) = line { match serde_json::from_str::<GuardReply>(&line) {
                Ok(GuardReply::Event { event }) => {
                    // The forwarder stops only after the last flush: a closed channel means
                    // the session is over.
                    let _ = events.send(event).await;
                }
                Ok(GuardReply::Flushed) => {
                    if !flushes.is_empty() {
                        let _ = flushes.remove(0).send(());
                    }
                }
                Ok(other) => tracing::warn!("unexpected message from the agent: {other:?}"),
                Err(e) => tracing::warn!("unreadable message from the agent: {e}"),
            } } else {
                crate::exec::say(
                    "WARNING: the agent went away; its pinned eBPF programs keep enforcing \
                     this session; reconnecting to record its events",
                );
                conn = None;
            },
            cmd = commands.recv() => match cmd {
                Some(Command::Flush(reply)) => {
                    flushes.push(reply);
                    if write.write_all(&ipc::line(&GuardCommand::Flush)).await.is_err() {
                        conn = None;
                    }
                }
                Some(Command::Release) | None => {
                    let _ = write.write_all(&ipc::line(&GuardCommand::Release)).await;
                    // Wait for the agent to close: the maps are clean once it has.
                    let _ = tokio::time::timeout(Duration::from_secs(2), async {
                        while let Ok(Some(_)) = lines.next_line().await {}
                    })
                    .await;
                    return;
                }
            },
        }
    }
}
