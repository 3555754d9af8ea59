//! Command-line parsing only: builds the typed command and dispatches to its module.
use std::{path::PathBuf, process::ExitCode};

use clap::{Args, Parser, Subcommand};

use mcp_guard_model::dirs::{DEFAULT_POLICY_DIR, DEFAULT_STATE_DIR, Dirs};

use crate::exit_codes::EXIT_POLICY;

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
    /// Recorded sessions: which server (by its own name and version) ran, with which tools.
    Sessions(SessionsArgs),
    /// Pinned tool definitions, and accepting a changed one.
    #[command(subcommand)]
    Pins(PinsCommand),
    /// Wrap the stdio servers of an MCP client's config file with `mcp-guard exec`
    ///
    /// Reads Claude Desktop's `claude_desktop_config.json`, Cursor's mcp.json or VS Code's mcp.json
    /// (or settings.json) and wraps every stdio server as
    ///   mcp-guard exec --policy POLICY --name SERVER -- COMMAND ARGS...
    /// Each server's policy: --policy-for SERVER=POLICY if given, else the policy in the policy
    /// dir named like the server or the package it runs (npx -y @modelcontextprotocol/
    /// server-filesystem -> filesystem, uvx mcp-server-fetch -> fetch), else `default`; stderr
    /// says which and why, and which of the server's env variables the policy will scrub.
    /// Servers already under mcp-guard and remote (url) servers are left unchanged; every other
    /// key of the file is kept. A policy dir other than the default is written into each wrapper
    /// (--policy-dir DIR), policy files as absolute paths.
    ///
    /// Prints the rewritten config on stdout; with --write, writes a backup
    /// FILE.mcp-guard-backup-<UTC time> next to FILE first, then replaces FILE atomically.
    /// Exit status: 0 done, 1 unreadable or unknown config (file untouched), 78 policy error.
    #[command(verbatim_doc_comment)]
    ClientConfig(ClientConfigArgs),
    /// Stop a server everywhere: kill its running sessions, refuse new launches until release.
    ///
    /// The server is its name and the policies it ran under: launches under that name, or
    /// under any of those policies other than the shared default one, are refused.
    Quarantine {
        /// The server name (as in `exec --name` or the policy's name).
        #[arg(value_parser = mcp_guard_model::names::parse)]
        server: String,
        /// Why (kept with the quarantine and in the recorded event).
        #[arg(long)]
        reason: Option<String>,
    },
    /// Lift a quarantine: the server may be launched again.
    Release {
        /// The server name.
        #[arg(value_parser = mcp_guard_model::names::parse)]
        server: String,
    },
    /// The service: follows every session's history and serves Prometheus metrics (/metrics).
    Agent(AgentArgs),
    /// Internal: the jail's stage-2 helper, started by `exec` from /proc/self/exe.
    #[command(name = "__jail-stage2", hide = true)]
    JailStage2,
    /// Internal: a session the agent runs for an `exec` client.
    #[command(name = "__session", hide = true)]
    Session,
    /// Internal: the jail the pinned Python packages' bytecode cache is compiled in.
    #[command(name = "__pycache-compile", hide = true)]
    PycacheCompile {
        /// The compile spec (JSON).
        spec: String,
    },
}

/// `mcp-guard agent`.
#[derive(Debug, Args)]
pub struct AgentArgs {
    /// Agent config file (TOML); default /etc/mcp-guard/agent.toml when it exists.
    #[arg(long)]
    pub config: Option<PathBuf>,
    /// Where to serve /metrics: host:port or <unix:/path> (overrides the config; default
    /// 127.0.0.1:9464).
    #[arg(long, value_name = "ADDR")]
    pub metrics: Option<crate::metrics::listen::MetricsAddr>,
    /// The Unix socket `exec` clients connect to (overrides the config; default
    /// /run/mcp-guard/agent.sock).
    #[arg(long, value_name = "PATH")]
    pub socket: Option<PathBuf>,
    /// The bpffs directory the eBPF programs and maps are pinned in (overrides the config;
    /// default /sys/fs/bpf/mcp-guard).
    #[arg(long, value_name = "DIR")]
    pub bpf_dir: Option<PathBuf>,
}

