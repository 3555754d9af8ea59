//! One MCP session's state: what `initialize` said, the requests in flight in both directions,
//! and the call records emitted when a client request ends (answered, denied or cancelled).

use std::{
    collections::HashMap,
    time::{Duration, Instant, SystemTime},
};

use super::{audit::CallCapture, audit::ServerFact, frame::member, peek::push_decimal};
use mcp_guard_model::timestamp::Timestamp;
use serde::Serialize;
use serde_json::Value;

/// What the proxy did with a call: the contract's decision.
pub use mcp_guard_model::Decision;

/// One client request from start to end, as plain data (the store persists these).
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct CallRecord {
    /// Unique id of this call (`<session>-<n>`).
    pub call_id: String,
    /// Server name.
    pub server: String,
    /// Session id.
    pub session: String,
    /// JSON-RPC method.
    pub method: String,
    /// Tool name for `tools/call`.
    pub tool: Option<String>,
    /// The JSON-RPC id as the client sent it, rendered as JSON text.
    pub request_id: String,
    /// When the request was read (RFC 3339 with nanoseconds in JSON). Kept as the instant, not
    /// its text: formatting it for every call cost more than the rest of the record.
    pub started_at: Timestamp,
    /// When the call ended.
    pub ended_at: Timestamp,
    /// What was done.
    pub decision: Decision,
    /// Why (empty when allowed without remark).
    pub reason: String,
    /// Bytes of the server's message that carried the response (`None`: no response reached
    /// the proxy, e.g. refused or cancelled). For a batch it is the whole batch's size.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub result_bytes: Option<u64>,
    /// How long the call took, from the request read to the answer (or refusal) decided,
    /// measured on the monotonic clock (for `mcp_guard_tool_call_duration_seconds`).
    #[serde(serialize_with = "as_seconds")]
    pub duration: Duration,
    /// What the history keeps of its arguments and result, as copied (`None`: nothing).
    #[serde(skip)]
    pub capture: Option<CallCapture>,
}

impl CallRecord {
    /// The call's duration in seconds, as Prometheus histograms take it.
    pub fn duration_seconds(&self) -> f64 {
        self.duration.as_secs_f64()
    }
}

/// The stored form of a call (what the proxy captured of it goes to the store separately:
/// take [`CallRecord::capture`] first).
impl From<CallRecord> for mcp_guard_model::CallRecord {
    fn from(r: CallRecord) -> Self {
        mcp_guard_model::CallRecord {
            call_id: r.call_id,
            server: r.server,
            session: r.session,
            method: r.method,
            tool: r.tool,
            request_id: r.request_id,
            started_at: r.started_at,
            ended_at: Some(r.ended_at),
            decision: r.decision,
            reason: Some(r.reason).filter(|s| !s.is_empty()),
            error: None,
            result_bytes: r.result_bytes,
            audit: None,
        }
    }
}

fn as_seconds<S: serde::Serializer>(d: &Duration, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_f64(d.as_secs_f64())
}

/// What an interceptor reports: the contract's finding, which exec's analysis makes an alert.
pub use mcp_guard_model::Finding;

/// Where call records and findings go (exec records them in the store).
pub trait CallSink: Send {
    /// A client request was forwarded to the server: its call is in flight from now on.
    fn call_started(&mut self, _call_id: &str, _tool: Option<&str>) {}
    /// A call ended: answered, refused, cancelled or lost. Every client request ends here exactly
    /// once, so the record's `server`, `tool`, `decision` and `duration` are all that
    /// `mcp_guard_tool_calls_total{server,tool,decision}` and
    /// `mcp_guard_tool_call_duration_seconds{server,tool}` need.
    fn call(&mut self, record: CallRecord);
    /// An interceptor reported something.
    fn finding(&mut self, finding: Finding);
    /// The server said something about itself (its `initialize` answer, a `tools/list`).
    fn server_fact(&mut self, _fact: ServerFact) {}
    /// A `tools/list` answer reached the client: each tool's name and whether it is annotated
    /// `readOnlyHint: true` (exec's detector checks such tools do not write). One call per page.
    fn tools_listed(&mut self, _tools: &[(String, bool)]) {}
    /// Calls to fail from outside the proxy (exec's detector fired a `deny-call` rule on what a
    /// call did in the kernel). Taken once when the proxy starts; `None`: nothing outside fails
    /// calls.
    fn take_call_denials(&mut self) -> Option<tokio::sync::mpsc::UnboundedReceiver<CallDenial>> {
        None
    }
}

