//! 200 `mcp-guard exec` cycles through the agent leave no process, session cgroup, mount,
//! pinned object or map entry behind, and the agent's programs stay the one set it loaded.
//! Alone in its test binary so that nothing else runs while it counts.

use std::process::Stdio;

use mcp_guard_tests::{
    agent::{Agent, PinDir},
    mcp_guard, require_root,
    residue::Residue,
    scratch_root,
};

/// Entries of the agent's pinned `GUARDED` map (every version directory).
fn guarded_entries(pins: &PinDir) -> usize {
    let mut n = 0;
    for version in std::fs::read_dir(&pins.0).expect("pin dir").flatten() {
        let data = aya::maps::MapData::from_pin(version.path().join("maps/GUARDED"))
            .expect("the pinned GUARDED map");
        let map: aya::maps::HashMap<_, u64, mcp_guard_ebpf::GuardConfig> =
            aya::maps::HashMap::try_from(aya::maps::Map::HashMap(data)).expect("a hash map");
        n += map.keys().count();
    }
    n
}

#[test]
fn two_hundred_exec_cycles_through_the_agent_leave_nothing_behind() {
    require_root();
    let dir = scratch_root()
        .join("mcp-guard-tests")
        .join(format!("agent-cycles-agent-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(dir.join("policies")).expect("test dir");
    std::fs::write(
        dir.join("policies/cycle.toml"),
        "name = \"cycle\"\n[filesystem]\nread = [\"/usr\", \"/bin\", \"/lib\", \"/lib64\", \"/etc\"]\n\
         exec = [\"/usr\", \"/bin\"]\n",
    )
    .expect("write policy");
    let pins = PinDir::new("cycles");
    let agent = Agent::start(&dir, &pins, "");
    // Programs closed by an earlier test binary are freed after an RCU grace period: count
    // from a settled state.
    let before = Residue::settled(b"__session");
    for i in 0..200 {
        let out = agent
            .exec(
                &mcp_guard(),
                0,
                &["--passthrough", "--policy", "cycle", "--", "/bin/true"],
            )
            .stdin(Stdio::null())
            .output()
            .expect("exec");
        assert!(
            out.status.success(),
            "cycle {i}: {}\nagent:\n{}",
            String::from_utf8_lossy(&out.stderr),
            agent.log()
        );
    }
    // Workers end after answering their client: give the last ones a moment.
    let after = before.wait_back(b"__session");
    assert_eq!(
        after, before,
        "what 200 cycles through the agent left behind"
    );
    assert!(
        pins.pinned_cgroups().is_empty(),
        "{:?}",
        pins.pinned_cgroups()
    );
    assert_eq!(guarded_entries(&pins), 0, "GUARDED entries left");
    drop(agent);
    let _ = std::fs::remove_dir_all(&dir);
}
