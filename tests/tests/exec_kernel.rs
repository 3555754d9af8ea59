//! `mcp-guard exec` with the eBPF kernel guard, through the real binary on the real kernel:
//! per-address egress verdicts (including denials landlock cannot express), host names resolved
//! at launch with their addresses in the events, the server's exec,
//! open and connect events in `mcp-guard events`, the session in the store, the in-kernel kill
//! of a sensitive read under `--observe`, processes outside the session unaffected, and exec's
//! degraded-mode message naming what `mcp-guard doctor` reports. Needs root.

mod kernel_common;

use std::{
    io::{BufRead as _, BufReader, Write as _},
    net::{TcpStream, UdpSocket},
    os::unix::process::CommandExt as _,
    path::{Path, PathBuf},
    process::{Command, Output, Stdio},
};

use kernel_common::fixture_bin;
use mcp_guard_model::Timestamp;
use mcp_guard_store::{Store, db_path};
use mcp_guard_tests::{
    describe, mcp_guard,
    net::{listen_on, port_on_two_addresses},
    require_root, scratch_root,
};
use serde_json::Value;

/// A scratch tree outside /tmp (the jail mounts a private /tmp): HOME, a readable work dir, a
/// file outside the read set, the state dir and a policy.
struct Sandbox {
    root: PathBuf,
    home: PathBuf,
    work: PathBuf,
    state: PathBuf,
    policy: PathBuf,
}

impl Sandbox {
    /// `extra` is appended to the policy (`[network]`, `[detect]`).
    fn new(name: &str, extra: &str) -> Self {
        let root = scratch_root()
            .join("exec-kernel-tests")
            .join(format!("{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&root);
        let home = root.join("home");
        let work = root.join("work");
        let state = root.join("state");
        std::fs::create_dir_all(home.join(".aws")).expect("create home");
        std::fs::create_dir_all(&work).expect("create work dir");
        std::fs::write(
            home.join(".aws/credentials"),
            "[default]\naws_secret_access_key=x\n",
        )
        .expect("plant credentials");
        std::fs::write(work.join("present.txt"), "x").expect("write work file");
        std::fs::write(root.join("outside.txt"), "x").expect("write outside file");
        let bindir = fixture_bin("netprobe")
            .parent()
            .expect("bin dir")
            .display()
            .to_string();
        let policy = root.join("policy.toml");
        std::fs::write(
            &policy,
            format!(
                r#"name = "exec-kernel"
[filesystem]
read = ["/usr", "/lib", "/lib64", "/bin", "/etc/ld.so.cache", "/proc", "{bindir}", "{work}"]
write = ["/tmp", "/dev/null"]
exec = ["/usr", "/lib", "/lib64", "/bin", "{bindir}"]
{extra}
"#,
                work = work.display()
            ),
        )
        .expect("write policy");
        Sandbox {
            root,
            home,
            work,
            state,
            policy,
        }
    }

    /// `mcp-guard exec` of `args` as server `name`, with this sandbox's HOME and state dir.
    fn exec(&self, name: &str, observe: bool, args: &[&str]) -> Command {
        let mut cmd = Command::new(mcp_guard());
        // The fixtures report in plain text, not JSON-RPC.
        cmd.arg("--state-dir")
            .arg(&self.state)
            .args(["exec", "--passthrough"]);
        cmd.arg("--policy")
            .arg(&self.policy)
            .arg("--name")
            .arg(name);
        if observe {
            cmd.arg("--observe");
        }
        cmd.arg("--").args(args).env("HOME", &self.home);
        cmd
    }

    /// `mcp-guard events --json --server name`, one object per line.
    fn events(&self, name: &str) -> Vec<Value> {
        let out = Command::new(mcp_guard())
            .arg("--state-dir")
            .arg(&self.state)
            .args(["events", "--json", "--server", name])
            .output()
            .expect("run mcp-guard events");
        assert!(out.status.success(), "events: {}", describe(&out));
        String::from_utf8_lossy(&out.stdout)
            .lines()
            .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("not JSON ({e}): {l}")))
            .collect()
    }
}

impl Drop for Sandbox {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.root);
    }
}

fn s(p: &Path) -> &str {
    p.to_str().expect("utf-8 path")
}

