//! Detection: rules over attributed events and call ends → alerts with an action.
//!
//! Pure and synchronous: the session pipeline feeds [`Detector::event`] with each [`AttributedEvent`] (and the id
//! it was stored under) and [`Detector::call_ended`] with each finished call; both return the
//! alerts that fired (already `AlertRecord`s for the store) and the action to take. Learned rules
//! (new egress, interpreter exec) compare against a per-(server, tool) [`Profile`], persisted as
//! JSON in `<state>/profiles/<server>.json`; in learning mode the profile grows and those rules
//! stay quiet.

use std::collections::{BTreeMap, HashSet, VecDeque};
use std::fmt;
use std::path::Path;

use crate::correlate::AttributedEvent;
use mcp_guard_model::kernel_event::{EgressVerdict, KernelEventKind, boot_to_unix_ns};
use mcp_guard_model::{AlertRecord, Attribution, Severity, Timestamp};
use mcp_guard_policy::{self as policy, OnSensitive, Policy};

mod globs;
mod profile;
pub use globs::PathGlobs;
pub use profile::{PROFILES_DIR, Profile, ToolProfile};

/// What to do when a rule fires.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum Action {
    /// Record an alert only.
    Alert,
    /// Fail the tool call in flight.
    DenyCall,
    /// Kill the server.
    Kill,
}

impl fmt::Display for Action {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Action::Alert => "alert",
            Action::DenyCall => "deny-call",
            Action::Kill => "kill",
        })
    }
}

/// The built-in rules.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Rule {
    /// An open of a sensitive path.
    SensitiveRead,
    /// A connect to a destination this (server, tool) never used while learning.
    NewEgress,
    /// A successful exec of a shell or interpreter by a server that did not while learning.
    InterpreterExec,
    /// Sensitive read then a connect or a large result in the same call.
    Exfiltration,
    /// A `readOnlyHint` tool whose process opened something for writing.
    ReadOnlyWrite,
    /// Many denied actions in a short time.
    DenialBurst,
}

impl Rule {
    /// Every rule.
    pub const ALL: [Rule; 6] = [
        Rule::SensitiveRead,
        Rule::NewEgress,
        Rule::InterpreterExec,
        Rule::Exfiltration,
        Rule::ReadOnlyWrite,
        Rule::DenialBurst,
    ];

    /// The contract name (`AlertRecord::rule`).
    pub const fn name(self) -> &'static str {
        match self {
            Rule::SensitiveRead => "sensitive-read",
            Rule::NewEgress => "new-egress",
            Rule::InterpreterExec => "interpreter-exec",
            Rule::Exfiltration => "exfiltration",
            Rule::ReadOnlyWrite => "readonly-write",
            Rule::DenialBurst => "denial-burst",
        }
    }

    /// Default severity and action.
    #[expect(
        clippy::match_same_arms,
        reason = "one row per rule: each rule's defaults change alone"
    )]
    pub const fn default_config(self) -> RuleConfig {
        let (severity, action) = match self {
            Rule::SensitiveRead => (Severity::High, Action::Alert),
            Rule::NewEgress => (Severity::Medium, Action::Alert),
            Rule::InterpreterExec => (Severity::Medium, Action::Alert),
            Rule::Exfiltration => (Severity::Critical, Action::Alert),
            Rule::ReadOnlyWrite => (Severity::Medium, Action::Alert),
            Rule::DenialBurst => (Severity::Low, Action::Alert),
        };
        RuleConfig {
            enabled: true,
            severity,
            action,
        }
    }
}

/// One rule's settings.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RuleConfig {
    /// Off means it never fires.
    pub enabled: bool,
    /// Severity of its alerts.
    pub severity: Severity,
    /// What to do.
    pub action: Action,
}

/// Detector settings (built from a policy by [`DetectConfig::from_policy`]).
#[derive(Clone, Debug)]
pub struct DetectConfig {
    /// Sensitive globs, `~` already expanded.
    pub sensitive: Vec<String>,
    /// Per-rule settings.
    pub rules: BTreeMap<Rule, RuleConfig>,
    /// A call result at least this big after a sensitive read is an exfiltration shape.
    pub large_result_bytes: u64,
    /// Denial burst: this many denials ...
    pub burst_count: usize,
    /// ... within this many ns.
    pub burst_window_ns: u64,
    /// Learning mode: grow the profile, keep learned rules quiet.
    pub learning: bool,
}

