//! 200 `mcp-guard exec` cycles leave no process, session cgroup, mount or eBPF program behind.
//! Alone in its test binary so that nothing else runs while it counts.

use std::process::{Command, Stdio};

use mcp_guard_tests::{mcp_guard, require_root, residue::Residue, scratch_root};

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
    let before = Residue::now(b"mcp-guard");
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
    let after = before.wait_back(b"mcp-guard");
    assert_eq!(after, before, "what 200 exec cycles left behind");
    let _ = std::fs::remove_dir_all(&dir);
}
