//! The jail's own network namespace, where it keeps a promise no stronger mechanism can (see
//! [`crate::promises`]): a policy without egress on a kernel without landlock's TCP rules or
//! scopes and without the cgroup unix programs. Only a loopback lives there, so the host's
//! abstract Unix sockets and TCP ports are out of reach and a bind listens to no one outside.

/// Brings up the namespace's loopback (the server may talk to itself as on any host).
pub fn loopback_up() -> Result<(), String> {
    use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
    let err = |what: &str| {
        format!(
            "{what} in the jail's network namespace: {}",
            std::io::Error::last_os_error()
        )
    };
    // SAFETY: socket() takes integers only.
    let fd = unsafe { libc::socket(libc::AF_INET, libc::SOCK_DGRAM | libc::SOCK_CLOEXEC, 0) };
    if fd < 0 {
        return Err(err("socket"));
    }
    // SAFETY: fd was just returned by socket() and is owned by nothing else.
    let sock = unsafe { OwnedFd::from_raw_fd(fd) };
    // SAFETY: ifreq is plain integers and arrays; zero is a valid value for each.
    let mut req: libc::ifreq = unsafe { std::mem::zeroed() };
    for (dst, src) in req.ifr_name.iter_mut().zip(b"lo\0") {
        *dst = libc::c_char::from_ne_bytes([*src]);
    }
    // SAFETY: SIOCGIFFLAGS fills the ifreq we pass, which lives across the call.
    if unsafe { libc::ioctl(sock.as_raw_fd(), libc::SIOCGIFFLAGS, &mut req) } < 0 {
        return Err(err("reading lo's flags"));
    }
    #[expect(
        clippy::cast_possible_truncation,
        reason = "IFF_UP | IFF_RUNNING fits ifru_flags, a short"
    )]
    // SAFETY: after SIOCGIFFLAGS the union holds the flags.
    unsafe {
        req.ifr_ifru.ifru_flags |= (libc::IFF_UP | libc::IFF_RUNNING) as libc::c_short;
    };
    // SAFETY: SIOCSIFFLAGS reads the ifreq we pass, which lives across the call.
    if unsafe { libc::ioctl(sock.as_raw_fd(), libc::SIOCSIFFLAGS, &req) } < 0 {
        return Err(err("bringing lo up"));
    }
    Ok(())
}