fn field<'a>(ev: &'a Value, key: &str) -> &'a str {
    ev[key].as_str().unwrap_or("")
}

/// The first event of `kind` matching `pred`, or a panic listing what was there.
fn find<'a>(events: &'a [Value], kind: &str, pred: impl Fn(&Value) -> bool) -> &'a Value {
    events
        .iter()
        .find(|e| field(e, "kind") == kind && pred(e))
        .unwrap_or_else(|| {
            let list: Vec<String> = events
                .iter()
                .filter(|e| field(e, "kind") == kind)
                .map(Value::to_string)
                .collect();
            panic!("no matching {kind} event among:\n{}", list.join("\n"))
        })
}

/// Runs the probe script in a session that stays up until its stdin closes, checks from outside
/// (while the session's guard is loaded) that the test process is not filtered, and returns the
/// fixtures' result lines and exec's exit status.
fn run_probes(sb: &Sandbox, name: &str, observe: bool, a: u16, b: u16) -> (Vec<String>, Output) {
    let opener = fixture_bin("opener");
    let netprobe = fixture_bin("netprobe");
    let script = format!(
        "{opener} {present} {missing} {outside}; \
         {netprobe} tcp:127.0.0.1:{a} tcp:127.0.0.1:{b} tcp:127.0.0.2:{a} udp:127.0.0.1:{b}; \
         echo probes-done; read x; exit 0",
        opener = s(&opener),
        netprobe = s(&netprobe),
        present = s(&sb.work.join("present.txt")),
        missing = s(&sb.work.join("missing.txt")),
        outside = s(&sb.root.join("outside.txt")),
    );
    let mut child = sb
        .exec(name, observe, &["/bin/sh", "-c", &script])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn mcp-guard exec");
    let mut stdin = child.stdin.take().expect("stdin");
    let mut stdout = BufReader::new(child.stdout.take().expect("stdout"));
    let mut lines = Vec::new();
    loop {
        let mut line = String::new();
        if stdout.read_line(&mut line).expect("read server output") == 0 {
            break;
        }
        let line = line.trim_end().to_string();
        if line == "probes-done" {
            // The session is live: a process outside its cgroup reaches what the server may not.
            TcpStream::connect(("127.0.0.2", a)).expect("outside: connect 127.0.0.2:A");
            TcpStream::connect(("127.0.0.1", b)).expect("outside: connect 127.0.0.1:B");
            let udp = UdpSocket::bind("127.0.0.1:0").expect("outside: udp bind");
            udp.send_to(b"x", ("127.0.0.1", b))
                .expect("outside: udp send to B");
            let _ = stdin.write_all(b"done\n");
            break;
        }
        lines.push(line);
    }
    drop(stdin);
    let out = child.wait_with_output().expect("wait for exec");
    (lines, out)
}

