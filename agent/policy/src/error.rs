//! What a policy check reports: every problem with its line, column and key.

use std::{fmt, path::Path};

/// One problem in a policy, located by line, column and key.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Problem {
    /// 1-based line; 0 when the problem concerns the whole file (e.g. it cannot be read).
    pub line: usize,
    /// 1-based column, in characters; 0 with `line` 0.
    pub col: usize,
    /// The key path, e.g. `network.allow[2]` or `secrets.GITHUB_TOKEN`; empty when none applies.
    pub key: String,
    /// What is wrong, and how to fix it where that is not obvious.
    pub message: String,
}

/// Every problem found in one policy file; displays one `file:line:col: key: message` per line.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PolicyError {
    /// The file as the user named it (`<built-in default policy>` for the embedded one).
    pub file: String,
    /// The problems, in file order; never empty.
    pub problems: Vec<Problem>,
}

impl PolicyError {
    /// An error about the file as a whole (missing, unreadable).
    pub(crate) fn whole_file(file: &Path, message: String) -> Self {
        PolicyError {
            file: file.display().to_string(),
            problems: vec![Problem {
                line: 0,
                col: 0,
                key: String::new(),
                message,
            }],
        }
    }
}

impl fmt::Display for PolicyError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, p) in self.problems.iter().enumerate() {
            if i > 0 {
                writeln!(f)?;
            }
            write!(f, "{}:", self.file)?;
            if p.line > 0 {
                write!(f, "{}:{}:", p.line, p.col)?;
            }
            if !p.key.is_empty() {
                write!(f, " {}:", p.key)?;
            }
            write!(f, " {}", p.message)?;
        }
        Ok(())
    }
}

impl std::error::Error for PolicyError {}
