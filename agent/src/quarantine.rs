//! `mcp-guard quarantine SERVER` / `release SERVER`: stop a server everywhere on the host, and
//! undo it.
//!
//! What is "the server": its name, and the policies it ran under. Anyone who may launch picks
//! the name, so a quarantine by name alone is escaped with `--name other`; the marker therefore
//! also records every policy the server was seen running under (its sessions in the store, and
//! the policy dir's policy of that name), and a launch is refused when its server name is the
//! quarantined one OR its policy is one of those, whatever name it takes. The shared default
//! policy is the exception: everyone runs their own, unrelated servers under it, so it
//! identifies nothing; under it only the name is matched. Escaping that way gains nothing the
//! default policy does not give anyone anyway: no secrets or grants of another policy, and
//! none of the quarantined server's state (pins and profiles are kept per policy and name).
//!
//! A quarantine is a marker file in `<state>/quarantine/` plus a sweep that kills every live
//! session of the server through its cgroup (`<v2>/mcp-guard/<server>-<pid>-<nonce>@<policy>`,
//! matched by name or policy). `exec` checks the markers after it has made the session's cgroup
//! and before the server runs, and the quarantine writes the marker before it sweeps: a launch
//! racing with a quarantine either sees the marker or has a cgroup the sweep finds. Both
//! commands are recorded in the store as events (`kind` `quarantine` / `release`).

use std::{
    io,
    path::{Path, PathBuf},
};

use serde::{Deserialize, Serialize};

use mcp_guard_launch::cgroup::{self, Mounts};
use mcp_guard_model::dirs::Dirs;
use mcp_guard_model::names::{SHARED_POLICY, StateKey};
use mcp_guard_model::{EventKind, EventRecord, Timestamp, Verdict};
use mcp_guard_policy as policy;
use mcp_guard_statefs::StateDir;
use mcp_guard_store::{Store, StoreError, db_path};

/// Event kinds written by these commands (not kernel events: the metrics leave them out).
pub const KINDS: [&str; 2] = ["quarantine", "release"];

/// The markers' directory under the state dir.
const DIR: &str = "quarantine";

/// Why and when a server was quarantined (the marker file's content).
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct Marker {
    /// The server name.
    pub server: String,
    /// The policies it ran under: launches under them are refused too (the shared default
    /// policy excepted). Empty in the markers of earlier versions: the name only.
    #[serde(default)]
    pub policies: Vec<String>,
    /// When.
    pub since: Timestamp,
    /// The operator's reason.
    pub reason: Option<String>,
    /// The uid that ran the command.
    pub by_uid: u32,
}

impl Marker {
    /// Whether a launch of `key` is refused by this marker.
    pub fn covers(&self, key: &StateKey) -> bool {
        self.server == key.server || (!key.is_shared() && self.policies.contains(&key.policy))
    }

