//! The compiled rules: one keyword pass over a text picks the rules that can match it, and only
//! those run their regex (gitleaks' prefilter). Each match then goes through the rule's secret
//! group, its entropy threshold and the global and rule allowlists, as in gitleaks.

use std::{ops::Range, sync::Arc};

use aho_corasick::{AhoCorasick, AhoCorasickBuilder, MatchKind};

use super::{
    lazy_regex::{LazyRegex, LazyWords},
    spec::{AllowlistSpec, Condition, RuleSpec, RulesSpec, Target},
};

/// A secret found in a text.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Finding {
    /// The rule (see [`SecretRules::rule_id`]).
    pub rule: usize,
    /// Where the secret is, in bytes.
    pub range: Range<usize>,
}

struct Allowlist {
    condition: Condition,
    target: Target,
    /// The `regexes`, as one alternation.
    regex: Option<LazyRegex>,
    stopwords: Option<LazyWords>,
    file_checks: bool,
}

impl Allowlist {
    fn compile(spec: &AllowlistSpec, deferred: bool) -> Result<Self, String> {
        let regex = if spec.regexes.is_empty() {
            None
        } else {
            let joined = spec
                .regexes
                .iter()
                .map(|r| format!("(?:{r})"))
                .collect::<Vec<_>>()
                .join("|");
            Some(regex(&joined, deferred)?)
        };
        let stopwords = if spec.stopwords.is_empty() {
            None
        } else if deferred {
            Some(LazyWords::deferred(&spec.stopwords))
        } else {
            Some(LazyWords::now(&spec.stopwords)?)
        };
        Ok(Self {
            condition: spec.condition,
            target: spec.target,
            regex,
            stopwords,
            file_checks: spec.file_checks,
        })
    }

    /// Whether the finding (`secret`, the rule's whole `matched`, its `line`) is allowed.
    fn allows(&self, secret: &str, matched: &str, line: &str) -> bool {
        let target = match self.target {
            Target::Secret => secret,
            Target::Match => matched,
            Target::Line => line,
        };
        let by_regex = self
            .regex
            .as_ref()
            .map(|r| r.get().is_some_and(|r| r.is_match(target)));
        let by_stopword = self
            .stopwords
            .as_ref()
            .map(|s| s.is_match(&secret.to_lowercase()));
        match self.condition {
            Condition::Or => by_regex == Some(true) || by_stopword == Some(true),
            // Paths and commits never match here: with AND they keep the allowlist shut.
            Condition::And => {
                !self.file_checks
                    && by_regex != Some(false)
                    && by_stopword != Some(false)
                    && (by_regex.is_some() || by_stopword.is_some())
            }
        }
    }
}

struct Rule {
    id: String,
    tags: Vec<String>,
    keywords: Vec<String>,
    regex: Option<LazyRegex>,
    secret_group: usize,
    entropy: f64,
    allowlists: Vec<Allowlist>,
    skip_report: bool,
}

/// Which rules run on a text: the keyword automaton of the enabled rules.
struct Prefilter {
    keywords: Option<AhoCorasick>,
    /// Per keyword pattern, the rules it enables.
    rules_of: Vec<Vec<usize>>,
    /// Enabled rules without keywords: they run on every text.
    always: Vec<usize>,
}

impl Prefilter {
    fn new(rules: &[Rule], enabled: impl Fn(usize) -> bool) -> Result<Self, String> {
        let mut words: Vec<String> = Vec::new();
        let mut rules_of: Vec<Vec<usize>> = Vec::new();
        let mut always = Vec::new();
        for (i, rule) in rules.iter().enumerate() {
            if !enabled(i) || rule.regex.is_none() || rule.skip_report {
                continue;
            }
            if rule.keywords.is_empty() {
                always.push(i);
            }
            for k in &rule.keywords {
                if let Some(p) = words.iter().position(|w| w == k) {
                    rules_of[p].push(i);
                } else {
                    words.push(k.clone());
                    rules_of.push(vec![i]);
                }
            }
        }
        let keywords = if words.is_empty() {
            None
        } else {
            Some(
                AhoCorasickBuilder::new()
                    .ascii_case_insensitive(true)
                    .match_kind(MatchKind::Standard)
                    .build(&words)
                    .map_err(|e| e.to_string())?,
            )
        };
        Ok(Self {
            keywords,
            rules_of,
            always,
        })
    }
}

/// A compiled rule set and which of its rules are on. Cheap to clone (shared).
#[derive(Clone)]
pub struct SecretRules {
    rules: Arc<[Rule]>,
    global: Arc<[Allowlist]>,
    prefilter: Arc<Prefilter>,
}

impl std::fmt::Debug for SecretRules {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SecretRules")
            .field("rules", &self.rules.len())
            .finish_non_exhaustive()
    }
}

