//! A policy that lists a program runs that program (issue 23): the ELF interpreter and shared
//! libraries of each `exec` entry come with it, every jail has the standard devices and no
//! other, and `policy check` warns about entries that cannot work. Needs root.

use std::{
    path::PathBuf,
    process::{Command, Output, Stdio},
};

use mcp_guard_tests::{describe, give_to_server_user, mcp_guard, require_root};

/// A scratch dir for one test, outside /tmp (the jail mounts a private /tmp).
struct Scratch {
    root: PathBuf,
}

impl Scratch {
    fn new(name: &str) -> Self {
        let root = mcp_guard_tests::scratch_root()
            .join("runs-tests")
            .join(format!("{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&root);
        std::fs::create_dir_all(root.join("home")).expect("create scratch");
        std::fs::create_dir_all(root.join("work")).expect("create scratch");
        give_to_server_user(&root.join("home"));
        give_to_server_user(&root.join("work"));
        Scratch { root }
    }

    fn policy(&self, text: &str) -> PathBuf {
        let path = self.root.join("policy.toml");
        std::fs::write(&path, text).expect("write policy");
        path
    }

    /// `mcp-guard exec --passthrough` of `args` under `policy`.
    fn exec(&self, policy: &std::path::Path, args: &[&str]) -> Output {
        Command::new(mcp_guard())
            .env("MCP_GUARD_STATE_DIR", self.root.join("state"))
            .env("HOME", self.root.join("home"))
            .args(["exec", "--passthrough", "--policy"])
            .arg(policy)
            .arg("--")
            .args(args)
            .stdin(Stdio::null())
            .output()
            .expect("run mcp-guard exec")
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.root);
    }
}

#[test]
fn an_exec_entry_brings_its_interpreter_and_libraries() {
    require_root();
    let s = Scratch::new("python");
    // Neither /lib nor /usr/lib/x86_64-linux-gnu is granted: the dynamic loader and libc come
    // only from the exec entry itself.
    let policy = s.policy(
        r#"name = "python-only"
[filesystem]
read = ["/usr/lib/python3.11", "/etc"]
exec = ["/usr/bin/python3"]
"#,
    );
    let out = s.exec(&policy, &["/usr/bin/python3", "-c", "print('python ran')"]);
    assert!(
        out.status.success() && String::from_utf8_lossy(&out.stdout).contains("python ran"),
        "{}",
        describe(&out)
    );
    // Only what the program needs: a library it does not link stays denied.
    let out = s.exec(
        &policy,
        &[
            "/usr/bin/python3",
            "-c",
            "open('/usr/lib/x86_64-linux-gnu/libcrypt.so.1','rb')",
        ],
    );
    assert!(
        !out.status.success() && String::from_utf8_lossy(&out.stderr).contains("PermissionError"),
        "{}",
        describe(&out)
    );
}

/// The jail's view of devices, from a script run in it: every device node it can open, walking
/// its /dev and trying each of `host_devices` by path, and what the standard devices do.
const DEVICE_PROBE: &str = r#"
import json, os, stat, sys
def opens(p):
    try:
        st = os.lstat(p)
    except OSError:
        return False
    if not (stat.S_ISCHR(st.st_mode) or stat.S_ISBLK(st.st_mode)):
        return False
    try:
        os.close(os.open(p, os.O_RDONLY | os.O_NONBLOCK | os.O_NOCTTY))
        return True
    except OSError:
        return False
seen = set(sys.argv[1:])
for root, dirs, files in os.walk("/dev"):
    seen.update(os.path.join(root, n) for n in files + dirs)
out = {"opened": sorted(p for p in seen if opens(p))}
def attempt(name, f):
    try:
        f()
        out[name] = "ok"
    except OSError as e:
        out[name] = "errno %d" % e.errno
def rw(p):
    with open(p, "r+b", buffering=0) as f:
        f.read(1)
        f.write(b"x")
for d in ["null", "zero", "random", "urandom"]:
    attempt(d, lambda d=d: rw("/dev/" + d))
attempt("full", lambda: rw("/dev/full"))
attempt("pty", lambda: os.ttyname(os.openpty()[1]))
attempt("shm", lambda: open("/dev/shm/probe", "w").write("x"))
print(json.dumps(out))
"#;

/// Every device node on the host (char and block), by path.
fn host_devices() -> Vec<String> {
    use std::os::unix::fs::FileTypeExt;
    let mut out = Vec::new();
    let mut dirs = vec![PathBuf::from("/dev")];
    while let Some(dir) = dirs.pop() {
        let Ok(entries) = std::fs::read_dir(&dir) else {
            continue;
        };
        for e in entries.flatten() {
            let Ok(t) = e.file_type() else { continue };
            if t.is_dir() {
                dirs.push(e.path());
            } else if t.is_char_device() || t.is_block_device() {
                out.push(e.path().display().to_string());
            }
        }
    }
    out
}

#[test]
fn the_jail_has_the_standard_devices_and_no_other() {
    require_root();
    let s = Scratch::new("devices");
    // Root in the jail (capabilities dropped) reaches every device its uid owns on the host:
    // the broadest case. A read set of "/" covers /dev.
    let policy = s.policy(&format!(
        r#"name = "broad-root"
user = "root"
[filesystem]
read = ["/"]
write = ["{work}", "/tmp"]
exec = ["/usr"]
"#,
        work = s.root.join("work").display()
    ));
    let devices = host_devices();
    assert!(devices.len() > 6, "the host has few devices: {devices:?}");
    let mut args = vec!["/usr/bin/python3", "-c", DEVICE_PROBE];
    args.extend(devices.iter().map(String::as_str));
    let out = s.exec(&policy, &args);
    assert!(out.status.success(), "{}", describe(&out));
    let v: serde_json::Value = serde_json::from_slice(
        out.stdout
            .split(|&b| b == b'\n')
            .find(|l| l.starts_with(b"{"))
            .unwrap_or_default(),
    )
    .unwrap_or_else(|e| panic!("probe output ({e}): {}", describe(&out)));
    let standard = [
        "/dev/null",
        "/dev/zero",
        "/dev/full",
        "/dev/random",
        "/dev/urandom",
        "/dev/ptmx",
    ];
    let others: Vec<&str> = v["opened"]
        .as_array()
        .expect("opened")
        .iter()
        .filter_map(|p| p.as_str())
        .filter(|p| !standard.contains(p) && !p.starts_with("/dev/pts/"))
        .collect();
    assert!(
        others.is_empty(),
        "devices opened in the jail: {others:?}\n{v}"
    );
    for d in ["null", "zero", "random", "urandom", "pty", "shm"] {
        assert_eq!(v[d], "ok", "{d}: {v}");
    }
    // /dev/full reads zeros and fails every write with ENOSPC: the device itself answered.
    assert_eq!(v["full"], format!("errno {}", libc::ENOSPC), "{v}");
}

#[test]
fn mcp_server_git_works_under_a_broad_policy() {
    require_root();
    let s = Scratch::new("git");
    let repo = s.root.join("work/repo");
    std::fs::create_dir_all(&repo).expect("repo dir");
    let git = |args: &[&str]| {
        let status = Command::new("git")
            .arg("-C")
            .arg(&repo)
            .args(["-c", "user.name=T", "-c", "user.email=t@example.invalid"])
            .args(args)
            .status()
            .expect("run git");
        assert!(status.success(), "git {args:?}");
    };
    git(&["init", "-q", "-b", "main"]);
    std::fs::write(repo.join("README"), "scratch\n").expect("README");
    git(&["add", "README"]);
    git(&["commit", "-q", "-m", "first"]);
    std::fs::write(repo.join("NEW"), "new\n").expect("new");
    give_to_server_user(&repo);
    let venv = mcp_guard_tests::workspace_root()
        .join(".venv")
        .canonicalize()
        .expect(".venv: run `cargo xtask setup`");
    let policy = s.policy(&format!(
        r#"name = "broad"
[filesystem]
read = ["/"]
write = ["{work}", "/tmp"]
exec = ["/usr", "{venv}"]
"#,
        work = s.root.join("work").display(),
        venv = venv.display()
    ));
    let out = Command::new(mcp_guard_tests::python())
        .arg(mcp_guard_tests::fixture("mcp_client.py"))
        .arg("--call")
        .arg("git_status")
        .arg(format!("{{\"repo_path\": \"{}\"}}", repo.display()))
        .arg("--")
        .arg(mcp_guard())
        .env("MCP_GUARD_STATE_DIR", s.root.join("state"))
        .env("HOME", s.root.join("home"))
        .args(["exec", "--policy"])
        .arg(&policy)
        .arg("--")
        .arg(venv.join("bin/mcp-server-git"))
        .output()
        .expect("run the MCP client");
    assert!(out.status.success(), "{}", describe(&out));
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).expect("client JSON");
    assert_eq!(v["call"]["is_error"], false, "{v}");
    assert!(
        v["call"]["text"]
            .as_str()
            .is_some_and(|t| t.contains("NEW")),
        "{v}"
    );
}

