//! The mount table (`/proc/self/mountinfo`): where cgroup hierarchies and tracefs live.
//!
//! One parser for the launcher (cgroup placement) and the doctor (what the host offers).

use std::{
    io,
    path::{Path, PathBuf},
};

/// Reads and parses this process's mount table.
pub fn read() -> io::Result<Vec<Mount>> {
    Ok(parse(&std::fs::read_to_string("/proc/self/mountinfo")?))
}

/// One line of `/proc/self/mountinfo`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Mount {
    /// The mounted filesystem's own path that appears there (`/` for a hierarchy root).
    pub root: PathBuf,
    /// Where it is mounted.
    pub mount_point: PathBuf,
    /// Filesystem type (`cgroup2`, `cgroup`, `tracefs`, ...).
    pub fstype: String,
    /// Per-superblock options (for cgroup v1: the controllers of that hierarchy).
    pub super_options: Vec<String>,
}

/// Parses `/proc/self/mountinfo` (proc(5)); malformed lines are skipped.
pub fn parse(text: &str) -> Vec<Mount> {
    text.lines()
        .filter_map(|line| {
            let (left, right) = line.split_once(" - ")?;
            let mut left = left.split(' ').skip(3);
            let root = left.next()?;
            let mount_point = left.next()?;
            let mut right = right.split(' ');
            let fstype = right.next()?;
            let _source = right.next()?;
            let super_options = right
                .next()
                .unwrap_or("")
                .split(',')
                .filter(|o| !o.is_empty())
                .map(str::to_string)
                .collect();
            Some(Mount {
                root: PathBuf::from(unescape_octal(root)),
                mount_point: PathBuf::from(unescape_octal(mount_point)),
                fstype: fstype.to_string(),
                super_options,
            })
        })
        .collect()
}

/// Undoes mountinfo's `\ooo` escapes (space, tab, newline, backslash in paths).
fn unescape_octal(s: &str) -> String {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'\\'
            && i + 3 < bytes.len()
            && bytes[i + 1..i + 4]
                .iter()
                .all(|b| (b'0'..=b'7').contains(b))
        {
            let v = (bytes[i + 1] - b'0') * 64 + (bytes[i + 2] - b'0') * 8 + (bytes[i + 3] - b'0');
            out.push(v);
            i += 4;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// The first cgroup v2 mount.
pub fn cgroup2_mount(mounts: &[Mount]) -> Option<&Path> {
    mounts
        .iter()
        .find(|m| m.fstype == "cgroup2")
        .map(|m| m.mount_point.as_path())
}

/// The cgroup v1 mount holding `controller`, if any.
pub fn cgroup1_mount<'a>(mounts: &'a [Mount], controller: &str) -> Option<&'a Path> {
    mounts
        .iter()
        .find(|m| m.fstype == "cgroup" && m.super_options.iter().any(|o| o == controller))
        .map(|m| m.mount_point.as_path())
}

#[cfg(test)]
mod tests {
    use super::*;

    const MOUNTINFO: &str = "\
24 29 0:22 / /sys rw,nosuid,nodev,noexec,relatime shared:7 - sysfs sysfs rw
30 24 0:26 / /sys/fs/cgroup ro,nosuid,nodev,noexec shared:9 - tmpfs tmpfs ro,mode=755
31 30 0:27 / /sys/fs/cgroup/unified rw,nosuid,nodev,noexec,relatime shared:10 - cgroup2 cgroup2 rw,nsdelegate
34 30 0:30 / /sys/fs/cgroup/memory rw,nosuid shared:14 - cgroup cgroup rw,memory
35 30 0:31 / /sys/fs/cgroup/cpu,cpuacct rw,nosuid shared:15 - cgroup cgroup rw,cpu,cpuacct
36 30 0:32 / /sys/fs/cgroup/pids rw,nosuid shared:16 - cgroup cgroup rw,pids
40 24 0:12 / /sys/kernel/tracing rw,nosuid,nodev,noexec,relatime shared:20 - tracefs tracefs rw
41 1 0:40 / /mnt/with\\040space rw - ext4 /dev/sda1 rw
garbage line without separator
";

    #[test]
    fn mountinfo_finds_cgroup_hierarchies_and_unescapes_paths() {
        let mounts = parse(MOUNTINFO);
        assert_eq!(mounts.len(), 8, "the garbage line is skipped");
        assert_eq!(
            cgroup2_mount(&mounts),
            Some(Path::new("/sys/fs/cgroup/unified"))
        );
        assert_eq!(
            cgroup1_mount(&mounts, "cpu"),
            Some(Path::new("/sys/fs/cgroup/cpu,cpuacct"))
        );
        assert_eq!(
            cgroup1_mount(&mounts, "memory"),
            Some(Path::new("/sys/fs/cgroup/memory"))
        );
        // "cpu" must not match "cpuacct" alone or "cpuset".
        assert_eq!(cgroup1_mount(&mounts, "cpuset"), None);
        assert!(
            mounts
                .iter()
                .any(|m| m.mount_point == Path::new("/mnt/with space"))
        );
        assert!(
            mounts
                .iter()
                .any(|m| m.fstype == "tracefs" && m.mount_point == Path::new("/sys/kernel/tracing"))
        );
    }

    #[test]
    fn pure_v2_host_has_no_v1_controllers() {
        let mounts = parse(
            "29 24 0:25 / /sys/fs/cgroup rw,nosuid shared:4 - cgroup2 cgroup2 rw,nsdelegate,memory_recursiveprot\n",
        );
        assert_eq!(cgroup2_mount(&mounts), Some(Path::new("/sys/fs/cgroup")));
        assert_eq!(cgroup1_mount(&mounts, "memory"), None);
    }
}
