//! The agent's kernel guard: the eBPF programs loaded and pinned once, guarding the cgroups of
//! the sessions its workers run, and the one ring-buffer reader, which routes each cgroup's
//! events to the worker that asked for them.
//!
//! Restarts: the maps, programs and attachments are pinned, so they keep enforcing while no
//! agent runs. A new agent reuses the pinned maps; workers reconnect and their cgroups are
//! adopted; events queued meanwhile wait here for their worker. A guarded cgroup that nobody
//! adopts and that no longer exists is forgotten (its maps and pins removed).

use std::{
    collections::{BTreeMap, HashMap, HashSet},
    path::{Path, PathBuf},
    sync::{Arc, Mutex},
    time::{Duration, Instant},
};

use tokio::{
    io::{AsyncBufReadExt, AsyncWriteExt, BufReader},
    net::UnixStream,
    sync::mpsc,
};

use crate::{
    ipc::{self, GuardCommand, GuardReply, GuardRequest},
    kernel_refusal::explain_kernel as explain,
};
use mcp_guard_kernel::{
    events::KernelEvent,
    loader::{KernelError, KernelGuard, ServerHandle},
};
use mcp_guard_launch::cgroup::{Mounts, PARENT};
use mcp_guard_model::EventRecord;
use mcp_guard_store::StoreHandle;

/// Events held for cgroups whose worker has not (re)connected yet, at most.
const MAX_PENDING: usize = 1 << 20;

/// How long after start a pinned cgroup may wait for its worker before it is checked for
/// removal.
pub const ADOPT_GRACE: Duration = Duration::from_secs(10);

/// Events queued for one worker's connection.
const WORKER_QUEUE: usize = 4096;

/// The server name the agent's own records carry.
pub const AGENT_SERVER: &str = "mcp-guard-agent";

/// The agent's guard and the sessions it guards.
pub struct GuardService {
    guard: KernelGuard,
    handles: Mutex<HashMap<u64, ServerHandle>>,
    /// Cgroups whose worker is connected now.
    connected: Mutex<HashSet<u64>>,
    router: mpsc::UnboundedSender<RouterCmd>,
    started: Instant,
    /// The cgroup directory sessions are created in (found once: mountinfo is not re-read
    /// at every orphan check).
    sessions_parent: Option<PathBuf>,
    store: StoreHandle,
    drops_seen: Mutex<BTreeMap<&'static str, u64>>,
}

enum RouterCmd {
    Register {
        cgroup: u64,
        tx: mpsc::Sender<GuardReply>,
    },
    Unregister {
        cgroup: u64,
    },
    Flush {
        cgroup: u64,
    },
    Forget {
        cgroup: u64,
    },
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

impl GuardService {
    /// Loads (or takes over) the pinned programs below `bpf_dir` and starts routing events.
    /// Needs the tokio runtime.
    pub fn start(bpf_dir: &Path, store: StoreHandle) -> Result<Arc<Self>, String> {
        let guard = KernelGuard::load_pinned(bpf_dir).map_err(|e| explain(&e))?;
        let events = guard.events().map_err(|e| explain(&e))?;
        let (router, cmds) = mpsc::unbounded_channel();
        // What the kernel dropped before this agent started was reported by the one before.
        let drops_seen = guard.dropped().unwrap_or_default();
        let service = Arc::new(GuardService {
            guard,
            handles: Mutex::new(HashMap::new()),
            connected: Mutex::new(HashSet::new()),
            router,
            started: Instant::now(),
            sessions_parent: Mounts::discover()
                .ok()
                .and_then(|m| m.v2)
                .map(|v2| v2.join(PARENT)),
            store: store.clone(),
            drops_seen: Mutex::new(drops_seen),
        });
        tokio::spawn(route(events, cmds, store));
        Ok(service)
    }

    /// How many servers the pinned maps guard (including those not adopted yet).
    pub fn guarded(&self) -> usize {
        self.guard.guarded_cgroups().len()
    }

