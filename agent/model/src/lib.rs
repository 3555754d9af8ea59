//! The contract of mcp-guard as types: what a session, a call, a kernel event and an alert are
//! (field names as DESIGN.md's JSON), the names they carry, and how time is written.
//!
//! Everything else builds on this crate and none of it reaches back: it does no I/O beyond
//! reading the clocks and the kernel's random numbers (session ids).

pub mod audit;
pub mod dirs;
pub mod dns;
pub mod finding;
pub mod kernel_event;
pub mod names;
pub mod records;
pub mod redact;
pub mod session_id;
pub mod timestamp;

pub use audit::CallAudit;
pub use dns::{DNS_MAX_ANSWERS, DnsAnswer, DnsDirection, DnsMessage, DnsPacket};
pub use finding::Finding;
pub use kernel_event::{
    EgressVerdict, KernelEvent, KernelEventKind, SockOp, boot_ns_now, boot_to_unix_ns,
};
pub use records::{
    AlertRecord, Attribution, CallRecord, Decision, EventKind, EventRecord, Record, ServerFacts,
    SessionFacts, SessionRecord, Severity, ToolsListing, UnknownName, Verdict,
};
pub use session_id::new_session_id;
pub use timestamp::Timestamp;
