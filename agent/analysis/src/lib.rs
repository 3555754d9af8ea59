//! One session's analysis: what the proxy saw of the calls and what the kernel saw the server
//! do, brought together ([`correlate`]), judged ([`detect`]), and turned into what the session
//! must do about it ([`pipeline::Effect`]: store a record, kill the server, fail a call).
//!
//! The session feeds one bounded input ([`input::SessionInput`]) and carries out the effects;
//! this crate never launches, kills, writes the store or talks to the user itself. Every
//! session runs it, with or without the eBPF kernel guard: without it only the proxy's inputs
//! arrive, and the call-level rules still judge them.

pub mod correlate;
pub mod detect;
pub mod dns_names;
pub mod event_record;
pub mod input;
pub mod launch_chain;
pub mod pipeline;

pub use event_record::event_record;
pub use input::{InputReceiver, InputSender, SessionInput, ToolHints};
pub use pipeline::{Effect, Outcome, Pipeline, PipelineConfig};