/// `mcp-guard exec`.
#[derive(Debug, Args)]
#[expect(
    clippy::struct_excessive_bools,
    reason = "the command line's independent on/off flags"
)]
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
    /// Carry stdio as raw bytes instead of reading it as MCP JSON-RPC (for programs that are not
    /// MCP servers). Refused when the policy has [tools] rules, which need the MCP layer.
    #[arg(long)]
    pub passthrough: bool,
    /// Learning mode (as the policy's `[detect] learn = true`): record what each tool normally
    /// does into the server's profile at session end; later sessions alert on departures.
    #[arg(long)]
    pub learn: bool,
    /// The agent's socket: when an agent listens there, the session runs in the agent (exec
    /// then needs no privilege). Default: $`MCP_GUARD_AGENT_SOCKET`, else
    /// /run/mcp-guard/agent.sock.
    #[arg(long, value_name = "PATH")]
    pub agent_socket: Option<PathBuf>,
    /// Run the session in this process even when an agent listens (needs root).
    #[arg(long)]
    pub standalone: bool,
    /// The server command and its arguments (none: the policy's `command`). Only the command
    /// the policy fixes (its `command`, or the program its [pin] pins) gets its [secrets].
    #[arg(last = true)]
    pub command: Vec<String>,
}

/// `mcp-guard doctor`.
#[derive(Debug, Args)]
pub struct DoctorArgs {
    /// One JSON object per line.
    #[arg(long)]
    pub json: bool,
}

/// `mcp-guard client-config`.
#[derive(Debug, Args)]
pub struct ClientConfigArgs {
    /// The client's config file.
    pub file: PathBuf,
    /// Use POLICY (a name in the policy dir, or a file) for SERVER; repeatable.
    #[arg(long = "policy-for", value_name = "SERVER=POLICY", value_parser = parse_policy_for)]
    pub policy_for: Vec<(String, String)>,
    /// Rewrite FILE in place, after writing a backup FILE.mcp-guard-backup-<UTC time> next to it.
    #[arg(long)]
    pub write: bool,
    /// The mcp-guard command written into the config [default: this program's absolute path].
    #[arg(long = "mcp-guard", value_name = "PATH")]
    pub mcp_guard: Option<String>,
    /// Undo the wrapping: give each server that runs under mcp-guard its original command back.
    #[arg(long, conflicts_with = "policy_for")]
    pub unwrap: bool,
}

fn parse_policy_for(s: &str) -> Result<(String, String), String> {
    match s.split_once('=') {
        Some((server, policy)) if !server.is_empty() && !policy.is_empty() => {
            Ok((server.to_string(), policy.to_string()))
        }
        _ => Err(format!("{s:?} is not SERVER=POLICY")),
    }
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
    /// Print a policy (TOML) built from what the store saw a server do.
    Suggest {
        /// The server.
        #[arg(long, value_parser = mcp_guard_model::names::parse)]
        server: String,
        /// Only this recorded session (repeat to merge several; default: all of the server's).
        #[arg(long = "session")]
        sessions: Vec<String>,
    },
    /// Print a [pin] table for a server command: the sha256 of its executable, of the files it
    /// is given, and of the npm packages / PyPI distributions those belong to, with the
    /// packages they depend on (as installed; --no-deps for only the named ones).
    ///
    /// Paste the table into the server's policy; `exec` then refuses (exit 77) to launch when
    /// any of them changed, naming the file. With --policy, the policy's [pin.signature] is kept
    /// in the table (re-sign the new pins: see `policy manifest`).
    #[command(verbatim_doc_comment)]
    Pin {
        /// The policy the pins are for (name or file).
        #[arg(long)]
        policy: Option<String>,
        /// Pin only the packages the command names, not the packages they depend on.
        #[arg(long)]
        no_deps: bool,
        /// The server command, as given to `mcp-guard exec`.
        #[arg(last = true, required = true)]
        command: Vec<String>,
    },
    /// Print the canonical text of a policy's pins: what its [pin.signature] file signs, e.g.
    ///   mcp-guard policy manifest P | ssh-keygen -Y sign -f KEY -n mcp-guard-pins > P.pins.sig
    #[command(verbatim_doc_comment)]
    Manifest {
        /// The policy (name or file).
        policy: String,
    },
}

