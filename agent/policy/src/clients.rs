//! `[tools.clients]`: which tools each MCP client sees, by the name it declares
//! (`clientInfo.name`) and by the executable it runs from (the parent of `mcp-guard exec`).
//!
//! ```toml
//! [tools.clients]
//! "Claude Desktop" = ["read"]                                   # by declared name only
//! vscode = { tools = ["read", "write"], exe = ["/usr/bin/code"] } # that name AND that exe
//! scripts = { tools = ["read"], exe = ["/usr/bin/python3.13"], match = "exe" } # any name
//! "*" = ["read"]                                                # every client no rule matches
//! ```
//!
//! Plain data; `mcp::client_scope` decides which rule a session's client gets.

use std::{collections::BTreeMap, path::PathBuf};

use toml_edit::Item;

use crate::check::{Checker, Span, describe, entry, join};
use crate::values::has_dot_dot;
use crate::values::is_tool_name;

/// The rule key that applies to every client no other rule matches.
pub const ANY_CLIENT: &str = "*";

/// How a `[tools.clients]` rule with `exe` matches.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum ClientMatch {
    /// The declared name is the rule's key and the executable is one of `exe` (the default).
    #[default]
    NameAndExe,
    /// The executable is one of `exe`, whatever name the client declares.
    Exe,
}

/// One `[tools.clients]` rule.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ClientRule {
    /// The only tools a matching client sees (on top of allow/deny).
    pub tools: Vec<String>,
    /// Absolute paths of the client executables it matches; empty: by name only.
    pub exe: Vec<PathBuf>,
    /// With `exe`: whether the declared name must be the rule's key too.
    pub matching: ClientMatch,
}

impl ClientRule {
    /// A rule by declared name only (the array form).
    pub fn by_name(tools: Vec<String>) -> Self {
        Self {
            tools,
            exe: Vec::new(),
            matching: ClientMatch::NameAndExe,
        }
    }
}

const RULE_KEYS: &[&str] = &["tools", "exe", "match"];

