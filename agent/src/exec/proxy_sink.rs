//! The proxy's sink in a session: calls and what the server says about itself go to the store;
//! call starts and ends (stamped with the boot clock the kernel events carry), tool listings and
//! the interceptors' findings go to the session's analysis, which stores the findings as alerts.

use tokio::sync::mpsc;

use mcp_guard_analysis::{InputSender, SessionInput, correlate::CallFact};
use mcp_guard_model::CallRecord;
use mcp_guard_proxy as mcp;
use mcp_guard_store::StoreHandle;

/// Records a session's proxied calls in the store and tells its analysis about them.
#[derive(Debug)]
pub struct ProxySink {
    store: StoreHandle,
    analysis: InputSender,
    denials: Option<mpsc::UnboundedReceiver<mcp::CallDenial>>,
    /// The session the server's facts are recorded under.
    session: String,
}

impl ProxySink {
    /// Records into `store`, tells `analysis`; the server's facts are recorded under `session`.
    pub fn new(store: StoreHandle, analysis: InputSender, session: &str) -> Self {
        ProxySink {
            store,
            analysis,
            denials: None,
            session: session.to_string(),
        }
    }

    /// Also hands the proxy the calls the analysis fails (`deny-call`).
    #[must_use]
    pub fn with_denials(
        mut self,
        denials: Option<mpsc::UnboundedReceiver<mcp::CallDenial>>,
    ) -> Self {
        self.denials = denials;
        self
    }
}

impl mcp::CallSink for ProxySink {
    fn call_started(&mut self, call_id: &str, tool: Option<&str>) {
        // A full analysis queue drops the fact (counted and reported at the session's end):
        // the proxy is never held up by the analysis.
        self.analysis.call_fact(|at_boot_ns| CallFact::Started {
            call_id: call_id.to_string(),
            tool: tool.map(str::to_string),
            at_boot_ns,
        });
    }

    fn call(&mut self, mut record: mcp::CallRecord) {
        if record.method == "initialize" {
            self.analysis
                .call_fact(|at_boot_ns| CallFact::Initialized { at_boot_ns });
        }
        self.analysis.call_fact(|at_boot_ns| CallFact::Ended {
            call_id: record.call_id.clone(),
            at_boot_ns,
            tool: record.tool.clone(),
            result_bytes: record.result_bytes,
            denied: record.decision == mcp::Decision::Denied,
        });
        // A full queue or a failing disk is counted by the store and reported at exit.
        let capture = record.capture.take().map(super::history::capture);
        let call = CallRecord::from(record);
        let _ = match capture {
            Some(capture) => self.store.send_call(call, capture),
            None => self.store.send(call),
        };
    }

    fn server_fact(&mut self, fact: mcp::audit::ServerFact) {
        let _ = self
            .store
            .send(super::history::session_facts(&self.session, fact));
    }

    fn take_call_denials(&mut self) -> Option<mpsc::UnboundedReceiver<mcp::CallDenial>> {
        self.denials.take()
    }

    fn tools_listed(&mut self, tools: &[(String, bool)]) {
        self.analysis.offer(SessionInput::Tools(tools.to_vec()));
    }

    fn finding(&mut self, finding: mcp::Finding) {
        self.analysis.offer(SessionInput::Finding(finding));
    }
}
