//! The policy model: one TOML file per server (format in DESIGN.md), loaded by name from the
//! policy dir or by path, validated with errors that name file, line and key.
//!
//! Everything else reads the validated [`Policy`]; nothing else parses TOML. Validation walks a
//! span-preserving TOML tree by hand (not serde) so that one run reports every problem, each as
//! `file:line:col: key.path: message`, instead of stopping at the first.

mod audit;
mod check;
mod clients;
mod command;
mod document;
mod error;
mod image;
mod load;
mod mcp;
mod model;
mod network;
mod pins;
mod secret_rules;
mod secrets;
mod sections;
mod tool_args;
mod unix;
pub mod usable;
mod values;

pub use audit::{Audit, MAX_RESULT_BYTES, ToolAudit};
pub use clients::{ANY_CLIENT, ClientMatch, ClientRule};
pub use error::{PolicyError, Problem};
pub use image::{ImageRef, parse_image};
pub use load::{DEFAULT_POLICY_TOML, builtin_default, expand_home, load, load_file, parse};
pub use mcp::{ControlAction, Hook, Mcp, PII_KINDS, PoisonAction, SecretShapes, ShapeAction};
pub use model::{
    Access, Backend, DETECT_RULES, Detect, DetectRule, Enforcement, Env, Filesystem, Isolation,
    Limits, Network, OnSensitive, Policy, Syscalls, Tools,
};
pub use network::{NetAllow, NetTarget};
pub use pins::{FilePin, NpmPin, PinSignature, Pins, PypiPin, SignerKey};
pub use secrets::{Secret, SecretError, read_secret};
pub use tool_args::{ArgCheck, ArgRule};
pub use values::{parse_size, syscall_number};

#[cfg(test)]
mod tests;
