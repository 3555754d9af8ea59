//! The jail's /dev, as bubblewrap's `--dev` and container runtimes make it: the standard
//! devices `/dev/null`, `/dev/zero`, `/dev/full`, `/dev/random` and `/dev/urandom`, readable
//! and writable whatever the policy says; a private `/dev/pts` (a new devpts instance, with
//! `/dev/ptmx` pointing into it); the jail's own `/dev/shm`; the `/dev/fd` and stdio links. No
//! other device is there, so a policy that reads `/` does not read the disks, consoles or
//! `/dev/kvm` with it. A device the policy names by its own path below /dev (`/dev/dri`, say)
//! is carried in, as the policy asks.
//!
//! Without a mount namespace (exec not root) the host's /dev stays; only the standard devices
//! are granted there.

use std::path::{Path, PathBuf};

use super::{landlock::LandlockSpec, mount_view};

/// The devices every server gets, read-write.
pub const STANDARD: [&str; 5] = [
    "/dev/null",
    "/dev/zero",
    "/dev/full",
    "/dev/random",
    "/dev/urandom",
];

/// Private to each jail: granted read-write when the jail has its own /dev.
const PRIVATE: [&str; 2] = ["/dev/pts", "/dev/shm"];

/// Adds the standard devices to the landlock sets; with a private /dev (`own_dev`), its own
/// `/dev/pts` and `/dev/shm` too, unless the policy carries host files into /dev/shm (those
/// keep the rights the policy gives them).
pub fn grant(spec: &mut LandlockSpec, own_dev: bool, extra_sockets: &[PathBuf]) {
    let mut add: Vec<PathBuf> = STANDARD.iter().map(PathBuf::from).collect();
    if own_dev {
        let carried_into_shm = spec
            .read
            .iter()
            .chain(&spec.write)
            .chain(&spec.exec)
            .chain(extra_sockets)
            .any(|p| p.starts_with("/dev/shm") && p != Path::new("/dev/shm"));
        add.extend(
            PRIVATE
                .iter()
                .map(PathBuf::from)
                .filter(|p| !(carried_into_shm && p.starts_with("/dev/shm"))),
        );
    }
    for p in add {
        if !spec.read.contains(&p) {
            spec.read.push(p.clone());
        }
        if !spec.write.contains(&p) {
            spec.write.push(p);
        }
    }
}

/// The device paths below /dev the policy names itself (carried into the jail's /dev).
fn named(granted: &[PathBuf]) -> Vec<PathBuf> {
    let mut out: Vec<PathBuf> = granted
        .iter()
        .filter(|p| p.starts_with("/dev") && p.as_path() != Path::new("/dev"))
        .filter(|p| !STANDARD.iter().any(|s| p.as_path() == Path::new(s)))
        .filter(|p| !PRIVATE.iter().any(|s| p.starts_with(s)) && !p.ends_with("ptmx"))
        .filter(|p| std::fs::symlink_metadata(p).is_ok())
        .cloned()
        .collect();
    out.sort();
    out.dedup();
    let all = out.clone();
    out.retain(|p| !all.iter().any(|o| o != p && p.starts_with(o)));
    out
}

/// In the jail's mount namespace, after [`mount_view::apply`] made its /dev/shm: replaces /dev
/// with a fresh tmpfs holding only what the module doc lists (and the policy's `granted`
/// paths below /dev).
pub fn mount(granted: &[PathBuf]) -> Result<(), String> {
    use nix::mount::{MsFlags, mount};
    // Taken from the current view before the fresh /dev covers it.
    let mut keep = Vec::new();
    for p in STANDARD
        .iter()
        .map(PathBuf::from)
        .chain(named(granted))
        .chain(std::iter::once(PathBuf::from("/dev/shm")))
    {
        if std::fs::symlink_metadata(&p).is_ok() {
            keep.push((mount_view::clone_tree(&p)?, p));
        }
    }
    mount(
        Some("tmpfs"),
        "/dev",
        Some("tmpfs"),
        MsFlags::MS_NOSUID | MsFlags::MS_NOEXEC,
        Some("mode=0755,size=1m"),
    )
    .map_err(|e| format!("mounting the jail's own /dev: {e}"))?;
    for (tree, path) in &keep {
        mount_view::attach_tree(path, tree)?;
    }
    let pts = Path::new("/dev/pts");
    std::fs::create_dir_all(pts).map_err(|e| format!("creating the jail's /dev/pts: {e}"))?;
    mount(
        Some("devpts"),
        pts,
        Some("devpts"),
        MsFlags::MS_NOSUID | MsFlags::MS_NOEXEC,
        Some("newinstance,ptmxmode=0666,mode=0620"),
    )
    .map_err(|e| format!("mounting the jail's own /dev/pts: {e}"))?;
    for (link, target) in [
        ("/dev/ptmx", "pts/ptmx"),
        ("/dev/fd", "/proc/self/fd"),
        ("/dev/stdin", "/proc/self/fd/0"),
        ("/dev/stdout", "/proc/self/fd/1"),
        ("/dev/stderr", "/proc/self/fd/2"),
    ] {
        std::os::unix::fs::symlink(target, link)
            .map_err(|e| format!("creating {link} in the jail: {e}"))?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec(read: &[&str]) -> LandlockSpec {
        LandlockSpec {
            abi: 1,
            read: read.iter().map(PathBuf::from).collect(),
            write: Vec::new(),
            exec: Vec::new(),
            tcp_ports: None,
            scope: false,
            abstract_unscoped: false,
        }
    }

    #[test]
    fn standard_devices_are_read_write_and_private_ones_only_with_an_own_dev() {
        let mut s = spec(&["/usr"]);
        grant(&mut s, false, &[]);
        assert!(s.write.iter().any(|p| p == Path::new("/dev/null")));
        assert!(!s.write.iter().any(|p| p == Path::new("/dev/pts")));
        let mut s = spec(&["/usr"]);
        grant(&mut s, true, &[]);
        assert!(s.write.iter().any(|p| p == Path::new("/dev/shm")));
        assert!(s.write.iter().any(|p| p == Path::new("/dev/pts")));
        // Host files carried into /dev/shm keep the policy's rights only.
        let mut s = spec(&["/dev/shm/db"]);
        grant(&mut s, true, &[]);
        assert!(!s.write.iter().any(|p| p == Path::new("/dev/shm")));
    }

    #[test]
    fn only_devices_the_policy_names_are_carried() {
        let granted: Vec<PathBuf> = ["/", "/dev", "/dev/null", "/dev/shm/x", "/dev/zero", "/usr"]
            .iter()
            .map(PathBuf::from)
            .collect();
        assert!(named(&granted).is_empty());
        let granted = vec![PathBuf::from("/dev/kmsg"), PathBuf::from("/dev/nope")];
        assert_eq!(named(&granted), vec![PathBuf::from("/dev/kmsg")]);
    }
}
