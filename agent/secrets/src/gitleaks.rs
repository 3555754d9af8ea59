//! Reading gitleaks config files (TOML) into [`RulesSpec`]s, every problem located by file,
//! line, column and key, the way `policy check` reports policy problems.
//!
//! Keys are matched without regard to case, as gitleaks (through viper) does. What gitleaks
//! knows but nothing here can use is accepted and left aside: `path` (rules and allowlists about
//! file paths: there are no files here), `commits`, `tags` (kept as names), `title`,
//! `minVersion`, composite rules' `[[rules.required]]` (the rule then fires on its own, which
//! redacts more, never less). Anything else unknown is an error, so a typo does not silently
//! turn a rule off. `[extend] url` is refused (nothing is fetched); `[extend] path` names a file
//! by absolute path, or relative to the file that extends it.

use std::{
    fmt,
    path::{Path, PathBuf},
};

use toml_edit::ImDocument;

use super::spec::RulesSpec;

mod check;
use check::{Checker, get};

/// How deep `[extend] path` chains may go (gitleaks' limit).
const MAX_EXTEND_DEPTH: usize = 2;

/// The text of a rules file and of the files it extends, as read (plain data: a policy carries
/// it, and the rules are compiled from it at launch).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RulesSource {
    /// (path, text); the first is the file the policy names.
    pub files: Vec<(PathBuf, String)>,
    /// Every check passed on these very texts when they were read ([`read`]: each regex
    /// compiled), so a session may compile each regex on its first use. Private: only
    /// [`read`] vouches for a source.
    pub(crate) checked: bool,
}

/// One problem in a rules file.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RulesProblem {
    /// The file.
    pub file: String,
    /// 1-based line; 0 for the whole file.
    pub line: usize,
    /// 1-based column, in characters; 0 with `line` 0.
    pub col: usize,
    /// The key path, e.g. `rules[3].regex`.
    pub key: String,
    /// What is wrong.
    pub message: String,
}

impl fmt::Display for RulesProblem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:", self.file)?;
        if self.line > 0 {
            write!(f, "{}:{}:", self.line, self.col)?;
        }
        if !self.key.is_empty() {
            write!(f, " {}:", self.key)?;
        }
        write!(f, " {}", self.message)
    }
}

/// Every problem found; never empty.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RulesError {
    /// The problems, per file in file order.
    pub problems: Vec<RulesProblem>,
}

impl fmt::Display for RulesError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, p) in self.problems.iter().enumerate() {
            if i > 0 {
                writeln!(f)?;
            }
            write!(f, "{p}")?;
        }
        Ok(())
    }
}

impl std::error::Error for RulesError {}

impl RulesError {
    fn whole_file(file: &Path, message: String) -> Self {
        RulesError {
            problems: vec![RulesProblem {
                file: file.display().to_string(),
                line: 0,
                col: 0,
                key: String::new(),
                message,
            }],
        }
    }
}

/// Reads the rules file at `path` and every file it extends, and checks them all.
pub fn read(path: &Path) -> Result<RulesSource, RulesError> {
    read_with_spec(path).map(|(source, _)| source)
}

/// [`read`], with the rules it states ([`crate::spec_of`] of it, from the same parse).
pub fn read_with_spec(path: &Path) -> Result<(RulesSource, RulesSpec), RulesError> {
    let mut files = Vec::new();
    let mut next = Some(path.to_path_buf());
    while let Some(path) = next.take() {
        if files.len() > MAX_EXTEND_DEPTH {
            return Err(RulesError::whole_file(
                &path,
                format!("[extend] path chains at most {MAX_EXTEND_DEPTH} files deep"),
            ));
        }
        let text = std::fs::read_to_string(&path)
            .map_err(|e| RulesError::whole_file(&path, format!("cannot read secret rules: {e}")))?;
        next = extended_path(&text).map(|p| relative_to(&path, &p));
        files.push((path, text));
    }
    let mut source = RulesSource {
        files,
        checked: false,
    };
    let spec = parse(&source, builtin)?;
    source.checked = true;
    Ok((source, spec))
}

