//! The session pipeline: one session's inputs through correlation and detection, out as
//! effects.
//!
//! [`Pipeline`] is synchronous: [`Pipeline::input`] takes each [`SessionInput`], [`Pipeline::poll`]
//! releases the kernel events whose attribution is settled (stored as event records, judged by
//! the detector) and the calls whose events are all out (judged at their end), and
//! [`Pipeline::take_effects`] hands what the session must do. [`run`] drives it from the input
//! queue until told to stop. Kernel events are stored attributed to the tool call in flight (the
//! correlator holds them briefly so a call's start that arrives late still claims them); the
//! proxy's findings become alerts on the same path as the detector's.

use std::collections::{HashMap, HashSet};

use tokio::sync::oneshot;

use crate::{
    correlate::{AttributedEvent, CallFact, Correlator, CorrelatorConfig},
    detect::{Action, CallEnd, Detection, Detector, Profile},
    dns_names::DnsNames,
    event_record::event_record,
    input::{InputReceiver, SessionInput, ToolHints},
    launch_chain::LaunchChain,
};
use mcp_guard_model::{
    AlertRecord, EventRecord, Finding, KernelEventKind, Record, Severity, Timestamp, boot_ns_now,
};

/// What the session must do.
#[derive(Clone, Debug, PartialEq)]
pub enum Effect {
    /// Keep this record (an attributed kernel event, an alert) in the store.
    Store(Box<Record>),
    /// Kill the server's whole tree: a rule whose action is `kill` fired.
    Kill {
        /// The rule.
        rule: String,
        /// The alert's summary.
        summary: String,
    },
    /// Fail the call in flight (the proxy answers the client with an error carrying `reason`);
    /// asked once per call.
    DenyCall {
        /// The call (`CallRecord::call_id`).
        call_id: String,
        /// Why, shown to the client and recorded as the call's reason.
        reason: String,
    },
}

/// A session's pipeline settings.
pub struct PipelineConfig {
    /// Server name, for events the kernel could not label.
    pub server: String,
    /// Session id: labels unlabelled events and leads event and alert ids.
    pub session: String,
    /// The detection rules.
    pub detector: Detector,
    /// `--observe`: a `deny-call` rule is recorded, not acted on (like the proxy's refusals).
    pub observe: bool,
}

/// What a finished pipeline did.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Outcome {
    /// Kernel events handed to the store.
    pub events: u64,
    /// Alerts handed to the store (the detector's and the proxy's).
    pub alerts: u64,
    /// What the detector learned, to merge into the saved profile (it was learning).
    pub learned: Option<Profile>,
    /// The proxy's inputs dropped because the queue was full (see [`crate::input`]).
    pub dropped_inputs: u64,
}

/// How long after a call's end its result is judged: kernel events of the call still in the
/// ring buffer are attributed (and their rules run) first.
const END_GRACE_NS: u64 = 50_000_000;

/// Most inputs taken between two looks at the clock (one poll per batch, not per input).
const INPUT_BATCH: usize = 256;

/// How often held events are checked for release by the correlator.
const CORRELATE_TICK: std::time::Duration = std::time::Duration::from_millis(10);

/// One session's correlation and detection state.
pub struct Pipeline {
    server: String,
    session: String,
    detector: Detector,
    observe: bool,
    correlator: Correlator,
    /// Ended calls not yet given to the detector.
    ends: Vec<CallEnd>,
    /// Every tool's latest readOnlyHint (a listing may come in pages, and may change).
    hints: HashMap<String, bool>,
    /// Calls a denial was asked for and that have not ended.
    denied: HashSet<String>,
    /// The server's launch chain: its execs are its baseline, not for the detector (an
    /// interpreter server would alert every session, once per PATH entry `env` tries).
    launch: LaunchChain,
    /// The names the server's own DNS gave the addresses it connects to.
    dns: DnsNames,
    events: u64,
    findings: u64,
    alerts: u64,
    effects: Vec<Effect>,
}

impl Pipeline {
    /// A pipeline for one session.
    pub fn new(config: PipelineConfig) -> Self {
        Pipeline {
            server: config.server,
            session: config.session,
            detector: config.detector,
            observe: config.observe,
            correlator: Correlator::new(CorrelatorConfig::default()),
            ends: Vec::new(),
            hints: HashMap::new(),
            denied: HashSet::new(),
            launch: LaunchChain::default(),
            dns: DnsNames::default(),
            events: 0,
            findings: 0,
            alerts: 0,
            effects: Vec::new(),
        }
    }

