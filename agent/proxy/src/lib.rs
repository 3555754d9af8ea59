//! The MCP layer: a transparent JSON-RPC proxy on the server's stdio with policy interceptors.
//!
//! `frame` reads and parses messages, `peek` reads what the common path needs without parsing, `session` tracks calls and emits records, `interceptors`
//! defines the chain and tool access (`client_scope`: which `[tools.clients]` rule a client gets), `secrets`, `pins`, `scan` (poisoned text), `args` and `hook` are further
//! interceptors, `audit` copies what the history keeps of each call, and `proxy` wires them between two pairs of streams.

pub mod args;
pub mod audit;
pub mod client_scope;
pub mod frame;
pub mod hook;
pub mod ids;
pub mod interceptors;
pub mod peek;
pub mod pins;
pub mod proxy;
pub mod scan;
pub mod secrets;
pub mod session;

pub use proxy::{ProxyConfig, ProxyOutcome, run};
pub use session::{CallDenial, CallRecord, CallSink, Decision, Finding};
