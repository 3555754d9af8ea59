//! `[secrets] rules = "/etc/mcp-guard/secrets.toml"`: a team's secret rules in the gitleaks
//! format, read and checked with the policy, so `policy check` reports a rule that does not
//! compile with the rules file's own line and key.
//!
//! The key cannot be mistaken for a secret variable: a variable is always a table
//! (`NAME = { file = "..." }` or `{ credential = "..." }`) and a string there was always an
//! error, so `rules = "<path>"` (a string) is the rules file while a variable named `rules` is
//! still written `rules = { file = "/path" }`.

use std::path::Path;

use toml_edit::Item;

use mcp_guard_secrets as secret_rules;

use crate::check::{CheckedRules, Checker, Span};
use crate::values::has_dot_dot;

/// The `[secrets]` key naming a rules file (when its value is a string).
pub(crate) const RULES_KEY: &str = "rules";

impl Checker<'_> {
    /// `[secrets] rules = "<path>"`: reads the file (and what it extends) and checks every rule;
    /// each of its problems is reported at this key.
    pub(crate) fn secret_rules_file(&mut self, value: &Item, span: &Span) -> Option<CheckedRules> {
        let key = "secrets.rules";
        let path = value.as_str()?;
        if !path.starts_with('/') || has_dot_dot(path) {
            // Never echoed: it may be a secret written where a variable's table belongs.
            self.secret_rules_failed = true;
            self.error(
                span,
                key,
                "expected the absolute path (without '..') of a gitleaks-format rules file (a \
                 secret variable named `rules` is written rules = { file = \"/path\" })",
            );
            return None;
        }
        let checked = secret_rules::read_file_with_spec(Path::new(path)).map(|(source, spec)| {
            let names = spec.names().map(str::to_string).collect();
            CheckedRules { source, names }
        });
        match checked {
            Ok(c) => Some(c),
            Err(e) => {
                self.secret_rules_failed = true;
                for p in e.problems {
                    self.error(span, key, p.to_string());
                }
                None
            }
        }
    }

    /// Whether `name` is a rule id or tag of the policy's secret rules: its rules file's when it
    /// has one, else the built-in catalog's.
    pub(crate) fn is_secret_rule_name(&self, name: &str) -> bool {
        match &self.secret_rules {
            Some(c) => c.names.iter().any(|n| n == name),
            // Its problems are reported already; what it would name is unknown.
            None if self.secret_rules_failed => true,
            None => secret_rules::is_builtin_name(name),
        }
    }

    /// Where the names `ignore` may use come from, for messages.
    pub(crate) fn secret_rules_origin(&self) -> String {
        match &self.secret_rules {
            Some(c) => c
                .source
                .files
                .first()
                .map_or_else(String::new, |(p, _)| p.display().to_string()),
            None => "the built-in catalog".to_string(),
        }
    }
}

#[cfg(test)]
mod tests {
    use std::path::{Path, PathBuf};

    use crate::{Secret, parse};

    fn rules_file(tag: &str, text: &str) -> PathBuf {
        let dir = std::env::temp_dir().join(format!("policy-rules-{tag}-{}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("dir");
        let path = dir.join("secrets.toml");
        std::fs::write(&path, text).expect("write");
        path
    }

    #[test]
    fn a_rules_file_is_read_with_the_policy_and_a_variable_named_rules_stays_a_variable() {
        let path = rules_file(
            "ok",
            "[extend]\nuseDefault = true\n[[rules]]\nid = \"acme\"\nregex = '''acme_[0-9]{8}'''\nkeywords = [\"acme_\"]\ntags = [\"team\"]\n",
        );
        let p = parse(
            &format!(
                "name = \"x\"\n[secrets]\nrules = \"{}\"\nTOKEN = {{ file = \"/t\" }}\n[mcp.secret_shapes]\nignore = [\"team\", \"jwt\"]\n",
                path.display()
            ),
            None,
        )
        .unwrap_or_else(|e| panic!("{e}"));
        let source = p.mcp.secret_rules.expect("rules file");
        assert_eq!(source.files[0].0, path);
        assert_eq!(p.secrets.len(), 1, "rules is not a variable");
        assert_eq!(p.mcp.secret_shapes.ignore, ["team", "jwt"]);
        let p = parse(
            "name = \"x\"\n[secrets]\nrules = { file = \"/etc/rules-var\" }\n",
            None,
        )
        .expect("valid");
        assert_eq!(p.secrets["rules"], Secret::File("/etc/rules-var".into()));
        assert!(p.mcp.secret_rules.is_none());
        let _ = std::fs::remove_dir_all(path.parent().unwrap_or(Path::new("/nonexistent")));
    }

    #[test]
    fn problems_of_the_rules_file_are_located_in_both_files() {
        let path = rules_file(
            "bad",
            "[[rules]]\nid = \"acme\"\nkeywords = [\"acme_\"]\nregex = '''acme_([0-9]{8}'''\n",
        );
        let text = format!("name = \"x\"\n[secrets]\nrules = \"{}\"\n", path.display());
        let e = parse(&text, Some(Path::new("p.toml"))).expect_err("invalid");
        assert_eq!(e.problems.len(), 1, "{e}");
        let p = &e.problems[0];
        assert_eq!((p.line, p.key.as_str()), (3, "secrets.rules"), "{e}");
        let inner = format!("{}:4:9: rules[0].regex: not a valid regex", path.display());
        assert!(p.message.starts_with(&inner), "{e}");
        // Not a path: refused without echoing what may be a secret.
        let e = parse(
            "name = \"x\"\n[secrets]\nrules = \"ghp_notapath\"\n",
            Some(Path::new("p.toml")),
        )
        .expect_err("invalid");
        assert_eq!(e.problems[0].key, "secrets.rules");
        assert!(!e.to_string().contains("ghp_notapath"), "{e}");
        // `ignore` names a rule of the file, not the built-in catalog it does not extend.
        let own = rules_file(
            "own",
            "[[rules]]\nid = \"acme\"\nregex = '''acme_[0-9]{8}'''\nkeywords = [\"acme_\"]\n",
        );
        let e = parse(
            &format!(
                "name = \"x\"\n[secrets]\nrules = \"{}\"\n[mcp.secret_shapes]\nignore = [\"acme\", \"jwt\"]\n",
                own.display()
            ),
            Some(Path::new("p.toml")),
        )
        .expect_err("invalid");
        assert_eq!(e.problems.len(), 1, "{e}");
        assert_eq!(e.problems[0].key, "mcp.secret_shapes.ignore[1]");
        assert!(
            e.problems[0]
                .message
                .contains("unknown secret rule \"jwt\""),
            "{e}"
        );
        for f in [path, own] {
            let _ = std::fs::remove_dir_all(f.parent().unwrap_or(Path::new("/nonexistent")));
        }
    }
}
