//! The agent's Unix socket protocol: plain data between `exec` (as a client), the agent and the
//! session workers the agent starts.
//!
//! Messages are JSON objects, one per line. A connection opens with one [`Request`]:
//! - [`Request::Exec`] from `exec`, sent with its stdin, stdout, stderr and an `O_PATH` handle
//!   of its working directory as `SCM_RIGHTS`: the agent checks the caller (`SO_PEERCRED`) and starts
//!   a session worker that owns this connection from then on: it answers [`ClientReply`]s and
//!   takes [`ClientSignal`]s;
//! - [`Request::Guard`] from a session worker (root only): the agent guards the session's cgroup
//!   with its pinned eBPF programs, answers [`GuardReply::Guarded`], then streams the cgroup's
//!   kernel events; the worker sends [`GuardCommand`]s. A worker whose agent restarted
//!   reconnects with `adopt = true`.

use std::{
    io::{self, IoSlice, IoSliceMut},
    os::fd::{AsRawFd, BorrowedFd, FromRawFd, OwnedFd, RawFd},
    path::PathBuf,
};

use nix::sys::socket::{ControlMessage, ControlMessageOwned, MsgFlags, recvmsg, sendmsg};
use serde::{Deserialize, Serialize};

use mcp_guard_kernel::{events::KernelEvent, loader::ServerSpec};

/// Where the agent listens unless configured otherwise.
pub const DEFAULT_SOCKET: &str = "/run/mcp-guard/agent.sock";

/// Environment variable naming the agent's socket for `exec` (and the agent's own default).
pub const SOCKET_ENV: &str = "MCP_GUARD_AGENT_SOCKET";

/// The agent's socket as `exec` finds it: `--agent-socket`, else `$MCP_GUARD_AGENT_SOCKET`, else
/// the default.
pub fn socket_path(flag: Option<&std::path::Path>) -> PathBuf {
    flag.map(std::path::Path::to_path_buf)
        .or_else(|| std::env::var_os(SOCKET_ENV).map(PathBuf::from))
        .unwrap_or_else(|| PathBuf::from(DEFAULT_SOCKET))
}

/// The longest message accepted (an exec request carries the client's whole environment).
pub const MAX_MESSAGE: usize = 1 << 20;

/// How many descriptors an exec request carries: stdin, stdout, stderr, working directory.
pub const EXEC_FDS: usize = 4;

/// The first message of a connection to the agent.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(tag = "op", rename_all = "snake_case")]
pub enum Request {
    /// Launch a session for the caller (with [`EXEC_FDS`] descriptors).
    Exec(ExecRequest),
    /// Guard a session's cgroup and stream its events (session workers, root only).
    Guard(GuardRequest),
}

/// What `exec` asks the agent to run.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct ExecRequest {
    /// `--policy`: a name in the agent's policy dir (a file only for root callers).
    pub policy: Option<String>,
    /// `--name`.
    pub name: Option<String>,
    /// `--observe`.
    pub observe: bool,
    /// `--passthrough`.
    pub passthrough: bool,
    /// `--learn`.
    pub learn: bool,
    /// The server command.
    pub command: Vec<String>,
    /// The client's environment (the policy decides what reaches the server).
    pub env: Vec<(String, String)>,
    /// The client's umask (the server creates files as the client would).
    #[serde(default)]
    pub umask: Option<u32>,
}

/// A session worker's request to guard its cgroup.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct GuardRequest {
    /// The session's cgroup v2 directory.
    pub cgroup_dir: PathBuf,
    /// Cgroups below it that belong to the server (a container's leaves).
    pub members: Vec<PathBuf>,
    /// What the kernel enforces and reports.
    pub spec: ServerSpec,
    /// Taking over after an agent restart: the cgroup is guarded already.
    pub adopt: bool,
}

