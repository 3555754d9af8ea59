//! The unprivileged identity of a server nobody names a user for: root ran `exec` (itself, or
//! through the agent) without `sudo` and the policy has no `user`. Such a server never runs as
//! uid 0.
//!
//! First choice: the dedicated system user [`SYSTEM_USER`] (no login shell, no home of its own),
//! created by `cargo xtask setup`, by packaging (`packaging/sysusers.d/mcp-guard.conf`) and by the
//! dev VM's provisioning. A shared uid is what a user can configure for: `chown
//! mcp-guard-server` a directory the policy lets the server write, add the user to a group to let
//! it read one. What one server could do to another running under the same uid is small: each
//! jail has its own PID namespace (another server's processes cannot be named, so not signalled
//! or traced; ptrace and `process_vm`_* are denied by seccomp anyway), its own IPC namespace and
//! private `/tmp` and `/proc`, and landlock confines each to its policy's paths, so they meet
//! only where two policies grant the same path: there the uid lets one change files the other
//! reads, as two policies sharing a directory would let any two servers. What the shared uid does
//! add is shared per-user kernel counters (inotify instances, pipe buffers, `RLIMIT_NPROC` where
//! no pids controller exists): one server can exhaust them for the others.
//!
//! Fallback, when the host has no such user (mcp-guard installed without its packaging): a
//! per-session uid from a reserved range ([`LEASE_FIRST`], [`LEASE_COUNT`]), leased for the
//! session's lifetime by an exclusive lock on `/run/mcp-guard/uids/<uid>` that the launching
//! process holds ([`Lease`]). Its gid is the same number; it has no passwd entry (tools that ask
//! who they are, like `git` or node's `os.userInfo()`, may fail), and files it leaves in the
//! paths it may write are owned by a number a later session can draw again: a reason to create
//! the system user rather than a design to rely on. The uid is drawn at random from the range to
//! make that reuse rare.
//!
//! `HOME` and `~/` in the policy: exec's own `HOME` when it is set (what root's environment,
//! e.g. a service's, says the server's home is), unless it is root's own home from passwd, which
//! is private to root (the server would meet only EACCES there); else the system user's home from
//! passwd (`/nonexistent`, also a leased uid's: nothing below `~/` exists). The server reaches its
//! home only as far as its uid's file permissions and the policy's landlock rules both allow: a
//! root-run service that wants its servers to have a usable home sets `HOME` to a directory that
//! user owns.

use std::{
    fs::File,
    hash::{BuildHasher, Hasher},
    os::unix::fs::{DirBuilderExt, MetadataExt, OpenOptionsExt},
    path::{Path, PathBuf},
};

use nix::{
    fcntl::{Flock, FlockArg},
    unistd::{Uid, User},
};

/// The system user servers run as when nobody names one.
pub const SYSTEM_USER: &str = "mcp-guard-server";
/// Where per-session uid leases are kept (tmpfs: they end with a reboot at the latest).
pub const LEASE_DIR: &str = "/run/mcp-guard/uids";
/// The first uid of the per-session range: above systemd's container ranges (which end at
/// 0x6FFFFFFF) and below 2^31, which some programs read as a negative number.
pub const LEASE_FIRST: u32 = 0x7000_0000;
/// How many uids the per-session range holds.
pub const LEASE_COUNT: u32 = 0x1_0000;

/// How many uids of the range one launch tries before it gives up.
const LEASE_TRIES: u32 = 512;

/// A per-session uid, the server's until this is dropped (the lock is released and its file
/// removed).
#[derive(Debug)]
pub struct Lease {
    uid: u32,
    path: PathBuf,
    lock: Option<Flock<File>>,
}

impl Lease {
    /// The leased uid (also the gid).
    pub fn uid(&self) -> u32 {
        self.uid
    }
}

impl Drop for Lease {
    fn drop(&mut self) {
        // Removed while still locked: whoever opened this file and waits sees the inode is no
        // longer the path's and retries (see `try_lease`).
        let _ = std::fs::remove_file(&self.path);
        drop(self.lock.take());
    }
}

/// Who a server nobody names runs as.
#[derive(Debug)]
pub enum ServerUser {
    /// The system user [`SYSTEM_USER`].
    System(User),
    /// A per-session uid (no such system user on this host).
    Leased(Lease),
}