#[test]
fn egress_is_filtered_per_address_and_the_session_is_recorded() {
    require_root();
    let a = port_on_two_addresses();
    let b = listen_on(("127.0.0.1", 0)).expect("listen B");
    // Both ports are listed, so landlock's TCP port rule lets them through and every denial
    // below is the eBPF program's: 127.0.0.1 only on A, 127.0.0.2 only on B.
    let sb = Sandbox::new(
        "egress",
        &format!("[network]\nallow = [\"127.0.0.1:{a}\", \"127.0.0.2:{b}\"]\n"),
    );
    let name = format!("exec-kernel-egress-{}", std::process::id());
    let t0 = Timestamp::now();
    let (lines, out) = run_probes(&sb, &name, false, a, b);
    let t1 = Timestamp::now();
    assert!(out.status.success(), "{}", describe(&out));
    let eperm = format!("errno {}", libc::EPERM);
    let eacces = format!("errno {}", libc::EACCES);
    assert_eq!(
        lines,
        ["ok", "errno 2", &eacces, "ok", &eperm, &eperm, &eperm],
        "opener: present, missing, outside the read set; netprobe: 127.0.0.1:A, 127.0.0.1:B, \
         127.0.0.2:A, udp 127.0.0.1:B\n{}",
        describe(&out)
    );

    let events = sb.events(&name);
    assert!(!events.is_empty(), "no events recorded");
    let session = field(&events[0], "session").to_string();
    assert_eq!(session.len(), 12, "short session id: {session:?}");
    for ev in &events {
        assert_eq!(field(ev, "server"), name, "{ev}");
        assert_eq!(field(ev, "session"), session, "one session: {ev}");
        assert!(ev["call_id"].is_null(), "{ev}");
        assert_eq!(field(ev, "attribution"), "none", "{ev}");
        let ts = Timestamp::parse_rfc3339(field(ev, "ts"))
            .unwrap_or_else(|| panic!("ts is RFC 3339: {ev}"));
        assert!(
            ts >= t0 && ts <= t1,
            "ts {ts} within the run [{t0}, {t1}]: {ev}"
        );
        assert_ne!(
            ev["pid"].as_u64(),
            Some(u64::from(std::process::id())),
            "nothing from the test process outside: {ev}"
        );
    }

    let opener = fixture_bin("opener");
    let netprobe = fixture_bin("netprobe");
    let opener_exec = find(&events, "exec", |e| field(e, "path") == s(&opener));
    // The kernel keeps the head of each argument (63 bytes).
    let arg1 = opener_exec["argv"][1].as_str().unwrap_or("");
    assert!(
        arg1.len() >= 40 && s(&sb.work.join("present.txt")).starts_with(arg1),
        "{opener_exec}"
    );
    let opener_pid = opener_exec["pid"].clone();
    let open = |path: PathBuf| {
        find(&events, "open", |e| {
            e["pid"] == opener_pid && field(e, "path") == s(&path)
        })
        .clone()
    };
    let present = open(sb.work.join("present.txt"));
    assert_eq!(field(&present, "verdict"), "allowed", "{present}");
    assert!(
        present["result"].as_i64().is_some_and(|fd| fd >= 0),
        "{present}"
    );
    let missing = open(sb.work.join("missing.txt"));
    assert_eq!(
        (field(&missing, "verdict"), missing["result"].as_i64()),
        ("allowed", Some(-2)),
        "{missing}"
    );
    let outside = open(sb.root.join("outside.txt"));
    assert_eq!(
        (field(&outside, "verdict"), outside["result"].as_i64()),
        ("denied", Some(-i64::from(libc::EACCES))),
        "landlock's denial: {outside}"
    );

    let probe_exec = find(&events, "exec", |e| field(e, "path") == s(&netprobe));
    assert_eq!(probe_exec["argv"][1], format!("tcp:127.0.0.1:{a}"));
    let probe_pid = probe_exec["pid"].clone();
    let verdict = |kind: &str, addr: &str, port: u16| {
        let ev = find(&events, kind, |e| {
            e["pid"] == probe_pid && field(e, "addr") == addr && e["port"] == port
        });
        field(ev, "verdict").to_string()
    };
    assert_eq!(verdict("connect", "127.0.0.1", a), "allowed");
    assert_eq!(verdict("connect", "127.0.0.1", b), "denied");
    assert_eq!(verdict("connect", "127.0.0.2", a), "denied");
    assert_eq!(verdict("sendmsg", "127.0.0.1", b), "denied");

    let store = Store::open_existing(&db_path(&sb.state)).expect("open the store");
    let rec = store
        .session(&session)
        .expect("query the session")
        .expect("the session is recorded");
    assert_eq!(rec.server, name);
    assert_eq!(rec.exit_status, Some(0));
    assert!(
        rec.started_at >= t0 && rec.ended_at.is_some_and(|e| e <= t1),
        "{rec:?}"
    );

    // Under --observe the same probes go through (so the denials above could have failed) and
    // the would-be denials are reported.
    let observed = format!("{name}-observe");
    let (lines, out) = run_probes(&sb, &observed, true, a, b);
    assert!(out.status.success(), "{}", describe(&out));
    assert_eq!(
        lines[3..],
        ["ok", "ok", "ok", "ok"],
        "observed probes\n{}",
        describe(&out)
    );
    let events = sb.events(&observed);
    let ev = find(&events, "connect", |e| {
        field(e, "addr") == "127.0.0.2" && e["port"] == a
    });
    assert_eq!(field(ev, "verdict"), "allowed", "{ev}");
    assert_eq!(ev["would_deny"], true, "{ev}");
}

