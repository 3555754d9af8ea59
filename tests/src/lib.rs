//! Helpers shared by mcp-guard's integration tests.
//!
//! The tests drive the real `mcp-guard` binary against the real kernel, real MCP servers and the
//! real MCP Python SDK. They need root; `cargo xtask test` builds the binaries and the test
//! environment (`cargo xtask setup`) first. A missing prerequisite panics with what to run,
//! never skips.
#![expect(
    clippy::missing_panics_doc,
    reason = "test helpers: a panic, with what to run, is how they fail a test"
)]

use std::path::{Path, PathBuf};

pub mod agent;
pub mod bench;
pub mod certs;
pub mod clickhouse;
pub mod corpus;
pub mod dns;
pub mod net;
pub mod prom;
pub mod residue;
pub mod rsyslog;

/// The workspace root.
pub fn workspace_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("tests/ lives inside the workspace")
        .to_path_buf()
}

/// The cargo target directory the binaries were built into.
pub fn target_dir() -> PathBuf {
    std::env::var_os("CARGO_TARGET_DIR")
        .map_or_else(|| workspace_root().join("target"), PathBuf::from)
}

/// A binary built from this workspace (`cargo build --bins`), e.g. `mcp-guard`, of the profile
/// these tests were built with: a `--release` benchmark measures release binaries.
pub fn workspace_bin(name: &str) -> PathBuf {
    let profile = if cfg!(debug_assertions) {
        "debug"
    } else {
        "release"
    };
    let path = target_dir().join(profile).join(name);
    assert!(
        path.exists(),
        "{} is missing: run `cargo xtask test` (or `cargo build {}--workspace --bins`) first",
        path.display(),
        if cfg!(debug_assertions) {
            ""
        } else {
            "--release "
        }
    );
    path
}

/// The `mcp-guard` binary under test.
pub fn mcp_guard() -> PathBuf {
    workspace_bin("mcp-guard")
}

/// Panics unless running as root (these tests need the real kernel's enforcement) and the
/// server user is ready ([`server_user`]).
pub fn require_root() {
    // SAFETY: geteuid has no preconditions and cannot fail.
    let euid = unsafe { libc::geteuid() };
    assert_eq!(
        euid, 0,
        "this test needs root (eBPF, cgroups, namespaces); run it as root, as CI does"
    );
    // The servers root's exec launches run as the server user: it must exist and reach the
    // workspace.
    server_user();
}

/// The system user a standalone root `exec` (no `SUDO_UID`, no policy `user`) runs servers as.
pub const SERVER_USER: &str = "mcp-guard-server";

/// [`SERVER_USER`]'s uid and gid. Panics when the host lacks it (`cargo xtask setup` makes it)
/// or when it cannot reach the workspace: the tests' servers run as that user, from the
/// workspace's build, venv and `node_modules`.
pub fn server_user() -> (u32, u32) {
    static CHECKED: std::sync::OnceLock<(u32, u32)> = std::sync::OnceLock::new();
    *CHECKED.get_or_init(|| {
        let out = std::process::Command::new("getent")
            .args(["passwd", SERVER_USER])
            .output()
            .expect("getent");
        let line = String::from_utf8_lossy(&out.stdout).into_owned();
        let fields: Vec<&str> = line.trim().split(':').collect();
        let (Some(uid), Some(gid)) = (
            fields.get(2).and_then(|u| u.parse().ok()),
            fields.get(3).and_then(|g| g.parse().ok()),
        ) else {
            panic!("the system user {SERVER_USER} is missing: run `cargo xtask setup`");
        };
        for dir in [workspace_root(), target_dir()] {
            // Asked of the kernel as that user (mode bits alone miss ACLs).
            let enters = |a: &Path| {
                std::process::Command::new("runuser")
                    .args(["-u", SERVER_USER, "--", "test", "-x"])
                    .arg(a)
                    .status()
                    .is_ok_and(|s| s.success())
            };
            if let Some(a) = dir.ancestors().find(|a| !enters(a)) {
                panic!(
                    "{} is below {}, which {SERVER_USER} cannot enter: the tests' servers run \
                     as that user from the workspace; `cargo xtask setup` lets it through \
                     (an ACL entry), or check the workspace out where every user may enter",
                    dir.display(),
                    a.display()
                );
            }
        }
        (uid, gid)
    })
}

