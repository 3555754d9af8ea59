//! Refused system calls as the doctor reports them: the errno by name and, for a BPF load, the
//! verifier's reason.

use super::host;

/// A refused system call: its errno and, for BPF loads, the verifier log.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Errno {
    /// The errno value.
    pub errno: i32,
    /// The verifier log of a BPF load (empty when the kernel gave none); `None` for other calls.
    pub log: Option<String>,
}

impl Errno {
    /// The calling thread's last errno.
    pub(super) fn last() -> Self {
        Self::bare(host::errno())
    }

    pub(super) fn bare(errno: i32) -> Self {
        Self { errno, log: None }
    }
}

impl std::fmt::Display for Errno {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}", errno_name(self.errno))?;
        let Some(log) = &self.log else {
            return Ok(());
        };
        // The verifier's reason is the last line before its statistics.
        let reason = log.lines().rev().map(str::trim).find(|l| {
            !l.is_empty() && !l.starts_with("processed ") && !l.starts_with("verification time")
        });
        match reason {
            Some(line) => write!(f, ", verifier: {line:?}"),
            None => write!(f, ", empty verifier log"),
        }
    }
}

/// `EPERM`-style name of an errno (the number for rare ones).
pub fn errno_name(errno: i32) -> String {
    let name = match errno {
        libc::EPERM => "EPERM",
        libc::ENOENT => "ENOENT",
        libc::EINTR => "EINTR",
        libc::E2BIG => "E2BIG",
        libc::EBADF => "EBADF",
        libc::EAGAIN => "EAGAIN",
        libc::ENOMEM => "ENOMEM",
        libc::EACCES => "EACCES",
        libc::EFAULT => "EFAULT",
        libc::EBUSY => "EBUSY",
        libc::EEXIST => "EEXIST",
        libc::ENODEV => "ENODEV",
        libc::EINVAL => "EINVAL",
        libc::ENOSPC => "ENOSPC",
        libc::EROFS => "EROFS",
        libc::ENOSYS => "ENOSYS",
        libc::EOPNOTSUPP => "EOPNOTSUPP",
        libc::ECONNREFUSED => "ECONNREFUSED",
        libc::EUSERS => "EUSERS",
        524 => "ENOTSUPP",
        _ => return format!("errno {errno}"),
    };
    name.to_string()
}

pub(super) fn io_errno(e: &std::io::Error) -> String {
    match e.raw_os_error() {
        Some(n) => errno_name(n),
        None => e.to_string(),
    }
}