#[test]
fn sensitive_read_under_observe_is_killed_in_the_kernel() {
    require_root();
    let sensitive = |action: &str| {
        format!("[detect]\nsensitive = [\"~/.aws/credentials\"]\non_sensitive = \"{action}\"\n")
    };
    let sb = Sandbox::new("kill", &sensitive("kill"));
    let name = format!("exec-kernel-kill-{}", std::process::id());
    let opener = fixture_bin("opener");
    let present = sb.work.join("present.txt");
    let creds = sb.home.join(".aws/credentials");
    let out = sb
        .exec(&name, true, &[s(&opener), s(&present), s(&creds)])
        .stdin(Stdio::null())
        .output()
        .expect("run mcp-guard exec");
    // Killed on entry to the open: the first file was read, the credentials never were.
    assert_eq!(out.status.code(), Some(128 + 9), "{}", describe(&out));
    assert_eq!(
        String::from_utf8_lossy(&out.stdout),
        "ok\n",
        "{}",
        describe(&out)
    );

    let events = sb.events(&name);
    let killed = find(&events, "killed", |_| true);
    assert_eq!(field(killed, "path"), s(&creds), "{killed}");
    assert_eq!(field(killed, "verdict"), "killed", "{killed}");
    let exec = find(&events, "exec", |e| field(e, "path") == s(&opener));
    assert_eq!(
        killed["pid"], exec["pid"],
        "the opener was killed: {killed}"
    );

    // The process outside the session reads the same file, and with `alert` the server does too:
    // the kill above came from the policy.
    std::fs::read(&creds).expect("outside: read the credentials");
    let sb = Sandbox::new("alert", &sensitive("alert"));
    let creds = sb.home.join(".aws/credentials");
    let out = sb
        .exec(
            &format!("{name}-alert"),
            true,
            &[s(&opener), s(&present), s(&creds)],
        )
        .stdin(Stdio::null())
        .output()
        .expect("run mcp-guard exec");
    assert!(out.status.success(), "{}", describe(&out));
    assert_eq!(
        String::from_utf8_lossy(&out.stdout),
        "ok\nok\n",
        "{}",
        describe(&out)
    );
}

/// The same kill when the server hands open(2) a path on a page it never touched (a fresh
/// file mapping): unreadable for the entry check, read again at exit, before the open returns.
#[test]
fn sensitive_read_from_an_unfaulted_page_under_observe_is_killed_in_the_kernel() {
    require_root();
    let sb = Sandbox::new(
        "kill-unfaulted",
        "[detect]\nsensitive = [\"~/.aws/credentials\"]\non_sensitive = \"kill\"\n",
    );
    let name = format!("exec-kernel-kill-unfaulted-{}", std::process::id());
    let opener = fixture_bin("opener");
    let present = sb.work.join("present.txt");
    let creds = sb.home.join(".aws/credentials");
    let out = sb
        .exec(
            &name,
            true,
            &[
                s(&opener),
                "--unfaulted",
                s(&present),
                s(&creds),
                s(&present),
            ],
        )
        .stdin(Stdio::null())
        .output()
        .expect("run mcp-guard exec");
    assert_eq!(out.status.code(), Some(128 + 9), "{}", describe(&out));
    assert_eq!(
        String::from_utf8_lossy(&out.stdout),
        "ok\n",
        "{}",
        describe(&out)
    );
    let events = sb.events(&name);
    let killed = find(&events, "killed", |_| true);
    assert_eq!(field(killed, "path"), s(&creds), "{killed}");
    let open = find(&events, "open", |e| field(e, "path") == s(&creds));
    assert_eq!(open["pid"], killed["pid"], "{open}");
    let first = find(&events, "open", |e| field(e, "path") == s(&present));
    assert!(
        first["result"].as_i64().is_some_and(|fd| fd >= 0),
        "{first}"
    );
}

/// Drops `CAP_BPF`, `CAP_PERFMON` and `CAP_SYS_ADMIN` from the bounding set before exec: root then
/// starts without them, and no eBPF program can load.
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

