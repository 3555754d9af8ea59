//! Which `[tools.clients]` rule a session's client gets, from the name it declares
//! (`clientInfo.name`, the client's word) and the executable it runs from (read by mcp-guard
//! from `/proc`, not the client's word).
//!
//! In order, the first that applies:
//! 1. the rule keyed by the declared name, when it lists the client's executable;
//! 2. the `match = "exe"` rule that lists the client's executable (whatever the declared name);
//! 3. the rule keyed by the declared name, when it names no executable;
//! 4. the `"*"` rule;
//! 5. none: the client sees what `[tools] allow`/`deny` leave.
//!
//! So a client that declares another client's name but runs from another executable never gets
//! that name's executable-bound scope: it gets the scope of what it runs as (2, 4 or 5).

use std::path::{Path, PathBuf};

use mcp_guard_policy::{ANY_CLIENT, ClientMatch, ClientRule};

/// The rules of one policy, ready to match (executables also by their resolved paths).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ClientScopes {
    rules: Vec<Rule>,
}

#[derive(Clone, Debug, PartialEq, Eq)]
struct Rule {
    key: String,
    tools: Vec<String>,
    /// As written, then each one's canonical path when it differs (`/proc/PID/exe` shows the
    /// resolved file: `/usr/bin/python3` is `/usr/bin/python3.13` there).
    exe: Vec<PathBuf>,
    /// Bound to an executable at all.
    exe_bound: bool,
    by_name: bool,
}

/// The rule a client got.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Scope<'a> {
    /// Its key in `[tools.clients]`.
    pub rule: &'a str,
    /// The only tools the client sees.
    pub tools: &'a [String],
}