impl SecretRules {
    /// Compiles `spec` (checked already: an error here is a size limit or the like).
    pub fn compile(spec: &RulesSpec) -> Result<Self, String> {
        Self::compile_with(spec, false)
    }

    /// [`SecretRules::compile`], each regex compiled on its first use: for a catalog a test
    /// compiles whole (the built-in one), where no error can be left to find.
    pub fn compile_deferred(spec: &RulesSpec) -> Result<Self, String> {
        Self::compile_with(spec, true)
    }

    fn compile_with(spec: &RulesSpec, deferred: bool) -> Result<Self, String> {
        let mut rules = Vec::with_capacity(spec.rules.len());
        for r in &spec.rules {
            rules.push(compile_rule(r, deferred).map_err(|e| format!("rule {:?}: {e}", r.id))?);
        }
        let global = spec
            .allowlists
            .iter()
            .map(|a| Allowlist::compile(a, deferred))
            .collect::<Result<Vec<_>, _>>()?;
        let prefilter = Prefilter::new(&rules, |_| true)?;
        Ok(Self {
            rules: rules.into(),
            global: global.into(),
            prefilter: Arc::new(prefilter),
        })
    }

    /// No rules at all.
    pub fn none() -> Self {
        Self {
            rules: Arc::new([]),
            global: Arc::new([]),
            prefilter: Arc::new(Prefilter {
                keywords: None,
                rules_of: Vec::new(),
                always: Vec::new(),
            }),
        }
    }

    /// The same rules but those whose id or one of whose tags is in `names`.
    #[must_use]
    pub fn without(&self, names: &[String]) -> Self {
        if names.is_empty() {
            return self.clone();
        }
        let on = |i: usize| {
            let r = &self.rules[i];
            !names.iter().any(|n| *n == r.id || r.tags.contains(n))
        };
        match Prefilter::new(&self.rules, on) {
            Ok(p) => Self {
                prefilter: Arc::new(p),
                ..self.clone()
            },
            // The automaton of a subset of keywords that built once builds again.
            Err(_) => self.clone(),
        }
    }

    /// True when no rule is on.
    pub fn is_empty(&self) -> bool {
        self.prefilter.keywords.is_none() && self.prefilter.always.is_empty()
    }

    /// How many rules the set has (on or not).
    pub fn len(&self) -> usize {
        self.rules.len()
    }

    /// The id of rule `i`.
    pub fn rule_id(&self, i: usize) -> &str {
        self.rules.get(i).map_or("", |r| r.id.as_str())
    }

    /// False when no enabled rule can match `text` (one pass over it, no allocation): none of
    /// their keywords occurs in it, in any case, and every rule has keywords.
    pub fn may_match(&self, text: &str) -> bool {
        !self.prefilter.always.is_empty()
            || self
                .prefilter
                .keywords
                .as_ref()
                .is_some_and(|k| k.is_match(text))
    }

    /// The longest keyword of the enabled rules, in bytes (0 when there is none): a text holds
    /// a keyword only if some stretch of it this long does.
    pub fn longest_keyword(&self) -> usize {
        self.prefilter
            .keywords
            .as_ref()
            .map_or(0, AhoCorasick::max_pattern_len)
    }

    /// Appends the secrets in `text`, rule by rule.
    pub fn find(&self, text: &str, out: &mut Vec<Finding>) {
        let p = &self.prefilter;
        let Some(keywords) = &p.keywords else {
            for &i in &p.always {
                self.run(i, text, out);
            }
            return;
        };
        if p.always.is_empty() && !keywords.is_match(text) {
            return;
        }
        let mut on = vec![false; self.rules.len()];
        for &i in &p.always {
            on[i] = true;
        }
        for m in keywords.find_overlapping_iter(text) {
            for &i in &p.rules_of[m.pattern().as_usize()] {
                on[i] = true;
            }
        }
        for (i, _) in on.iter().enumerate().filter(|(_, on)| **on) {
            self.run(i, text, out);
        }
    }

    fn run(&self, i: usize, text: &str, out: &mut Vec<Finding>) {
        let rule = &self.rules[i];
        let Some(re) = rule.regex.as_ref().and_then(LazyRegex::get) else {
            return;
        };
        for caps in re.captures_iter(text) {
            let Some(whole) = caps.get(0) else {
                continue;
            };
            let secret = if rule.secret_group > 0 {
                caps.get(rule.secret_group).map(|m| m.range())
            } else if caps.len() > 1 {
                // gitleaks: the first group that matched something, else the whole match.
                (1..caps.len())
                    .filter_map(|g| caps.get(g))
                    .find(|m| !m.is_empty())
                    .map(|m| m.range())
                    .or(Some(whole.range()))
            } else {
                Some(trim_newlines(text, whole.range()))
            };
            let Some(range) = secret.filter(|r| !r.is_empty()) else {
                continue;
            };
            let s = &text[range.clone()];
            if rule.entropy > 0.0 && shannon_entropy(s) <= rule.entropy {
                continue;
            }
            let line = line_of(text, whole.start());
            let allowed = self
                .global
                .iter()
                .chain(&rule.allowlists)
                .any(|a| a.allows(s, whole.as_str(), line));
            if !allowed {
                out.push(Finding { rule: i, range });
            }
        }
    }

