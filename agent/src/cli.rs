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
    /// Recorded tool calls.
    Calls(CallsArgs),
    /// Recorded kernel events, with the call each is attributed to.
    Events(EventsArgs),
    /// Alerts the detection rules raised.
    Alerts(AlertsArgs),
    /// One call as a timeline: request, kernel events with verdicts, alerts, response.
    Trace(TraceArgs),
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

/// `mcp-guard calls`.
#[derive(Debug, Args)]
pub struct CallsArgs {
    /// Only this server.
    #[arg(long)]
    pub server: Option<String>,
    /// Only this tool.
    #[arg(long)]
    pub tool: Option<String>,
    /// Only the last DUR (30s, 15m, 1h, 2d).
    #[arg(long, value_name = "DUR", value_parser = crate::query::parse_duration)]
    pub since: Option<std::time::Duration>,
    /// One JSON object per line.
    #[arg(long)]
    pub json: bool,
}

/// `mcp-guard events`.
#[derive(Debug, Args)]
pub struct EventsArgs {
    /// Only this server.
    #[arg(long)]
    pub server: Option<String>,
    /// Only events of this call (ambiguous ones naming it included).
    #[arg(long, value_name = "ID")]
    pub call: Option<String>,
    /// Only this kind (exec, open, connect, sendmsg, killed, resolve).
    #[arg(long, value_name = "K")]
    pub kind: Option<String>,
    /// Only the last DUR (30s, 15m, 1h, 2d).
    #[arg(long, value_name = "DUR", value_parser = crate::query::parse_duration)]
    pub since: Option<std::time::Duration>,
    /// One JSON object per line.
    #[arg(long)]
    pub json: bool,
}

/// `mcp-guard alerts`.
#[derive(Debug, Args)]
pub struct AlertsArgs {
    /// Only this server.
    #[arg(long)]
    pub server: Option<String>,
    /// Only the last DUR (30s, 15m, 1h, 2d).
    #[arg(long, value_name = "DUR", value_parser = crate::query::parse_duration)]
    pub since: Option<std::time::Duration>,
    /// One JSON object per line.
    #[arg(long)]
    pub json: bool,
}

/// `mcp-guard trace`.
#[derive(Debug, Args)]
pub struct TraceArgs {
    /// The call's id (see `mcp-guard calls`).
    pub call_id: String,
    /// JSON lines: the call, then its events and alerts in time order, each with a `type`.
    #[arg(long)]
    pub json: bool,
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
        Command::Doctor(args) => crate::doctor::run(args.json),
        Command::Calls(a) => crate::query::run(
            &dirs.state,
            &crate::query::Query::Calls {
                server: a.server,
                tool: a.tool,
                since: a.since,
                json: a.json,
            },
        ),
        Command::Events(a) => crate::query::run(
            &dirs.state,
            &crate::query::Query::Events {
                server: a.server,
                call: a.call,
                kind: a.kind,
                since: a.since,
                json: a.json,
            },
        ),
        Command::Alerts(a) => crate::query::run(
            &dirs.state,
            &crate::query::Query::Alerts {
                server: a.server,
                since: a.since,
                json: a.json,
            },
        ),
        Command::Trace(a) => crate::query::run(
            &dirs.state,
            &crate::query::Query::Trace {
                call_id: a.call_id,
                json: a.json,
            },
        ),
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
    }
}
