//! `mcp-guard quarantine SERVER` / `release SERVER`: stop a server everywhere on the host, and
//! undo it.
//!
//! A quarantine is a marker file in `<state>/quarantine/` plus a sweep that kills every live
//! session of the server through its cgroup (`<v2>/mcp-guard/<server>-<pid>-<nonce>`). `exec`
//! checks the marker after it has made the session's cgroup and before the server runs, and
//! the quarantine writes the marker before it sweeps: a launch racing with a quarantine either
//! sees the marker or has a cgroup the sweep finds. Both commands are recorded in the store as
//! events (`kind` `quarantine` / `release`).

use std::{
    fs,
    io::{self, Write},
    path::{Path, PathBuf},
};

use serde::{Deserialize, Serialize};

use crate::{
    launch::cgroup::{self, Mounts},
    store::{EventKind, EventRecord, Store, StoreError, Timestamp, Verdict, db_path},
};

/// Event kinds written by these commands (not kernel events: the metrics leave them out).
pub const KINDS: [&str; 2] = ["quarantine", "release"];

/// Why and when a server was quarantined (the marker file's content).
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct Marker {
    /// The server name.
    pub server: String,
    /// When.
    pub since: Timestamp,
    /// The operator's reason.
    pub reason: Option<String>,
    /// The uid that ran the command.
    pub by_uid: u32,
}

/// What `quarantine` or `release` failed on.
#[derive(Debug, thiserror::Error)]
pub enum QuarantineError {
    /// The marker file could not be read or written.
    #[error("{path}: {source}")]
    Marker {
        /// The file.
        path: PathBuf,
        /// Why.
        source: io::Error,
    },
    /// The session's cgroup could not be killed.
    #[error("cannot kill session cgroup {path}: {source}")]
    Kill {
        /// The cgroup.
        path: PathBuf,
        /// Why.
        source: io::Error,
    },
    /// The command could not be recorded.
    #[error("store: {0}")]
    Store(#[from] StoreError),
}

fn marker_path(state_dir: &Path, server: &str) -> PathBuf {
    // Hex: any server name maps to one safe file name and back, without collisions.
    let hex: String = server.bytes().map(|b| format!("{b:02x}")).collect();
    state_dir.join("quarantine").join(hex)
}

/// The marker of a quarantined server, `None` when it may run. An unreadable marker counts as
/// quarantined (fail closed).
pub fn check(state_dir: &Path, server: &str) -> Option<Marker> {
    let path = marker_path(state_dir, server);
    match fs::read(&path) {
        Ok(bytes) => Some(serde_json::from_slice(&bytes).unwrap_or_else(|_| Marker {
            server: server.to_string(),
            since: Timestamp::from_unix_nanos(0),
            reason: Some(format!("unreadable marker {}", path.display())),
            by_uid: 0,
        })),
        Err(e) if e.kind() == io::ErrorKind::NotFound => None,
        Err(e) => Some(Marker {
            server: server.to_string(),
            since: Timestamp::from_unix_nanos(0),
            reason: Some(format!("marker {}: {e}", path.display())),
            by_uid: 0,
        }),
    }
}

/// Quarantines `server`: writes the marker, kills its live sessions (their cgroup names are
/// returned), records the event.
pub fn quarantine(
    state_dir: &Path,
    server: &str,
    reason: Option<String>,
) -> Result<Vec<String>, QuarantineError> {
    let marker = Marker {
        server: server.to_string(),
        since: Timestamp::now(),
        reason,
        by_uid: nix::unistd::getuid().as_raw(),
    };
    let path = marker_path(state_dir, server);
    write_marker(&path, &marker).map_err(|source| QuarantineError::Marker {
        path: path.clone(),
        source,
    })?;
    let killed = kill_sessions(server)?;
    record(
        state_dir,
        server,
        "quarantine",
        serde_json::json!({ "reason": marker.reason, "sessions_killed": killed }),
    )?;
    Ok(killed)
}

/// Lifts the quarantine of `server`; `false` when it was not quarantined.
pub fn release(state_dir: &Path, server: &str) -> Result<bool, QuarantineError> {
    let path = marker_path(state_dir, server);
    match fs::remove_file(&path) {
        Ok(()) => {}
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(false),
        Err(source) => return Err(QuarantineError::Marker { path, source }),
    }
    record(state_dir, server, "release", serde_json::json!({}))?;
    Ok(true)
}

fn write_marker(path: &Path, marker: &Marker) -> io::Result<()> {
    if let Some(dir) = path.parent() {
        fs::create_dir_all(dir)?;
    }
    // Written whole, then renamed: exec never reads half a marker.
    let tmp = path.with_extension("tmp");
    let mut file = fs::File::create(&tmp)?;
    file.write_all(&serde_json::to_vec(marker).map_err(io::Error::other)?)?;
    file.sync_all()?;
    fs::rename(&tmp, path)
}

/// Kills every live session cgroup of `server`; their leaf names.
fn kill_sessions(server: &str) -> Result<Vec<String>, QuarantineError> {
    let Ok(mounts) = Mounts::discover() else {
        return Ok(Vec::new());
    };
    let Some(parent) = mounts.v2.as_ref().map(|v2| v2.join(cgroup::PARENT)) else {
        return Ok(Vec::new());
    };
    let Ok(entries) = fs::read_dir(&parent) else {
        return Ok(Vec::new());
    };
    let mut killed = Vec::new();
    for entry in entries.flatten() {
        let name = entry.file_name().to_string_lossy().into_owned();
        if cgroup::leaf_server(&name).as_deref() != Some(cgroup::sanitize(server).as_str()) {
            continue;
        }
        let path = entry.path();
        cgroup::kill_all(&path).map_err(|source| QuarantineError::Kill {
            path: path.clone(),
            source,
        })?;
        killed.push(name);
    }
    Ok(killed)
}

fn record(
    state_dir: &Path,
    server: &str,
    kind: &str,
    detail: serde_json::Value,
) -> Result<(), QuarantineError> {
    let mut store = Store::open(&db_path(state_dir))?;
    let now = Timestamp::now();
    store.insert(EventRecord {
        verdict: if kind == "quarantine" {
            Verdict::Killed
        } else {
            Verdict::Allowed
        },
        detail: Some(detail),
        ..EventRecord::new(
            format!("{kind}-{}-{}", now.unix_nanos(), std::process::id()),
            now,
            server,
            "-",
            std::process::id(),
            EventKind::Other(kind.to_string()),
        )
    })?;

    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn markers_round_trip_and_unreadable_ones_fail_closed() {
        let dir = std::env::temp_dir().join(format!("mcp-guard-q-{}", std::process::id()));
        let _ = fs::remove_dir_all(&dir);
        assert!(check(&dir, "a/b c").is_none());
        let m = Marker {
            server: "a/b c".into(),
            since: Timestamp::now(),
            reason: Some("why".into()),
            by_uid: 0,
        };
        write_marker(&marker_path(&dir, "a/b c"), &m).expect("write");
        assert_eq!(check(&dir, "a/b c"), Some(m));
        assert!(check(&dir, "a_b c").is_none(), "names do not collide");
        fs::write(marker_path(&dir, "x"), "garbage").expect("write");
        assert!(
            check(&dir, "x").is_some(),
            "unreadable marker must quarantine"
        );
        let _ = fs::remove_dir_all(&dir);
    }
}
