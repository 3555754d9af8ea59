//! The commands: each turns library calls into output and an exit status (`crate::exit_codes`),
//! so the modules below them return typed errors, not exit statuses.

pub mod client_config;
pub mod pins;
pub mod policy;
pub mod quarantine;
pub mod query;
