//! The server's cgroup: a v2 directory `<v2>/mcp-guard/<server>-<execpid>-<nonce>@<policy>`
//! (found from /proc/self/mountinfo) that holds the whole process tree, plus, on hybrid hosts,
//! same-named directories in the v1 memory/pids/cpu hierarchies that carry the limits the v2
//! hierarchy cannot. Killing goes through v2 `cgroup.kill`; removal takes every directory away.

use std::{
    fs,
    io::{self, Write},
    os::unix::fs::MetadataExt,
    path::{Path, PathBuf},
    time::{Duration, Instant},
};

/// The directory under each hierarchy's root that holds mcp-guard's cgroups.
pub const PARENT: &str = "mcp-guard";

/// A resource controller mcp-guard applies limits through.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Controller {
    /// Memory (`memory.max` / `memory.limit_in_bytes`).
    Memory,
    /// Task count (`pids.max`).
    Pids,
    /// CPU bandwidth (`cpu.max` / `cpu.cfs_quota_us`).
    Cpu,
}

impl Controller {
    /// The controller's name in cgroupfs.
    pub fn name(self) -> &'static str {
        match self {
            Controller::Memory => "memory",
            Controller::Pids => "pids",
            Controller::Cpu => "cpu",
        }
    }
}

/// Where the cgroup hierarchies are mounted on this host.
#[derive(Clone, Debug, Default)]
pub struct Mounts {
    /// The cgroup v2 (unified) mount, if any.
    pub v2: Option<PathBuf>,
    /// v1 hierarchies carrying memory, pids or cpu: (controller, mount point).
    pub v1: Vec<(Controller, PathBuf)>,
}

impl Mounts {
    /// Reads /proc/self/mountinfo.
    pub fn discover() -> io::Result<Self> {
        Ok(Self::from_table(&crate::mounts::read()?))
    }

    /// Picks the hierarchies mcp-guard uses out of the mount table.
    pub fn from_table(table: &[crate::mounts::Mount]) -> Self {
        let mut mounts = Mounts::default();
        // A bind mount of a sub-cgroup is not a hierarchy root.
        for m in table.iter().filter(|m| m.root == Path::new("/")) {
            match m.fstype.as_str() {
                "cgroup2" if mounts.v2.is_none() => mounts.v2 = Some(m.mount_point.clone()),
                "cgroup" => {
                    for c in [Controller::Memory, Controller::Pids, Controller::Cpu] {
                        if m.super_options.iter().any(|o| o == c.name())
                            && !mounts.v1.iter().any(|(have, _)| *have == c)
                        {
                            mounts.v1.push((c, m.mount_point.clone()));
                        }
                    }
                }
                _ => {}
            }
        }
        mounts
    }

    /// The v1 mount of a controller.
    pub fn v1(&self, c: Controller) -> Option<&Path> {
        self.v1
            .iter()
            .find(|(have, _)| *have == c)
            .map(|(_, p)| p.as_path())
    }

    /// Whether the v2 hierarchy offers `c` (listed in the root's `cgroup.controllers`).
    pub fn v2_has(&self, c: Controller) -> bool {
        self.v2.as_ref().is_some_and(|v2| {
            fs::read_to_string(v2.join("cgroup.controllers"))
                .is_ok_and(|s| s.split_whitespace().any(|n| n == c.name()))
        })
    }
}

/// The limits to apply, already decided per controller.
#[derive(Clone, Debug, Default)]
pub struct Limits {
    /// Memory in bytes.
    pub memory: Option<u64>,
    /// Task count.
    pub pids: Option<u64>,
    /// CPU in cores.
    pub cpu: Option<f64>,
}

/// How one limit ended up applied.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Applied {
    /// Through the v2 controller.
    V2,
    /// Through the v1 hierarchy at this directory.
    V1(PathBuf),
    /// No controller: the launcher must fall back (rlimit) or refuse.
    Unavailable,
}

/// A session's cgroup(s). Dropping does nothing: call [`Cgroup::kill_and_remove`].
#[derive(Debug)]
pub struct Cgroup {
    v2: PathBuf,
    v1: Vec<PathBuf>,
}

/// A server name as it appears in cgroup leaf names: `[A-Za-z0-9_.-]`, others as `_`, at most
/// 64 characters.
pub fn sanitize(server: &str) -> String {
    server
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '_' || c == '-' || c == '.' {
                c
            } else {
                '_'
            }
        })
        .take(64)
        .collect()
}

/// The cgroup leaf name for a server session: `<server>-<execpid>-<nonce>@<policy>`. The policy
/// is in the name so that a quarantine of a policy finds its sessions whatever their server
/// name (`@` is in no server or policy name).
pub fn leaf_name(server: &str, policy: &str) -> String {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.subsec_nanos());
    format!(
        "{}-{}-{nanos:08x}@{}",
        sanitize(server),
        std::process::id(),
        sanitize(policy)
    )
}

