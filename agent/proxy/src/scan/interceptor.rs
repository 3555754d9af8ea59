//! The scanner as a proxy stage: tool, prompt and resource listings, the server's
//! `instructions`, and every tool result, each channel with the policy's action.
//!
//! The client's other tools are what the proxy can know of them: the tools pinned in the shared
//! state dir by every other (policy, server) that has run there. A server's tools are never
//! hidden for sharing a name with those; a look-alike name or text that steers them is a finding.

use std::{collections::HashMap, path::PathBuf};

use serde_json::Value;

use super::{
    Channel, Neighbours,
    screen::Screen,
    walk::{self, Controls, Flag},
};
use crate::interceptors::{
    Ctx, Denial, InterceptOutcome, Interceptor, MsgKind, Peeked, retain_tools,
};
use mcp_guard_model::names::StateKey;

/// What to do with a poisoned channel.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord)]
pub enum Action {
    /// Report only.
    Alert,
    /// Take the poisoned text out (the finding shows what); what cannot go is blocked.
    Strip,
    /// Hide the tool, prompt or resource and refuse its use; a result is withheld (the client
    /// gets an error result naming the reason).
    #[default]
    Block,
    /// Results only: fail the call with a JSON-RPC error naming the reason.
    Fail,
}

/// The scanner's settings (plain data, from the policy's `[mcp]` keys).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ScanConfig {
    /// Tool names, titles, descriptions; the server's instructions.
    pub definitions: Action,
    /// `inputSchema` / `outputSchema`.
    pub schema: Action,
    /// Tool annotations.
    pub annotations: Action,
    /// Prompt and resource listings.
    pub prompts: Action,
    /// Tool results and read resources.
    pub results: Action,
    /// Terminal escapes and control characters in what the server sends.
    pub controls: Controls,
    /// The shared state dir and this server's key there: every other pinned server's tools.
    pub state: Option<(PathBuf, StateKey)>,
    /// Other servers' tools given directly, as (server, tool).
    pub foreign: Vec<(String, String)>,
}

impl Default for ScanConfig {
    fn default() -> Self {
        Self {
            definitions: Action::Block,
            schema: Action::Block,
            annotations: Action::Block,
            prompts: Action::Block,
            results: Action::Strip,
            controls: Controls::Strip,
            state: None,
            foreign: Vec::new(),
        }
    }
}

impl ScanConfig {
    fn action(&self, c: Channel) -> Action {
        match c {
            Channel::Definitions => self.definitions,
            Channel::Schema => self.schema,
            Channel::Annotations => self.annotations,
            Channel::Prompts => self.prompts,
            Channel::Results => self.results,
        }
    }
}

/// The interceptor.
pub struct ScanInterceptor {
    config: ScanConfig,
    neighbours: Neighbours,
    screen: Screen,
    /// Tools, prompts and resources refused, with why.
    blocked: HashMap<String, String>,
}

impl ScanInterceptor {
    /// An interceptor with `config`; the other servers' tools are read from the state dir now and at
    /// every `tools/list`.
    pub fn new(config: ScanConfig) -> Self {
        let mut g = Self {
            screen: Screen::new(std::iter::empty()),
            neighbours: Neighbours::default(),
            blocked: HashMap::new(),
            config,
        };
        g.reload();
        g
    }

    fn reload(&mut self) {
        let mut foreign = self.config.foreign.clone();
        if let Some((dir, key)) = &self.config.state {
            for other in crate::pins::keys(dir).unwrap_or_default() {
                if other == *key {
                    continue;
                }
                if let Ok(f) = crate::pins::load(dir, &other) {
                    foreign.extend(f.tools.keys().map(|t| (other.server.clone(), t.clone())));
                }
            }
        }
        foreign.sort();
        foreign.dedup();
        if foreign != self.neighbours.foreign {
            self.screen = Screen::new(foreign.iter().map(|(_, t)| t.as_str()));
            self.neighbours.foreign = foreign;
        }
    }

    /// Reports a finding. Every occurrence: the store keeps one alert per session, rule, tool
    /// and summary and counts the repeats (a listing fetched again, the same poisoned result).
    fn report(ctx: &mut Ctx<'_>, rule: &str, tool: Option<&str>, summary: String) {
        ctx.report(rule, tool, summary);
    }

