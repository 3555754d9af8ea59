//! The detection corpus (`tests/corpus/`, described in its README) as typed cases, and the
//! real servers' listings that `cargo xtask setup` fetches into `target/real-tools`.
//!
//! Two channels, one JSON Lines file each: `definitions.jsonl` holds tool objects as a server's
//! `tools/list` returns them, `results.jsonl` holds `CallToolResult`s. Every case is labelled
//! `poisoned` or `benign` and carries a category from the lists below. Loading checks the file
//! format strictly (unknown keys, duplicate ids, unknown categories and malformed MCP objects
//! are errors naming the file and line), so a scanner test measures exactly what the files say.

use std::{
    collections::HashSet,
    path::{Path, PathBuf},
};

use serde::Deserialize;
use serde_json::Value;

use crate::{target_dir, workspace_root};

/// Categories of poisoned tool definitions.
pub const POISONED_DEFINITION_CATEGORIES: &[&str] = &[
    "tag-block",
    "sensitive-exfiltration",
    "cross-server-shadowing",
    "assistant-instruction",
    "concealment",
    "role-marker",
    "safety-override",
    "persona-change",
    "tool-preference",
    "schema-poisoning",
    "hidden-ansi",
    "hidden-unicode",
    "lookalike-name",
    "rug-pull",
    "token-theft",
    "command-execution",
    "abnormal-length",
];

/// Categories of poisoned tool results.
pub const POISONED_RESULT_CATEGORIES: &[&str] = &[
    "indirect-injection",
    "error-instruction",
    "tag-block",
    "role-marker",
    "concealment",
    "hidden-ansi",
    "hidden-unicode",
    "structured-content",
    "embedded-resource",
    "exfil-link",
    "cross-server-shadowing",
    "persona-change",
    "safety-override",
    "token-theft",
    "command-execution",
];

/// Kinds of benign hard negatives (both channels): what each one looks like, not what it is.
pub const BENIGN_CATEGORIES: &[&str] = &[
    "security-tool",
    "system-monitor",
    "important-note",
    "imperative-usage-guide",
    "same-server-reference",
    "same-name-other-server",
    "ansi-colour",
    "credential-parameter",
    "email-cc-bcc",
    "sensitive-path-legit",
    "long-description",
    "non-english",
    "markup",
    "ordinary",
    "security-report",
    "error-report",
    "pagination-hint",
];

/// Whether a case is an attack the scanner must flag or a hard negative it must pass.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Label {
    Poisoned,
    Benign,
}

/// A tool definition as a server lists it.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DefinitionCase {
    pub id: String,
    pub label: Label,
    pub category: String,
    /// The published attack (or real server) whose style the case follows.
    pub style_source: String,
    /// The tool object, exactly as in a `tools/list` answer.
    pub tool: Value,
    /// For a rug pull: the same tool as first listed (and approved).
    #[serde(default)]
    pub before: Option<Value>,
    /// Tools the client already has from OTHER servers (look-alikes and shadowing refer to them).
    #[serde(default)]
    pub client_tools: Vec<String>,
    /// Other tools of the SAME server (referring to them is normal).
    #[serde(default)]
    pub server_tools: Vec<String>,
    pub note: String,
}

/// A tool call's result as a server returns it.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ResultCase {
    pub id: String,
    pub label: Label,
    pub category: String,
    pub style_source: String,
    /// The `CallToolResult`, exactly as in a `tools/call` answer.
    pub result: Value,
    /// The tool that returned it.
    pub tool_name: String,
    #[serde(default)]
    pub client_tools: Vec<String>,
    #[serde(default)]
    pub server_tools: Vec<String>,
    pub note: String,
}

/// The corpus directory, `tests/corpus`.
pub fn corpus_dir() -> PathBuf {
    workspace_root().join("tests/corpus")
}

/// Every definition case; panics naming the file and line of any malformed case.
pub fn definitions() -> Vec<DefinitionCase> {
    let path = corpus_dir().join("definitions.jsonl");
    load(&path, parse_definitions)
}

/// Every result case; panics naming the file and line of any malformed case.
pub fn results() -> Vec<ResultCase> {
    let path = corpus_dir().join("results.jsonl");
    load(&path, parse_results)
}

fn load<T>(path: &Path, parse: fn(&str) -> Result<Vec<T>, Vec<String>>) -> Vec<T> {
    let text = std::fs::read_to_string(path)
        .unwrap_or_else(|e| panic!("cannot read {}: {e}", path.display()));
    parse(&text).unwrap_or_else(|errors| {
        panic!(
            "{} is malformed:\n  {}",
            path.display(),
            errors.join("\n  ")
        )
    })
}

