//! A frame from the server: the common path, the full path that ends calls with their
//! records, and failing a client's request whose answer was lost or that the analysis denies.

use serde_json::Value;

use super::{
    outbox::{Outbox, Side, line, to_line},
    state::{MessageAction, ProxyState, ctx_for, error_value, run_chain, tool_hints},
};
use crate::{
    audit,
    frame::{self, Frame, Kind},
    interceptors::{InterceptOutcome, MsgKind, Peeked},
    session::{CallDenial, CallSink, Decision},
};

impl<K: CallSink> ProxyState<K> {
    pub(super) fn on_server_frame(&mut self, frame: Frame, out: &mut Outbox) {
        let raw = match frame {
            Frame::Line(raw) => {
                self.frame_len = raw.len();
                raw
            }
            Frame::Oversized { len, head, tail } => {
                self.stats.malformed_from_server += 1;
                let msg = format!(
                    "mcp-guard: the server's message of {len} bytes exceeds the limit of {} bytes",
                    self.max
                );
                tracing::warn!("{msg}; dropped");
                self.fail_pending(crate::ids::oversized_id(&head, &tail), &msg, out);
                return;
            }
        };
        if raw.iter().all(u8::is_ascii_whitespace) {
            return;
        }
        if self.server_peeked(&raw) {
            out.push_line(Side::Client, raw);
        } else {
            let parsed = match frame::parse_strict(&raw) {
                Ok(v) => v,
                Err(e) => {
                    self.stats.malformed_from_server += 1;
                    tracing::warn!("malformed output from the server dropped: {e}");
                    let msg = format!("mcp-guard: the server sent a malformed message: {e}");
                    // A request of the server's own is answered; a response fails the client's
                    // request it answers (each of a batch).
                    if crate::ids::has_method(&raw) {
                        out.queue(
                            Side::Server,
                            line(crate::ids::refusal(&raw, e.code(), &msg)),
                        );
                    } else {
                        let ids = crate::ids::message_id(&raw)
                            .map_or_else(|| crate::ids::batch_ids(&raw), |id| vec![id]);
                        for id in ids {
                            self.fail_pending(Some(id), &msg, out);
                        }
                    }
                    return;
                }
            };
            match parsed {
                Value::Array(items) if !items.is_empty() => {
                    let actions: Vec<MessageAction> = items
                        .into_iter()
                        .map(|v| self.on_server_message(v))
                        .collect();
                    Self::emit_batch(out, raw, actions, Side::Client);
                }
                v => {
                    let action = self.on_server_message(v);
                    Self::emit_one(out, raw, action, Side::Client);
                }
            }
        }
        // The proxy's own requests (re-listing) go after what this frame produced.
        if !self.to_server.is_empty() {
            for request in self.to_server.drain(..) {
                out.queue(Side::Server, request);
            }
        }
        // The re-list is answered and checked: the held calls meet the new definitions.
        if !self.held.is_empty() && self.relists.is_empty() {
            self.release_held(out, None);
        }
    }

    /// The common path for a server line: a response or notification that every stage passes
    /// without seeing it parsed ends its call like [`ProxyState::on_server_message`] does, and true is
    /// returned (the caller forwards the line). False, with nothing done: the full path takes it
    /// (see [`ProxyState::client_peeked`]; also answers to the proxy's own re-list, late answers to
    /// failed calls, and `tools/list` and `initialize` answers, which the proxy reads).
    pub(super) fn server_peeked(&mut self, raw: &[u8]) -> bool {
        let Some(p) = self.peeker.peek(raw) else {
            return false;
        };
        let ProxyState {
            session,
            chain,
            sink,
            stats,
            relists,
            failed,
            frame_len,
            response_key: key,
            ..
        } = self;
        let peeked = Peeked {
            raw,
            escaped: memchr::memchr(b'\\', raw).is_some(),
            arguments: None,
        };
        match (&p.id, p.method.as_deref()) {
            (Some(id), None) => {
                id.write_key(key);
                let key = key.as_str();
                if relists.contains(key) || failed.contains(key) {
                    return false;
                }
                let (method, tool) = match session.in_flight_request(key) {
                    Some(pending) => (pending.method.as_str(), pending.tool.as_deref()),
                    None => ("", None),
                };
                if method == "initialize" || method == "tools/list" {
                    return false;
                }
                let ctx = ctx_for(session, method, tool, MsgKind::Response);
                if !chain.post_passes(&ctx, &peeked) {
                    return false;
                }
                stats.server_messages += 1;
                if let Some(pending) = session.take_key(key) {
                    let mut rec = session.complete(pending, Decision::Allowed, String::new(), None);
                    rec.result_bytes = Some(*frame_len as u64);
                    audit::response(&mut rec.capture, raw, p.spans.result);
                    sink.call(rec);
                }
                true
            }
            (None, Some(method)) => {
                if method == "notifications/tools/list_changed" {
                    return false;
                }
                let ctx = ctx_for(session, method, None, MsgKind::Notification);
                if !chain.post_passes(&ctx, &peeked) {
                    return false;
                }
                stats.server_messages += 1;
                true
            }
            // Requests from the server are tracked by the full path.
            _ => false,
        }
    }