    fn failed(server: &str, why: String) -> Marker {
        Marker {
            server: server.to_string(),
            policies: Vec::new(),
            since: Timestamp::from_unix_nanos(0),
            reason: Some(why),
            by_uid: 0,
        }
    }
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

/// A marker's file name: the server name in hex (the naming of earlier versions, whose markers
/// must keep quarantining).
fn marker_name(server: &str) -> String {
    hex::encode(server)
}

fn marker_path(state_dir: &Path, server: &str) -> PathBuf {
    state_dir.join(DIR).join(marker_name(server))
}

/// The marker that refuses a launch of `key`, `None` when it may run: the marker of its name,
/// else one that lists its policy. An unreadable marker of its name, or a state dir that
/// cannot be read, counts as quarantined (fail closed).
pub fn check(state_dir: &Path, key: &StateKey) -> Option<Marker> {
    let dir = match StateDir::existing(state_dir).and_then(|s| match s {
        Some(s) => s.existing_subdir(DIR),
        None => Ok(None),
    }) {
        Ok(Some(dir)) => dir,
        Ok(None) => return None,
        Err(e) => {
            return Some(Marker::failed(
                &key.server,
                format!("cannot read the quarantine markers: {e}"),
            ));
        }
    };
    let own = marker_name(&key.server);
    match dir.read(&own) {
        Ok(Some(bytes)) => {
            return Some(serde_json::from_slice(&bytes).unwrap_or_else(|_| {
                Marker::failed(
                    &key.server,
                    format!(
                        "unreadable marker {}",
                        marker_path(state_dir, &key.server).display()
                    ),
                )
            }));
        }
        Ok(None) => {}
        Err(e) => return Some(Marker::failed(&key.server, format!("marker {e}"))),
    }
    if key.is_shared() {
        return None;
    }
    let names = match dir.names() {
        Ok(n) => n,
        Err(e) => {
            return Some(Marker::failed(
                &key.server,
                format!("cannot list the quarantine markers: {e}"),
            ));
        }
    };
    names
        .iter()
        .filter(|n| !n.starts_with('.'))
        .filter_map(|n| dir.read(n).ok().flatten())
        .filter_map(|bytes| serde_json::from_slice::<Marker>(&bytes).ok())
        .find(|m| m.covers(key))
}

/// Quarantines `server`: writes the marker (with the policies the server ran under), kills its
/// live sessions, records the event. Returns the marker and the cgroups killed.
pub fn quarantine(
    dirs: &Dirs,
    server: &str,
    reason: Option<String>,
) -> Result<(Marker, Vec<String>), QuarantineError> {
    let marker = Marker {
        server: server.to_string(),
        policies: policies_of(dirs, server),
        since: Timestamp::now(),
        reason,
        by_uid: nix::unistd::getuid().as_raw(),
    };
    let path = marker_path(&dirs.state, server);
    let written = serde_json::to_vec(&marker)
        .map_err(io::Error::other)
        .and_then(|bytes| StateDir::create(&dirs.state)?.write(DIR, &marker_name(server), &bytes));
    written.map_err(|source| QuarantineError::Marker {
        path: path.clone(),
        source,
    })?;
    let killed = kill_sessions(&marker)?;
    record(
        &dirs.state,
        server,
        "quarantine",
        serde_json::json!({
            "reason": marker.reason,
            "policies": marker.policies,
            "sessions_killed": killed,
        }),
    )?;
    Ok((marker, killed))
}

/// Lifts the quarantine of `server`; `false` when it was not quarantined.
pub fn release(state_dir: &Path, server: &str) -> Result<bool, QuarantineError> {
    let path = marker_path(state_dir, server);
    let removed = match StateDir::existing(state_dir).and_then(|s| match s {
        Some(s) => s.existing_subdir(DIR),
        None => Ok(None),
    }) {
        Ok(Some(dir)) => dir.remove(&marker_name(server)),
        Ok(None) => Ok(false),
        Err(e) => Err(e),
    };
    match removed {
        Ok(true) => {}
        Ok(false) => return Ok(false),
        Err(source) => return Err(QuarantineError::Marker { path, source }),
    }
    record(state_dir, server, "release", serde_json::json!({}))?;
    Ok(true)
}

/// The policies `server` is known by: those its recorded sessions ran under, and the policy
/// dir's policies named like it (file `<server>.toml`, or `name = "<server>"`). Sorted.
fn policies_of(dirs: &Dirs, server: &str) -> Vec<String> {
    let mut out = Vec::new();
    if let Ok(store) = Store::open_existing(&db_path(&dirs.state))
        && let Ok(sessions) = store.sessions(None)
    {
        for s in sessions.iter().filter(|s| s.server == server) {
            out.extend(recorded_policy_name(&s.policy));
        }
    }
    if let Ok(entries) = std::fs::read_dir(&dirs.policy) {
        for path in entries.flatten().map(|e| e.path()) {
            if path.extension().is_none_or(|e| e != "toml") {
                continue;
            }
            let stem_matches = path.file_stem().is_some_and(|s| s == server);
            match policy::load_file(&path) {
                Ok(p) if stem_matches || p.name == server => out.push(p.name),
                _ => {}
            }
        }
    }
    out.sort();
    out.dedup();
    out
}

/// A session record's policy (its file's path, or a name) as a policy name.
fn recorded_policy_name(recorded: &str) -> Option<String> {
    if !recorded.contains('/') {
        return mcp_guard_model::names::is_valid(recorded).then(|| recorded.to_string());
    }
    let path = Path::new(recorded);
    policy::load_file(path).map(|p| p.name).ok().or_else(|| {
        path.file_stem()
            .and_then(|s| s.to_str())
            .filter(|s| mcp_guard_model::names::is_valid(s))
            .map(str::to_string)
    })
}

/// Kills every live session cgroup the marker covers (its server's, and its policies' other
/// than the shared default); their leaf names.
fn kill_sessions(marker: &Marker) -> Result<Vec<String>, QuarantineError> {
    let Ok(mounts) = Mounts::discover() else {
        return Ok(Vec::new());
    };
    let Some(parent) = mounts.v2.as_ref().map(|v2| v2.join(cgroup::PARENT)) else {
        return Ok(Vec::new());
    };
    let Ok(entries) = std::fs::read_dir(&parent) else {
        return Ok(Vec::new());
    };
    let server = cgroup::sanitize(&marker.server);
    let mut killed = Vec::new();
    for entry in entries.flatten() {
        let name = entry.file_name().to_string_lossy().into_owned();
        let by_name = cgroup::leaf_server(&name).as_deref() == Some(server.as_str());
        let by_policy = cgroup::leaf_policy(&name).is_some_and(|p| {
            p != SHARED_POLICY && marker.policies.iter().any(|q| cgroup::sanitize(q) == p)
        });
        if !(by_name || by_policy) {
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

    fn key(policy: &str, server: &str) -> StateKey {
        StateKey::new(policy, server).expect("key")
    }

    fn write(dir: &Path, m: &Marker) {
        StateDir::create(dir)
            .and_then(|s| {
                s.write(
                    DIR,
                    &marker_name(&m.server),
                    &serde_json::to_vec(m).expect("json"),
                )
            })
            .expect("write marker");
    }

    #[test]
    fn markers_cover_the_name_and_the_policies_but_not_the_shared_default() {
        let dir = std::env::temp_dir().join(format!("mcp-guard-q-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        assert!(check(&dir, &key("p", "a")).is_none());
        let m = Marker {
            server: "a".into(),
            policies: vec!["team".into(), SHARED_POLICY.into()],
            since: Timestamp::now(),
            reason: Some("why".into()),
            by_uid: 0,
        };
        write(&dir, &m);
        assert_eq!(check(&dir, &key("p", "a")), Some(m.clone()), "by name");
        assert_eq!(
            check(&dir, &key(SHARED_POLICY, "a")),
            Some(m.clone()),
            "by name under the default policy too"
        );
        assert_eq!(check(&dir, &key("team", "b")), Some(m), "by policy");
        assert!(check(&dir, &key("p", "b")).is_none(), "another server");
        assert!(
            check(&dir, &key(SHARED_POLICY, "b")).is_none(),
            "the shared default policy is not a server's identity"
        );
        assert!(
            check(&dir, &key("p", "a_b")).is_none(),
            "names do not collide"
        );
        let garbage =
            StateDir::create(&dir).and_then(|s| s.write(DIR, &marker_name("x"), b"garbage"));
        garbage.expect("write");
        assert!(
            check(&dir, &key("p", "x")).is_some(),
            "unreadable marker must quarantine"
        );
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn a_marker_of_an_earlier_version_still_quarantines_its_name() {
        let dir = std::env::temp_dir().join(format!("mcp-guard-q-old-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        let old =
            r#"{"server":"a","since":"2024-01-01T00:00:00.000000000Z","reason":null,"by_uid":0}"#;
        StateDir::create(&dir)
            .and_then(|s| s.write(DIR, &marker_name("a"), old.as_bytes()))
            .expect("write");
        let m = check(&dir, &key("p", "a")).expect("quarantined");
        assert!(m.policies.is_empty() && m.reason.is_none(), "{m:?}");
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn recorded_policies_become_names() {
        assert_eq!(recorded_policy_name("default").as_deref(), Some("default"));
        assert_eq!(
            recorded_policy_name("/nonexistent/dir/team.toml").as_deref(),
            Some("team")
        );
        assert_eq!(recorded_policy_name("bad name"), None);
    }
}
