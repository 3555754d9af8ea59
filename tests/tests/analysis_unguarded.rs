//! The session's analysis runs without the eBPF kernel guard too: the call-level detection rules
//! judge what the proxy saw. An unprivileged `mcp-guard exec` with no agent to hand the session
//! to runs without the kernel guard (`allow_degraded`: no cgroup, no eBPF); a client that keeps
//! calling a tool the policy denies raises a `denial-burst` alert naming the call, as it would
//! with the kernel guard attached.

use std::process::{Command, Output};

use mcp_guard_tests::{
    agent::{NOBODY, Public},
    describe, fixture, mcp_guard, python, require_root, workspace_bin,
};
use serde_json::{Value, json};

/// `mcp-guard` (the public copy) as the unprivileged user, with the public state dir.
fn as_nobody(public: &Public, args: &[&str]) -> Command {
    let mut cmd = Command::new("setpriv");
    cmd.arg(format!("--reuid={NOBODY}"))
        .arg(format!("--regid={NOBODY}"))
        .args(["--clear-groups", "--"])
        .arg(public.0.join("mcp-guard"))
        .arg("--state-dir")
        .arg(public.0.join("state"))
        .args(args)
        .current_dir(&public.0);
    cmd
}

fn query(public: &Public, args: &[&str]) -> Vec<Value> {
    let out = as_nobody(public, args).output().expect("query");
    assert!(out.status.success(), "{}", describe(&out));
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(|l| serde_json::from_str(l).expect("a JSON line"))
        .collect()
}

/// The SDK client calling the denied `echo` `calls` times through `mcp-guard exec`, run as the
/// unprivileged user with no agent listening.
fn session(public: &Public, policy: &str, calls: usize) -> Output {
    let steps: Vec<Value> = (0..calls)
        .map(|i| json!({"call": "echo", "args": {"message": format!("hi {i}")}}))
        .collect();
    let exec = as_nobody(
        public,
        &[
            "exec",
            // No agent listens there: exec runs the session itself.
            "--agent-socket",
            &public.0.join("no-agent.sock").display().to_string(),
            "--policy",
            policy,
            "--",
            &public.0.join("mcp_echo_server").display().to_string(),
        ],
    );
    Command::new(python())
        .arg(fixture("detect_client.py"))
        .arg(Value::from(steps).to_string())
        .arg("--")
        .arg(exec.get_program())
        .args(exec.get_args())
        .current_dir(&public.0)
        .output()
        .expect("run the SDK client")
}

#[test]
fn without_the_kernel_guard_a_burst_of_denied_calls_is_alerted_naming_the_call() {
    require_root();
    let public = Public::new("analysis-unguarded");
    public.copy(&mcp_guard(), "mcp-guard");
    public.copy(&workspace_bin("mcp_echo_server"), "mcp_echo_server");
    // The unprivileged user's own state dir: mcp-guard refuses one other users can write.
    std::fs::create_dir_all(public.0.join("state")).expect("state dir");
    std::os::unix::fs::chown(public.0.join("state"), Some(NOBODY), Some(NOBODY))
        .expect("chown the state dir");
    let dir = public.0.display().to_string();
    let policy = public.0.join("unguarded.toml");
    std::fs::write(
        &policy,
        format!(
            "name = \"unguarded\"\n[filesystem]\nread = [\"/usr\", \"/bin\", \"/lib\", \
             \"/lib64\", \"/etc/ld.so.cache\", \"{dir}\"]\nexec = [\"/usr\", \"/bin\", \"/lib\", \
             \"/lib64\", \"{dir}\"]\n[limits]\nmemory = \"256M\"\n[enforcement]\n\
             allow_degraded = true\n[tools]\ndeny = [\"echo\"]\n"
        ),
    )
    .expect("policy");
    let status = Command::new("chmod")
        .arg("0644")
        .arg(&policy)
        .status()
        .expect("chmod");
    assert!(status.success());

    let out = session(&public, &policy.display().to_string(), 5);
    assert!(out.status.success(), "{}", describe(&out));
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("NOT ENFORCED (enforcement.allow_degraded"),
        "the session must run without the kernel guard: {}",
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

    let calls = query(&public, &["calls", "--json", "--tool", "echo"]);
    assert_eq!(calls.len(), 5, "{calls:?}");
    assert!(calls.iter().all(|c| c["decision"] == "denied"), "{calls:?}");
    let alerts = query(&public, &["alerts", "--json"]);
    let burst = alerts
        .iter()
        .find(|a| a["rule"] == "denial-burst")
        .unwrap_or_else(|| panic!("a denial-burst alert without the kernel guard: {alerts:?}"));
    let call_ids: Vec<&str> = calls.iter().filter_map(|c| c["call_id"].as_str()).collect();
    assert!(
        burst["call_id"]
            .as_str()
            .is_some_and(|id| call_ids.contains(&id)),
        "the alert names one of the denied calls: {burst} / {call_ids:?}"
    );
    assert_eq!(burst["tool"], "echo", "{burst}");
}
