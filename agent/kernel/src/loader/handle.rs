//! One guarded server's handle: adds member cgroups (a container's leaves) under the server's
//! rules and, when dropped, removes every entry the server has in the maps (or keeps them for
//! the next agent to adopt).

use std::{
    collections::BTreeSet,
    path::{Path, PathBuf},
    sync::{Arc, Mutex},
};

use aya::maps::lpm_trie::Key;
use mcp_guard_ebpf::{GuardConfig, NameKey, PathKey, UnixKey, maps};

use super::{super::bind, Installed, KernelError, Maps, guarded_id, lock, map_err, v4_key, v6_key};

/// One guarded server. Dropping it stops name refreshes and removes the server's map entries:
/// drop it only once the server's processes are gone (its cgroup is then unguarded).
pub struct ServerHandle {
    pub(super) maps: Arc<Mutex<Maps>>,
    pub(super) cgroup_id: u64,
    pub(super) installed: Arc<Mutex<Installed>>,
    pub(super) sensitive: Vec<Key<PathKey>>,
    pub(super) names: Vec<NameKey>,
    pub(super) unix: Vec<UnixKey>,
    pub(super) refresher: Option<tokio::task::JoinHandle<()>>,
    pub(super) config: GuardConfig,
    pub(super) members: Vec<u64>,
    /// Where its egress attachments are pinned (agent): removed with the handle.
    pub(super) pins: Option<PathBuf>,
    pub(super) attached: Arc<Mutex<BTreeSet<u64>>>,
    /// Leave the maps and pins in place when dropped ([`ServerHandle::keep`]).
    pub(super) kept: bool,
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

    pub(super) fn add_member_id(&mut self, id: u64) -> Result<(), KernelError> {
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
