//! The MCP-layer keys of a policy (`[tools.args]` is in `tool_args`):
//! `tools.validate_schema` and the `[mcp]` table (message size, poisoned descriptions, secret
//! rules, PII, the external hook). Plain data; `mcp::ProxyConfig::from_policy` maps it.

use std::path::PathBuf;

use toml_edit::{Item, Value};

use crate::check::{Checker, Span, describe, entry, join};
use crate::values::{has_dot_dot, parse_size};

/// The PII kinds a policy may name in `[mcp.pii] kinds`.
pub const PII_KINDS: &[&str] = &["email", "card-number", "us-ssn", "phone"];

/// Default `[mcp] max_message_size`: 64 MiB (screenshots, file reads and query results are
/// often tens of megabytes).
pub(crate) const DEFAULT_MAX_MESSAGE_SIZE: u64 = 64 << 20;
/// Smallest `max_message_size`: an `initialize` with capabilities must fit.
const MIN_MESSAGE_SIZE: u64 = 4 << 10;
/// Largest `max_message_size`: the proxy holds a whole message in memory.
const MAX_MESSAGE_SIZE: u64 = 1 << 30;
/// Default `[mcp.hook] timeout_ms`.
pub(crate) const DEFAULT_HOOK_TIMEOUT_MS: u64 = 2000;
const MAX_HOOK_TIMEOUT_MS: i64 = 600_000;

/// What to do with poisoned text the server sends (`[mcp] poisoned_descriptions`,
/// `poisoned_schemas`, `poisoned_annotations`, `poisoned_prompts`, `poisoned_results`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum PoisonAction {
    /// Hide the tool, prompt or resource and refuse its use; a result is withheld (replaced by
    /// an error result naming the reason).
    #[default]
    Block,
    /// Remove the poisoned text (hidden text, the sentences that score, a poisoned schema
    /// entry); what cannot be removed is blocked.
    Strip,
    /// Report only.
    Alert,
    /// Results only: fail the call with a JSON-RPC error naming the reason.
    Fail,
}

/// What to do with terminal escapes and control characters (`[mcp] control_characters`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum ControlAction {
    /// Keep what a terminal shows, remove what it would hide (and the escapes).
    #[default]
    Strip,
    /// Show each control character as a visible symbol (ESC as `␛`).
    Visible,
    /// Pass them unchanged.
    Keep,
}

/// What to do with a secret shape found in a message.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ShapeAction {
    /// Refuse the message (a call gets an error; a result is replaced by an error).
    Deny,
    /// Replace the secret with a `[REDACTED:<shape>]` marker.
    Redact,
    /// Report it and pass the message unchanged.
    Alert,
}

/// `[mcp.secret_shapes]`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SecretShapes {
    /// `enabled` (default true): look for well-known secret shapes at all.
    pub enabled: bool,
    /// `in_arguments` (default deny): a shape in a `tools/call`'s arguments.
    pub in_arguments: ShapeAction,
    /// `in_results` (default redact): a shape in what the server sends.
    pub in_results: ShapeAction,
    /// `ignore`: rules not looked for, by id or tag (of the built-in catalog, or of the
    /// policy's `[secrets] rules` file).
    pub ignore: Vec<String>,
}

impl Default for SecretShapes {
    fn default() -> Self {
        Self {
            enabled: true,
            in_arguments: ShapeAction::Deny,
            in_results: ShapeAction::Redact,
            ignore: Vec::new(),
        }
    }
}

/// `[mcp.hook]`: an external interceptor command.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Hook {
    /// `command`: an absolute path.
    pub command: PathBuf,
    /// `args`.
    pub args: Vec<String>,
    /// `timeout_ms` (default 2000): how long one answer may take.
    pub timeout_ms: u64,
    /// `results` (default false): also send `tools/call` results.
    pub results: bool,
    /// `fail_closed` (default true): refuse the message when the hook fails or times out.
    pub fail_closed: bool,
}