/// What the agent hands a session worker it starts (on its fd [`WORKER_SETUP_FD`]).
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct WorkerSetup {
    /// The client's request (its `policy` is the policy file's path, or `None` for the
    /// built-in default).
    pub request: ExecRequest,
    /// The policy file's content as the agent validated it.
    pub policy_text: Option<String>,
    /// The client's uid and gid (`SO_PEERCRED`).
    pub uid: u32,
    /// The client's gid.
    pub gid: u32,
    /// The agent's state dir (the store).
    pub state_dir: PathBuf,
    /// The agent's policy dir.
    pub policy_dir: PathBuf,
    /// The agent's socket, for the worker's guard connection.
    pub socket: PathBuf,
    /// The executable of the client's parent (the MCP client), read by the agent from `/proc`.
    #[serde(default)]
    pub client_exe: Option<PathBuf>,
    /// What the history keeps of calls unless the policy says otherwise (the agent's `[audit]`).
    #[serde(default)]
    pub audit: crate::history::AuditDefaults,
    /// Whether this kernel runs the cgroup unix programs, as the agent found once
    /// ([`mcp_guard_kernel::unix::probe`]): the worker does not parse the kernel's BTF again.
    #[serde(default)]
    pub unix_probe: Option<Result<(), String>>,
}

/// A session worker's descriptors: the client's connection (for [`ClientReply`]s and
/// [`ClientSignal`]s), its working directory, and the [`WorkerSetup`] stream; stdin, stdout and
/// stderr are the client's own.
pub const WORKER_CLIENT_FD: RawFd = 3;
/// The client's working directory (`O_PATH`).
pub const WORKER_CWD_FD: RawFd = 4;
/// The setup, as one JSON document until EOF.
pub const WORKER_SETUP_FD: RawFd = 5;

/// Answers to an `exec` client.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(tag = "op", rename_all = "snake_case")]
pub enum ClientReply {
    /// The session worker runs (its session id).
    Started {
        /// Session id.
        session: String,
    },
    /// The session is over; exec exits with `code`.
    Exit {
        /// The server's status (or mcp-guard's 77/78).
        code: i32,
    },
    /// The agent did not launch anything.
    Refused {
        /// Exit status for exec (77 unenforceable or not permitted, 78 policy error).
        code: i32,
        /// Why, for the user.
        message: String,
    },
}

/// What `exec` forwards to its session worker.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(tag = "op", rename_all = "snake_case")]
pub enum ClientSignal {
    /// exec got this signal: end the session as exec would.
    Signal {
        /// The signal number.
        signal: i32,
    },
}

/// Agent → session worker on a guard connection.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(tag = "op", rename_all = "snake_case")]
pub enum GuardReply {
    /// The cgroup is guarded; events follow.
    Guarded {
        /// Its cgroup id.
        cgroup_id: u64,
    },
    /// Guarding failed (the worker refuses to launch).
    Error {
        /// Why.
        message: String,
    },
    /// A kernel event of the session.
    Event {
        /// The event.
        event: KernelEvent,
    },
    /// Every event produced before the flush was asked for has been sent.
    Flushed,
}

/// Session worker → agent after [`GuardReply::Guarded`].
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(tag = "op", rename_all = "snake_case")]
pub enum GuardCommand {
    /// Send every event still queued, then [`GuardReply::Flushed`].
    Flush,
    /// The server is gone: drop its maps and pins.
    Release,
}

/// One message as a JSON line.
pub fn line<T: Serialize>(msg: &T) -> Vec<u8> {
    // Plain data with string keys: serializing cannot fail.
    let mut out = serde_json::to_vec(msg).unwrap_or_default();
    out.push(b'\n');
    out
}

/// Sends `bytes` on a connected Unix socket with `fds` attached (`SCM_RIGHTS`, on the first byte),
/// then the rest of `bytes` if the first send was short.
pub fn send_with_fds(sock: BorrowedFd<'_>, bytes: &[u8], fds: &[RawFd]) -> io::Result<()> {
    let cmsg = [ControlMessage::ScmRights(fds)];
    let sent = sendmsg::<()>(
        sock.as_raw_fd(),
        &[IoSlice::new(bytes)],
        &cmsg,
        MsgFlags::MSG_NOSIGNAL,
        None,
    )
    .map_err(io::Error::from)?;
    let mut rest = &bytes[sent..];
    while !rest.is_empty() {
        let n = sendmsg::<()>(
            sock.as_raw_fd(),
            &[IoSlice::new(rest)],
            &[],
            MsgFlags::MSG_NOSIGNAL,
            None,
        )
        .map_err(io::Error::from)?;
        rest = &rest[n..];
    }
    Ok(())
}