/// Gives `path` (and everything below it) to [`SERVER_USER`]: what a user does for a directory a
/// policy lets the servers write.
pub fn give_to_server_user(path: &Path) {
    let (uid, gid) = server_user();
    let status = std::process::Command::new("chown")
        .arg("-R")
        .arg(format!("{uid}:{gid}"))
        .arg(path)
        .status()
        .expect("chown");
    assert!(status.success(), "chown -R {uid}:{gid} {}", path.display());
}

/// The Python interpreter of the test environment (MCP SDK and PyPI servers installed).
pub fn python() -> PathBuf {
    let path = workspace_root().join(".venv/bin/python");
    assert!(
        path.exists(),
        "{} is missing: run `cargo xtask setup`",
        path.display()
    );
    path
}

/// The entry script of an npm MCP server installed by setup, e.g.
/// `@modelcontextprotocol/server-filesystem`.
pub fn npm_server(package: &str) -> PathBuf {
    let dir = workspace_root().join("tests/node_modules").join(package);
    let manifest = std::fs::read_to_string(dir.join("package.json"))
        .unwrap_or_else(|e| panic!("{package} is not installed ({e}): run `cargo xtask setup`"));
    let manifest: serde_json::Value =
        serde_json::from_str(&manifest).expect("package.json is JSON");
    let bin = match &manifest["bin"] {
        serde_json::Value::String(s) => s.clone(),
        serde_json::Value::Object(m) => m
            .values()
            .next()
            .and_then(|v| v.as_str())
            .expect("a bin entry")
            .to_string(),
        _ => manifest["main"].as_str().expect("bin or main").to_string(),
    };
    dir.join(bin)
}

/// A fixture file under `tests/fixtures/`.
pub fn fixture(name: &str) -> PathBuf {
    workspace_root().join("tests/fixtures").join(name)
}

/// Where tests put the files a jailed server must see (homes, work dirs, state): the target
/// directory, unless the checkout lives under /tmp — the jail gives every server a private /tmp
/// that shows only the paths its policy grants, so files outside the grant would vanish (ENOENT)
/// instead of being denied (EACCES) — then `/var/tmp/mcp-guard-tests`.
pub fn scratch_root() -> PathBuf {
    let target = target_dir();
    if target.starts_with("/tmp") {
        PathBuf::from("/var/tmp/mcp-guard-tests")
    } else {
        target
    }
}

