//! `mcp-guard policy suggest --server S`: a policy (TOML that passes `policy check`) from what the
//! store saw the server do: opened paths → `[filesystem] read`/`write` directories, exec'd programs
//! → `exec`, connect destinations → `[network] allow`, Unix sockets reached → `[network] unix`.
//! Secrets are never suggested: paths matching
//! the built-in sensitive list are left out, and so are failed opens and denied connects.

use std::collections::BTreeSet;
use std::fmt::Write as _;
use std::path::Path;

use crate::detect::PathGlobs;
use mcp_guard_model::EventKind;
use mcp_guard_policy as policy;
use mcp_guard_store::{EventFilter, Store, StoreError};

const WRITE_FLAGS: u32 = (libc::O_WRONLY | libc::O_RDWR | libc::O_CREAT | libc::O_TRUNC) as u32;

/// The suggested policy for `server`, as TOML text; `home` expands the sensitive list's `~`.
pub fn suggest(store: &Store, server: &str, home: &Path) -> Result<String, StoreError> {
    let sensitive: Vec<String> = policy::builtin_default()
        .detect
        .sensitive
        .iter()
        .map(|s| policy::expand_home(s, home).to_string_lossy().into_owned())
        .collect();
    let sensitive = PathGlobs::new(&sensitive);
    let events = store.events(&EventFilter {
        server: Some(server.to_string()),
        ..Default::default()
    })?;
    let (mut read, mut write, mut exec, mut allow, mut unix) = (
        BTreeSet::new(),
        BTreeSet::new(),
        BTreeSet::new(),
        BTreeSet::new(),
        BTreeSet::new(),
    );
    for e in &events {
        match &e.kind {
            EventKind::Open => {
                let Some(path) = e.path.as_deref().filter(|p| p.starts_with('/')) else {
                    continue;
                };
                if e.result.is_some_and(|r| r < 0) || sensitive.is_match(path) {
                    continue;
                }
                let dir = Path::new(path)
                    .parent()
                    .map_or("/".into(), |d| d.to_string_lossy().into_owned());
                if e.flags.is_some_and(|f| f & WRITE_FLAGS != 0) {
                    write.insert(dir);
                } else {
                    read.insert(dir);
                }
            }
            EventKind::Exec => {
                let ok = e.result.is_none_or(|r| r >= 0);
                if let Some(path) = e.path.as_deref().filter(|p| ok && p.starts_with('/')) {
                    exec.insert(path.to_string());
                }
            }
            EventKind::Connect | EventKind::Sendmsg => {
                if e.verdict.as_str() == "denied" {
                    continue;
                }
                if let (Some(path), None) = (e.path.as_deref(), e.addr.as_deref()) {
                    // A Unix socket (seen under --observe, or already listed).
                    if path.starts_with('/') || path.len() > 1 && path.starts_with('@') {
                        unix.insert(path.to_string());
                    }
                    continue;
                }
                if let (Some(addr), Some(port)) = (e.addr.as_deref(), e.port) {
                    let host = addr.trim_start_matches('[').trim_end_matches(']');
                    allow.insert(if host.contains(':') {
                        format!("[{host}]:{port}")
                    } else {
                        format!("{host}:{port}")
                    });
                }
            }
            _ => {}
        }
    }
    let mut out = format!(
        "# Suggested by `mcp-guard policy suggest` from {} recorded events; review before use.\nname = {}\n",
        events.len(),
        quote(server)
    );
    let _ = write!(
        out,
        "\n[filesystem]\nread = {}\nwrite = {}\nexec = {}\n",
        list(&minimal(&read)),
        list(&minimal(&write)),
        list(&exec)
    );
    let _ = write!(out, "\n[network]\nallow = {}\n", list(&allow));
    if !unix.is_empty() {
        let _ = writeln!(out, "unix = {}", list(&unix));
    }
    Ok(out)
}

/// Drop directories already covered by an ancestor in the set.
fn minimal(dirs: &BTreeSet<String>) -> BTreeSet<String> {
    let mut kept: BTreeSet<String> = BTreeSet::new();
    for d in dirs {
        let covered = kept
            .iter()
            .any(|k| k == "/" || d == k || d.starts_with(&format!("{k}/")));
        if !covered {
            kept.insert(d.clone());
        }
    }
    kept
}

fn quote(s: &str) -> String {
    // JSON string escapes are valid TOML basic-string escapes.
    serde_json::Value::String(s.to_string()).to_string()
}

fn list(items: &BTreeSet<String>) -> String {
    if items.is_empty() {
        return "[]".into();
    }
    let mut s = String::from("[\n");
    for i in items {
        let _ = writeln!(s, "  {},", quote(i));
    }
    s.push(']');
    s
}
