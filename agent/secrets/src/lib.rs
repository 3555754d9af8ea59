//! Secret detection rules: a built-in catalog of provider token formats and generic
//! credential assignments, and teams' own rules in the gitleaks config format, compiled into
//! one engine with a keyword prefilter.
//!
//! A leaf crate: it knows regexes and TOML, nothing of policies, proxies or stores. The policy
//! reads a rules file through [`read_file`] (so `policy check` reports its problems), and the
//! redactors of a session get the compiled set from [`for_source`].

mod engine;
mod gitleaks;
mod go_regex;
mod lazy_regex;
mod spec;

#[cfg(test)]
mod fp_tests;
#[cfg(test)]
mod recall_tests;
#[cfg(test)]
mod tests;

use std::sync::{Mutex, OnceLock};

pub use engine::{Finding, SecretRules, shannon_entropy};
pub use gitleaks::{
    RulesError, RulesProblem, RulesSource, read as read_file, read_with_spec as read_file_with_spec,
};
pub use spec::{AllowlistSpec, Condition, RuleSpec, RulesSpec, Target};

/// The built-in catalog, in the gitleaks format (so a team can read, copy and extend it).
pub const CATALOG: &str = include_str!("catalog.toml");

/// How the built-in catalog is named in messages.
pub const CATALOG_NAME: &str = "<built-in secret rules>";

/// The built-in catalog, parsed.
///
/// # Panics
///
/// If the embedded catalog does not parse, which its unit test rules out before a release.
pub fn builtin_spec() -> &'static RulesSpec {
    static SPEC: OnceLock<RulesSpec> = OnceLock::new();
    // Trusted: `the_builtin_catalog_compiles_eagerly` checks it with every check.
    SPEC.get_or_init(
        || match gitleaks::parse_trusted_text(CATALOG_NAME, CATALOG) {
            Ok(spec) => spec,
            // A unit test parses the embedded catalog, so this cannot ship.
            Err(e) => panic!("the built-in secret rules are invalid:\n{e}"),
        },
    )
}

/// The built-in catalog, compiled once per process.
///
/// # Panics
///
/// If the embedded catalog does not compile, which its unit test rules out before a release.
pub fn builtin() -> SecretRules {
    static RULES: OnceLock<SecretRules> = OnceLock::new();
    RULES
        // Each regex on first use: the catalog's test compiles every one.
        .get_or_init(|| match SecretRules::compile_deferred(builtin_spec()) {
            Ok(rules) => rules,
            Err(e) => panic!("the built-in secret rules do not compile: {e}"),
        })
        .clone()
}

/// Whether `name` is a rule id or tag of the built-in catalog.
pub fn is_builtin_name(name: &str) -> bool {
    builtin_spec().names().any(|n| n == name)
}

/// The rules of `source` (a rules file and what it extends), or the built-in catalog for
/// `None`; compiled once per distinct source in this process, and shared (every redactor of a
/// session gets the same compiled rules). A source [`read_file`] checked (each of its regexes
/// compiled then) compiles each regex on its first use, as the built-in catalog does: a text
/// runs only the rules its keywords pick.
pub fn for_source(source: Option<&RulesSource>) -> Result<SecretRules, RulesError> {
    type Cache = Mutex<Vec<(RulesSource, SecretRules)>>;
    static CACHE: OnceLock<Cache> = OnceLock::new();
    let Some(source) = source else {
        return Ok(builtin());
    };
    let cache = CACHE.get_or_init(Default::default);
    if let Some((_, rules)) = cache
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
        .iter()
        .find(|(s, _)| s == source)
    {
        return Ok(rules.clone());
    }
    let spec = gitleaks::parse_checked(source, gitleaks::builtin)?;
    let compiled = if source.checked {
        SecretRules::compile_deferred(&spec)
    } else {
        SecretRules::compile(&spec)
    };
    let rules = compiled.map_err(|message| RulesError {
        problems: vec![RulesProblem {
            file: source
                .files
                .first()
                .map(|(p, _)| p.display().to_string())
                .unwrap_or_default(),
            line: 0,
            col: 0,
            key: String::new(),
            message,
        }],
    })?;
    let mut cache = cache
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner);
    // A long-lived agent sees few distinct files; keep the latest few.
    if cache.len() >= 8 {
        cache.remove(0);
    }
    cache.push((source.clone(), rules.clone()));
    Ok(rules)
}

/// The rules `source` states, `[extend]` applied (`useDefault` extends the built-in catalog).
pub fn spec_of(source: &RulesSource) -> Result<RulesSpec, RulesError> {
    gitleaks::parse(source, gitleaks::builtin)
}