    /// Scans one listed tool; reports; returns why it must be hidden, if it must.
    fn tool(&mut self, ctx: &mut Ctx<'_>, tool: &mut Value, changed: &mut bool) -> Option<String> {
        let name = tool
            .get("name")
            .and_then(Value::as_str)
            .unwrap_or("")
            .to_string();
        let flags = super::scan_tool(tool, &self.neighbours);
        let shadowing = flags.iter().any(|f| f.scan.about_other_servers);
        self.neutralise(ctx, Some(&name), tool, changed);
        if flags.is_empty() {
            return None;
        }
        let rule = if shadowing {
            "tool-shadowing"
        } else {
            "tool-poisoning"
        };
        let what = describe(&flags);
        let summary = format!("tool {name:?} has a poisoned {what}");
        let brief = format!("tool {name:?} has a poisoned {}", channels(&flags));
        self.act(
            ctx,
            rule,
            Some(&name),
            (summary, brief),
            tool,
            &flags,
            changed,
        )
    }

    /// Applies the strictest action of the flagged channels to `v`; returns why it is blocked,
    /// for the client. The report gets `summary` (with the evidence); the client only `brief`,
    /// since quoting the evidence would hand the model the very text that was kept from it.
    #[expect(
        clippy::too_many_arguments,
        reason = "the channels' verdict, both texts and where they go; a struct would only be built to be taken apart"
    )]
    fn act(
        &mut self,
        ctx: &mut Ctx<'_>,
        rule: &str,
        tool: Option<&str>,
        (summary, brief): (String, String),
        v: &mut Value,
        flags: &[Flag],
        changed: &mut bool,
    ) -> Option<String> {
        let action = flags
            .iter()
            .map(|f| self.config.action(f.spot.channel))
            .max()
            .unwrap_or(Action::Alert);
        match action {
            Action::Alert => {
                Self::report(ctx, rule, tool, format!("{summary}; passed (alert only)"));
                None
            }
            Action::Strip => {
                if let Some(removed) = walk::strip(v, flags, &self.neighbours) {
                    *changed = true;
                    Self::report(
                        ctx,
                        rule,
                        tool,
                        format!("{summary}; stripped: {}", removed.join("; ")),
                    );
                    None
                } else {
                    Self::report(
                        ctx,
                        rule,
                        tool,
                        format!("{summary}; blocked (cannot be stripped)"),
                    );
                    Some(brief)
                }
            }
            Action::Block | Action::Fail => {
                Self::report(ctx, rule, tool, format!("{summary}; blocked"));
                Some(brief)
            }
        }
    }

    /// Neutralises escapes in `v`; reports text a terminal would have hidden.
    fn neutralise(
        &mut self,
        ctx: &mut Ctx<'_>,
        tool: Option<&str>,
        v: &mut Value,
        changed: &mut bool,
    ) -> bool {
        if self.config.controls == Controls::Keep {
            return false;
        }
        let mut hidden = Vec::new();
        crate::secrets::for_each_string(v, &mut |s| {
            if super::ansi::has_controls(s) {
                for h in super::ansi::render(s).hidden {
                    if !h.text.is_empty() {
                        hidden.push(format!("{:?}: {:?}", h.how, h.text));
                    }
                }
            }
        });
        if walk::neutralise(v, self.config.controls) {
            *changed = true;
            if !hidden.is_empty() {
                let verb = if self.config.controls == Controls::Strip {
                    "removed"
                } else {
                    "made visible"
                };
                Self::report(
                    ctx,
                    "hidden-text",
                    tool,
                    format!(
                        "terminal escapes in the server's {} {verb}; a terminal would have hidden {}",
                        ctx.method,
                        hidden.join(", ")
                    ),
                );
            }
            return true;
        }
        false
    }

    fn listing(
        &mut self,
        ctx: &mut Ctx<'_>,
        msg: &mut Value,
        key: &str,
        id: &str,
    ) -> InterceptOutcome {
        let Some(items) = msg
            .pointer_mut(&format!("/result/{key}"))
            .and_then(Value::as_array_mut)
        else {
            return InterceptOutcome::Pass;
        };
        let mut changed = false;
        let mut hide = Vec::new();
        for item in items.iter_mut() {
            let name = item
                .get(id)
                .and_then(Value::as_str)
                .unwrap_or("")
                .to_string();
            let flags = walk::scan(item, &walk::listing_spots(item), &self.neighbours);
            self.neutralise(ctx, None, item, &mut changed);
            if flags.is_empty() {
                self.blocked.remove(&name);
                continue;
            }
            let kind = key.trim_end_matches('s');
            let summary = format!("{kind} {name:?} has a poisoned {}", describe(&flags));
            let brief = format!("{kind} {name:?} has a poisoned {}", channels(&flags));
            match self.act(
                ctx,
                "prompt-poisoning",
                None,
                (summary, brief),
                item,
                &flags,
                &mut changed,
            ) {
                Some(why) => {
                    self.blocked.insert(name.clone(), why);
                    hide.push(name);
                }
                None => {
                    self.blocked.remove(&name);
                }
            }
        }
        items.retain(|i| {
            !hide
                .iter()
                .any(|h| Some(h.as_str()) == i.get(id).and_then(Value::as_str))
        });
        verdict(changed || !hide.is_empty(), &hide)
    }

    fn result(&mut self, ctx: &mut Ctx<'_>, msg: &mut Value) -> InterceptOutcome {
        let tool = ctx.tool.map(String::from);
        let part = if msg.get("error").is_some() {
            "error"
        } else {
            "result"
        };
        let what = match &tool {
            Some(t) => format!("result of tool {t:?}"),
            None => format!("answer to {}", ctx.method),
        };
        let mut changed = false;
        let Some(body) = msg.get_mut(part) else {
            return InterceptOutcome::Pass;
        };
        let flags = walk::scan(body, &walk::result_spots(body), &self.neighbours);
        if !flags.is_empty() {
            let summary = format!("the {what} is poisoned: {}", reasons(&flags));
            let brief = format!("the {what} is poisoned (the alert names what was found)");
            if self.config.results == Action::Fail {
                Self::report(
                    ctx,
                    "result-poisoning",
                    tool.as_deref(),
                    format!("{summary}; the call failed"),
                );
                return InterceptOutcome::Deny(Denial::policy(format!(
                    "mcp-guard: refused: {brief}"
                )));
            }
            if let Some(why) = self.act(
                ctx,
                "result-poisoning",
                tool.as_deref(),
                (summary, brief),
                body,
                &flags,
                &mut changed,
            ) {
                let id = msg.get("id").cloned().unwrap_or(Value::Null);
                *msg = serde_json::json!({"jsonrpc": "2.0", "id": id, "result": {
                    "content": [{"type": "text", "text": format!("mcp-guard withheld this result: {why}")}],
                    "isError": true,
                }});
                return InterceptOutcome::Modified(format!("withheld the {what}"));
            }
        }
        if let Some(body) = msg.get_mut(part) {
            self.neutralise(ctx, tool.as_deref(), body, &mut changed);
        }
        verdict(changed, &[])
    }
}

