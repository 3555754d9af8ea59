//! The kernel event stream on the real kernel: exec, open, connect and kill events of a fixture
//! in a guarded cgroup, filtered to that cgroup, and the JSONL audit log of them.
//!
//! Needs root.

mod kernel_common;

use std::{
    os::unix::process::ExitStatusExt as _,
    path::{Path, PathBuf},
    time::Duration,
};

use kernel_common::{TempDir, TestCgroup, lines, listen, netprobe, run_outside, runtime};
use mcp_guard_analysis::event_record;
use mcp_guard_kernel::loader::{Destination, EgressRule, KernelGuard, SensitivePath, ServerSpec};
use mcp_guard_model::{EgressVerdict, KernelEvent, KernelEventKind};
use mcp_guard_tests::require_root;
use tokio::sync::mpsc::Receiver;

fn opener() -> PathBuf {
    env!("CARGO_BIN_EXE_opener").into()
}

fn temp_dir(tag: &str) -> TempDir {
    TempDir::new(tag)
}

/// Collects events until `done` says so or 5 s pass.
fn collect(
    rt: &tokio::runtime::Runtime,
    rx: &mut Receiver<KernelEvent>,
    mut done: impl FnMut(&[KernelEvent]) -> bool,
) -> Vec<KernelEvent> {
    rt.block_on(async {
        let mut seen = Vec::new();
        let _ = tokio::time::timeout(Duration::from_secs(5), async {
            while let Some(ev) = rx.recv().await {
                seen.push(ev);
                if done(&seen) {
                    break;
                }
            }
        })
        .await;
        seen
    })
}

fn is_open_of(ev: &KernelEvent, path: &Path) -> bool {
    matches!(&ev.kind, KernelEventKind::Open { path: p, .. } if Path::new(p) == path)
}

