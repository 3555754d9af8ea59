//! JSONC configs (comments and trailing commas, as VS Code and others accept): read into a
//! plain JSON value, and rewritten by replacing only the changed servers' `command` and `args`
//! values in the original text, so every comment, blank line and key outside them stays.

use jsonc_parser::{
    CollectOptions, ParseOptions,
    ast::{Object, Value as Ast},
    common::Ranged,
};
use serde_json::Value;

/// What JSONC adds to JSON here: comments and trailing commas, nothing looser.
fn options() -> ParseOptions {
    ParseOptions {
        allow_comments: true,
        allow_trailing_commas: true,
        allow_loose_object_property_names: false,
        allow_missing_commas: false,
        allow_single_quoted_strings: false,
        allow_hexadecimal_numbers: false,
        allow_unary_plus_numbers: false,
        allow_bare_decimal_point_numbers: false,
        allow_non_finite_numbers: false,
        allow_extended_string_escapes: false,
    }
}

/// Why the text is not JSONC.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct ParseFailure {
    /// 1-based line.
    pub line: usize,
    /// 1-based column.
    pub column: usize,
    /// The parser's message.
    pub message: String,
}

/// The text's value, and whether it is plain JSON (`false`: it has comments or trailing
/// commas, and is rewritten with [`splice`]).
pub(super) fn parse(text: &str) -> Result<(Value, bool), ParseFailure> {
    let strict = match serde_json::from_str(text) {
        Ok(v) => return Ok((v, true)),
        Err(e) => e,
    };
    match jsonc_parser::parse_to_serde_value::<Value>(text, &options()) {
        Ok(v) => Ok((v, false)),
        // Report JSON's own error when JSONC fails too: it names what a JSON reader expects.
        Err(_) => Err(ParseFailure {
            line: strict.line(),
            column: strict.column(),
            message: strict.to_string(),
        }),
    }
}

/// A server whose `command` and `args` change.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct Edit {
    /// The server's key.
    pub server: String,
    /// The new command.
    pub command: String,
    /// The new args.
    pub args: Vec<String>,
}

/// `text` with each edited server's `command` and `args` values replaced (its `args` added
/// after `command` when it had none); `servers` is the path of keys to the servers object.
pub(super) fn splice(text: &str, servers: &[&str], edits: &[Edit]) -> Result<String, String> {
    let parsed = jsonc_parser::parse_to_ast(text, &CollectOptions::default(), &options())
        .map_err(|e| e.to_string())?;
    let mut node = parsed.value.as_ref().ok_or("the file is empty")?;
    for key in servers {
        node = object(node)?
            .get(key)
            .map(|p| &p.value)
            .ok_or_else(|| format!("no {key:?} key"))?;
    }
    let servers_obj = object(node)?;
    let mut changes: Vec<(usize, usize, String)> = Vec::new();
    for edit in edits {
        let entry = servers_obj
            .get(&edit.server)
            .ok_or_else(|| format!("no server {:?}", edit.server))?;
        let entry = object(&entry.value)?;
        let command = entry
            .get("command")
            .ok_or_else(|| format!("server {:?} has no command", edit.server))?;
        let args_text = format!(
            "[{}]",
            edit.args
                .iter()
                .map(|a| Value::from(a.as_str()).to_string())
                .collect::<Vec<_>>()
                .join(", ")
        );
        changes.push((
            command.value.start(),
            command.value.end(),
            Value::from(edit.command.as_str()).to_string(),
        ));
        if let Some(args) = entry.get("args") {
            changes.push((args.value.start(), args.value.end(), args_text));
        } else {
            let at = command.value.end();
            changes.push((at, at, format!(", \"args\": {args_text}")));
        }
    }
    changes.sort_by_key(|c| std::cmp::Reverse(c.0));
    let mut out = text.to_string();
    for (start, end, with) in changes {
        out.replace_range(start..end, &with);
    }
    Ok(out)
}

fn object<'a, 'b>(node: &'b Ast<'a>) -> Result<&'b Object<'a>, String> {
    match node {
        Ast::Object(o) => Ok(o),
        _ => Err("not an object".to_string()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const TEXT: &str = r#"{
  // my servers
  "servers": {
    "git": {
      "type": "stdio", // local
      "command": "uvx",
      "args": ["mcp-server-git",], /* keep */
    },
    "time": {"command": "uvx"},
  },
}
"#;

    #[test]
    fn comments_and_trailing_commas_parse_and_survive_a_splice() {
        let (v, plain) = parse(TEXT).expect("JSONC");
        assert!(!plain);
        assert_eq!(v["servers"]["git"]["args"][0], "mcp-server-git");
        let out = splice(
            TEXT,
            &["servers"],
            &[
                Edit {
                    server: "git".into(),
                    command: "mcp-guard".into(),
                    args: vec!["exec".into(), "--".into(), "uvx".into()],
                },
                Edit {
                    server: "time".into(),
                    command: "mcp-guard".into(),
                    args: vec!["x\"y".into()],
                },
            ],
        )
        .expect("splice");
        for kept in ["// my servers", "// local", "/* keep */"] {
            assert!(out.contains(kept), "{out}");
        }
        let (v, _) = parse(&out).expect("still JSONC");
        assert_eq!(v["servers"]["git"]["command"], "mcp-guard");
        assert_eq!(v["servers"]["git"]["args"][2], "uvx");
        assert_eq!(v["servers"]["git"]["type"], "stdio");
        assert_eq!(v["servers"]["time"]["args"][0], "x\"y");
    }

    #[test]
    fn plain_json_is_plain_and_looser_syntax_is_refused() {
        assert_eq!(parse("{\"a\": 1}"), Ok((serde_json::json!({"a": 1}), true)));
        for bad in ["{'a': 1}", "{a: 1}", "{\"a\": 0x1}", "{\"a\": 1 \"b\": 2}"] {
            assert!(parse(bad).is_err(), "{bad}");
        }
    }
}