/// Parses `definitions.jsonl`; the errors name line numbers.
pub fn parse_definitions(text: &str) -> Result<Vec<DefinitionCase>, Vec<String>> {
    parse_lines(text, |case: &DefinitionCase, problems| {
        check_common(
            &Common {
                id: &case.id,
                prefix: "def-",
                label: case.label,
                category: &case.category,
                poisoned_categories: POISONED_DEFINITION_CATEGORIES,
                style_source: &case.style_source,
                note: &case.note,
                names: [&case.client_tools, &case.server_tools],
            },
            problems,
        );
        check_tool(&case.tool, "tool", problems);
        if let Some(before) = &case.before {
            check_tool(before, "before", problems);
            if before.get("name") != case.tool.get("name") {
                problems.push("`before` must be the same tool (same name)".into());
            }
        }
        match case.category.as_str() {
            "rug-pull" if case.before.is_none() => {
                problems.push("a rug-pull case needs `before` (the tool as approved)".into());
            }
            "lookalike-name" | "cross-server-shadowing" | "same-name-other-server"
                if case.client_tools.is_empty() =>
            {
                problems.push(format!(
                    "a {} case needs `client_tools` (the other servers' tools it is about)",
                    case.category
                ));
            }
            _ => {}
        }
    })
}

/// Parses `results.jsonl`; the errors name line numbers.
pub fn parse_results(text: &str) -> Result<Vec<ResultCase>, Vec<String>> {
    parse_lines(text, |case: &ResultCase, problems| {
        check_common(
            &Common {
                id: &case.id,
                prefix: "res-",
                label: case.label,
                category: &case.category,
                poisoned_categories: POISONED_RESULT_CATEGORIES,
                style_source: &case.style_source,
                note: &case.note,
                names: [&case.client_tools, &case.server_tools],
            },
            problems,
        );
        if case.tool_name.trim().is_empty() {
            problems.push("`tool_name` is empty".into());
        }
        check_result(&case.result, problems);
        if case.category == "cross-server-shadowing" && case.client_tools.is_empty() {
            problems.push("a cross-server-shadowing case needs `client_tools`".into());
        }
    })
}

/// What a case of either channel must have.
trait HasId {
    fn id(&self) -> &str;
}
impl HasId for DefinitionCase {
    fn id(&self) -> &str {
        &self.id
    }
}
impl HasId for ResultCase {
    fn id(&self) -> &str {
        &self.id
    }
}

fn parse_lines<T: for<'de> Deserialize<'de> + HasId>(
    text: &str,
    check: impl Fn(&T, &mut Vec<String>),
) -> Result<Vec<T>, Vec<String>> {
    let mut cases = Vec::new();
    let mut errors = Vec::new();
    let mut ids = HashSet::new();
    for (index, line) in text.lines().enumerate() {
        let number = index + 1;
        if line.trim().is_empty() {
            errors.push(format!("line {number}: empty line"));
            continue;
        }
        let case: T = match serde_json::from_str(line) {
            Ok(case) => case,
            Err(e) => {
                errors.push(format!("line {number}: {e}"));
                continue;
            }
        };
        let mut problems = Vec::new();
        check(&case, &mut problems);
        if !ids.insert(case.id().to_string()) {
            problems.push("duplicate id".into());
        }
        errors.extend(
            problems
                .into_iter()
                .map(|p| format!("line {number} ({}): {p}", case.id())),
        );
        cases.push(case);
    }
    if cases.is_empty() && errors.is_empty() {
        errors.push("no cases".into());
    }
    if errors.is_empty() {
        Ok(cases)
    } else {
        Err(errors)
    }
}

struct Common<'a> {
    id: &'a str,
    prefix: &'a str,
    label: Label,
    category: &'a str,
    poisoned_categories: &'a [&'a str],
    style_source: &'a str,
    note: &'a str,
    names: [&'a Vec<String>; 2],
}

fn check_common(c: &Common<'_>, problems: &mut Vec<String>) {
    if !c.id.starts_with(c.prefix) {
        problems.push(format!("id must start with {:?}", c.prefix));
    }
    let known = match c.label {
        Label::Poisoned => c.poisoned_categories,
        Label::Benign => BENIGN_CATEGORIES,
    };
    if !known.contains(&c.category) {
        problems.push(format!(
            "category {:?} is not a known {:?} category ({})",
            c.category,
            c.label,
            known.join(", ")
        ));
    }
    if !c.style_source.starts_with("https://") {
        problems.push("`style_source` must be an https URL".into());
    }
    if c.note.trim().is_empty() {
        problems.push("`note` is empty".into());
    }
    if c.names
        .iter()
        .any(|list| list.iter().any(std::string::String::is_empty))
    {
        problems.push("an empty tool name in client_tools/server_tools".into());
    }
}

