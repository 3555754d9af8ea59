//! What the jail's mount namespace shows of the places where sockets and scratch files live.
//!
//! `/tmp`, `/run`, `/var/run` (when it is a directory of its own, not Debian's symlink to
//! `/run`) and `/dev/shm` are replaced by empty tmpfs mounts, into which only what the policy
//! grants below them is carried: its filesystem entries, the program, the pathname sockets of
//! `[network] unix`, and the targets (and symlinks on the way) of granted paths that point
//! there, such as `/etc/resolv.conf` → `/run/systemd/resolve/stub-resolv.conf`. A daemon's
//! socket (the agent's, podman's, D-Bus, a database) is then not even visible unless listed:
//! this holds independently of the kernel guard's unix programs, which judge every connect.
//!
//! Landlock does not cover connecting to a pathname socket, so before this the view was the
//! only thing between a jailed server and a world-writable socket in these directories. Other
//! places a socket may sit (a home directory, `/var/lib/...`) are left as they are: landlock
//! already hides their files and the kernel programs judge their sockets.
//!
//! A carried socket is the socket that existed at launch: a daemon that re-creates it (a
//! restart) is reachable again from servers started after that.

use std::{
    ffi::CString,
    os::fd::{AsRawFd, FromRawFd, OwnedFd},
    path::{Component, Path, PathBuf},
};

/// The directories replaced by an empty tmpfs, with the mode of its root.
pub const HIDDEN: [(&str, &str); 4] = [
    ("/tmp", "mode=1777"),
    ("/run", "mode=0755"),
    ("/var/run", "mode=0755"),
    ("/dev/shm", "mode=1777"),
];

/// What to do in the jail's mount namespace, worked out from the host's view before anything is
/// mounted.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Plan {
    /// Directories to cover with a fresh tmpfs (with its mount options).
    pub tmpfs: Vec<(PathBuf, String)>,
    /// Paths (below those) whose host tree is carried into the fresh tmpfs at the same place.
    pub carry: Vec<PathBuf>,
    /// Symlinks (below those) recreated as they were: (link, its target as written).
    pub links: Vec<(PathBuf, PathBuf)>,
}

/// `path` with `.` and `..` resolved lexically.
fn normalize(path: &Path) -> PathBuf {
    let mut out = PathBuf::from("/");
    for c in path.components() {
        match c {
            Component::ParentDir => {
                out.pop();
            }
            Component::Normal(name) => out.push(name),
            _ => {}
        }
    }
    out
}

/// The plan for `hidden` directories (normally [`HIDDEN`]) given the paths the server is
/// granted (filesystem entries, program, socket paths).
pub fn plan(hidden: &[(&str, &str)], granted: &[PathBuf]) -> Plan {
    let mut out = Plan::default();
    // Only real directories: a symlink (Debian's /var/run → /run) is covered by its target.
    let dirs: Vec<PathBuf> = hidden
        .iter()
        .filter(|(d, _)| {
            std::fs::symlink_metadata(d).is_ok_and(|m| m.is_dir() && !m.file_type().is_symlink())
        })
        .map(|(d, opts)| {
            out.tmpfs.push((PathBuf::from(d), opts.to_string()));
            PathBuf::from(d)
        })
        .collect();
    let below = |p: &Path| dirs.iter().any(|d| p.starts_with(d) && p != d.as_path());
    let mut carry = Vec::new();
    for g in granted {
        if !g.is_absolute() {
            continue;
        }
        // The path as granted, each symlink on its last component followed, and where it all
        // ends up.
        let mut cur = normalize(g);
        for _ in 0..16 {
            match std::fs::symlink_metadata(&cur) {
                Ok(m) if m.file_type().is_symlink() => {
                    let Ok(target) = std::fs::read_link(&cur) else {
                        break;
                    };
                    if below(&cur) {
                        out.links.push((cur.clone(), target.clone()));
                    }
                    let parent = cur.parent().unwrap_or(Path::new("/")).to_path_buf();
                    cur = normalize(&parent.join(target));
                }
                Ok(_) => {
                    if below(&cur) {
                        carry.push(cur.clone());
                    }
                    break;
                }
                Err(_) => break,
            }
        }
        if let Ok(real) = std::fs::canonicalize(g)
            && below(&real)
        {
            carry.push(real);
        }
    }
    carry.sort();
    carry.dedup();
    // A tree carried whole carries everything below it.
    for p in carry {
        if !out.carry.iter().any(|k| p.starts_with(k)) {
            out.carry.push(p);
        }
    }
    out.links.sort();
    out.links.dedup();
    // A link inside a carried tree comes with it.
    let carried = out.carry.clone();
    out.links
        .retain(|(l, _)| !carried.iter().any(|k| l.starts_with(k)));
    out
}

/// Applies `plan` in the jail's (private) mount namespace: clones the carried trees, mounts the
/// tmpfs, then attaches the clones and recreates the links.
pub fn apply(plan: &Plan) -> Result<(), String> {
    use nix::mount::{MsFlags, mount};
    let clones = plan
        .carry
        .iter()
        .map(|p| clone_tree(p).map(|fd| (p, fd)))
        .collect::<Result<Vec<_>, String>>()?;
    for (dir, opts) in &plan.tmpfs {
        mount(
            Some("tmpfs"),
            dir,
            Some("tmpfs"),
            MsFlags::MS_NOSUID | MsFlags::MS_NODEV,
            Some(opts.as_str()),
        )
        .map_err(|e| format!("mounting the jail's own {}: {e}", dir.display()))?;
    }
    for (path, tree) in clones {
        attach_tree(path, &tree)?;
    }
    for (link, target) in &plan.links {
        if let Some(parent) = link.parent() {
            std::fs::create_dir_all(parent)
                .map_err(|e| format!("recreating {} in the jail: {e}", link.display()))?;
        }
        std::os::unix::fs::symlink(target, link)
            .map_err(|e| format!("recreating {} in the jail: {e}", link.display()))?;
    }
    Ok(())
}