fn verdict(changed: bool, hidden: &[String]) -> InterceptOutcome {
    if !hidden.is_empty() {
        InterceptOutcome::Modified(format!("hid {}", hidden.join(", ")))
    } else if changed {
        InterceptOutcome::Modified("scanned text neutralised or stripped".into())
    } else {
        InterceptOutcome::Pass
    }
}

/// "description (score 2.1: reason; reason)", per flagged channel.
fn describe(flags: &[Flag]) -> String {
    format!("{}: {}", channels(flags), reasons(flags))
}

/// "description and schema": the flagged channels.
fn channels(flags: &[Flag]) -> String {
    let mut channels: Vec<Channel> = flags.iter().map(|f| f.spot.channel).collect();
    channels.sort();
    channels.dedup();
    let names: Vec<&str> = channels.iter().map(|c| c.name()).collect();
    names.join(" and ")
}

fn reasons(flags: &[Flag]) -> String {
    let mut out: Vec<String> = Vec::new();
    for f in flags {
        let at = match &f.spot.key {
            Some(k) => format!("key {k:?}"),
            None => f.spot.pointer.trim_start_matches('/').replace('/', "."),
        };
        out.push(format!(
            "{at} (score {:.1}: {})",
            f.scan.score,
            f.scan.reasons.join("; ")
        ));
    }
    out.join("; ")
}

