//! Verified programs shared by standalone execs: a pool of slots on bpffs.
//!
//! Most of a standalone exec's start is the kernel verifying the programs. A slot
//! (`<base>/<build>/slot-<n>/`) holds one full verified set, programs and maps pinned, never
//! links: an exec locks a free slot (`flock` on its directory, released by the kernel when the
//! exec dies), empties its maps, attaches the programs to its own session and lets go on exit.
//! Its attachments are links held by the exec alone, so a killed exec enforces nothing on
//! anyone after it, and whatever it left in the maps is emptied by the next exec that takes the
//! slot before anything is attached. Only the first exec on a slot verifies.
//!
//! Nothing here is trusted that root did not make: the pool directory must be root's with no
//! access for anyone else, and every ancestor root's and closed to others or sticky, or the
//! pool is not used at all (a user who owns a directory on the way could swap pins between
//! slots). A slot is used only when complete (`ready`, made last) and when every one of its
//! programs uses exactly the maps pinned beside it; otherwise it is emptied and loaded again.
//! Other builds' directories are removed once none of their slots is in use.

use std::{
    collections::HashSet,
    fs::File,
    os::{
        fd::AsRawFd as _,
        unix::fs::{DirBuilderExt as _, MetadataExt as _, OpenOptionsExt as _},
    },
    path::{Path, PathBuf},
};

use aya::{
    EbpfLoader,
    maps::{HashMap, MapData, PerCpuArray, PerCpuValues},
    programs::ProgramInfo,
};
use mcp_guard_ebpf::{ExecDoneEvent, drop_reason, maps};

use super::{
    super::{
        ringbuf::RingReader,
        unix::{self, UnixPrograms},
    },
    EBPF_OBJECT, KernelError, KernelGuard, Maps,
    program_set::{Parts, PinnedPrograms, ProgramSet, aya_program_names, prog_pin, verify_object},
    takeover::pinned_maps,
};

/// Where a standalone exec keeps its slots unless `MCP_GUARD_STANDALONE_BPF_DIR` says
/// otherwise (beside the agent's directory, never in it: the agent prunes what it finds there).
pub const DEFAULT_STANDALONE_DIR: &str = "/sys/fs/bpf/mcp-guard-standalone";

/// `EXEC_PENDING`'s size for one session's programs (the agent keeps the object's, for a host).
/// A full map only means an exec is reported at entry, without its result.
pub(super) const STANDALONE_EXEC_PENDING: u32 = 512;

/// Slots per build: as many standalone execs as this at once share verified programs; one more
/// loads its own.
const MAX_SLOTS: usize = 8;

/// Made in a slot once everything in it is pinned.
const READY: &str = "ready";
/// Made in a slot whose unix programs did not load (the kernel cannot run them).
const NO_UNIX: &str = "no-unix";

/// A slot, locked for as long as this lives (closing the descriptor unlocks it).
pub(super) struct SlotLock {
    _dir: File,
}

impl KernelGuard {
    /// The programs for a standalone exec: a free slot's below `base` (verified by an earlier
    /// exec, or verified now and kept there), or a copy of its own when no slot can be used
    /// (every slot busy, or the pool untrusted: it says why).
    pub fn load_standalone(base: &Path) -> Result<Self, KernelError> {
        match take_slot(base) {
            Ok(Some(guard)) => Ok(guard),
            Ok(None) => {
                tracing::info!(
                    "all {MAX_SLOTS} standalone slots in {} are in use: loading a copy of the \
                     programs for this exec alone",
                    base.display()
                );
                Self::load()
            }
            Err(why) => {
                tracing::warn!(
                    "not sharing verified eBPF programs with other execs ({why}); loading a \
                     copy for this exec alone"
                );
                Self::load()
            }
        }
    }
}

