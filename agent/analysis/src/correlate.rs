//! Correlation: kernel events of one server session + the proxy's call lifecycle → attributed events.
//!
//! A pure, synchronous state machine ([`Correlator`]): feed call facts and kernel events in any
//! order, then [`Correlator::poll`] at a given "now" (`CLOCK_BOOTTIME` ns) to take the events whose
//! attribution is settled. Events arrive through the ring buffer and call facts through the proxy's
//! pipe, so an event can be seen before the `CallStarted` of the call that caused it: events are
//! held until the proxy's watermark (the latest call fact or [`Correlator::advance`] time) passes
//! their timestamp, or until they are `max_delay_ns` old, whichever comes first. Nothing is held
//! forever and nothing is dropped: if more than `max_held` events wait, the oldest is emitted with
//! the best attribution known so far and [`Stats::forced`] counts it.
//!
//! Process identity: a pid can be reused, so each output carries a [`ProcessKey`] of
//! (pid, the boot-time of the exec that started the current program image in it, 0 if none seen).
//! An `Exec` event starts a new identity for its pid; a pid that is reused without our seeing an exec
//! (fork without exec) keeps its parent's program and so the previous key, which is what rules that
//! reason about "what program did this" need. Attribution itself is by time window, not by pid: every
//! process in the session's cgroup belongs to the server.

use std::collections::{BTreeMap, HashMap, VecDeque};

use mcp_guard_model::Attribution;
use mcp_guard_model::kernel_event::{KernelEvent, KernelEventKind};

/// A call-lifecycle fact from the proxy, stamped with [`mcp_guard_model::boot_ns_now`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum CallFact {
    /// A tool call was forwarded to the server.
    Started {
        /// The call id (as in `CallRecord::call_id`).
        call_id: String,
        /// The tool name, if the call is `tools/call`.
        tool: Option<String>,
        /// When the request was forwarded (`CLOCK_BOOTTIME` ns).
        at_boot_ns: u64,
    },
    /// The call's response (or error) came back, or the call was abandoned.
    Ended {
        /// The call id.
        call_id: String,
        /// When (`CLOCK_BOOTTIME` ns).
        at_boot_ns: u64,
        /// The tool, if the call was `tools/call`.
        tool: Option<String>,
        /// Size of the server's response, when one came.
        result_bytes: Option<u64>,
        /// Whether mcp-guard refused the call.
        denied: bool,
    },
    /// The client's `initialize` was answered: the server's launch is over.
    Initialized {
        /// When (`CLOCK_BOOTTIME` ns).
        at_boot_ns: u64,
    },
}

impl CallFact {
    /// The fact's timestamp.
    pub fn at_boot_ns(&self) -> u64 {
        match self {
            CallFact::Started { at_boot_ns, .. }
            | CallFact::Ended { at_boot_ns, .. }
            | CallFact::Initialized { at_boot_ns } => *at_boot_ns,
        }
    }
}

/// A process identity that survives pid reuse: the pid and the time its current image was exec'd.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ProcessKey {
    /// Process id (tgid).
    pub pid: u32,
    /// `CLOCK_BOOTTIME` ns of the exec that started this image; 0 if no exec was seen for the pid.
    pub exec_boot_ns: u64,
}

/// A kernel event tied (or not) to a call.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AttributedEvent {
    /// The event.
    pub event: KernelEvent,
    /// `call`, `ambiguous` or `none`.
    pub attribution: Attribution,
    /// The call, when `attribution` is `call`.
    pub call_id: Option<String>,
    /// That call's tool, when `attribution` is `call`.
    pub tool: Option<String>,
    /// All calls in flight, when `attribution` is `ambiguous` (in start order).
    pub candidates: Vec<String>,
    /// The process identity (see the module doc).
    pub process: ProcessKey,
    /// True when it was emitted because the hold queue overflowed, before its window closed.
    pub forced: bool,
}