/// A request from outside the proxy to fail one in-flight call: the client gets a JSON-RPC
/// error carrying `reason`, the server a `notifications/cancelled`, and its late answer is dropped.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CallDenial {
    /// The call (`CallRecord::call_id`).
    pub call_id: String,
    /// Why, shown to the client and recorded as the call's reason.
    pub reason: String,
}

/// Keeps everything in memory (for embedding and tests).
#[derive(Debug, Default)]
pub struct MemorySink {
    /// Calls in the order they ended.
    pub calls: Vec<CallRecord>,
    /// Findings in order.
    pub findings: Vec<Finding>,
}

impl CallSink for MemorySink {
    fn call(&mut self, record: CallRecord) {
        self.calls.push(record);
    }
    fn finding(&mut self, finding: Finding) {
        self.findings.push(finding);
    }
}

impl<T: CallSink + ?Sized> CallSink for Box<T> {
    fn call_started(&mut self, call_id: &str, tool: Option<&str>) {
        (**self).call_started(call_id, tool);
    }
    fn call(&mut self, record: CallRecord) {
        (**self).call(record);
    }
    fn finding(&mut self, finding: Finding) {
        (**self).finding(finding);
    }
    fn server_fact(&mut self, fact: ServerFact) {
        (**self).server_fact(fact);
    }
    fn tools_listed(&mut self, tools: &[(String, bool)]) {
        (**self).tools_listed(tools);
    }
    fn take_call_denials(&mut self) -> Option<tokio::sync::mpsc::UnboundedReceiver<CallDenial>> {
        (**self).take_call_denials()
    }
}

impl<T: CallSink> CallSink for std::sync::Arc<std::sync::Mutex<T>> {
    fn call_started(&mut self, call_id: &str, tool: Option<&str>) {
        self.lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .call_started(call_id, tool);
    }
    fn call(&mut self, record: CallRecord) {
        self.lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .call(record);
    }
    fn finding(&mut self, finding: Finding) {
        self.lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .finding(finding);
    }
    fn server_fact(&mut self, fact: ServerFact) {
        self.lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .server_fact(fact);
    }
    fn tools_listed(&mut self, tools: &[(String, bool)]) {
        self.lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .tools_listed(tools);
    }
    fn take_call_denials(&mut self) -> Option<tokio::sync::mpsc::UnboundedReceiver<CallDenial>> {
        self.lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .take_call_denials()
    }
}

/// A client request in flight.
#[derive(Clone, Debug)]
pub struct Pending {
    /// Its call id.
    pub call_id: String,
    /// The method.
    pub method: String,
    /// The tool for `tools/call`.
    pub tool: Option<String>,
    /// The id as JSON text.
    pub request_id: String,
    /// When it was seen.
    pub started_at: SystemTime,
    /// The same instant on the monotonic clock (durations).
    pub started: Instant,
    /// Modified on the way in, with why.
    pub modified: Option<String>,
    /// What the history keeps of it, as copied so far.
    pub capture: Option<CallCapture>,
}

/// The state of one client↔server session.
#[derive(Debug)]
pub struct Session {
    /// Server name.
    pub server: String,
    /// Session id.
    pub id: String,
    /// `clientInfo.name` from `initialize`.
    pub client_name: Option<String>,
    /// `clientInfo.version`.
    pub client_version: Option<String>,
    /// `serverInfo.name` from the `initialize` result.
    pub server_name: Option<String>,
    /// Protocol version the client asked for, then the one the server chose.
    pub protocol_version: Option<String>,
    // foldhash, not SipHash: every call inserts and removes its id (hashing it twice); its seed
    // is random per process, so ids chosen by a peer cannot be aimed at one bucket.
    client_pending: HashMap<String, Pending, foldhash::fast::RandomState>,
    server_pending: HashMap<String, String, foldhash::fast::RandomState>,
    next_call: u64,
}

impl Session {
    /// A new session for `server` with the given id.
    pub fn new(server: &str, id: &str) -> Self {
        Self {
            server: server.into(),
            id: id.into(),
            client_name: None,
            client_version: None,
            server_name: None,
            protocol_version: None,
            client_pending: HashMap::default(),
            server_pending: HashMap::default(),
            next_call: 0,
        }
    }

