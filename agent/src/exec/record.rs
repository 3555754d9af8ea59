//! Recording a session in the store: its id, its kernel events as [`EventRecord`]s, and the
//! proxy's calls and findings as [`CallRecord`]s and [`AlertRecord`]s.
//!
//! [`event_record`] is the one conversion from a kernel event to a stored record; it leaves the
//! event unattributed (`attribution: none`, `call_id: null`). The correlator, when it lands, ties
//! events to the tool call in flight by filling those two fields on the record this returns.

use tokio::sync::{mpsc, oneshot};

use std::{
    path::PathBuf,
    sync::{
        Arc, Mutex,
        atomic::{AtomicBool, Ordering},
    },
};

use crate::{
    correlate::{AttributedEvent, CallFact, Correlator, CorrelatorConfig},
    detect::{Action, CallEnd, Detector, Finding},
    exec::launch_chain::LaunchChain,
    kernel::events::{self as kev, KernelEvent},
    mcp,
};
use mcp_guard_model::{
    AlertRecord, CallRecord, Decision, EventKind, EventRecord, Severity, Timestamp, Verdict,
};
use mcp_guard_store::StoreHandle;

/// A fresh session id: 12 lowercase base32 characters from 60 random bits (e.g. `k3f9x2ab7c1q`).
/// Short enough to lead the call and event ids built on it, random enough to be unique across
/// every exec process of every host writing one store.
pub fn new_session_id() -> String {
    let mut bytes = [0u8; 8];
    // SAFETY: getrandom writes at most `bytes.len()` bytes into the live buffer.
    let n = unsafe { libc::getrandom(bytes.as_mut_ptr().cast(), bytes.len(), 0) };
    let mut bits = u64::from_le_bytes(bytes);
    if n != bytes.len() as isize {
        // No entropy source (a very early boot): time and pid still differ between processes.
        let nanos = Timestamp::now().unix_nanos() as u64;
        bits = nanos.rotate_left(20) ^ u64::from(std::process::id());
    }
    const ALPHABET: &[u8; 32] = b"0123456789abcdefghjkmnpqrstvwxyz";
    (0..12)
        .map(|i| char::from(ALPHABET[((bits >> (i * 5)) & 31) as usize]))
        .collect()
}

/// The stored form of one kernel event, unattributed. `event_id` must be unique in the store.
///
/// `ts` is the event's CLOCK_BOOTTIME stamp moved to the wall clock. Verdicts: an open that
/// failed with EACCES/EPERM is `denied`; an egress let through only because of `--observe` is
/// `allowed` with `would_deny`; an exec is reported when attempted (`allowed`).
pub fn event_record(event: &KernelEvent, event_id: String) -> EventRecord {
    let unix_ns = kev::boot_to_unix_ns(event.ts_boot_ns);
    let mut rec = EventRecord::new(
        event_id,
        Timestamp::from_unix_nanos(i64::try_from(unix_ns).unwrap_or(i64::MAX)),
        &event.server,
        &event.session,
        event.pid,
        EventKind::from_name(kev::kind_name(&event.kind)),
    );
    match &event.kind {
        kev::EventKind::Exec { path, argv, result } => {
            rec.path = Some(path.clone());
            rec.argv = Some(argv.clone());
            rec.result = *result;
        }
        kev::EventKind::Open {
            path,
            flags,
            result,
        } => {
            rec.path = Some(path.clone());
            rec.flags = Some(*flags);
            rec.result = *result;
            let refused = [-i64::from(libc::EACCES), -i64::from(libc::EPERM)];
            if result.is_some_and(|r| refused.contains(&r)) {
                rec.verdict = Verdict::Denied;
            }
        }
        kev::EventKind::Connect {
            addr,
            proto,
            verdict,
            ..
        } => {
            rec.addr = Some(addr.ip().to_string());
            rec.port = Some(addr.port());
            rec.proto = Some(match proto {
                6 => "tcp".to_string(),
                17 => "udp".to_string(),
                p => p.to_string(),
            });
            match verdict {
                kev::Verdict::Allowed => {}
                kev::Verdict::Denied => rec.verdict = Verdict::Denied,
                kev::Verdict::Observed => rec.would_deny = true,
            }
        }
        kev::EventKind::Unix {
            path,
            sock_type,
            verdict,
            ..
        } => {
            rec.path = Some(path.clone());
            rec.proto = Some("unix".to_string());
            rec.detail = Some(serde_json::json!({
                "sock_type": match sock_type {
                    1 => "stream".to_string(),
                    2 => "dgram".to_string(),
                    5 => "seqpacket".to_string(),
                    t => t.to_string(),
                }
            }));
            match verdict {
                kev::Verdict::Allowed => {}
                kev::Verdict::Denied => rec.verdict = Verdict::Denied,
                kev::Verdict::Observed => rec.would_deny = true,
            }
        }
        kev::EventKind::Killed { path, signal } => {
            rec.path = Some(path.clone());
            rec.verdict = Verdict::Killed;
            rec.detail = Some(serde_json::json!({ "signal": signal }));
        }
        kev::EventKind::Resolve {
            name,
            addrs,
            ttl_secs,
            error,
        } => {
            rec.detail = Some(serde_json::json!({
                "name": name,
                "addrs": addrs.iter().map(ToString::to_string).collect::<Vec<_>>(),
                "ttl_secs": ttl_secs,
                "error": error,
            }));
        }
    }
    rec
}

