//! Secret handling: the exact values of injected secrets are redacted from everything the server
//! sends; secrets found by the secret rules (the built-in catalog of provider token formats and
//! generic credential assignments, or the policy's gitleaks-format `[secrets] rules`) are
//! refused in tool arguments and redacted from results; PII (e-mail, phone, card numbers with a
//! Luhn check, US SSN shapes) is optionally scrubbed.
//!
//! All patterns are compiled once; each message is pre-checked with one keyword pass of the
//! rules, one `RegexSet` (PII) and one Aho-Corasick automaton (values), so a clean message costs
//! those scans and no allocation.

use regex::{Regex, RegexSet};
use serde_json::Value;

use super::{
    frame::member_mut,
    interceptors::{Ctx, Denial, InterceptOutcome, Interceptor, MsgKind, Peeked},
};
use mcp_guard_secrets::{self as secret_rules, Finding, RulesSource, SecretRules};

/// What to do with a secret found in a message (the policy's `in_arguments`/`in_results`).
pub use mcp_guard_policy::ShapeAction;

/// Secret and PII settings (plain data, from the policy).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SecretConfig {
    /// Injected secrets as (variable name, value); values are always redacted from server output.
    pub values: Vec<(String, String)>,
    /// Look for secrets with the secret rules at all.
    pub shapes: bool,
    /// What to do with a secret in a `tools/call`'s arguments.
    pub in_arguments: ShapeAction,
    /// What to do with a secret in what the server sends.
    pub in_results: ShapeAction,
    /// Rules to leave out, by id or tag.
    pub disabled_shapes: Vec<String>,
    /// PII kinds (see [`PII`]) scrubbed from what the server sends; empty: none.
    pub pii: Vec<String>,
    /// The policy's rules file (`[secrets] rules`); `None`: the built-in catalog.
    pub rules: Option<RulesSource>,
}

impl SecretConfig {
    /// The settings of a policy's `[mcp]` table, with the injected `values`.
    pub fn for_policy(mcp: &mcp_guard_policy::Mcp, values: Vec<(String, String)>) -> Self {
        Self {
            values,
            shapes: mcp.secret_shapes.enabled,
            in_arguments: mcp.secret_shapes.in_arguments,
            in_results: mcp.secret_shapes.in_results,
            disabled_shapes: mcp.secret_shapes.ignore.clone(),
            pii: mcp.pii.clone(),
            rules: mcp.secret_rules.clone(),
        }
    }
}

impl Default for SecretConfig {
    fn default() -> Self {
        Self {
            values: vec![],
            shapes: true,
            in_arguments: ShapeAction::Deny,
            in_results: ShapeAction::Redact,
            disabled_shapes: vec![],
            pii: vec![],
            rules: None,
        }
    }
}

pub use mcp_guard_model::redact::MIN_SECRET_LEN;
use mcp_guard_model::redact::Scrubber;

/// PII shapes: (name, regex). `card-number` matches are kept only when they pass a Luhn check.
pub const PII: &[(&str, &str)] = &[
    (
        "email",
        r"\b[A-Za-z0-9._%+-]+@[A-Za-z0-9-]+(?:\.[A-Za-z0-9-]+)*\.[A-Za-z]{2,}\b",
    ),
    ("card-number", r"\b(?:\d[ -]?){12,18}\d\b"),
    ("us-ssn", r"\b\d{3}-\d{2}-\d{4}\b"),
    (
        "phone",
        r"(?:\+\d{1,3}[\s.-]?)?(?:\(\d{3}\)|\b\d{3})[\s.-]?\d{3}[\s.-]\d{4}\b",
    ),
];

/// True when the digits of `s` pass the Luhn check (13 to 19 digits).
pub fn luhn(s: &str) -> bool {
    let digits: Vec<u32> = s.chars().filter_map(|c| c.to_digit(10)).collect();
    if !(13..=19).contains(&digits.len()) {
        return false;
    }
    let sum: u32 = digits
        .iter()
        .rev()
        .enumerate()
        .map(|(i, &d)| {
            if i % 2 == 1 {
                let d = d * 2;
                if d > 9 { d - 9 } else { d }
            } else {
                d
            }
        })
        .sum();
    sum.is_multiple_of(10)
}

