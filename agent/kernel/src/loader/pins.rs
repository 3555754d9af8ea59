//! The agent's bpffs directory: the versioned pin directory per build (named by the object's
//! hash), pruning other builds' directories once they guard nothing, and replacing a pin
//! without a gap in the attachment it stands for.

use std::path::{Path, PathBuf};

use aya::{
    maps::{HashMap, MapData},
    programs::links::PinnedLink,
};
use mcp_guard_ebpf::{GuardConfig, maps};

use super::{EBPF_OBJECT, KernelError};

/// The versioned pin directory below `base` (created), mounting bpffs at /sys/fs/bpf first when
/// `base` is below it and nothing is mounted there (systemd usually mounts it; not every host).
/// Directories of other builds are removed once no server in them is guarded any more.
pub(super) fn pin_dir(base: &Path) -> Result<PathBuf, KernelError> {
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
pub(super) fn prune_versions(base: &Path, current: &Path) {
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

/// Whether the pinned `GUARDED` map of another build's directory still guards a server (its
/// programs then still enforce; the directory stays until that server ends).
pub(super) fn guards_anything(dir: &Path) -> bool {
    let Ok(data) = MapData::from_pin(dir.join("maps").join(maps::GUARDED)) else {
        return false;
    };
    HashMap::<_, u64, GuardConfig>::try_from(aya::maps::Map::HashMap(data))
        .is_ok_and(|m| m.keys().next().is_some())
}

pub(super) fn pin_error(path: &Path, e: &std::io::Error) -> KernelError {
    KernelError::Pin {
        path: path.display().to_string(),
        why: e.to_string(),
    }
}

/// Pins a new object at `path` in place of whatever an earlier load pinned there. An old link
/// is held open until the new object is pinned, so the attachment it stands for never lapses.
pub(super) fn replace_pin(
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
