//! The eBPF side: loading and attaching mcp-guard's programs and filling their per-server maps.
pub mod loader;