    /// Serves one worker's guard connection until it releases the session or goes away.
    pub async fn serve(self: Arc<Self>, stream: UnixStream, request: GuardRequest) {
        let (read, mut write) = stream.into_split();
        let cgroup = match self.guard_session(&request).await {
            Ok(id) => id,
            Err(message) => {
                let _ = write
                    .write_all(&ipc::line(&GuardReply::Error { message }))
                    .await;
                return;
            }
        };
        if write
            .write_all(&ipc::line(&GuardReply::Guarded { cgroup_id: cgroup }))
            .await
            .is_err()
        {
            self.release(cgroup, &request.cgroup_dir);
            return;
        }
        let (tx, mut rx) = mpsc::channel(WORKER_QUEUE);
        lock(&self.connected).insert(cgroup);
        let _ = self.router.send(RouterCmd::Register { cgroup, tx });
        let writer = tokio::spawn(async move {
            while let Some(msg) = rx.recv().await {
                if write.write_all(&ipc::line(&msg)).await.is_err() {
                    return;
                }
            }
        });
        let mut lines = BufReader::new(read).lines();
        loop {
            let Ok(Some(line)) = lines.next_line().await else {
                // The worker died: release once its server is gone too (else it is left for
                // the orphan check: a live server stays guarded).
                if !cgroup_has_processes(&request.cgroup_dir) {
                    break;
                }
                lock(&self.connected).remove(&cgroup);
                let _ = self.router.send(RouterCmd::Unregister { cgroup });
                writer.abort();
                return;
            };
            match serde_json::from_str::<GuardCommand>(&line) {
                Ok(GuardCommand::Flush) => {
                    self.guard.flush().await;
                    let _ = self.router.send(RouterCmd::Flush { cgroup });
                }
                Ok(GuardCommand::Release) => break,
                Err(e) => tracing::warn!("cgroup {cgroup}: bad command from its worker: {e}"),
            }
        }
        lock(&self.connected).remove(&cgroup);
        let _ = self.router.send(RouterCmd::Unregister { cgroup });
        self.release(cgroup, &request.cgroup_dir);
        writer.abort();
    }

    /// Guards (or adopts) the request's cgroup; its id.
    async fn guard_session(&self, request: &GuardRequest) -> Result<u64, String> {
        let id = mcp_guard_kernel::loader::cgroup_id(&request.cgroup_dir)
            .map_err(|e| format!("cgroup {}: {e}", request.cgroup_dir.display()))?;
        // A worker reconnecting to the agent that still holds its handle keeps that one.
        if request.adopt && lock(&self.handles).contains_key(&id) {
            return Ok(id);
        }
        let handle = if request.adopt {
            match self
                .guard
                .adopt_server(&request.cgroup_dir, request.spec.clone())
                .await
            {
                // Guarded by the build before an upgrade: move it over to this one.
                Err(KernelError::NotGuarded(id)) => self
                    .guard
                    .migrate_server(&request.cgroup_dir, request.spec.clone())
                    .await
                    .and_then(|h| h.ok_or(KernelError::NotGuarded(id))),
                other => other,
            }
        } else {
            self.guard
                .add_server(&request.cgroup_dir, request.spec.clone())
                .await
                .and_then(|handle| handle.with_members(&request.members))
        }
        .map_err(|e| explain(&e))?;
        tracing::info!(
            "{} cgroup {id} ({}) for server {} (session {})",
            if request.adopt { "adopted" } else { "guarding" },
            request.cgroup_dir.display(),
            request.spec.server,
            request.spec.session
        );
        lock(&self.handles).insert(id, handle);
        Ok(id)
    }

    fn release(&self, cgroup: u64, dir: &Path) {
        // Dropping the handle empties the maps and unpins the attachments.
        if lock(&self.handles).remove(&cgroup).is_some() {
            tracing::info!("released cgroup {cgroup} ({})", dir.display());
        }
    }

    /// Leaves every guarded server's maps and pins in place for the next agent (shutdown).
    pub fn keep_all(&self) {
        let handles: Vec<ServerHandle> = lock(&self.handles).drain().map(|(_, h)| h).collect();
        let n = handles.len();
        for handle in handles {
            handle.keep();
        }
        if n > 0 {
            crate::say::say_as_is(&format!(
                "mcp-guard agent: {n} running session(s) stay guarded by the pinned eBPF \
                 programs; the next agent adopts them"
            ));
        }
    }

    /// Forgets pinned servers whose cgroup is gone and that no worker holds: never adopted
    /// within [`ADOPT_GRACE`] (their worker died with the previous agent), or whose worker died
    /// while the server still ran. Returns how many.
    pub fn collect_orphans(&self) -> usize {
        if self.started.elapsed() < ADOPT_GRACE {
            return 0;
        }
        let live = self
            .sessions_parent
            .as_deref()
            .map(live_session_cgroups)
            .unwrap_or_default();
        let connected = lock(&self.connected).clone();
        let dead: Vec<u64> = lock(&self.handles)
            .keys()
            .copied()
            .filter(|id| !connected.contains(id) && !live.contains(id))
            .collect();
        for id in &dead {
            // Dropping the handle empties its maps and pins.
            lock(&self.handles).remove(id);
            let _ = self.router.send(RouterCmd::Forget { cgroup: *id });
            tracing::info!("released cgroup {id}: gone, and its worker is gone");
        }
        self.guard.prune_other_versions();
        let held: HashSet<u64> = lock(&self.handles).keys().copied().collect();
        let mut forgotten = dead.len();
        for id in self.guard.guarded_cgroups() {
            if held.contains(&id) || live.contains(&id) {
                continue;
            }
            self.guard.forget(id);
            let _ = self.router.send(RouterCmd::Forget { cgroup: id });
            tracing::info!("forgot cgroup {id}: gone, and no worker adopted it");
            forgotten += 1;
        }
        forgotten
    }