#[test]
fn exec_open_and_connect_events_of_a_guarded_fixture() {
    require_root();
    let guard = KernelGuard::load().expect("load");
    let rt = runtime();
    let mut rx = rt.block_on(async { guard.events() }).expect("events");
    let dir = temp_dir("events");
    let present = dir.join("present.txt");
    std::fs::write(&present, "x").expect("write fixture file");
    let missing = dir.join("missing.txt");
    let outside_marker = dir.join("outside-marker");
    let a = listen("127.0.0.1:0");
    let b = listen("127.0.0.1:0");

    let cg = TestCgroup::new("events");
    let handle = rt
        .block_on(guard.add_server(
            &cg.dir,
            ServerSpec {
                server: "fixture".into(),
                session: "sess-1".into(),
                egress: vec![EgressRule {
                    dest: Destination::Net("127.0.0.1/32".parse().expect("net")),
                    port_lo: a,
                    port_hi: a,
                }],
                // About events, not the Unix-socket promise (tests/tests/unix_sockets.rs): this
                // runs on kernels without connect_unix too.
                unix_optional: true,
                ..Default::default()
            },
        ))
        .expect("guard");

    // Unrelated activity first: it must not show up.
    let outside = run_outside(&opener(), &[outside_marker.display().to_string()]);
    assert_eq!(lines(&outside), ["errno 2"]);

    let args = vec![present.display().to_string(), missing.display().to_string()];
    assert_eq!(lines(&cg.run(&opener(), &args)), ["ok", "errno 2"]);
    let probes = vec![format!("tcp:127.0.0.1:{a}"), format!("tcp:127.0.0.1:{b}")];
    assert_eq!(lines(&cg.run(&netprobe(), &probes)), ["ok", "errno 1"]);
    // An exec that fails (as `env` trying a PATH entry without the program).
    let absent = dir.join("no-such-program");
    let tried = cg.run(
        Path::new("/bin/sh"),
        &[
            "-c".into(),
            format!("{} 2>/dev/null; exit 0", absent.display()),
        ],
    );
    assert!(tried.status.success());
    let is_exec_of = |e: &KernelEvent, path: &Path| matches!(&e.kind, KernelEventKind::Exec { path: p, .. } if Path::new(p) == path);

    let seen = collect(&rt, &mut rx, |seen| {
        seen.iter()
            .filter(|e| matches!(e.kind, KernelEventKind::Connect { .. }))
            .count()
            >= 2
            && seen.iter().any(|e| is_open_of(e, &missing))
            && seen.iter().any(|e| is_exec_of(e, &absent))
    });

    let exec = seen
        .iter()
        .find(|e| matches!(&e.kind, KernelEventKind::Exec { path, .. } if Path::new(path) == opener()))
        .unwrap_or_else(|| panic!("an exec event for the opener; got {seen:#?}"));
    let KernelEventKind::Exec { argv, result, .. } = &exec.kind else {
        unreachable!()
    };
    assert_eq!(*result, Some(0), "the opener ran");
    assert_eq!(argv.len(), 3, "argv head: {argv:?}");
    let failed = seen
        .iter()
        .find_map(|e| match &e.kind {
            KernelEventKind::Exec { path, result, .. } if Path::new(path) == absent => {
                Some(*result)
            }
            _ => None,
        })
        .unwrap_or_else(|| panic!("an exec event for {}; got {seen:#?}", absent.display()));
    assert_eq!(
        failed,
        Some(-i64::from(libc::ENOENT)),
        "the missing program did not run"
    );
    assert_eq!(argv[1], args[0]);
    assert_eq!(&*exec.server, "fixture");
    assert_eq!(&*exec.session, "sess-1");
    assert_eq!(exec.cgroup_id, handle.cgroup_id());
    assert!(exec.pid > 0 && exec.ts_boot_ns > 0);

    let open_result = |path: &Path| {
        seen.iter()
            .find_map(|e| match &e.kind {
                KernelEventKind::Open {
                    path: p, result, ..
                } if Path::new(p) == path => Some(*result),
                _ => None,
            })
            .unwrap_or_else(|| panic!("an open event for {}; got {seen:#?}", path.display()))
    };
    assert!(matches!(open_result(&present), Some(fd) if fd >= 0));
    assert_eq!(open_result(&missing), Some(-2), "ENOENT");

    let connect = |port: u16| {
        seen.iter()
            .find_map(|e| match &e.kind {
                KernelEventKind::Connect {
                    addr,
                    verdict,
                    proto,
                    ..
                } if addr.port() == port => Some((addr.ip().to_string(), *verdict, *proto)),
                _ => None,
            })
            .unwrap_or_else(|| panic!("a connect event to port {port}; got {seen:#?}"))
    };
    assert_eq!(connect(a), ("127.0.0.1".into(), EgressVerdict::Allowed, 6));
    assert_eq!(connect(b), ("127.0.0.1".into(), EgressVerdict::Denied, 6));

    assert!(
        seen.iter().all(|e| e.cgroup_id == handle.cgroup_id()),
        "only the guarded cgroup's events"
    );
    assert!(!seen.iter().any(|e| is_open_of(e, &outside_marker)));

    // The stored form (what `mcp-guard events --json` prints) carries the contract's fields.
    let records: Vec<serde_json::Value> = seen
        .iter()
        .enumerate()
        .map(|(i, ev)| {
            serde_json::to_value(event_record(ev, format!("e{i}"))).expect("an event record")
        })
        .collect();
    assert_eq!(records.len(), seen.len());
    let denied = records
        .iter()
        .find(|r| r["kind"] == "connect" && r["port"] == b)
        .expect("the denied connect");
    assert_eq!(denied["verdict"], "denied");
    assert_eq!(denied["addr"], "127.0.0.1");
    assert_eq!(denied["server"], "fixture");
    let ts = denied["ts"].as_str().expect("ts string");
    assert!(
        ts.len() == 30 && ts.ends_with('Z'),
        "RFC 3339 with ns: {ts}"
    );
    let opened = records
        .iter()
        .find(|r| r["kind"] == "open" && r["path"] == present.display().to_string())
        .expect("the open");
    assert_eq!(opened["verdict"], "allowed");

    let drops = guard.dropped().expect("drop counters");
    assert_eq!(drops.len(), 3, "{drops:?}");
    assert_eq!(drops["ringbuf_full"], 0, "{drops:?}");
}

