//! The exit statuses of the user contract (DESIGN.md) beside 0 and 1: a leaf, so every command
//! and the agent's refusals take them from here and nothing imports the CLI for them.

/// Exit status for an invalid policy (`EX_CONFIG`).
pub const EXIT_POLICY: u8 = 78;
/// Exit status when an enforcement the policy asks for cannot be applied here (fail closed).
pub const EXIT_UNENFORCEABLE: u8 = 77;
/// Exit status when the agent is at a limit for the caller (`max_sessions_per_user`, too many
/// connections waiting): nothing was launched, and trying again later may succeed
/// (`EX_TEMPFAIL`).
pub const EXIT_BUSY: u8 = 75;
