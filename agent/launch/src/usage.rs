//! What a session's processes used at their peak (memory, tasks), read from its cgroup when the
//! session ends: what `policy suggest` sets `[limits]` from. The kernel keeps the peaks only
//! where the controller is attached, so every session's cgroup carries the memory and pids
//! controllers (with no limit) even when its policy sets none.

use std::{fs, path::Path};

use super::cgroup::{Applied, Cgroup, Controller, Limits, Mounts};

/// The peaks of one session; `None` where this host does not account for it.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Peaks {
    /// The highest memory use of the whole tree, in bytes.
    pub memory_bytes: Option<u64>,
    /// The most tasks (processes and threads) alive at once.
    pub pids: Option<u64>,
}

/// Puts the session's cgroup under the memory and pids controllers (v2, else v1) without
/// limiting anything, so their peaks are kept. Best effort: accounting missing on a host only
/// leaves the peaks unknown.
pub fn track(cg: &mut Cgroup, mounts: &Mounts) {
    for c in [Controller::Memory, Controller::Pids] {
        match cg.apply(mounts, c, &Limits::default()) {
            Ok(Applied::V2 | Applied::V1(_)) => {}
            Ok(Applied::Unavailable) => tracing::debug!("no {} accounting here", c.name()),
            Err(e) => tracing::debug!("cannot account for {}: {e}", c.name()),
        }
    }
}

/// The peaks kept by the session's cgroup directories (read before they are removed).
pub fn peaks(cg: &Cgroup) -> Peaks {
    let mut p = Peaks::default();
    for dir in cg.dirs() {
        // v2 names first, then v1's.
        for file in ["memory.peak", "memory.max_usage_in_bytes"] {
            p.memory_bytes = p.memory_bytes.or_else(|| read_u64(&dir.join(file)));
        }
        p.pids = p.pids.or_else(|| read_u64(&dir.join("pids.peak")));
    }
    p
}

fn read_u64(path: &Path) -> Option<u64> {
    fs::read_to_string(path).ok()?.trim().parse().ok()
}

/// The `usage` event that keeps `peaks` in the session's history (`events --kind usage`);
/// `None` when nothing was accounted for.
pub fn event(peaks: Peaks, server: &str, session: &str) -> Option<mcp_guard_model::EventRecord> {
    use mcp_guard_model::{EventKind, EventRecord, Timestamp};
    if peaks == Peaks::default() {
        return None;
    }
    Some(EventRecord {
        detail: Some(serde_json::json!({
            "memory_peak_bytes": peaks.memory_bytes,
            "pids_peak": peaks.pids,
        })),
        ..EventRecord::new(
            format!("{session}-usage"),
            Timestamp::now(),
            server,
            session,
            std::process::id(),
            EventKind::Other(USAGE.to_string()),
        )
    })
}

/// The event kind that carries a session's peaks.
pub const USAGE: &str = "usage";
