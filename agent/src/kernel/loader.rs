//! Loads mcp-guard's embedded eBPF object, attaches it to server cgroups and keeps the per-cgroup
//! maps in step with each server's policy.
//!
//! This module knows cgroups, addresses, ports and paths; it does not know JSON-RPC or policy
//! files: callers hand it a plain [`ServerSpec`].
//!
//! One [`KernelGuard`] per agent process: it loads the programs once, attaches the syscall
//! tracepoints host-wide (they return at once for unguarded cgroups) and the egress programs to
//! each server's cgroup. [`KernelGuard::add_server`] fills the maps for one server and returns a
//! [`ServerHandle`] that empties them again when dropped.
//!
//! A standalone `exec` owns its copy: everything is detached when it exits. The agent loads with
//! [`KernelGuard::load_pinned`]: maps, programs and every attachment are pinned on bpffs, so
//! servers stay enforced while the agent restarts, and the next agent takes the same maps (and
//! the events queued in the ring buffer meanwhile) over; [`KernelGuard::adopt_server`] gives it
//! the handle of a server guarded before it started.

use std::{
    collections::{BTreeMap, BTreeSet},
    fs::File,
    os::unix::fs::MetadataExt as _,
    path::{Path, PathBuf},
    sync::{Arc, Mutex, MutexGuard},
};

use aya::{
    Ebpf, EbpfLoader,
    maps::{HashMap, LpmTrie, MapData, PerCpuArray, lpm_trie::Key},
    programs::{
        BtfTracePoint, CgroupAttachMode, CgroupSockAddr,
        links::{FdLink, PinnedLink},
    },
};
use ipnet::IpNet;
use mcp_guard_ebpf::{
    BindPorts, CGROUP_PREFIX_BITS, GUARD_FLAG_KILL_SENSITIVE, GUARD_FLAG_OBSERVE, GuardConfig,
    Ip4Key, Ip6Key, MAX_PORT_RANGES, NAME_LEN, NameKey, PATH_LEN, PathKey, PortRange, PortSet,
    UnixKey, drop_reason, maps, programs,
};
use tokio::sync::{mpsc, oneshot};

use super::{
    bind,
    events::{self, KernelEvent, Labels, ServerLabel},
    net_rule::NetRule,
    program_load::{self, EGRESS_PROGRAMS, TRACE_PROGRAMS},
    resolve::{self, NameResolver},
    ringbuf::RingReader,
    unix::{self, UnixPrograms},
};

/// The eBPF object built by `agent/build.rs` from `agent-ebpf`.
pub static EBPF_OBJECT: &[u8] =
    aya::include_bytes_aligned!(concat!(env!("OUT_DIR"), "/mcp-guard-ebpf"));

/// Every program of the object by name (what the kernel's program info reports).
pub const PROGRAM_NAMES: [&str; 10] = [
    programs::CONNECT4,
    programs::CONNECT6,
    programs::SENDMSG4,
    programs::SENDMSG6,
    programs::BIND4,
    programs::BIND6,
    programs::CONNECT_UNIX,
    programs::SENDMSG_UNIX,
    programs::SYS_ENTER,
    programs::SYS_EXIT,
];

/// The maps pinned in the agent's bpffs directory: enforcement state of live servers, the event
/// ring buffer (what was queued while no agent ran) and the drop counters. The programs' scratch
/// and pairing maps are private to each load.
const PINNED_MAPS: [&str; 9] = [
    maps::GUARDED,
    maps::ALLOW_V4,
    maps::ALLOW_V6,
    maps::BIND_PORTS,
    maps::SENSITIVE,
    maps::SENSITIVE_NAMES,
    maps::ALLOW_UNIX,
    maps::EVENTS,
    maps::DROPS,
];

/// How many events may wait in the channel before the reader stops draining the ring buffer
/// (and the kernel starts counting `ringbuf_full` drops).
const EVENT_CHANNEL: usize = 65536;

/// Where a server may connect: a network, or a host name resolved and kept fresh.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub enum Destination {
    /// A network (a single host is a /32 or /128).
    Net(IpNet),
    /// A DNS name, resolved at launch and re-resolved as its records expire.
    Host(String),
}

/// One allowed destination with an inclusive port range.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct EgressRule {
    /// Where.
    pub dest: Destination,
    /// Lowest allowed port.
    pub port_lo: u16,
    /// Highest allowed port.
    pub port_hi: u16,
}

/// A sensitive path, already `~`-expanded and absolute. The kernel matches the path string a
/// process passes to open: absolute as given, and relative when it names the path from one of
/// its ancestors (see `relative_tails`); not through `..`, symlinks or a cwd inside it.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub enum SensitivePath {
    /// Exactly this path (relative: from its directory's parent or higher, `.aws/credentials`).
    Exact(PathBuf),
    /// This directory and everything below it (relative: `.ssh/...` and up).
    Under(PathBuf),
    /// A file of this name in any directory (`**/.env` → `.env`), matched on the last
    /// component of the path as the process passed it (relative paths included).
    Name(String),
}

/// What the kernel enforces and reports for one server.
#[derive(Clone, Debug, Default, serde::Serialize, serde::Deserialize)]
pub struct ServerSpec {
    /// The server's name (echoed in events).
    pub server: String,
    /// The session id (echoed in events).
    pub session: String,
    /// Report egress verdicts instead of enforcing them.
    pub observe: bool,
    /// Allowed destinations; everything else is denied (unless `observe`).
    pub egress: Vec<EgressRule>,
    /// Paths whose open attempt is fatal when `kill_on_sensitive` (even with `observe`).
    pub sensitive: Vec<SensitivePath>,
    /// SIGKILL a process of the server at its first attempt to open a sensitive path.
    pub kill_on_sensitive: bool,
    /// Unix sockets the server may connect or send to: absolute paths and `@abstract` names;
    /// every other one is denied (unless `observe`).
    #[serde(default)]
    pub unix: Vec<String>,
    /// Guard the server even when this kernel cannot run the unix programs (observe, or a
    /// policy that accepts degraded enforcement); otherwise that refuses the guard.
    #[serde(default)]
    pub unix_optional: bool,
    /// The TCP ports (inclusive ranges) the server may bind; `None`: any. Judged by the bind
    /// programs (the launcher also gives them to landlock where it has TCP rules).
    #[serde(default)]
    pub tcp_bind: Option<Vec<(u16, u16)>>,
}

pub use super::error::KernelError;

/// The maps userspace writes, shared by the guard, its server handles and their name refreshers.
pub(crate) struct Maps {
    guarded: HashMap<MapData, u64, GuardConfig>,
    v4: LpmTrie<MapData, Ip4Key, PortSet>,
    v6: LpmTrie<MapData, Ip6Key, PortSet>,
    sensitive: LpmTrie<MapData, PathKey, u32>,
    sensitive_names: HashMap<MapData, NameKey, u32>,
    /// `None` in the pinned maps of a build from before the unix programs.
    unix: Option<HashMap<MapData, UnixKey, u32>>,
    /// `None` in the pinned maps of a build from before the bind programs.
    bind: Option<HashMap<MapData, u64, BindPorts>>,
}

