use std::collections::HashSet;
use std::sync::Arc;

use super::*;
use crate::correlate::{AttributedEvent, ProcessKey};
use mcp_guard_model::kernel_event::{EgressVerdict, KernelEvent, KernelEventKind, SockOp};

const HOME: &str = "/home/u";

fn config() -> DetectConfig {
    let policy = policy::parse(
        "name = \"x\"\n[detect]\nsensitive = [\"/srv/secret/*.key\"]\n",
        None,
    )
    .expect("policy");
    DetectConfig::from_policy(&policy, Path::new(HOME))
}

fn detector(cfg: DetectConfig) -> Detector {
    let ro: HashSet<String> = ["get_weather".to_string()].into();
    Detector::new(cfg, "s", "sess", Profile::default(), ro)
}

fn at(ts: u64, call: Option<&str>, kind: KernelEventKind) -> AttributedEvent {
    AttributedEvent {
        event: KernelEvent {
            ts_boot_ns: ts,
            cgroup_id: 1,
            pid: 7,
            tid: 7,
            server: Arc::from("s"),
            session: Arc::from("sess"),
            kind,
        },
        attribution: if call.is_some() {
            Attribution::Call
        } else {
            Attribution::None
        },
        call_id: call.map(str::to_string),
        tool: call.map(|c| format!("tool_{c}")),
        candidates: vec![],
        process: ProcessKey {
            pid: 7,
            exec_boot_ns: 0,
        },
        forced: false,
    }
}

fn open(path: &str, flags: i32) -> KernelEventKind {
    KernelEventKind::Open {
        path: path.into(),
        flags: flags.cast_unsigned(),
        result: Some(3),
    }
}

fn connect(addr: &str, verdict: EgressVerdict) -> KernelEventKind {
    KernelEventKind::Connect {
        addr: addr.parse().expect("addr"),
        proto: 6,
        op: SockOp::Connect,
        verdict,
    }
}

fn exec(path: &str) -> KernelEventKind {
    KernelEventKind::Exec {
        path: path.into(),
        argv: vec![],
        result: Some(0),
    }
}

fn rules(f: &[Detection]) -> Vec<&str> {
    f.iter().map(|f| f.alert.rule.as_str()).collect()
}

fn glob_match(pattern: &str, path: &str) -> bool {
    PathGlobs::new(&[pattern]).is_match(path)
}

#[test]
fn glob_semantics() {
    assert!(glob_match("/home/u/.aws/**", "/home/u/.aws/credentials"));
    assert!(glob_match("/home/u/.aws/**", "/home/u/.aws/a/b"));
    assert!(glob_match("**/.env", "/srv/app/.env"));
    assert!(glob_match("**/.env", ".env"));
    assert!(!glob_match("**/.env", "/srv/app/.envrc"));
    assert!(glob_match(
        "/etc/ssh/ssh_host_*_key",
        "/etc/ssh/ssh_host_rsa_key"
    ));
    assert!(!glob_match(
        "/etc/ssh/ssh_host_*_key",
        "/etc/ssh/ssh_host_rsa_key.pub"
    ));
    assert!(!glob_match("/a/*", "/a/b/c"), "* stays in one component");
    assert!(glob_match("/a/?", "/a/b") && !glob_match("/a/?", "/a//"));
    assert!(glob_match("/srv/**/*.pem", "/srv/x/y/z.pem"));
    assert!(glob_match("/srv/*.{pem,key}", "/srv/a.key"));
    // A pattern that does not compile is matched as the path it spells, not dropped.
    assert!(glob_match("/srv/[oops", "/srv/[oops"));
    assert!(!glob_match("/srv/[oops", "/srv/o"));
    // The whole set at once: the built-in list, `~` expanded.
    let d = DetectConfig::from_policy(&policy::builtin_default(), Path::new(HOME));
    let set = PathGlobs::new(&d.sensitive);
    assert!(set.is_match("/home/u/.ssh/id_ed25519") && set.is_match("/etc/shadow"));
    assert!(!set.is_match("/home/u/notes.txt"));
}

