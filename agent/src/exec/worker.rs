//! `mcp-guard __session`: a session the agent runs for an `exec` client.
//!
//! The agent starts it as root with the client's stdin, stdout and stderr, the client's
//! connection, its working directory and the [`WorkerSetup`] (see [`crate::ipc`]). It runs the
//! same session as a standalone exec (jail, proxy, recording), with the server as the client's
//! user and the kernel guard from the agent's pinned programs. It is not tied to the agent's
//! life: an agent restart leaves it running, and it reconnects. The client's signals arrive as
//! messages and are raised here; the client going away ends the session like a SIGHUP; the
//! exit status goes back on the connection.

use std::{
    io::{BufRead, BufReader, Read, Write},
    os::{
        fd::{FromRawFd, OwnedFd},
        unix::net::UnixStream,
    },
    process::ExitCode,
};

use super::{ExecArgs, Hooks, Recording, guard};
use crate::ipc::{
    self, ClientReply, ClientSignal, WORKER_CLIENT_FD, WORKER_CWD_FD, WORKER_SETUP_FD,
};
use crate::say::say_as_is;
use mcp_guard_launch::identity::Caller;
use mcp_guard_model::dirs::Dirs;

/// The hidden subcommand the agent starts.
pub const SUBCOMMAND: &str = "__session";

/// Runs the session; the exit status goes to the client, and is the worker's own.
pub fn main() -> ExitCode {
    // SAFETY: the agent starts this process with these descriptors open (ipc's WORKER_*_FD) and
    // nothing else in this process owns them.
    let (client, cwd, setup) = unsafe {
        (
            UnixStream::from(OwnedFd::from_raw_fd(WORKER_CLIENT_FD)),
            OwnedFd::from_raw_fd(WORKER_CWD_FD),
            std::fs::File::from(OwnedFd::from_raw_fd(WORKER_SETUP_FD)),
        )
    };
    // Not for the jail helper and the server: only this process talks to the client.
    if let Err(e) = nix::fcntl::fcntl(
        &client,
        nix::fcntl::FcntlArg::F_SETFD(nix::fcntl::FdFlag::FD_CLOEXEC),
    ) {
        say_as_is(&format!("mcp-guard: session worker: {e}"));
        return ExitCode::from(crate::exit_codes::EXIT_UNENFORCEABLE);
    }
    let mut text = Vec::new();
    let setup: ipc::WorkerSetup = match BufReader::new(setup)
        .take(ipc::MAX_MESSAGE as u64)
        .read_to_end(&mut text)
        .map_err(|e| e.to_string())
        .and_then(|_| serde_json::from_slice(&text).map_err(|e| e.to_string()))
    {
        Ok(s) => s,
        Err(e) => {
            say_as_is(&format!("mcp-guard: session worker setup: {e}"));
            return ExitCode::from(crate::exit_codes::EXIT_UNENFORCEABLE);
        }
    };
    if let Err(e) = nix::unistd::fchdir(&cwd) {
        say_as_is(&format!(
            "mcp-guard: cannot enter the working directory: {e}"
        ));
        return reply_exit(&client, i32::from(crate::exit_codes::EXIT_UNENFORCEABLE));
    }
    drop(cwd);
    if let Some(answer) = setup.unix_probe.clone() {
        mcp_guard_kernel::unix::assume_probe(answer);
    }
    let dirs = Dirs {
        state: setup.state_dir.clone(),
        policy: setup.policy_dir.clone(),
    };
    let recording = Recording::new(&dirs.state);
    send(
        &client,
        &ClientReply::Started {
            session: recording.session.clone(),
        },
    );
    match client.try_clone() {
        Ok(conn) => {
            std::thread::spawn(move || relay_signals(conn));
        }
        Err(e) => say_as_is(&format!(
            "mcp-guard: the client's signals cannot be relayed: {e}"
        )),
    }
    let request = setup.request;
    let hooks = Hooks::for_session(guard::GuardSource::Agent(setup.socket), request.passthrough);
    let args = ExecArgs {
        policy: request.policy,
        policy_text: setup.policy_text,
        name: request.name,
        observe: request.observe,
        passthrough: request.passthrough,
        learn: request.learn,
        command: request.command,
        caller: Some(Caller {
            uid: setup.uid,
            gid: setup.gid,
            env: request.env,
            umask: request.umask,
        }),
        client_exe: setup.client_exe,
        audit: setup.audit,
    };
    let code = super::run_status(args, &dirs, recording, hooks);
    reply_exit(&client, code)
}

fn send(client: &UnixStream, reply: &ClientReply) {
    let mut conn = client;
    // The client may be gone; the session's record is in the store either way.
    let _ = conn.write_all(&ipc::line(reply));
}

fn reply_exit(client: &UnixStream, code: i32) -> ExitCode {
    send(client, &ClientReply::Exit { code });
    ExitCode::from(u8::try_from(code).unwrap_or(1))
}

/// Raises the client's TERM, INT and HUP here (the session ends as exec's would); the client
/// closing its connection is a HUP.
fn relay_signals(conn: UnixStream) {
    use nix::sys::signal::{Signal, raise};
    let mut lines = BufReader::new(conn).take(ipc::MAX_MESSAGE as u64);
    let mut line = String::new();
    loop {
        line.clear();
        let sig = match lines.read_line(&mut line) {
            Ok(0) | Err(_) => Signal::SIGHUP,
            Ok(_) => match serde_json::from_str::<ClientSignal>(&line) {
                Ok(ClientSignal::Signal { signal }) => match Signal::try_from(signal) {
                    Ok(s @ (Signal::SIGTERM | Signal::SIGINT | Signal::SIGHUP)) => s,
                    _ => continue,
                },
                Err(_) => continue,
            },
        };
        let _ = raise(sig);
        if sig == Signal::SIGHUP {
            return;
        }
    }
}
