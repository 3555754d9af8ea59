//! Secret handling: the exact values of injected secrets are redacted from everything the server
//! sends; well-known secret shapes are refused in tool arguments and redacted from results; PII
//! (e-mail, phone, card numbers with a Luhn check, US SSN shapes) is optionally scrubbed.
//!
//! All patterns are compiled once; each string is pre-checked with one `RegexSet` and one
//! Aho-Corasick automaton, so a clean message costs a scan and no allocation.

use aho_corasick::AhoCorasick;
use regex::{Regex, RegexSet};
use serde_json::Value;

use super::interceptors::{Ctx, Denial, Interceptor, MsgKind, Verdict};

/// Secret and PII settings (plain data, from the policy).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SecretConfig {
    /// Injected secrets as (variable name, value); values are redacted from server output.
    pub values: Vec<(String, String)>,
    /// Refuse `tools/call` whose arguments contain a well-known secret shape.
    pub deny_shapes_in_args: bool,
    /// Redact well-known secret shapes from what the server sends.
    pub redact_shapes_in_results: bool,
    /// Shape names to leave alone (see [`SHAPES`]).
    pub disabled_shapes: Vec<String>,
    /// Scrub PII (see [`PII`]) from what the server sends.
    pub pii: bool,
}

impl Default for SecretConfig {
    fn default() -> Self {
        Self {
            values: vec![],
            deny_shapes_in_args: true,
            redact_shapes_in_results: true,
            disabled_shapes: vec![],
            pii: false,
        }
    }
}

/// Secret values shorter than this are not redacted (they would shred ordinary text).
pub const MIN_SECRET_LEN: usize = 6;

/// Well-known secret shapes: (name, regex).
pub const SHAPES: &[(&str, &str)] = &[
    (
        "private-key",
        r"-----BEGIN[A-Z0-9 ]*PRIVATE KEY-----(?s:.*?)(?:-----END[A-Z0-9 ]*PRIVATE KEY-----|\z)",
    ),
    (
        "aws-access-key",
        r"\b(?:AKIA|ASIA|AGPA|AIDA|AROA|ANPA|ANVA|AIPA)[A-Z0-9]{16}\b",
    ),
    (
        "github-token",
        r"\b(?:gh[pousr]_[A-Za-z0-9]{36,255}|github_pat_[A-Za-z0-9_]{22,255})\b",
    ),
    ("slack-token", r"\bxox[abposr]-[A-Za-z0-9-]{10,}"),
    ("google-api-key", r"\bAIza[0-9A-Za-z_-]{35}\b"),
    ("api-key-sk", r"\bsk-(?:ant-|proj-)?[A-Za-z0-9_-]{20,}"),
    (
        "jwt",
        r"\beyJ[A-Za-z0-9_-]{5,}\.eyJ[A-Za-z0-9_-]{5,}\.[A-Za-z0-9_-]{10,}",
    ),
    ("bearer-token", r"(?i)\bbearer\s+[A-Za-z0-9\-._~+/]{20,}=*"),
];

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

struct Pattern {
    name: &'static str,
    re: Regex,
    pii: bool,
}

/// The compiled detector/redactor.
pub struct Redactor {
    exact: Option<AhoCorasick>,
    exact_names: Vec<String>,
    set: RegexSet,
    patterns: Vec<Pattern>,
}

impl Redactor {
    /// Compiles `config`'s values and shapes.
    pub fn new(config: &SecretConfig) -> anyhow::Result<Self> {
        let mut names = Vec::new();
        let mut values = Vec::new();
        for (name, value) in &config.values {
            if value.len() < MIN_SECRET_LEN {
                tracing::warn!(
                    "secret {name} is shorter than {MIN_SECRET_LEN} bytes and cannot be redacted safely"
                );
                continue;
            }
            names.push(name.clone());
            values.push(value.clone());
        }
        let exact = if values.is_empty() {
            None
        } else {
            Some(AhoCorasick::builder().build(&values)?)
        };
        let mut patterns = Vec::new();
        for (name, re) in SHAPES {
            if !config.disabled_shapes.iter().any(|d| d == name) {
                patterns.push(Pattern {
                    name,
                    re: Regex::new(re)?,
                    pii: false,
                });
            }
        }
        if config.pii {
            for (name, re) in PII {
                patterns.push(Pattern {
                    name,
                    re: Regex::new(re)?,
                    pii: true,
                });
            }
        }
        let set = RegexSet::new(patterns.iter().map(|p| p.re.as_str()))?;
        Ok(Self {
            exact,
            exact_names: names,
            set,
            patterns,
        })
    }