/// `[mcp]`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Mcp {
    /// `max_message_size`: the largest JSON-RPC message (one line) accepted, in bytes.
    pub max_message_size: u64,
    /// `poisoned_descriptions = "block" | "strip" | "alert"`: tool names, titles, descriptions,
    /// the server's instructions.
    pub poisoned_descriptions: PoisonAction,
    /// `poisoned_schemas` (default: as `poisoned_descriptions`): `inputSchema`/`outputSchema`.
    pub poisoned_schemas: PoisonAction,
    /// `poisoned_annotations` (default: as `poisoned_descriptions`).
    pub poisoned_annotations: PoisonAction,
    /// `poisoned_prompts` (default block): prompt, resource and template listings.
    pub poisoned_prompts: PoisonAction,
    /// `poisoned_results = "strip" | "block" | "fail" | "alert"` (default strip): tool results
    /// and read resources.
    pub poisoned_results: PoisonAction,
    /// `control_characters = "strip" | "visible" | "keep"` (default strip).
    pub control_characters: ControlAction,
    /// `[mcp.secret_shapes]`.
    pub secret_shapes: SecretShapes,
    /// `[mcp.pii] enabled` + `kinds`: the PII kinds scrubbed from results; empty when off.
    pub pii: Vec<String>,
    /// `[mcp.hook]`.
    pub hook: Option<Hook>,
    /// `[secrets] rules`: the gitleaks-format rules file (and what it extends) used instead of
    /// the built-in catalog; `None`: the built-in catalog.
    pub secret_rules: Option<mcp_guard_secrets::RulesSource>,
}

impl Default for Mcp {
    fn default() -> Self {
        Self {
            max_message_size: DEFAULT_MAX_MESSAGE_SIZE,
            poisoned_descriptions: PoisonAction::Block,
            poisoned_schemas: PoisonAction::Block,
            poisoned_annotations: PoisonAction::Block,
            poisoned_prompts: PoisonAction::Block,
            poisoned_results: PoisonAction::Strip,
            control_characters: ControlAction::Strip,
            secret_shapes: SecretShapes::default(),
            pii: Vec::new(),
            hook: None,
            secret_rules: None,
        }
    }
}