    /// Takes one input.
    pub fn input(&mut self, input: SessionInput) {
        match input {
            SessionInput::Call(fact) => self.call_fact(fact),
            SessionInput::Tools(tools) => self.tools(tools),
            // Learnt at once, in ring-buffer order: an answer is in before the connect it names.
            SessionInput::Kernel(event) => match &event.kind {
                KernelEventKind::Dns(packet) => self.dns.observe(packet),
                _ => self.correlator.event(event),
            },
            SessionInput::Finding(finding) => {
                let alert = self.proxy_alert(finding);
                self.store_alert(alert);
            }
        }
    }

    /// The proxy has said everything up to `now` (`CLOCK_BOOTTIME` ns): events up to it are
    /// attributed without waiting for its next fact.
    pub fn settled(&mut self, now: u64) {
        self.correlator.advance(now);
    }

    /// Releases what is settled at `now`: held events whose window closed, and calls that
    /// ended long enough ago.
    pub fn poll(&mut self, now: u64) {
        for a in self.correlator.poll(now) {
            self.write(&a);
        }
        self.end_calls(now.saturating_sub(END_GRACE_NS));
    }

    /// What the session must do, in order, since the last call.
    pub fn take_effects(&mut self) -> Vec<Effect> {
        std::mem::take(&mut self.effects)
    }

    /// Ends the session's analysis: everything still held is released and every ended call
    /// judged (their effects are in [`Pipeline::take_effects`] afterwards).
    pub fn finish(&mut self) {
        for a in self.correlator.flush() {
            self.write(&a);
        }
        self.end_calls(u64::MAX);
        // DNS the session could not use is part of its history, as other gaps are.
        let ignored = [
            ("dns_unparsed", self.dns.unparsed),
            ("dns_unmatched", self.dns.unmatched),
        ];
        for (reason, n) in ignored.into_iter().filter(|(_, n)| *n > 0) {
            let rec = EventRecord::lost(
                format!("{}-lost-{reason}", self.session),
                &self.server,
                &self.session,
                reason,
                n,
            );
            self.effects
                .push(Effect::Store(Box::new(Record::Event(rec))));
        }
    }

    /// What the pipeline did, and the detector's profile if it was learning.
    pub fn outcome(&self) -> Outcome {
        Outcome {
            events: self.events,
            alerts: self.alerts,
            learned: self
                .detector
                .learning()
                .then(|| self.detector.profile().clone()),
            dropped_inputs: 0,
        }
    }

    fn call_fact(&mut self, fact: CallFact) {
        match &fact {
            CallFact::Initialized { at_boot_ns } => {
                self.launch.initialized(*at_boot_ns);
                return;
            }
            CallFact::Ended {
                call_id,
                at_boot_ns,
                tool,
                result_bytes,
                denied,
            } => {
                self.denied.remove(call_id);
                self.ends.push(CallEnd {
                    call_id: call_id.clone(),
                    tool: tool.clone(),
                    result_bytes: *result_bytes,
                    denied: *denied,
                    at_boot_ns: *at_boot_ns,
                });
            }
            CallFact::Started { .. } => {}
        }
        self.correlator.call_fact(fact);
    }

    fn tools(&mut self, tools: ToolHints) {
        self.hints.extend(tools);
        self.detector.set_read_only(
            self.hints
                .iter()
                .filter(|(_, ro)| **ro)
                .map(|(t, _)| t.clone())
                .collect(),
        );
    }

    /// Gives the detector the calls that ended before `until` whose events are all out.
    fn end_calls(&mut self, until: u64) {
        let oldest = self.correlator.oldest_held().unwrap_or(u64::MAX);
        let (ready, waiting): (Vec<CallEnd>, Vec<CallEnd>) = std::mem::take(&mut self.ends)
            .into_iter()
            .partition(|e| e.at_boot_ns <= until && e.at_boot_ns < oldest);
        self.ends = waiting;
        for end in ready {
            let detections = self.detector.call_ended(&end, None);
            self.act(detections);
        }
    }