/// One `recvmsg` into `buf`: the byte count and the descriptors that came with them (taken
/// over: closed when dropped). 0 bytes is end of stream.
pub fn recv_with_fds(sock: BorrowedFd<'_>, buf: &mut [u8]) -> io::Result<(usize, Vec<OwnedFd>)> {
    let mut space = nix::cmsg_space!([RawFd; EXEC_FDS]);
    let mut iov = [IoSliceMut::new(buf)];
    let msg = recvmsg::<()>(
        sock.as_raw_fd(),
        &mut iov,
        Some(&mut space),
        MsgFlags::MSG_CMSG_CLOEXEC | MsgFlags::MSG_DONTWAIT,
    )
    .map_err(io::Error::from)?;
    let mut fds = Vec::new();
    let truncated = msg.flags.contains(MsgFlags::MSG_CTRUNC);
    for cmsg in msg.cmsgs().map_err(io::Error::from)? {
        if let ControlMessageOwned::ScmRights(raw) = cmsg {
            for fd in raw {
                // SAFETY: the kernel just installed `fd` in this process for this message;
                // nothing else owns it, so it is taken over exactly once here.
                fds.push(unsafe { OwnedFd::from_raw_fd(fd) });
            }
        }
    }
    if truncated {
        // More descriptors than expected were sent: refuse the message (those are closed).
        return Err(io::Error::new(
            io::ErrorKind::InvalidData,
            "too many descriptors attached",
        ));
    }
    Ok((msg.bytes, fds))
}

/// Reads the first line of a connection with the descriptors sent along (async, on a tokio
/// Unix stream). Errors on EOF before a newline and on lines over [`MAX_MESSAGE`]; bytes after
/// the newline are an error too (a client waits for the answer before it sends more).
pub async fn read_first(stream: &tokio::net::UnixStream) -> io::Result<(Vec<u8>, Vec<OwnedFd>)> {
    use std::os::fd::AsFd as _;
    let mut line = Vec::new();
    let mut fds = Vec::new();
    let mut buf = vec![0u8; 64 * 1024];
    loop {
        stream.readable().await?;
        let got = stream.try_io(tokio::io::Interest::READABLE, || {
            recv_with_fds(stream.as_fd(), &mut buf)
        });
        let (n, more) = match got {
            Ok(r) => r,
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => continue,
            Err(e) => return Err(e),
        };
        fds.extend(more);
        if n == 0 {
            return Err(io::Error::new(
                io::ErrorKind::UnexpectedEof,
                "the connection closed before its request was complete",
            ));
        }
        line.extend_from_slice(&buf[..n]);
        if let Some(end) = memchr::memchr(b'\n', &line) {
            if end + 1 != line.len() {
                return Err(io::Error::new(
                    io::ErrorKind::InvalidData,
                    "data after the request, before its answer",
                ));
            }
            line.truncate(end);
            return Ok((line, fds));
        }
        if line.len() > MAX_MESSAGE {
            return Err(io::Error::new(
                io::ErrorKind::InvalidData,
                format!("request longer than {MAX_MESSAGE} bytes"),
            ));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn descriptors_travel_with_the_first_line() {
        use std::os::fd::AsFd as _;
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("runtime");
        rt.block_on(async {
            let (a, b) = tokio::net::UnixStream::pair().expect("pair");
            let file = std::fs::File::open("/dev/null").expect("/dev/null");
            let msg = line(&ClientSignal::Signal { signal: 15 });
            let a = a.into_std().expect("std");
            a.set_nonblocking(false).expect("blocking");
            send_with_fds(a.as_fd(), &msg, &[file.as_raw_fd(), file.as_raw_fd()]).expect("send");
            let (got, fds) = read_first(&b).await.expect("read");
            assert_eq!(fds.len(), 2);
            let parsed: ClientSignal = serde_json::from_slice(&got).expect("json");
            assert!(matches!(parsed, ClientSignal::Signal { signal: 15 }));
            drop(a);
            // A connection that closes mid-request is an error, not a hang.
            let (c, d) = tokio::net::UnixStream::pair().expect("pair");
            c.try_write(b"{\"op\":").expect("write");
            drop(c);
            assert!(read_first(&d).await.is_err());
        });
    }
}