impl Checker<'_> {
    /// `[tools.clients]`: rule key → rule.
    pub(super) fn tool_clients(
        &mut self,
        item: &Item,
        span: &Span,
    ) -> BTreeMap<String, ClientRule> {
        let mut out = BTreeMap::new();
        let Some(table) = item.as_table_like() else {
            self.error(
                span,
                "tools.clients",
                format!(
                    "expected a table of client name = [tools] or {{ tools, exe, match }}, found {}",
                    describe(item)
                ),
            );
            return out;
        };
        // Which exe-only rule each executable belongs to: two would make the match ambiguous.
        let mut exe_owner: BTreeMap<PathBuf, String> = BTreeMap::new();
        for (client, value) in table.iter() {
            let (key_span, value_span) = entry(table, client, span);
            let path = join("tools.clients", client);
            if client.trim().is_empty() {
                self.error(&key_span, &path, "a client name (clientInfo.name) is empty");
                continue;
            }
            let rule = if value.is_array() {
                ClientRule::by_name(self.client_tools(value, &value_span, &path))
            } else {
                let Some(rule) = self.client_rule(client, value, &value_span, &path) else {
                    continue;
                };
                rule
            };
            if rule.matching == ClientMatch::Exe {
                for exe in &rule.exe {
                    if let Some(other) = exe_owner.insert(exe.clone(), client.to_string()) {
                        self.error(
                            &value_span,
                            &join(&path, "exe"),
                            format!(
                                "{} is also in [tools.clients.{other}] with match = \"exe\": a \
                                 client running it would match both",
                                exe.display()
                            ),
                        );
                    }
                }
            }
            out.insert(client.to_string(), rule);
        }
        out
    }

    fn client_tools(&mut self, value: &Item, span: &Span, path: &str) -> Vec<String> {
        let mut tools = Vec::new();
        for (s, s_span, s_path) in self.strings(value, span, path) {
            if is_tool_name(s) {
                tools.push(s.to_string());
            } else {
                self.error(&s_span, &s_path, format!("{s:?} is not a tool name"));
            }
        }
        tools
    }

    fn client_rule(
        &mut self,
        client: &str,
        value: &Item,
        span: &Span,
        path: &str,
    ) -> Option<ClientRule> {
        let table = self.table(value, span, path, RULE_KEYS)?;
        let Some(tools) = table.get("tools") else {
            self.error(
                span,
                &join(path, "tools"),
                "missing: the tools this client sees, e.g. tools = [\"read\"]",
            );
            return None;
        };
        let (_, t_span) = entry(table, "tools", span);
        let tools = self.client_tools(tools, &t_span, &join(path, "tools"));
        let mut exe = Vec::new();
        if let Some(list) = table.get("exe") {
            let (_, e_span) = entry(table, "exe", span);
            let e_path = join(path, "exe");
            let given = self.strings(list, &e_span, &e_path);
            if given.is_empty() && list.is_array() {
                self.error(
                    &e_span,
                    &e_path,
                    "an empty list: name executables or drop exe",
                );
            }
            for (s, s_span, s_path) in given {
                if !s.starts_with('/') || has_dot_dot(s) || s.ends_with('/') {
                    self.error(
                        &s_span,
                        &s_path,
                        format!("{s:?}: an absolute path of an executable, without `..`"),
                    );
                } else {
                    exe.push(PathBuf::from(s));
                }
            }
        }
        let mut matching = ClientMatch::NameAndExe;
        if let Some(m) = table.get("match") {
            let (_, m_span) = entry(table, "match", span);
            let m_path = join(path, "match");
            match m.as_str() {
                Some("exe") => matching = ClientMatch::Exe,
                Some("name+exe") => {}
                _ => self.error(
                    &m_span,
                    &m_path,
                    "expected \"name+exe\" (the default: the declared name and the executable) \
                     or \"exe\" (the executable, whatever name the client declares)",
                ),
            }
            if table.get("exe").is_none() {
                self.error(&m_span, &m_path, "match needs exe = [...] to match against");
            }
        }
        if client == ANY_CLIENT && table.get("exe").is_some() {
            self.error(
                span,
                &join(path, "exe"),
                "\"*\" is every client no other rule matches; to match an executable whatever \
                 its name, give a named rule exe = [...] and match = \"exe\"",
            );
        }
        Some(ClientRule {
            tools,
            exe,
            matching,
        })
    }
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    use super::*;
    use crate::parse;

    #[track_caller]
    fn clients(body: &str) -> BTreeMap<String, ClientRule> {
        parse(&format!("name = \"x\"\n[tools.clients]\n{body}"), None)
            .unwrap_or_else(|e| panic!("{e}"))
            .tools
            .clients
    }

    #[track_caller]
    fn problem(body: &str, key: &str, msg: &str) {
        let text = format!("name = \"x\"\n[tools.clients]\n{body}");
        let e = parse(&text, Some(Path::new("t.toml"))).expect_err("invalid");
        assert!(
            e.problems
                .iter()
                .any(|p| p.key == key && p.message.contains(msg) && p.line >= 3),
            "no {key}: {msg} in:\n{e}"
        );
    }

    #[test]
    fn both_forms_parse_into_rules() {
        let c = clients(
            "\"Claude Desktop\" = [\"read\"]\n\
             ide = { tools = [\"read\", \"write\"], exe = [\"/usr/bin/code\"] }\n\
             py = { tools = [\"read\"], exe = [\"/usr/bin/python3\"], match = \"exe\" }\n\
             \"*\" = []\n\
             [tools.clients.cursor]\ntools = [\"read\"]\nexe = [\"/opt/cursor/cursor\"]\n\
             match = \"name+exe\"\n",
        );
        assert_eq!(
            c["Claude Desktop"],
            ClientRule::by_name(vec!["read".into()])
        );
        assert_eq!(c["ide"].exe, vec![PathBuf::from("/usr/bin/code")]);
        assert_eq!(c["ide"].matching, ClientMatch::NameAndExe);
        assert_eq!(c["py"].matching, ClientMatch::Exe);
        assert!(c["*"].tools.is_empty());
        assert_eq!(c["cursor"].exe, vec![PathBuf::from("/opt/cursor/cursor")]);
    }

    #[test]
    fn bad_rules_are_located_errors() {
        problem(
            "ide = { exe = [\"/usr/bin/code\"] }\n",
            "tools.clients.ide.tools",
            "missing",
        );
        problem(
            "ide = { tools = [], exe = [\"code\"] }\n",
            "tools.clients.ide.exe[0]",
            "absolute path",
        );
        problem(
            "ide = { tools = [], exe = [\"/usr/../bin/code\"] }\n",
            "tools.clients.ide.exe[0]",
            "absolute path",
        );
        problem(
            "ide = { tools = [], exe = [] }\n",
            "tools.clients.ide.exe",
            "empty",
        );
        problem(
            "ide = { tools = [], match = \"exe\" }\n",
            "tools.clients.ide.match",
            "needs exe",
        );
        problem(
            "ide = { tools = [], exe = [\"/a\"], match = \"name\" }\n",
            "tools.clients.ide.match",
            "expected",
        );
        problem(
            "ide = { tools = [], exe = [\"/a\"], user = \"x\" }\n",
            "tools.clients.ide.user",
            "unknown key",
        );
        problem(
            "\"*\" = { tools = [], exe = [\"/a\"] }\n",
            "tools.clients.\"*\".exe",
            "every client",
        );
        problem(
            "a = { tools = [], exe = [\"/x\"], match = \"exe\" }\n\
             b = { tools = [], exe = [\"/x\"], match = \"exe\" }\n",
            "tools.clients.b.exe",
            "also in [tools.clients.a]",
        );
        problem("ide = 3\n", "tools.clients.ide", "expected a table");
    }
}