/// The allowlist keys one server has in the maps, so they can be updated and removed exactly.
#[derive(Default)]
pub(crate) struct Installed {
    v4: BTreeSet<(u32, [u8; 4])>,
    v6: BTreeSet<(u32, [u8; 16])>,
}

/// The loaded eBPF object: programs verified, tracepoints attached, maps created.
pub struct KernelGuard {
    ebpf: Mutex<Ebpf>,
    maps: Arc<Mutex<Maps>>,
    drops: PerCpuArray<MapData, u64>,
    ring: Mutex<Option<RingReader>>,
    labels: Labels,
    tx: mpsc::Sender<KernelEvent>,
    rx: Mutex<Option<mpsc::Receiver<KernelEvent>>>,
    flush: Mutex<Option<mpsc::UnboundedSender<oneshot::Sender<()>>>>,
    next_session: Mutex<u32>,
    /// Cgroups the egress programs are attached to; shared with the handles, which remove
    /// their cgroup (an inode number, which a later cgroup may get again).
    attached: Arc<Mutex<BTreeSet<u64>>>,
    /// Where objects are pinned (the agent's versioned bpffs directory); `None`: owned by this
    /// process only.
    pins: Option<PathBuf>,
    /// The unix programs, or why this kernel cannot run them.
    unix: Result<UnixPrograms, String>,
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    // A panic while holding one of these locks leaves plain map handles behind: still usable.
    m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

/// The event ring buffer, mapped for reading.
fn take_ring(ebpf: &mut Ebpf) -> Result<RingReader, KernelError> {
    let name = maps::EVENTS;
    match ebpf.take_map(name).ok_or(KernelError::MissingMap(name))? {
        aya::maps::Map::RingBuf(data) => RingReader::new(data).map_err(|e| {
            KernelError::Io(std::io::Error::new(
                e.kind(),
                format!("mapping the event ring buffer: {e}"),
            ))
        }),
        _ => Err(KernelError::MissingMap(name)),
    }
}

fn take_map<T>(ebpf: &mut Ebpf, name: &'static str) -> Result<T, KernelError>
where
    T: TryFrom<aya::maps::Map, Error = aya::maps::MapError>,
{
    let map = ebpf.take_map(name).ok_or(KernelError::MissingMap(name))?;
    T::try_from(map).map_err(|source| KernelError::Map { name, source })
}

fn map_err(name: &'static str) -> impl Fn(aya::maps::MapError) -> KernelError {
    move |source| KernelError::Map { name, source }
}

impl KernelGuard {
    /// Loads the embedded object into the kernel and attaches the syscall tracepoints; all of it
    /// is detached and freed when the guard is dropped.
    pub fn load() -> Result<Self, KernelError> {
        Self::load_with(None)
    }

    /// Loads the object with its maps, programs and attachments pinned below `base` (on bpffs,
    /// mounted at /sys/fs/bpf when it is not yet): in `base/<object hash>/`, so a different
    /// build never reuses maps of another layout. Maps pinned by an earlier agent with the same
    /// object are reused with their contents: live servers stay guarded and their queued events
    /// are read. The new tracepoints replace the old ones (attached first, then the old
    /// detached: a moment of duplicate events, never a gap).
    pub fn load_pinned(base: &Path) -> Result<Self, KernelError> {
        let dir = pin_dir(base)?;
        Self::load_with(Some(dir))
    }

    fn load_with(pins: Option<PathBuf>) -> Result<Self, KernelError> {
        let btf = program_load::PendingBtf::start();
        let mut loader = EbpfLoader::new();
        if let Some(dir) = &pins {
            for name in PINNED_MAPS {
                loader.map_pin_path(name, dir.join("maps").join(name));
            }
        }
        let mut ebpf = loader.load(EBPF_OBJECT)?;
        // Before any map is taken out of `ebpf`: they are relocated against its maps.
        let unix = UnixPrograms::load(&mut ebpf, EBPF_OBJECT);
        match (&unix, &pins) {
            (Ok(progs), Some(dir)) => progs.pin_programs(dir).map_err(|why| KernelError::Pin {
                path: dir.display().to_string(),
                why,
            })?,
            (Err(why), _) => tracing::warn!("unix socket programs unavailable: {why}"),
            _ => {}
        }
        program_load::load_programs(&mut ebpf, &btf.wait()?)?;
        for name in EGRESS_PROGRAMS {
            let program: &mut CgroupSockAddr = ebpf
                .program_mut(name)
                .ok_or(KernelError::MissingProgram(name))?
                .try_into()
                .map_err(|source| KernelError::Program { name, source })?;
            if let Some(dir) = &pins {
                replace_pin(&dir.join(format!("prog_{name}")), |p| program.pin(p))?;
            }
        }
        for (name, _) in TRACE_PROGRAMS {
            let program: &mut BtfTracePoint = ebpf
                .program_mut(name)
                .ok_or(KernelError::MissingProgram(name))?
                .try_into()
                .map_err(|source| KernelError::Program { name, source })?;
            let link = program
                .attach()
                .map_err(|source| KernelError::Program { name, source })?;
            if let Some(dir) = &pins {
                replace_pin(&dir.join(format!("prog_{name}")), |p| program.pin(p))?;
                // Pinned, the attachment outlives this process; unpinned, it lives as long as
                // `ebpf`. The programs filter to guarded cgroups either way.
                let link: FdLink = program
                    .take_link(link)
                    .map_err(|source| KernelError::Program { name, source })?
                    .into();
                replace_pin(&dir.join(format!("link_{name}")), |p| link.pin(p).map(drop))?;
            }
        }
        let maps = Maps {
            guarded: take_map(&mut ebpf, maps::GUARDED)?,
            v4: take_map(&mut ebpf, maps::ALLOW_V4)?,
            v6: take_map(&mut ebpf, maps::ALLOW_V6)?,
            sensitive: take_map(&mut ebpf, maps::SENSITIVE)?,
            sensitive_names: take_map(&mut ebpf, maps::SENSITIVE_NAMES)?,
            unix: Some(take_map(&mut ebpf, maps::ALLOW_UNIX)?),
            bind: Some(take_map(&mut ebpf, maps::BIND_PORTS)?),
        };
        // Session indexes go on from the highest a pinned map still holds.
        let next_session = maps
            .guarded
            .iter()
            .filter_map(Result::ok)
            .map(|(_, config)| config.session)
            .max()
            .unwrap_or(0);
        let drops = take_map(&mut ebpf, maps::DROPS)?;
        let ring = take_ring(&mut ebpf)?;
        let (tx, rx) = mpsc::channel(EVENT_CHANNEL);
        Ok(Self {
            ebpf: Mutex::new(ebpf),
            maps: Arc::new(Mutex::new(maps)),
            drops,
            ring: Mutex::new(Some(ring)),
            labels: Labels::default(),
            tx,
            rx: Mutex::new(Some(rx)),
            flush: Mutex::new(None),
            next_session: Mutex::new(next_session),
            attached: Arc::default(),
            pins,
            unix,
        })
    }

    /// `Ok` when the unix programs run here (every guarded server gets them), else why not.
    pub fn unix_status(&self) -> Result<(), String> {
        self.unix.as_ref().map(drop).map_err(Clone::clone)
    }

    /// Refuses a spec that needs the unix programs where they do not run, and one whose
    /// sockets the kernel cannot match; the keys to install otherwise.
    fn unix_keys(&self, cgroup_id: u64, spec: &ServerSpec) -> Result<Vec<UnixKey>, KernelError> {
        if let Err(why) = &self.unix
            && !spec.unix_optional
        {
            return Err(KernelError::UnixUnavailable(why.clone()));
        }
        spec.unix
            .iter()
            .map(|s| unix::key(cgroup_id, s).map_err(KernelError::UnixSocket))
            .collect()
    }

    /// The server cgroups guarded in the (pinned) maps: after a restart, those an earlier agent
    /// guarded, to adopt or to forget.
    pub fn guarded_cgroups(&self) -> Vec<u64> {
        let maps = lock(&self.maps);
        maps.guarded
            .iter()
            .filter_map(Result::ok)
            .filter(|(id, config)| config.rules == *id)
            .map(|(id, _)| id)
            .collect()
    }

    /// Removes everything the maps and pins hold for the server cgroup `cgroup_id` (its members,
    /// allowlist, sensitive paths and attachments): for a server whose cgroup is gone and that
    /// nobody adopted.
    pub fn forget(&self, cgroup_id: u64) {
        remove_server(&mut lock(&self.maps), cgroup_id);
        if let Some(dir) = self.cgroup_pins(cgroup_id) {
            let _ = std::fs::remove_dir_all(dir);
        }
        lock(&self.attached).remove(&cgroup_id);
    }

    /// Takes over a server that another build's programs guard (the agent was upgraded while it
    /// ran): guards it with this build's programs first (both judge alike meanwhile), then
    /// removes it from the old build's maps and pins, and reads what the old ring buffer holds
    /// (records of the shared layout; one that does not parse is dropped). `None` when no other
    /// build guards it. The old build's directory goes once it guards nothing.
    pub async fn migrate_server(
        &self,
        cgroup_dir: &Path,
        spec: ServerSpec,
    ) -> Result<Option<ServerHandle>, KernelError> {
        let id = guarded_id(cgroup_dir)?;
        let Some(current) = &self.pins else {
            return Ok(None);
        };
        let Some(base) = current.parent() else {
            return Ok(None);
        };
        for old in std::fs::read_dir(base).into_iter().flatten().flatten() {
            let old = old.path();
            if old == *current {
                continue;
            }
            let Ok(mut maps) = pinned_maps(&old) else {
                continue;
            };
            let Ok(config) = maps.guarded.get(&id, 0) else {
                continue;
            };
            let members: Vec<u64> = maps
                .guarded
                .iter()
                .filter_map(Result::ok)
                .filter(|(m, c)| c.rules == id && *m != id)
                .map(|(m, _)| m)
                .collect();
            let mut handle = self.add_server(cgroup_dir, spec).await?;
            for member in members {
                handle.add_member_id(member)?;
            }
            remove_server(&mut maps, id);
            drop(maps);
            self.drain_ring_of(&old).await;
            let _ = std::fs::remove_dir_all(old.join("cgroups").join(id.to_string()));
            if !guards_anything(&old) {
                let _ = std::fs::remove_dir_all(&old);
            }
            tracing::info!(
                "cgroup {id} moved from the programs in {} (session index {}) to this build's",
                old.display(),
                config.session
            );
            return Ok(Some(handle));
        }
        Ok(None)
    }

    /// Moves what another build's ring buffer holds onto this guard's event channel (its
    /// sessions' events since the last agent stopped reading it).
    async fn drain_ring_of(&self, dir: &Path) {
        let Ok(data) = MapData::from_pin(dir.join("maps").join(maps::EVENTS)) else {
            return;
        };
        let Ok(mut ring) = RingReader::new(data) else {
            return;
        };
        let mut batch = Vec::new();
        loop {
            let emptied = events::drain(&mut ring, &self.labels, &mut batch);
            for event in batch.drain(..) {
                let _ = self.tx.send(event).await;
            }
            if emptied {
                return;
            }
        }
    }

    /// Removes other builds' pin directories that guard nothing any more (agent only).
    pub fn prune_other_versions(&self) {
        if let Some((current, base)) = self.pins.as_ref().and_then(|d| Some((d, d.parent()?))) {
            prune_versions(base, current);
        }
    }

    /// Where the egress attachments of `cgroup_id` are pinned (agent only).
    fn cgroup_pins(&self, cgroup_id: u64) -> Option<PathBuf> {
        self.pins
            .as_ref()
            .map(|dir| dir.join("cgroups").join(cgroup_id.to_string()))
    }

    /// Takes the event stream: starts the ring buffer reader on the current tokio runtime and
    /// returns the channel of typed events (kernel records and `Resolve` events). Once only.
    pub fn events(&self) -> Result<mpsc::Receiver<KernelEvent>, KernelError> {
        let ring = lock(&self.ring).take().ok_or(KernelError::EventsTaken)?;
        let rx = lock(&self.rx).take().ok_or(KernelError::EventsTaken)?;
        let (flush, flushes) = mpsc::unbounded_channel();
        events::spawn_reader(ring, self.labels.clone(), self.tx.clone(), flushes)?;
        *lock(&self.flush) = Some(flush);
        Ok(rx)
    }

    /// Returns once every event already in the ring buffer is on the [`events`](Self::events)
    /// channel. After a server's processes are gone this is all it will ever produce, so a
    /// session can be closed without waiting for stragglers. Immediate before `events()`.
    pub async fn flush(&self) {
        let sender = lock(&self.flush).clone();
        if let Some(sender) = sender {
            let (reply, done) = oneshot::channel();
            if sender.send(reply).is_ok() {
                let _ = done.await;
            }
        }
    }

    /// Events the kernel could not deliver whole, by reason (`ringbuf_full`, `path_read_failed`,
    /// `argv_read_failed`), summed over CPUs since load.
    pub fn dropped(&self) -> Result<BTreeMap<&'static str, u64>, KernelError> {
        let mut out = BTreeMap::new();
        for (i, name) in (0u32..).zip(drop_reason::NAMES.iter()) {
            let values = self.drops.get(&i, 0).map_err(map_err(maps::DROPS))?;
            out.insert(*name, values.iter().sum());
        }
        Ok(out)
    }

    /// Total run time and run count of each syscall tracing program since load, from the
    /// kernel's BPF statistics: zero unless they are on (`aya::sys::enable_stats`). What the
    /// benchmark reads to price one guarded syscall without CPU counters.
    pub fn trace_program_stats(&self) -> Vec<(&'static str, std::time::Duration, u64)> {
        let ebpf = lock(&self.ebpf);
        TRACE_PROGRAMS
            .iter()
            .filter_map(|(name, _)| {
                let info = ebpf.program(name)?.info().ok()?;
                Some((*name, info.run_time(), info.run_count()))
            })
            .collect()
    }

    /// Guards the cgroup v2 directory `cgroup_dir` with `spec`: attaches the egress programs
    /// (once per cgroup), resolves host names, fills the maps and starts keeping names fresh.
    ///
    /// Call it before the server's process enters the cgroup. Needs a tokio runtime when
    /// `spec.egress` names hosts.
    pub async fn add_server(
        &self,
        cgroup_dir: &Path,
        spec: ServerSpec,
    ) -> Result<ServerHandle, KernelError> {
        let resolver = resolver_for(&spec)?;
        self.add_server_with(cgroup_dir, spec, resolver).await
    }

    /// [`Self::add_server`] with a given resolver (tests point it at their own hosts file).
    pub async fn add_server_with(
        &self,
        cgroup_dir: &Path,
        spec: ServerSpec,
        resolver: Option<NameResolver>,
    ) -> Result<ServerHandle, KernelError> {
        let cgroup_id = guarded_id(cgroup_dir)?;
        // Checked before anything is written: a bad path changes nothing.
        sensitive_keys(cgroup_id, &spec.sensitive)?;
        self.unix_keys(cgroup_id, &spec)?;
        if lock(&self.maps).guarded.get(&cgroup_id, 0).is_ok() {
            return Err(KernelError::AlreadyGuarded(cgroup_id));
        }
        self.attach(cgroup_dir, cgroup_id)?;
        let session = {
            let mut next = lock(&self.next_session);
            *next = next.wrapping_add(1);
            *next
        };
        let fresh = Adopted {
            session,
            installed: Installed::default(),
            members: Vec::new(),
        };
        self.guard(cgroup_id, spec, resolver, fresh).await
    }

    /// Takes over a server an earlier agent guarded (its entries are in the pinned maps and its
    /// egress programs still attached): returns its handle, with the allowlist, sensitive paths
    /// and name refreshes brought back in line with `spec`. Nothing is detached meanwhile.
    pub async fn adopt_server(
        &self,
        cgroup_dir: &Path,
        spec: ServerSpec,
    ) -> Result<ServerHandle, KernelError> {
        let resolver = resolver_for(&spec)?;
        let cgroup_id = guarded_id(cgroup_dir)?;
        sensitive_keys(cgroup_id, &spec.sensitive)?;
        self.unix_keys(cgroup_id, &spec)?;
        let adopted = {
            let maps = lock(&self.maps);
            let config = maps
                .guarded
                .get(&cgroup_id, 0)
                .map_err(|_| KernelError::NotGuarded(cgroup_id))?;
            let prefix = cgroup_id.to_be_bytes();
            let mut installed = Installed::default();
            for key in maps.v4.keys().filter_map(Result::ok) {
                let data = key.data();
                if data.cgroup == prefix {
                    let bits = key.prefix_len().saturating_sub(CGROUP_PREFIX_BITS);
                    installed.v4.insert((bits, data.addr));
                }
            }
            for key in maps.v6.keys().filter_map(Result::ok) {
                let data = key.data();
                if data.cgroup == prefix {
                    let bits = key.prefix_len().saturating_sub(CGROUP_PREFIX_BITS);
                    installed.v6.insert((bits, data.addr));
                }
            }
            let members = maps
                .guarded
                .iter()
                .filter_map(Result::ok)
                .filter(|(id, c)| c.rules == cgroup_id && *id != cgroup_id)
                .map(|(id, _)| id)
                .collect();
            Adopted {
                session: config.session,
                installed,
                members,
            }
        };
        let pinned = self.cgroup_pins(cgroup_id).is_some_and(|d| d.is_dir());
        if pinned {
            lock(&self.attached).insert(cgroup_id);
        } else {
            self.attach(cgroup_dir, cgroup_id)?;
        }
        self.guard(cgroup_id, spec, resolver, adopted).await
    }

    /// Fills the maps for one server (new or adopted) and returns its handle; the `GUARDED`
    /// entry is written last, so the programs judge the cgroup only once its allowlist is whole.
    async fn guard(
        &self,
        cgroup_id: u64,
        spec: ServerSpec,
        resolver: Option<NameResolver>,
        adopted: Adopted,
    ) -> Result<ServerHandle, KernelError> {
        let (sensitive, names) = sensitive_keys(cgroup_id, &spec.sensitive)?;
        let unix_keys = self.unix_keys(cgroup_id, &spec)?;
        let Adopted {
            session,
            installed,
            members,
        } = adopted;
        let label = ServerLabel {
            server: spec.server.as_str().into(),
            session: spec.session.as_str().into(),
        };
        self.labels.insert(session, label.clone());
        let installed = Arc::new(Mutex::new(installed));
        let mut handle = ServerHandle {
            maps: self.maps.clone(),
            cgroup_id,
            installed: installed.clone(),
            sensitive: sensitive.clone(),
            names: names.clone(),
            unix: unix_keys.clone(),
            refresher: None,
            config: GuardConfig::default(),
            members,
            pins: self.cgroup_pins(cgroup_id),
            attached: self.attached.clone(),
            kept: false,
        };
        // From here on, dropping `handle` undoes whatever was installed.
        {
            let mut maps = lock(&self.maps);
            for key in &sensitive {
                maps.sensitive
                    .insert(key, 1, 0)
                    .map_err(map_err(maps::SENSITIVE))?;
            }
            for key in names {
                maps.sensitive_names
                    .insert(key, 1, 0)
                    .map_err(map_err(maps::SENSITIVE_NAMES))?;
            }
            if let Some(map) = maps.unix.as_mut() {
                for key in &unix_keys {
                    map.insert(key, 1, 0).map_err(map_err(maps::ALLOW_UNIX))?;
                }
            }
            bind::install(maps.bind.as_mut(), cgroup_id, spec.tcp_bind.as_deref())?;
        }
        let (nets, hosts) = split_rules(&spec.egress);
        match resolver {
            Some(resolver) if !hosts.is_empty() => {
                let mut refresher = resolve::Refresher::new(
                    resolver,
                    hosts,
                    nets,
                    self.tx.clone(),
                    cgroup_id,
                    label,
                );
                let rules = refresher.refresh().await;
                install_rules(&self.maps, cgroup_id, &installed, &rules)?;
                let maps = self.maps.clone();
                let inst = installed.clone();
                handle.refresher = Some(tokio::spawn(async move {
                    refresher
                        .run(move |rules| install_rules(&maps, cgroup_id, &inst, rules))
                        .await;
                }));
            }
            None if !hosts.is_empty() => {
                return Err(resolve::ResolveError::NoResolver.into());
            }
            _ => install_rules(&self.maps, cgroup_id, &installed, &nets)?,
        }
        let config = GuardConfig {
            flags: if spec.observe { GUARD_FLAG_OBSERVE } else { 0 }
                | if spec.kill_on_sensitive {
                    GUARD_FLAG_KILL_SENSITIVE
                } else {
                    0
                },
            session,
            rules: cgroup_id,
        };
        handle.config = config;
        lock(&self.maps)
            .guarded
            .insert(cgroup_id, config, 0)
            .map_err(map_err(maps::GUARDED))?;
        Ok(handle)
    }

    /// Attaches the egress programs to a cgroup (once). They stay until the cgroup is removed,
    /// or, pinned (agent), until the server's handle is dropped.
    fn attach(&self, cgroup_dir: &Path, cgroup_id: u64) -> Result<(), KernelError> {
        let mut attached = lock(&self.attached);
        if attached.contains(&cgroup_id) {
            return Ok(());
        }
        let cgroup = File::open(cgroup_dir).map_err(|source| KernelError::Cgroup {
            path: cgroup_dir.display().to_string(),
            source,
        })?;
        let pins = self.cgroup_pins(cgroup_id);
        if let Some(dir) = &pins {
            std::fs::create_dir_all(dir).map_err(|e| pin_error(dir, &e))?;
        }
        let mut ebpf = lock(&self.ebpf);
        for name in EGRESS_PROGRAMS {
            let program: &mut CgroupSockAddr = ebpf
                .program_mut(name)
                .ok_or(KernelError::MissingProgram(name))?
                .try_into()
                .map_err(|source| KernelError::Program { name, source })?;
            // On 5.7+ aya attaches through a bpf_link, which always coexists with other
            // programs; link_create refuses the legacy BPF_F_ALLOW_MULTI flag (EINVAL).
            let link = program
                .attach(&cgroup, CgroupAttachMode::Single)
                .map_err(|source| KernelError::Program { name, source })?;
            if let Some(dir) = &pins {
                let link = program
                    .take_link(link)
                    .map_err(|source| KernelError::Program { name, source })?;
                let link = FdLink::try_from(link).map_err(|e| KernelError::Pin {
                    path: dir.display().to_string(),
                    why: format!("{name}: the cgroup attachment is not a bpf_link: {e}"),
                })?;
                replace_pin(&dir.join(name), |p| link.pin(p).map(drop))?;
            }
        }
        drop(ebpf);
        if let Ok(progs) = &self.unix {
            use std::os::fd::AsFd as _;
            progs
                .attach(cgroup.as_fd(), pins.as_deref())
                .map_err(KernelError::UnixUnavailable)?;
        }
        attached.insert(cgroup_id);
        Ok(())
    }
}

/// The system resolver when `spec` names hosts.
fn resolver_for(spec: &ServerSpec) -> Result<Option<NameResolver>, KernelError> {
    let names_hosts = spec
        .egress
        .iter()
        .any(|r| matches!(r.dest, Destination::Host(_)));
    Ok(if names_hosts {
        Some(NameResolver::system()?)
    } else {
        None
    })
}

/// What a server's handle starts from: fresh (nothing installed) or adopted from pinned maps.
struct Adopted {
    session: u32,
    installed: Installed,
    members: Vec<u64>,
}

/// The versioned pin directory below `base` (created), mounting bpffs at /sys/fs/bpf first when
/// `base` is below it and nothing is mounted there (systemd usually mounts it; not every host).
/// Directories of other builds are removed once no server in them is guarded any more.
fn pin_dir(base: &Path) -> Result<PathBuf, KernelError> {
    use sha2::Digest as _;
    let root = Path::new("/sys/fs/bpf");
    if base.starts_with(root) && !on_bpffs(root) {
        nix::mount::mount(
            Some("bpf"),
            root,
            Some("bpf"),
            nix::mount::MsFlags::MS_NOSUID
                | nix::mount::MsFlags::MS_NODEV
                | nix::mount::MsFlags::MS_NOEXEC,
            None::<&str>,
        )
        .map_err(|e| pin_error(root, &std::io::Error::from(e)))?;
    }
    std::fs::create_dir_all(base).map_err(|e| pin_error(base, &e))?;
    if !on_bpffs(base) {
        return Err(KernelError::Pin {
            path: base.display().to_string(),
            why: "not on a BPF filesystem (mount -t bpf bpf /sys/fs/bpf)".into(),
        });
    }
    let digest = sha2::Sha256::digest(EBPF_OBJECT);
    let version = hex::encode(&digest[..8]);
    let dir = base.join(&version);
    for sub in ["maps", "cgroups"] {
        std::fs::create_dir_all(dir.join(sub)).map_err(|e| pin_error(&dir, &e))?;
    }
    prune_versions(base, &dir);
    Ok(dir)
}

/// Removes the directories of other builds below `base` that guard nothing any more (their
/// tracepoints and programs go with them).
fn prune_versions(base: &Path, current: &Path) {
    if let Ok(entries) = std::fs::read_dir(base) {
        for other in entries.flatten().map(|e| e.path()) {
            if other != current && other.is_dir() && !guards_anything(&other) {
                let _ = std::fs::remove_dir_all(&other);
            }
        }
    }
}

fn on_bpffs(path: &Path) -> bool {
    nix::sys::statfs::statfs(path)
        .is_ok_and(|s| s.filesystem_type() == nix::sys::statfs::BPF_FS_MAGIC)
}

/// Removes a server cgroup and its members from `maps`: guard entries, allowlist, sensitive
/// paths and names (every key carries the cgroup id).
fn remove_server(maps: &mut Maps, cgroup_id: u64) {
    let members: Vec<u64> = maps
        .guarded
        .iter()
        .filter_map(Result::ok)
        .filter(|(_, config)| config.rules == cgroup_id)
        .map(|(id, _)| id)
        .collect();
    for id in members {
        let _ = maps.guarded.remove(&id);
    }
    let prefix = cgroup_id.to_be_bytes();
    let v4: Vec<_> = maps.v4.keys().filter_map(Result::ok).collect();
    for key in v4.iter().filter(|k| k.data().cgroup == prefix) {
        let _ = maps.v4.remove(key);
    }
    let v6: Vec<_> = maps.v6.keys().filter_map(Result::ok).collect();
    for key in v6.iter().filter(|k| k.data().cgroup == prefix) {
        let _ = maps.v6.remove(key);
    }
    let paths: Vec<_> = maps.sensitive.keys().filter_map(Result::ok).collect();
    for key in paths.iter().filter(|k| k.data().cgroup == prefix) {
        let _ = maps.sensitive.remove(key);
    }
    let names: Vec<_> = maps.sensitive_names.keys().filter_map(Result::ok).collect();
    for key in names.iter().filter(|k| k.cgroup == prefix) {
        let _ = maps.sensitive_names.remove(key);
    }
    if let Some(map) = maps.unix.as_mut() {
        let keys: Vec<_> = map.keys().filter_map(Result::ok).collect();
        for key in keys.iter().filter(|k| k.cgroup == cgroup_id) {
            let _ = map.remove(key);
        }
    }
    bind::remove(maps.bind.as_mut(), cgroup_id);
}

/// The maps pinned in a build's directory (another build's, for a migration).
fn pinned_maps(dir: &Path) -> Result<Maps, KernelError> {
    fn open<T>(dir: &Path, name: &'static str) -> Result<T, KernelError>
    where
        T: TryFrom<aya::maps::Map, Error = aya::maps::MapError>,
    {
        let data = MapData::from_pin(dir.join("maps").join(name)).map_err(map_err(name))?;
        let map = match name {
            maps::ALLOW_V4 | maps::ALLOW_V6 | maps::SENSITIVE => aya::maps::Map::LpmTrie(data),
            _ => aya::maps::Map::HashMap(data),
        };
        T::try_from(map).map_err(map_err(name))
    }
    Ok(Maps {
        guarded: open(dir, maps::GUARDED)?,
        v4: open(dir, maps::ALLOW_V4)?,
        v6: open(dir, maps::ALLOW_V6)?,
        sensitive: open(dir, maps::SENSITIVE)?,
        sensitive_names: open(dir, maps::SENSITIVE_NAMES)?,
        // A build from before the unix programs has none.
        unix: open(dir, maps::ALLOW_UNIX).ok(),
        bind: open(dir, maps::BIND_PORTS).ok(),
    })
}

/// Whether the pinned `GUARDED` map of another build's directory still guards a server (its
/// programs then still enforce; the directory stays until that server ends).
fn guards_anything(dir: &Path) -> bool {
    let Ok(data) = MapData::from_pin(dir.join("maps").join(maps::GUARDED)) else {
        return false;
    };
    HashMap::<_, u64, GuardConfig>::try_from(aya::maps::Map::HashMap(data))
        .is_ok_and(|m| m.keys().next().is_some())
}

fn pin_error(path: &Path, e: &std::io::Error) -> KernelError {
    KernelError::Pin {
        path: path.display().to_string(),
        why: e.to_string(),
    }
}

/// Pins a new object at `path` in place of whatever an earlier load pinned there. An old link
/// is held open until the new object is pinned, so the attachment it stands for never lapses.
fn replace_pin(
    path: &Path,
    pin: impl FnOnce(&Path) -> Result<(), aya::pin::PinError>,
) -> Result<(), KernelError> {
    let old = if path.exists() {
        PinnedLink::from_pin(path).ok()
    } else {
        None
    };
    match std::fs::remove_file(path) {
        Ok(()) => {}
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => return Err(pin_error(path, &e)),
    }
    pin(path).map_err(|e| KernelError::Pin {
        path: path.display().to_string(),
        why: e.to_string(),
    })?;
    drop(old);
    Ok(())
}

/// One guarded server. Dropping it stops name refreshes and removes the server's map entries:
/// drop it only once the server's processes are gone (its cgroup is then unguarded).
pub struct ServerHandle {
    maps: Arc<Mutex<Maps>>,
    cgroup_id: u64,
    installed: Arc<Mutex<Installed>>,
    sensitive: Vec<Key<PathKey>>,
    names: Vec<NameKey>,
    unix: Vec<UnixKey>,
    refresher: Option<tokio::task::JoinHandle<()>>,
    config: GuardConfig,
    members: Vec<u64>,
    /// Where its egress attachments are pinned (agent): removed with the handle.
    pins: Option<PathBuf>,
    attached: Arc<Mutex<BTreeSet<u64>>>,
    /// Leave the maps and pins in place when dropped ([`ServerHandle::keep`]).
    kept: bool,
}

impl ServerHandle {
    /// The cgroup id events of this server carry.
    pub fn cgroup_id(&self) -> u64 {
        self.cgroup_id
    }

    /// Guards `member_dir`, a cgroup below the server's (a container's leaf), as part of this
    /// server: its tasks are judged by the server's rules and their events carry the server's
    /// cgroup id. Register it before anything runs in it: the syscall tracepoints only see
    /// registered cgroups (the egress programs also judge unregistered descendants). Undone
    /// when the handle is dropped.
    pub fn add_member(&mut self, member_dir: &Path) -> Result<u64, KernelError> {
        let id = guarded_id(member_dir)?;
        self.add_member_id(id)?;
        Ok(id)
    }

    /// [`Self::add_member`] for each of `member_dirs`; on failure the handle is dropped, which
    /// undoes the server's guard with the members added so far.
    pub fn with_members(mut self, member_dirs: &[PathBuf]) -> Result<Self, KernelError> {
        for dir in member_dirs {
            self.add_member(dir)?;
        }
        Ok(self)
    }

    fn add_member_id(&mut self, id: u64) -> Result<(), KernelError> {
        lock(&self.maps)
            .guarded
            .insert(id, self.config, 0)
            .map_err(map_err(maps::GUARDED))?;
        self.members.push(id);
        Ok(())
    }
}

impl ServerHandle {
    /// Lets go of the server without touching the kernel: its maps and pinned attachments stay
    /// and keep enforcing, for the next agent to adopt (the agent stopping or restarting).
    pub fn keep(mut self) {
        self.kept = true;
    }
}

impl Drop for ServerHandle {
    fn drop(&mut self) {
        if let Some(task) = self.refresher.take() {
            task.abort();
        }
        if self.kept {
            return;
        }
        let mut maps = lock(&self.maps);
        let _ = maps.guarded.remove(&self.cgroup_id);
        for id in &self.members {
            let _ = maps.guarded.remove(id);
        }
        let mut installed = lock(&self.installed);
        for (bits, addr) in std::mem::take(&mut installed.v4) {
            let _ = maps.v4.remove(&v4_key(self.cgroup_id, bits, addr));
        }
        for (bits, addr) in std::mem::take(&mut installed.v6) {
            let _ = maps.v6.remove(&v6_key(self.cgroup_id, bits, addr));
        }
        for key in &self.sensitive {
            let _ = maps.sensitive.remove(key);
        }
        for key in &self.names {
            let _ = maps.sensitive_names.remove(key);
        }
        if let Some(map) = maps.unix.as_mut() {
            for key in &self.unix {
                let _ = map.remove(key);
            }
        }
        bind::remove(maps.bind.as_mut(), self.cgroup_id);
        // Unpinned, the links are released: the programs leave the (usually gone) cgroup.
        if let Some(dir) = &self.pins {
            let _ = std::fs::remove_dir_all(dir);
        }
        drop(maps);
        lock(&self.attached).remove(&self.cgroup_id);
    }
}

/// [`cgroup_id`] as a [`KernelError`] naming the directory.
fn guarded_id(cgroup_dir: &Path) -> Result<u64, KernelError> {
    cgroup_id(cgroup_dir).map_err(|source| KernelError::Cgroup {
        path: cgroup_dir.display().to_string(),
        source,
    })
}

/// The id of a cgroup v2 directory: its inode number, as `bpf_get_current_cgroup_id` returns.
pub fn cgroup_id(cgroup_dir: &Path) -> std::io::Result<u64> {
    Ok(std::fs::metadata(cgroup_dir)?.ino())
}

/// Networks stay as they are; hosts go to the resolver with their ports.
fn split_rules(rules: &[EgressRule]) -> (Vec<NetRule>, Vec<(String, u16, u16)>) {
    let mut nets = Vec::new();
    let mut hosts = Vec::new();
    for r in rules {
        match &r.dest {
            Destination::Net(net) => nets.push(NetRule {
                net: *net,
                port_lo: r.port_lo,
                port_hi: r.port_hi,
            }),
            Destination::Host(name) => hosts.push((name.clone(), r.port_lo, r.port_hi)),
        }
    }
    (nets, hosts)
}

fn v4_key(cgroup_id: u64, bits: u32, addr: [u8; 4]) -> Key<Ip4Key> {
    Key::new(
        CGROUP_PREFIX_BITS + bits,
        Ip4Key {
            cgroup: cgroup_id.to_be_bytes(),
            addr,
        },
    )
}

fn v6_key(cgroup_id: u64, bits: u32, addr: [u8; 16]) -> Key<Ip6Key> {
    Key::new(
        CGROUP_PREFIX_BITS + bits,
        Ip6Key {
            cgroup: cgroup_id.to_be_bytes(),
            addr,
        },
    )
}

/// Makes the cgroup's allowlist equal `rules`: every new or changed entry is written first
/// (each write replaces its entry atomically), stale entries are removed after, so an address
/// allowed before and after is never denied in between.
pub(crate) fn install_rules(
    maps: &Mutex<Maps>,
    cgroup_id: u64,
    installed: &Mutex<Installed>,
    rules: &[NetRule],
) -> Result<(), KernelError> {
    let entries = allowlist_entries(rules)?;
    let mut maps = lock(maps);
    let mut installed = lock(installed);
    let mut v4 = BTreeSet::new();
    let mut v6 = BTreeSet::new();
    for (net, ports) in &entries {
        let bits = u32::from(net.prefix_len());
        match net {
            IpNet::V4(n) => {
                let addr = n.network().octets();
                maps.v4
                    .insert(&v4_key(cgroup_id, bits, addr), ports, 0)
                    .map_err(map_err(maps::ALLOW_V4))?;
                v4.insert((bits, addr));
            }
            IpNet::V6(n) => {
                let addr = n.network().octets();
                maps.v6
                    .insert(&v6_key(cgroup_id, bits, addr), ports, 0)
                    .map_err(map_err(maps::ALLOW_V6))?;
                v6.insert((bits, addr));
            }
        }
    }
    for &(bits, addr) in installed.v4.difference(&v4) {
        let _ = maps.v4.remove(&v4_key(cgroup_id, bits, addr));
    }
    for &(bits, addr) in installed.v6.difference(&v6) {
        let _ = maps.v6.remove(&v6_key(cgroup_id, bits, addr));
    }
    installed.v4 = v4;
    installed.v6 = v6;
    Ok(())
}

/// The `SENSITIVE` keys for a set of paths: exact paths with their NUL inside the prefix,
/// directories as a prefix ending in `/` plus the directory itself; and the `SENSITIVE_NAMES`
/// keys for bare file names.
fn sensitive_keys(
    cgroup_id: u64,
    paths: &[SensitivePath],
) -> Result<(Vec<Key<PathKey>>, Vec<NameKey>), KernelError> {
    use std::os::unix::ffi::OsStrExt as _;
    let mut names = Vec::new();
    for p in paths {
        if let SensitivePath::Name(name) = p {
            if name.is_empty() || name.contains('/') || name.len() >= NAME_LEN {
                return Err(KernelError::SensitivePath {
                    path: name.clone(),
                    why: "a file name must be non-empty, without '/', and under 64 bytes",
                });
            }
            let mut key = NameKey {
                cgroup: cgroup_id.to_be_bytes(),
                name: [0; NAME_LEN],
            };
            key.name[..name.len()].copy_from_slice(name.as_bytes());
            names.push(key);
        }
    }
    let mut keys = Vec::new();
    let mut push = |bytes: &[u8], with_nul: bool, shown: &Path| -> Result<(), KernelError> {
        let len = bytes.len() + usize::from(with_nul);
        if len > PATH_LEN {
            return Err(KernelError::SensitivePath {
                path: shown.display().to_string(),
                why: "longer than the 247 bytes the kernel matcher holds",
            });
        }
        let mut data = PathKey {
            cgroup: cgroup_id.to_be_bytes(),
            path: [0; PATH_LEN],
        };
        data.path[..bytes.len()].copy_from_slice(bytes);
        #[expect(
            clippy::cast_possible_truncation,
            reason = "the length is checked above: a few hundred bits"
        )]
        keys.push(Key::new(((8 + len) * 8) as u32, data));
        Ok(())
    };
    for p in paths {
        let (SensitivePath::Exact(path) | SensitivePath::Under(path)) = p else {
            continue;
        };
        if !path.is_absolute() {
            return Err(KernelError::SensitivePath {
                path: path.display().to_string(),
                why: "must be absolute (expand ~ first)",
            });
        }
        let bytes = path.as_os_str().as_bytes();
        match p {
            SensitivePath::Exact(_) => push(bytes, true, path)?,
            SensitivePath::Under(_) => {
                let trimmed = bytes.strip_suffix(b"/").unwrap_or(bytes);
                push(trimmed, true, path)?;
                let mut dir = trimmed.to_vec();
                dir.push(b'/');
                push(&dir, false, path)?;
            }
            SensitivePath::Name(_) => {}
        }
        for (tail, under) in relative_tails(p) {
            push(&tail, true, path)?;
            if under {
                let mut dir = tail;
                dir.push(b'/');
                push(&dir, false, path)?;
            }
        }
    }
    Ok((keys, names))
}