/// The server picks the paths it opens: one built against a policy glob with several `**` made
/// the old backtracking matcher take time exponential in the path (tens of seconds for this
/// 242-byte path), stalling the session's detection meanwhile. Matched in linear time now.
#[test]
fn a_crafted_path_does_not_stall_the_glob_match() {
    let policy = policy::parse(
        "name = \"x\"\n[detect]\nsensitive = [\"/**/*k*/**/*k*/**/*k*/**/*k*/**/*.pem\"]\n",
        None,
    )
    .expect("policy");
    let mut d = detector(DetectConfig::from_policy(&policy, Path::new(HOME)));
    let crafted = format!("/{}x", "k/".repeat(120));
    assert!(crafted.len() <= mcp_guard_ebpf::PATH_LEN);
    let t = std::time::Instant::now();
    let f = d.event(&at(1, Some("c1"), open(&crafted, libc::O_RDONLY)), "e1");
    assert!(rules(&f).is_empty(), "{f:?}");
    let f = d.event(
        &at(
            2,
            Some("c1"),
            open("/a/k/b/k/c/k/d/k/e/x.pem", libc::O_RDONLY),
        ),
        "e2",
    );
    assert_eq!(rules(&f), ["sensitive-read"]);
    assert!(
        t.elapsed() < std::time::Duration::from_secs(1),
        "took {:?}",
        t.elapsed()
    );
}

#[test]
fn sensitive_read_fires_on_default_and_policy_paths_only() {
    let mut d = detector(config());
    let f = d.event(
        &at(
            1,
            Some("c1"),
            open("/home/u/.aws/credentials", libc::O_RDONLY),
        ),
        "e1",
    );
    assert_eq!(rules(&f), ["sensitive-read"]);
    assert_eq!(f[0].alert.call_id.as_deref(), Some("c1"));
    assert_eq!(f[0].alert.tool.as_deref(), Some("tool_c1"));
    assert_eq!(f[0].alert.event_ids, ["e1"]);
    assert_eq!(f[0].alert.severity, Severity::High);
    let f = d.event(
        &at(2, Some("c1"), open("/srv/secret/api.key", libc::O_RDONLY)),
        "e2",
    );
    assert_eq!(rules(&f), ["sensitive-read"], "policy [detect] sensitive");
    assert!(
        d.event(
            &at(3, Some("c1"), open("/home/u/notes.txt", libc::O_RDONLY)),
            "e3"
        )
        .is_empty()
    );
}

#[test]
fn on_sensitive_sets_the_action() {
    let policy =
        policy::parse("name = \"x\"\n[detect]\non_sensitive = \"kill\"\n", None).expect("policy");
    let mut d = detector(DetectConfig::from_policy(&policy, Path::new(HOME)));
    let f = d.event(
        &at(1, None, open("/home/u/.ssh/id_ed25519", libc::O_RDONLY)),
        "e1",
    );
    assert_eq!(f[0].action, Action::Kill);
    assert_eq!(f[0].alert.action.as_deref(), Some("kill"));
    assert_eq!(f[0].alert.call_id, None);
}

#[test]
fn new_egress_is_quiet_for_learned_destinations() {
    let mut cfg = config();
    cfg.learning = true;
    let mut d = detector(cfg.clone());
    assert!(
        d.event(
            &at(
                1,
                Some("w"),
                connect("10.0.0.1:443", EgressVerdict::Allowed)
            ),
            "e1"
        )
        .is_empty()
    );
    let profile = d.profile().clone();
    cfg.learning = false;
    let mut d = Detector::new(cfg, "s", "sess", profile, HashSet::new());
    assert!(
        d.event(
            &at(
                2,
                Some("w"),
                connect("10.0.0.1:443", EgressVerdict::Allowed)
            ),
            "e2"
        )
        .is_empty()
    );
    let f = d.event(
        &at(
            3,
            Some("w"),
            connect("10.0.0.2:443", EgressVerdict::Allowed),
        ),
        "e3",
    );
    assert_eq!(rules(&f), ["new-egress"]);
    assert!(
        d.event(
            &at(
                4,
                Some("w"),
                connect("10.0.0.2:443", EgressVerdict::Allowed)
            ),
            "e4"
        )
        .is_empty(),
        "once"
    );
    // Learned per tool: another tool to the same destination is new.
    assert_eq!(
        rules(&d.event(
            &at(
                5,
                Some("x"),
                connect("10.0.0.1:443", EgressVerdict::Allowed)
            ),
            "e5"
        )),
        ["new-egress"]
    );
}

