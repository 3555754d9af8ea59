//! `exec` as a thin client of the agent: when the agent's socket is there, exec hands its
//! stdin, stdout, stderr and working directory to the agent (`SCM_RIGHTS`) with the request, and
//! waits for the session's exit status. The agent checks who is asking (`SO_PEERCRED`) and runs
//! the session as that user; exec itself needs no privilege.

use std::{
    io,
    os::{
        fd::{AsFd, AsRawFd, OwnedFd},
        unix::net::UnixStream,
    },
    path::Path,
};

use tokio::{
    io::{AsyncBufReadExt, AsyncWriteExt, BufReader},
    signal::unix::{SignalKind, signal},
};

use crate::ipc::{self, ClientReply, ClientSignal, ExecRequest, Request};
use crate::say::say_as_is;

/// Exit status when the agent or the session worker went away without an exit status.
pub const EXIT_LOST: u8 = 69;

/// Connects to the agent at `path`: `None` when no agent listens there (no socket file, or a
/// stale one), so exec runs standalone.
pub fn connect(path: &Path) -> Option<UnixStream> {
    match UnixStream::connect(path) {
        Ok(s) => Some(s),
        Err(e) if e.kind() == io::ErrorKind::NotFound => None,
        Err(e) => {
            tracing::info!("agent socket {}: {e}; running standalone", path.display());
            None
        }
    }
}

/// This process's umask (read by setting it, then set back).
pub fn umask() -> u32 {
    use nix::sys::stat::{Mode, umask};
    let mask = umask(Mode::empty());
    umask(mask);
    mask.bits()
}

/// Sends the request with exec's stdio and working directory, then relays exec's TERM, INT and
/// HUP to the session until its exit status arrives; returns that status.
pub fn run(stream: UnixStream, request: ExecRequest) -> u8 {
    let cwd = match nix::fcntl::open(
        ".",
        nix::fcntl::OFlag::O_PATH | nix::fcntl::OFlag::O_DIRECTORY | nix::fcntl::OFlag::O_CLOEXEC,
        nix::sys::stat::Mode::empty(),
    ) {
        Ok(fd) => fd,
        Err(e) => {
            say_as_is(&format!(
                "mcp-guard: cannot open the working directory: {e}"
            ));
            return crate::exit_codes::EXIT_UNENFORCEABLE;
        }
    };
    let msg = ipc::line(&Request::Exec(request));
    let fds = [0, 1, 2, cwd.as_raw_fd()];
    if let Err(e) = ipc::send_with_fds(stream.as_fd(), &msg, &fds) {
        say_as_is(&format!("mcp-guard: sending the request to the agent: {e}"));
        return EXIT_LOST;
    }
    drop::<OwnedFd>(cwd);
    let rt = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            say_as_is(&format!("mcp-guard: cannot start the runtime: {e}"));
            return EXIT_LOST;
        }
    };
    rt.block_on(wait(stream))
}

async fn wait(stream: UnixStream) -> u8 {
    let lost = |why: &str| {
        say_as_is(&format!(
            "mcp-guard: the agent's session ended without an exit status ({why}): the session \
             worker was killed; see `mcp-guard events` and the agent's log"
        ));
        EXIT_LOST
    };
    let stream = match stream
        .set_nonblocking(true)
        .and_then(|()| tokio::net::UnixStream::from_std(stream))
    {
        Ok(s) => s,
        Err(e) => return lost(&e.to_string()),
    };
    let (read, mut write) = stream.into_split();
    let mut lines = BufReader::new(read).lines();
    let (Ok(mut term), Ok(mut int), Ok(mut hup)) = (
        signal(SignalKind::terminate()),
        signal(SignalKind::interrupt()),
        signal(SignalKind::hangup()),
    ) else {
        return lost("cannot install signal handlers");
    };
    loop {
        let sig = tokio::select! {
            line = lines.next_line() => {
                let line = match line {
                    Ok(Some(l)) => l,
                    Ok(None) => return lost("connection closed"),
                    Err(e) => return lost(&e.to_string()),
                };
                match serde_json::from_str::<ClientReply>(&line) {
                    Ok(ClientReply::Started { session }) => {
                        tracing::info!("session {session} runs in the agent");
                        continue;
                    }
                    Ok(ClientReply::Exit { code }) => return u8::try_from(code).unwrap_or(1),
                    Ok(ClientReply::Refused { code, message }) => {
                        for l in message.lines() {
                            say_as_is(&format!("mcp-guard: {l}"));
                        }
                        return u8::try_from(code).unwrap_or(1);
                    }
                    Err(e) => return lost(&format!("unreadable answer: {e}")),
                }
            }
            _ = term.recv() => libc::SIGTERM,
            _ = int.recv() => libc::SIGINT,
            _ = hup.recv() => libc::SIGHUP,
        };
        let msg = ipc::line(&ClientSignal::Signal { signal: sig });
        if write.write_all(&msg).await.is_err() {
            return lost("connection closed");
        }
    }
}