/// What the event recorder did.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct RecorderStats {
    /// Events handed to the store.
    pub recorded: u64,
    /// Events the store refused at once (its queue was full or it is gone); also in its stats.
    pub refused: u64,
}

/// What the recorder does with each session's events besides storing them.
pub struct Analysis {
    /// The proxy's call starts and ends (`None`: no proxy, every event is unattributed).
    pub facts: Option<FactReceiver>,
    /// The detection rules (`None`: store only).
    pub detector: Option<Detector>,
    /// The session's cgroup, killed when a rule's action is `kill`.
    pub cgroup_dir: PathBuf,
    /// Where a `deny-call` action fails the call in flight (the proxy; `None`: recorded only).
    pub denials: Option<mpsc::UnboundedSender<mcp::CallDenial>>,
    /// Where the detector's profile is merged and saved at the end when it is learning: the
    /// state dir and the session's key.
    pub profile: Option<(PathBuf, mcp_guard_model::names::StateKey)>,
    /// The proxy's tool listings (name, `readOnlyHint`), for the read-only check.
    pub tools: Option<mpsc::UnboundedReceiver<ToolHints>>,
}

/// Writes each event from `events` to `store`, attributed to the tool call in flight (the
/// correlator holds events briefly so a call's start that arrives late still claims them), and
/// raises the detector's alerts and acts on them, until `stop` fires; then what is already
/// queued: the guard fires `stop` after
/// [`KernelGuard::flush`](crate::kernel::loader::KernelGuard::flush) once the server's processes
/// are gone, so nothing more can come. Events without a server label (none is expected: the
/// guard labels every cgroup it guards) get `server`/`session`. A learning detector's profile is
/// saved at the end.
pub async fn record_events(
    mut events: mpsc::Receiver<KernelEvent>,
    store: StoreHandle,
    server: String,
    session: String,
    analysis: Analysis,
    stop: oneshot::Receiver<()>,
) -> RecorderStats {
    let (mut facts, mut has_facts) = match analysis.facts {
        Some(rx) => (rx, true),
        // A closed channel: `recv` answers None at once and is never selected again.
        None => (CallFacts::new().closed_receiver(), false),
    };
    let (mut tools, mut has_tools) = match analysis.tools {
        Some(rx) => (rx, true),
        None => (mpsc::unbounded_channel().1, false),
    };
    // Every tool's latest readOnlyHint (a listing may come in pages, and may change).
    let mut hints: std::collections::HashMap<String, bool> = Default::default();
    let mut rec = Recorder {
        store,
        server,
        session,
        detector: analysis.detector,
        cgroup_dir: analysis.cgroup_dir,
        denials: analysis.denials,
        stats: RecorderStats::default(),
        correlator: Correlator::new(CorrelatorConfig::default()),
        ends: Vec::new(),
        seq: 0,
        launch: LaunchChain::default(),
    };
    let mut tick = tokio::time::interval(CORRELATE_TICK);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    tokio::pin!(stop);
    loop {
        tokio::select! {
            ev = events.recv() => match ev {
                Some(ev) => {
                    rec.correlator.event(ev);
                    // Take what else is queued: one poll per batch, not per event.
                    for _ in 0..EVENT_BATCH {
                        match events.try_recv() {
                            Ok(ev) => rec.correlator.event(ev),
                            Err(_) => break,
                        }
                    }
                }
                None => break,
            },
            fact = facts.rx.recv(), if has_facts => match fact {
                Some(fact) => rec.fact(fact),
                None => has_facts = false,
            },
            listed = tools.recv(), if has_tools => match listed {
                Some(listed) => {
                    hints.extend(listed);
                    if let Some(d) = rec.detector.as_mut() {
                        d.set_read_only(
                            hints.iter().filter(|(_, ro)| **ro).map(|(t, _)| t.clone()).collect(),
                        );
                    }
                }
                None => has_tools = false,
            },
            _ = tick.tick() => {}
            _ = &mut stop => break,
        }
        // Once the channel is drained and no fact was being stamped when `now` was read, every
        // call started before `now` is known: events up to it are attributed without waiting
        // for the next fact (a fact stamped after the check is stamped after `now`).
        let now = kev::boot_ns_now();
        let settled = !facts.sending.load(Ordering::SeqCst);
        loop {
            match facts.rx.try_recv() {
                Ok(fact) => rec.fact(fact),
                Err(mpsc::error::TryRecvError::Empty) => break,
                Err(mpsc::error::TryRecvError::Disconnected) => {
                    has_facts = false;
                    break;
                }
            }
        }
        if settled {
            rec.correlator.advance(now);
        }
        rec.poll(kev::boot_ns_now());
    }
    // Stopped after the reader's flush: what is left is already in the channels.
    while let Ok(fact) = facts.rx.try_recv() {
        rec.fact(fact);
    }
    while let Ok(ev) = events.try_recv() {
        rec.correlator.event(ev);
    }
    for a in rec.correlator.flush() {
        rec.write(a);
    }
    rec.end_calls(u64::MAX);
    if let (Some((state_dir, key)), Some(d)) = (analysis.profile, &rec.detector)
        && d.learning()
    {
        save_profile(&state_dir, &key, d.profile());
    }
    rec.stats
}

