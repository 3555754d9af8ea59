//! Secret rules as plain data, as a gitleaks config states them (validated, not compiled), and
//! gitleaks' `[extend]` merge.

/// How an allowlist's checks combine (`condition`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Condition {
    /// Any check allows the finding (gitleaks' default).
    #[default]
    Or,
    /// Every check given must allow it.
    And,
}

/// What an allowlist's `regexes` are matched against (`regexTarget`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Target {
    /// The secret (the rule's secret group, or its whole match).
    #[default]
    Secret,
    /// The rule's whole match.
    Match,
    /// The line the match starts on.
    Line,
}

/// An allowlist: findings it matches are not secrets.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct AllowlistSpec {
    /// `condition`.
    pub condition: Condition,
    /// `regexTarget`.
    pub target: Target,
    /// `regexes`, translated to the `regex` crate's syntax.
    pub regexes: Vec<String>,
    /// `stopwords`, lowercased: a secret containing one is allowed.
    pub stopwords: Vec<String>,
    /// It has `paths` or `commits`, which nothing here can match (there is no file or commit):
    /// with `condition = "AND"` it then never applies.
    pub file_checks: bool,
}

/// One rule.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct RuleSpec {
    /// `id`.
    pub id: String,
    /// `description`.
    pub description: String,
    /// `regex`, translated to the `regex` crate's syntax; `None` for a rule that only names file
    /// paths (`path`), which never matches text.
    pub regex: Option<String>,
    /// `secretGroup`: the capture group holding the secret; 0 for the first non-empty group, or
    /// the whole match when the regex has none.
    pub secret_group: usize,
    /// `entropy`: a secret of at most this Shannon entropy (bits per byte) is not reported; 0
    /// for no threshold.
    pub entropy: f64,
    /// `keywords`, lowercased: the rule runs only on text containing one (any case); none: it
    /// always runs.
    pub keywords: Vec<String>,
    /// `tags`.
    pub tags: Vec<String>,
    /// `[[rules.allowlists]]` (and the older `[rules.allowlist]`), and global allowlists aimed at
    /// this rule with `targetRules`.
    pub allowlists: Vec<AllowlistSpec>,
    /// `skipReport`: only a helper of composite rules; never reported alone.
    pub skip_report: bool,
    /// It has a `path` (which never matches here: there are no files).
    pub has_path: bool,
}

/// A whole rules file, its `[extend]` applied.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct RulesSpec {
    /// The rules, in the order findings are named by (the first rule of overlapping findings).
    pub rules: Vec<RuleSpec>,
    /// Global allowlists (`[[allowlists]]` without `targetRules`, and `[allowlist]`).
    pub allowlists: Vec<AllowlistSpec>,
}

impl RulesSpec {
    /// gitleaks' `[extend]`: `base`'s rules (but those in `disabled`) are added after this
    /// config's own; a rule of both keeps this config's regex, secret group, entropy and
    /// description where set and gains `base`'s keywords, tags and allowlists. Global
    /// allowlists are appended.
    pub fn extend(&mut self, base: RulesSpec, disabled: &[String]) {
        for rule in base.rules {
            if disabled.contains(&rule.id) {
                continue;
            }
            match self.rules.iter_mut().find(|r| r.id == rule.id) {
                None => self.rules.push(rule),
                Some(mine) => {
                    let mut merged = rule;
                    if !mine.description.is_empty() {
                        merged.description = std::mem::take(&mut mine.description);
                    }
                    if mine.entropy != 0.0 {
                        merged.entropy = mine.entropy;
                    }
                    if mine.secret_group != 0 {
                        merged.secret_group = mine.secret_group;
                    }
                    if mine.regex.is_some() {
                        merged.regex = mine.regex.take();
                    }
                    merged.tags.append(&mut mine.tags);
                    merged.keywords.append(&mut mine.keywords);
                    merged.keywords.dedup();
                    merged.allowlists.append(&mut mine.allowlists);
                    merged.skip_report |= mine.skip_report;
                    merged.has_path |= mine.has_path;
                    *mine = merged;
                }
            }
        }
        self.allowlists.extend(base.allowlists);
    }

    /// Every rule id and tag, for naming rules to leave out.
    pub fn names(&self) -> impl Iterator<Item = &str> {
        self.rules
            .iter()
            .flat_map(|r| std::iter::once(r.id.as_str()).chain(r.tags.iter().map(String::as_str)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rule(id: &str, regex: Option<&str>, keywords: &[&str]) -> RuleSpec {
        RuleSpec {
            id: id.into(),
            regex: regex.map(Into::into),
            keywords: keywords
                .iter()
                .map(std::string::ToString::to_string)
                .collect(),
            ..RuleSpec::default()
        }
    }

    #[test]
    fn extend_merges_like_gitleaks() {
        let mut mine = RulesSpec {
            rules: vec![
                RuleSpec {
                    entropy: 4.0,
                    ..rule("shared", None, &["mine"])
                },
                rule("own", Some("own"), &[]),
            ],
            allowlists: vec![],
        };
        let base = RulesSpec {
            rules: vec![
                RuleSpec {
                    entropy: 2.0,
                    secret_group: 1,
                    ..rule("shared", Some("(base)"), &["base"])
                },
                rule("dropped", Some("x"), &[]),
                rule("kept", Some("y"), &[]),
            ],
            allowlists: vec![AllowlistSpec::default()],
        };
        mine.extend(base, &["dropped".to_string()]);
        let ids: Vec<&str> = mine.rules.iter().map(|r| r.id.as_str()).collect();
        assert_eq!(ids, ["shared", "own", "kept"]);
        let shared = &mine.rules[0];
        assert_eq!(shared.regex.as_deref(), Some("(base)"));
        assert_eq!((shared.entropy, shared.secret_group), (4.0, 1));
        assert_eq!(shared.keywords, ["base", "mine"]);
        assert_eq!(mine.allowlists.len(), 1);
    }
}