    /// Records what the kernel dropped since the last call as `lost` events of the agent.
    pub fn record_drops(&self) {
        let Ok(now) = self.guard.dropped() else {
            return;
        };
        let mut seen = lock(&self.drops_seen);
        for (reason, n) in now {
            let before = seen.insert(reason, n).unwrap_or(0);
            if n > before {
                let stamp = mcp_guard_model::Timestamp::now();
                self.store.send(EventRecord::lost(
                    format!("agent-{}-lost-{reason}-{stamp}", std::process::id()),
                    AGENT_SERVER,
                    "agent",
                    reason,
                    n - before,
                ));
            }
        }
    }
}

/// The cgroup ids of the session cgroups that exist now (below `parent`, `<v2>/mcp-guard/`).
fn live_session_cgroups(parent: &Path) -> HashSet<u64> {
    use std::os::unix::fs::MetadataExt as _;
    std::fs::read_dir(parent)
        .map(|entries| {
            entries
                .flatten()
                .filter_map(|e| e.metadata().ok())
                .filter(std::fs::Metadata::is_dir)
                .map(|m| m.ino())
                .collect()
        })
        .unwrap_or_default()
}

fn cgroup_has_processes(dir: &Path) -> bool {
    std::fs::read_to_string(dir.join("cgroup.procs")).is_ok_and(|p| !p.trim().is_empty())
}

/// The one reader of the guard's events: each goes to the worker of its cgroup, or waits for it.
async fn route(
    mut events: mpsc::Receiver<KernelEvent>,
    mut cmds: mpsc::UnboundedReceiver<RouterCmd>,
    store: StoreHandle,
) {
    let mut router = Router::default();
    loop {
        tokio::select! {
            biased;
            cmd = cmds.recv() => match cmd {
                Some(RouterCmd::Register { cgroup, tx }) => {
                    let pending = router.pending.remove(&cgroup).unwrap_or_default();
                    router.pending_len -= pending.len();
                    for event in pending {
                        let _ = tx.send(GuardReply::Event { event }).await;
                    }
                    router.routes.insert(cgroup, tx);
                }
                Some(RouterCmd::Unregister { cgroup }) => {
                    router.routes.remove(&cgroup);
                }
                Some(RouterCmd::Flush { cgroup }) => {
                    // The guard's flush put everything before it on the channel: deliver that
                    // first, then say so.
                    while let Ok(event) = events.try_recv() {
                        router.deliver(event).await;
                    }
                    if let Some(tx) = router.routes.get(&cgroup) {
                        let _ = tx.send(GuardReply::Flushed).await;
                    }
                }
                Some(RouterCmd::Forget { cgroup }) => {
                    if let Some(p) = router.pending.remove(&cgroup) {
                        router.pending_len -= p.len();
                        router.unclaimed += p.len() as u64;
                    }
                }
                None => return,
            },
            event = events.recv() => match event {
                Some(event) => router.deliver(event).await,
                None => return,
            },
        }
        if router.unclaimed > 0 {
            let n = std::mem::take(&mut router.unclaimed);
            tracing::warn!("{n} kernel events of sessions nobody adopted were dropped");
            store.send(EventRecord::lost(
                format!(
                    "agent-{}-lost-unclaimed-{}",
                    std::process::id(),
                    mcp_guard_model::Timestamp::now()
                ),
                AGENT_SERVER,
                "agent",
                "unclaimed",
                n,
            ));
        }
    }
}

#[derive(Default)]
struct Router {
    routes: HashMap<u64, mpsc::Sender<GuardReply>>,
    pending: HashMap<u64, Vec<KernelEvent>>,
    pending_len: usize,
    unclaimed: u64,
}

impl Router {
    async fn deliver(&mut self, event: KernelEvent) {
        let cgroup = event.cgroup_id;
        if let Some(tx) = self.routes.get(&cgroup) {
            if tx.send(GuardReply::Event { event }).await.is_ok() {
                return;
            }
            self.routes.remove(&cgroup);
            self.unclaimed += 1;
            return;
        }
        if self.pending_len < MAX_PENDING {
            self.pending.entry(cgroup).or_default().push(event);
            self.pending_len += 1;
        } else {
            self.unclaimed += 1;
        }
    }
}