/// The (sanitized) server, exec pid and policy of a leaf made by [`leaf_name`] (no policy in
/// the leaves of earlier versions); `None` for other names.
fn split_leaf(leaf: &str) -> Option<(&str, &str, Option<&str>)> {
    let (rest, policy) = match leaf.split_once('@') {
        Some((rest, policy)) => (rest, Some(policy)),
        None => (leaf, None),
    };
    let mut parts = rest.rsplitn(3, '-');
    let nonce = parts.next()?;
    let pid = parts.next()?;
    let server = parts.next()?;
    let ok = nonce.len() >= 8
        && nonce.bytes().all(|b| b.is_ascii_hexdigit())
        && !pid.is_empty()
        && pid.bytes().all(|b| b.is_ascii_digit());
    ok.then_some((server, pid, policy))
}

/// The (sanitized) server part of a leaf made by [`leaf_name`]; `None` for other names.
pub fn leaf_server(leaf: &str) -> Option<String> {
    split_leaf(leaf).map(|(server, _, _)| server.to_string())
}

/// The (sanitized) policy part of a leaf made by [`leaf_name`]; `None` for other names.
pub fn leaf_policy(leaf: &str) -> Option<String> {
    split_leaf(leaf).and_then(|(_, _, policy)| policy.map(str::to_string))
}

impl Cgroup {
    /// Creates `<v2>/mcp-guard/<leaf>`.
    pub fn create(mounts: &Mounts, leaf: &str) -> io::Result<Self> {
        let v2root = mounts.v2.as_ref().ok_or_else(|| {
            io::Error::new(
                io::ErrorKind::NotFound,
                "no cgroup v2 hierarchy is mounted (mount -t cgroup2 none /sys/fs/cgroup/unified, \
                 or boot with systemd.unified_cgroup_hierarchy=1)",
            )
        })?;
        let parent = v2root.join(PARENT);
        mkdir_ok_if_exists(&parent)?;
        let dir = parent.join(leaf);
        fs::create_dir(&dir)?;
        Ok(Cgroup {
            v2: dir,
            v1: Vec::new(),
        })
    }

    /// The v2 directory (what the eBPF cgroup programs attach to).
    pub fn v2_dir(&self) -> &Path {
        &self.v2
    }

    /// The v2 cgroup id (the directory's inode, as `bpf_get_current_cgroup_id` returns).
    pub fn id(&self) -> io::Result<u64> {
        Ok(fs::metadata(&self.v2)?.ino())
    }

    /// Every directory a process of the session must be put in (`cgroup.procs` of each).
    pub fn dirs(&self) -> Vec<PathBuf> {
        std::iter::once(self.v2.clone())
            .chain(self.v1.iter().cloned())
            .collect()
    }

    /// Applies one limit: v2 file if the v2 hierarchy has the controller, else the v1 hierarchy.
    pub fn apply(
        &mut self,
        mounts: &Mounts,
        c: Controller,
        limits: &Limits,
    ) -> io::Result<Applied> {
        if mounts.v2_has(c) {
            let v2root = mounts.v2.as_deref().unwrap_or(Path::new("/"));
            // Controllers must be enabled down the path for the leaf to get the files.
            enable_v2(v2root, c)?;
            enable_v2(&v2root.join(PARENT), c)?;
            for (file, value) in v2_settings(c, limits) {
                let path = self.v2.join(file);
                // memory.swap.max exists only with swap accounting; without it there is no swap.
                if file == "memory.swap.max" && !path.exists() {
                    continue;
                }
                write_file(&path, &value)?;
            }
            return Ok(Applied::V2);
        }
        let Some(mount) = mounts.v1(c) else {
            return Ok(Applied::Unavailable);
        };
        let parent = mount.join(PARENT);
        mkdir_ok_if_exists(&parent)?;
        let leaf = self.v2.file_name().unwrap_or_default();
        let dir = parent.join(leaf);
        if !self.v1.contains(&dir) {
            mkdir_ok_if_exists(&dir)?;
            self.v1.push(dir.clone());
        }
        for (file, value) in v1_settings(c, limits) {
            let path = dir.join(file);
            // memory.memsw exists only with swap accounting; without it there is no swap to escape to.
            if file == "memory.memsw.limit_in_bytes" && !path.exists() {
                continue;
            }
            write_file(&path, &value)?;
        }
        Ok(Applied::V1(dir))
    }

    /// Kills every process in the session (v2 `cgroup.kill`, else SIGKILL each listed pid until
    /// empty), waits until it is empty, then removes every directory.
    pub fn kill_and_remove(&self) -> io::Result<()> {
        kill_all(&self.v2)?;
        remove_dir_retry(&self.v2)?;
        for d in &self.v1 {
            remove_dir_retry(d)?;
        }
        Ok(())
    }
}

