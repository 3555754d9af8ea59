//! Opening a credential file (an exporter's password, the `/metrics` token) the one careful way:
//! the file itself, never a symbolic link; a regular file (a FIFO would block the agent); owned
//! by an owner the caller accepts; and no group or other permission bits, because a secret
//! others can read or write protects nothing. Each caller says the refusal in its own words.

use std::{
    fs::File,
    os::unix::fs::{MetadataExt as _, OpenOptionsExt as _},
    path::Path,
};

/// Who may own a credential file.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Owner {
    /// root only.
    Root,
    /// root, or the user this process runs as.
    RootOrSelf,
}

impl Owner {
    fn accepts(self, uid: u32) -> bool {
        match self {
            Owner::Root => uid == 0,
            // SAFETY: geteuid has no preconditions and cannot fail.
            Owner::RootOrSelf => uid == 0 || uid == unsafe { libc::geteuid() },
        }
    }
}

/// Why a credential file was refused.
#[derive(Debug)]
pub enum Refusal {
    /// It could not be opened (a symbolic link is one reason).
    Open(std::io::Error),
    /// Its metadata could not be read.
    Metadata(std::io::Error),
    /// Not a regular file.
    NotRegular,
    /// Owned by this uid, which the owner rule does not accept.
    Owner(u32),
    /// Its permission bits (`& 0o7777`) let group or others at it.
    Mode(u32),
}

impl std::fmt::Display for Refusal {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Refusal::Open(e) if e.raw_os_error() == Some(libc::ELOOP) => {
                f.write_str("a symbolic link: name the file itself")
            }
            Refusal::Open(e) | Refusal::Metadata(e) => write!(f, "{e}"),
            Refusal::NotRegular => f.write_str("not a regular file"),
            Refusal::Owner(uid) => write!(f, "owned by uid {uid}"),
            Refusal::Mode(mode) => write!(f, "mode {mode:04o} lets group or others at it"),
        }
    }
}

/// Opens `path` for reading when it passes every check above; the caller reads it (with its
/// own size limit).
pub fn open(path: &Path, owner: Owner) -> Result<File, Refusal> {
    let file = File::options()
        .read(true)
        .custom_flags(libc::O_NOFOLLOW | libc::O_NONBLOCK)
        .open(path)
        .map_err(Refusal::Open)?;
    let meta = file.metadata().map_err(Refusal::Metadata)?;
    if !meta.file_type().is_file() {
        return Err(Refusal::NotRegular);
    }
    if !owner.accepts(meta.uid()) {
        return Err(Refusal::Owner(meta.uid()));
    }
    let mode = meta.mode() & 0o7777;
    if mode & 0o077 != 0 {
        return Err(Refusal::Mode(mode));
    }
    Ok(file)
}
