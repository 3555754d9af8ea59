//! A rule's regex, compiled when it is built or on its first use.
//!
//! The built-in catalog has a few hundred rules, and compiling every regex is most of what
//! starting a session's redactors costs, while a text only ever runs the rules its keywords
//! pick. So the built-in rules compile on first use; a unit test compiles every one of them
//! (`the_builtin_catalog_compiles_eagerly`), so none can fail later. A rules file the user
//! gives is compiled whole when it is loaded, so its errors are reported then.

use std::sync::OnceLock;

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
