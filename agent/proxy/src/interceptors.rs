//! The interceptor trait and chain, and the tool allowlist/denylist with per-client scoping.
//!
//! An interceptor sees every parsed message: `pre_call` for what the client sends, `post_call`
//! for what the server sends. It may pass, change the message in place, or deny it. The chain
//! stops at the first denial.

use std::path::PathBuf;

use serde_json::Value;

use super::client_scope::ClientScopes;

/// JSON-RPC error code used for every policy refusal (server-defined range).
pub const POLICY_DENIED: i64 = -32001;

/// What kind of message an interceptor is looking at.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum MsgKind {
    /// A request (expects an answer).
    Request,
    /// A notification.
    Notification,
    /// A response; `Ctx::method` is the method of the request it answers.
    Response,
}

/// What an interceptor knows about the message it is looking at.
#[derive(Debug)]
pub struct Ctx<'a> {
    /// Server name.
    pub server: &'a str,
    /// `clientInfo.name` from `initialize`, once seen.
    pub client_name: Option<&'a str>,
    /// The method (of the request, for a response; empty when the request is unknown).
    pub method: &'a str,
    /// The tool, for `tools/call` and its response.
    pub tool: Option<&'a str>,
    /// Request, notification or response.
    pub kind: MsgKind,
    /// Findings to report (rule, tool, summary); the proxy forwards them to the sink.
    pub findings: Vec<(String, Option<String>, String)>,
}

impl Ctx<'_> {
    /// Reports a finding.
    pub fn report(&mut self, rule: &str, tool: Option<&str>, summary: String) {
        tracing::warn!(server = self.server, rule, tool, "{summary}");
        self.findings
            .push((rule.into(), tool.map(Into::into), summary));
    }
}

/// A refusal, answered to the client as a JSON-RPC error.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Denial {
    /// The JSON-RPC error code.
    pub code: i64,
    /// The message (names the policy and how to get past it).
    pub message: String,
}

impl Denial {
    /// A policy refusal with [`POLICY_DENIED`].
    pub fn policy(message: String) -> Self {
        Self {
            code: POLICY_DENIED,
            message,
        }
    }
}

/// An interceptor's answer for one message (not the kernel event's `Verdict` of the model).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum InterceptOutcome {
    /// Untouched.
    Pass,
    /// Changed in place; the reason says how.
    Modified(String),
    /// Refused.
    Deny(Denial),
}

/// A message the proxy has not parsed: its line and what it read from it (see
/// [`super::peek`]), for the stages to rule themselves out without the parsed message.
#[derive(Debug)]
pub struct Peeked<'a> {
    /// The message's line as received (without its newline).
    pub raw: &'a [u8],
    /// The line has a backslash: some string in it is escaped, so its value is not the same
    /// bytes as in the line (a pattern absent from the line may still be in a string).
    pub escaped: bool,
    /// `params.arguments`, parsed, when present.
    pub arguments: Option<&'a Value>,
}

/// One stage of policy applied to messages.
pub trait Interceptor: Send {
    /// A short name for logs.
    fn name(&self) -> &'static str;
    /// True when [`Interceptor::pre_call`] would pass this client message untouched and report
    /// nothing, decided without the parsed message. When every stage says so the proxy forwards
    /// the line without building it; otherwise it parses the message and runs `pre_call`. The
    /// default, `false`, is always correct.
    fn pre_passes(&mut self, _ctx: &Ctx<'_>, _msg: &Peeked<'_>) -> bool {
        false
    }
    /// The same for [`Interceptor::post_call`] and a server message.
    fn post_passes(&mut self, _ctx: &Ctx<'_>, _msg: &Peeked<'_>) -> bool {
        false
    }
    /// A message from the client, before it reaches the server.
    fn pre_call(&mut self, _ctx: &mut Ctx<'_>, _msg: &mut Value) -> InterceptOutcome {
        InterceptOutcome::Pass
    }
    /// A message from the server, before it reaches the client.
    fn post_call(&mut self, _ctx: &mut Ctx<'_>, _msg: &mut Value) -> InterceptOutcome {
        InterceptOutcome::Pass
    }
}

/// Interceptors applied in order.
#[derive(Default)]
pub struct Chain {
    stages: Vec<Box<dyn Interceptor>>,
}