fn v2_settings(c: Controller, l: &Limits) -> Vec<(&'static str, String)> {
    match c {
        Controller::Memory => l
            .memory
            .map(|m| {
                vec![
                    ("memory.max", m.to_string()),
                    ("memory.swap.max", "0".into()),
                ]
            })
            .unwrap_or_default(),
        Controller::Pids => l
            .pids
            .map(|p| vec![("pids.max", p.to_string())])
            .unwrap_or_default(),
        Controller::Cpu => l
            .cpu
            .map(|cpu| vec![("cpu.max", format!("{} 100000", cpu_quota_us(cpu)))])
            .unwrap_or_default(),
    }
}

fn v1_settings(c: Controller, l: &Limits) -> Vec<(&'static str, String)> {
    match c {
        // memsw (memory + swap) must be >= memory.limit, so it is written after it.
        Controller::Memory => l
            .memory
            .map(|m| {
                vec![
                    ("memory.limit_in_bytes", m.to_string()),
                    ("memory.memsw.limit_in_bytes", m.to_string()),
                ]
            })
            .unwrap_or_default(),
        Controller::Pids => l
            .pids
            .map(|p| vec![("pids.max", p.to_string())])
            .unwrap_or_default(),
        Controller::Cpu => l
            .cpu
            .map(|cpu| {
                vec![
                    ("cpu.cfs_period_us", "100000".into()),
                    ("cpu.cfs_quota_us", cpu_quota_us(cpu).to_string()),
                ]
            })
            .unwrap_or_default(),
    }
}

/// CPU cores → microseconds per 100ms period (at least the kernel's 1ms minimum).
#[expect(
    clippy::cast_possible_truncation,
    clippy::cast_sign_loss,
    reason = "the policy holds `cpu` to MIN_CPU..=MAX_CPU cores, and `as` saturates besides"
)]
fn cpu_quota_us(cpu: f64) -> u64 {
    ((cpu * 100_000.0).round() as u64).max(1000)
}

fn enable_v2(dir: &Path, c: Controller) -> io::Result<()> {
    let path = dir.join("cgroup.subtree_control");
    let current = fs::read_to_string(&path)?;
    if current.split_whitespace().any(|n| n == c.name()) {
        return Ok(());
    }
    write_file(&path, &format!("+{}", c.name()))
}

fn write_file(path: &Path, value: &str) -> io::Result<()> {
    let mut f = fs::OpenOptions::new().write(true).open(path)?;
    f.write_all(value.as_bytes()).map_err(|e| {
        io::Error::new(
            e.kind(),
            format!("writing {value:?} to {}: {e}", path.display()),
        )
    })
}

fn mkdir_ok_if_exists(dir: &Path) -> io::Result<()> {
    match fs::create_dir(dir) {
        Err(e) if e.kind() != io::ErrorKind::AlreadyExists => Err(io::Error::new(
            e.kind(),
            format!("creating cgroup {}: {e}", dir.display()),
        )),
        _ => Ok(()),
    }
}

fn procs(dir: &Path) -> io::Result<Vec<i32>> {
    Ok(fs::read_to_string(dir.join("cgroup.procs"))?
        .split_whitespace()
        .filter_map(|p| p.parse().ok())
        .collect())
}

/// Kills everything in a v2 cgroup (and its descendants) and waits until it is empty. A cgroup
/// that is gone (its owner removed it meanwhile) has nothing left to kill.
pub fn kill_all(dir: &Path) -> io::Result<()> {
    let kill_file = dir.join("cgroup.kill");
    let has_kill = kill_file.exists();
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let pids = match procs(dir) {
            Ok(pids) => pids,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(()),
            Err(e) => return Err(e),
        };
        if pids.is_empty() {
            return Ok(());
        }
        if has_kill {
            match write_file(&kill_file, "1") {
                Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(()),
                other => other?,
            }
        } else {
            for pid in pids {
                // SAFETY: kill has no memory-safety preconditions.
                unsafe { libc::kill(pid, libc::SIGKILL) };
            }
        }
        if Instant::now() > deadline {
            return Err(io::Error::other(format!(
                "processes in {} survived SIGKILL for 5s",
                dir.display()
            )));
        }
        std::thread::sleep(Duration::from_millis(2));
    }
}

/// rmdir, retrying while the kernel finishes tearing down exited tasks (EBUSY).
fn remove_dir_retry(dir: &Path) -> io::Result<()> {
    let deadline = Instant::now() + Duration::from_secs(2);
    loop {
        match fs::remove_dir(dir) {
            Ok(()) => return Ok(()),
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(()),
            Err(e) if e.raw_os_error() == Some(libc::EBUSY) && Instant::now() < deadline => {
                std::thread::sleep(Duration::from_millis(2));
            }
            Err(e) => {
                return Err(io::Error::new(
                    e.kind(),
                    format!("removing cgroup {}: {e}", dir.display()),
                ));
            }
        }
    }
}

