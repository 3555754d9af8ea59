//! mcp-guard: a host enforcement agent for MCP servers.
//!
//! One module per stage of the data flow (see DESIGN.md); nothing below `exec` imports upward.

pub mod capability;
pub mod cli;
pub mod client_config;
pub mod client_exe;
pub mod commands;
pub mod credential_file;
pub mod daemon;
pub mod doctor;
pub mod exec;
pub mod exit_codes;
pub mod export;
pub mod history;
pub mod ipc;
pub mod kernel_refusal;
pub mod metrics;
pub mod quarantine;
pub mod say;
pub mod suggest;
pub mod term_width;