    /// Fails call `d.call_id` if it is still in flight: an error to the client, a
    /// `notifications/cancelled` to the server, and its late response dropped when it comes.
    pub(super) fn deny_call(&mut self, d: &CallDenial, out: &mut Outbox) {
        let Some(id) = self.session.request_for_call(&d.call_id) else {
            tracing::debug!("call {} already ended; nothing to deny", d.call_id);
            return;
        };
        let Some(rec) = self
            .session
            .finish(&id, Decision::Denied, d.reason.clone(), None)
        else {
            return;
        };
        self.sink.call(rec);
        self.stats.denied += 1;
        self.failed.insert(id.to_string());
        let cancel = serde_json::json!({
            "jsonrpc": "2.0",
            "method": "notifications/cancelled",
            "params": {"requestId": id, "reason": d.reason},
        });
        out.queue(
            Side::Client,
            to_line(&error_value(
                &id,
                crate::interceptors::POLICY_DENIED,
                &d.reason,
            )),
        );
        out.queue(Side::Server, to_line(&cancel));
    }

    /// Answers the client's pending request `id` with an error (when its response was lost).
    pub(super) fn fail_pending(&mut self, id: Option<Value>, msg: &str, out: &mut Outbox) {
        let Some(id) = id else { return };
        if let Some(rec) = self
            .session
            .finish(&id, Decision::Denied, msg.to_string(), None)
        {
            self.sink.call(rec);
            self.failed.insert(id.to_string());
            out.queue(
                Side::Client,
                line(frame::error_response(&id, frame::INTERNAL_ERROR, msg, None)),
            );
        }
    }

    pub(super) fn on_server_message(&mut self, mut v: Value) -> MessageAction {
        self.stats.server_messages += 1;
        let kind = match frame::classify(&v) {
            Ok(k) => k,
            Err(e) => {
                self.stats.malformed_from_server += 1;
                tracing::warn!("invalid message from the server dropped: {e}");
                return MessageAction::Drop;
            }
        };
        if let Kind::Response { id } = &kind
            && !self.relists.is_empty()
            && self.relists.remove(&id.to_string())
        {
            self.check_relisted(v);
            if self.relists.is_empty() {
                self.relist_since = None;
                self.relist_overdue = false;
            }
            return MessageAction::Drop;
        }
        if let Kind::Notification { method } = &kind
            && method == "notifications/tools/list_changed"
        {
            self.relist(None);
        }
        if let Kind::Response { id } = &kind
            && !self.failed.is_empty()
            && self.failed.remove(&id.to_string())
        {
            tracing::warn!(
                "late response to request {id} dropped: the client already got an error"
            );
            return MessageAction::Drop;
        }
        let ProxyState {
            session,
            chain,
            sink,
            stats,
            observe,
            frame_len,
            ..
        } = self;
        // A response ends its request: taken out of the session now (one lookup), its method
        // and tool borrowed for the chain, and completed with the verdict below.
        let (pending, msg_kind, id, own_method) = match kind {
            Kind::Response { id } => (session.take(&id), MsgKind::Response, Some(id), None),
            Kind::Request { id, method } => {
                session.server_request(&id, &method);
                (None, MsgKind::Request, Some(id), Some(method))
            }
            Kind::Notification { method } => (None, MsgKind::Notification, None, Some(method)),
        };
        let method: &str = match (&pending, &own_method) {
            (Some(p), _) => &p.method,
            (None, Some(m)) => m,
            // A response to no request the proxy knows of.
            (None, None) => "",
        };
        // What the server says about itself, as it said it (before the chain changes it).
        if pending.is_some()
            && let Some(fact) = audit::server_fact(method, &v)
        {
            sink.server_fact(fact);
        }
        let mut ctx = ctx_for(
            session,
            method,
            pending.as_ref().and_then(|p| p.tool.as_deref()),
            msg_kind,
        );
        let verdict = run_chain(chain, &mut ctx, &mut v, false, *observe);
        let findings = std::mem::take(&mut ctx.findings);
        for (rule, tool, summary) in findings {
            sink.finding(session.finding(&rule, tool.as_deref(), summary));
        }
        let (decision, reason) = match &verdict {
            InterceptOutcome::Pass => (Decision::Allowed, String::new()),
            InterceptOutcome::Modified(why) => {
                stats.modified += 1;
                (Decision::Modified, why.clone())
            }
            InterceptOutcome::Deny(d) => {
                stats.denied += 1;
                (Decision::Denied, d.message.clone())
            }
        };
        if msg_kind == MsgKind::Response
            && method == "tools/list"
            && !matches!(verdict, InterceptOutcome::Deny(_))
        {
            sink.tools_listed(&tool_hints(&v));
        }
        if let Some(p) = pending {
            let mut rec = session.complete(p, decision, reason, Some(&v));
            rec.result_bytes = Some(*frame_len as u64);
            audit::response_value(&mut rec.capture, &v);
            sink.call(rec);
        }
        match (verdict, msg_kind, id) {
            (InterceptOutcome::Pass, ..) => MessageAction::Forward(v),
            (InterceptOutcome::Modified(_), ..) => MessageAction::ForwardChanged(v),
            (InterceptOutcome::Deny(d), MsgKind::Response, Some(id)) => {
                MessageAction::AnswerClient(error_value(&id, d.code, &d.message))
            }
            (InterceptOutcome::Deny(d), MsgKind::Request, Some(id)) => {
                MessageAction::AnswerServer(error_value(&id, d.code, &d.message))
            }
            (InterceptOutcome::Deny(_), ..) => MessageAction::Drop,
        }
    }
}