impl Checker<'_> {
    /// The `[mcp]` table.
    pub(super) fn mcp(&mut self, item: &Item, span: &Span) -> Mcp {
        let mut mcp = Mcp::default();
        let Some(table) = self.table(
            item,
            span,
            "mcp",
            &[
                "max_message_size",
                "poisoned_descriptions",
                "poisoned_schemas",
                "poisoned_annotations",
                "poisoned_prompts",
                "poisoned_results",
                "control_characters",
                "secret_shapes",
                "pii",
                "hook",
            ],
        ) else {
            return mcp;
        };
        if let Some(v) = table.get("max_message_size") {
            let (_, s) = entry(table, "max_message_size", span);
            let bytes = match v.as_value() {
                Some(Value::String(t)) => parse_size(t.value()),
                Some(Value::Integer(n)) => {
                    u64::try_from(*n.value()).map_err(|_| "must be positive".to_string())
                }
                _ => Err(format!(
                    "expected a size like \"4M\" or a number of bytes, found {}",
                    describe(v)
                )),
            };
            match bytes {
                Ok(b) if (MIN_MESSAGE_SIZE..=MAX_MESSAGE_SIZE).contains(&b) => {
                    mcp.max_message_size = b;
                }
                Ok(b) => self.error(
                    &s,
                    "mcp.max_message_size",
                    format!("{b} bytes is out of range: 4K to 1G"),
                ),
                Err(m) => self.error(&s, "mcp.max_message_size", m),
            }
        }
        // Schemas and annotations follow the descriptions unless given: a definition was one
        // thing to `poisoned_descriptions` before they had keys of their own.
        if let Some(a) = self.poison_action(table, span, "poisoned_descriptions", false) {
            mcp.poisoned_descriptions = a;
        }
        mcp.poisoned_schemas = self
            .poison_action(table, span, "poisoned_schemas", false)
            .unwrap_or(mcp.poisoned_descriptions);
        mcp.poisoned_annotations = self
            .poison_action(table, span, "poisoned_annotations", false)
            .unwrap_or(mcp.poisoned_descriptions);
        if let Some(a) = self.poison_action(table, span, "poisoned_prompts", false) {
            mcp.poisoned_prompts = a;
        }
        if let Some(a) = self.poison_action(table, span, "poisoned_results", true) {
            mcp.poisoned_results = a;
        }
        if let Some(v) = table.get("control_characters") {
            let (_, s) = entry(table, "control_characters", span);
            let key = "mcp.control_characters";
            match self.string(v, &s, key) {
                Some("strip") => mcp.control_characters = ControlAction::Strip,
                Some("visible") => mcp.control_characters = ControlAction::Visible,
                Some("keep") => mcp.control_characters = ControlAction::Keep,
                Some(o) => self.error(&s, key, format!("{o:?} is not one of strip, visible, keep")),
                None => {}
            }
        }
        if let Some(v) = table.get("secret_shapes") {
            let (_, s) = entry(table, "secret_shapes", span);
            mcp.secret_shapes = self.secret_shapes(v, &s);
        }
        if let Some(v) = table.get("pii") {
            let (_, s) = entry(table, "pii", span);
            mcp.pii = self.pii(v, &s);
        }
        if let Some(v) = table.get("hook") {
            let (_, s) = entry(table, "hook", span);
            mcp.hook = self.hook(v, &s);
        }
        mcp
    }

    /// `[mcp] <key> = "block" | "strip" | "alert"` (and `"fail"` where `fail` is allowed).
    fn poison_action(
        &mut self,
        table: &dyn toml_edit::TableLike,
        span: &Span,
        name: &str,
        fail: bool,
    ) -> Option<PoisonAction> {
        let v = table.get(name)?;
        let (_, s) = entry(table, name, span);
        let key = format!("mcp.{name}");
        let one_of = if fail {
            "block, strip, alert, fail"
        } else {
            "block, strip, alert"
        };
        match self.string(v, &s, &key)? {
            "block" => Some(PoisonAction::Block),
            "strip" => Some(PoisonAction::Strip),
            "alert" => Some(PoisonAction::Alert),
            "fail" if fail => Some(PoisonAction::Fail),
            o => {
                self.error(&s, &key, format!("{o:?} is not one of {one_of}"));
                None
            }
        }
    }

    fn secret_shapes(&mut self, item: &Item, span: &Span) -> SecretShapes {
        let mut out = SecretShapes::default();
        let path = "mcp.secret_shapes";
        let Some(table) = self.table(
            item,
            span,
            path,
            &["enabled", "in_arguments", "in_results", "ignore"],
        ) else {
            return out;
        };
        if let Some(v) = table.get("enabled") {
            let (_, s) = entry(table, "enabled", span);
            if let Some(b) = self.boolean(v, &s, &join(path, "enabled")) {
                out.enabled = b;
            }
        }
        for (key, slot) in [
            ("in_arguments", &mut out.in_arguments),
            ("in_results", &mut out.in_results),
        ] {
            if let Some(v) = table.get(key) {
                let (_, s) = entry(table, key, span);
                let k = join(path, key);
                match self.string(v, &s, &k) {
                    Some("deny") => *slot = ShapeAction::Deny,
                    Some("redact") => *slot = ShapeAction::Redact,
                    Some("alert") => *slot = ShapeAction::Alert,
                    Some(o) => {
                        self.error(&s, &k, format!("{o:?} is not one of deny, redact, alert"));
                    }
                    None => {}
                }
            }
        }
        if let Some(v) = table.get("ignore") {
            let (_, s) = entry(table, "ignore", span);
            for (name, n_span, n_path) in self.strings(v, &s, &join(path, "ignore")) {
                if self.is_secret_rule_name(name) {
                    out.ignore.push(name.to_string());
                } else {
                    let origin = self.secret_rules_origin();
                    self.error(
                        &n_span,
                        &n_path,
                        format!("unknown secret rule {name:?}: not a rule id or tag of {origin}"),
                    );
                }
            }
        }
        out
    }

    fn pii(&mut self, item: &Item, span: &Span) -> Vec<String> {
        let path = "mcp.pii";
        let Some(table) = self.table(item, span, path, &["enabled", "kinds"]) else {
            return Vec::new();
        };
        let mut enabled = false;
        if let Some(v) = table.get("enabled") {
            let (_, s) = entry(table, "enabled", span);
            enabled = self.boolean(v, &s, &join(path, "enabled")).unwrap_or(false);
        }
        let mut kinds: Vec<String> = PII_KINDS
            .iter()
            .map(std::string::ToString::to_string)
            .collect();
        if let Some(v) = table.get("kinds") {
            let (_, s) = entry(table, "kinds", span);
            kinds.clear();
            for (k, k_span, k_path) in self.strings(v, &s, &join(path, "kinds")) {
                if PII_KINDS.contains(&k) {
                    kinds.push(k.to_string());
                } else {
                    self.error(
                        &k_span,
                        &k_path,
                        format!("unknown PII kind {k:?} (one of: {})", PII_KINDS.join(", ")),
                    );
                }
            }
        }
        if enabled { kinds } else { Vec::new() }
    }

    fn hook(&mut self, item: &Item, span: &Span) -> Option<Hook> {
        let path = "mcp.hook";
        let table = self.table(
            item,
            span,
            path,
            &["command", "args", "timeout_ms", "results", "fail_closed"],
        )?;
        let mut hook = Hook {
            command: PathBuf::new(),
            args: Vec::new(),
            timeout_ms: DEFAULT_HOOK_TIMEOUT_MS,
            results: false,
            fail_closed: true,
        };
        let mut ok = true;
        match table.get("command") {
            None => {
                self.error(
                    span,
                    &join(path, "command"),
                    "missing: the program to run, as an absolute path",
                );
                ok = false;
            }
            Some(v) => {
                let (_, s) = entry(table, "command", span);
                let key = join(path, "command");
                match self.string(v, &s, &key) {
                    Some(c) if c.starts_with('/') && !has_dot_dot(c) => hook.command = c.into(),
                    Some(c) => {
                        self.error(
                            &s,
                            &key,
                            format!("{c:?} must be an absolute path without '..'"),
                        );
                        ok = false;
                    }
                    None => ok = false,
                }
            }
        }
        if let Some(v) = table.get("args") {
            let (_, s) = entry(table, "args", span);
            hook.args = self
                .strings(v, &s, &join(path, "args"))
                .into_iter()
                .map(|(a, _, _)| a.to_string())
                .collect();
        }
        if let Some(v) = table.get("timeout_ms") {
            let (_, s) = entry(table, "timeout_ms", span);
            match v.as_integer() {
                Some(n) if (1..=MAX_HOOK_TIMEOUT_MS).contains(&n) => {
                    hook.timeout_ms = u64::try_from(n).unwrap_or(DEFAULT_HOOK_TIMEOUT_MS);
                }
                _ => self.error(
                    &s,
                    &join(path, "timeout_ms"),
                    format!(
                        "expected milliseconds from 1 to {MAX_HOOK_TIMEOUT_MS}, found {}",
                        describe(v)
                    ),
                ),
            }
        }
        for (key, flag) in [
            ("results", &mut hook.results),
            ("fail_closed", &mut hook.fail_closed),
        ] {
            if let Some(v) = table.get(key) {
                let (_, s) = entry(table, key, span);
                if let Some(b) = self.boolean(v, &s, &join(path, key)) {
                    *flag = b;
                }
            }
        }
        ok.then_some(hook)
    }
}
#[cfg(test)]
mod tests {
    use std::path::Path;