/// Tells this process's [`unix::probe`] its answer when a complete slot of this build below
/// `base` holds the unix programs: the kernel verified them for their attach types with the
/// layout they read, this boot (bpffs does not outlive it). Spares a standalone exec reading
/// and parsing the kernel's BTF to answer it again. Does nothing otherwise.
pub fn learn_from_pool(base: &Path) {
    if !base.is_dir() || trusted_pool(base).is_err() {
        return;
    }
    let version = base.join(build_id());
    if private_dir(&version).is_err() {
        return;
    }
    let proven = (0..MAX_SLOTS).any(|n| {
        let slot = version.join(format!("slot-{n}"));
        private_dir(&slot).is_ok()
            && slot.join(READY).is_dir()
            && !slot.join(NO_UNIX).exists()
            && UnixPrograms::pin_paths(&slot).all(|p| p.exists())
    });
    if proven {
        unix::assume_probe(Ok(()));
    }
}

/// This build's directory name: the object's hash, as the agent names its own.
fn build_id() -> String {
    use sha2::Digest as _;
    hex::encode(&sha2::Sha256::digest(EBPF_OBJECT)[..8])
}

/// Locks the first free slot of this build and makes a guard of it; `None`: all busy.
fn take_slot(base: &Path) -> Result<Option<KernelGuard>, String> {
    let version = trusted_pool(base)?.join(build_id());
    make_private_dir(&version)?;
    for n in 0..MAX_SLOTS {
        let slot = version.join(format!("slot-{n}"));
        make_private_dir(&slot)?;
        let Some(lock) = lock_slot(&slot)? else {
            continue;
        };
        let guard = match open_slot(&slot) {
            Ok(parts) => parts,
            Err(why) => {
                if slot.join(READY).exists() {
                    tracing::warn!("replacing standalone slot {}: {why}", slot.display());
                }
                empty_dir(&slot)?;
                prepare_slot(&slot)?;
                open_slot(&slot)?
            }
        };
        prune_other_builds(base, &version);
        return Ok(Some(KernelGuard::from_parts(guard, None, Some(lock))));
    }
    Ok(None)
}

/// Checks (and makes) the pool directory `base`; why it cannot be trusted otherwise.
fn trusted_pool(base: &Path) -> Result<PathBuf, String> {
    if !base.is_absolute() {
        return Err(format!("{} is not an absolute path", base.display()));
    }
    for ancestor in base.ancestors().skip(1) {
        let meta =
            std::fs::metadata(ancestor).map_err(|e| format!("{}: {e}", ancestor.display()))?;
        let open_to_others = meta.mode() & 0o022 != 0 && meta.mode() & 0o1000 == 0;
        if meta.uid() != 0 || open_to_others {
            return Err(format!(
                "{} is {}: another user could replace what is below it",
                ancestor.display(),
                if meta.uid() == 0 {
                    "writable by others".to_string()
                } else {
                    format!("owned by uid {}", meta.uid())
                }
            ));
        }
    }
    make_private_dir(base)?;
    if !nix::sys::statfs::statfs(base)
        .is_ok_and(|s| s.filesystem_type() == nix::sys::statfs::BPF_FS_MAGIC)
    {
        return Err(format!("{} is not on a BPF filesystem", base.display()));
    }
    Ok(base.to_path_buf())
}

/// Makes `dir` (0700) unless it exists, then checks it is a directory (not a link) of root's
/// that no one else may enter.
fn make_private_dir(dir: &Path) -> Result<(), String> {
    match std::fs::DirBuilder::new().mode(0o700).create(dir) {
        Ok(()) => {}
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {}
        Err(e) => return Err(format!("making {}: {e}", dir.display())),
    }
    private_dir(dir)
}