/// Tuning of the reorder window.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct CorrelatorConfig {
    /// Longest an event waits for the proxy's watermark (ns).
    pub max_delay_ns: u64,
    /// Most events held at once; beyond it the oldest is emitted early.
    pub max_held: usize,
}

impl Default for CorrelatorConfig {
    fn default() -> Self {
        Self {
            max_delay_ns: 100_000_000,
            max_held: 4096,
        }
    }
}

/// Counters for `mcp-guard status` / metrics.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Stats {
    /// Events emitted.
    pub emitted: u64,
    /// Events emitted early because the hold queue was full.
    pub forced: u64,
    /// Events emitted by the delay bound rather than the watermark.
    pub timed_out: u64,
}

#[derive(Clone, Debug)]
struct Call {
    #[expect(
        clippy::struct_field_names,
        reason = "`call_id` is the contract's name for it"
    )]
    call_id: String,
    tool: Option<String>,
    start: u64,
    /// Arrival order, to keep calls that share a start time apart and in order.
    seq: u64,
}

/// The correlation state machine for one server session.
#[derive(Debug)]
pub struct Correlator {
    config: CorrelatorConfig,
    /// Calls in flight by (start, seq).
    open: BTreeMap<(u64, u64), Call>,
    /// Ended calls by (end, seq): an event at `ts` only looks at those ending at or after it,
    /// which are few (the recent ones), however many calls the window remembers.
    ended: BTreeMap<(u64, u64), Call>,
    /// Open calls' keys by call id.
    by_id: HashMap<String, (u64, u64)>,
    /// Ended facts whose start was not seen yet (start lost or reordered).
    early_ends: HashMap<String, u64>,
    seq: u64,
    watermark: u64,
    /// Held events with their arrival "now" (ns), oldest timestamp first.
    held: VecDeque<KernelEvent>,
    images: HashMap<u32, u64>,
    stats: Stats,
}

impl Correlator {
    /// A correlator with the given window.
    pub fn new(config: CorrelatorConfig) -> Self {
        Self {
            config,
            open: BTreeMap::new(),
            ended: BTreeMap::new(),
            by_id: HashMap::new(),
            early_ends: HashMap::new(),
            seq: 0,
            watermark: 0,
            held: VecDeque::new(),
            images: HashMap::new(),
            stats: Stats::default(),
        }
    }

    /// Record a call fact; it also advances the watermark to its timestamp.
    pub fn call_fact(&mut self, fact: CallFact) {
        self.advance(fact.at_boot_ns());
        match fact {
            CallFact::Started {
                call_id,
                tool,
                at_boot_ns,
            } => {
                self.seq += 1;
                let seq = self.seq;
                let call = Call {
                    call_id,
                    tool,
                    start: at_boot_ns,
                    seq,
                };
                if let Some(end) = self.early_ends.remove(&call.call_id) {
                    self.ended.insert((end, seq), call);
                } else {
                    self.by_id.insert(call.call_id.clone(), (at_boot_ns, seq));
                    self.open.insert((at_boot_ns, seq), call);
                }
            }
            CallFact::Ended {
                call_id,
                at_boot_ns,
                ..
            } => match self.by_id.remove(&call_id) {
                Some(key) => {
                    if let Some(call) = self.open.remove(&key) {
                        self.ended.insert((at_boot_ns, call.seq), call);
                    }
                }
                None => {
                    self.early_ends.insert(call_id, at_boot_ns);
                }
            },
            // Not about a call: nothing to attribute.
            CallFact::Initialized { .. } => {}
        }
    }

    /// The proxy has delivered every call fact up to `at_boot_ns` (a heartbeat while idle).
    pub fn advance(&mut self, at_boot_ns: u64) {
        self.watermark = self.watermark.max(at_boot_ns);
    }

    /// Queue a kernel event for attribution.
    pub fn event(&mut self, event: KernelEvent) {
        // Keep `held` sorted by timestamp; events mostly arrive in order, so search from the back.
        let pos = self
            .held
            .iter()
            .rposition(|e| e.ts_boot_ns <= event.ts_boot_ns)
            .map_or(0, |p| p + 1);
        self.held.insert(pos, event);
    }