/// Removes cgroups left behind by sessions whose exec died (e.g. SIGKILLed): empty leaves whose
/// exec pid (the name's middle part) no longer exists. Returns what was removed.
pub fn reap_stale(mounts: &Mounts) -> Vec<PathBuf> {
    let mut removed = Vec::new();
    let Some(v2) = &mounts.v2 else {
        return removed;
    };
    let Ok(entries) = fs::read_dir(v2.join(PARENT)) else {
        return removed;
    };
    for entry in entries.flatten() {
        let name = entry.file_name().to_string_lossy().into_owned();
        let Some(pid) = exec_pid(&name) else { continue };
        // SAFETY: kill with signal 0 only checks for existence.
        let alive = unsafe { libc::kill(pid, 0) } == 0
            || io::Error::last_os_error().raw_os_error() == Some(libc::EPERM);
        if alive || !procs(&entry.path()).is_ok_and(|p| p.is_empty()) {
            continue;
        }
        if fs::remove_dir(entry.path()).is_ok() {
            removed.push(entry.path());
        }
        for (_, mount) in &mounts.v1 {
            let d = mount.join(PARENT).join(&name);
            if d.exists() && fs::remove_dir(&d).is_ok() {
                removed.push(d);
            }
        }
    }
    removed
}

/// The exec pid in a leaf name made by [`leaf_name`].
pub fn exec_pid(leaf: &str) -> Option<i32> {
    split_leaf(leaf).and_then(|(_, pid, _)| pid.parse().ok())
}

#[cfg(test)]
mod tests {
    use super::*;

    const HYBRID: &str = "\
31 23 0:28 / /sys/fs/cgroup rw,relatime - tmpfs tmpfs rw,mode=755
32 31 0:29 / /sys/fs/cgroup/cpu rw,relatime - cgroup cgroup rw,cpu
33 31 0:30 / /sys/fs/cgroup/cpuacct rw,relatime - cgroup cgroup rw,cpuacct
35 31 0:32 / /sys/fs/cgroup/memory rw,relatime - cgroup cgroup rw,memory
39 31 0:36 / /sys/fs/cgroup/pids rw,relatime - cgroup cgroup rw,pids
41 31 0:38 / /sys/fs/cgroup/unified rw,relatime - cgroup2 cgroup2 rw
";

    #[test]
    fn finds_hybrid_mounts() {
        let m = Mounts::from_table(&crate::mounts::parse(HYBRID));
        assert_eq!(m.v2.as_deref(), Some(Path::new("/sys/fs/cgroup/unified")));
        assert_eq!(
            m.v1(Controller::Memory),
            Some(Path::new("/sys/fs/cgroup/memory"))
        );
        assert_eq!(
            m.v1(Controller::Pids),
            Some(Path::new("/sys/fs/cgroup/pids"))
        );
        assert_eq!(m.v1(Controller::Cpu), Some(Path::new("/sys/fs/cgroup/cpu")));
    }

    #[test]
    fn finds_pure_v2_and_skips_bind_mounts() {
        let m = Mounts::from_table(&crate::mounts::parse(
            "30 1 0:26 /sub /mnt/x rw - cgroup2 cgroup2 rw\n\
             31 1 0:26 / /sys/fs/cgroup rw - cgroup2 cgroup2 rw,nsdelegate\n",
        ));
        assert_eq!(m.v2.as_deref(), Some(Path::new("/sys/fs/cgroup")));
        assert!(m.v1.is_empty());
    }

    #[test]
    fn leaf_names_carry_server_exec_pid_and_policy() {
        let leaf = leaf_name("my server/x", "pol-1.a");
        assert!(leaf.starts_with("my_server_x-"));
        assert_eq!(exec_pid(&leaf), Some(std::process::id().cast_signed()));
        assert_eq!(leaf_server(&leaf).as_deref(), Some("my_server_x"));
        assert_eq!(leaf_policy(&leaf).as_deref(), Some("pol-1.a"));
        // An earlier version's leaf: no policy.
        assert_eq!(exec_pid("srv-12-0000abcd"), Some(12));
        assert_eq!(leaf_server("srv-12-0000abcd").as_deref(), Some("srv"));
        assert_eq!(leaf_policy("srv-12-0000abcd"), None);
        assert_eq!(exec_pid("not-a-leaf"), None);
    }

    #[test]
    fn cpu_quota() {
        assert_eq!(cpu_quota_us(1.0), 100_000);
        assert_eq!(cpu_quota_us(0.001), 1000);
    }
}