impl ClientScopes {
    /// From a policy's rules; symlinks in `exe` are resolved now (a path that does not exist
    /// is kept as written).
    pub fn new<'a>(rules: impl IntoIterator<Item = (&'a String, &'a ClientRule)>) -> Self {
        let rules = rules
            .into_iter()
            .map(|(key, r)| {
                let mut exe = r.exe.clone();
                for p in &r.exe {
                    if let Ok(c) = std::fs::canonicalize(p)
                        && !exe.contains(&c)
                    {
                        exe.push(c);
                    }
                }
                Rule {
                    key: key.clone(),
                    tools: r.tools.clone(),
                    exe_bound: !r.exe.is_empty(),
                    exe,
                    by_name: r.exe.is_empty() || r.matching == ClientMatch::NameAndExe,
                }
            })
            .collect();
        Self { rules }
    }

    /// From plain (name, tools) pairs: rules by declared name only.
    pub fn by_name<'a>(rules: impl IntoIterator<Item = (&'a str, Vec<String>)>) -> Self {
        Self {
            rules: rules
                .into_iter()
                .map(|(key, tools)| Rule {
                    key: key.into(),
                    tools,
                    exe: Vec::new(),
                    exe_bound: false,
                    by_name: true,
                })
                .collect(),
        }
    }

    /// True when there are no rules.
    pub fn is_empty(&self) -> bool {
        self.rules.is_empty()
    }

    /// The scope of a client that declared `name` and runs `exe` (see the module doc).
    pub fn scope(&self, name: Option<&str>, exe: Option<&Path>) -> Option<Scope<'_>> {
        let named = name.and_then(|n| {
            self.rules
                .iter()
                .find(|r| r.by_name && r.key == n && r.key != ANY_CLIENT)
        });
        let runs = |r: &Rule| exe.is_some_and(|e| r.exe.iter().any(|p| p == e));
        let found = named
            .filter(|r| r.exe_bound && runs(r))
            .or_else(|| self.rules.iter().find(|r| !r.by_name && runs(r)))
            .or_else(|| named.filter(|r| !r.exe_bound))
            .or_else(|| self.rules.iter().find(|r| r.key == ANY_CLIENT));
        found.map(|r| Scope {
            rule: &r.key,
            tools: &r.tools,
        })
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use super::*;

    fn rule(tools: &[&str], exe: &[&str], matching: ClientMatch) -> ClientRule {
        ClientRule {
            tools: tools.iter().map(std::string::ToString::to_string).collect(),
            exe: exe.iter().map(PathBuf::from).collect(),
            matching,
        }
    }

    fn scopes() -> ClientScopes {
        let rules: BTreeMap<String, ClientRule> = [
            ("chat", rule(&["read"], &[], ClientMatch::NameAndExe)),
            (
                "ide",
                rule(
                    &["read", "write"],
                    &["/opt/ide/ide"],
                    ClientMatch::NameAndExe,
                ),
            ),
            ("py", rule(&["search"], &["/usr/bin/py"], ClientMatch::Exe)),
        ]
        .into_iter()
        .map(|(k, r)| (k.to_string(), r))
        .collect();
        ClientScopes::new(&rules)
    }

    fn rule_of<'a>(s: &'a ClientScopes, name: Option<&str>, exe: Option<&str>) -> Option<&'a str> {
        s.scope(name, exe.map(Path::new)).map(|s| s.rule)
    }

    #[test]
    fn the_executable_decides_over_the_declared_name() {
        let s = scopes();
        // Name and executable agree.
        assert_eq!(rule_of(&s, Some("ide"), Some("/opt/ide/ide")), Some("ide"));
        // Another program declaring "ide" does not get its scope: its own executable's rule, or
        // none.
        assert_eq!(rule_of(&s, Some("ide"), Some("/usr/bin/py")), Some("py"));
        assert_eq!(rule_of(&s, Some("ide"), Some("/usr/bin/other")), None);
        assert_eq!(rule_of(&s, Some("ide"), None), None);
        // An exe rule wins over a name-only rule the client claims.
        assert_eq!(rule_of(&s, Some("chat"), Some("/usr/bin/py")), Some("py"));
        assert_eq!(
            rule_of(&s, Some("chat"), Some("/usr/bin/other")),
            Some("chat")
        );
        assert_eq!(rule_of(&s, None, Some("/usr/bin/py")), Some("py"));
        // An exe-only rule's key is a label, not a name anyone can claim.
        assert_eq!(rule_of(&s, Some("py"), Some("/usr/bin/other")), None);
        assert_eq!(rule_of(&s, Some("other"), None), None);
    }

    #[test]
    fn star_is_the_scope_of_everyone_else() {
        let mut rules: BTreeMap<String, ClientRule> = BTreeMap::new();
        rules.insert(
            "ide".into(),
            rule(
                &["read", "write"],
                &["/opt/ide/ide"],
                ClientMatch::NameAndExe,
            ),
        );
        rules.insert("*".into(), rule(&["read"], &[], ClientMatch::NameAndExe));
        let s = ClientScopes::new(&rules);
        assert_eq!(rule_of(&s, Some("ide"), Some("/opt/ide/ide")), Some("ide"));
        assert_eq!(rule_of(&s, Some("ide"), Some("/usr/bin/py")), Some("*"));
        assert_eq!(rule_of(&s, Some("whatever"), None), Some("*"));
        assert_eq!(rule_of(&s, None, None), Some("*"));
    }

    #[test]
    fn symlinked_executables_match_by_their_target() {
        let dir = std::env::temp_dir().join(format!("mcp-guard-scope-{}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("dir");
        let target = dir.join("real-ide");
        std::fs::write(&target, "").expect("file");
        let link = dir.join("ide");
        let _ = std::fs::remove_file(&link);
        std::os::unix::fs::symlink(&target, &link).expect("symlink");
        let mut rules: BTreeMap<String, ClientRule> = BTreeMap::new();
        let link_s = link.display().to_string();
        rules.insert(
            "ide".into(),
            rule(&["a"], &[&link_s], ClientMatch::NameAndExe),
        );
        let s = ClientScopes::new(&rules);
        let canonical = target.canonicalize().expect("canonical");
        assert_eq!(
            s.scope(Some("ide"), Some(&canonical)).map(|s| s.rule),
            Some("ide")
        );
        let _ = std::fs::remove_dir_all(&dir);
    }
}