    use super::*;
    use crate::{parse, tool_args::ArgCheck};

    fn ok(text: &str) -> crate::Policy {
        parse(text, None).unwrap_or_else(|e| panic!("policy should be valid:\n{e}"))
    }

    #[track_caller]
    fn one_problem(text: &str, line: usize, key: &str, msg: &str) {
        let e = parse(text, Some(Path::new("t.toml"))).expect_err("policy should be invalid");
        assert_eq!(e.problems.len(), 1, "expected one problem, got:\n{e}");
        let p = &e.problems[0];
        assert_eq!((p.line, p.key.as_str()), (line, key), "wrong place:\n{e}");
        assert!(p.message.contains(msg), "{:?} lacks {msg:?}", p.message);
        assert!(e.to_string().starts_with(&format!("t.toml:{line}:")), "{e}");
    }

    #[test]
    fn defaults_are_the_safe_ones() {
        let p = ok("name = \"x\"\n");
        assert!(p.tools.validate_schema && p.tools.clients.is_empty() && p.tools.args.is_empty());
        assert_eq!(p.mcp, Mcp::default());
        assert_eq!(p.mcp.secret_shapes.in_arguments, ShapeAction::Deny);
        assert_eq!(p.mcp.secret_shapes.in_results, ShapeAction::Redact);
        assert!(p.mcp.secret_shapes.enabled && p.mcp.pii.is_empty() && p.mcp.hook.is_none());
        assert!(!p.has_mcp_rules());
    }