#[test]
fn interpreter_exec_unless_learned() {
    assert!(
        is_interpreter("/usr/bin/python3.11")
            && is_interpreter("/bin/sh")
            && is_interpreter("node")
    );
    assert!(!is_interpreter("/usr/bin/git") && !is_interpreter("/usr/bin/shred"));
    let mut d = detector(config());
    // Failed execs ran nothing (`env` trying each PATH entry): no alert, and the one that ran
    // still alerts; an exec whose outcome the kernel could not tell counts.
    for (i, dir) in ["/home/u/.pyenv/shims", "/home/u/.cargo/bin"]
        .iter()
        .enumerate()
    {
        let failed = KernelEventKind::Exec {
            path: format!("{dir}/bash"),
            argv: vec![],
            result: Some(-i64::from(libc::ENOENT)),
        };
        assert!(
            d.event(&at(1, Some("c"), failed), &format!("f{i}"))
                .is_empty()
        );
    }
    let unknown = KernelEventKind::Exec {
        path: "/bin/dash".into(),
        argv: vec![],
        result: None,
    };
    assert_eq!(
        rules(&d.event(&at(1, Some("c"), unknown), "u1")),
        ["interpreter-exec"]
    );
    assert_eq!(
        rules(&d.event(&at(1, Some("c"), exec("/bin/bash")), "e1")),
        ["interpreter-exec"]
    );
    assert!(
        d.event(&at(2, Some("c"), exec("/usr/bin/git")), "e2")
            .is_empty()
    );
    let mut profile = Profile::default();
    profile
        .tools
        .entry(String::new())
        .or_default()
        .exec
        .insert("/usr/bin/python3".into());
    let mut d = Detector::new(config(), "s", "sess", profile, HashSet::new());
    assert!(
        d.event(&at(3, Some("c"), exec("/usr/bin/python3")), "e3")
            .is_empty()
    );
}

#[test]
fn exfiltration_secret_then_connect_in_same_call() {
    let mut d = detector(config());
    d.event(
        &at(
            1,
            Some("c"),
            open("/home/u/.aws/credentials", libc::O_RDONLY),
        ),
        "e1",
    );
    let f = d.event(
        &at(2, Some("c"), connect("10.0.0.9:80", EgressVerdict::Allowed)),
        "e2",
    );
    assert!(rules(&f).contains(&"exfiltration"));
    let ex = f
        .iter()
        .find(|f| f.alert.rule == "exfiltration")
        .expect("exfil");
    assert_eq!(ex.alert.event_ids, ["e1", "e2"]);
    assert_eq!(ex.alert.severity, Severity::Critical);
    // A connect in another call is not the shape.
    let f = d.event(
        &at(
            3,
            Some("other"),
            connect("10.0.0.9:80", EgressVerdict::Allowed),
        ),
        "e3",
    );
    assert!(!rules(&f).contains(&"exfiltration"));
}