/// Merges `learned` into the profile on disk (another session of the server may have saved
/// since this one loaded it) and saves it.
fn save_profile(
    state_dir: &std::path::Path,
    key: &mcp_guard_model::names::StateKey,
    learned: &crate::detect::Profile,
) {
    use crate::detect::Profile;
    let path = Profile::path(state_dir, key);
    let mut profile = Profile::load(state_dir, key).unwrap_or_else(|e| {
        eprintln!("mcp-guard: WARNING: {e}; replacing it with what this session learned");
        Profile::default()
    });
    profile.merge(learned);
    match profile.save(state_dir, key) {
        Ok(()) => tracing::info!("learned profile saved to {}", path.display()),
        Err(e) => eprintln!(
            "mcp-guard: WARNING: cannot save the learned profile {}: {e}",
            path.display()
        ),
    }
}

/// How long after a call's end its result is judged: kernel events of the call still in the
/// ring buffer are attributed (and their rules run) first.
const END_GRACE_NS: u64 = 50_000_000;

struct Recorder {
    store: StoreHandle,
    server: String,
    session: String,
    detector: Option<Detector>,
    cgroup_dir: PathBuf,
    denials: Option<mpsc::UnboundedSender<mcp::CallDenial>>,
    stats: RecorderStats,
    correlator: Correlator,
    /// Ended calls not yet given to the detector.
    ends: Vec<CallEnd>,
    seq: u64,
    /// The server's launch chain: its execs are its baseline, not for the detector (an
    /// interpreter server would alert every session, once per PATH entry `env` tries).
    launch: LaunchChain,
}

