//! Records a writer could not keep (the disk full, the queue full), counted per session and
//! reason until the store takes writes again, then written as `lost` events: the store itself
//! says where its history has a gap.

use std::collections::BTreeMap;

use super::{EventRecord, Record, Timestamp};

/// Distinct (server, session, reason) counted apart at most; past that, the rest is counted
/// under an empty server and session.
const MAX_KEYS: usize = 1_024;

/// Why records were lost, as the `lost` events' `detail.reason` (and the agent's
/// `mcp_guard_events_dropped_total{reason}`).
pub const WRITE_FAILED: &str = "store_write_failed";
/// The writer's queue was full.
pub const QUEUE_FULL: &str = "store_queue_full";

/// Lost records not yet written down, by (server, session, reason).
#[derive(Debug, Default)]
pub(super) struct LostLedger {
    counts: BTreeMap<(String, String, &'static str), u64>,
}

impl LostLedger {
    /// Counts `record` as lost for `reason`.
    pub(super) fn add(&mut self, record: &Record, reason: &'static str) {
        let (server, session) = match record {
            Record::Session(s) => (s.server.as_str(), s.session.as_str()),
            Record::Call(c) => (c.server.as_str(), c.session.as_str()),
            Record::Event(e) => (e.server.as_str(), e.session.as_str()),
            Record::Alert(a) => (a.server.as_str(), a.session.as_str()),
            Record::Facts(f) => ("", f.session.as_str()),
        };
        self.add_n(server, session, reason, 1);
    }

    fn add_n(&mut self, server: &str, session: &str, reason: &'static str, n: u64) {
        let key = (server.to_string(), session.to_string(), reason);
        let key = if self.counts.len() < MAX_KEYS || self.counts.contains_key(&key) {
            key
        } else {
            (String::new(), String::new(), reason)
        };
        *self.counts.entry(key).or_default() += n;
    }

    /// Moves everything `other` counted into this ledger.
    pub(super) fn take_from(&mut self, other: &mut LostLedger) {
        for ((server, session, reason), n) in std::mem::take(&mut other.counts) {
            self.add_n(&server, &session, reason, n);
        }
    }

    pub(super) fn is_empty(&self) -> bool {
        self.counts.is_empty()
    }

    /// Records lost in all.
    pub(super) fn total(&self) -> u64 {
        self.counts.values().sum()
    }

    /// The `lost` events that say what this ledger counted, ids unique to this writer
    /// (`writer` tells the writers of one store apart: pid and start time).
    pub(super) fn events(&self, writer: &str, seq: &mut u64) -> Vec<Record> {
        self.counts
            .iter()
            .map(|((server, session, reason), n)| {
                *seq += 1;
                let mut e = EventRecord::lost(
                    format!("{session}-lost-{reason}-{writer}-{seq}"),
                    server,
                    session,
                    reason,
                    *n,
                );
                if let Some(serde_json::Value::Object(d)) = &mut e.detail {
                    // The agent counts its own writer's failures as they happen, and others'
                    // from these events: the pid tells which are its own.
                    d.insert("pid".into(), std::process::id().into());
                }
                e.ts = Timestamp::now();
                e.into()
            })
            .collect()
    }

    pub(super) fn clear(&mut self) {
        self.counts.clear();
    }
}
