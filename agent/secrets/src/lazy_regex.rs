//! A rule's regex, compiled when it is built or on its first use.
//!
//! The built-in catalog has a few hundred rules, and compiling every regex is most of what
//! starting a session's redactors costs, while a text only ever runs the rules its keywords
//! pick. So the built-in rules compile on first use; a unit test compiles every one of them
//! (`the_builtin_catalog_compiles_eagerly`), so none can fail later. A rules file the user
//! gives is checked whole when it is read (every regex compiled, its errors reported then), and
//! a session compiles the text so checked the same way, each regex on first use.

use std::sync::OnceLock;

use aho_corasick::AhoCorasick;
use regex::Regex;

use super::go_regex;

pub(crate) struct LazyRegex {
    pattern: String,
    compiled: OnceLock<Option<Regex>>,
}

impl LazyRegex {
    /// Compiled now: an error is returned.
    pub(crate) fn now(pattern: &str) -> Result<Self, String> {
        let re = go_regex::builder(pattern)
            .build()
            .map_err(|e| e.to_string())?;
        Ok(Self {
            pattern: pattern.to_owned(),
            compiled: OnceLock::from(Some(re)),
        })
    }

    /// Compiled on the first [`LazyRegex::get`].
    pub(crate) fn deferred(pattern: &str) -> Self {
        Self {
            pattern: pattern.to_owned(),
            compiled: OnceLock::new(),
        }
    }

    /// The regex; `None` only for a deferred pattern that does not compile, which the
    /// built-in catalog's test rules out.
    pub(crate) fn get(&self) -> Option<&Regex> {
        self.compiled
            .get_or_init(|| go_regex::builder(&self.pattern).build().ok())
            .as_ref()
    }
}

/// An allowlist's stopwords, their automaton built when it is built or on its first use (only a
/// finding of its rule asks it).
pub(crate) struct LazyWords {
    words: Vec<String>,
    built: OnceLock<Option<AhoCorasick>>,
}

impl LazyWords {
    /// Built now: an error is returned.
    pub(crate) fn now(words: &[String]) -> Result<Self, String> {
        let ac = AhoCorasick::new(words).map_err(|e| e.to_string())?;
        Ok(Self {
            words: words.to_vec(),
            built: OnceLock::from(Some(ac)),
        })
    }

    /// Built on the first [`LazyWords::is_match`].
    pub(crate) fn deferred(words: &[String]) -> Self {
        Self {
            words: words.to_vec(),
            built: OnceLock::new(),
        }
    }

    /// Whether a stopword occurs in `text`. An automaton that cannot be built (a size limit:
    /// the built-in catalog's test builds them all) allows nothing, so its findings stay
    /// redacted.
    pub(crate) fn is_match(&self, text: &str) -> bool {
        self.built
            .get_or_init(|| AhoCorasick::new(&self.words).ok())
            .as_ref()
            .is_some_and(|ac| ac.is_match(text))
    }
}
