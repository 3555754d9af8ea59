//! The suggested policy as TOML, each line commented with the evidence behind it.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt::Write as _;

use super::Observed;

/// Examples kept per line.
const SAMPLES: usize = 2;
/// Headroom over an observed peak.
const HEADROOM: u64 = 2;
const MIB: u64 = 1 << 20;
/// The smallest memory limit suggested (runtimes reserve heaps up front).
const MIN_MEMORY: u64 = 64 * MIB;
/// The fewest tasks suggested.
const MIN_PIDS: u64 = 16;

/// The evidence behind one line of the policy.
#[derive(Clone, Debug)]
pub struct Why {
    /// What the entry is (`node packages`, `host`, `tool`, ...).
    pub what: &'static str,
    count: u64,
    /// Events outside any tool call (start-up, background work).
    outside: u64,
    sessions: BTreeSet<String>,
    tools: BTreeMap<String, u64>,
    samples: BTreeSet<String>,
}

impl Why {
    /// No evidence yet.
    pub fn new(what: &'static str) -> Self {
        Why {
            what,
            count: 0,
            outside: 0,
            sessions: BTreeSet::new(),
            tools: BTreeMap::new(),
            samples: BTreeSet::new(),
        }
    }

    /// One more event (or call) of `session`, during a call to `tool` if any; `sample` is what
    /// it touched (a path, an address).
    pub fn add(&mut self, session: &str, tool: Option<&str>, sample: &str) {
        self.count += 1;
        self.sessions.insert(session.to_string());
        match tool {
            Some(t) => *self.tools.entry(t.to_string()).or_default() += 1,
            None => self.outside += 1,
        }
        if self.samples.len() < SAMPLES {
            self.samples.insert(sample.to_string());
        }
    }

    /// Adds another entry's evidence (keeping this one's `what`).
    pub fn merge(&mut self, other: Why) {
        self.count += other.count;
        self.outside += other.outside;
        self.sessions.extend(other.sessions);
        for (t, n) in other.tools {
            *self.tools.entry(t).or_default() += n;
        }
        for s in other.samples {
            if self.samples.len() < SAMPLES {
                self.samples.insert(s);
            }
        }
    }

    fn comment(&self, noun: &str, entry: &str, samples: bool) -> String {
        let plural = if self.count == 1 { "" } else { "s" };
        let mut c = format!("{}: {} {noun}{plural}", self.what, self.count);
        let shown: Vec<String> = self
            .samples
            .iter()
            .filter(|s| samples && s.as_str() != entry)
            .map(|s| short(s, entry))
            .collect();
        if !shown.is_empty() {
            let _ = write!(c, " (e.g. {})", shown.join(", "));
        }
        let n = self.sessions.len();
        let _ = write!(c, " in {n} session{}", if n == 1 { "" } else { "s" });
        let mut when = Vec::new();
        if self.outside > 0 && noun != "call" {
            when.push("outside tool calls".to_string());
        }
        if !self.tools.is_empty() {
            let tools: Vec<String> = self
                .tools
                .iter()
                .map(|(t, n)| format!("{t} ×{n}"))
                .collect();
            when.push(format!("during {}", tools.join(", ")));
        }
        if !when.is_empty() {
            let _ = write!(c, ", {}", when.join(" and "));
        }
        c
    }
}

/// A sample shown relative to its entry when it lies below it, shortened from the left.
fn short(sample: &str, entry: &str) -> String {
    let rel = sample
        .strip_prefix(entry)
        .and_then(|r| r.strip_prefix('/'))
        .map_or_else(|| sample.to_string(), |r| format!(".../{r}"));
    let chars: Vec<char> = rel.chars().collect();
    if chars.len() > 60 {
        let tail: String = chars[chars.len() - 57..].iter().collect();
        format!("...{tail}")
    } else {
        rel
    }
}

fn quote(s: &str) -> String {
    // JSON string escapes are valid TOML basic-string escapes.
    serde_json::Value::String(s.to_string()).to_string()
}

/// A TOML array of the entries, one per line with its reason.
fn list(key: &str, entries: &BTreeMap<String, Why>, noun: &str, samples: bool) -> String {
    if entries.is_empty() {
        return format!("{key} = []\n");
    }
    let mut s = format!("{key} = [\n");
    for (entry, why) in entries {
        // A comment ends at the line's end: keep the comment on one line.
        let comment = why.comment(noun, entry, samples).replace('\n', " ");
        let _ = writeln!(s, "  {},  # {comment}", quote(entry));
    }
    s.push_str("]\n");
    s
}

/// The policy text for `server` from what was observed.
pub(super) fn policy(server: &str, o: &Observed) -> String {
    let sessions: Vec<&str> = o.sessions.iter().map(String::as_str).collect();
    let mut out = format!(
        "# Suggested by `mcp-guard policy suggest` from {} recorded events of {} session{} ({}).\n\
         # Review every line (each says what it was seen doing) before enforcing it.\n\
         name = {}\n",
        o.events,
        sessions.len(),
        if sessions.len() == 1 { "" } else { "s" },
        sessions.join(", "),
        quote(server)
    );
    out.push_str("\n[filesystem]\n");
    out.push_str(&list("read", &o.read, "open", true));
    out.push_str(&list("write", &o.write, "open", true));
    out.push_str(&list("exec", &o.exec, "exec", true));
    if o.unplaced > 0 {
        let _ = writeln!(
            out,
            "# {} opens of relative paths are not above: no absolute path showed their directory.",
            o.unplaced
        );
    }
    out.push_str("\n[network]\n");
    if o.allow.values().any(|w| w.what == "address") {
        out.push_str(
            "# Addresses no DNS answer the server got (nor mcp-guard) named: replace each with the\n\
             # name the server uses (names are resolved and kept fresh; addresses are fixed).\n",
        );
    }
    out.push_str(&list("allow", &o.allow, "connect", true));
    if !o.unix.is_empty() {
        out.push_str(&list("unix", &o.unix, "connect", false));
    }
    out.push_str("\n[tools]\n");
    if o.tools.is_empty() {
        out.push_str(
            "# No tool call was recorded: every tool stays allowed. List the ones the client uses:\n\
             # allow = []\n",
        );
    } else {
        out.push_str(&list("allow", &o.tools, "call", false));
    }
    out.push_str(&limits(o));
    out
}

fn limits(o: &Observed) -> String {
    let mut s = String::from("\n[limits]\n");
    if o.memory_peak.is_none() && o.pids_peak.is_none() {
        s.push_str(
            "# No peaks were recorded (no cgroup accounting on this host): set limits by hand.\n",
        );
        return s;
    }
    let n = o.usage_sessions;
    let over = format!("over {n} session{}", if n == 1 { "" } else { "s" });
    if let Some(peak) = o.memory_peak {
        let mib = (peak.saturating_mul(HEADROOM).max(MIN_MEMORY)).div_ceil(16 * MIB) * 16;
        #[expect(clippy::cast_precision_loss, reason = "shown to a tenth of a MiB")]
        let _ = writeln!(
            s,
            "memory = \"{mib}M\"  # peak {:.1} MiB {over}, ×{HEADROOM} headroom",
            peak as f64 / MIB as f64
        );
    }
    if let Some(peak) = o.pids_peak {
        let pids = peak.saturating_mul(HEADROOM).max(MIN_PIDS);
        let _ = writeln!(
            s,
            "pids = {pids}  # peak {peak} tasks {over}, ×{HEADROOM} headroom"
        );
    }
    s
}