impl Recorder {
    fn fact(&mut self, fact: CallFact) {
        if let CallFact::Initialized { at_boot_ns } = fact {
            self.launch.initialized(at_boot_ns);
            return;
        }
        if let CallFact::Ended {
            call_id,
            at_boot_ns,
            tool,
            result_bytes,
            denied,
        } = &fact
        {
            self.ends.push(CallEnd {
                call_id: call_id.clone(),
                tool: tool.clone(),
                result_bytes: *result_bytes,
                denied: *denied,
                at_boot_ns: *at_boot_ns,
            });
        }
        self.correlator.call_fact(fact);
    }

    fn poll(&mut self, now: u64) {
        for a in self.correlator.poll(now) {
            self.write(a);
        }
        self.end_calls(now.saturating_sub(END_GRACE_NS));
    }

    /// Gives the detector the calls that ended before `until` whose events are all out.
    fn end_calls(&mut self, until: u64) {
        let oldest = self.correlator.oldest_held().unwrap_or(u64::MAX);
        let (ready, waiting): (Vec<CallEnd>, Vec<CallEnd>) = std::mem::take(&mut self.ends)
            .into_iter()
            .partition(|e| e.at_boot_ns <= until && e.at_boot_ns < oldest);
        self.ends = waiting;
        for end in ready {
            let findings = self
                .detector
                .as_mut()
                .map(|d| d.call_ended(&end, None))
                .unwrap_or_default();
            self.act(findings);
        }
    }

    fn write(&mut self, a: AttributedEvent) {
        self.seq += 1;
        let event_id = format!("{}-e{}", self.session, self.seq);
        let mut rec = event_record(&a.event, event_id.clone());
        if rec.server.is_empty() {
            rec.server.clone_from(&self.server);
        }
        if rec.session.is_empty() {
            rec.session.clone_from(&self.session);
        }
        rec.attribution = a.attribution;
        rec.call_id.clone_from(&a.call_id);
        rec.candidates.clone_from(&a.candidates);
        if self.store.send(rec) {
            self.stats.recorded += 1;
        } else {
            self.stats.refused += 1;
        }
        if self.launch.is_launch(&a.event) {
            return;
        }
        let findings = self
            .detector
            .as_mut()
            .map(|d| d.event(&a, &event_id))
            .unwrap_or_default();
        self.act(findings);
    }

    fn act(&mut self, findings: Vec<Finding>) {
        for finding in findings {
            match finding.action {
                Action::Kill => say_kill(&finding, &self.cgroup_dir),
                Action::DenyCall => self.deny(&finding),
                Action::Alert => {}
            }
            let _ = self.store.send(finding.alert);
        }
    }

    /// Asks the proxy to fail the call the finding names (a no-op once it has ended).
    fn deny(&self, finding: &Finding) {
        let (Some(tx), Some(call_id)) = (&self.denials, &finding.alert.call_id) else {
            return;
        };
        let _ = tx.send(mcp::CallDenial {
            call_id: call_id.clone(),
            reason: format!(
                "mcp-guard: call denied by detection rule {}: {}",
                finding.alert.rule, finding.alert.summary
            ),
        });
    }
}

/// Most events taken from the channel between two polls of the correlator.
const EVENT_BATCH: usize = 256;

/// How often held events are checked for release by the correlator.
const CORRELATE_TICK: std::time::Duration = std::time::Duration::from_millis(10);

fn say_kill(finding: &crate::detect::Finding, cgroup_dir: &std::path::Path) {
    eprintln!(
        "mcp-guard: {} ({}): killing the server",
        finding.alert.summary, finding.alert.rule
    );
    if let Err(e) = crate::launch::cgroup::kill_all(cgroup_dir) {
        eprintln!("mcp-guard: killing the server: {e}");
    }
}

#[cfg(test)]
mod tests {
    use std::{sync::Arc, time::Duration};

    use super::*;
    use mcp_guard_model::Attribution;

    fn event(kind: kev::EventKind) -> KernelEvent {
        KernelEvent {
            ts_boot_ns: kev::boot_ns_now(),
            cgroup_id: 1,
            pid: 42,
            tid: 42,
            server: Arc::from("srv"),
            session: Arc::from("sess"),
            kind,
        }
    }

