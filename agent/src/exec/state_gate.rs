//! Whether the state dir lets a session start: a state dir others could plant files in is a
//! configuration error, a quarantined server or policy is refused.

use super::say;
use crate::{
    exit_codes::{EXIT_POLICY, EXIT_UNENFORCEABLE},
    quarantine,
};
use mcp_guard_model::names::StateKey;

/// Why the session may not start, from the state dir: exec's status (and says why), `None`
/// when it may. Checked once the session's cgroup exists (a quarantine writes its marker before
/// it sweeps the cgroups, so a launch racing with it is refused here or killed by the sweep).
/// - The state dir holds pins, profiles, quarantine markers and the store: one this user cannot
///   use, or another user could plant files or symlinks in, is a configuration error (78).
/// - A quarantine of the server's name or of its policy refuses it (77), saying how to lift it.
pub(super) fn refused_by_state(state_dir: &std::path::Path, key: &StateKey) -> Option<i32> {
    if let Err(e) = mcp_guard_statefs::StateDir::create(state_dir) {
        say(&format!(
            "state dir: {e}\n(--state-dir / MCP_GUARD_STATE_DIR: it must be this user's or \
             root's, and writable by no one else)"
        ));
        return Some(i32::from(EXIT_POLICY));
    }
    let q = quarantine::check(state_dir, key)?;
    let what = if q.server == key.server {
        format!("server {} is quarantined", key.server)
    } else {
        format!(
            "policy {} is quarantined with server {}, which ran under it",
            key.policy, q.server
        )
    };
    say(&format!(
        "{what} since {}{}: refusing to launch; `mcp-guard release {}` lifts it",
        q.since,
        q.reason.map(|r| format!(" ({r})")).unwrap_or_default(),
        q.server
    ));
    Some(i32::from(EXIT_UNENFORCEABLE))
}