impl Chain {
    /// An empty chain (passes everything).
    pub fn new() -> Self {
        Self::default()
    }
    /// Appends a stage.
    pub fn push(&mut self, stage: Box<dyn Interceptor>) {
        self.stages.push(stage);
    }
    /// Number of stages.
    pub fn len(&self) -> usize {
        self.stages.len()
    }
    /// True when there are no stages.
    pub fn is_empty(&self) -> bool {
        self.stages.is_empty()
    }
    /// True when every stage's `pre_passes` holds for `msg`.
    pub fn pre_passes(&mut self, ctx: &Ctx<'_>, msg: &Peeked<'_>) -> bool {
        self.stages.iter_mut().all(|s| s.pre_passes(ctx, msg))
    }
    /// True when every stage's `post_passes` holds for `msg`.
    pub fn post_passes(&mut self, ctx: &Ctx<'_>, msg: &Peeked<'_>) -> bool {
        self.stages.iter_mut().all(|s| s.post_passes(ctx, msg))
    }
    /// Runs `pre_call` of every stage.
    pub fn pre_call(&mut self, ctx: &mut Ctx<'_>, msg: &mut Value) -> InterceptOutcome {
        self.run(ctx, msg, true)
    }
    /// Runs `post_call` of every stage.
    pub fn post_call(&mut self, ctx: &mut Ctx<'_>, msg: &mut Value) -> InterceptOutcome {
        self.run(ctx, msg, false)
    }
    fn run(&mut self, ctx: &mut Ctx<'_>, msg: &mut Value, pre: bool) -> InterceptOutcome {
        let mut why: Vec<String> = Vec::new();
        for stage in &mut self.stages {
            let v = if pre {
                stage.pre_call(ctx, msg)
            } else {
                stage.post_call(ctx, msg)
            };
            match v {
                InterceptOutcome::Pass => {}
                InterceptOutcome::Modified(r) => why.push(format!("{}: {r}", stage.name())),
                InterceptOutcome::Deny(d) => {
                    tracing::info!(stage = stage.name(), server = ctx.server, "{}", d.message);
                    return InterceptOutcome::Deny(d);
                }
            }
        }
        if why.is_empty() {
            InterceptOutcome::Pass
        } else {
            InterceptOutcome::Modified(why.join("; "))
        }
    }
}

/// Which tools are visible and callable.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ToolRules {
    /// The policy name, quoted in refusals.
    pub policy: String,
    /// If set, only these tools (`[tools] allow`).
    pub allow: Option<Vec<String>>,
    /// Never these (`[tools] deny`); wins over allow.
    pub deny: Vec<String>,
    /// `[tools.clients]`: the client's rule narrows what it sees (on top of allow/deny).
    pub per_client: ClientScopes,
    /// The executable the session's client runs from (read from `/proc`), when known.
    pub client_exe: Option<PathBuf>,
}

impl ToolRules {
    /// Why `tool` is not available to `client`, or `None` when it is.
    pub fn refusal(&self, tool: &str, client: Option<&str>) -> Option<String> {
        if self.deny.iter().any(|t| t == tool) {
            return Some(format!(
                "tool {tool:?} is denied by policy {:?} ([tools] deny)",
                self.policy
            ));
        }
        if let Some(allow) = &self.allow
            && !allow.iter().any(|t| t == tool)
        {
            return Some(format!(
                "tool {tool:?} is not in the allowlist of policy {:?} ([tools] allow)",
                self.policy
            ));
        }
        if let Some(scope) = self.per_client.scope(client, self.client_exe.as_deref())
            && !scope.tools.iter().any(|t| t == tool)
        {
            let exe = self
                .client_exe
                .as_ref()
                .map_or_else(|| "executable unknown".into(), |e| e.display().to_string());
            return Some(format!(
                "tool {tool:?} is not available to client {:?} ({exe}) under policy {:?} \
                 ([tools.clients] rule {:?})",
                client.unwrap_or(""),
                self.policy,
                scope.rule
            ));
        }
        None
    }

    /// True when no rule could refuse anything.
    pub fn is_open(&self) -> bool {
        self.allow.is_none() && self.deny.is_empty() && self.per_client.is_empty()
    }
}

/// The allowlist/denylist interceptor: filters `tools/list`, refuses `tools/call`.
pub struct ToolAccess {
    rules: ToolRules,
}

impl ToolAccess {
    /// An interceptor enforcing `rules`.
    pub fn new(rules: ToolRules) -> Self {
        Self { rules }
    }
}