    #[test]
    fn session_ids_are_short_distinct_and_safe() {
        let a = new_session_id();
        let b = new_session_id();
        assert_eq!(a.len(), 12);
        assert_ne!(a, b);
        assert!(
            a.bytes()
                .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit())
        );
    }

    #[test]
    fn events_become_unattributed_records_with_contract_fields() {
        let before = Timestamp::now();
        let rec = event_record(
            &event(kev::EventKind::Connect {
                addr: "127.0.0.2:80".parse().expect("addr"),
                proto: 6,
                op: kev::SockOp::Connect,
                verdict: kev::Verdict::Denied,
            }),
            "sess-e1".into(),
        );
        let after = Timestamp::now();
        assert!(
            rec.ts >= before.saturating_sub(Duration::from_millis(5))
                && rec.ts <= after.saturating_add(Duration::from_millis(5)),
            "boot time moved to the wall clock: {} not in [{before}, {after}]",
            rec.ts
        );
        assert_eq!(rec.kind, EventKind::Connect);
        assert_eq!(
            (rec.addr.as_deref(), rec.port),
            (Some("127.0.0.2"), Some(80))
        );
        assert_eq!(rec.verdict, Verdict::Denied);
        assert_eq!(
            (rec.attribution, rec.call_id.as_deref()),
            (Attribution::None, None)
        );
        assert_eq!(
            (rec.server.as_str(), rec.session.as_str(), rec.pid),
            ("srv", "sess", 42)
        );

        let observed = event_record(
            &event(kev::EventKind::Connect {
                addr: "[::1]:53".parse().expect("addr"),
                proto: 17,
                op: kev::SockOp::Sendmsg,
                verdict: kev::Verdict::Observed,
            }),
            "x".into(),
        );
        assert_eq!(observed.kind, EventKind::Sendmsg);
        assert_eq!(observed.verdict, Verdict::Allowed);
        assert!(observed.would_deny);
        assert_eq!(observed.proto.as_deref(), Some("udp"));

        let open = event_record(
            &event(kev::EventKind::Open {
                path: "/root/.ssh/id_rsa".into(),
                flags: 0,
                result: Some(-i64::from(libc::EACCES)),
            }),
            "y".into(),
        );
        assert_eq!((open.verdict, open.result), (Verdict::Denied, Some(-13)));

        let killed = event_record(
            &event(kev::EventKind::Killed {
                path: "/h/.aws/credentials".into(),
                signal: 9,
            }),
            "z".into(),
        );
        assert_eq!(killed.kind, EventKind::Killed);
        assert_eq!(killed.verdict, Verdict::Killed);
        assert_eq!(killed.path.as_deref(), Some("/h/.aws/credentials"));
    }
}

/// Tools as a `tools/list` answer named them: (name, `readOnlyHint`).
pub type ToolHints = Vec<(String, bool)>;

/// A receiver handed out once.
type TakeOnce<T> = Arc<Mutex<Option<mpsc::UnboundedReceiver<T>>>>;

/// The proxy's call starts and ends for the correlator: a sender for the proxy's sink and a
/// receiver the kernel guard takes once. Cloned into every seam with [`super::SessionInfo`].
#[derive(Clone, Debug)]
pub struct CallFacts {
    tx: mpsc::UnboundedSender<CallFact>,
    /// Set while a fact is being stamped and sent (see [`FactSender::send`]).
    sending: Arc<AtomicBool>,
    tools_tx: mpsc::UnboundedSender<ToolHints>,
    tools_rx: TakeOnce<ToolHints>,
    rx: TakeOnce<CallFact>,
    deny_tx: mpsc::UnboundedSender<mcp::CallDenial>,
    deny_rx: TakeOnce<mcp::CallDenial>,
}