/// The system user if the host has it, else a per-session uid leased in [`LEASE_DIR`].
pub fn choose() -> Result<ServerUser, String> {
    match User::from_name(SYSTEM_USER) {
        Ok(Some(user)) if user.uid.is_root() || user.gid.as_raw() == 0 => Err(format!(
            "the system user {SYSTEM_USER} has uid {} and gid {}: servers must not run as \
             root or in root's group; give it its own uid and gid (see \
             packaging/sysusers.d/mcp-guard.conf)",
            user.uid, user.gid
        )),
        Ok(Some(user)) => Ok(ServerUser::System(user)),
        Ok(None) => lease(Path::new(LEASE_DIR)).map(ServerUser::Leased),
        Err(e) => Err(format!("looking up user {SYSTEM_USER}: {e}")),
    }
}

/// Leases a free uid of the range in `dir` (made 0700 if missing; refused unless it is a real
/// directory of this user that nobody else may write).
pub fn lease(dir: &Path) -> Result<Lease, String> {
    let err = |e: std::io::Error| format!("the per-session uid lease dir {}: {e}", dir.display());
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(dir)
        .map_err(err)?;
    let meta = std::fs::symlink_metadata(dir).map_err(err)?;
    if !meta.is_dir() || meta.uid() != Uid::effective().as_raw() || meta.mode() & 0o022 != 0 {
        return Err(format!(
            "the per-session uid lease dir {} must be a directory owned by uid {} that no one \
             else may write",
            dir.display(),
            Uid::effective()
        ));
    }
    #[expect(clippy::cast_possible_truncation, reason = "a remainder modulo a u32")]
    let start = {
        let mut h = std::collections::hash_map::RandomState::new().build_hasher();
        h.write_u32(std::process::id());
        (h.finish() % u64::from(LEASE_COUNT)) as u32
    };
    for i in 0..LEASE_TRIES {
        let uid = LEASE_FIRST + (start + i) % LEASE_COUNT;
        // A uid the user database names belongs to someone.
        if !matches!(User::from_uid(Uid::from_raw(uid)), Ok(None)) {
            continue;
        }
        if let Some(lease) = try_lease(dir, uid).map_err(err)? {
            return Ok(lease);
        }
    }
    Err(format!(
        "no free per-session uid after {LEASE_TRIES} tries in {LEASE_FIRST}..{}; create the \
         system user {SYSTEM_USER} (see packaging/sysusers.d/mcp-guard.conf) or set user in the \
         policy",
        LEASE_FIRST + LEASE_COUNT - 1
    ))
}

/// Takes `uid`'s lock in `dir`, or `None` when another session holds it.
fn try_lease(dir: &Path, uid: u32) -> std::io::Result<Option<Lease>> {
    let path = dir.join(uid.to_string());
    loop {
        let file = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .mode(0o600)
            .custom_flags(libc::O_NOFOLLOW)
            .open(&path)?;
        let lock = match Flock::lock(file, FlockArg::LockExclusiveNonblock) {
            Ok(lock) => lock,
            Err((_, nix::errno::Errno::EWOULDBLOCK)) => return Ok(None),
            Err((_, e)) => return Err(e.into()),
        };
        // The previous holder removes the file before it unlocks: a lock on a removed (or
        // replaced) inode is no lease.
        let ours = lock.metadata()?;
        match std::fs::symlink_metadata(&path) {
            Ok(now) if now.dev() == ours.dev() && now.ino() == ours.ino() => {
                return Ok(Some(Lease {
                    uid,
                    path,
                    lock: Some(lock),
                }));
            }
            Ok(_) => {}
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => return Err(e),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn scratch(name: &str) -> PathBuf {
        let dir = std::env::temp_dir().join(format!("server-user-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        dir
    }

    #[test]
    fn leases_are_distinct_in_range_and_free_again_when_dropped() {
        let dir = scratch("lease");
        let a = lease(&dir).expect("a lease");
        let b = lease(&dir).expect("a second lease");
        for l in [&a, &b] {
            assert!((LEASE_FIRST..LEASE_FIRST + LEASE_COUNT).contains(&l.uid()));
            assert!(dir.join(l.uid().to_string()).exists());
        }
        assert_ne!(a.uid(), b.uid(), "two live sessions never share a uid");
        // A held uid is not leased again; a released one is.
        assert!(try_lease(&dir, a.uid()).expect("lock").is_none());
        let uid = a.uid();
        drop(a);
        assert!(!dir.join(uid.to_string()).exists(), "the lease file goes");
        let again = try_lease(&dir, uid).expect("lock").expect("free again");
        assert_eq!(again.uid(), uid);
        drop((again, b));
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn a_lease_dir_others_may_write_is_refused() {
        use std::os::unix::fs::PermissionsExt;
        let dir = scratch("open");
        std::fs::create_dir_all(&dir).expect("mkdir");
        std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o777)).expect("chmod");
        let e = lease(&dir).expect_err("world-writable lease dir");
        assert!(e.contains("no one else may write"), "{e}");
        let _ = std::fs::remove_dir_all(&dir);
    }
}