    fn write(&mut self, a: &AttributedEvent) {
        self.events += 1;
        let event_id = format!("{}-e{}", self.session, self.events);
        let mut rec = event_record(&a.event, event_id.clone());
        // None is expected: the kernel guard labels every cgroup it guards.
        if rec.server.is_empty() {
            rec.server.clone_from(&self.server);
        }
        if rec.session.is_empty() {
            rec.session.clone_from(&self.session);
        }
        rec.attribution = a.attribution;
        rec.call_id.clone_from(&a.call_id);
        rec.candidates.clone_from(&a.candidates);
        if let KernelEventKind::Connect { addr, .. } = &a.event.kind {
            rec.host = self.dns.name_of(addr.ip()).map(str::to_string);
        }
        self.effects
            .push(Effect::Store(Box::new(Record::Event(rec))));
        if self.launch.is_launch(&a.event) {
            return;
        }
        let detections = self.detector.event(a, &event_id);
        self.act(detections);
    }

    fn act(&mut self, detections: Vec<Detection>) {
        for d in detections {
            match d.action {
                Action::Kill => self.effects.push(Effect::Kill {
                    rule: d.alert.rule.clone(),
                    summary: d.alert.summary.clone(),
                }),
                Action::DenyCall => self.deny(&d.alert),
                Action::Alert => {}
            }
            self.store_alert(d.alert);
        }
    }

    /// Asks for the call the alert names to be failed, once per call (a no-op for the proxy
    /// once the call has ended); under `--observe` it is only recorded.
    fn deny(&mut self, alert: &AlertRecord) {
        let Some(call_id) = &alert.call_id else {
            return;
        };
        if self.observe || !self.denied.insert(call_id.clone()) {
            return;
        }
        self.effects.push(Effect::DenyCall {
            call_id: call_id.clone(),
            reason: format!(
                "mcp-guard: call denied by detection rule {}: {}",
                alert.rule, alert.summary
            ),
        });
    }

    fn store_alert(&mut self, alert: AlertRecord) {
        self.alerts += 1;
        self.effects
            .push(Effect::Store(Box::new(Record::Alert(alert))));
    }

    /// The alert for an interceptor's finding.
    fn proxy_alert(&mut self, f: Finding) -> AlertRecord {
        self.findings += 1;
        // Tampering with what the model reads is an attack on the client; the rest is a leak
        // caught.
        let severity = match f.rule.as_str() {
            "tool-poisoning" | "tool-changed" | "tool-shadowing" | "result-poisoning"
            | "prompt-poisoning" => Severity::High,
            "hidden-text" | "secret-in-arguments" | "secret-in-result" => Severity::Medium,
            _ => Severity::Low,
        };
        let ts = Timestamp::parse_rfc3339(&f.ts).unwrap_or_else(Timestamp::now);
        AlertRecord {
            alert_id: format!("{}-f{}", self.session, self.findings),
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
}

/// Drives `pipeline` from `inputs` until `stop` fires, handing each effect to `carry_out` as it
/// comes; then takes what is already queued (the session fires `stop` once nothing more can
/// come: the server's processes are gone and the kernel guard flushed), releases everything
/// held, and returns what was done.
pub async fn run(
    mut pipeline: Pipeline,
    mut inputs: InputReceiver,
    stop: oneshot::Receiver<()>,
    mut carry_out: impl FnMut(Effect),
) -> Outcome {
    let mut tick = tokio::time::interval(CORRELATE_TICK);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    tokio::pin!(stop);
    loop {
        tokio::select! {
            input = inputs.recv() => match input {
                Some(input) => pipeline.input(input),
                None => break,
            },
            _ = tick.tick() => {}
            _ = &mut stop => break,
        }
        // Once the queue is drained after reading the clock with no fact being stamped, every
        // call started before `now` is known: events up to it are attributed without waiting
        // for the next fact. A batch cut short leaves that for the next turn.
        let now = inputs.settled_now();
        let mut drained = false;
        for _ in 0..INPUT_BATCH {
            if let Some(input) = inputs.try_recv() {
                pipeline.input(input);
            } else {
                drained = true;
                break;
            }
        }
        if drained {
            pipeline.settled(now);
        }
        pipeline.poll(boot_ns_now());
        pipeline.take_effects().into_iter().for_each(&mut carry_out);
    }
    while let Some(input) = inputs.try_recv() {
        pipeline.input(input);
    }
    pipeline.finish();
    pipeline.take_effects().into_iter().for_each(&mut carry_out);
    Outcome {
        dropped_inputs: inputs.dropped(),
        ..pipeline.outcome()
    }
}

#[cfg(test)]
mod tests;