/// The PII patterns, pre-checked with `RegexSet`s.
struct Patterns {
    /// Which patterns match (asked only once a screen said something does).
    set: RegexSet,
    /// Whether any pattern matches: the case-insensitive patterns in a set of their own, the
    /// others together. A case-insensitive literal has many spellings, and in one set with the
    /// others it cost the whole set its fast literal search (several times slower per result
    /// line).
    screens: Vec<RegexSet>,
    list: Vec<(&'static str, Regex)>,
}

impl Patterns {
    fn new(
        all: &[(&'static str, &'static str)],
        keep: impl Fn(&str) -> bool,
    ) -> anyhow::Result<Self> {
        let mut list = Vec::new();
        for (name, re) in all {
            if keep(name) {
                list.push((*name, Regex::new(re)?));
            }
        }
        let set = RegexSet::new(list.iter().map(|(_, re)| re.as_str()))?;
        let (folded, exact): (Vec<&Regex>, Vec<&Regex>) = list
            .iter()
            .map(|(_, re)| re)
            .partition(|re| re.as_str().starts_with("(?i)"));
        let mut screens = Vec::new();
        for group in [exact, folded] {
            if !group.is_empty() {
                screens.push(RegexSet::new(group.iter().map(|re| re.as_str()))?);
            }
        }
        Ok(Self { set, screens, list })
    }

    /// Whether any pattern matches somewhere in `s`.
    fn any_match(&self, s: &str) -> bool {
        self.screens.iter().any(|set| set.is_match(s))
    }

    /// A true match of pattern `name` (card numbers must pass the Luhn check).
    fn real(name: &str, m: &str) -> bool {
        name != "card-number" || luhn(m)
    }

    /// True when no pattern is enabled (no PII kinds chosen): nothing to scan for.
    fn is_empty(&self) -> bool {
        self.list.is_empty()
    }

    /// Replaces every real match in `s` with `[REDACTED:<name>]`; notes the names in `what`.
    fn redact(&self, s: &mut String, what: &mut Vec<String>) {
        if !self.any_match(s) {
            return;
        }
        let hits = self.set.matches(s.as_str());
        if !hits.matched_any() {
            return;
        }
        for i in &hits {
            let (name, re) = &self.list[i];
            let mut found = false;
            let replaced = re.replace_all(s.as_str(), |c: &regex::Captures<'_>| {
                let m = &c[0];
                if !Self::real(name, m) {
                    return m.to_string();
                }
                found = true;
                format!("[REDACTED:{name}]")
            });
            if found {
                *s = replaced.into_owned();
                note(what, (*name).to_string());
            }
        }
    }
}

/// The compiled detector/redactor.
pub struct Redactor {
    exact: Option<Scrubber>,
    shapes: SecretRules,
    pii: Patterns,
}

impl Redactor {
    /// Compiles `config`'s values, the enabled secret rules and the chosen PII kinds.
    pub fn new(config: &SecretConfig) -> anyhow::Result<Self> {
        let exact = Scrubber::new(&config.values);
        let shapes = if config.shapes {
            secret_rules::for_source(config.rules.as_ref())
                .map_err(|e| anyhow::anyhow!("{e}"))?
                .without(&config.disabled_shapes)
        } else {
            SecretRules::none()
        };
        let pii = Patterns::new(PII, |n| config.pii.iter().any(|k| k == n))?;
        Ok(Self { exact, shapes, pii })
    }

    /// The ids of the secret rules that found something in `s` (not PII).
    pub fn shapes_in(&self, s: &str) -> Vec<String> {
        let mut out = Vec::new();
        self.shapes.ids_in(s, &mut out);
        out
    }

    /// True when [`Redactor::redact`] (with `shapes`) could not change anything: no secret
    /// values, no PII kinds, and no secret rules to redact with.
    pub fn redacts_nothing(&self, shapes: bool) -> bool {
        self.exact.is_none() && self.pii.is_empty() && (!shapes || self.shapes.is_empty())
    }

    /// False when no secret value, chosen PII kind or (with `shapes`) secret rule can match in
    /// `text`. A message whose line has no escapes holds each of its strings (and object keys)
    /// as is in its line, so when this is false for the line it is false for every string in
    /// it: the rules' keywords are not in the line, PII patterns' `\b` see the same non-word
    /// quote at a string's ends, and no pattern anchors elsewhere.
    pub fn could_match(&self, text: &str, shapes: bool) -> bool {
        self.exact
            .as_ref()
            .is_some_and(|s| s.is_match(text.as_bytes()))
            || self.pii.any_match(text)
            || (shapes && self.shapes.may_match(text))
    }

