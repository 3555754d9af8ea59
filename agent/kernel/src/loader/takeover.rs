//! Servers guarded before this guard loaded: after an agent restart, adopting them from the
//! pinned maps (or forgetting those whose cgroup is gone); after an upgrade, moving them from
//! another build's pinned programs and maps to this build's, with the events queued there.

use std::path::Path;

use aya::maps::MapData;
use mcp_guard_ebpf::{CGROUP_PREFIX_BITS, maps};

use super::{
    super::{bind, events, ringbuf::RingReader},
    Adopted, Installed, KernelError, KernelGuard, Maps, ServerHandle, ServerSpec, guarded_id,
    guards_anything, lock, map_err, prune_versions, resolver_for, sensitive_keys,
};

impl KernelGuard {
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
pub(super) fn pinned_maps(dir: &Path) -> Result<Maps, KernelError> {
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
