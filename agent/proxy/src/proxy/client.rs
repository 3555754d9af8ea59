//! A frame from the client: the common path that forwards a line without parsing it, and the
//! full path that parses, runs the chain on each message and tracks requests as calls.

use serde_json::Value;

use super::{
    outbox::{Outbox, Side, line},
    relist::calls_a_tool,
    state::{MessageAction, ProxyState, ctx_for, error_value, reply_id, run_chain},
};
use crate::{
    audit,
    frame::{self, Frame, Kind},
    interceptors::{Denial, InterceptOutcome, MsgKind, Peeked},
    session::{CallSink, Decision},
};

impl<K: CallSink> ProxyState<K> {
    pub(super) fn on_client_frame(&mut self, frame: Frame, out: &mut Outbox) {
        let raw = match frame {
            Frame::Line(raw) => raw,
            Frame::Oversized { len, head, tail } => {
                self.stats.malformed_from_client += 1;
                let msg = format!(
                    "mcp-guard: message of {len} bytes exceeds the limit of {} bytes",
                    self.max
                );
                tracing::warn!("from the client: {msg}");
                let id = crate::ids::oversized_id(&head, &tail).unwrap_or(Value::Null);
                out.queue(
                    Side::Client,
                    line(frame::error_response(&id, frame::PARSE_ERROR, &msg, None)),
                );
                return;
            }
        };
        if raw.iter().all(u8::is_ascii_whitespace) {
            return;
        }
        // The common path (nothing held for a re-list, which needs the parsed frame).
        if self.relists.is_empty() && self.held.is_empty() && self.client_peeked(&raw) {
            out.push_line(Side::Server, raw);
            return;
        }
        let parsed = match frame::parse_strict(&raw) {
            Ok(v) => v,
            Err(e) => {
                self.stats.malformed_from_client += 1;
                tracing::warn!("from the client: {e}");
                out.queue(
                    Side::Client,
                    line(crate::ids::refusal(
                        &raw,
                        e.code(),
                        &format!("mcp-guard: {e}"),
                    )),
                );
                return;
            }
        };
        if !self.relists.is_empty()
            && !self.relist_overdue
            && (!self.held.is_empty() || calls_a_tool(&parsed))
        {
            self.hold_started |= self.held.is_empty();
            self.held.push_back((raw, parsed));
            return;
        }
        self.on_client_value(raw, parsed, out);
    }

    /// A parsed client frame: each message through [`ProxyState::on_client_message`], the output queued.
    pub(super) fn on_client_value(&mut self, raw: Vec<u8>, parsed: Value, out: &mut Outbox) {
        match parsed {
            Value::Array(items) => {
                if items.is_empty() {
                    self.stats.malformed_from_client += 1;
                    out.queue(
                        Side::Client,
                        line(frame::error_response(
                            &Value::Null,
                            frame::INVALID_REQUEST,
                            "mcp-guard: empty batch",
                            None,
                        )),
                    );
                    return;
                }
                let actions: Vec<MessageAction> = items
                    .into_iter()
                    .map(|v| self.on_client_message(v))
                    .collect();
                Self::emit_batch(out, raw, actions, Side::Server);
            }
            v => {
                let action = self.on_client_message(v);
                Self::emit_one(out, raw, action, Side::Server);
            }
        }
    }
    /// The common path for a client line: a plain request or notification that every stage
    /// passes without seeing it parsed is tracked like [`ProxyState::on_client_message`] tracks it, and true
    /// is returned (the caller forwards the line). False, with nothing done: the full path takes
    /// the line (a batch, an odd or malformed message, a response to a server request, one the
    /// proxy reads itself, or one a stage wants to see).
    pub(super) fn client_peeked(&mut self, raw: &[u8]) -> bool {
        let Some(p) = self.peeker.peek(raw) else {
            return false;
        };
        let Some(method) = p.method.as_deref() else {
            return false;
        };
        // `initialize` records the client's details, a cancellation ends a call.
        if method == "initialize" || method == "notifications/cancelled" {
            return false;
        }
        let ProxyState {
            session,
            chain,
            sink,
            stats,
            audit: audit_config,
            ..
        } = self;
        let tool = if method == "tools/call" {
            p.tool.as_deref()
        } else {
            None
        };
        let ctx = ctx_for(
            session,
            method,
            tool,
            if p.id.is_some() {
                MsgKind::Request
            } else {
                MsgKind::Notification
            },
        );
        let peeked = Peeked {
            raw,
            escaped: memchr::memchr(b'\\', raw).is_some(),
            arguments: p.arguments.as_ref(),
        };
        if !chain.pre_passes(&ctx, &peeked) {
            return false;
        }
        stats.client_messages += 1;
        if let Some(id) = &p.id {
            let mut pending = session.client_request_peeked(id.key(), method, tool);
            pending.capture = audit::request(audit_config, method, tool, raw, &p.spans);
            sink.call_started(&pending.call_id, pending.tool.as_deref());
            session.track(pending);
        }
        true
    }