    #[test]
    fn every_mcp_key_parses_into_the_model() {
        let p = ok(r#"name = "x"
[tools]
validate_schema = false
[tools.clients]
"Claude Desktop" = ["read"]
[tools.args.read]
path = { path_prefix = ["/srv/data", "/home/u"], max_length = 200 }
mode = { enum = ["a", 2, true] }
id = { regex = "[a-z]+" }
[mcp]
max_message_size = "64K"
poisoned_descriptions = "strip"
poisoned_annotations = "alert"
poisoned_prompts = "alert"
poisoned_results = "fail"
control_characters = "visible"
[mcp.secret_shapes]
enabled = true
in_arguments = "redact"
in_results = "alert"
ignore = ["jwt"]
[mcp.pii]
enabled = true
kinds = ["email", "card-number"]
[mcp.hook]
command = "/usr/local/bin/hook"
args = ["-v"]
timeout_ms = 300
results = true
fail_closed = false
"#);
        assert!(!p.tools.validate_schema && p.has_mcp_rules());
        assert_eq!(p.tools.clients["Claude Desktop"].tools, vec!["read"]);
        let rules = &p.tools.args["read"];
        let checks: Vec<(&str, &ArgCheck)> =
            rules.iter().map(|r| (r.arg.as_str(), &r.check)).collect();
        assert_eq!(
            checks,
            vec![
                (
                    "path",
                    &ArgCheck::PathPrefix(vec!["/srv/data".into(), "/home/u".into()])
                ),
                ("path", &ArgCheck::MaxLength(200)),
                (
                    "mode",
                    &ArgCheck::Enum(vec!["a".into(), 2.into(), true.into()])
                ),
                ("id", &ArgCheck::Regex("[a-z]+".into())),
            ]
        );
        assert_eq!(p.mcp.max_message_size, 64 << 10);
        assert_eq!(p.mcp.poisoned_descriptions, PoisonAction::Strip);
        assert_eq!(
            p.mcp.poisoned_schemas,
            PoisonAction::Strip,
            "follows descriptions"
        );
        assert_eq!(p.mcp.poisoned_annotations, PoisonAction::Alert);
        assert_eq!(p.mcp.poisoned_prompts, PoisonAction::Alert);
        assert_eq!(p.mcp.poisoned_results, PoisonAction::Fail);
        assert_eq!(p.mcp.control_characters, ControlAction::Visible);
        assert_eq!(
            p.mcp.secret_shapes,
            SecretShapes {
                enabled: true,
                in_arguments: ShapeAction::Redact,
                in_results: ShapeAction::Alert,
                ignore: vec!["jwt".into()],
            }
        );
        assert_eq!(p.mcp.pii, vec!["email", "card-number"]);
        assert_eq!(
            p.mcp.hook,
            Some(Hook {
                command: "/usr/local/bin/hook".into(),
                args: vec!["-v".into()],
                timeout_ms: 300,
                results: true,
                fail_closed: false,
            })
        );
        // PII on without kinds means every kind; off means none even with kinds.
        assert_eq!(
            ok("name = \"x\"\n[mcp.pii]\nenabled = true\n")
                .mcp
                .pii
                .len(),
            PII_KINDS.len()
        );
        assert!(
            ok("name = \"x\"\n[mcp.pii]\nkinds = [\"email\"]\n")
                .mcp
                .pii
                .is_empty()
        );
    }

    #[test]
    fn bad_mcp_keys_are_located_errors() {
        let n = "name = \"x\"\n";
        one_problem(
            &format!("{n}[mcp]\nmax_size = 1\n"),
            3,
            "mcp.max_size",
            "unknown key",
        );
        one_problem(
            &format!("{n}[tools]\nclient = {{}}\n"),
            3,
            "tools.client",
            "unknown key",
        );
        one_problem(
            &format!("{n}[tools.args.read]\npath = {{ prefix = [\"/a\"] }}\n"),
            3,
            "tools.args.read.path.prefix",
            "unknown key",
        );
        one_problem(
            &format!("{n}[tools.args.read]\nid = {{ regex = \"(\" }}\n"),
            3,
            "tools.args.read.id.regex",
            "not a valid regex",
        );
        one_problem(
            &format!("{n}[tools.args.read]\npath = {{ path_prefix = [\"rel/dir\"] }}\n"),
            3,
            "tools.args.read.path.path_prefix[0]",
            "absolute path",
        );
        one_problem(
            &format!("{n}[tools.args.read]\nq = {{ max_length = 0 }}\n"),
            3,
            "tools.args.read.q.max_length",
            "positive",
        );
        one_problem(
            &format!("{n}[tools.args.read]\nq = {{ enum = [] }}\n"),
            3,
            "tools.args.read.q.enum",
            "non-empty",
        );
        one_problem(
            &format!("{n}[tools.args.read]\nq = {{}}\n"),
            3,
            "tools.args.read.q",
            "no check given",
        );
        one_problem(
            &format!("{n}[tools.clients]\nide = [\"a b\"]\n"),
            3,
            "tools.clients.ide[0]",
            "not a tool name",
        );
        one_problem(
            &format!("{n}[mcp]\nmax_message_size = \"1K\"\n"),
            3,
            "mcp.max_message_size",
            "out of range",
        );
        one_problem(
            &format!("{n}[mcp]\npoisoned_descriptions = \"ignore\"\n"),
            3,
            "mcp.poisoned_descriptions",
            "block, strip, alert",
        );
        one_problem(
            &format!("{n}[mcp]\npoisoned_schemas = \"fail\"\n"),
            3,
            "mcp.poisoned_schemas",
            "block, strip, alert",
        );
        one_problem(
            &format!("{n}[mcp]\npoisoned_results = \"hide\"\n"),
            3,
            "mcp.poisoned_results",
            "block, strip, alert, fail",
        );
        one_problem(
            &format!("{n}[mcp]\ncontrol_characters = \"drop\"\n"),
            3,
            "mcp.control_characters",
            "strip, visible, keep",
        );
        one_problem(
            &format!("{n}[mcp.secret_shapes]\nin_results = \"drop\"\n"),
            3,
            "mcp.secret_shapes.in_results",
            "deny, redact, alert",
        );
        one_problem(
            &format!("{n}[mcp.secret_shapes]\nignore = [\"passwords\"]\n"),
            3,
            "mcp.secret_shapes.ignore[0]",
            "unknown secret rule",
        );
        one_problem(
            &format!("{n}[mcp.pii]\nenabled = true\nkinds = [\"iban\"]\n"),
            4,
            "mcp.pii.kinds[0]",
            "unknown PII kind",
        );
        one_problem(
            &format!("{n}[mcp.hook]\ncommand = \"hook.sh\"\n"),
            3,
            "mcp.hook.command",
            "absolute path",
        );
        one_problem(
            &format!("{n}[mcp.hook]\ncommand = \"/bin/h\"\ntimeout_ms = 0\n"),
            4,
            "mcp.hook.timeout_ms",
            "milliseconds",
        );
        one_problem(
            &format!("{n}[mcp.hook]\nargs = []\n"),
            2,
            "mcp.hook.command",
            "missing",
        );
    }
}
