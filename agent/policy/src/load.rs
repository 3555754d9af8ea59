//! Finding and loading a policy: by name from the policy dir, by path, or the built-in default.

use std::{
    path::{Path, PathBuf},
    sync::LazyLock,
};

use toml_edit::ImDocument;

use crate::check::{Checker, line_col};
use crate::error::{PolicyError, Problem};
use crate::model::Policy;
use crate::values::is_safe_name;

/// The built-in default policy's TOML, shipped as `policies/default.toml` and embedded here.
pub const DEFAULT_POLICY_TOML: &str = include_str!("../../../policies/default.toml");

/// The name under which errors in the embedded default policy are reported.
const BUILTIN_FILE: &str = "<built-in default policy>";

/// Loads the policy `exec --policy` names: `None` is the built-in default; a spec containing `/`
/// or ending in `.toml` is a file path; anything else is a name looked up as
/// `<policy_dir>/<name>.toml` (the name `default` falls back to the built-in default when the
/// policy dir has no `default.toml`).
pub fn load(spec: Option<&str>, policy_dir: &Path) -> Result<Policy, PolicyError> {
    let Some(spec) = spec else {
        return Ok(builtin_default());
    };
    if spec.contains('/') || spec.ends_with(".toml") {
        return load_file(Path::new(spec));
    }
    let path = policy_dir.join(format!("{spec}.toml"));
    if !is_safe_name(spec) {
        return Err(PolicyError::whole_file(
            &path,
            format!(
                "{spec:?} is not a policy name (letters, digits, '.', '_', '-'); give a path to \
                 use a file"
            ),
        ));
    }
    if !path.exists() {
        if spec == "default" {
            return Ok(builtin_default());
        }
        return Err(PolicyError::whole_file(
            &path,
            format!(
                "no policy named {spec:?} in {} (looked for this file); give a path or set \
                 --policy-dir",
                policy_dir.display()
            ),
        ));
    }
    load_file(&path)
}

/// Reads and validates one policy file.
pub fn load_file(path: &Path) -> Result<Policy, PolicyError> {
    let text = std::fs::read_to_string(path)
        .map_err(|e| PolicyError::whole_file(path, format!("cannot read policy: {e}")))?;
    parse(&text, Some(path))
}

/// Parses and validates policy text; `source` names the file in errors and in [`Policy::source`].
pub fn parse(text: &str, source: Option<&Path>) -> Result<Policy, PolicyError> {
    let file = source.map_or_else(|| BUILTIN_FILE.to_string(), |p| p.display().to_string());
    let doc = match ImDocument::parse(text) {
        Ok(doc) => doc,
        Err(e) => {
            let (line, col) = e.span().map_or((1, 1), |span| line_col(text, span.start));
            // Syntax errors stop the parser, so this is the only problem reported; its message
            // may span lines, and each problem is one line.
            let message = e
                .message()
                .lines()
                .map(str::trim)
                .filter(|l| !l.is_empty())
                .collect::<Vec<_>>()
                .join("; ");
            return Err(PolicyError {
                file,
                problems: vec![Problem {
                    line,
                    col,
                    key: String::new(),
                    message: format!("invalid TOML: {message}"),
                }],
            });
        }
    };
    let mut checker = Checker {
        text,
        problems: Vec::new(),
        secret_rules: None,
        secret_rules_failed: false,
    };
    let policy = checker.policy(doc.as_table(), source);
    match policy {
        Some(policy) if checker.problems.is_empty() => Ok(policy),
        _ => {
            let mut problems = checker.problems;
            problems.sort_by_key(|p| (p.line, p.col));
            Err(PolicyError { file, problems })
        }
    }
}

/// The built-in default policy (`policies/default.toml`, embedded): common node and python
/// servers start; no network; none of the user's secrets readable.
pub fn builtin_default() -> Policy {
    static DEFAULT: LazyLock<Policy> = LazyLock::new(|| match parse(DEFAULT_POLICY_TOML, None) {
        Ok(policy) => policy,
        // A unit test parses the embedded file, so this cannot ship.
        Err(e) => panic!("the embedded default policy is invalid:\n{e}"),
    });
    DEFAULT.clone()
}

/// Expands a leading `~` or `~/` of a filesystem entry or detect pattern to `home`.
pub fn expand_home(pattern: &str, home: &Path) -> PathBuf {
    if pattern == "~" {
        home.to_path_buf()
    } else if let Some(rest) = pattern.strip_prefix("~/") {
        home.join(rest)
    } else {
        PathBuf::from(pattern)
    }
}
