//! `mcp-guard policy suggest --server S [--session ID]...`: a policy (TOML that passes
//! `policy check`) from what the store saw the server do in its recorded sessions (all of them,
//! merged, or the ones named). Opened files become `[filesystem] read`/`write` rules collapsed to
//! the package or install root they lie in ([`roots`]); executed programs become `exec`, with
//! the interpreters the kernel loads for them ([`interp`]); connections become `[network]
//! allow`, by the host name the server's own DNS answer gave the address (the event's `host`)
//! or else one mcp-guard resolved for it, by address only where neither is known; Unix sockets
//! reached become `unix`; the tools called become `[tools] allow`; the sessions' peaks (the
//! `usage` events) set `[limits]` with headroom. Every line says why it is there.
//!
//! Secrets are never suggested: paths matching the built-in sensitive list are left out, and so
//! are failed opens and denied connects.

mod interp;
mod relative;
mod render;
mod roots;

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;

use mcp_guard_analysis::detect::PathGlobs;
use mcp_guard_model::{EventKind, EventRecord};
use mcp_guard_policy as policy;
use mcp_guard_store::{CallFilter, EventFilter, Store, StoreError};

pub use render::Why;

const WRITE_FLAGS: u32 = (libc::O_WRONLY | libc::O_RDWR | libc::O_CREAT | libc::O_TRUNC) as u32;

/// Why a suggestion could not be made.
#[derive(Debug, thiserror::Error)]
pub enum SuggestError {
    /// The store could not be read.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// Nothing was recorded to suggest from.
    #[error(
        "no recorded session of server {0:?}{1}: run it first with `mcp-guard exec --observe --name {0} -- ...`"
    )]
    NoSessions(String, String),
}

/// What to suggest a policy from.
pub struct Request<'a> {
    /// The server.
    pub server: &'a str,
    /// Only these sessions (empty: every recorded session of the server).
    pub sessions: &'a [String],
    /// The home the sensitive list's `~` expands to.
    pub home: &'a Path,
}

/// Everything observed, grouped by the policy line it becomes.
#[derive(Default)]
pub struct Observed {
    /// Sessions merged.
    pub sessions: BTreeSet<String>,
    /// Events read.
    pub events: usize,
    /// `[filesystem] read`.
    pub read: BTreeMap<String, Why>,
    /// `[filesystem] write`.
    pub write: BTreeMap<String, Why>,
    /// `[filesystem] exec`.
    pub exec: BTreeMap<String, Why>,
    /// `[network] allow`.
    pub allow: BTreeMap<String, Why>,
    /// `[network] unix`.
    pub unix: BTreeMap<String, Why>,
    /// `[tools] allow`: tool → calls.
    pub tools: BTreeMap<String, Why>,
    /// Highest memory peak (bytes) and the session count it was seen over.
    pub memory_peak: Option<u64>,
    /// Highest task peak.
    pub pids_peak: Option<u64>,
    /// Sessions that reported their peaks.
    pub usage_sessions: usize,
    /// Opens of relative paths whose directory could not be found.
    pub unplaced: usize,
}

/// The suggested policy for the request, as TOML text.
pub fn suggest(store: &Store, req: &Request<'_>) -> Result<String, SuggestError> {
    let observed = observe(store, req)?;
    Ok(render::policy(req.server, &observed))
}