/// A fresh, empty directory for one test: `<scratch_root>/mcp-guard-tests/<group>-<tag>-<pid>`.
/// `group` names the test file, so test binaries running at once never share one.
pub fn fresh_dir(group: &str, tag: &str) -> PathBuf {
    let dir = scratch_root()
        .join("mcp-guard-tests")
        .join(format!("{group}-{tag}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).expect("create the test's directory");
    dir
}

/// The median of `samples` (the upper one of an even count); panics on an empty set.
pub fn median<T: PartialOrd + Copy>(mut samples: Vec<T>) -> T {
    assert!(!samples.is_empty(), "the median of no samples");
    samples.sort_by(|a, b| a.partial_cmp(b).unwrap_or(std::cmp::Ordering::Equal));
    samples[samples.len() / 2]
}

/// A finished command's status, stdout and stderr, for assertion messages.
pub fn describe(out: &std::process::Output) -> String {
    format!(
        "status {:?}\nstdout: {}\nstderr: {}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

/// The podman socket the container tests use.
pub const PODMAN_SOCKET: &str = "/run/podman/podman.sock";

/// Makes sure podman serves the Docker Engine API on [`PODMAN_SOCKET`] (starts
/// `podman system service` detached when nothing answers there); returns `unix://` + socket.
pub fn podman_engine() -> String {
    use std::os::unix::net::UnixStream;
    let podman = std::process::Command::new("podman")
        .arg("--version")
        .output()
        .unwrap_or_else(|e| panic!("podman is not installed ({e}): run `cargo xtask setup`"));
    assert!(
        podman.status.success(),
        "podman --version: {}",
        describe(&podman)
    );
    if UnixStream::connect(PODMAN_SOCKET).is_err() {
        std::fs::create_dir_all("/run/podman").expect("/run/podman");
        let _ = std::fs::remove_file(PODMAN_SOCKET);
        // Detached (setsid through the shell's background job): it outlives the test process,
        // which is what a CI host running the test binaries one after another wants. From `/`:
        // its conmons inherit its working directory, and a checkout it was started in may go.
        let status = std::process::Command::new("sh")
            .current_dir("/")
            .args([
                "-c",
                &format!(
                    "setsid podman system service --time=0 unix://{PODMAN_SOCKET} \
                     >/tmp/mcp-guard-podman-service.log 2>&1 < /dev/null &"
                ),
            ])
            .status()
            .expect("starting podman system service");
        assert!(status.success());
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
        while UnixStream::connect(PODMAN_SOCKET).is_err() {
            assert!(
                std::time::Instant::now() < deadline,
                "podman system service did not open {PODMAN_SOCKET} within 30s \
                 (see /tmp/mcp-guard-podman-service.log)"
            );
            std::thread::sleep(std::time::Duration::from_millis(100));
        }
    }
    format!("unix://{PODMAN_SOCKET}")
}

/// The container test image (built offline by `tests/fixtures/container/build_image.sh` from the
/// venv's Python, the MCP SDK, mcp-server-time and `container_server.py`, once per content of
/// the fixture files): returns `(name, image id)`, the id as `sha256:HEX`.
pub fn container_test_image() -> (String, String) {
    use sha2::Digest;
    let dir = fixture("container");
    let mut hash = sha2::Sha256::new();
    for f in ["build_image.sh", "container_server.py"] {
        hash.update(std::fs::read(dir.join(f)).expect("container fixture"));
    }
    let tag: String = hash.finalize()[..6]
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect();
    let name = format!("localhost/mcp-guard-test:{tag}");
    let inspect = || {
        std::process::Command::new("podman")
            .args(["image", "inspect", "--format", "{{.Id}}", &name])
            .output()
            .expect("podman image inspect")
    };
    let mut out = inspect();
    if !out.status.success() {
        let py = std::fs::canonicalize(python()).expect("venv python");
        let prefix = py
            .parent()
            .and_then(Path::parent)
            .expect("python prefix")
            .to_path_buf();
        let site = std::fs::read_dir(workspace_root().join(".venv/lib"))
            .expect("venv lib")
            .flatten()
            .map(|e| e.path().join("site-packages"))
            .find(|p| p.exists())
            .expect("venv site-packages");
        let build = std::process::Command::new(dir.join("build_image.sh"))
            .arg(&prefix)
            .arg(&site)
            .arg(&name)
            .output()
            .expect("build_image.sh");
        assert!(
            build.status.success(),
            "building the test image: {}",
            describe(&build)
        );
        out = inspect();
    }
    assert!(out.status.success(), "{}", describe(&out));
    let id = String::from_utf8_lossy(&out.stdout).trim().to_string();
    let id = if id.starts_with("sha256:") {
        id
    } else {
        format!("sha256:{id}")
    };
    (name, id)
}

/// The shipped `policies/everything.toml` with `extra` readable and runnable and `get-sum`
/// denied (the tests' installs may live outside the shipped read set).
pub fn everything_policy(extra: &Path) -> String {
    let shipped = std::fs::read_to_string(workspace_root().join("policies/everything.toml"))
        .expect("read the shipped policy");
    let line = format!("  \"{}\",\n", extra.display());
    let mut text = String::new();
    let mut in_tools = false;
    for l in shipped.lines() {
        if l.starts_with('[') {
            in_tools = l == "[tools]";
        }
        if in_tools && l == "deny = []" {
            text.push_str("deny = [\"get-sum\"]\n");
            continue;
        }
        text.push_str(l);
        text.push('\n');
        if l == "read = [" || l == "exec = [" {
            text.push_str(&line);
        }
    }
    assert!(
        text.contains("deny = [\"get-sum\"]"),
        "no [tools] deny in the policy"
    );
    text
}