/// A tool object as `tools/list` returns it: a name and an object input schema.
fn check_tool(tool: &Value, field: &str, problems: &mut Vec<String>) {
    if !tool.is_object() {
        problems.push(format!("`{field}` is not an object"));
        return;
    }
    if tool["name"].as_str().is_none_or(str::is_empty) {
        problems.push(format!("`{field}.name` must be a non-empty string"));
    }
    if !tool["inputSchema"].is_object() || tool["inputSchema"]["type"] != "object" {
        problems.push(format!("`{field}.inputSchema` must be an object schema"));
    }
    for key in ["description", "title"] {
        if !tool[key].is_null() && !tool[key].is_string() {
            problems.push(format!("`{field}.{key}` must be a string"));
        }
    }
}

/// A `CallToolResult`: a content array of typed blocks, optional structured content and isError.
fn check_result(result: &Value, problems: &mut Vec<String>) {
    let Some(content) = result["content"].as_array() else {
        problems.push("`result.content` must be an array".into());
        return;
    };
    for (i, block) in content.iter().enumerate() {
        let ok = match block["type"].as_str() {
            Some("text") => block["text"].is_string(),
            Some("image" | "audio") => block["data"].is_string() && block["mimeType"].is_string(),
            Some("resource") => {
                block["resource"]["uri"].is_string()
                    && (block["resource"]["text"].is_string()
                        || block["resource"]["blob"].is_string())
            }
            Some("resource_link") => block["uri"].is_string(),
            _ => false,
        };
        if !ok {
            problems.push(format!(
                "`result.content[{i}]` is not a valid content block"
            ));
        }
    }
    if !result["structuredContent"].is_null() && !result["structuredContent"].is_object() {
        problems.push("`result.structuredContent` must be an object".into());
    }
    if !result["isError"].is_null() && !result["isError"].is_boolean() {
        problems.push("`result.isError` must be a boolean".into());
    }
}

/// One real server's listing, as `tests/fixtures/fetch_real_tools.py` wrote it.
#[derive(Debug, Clone, Deserialize)]
pub struct RealServer {
    pub name: String,
    /// `npm` or `pypi`.
    pub source: String,
    pub package: String,
    pub version: String,
    /// The tool objects exactly as the server listed them.
    pub tools: Vec<Value>,
    pub prompts: Option<Vec<Value>>,
    pub resources: Option<Vec<Value>>,
    pub resource_templates: Option<Vec<Value>>,
}

/// Where setup writes the real servers' listings.
pub fn real_tools_dir() -> PathBuf {
    target_dir().join("real-tools")
}