impl DetectConfig {
    /// The built-in default sensitive list plus the policy's `[detect] sensitive`; the
    /// sensitive-read rule takes the policy's `on_sensitive` action.
    pub fn from_policy(policy: &Policy, home: &Path) -> Self {
        let mut sensitive: Vec<String> = Vec::new();
        for s in policy::builtin_default()
            .detect
            .sensitive
            .iter()
            .chain(&policy.detect.sensitive)
        {
            let s = policy::expand_home(s, home).to_string_lossy().into_owned();
            if !sensitive.contains(&s) {
                sensitive.push(s);
            }
        }
        let mut rules: BTreeMap<Rule, RuleConfig> =
            Rule::ALL.iter().map(|r| (*r, r.default_config())).collect();
        let action = match policy.detect.on_sensitive {
            OnSensitive::Alert => Action::Alert,
            OnSensitive::DenyCall => Action::DenyCall,
            OnSensitive::Kill => Action::Kill,
        };
        for r in [Rule::SensitiveRead, Rule::Exfiltration] {
            if let Some(c) = rules.get_mut(&r) {
                c.action = c.action.max(action);
            }
        }
        // `[detect.rules.<name>]` overrides last (names are checked by the policy parser).
        for (name, over) in &policy.detect.rules {
            let Some(rule) = Rule::ALL.iter().find(|r| r.name() == name) else {
                continue;
            };
            if let Some(c) = rules.get_mut(rule) {
                c.enabled = over.enabled.unwrap_or(c.enabled);
                c.severity = over.severity.unwrap_or(c.severity);
                if let Some(a) = over.action {
                    c.action = match a {
                        OnSensitive::Alert => Action::Alert,
                        OnSensitive::DenyCall => Action::DenyCall,
                        OnSensitive::Kill => Action::Kill,
                    };
                }
            }
        }
        Self {
            sensitive,
            rules,
            large_result_bytes: 64 * 1024,
            burst_count: 5,
            burst_window_ns: 10_000_000_000,
            learning: policy.detect.learn,
        }
    }
}

/// An alert and what to do about it.
#[derive(Clone, Debug, PartialEq)]
pub struct Detection {
    /// The store record (`action` filled in).
    pub alert: AlertRecord,
    /// The action.
    pub action: Action,
}

/// A finished call, as the detector needs it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CallEnd {
    /// The call id.
    pub call_id: String,
    /// Its tool.
    pub tool: Option<String>,
    /// Size of the result sent to the client.
    pub result_bytes: Option<u64>,
    /// Whether mcp-guard denied the call.
    pub denied: bool,
    /// When (`CLOCK_BOOTTIME` ns).
    pub at_boot_ns: u64,
}

#[derive(Default)]
struct CallState {
    sensitive_events: Vec<String>,
    exfil_fired: bool,
}

/// The detector for one server session.
pub struct Detector {
    config: DetectConfig,
    server: String,
    session: String,
    profile: Profile,
    read_only: HashSet<String>,
    sensitive: PathGlobs,
    calls: BTreeMap<String, CallState>,
    denials: VecDeque<(u64, String)>,
    seq: u64,
}

/// Programs that count as a shell or interpreter (by file name, version suffixes ignored).
pub fn is_interpreter(path: &str) -> bool {
    let name = path.rsplit('/').next().unwrap_or(path);
    let base = name.trim_end_matches(|c: char| c.is_ascii_digit() || c == '.');
    matches!(
        base,
        "sh" | "bash"
            | "zsh"
            | "dash"
            | "ash"
            | "ksh"
            | "fish"
            | "csh"
            | "tcsh"
            | "python"
            | "node"
            | "nodejs"
            | "perl"
            | "ruby"
            | "php"
            | "lua"
            | "deno"
            | "bun"
            | "pwsh"
            | "osascript"
    )
}

/// Opens for writing that change nothing a read-only tool promises to leave alone: unknown
/// paths (the kernel could not read the path; counted as `path_read_failed`), the null device
/// and terminals, and lock files taken with `O_EXCL` (how git, for one, guards a read: `git status`
/// refreshes the index's stat cache under `.git/index.lock`; the content is unchanged).
pub fn is_harmless_write(path: &str, flags: u32) -> bool {
    path.is_empty()
        || path == "/dev/null"
        || path == "/dev/tty"
        || path.starts_with("/dev/pts/")
        || (path.ends_with(".lock") && flags & libc::O_EXCL as u32 != 0)
}

const WRITE_FLAGS: u32 = (libc::O_WRONLY | libc::O_RDWR | libc::O_CREAT | libc::O_TRUNC) as u32;