/// `mcp-guard pins ...`.
#[derive(Debug, Subcommand)]
pub enum PinsCommand {
    /// Every pinned tool (of SERVER, or of all servers) and any change waiting for approval.
    List {
        /// Only this server.
        #[arg(value_parser = mcp_guard_model::names::parse)]
        server: Option<String>,
        /// Only the servers of this policy (pins are kept per policy and server).
        #[arg(long, value_parser = mcp_guard_model::names::parse)]
        policy: Option<String>,
        /// One JSON object per line.
        #[arg(long)]
        json: bool,
    },
    /// Accept the changed definition of TOOL (or of every changed tool) of SERVER; calls to it
    /// pass from the next `tools/list` on.
    Approve {
        /// The server.
        #[arg(value_parser = mcp_guard_model::names::parse)]
        server: String,
        /// The tool (default: every changed tool of SERVER).
        tool: Option<String>,
        /// The policy SERVER runs under, when it has pins under more than one.
        #[arg(long, value_parser = mcp_guard_model::names::parse)]
        policy: Option<String>,
    },
}

/// `mcp-guard calls`.
#[derive(Debug, Args)]
pub struct CallsArgs {
    /// Only this server.
    #[arg(long, value_parser = mcp_guard_model::names::parse)]
    pub server: Option<String>,
    /// Only this tool.
    #[arg(long)]
    pub tool: Option<String>,
    /// Only the last DUR (30s, 15m, 1h, 2d).
    #[arg(long, value_name = "DUR", value_parser = mcp_guard_store::query::parse_duration)]
    pub since: Option<std::time::Duration>,
    /// One JSON object per line.
    #[arg(long)]
    pub json: bool,
    /// The fleet instead of this host.
    #[command(flatten)]
    pub fleet: FleetArgs,
}

/// `mcp-guard events`.
#[derive(Debug, Args)]
pub struct EventsArgs {
    /// Only this server.
    #[arg(long, value_parser = mcp_guard_model::names::parse)]
    pub server: Option<String>,
    /// Only events of this call (ambiguous ones naming it included).
    #[arg(long, value_name = "ID")]
    pub call: Option<String>,
    /// Only this kind (exec, open, connect, sendmsg, killed, resolve).
    #[arg(long, value_name = "K")]
    pub kind: Option<String>,
    /// Only the last DUR (30s, 15m, 1h, 2d).
    #[arg(long, value_name = "DUR", value_parser = mcp_guard_store::query::parse_duration)]
    pub since: Option<std::time::Duration>,
    /// One JSON object per line.
    #[arg(long)]
    pub json: bool,
    /// The fleet instead of this host.
    #[command(flatten)]
    pub fleet: FleetArgs,
}

/// `mcp-guard alerts`.
#[derive(Debug, Args)]
pub struct AlertsArgs {
    /// Only this server.
    #[arg(long, value_parser = mcp_guard_model::names::parse)]
    pub server: Option<String>,
    /// Only the last DUR (30s, 15m, 1h, 2d).
    #[arg(long, value_name = "DUR", value_parser = mcp_guard_store::query::parse_duration)]
    pub since: Option<std::time::Duration>,
    /// One JSON object per line.
    #[arg(long)]
    pub json: bool,
    /// The fleet instead of this host.
    #[command(flatten)]
    pub fleet: FleetArgs,
}