/// `[extend] path` of `text`, if it has one (the full check comes later).
fn extended_path(text: &str) -> Option<String> {
    let doc = ImDocument::parse(text).ok()?;
    let extend = get(doc.as_table(), "extend")?.1.as_table_like()?;
    get(extend, "path")?.1.as_str().map(str::to_string)
}

fn relative_to(file: &Path, path: &str) -> PathBuf {
    let p = Path::new(path);
    if p.is_absolute() {
        p.to_path_buf()
    } else {
        file.parent().unwrap_or(Path::new("/")).join(p)
    }
}

/// The rules of `source` with its `[extend]` applied; `builtin` gives the catalog that
/// `useDefault = true` extends.
pub(crate) fn parse(
    source: &RulesSource,
    builtin: impl Fn() -> RulesSpec,
) -> Result<RulesSpec, RulesError> {
    parse_with(source, builtin, true)
}

/// [`parse`] without compiling each regex to check it, for a source [`read`] checked.
pub(crate) fn parse_checked(
    source: &RulesSource,
    builtin: impl Fn() -> RulesSpec,
) -> Result<RulesSpec, RulesError> {
    parse_with(source, builtin, !source.checked)
}

fn parse_with(
    source: &RulesSource,
    builtin: impl Fn() -> RulesSpec,
    compile: bool,
) -> Result<RulesSpec, RulesError> {
    let mut problems = Vec::new();
    let mut parsed = Vec::new();
    for (path, text) in &source.files {
        let name = path.display().to_string();
        let mut checker = if compile {
            Checker::new(name, text)
        } else {
            Checker::trusting(name, text)
        };
        let file = checker.document();
        problems.append(&mut checker.problems);
        parsed.push(file);
    }
    // Innermost first: each file extends the one it names.
    let mut base: Option<RulesSpec> = None;
    for file in parsed.into_iter().rev() {
        let Some(mut file) = file else {
            base = None;
            continue;
        };
        if file.use_default {
            file.spec.extend(builtin(), &file.disabled);
        } else if let Some(inner) = base.take() {
            file.spec.extend(inner, &file.disabled);
        }
        // gitleaks checks rules once extended: a rule may take its regex from the base.
        for (id, at) in file.places {
            if let Some(r) = file.spec.rules.iter().find(|r| r.id == id)
                && r.regex.is_none()
                && !r.has_path
            {
                problems.push(at.problem(format!(
                    "rule {id:?} has neither a regex nor a path: it can never match"
                )));
            }
        }
        for (target, allowlist, span_key) in file.targeted {
            match file.spec.rules.iter_mut().find(|r| r.id == target) {
                Some(rule) => rule.allowlists.push(allowlist),
                None => problems.push(span_key.problem(format!(
                    "target rule {target:?} does not exist in this file or what it extends"
                ))),
            }
        }
        base = Some(file.spec);
    }
    match base {
        Some(spec) if problems.is_empty() => Ok(spec),
        _ => Err(RulesError { problems }),
    }
}

/// The built-in catalog (see `catalog.toml`), parsed.
pub(crate) fn builtin() -> RulesSpec {
    super::builtin_spec().clone()
}

/// Parses text with every check (the built-in catalog's test); `Err` holds its problems.
#[cfg(test)]
pub(crate) fn parse_text(name: &str, text: &str) -> Result<RulesSpec, RulesError> {
    let source = RulesSource {
        files: vec![(PathBuf::from(name), text.to_string())],
        checked: false,
    };
    parse(&source, RulesSpec::default)
}

/// [`parse_text`] without compiling each regex to check it: for the built-in catalog, whose
/// test parses it with every check ([`parse_text`]) and compares.
pub(crate) fn parse_trusted_text(name: &str, text: &str) -> Result<RulesSpec, RulesError> {
    let source = RulesSource {
        files: vec![(PathBuf::from(name), text.to_string())],
        checked: false,
    };
    parse_with(&source, RulesSpec::default, false)
}
