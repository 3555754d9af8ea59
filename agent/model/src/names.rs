//! Server names and the key under which a server's state is kept.
//!
//! A server name keys the cgroup, the store's records, the metrics, and state files under the
//! state dir (pins, learned profiles, quarantine markers). It comes from whoever launches a
//! session (`exec --name`, the agent's exec request, a policy's `name`), so it is checked where
//! it enters: an identifier of `[A-Za-z0-9._-]`, 1 to [`MAX_NAME`] characters, not starting with
//! a dot. That makes it one safe path component (never `..`, never hidden, never a separator).
//!
//! A name alone does not say whose state it is: anyone who may launch may choose any free name.
//! State is therefore kept per [`StateKey`], the policy a session runs under and its server
//! name, so that one policy's sessions can never read or write another policy's state.

use serde::{Deserialize, Serialize};

/// The longest server name.
pub const MAX_NAME: usize = 64;

/// The name of the built-in default policy: shared by everyone who launches without a policy of
/// their own, so it is no identity of its own (see [`StateKey::is_shared`]).
pub const SHARED_POLICY: &str = "default";

/// Checks a server (or policy) name; the message says what is wrong and what is allowed.
pub fn check(name: &str) -> Result<(), String> {
    const RULE: &str = "1 to 64 letters, digits, '.', '_' or '-', not starting with '.' or '-'";
    if name.is_empty() {
        return Err(format!("the name is empty: {RULE}"));
    }
    if name.len() > MAX_NAME {
        return Err(format!(
            "{name:?} is {} characters long: {RULE}",
            name.chars().count()
        ));
    }
    if let Some(c) = name.chars().next().filter(|c| matches!(c, '.' | '-')) {
        return Err(format!("{name:?} starts with {c:?}: {RULE}"));
    }
    if let Some(c) = name
        .chars()
        .find(|c| !(c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-')))
    {
        return Err(format!("{name:?} contains {c:?}: {RULE}"));
    }
    Ok(())
}

/// Whether `name` is a valid server name.
pub fn is_valid(name: &str) -> bool {
    check(name).is_ok()
}

/// [`check`] as a command-line value parser.
pub fn parse(name: &str) -> Result<String, String> {
    check(name).map(|()| name.to_string())
}

/// Whose state: the policy a session runs under and its server name (both valid names).
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct StateKey {
    /// The policy's `name`.
    pub policy: String,
    /// The server name (`exec --name`, else the policy's name).
    pub server: String,
}

impl StateKey {
    /// The key of `server` running under `policy`; an error when either is not a valid name.
    pub fn new(policy: &str, server: &str) -> Result<StateKey, String> {
        check(policy).map_err(|e| format!("policy name: {e}"))?;
        check(server).map_err(|e| format!("server name: {e}"))?;
        Ok(StateKey {
            policy: policy.to_string(),
            server: server.to_string(),
        })
    }

    /// Whether the policy is the shared default one, which everyone may use for any command
    /// and so identifies nothing by itself.
    pub fn is_shared(&self) -> bool {
        self.policy == SHARED_POLICY
    }
}

impl std::fmt::Display for StateKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "server {} (policy {})", self.server, self.policy)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_identifiers() {
        for ok in [
            "github",
            "a",
            "my.server-1",
            "_x",
            "x-",
            "x.",
            &"a".repeat(64),
        ] {
            assert!(is_valid(ok), "{ok:?}");
        }
        for bad in [
            "",
            ".",
            "..",
            ".hidden",
            "-x",
            "../../tmp/x",
            "a/b",
            "a b",
            "a\0b",
            "a\nb",
            "é",
            &"a".repeat(65),
        ] {
            assert!(!is_valid(bad), "{bad:?}");
        }
        assert!(check("a/b").expect_err("a slash").contains("'/'"));
    }

    #[test]
    fn keys_check_both_names() {
        assert!(StateKey::new("github", "gh").is_ok());
        assert!(StateKey::new("github", "../x").is_err());
        assert!(StateKey::new("../x", "gh").is_err());
        assert!(StateKey::new("default", "x").expect("key").is_shared());
    }
}
