//! TCP binds in a guarded cgroup: the `cgroup/bind4`/`bind6` programs let a server bind only
//! the ports its policy allows. They keep the `tcp_bind` promise where landlock has no TCP rules
//! (before Linux 6.7); here they act alone, without landlock: a process in the guarded cgroup
//! binds the way a hostile server would.
//!
//! Needs root. Each test makes its own cgroup and runs the `netprobe` fixture inside.

mod kernel_common;

use kernel_common::{EPERM, TestCgroup, free_port, lines, netprobe, run_outside, runtime};
use mcp_guard_kernel::loader::{KernelGuard, ServerSpec};
use mcp_guard_tests::require_root;

/// A server that may bind the ports of `tcp_bind` (`None`: any), with no egress at all.
fn spec(tcp_bind: Option<Vec<(u16, u16)>>, observe: bool) -> ServerSpec {
    ServerSpec {
        server: "binder".into(),
        session: "s1".into(),
        observe,
        // About binds, not the Unix-socket promise: this runs on kernels without connect_unix.
        unix_optional: true,
        tcp_bind,
        ..Default::default()
    }
}

/// Two distinct ports with nothing bound to them.
fn two_free_ports() -> (u16, u16) {
    let a = free_port();
    loop {
        let b = free_port();
        if b != a {
            return (a, b);
        }
    }
}

#[test]
fn a_guarded_server_binds_only_the_ports_its_policy_allows() {
    require_root();
    let guard = KernelGuard::load().expect("the eBPF object loads");
    let (allowed, denied) = two_free_ports();
    let cg = TestCgroup::new("tcpbind");
    let _server = runtime()
        .block_on(guard.add_server(&cg.dir, spec(Some(vec![(allowed, allowed)]), false)))
        .expect("guard the cgroup");
    let args: Vec<String> = [
        // A listener for whoever finds it: on loopback, on every address, over IPv6, and
        // through an IPv4-mapped address on an IPv6 socket.
        format!("bind:127.0.0.1:{denied}"),
        format!("bind:0.0.0.0:{denied}"),
        format!("bind:[::1]:{denied}"),
        format!("bind:[::ffff:127.0.0.1]:{denied}"),
        // An ephemeral port (port 0): not one of the policy's either, as with landlock.
        "bind:127.0.0.1:0".to_string(),
        "bind:[::]:0".to_string(),
        // The policy's own port, on both families.
        format!("bind:127.0.0.1:{allowed}"),
        format!("bind:[::1]:{allowed}"),
        // An MPTCP listener: its bind reaches the programs through its TCP subflow.
        format!("mbind:127.0.0.1:{denied}"),
        format!("mbind:[::1]:{denied}"),
        format!("mbind:127.0.0.1:{allowed}"),
        // UDP is not judged (as landlock's TCP rules do not).
        format!("ubind:127.0.0.1:{denied}"),
        format!("ubind:[::1]:{denied}"),
    ]
    .into();
    let ok = "ok";
    assert_eq!(
        lines(&cg.run(&netprobe(), &args)),
        [
            EPERM, EPERM, EPERM, EPERM, EPERM, EPERM, ok, ok, EPERM, EPERM, ok, ok, ok
        ],
        "inside the guarded cgroup: {args:?}"
    );
    assert_eq!(
        lines(&run_outside(&netprobe(), &args)),
        [ok; 13],
        "a process outside the guarded cgroup is unaffected: {args:?}"
    );
}

#[test]
fn observe_and_a_policy_on_every_port_leave_binds_alone() {
    require_root();
    let guard = KernelGuard::load().expect("the eBPF object loads");
    let rt = runtime();
    let observed = TestCgroup::new("tcpbind-observe");
    let unlimited = TestCgroup::new("tcpbind-any");
    let _h1 = rt
        .block_on(guard.add_server(&observed.dir, spec(Some(Vec::new()), true)))
        .expect("guard observed");
    let _h2 = rt
        .block_on(guard.add_server(&unlimited.dir, spec(None, false)))
        .expect("guard unlimited");
    let port = free_port();
    let args = vec![format!("bind:127.0.0.1:{port}"), "bind:[::1]:0".to_string()];
    assert_eq!(lines(&observed.run(&netprobe(), &args)), ["ok", "ok"]);
    assert_eq!(lines(&unlimited.run(&netprobe(), &args)), ["ok", "ok"]);
}