/// The relative spellings of a sensitive path that name it from one of its ancestors,
/// whatever the process's cwd or dirfd (a relative path that resolves to the sensitive one
/// without `..` or symlinks is one of these): for a directory `/h/u/.ssh`, `.ssh`, `u/.ssh` and
/// `h/u/.ssh` (each also as a prefix, `.ssh/...`); for a file `/h/u/.aws/credentials`, the
/// tails that still name its directory, `.aws/credentials` and up, not the bare file name
/// (that is `**/credentials`, which the policy can say when it means it). `true` marks a
/// directory's tails. A path with `.` or `..` components has none.
fn relative_tails(p: &SensitivePath) -> Vec<(Vec<u8>, bool)> {
    use std::{os::unix::ffi::OsStrExt as _, path::Component};
    let (path, under) = match p {
        SensitivePath::Exact(path) => (path, false),
        SensitivePath::Under(path) => (path, true),
        SensitivePath::Name(_) => return Vec::new(),
    };
    let mut names = Vec::new();
    for c in path.components() {
        match c {
            Component::RootDir => {}
            Component::Normal(name) => names.push(name.as_bytes()),
            _ => return Vec::new(),
        }
    }
    // A file's tails keep its directory; a directory's tails keep the directory.
    let min_names = if under { 1 } else { 2 };
    (0..names.len())
        .filter(|k| names.len() - k >= min_names)
        .map(|k| (names[k..].join(&b'/'), under))
        .collect()
}