/// Why `dir` is not a directory of root's closed to everyone else (`Ok` when it is).
fn private_dir(dir: &Path) -> Result<(), String> {
    let meta = std::fs::symlink_metadata(dir).map_err(|e| format!("{}: {e}", dir.display()))?;
    if !meta.is_dir() {
        return Err(format!("{} is not a directory", dir.display()));
    }
    if meta.uid() != 0 {
        return Err(format!(
            "{} is owned by uid {}, not root (remove it: see the README)",
            dir.display(),
            meta.uid()
        ));
    }
    if meta.mode() & 0o077 != 0 {
        return Err(format!(
            "{} has mode {:o}: others may enter it (remove it: see the README)",
            dir.display(),
            meta.mode() & 0o7777
        ));
    }
    Ok(())
}

/// Locks the slot directory `slot` without waiting; `None`: another exec holds it.
fn lock_slot(slot: &Path) -> Result<Option<SlotLock>, String> {
    let dir = File::options()
        .read(true)
        .custom_flags(libc::O_DIRECTORY | libc::O_NOFOLLOW)
        .open(slot)
        .map_err(|e| format!("opening {}: {e}", slot.display()))?;
    // SAFETY: flock on a descriptor this function owns; no memory is passed.
    let ret = unsafe { libc::flock(dir.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) };
    if ret == 0 {
        return Ok(Some(SlotLock { _dir: dir }));
    }
    let e = std::io::Error::last_os_error();
    if e.raw_os_error() == Some(libc::EWOULDBLOCK) {
        Ok(None)
    } else {
        Err(format!("locking {}: {e}", slot.display()))
    }
}

/// Removes everything in `dir` (its pins, and the objects no one else holds with them).
fn empty_dir(dir: &Path) -> Result<(), String> {
    let entries = std::fs::read_dir(dir).map_err(|e| format!("{}: {e}", dir.display()))?;
    for entry in entries.flatten() {
        let path = entry.path();
        let removed = if entry.file_type().is_ok_and(|t| t.is_dir()) {
            std::fs::remove_dir_all(&path)
        } else {
            std::fs::remove_file(&path)
        };
        removed.map_err(|e| format!("removing {}: {e}", path.display()))?;
    }
    Ok(())
}

/// Loads (verifies) the object and pins its maps and programs in the empty slot `slot`,
/// `ready` last.
fn prepare_slot(slot: &Path) -> Result<(), String> {
    let mut loader = EbpfLoader::new();
    loader.map_max_entries(maps::EXEC_PENDING, STANDALONE_EXEC_PENDING);
    let (mut ebpf, unix) = verify_object(&mut loader).map_err(|e| e.to_string())?;
    let map_dir = slot.join("maps");
    make_private_dir(&map_dir)?;
    for (name, map) in ebpf.maps() {
        // bpffs refuses dots in names (the object's `.rodata` maps): pinned only so that the
        // programs' maps can be told from others, never opened by name.
        map.pin(map_dir.join(name.replace('.', "_")))
            .map_err(|e| format!("pinning map {name}: {e}"))?;
    }
    for name in aya_program_names() {
        let program = ebpf
            .program_mut(name)
            .ok_or_else(|| format!("the object has no program {name}"))?;
        program
            .pin(prog_pin(slot, name))
            .map_err(|e| format!("pinning {name}: {e}"))?;
    }
    match unix {
        Ok(programs) => programs.pin_programs(slot)?,
        Err(why) => {
            tracing::warn!("unix socket programs unavailable: {why}");
            make_private_dir(&slot.join(NO_UNIX))?;
        }
    }
    make_private_dir(&slot.join(READY))
}