impl Detector {
    /// A detector for one session; `read_only` are the tools annotated `readOnlyHint: true`.
    pub fn new(
        config: DetectConfig,
        server: &str,
        session: &str,
        profile: Profile,
        read_only: HashSet<String>,
    ) -> Self {
        Self {
            sensitive: PathGlobs::new(&config.sensitive),
            config,
            server: server.to_string(),
            session: session.to_string(),
            profile,
            read_only,
            calls: BTreeMap::new(),
            denials: VecDeque::new(),
            seq: 0,
        }
    }

    /// Replace the read-only tool set (after a new tools/list).
    pub fn set_read_only(&mut self, tools: HashSet<String>) {
        self.read_only = tools;
    }

    /// Whether it is learning (its profile is to be saved at session end).
    pub fn learning(&self) -> bool {
        self.config.learning
    }

    /// The profile (to persist with [`Profile::save`] at session end).
    pub fn profile(&self) -> &Profile {
        &self.profile
    }

    fn is_sensitive(&self, path: &str) -> bool {
        self.sensitive.is_match(path)
    }

    fn fire(
        &mut self,
        rule: Rule,
        ts_boot_ns: u64,
        call_id: Option<String>,
        tool: Option<String>,
        summary: String,
        event_ids: Vec<String>,
    ) -> Option<Detection> {
        let cfg = self
            .config
            .rules
            .get(&rule)
            .copied()
            .unwrap_or(rule.default_config());
        if !cfg.enabled {
            return None;
        }
        self.seq += 1;
        let ts = Timestamp::from_unix_nanos(
            i64::try_from(boot_to_unix_ns(ts_boot_ns)).unwrap_or(i64::MAX),
        );
        let alert = AlertRecord {
            alert_id: format!("{}-a{}", self.session, self.seq),
            ts,
            server: self.server.clone(),
            session: self.session.clone(),
            rule: rule.name().to_string(),
            severity: cfg.severity,
            call_id,
            tool,
            summary,
            event_ids,
            action: Some(cfg.action.to_string()),
            count: 1,
            last_seen: ts,
        };
        Some(Detection {
            alert,
            action: cfg.action,
        })
    }