    pub(super) fn on_client_message(&mut self, mut v: Value) -> MessageAction {
        self.stats.client_messages += 1;
        let kind = match frame::classify(&v) {
            Ok(k) => k,
            Err(e) => {
                self.stats.malformed_from_client += 1;
                tracing::warn!("from the client: {e}");
                return MessageAction::AnswerClient(error_value(
                    &reply_id(&v),
                    e.code(),
                    &format!("mcp-guard: {e}"),
                ));
            }
        };
        let ProxyState {
            session,
            chain,
            sink,
            stats,
            observe,
            refuse_calls,
            audit: audit_config,
            ..
        } = self;
        match kind {
            Kind::Request { id, method } => {
                let mut pending = session.client_request(&id, &method, &v);
                pending.capture =
                    audit::request_value(audit_config, &method, pending.tool.as_deref(), &v);
                let mut ctx = ctx_for(session, &method, pending.tool.as_deref(), MsgKind::Request);
                let verdict = match refuse_calls.as_deref() {
                    Some(why) if method == "tools/call" => {
                        InterceptOutcome::Deny(Denial::policy(why.to_string()))
                    }
                    _ => run_chain(chain, &mut ctx, &mut v, true, *observe),
                };
                let findings = std::mem::take(&mut ctx.findings);
                for (rule, tool, summary) in findings {
                    sink.finding(session.finding(&rule, tool.as_deref(), summary));
                }
                let action = match verdict {
                    InterceptOutcome::Pass => MessageAction::Forward(v),
                    InterceptOutcome::Modified(why) => {
                        stats.modified += 1;
                        pending.modified = Some(why);
                        MessageAction::ForwardChanged(v)
                    }
                    InterceptOutcome::Deny(d) => {
                        // Refused: never in flight, ended here.
                        stats.denied += 1;
                        sink.call(session.complete(
                            pending,
                            Decision::Denied,
                            d.message.clone(),
                            None,
                        ));
                        return MessageAction::AnswerClient(error_value(&id, d.code, &d.message));
                    }
                };
                sink.call_started(&pending.call_id, pending.tool.as_deref());
                session.track(pending);
                action
            }
            Kind::Notification { method } => {
                if method == "notifications/cancelled"
                    && let Some(rid) = v.pointer("/params/requestId")
                {
                    let why = v.pointer("/params/reason").and_then(Value::as_str);
                    if let Some(rec) = session.cancel(rid, why) {
                        sink.call(rec);
                    }
                }
                let mut ctx = ctx_for(session, &method, None, MsgKind::Notification);
                match run_chain(chain, &mut ctx, &mut v, true, *observe) {
                    InterceptOutcome::Pass => MessageAction::Forward(v),
                    InterceptOutcome::Modified(_) => MessageAction::ForwardChanged(v),
                    InterceptOutcome::Deny(_) => MessageAction::Drop,
                }
            }
            Kind::Response { id } => {
                let method = session.server_request_done(&id).unwrap_or_default();
                let mut ctx = ctx_for(session, &method, None, MsgKind::Response);
                match run_chain(chain, &mut ctx, &mut v, true, *observe) {
                    InterceptOutcome::Pass => MessageAction::Forward(v),
                    InterceptOutcome::Modified(_) => MessageAction::ForwardChanged(v),
                    InterceptOutcome::Deny(d) => {
                        MessageAction::AnswerServer(error_value(&id, d.code, &d.message))
                    }
                }
            }
        }
    }
}