/// The guard's parts from a complete slot, its maps emptied of whatever an earlier exec left
/// and its tracepoints attached; why the slot cannot be used otherwise.
fn open_slot(slot: &Path) -> Result<Parts, String> {
    if !slot.join(READY).is_dir() {
        return Err("incomplete (an exec preparing it ended first)".into());
    }
    let map_dir = slot.join("maps");
    let mut map_ids = HashSet::new();
    for entry in std::fs::read_dir(&map_dir).map_err(|e| format!("{}: {e}", map_dir.display()))? {
        let path = entry.map_err(|e| e.to_string())?.path();
        let info = MapData::from_pin(&path)
            .and_then(|m| m.info())
            .map_err(|e| format!("{}: {e}", path.display()))?;
        map_ids.insert(info.id());
    }
    let unix = if slot.join(NO_UNIX).exists() {
        Err(unix::probe()
            .err()
            .unwrap_or_else(|| "they did not load when this slot was prepared".into()))
    } else {
        Ok(UnixPrograms::from_pins(slot)?)
    };
    let unix_pins: Vec<PathBuf> = if unix.is_ok() {
        UnixPrograms::pin_paths(slot).collect()
    } else {
        Vec::new()
    };
    // A program judges with the maps it was loaded with: they must be the ones emptied and
    // filled here.
    for path in aya_program_names()
        .map(|name| prog_pin(slot, name))
        .chain(unix_pins)
    {
        let info = ProgramInfo::from_pin(&path).map_err(|e| format!("{}: {e}", path.display()))?;
        let ids = info
            .map_ids()
            .map_err(|e| e.to_string())?
            .ok_or("the kernel does not list a program's maps")?;
        if let Some(id) = ids.iter().find(|id| !map_ids.contains(id)) {
            return Err(format!(
                "{} uses map {id}, which is not one of the slot's",
                path.display()
            ));
        }
    }
    let mut maps = pinned_maps(slot).map_err(|e| e.to_string())?;
    empty(&mut maps);
    empty_pairing(&map_dir)?;
    let mut drops: PerCpuArray<MapData, u64> =
        open_map(&map_dir, maps::DROPS, aya::maps::Map::PerCpuArray)?;
    let cpus = aya::util::nr_cpus().map_err(|(_, e)| e.to_string())?;
    for i in 0..drop_reason::COUNT {
        let zeros = PerCpuValues::try_from(vec![0u64; cpus]).map_err(|e| e.to_string())?;
        drops.set(i, zeros, 0).map_err(|e| e.to_string())?;
    }
    let events = MapData::from_pin(map_dir.join(maps::EVENTS)).map_err(|e| e.to_string())?;
    let mut ring = RingReader::new(events).map_err(|e| e.to_string())?;
    ring.discard_pending();
    let mut programs = PinnedPrograms::open(slot).map_err(|e| e.to_string())?;
    programs
        .attach_tracepoints()
        .map_err(|e: KernelError| e.to_string())?;
    Ok(Parts {
        programs: ProgramSet::Pinned(programs),
        maps,
        drops,
        ring,
        unix,
    })
}

fn open_map<T>(
    dir: &Path,
    name: &str,
    wrap: impl FnOnce(MapData) -> aya::maps::Map,
) -> Result<T, String>
where
    T: TryFrom<aya::maps::Map, Error = aya::maps::MapError>,
{
    let data = MapData::from_pin(dir.join(name)).map_err(|e| format!("{name}: {e}"))?;
    T::try_from(wrap(data)).map_err(|e| format!("{name}: {e}"))
}

/// Removes every entry of the maps userspace fills (an earlier exec's rules, were it killed).
fn empty(maps: &mut Maps) {
    let keys: Vec<_> = maps.guarded.keys().filter_map(Result::ok).collect();
    for key in keys {
        let _ = maps.guarded.remove(&key);
    }
    let keys: Vec<_> = maps.v4.keys().filter_map(Result::ok).collect();
    for key in keys {
        let _ = maps.v4.remove(&key);
    }
    let keys: Vec<_> = maps.v6.keys().filter_map(Result::ok).collect();
    for key in keys {
        let _ = maps.v6.remove(&key);
    }
    let keys: Vec<_> = maps.sensitive.keys().filter_map(Result::ok).collect();
    for key in keys {
        let _ = maps.sensitive.remove(&key);
    }
    let keys: Vec<_> = maps.sensitive_names.keys().filter_map(Result::ok).collect();
    for key in keys {
        let _ = maps.sensitive_names.remove(&key);
    }
    if let Some(map) = maps.unix.as_mut() {
        let keys: Vec<_> = map.keys().filter_map(Result::ok).collect();
        for key in keys {
            let _ = map.remove(&key);
        }
    }
    if let Some(map) = maps.bind.as_mut() {
        let keys: Vec<_> = map.keys().filter_map(Result::ok).collect();
        for key in keys {
            let _ = map.remove(&key);
        }
    }
}