    /// Emit every event whose window has closed at `now_boot_ns`, oldest first.
    pub fn poll(&mut self, now_boot_ns: u64) -> Vec<AttributedEvent> {
        let mut out = Vec::new();
        while let Some(first) = self.held.front() {
            let ts = first.ts_boot_ns;
            let settled = ts <= self.watermark;
            let timed_out = now_boot_ns.saturating_sub(ts) >= self.config.max_delay_ns;
            let forced = self.held.len() > self.config.max_held;
            if !(settled || timed_out || forced) {
                break;
            }
            let Some(event) = self.held.pop_front() else {
                break;
            };
            if !settled {
                if forced && !timed_out {
                    self.stats.forced += 1;
                } else {
                    self.stats.timed_out += 1;
                }
            }
            out.push(self.attribute(event, forced && !settled && !timed_out));
        }
        self.prune();
        out
    }

    /// Emit everything still held (end of session), with the best attribution known.
    pub fn flush(&mut self) -> Vec<AttributedEvent> {
        let mut out = Vec::with_capacity(self.held.len());
        while let Some(event) = self.held.pop_front() {
            out.push(self.attribute(event, false));
        }
        out
    }

    /// Counters so far.
    pub fn stats(&self) -> Stats {
        self.stats
    }

    /// The timestamp of the oldest event waiting, if any.
    pub fn oldest_held(&self) -> Option<u64> {
        self.held.front().map(|e| e.ts_boot_ns)
    }

    /// How many events are waiting.
    pub fn held(&self) -> usize {
        self.held.len()
    }

    fn attribute(&mut self, event: KernelEvent, forced: bool) -> AttributedEvent {
        let ts = event.ts_boot_ns;
        // A failed exec leaves the process's image as it was.
        if matches!(event.kind, KernelEventKind::Exec { result, .. } if result.is_none_or(|r| r == 0))
            && event.pid != 0
        {
            self.images.insert(event.pid, ts);
        }
        let process = ProcessKey {
            pid: event.pid,
            exec_boot_ns: self.images.get(&event.pid).copied().unwrap_or(0),
        };
        let mut live: Vec<&Call> = self
            .open
            .range(..=(ts, u64::MAX))
            .map(|(_, c)| c)
            .chain(
                self.ended
                    .range((ts, 0)..)
                    .map(|(_, c)| c)
                    .filter(|c| c.start <= ts),
            )
            .collect();
        live.sort_by_key(|c| (c.start, c.seq));
        self.stats.emitted += 1;
        let (attribution, call_id, tool, candidates) = match live.as_slice() {
            [] => (Attribution::None, None, None, Vec::new()),
            [one] => (
                Attribution::Call,
                Some(one.call_id.clone()),
                one.tool.clone(),
                Vec::new(),
            ),
            many => (
                Attribution::Ambiguous,
                None,
                None,
                many.iter().map(|c| c.call_id.clone()).collect(),
            ),
        };
        AttributedEvent {
            event,
            attribution,
            call_id,
            tool,
            candidates,
            process,
            forced,
        }
    }

