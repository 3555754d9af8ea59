//! Large messages pass (issue 23): a 20 MB file read through the real
//! `@modelcontextprotocol/server-filesystem`, and a multi-megabyte resource through the real
//! `server-everything`, arrive through `mcp-guard exec` with the same bytes as directly, with
//! the default `[mcp] max_message_size`. Needs root.

use std::{
    path::{Path, PathBuf},
    process::Command,
};

use mcp_guard_tests::{
    describe, everything_policy, fixture, give_to_server_user, mcp_guard, npm_server, python,
    require_root, scratch_root, workspace_root,
};

/// A scratch dir outside /tmp (the jail has its own /tmp), readable by the server user.
fn scratch(name: &str) -> PathBuf {
    let dir = scratch_root()
        .join("large-messages")
        .join(format!("{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(dir.join("data")).expect("scratch dir");
    std::fs::create_dir_all(dir.join("home")).expect("scratch dir");
    dir
}

/// The tests' npm installs (a symlink in worktrees), for the policies' read and exec sets.
fn node_modules() -> PathBuf {
    workspace_root()
        .join("tests/node_modules")
        .canonicalize()
        .expect("tests/node_modules: run `cargo xtask setup`")
}

/// Calls `tool` with `args` on `server` (a command line) through `mcp_bytes.py`; returns its
/// report.
fn call(
    dir: &Path,
    tool: &str,
    args: &str,
    server: &[&str],
    file: Option<&Path>,
) -> serde_json::Value {
    let mut cmd = Command::new(python());
    cmd.arg(fixture("mcp_bytes.py"))
        .args([tool, args, "--"])
        .args(server)
        .env("MCP_GUARD_STATE_DIR", dir.join("state"))
        .env("HOME", dir.join("home"));
    if let Some(f) = file {
        cmd.env("MCP_BYTES_FILE", f);
    }
    let out = cmd.output().expect("run mcp_bytes.py");
    assert!(
        out.status.success(),
        "{tool} via {server:?}: {}",
        describe(&out)
    );
    serde_json::from_slice(&out.stdout).expect("mcp_bytes JSON")
}

/// `server` run by `mcp-guard exec --policy policy`.
fn guarded<'a>(guard: &'a str, policy: &'a str, server: &[&'a str]) -> Vec<&'a str> {
    let mut v = vec![guard, "exec", "--policy", policy, "--"];
    v.extend_from_slice(server);
    v
}

/// Deterministic incompressible bytes (xorshift), so gzip cannot shrink them.
fn noise(len: usize) -> Vec<u8> {
    let mut x: u64 = 0x9E37_79B9_7F4A_7C15;
    (0..len)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x.to_le_bytes()[3]
        })
        .collect()
}

#[test]
fn a_20_mb_file_reads_through_server_filesystem_as_directly() {
    require_root();
    let dir = scratch("filesystem");
    let data = dir.join("data");
    // 20 MB of text lines: JSON escapes each newline, and the server sends the text twice
    // (content and structured content), so the message is far over 20 MB.
    let line = "the quick brown fox jumps over the lazy dog 0123456789\n";
    let text = line.repeat(20 * 1024 * 1024 / line.len() + 1);
    let file = data.join("big.txt");
    std::fs::write(&file, &text).expect("write the big file");
    give_to_server_user(&dir);
    let default = std::fs::read_to_string(workspace_root().join("policies/default.toml"))
        .expect("policies/default.toml");
    let policy_text = default
        .replacen("name = \"default\"", "name = \"filesystem\"", 1)
        .replacen(
            "read = [",
            &format!("read = [\"{}\", ", node_modules().display()),
            1,
        )
        .replacen(
            "write = [",
            &format!("write = [\"{}\", ", data.display()),
            1,
        );
    let policy = dir.join("filesystem.toml");
    std::fs::write(&policy, policy_text).expect("write policy");
    let entry = npm_server("@modelcontextprotocol/server-filesystem");
    let server = [
        "node",
        entry.to_str().expect("utf-8"),
        data.to_str().expect("utf-8"),
    ];
    let args = format!("{{\"path\": \"{}\"}}", file.display());
    let direct = call(&dir, "read_text_file", &args, &server, None);
    let guard = mcp_guard().display().to_string();
    let policy_s = policy.display().to_string();
    let through = call(
        &dir,
        "read_text_file",
        &args,
        &guarded(&guard, &policy_s, &server),
        None,
    );
    assert_eq!(direct["is_error"], false, "{direct}");
    assert!(
        direct["items"][0]["len"].as_u64() >= Some(text.len() as u64),
        "the direct read returned the file: {direct}"
    );
    assert_eq!(through, direct, "through mcp-guard vs direct");
    let _ = std::fs::remove_dir_all(dir);
}

#[test]
fn a_multi_megabyte_resource_passes_through_server_everything_as_directly() {
    require_root();
    let dir = scratch("everything");
    // 6 MB in (as a data: URI, 8 MB of base64 in the request) and the gzip of it back as a
    // resource blob (8 MB of base64 in the answer).
    let input = dir.join("data/noise.bin");
    std::fs::write(&input, noise(6 * 1024 * 1024)).expect("write input");
    give_to_server_user(&dir);
    let policy = dir.join("everything.toml");
    std::fs::write(&policy, everything_policy(&node_modules())).expect("write policy");
    let entry = npm_server("@modelcontextprotocol/server-everything");
    let server = ["node", entry.to_str().expect("utf-8"), "stdio"];
    let args = r#"{"name": "noise.gz", "data": "@FILE_DATA_URI@", "outputType": "resource"}"#;
    let direct = call(&dir, "gzip-file-as-resource", args, &server, Some(&input));
    let guard = mcp_guard().display().to_string();
    let policy_s = policy.display().to_string();
    let through = call(
        &dir,
        "gzip-file-as-resource",
        args,
        &guarded(&guard, &policy_s, &server),
        Some(&input),
    );
    assert_eq!(direct["is_error"], false, "{direct}");
    assert!(
        direct["items"][0]["len"].as_u64() > Some(6 * 1024 * 1024),
        "the direct call returned the compressed noise: {direct}"
    );
    assert_eq!(through, direct, "through mcp-guard vs direct");
    let _ = std::fs::remove_dir_all(dir);
}