fn observe(store: &Store, req: &Request<'_>) -> Result<Observed, SuggestError> {
    let sensitive: Vec<String> = policy::builtin_default()
        .detect
        .sensitive
        .iter()
        .map(|s| {
            policy::expand_home(s, req.home)
                .to_string_lossy()
                .into_owned()
        })
        .collect();
    let sensitive = PathGlobs::new(&sensitive);
    let wanted = |s: &str| req.sessions.is_empty() || req.sessions.iter().any(|w| w == s);
    let mut o = Observed::default();
    let events: Vec<EventRecord> = store
        .events(&EventFilter {
            server: Some(req.server.to_string()),
            ..Default::default()
        })?
        .into_iter()
        .filter(|e| wanted(&e.session))
        .collect();
    let calls = store.calls(&CallFilter {
        server: Some(req.server.to_string()),
        ..Default::default()
    })?;
    let mut tool_of: BTreeMap<&str, &str> = BTreeMap::new();
    for c in calls.iter().filter(|c| wanted(&c.session)) {
        o.sessions.insert(c.session.clone());
        if let Some(tool) = c.tool.as_deref() {
            tool_of.insert(&c.call_id, tool);
            if c.decision.as_str() != "denied" {
                o.tools
                    .entry(tool.to_string())
                    .or_insert_with(|| Why::new("tool"))
                    .add(&c.session, None, &c.request_id);
            }
        }
    }
    // Every name mcp-guard resolved, by address: how a connect's address gets its name back.
    let mut names: BTreeMap<String, String> = BTreeMap::new();
    for r in store.events(&EventFilter {
        kind: Some("resolve".into()),
        ..Default::default()
    })? {
        let Some(d) = r.detail.as_ref() else { continue };
        let Some(name) = d["name"].as_str() else {
            continue;
        };
        for a in d["addrs"].as_array().into_iter().flatten() {
            if let Some(a) = a.as_str() {
                names.insert(a.to_string(), name.to_string());
            }
        }
    }
    let cwd = relative::Places::new(
        events
            .iter()
            .filter(|e| e.kind == EventKind::Open && e.result.is_none_or(|r| r >= 0))
            .filter_map(|e| e.path.as_deref()),
    );
    let mut loose: [BTreeMap<String, Why>; 2] = Default::default();
    for e in &events {
        o.sessions.insert(e.session.clone());
        o.events += 1;
        let tool = e.call_id.as_deref().and_then(|c| tool_of.get(c).copied());
        if e.verdict.as_str() == "denied" {
            continue;
        }
        match &e.kind {
            EventKind::Open => {
                let Some(path) = e.path.as_deref() else {
                    continue;
                };
                let placed;
                let path = if path.starts_with('/') {
                    path
                } else {
                    let Some(p) = cwd.place(path) else {
                        o.unplaced += 1;
                        continue;
                    };
                    placed = p;
                    placed.as_str()
                };
                // Landlock grants the file a symlink leads to (e.g. /usr/lib/ssl/openssl.cnf is
                // /etc/ssl/openssl.cnf): resolve on this host, which the session ran on.
                let real = resolved(path);
                let path = real.as_str();
                let secret = |p: &str| sensitive.is_match(p);
                if e.result.is_some_and(|r| r < 0)
                    || secret(path)
                    || secret(e.path.as_deref().unwrap_or_default())
                {
                    continue;
                }
                let flags = e.flags.unwrap_or(0);
                let access = flags & libc::O_ACCMODE as u32;
                let reads = access != libc::O_WRONLY as u32;
                let writes = flags & WRITE_FLAGS != 0;
                let root = roots::root_of(path, &|p: &Path| p.exists());
                for (on, i) in [(reads, 0), (writes, 1)] {
                    if !on {
                        continue;
                    }
                    let set = if root.loose {
                        &mut loose[i]
                    } else if i == 0 {
                        &mut o.read
                    } else {
                        &mut o.write
                    };
                    set.entry(root.path.clone())
                        .or_insert_with(|| Why::new(root.what))
                        .add(&e.session, tool, path);
                }
            }
            EventKind::Exec => {
                // A failed exec (a PATH search trying each directory) is not recorded as
                // failed when only the syscall's entry is seen: what is not on disk is dropped.
                let ok = e.result.is_none_or(|r| r >= 0);
                let Some(path) = e
                    .path
                    .as_deref()
                    .filter(|p| ok && p.starts_with('/') && Path::new(p).exists())
                else {
                    continue;
                };
                o.exec
                    .entry(path.to_string())
                    .or_insert_with(|| Why::new("program"))
                    .add(&e.session, tool, path);
                // A script's interpreter is itself a program with an ELF interpreter.
                let mut program = path.to_string();
                for _ in 0..4 {
                    let Some(i) = interp::interpreter(Path::new(&program)) else {
                        break;
                    };
                    o.exec
                        .entry(i.clone())
                        .or_insert_with(|| Why::new("interpreter"))
                        .add(&e.session, tool, &program);
                    program = i;
                }
            }
            EventKind::Connect | EventKind::Sendmsg => {
                if let (Some(path), None) = (e.path.as_deref(), e.addr.as_deref()) {
                    // A Unix socket (seen under --observe, or already listed).
                    if path.starts_with('/') || path.len() > 1 && path.starts_with('@') {
                        o.unix
                            .entry(path.to_string())
                            .or_insert_with(|| Why::new("unix socket"))
                            .add(&e.session, tool, path);
                    }
                    continue;
                }
                if let (Some(addr), Some(port)) = (e.addr.as_deref(), e.port) {
                    let ip = addr.trim_start_matches('[').trim_end_matches(']');
                    // The name the server's own DNS gave the address first, then one mcp-guard
                    // resolved itself for an allowlisted name.
                    let name = e
                        .host
                        .as_deref()
                        .or_else(|| names.get(ip).map(String::as_str));
                    let (entry, what) = match name {
                        Some(name) => (format!("{name}:{port}"), "host"),
                        None if ip.contains(':') => (format!("[{ip}]:{port}"), "address"),
                        None => (format!("{ip}:{port}"), "address"),
                    };
                    o.allow
                        .entry(entry)
                        .or_insert_with(|| Why::new(what))
                        .add(&e.session, tool, ip);
                }
            }
            EventKind::Other(k) if k == mcp_guard_launch::usage::USAGE => {
                let Some(d) = e.detail.as_ref() else { continue };
                o.usage_sessions += 1;
                if let Some(m) = d["memory_peak_bytes"].as_u64() {
                    o.memory_peak = Some(o.memory_peak.map_or(m, |p| p.max(m)));
                }
                if let Some(n) = d["pids_peak"].as_u64() {
                    o.pids_peak = Some(o.pids_peak.map_or(n, |p| p.max(n)));
                }
            }
            _ => {}
        }
    }
    if o.sessions.is_empty() {
        let named = if req.sessions.is_empty() {
            String::new()
        } else {
            format!(" among {}", req.sessions.join(", "))
        };
        return Err(SuggestError::NoSessions(req.server.to_string(), named));
    }
    // With a host name to resolve, the policy allows the host's resolvers itself.
    if o.allow.values().any(|w| w.what == "host") {
        o.allow.retain(|k, _| !k.ends_with(":53"));
    }
    for (i, files) in loose.into_iter().enumerate() {
        let set = if i == 0 { &mut o.read } else { &mut o.write };
        group_loose(files, set);
        *set = minimal(std::mem::take(set));
    }
    Ok(o)
}