/// A detached bind mount of `path` (`open_tree` with `OPEN_TREE_CLONE`), to attach elsewhere later.
pub(super) fn clone_tree(path: &Path) -> Result<OwnedFd, String> {
    let c = CString::new(path.as_os_str().as_encoded_bytes())
        .map_err(|_| format!("{}: NUL in path", path.display()))?;
    let flags = libc::OPEN_TREE_CLONE | libc::OPEN_TREE_CLOEXEC | libc::AT_RECURSIVE as u32;
    // SAFETY: `c` is a live NUL-terminated string; the result is a new fd we own or -1.
    let fd = unsafe { libc::syscall(libc::SYS_open_tree, libc::AT_FDCWD, c.as_ptr(), flags) };
    if fd < 0 {
        return Err(format!(
            "carrying {} into the jail (open_tree): {}",
            path.display(),
            std::io::Error::last_os_error()
        ));
    }
    #[expect(
        clippy::cast_possible_truncation,
        reason = "open_tree(2) returns an fd, an int, in a long"
    )]
    // SAFETY: the kernel just returned this fd and nothing else owns it.
    Ok(unsafe { OwnedFd::from_raw_fd(fd as i32) })
}

/// Attaches a tree from [`clone_tree`] at `path`, inside a fresh tmpfs.
pub(super) fn attach_tree(path: &Path, tree: &OwnedFd) -> Result<(), String> {
    let err = |what: &str, e: std::io::Error| {
        format!("carrying {} into the jail ({what}): {e}", path.display())
    };
    let is_dir = std::fs::metadata(format!("/proc/self/fd/{}", tree.as_raw_fd()))
        .map_or(true, |m| m.is_dir());
    if is_dir {
        std::fs::create_dir_all(path).map_err(|e| err("mkdir", e))?;
    } else {
        if let Some(parent) = path.parent() {
            std::fs::create_dir_all(parent).map_err(|e| err("mkdir", e))?;
        }
        // A socket or any other file is mounted over an empty regular file.
        std::fs::File::create(path).map_err(|e| err("mount point", e))?;
    }
    let c = CString::new(path.as_os_str().as_encoded_bytes())
        .map_err(|_| format!("{}: NUL in path", path.display()))?;
    let empty = c"";
    // SAFETY: both strings are live and NUL-terminated; `tree` is a detached mount fd we own.
    let r = unsafe {
        libc::syscall(
            libc::SYS_move_mount,
            tree.as_raw_fd(),
            empty.as_ptr(),
            libc::AT_FDCWD,
            c.as_ptr(),
            libc::MOVE_MOUNT_F_EMPTY_PATH,
        )
    };
    if r < 0 {
        return Err(err("move_mount", std::io::Error::last_os_error()));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn granted_paths_their_link_targets_and_sockets_are_carried() {
        let root = std::env::temp_dir().join(format!("mount-view-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&root);
        let run = root.join("run");
        let etc = root.join("etc");
        let var = root.join("var");
        for d in [
            run.join("resolve"),
            run.join("db"),
            etc.clone(),
            var.clone(),
        ] {
            std::fs::create_dir_all(d).expect("mkdir");
        }
        std::fs::write(run.join("resolve/stub.conf"), "nameserver 127.0.0.53\n").expect("w");
        std::fs::write(run.join("db/sock"), "").expect("w");
        std::fs::write(run.join("other.sock"), "").expect("w");
        // etc/resolv.conf → run/hop → run/resolve/stub.conf: a chain through the hidden dir.
        std::os::unix::fs::symlink(run.join("hop"), etc.join("resolv.conf")).expect("link");
        std::os::unix::fs::symlink("resolve/stub.conf", run.join("hop")).expect("link");
        // var/run → run, as on Debian: not a directory of its own.
        std::os::unix::fs::symlink(&run, var.join("run")).expect("link");
        let s = |p: &Path| p.to_str().expect("utf-8").to_string();
        let (run_s, varrun_s) = (s(&run), s(&var.join("run")));
        let hidden = [
            (run_s.as_str(), "mode=0755"),
            (varrun_s.as_str(), "mode=0755"),
        ];
        let granted = [
            etc.join("resolv.conf"),
            var.join("run/db/sock"),
            run.join("missing"),
            root.join("elsewhere"),
        ];
        let p = plan(&hidden, &granted);
        assert_eq!(p.tmpfs, vec![(run.clone(), "mode=0755".to_string())]);
        assert_eq!(
            p.carry,
            vec![run.join("db/sock"), run.join("resolve/stub.conf")],
            "the socket (reached through the /var/run link) and the link chain's end"
        );
        assert_eq!(
            p.links,
            vec![(run.join("hop"), PathBuf::from("resolve/stub.conf"))]
        );
        // A granted tree carries what is below it, links included.
        let p = plan(
            &hidden,
            &[run.join("resolve"), run.join("resolve/stub.conf")],
        );
        assert_eq!(p.carry, vec![run.join("resolve")]);
        // Granting the hidden directory itself gives an empty one (as for /tmp).
        assert!(plan(&hidden, std::slice::from_ref(&run)).carry.is_empty());
        let _ = std::fs::remove_dir_all(&root);
    }

    #[test]
    fn paths_are_normalized_lexically() {
        assert_eq!(
            normalize(Path::new("/a/b/../c/./d")),
            PathBuf::from("/a/c/d")
        );
        assert_eq!(normalize(Path::new("/../x")), PathBuf::from("/x"));
    }
}