impl Interceptor for ScanInterceptor {
    fn name(&self) -> &'static str {
        "scan"
    }

    fn pre_passes(&mut self, ctx: &Ctx<'_>, _msg: &Peeked<'_>) -> bool {
        ctx.kind != MsgKind::Request
            || match ctx.method {
                "tools/call" => ctx.tool.is_none_or(|t| !self.blocked.contains_key(t)),
                "prompts/get" | "resources/read" => self.blocked.is_empty(),
                _ => true,
            }
    }

    fn pre_call(&mut self, ctx: &mut Ctx<'_>, msg: &mut Value) -> InterceptOutcome {
        if ctx.kind != MsgKind::Request {
            return InterceptOutcome::Pass;
        }
        let key = match ctx.method {
            "tools/call" | "prompts/get" => msg.pointer("/params/name"),
            "resources/read" => msg.pointer("/params/uri"),
            _ => None,
        };
        match key
            .and_then(Value::as_str)
            .and_then(|k| self.blocked.get(k))
        {
            Some(why) => {
                InterceptOutcome::Deny(Denial::policy(format!("mcp-guard: refused: {why}")))
            }
            None => InterceptOutcome::Pass,
        }
    }

    fn post_passes(&mut self, ctx: &Ctx<'_>, msg: &Peeked<'_>) -> bool {
        match (ctx.kind, ctx.method) {
            (MsgKind::Response, "tools/call" | "resources/read") => {
                !self.screen.might_match(msg.raw)
            }
            (
                MsgKind::Response,
                "tools/list"
                | "prompts/list"
                | "resources/list"
                | "resources/templates/list"
                | "initialize",
            ) => false,
            _ => true,
        }
    }

    fn post_call(&mut self, ctx: &mut Ctx<'_>, msg: &mut Value) -> InterceptOutcome {
        if ctx.kind != MsgKind::Response {
            return InterceptOutcome::Pass;
        }
        match ctx.method {
            "tools/call" | "resources/read" => self.result(ctx, msg),
            "prompts/list" => self.listing(ctx, msg, "prompts", "name"),
            "resources/list" => self.listing(ctx, msg, "resources", "uri"),
            "resources/templates/list" => {
                self.listing(ctx, msg, "resourceTemplates", "uriTemplate")
            }
            "initialize" => self.instructions(ctx, msg),
            "tools/list" => {
                self.reload();
                let Some(tools) = msg.pointer("/result/tools").and_then(Value::as_array) else {
                    return InterceptOutcome::Pass;
                };
                self.neighbours.own = tools
                    .iter()
                    .filter_map(|t| t.get("name").and_then(Value::as_str).map(String::from))
                    .collect();
                let mut changed = false;
                let mut hide = Vec::new();
                if let Some(tools) = msg
                    .pointer_mut("/result/tools")
                    .and_then(Value::as_array_mut)
                {
                    for tool in tools.iter_mut() {
                        let name = tool
                            .get("name")
                            .and_then(Value::as_str)
                            .unwrap_or("")
                            .to_string();
                        match self.tool(ctx, tool, &mut changed) {
                            Some(why) => {
                                self.blocked.insert(name.clone(), why);
                                hide.push(name);
                            }
                            None => {
                                self.blocked.remove(&name);
                            }
                        }
                    }
                }
                retain_tools(msg, |t| {
                    !hide
                        .iter()
                        .any(|h| Some(h.as_str()) == t.get("name").and_then(Value::as_str))
                });
                verdict(changed, &hide)
            }
            _ => InterceptOutcome::Pass,
        }
    }
}

impl ScanInterceptor {
    /// The server's `instructions` (read by many clients as part of the system prompt).
    fn instructions(&mut self, ctx: &mut Ctx<'_>, msg: &mut Value) -> InterceptOutcome {
        let Some(result) = msg.get_mut("result") else {
            return InterceptOutcome::Pass;
        };
        let spots: Vec<walk::Spot> = match result.get("instructions") {
            Some(Value::String(_)) => vec![walk::Spot {
                pointer: "/instructions".into(),
                key: None,
                channel: Channel::Definitions,
                role: super::Role::Prose,
                suggested: false,
            }],
            _ => return InterceptOutcome::Pass,
        };
        let flags = walk::scan(result, &spots, &self.neighbours);
        let mut changed = false;
        if !flags.is_empty() {
            let summary = format!(
                "the server's instructions are poisoned: {}",
                reasons(&flags)
            );
            if self
                .act(
                    ctx,
                    "tool-poisoning",
                    None,
                    (summary, String::new()),
                    result,
                    &flags,
                    &mut changed,
                )
                .is_some()
                && let Some(m) = result.as_object_mut()
            {
                m.remove("instructions");
                changed = true;
            }
        }
        if let Some(i) = result.get_mut("instructions") {
            self.neutralise(ctx, None, i, &mut changed);
        }
        verdict(changed, &[])
    }
}