    /// A client request arrived: its call, not yet in flight (see [`Session::track`]). Records
    /// the client's and protocol's details from `initialize`.
    pub fn client_request(&mut self, id: &Value, method: &str, msg: &Value) -> Pending {
        let params = member(msg, "params");
        if method == "initialize" {
            let info = params.and_then(|p| member(p, "clientInfo"));
            self.client_name = str_at(info, "name");
            self.client_version = str_at(info, "version");
            self.protocol_version = str_at(params, "protocolVersion");
        }
        let name = params
            .and_then(|p| member(p, "name"))
            .and_then(Value::as_str);
        self.client_request_peeked(id.to_string(), method, name)
    }

    /// A client request the proxy did not parse (not an `initialize`): its id as JSON text (as
    /// `Value::to_string` renders it), its method and `params.name`. Like
    /// [`Session::client_request`].
    pub fn client_request_peeked(
        &mut self,
        request_id: String,
        method: &str,
        name: Option<&str>,
    ) -> Pending {
        self.next_call += 1;
        let tool = if method == "tools/call" {
            name.map(Into::into)
        } else {
            None
        };
        let mut call_id = String::with_capacity(self.id.len() + 21);
        call_id.push_str(&self.id);
        call_id.push('-');
        push_decimal(&mut call_id, self.next_call);
        Pending {
            call_id,
            method: method.into(),
            tool,
            request_id,
            started_at: SystemTime::now(),
            started: Instant::now(),
            modified: None,
            capture: None,
        }
    }

    /// The in-flight client request with id `key` (JSON text, see [`Pending::request_id`]).
    pub fn in_flight_request(&self, key: &str) -> Option<&Pending> {
        self.client_pending.get(key)
    }

    /// [`Session::take`] by the id's JSON text.
    pub fn take_key(&mut self, key: &str) -> Option<Pending> {
        self.client_pending.remove(key)
    }

    /// Puts a request from [`Session::client_request`] in flight, until its response (or
    /// refusal, cancellation) ends it.
    pub fn track(&mut self, p: Pending) {
        self.client_pending.insert(p.request_id.clone(), p);
    }

    /// Takes the in-flight client request a server response answers, if any; end it with
    /// [`Session::complete`].
    pub fn take(&mut self, id: &Value) -> Option<Pending> {
        self.take_key(&id.to_string())
    }

    /// Ends a client request; returns its record.
    pub fn finish(
        &mut self,
        id: &Value,
        decision: Decision,
        reason: String,
        response: Option<&Value>,
    ) -> Option<CallRecord> {
        let p = self.take(id)?;
        Some(self.complete(p, decision, reason, response))
    }

    /// Ends a request taken with [`Session::take`]: its record, with the decision (a request
    /// modified on its way in is recorded as modified) and, for `initialize`, the server's
    /// details from `response`.
    pub fn complete(
        &mut self,
        p: Pending,
        decision: Decision,
        reason: String,
        response: Option<&Value>,
    ) -> CallRecord {
        if p.method == "initialize"
            && let Some(result) = response.and_then(|r| r.get("result"))
        {
            self.server_name = str_at(result.get("serverInfo"), "name");
            if let Some(v) = str_at(Some(result), "protocolVersion") {
                self.protocol_version = Some(v);
            }
        }
        let (decision, reason) = match (decision, p.modified) {
            (Decision::Allowed, Some(why)) => (Decision::Modified, why),
            (Decision::Modified, Some(why)) => (Decision::Modified, format!("{why}; {reason}")),
            (d, _) => (d, reason),
        };
        CallRecord {
            call_id: p.call_id,
            server: self.server.clone(),
            session: self.id.clone(),
            method: p.method,
            tool: p.tool,
            request_id: p.request_id,
            started_at: Timestamp::from(p.started_at),
            ended_at: Timestamp::now(),
            decision,
            reason,
            result_bytes: None,
            duration: p.started.elapsed(),
            capture: p.capture,
        }
    }

    /// The JSON-RPC id of the client request in flight as call `call_id`, if it still is.
    pub fn request_for_call(&self, call_id: &str) -> Option<Value> {
        let p = self
            .client_pending
            .values()
            .find(|p| p.call_id == call_id)?;
        serde_json::from_str(&p.request_id).ok()
    }