    /// The names of the secret shapes found in `s` (not PII).
    pub fn shapes_in(&self, s: &str) -> Vec<&'static str> {
        self.set
            .matches(s)
            .iter()
            .map(|i| &self.patterns[i])
            .filter(|p| !p.pii)
            .map(|p| p.name)
            .collect()
    }

    /// Redacts `s`: exact secret values always, shapes when `shapes`; returns what was redacted.
    pub fn redact(&self, s: &mut String, shapes: bool, what: &mut Vec<String>) {
        if let Some(ac) = &self.exact
            && ac.is_match(s.as_str())
        {
            let mut out = String::with_capacity(s.len());
            let mut last = 0;
            for m in ac.find_iter(s.as_str()) {
                out.push_str(&s[last..m.start()]);
                let name = &self.exact_names[m.pattern().as_usize()];
                out.push_str(&format!("[REDACTED:secret {name}]"));
                note(what, format!("secret {name}"));
                last = m.end();
            }
            out.push_str(&s[last..]);
            *s = out;
        }
        if !shapes {
            return;
        }
        let hits = self.set.matches(s.as_str());
        if !hits.matched_any() {
            return;
        }
        for i in hits.iter() {
            let p = &self.patterns[i];
            let mut found = false;
            let replaced = p.re.replace_all(s.as_str(), |c: &regex::Captures<'_>| {
                let m = &c[0];
                if p.name == "card-number" && !luhn(m) {
                    return m.to_string();
                }
                found = true;
                format!("[REDACTED:{}]", p.name)
            });
            if found {
                *s = replaced.into_owned();
                note(what, p.name.to_string());
            }
        }
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

/// The secrets interceptor.
pub struct SecretGuard {
    redactor: Redactor,
    deny_args: bool,
    redact_shapes: bool,
}

impl SecretGuard {
    /// Compiles `config`.
    pub fn new(config: &SecretConfig) -> anyhow::Result<Self> {
        Ok(Self {
            redactor: Redactor::new(config)?,
            deny_args: config.deny_shapes_in_args,
            redact_shapes: config.redact_shapes_in_results || config.pii,
        })
    }
}

impl Interceptor for SecretGuard {
    fn name(&self) -> &'static str {
        "secrets"
    }

    fn pre_call(&mut self, ctx: &mut Ctx<'_>, msg: &mut Value) -> Verdict {
        if !self.deny_args || ctx.kind != MsgKind::Request || ctx.method != "tools/call" {
            return Verdict::Pass;
        }
        let mut found: Vec<&'static str> = Vec::new();
        if let Some(args) = msg.pointer_mut("/params/arguments") {
            for_each_string(args, &mut |s| {
                for shape in self.redactor.shapes_in(s) {
                    if !found.contains(&shape) {
                        found.push(shape);
                    }
                }
            });
        }
        if found.is_empty() {
            return Verdict::Pass;
        }
        let tool = ctx.tool.unwrap_or("");
        let summary = format!(
            "arguments of {tool:?} contain what looks like a secret ({})",
            found.join(", ")
        );
        ctx.report("secret-in-arguments", ctx.tool, summary.clone());
        Verdict::Deny(Denial::policy(format!(
            "mcp-guard: refused: {summary}; secrets must not be passed to tools"
        )))
    }

    fn post_call(&mut self, ctx: &mut Ctx<'_>, msg: &mut Value) -> Verdict {
        let mut what = Vec::new();
        let shapes = self.redact_shapes;
        for_each_string(msg, &mut |s| self.redactor.redact(s, shapes, &mut what));
        if what.is_empty() {
            return Verdict::Pass;
        }
        let summary = format!(
            "redacted {} from the server's {}",
            what.join(", "),
            ctx.method
        );
        ctx.report("secret-in-result", ctx.tool, summary.clone());
        Verdict::Modified(summary)
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
            pii,
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
            ("ghp_0123456789abcdefghijABCDEFGHIJ012345", "github-token"),
            (
                "github_pat_11ABCDEFG0123456789_abcdefghijklmnop",
                "github-token",
            ),
            ("xoxb-1234567890-abcdefghij", "slack-token"),
            (
                "eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiIxMjM0NTY3ODkwIn0.dozjgNryP4J3jVmNHl0w5N_XgL0n3I9PlFUP0THsR8U",
                "jwt",
            ),
            (
                "Authorization: Bearer abcdefghijklmnopqrstuvwxyz012345",
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
    fn guard_denies_shapes_in_arguments_and_redacts_results() {
        let mut g = SecretGuard::new(&SecretConfig::default()).expect("compiles");
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
        assert!(matches!(g.pre_call(&mut ctx, &mut call), Verdict::Deny(_)));
        let mut ok = serde_json::json!({"params":{"name":"t","arguments":{"q":"hello"}}});
        assert_eq!(g.pre_call(&mut ctx, &mut ok), Verdict::Pass);
        ctx.kind = MsgKind::Response;
        let mut res = serde_json::json!({"result":{"content":[{"type":"text","text":"key AKIAIOSFODNN7EXAMPLE"}]}});
        assert!(matches!(
            g.post_call(&mut ctx, &mut res),
            Verdict::Modified(_)
        ));
        assert_eq!(
            res["result"]["content"][0]["text"],
            "key [REDACTED:aws-access-key]"
        );
        assert_eq!(ctx.findings.len(), 2);
    }
}
