//! What both directions of the proxy share (the session's calls, the chain, the sink, the
//! counters, the re-list state), and the helpers every handler uses: running the chain, the
//! interceptors' view of a message, queuing a handled message's output.

use std::{collections::VecDeque, sync::Mutex, time::Instant};

use serde_json::Value;

use super::{
    ProxyOutcome,
    outbox::{Outbox, Side, to_vec},
};
use crate::{
    interceptors::{Chain, Ctx, InterceptOutcome, MsgKind},
    peek::Peeker,
    session::{CallSink, Session},
};

/// What both directions of the proxy share, behind one lock: the session's calls, the
/// interceptor chain, the sink, the counters, and the state of the proxy's own re-list.
pub(super) struct ProxyState<K> {
    pub(super) session: Session,
    pub(super) chain: Chain,
    pub(super) sink: K,
    pub(super) stats: ProxyOutcome,
    pub(super) max: usize,
    /// Client requests the proxy already answered with an error after the server's response was
    /// unreadable; a late valid response to them is dropped so the client gets one answer.
    pub(super) failed: std::collections::HashSet<String>,
    pub(super) observe: bool,
    /// Size of the server frame being handled (a response's `result_bytes`).
    pub(super) frame_len: usize,
    /// Ids of the proxy's own `tools/list` requests (sent when the server announces
    /// `notifications/tools/list_changed`); their responses are checked, never forwarded.
    pub(super) relists: std::collections::HashSet<String>,
    pub(super) relist_seq: u64,
    /// When the re-list in flight began (its first page was asked for).
    pub(super) relist_since: Option<Instant>,
    /// The re-list took longer than [`RELIST_WAIT`](super::relist::RELIST_WAIT): client messages are no longer held for it
    /// (its answer, if it comes, is still checked).
    pub(super) relist_overdue: bool,
    /// Client frames (raw, parsed) held while a re-list is in flight: each frame with a
    /// `tools/call`, and every frame after one (the client's order is kept). A call must not
    /// reach the server before the re-listed definitions are checked: a changed tool is blocked
    /// by that check. Released when the re-list's last page has been checked.
    pub(super) held: VecDeque<(Vec<u8>, Value)>,
    /// Set when a frame starts being held (the watchdog then times the hold).
    pub(super) hold_started: bool,
    /// While releasing held frames after an overdue re-list: why their tool calls are refused.
    pub(super) refuse_calls: Option<String>,
    /// The proxy's own requests to the server, sent after the current server frame's output.
    pub(super) to_server: Vec<Vec<u8>>,
    /// Reads the common messages without parsing them (its scratch space kept).
    pub(super) peeker: Peeker,
    /// A response's id as the session's key, rebuilt in place for every response.
    pub(super) response_key: String,
    pub(super) audit: crate::audit::AuditConfig,
}

/// The id to answer an invalid message with: its own if it has a usable one, else null.
pub(super) fn reply_id(v: &Value) -> Value {
    match v.get("id") {
        Some(id @ (Value::String(_) | Value::Number(_))) => id.clone(),
        _ => Value::Null,
    }
}

/// What the proxy does with one message once the chain has judged it.
pub(super) enum MessageAction {
    /// Pass it on to the other side as it came (its original bytes when it is alone in its frame).
    Forward(Value),
    /// Pass it on changed (re-serialized).
    ForwardChanged(Value),
    /// Answer the client in its place (an error to a refused request).
    AnswerClient(Value),
    /// Answer the server in its place (an error to a refused server request).
    AnswerServer(Value),
    /// Nothing goes anywhere.
    Drop,
}

impl<K: CallSink> ProxyState<K> {
    /// Queues the output of a single (non-batch) message. Forwarded untouched, its original
    /// bytes go through (the common case: no re-serialization, no copy).
    pub(super) fn emit_one(out: &mut Outbox, raw: Vec<u8>, action: MessageAction, forward: Side) {
        match action {
            MessageAction::Forward(_) => out.push_line(forward, raw),
            MessageAction::ForwardChanged(v) => out.push_line(forward, to_vec(&v)),
            MessageAction::AnswerClient(v) => out.push_line(Side::Client, to_vec(&v)),
            MessageAction::AnswerServer(v) => out.push_line(Side::Server, to_vec(&v)),
            MessageAction::Drop => {}
        }
    }

