//! The session's analysis runs without the eBPF kernel guard too: the call-level detection rules
//! judge what the proxy saw. A server whose client keeps calling a tool the policy denies, in a
//! session where no eBPF program could load (`allow_degraded`), raises a `denial-burst` alert
//! naming the call, as it would with the kernel guard attached.

use std::{
    os::unix::process::CommandExt,
    path::PathBuf,
    process::{Command, Output},
};

use mcp_guard_tests::{
    describe, fixture, mcp_guard, python, require_root, scratch_root, workspace_bin,
};
use serde_json::{Value, json};

struct Scene {
    root: PathBuf,
    state: PathBuf,
    policy: PathBuf,
}

fn scene(tag: &str, extra: &str) -> Scene {
    let root = scratch_root()
        .join("analysis-unguarded")
        .join(format!("{tag}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&root);
    std::fs::create_dir_all(&root).expect("scene dir");
    let bindir = workspace_bin("mcp_echo_server")
        .parent()
        .expect("bin dir")
        .display()
        .to_string();
    let policy = root.join("policy.toml");
    std::fs::write(
        &policy,
        format!(
            "name = \"unguarded\"\n[filesystem]\nread = [\"/usr\", \"/lib\", \"/lib64\", \"/bin\", \
             \"/etc/ld.so.cache\", \"{bindir}\"]\nexec = [\"/usr\", \"/lib\", \"/lib64\", \
             \"/bin\", \"{bindir}\"]\n[tools]\ndeny = [\"echo\"]\n{extra}\n"
        ),
    )
    .expect("policy");
    Scene {
        state: root.join("state"),
        root,
        policy,
    }
}

/// Drops CAP_BPF, CAP_PERFMON and CAP_SYS_ADMIN from the bounding set before exec: root then
/// starts without them, and no eBPF program can load (the cgroup and the jail still work).
fn without_bpf_privileges(cmd: &mut Command) -> &mut Command {
    // SAFETY: the hook only calls prctl(2), async-signal safe, with constant arguments.
    unsafe {
        cmd.pre_exec(|| {
            // capability.h: CAP_SYS_ADMIN 21, CAP_PERFMON 38, CAP_BPF 39.
            for cap in [21, 38, 39] {
                if libc::prctl(libc::PR_CAPBSET_DROP, cap, 0, 0, 0) != 0 {
                    return Err(std::io::Error::last_os_error());
                }
            }
            Ok(())
        })
    }
}

/// The SDK client calling the denied `echo` `calls` times through `mcp-guard exec` (flags
/// `exec_flags`), with eBPF out of reach.
fn session(scene: &Scene, exec_flags: &[&str], calls: usize) -> Output {
    let steps: Vec<Value> = (0..calls)
        .map(|i| json!({"call": "echo", "args": {"message": format!("hi {i}")}}))
        .collect();
    let mut cmd = Command::new(python());
    cmd.arg(fixture("detect_client.py"))
        .arg(Value::from(steps).to_string())
        .arg("--")
        .arg(mcp_guard())
        .arg("--state-dir")
        .arg(&scene.state)
        .args(["exec", "--standalone", "--name", "unguarded"])
        .args(exec_flags)
        .arg("--policy")
        .arg(&scene.policy)
        .arg("--")
        .arg(workspace_bin("mcp_echo_server"));
    without_bpf_privileges(&mut cmd)
        .output()
        .expect("run the SDK client")
}

fn query(scene: &Scene, args: &[&str]) -> Vec<Value> {
    let out = Command::new(mcp_guard())
        .arg("--state-dir")
        .arg(&scene.state)
        .args(args)
        .output()
        .expect("query");
    assert!(out.status.success(), "{}", describe(&out));
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(|l| serde_json::from_str(l).expect("a JSON line"))
        .collect()
}

#[test]
fn without_the_kernel_guard_a_burst_of_denied_calls_is_alerted_naming_the_call() {
    require_root();
    let scene = scene("burst", "[enforcement]\nallow_degraded = true\n");
    let out = session(&scene, &[], 5);
    assert!(out.status.success(), "{}", describe(&out));
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("running WITHOUT the eBPF kernel guard"),
        "the kernel guard must not be attached for this test: {}",
        describe(&out)
    );
    let answers: Vec<Value> = serde_json::from_slice(&out.stdout).expect("client JSON");
    assert_eq!(answers.len(), 5, "{answers:?}");
    assert!(
        answers
            .iter()
            .all(|a| a["error"].is_string() || a["is_error"] == true),
        "the proxy refuses the denied tool: {answers:?}"
    );

    let calls = query(&scene, &["calls", "--json", "--tool", "echo"]);
    assert_eq!(calls.len(), 5, "{calls:?}");
    assert!(calls.iter().all(|c| c["decision"] == "denied"), "{calls:?}");
    let alerts = query(&scene, &["alerts", "--json"]);
    let burst = alerts
        .iter()
        .find(|a| a["rule"] == "denial-burst")
        .unwrap_or_else(|| panic!("a denial-burst alert without eBPF: {alerts:?}"));
    let call_ids: Vec<&str> = calls.iter().filter_map(|c| c["call_id"].as_str()).collect();
    assert!(
        burst["call_id"]
            .as_str()
            .is_some_and(|id| call_ids.contains(&id)),
        "the alert names one of the denied calls: {burst} / {call_ids:?}"
    );
    assert_eq!(burst["tool"], "echo", "{burst}");
    let _ = std::fs::remove_dir_all(&scene.root);
}