    /// The ids of the rules with a secret in `text`, each once, in rule order.
    pub fn ids_in(&self, text: &str, out: &mut Vec<String>) {
        let mut found = Vec::new();
        self.find(text, &mut found);
        found.sort_by_key(|f| f.rule);
        for f in found {
            let id = self.rule_id(f.rule);
            if !out.iter().any(|o| o == id) {
                out.push(id.to_string());
            }
        }
    }

    /// Replaces each secret in `s` with `[REDACTED:<rule id>]` (overlapping findings become one,
    /// named by the first rule of the set among them); notes the ids in `what`. True if it
    /// changed anything.
    pub fn redact(&self, s: &mut String, what: &mut Vec<String>) -> bool {
        let mut found = Vec::new();
        self.find(s, &mut found);
        self.redact_found(s, found, what)
    }

    /// [`SecretRules::redact`] with findings already made (ranges of `s`, on char boundaries).
    pub fn redact_found(
        &self,
        s: &mut String,
        mut found: Vec<Finding>,
        what: &mut Vec<String>,
    ) -> bool {
        if found.is_empty() {
            return false;
        }
        found.sort_by_key(|f| (f.range.start, f.rule));
        let mut spans: Vec<(Range<usize>, usize)> = Vec::new();
        for f in found {
            match spans.last_mut() {
                Some((r, rule)) if f.range.start < r.end => {
                    r.end = r.end.max(f.range.end);
                    *rule = (*rule).min(f.rule);
                }
                _ => spans.push((f.range, f.rule)),
            }
        }
        let mut out = String::with_capacity(s.len());
        let mut last = 0;
        for (r, rule) in spans {
            let id = self.rule_id(rule);
            out.push_str(&s[last..r.start]);
            out.push_str("[REDACTED:");
            out.push_str(id);
            out.push(']');
            last = r.end;
            if !what.iter().any(|w| w == id) {
                what.push(id.to_string());
            }
        }
        out.push_str(&s[last..]);
        *s = out;
        true
    }
}

/// `pattern` compiled now, or (`deferred`) on first use.
fn regex(pattern: &str, deferred: bool) -> Result<LazyRegex, String> {
    if deferred {
        Ok(LazyRegex::deferred(pattern))
    } else {
        LazyRegex::now(pattern)
    }
}

fn compile_rule(r: &RuleSpec, deferred: bool) -> Result<Rule, String> {
    let regex = match &r.regex {
        Some(re) => Some(regex(re, deferred)?),
        None => None,
    };
    let allowlists = r
        .allowlists
        .iter()
        .map(|a| Allowlist::compile(a, deferred))
        .collect::<Result<Vec<_>, _>>()?;
    Ok(Rule {
        id: r.id.clone(),
        tags: r.tags.clone(),
        keywords: r.keywords.clone(),
        regex,
        secret_group: r.secret_group,
        entropy: r.entropy,
        allowlists,
        skip_report: r.skip_report,
    })
}

/// The range without leading and trailing newlines (gitleaks trims them from a whole match).
fn trim_newlines(text: &str, mut r: Range<usize>) -> Range<usize> {
    let b = text.as_bytes();
    while r.start < r.end && b[r.start] == b'\n' {
        r.start += 1;
    }
    while r.end > r.start && b[r.end - 1] == b'\n' {
        r.end -= 1;
    }
    r
}

/// The line of `text` holding byte `at`, without its newline.
fn line_of(text: &str, at: usize) -> &str {
    let start = text[..at].rfind('\n').map_or(0, |i| i + 1);
    let end = text[at..].find('\n').map_or(text.len(), |i| at + i);
    &text[start..end]
}

/// Shannon entropy of `s`'s bytes, in bits per byte.
pub fn shannon_entropy(s: &str) -> f64 {
    if s.is_empty() {
        return 0.0;
    }
    let mut counts = [0u32; 256];
    for &b in s.as_bytes() {
        counts[usize::from(b)] += 1;
    }
    #[expect(clippy::cast_precision_loss, reason = "a token's length, exact in f64")]
    let n = s.len() as f64;
    counts
        .iter()
        .filter(|&&c| c > 0)
        .map(|&c| {
            let p = f64::from(c) / n;
            -p * p.log2()
        })
        .sum()
}
