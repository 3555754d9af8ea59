//! What finished sessions could leave behind on the host, counted: for the exec-cycle tests.

use std::time::{Duration, Instant};

/// Processes, session cgroups, mounts and mcp-guard eBPF programs present now.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Residue {
    /// Processes whose command line contains the marker (or that run `/bin/true`).
    pub processes: usize,
    /// Session cgroups below `mcp-guard/` (v2 or v1 mounts).
    pub cgroups: usize,
    /// This process's mount table entries.
    pub mounts: usize,
    /// Loaded eBPF programs named like mcp-guard's.
    pub programs: usize,
}

impl Residue {
    /// Counts now; `marker` picks the processes (`b"mcp-guard"`, `b"__session"`).
    pub fn now(marker: &[u8]) -> Residue {
        let processes = std::fs::read_dir("/proc")
            .expect("/proc")
            .flatten()
            .filter(|e| {
                std::fs::read(e.path().join("cmdline")).is_ok_and(|c| {
                    c.windows(marker.len()).any(|w| w == marker) || c.starts_with(b"/bin/true")
                })
            })
            .count();
        let cgroups = [
            "/sys/fs/cgroup/unified/mcp-guard",
            "/sys/fs/cgroup/mcp-guard",
        ]
        .iter()
        .filter_map(|d| std::fs::read_dir(d).ok())
        .flat_map(std::iter::Iterator::flatten)
        .filter(|e| e.path().is_dir())
        .count();
        let mounts = std::fs::read_to_string("/proc/self/mountinfo")
            .expect("mountinfo")
            .lines()
            .count();
        let programs = aya::programs::loaded_programs()
            .flatten()
            .filter(|p| {
                p.name_as_str()
                    .is_some_and(|n| mcp_guard_kernel::loader::PROGRAM_NAMES.contains(&n))
            })
            .count();
        Residue {
            processes,
            cgroups,
            mounts,
            programs,
        }
    }

    /// Counts once the counts stop changing (the kernel frees closed programs after an RCU
    /// grace period; an earlier test's may still be going), within 10 s.
    pub fn settled(marker: &[u8]) -> Residue {
        let mut last = Residue::now(marker);
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            std::thread::sleep(Duration::from_millis(500));
            let now = Residue::now(marker);
            if now == last || Instant::now() > deadline {
                return now;
            }
            last = now;
        }
    }

    /// Counts until they are back to `self` or 10 s passed; the last count.
    #[must_use]
    pub fn wait_back(&self, marker: &[u8]) -> Residue {
        let deadline = Instant::now() + Duration::from_secs(10);
        let mut now = Residue::now(marker);
        while now != *self && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(200));
            now = Residue::now(marker);
        }
        now
    }
}
