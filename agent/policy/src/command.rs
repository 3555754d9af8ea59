//! The top-level `command` key: the argv the policy fixes for its server. Only that command
//! (or, without it, the program `[pin]` pins) gets the policy's `[secrets]`; `exec` with no
//! command after `--` runs it.

use toml_edit::Item;

use crate::check::{Checker, Span};
use crate::model::Backend;
use crate::values::has_dot_dot;

impl Checker<'_> {
    /// `command = ["/usr/bin/node", "/srv/x/index.js", ...]`: a non-empty array of strings
    /// without NUL; with the jail its program is an absolute path without `..` (no PATH lookup
    /// decides what runs); with a container it runs inside the image.
    pub(super) fn command(
        &mut self,
        item: &Item,
        span: &Span,
        backend: Backend,
    ) -> Option<Vec<String>> {
        let Some(array) = item.as_array() else {
            self.error(
                span,
                "command",
                "expected an array of strings: the program and its arguments, e.g. \
                 command = [\"/usr/bin/node\", \"/srv/mcp/index.js\"]",
            );
            return None;
        };
        if array.is_empty() {
            self.error(
                span,
                "command",
                "is empty: give the program and its arguments, or remove the key",
            );
            return None;
        }
        let mut argv = Vec::new();
        let mut ok = true;
        for (s, s_span, s_path) in self.strings(item, span, "command") {
            let program = s_path == "command[0]";
            if s.contains('\0') {
                self.error(&s_span, &s_path, "contains a NUL character");
                ok = false;
            } else if program && backend == Backend::Jail && (!s.starts_with('/') || has_dot_dot(s))
            {
                self.error(
                    &s_span,
                    &s_path,
                    format!(
                        "{s:?} is not an absolute path without '..': the program the policy \
                         fixes is named by its path, not looked up on the caller's PATH"
                    ),
                );
                ok = false;
            } else if program && s.is_empty() {
                self.error(&s_span, &s_path, "the program is empty");
                ok = false;
            }
            argv.push(s.to_string());
        }
        // A non-string element was reported by `strings` and left out.
        (ok && argv.len() == array.len()).then_some(argv)
    }
}

#[cfg(test)]
mod tests {
    use crate::parse;

    fn problems(text: &str) -> Vec<(usize, String, String)> {
        match parse(text, None) {
            Ok(_) => Vec::new(),
            Err(e) => e
                .problems
                .into_iter()
                .map(|p| (p.line, p.key, p.message))
                .collect(),
        }
    }

    #[test]
    fn a_fixed_command_is_an_absolute_program_and_its_arguments() {
        let p = parse(
            "name = \"x\"\ncommand = [\"/usr/bin/node\", \"/srv/x/index.js\", \"--flag\"]\n",
            None,
        )
        .expect("valid");
        assert_eq!(
            p.command.as_deref(),
            Some(&["/usr/bin/node", "/srv/x/index.js", "--flag"].map(String::from)[..])
        );
        assert_eq!(parse("name = \"x\"\n", None).expect("valid").command, None);
        // In a container the program is the image's, found on its PATH.
        let p = parse(
            "name = \"x\"\ncommand = [\"node\", \"index.js\"]\n[isolation]\nbackend = \"container\"\nimage = \"docker.io/library/node@sha256:0000000000000000000000000000000000000000000000000000000000000000\"\n",
            None,
        )
        .expect("valid");
        assert_eq!(p.command.map(|c| c.len()), Some(2));
    }

    #[test]
    fn bad_commands_name_line_and_key() {
        for (text, key, msg) in [
            ("command = \"node x.js\"", "command", "expected an array"),
            ("command = []", "command", "is empty"),
            (
                "command = [\"node\", \"x.js\"]",
                "command[0]",
                "absolute path",
            ),
            (
                "command = [\"/usr/../bin/sh\"]",
                "command[0]",
                "absolute path",
            ),
            (
                "command = [\"/usr/bin/node\", 3]",
                "command[1]",
                "expected a string",
            ),
            (
                "command = [\"/usr/bin/node\", \"a\\u0000b\"]",
                "command[1]",
                "NUL",
            ),
        ] {
            let found = problems(&format!("name = \"x\"\n{text}\n"));
            assert!(
                found
                    .iter()
                    .any(|(line, k, m)| *line == 2 && k == key && m.contains(msg)),
                "{text}: {found:?}"
            );
        }
    }
}
