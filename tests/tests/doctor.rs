//! `mcp-guard doctor --json` on this host: every capability is named, the verdicts match what was
//! measured on these machines (LSM BPF refused, everything else needed available), the summary
//! agrees with the lines, and no temporary cgroup is left behind.

use std::{collections::BTreeSet, path::PathBuf, process::Command};

use mcp_guard_tests::{mcp_guard, require_root};
use serde_json::Value;

/// Every capability the doctor must report (issue 2).
const CAPABILITIES: [&str; 23] = [
    "privileges",
    "btf",
    "tracefs",
    "ebpf_object",
    "cgroup_sock_addr",
    "cgroup_unix",
    "tracepoint",
    "raw_tracepoint",
    "tp_btf",
    "send_signal",
    "lsm",
    "ringbuf",
    "lpm_trie",
    "hash_map",
    "landlock",
    "seccomp",
    "cgroup_v2",
    "cgroup_controllers",
    "namespaces",
    "user_namespaces",
    "container_engine",
    "agent",
    "standalone_slots",
];

/// Available on these machines (DESIGN.md, measured).
const AVAILABLE_HERE: [&str; 17] = [
    "privileges",
    "btf",
    "tracefs",
    "ebpf_object",
    "cgroup_sock_addr",
    "tracepoint",
    "raw_tracepoint",
    "tp_btf",
    "send_signal",
    "ringbuf",
    "lpm_trie",
    "hash_map",
    "landlock",
    "seccomp",
    "cgroup_v2",
    "cgroup_controllers",
    "namespaces",
];

/// The cgroup v2 mount, found the way the doctor does (not hard-coded).
fn cgroup2_mount() -> PathBuf {
    let mountinfo = std::fs::read_to_string("/proc/self/mountinfo").expect("read mountinfo");
    mountinfo
        .lines()
        .find_map(|l| {
            let (left, right) = l.split_once(" - ")?;
            if right.split(' ').next()? != "cgroup2" {
                return None;
            }
            left.split(' ').nth(4).map(PathBuf::from)
        })
        .expect("this host has a cgroup2 mount")
}

/// The doctor tests run one at a time: a concurrent doctor's temporary cgroup would show up in
/// another test's before/after listing.
static SERIAL: std::sync::Mutex<()> = std::sync::Mutex::new(());

fn serial() -> std::sync::MutexGuard<'static, ()> {
    SERIAL
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
}

/// Every cgroup hierarchy's root (v2 and v1), each with its directory listing.
fn all_cgroup_listings() -> Vec<(PathBuf, BTreeSet<String>)> {
    let mountinfo = std::fs::read_to_string("/proc/self/mountinfo").expect("read mountinfo");
    mountinfo
        .lines()
        .filter_map(|l| {
            let (left, right) = l.split_once(" - ")?;
            if !matches!(right.split(' ').next()?, "cgroup" | "cgroup2") {
                return None;
            }
            left.split(' ').nth(4).map(PathBuf::from)
        })
        .map(|dir| {
            let l = listing(&dir);
            (dir, l)
        })
        .collect()
}

fn listing(dir: &std::path::Path) -> BTreeSet<String> {
    std::fs::read_dir(dir)
        .unwrap_or_else(|e| panic!("list {}: {e}", dir.display()))
        .map(|e| {
            e.expect("dir entry")
                .file_name()
                .to_string_lossy()
                .into_owned()
        })
        .collect()
}