    /// How many bytes at the end of `s` could be the beginning of an injected value that
    /// continues past it (see [`Scrubber::unfinished_tail`]).
    pub fn unfinished_tail(&self, s: &str) -> usize {
        self.exact
            .as_ref()
            .map_or(0, |e| e.unfinished_tail(s.as_bytes()))
    }

    /// Redacts `s`: exact secret values and PII always, secrets the rules find when `shapes`;
    /// returns what was redacted in `what`.
    pub fn redact(&self, s: &mut String, shapes: bool, what: &mut Vec<String>) {
        self.redact_member(None, s, shapes, what);
    }

    /// [`Redactor::redact`] for a string that is the value of the object member `key`: the
    /// key is context for the rules (`"password": "..."`), never redacted itself.
    pub fn redact_member(
        &self,
        key: Option<&str>,
        s: &mut String,
        shapes: bool,
        what: &mut Vec<String>,
    ) {
        if let Some(exact) = &self.exact {
            exact.redact(s, what);
        }
        self.pii.redact(s, what);
        if shapes {
            let found = self.member_findings(key, s);
            self.shapes.redact_found(s, found, what);
        }
    }

    /// The ids of the secret rules that found something in `s`, the value of member `key`.
    fn shapes_in_member(&self, key: Option<&str>, s: &str, out: &mut Vec<String>) {
        let mut found = self.member_findings(key, s);
        found.sort_by_key(|f| f.rule);
        for f in found {
            note(out, self.shapes.rule_id(f.rule).to_string());
        }
    }

    /// The secrets in `s`; when `s` is the value of a member whose key holds one of the rules'
    /// keywords, they are looked for in the member as JSON writes it (`"key": "value"`), and
    /// what falls in the value is kept.
    fn member_findings(&self, key: Option<&str>, s: &str) -> Vec<Finding> {
        let mut found = Vec::new();
        match key {
            Some(k) if self.shapes.may_match(k) => {
                let prefix = format!("\"{k}\": \"");
                let text = format!("{prefix}{s}\"");
                self.shapes.find(&text, &mut found);
                let (lo, hi) = (prefix.len(), prefix.len() + s.len());
                found.retain_mut(|f| {
                    f.range = f.range.start.max(lo) - lo..f.range.end.min(hi).max(lo) - lo;
                    !f.range.is_empty()
                });
            }
            _ => self.shapes.find(s, &mut found),
        }
        found
    }
}

/// What a session's store records are redacted with: the injected values and, unless the
/// policy turns them off, the secret rules; not PII (a record keeps what it describes).
pub struct RecordRedactor {
    redactor: Redactor,
    shapes: bool,
}

impl RecordRedactor {
    /// Compiles `config` without its PII kinds.
    pub fn new(config: &SecretConfig) -> anyhow::Result<Self> {
        let config = SecretConfig {
            pii: Vec::new(),
            ..config.clone()
        };
        Ok(Self {
            redactor: Redactor::new(&config)?,
            shapes: config.shapes,
        })
    }
}

impl RecordRedactor {
    /// Redacts `s`, noting what was redacted in `what` (once each).
    pub fn redact(&self, s: &mut String, what: &mut Vec<String>) {
        self.redactor.redact(s, self.shapes, what);
    }

    /// [`RecordRedactor::redact`] for the value of the object member `key` (the key is the
    /// rules' context, not redacted here).
    pub fn redact_member(&self, key: &str, s: &mut String, what: &mut Vec<String>) {
        self.redactor.redact_member(Some(key), s, self.shapes, what);
    }

    /// How many bytes at the end of `s` could begin an injected value that continues past it.
    pub fn unfinished_tail(&self, s: &str) -> usize {
        self.redactor.unfinished_tail(s)
    }
}

impl mcp_guard_model::redact::TextRedactor for RecordRedactor {
    fn redact_text(&self, text: &mut String) {
        let mut what = Vec::new();
        self.redact(text, &mut what);
    }
}

fn note(what: &mut Vec<String>, item: String) {
    if !what.contains(&item) {
        what.push(item);
    }
}

/// Visits every string in `v` (values only, not keys).
pub fn for_each_string(v: &mut Value, f: &mut impl FnMut(&mut String)) {
    match v {
        Value::String(s) => f(s),
        Value::Array(a) => a.iter_mut().for_each(|x| for_each_string(x, f)),
        Value::Object(m) => m.values_mut().for_each(|x| for_each_string(x, f)),
        _ => {}
    }
}