#[test]
fn exfiltration_secret_then_large_result() {
    let mut d = detector(config());
    d.event(
        &at(
            1,
            Some("c"),
            open("/home/u/.aws/credentials", libc::O_RDONLY),
        ),
        "e1",
    );
    let end = |id: &str, bytes| CallEnd {
        call_id: id.into(),
        tool: None,
        result_bytes: Some(bytes),
        denied: false,
        at_boot_ns: 5,
    };
    assert_eq!(
        rules(&d.call_ended(&end("c", 1 << 20), None)),
        ["exfiltration"]
    );
    d.event(
        &at(
            6,
            Some("d"),
            open("/home/u/.aws/credentials", libc::O_RDONLY),
        ),
        "e2",
    );
    assert!(
        d.call_ended(&end("d", 100), None).is_empty(),
        "small result"
    );
    assert!(
        d.call_ended(&end("z", 1 << 20), None).is_empty(),
        "no secret read"
    );
}

#[test]
fn readonly_tool_that_writes() {
    let mut d = detector(config());
    let mut e = at(1, Some("c"), open("/tmp/x", libc::O_WRONLY | libc::O_CREAT));
    e.tool = Some("get_weather".into());
    assert_eq!(rules(&d.event(&e, "e1")), ["readonly-write"]);
    e.event.kind = open("/tmp/x", libc::O_RDONLY);
    assert!(d.event(&e, "e2").is_empty(), "reading is fine");
    let e = at(2, Some("c"), open("/tmp/x", libc::O_RDWR));
    assert!(d.event(&e, "e3").is_empty(), "tool not read-only");
}

#[test]
fn readonly_write_ignores_null_device_unknown_paths_and_exclusive_lock_files() {
    let mut d = detector(config());
    let creat = libc::O_RDWR | libc::O_CREAT;
    for (i, (path, flags)) in [
        ("/dev/null", libc::O_WRONLY),
        ("", libc::O_WRONLY),
        ("/dev/pts/3", libc::O_RDWR),
        ("/r/.git/index.lock", creat | libc::O_EXCL),
    ]
    .into_iter()
    .enumerate()
    {
        let mut e = at(1, Some("c"), open(path, flags));
        e.tool = Some("get_weather".into());
        assert!(d.event(&e, &format!("e{i}")).is_empty(), "{path}");
    }
    // A lock file written without O_EXCL is an ordinary write.
    let mut e = at(2, Some("c"), open("/r/data.lock", creat));
    e.tool = Some("get_weather".into());
    assert_eq!(rules(&d.event(&e, "e9")), ["readonly-write"]);
}

#[test]
fn denial_burst_n_in_t() {
    let mut cfg = config();
    cfg.burst_count = 3;
    cfg.burst_window_ns = 1_000;
    let mut d = detector(cfg);
    let deny = |ts| at(ts, None, connect("1.2.3.4:80", EgressVerdict::Denied));
    // Spread out: never 3 within the window.
    let mut fired = vec![];
    for (i, ts) in [0u64, 600, 1_700, 3_300].into_iter().enumerate() {
        fired.extend(
            d.event(&deny(ts), &format!("e{i}"))
                .into_iter()
                .filter(|f| f.alert.rule == "denial-burst"),
        );
    }
    assert!(fired.is_empty());
    let f: Vec<Detection> = [3_400u64, 3_500]
        .into_iter()
        .flat_map(|ts| d.event(&deny(ts), &format!("b{ts}")))
        .filter(|f| f.alert.rule == "denial-burst")
        .collect();
    assert_eq!(f.len(), 1);
    assert_eq!(f[0].alert.event_ids, ["e3", "b3400", "b3500"]);
}

#[test]
fn disabled_rule_never_fires() {
    let mut cfg = config();
    cfg.rules
        .get_mut(&Rule::SensitiveRead)
        .expect("rule")
        .enabled = false;
    let mut d = detector(cfg);
    assert!(
        d.event(&at(1, None, open("/home/u/.aws/credentials", 0)), "e1")
            .is_empty()
    );
}