#[test]
fn policy_check_warns_about_entries_that_cannot_work() {
    let s = Scratch::new("check");
    let script = s.root.join("server.sh");
    std::fs::write(&script, "#!/usr/bin/no-such-shell\necho hi\n").expect("write script");
    let file = s.root.join("policy.toml");
    std::fs::write(
        &file,
        format!(
            r#"name = "cannot-work"
[filesystem]
read = ["/usr", "/no/such/dir", "{root}"]
exec = [
  "/usr/bin",
  "/etc",
  "{script}",
]
"#,
            script = script.display(),
            root = s.root.display()
        ),
    )
    .expect("write policy");
    let out = Command::new(mcp_guard())
        .args(["policy", "check"])
        .arg(&file)
        .output()
        .expect("run policy check");
    // Warnings, not errors: the policy is valid.
    assert!(out.status.success(), "{}", describe(&out));
    let stderr = String::from_utf8_lossy(&out.stderr);
    let f = file.display();
    for (place, what) in [
        (
            format!("{f}:3:17: filesystem.read[1]: warning:"),
            "does not exist",
        ),
        (
            format!("{f}:6:3: filesystem.exec[1]: warning:"),
            "not in the read set",
        ),
        (
            format!("{f}:7:3: filesystem.exec[2]: warning:"),
            "/usr/bin/no-such-shell",
        ),
    ] {
        assert!(
            stderr
                .lines()
                .any(|l| l.starts_with(&place) && l.contains(what)),
            "expected {place} ... {what}\n{}",
            describe(&out)
        );
    }
    assert_eq!(stderr.lines().count(), 3, "{}", describe(&out));
}