impl CallFacts {
    /// A fresh channel.
    pub fn new() -> Self {
        let (tx, rx) = mpsc::unbounded_channel();
        let (deny_tx, deny_rx) = mpsc::unbounded_channel();
        let (tools_tx, tools_rx) = mpsc::unbounded_channel();
        CallFacts {
            tx,
            sending: Arc::default(),
            tools_tx,
            tools_rx: Arc::new(Mutex::new(Some(tools_rx))),
            rx: Arc::new(Mutex::new(Some(rx))),
            deny_tx,
            deny_rx: Arc::new(Mutex::new(Some(deny_rx))),
        }
    }

    /// Where the proxy's sink reports the tools listed (name, `readOnlyHint`).
    pub fn tools_sender(&self) -> mpsc::UnboundedSender<ToolHints> {
        self.tools_tx.clone()
    }

    /// The detector's end of the tool listings (once; `None` afterwards).
    pub fn take_tools(&self) -> Option<mpsc::UnboundedReceiver<ToolHints>> {
        self.tools_rx
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .take()
    }

    /// Where the detector sends the calls a `deny-call` rule fails.
    pub fn denial_sender(&self) -> mpsc::UnboundedSender<mcp::CallDenial> {
        self.deny_tx.clone()
    }

    /// The proxy's end of the denials (once; `None` afterwards).
    pub fn take_denials(&self) -> Option<mpsc::UnboundedReceiver<mcp::CallDenial>> {
        self.deny_rx
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .take()
    }

    /// Where the proxy's sink sends facts.
    pub fn sender(&self) -> FactSender {
        FactSender {
            tx: self.tx.clone(),
            sending: self.sending.clone(),
        }
    }

    /// The receiving end (once; `None` afterwards).
    pub fn take_receiver(&self) -> Option<FactReceiver> {
        let rx = self.rx.lock().unwrap_or_else(|p| p.into_inner()).take()?;
        Some(FactReceiver {
            rx,
            sending: self.sending.clone(),
        })
    }

    fn closed_receiver(self) -> FactReceiver {
        let rx = mpsc::unbounded_channel().1;
        FactReceiver {
            rx,
            sending: self.sending,
        }
    }
}

/// Sends call facts stamped with the boot clock.
#[derive(Clone, Debug)]
pub struct FactSender {
    tx: mpsc::UnboundedSender<CallFact>,
    sending: Arc<AtomicBool>,
}

impl FactSender {
    /// Stamps (`make` gets `boot_ns_now()`) and sends a fact. The receiver does not take the
    /// clock past a fact that is stamped but not yet in the channel (any runtime, any thread).
    pub fn send(&self, make: impl FnOnce(u64) -> CallFact) {
        self.sending.store(true, Ordering::SeqCst);
        // Nobody listening (no kernel guard) is fine: there is nothing to correlate.
        let _ = self.tx.send(make(kev::boot_ns_now()));
        self.sending.store(false, Ordering::SeqCst);
    }
}

/// The recorder's end of the call facts.
#[derive(Debug)]
pub struct FactReceiver {
    rx: mpsc::UnboundedReceiver<CallFact>,
    sending: Arc<AtomicBool>,
}

impl Default for CallFacts {
    fn default() -> Self {
        Self::new()
    }
}

/// The proxy's call records and findings, written to the session's store; call starts and ends
/// also go to the correlator, stamped with the boot clock the kernel events carry.
#[derive(Debug)]
pub struct StoreCallSink {
    store: StoreHandle,
    facts: FactSender,
    tools: Option<mpsc::UnboundedSender<ToolHints>>,
    denials: Option<mpsc::UnboundedReceiver<mcp::CallDenial>>,
    alerts: u64,
    /// The session the server's facts are recorded under.
    session: String,
}

impl StoreCallSink {
    /// Records into `store`, reports call starts and ends on `facts`.
    pub fn new(store: StoreHandle, facts: FactSender) -> Self {
        StoreCallSink {
            store,
            facts,
            tools: None,
            denials: None,
            alerts: 0,
            session: String::new(),
        }
    }

    /// Records what the server says about itself under `session`.
    pub fn with_session(mut self, session: &str) -> Self {
        self.session = session.to_string();
        self
    }

    /// Also reports the tools listed (for the detector's read-only check).
    pub fn with_tools(mut self, tools: mpsc::UnboundedSender<ToolHints>) -> Self {
        self.tools = Some(tools);
        self
    }