/// Turns rules into LPM entries: each network carries the ports of every rule containing it, so
/// the kernel's longest-prefix match alone gives the full answer for an address.
fn allowlist_entries(rules: &[NetRule]) -> Result<Vec<(IpNet, PortSet)>, KernelError> {
    let mut nets: Vec<IpNet> = rules.iter().map(|r| r.net.trunc()).collect();
    nets.sort();
    nets.dedup();
    nets.into_iter()
        .map(|net| {
            let mut ranges: Vec<(u16, u16)> = rules
                .iter()
                .filter(|r| r.net.trunc().contains(&net))
                .map(|r| (r.port_lo, r.port_hi))
                .collect();
            let ranges = merge_ranges(&mut ranges);
            if ranges.len() > MAX_PORT_RANGES {
                return Err(KernelError::TooManyPortRanges {
                    net,
                    count: ranges.len(),
                });
            }
            let mut set = PortSet::default();
            for (slot, (lo, hi)) in set.ranges.iter_mut().zip(&ranges) {
                *slot = PortRange { lo: *lo, hi: *hi };
            }
            #[expect(
                clippy::cast_possible_truncation,
                reason = "at most MAX_PORT_RANGES, checked above"
            )]
            let len = ranges.len() as u32;
            set.len = len;
            Ok((net, set))
        })
        .collect()
}

