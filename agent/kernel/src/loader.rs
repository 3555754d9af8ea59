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
//!
//! Here: loading, attaching and guarding. Beside it in `loader/`: the plain [`ServerSpec`]
//! (`spec`), the rules as map keys (`rule_keys`), the agent's bpffs directory (`pins`), a
//! server's [`ServerHandle`] (`handle`) and servers guarded before this load (`takeover`).

use std::{
    collections::{BTreeMap, BTreeSet},
    fs::File,
    os::unix::fs::MetadataExt as _,
    path::{Path, PathBuf},
    sync::{Arc, Mutex, MutexGuard},
};

use aya::{
    Ebpf, EbpfLoader,
    maps::{HashMap, LpmTrie, MapData, PerCpuArray},
    programs::{BtfTracePoint, CgroupAttachMode, CgroupSockAddr, links::FdLink},
};
use mcp_guard_ebpf::{
    BindPorts, GUARD_FLAG_KILL_SENSITIVE, GUARD_FLAG_OBSERVE, GuardConfig, Ip4Key, Ip6Key, NameKey,
    PathKey, PortSet, UnixKey, drop_reason, maps, programs,
};
use tokio::sync::{mpsc, oneshot};

use super::{
    bind, dns_programs,
    events::{self, KernelEvent, Labels, ServerLabel},
    program_load::{EGRESS_PROGRAMS, TRACE_PROGRAMS},
    resolve::{self, NameResolver},
    ringbuf::RingReader,
    unix::{self, UnixPrograms},
};

/// The eBPF object built by `agent/kernel/build.rs` from `agent-ebpf`.
pub static EBPF_OBJECT: &[u8] =
    aya::include_bytes_aligned!(concat!(env!("OUT_DIR"), "/mcp-guard-ebpf"));

/// Every program of the object by name (what the kernel's program info reports).
pub const PROGRAM_NAMES: [&str; 12] = [
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
    programs::DNS_EGRESS,
    programs::DNS_INGRESS,
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

pub use super::error::KernelError;
pub use handle::ServerHandle;
pub use spec::{Destination, EgressRule, SensitivePath, ServerSpec};

mod handle;
mod pins;
mod program_set;
mod rule_keys;
mod slots;
mod spec;
mod takeover;

pub use slots::{DEFAULT_STANDALONE_DIR, learn_from_pool, survey as survey_standalone};

use pins::{guards_anything, pin_dir, pin_error, prune_versions, replace_pin};
use program_set::{Parts, ProgramSet, verify_object};
use rule_keys::{Installed, install_rules, sensitive_keys, split_rules, v4_key, v6_key};

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

/// The loaded eBPF object: programs verified, tracepoints attached, maps created.
pub struct KernelGuard {
    programs: Mutex<ProgramSet>,
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
    /// The standalone slot whose programs these are, held (locked) while the guard lives;
    /// last, so it is let go once the programs above are detached.
    _slot: Option<slots::SlotLock>,
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
        let mut loader = EbpfLoader::new();
        if let Some(dir) = &pins {
            for name in PINNED_MAPS {
                loader.map_pin_path(name, dir.join("maps").join(name));
            }
        } else {
            // One session's execs wait here at once, not a host's.
            loader.map_max_entries(maps::EXEC_PENDING, slots::STANDALONE_EXEC_PENDING);
        }
        let (mut ebpf, unix) = verify_object(&mut loader)?;
        match (&unix, &pins) {
            (Ok(progs), Some(dir)) => progs.pin_programs(dir).map_err(|why| KernelError::Pin {
                path: dir.display().to_string(),
                why,
            })?,
            (Err(why), _) => tracing::warn!("unix socket programs unavailable: {why}"),
            _ => {}
        }
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
        if let Some(dir) = &pins {
            dns_programs::pin(&mut ebpf, dir, |p, f| replace_pin(p, f))?;
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
        let drops = take_map(&mut ebpf, maps::DROPS)?;
        let ring = take_ring(&mut ebpf)?;
        let parts = Parts {
            programs: ProgramSet::Object(Box::new(ebpf)),
            maps,
            drops,
            ring,
            unix,
        };
        Ok(Self::from_parts(parts, pins, None))
    }

    /// A guard of loaded programs and their maps.
    fn from_parts(parts: Parts, pins: Option<PathBuf>, slot: Option<slots::SlotLock>) -> Self {
        let Parts {
            programs,
            maps,
            drops,
            ring,
            unix,
        } = parts;
        // Session indexes go on from the highest a pinned map still holds.
        let next_session = maps
            .guarded
            .iter()
            .filter_map(Result::ok)
            .map(|(_, config)| config.session)
            .max()
            .unwrap_or(0);
        let (tx, rx) = mpsc::channel(EVENT_CHANNEL);
        Self {
            programs: Mutex::new(programs),
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
            _slot: slot,
        }
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
        let programs = lock(&self.programs);
        TRACE_PROGRAMS
            .iter()
            .filter_map(|(name, _)| {
                let info = programs.trace_info(name)?;
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
        let mut programs = lock(&self.programs);
        for name in EGRESS_PROGRAMS {
            let program = programs.egress(name)?;
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
        for (name, attach_type) in dns_programs::DNS_PROGRAMS {
            let program = programs.dns(name)?;
            dns_programs::attach(
                name,
                attach_type,
                program,
                &cgroup,
                pins.as_deref(),
                |p, f| replace_pin(p, f),
            )?;
        }
        drop(programs);
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_guard_can_be_shared_between_tasks() {
        fn shareable<T: Send + Sync>() {}
        shareable::<KernelGuard>();
        shareable::<ServerHandle>();
    }
}
