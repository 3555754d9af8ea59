//! The eBPF side: loading and attaching mcp-guard's programs, filling their per-server maps,
//! keeping allowed host names resolved, and turning the ring buffer into typed events.
pub mod bind;
pub mod bpf_sys;
pub mod btf_layout;
pub mod compat;
pub(crate) mod dns_packet;
mod dns_programs;
mod error;
pub mod events;
pub mod loader;
mod net_rule;
pub(crate) mod program_load;
pub mod resolve;
mod ringbuf;
pub mod unix;
