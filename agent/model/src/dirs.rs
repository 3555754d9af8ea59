//! Where mcp-guard keeps its files: the state dir and the policy dir (global flags / env).
use std::path::PathBuf;

/// Default state directory (`--state-dir`, `MCP_GUARD_STATE_DIR`).
pub const DEFAULT_STATE_DIR: &str = "/var/lib/mcp-guard";
/// Default policy directory (`--policy-dir`, `MCP_GUARD_POLICY_DIR`).
pub const DEFAULT_POLICY_DIR: &str = "/etc/mcp-guard/policies";

/// The directories every command may read or write.
#[derive(Clone, Debug)]
pub struct Dirs {
    /// State: pins, audit logs, the store.
    pub state: PathBuf,
    /// Policies found by name.
    pub policy: PathBuf,
}
