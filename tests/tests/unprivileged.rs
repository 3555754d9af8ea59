//! `mcp-guard exec` by an unprivileged user with no agent to hand the session to: it says what
//! it cannot enforce without root and refuses (77), or, when the policy allows degrading, runs
//! the server with what an unprivileged process can apply to itself (landlock, seccomp,
//! `no_new_privs`) behind the MCP proxy.

use std::process::{Command, Stdio};

use mcp_guard_tests::{
    agent::{NOBODY, Public},
    describe, fixture, mcp_guard, python, require_root, workspace_bin,
};

fn as_nobody(guard: &std::path::Path, public: &Public, args: &[&str]) -> Command {
    let mut cmd = Command::new("setpriv");
    cmd.arg(format!("--reuid={NOBODY}"))
        .arg(format!("--regid={NOBODY}"))
        .args(["--clear-groups", "--"])
        .arg(guard)
        .arg("--state-dir")
        .arg(public.0.join("state"))
        .arg("exec")
        // No agent listens there: exec runs the session itself.
        .arg("--agent-socket")
        .arg(public.0.join("no-agent.sock"))
        .args(args)
        .current_dir(&public.0);
    cmd
}

#[test]
fn without_root_or_agent_exec_refuses_or_runs_landlock_seccomp_and_the_proxy_only() {
    require_root();
    let public = Public::new("unprivileged");
    let guard = public.copy(&mcp_guard(), "mcp-guard");
    let echo = public.copy(&workspace_bin("mcp_echo_server"), "mcp_echo_server");
    // The unprivileged user's own state dir: mcp-guard refuses one other users can write.
    std::fs::create_dir_all(public.0.join("state")).expect("state dir");
    std::os::unix::fs::chown(public.0.join("state"), Some(NOBODY), Some(NOBODY))
        .expect("chown the state dir");
    let dir = public.0.display().to_string();
    let policy = |name: &str, more: &str| {
        let path = public.0.join(format!("{name}.toml"));
        std::fs::write(
            &path,
            format!(
                "name = \"{name}\"\n[filesystem]\nread = [\"/usr\", \"/bin\", \"/lib\", \
                 \"/lib64\", \"/etc/ld.so.cache\", \"{dir}\"]\nexec = [\"/usr\", \"/bin\", \
                 \"/lib\", \"/lib64\", \"{dir}\"]\n[limits]\nmemory = \"256M\"\n{more}"
            ),
        )
        .expect("policy");
        let chmod = Command::new("chmod")
            .arg("0644")
            .arg(&path)
            .status()
            .expect("chmod");
        assert!(chmod.success());
        path.display().to_string()
    };
    let strict = policy("strict", "");
    let degraded = policy("degraded", "[enforcement]\nallow_degraded = true\n");
    let degraded_mcp = policy(
        "degraded-mcp",
        "[enforcement]\nallow_degraded = true\n[tools]\ndeny = [\"echo\"]\n",
    );

    // Fail closed, saying exactly what is missing and how to get it.
    let out = as_nobody(
        &guard,
        &public,
        &["--passthrough", "--policy", &strict, "--"],
    )
    .arg("/bin/true")
    .stdin(Stdio::null())
    .output()
    .expect("exec");
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(77), "{}", describe(&out));
    for said in [
        "not root",
        "eBPF egress filtering",
        "kernel event stream",
        "namespaces",
        "[limits]",
        "start the agent",
        "allow_degraded",
    ] {
        assert!(err.contains(said), "no {said:?} in:\n{err}");
    }

    // Degraded: it runs, as the user, with landlock and seccomp applied, and says what is not.
    let script = "id -u; cat /etc/hostname 2>/dev/null || echo read-denied; \
                  unshare -r true 2>/dev/null || echo unshare-denied; exit 5";
    let out = as_nobody(
        &guard,
        &public,
        &["--passthrough", "--policy", &degraded, "--"],
    )
    .args(["/bin/sh", "-c", script])
    .stdin(Stdio::null())
    .output()
    .expect("exec");
    assert_eq!(out.status.code(), Some(5), "{}", describe(&out));
    assert_eq!(
        String::from_utf8_lossy(&out.stdout),
        format!("{NOBODY}\nread-denied\nunshare-denied\n"),
        "{}",
        describe(&out)
    );
    assert!(
        String::from_utf8_lossy(&out.stderr)
            .contains("NOT ENFORCED (enforcement.allow_degraded, not root)"),
        "{}",
        describe(&out)
    );

    // The MCP proxy's rules hold without root: the denied tool is hidden from the SDK client.
    let exec = as_nobody(&guard, &public, &["--policy", &degraded_mcp, "--"]);
    let out = Command::new(python())
        .arg(fixture("mcp_client.py"))
        .arg("--")
        .arg(exec.get_program())
        .args(exec.get_args())
        .arg(&echo)
        .current_dir(&public.0)
        .output()
        .expect("MCP client");
    assert!(out.status.success(), "{}", describe(&out));
    let answer: serde_json::Value = serde_json::from_slice(&out.stdout).expect("client JSON");
    assert_eq!(answer["tools"], serde_json::json!([]), "{answer}");
}
