//! Command-line parsing only: builds the typed command and dispatches to its module.
use std::{path::PathBuf, process::ExitCode};

use clap::{Args, Parser, Subcommand};

use crate::state::{DEFAULT_POLICY_DIR, DEFAULT_STATE_DIR, Dirs};

/// Exit status for an invalid policy (EX_CONFIG).
pub const EXIT_POLICY: u8 = 78;
/// Exit status when an enforcement the policy asks for cannot be applied here (fail closed).
pub const EXIT_UNENFORCEABLE: u8 = 77;

/// mcp-guard: host enforcement for MCP servers.
#[derive(Debug, Parser)]
#[command(name = "mcp-guard", version, about)]
pub struct Cli {
    /// State directory (store, pins, audit logs).
    #[arg(long, global = true, env = "MCP_GUARD_STATE_DIR", default_value = DEFAULT_STATE_DIR)]
    pub state_dir: PathBuf,
    /// Directory where policies are found by name.
    #[arg(long, global = true, env = "MCP_GUARD_POLICY_DIR", default_value = DEFAULT_POLICY_DIR)]
    pub policy_dir: PathBuf,
    /// The command.
    #[command(subcommand)]
    pub command: Command,
}

/// The commands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Launch an MCP server jailed and guarded (the drop-in for a client's server command).
    Exec(ExecArgs),
    /// Report what this host supports and what that means for enforcement.
    Doctor(DoctorArgs),
    /// Policy tools.
    #[command(subcommand)]
    Policy(PolicyCommand),
    /// Internal: the jail's stage-2 helper, started by `exec` from /proc/self/exe.
    #[command(name = "__jail-stage2", hide = true)]
    JailStage2,
}

/// `mcp-guard exec`.
#[derive(Debug, Args)]
pub struct ExecArgs {
    /// Policy name (in the policy dir) or file path; the built-in default when absent.
    #[arg(long)]
    pub policy: Option<String>,
    /// Server name for logs, events and metrics (default: the policy's name).
    #[arg(long)]
    pub name: Option<String>,
    /// Do not enforce; still observe and report.
    #[arg(long)]
    pub observe: bool,
    /// The server command and its arguments.
    #[arg(last = true, required = true)]
    pub command: Vec<String>,
}

/// `mcp-guard doctor`.
#[derive(Debug, Args)]
pub struct DoctorArgs {
    /// One JSON object per line.
    #[arg(long)]
    pub json: bool,
}

/// `mcp-guard policy ...`.
#[derive(Debug, Subcommand)]
pub enum PolicyCommand {
    /// Validate policy files; errors name file, line and key.
    Check {
        /// Policy files.
        #[arg(required = true)]
        files: Vec<PathBuf>,
    },
}

/// Parses the command line and runs the command.
pub fn main() -> ExitCode {
    let cli = Cli::parse();
    let dirs = Dirs {
        state: cli.state_dir,
        policy: cli.policy_dir,
    };
    match cli.command {
        Command::Policy(PolicyCommand::Check { files }) => {
            if crate::policy::check_files(&files) {
                ExitCode::SUCCESS
            } else {
                ExitCode::from(EXIT_POLICY)
            }
        }
        Command::Exec(a) => crate::exec::main(
            crate::exec::ExecArgs {
                policy: a.policy,
                name: a.name,
                observe: a.observe,
                command: a.command,
            },
            &dirs,
        ),
        Command::JailStage2 => {
            ExitCode::from(u8::try_from(crate::launch::stage2::main()).unwrap_or(1))
        }
        Command::Doctor(_) => ExitCode::SUCCESS,
    }
}