/// Visits every string in `v` with the key of the object member it is the value of (array
/// elements and the top have none).
pub fn for_each_member_string(v: &mut Value, f: &mut impl FnMut(Option<&str>, &mut String)) {
    fn walk(v: &mut Value, key: Option<&str>, f: &mut impl FnMut(Option<&str>, &mut String)) {
        match v {
            Value::String(s) => f(key, s),
            Value::Array(a) => a.iter_mut().for_each(|x| walk(x, None, f)),
            Value::Object(m) => m.iter_mut().for_each(|(k, x)| walk(x, Some(k), f)),
            _ => {}
        }
    }
    walk(v, None, f);
}

/// [`for_each_member_string`], read-only.
fn for_each_member_str(v: &Value, f: &mut impl FnMut(Option<&str>, &str)) {
    fn walk(v: &Value, key: Option<&str>, f: &mut impl FnMut(Option<&str>, &str)) {
        match v {
            Value::String(s) => f(key, s),
            Value::Array(a) => a.iter().for_each(|x| walk(x, None, f)),
            Value::Object(m) => m.iter().for_each(|(k, x)| walk(x, Some(k), f)),
            _ => {}
        }
    }
    walk(v, None, f);
}

/// The secrets interceptor.
pub struct SecretInterceptor {
    redactor: Redactor,
    in_arguments: ShapeAction,
    in_results: ShapeAction,
}

impl SecretInterceptor {
    /// Compiles `config`.
    pub fn new(config: &SecretConfig) -> anyhow::Result<Self> {
        Ok(Self {
            redactor: Redactor::new(config)?,
            in_arguments: config.in_arguments,
            in_results: config.in_results,
        })
    }
}