impl Interceptor for ToolAccess {
    fn name(&self) -> &'static str {
        "tool-access"
    }

    fn pre_passes(&mut self, ctx: &Ctx<'_>, _msg: &Peeked<'_>) -> bool {
        !(ctx.kind == MsgKind::Request && ctx.method == "tools/call")
            || self
                .rules
                .refusal(ctx.tool.unwrap_or(""), ctx.client_name)
                .is_none()
    }

    fn pre_call(&mut self, ctx: &mut Ctx<'_>, _msg: &mut Value) -> InterceptOutcome {
        if ctx.kind == MsgKind::Request
            && ctx.method == "tools/call"
            && let Some(why) = self.rules.refusal(ctx.tool.unwrap_or(""), ctx.client_name)
        {
            return InterceptOutcome::Deny(Denial::policy(format!("mcp-guard: {why}")));
        }
        InterceptOutcome::Pass
    }

    fn post_passes(&mut self, ctx: &Ctx<'_>, _msg: &Peeked<'_>) -> bool {
        ctx.kind != MsgKind::Response || ctx.method != "tools/list" || self.rules.is_open()
    }

    fn post_call(&mut self, ctx: &mut Ctx<'_>, msg: &mut Value) -> InterceptOutcome {
        if ctx.kind != MsgKind::Response || ctx.method != "tools/list" || self.rules.is_open() {
            return InterceptOutcome::Pass;
        }
        let client = ctx.client_name;
        let hidden = retain_tools(msg, |t| {
            let name = t.get("name").and_then(Value::as_str).unwrap_or("");
            self.rules.refusal(name, client).is_none()
        });
        if hidden.is_empty() {
            InterceptOutcome::Pass
        } else {
            InterceptOutcome::Modified(format!("hid {}", hidden.join(", ")))
        }
    }
}

/// Keeps the tools of a `tools/list` response for which `keep` holds; returns the names removed.
pub fn retain_tools(msg: &mut Value, mut keep: impl FnMut(&Value) -> bool) -> Vec<String> {
    let mut removed = Vec::new();
    if let Some(tools) = msg
        .pointer_mut("/result/tools")
        .and_then(Value::as_array_mut)
    {
        tools.retain(|t| {
            let k = keep(t);
            if !k {
                removed.push(t.get("name").and_then(Value::as_str).unwrap_or("").into());
            }
            k
        });
    }
    removed
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn ctx<'a>(
        method: &'a str,
        tool: Option<&'a str>,
        kind: MsgKind,
        client: Option<&'a str>,
    ) -> Ctx<'a> {
        Ctx {
            server: "s",
            client_name: client,
            method,
            tool,
            kind,
            findings: vec![],
        }
    }

    fn rules() -> ToolRules {
        ToolRules {
            policy: "p".into(),
            allow: Some(vec!["a".into(), "b".into(), "c".into()]),
            deny: vec!["c".into()],
            per_client: ClientScopes::by_name([("narrow", vec!["a".to_string()])]),
            client_exe: None,
        }
    }

    #[test]
    fn deny_wins_allow_limits_client_narrows() {
        let r = rules();
        assert_eq!(r.refusal("a", None), None);
        assert!(
            r.refusal("c", None)
                .expect("denied")
                .contains("[tools] deny")
        );
        assert!(
            r.refusal("z", None)
                .expect("not allowed")
                .contains("allowlist")
        );
        assert!(
            r.refusal("b", Some("narrow"))
                .expect("scoped")
                .contains("narrow")
        );
        assert_eq!(r.refusal("b", Some("other")), None);
    }

    #[test]
    fn filters_list_and_refuses_call() {
        let mut t = ToolAccess::new(rules());
        let mut list = json!({"jsonrpc":"2.0","id":1,"result":{"tools":[
            {"name":"a"},{"name":"b"},{"name":"c"},{"name":"z"}]}});
        let v = t.post_call(
            &mut ctx("tools/list", None, MsgKind::Response, None),
            &mut list,
        );
        assert_eq!(v, InterceptOutcome::Modified("hid c, z".into()));
        assert_eq!(list["result"]["tools"], json!([{"name":"a"},{"name":"b"}]));

        let mut call = json!({});
        let v = t.pre_call(
            &mut ctx("tools/call", Some("c"), MsgKind::Request, None),
            &mut call,
        );
        assert!(
            matches!(v, InterceptOutcome::Deny(d) if d.code == POLICY_DENIED && d.message.contains("\"p\""))
        );
        let v = t.pre_call(
            &mut ctx("tools/call", Some("a"), MsgKind::Request, None),
            &mut call,
        );
        assert_eq!(v, InterceptOutcome::Pass);
    }
}