/// `path` with its symlinks resolved, when it still exists; as recorded otherwise, and for
/// /proc (its `self` would resolve to this process).
fn resolved(path: &str) -> String {
    if path.starts_with("/proc/") {
        return path.to_string();
    }
    std::fs::canonicalize(path)
        .ok()
        .and_then(|p| p.to_str().map(str::to_string))
        .unwrap_or_else(|| path.to_string())
}

/// Loose files: a directory many of them share is granted whole, the rest one by one.
fn group_loose(files: BTreeMap<String, Why>, into: &mut BTreeMap<String, Why>) {
    let mut by_dir: BTreeMap<String, Vec<(String, Why)>> = BTreeMap::new();
    for (path, why) in files {
        let dir = Path::new(&path)
            .parent()
            .map_or_else(|| "/".to_string(), |d| d.to_string_lossy().into_owned());
        by_dir.entry(dir).or_default().push((path, why));
    }
    for (dir, files) in by_dir {
        if files.len() >= roots::DIR_THRESHOLD && dir != "/" {
            let mut why = Why::new("directory");
            for (_, w) in files {
                why.merge(w);
            }
            into.entry(dir)
                .or_insert_with(|| Why::new("directory"))
                .merge(why);
        } else {
            for (path, w) in files {
                into.entry(path)
                    .or_insert_with(|| Why::new("file"))
                    .merge(w);
            }
        }
    }
}

/// Drops entries already covered by an ancestor in the set, folding their evidence into it.
fn minimal(entries: BTreeMap<String, Why>) -> BTreeMap<String, Why> {
    let mut kept: BTreeMap<String, Why> = BTreeMap::new();
    // Sorted order puts an ancestor before what lies below it.
    for (path, why) in entries {
        let ancestor = kept
            .keys()
            .rev()
            .find(|k| *k == "/" || path.starts_with(&format!("{k}/")))
            .cloned();
        match ancestor {
            Some(k) => kept.get_mut(&k).map(|w| w.merge(why)).unwrap_or_default(),
            None => {
                kept.insert(path, why);
            }
        }
    }
    kept
}