#[test]
fn profile_round_trips_and_rejects_corruption() {
    let dir = std::env::temp_dir().join(format!("mcp-guard-profile-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    let key = mcp_guard_model::names::StateKey::new("pol", "srv").expect("key");
    assert_eq!(
        Profile::load(&dir, &key).expect("missing is empty"),
        Profile::default()
    );
    let mut p = Profile::default();
    p.tools
        .entry("t".into())
        .or_default()
        .egress
        .insert("1.1.1.1:53".into());
    p.save(&dir, &key).expect("save");
    assert_eq!(Profile::load(&dir, &key).expect("load"), p);
    // Another policy's server of the same name has its own profile.
    let other = mcp_guard_model::names::StateKey::new("other", "srv").expect("key");
    assert_eq!(
        Profile::load(&dir, &other).expect("load"),
        Profile::default()
    );
    std::fs::write(Profile::path(&dir, &key), "{not json").expect("write");
    assert!(Profile::load(&dir, &key).is_err());
    std::fs::remove_dir_all(&dir).expect("cleanup");
}

#[test]
fn profile_paths_are_per_policy() {
    let key = mcp_guard_model::names::StateKey::new("github", "gh").expect("key");
    assert_eq!(
        Profile::path(Path::new("/s"), &key),
        Path::new("/s/profiles/github/gh.json")
    );
}

#[test]
fn learning_grows_the_profile_and_merging_keeps_both_sessions() {
    let mut cfg = config();
    cfg.learning = true;
    let mut d = detector(cfg);
    assert!(d.learning());
    let e = at(
        1,
        Some("a"),
        connect("10.0.0.1:443", EgressVerdict::Allowed),
    );
    assert!(d.event(&e, "e1").is_empty(), "quiet while learning");
    let e = at(2, Some("a"), exec("/bin/sh"));
    assert!(d.event(&e, "e2").is_empty(), "quiet while learning");
    let learned = d.profile().clone();
    assert!(learned.tools["tool_a"].egress.contains("10.0.0.1:443"));
    assert!(learned.tools["tool_a"].exec.contains("/bin/sh"));

    let mut on_disk = Profile::default();
    on_disk
        .tools
        .entry("tool_b".into())
        .or_default()
        .egress
        .insert("10.0.0.2:443".into());
    on_disk.merge(&learned);
    assert!(on_disk.tools["tool_a"].egress.contains("10.0.0.1:443"));
    assert!(on_disk.tools["tool_b"].egress.contains("10.0.0.2:443"));

    // Afterwards: learned is quiet, a departure alerts.
    let mut d = Detector::new(config(), "s", "sess", on_disk, HashSet::new());
    let same = at(
        3,
        Some("a"),
        connect("10.0.0.1:443", EgressVerdict::Allowed),
    );
    assert!(d.event(&same, "e3").is_empty());
    let shell = at(4, Some("a"), exec("/bin/sh"));
    assert!(d.event(&shell, "e4").is_empty());
    let new = at(
        5,
        Some("a"),
        connect("10.0.0.9:443", EgressVerdict::Allowed),
    );
    assert_eq!(rules(&d.event(&new, "e5")), ["new-egress"]);
}

#[test]
fn policy_rule_tables_override_defaults() {
    let policy = policy::parse(
        "name = \"x\"\n[detect.rules.sensitive-read]\nenabled = false\n[detect.rules.new-egress]\nseverity = \"critical\"\naction = \"deny-call\"\n",
        None,
    )
    .expect("policy");
    let mut d = detector(DetectConfig::from_policy(&policy, Path::new(HOME)));
    assert!(
        d.event(&at(1, None, open("/home/u/.aws/credentials", 0)), "e1")
            .is_empty()
    );
    let f = d.event(
        &at(
            2,
            Some("c"),
            connect("10.0.0.3:443", EgressVerdict::Allowed),
        ),
        "e2",
    );
    assert_eq!(f[0].alert.severity, Severity::Critical);
    assert_eq!(f[0].action, Action::DenyCall);
}

#[test]
fn policy_rule_names_match_the_rules() {
    let names: Vec<&str> = Rule::ALL.iter().map(|r| r.name()).collect();
    assert_eq!(names, policy::DETECT_RULES);
}