    /// Forget ended calls no held or future event can fall in (events older than the delay bound
    /// behind the watermark are emitted without waiting anyway).
    fn prune(&mut self) {
        let oldest_held = self.held.front().map_or(u64::MAX, |e| e.ts_boot_ns);
        let horizon = self
            .watermark
            .saturating_sub(self.config.max_delay_ns.saturating_mul(10))
            .min(oldest_held);
        self.ended = self.ended.split_off(&(horizon, 0));
        self.early_ends.retain(|_, end| *end >= horizon);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;

    const MS: u64 = 1_000_000;

    fn ev(ts: u64, pid: u32, kind: KernelEventKind) -> KernelEvent {
        KernelEvent {
            ts_boot_ns: ts,
            cgroup_id: 1,
            pid,
            tid: pid,
            server: Arc::from("s"),
            session: Arc::from("sess"),
            kind,
        }
    }

    fn open(ts: u64) -> KernelEvent {
        ev(
            ts,
            100,
            KernelEventKind::Open {
                path: "/etc/hosts".into(),
                flags: 0,
                result: Some(3),
            },
        )
    }

    fn start(id: &str, at: u64) -> CallFact {
        CallFact::Started {
            call_id: id.into(),
            tool: Some(format!("tool-{id}")),
            at_boot_ns: at,
        }
    }

    fn end(id: &str, at: u64) -> CallFact {
        CallFact::Ended {
            call_id: id.into(),
            at_boot_ns: at,
            tool: None,
            result_bytes: None,
            denied: false,
        }
    }

    fn corr() -> Correlator {
        Correlator::new(CorrelatorConfig {
            max_delay_ns: 100 * MS,
            max_held: 16,
        })
    }

    #[test]
    fn single_call_attributes_its_event() {
        let mut c = corr();
        c.call_fact(start("a", 10 * MS));
        c.event(open(12 * MS));
        c.call_fact(end("a", 20 * MS));
        let out = c.poll(21 * MS);
        assert_eq!(out.len(), 1);
        assert_eq!(out[0].attribution, Attribution::Call);
        assert_eq!(out[0].call_id.as_deref(), Some("a"));
        assert_eq!(out[0].tool.as_deref(), Some("tool-a"));
    }

    #[test]
    fn overlapping_calls_are_ambiguous_with_both_listed() {
        let mut c = corr();
        c.call_fact(start("a", 10 * MS));
        c.call_fact(start("b", 11 * MS));
        c.event(open(12 * MS));
        c.call_fact(end("a", 20 * MS));
        let out = c.poll(20 * MS);
        assert_eq!(out[0].attribution, Attribution::Ambiguous);
        assert_eq!(out[0].call_id, None);
        assert_eq!(out[0].candidates, vec!["a".to_string(), "b".to_string()]);
    }

    #[test]
    fn event_before_call_record_is_held_and_attributed() {
        let mut c = corr();
        c.advance(5 * MS);
        // The ring buffer delivered the event before the proxy's pipe delivered CallStarted.
        c.event(open(12 * MS));
        assert!(
            c.poll(13 * MS).is_empty(),
            "held until the watermark passes it"
        );
        assert_eq!(c.held(), 1);
        c.call_fact(start("a", 10 * MS));
        c.call_fact(end("a", 30 * MS));
        let out = c.poll(31 * MS);
        assert_eq!(out.len(), 1);
        assert_eq!(out[0].attribution, Attribution::Call);
        assert_eq!(out[0].call_id.as_deref(), Some("a"));
        assert!(!out[0].forced);
    }

    #[test]
    fn event_after_call_ended_is_none() {
        let mut c = corr();
        c.call_fact(start("a", 10 * MS));
        c.call_fact(end("a", 20 * MS));
        c.event(open(25 * MS));
        c.advance(26 * MS);
        let out = c.poll(26 * MS);
        assert_eq!(out[0].attribution, Attribution::None);
        assert_eq!(out[0].call_id, None);
        assert!(out[0].candidates.is_empty());
    }

    #[test]
    fn window_is_bounded_by_delay_never_forever() {
        let mut c = corr();
        c.event(open(10 * MS));
        assert!(c.poll(50 * MS).is_empty());
        let out = c.poll(110 * MS);
        assert_eq!(out.len(), 1, "emitted after max_delay without a watermark");
        assert_eq!(out[0].attribution, Attribution::None);
        assert_eq!(c.stats().timed_out, 1);
    }

    #[test]
    fn overflow_emits_oldest_early_and_counts_it() {
        let mut c = Correlator::new(CorrelatorConfig {
            max_delay_ns: 100 * MS,
            max_held: 2,
        });
        c.call_fact(start("a", MS));
        for i in 0..3 {
            c.event(open(10 * MS + i));
        }
        let out = c.poll(10 * MS);
        assert_eq!(out.len(), 1);
        assert!(out[0].forced);
        assert_eq!(
            out[0].call_id.as_deref(),
            Some("a"),
            "best attribution so far"
        );
        assert_eq!(c.stats().forced, 1);
        assert_eq!(c.held(), 2);
        assert_eq!(c.flush().len(), 2, "nothing dropped");
    }

    #[test]
    fn out_of_order_events_come_out_sorted() {
        let mut c = corr();
        c.event(open(30 * MS));
        c.event(open(10 * MS));
        c.advance(40 * MS);
        let ts: Vec<u64> = c.poll(40 * MS).iter().map(|a| a.event.ts_boot_ns).collect();
        assert_eq!(ts, vec![10 * MS, 30 * MS]);
    }

    #[test]
    fn end_seen_before_start_still_closes_the_call() {
        let mut c = corr();
        c.call_fact(end("a", 20 * MS));
        c.call_fact(start("a", 10 * MS));
        c.event(open(25 * MS));
        c.advance(30 * MS);
        assert_eq!(c.poll(30 * MS)[0].attribution, Attribution::None);
    }

    #[test]
    fn a_long_call_stays_live_among_many_short_ended_ones() {
        let mut c = corr();
        c.call_fact(start("long", MS));
        for i in 0..100 {
            let id = format!("s{i}");
            c.call_fact(start(&id, 2 * MS + i * 10));
            c.call_fact(end(&id, 2 * MS + i * 10 + 5));
        }
        // Between two short calls: only the long one is in flight.
        c.event(open(2 * MS + 50 * 10 + 7));
        // Inside short call s60: both.
        c.event(open(2 * MS + 60 * 10 + 2));
        c.advance(10 * MS);
        let out = c.poll(10 * MS);
        assert_eq!(out[0].call_id.as_deref(), Some("long"));
        assert_eq!(out[1].attribution, Attribution::Ambiguous);
        assert_eq!(
            out[1].candidates,
            vec!["long".to_string(), "s60".to_string()]
        );
    }

    #[test]
    fn pid_reuse_gets_a_new_identity_at_exec() {
        let mut c = corr();
        let exec = |ts, path: &str| {
            ev(
                ts,
                200,
                KernelEventKind::Exec {
                    path: path.into(),
                    argv: vec![],
                    result: Some(0),
                },
            )
        };
        c.event(ev(
            MS,
            200,
            KernelEventKind::Open {
                path: "/a".into(),
                flags: 0,
                result: Some(3),
            },
        ));
        c.event(exec(2 * MS, "/usr/bin/python3"));
        c.event(ev(
            3 * MS,
            200,
            KernelEventKind::Open {
                path: "/b".into(),
                flags: 0,
                result: Some(3),
            },
        ));
        // The process exited and pid 200 was reused by a new exec.
        c.event(exec(9 * MS, "/bin/sh"));
        c.event(ev(
            10 * MS,
            200,
            KernelEventKind::Open {
                path: "/c".into(),
                flags: 0,
                result: Some(3),
            },
        ));
        c.advance(11 * MS);
        let keys: Vec<ProcessKey> = c.poll(11 * MS).iter().map(|a| a.process).collect();
        assert_eq!(
            keys[0],
            ProcessKey {
                pid: 200,
                exec_boot_ns: 0
            }
        );
        assert_eq!(
            keys[1],
            ProcessKey {
                pid: 200,
                exec_boot_ns: 2 * MS
            }
        );
        assert_eq!(keys[2], keys[1]);
        assert_eq!(
            keys[3],
            ProcessKey {
                pid: 200,
                exec_boot_ns: 9 * MS
            }
        );
        assert_eq!(keys[4], keys[3]);
        assert_ne!(keys[2], keys[4], "same pid, different process");
    }
}
