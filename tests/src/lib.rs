//! Helpers shared by mcp-guard's integration tests.
//!
//! The tests drive the real `mcp-guard` binary against the real kernel, real MCP servers and the
//! real MCP Python SDK. They need root; `cargo xtask test` builds the binaries and the test
//! environment (`cargo xtask setup`) first. A missing prerequisite panics with what to run,
//! never skips.

use std::path::{Path, PathBuf};

pub mod prom;

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
        .map(PathBuf::from)
        .unwrap_or_else(|| workspace_root().join("target"))
}

/// A binary built from this workspace (`cargo build --bins`), e.g. `mcp-guard`.
pub fn workspace_bin(name: &str) -> PathBuf {
    let path = target_dir().join("debug").join(name);
    assert!(
        path.exists(),
        "{} is missing: run `cargo xtask test` (or `cargo build --workspace --bins`) first",
        path.display()
    );
    path
}

/// The `mcp-guard` binary under test.
pub fn mcp_guard() -> PathBuf {
    workspace_bin("mcp-guard")
}

/// Panics unless running as root: these tests need the real kernel's enforcement.
pub fn require_root() {
    // SAFETY: geteuid has no preconditions and cannot fail.
    let euid = unsafe { libc::geteuid() };
    assert_eq!(
        euid, 0,
        "this test needs root (eBPF, cgroups, namespaces); run it as root, as CI does"
    );
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
        .unwrap_or_else(|e| panic!("{package} is not installed ({e}): run `cargo xtask setup`",));
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

/// A finished command's status, stdout and stderr, for assertion messages.
pub fn describe(out: &std::process::Output) -> String {
    format!(
        "status {:?}\nstdout: {}\nstderr: {}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}
