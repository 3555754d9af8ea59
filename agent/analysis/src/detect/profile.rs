//! What a server normally does, learned per (server, tool) and kept as JSON under the state dir:
//! the baseline of the learned rules (new egress, interpreter exec).

use std::collections::{BTreeMap, BTreeSet};
use std::io;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use mcp_guard_model::names::StateKey;
use mcp_guard_statefs::StateDir;

/// What one (server, tool) normally does.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ToolProfile {
    /// Programs exec'd (paths).
    #[serde(default)]
    pub exec: BTreeSet<String>,
    /// Egress destinations (`addr:port`).
    #[serde(default)]
    pub egress: BTreeSet<String>,
    /// Directories of opened paths.
    #[serde(default)]
    pub prefixes: BTreeSet<String>,
}

/// The directory of learned profiles under the state dir.
pub const PROFILES_DIR: &str = "profiles";

/// A server's learned profile: per tool (events outside calls under `""`).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Profile {
    /// Per tool.
    #[serde(default)]
    pub tools: BTreeMap<String, ToolProfile>,
}

impl Profile {
    /// `<state>/profiles/<policy>/<server>.json`: one policy's sessions never read or write
    /// what another policy's server learned.
    pub fn path(state_dir: &Path, key: &StateKey) -> PathBuf {
        state_dir
            .join(PROFILES_DIR)
            .join(&key.policy)
            .join(format!("{}.json", key.server))
    }

    /// Load; a missing file is an empty profile, a corrupt one an error (never silently reset).
    pub fn load(state_dir: &Path, key: &StateKey) -> io::Result<Self> {
        let path = Self::path(state_dir, key);
        let bytes = match StateDir::existing(state_dir)? {
            Some(state) => state.read(
                &format!("{PROFILES_DIR}/{}", key.policy),
                &format!("{}.json", key.server),
            )?,
            None => None,
        };
        match bytes {
            Some(bytes) => serde_json::from_slice(&bytes).map_err(|e| {
                io::Error::new(
                    io::ErrorKind::InvalidData,
                    format!("{}: {e}", path.display()),
                )
            }),
            None => Ok(Self::default()),
        }
    }

    /// Save atomically (a fresh temp file renamed over the profile).
    pub fn save(&self, state_dir: &Path, key: &StateKey) -> io::Result<()> {
        StateDir::create(state_dir)?.write(
            &format!("{PROFILES_DIR}/{}", key.policy),
            &format!("{}.json", key.server),
            &serde_json::to_vec_pretty(self).map_err(io::Error::other)?,
        )
    }

    /// Adds everything `other` has seen.
    pub fn merge(&mut self, other: &Profile) {
        for (tool, seen) in &other.tools {
            let mine = self.tool(tool);
            mine.exec.extend(seen.exec.iter().cloned());
            mine.egress.extend(seen.egress.iter().cloned());
            mine.prefixes.extend(seen.prefixes.iter().cloned());
        }
    }

    /// What `tool` has done so far, empty the first time.
    pub(super) fn tool(&mut self, tool: &str) -> &mut ToolProfile {
        self.tools.entry(tool.to_owned()).or_default()
    }

    pub(super) fn any_exec(&self, prog: &str) -> bool {
        self.tools.values().any(|t| t.exec.contains(prog))
    }
}