/// `mcp-guard sessions`.
#[derive(Debug, Args)]
pub struct SessionsArgs {
    /// Only this server.
    #[arg(long, value_parser = mcp_guard_model::names::parse)]
    pub server: Option<String>,
    /// Only sessions started in the last DUR (30s, 15m, 1h, 2d).
    #[arg(long, value_name = "DUR", value_parser = mcp_guard_store::query::parse_duration)]
    pub since: Option<std::time::Duration>,
    /// One JSON object per line.
    #[arg(long)]
    pub json: bool,
    /// The fleet instead of this host.
    #[command(flatten)]
    pub fleet: FleetArgs,
}

/// `mcp-guard trace`.
#[derive(Debug, Args)]
pub struct TraceArgs {
    /// The call's id (see `mcp-guard calls`).
    pub call_id: String,
    /// JSON lines: the call, then its events and alerts in time order, each with a `type`.
    #[arg(long)]
    pub json: bool,
    /// The fleet instead of this host.
    #[command(flatten)]
    pub fleet: FleetArgs,
}

/// `--fleet URL` and how to reach it (the query commands).
#[derive(Debug, Args)]
pub struct FleetArgs {
    /// Query the fleet's ClickHouse instead of this host's store: its HTTP(S) interface, e.g.
    /// <http://clickhouse.example:8123>. Output gains each record's host.
    #[arg(long, value_name = "URL")]
    pub fleet: Option<String>,
    /// The database the agents ship to [default: `mcp_guard`].
    #[arg(long, value_name = "DB", requires = "fleet")]
    pub fleet_database: Option<String>,
    /// The ClickHouse user [default: ClickHouse's default user].
    #[arg(long, value_name = "USER", requires = "fleet")]
    pub fleet_user: Option<String>,
    /// A file (yours, mode 0600) holding the user's password.
    #[arg(long, value_name = "FILE", requires = "fleet")]
    pub fleet_password_file: Option<PathBuf>,
    /// The CA certificates (PEM) an https:// URL's certificate must chain to.
    #[arg(long, value_name = "FILE", requires = "fleet")]
    pub fleet_ca: Option<PathBuf>,
}

/// A query on this host's store, or with `--fleet` on the fleet's ClickHouse.
fn query(
    state: &std::path::Path,
    fleet: FleetArgs,
    query: &mcp_guard_store::query::Query,
) -> ExitCode {
    match fleet.fleet {
        None => crate::commands::query::run(state, query),
        Some(url) => crate::export::fleet::run(
            &crate::export::fleet::Fleet {
                url,
                database: fleet.fleet_database,
                user: fleet.fleet_user,
                password_file: fleet.fleet_password_file,
                ca_file: fleet.fleet_ca,
            },
            query,
        ),
    }
}