    /// Run the rules on one attributed event stored as `event_id`.
    pub fn event(&mut self, a: &AttributedEvent, event_id: &str) -> Vec<Detection> {
        let mut out = Vec::new();
        let ts = a.event.ts_boot_ns;
        let call = a.call_id.clone();
        let tool = a.tool.clone();
        let tool_key = tool.clone().unwrap_or_default();
        let ids = vec![event_id.to_string()];
        let mut denied = false;
        match &a.event.kind {
            KernelEventKind::Open {
                path,
                flags,
                result,
            } => {
                if result
                    .is_some_and(|r| r == -i64::from(libc::EACCES) || r == -i64::from(libc::EPERM))
                {
                    denied = true;
                }
                if self.is_sensitive(path) {
                    let summary = format!("{} opened sensitive path {path}", who(tool.as_deref()));
                    out.extend(self.fire(
                        Rule::SensitiveRead,
                        ts,
                        call.clone(),
                        tool.clone(),
                        summary,
                        ids.clone(),
                    ));
                    if let (Some(c), Attribution::Call) = (&call, a.attribution) {
                        self.calls
                            .entry(c.clone())
                            .or_default()
                            .sensitive_events
                            .push(event_id.to_string());
                    }
                }
                if flags & WRITE_FLAGS != 0
                    && !is_harmless_write(path, *flags)
                    && tool.as_ref().is_some_and(|t| self.read_only.contains(t))
                {
                    let summary = format!("read-only tool {tool_key} opened {path} for writing");
                    out.extend(self.fire(
                        Rule::ReadOnlyWrite,
                        ts,
                        call.clone(),
                        tool.clone(),
                        summary,
                        ids.clone(),
                    ));
                }
                if let (true, Some(dir)) = (self.config.learning, Path::new(path).parent()) {
                    self.profile
                        .tool(&tool_key)
                        .prefixes
                        .insert(dir.to_string_lossy().into_owned());
                }
            }
            KernelEventKind::Connect { addr, verdict, .. } => {
                denied = *verdict == EgressVerdict::Denied;
                let dest = addr.to_string();
                if self.config.learning {
                    self.profile.tool(&tool_key).egress.insert(dest.clone());
                } else if !self
                    .profile
                    .tools
                    .get(&tool_key)
                    .is_some_and(|t| t.egress.contains(&dest))
                {
                    let summary = format!(
                        "{} connected to {dest}, never seen for this tool",
                        who(tool.as_deref())
                    );
                    out.extend(self.fire(
                        Rule::NewEgress,
                        ts,
                        call.clone(),
                        tool.clone(),
                        summary,
                        ids.clone(),
                    ));
                    // Remember it so one new destination alerts once.
                    self.profile.tool(&tool_key).egress.insert(dest.clone());
                }
                if let Some(c) = &call {
                    let fire = self
                        .calls
                        .get(c)
                        .filter(|s| !s.sensitive_events.is_empty() && !s.exfil_fired)
                        .map(|s| s.sensitive_events.clone());
                    if let Some(mut evs) = fire {
                        evs.push(event_id.to_string());
                        let summary = format!(
                            "{} read secret material then connected to {dest}",
                            who(tool.as_deref())
                        );
                        out.extend(self.fire(
                            Rule::Exfiltration,
                            ts,
                            call.clone(),
                            tool.clone(),
                            summary,
                            evs,
                        ));
                        if let Some(s) = self.calls.get_mut(c) {
                            s.exfil_fired = true;
                        }
                    }
                }
            }
            // A failed exec ran nothing (`env` trying each PATH entry): only what ran counts.
            KernelEventKind::Exec {
                result: Some(r), ..
            } if *r != 0 => {}
            KernelEventKind::Exec { path, .. } => {
                if self.config.learning {
                    self.profile.tool(&tool_key).exec.insert(path.clone());
                } else if is_interpreter(path) && !self.profile.any_exec(path) {
                    let summary = format!(
                        "{} exec'd interpreter {path}, which this server did not while learning",
                        who(tool.as_deref())
                    );
                    out.extend(self.fire(
                        Rule::InterpreterExec,
                        ts,
                        call.clone(),
                        tool.clone(),
                        summary,
                        ids.clone(),
                    ));
                    self.profile.tool(&tool_key).exec.insert(path.clone());
                }
            }
            KernelEventKind::Killed { .. } => denied = true,
            // A Unix socket the policy does not list counts towards a burst of denials.
            KernelEventKind::Unix { verdict, .. } => denied = *verdict == EgressVerdict::Denied,
            // DNS is learnt by the pipeline and never reaches the rules.
            KernelEventKind::Resolve { .. } | KernelEventKind::Dns(_) => {}
        }
        if denied {
            out.extend(self.denial(ts, event_id.to_string(), call, tool));
        }
        out
    }

    /// Run the rules on a finished call (exfiltration by result size, denied calls).
    pub fn call_ended(&mut self, end: &CallEnd, call_event_id: Option<&str>) -> Vec<Detection> {
        let mut out = Vec::new();
        let state = self.calls.remove(&end.call_id).unwrap_or_default();
        if !state.exfil_fired
            && !state.sensitive_events.is_empty()
            && end
                .result_bytes
                .is_some_and(|b| b >= self.config.large_result_bytes)
        {
            let summary = format!(
                "{} read secret material and returned {} bytes",
                who(end.tool.as_deref()),
                end.result_bytes.unwrap_or(0)
            );
            out.extend(self.fire(
                Rule::Exfiltration,
                end.at_boot_ns,
                Some(end.call_id.clone()),
                end.tool.clone(),
                summary,
                state.sensitive_events,
            ));
        }
        if end.denied {
            let id = call_event_id.unwrap_or(&end.call_id).to_string();
            out.extend(self.denial(
                end.at_boot_ns,
                id,
                Some(end.call_id.clone()),
                end.tool.clone(),
            ));
        }
        out
    }

    fn denial(
        &mut self,
        ts: u64,
        id: String,
        call: Option<String>,
        tool: Option<String>,
    ) -> Option<Detection> {
        self.denials.push_back((ts, id));
        while self
            .denials
            .front()
            .is_some_and(|(t, _)| ts.saturating_sub(*t) > self.config.burst_window_ns)
        {
            self.denials.pop_front();
        }
        if self.denials.len() < self.config.burst_count {
            return None;
        }
        let ids: Vec<String> = self.denials.drain(..).map(|(_, id)| id).collect();
        let summary = format!(
            "{} denied actions within {} s",
            ids.len(),
            self.config.burst_window_ns / 1_000_000_000
        );
        self.fire(Rule::DenialBurst, ts, call, tool, summary, ids)
    }
}

fn who(tool: Option<&str>) -> String {
    match tool {
        Some(t) => format!("tool {t}"),
        None => "the server (outside any call)".to_string(),
    }
}

#[cfg(test)]
mod tests;
