//! Sensitive-path globs, compiled once into one `globset` matcher.
//!
//! `**` matches any run of directories (`**/x` also matches `x` at the top), `*` any run within
//! one component, `?` one character other than `/`, `[ab]` one of a set, `{a,b}` either. The
//! pattern must match the whole path.

use globset::{Glob, GlobBuilder, GlobMatcher, GlobSet};

/// A set of path globs, matched in time linear in the path.
#[derive(Clone, Debug)]
pub struct PathGlobs(Matcher);

#[derive(Clone, Debug)]
enum Matcher {
    /// All globs in one automaton.
    Set(GlobSet),
    /// One by one, if the set would be too big to build (never drops a glob).
    Each(Vec<GlobMatcher>),
}

impl PathGlobs {
    /// Compiles `patterns`. A pattern that does not compile (the policy checker refuses those)
    /// is matched as the literal path it spells, so it is never silently dropped.
    pub fn new<S: AsRef<str>>(patterns: &[S]) -> Self {
        let globs: Vec<Glob> = patterns
            .iter()
            .filter_map(|p| {
                let p = p.as_ref();
                glob(p)
                    .or_else(|e| {
                        tracing::warn!(
                            pattern = p,
                            "glob does not compile ({e}); matched literally"
                        );
                        glob(&globset::escape(p))
                    })
                    .ok()
            })
            .collect();
        match GlobSet::new(globs.iter().cloned()) {
            Ok(set) => Self(Matcher::Set(set)),
            Err(_) => Self(Matcher::Each(
                globs.iter().map(Glob::compile_matcher).collect(),
            )),
        }
    }

    /// Whether `path` matches any of the globs.
    pub fn is_match(&self, path: &str) -> bool {
        match &self.0 {
            Matcher::Set(s) => s.is_match(path),
            Matcher::Each(ms) => ms.iter().any(|m| m.is_match(path)),
        }
    }
}

fn glob(pattern: &str) -> Result<Glob, globset::Error> {
    GlobBuilder::new(pattern)
        .literal_separator(true)
        .backslash_escape(true)
        .build()
}