/// Parses the command line and runs the command.
pub fn main() -> ExitCode {
    let cli = Cli::parse();
    init_logging();
    let dirs = Dirs {
        state: cli.state_dir,
        policy: cli.policy_dir,
    };
    match cli.command {
        Command::Policy(PolicyCommand::Check { files }) => {
            if crate::commands::policy::check(&files) {
                ExitCode::SUCCESS
            } else {
                ExitCode::from(EXIT_POLICY)
            }
        }
        Command::Policy(PolicyCommand::Suggest { server, sessions }) => {
            crate::commands::policy::suggest(&dirs.state, &server, &sessions)
        }
        Command::Policy(PolicyCommand::Pin {
            policy,
            command,
            no_deps,
        }) => crate::commands::policy::pin(
            policy.as_deref(),
            &dirs.policy,
            &dirs.state,
            &command,
            !no_deps,
        ),
        Command::Policy(PolicyCommand::Manifest { policy }) => {
            crate::commands::policy::manifest(&policy, &dirs.policy)
        }
        Command::Doctor(args) => crate::doctor::run(args.json),
        Command::Calls(a) => query(
            &dirs.state,
            a.fleet,
            &mcp_guard_store::query::Query::Calls {
                server: a.server,
                tool: a.tool,
                since: a.since,
                json: a.json,
            },
        ),
        Command::Events(a) => query(
            &dirs.state,
            a.fleet,
            &mcp_guard_store::query::Query::Events {
                server: a.server,
                call: a.call,
                kind: a.kind,
                since: a.since,
                json: a.json,
            },
        ),
        Command::Alerts(a) => query(
            &dirs.state,
            a.fleet,
            &mcp_guard_store::query::Query::Alerts {
                server: a.server,
                since: a.since,
                json: a.json,
            },
        ),
        Command::Sessions(a) => query(
            &dirs.state,
            a.fleet,
            &mcp_guard_store::query::Query::Sessions {
                server: a.server,
                since: a.since,
                json: a.json,
            },
        ),
        Command::Trace(a) => query(
            &dirs.state,
            a.fleet,
            &mcp_guard_store::query::Query::Trace {
                call_id: a.call_id,
                json: a.json,
            },
        ),
        Command::ClientConfig(a) => crate::commands::client_config::run(
            crate::commands::client_config::Request {
                file: a.file,
                policy_for: a.policy_for,
                write: a.write,
                mcp_guard: a.mcp_guard,
                unwrap: a.unwrap,
            },
            &dirs,
        ),
        Command::Quarantine { server, reason } => {
            crate::commands::quarantine::quarantine(&dirs, &server, reason)
        }
        Command::Release { server } => crate::commands::quarantine::release(&dirs.state, &server),
        Command::Agent(a) => crate::daemon::main(
            crate::daemon::AgentArgs {
                config: a.config,
                metrics: a.metrics,
                socket: a.socket,
                bpf_dir: a.bpf_dir,
            },
            &dirs,
        ),
        Command::Pins(PinsCommand::List {
            server,
            policy,
            json,
        }) => crate::commands::pins::list(&dirs.state, server.as_deref(), policy.as_deref(), json),
        Command::Pins(PinsCommand::Approve {
            server,
            tool,
            policy,
        }) => {
            crate::commands::pins::approve(&dirs.state, &server, tool.as_deref(), policy.as_deref())
        }
        Command::Exec(a) => crate::exec::main(
            crate::exec::ExecArgs {
                policy: a.policy,
                policy_text: None,
                name: a.name,
                observe: a.observe,
                passthrough: a.passthrough,
                learn: a.learn,
                command: a.command,
                caller: None,
                client_exe: None,
                audit: crate::history::AuditDefaults::default(),
            },
            &dirs,
            &crate::exec::AgentRoute {
                socket: a.agent_socket,
                standalone: a.standalone,
            },
        ),
        Command::JailStage2 => {
            let status = mcp_guard_launch::stage2::main().unwrap_or_else(|e| {
                crate::say::say(&e.to_string());
                2
            });
            ExitCode::from(u8::try_from(status).unwrap_or(1))
        }
        Command::Session => crate::exec::worker::main(),
        Command::PycacheCompile { spec } => {
            let Err(e) = mcp_guard_supply::compile_jail::main(&spec);
            crate::say::say(&e.to_string());
            ExitCode::from(u8::try_from(mcp_guard_supply::compile_jail::EXIT_SETUP).unwrap_or(1))
        }
    }
}

/// Logs go to stderr (stdout may be an MCP stream): warnings and errors by default, more with
/// `MCP_GUARD_LOG` (e.g. `MCP_GUARD_LOG=info` or `MCP_GUARD_LOG=mcp_guard_proxy=debug`).
fn init_logging() {
    let filter = tracing_subscriber::EnvFilter::try_from_env("MCP_GUARD_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn"));
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(|| crate::say::LogWriter(std::io::stderr()))
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .with_target(false)
        .try_init();
}