/// Empties the programs' own pairing maps (an exec or open an earlier exec's session left
/// half-seen, by thread id).
fn empty_pairing(dir: &Path) -> Result<(), String> {
    let mut pending: HashMap<MapData, u64, [u8; size_of::<ExecDoneEvent>()]> =
        open_map(dir, maps::EXEC_PENDING, aya::maps::Map::HashMap)?;
    let keys: Vec<u64> = pending.keys().filter_map(Result::ok).collect();
    for key in keys {
        let _ = pending.remove(&key);
    }
    let mut reread: HashMap<MapData, u64, u32> =
        open_map(dir, maps::REREAD, aya::maps::Map::HashMap)?;
    let keys: Vec<u64> = reread.keys().filter_map(Result::ok).collect();
    for key in keys {
        let _ = reread.remove(&key);
    }
    Ok(())
}

/// Removes the directories of other builds below `base` whose slots are all free.
fn prune_other_builds(base: &Path, current: &Path) {
    for other in std::fs::read_dir(base).into_iter().flatten().flatten() {
        let other = other.path();
        if other == current || private_dir(&other).is_err() {
            continue;
        }
        let slots: Vec<PathBuf> = std::fs::read_dir(&other)
            .into_iter()
            .flatten()
            .flatten()
            .map(|e| e.path())
            .collect();
        // Held until the directory is gone, so no exec takes one meanwhile.
        let mut locks = Vec::new();
        let all_free = slots.iter().all(|slot| match lock_slot(slot) {
            Ok(Some(lock)) => {
                locks.push(lock);
                true
            }
            _ => false,
        });
        if all_free {
            let _ = std::fs::remove_dir_all(&other);
        }
    }
}

/// What `doctor` says of the standalone pool at `base`: one line per build directory (its
/// slots, free or in use); `Err`: why the pool is not used.
pub fn survey(base: &Path) -> Result<Vec<String>, String> {
    if !base.exists() {
        return Ok(vec![format!(
            "{}: no slots yet (the first standalone exec as root makes one)",
            base.display()
        )]);
    }
    trusted_pool(base)?;
    let current = build_id();
    let mut out = Vec::new();
    for build in std::fs::read_dir(base).into_iter().flatten().flatten() {
        let dir = build.path();
        let whose = if build.file_name().to_string_lossy() == current {
            "this build"
        } else {
            "another build, removed once its slots are free"
        };
        if let Err(why) = private_dir(&dir) {
            out.push(format!("{} ({whose}) NOT USED: {why}", dir.display()));
            continue;
        }
        let mut slots: Vec<PathBuf> = std::fs::read_dir(&dir)
            .into_iter()
            .flatten()
            .flatten()
            .map(|e| e.path())
            .collect();
        slots.sort();
        let states: Vec<String> = slots
            .iter()
            .map(|slot| {
                let state = match lock_slot(slot) {
                    Ok(None) => "in use",
                    Ok(Some(_)) if slot.join(READY).is_dir() => "verified, free",
                    Ok(Some(_)) => "incomplete, loaded again when next taken",
                    Err(_) => "unreadable",
                };
                let name = slot.file_name().unwrap_or_default().to_string_lossy();
                format!("{name} {state}")
            })
            .collect();
        out.push(format!(
            "{} ({whose}): {}",
            dir.display(),
            states.join(", ")
        ));
    }
    if out.is_empty() {
        out.push(format!("{}: no slots yet", base.display()));
    }
    Ok(out)
}
