//! The proxy's input for failing an in-flight call from outside (exec's detector, `deny-call`):
//! driven in-process with the client and the server played over pipes, line by line, so every
//! message the proxy writes on either side is seen.

use std::{
    sync::{Arc, Mutex},
    time::Duration,
};

use mcp_guard_proxy::{self as mcp, CallDenial, CallRecord, CallSink, Finding, ProxyConfig};
use serde_json::{Value, json};
use tokio::{
    io::{AsyncBufReadExt, AsyncWriteExt, BufReader},
    sync::mpsc,
};

#[derive(Default)]
struct Seen {
    started: Vec<String>,
    calls: Vec<CallRecord>,
}

struct Sink {
    seen: Arc<Mutex<Seen>>,
    denials: Option<mpsc::UnboundedReceiver<CallDenial>>,
}

impl CallSink for Sink {
    fn call_started(&mut self, call_id: &str, _tool: Option<&str>) {
        self.seen.lock().expect("seen").started.push(call_id.into());
    }
    fn call(&mut self, record: CallRecord) {
        self.seen.lock().expect("seen").calls.push(record);
    }
    fn finding(&mut self, _finding: Finding) {}
    fn take_call_denials(&mut self) -> Option<mpsc::UnboundedReceiver<CallDenial>> {
        self.denials.take()
    }
}

async fn next(lines: &mut tokio::io::Lines<impl tokio::io::AsyncBufRead + Unpin>) -> Value {
    let l = tokio::time::timeout(Duration::from_secs(10), lines.next_line())
        .await
        .expect("a line, not a hang")
        .expect("read")
        .expect("a line");
    serde_json::from_str(&l).expect("JSON")
}

#[test]
fn a_denied_call_gets_an_error_the_server_a_cancel_and_its_late_answer_is_dropped() {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    rt.block_on(async {
        let (client, proxy_client) = tokio::io::duplex(1 << 16);
        let (server, proxy_server) = tokio::io::duplex(1 << 16);
        let (pc_in, pc_out) = tokio::io::split(proxy_client);
        let (ps_out, ps_in) = tokio::io::split(proxy_server);
        let seen = Arc::new(Mutex::new(Seen::default()));
        let (deny, denials) = mpsc::unbounded_channel();
        let sink = Sink {
            seen: seen.clone(),
            denials: Some(denials),
        };
        let proxy = tokio::spawn(mcp::run(
            pc_in,
            pc_out,
            ps_in,
            ps_out,
            ProxyConfig::new("srv"),
            sink,
            None,
        ));
        let (c_rd, mut c_wr) = tokio::io::split(client);
        let (s_rd, mut s_wr) = tokio::io::split(server);
        let mut from_proxy = BufReader::new(c_rd).lines();
        let mut to_server = BufReader::new(s_rd).lines();

        let call = |id: u64| {
            format!(
                "{}\n",
                json!({"jsonrpc":"2.0","id":id,"method":"tools/call",
                    "params":{"name":"get_weather","arguments":{}}})
            )
        };
        c_wr.write_all(call(1).as_bytes()).await.expect("write");
        assert_eq!(next(&mut to_server).await["id"], 1, "forwarded");
        let call_id = seen.lock().expect("seen").started[0].clone();

        deny.send(CallDenial {
            call_id: call_id.clone(),
            reason: "mcp-guard: call denied by detection rule sensitive-read".into(),
        })
        .expect("proxy listening");
        let err = next(&mut from_proxy).await;
        assert_eq!(err["id"], 1, "{err}");
        assert_eq!(err["error"]["code"], -32001, "{err}");
        assert!(
            err["error"]["message"]
                .as_str()
                .is_some_and(|m| m.contains("sensitive-read")),
            "{err}"
        );
        let cancel = next(&mut to_server).await;
        assert_eq!(cancel["method"], "notifications/cancelled", "{cancel}");
        assert_eq!(cancel["params"]["requestId"], 1, "{cancel}");

        // The server answers anyway; the client must not see it. The next call is answered.
        let result = |id: u64, text: &str| {
            format!(
                "{}\n",
                json!({"jsonrpc":"2.0","id":id,"result":{"content":[{"type":"text","text":text}]}})
            )
        };
        s_wr.write_all(result(1, "late").as_bytes())
            .await
            .expect("write");
        c_wr.write_all(call(2).as_bytes()).await.expect("write");
        assert_eq!(next(&mut to_server).await["id"], 2);
        let answer = result(2, "sunny");
        s_wr.write_all(answer.as_bytes()).await.expect("write");
        let got = next(&mut from_proxy).await;
        assert_eq!(got["id"], 2, "the late answer to 1 was dropped: {got}");

        // Denying a call that already ended does nothing.
        deny.send(CallDenial {
            call_id: seen.lock().expect("seen").started[1].clone(),
            reason: "too late".into(),
        })
        .expect("proxy listening");
        // The peers go away (a split duplex closes when both its halves are gone).
        drop((c_wr, from_proxy, s_wr, to_server));
        let outcome = tokio::time::timeout(Duration::from_secs(10), proxy)
            .await
            .expect("proxy ends")
            .expect("proxy task")
            .expect("proxy ok");
        assert_eq!(outcome.denied, 1);
        let seen = seen.lock().expect("seen");
        let first = seen
            .calls
            .iter()
            .find(|c| c.call_id == call_id)
            .expect("record");
        assert_eq!(first.decision, mcp::Decision::Denied);
        assert!(first.reason.contains("sensitive-read"), "{first:?}");
        assert_eq!(first.result_bytes, None);
        let second = seen
            .calls
            .iter()
            .find(|c| c.call_id != call_id)
            .expect("record");
        assert_eq!(second.decision, mcp::Decision::Allowed);
        assert_eq!(second.result_bytes, Some(answer.len() as u64 - 1));
    });
}