#[test]
fn doctor_json_reports_this_host_accurately_and_leaves_nothing_behind() {
    require_root();
    let _serial = serial();
    let v2 = cgroup2_mount();
    let before = listing(&v2);
    let before_all = all_cgroup_listings();

    let out = Command::new(mcp_guard())
        .args(["doctor", "--json"])
        .output()
        .expect("run mcp-guard doctor --json");
    let stdout = String::from_utf8(out.stdout).expect("utf-8 output");
    let stderr = String::from_utf8_lossy(&out.stderr);

    let lines: Vec<Value> = stdout
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("not JSON ({e}): {l}")))
        .collect();
    let (summary, rest) = lines.split_last().expect("at least a summary line");
    assert_eq!(summary["summary"], true, "the last line is the summary");
    // Capabilities first, then the promises table.
    let split = rest
        .iter()
        .position(|l| l.get("promise").is_some())
        .expect("promise lines");
    let (checks, promises) = rest.split_at(split);
    // Linux 6.18 here: every promise is kept by its strongest mechanism, with egress or without
    // (what the launch picked before promises had fallbacks).
    let strongest = [
        ("filesystem", "landlock"),
        ("truncation", "landlock_truncate"),
        ("device_ioctl", "landlock_ioctl_dev"),
        ("syscalls", "seccomp"),
        ("egress", "cgroup_sock_addr"),
        ("tcp_bind", "landlock_tcp"),
        ("unix_pathname", "cgroup_unix"),
        ("unix_abstract", "cgroup_unix"),
        ("signals", "landlock_scope"),
        ("events", "tracing"),
    ];
    assert_eq!(promises.len(), strongest.len(), "{promises:#?}");
    for (line, (promise, mechanism)) in promises.iter().zip(strongest) {
        assert_eq!(line["promise"], promise, "{line}");
        assert_eq!(
            line["mechanisms"][0], mechanism,
            "the strongest first: {line}"
        );
        for column in ["with_egress", "without_egress"] {
            assert_eq!(line[column]["state"], "kept", "{line}");
            assert_eq!(line[column]["mechanism"], mechanism, "{line}");
        }
    }

    let mut names = BTreeSet::new();
    for c in checks {
        let name = c["capability"].as_str().expect("capability is a string");
        assert!(names.insert(name), "{name} reported twice");
        assert!(
            matches!(
                c["status"].as_str(),
                Some("available" | "unavailable" | "degraded")
            ),
            "{name}: bad status {}",
            c["status"]
        );
        assert!(c["required"].is_boolean(), "{name}: required is a bool");
        assert!(
            !c["detail"].as_str().unwrap_or("").is_empty(),
            "{name}: empty detail"
        );
        assert!(
            !c["consequence"].as_str().unwrap_or("").is_empty(),
            "{name}: empty consequence"
        );
    }
    let expected: BTreeSet<&str> = CAPABILITIES.into_iter().collect();
    assert_eq!(names, expected, "the capabilities reported");

    let get = |name: &str| {
        checks
            .iter()
            .find(|c| c["capability"] == name)
            .unwrap_or_else(|| panic!("{name} missing"))
    };
    for name in AVAILABLE_HERE {
        assert_eq!(get(name)["status"], "available", "{name}: {}", get(name));
        assert_eq!(get(name)["required"], true, "{name} is required");
    }
    // Linux 6.18 here: the Unix-socket programs run, but a kernel before 6.7 is not "NOT OK"
    // for lacking them (a launch refuses that promise on its own).
    let unix = get("cgroup_unix");
    assert_eq!(unix["status"], "available", "{unix}");
    assert_eq!(unix["required"], false);
    let lsm = get("lsm");
    assert_eq!(
        lsm["status"], "unavailable",
        "LSM BPF is refused here: {lsm}"
    );
    assert_eq!(lsm["required"], false);
    assert!(
        lsm["detail"].as_str().unwrap_or("").contains("EPERM"),
        "the refusal names its errno: {lsm}"
    );
    assert!(
        lsm["consequence"]
            .as_str()
            .unwrap_or("")
            .contains("fallback")
            || lsm["consequence"]
                .as_str()
                .unwrap_or("")
                .contains("instead"),
        "the consequence names the fallback: {lsm}"
    );
    assert_eq!(get("container_engine")["required"], false);

    // The summary agrees with the lines: missing = required and not available.
    let missing_from_lines: Vec<&str> = checks
        .iter()
        .filter(|c| c["required"] == true && c["status"] != "available")
        .map(|c| c["capability"].as_str().expect("name"))
        .collect();
    let missing: Vec<&str> = summary["missing"]
        .as_array()
        .expect("missing is an array")
        .iter()
        .map(|m| m.as_str().expect("missing names are strings"))
        .collect();
    assert_eq!(missing, missing_from_lines);
    assert_eq!(summary["ok"], missing.is_empty());
    assert_eq!(summary["ok"], true, "full enforcement is possible here");
    assert_eq!(out.status.code(), Some(0), "stderr: {stderr}");

    let after = listing(&v2);
    assert_eq!(
        before,
        after,
        "doctor left cgroups behind under {}",
        v2.display()
    );
    assert_eq!(
        before_all,
        all_cgroup_listings(),
        "doctor left cgroups behind in some hierarchy"
    );
}