/// Sorts and merges overlapping or adjacent inclusive ranges.
fn merge_ranges(ranges: &mut [(u16, u16)]) -> Vec<(u16, u16)> {
    ranges.sort_unstable();
    let mut merged: Vec<(u16, u16)> = Vec::with_capacity(ranges.len());
    for &(lo, hi) in ranges.iter() {
        match merged.last_mut() {
            Some(last) if u32::from(lo) <= u32::from(last.1) + 1 => last.1 = last.1.max(hi),
            _ => merged.push((lo, hi)),
        }
    }
    merged
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rule(net: &str, lo: u16, hi: u16) -> NetRule {
        NetRule {
            net: net.parse().expect("test net"),
            port_lo: lo,
            port_hi: hi,
        }
    }

    #[test]
    fn nested_networks_inherit_ports_of_the_wider_rule() {
        let rules = [rule("10.0.0.0/8", 443, 443), rule("10.1.0.0/16", 80, 80)];
        let entries = allowlist_entries(&rules).expect("entries");
        let inner = entries
            .iter()
            .find(|(n, _)| n.prefix_len() == 16)
            .expect("inner entry");
        assert!(inner.1.allows(443) && inner.1.allows(80) && !inner.1.allows(22));
        let outer = entries
            .iter()
            .find(|(n, _)| n.prefix_len() == 8)
            .expect("outer entry");
        assert!(outer.1.allows(443) && !outer.1.allows(80));
    }

    #[test]
    fn the_guard_can_be_shared_between_tasks() {
        fn shareable<T: Send + Sync>() {}
        shareable::<KernelGuard>();
        shareable::<ServerHandle>();
    }

    #[test]
    fn sensitive_paths_become_exact_prefix_and_name_keys() {
        let (keys, names) = sensitive_keys(
            7,
            &[
                SensitivePath::Exact("/root/.aws/credentials".into()),
                SensitivePath::Under("/root/.ssh/".into()),
                SensitivePath::Name(".env".into()),
            ],
        )
        .expect("valid paths");
        // Exact (with NUL), then its relative tails `root/.aws/credentials` and
        // `.aws/credentials` (with NUL); the directory itself (with NUL) and its prefix, then
        // its tails `root/.ssh` and `.ssh`, each with NUL and as a prefix.
        let shown: Vec<(String, u32)> = keys
            .iter()
            .map(|k| {
                let bits = k.prefix_len();
                let len = (bits / 8 - 8) as usize;
                let data = k.data();
                (
                    String::from_utf8_lossy(&data.path[..len]).into_owned(),
                    bits,
                )
            })
            .collect();
        let want = [
            ("/root/.aws/credentials\0", 23),
            ("root/.aws/credentials\0", 22),
            (".aws/credentials\0", 17),
            ("/root/.ssh\0", 11),
            ("/root/.ssh/", 11),
            ("root/.ssh\0", 10),
            ("root/.ssh/", 10),
            (".ssh\0", 5),
            (".ssh/", 5),
        ];
        let want: Vec<(String, u32)> = want
            .iter()
            .map(|(p, n)| (p.to_string(), (8 + n) * 8))
            .collect();
        assert_eq!(shown, want);
        assert!(
            sensitive_keys(7, &[SensitivePath::Exact("/a/../b".into())])
                .expect("valid")
                .0
                .len()
                == 1,
            "no tails for a path with `..`"
        );
        assert_eq!(&names[0].name[..5], b".env\0");
        assert!(sensitive_keys(7, &[SensitivePath::Exact("relative".into())]).is_err());
        assert!(sensitive_keys(7, &[SensitivePath::Name("a/b".into())]).is_err());
    }

    #[test]
    fn ranges_merge_and_overflow_is_an_error() {
        assert_eq!(
            merge_ranges(&mut [(10, 20), (21, 30), (5, 12), (40, 40)]),
            vec![(5, 30), (40, 40)]
        );
        let many: Vec<NetRule> = (0..=u16::try_from(MAX_PORT_RANGES).expect("a few ranges"))
            .map(|i| rule("192.0.2.1/32", i * 10, i * 10))
            .collect();
        assert!(matches!(
            allowlist_entries(&many),
            Err(KernelError::TooManyPortRanges { .. })
        ));
    }
}