#[test]
fn without_ebpf_observe_runs_unguarded_and_says_what_doctor_says() {
    require_root();
    let sb = Sandbox::new("noebpf", "");
    let out = without_bpf_privileges(&mut sb.exec("exec-kernel-noebpf", true, &["/bin/true"]))
        .stdin(Stdio::null())
        .output()
        .expect("run mcp-guard exec");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{}", describe(&out));
    assert!(
        stderr.contains("NOT ENFORCED (--observe)")
            && stderr.contains("running WITHOUT the eBPF kernel guard")
            && stderr.contains("`mcp-guard doctor` reports this as ebpf_object: unavailable"),
        "{}",
        describe(&out)
    );

    let out = without_bpf_privileges(Command::new(mcp_guard()).args(["doctor", "--json"]))
        .output()
        .expect("run mcp-guard doctor");
    let report = String::from_utf8_lossy(&out.stdout);
    let check: Value = report
        .lines()
        .filter_map(|l| serde_json::from_str::<Value>(l).ok())
        .find(|c| c["capability"] == "ebpf_object")
        .unwrap_or_else(|| panic!("doctor reports ebpf_object: {report}"));
    assert_eq!(check["status"], "unavailable", "{check}");
    assert!(
        check["consequence"]
            .as_str()
            .is_some_and(|c| c.contains("exec refuses to launch (77) unless --observe")),
        "{check}"
    );
}

#[test]
fn host_names_in_the_allow_list_are_resolved_at_launch() {
    require_root();
    let a = port_on_two_addresses();
    // /etc/hosts maps localhost to 127.0.0.1 (and ::1), never to 127.0.0.2.
    let sb = Sandbox::new(
        "hosts",
        &format!("[network]\nallow = [\"localhost:{a}\"]\n"),
    );
    let name = format!("exec-kernel-hosts-{}", std::process::id());
    let netprobe = fixture_bin("netprobe");
    let out = sb
        .exec(
            &name,
            false,
            &[
                s(&netprobe),
                &format!("tcp:127.0.0.1:{a}"),
                &format!("tcp:127.0.0.2:{a}"),
            ],
        )
        .stdin(Stdio::null())
        .output()
        .expect("run mcp-guard exec");
    assert!(out.status.success(), "{}", describe(&out));
    assert_eq!(
        String::from_utf8_lossy(&out.stdout),
        format!("ok\nerrno {}\n", libc::EPERM),
        "{}",
        describe(&out)
    );
    let events = sb.events(&name);
    let resolved = find(&events, "resolve", |e| e["detail"]["name"] == "localhost");
    assert!(
        resolved["detail"]["addrs"]
            .as_array()
            .is_some_and(|a| a.iter().any(|x| x == "127.0.0.1")),
        "the resolved addresses are in the events: {resolved}"
    );
}

#[test]
fn a_connect_refused_by_landlock_is_a_denied_connect_event() {
    require_root();
    let a = listen_on(("127.0.0.1", 0)).expect("listen A");
    let c = listen_on(("127.0.0.1", 0)).expect("listen C");
    // Only port A is listed: landlock's TCP rule refuses C (EACCES) before the cgroup hook runs.
    let sb = Sandbox::new(
        "landlock-connect",
        &format!("[network]\nallow = [\"127.0.0.1:{a}\"]\n"),
    );
    let name = format!("exec-kernel-landlock-{}", std::process::id());
    let netprobe = fixture_bin("netprobe");
    let out = sb
        .exec(
            &name,
            false,
            &[
                s(&netprobe),
                &format!("tcp:127.0.0.1:{a}"),
                &format!("tcp:127.0.0.1:{c}"),
            ],
        )
        .stdin(Stdio::null())
        .output()
        .expect("run exec");
    assert!(out.status.success(), "{}", describe(&out));
    assert_eq!(
        String::from_utf8_lossy(&out.stdout)
            .lines()
            .collect::<Vec<_>>(),
        ["ok", &format!("errno {}", libc::EACCES)],
        "{}",
        describe(&out)
    );
    let events = sb.events(&name);
    let refused = find(&events, "connect", |e| {
        e["port"].as_u64() == Some(u64::from(c))
    });
    assert_eq!(field(refused, "verdict"), "denied", "{refused}");
    assert_eq!(field(refused, "addr"), "127.0.0.1", "{refused}");
    let allowed = find(&events, "connect", |e| {
        e["port"].as_u64() == Some(u64::from(a))
    });
    assert_eq!(field(allowed, "verdict"), "allowed", "{allowed}");
    assert_eq!(
        events
            .iter()
            .filter(|e| field(e, "kind") == "connect")
            .count(),
        2,
        "one event per connect: {events:#?}"
    );
}