impl Interceptor for SecretInterceptor {
    fn name(&self) -> &'static str {
        "secrets"
    }

    fn pre_passes(&mut self, ctx: &Ctx<'_>, msg: &Peeked<'_>) -> bool {
        if ctx.kind != MsgKind::Request
            || ctx.method != "tools/call"
            || self.redactor.shapes.is_empty()
        {
            return true;
        }
        let Some(args) = msg.arguments else {
            return true;
        };
        // What `pre_call` looks for, whatever it would then do with it.
        let mut found = Vec::new();
        for_each_member_str(args, &mut |key, s| {
            self.redactor.shapes_in_member(key, s, &mut found);
        });
        found.is_empty()
    }

    fn post_passes(&mut self, _ctx: &Ctx<'_>, msg: &Peeked<'_>) -> bool {
        let shapes = !self.redactor.shapes.is_empty();
        // `post_call` looks for shapes (to refuse or report) or redacts; when it does neither
        // there is nothing to look at.
        let looks = self.in_results != ShapeAction::Redact && shapes;
        if !looks
            && self
                .redactor
                .redacts_nothing(self.in_results == ShapeAction::Redact)
        {
            return true;
        }
        if msg.escaped {
            return false;
        }
        let Ok(text) = std::str::from_utf8(msg.raw) else {
            return false;
        };
        !self.redactor.could_match(text, shapes)
    }

    fn pre_call(&mut self, ctx: &mut Ctx<'_>, msg: &mut Value) -> InterceptOutcome {
        if ctx.kind != MsgKind::Request || ctx.method != "tools/call" {
            return InterceptOutcome::Pass;
        }
        if self.redactor.shapes.is_empty() {
            return InterceptOutcome::Pass;
        }
        // Two lookups, not `pointer_mut()`, which splits and unescapes the path on every call.
        let Some(args) = member_mut(msg, "params").and_then(|p| member_mut(p, "arguments")) else {
            return InterceptOutcome::Pass;
        };
        // Each value with its key as context, as the history's redaction reads it: a value no
        // shape matches alone (`{"password": "..."}`) is a secret by its name, and what the
        // store would not keep must not reach the server either.
        let mut found: Vec<String> = Vec::new();
        match self.in_arguments {
            ShapeAction::Redact => {
                for_each_member_string(args, &mut |key, s| {
                    let mut shapes = Vec::new();
                    let hits = self.redactor.member_findings(key, s);
                    self.redactor.shapes.redact_found(s, hits, &mut shapes);
                    for x in shapes {
                        note(&mut found, x);
                    }
                });
            }
            ShapeAction::Deny | ShapeAction::Alert => {
                for_each_member_string(args, &mut |key, s| {
                    self.redactor.shapes_in_member(key, s, &mut found);
                });
            }
        }
        if found.is_empty() {
            return InterceptOutcome::Pass;
        }
        let tool = ctx.tool.unwrap_or("");
        let summary = format!(
            "arguments of {tool:?} contain what looks like a secret ({})",
            found.join(", ")
        );
        match self.in_arguments {
            ShapeAction::Deny => {
                ctx.report(
                    "secret-in-arguments",
                    ctx.tool,
                    format!("{summary}; refused"),
                );
                InterceptOutcome::Deny(Denial::policy(format!(
                    "mcp-guard: refused: {summary}; secrets must not be passed to tools"
                )))
            }
            ShapeAction::Redact => {
                ctx.report(
                    "secret-in-arguments",
                    ctx.tool,
                    format!("{summary}; redacted"),
                );
                InterceptOutcome::Modified(format!(
                    "redacted {} from the arguments",
                    found.join(", ")
                ))
            }
            ShapeAction::Alert => {
                ctx.report(
                    "secret-in-arguments",
                    ctx.tool,
                    format!("{summary}; passed"),
                );
                InterceptOutcome::Pass
            }
        }
    }

    fn post_call(&mut self, ctx: &mut Ctx<'_>, msg: &mut Value) -> InterceptOutcome {
        let mut shapes_found = Vec::new();
        if self.in_results != ShapeAction::Redact && !self.redactor.shapes.is_empty() {
            for_each_member_string(msg, &mut |key, s| {
                self.redactor.shapes_in_member(key, s, &mut shapes_found);
            });
        }
        if self.in_results == ShapeAction::Deny && !shapes_found.is_empty() {
            let summary = format!(
                "the server's {} contains what looks like a secret ({})",
                ctx.method,
                shapes_found.join(", ")
            );
            ctx.report("secret-in-result", ctx.tool, format!("{summary}; refused"));
            return InterceptOutcome::Deny(Denial::policy(format!(
                "mcp-guard: refused: {summary}"
            )));
        }
        let mut what = Vec::new();
        let shapes = self.in_results == ShapeAction::Redact;
        if !self.redactor.redacts_nothing(shapes) {
            for_each_member_string(msg, &mut |key, s| {
                self.redactor.redact_member(key, s, shapes, &mut what);
            });
        }
        if !shapes_found.is_empty() {
            ctx.report(
                "secret-in-result",
                ctx.tool,
                format!(
                    "the server's {} contains what looks like a secret ({}); passed",
                    ctx.method,
                    shapes_found.join(", ")
                ),
            );
        }
        if what.is_empty() {
            return InterceptOutcome::Pass;
        }
        let summary = format!(
            "redacted {} from the server's {}",
            what.join(", "),
            ctx.method
        );
        ctx.report("secret-in-result", ctx.tool, summary.clone());
        InterceptOutcome::Modified(summary)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn redactor(pii: bool) -> Redactor {
        Redactor::new(&SecretConfig {
            values: vec![
                ("GITHUB_TOKEN".into(), "s3cr3t-value-42".into()),
                ("SHORT".into(), "abc".into()),
            ],
            pii: if pii {
                PII.iter().map(|(n, _)| n.to_string()).collect()
            } else {
                vec![]
            },
            ..SecretConfig::default()
        })
        .expect("compiles")
    }

    fn red(r: &Redactor, s: &str) -> (String, Vec<String>) {
        let mut s = s.to_string();
        let mut what = vec![];
        r.redact(&mut s, true, &mut what);
        (s, what)
    }

    #[test]
    fn exact_values_and_shapes_are_redacted_with_markers() {
        let r = redactor(false);
        let (s, w) = red(&r, "token=s3cr3t-value-42 abc and again s3cr3t-value-42");
        assert_eq!(
            s,
            "token=[REDACTED:secret GITHUB_TOKEN] abc and again [REDACTED:secret GITHUB_TOKEN]"
        );
        assert_eq!(w, vec!["secret GITHUB_TOKEN"]);
        let cases = [
            ("AKIAIOSFODNN7EXAMPLE", "aws-access-key"),
            ("ghp_0123456789abcdefghijABCDEFGHIJ012345", "github-pat"),
            ("xoxb-1234567890-abcdefghij", "slack-token"),
            (
                "eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiIxMjM0NTY3ODkwIn0.dozjgNryP4J3jVmNHl0w5N_XgL0n3I9PlFUP0THsR8U",
                "jwt",
            ),
            (
                "Authorization: Bearer abcdefghijklmnopqrstuvwxyz012345",
                "bearer-token",
            ),
            // The scheme in any case (checked apart from the case-sensitive shapes).
            (
                "authorization: bEaReR abcdefghijklmnopqrstuvwxyz012345",
                "bearer-token",
            ),
            (
                "-----BEGIN RSA PRIVATE KEY-----\nMIIEpAIBAAKCAQEA\n-----END RSA PRIVATE KEY-----",
                "private-key",
            ),
        ];
        for (input, name) in cases {
            let (s, w) = red(&r, &format!("x {input} y"));
            assert!(s.contains(&format!("[REDACTED:{name}]")), "{name}: {s}");
            assert!(!s.contains(&input[5..]), "{name} leaked: {s}");
            assert!(w.contains(&name.to_string()), "{name}: {w:?}");
        }
        let (s, w) = red(&r, "plain text with user@example.com and 555-123-4567");
        assert_eq!(s, "plain text with user@example.com and 555-123-4567");
        assert!(w.is_empty());
    }

    #[test]
    fn pii_scrubbing_with_luhn() {
        let r = redactor(true);
        let (s, _) = red(
            &r,
            "mail bob@example.org card 4111 1111 1111 1111 not 4111 1111 1111 1112",
        );
        assert!(s.contains("[REDACTED:email]"), "{s}");
        assert!(s.contains("card [REDACTED:card-number]"), "{s}");
        assert!(s.contains("4111 1111 1111 1112"), "{s}");
        let (s, _) = red(&r, "ssn 078-05-1120, call +1 415-555-2671");
        assert!(
            s.contains("[REDACTED:us-ssn]") && s.contains("[REDACTED:phone]"),
            "{s}"
        );
        assert!(!luhn("4111111111111112") && luhn("4012888888881881") && !luhn("79927398713"));
    }

    #[test]
    fn interceptor_denies_shapes_in_arguments_and_redacts_results() {
        let mut g = SecretInterceptor::new(&SecretConfig::default()).expect("compiles");
        let mut ctx = Ctx {
            server: "s",
            client_name: None,
            method: "tools/call",
            tool: Some("t"),
            kind: MsgKind::Request,
            findings: vec![],
        };
        let mut call =
            serde_json::json!({"params":{"name":"t","arguments":{"q":"AKIAIOSFODNN7EXAMPLE"}}});
        assert!(matches!(
            g.pre_call(&mut ctx, &mut call),
            InterceptOutcome::Deny(_)
        ));
        let mut ok = serde_json::json!({"params":{"name":"t","arguments":{"q":"hello"}}});
        assert_eq!(g.pre_call(&mut ctx, &mut ok), InterceptOutcome::Pass);
        ctx.kind = MsgKind::Response;
        let mut res = serde_json::json!({"result":{"content":[{"type":"text","text":"key AKIAIOSFODNN7EXAMPLE"}]}});
        assert!(matches!(
            g.post_call(&mut ctx, &mut res),
            InterceptOutcome::Modified(_)
        ));
        assert_eq!(
            res["result"]["content"][0]["text"],
            "key [REDACTED:aws-access-key]"
        );
        assert_eq!(ctx.findings.len(), 2);
    }

    #[test]
    fn a_secret_named_by_its_key_is_found_in_arguments_and_look_alike_keys_pass() {
        let ctx = || Ctx {
            server: "s",
            client_name: None,
            method: "tools/call",
            tool: Some("t"),
            kind: MsgKind::Request,
            findings: vec![],
        };
        let named = || {
            serde_json::json!({"params":{"name":"t","arguments":
            {"user": "svc", "password": "Tr0ub4dor&3zq9"}}})
        };
        let benign = || {
            serde_json::json!({"params":{"name":"t","arguments":
            {"password_hint": "my first pet", "token_count": "12", "max_tokens": "4096"}}})
        };
        let peek = |msg: &Value| -> bool {
            let raw = msg.to_string();
            let mut g = SecretInterceptor::new(&SecretConfig::default()).expect("compiles");
            g.pre_passes(
                &ctx(),
                &Peeked {
                    raw: raw.as_bytes(),
                    escaped: false,
                    arguments: msg.pointer("/params/arguments"),
                },
            )
        };
        assert!(!peek(&named()), "the screen must not wave it through");
        assert!(peek(&benign()));
        let mut g = SecretInterceptor::new(&SecretConfig::default()).expect("compiles");
        let mut msg = named();
        assert!(matches!(
            g.pre_call(&mut ctx(), &mut msg),
            InterceptOutcome::Deny(_)
        ));
        let mut msg = benign();
        assert_eq!(g.pre_call(&mut ctx(), &mut msg), InterceptOutcome::Pass);
        assert_eq!(msg, benign());
        let mut g = SecretInterceptor::new(&SecretConfig {
            in_arguments: ShapeAction::Redact,
            ..SecretConfig::default()
        })
        .expect("compiles");
        let mut msg = named();
        assert!(matches!(
            g.pre_call(&mut ctx(), &mut msg),
            InterceptOutcome::Modified(_)
        ));
        assert_eq!(
            msg["params"]["arguments"],
            serde_json::json!({"user": "svc", "password": "[REDACTED:generic-password]"})
        );
    }

    #[test]
    fn the_policy_names_the_same_pii_kinds() {
        let pii: Vec<&str> = PII.iter().map(|(n, _)| *n).collect();
        assert_eq!(pii, mcp_guard_policy::PII_KINDS);
    }

    #[test]
    fn shape_actions_and_pii_kinds_are_honoured() {
        let call = || serde_json::json!({"params":{"name":"t","arguments":{"q":"key AKIAIOSFODNN7EXAMPLE"}}});
        let result = || {
            serde_json::json!({"result":{"content":[{"type":"text",
                "text":"key AKIAIOSFODNN7EXAMPLE mail bob@example.org ssn 078-05-1120"}]}})
        };
        let mut ctx = Ctx {
            server: "s",
            client_name: None,
            method: "tools/call",
            tool: Some("t"),
            kind: MsgKind::Request,
            findings: vec![],
        };
        let interceptor = |a, r, pii: &[&str]| {
            SecretInterceptor::new(&SecretConfig {
                in_arguments: a,
                in_results: r,
                pii: pii.iter().map(std::string::ToString::to_string).collect(),
                ..SecretConfig::default()
            })
            .expect("compiles")
        };
        // Redact in arguments: the server gets a marker instead of the key.
        let mut g = interceptor(ShapeAction::Redact, ShapeAction::Alert, &["email"]);
        let mut c = call();
        assert!(matches!(
            g.pre_call(&mut ctx, &mut c),
            InterceptOutcome::Modified(_)
        ));
        assert_eq!(
            c["params"]["arguments"]["q"],
            "key [REDACTED:aws-access-key]"
        );
        // Alert in results: reported, the key passes, only the chosen PII kind is scrubbed.
        ctx.kind = MsgKind::Response;
        let mut r = result();
        assert!(matches!(
            g.post_call(&mut ctx, &mut r),
            InterceptOutcome::Modified(_)
        ));
        let text = r["result"]["content"][0]["text"].as_str().expect("text");
        assert_eq!(
            text,
            "key AKIAIOSFODNN7EXAMPLE mail [REDACTED:email] ssn 078-05-1120"
        );
        assert!(
            ctx.findings.iter().any(|f| f.2.contains("passed")),
            "{:?}",
            ctx.findings
        );

        // Alert in arguments passes the call; deny in results refuses the result.
        let mut g = interceptor(ShapeAction::Alert, ShapeAction::Deny, &[]);
        ctx.kind = MsgKind::Request;
        let mut c = call();
        assert_eq!(g.pre_call(&mut ctx, &mut c), InterceptOutcome::Pass);
        assert_eq!(c, call());
        ctx.kind = MsgKind::Response;
        assert!(matches!(
            g.post_call(&mut ctx, &mut result()),
            InterceptOutcome::Deny(_)
        ));

        // Shapes off: neither direction looks; PII off: nothing scrubbed.
        let mut g = SecretInterceptor::new(&SecretConfig {
            shapes: false,
            ..SecretConfig::default()
        })
        .expect("compiles");
        ctx.kind = MsgKind::Request;
        assert_eq!(g.pre_call(&mut ctx, &mut call()), InterceptOutcome::Pass);
        ctx.kind = MsgKind::Response;
        assert_eq!(g.post_call(&mut ctx, &mut result()), InterceptOutcome::Pass);
    }
}