#[test]
fn sensitive_open_kills_even_in_observe_mode() {
    require_root();
    let guard = KernelGuard::load().expect("load");
    let rt = runtime();
    let mut rx = rt.block_on(async { guard.events() }).expect("events");
    let home = temp_dir("home");
    std::fs::create_dir_all(home.join(".ssh")).expect("mkdir .ssh");
    std::fs::create_dir_all(home.join(".aws")).expect("mkdir .aws");
    let key = home.join(".ssh/id_rsa");
    let creds = home.join(".aws/credentials");
    let harmless = home.join("notes.txt");
    let after = home.join("after.txt");
    for f in [&key, &creds, &harmless, &after] {
        std::fs::write(f, "secret").expect("write");
    }

    let cg = TestCgroup::new("kill");
    let _h = rt
        .block_on(guard.add_server(
            &cg.dir,
            ServerSpec {
                server: "observed".into(),
                session: "s".into(),
                observe: true,
                sensitive: vec![
                    SensitivePath::Under(home.join(".ssh")),
                    SensitivePath::Exact(creds.clone()),
                    SensitivePath::Name(".env".into()),
                ],
                kill_on_sensitive: true,
                unix_optional: true,
                ..Default::default()
            },
        ))
        .expect("guard");

    let run = |path: &Path| {
        cg.run(
            &opener(),
            &[
                harmless.display().to_string(),
                path.display().to_string(),
                after.display().to_string(),
            ],
        )
    };
    for target in [&key, &creds] {
        let out = run(target);
        assert_eq!(
            out.status.signal(),
            Some(libc::SIGKILL),
            "opening {} must be fatal: {out:?}",
            target.display()
        );
        assert_eq!(
            String::from_utf8_lossy(&out.stdout),
            "ok\n",
            "died at the sensitive open"
        );
    }
    // A sensitive name anywhere, even opened through a relative path.
    let project = home.join("project");
    std::fs::create_dir_all(&project).expect("mkdir project");
    std::fs::write(project.join(".env"), "TOKEN=x").expect("write .env");
    let out = cg
        .command(opener())
        .current_dir(&project)
        .args([harmless.display().to_string(), ".env".to_string()])
        .output()
        .expect("run opener");
    assert_eq!(
        out.status.signal(),
        Some(libc::SIGKILL),
        "relative .env: {out:?}"
    );
    let out = run(&project.join(".env"));
    assert_eq!(
        out.status.signal(),
        Some(libc::SIGKILL),
        "absolute .env: {out:?}"
    );
    let out = run(&project.join(".envrc"));
    assert_eq!(lines(&out), ["ok", "errno 2", "ok"], ".envrc is not .env");
    // Not sensitive: a sibling of the exact path, and the same path outside the cgroup.
    let out = run(&home.join(".aws/config-missing"));
    assert_eq!(lines(&out), ["ok", "errno 2", "ok"]);
    let out = run_outside(&opener(), &[key.display().to_string()]);
    assert_eq!(
        lines(&out),
        ["ok"],
        "a process outside the cgroup is not killed"
    );

    // Wait for both kills and for the open of `after` by the third (unkilled) run.
    let seen = collect(&rt, &mut rx, |seen| {
        seen.iter()
            .filter(|e| matches!(e.kind, KernelEventKind::Killed { .. }))
            .count()
            >= 4
            && seen.iter().any(|e| is_open_of(e, &after))
    });
    let mut killed_pids = Vec::new();
    for target in [&key, &creds] {
        let killed = seen
            .iter()
            .find(|e| matches!(&e.kind, KernelEventKind::Killed { path, signal: 9 } if Path::new(path) == target.as_path()))
            .unwrap_or_else(|| panic!("a killed event for {}; got {seen:#?}", target.display()));
        assert_eq!(&*killed.server, "observed");
        killed_pids.push(killed.pid);
    }
    assert!(
        seen.iter().any(|e| is_open_of(e, &after)),
        "the unkilled run's last open is reported"
    );
    assert!(
        !seen
            .iter()
            .any(|e| killed_pids.contains(&e.pid) && is_open_of(e, &after)),
        "a killed process opens nothing after the sensitive path"
    );
}