    /// Queues the output of a JSON-RPC batch: the forwarded elements as one batch (the original
    /// bytes when every element is forwarded unchanged), and the proxy's own answers to each
    /// side as another.
    pub(super) fn emit_batch(
        out: &mut Outbox,
        raw: Vec<u8>,
        actions: Vec<MessageAction>,
        forward: Side,
    ) {
        let untouched = actions
            .iter()
            .all(|s| matches!(s, MessageAction::Forward(_)));
        let mut fwd = Vec::new();
        let mut to_client = Vec::new();
        let mut to_server = Vec::new();
        for s in actions {
            match s {
                MessageAction::Forward(v) | MessageAction::ForwardChanged(v) => fwd.push(v),
                MessageAction::AnswerClient(v) => to_client.push(v),
                MessageAction::AnswerServer(v) => to_server.push(v),
                MessageAction::Drop => {}
            }
        }
        if !fwd.is_empty() {
            let bytes = if untouched {
                raw
            } else {
                to_vec(&Value::Array(fwd))
            };
            out.push_line(forward, bytes);
        }
        if !to_client.is_empty() {
            out.push_line(Side::Client, to_vec(&Value::Array(to_client)));
        }
        if !to_server.is_empty() {
            out.push_line(Side::Server, to_vec(&Value::Array(to_server)));
        }
    }
}

/// The interceptors' view of a message of `session`.
pub(super) fn ctx_for<'a>(
    session: &'a Session,
    method: &'a str,
    tool: Option<&'a str>,
    kind: MsgKind,
) -> Ctx<'a> {
    Ctx {
        server: &session.server,
        client_name: session.client_name.as_deref(),
        method,
        tool,
        kind,
        findings: vec![],
    }
}

/// The tools a `tools/list` result (as forwarded) offers, with their `readOnlyHint`.
pub(super) fn tool_hints(v: &Value) -> Vec<(String, bool)> {
    let Some(tools) = v.pointer("/result/tools").and_then(Value::as_array) else {
        return vec![];
    };
    tools
        .iter()
        .filter_map(|t| {
            let name = t.get("name")?.as_str()?.to_string();
            let read_only = t.pointer("/annotations/readOnlyHint") == Some(&Value::Bool(true));
            Some((name, read_only))
        })
        .collect()
}

/// Runs the chain; in observe mode on a copy, reporting instead of acting.
pub(super) fn run_chain(
    chain: &mut Chain,
    ctx: &mut Ctx<'_>,
    v: &mut Value,
    pre: bool,
    observe: bool,
) -> InterceptOutcome {
    let run = |chain: &mut Chain, ctx: &mut Ctx<'_>, v: &mut Value| {
        if pre {
            chain.pre_call(ctx, v)
        } else {
            chain.post_call(ctx, v)
        }
    };
    if !observe {
        return run(chain, ctx, v);
    }
    let mut copy = v.clone();
    let would = match run(chain, ctx, &mut copy) {
        InterceptOutcome::Pass => return InterceptOutcome::Pass,
        InterceptOutcome::Modified(why) => format!("would have modified {}: {why}", ctx.method),
        InterceptOutcome::Deny(d) => format!("would have refused {}: {}", ctx.method, d.message),
    };
    let tool = ctx.tool;
    ctx.report("observe", tool, would);
    InterceptOutcome::Pass
}

pub(super) fn error_value(id: &Value, code: i64, message: &str) -> Value {
    serde_json::json!({"jsonrpc": "2.0", "id": id, "error": {"code": code, "message": message}})
}

pub(super) fn lock<K>(state: &Mutex<ProxyState<K>>) -> std::sync::MutexGuard<'_, ProxyState<K>> {
    // A panic inside an interceptor must not wedge the other direction.
    state
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
}
