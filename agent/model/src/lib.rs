//! The contract of mcp-guard as types: what a session, a call, a kernel event and an alert are
//! (field names as DESIGN.md's JSON), the names they carry, and how time is written.
//!
//! Everything else builds on this crate and none of it reaches back: it does no I/O beyond
//! reading the clock.

pub mod dirs;
pub mod names;
pub mod records;
pub mod redact;
pub mod timestamp;

pub use records::{
    AlertRecord, Attribution, CallRecord, Decision, EventKind, EventRecord, Record, SessionRecord,
    Severity, UnknownName, Verdict,
};
pub use timestamp::Timestamp;