/// A path on a page the process never touched cannot be read at syscall entry (probe reads do
/// not fault pages in): the kernel's own copy of it does, so the exit reads it again, kills the
/// process before the open returns to it, and reports the open with its path. Against the
/// entry check alone the fixture opens the key and carries on.
#[test]
fn a_sensitive_path_on_an_unfaulted_page_is_killed_before_the_open_returns() {
    require_root();
    let guard = KernelGuard::load().expect("load");
    let rt = runtime();
    let mut rx = rt.block_on(async { guard.events() }).expect("events");
    let home = temp_dir("unfaulted");
    std::fs::create_dir_all(home.join(".ssh")).expect("mkdir .ssh");
    let key = home.join(".ssh/id_rsa");
    let harmless = home.join("notes.txt");
    for f in [&key, &harmless] {
        std::fs::write(f, "secret").expect("write");
    }
    let cg = TestCgroup::new("unfaulted");
    let _h = rt
        .block_on(guard.add_server(
            &cg.dir,
            ServerSpec {
                server: "unfaulted".into(),
                session: "u".into(),
                observe: true,
                sensitive: vec![SensitivePath::Under(home.join(".ssh"))],
                kill_on_sensitive: true,
                unix_optional: true,
                ..Default::default()
            },
        ))
        .expect("guard");

    let show = |p: &Path| p.display().to_string();
    let out = cg.run(
        &opener(),
        &[
            "--unfaulted".to_string(),
            show(&harmless),
            show(&key),
            show(&harmless),
        ],
    );
    assert_eq!(
        out.status.signal(),
        Some(libc::SIGKILL),
        "opening the key from an unfaulted page must be fatal: {out:?}"
    );
    assert_eq!(
        String::from_utf8_lossy(&out.stdout),
        "ok\n",
        "died in the open of the key"
    );

    let seen = collect(&rt, &mut rx, |seen| {
        seen.iter()
            .any(|e| matches!(e.kind, KernelEventKind::Killed { .. }))
            && seen.iter().filter(|e| is_open_of(e, &harmless)).count() >= 1
            && seen.iter().any(|e| is_open_of(e, &key))
    });
    let killed = seen
        .iter()
        .find(
            |e| matches!(&e.kind, KernelEventKind::Killed { path, signal: 9 } if Path::new(path) == key),
        )
        .unwrap_or_else(|| panic!("a killed event for the key; got {seen:#?}"));
    let fd_of = |path: &Path| {
        seen.iter().find_map(|e| match &e.kind {
            KernelEventKind::Open {
                path: p, result, ..
            } if Path::new(p) == path => Some(*result),
            _ => None,
        })
    };
    // Both opens are reported with the path read at exit and their result.
    assert!(
        matches!(fd_of(&harmless), Some(Some(fd)) if fd >= 0),
        "{seen:#?}"
    );
    assert!(
        matches!(fd_of(&key), Some(Some(fd)) if fd >= 0),
        "{seen:#?}"
    );
    assert!(
        seen.iter()
            .filter(|e| e.pid == killed.pid)
            .all(|e| !matches!(&e.kind, KernelEventKind::Open { path, .. } if path.is_empty())),
        "no open of the fixture is left without its path: {seen:#?}"
    );
    assert_eq!(
        guard.dropped().expect("drops")["path_read_failed"],
        0,
        "every path was read, at entry or at exit"
    );
}

/// Relative spellings of a sensitive path that name it from an ancestor (`.ssh/id_rsa` from
/// the home directory, `./.aws/credentials`, `u/.ssh/...` from its parent) are killed like the
/// absolute path; a name that only starts like one (`.sshx/`) is not. What stays open is
/// asserted too, so that covering it changes this test: the bare file name from the file's own
/// directory, and paths through `..`.
#[test]
fn relative_spellings_of_sensitive_paths_are_killed() {
    require_root();
    let guard = KernelGuard::load().expect("load");
    let rt = runtime();
    let home = temp_dir("relative");
    for dir in [".ssh", ".sshx", ".aws", "project"] {
        std::fs::create_dir_all(home.join(dir)).expect("mkdir");
    }
    let files = [
        ".ssh/id_rsa",
        ".sshx/id_rsa",
        ".aws/credentials",
        ".aws/config",
        "notes.txt",
    ];
    for f in files {
        std::fs::write(home.join(f), "secret").expect("write");
    }
    let cg = TestCgroup::new("relative");
    let _h = rt
        .block_on(guard.add_server(
            &cg.dir,
            ServerSpec {
                server: "relative".into(),
                session: "r".into(),
                observe: true,
                sensitive: vec![
                    SensitivePath::Under(home.join(".ssh")),
                    SensitivePath::Exact(home.join(".aws/credentials")),
                ],
                kill_on_sensitive: true,
                unix_optional: true,
                ..Default::default()
            },
        ))
        .expect("guard");
    let parent = home.parent().expect("home has a parent");
    let home_name = home
        .file_name()
        .expect("home has a name")
        .to_string_lossy()
        .into_owned();
    // Runs the opener in `cwd` on `notes.txt` (absolute) then `path`.
    let run = |cwd: &Path, path: &str| {
        cg.command(opener())
            .current_dir(cwd)
            .args([home.join("notes.txt").display().to_string(), path.into()])
            .output()
            .expect("run opener")
    };
    let from_parent = format!("{home_name}/.ssh/id_rsa");
    for (cwd, path) in [
        (&*home, ".ssh/id_rsa"),
        (&*home, "./.ssh/id_rsa"),
        (&*home, ".//./.ssh/id_rsa"),
        (&*home, ".ssh"),
        (&*home, ".aws/credentials"),
        (&*home, "./.aws/credentials"),
        (parent, from_parent.as_str()),
    ] {
        let out = run(cwd, path);
        assert_eq!(
            out.status.signal(),
            Some(libc::SIGKILL),
            "{path} from {}: {out:?}",
            cwd.display()
        );
        assert_eq!(
            String::from_utf8_lossy(&out.stdout),
            "ok\n",
            "{path}: died at the relative open"
        );
    }
    for (cwd, path, why) in [
        (&*home, ".sshx/id_rsa", "not the sensitive directory"),
        (&*home, ".aws/config", "a sibling of the sensitive file"),
        (&*home, "notes.txt", "not sensitive"),
        (
            home.join(".aws").as_path(),
            "credentials",
            "uncovered: the bare file name from its own directory",
        ),
        (
            home.join(".ssh").as_path(),
            "id_rsa",
            "uncovered: a path from inside the sensitive directory",
        ),
        (
            home.join("project").as_path(),
            "../.ssh/id_rsa",
            "uncovered: a path through ..",
        ),
    ] {
        let out = run(cwd, path);
        assert!(out.status.success(), "{path}: {why}: {out:?}");
        assert_eq!(lines(&out), ["ok", "ok"], "{path}: {why}");
    }
}

