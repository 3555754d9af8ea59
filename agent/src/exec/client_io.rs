//! exec's own stdin and stdout, the MCP client's end of the session, as async streams.
//!
//! tokio's `stdin()` and `stdout()` do every read and write on a blocking-pool thread, so each
//! message would cost two more thread wakeups on its way through. A pipe or a socket (what MCP
//! clients give a server) is driven by the runtime's own reactor instead. Anything else (a
//! terminal, a file) keeps tokio's blocking stdio: switching it to non-blocking mode would
//! switch it for every other process sharing it, such as the shell that started exec.

use std::{
    io,
    os::fd::{AsFd, BorrowedFd, OwnedFd},
};

use nix::sys::stat::{SFlag, fstat};
use tokio::{
    io::{AsyncRead, AsyncWrite},
    net::{UnixStream, unix::pipe},
};

/// The client's side of exec's stdin.
pub type ClientReader = Box<dyn AsyncRead + Send + Unpin>;
/// The client's side of exec's stdout.
pub type ClientWriter = Box<dyn AsyncWrite + Send + Unpin>;

/// What kind of file a descriptor is, as far as the reactor is concerned.
enum Kind {
    Fifo,
    Socket,
    Other,
}

fn kind(fd: BorrowedFd<'_>) -> Kind {
    match fstat(fd).map(|st| SFlag::from_bits_truncate(st.st_mode) & SFlag::S_IFMT) {
        Ok(t) if t == SFlag::S_IFIFO => Kind::Fifo,
        Ok(t) if t == SFlag::S_IFSOCK => Kind::Socket,
        _ => Kind::Other,
    }
}

fn socket(fd: OwnedFd) -> io::Result<UnixStream> {
    let std = std::os::unix::net::UnixStream::from(fd);
    std.set_nonblocking(true)?;
    UnixStream::from_std(std)
}

/// `fd` (duplicated) wrapped by `fifo` or `sock` when it is a pipe or a socket; `None` for
/// anything else, or when it cannot be registered with the reactor.
fn through_reactor<T: ?Sized>(
    fd: BorrowedFd<'_>,
    fifo: impl FnOnce(OwnedFd) -> io::Result<Box<T>>,
    sock: impl FnOnce(UnixStream) -> Box<T>,
) -> Option<Box<T>> {
    let wrapped = match kind(fd) {
        Kind::Fifo => fd.try_clone_to_owned().and_then(fifo),
        Kind::Socket => fd.try_clone_to_owned().and_then(socket).map(sock),
        Kind::Other => return None,
    };
    wrapped
        .map_err(|e| tracing::debug!("client stdio through tokio's blocking threads: {e}"))
        .ok()
}

/// exec's stdin, read through the reactor when it is a pipe or a socket. Needs a runtime.
pub fn stdin() -> ClientReader {
    through_reactor(
        io::stdin().as_fd(),
        |fd| Ok(Box::new(pipe::Receiver::from_owned_fd(fd)?) as ClientReader),
        |s| Box::new(s) as ClientReader,
    )
    .unwrap_or_else(|| Box::new(tokio::io::stdin()))
}

/// exec's stdout, written through the reactor when it is a pipe or a socket. Needs a runtime.
pub fn stdout() -> ClientWriter {
    through_reactor(
        io::stdout().as_fd(),
        |fd| Ok(Box::new(pipe::Sender::from_owned_fd(fd)?) as ClientWriter),
        |s| Box::new(s) as ClientWriter,
    )
    .unwrap_or_else(|| Box::new(tokio::io::stdout()))
}
