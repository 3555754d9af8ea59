//! `[network] unix`: the Unix sockets a server may connect or send to.
//!
//! The kernel matches the address exactly as the server passes it (no path resolution), so an
//! entry must be spelled the one way a client spells it: an absolute path without `.`, `..`,
//! empty components or a trailing `/`, or `@name` for an abstract socket.

/// Bytes of `sun_path` in `struct sockaddr_un`.
const SUN_PATH: usize = 108;

/// Checks one `unix` entry.
pub(super) fn check_unix_socket(s: &str) -> Result<(), String> {
    if s.contains('\0') {
        return Err(format!("{s:?} contains a NUL byte"));
    }
    if let Some(name) = s.strip_prefix('@') {
        if name.is_empty() {
            return Err(format!(
                "{s:?}: an abstract socket needs a name after @ (e.g. \"@my-socket\")"
            ));
        }
        // The leading NUL the kernel sees takes one byte of sun_path.
        if name.len() >= SUN_PATH {
            return Err(format!(
                "{s:?}: an abstract name holds at most {} bytes",
                SUN_PATH - 1
            ));
        }
        return Ok(());
    }
    if !s.starts_with('/') {
        return Err(format!(
            "{s:?} must be an absolute socket path or @name for an abstract socket (~ is not \
             expanded here)"
        ));
    }
    if s.len() > SUN_PATH {
        return Err(format!(
            "{s:?} is longer than the {SUN_PATH} bytes a Unix socket address holds"
        ));
    }
    if s.len() > 1 && s.ends_with('/') {
        return Err(format!(
            "{s:?}: a socket is a file, not a directory (no trailing /)"
        ));
    }
    if s[1..]
        .split('/')
        .any(|c| c.is_empty() || c == "." || c == "..")
    {
        return Err(format!(
            "{s:?}: write the path without '.', '..' or '//': the kernel matches the address \
             exactly as the server passes it"
        ));
    }
    if s.contains(['*', '?', '[']) {
        return Err(format!("{s:?} is a glob; list each socket path"));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths_and_abstract_names() {
        for good in [
            "/run/postgresql/.s.PGSQL.5432",
            "/run/podman/podman.sock",
            "@dbus-abc",
            "@x",
        ] {
            assert_eq!(check_unix_socket(good), Ok(()), "{good}");
        }
        let long = format!("/{}", "a".repeat(SUN_PATH));
        let long_abstract = format!("@{}", "a".repeat(SUN_PATH));
        for (bad, why) in [
            ("@", "needs a name"),
            ("run/x.sock", "absolute"),
            ("~/x.sock", "absolute"),
            ("/run/../x.sock", "'..'"),
            ("/run/./x.sock", "'..'"),
            ("/run//x.sock", "'..'"),
            ("/run/x/", "trailing"),
            ("/run/*.sock", "glob"),
            ("/run/x\0", "NUL"),
            (long.as_str(), "longer"),
            (long_abstract.as_str(), "at most 107"),
        ] {
            let err = check_unix_socket(bad).expect_err(bad);
            assert!(err.contains(why), "{bad}: {err}");
        }
    }
}