/// The kernel looks for a sensitive name in the last `NAME_LEN` bytes of the path as passed (a
/// window it can index provably in bounds on every verifier): a name deep below long
/// directories is found, and so is one of the longest length a name key holds, whose `/` is the
/// window's first byte. A last component one byte longer is another name.
#[test]
fn sensitive_names_are_found_at_the_end_of_long_paths() {
    use mcp_guard_ebpf::{NAME_LEN, PATH_LEN};
    require_root();
    let guard = KernelGuard::load().expect("load");
    let rt = runtime();
    let home = temp_dir("names");
    let longest = format!("{}.key", "n".repeat(NAME_LEN - 1 - ".key".len()));
    assert_eq!(longest.len(), NAME_LEN - 1);
    // Deep enough that the longest path nearly fills what the kernel reads of a path.
    let room = (PATH_LEN - 20).saturating_sub(home.display().to_string().len() + 2 + NAME_LEN);
    assert!(
        room >= 16,
        "the scratch dir's path is too long for this test"
    );
    let deep = home
        .join("d".repeat(room / 2))
        .join("e".repeat(room - room / 2));
    std::fs::create_dir_all(&deep).expect("mkdir deep");
    let harmless = home.join("notes.txt");
    let env = deep.join(".env");
    let key = deep.join(&longest);
    let other = deep.join(format!("x{longest}"));
    for f in [&harmless, &env, &key, &other] {
        std::fs::write(f, "secret").expect("write");
    }
    assert!(other.display().to_string().len() < PATH_LEN);
    let cg = TestCgroup::new("names");
    let _h = rt
        .block_on(guard.add_server(
            &cg.dir,
            ServerSpec {
                server: "names".into(),
                session: "n".into(),
                observe: true,
                sensitive: vec![
                    SensitivePath::Name(".env".into()),
                    SensitivePath::Name(longest.clone()),
                ],
                kill_on_sensitive: true,
                unix_optional: true,
                ..Default::default()
            },
        ))
        .expect("guard");
    let run = |path: &Path| {
        cg.run(
            &opener(),
            &[harmless.display().to_string(), path.display().to_string()],
        )
    };
    for target in [&env, &key] {
        let out = run(target);
        assert_eq!(
            out.status.signal(),
            Some(libc::SIGKILL),
            "opening {} ({} bytes) must be fatal: {out:?}",
            target.display(),
            target.display().to_string().len()
        );
        assert_eq!(String::from_utf8_lossy(&out.stdout), "ok\n");
    }
    let out = run(&other);
    assert_eq!(lines(&out), ["ok", "ok"], "x{longest} is not {longest}");
}
