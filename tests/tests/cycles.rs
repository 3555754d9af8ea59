//! 200 `mcp-guard exec` cycles leave no process, session cgroup, mount or eBPF program behind.
//! Alone in its test binary so that nothing else runs while it counts.

use std::process::{Command, Stdio};

use mcp_guard_tests::{mcp_guard, require_root, scratch_root};

/// What a finished session could leave behind: processes, session cgroups, mounts, eBPF
/// programs.
#[derive(Debug, PartialEq)]
struct Residue {
    processes: usize,
    cgroups: usize,
    mounts: usize,
    programs: usize,
}

fn residue() -> Residue {
    let processes = std::fs::read_dir("/proc")
        .expect("/proc")
        .flatten()
        .filter(|e| {
            std::fs::read(e.path().join("cmdline")).is_ok_and(|c| {
                c.windows(9).any(|w| w == b"mcp-guard") || c.starts_with(b"/bin/true")
            })
        })
        .count();
    let cgroups = [
        "/sys/fs/cgroup/unified/mcp-guard",
        "/sys/fs/cgroup/mcp-guard",
    ]
    .iter()
    .filter_map(|d| std::fs::read_dir(d).ok())
    .flat_map(|d| d.flatten())
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
                .is_some_and(|n| mcp_guard::kernel::loader::PROGRAM_NAMES.contains(&n))
        })
        .count();
    Residue {
        processes,
        cgroups,
        mounts,
        programs,
    }
}

#[test]
fn two_hundred_exec_cycles_leave_nothing_behind() {
    require_root();
    let dir = scratch_root()
        .join("mcp-guard-tests")
        .join(format!("agent-cycles-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).expect("test dir");
    let policy = dir.join("cycle.toml");
    std::fs::write(
        &policy,
        "name = \"cycle\"\n[filesystem]\nread = [\"/usr\", \"/bin\", \"/lib\", \"/lib64\", \"/etc\"]\n\
         exec = [\"/usr\", \"/bin\"]\n",
    )
    .expect("write policy");
    let before = residue();
    for i in 0..200 {
        let out = Command::new(mcp_guard())
            .arg("--state-dir")
            .arg(dir.join("state"))
            .args(["exec", "--passthrough", "--policy"])
            .arg(&policy)
            .args(["--", "/bin/true"])
            .stdin(Stdio::null())
            .output()
            .expect("exec");
        assert!(
            out.status.success(),
            "cycle {i}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    // The only test in this binary (cargo runs test binaries one at a time): exact counts. The
    // kernel frees a closed program after an RCU grace period: give it a few seconds.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    let mut after = residue();
    while after != before && std::time::Instant::now() < deadline {
        std::thread::sleep(std::time::Duration::from_millis(200));
        after = residue();
    }
    assert_eq!(after, before, "what 200 exec cycles left behind");
    let _ = std::fs::remove_dir_all(&dir);
}