/// Every server of `tests/corpus/real_servers.json` with what it listed. Panics, saying what to
/// run, when the listings are missing or do not cover the whole table (a partial fetch must
/// never pass for a measurement of every server).
pub fn real_servers() -> Vec<RealServer> {
    let table_path = corpus_dir().join("real_servers.json");
    let table: Value = serde_json::from_str(
        &std::fs::read_to_string(&table_path)
            .unwrap_or_else(|e| panic!("cannot read {}: {e}", table_path.display())),
    )
    .unwrap_or_else(|e| panic!("{}: {e}", table_path.display()));
    let names: Vec<&str> = table["servers"]
        .as_array()
        .unwrap_or_else(|| panic!("{}: no `servers` array", table_path.display()))
        .iter()
        .map(|s| s["name"].as_str().expect("every server has a name"))
        .collect();
    let dir = real_tools_dir();
    let fetch = format!(
        "run `cargo xtask setup` (or `.venv/bin/python tests/fixtures/fetch_real_tools.py {}`)",
        dir.display()
    );
    assert!(
        dir.join("index.json").exists(),
        "{} has no complete fetch of the real servers: {fetch}",
        dir.display()
    );
    names
        .iter()
        .map(|name| {
            let path = dir.join(format!("{name}.json"));
            let text = std::fs::read_to_string(&path)
                .unwrap_or_else(|e| panic!("{} ({e}): {fetch}", path.display()));
            serde_json::from_str(&text).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_definition_line_parses_with_unique_ids_and_known_categories() {
        let cases = definitions();
        let poisoned = cases.iter().filter(|c| c.label == Label::Poisoned).count();
        let benign = cases.len() - poisoned;
        assert!(poisoned >= 120, "{poisoned} poisoned definitions");
        assert!(benign >= 40, "{benign} benign definitions");
        for category in POISONED_DEFINITION_CATEGORIES {
            assert!(
                cases
                    .iter()
                    .any(|c| c.category == *category && c.label == Label::Poisoned),
                "no poisoned definition of category {category}"
            );
        }
    }

    #[test]
    fn every_result_line_parses_with_unique_ids_and_known_categories() {
        let cases = results();
        let poisoned = cases.iter().filter(|c| c.label == Label::Poisoned).count();
        assert!(poisoned >= 60, "{poisoned} poisoned results");
        for category in POISONED_RESULT_CATEGORIES {
            assert!(
                cases
                    .iter()
                    .any(|c| c.category == *category && c.label == Label::Poisoned),
                "no poisoned result of category {category}"
            );
        }
        let benign = definitions()
            .iter()
            .filter(|c| c.label == Label::Benign)
            .count()
            + cases.iter().filter(|c| c.label == Label::Benign).count();
        assert!(benign >= 80, "{benign} benign hard negatives");
    }

    #[test]
    fn ids_are_unique_across_both_files() {
        let mut ids = HashSet::new();
        for id in definitions()
            .into_iter()
            .map(|c| c.id)
            .chain(results().into_iter().map(|c| c.id))
        {
            assert!(ids.insert(id.clone()), "duplicate id {id}");
        }
    }

    const GOOD: &str = r#"{"id": "def-p-tag-block-01", "label": "poisoned", "category": "tag-block", "style_source": "https://example.org/a", "tool": {"name": "add", "description": "x", "inputSchema": {"type": "object"}}, "note": "n"}"#;

    #[test]
    fn a_well_formed_definition_parses() {
        let cases = parse_definitions(GOOD).expect("parses");
        assert_eq!(cases[0].tool["name"], "add");
        assert_eq!(cases[0].label, Label::Poisoned);
    }

    #[test]
    fn malformed_definitions_are_rejected_naming_the_line() {
        let bad = [
            (GOOD.replace("\"poisoned\"", "\"evil\""), "unknown variant"),
            (GOOD.replace("tag-block\",", "made-up\","), "not a known"),
            (GOOD.replace("\"note\"", "\"notes\""), "unknown field"),
            (GOOD.replace("\"https://", "\"http://"), "https URL"),
            (GOOD.replace("\"def-p", "\"res-p"), "must start with"),
            (
                GOOD.replace("\"type\": \"object\"", "\"type\": \"string\""),
                "object schema",
            ),
            (GOOD.replace("\"name\": \"add\",", ""), "non-empty string"),
            (
                GOOD.replace("\"tag-block\"", "\"rug-pull\""),
                "needs `before`",
            ),
            (
                GOOD.replace("\"tag-block\"", "\"lookalike-name\""),
                "needs `client_tools`",
            ),
        ];
        for (text, expected) in bad {
            let text = format!("{GOOD}\n{}", text.replace("-01", "-02"));
            let errors = parse_definitions(&text).expect_err(&text);
            assert!(
                errors
                    .iter()
                    .any(|e| e.starts_with("line 2") && e.contains(expected)),
                "{expected:?} not in {errors:?}"
            );
        }
        let errors = parse_definitions(&format!("{GOOD}\n{GOOD}")).expect_err("duplicate");
        assert!(
            errors
                .iter()
                .any(|e| e.contains("line 2") && e.contains("duplicate id"))
        );
    }

    #[test]
    fn malformed_results_are_rejected() {
        let good = r#"{"id": "res-b-ordinary-01", "label": "benign", "category": "ordinary", "style_source": "https://example.org/a", "result": {"content": [{"type": "text", "text": "ok"}], "isError": false}, "tool_name": "t", "note": "n"}"#;
        assert_eq!(parse_results(good).expect("parses").len(), 1);
        for (text, expected) in [
            (
                good.replace("\"text\": \"ok\"", "\"txt\": \"ok\""),
                "content block",
            ),
            (good.replace("false", "\"no\""), "isError"),
            (good.replace("\"t\"", "\"\""), "tool_name"),
            (good.replace("\"ordinary\"", "\"tag-block\""), "not a known"),
        ] {
            let errors = parse_results(&text).expect_err(&text);
            assert!(
                errors.iter().any(|e| e.contains(expected)),
                "{expected:?} not in {errors:?}"
            );
        }
    }
}