#[test]
fn doctor_table_is_plain_when_not_a_tty_and_ends_with_the_verdict() {
    require_root();
    let _serial = serial();
    let out = Command::new(mcp_guard())
        .arg("doctor")
        .output()
        .expect("run mcp-guard doctor");
    let stdout = String::from_utf8(out.stdout).expect("utf-8 output");
    assert!(!stdout.contains('\x1b'), "no colour on a pipe:\n{stdout}");
    for name in CAPABILITIES {
        assert!(
            stdout.lines().any(|l| l.starts_with(name)),
            "{name} has a row:\n{stdout}"
        );
    }
    let last = stdout.lines().last().expect("output");
    assert!(
        last.starts_with("OK:") && last.contains("lsm"),
        "verdict line: {last}"
    );
    assert_eq!(out.status.code(), Some(0));
}

#[test]
fn unprivileged_doctor_exits_1_and_names_what_is_missing() {
    use std::os::unix::process::CommandExt as _;
    require_root();
    let _serial = serial();
    // nobody: no capabilities, so BPF, cgroup creation and namespaces are really refused.
    let out = Command::new(mcp_guard())
        .args(["doctor", "--json"])
        .uid(65534)
        .gid(65534)
        .output()
        .expect("run mcp-guard doctor --json as nobody");
    let stdout = String::from_utf8(out.stdout).expect("utf-8 output");
    assert_eq!(out.status.code(), Some(1), "output:\n{stdout}");
    let summary: Value =
        serde_json::from_str(stdout.lines().last().expect("summary line")).expect("summary JSON");
    assert_eq!(summary["ok"], false);
    let missing: Vec<&str> = summary["missing"]
        .as_array()
        .expect("missing")
        .iter()
        .filter_map(Value::as_str)
        .collect();
    for name in ["privileges", "cgroup_sock_addr", "ringbuf", "namespaces"] {
        assert!(missing.contains(&name), "{name} not in {missing:?}");
    }
    let cgroup = stdout
        .lines()
        .find(|l| l.contains("\"cgroup_sock_addr\""))
        .expect("cgroup_sock_addr line");
    assert!(cgroup.contains("\"unavailable\""), "{cgroup}");

    let table = Command::new(mcp_guard())
        .arg("doctor")
        .uid(65534)
        .gid(65534)
        .output()
        .expect("run mcp-guard doctor as nobody");
    let text = String::from_utf8(table.stdout).expect("utf-8 output");
    let last = text.lines().last().expect("verdict line");
    assert!(
        last.starts_with("NOT OK: missing for full enforcement:") && last.contains("privileges"),
        "verdict line: {last}"
    );
    assert_eq!(table.status.code(), Some(1));
}

/// exec will call `probe()` from async code to decide whether to fail closed: it must work there
/// (no nested runtime) and answer through `Report::is_available`.
#[tokio::test]
async fn probe_is_callable_from_async_code_and_answers_exec_questions() {
    use mcp_guard::doctor::{CapabilityId, probe};
    require_root();
    let _serial = serial();
    let v2 = cgroup2_mount();
    let before = listing(&v2);
    let report = probe();
    assert!(
        report.is_available(CapabilityId::CgroupSockAddr),
        "{report:?}"
    );
    assert!(report.is_available(CapabilityId::SendSignal), "{report:?}");
    assert!(
        !report.is_available(CapabilityId::Lsm),
        "LSM BPF is refused here"
    );
    assert!(report.missing().is_empty(), "{:?}", report.missing());
    assert!(report.ok());
    assert_eq!(report.checks.len(), CAPABILITIES.len());
    assert_eq!(before, listing(&v2), "probe left cgroups behind");
}