    /// Also hands the proxy the calls exec's detector fails (`deny-call`).
    pub fn with_denials(
        mut self,
        denials: Option<mpsc::UnboundedReceiver<mcp::CallDenial>>,
    ) -> Self {
        self.denials = denials;
        self
    }
}

impl mcp::CallSink for StoreCallSink {
    fn call_started(&mut self, call_id: &str, tool: Option<&str>) {
        self.facts.send(|at_boot_ns| CallFact::Started {
            call_id: call_id.to_string(),
            tool: tool.map(str::to_string),
            at_boot_ns,
        });
    }

    fn call(&mut self, record: mcp::CallRecord) {
        if record.method == "initialize" {
            self.facts
                .send(|at_boot_ns| CallFact::Initialized { at_boot_ns });
        }
        self.facts.send(|at_boot_ns| CallFact::Ended {
            call_id: record.call_id.clone(),
            at_boot_ns,
            tool: record.tool.clone(),
            result_bytes: record.result_bytes,
            denied: record.decision == mcp::Decision::Denied,
        });
        // A full queue or a failing disk is counted by the store and reported at exit.
        let (call, capture) = call_record_with_capture(record);
        let _ = match capture {
            Some(capture) => self.store.send_call(call, capture),
            None => self.store.send(call),
        };
    }

    fn server_fact(&mut self, fact: mcp::audit::ServerFact) {
        let _ = self
            .store
            .send(super::history::session_facts(&self.session, fact));
    }

    fn take_call_denials(&mut self) -> Option<mpsc::UnboundedReceiver<mcp::CallDenial>> {
        self.denials.take()
    }

    fn tools_listed(&mut self, tools: &[(String, bool)]) {
        if let Some(tx) = &self.tools {
            let _ = tx.send(tools.to_vec());
        }
    }

    fn finding(&mut self, finding: mcp::Finding) {
        self.alerts += 1;
        let alert_id = format!("{}-f{}", finding.session, self.alerts);
        let _ = self.store.send(finding_alert(finding, alert_id));
    }
}

/// The stored form of one proxied call.
pub fn call_record(r: mcp::CallRecord) -> CallRecord {
    call_record_with_capture(r).0
}

/// [`call_record`], and what the proxy captured of its arguments and result for the store.
pub fn call_record_with_capture(
    mut r: mcp::CallRecord,
) -> (CallRecord, Option<mcp_guard_store::CallCapture>) {
    let capture = r.capture.take().map(super::history::capture);
    let call = CallRecord {
        call_id: r.call_id,
        server: r.server,
        session: r.session,
        method: r.method,
        tool: r.tool,
        request_id: r.request_id,
        started_at: r.started_at,
        ended_at: Some(r.ended_at),
        decision: match r.decision {
            mcp::Decision::Allowed => Decision::Allowed,
            mcp::Decision::Denied => Decision::Denied,
            mcp::Decision::Modified => Decision::Modified,
        },
        reason: Some(r.reason).filter(|s| !s.is_empty()),
        error: None,
        result_bytes: r.result_bytes,
        audit: None,
    };
    (call, capture)
}

/// The stored form of an interceptor's finding: an alert of the MCP layer.
pub fn finding_alert(f: mcp::Finding, alert_id: String) -> AlertRecord {
    // Tampering with what the model reads is an attack on the client; the rest is a leak caught.
    let severity = match f.rule.as_str() {
        "tool-poisoning" | "tool-changed" | "tool-shadowing" | "result-poisoning"
        | "prompt-poisoning" => Severity::High,
        "hidden-text" => Severity::Medium,
        "secret-in-arguments" | "secret-in-result" => Severity::Medium,
        _ => Severity::Low,
    };
    let ts = Timestamp::parse_rfc3339(&f.ts).unwrap_or_else(Timestamp::now);
    AlertRecord {
        alert_id,
        ts,
        server: f.server,
        session: f.session,
        rule: f.rule,
        severity,
        call_id: None,
        tool: f.tool,
        summary: f.summary,
        event_ids: Vec::new(),
        action: None,
        count: 1,
        last_seen: ts,
    }
}
