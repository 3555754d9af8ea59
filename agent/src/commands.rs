//! The commands that only read or print: each turns a library call into output and an exit
//! status.

pub mod policy;
pub mod query;