    /// The client cancelled one of its requests (`notifications/cancelled`).
    pub fn cancel(&mut self, request_id: &Value, why: Option<&str>) -> Option<CallRecord> {
        let reason = match why {
            Some(w) => format!("cancelled by the client: {w}"),
            None => "cancelled by the client".into(),
        };
        self.finish(request_id, Decision::Allowed, reason, None)
    }

    /// A server request arrived (sampling, elicitation, roots).
    pub fn server_request(&mut self, id: &Value, method: &str) {
        self.server_pending.insert(id.to_string(), method.into());
    }

    /// The client answered a server request; returns the method it was for.
    pub fn server_request_done(&mut self, id: &Value) -> Option<String> {
        self.server_pending.remove(&id.to_string())
    }

    /// Requests still in flight (client → server, server → client).
    pub fn in_flight(&self) -> (usize, usize) {
        (self.client_pending.len(), self.server_pending.len())
    }

    /// Ends every client request still in flight (the server went away).
    pub fn drain(&mut self, reason: &str) -> Vec<CallRecord> {
        let ids: Vec<String> = self.client_pending.keys().cloned().collect();
        ids.iter()
            .filter_map(|k| {
                let id: Value = serde_json::from_str(k).ok()?;
                self.finish(&id, Decision::Allowed, reason.into(), None)
            })
            .collect()
    }

    /// A finding stamped with this session.
    pub fn finding(&self, rule: &str, tool: Option<&str>, summary: String) -> Finding {
        Finding {
            server: self.server.clone(),
            session: self.id.clone(),
            ts: rfc3339(SystemTime::now()),
            rule: rule.into(),
            tool: tool.map(Into::into),
            summary,
        }
    }
}

fn str_at(v: Option<&Value>, key: &str) -> Option<String> {
    member(v?, key)?.as_str().map(Into::into)
}

/// RFC 3339 UTC with nanoseconds, e.g. `2026-11-23T20:21:14.123456789Z`.
pub fn rfc3339(t: SystemTime) -> String {
    mcp_guard_model::timestamp::Timestamp::from(t).rfc3339()
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::{Duration, UNIX_EPOCH};

    #[test]
    fn rfc3339_known_instants() {
        assert_eq!(rfc3339(UNIX_EPOCH), "1970-01-01T00:00:00.000000000Z");
        let t = UNIX_EPOCH + Duration::new(1_709_210_096, 5);
        assert_eq!(rfc3339(t), "2024-02-29T12:34:56.000000005Z");
    }

    #[test]
    fn tracks_initialize_calls_and_cancellation() {
        let mut s = Session::new("srv", "S1");
        let init = serde_json::json!({"params": {"protocolVersion": "2025-06-18",
            "clientInfo": {"name": "ide", "version": "1"}}});
        let p = s.client_request(&Value::from(0), "initialize", &init);
        s.track(p);
        assert_eq!(s.client_name.as_deref(), Some("ide"));
        let resp = serde_json::json!({"result": {"protocolVersion": "2025-03-26",
            "serverInfo": {"name": "everything"}}});
        let r = s
            .finish(
                &Value::from(0),
                Decision::Allowed,
                String::new(),
                Some(&resp),
            )
            .expect("pending");
        assert_eq!(r.method, "initialize");
        assert_eq!(s.server_name.as_deref(), Some("everything"));
        assert_eq!(s.protocol_version.as_deref(), Some("2025-03-26"));

        let call = serde_json::json!({"params": {"name": "echo"}});
        let p = s.client_request(&Value::from("a"), "tools/call", &call);
        assert_eq!(p.tool.as_deref(), Some("echo"));
        assert_eq!(s.in_flight(), (0, 0), "not in flight until tracked");
        s.track(p);
        assert_eq!(s.in_flight(), (1, 0));
        let r = s.cancel(&Value::from("a"), Some("user")).expect("pending");
        assert_eq!(r.request_id, "\"a\"");
        assert!(r.duration > Duration::ZERO && r.duration < Duration::from_secs(5));
        assert!(r.reason.contains("cancelled"));
        assert_eq!(s.in_flight(), (0, 0));
        assert!(
            s.finish(&Value::from("a"), Decision::Allowed, String::new(), None)
                .is_none()
        );

        s.server_request(&Value::from(1), "sampling/createMessage");
        assert_eq!(s.in_flight(), (0, 1));
        assert_eq!(
            s.server_request_done(&Value::from(1)).as_deref(),
            Some("sampling/createMessage")
        );
    }
}
