//! Validators and parsers of single policy values (names, paths, sizes, syscall names); each
//! returns the reason a value is wrong, for the checker to place. Network entries are parsed in
//! `network`, image references in `image`.

use std::str::FromStr;

/// The number of the syscall `name` on the architecture mcp-guard was built for (the table that
/// `[syscalls] deny` is validated against).
pub fn syscall_number(name: &str) -> Option<i64> {
    syscalls::Sysno::from_str(name)
        .ok()
        .map(|s| i64::from(s.id()))
}

/// Smallest memory limit accepted: below this nothing starts, so it is surely a typo.
pub(crate) const MIN_MEMORY: u64 = 1 << 20;
/// The kernel's `PID_MAX_LIMIT` on 64-bit.
pub(crate) const MAX_PIDS: i64 = 4_194_304;
/// cgroup cpu.max cannot express less than 1ms per 100ms period.
pub(crate) const MIN_CPU: f64 = 0.01;
/// More cores than any host has: a larger value is a typo, not a limit.
pub(crate) const MAX_CPU: f64 = 1024.0;

/// A policy or server name: 1 to 64 of `[A-Za-z0-9._-]`, starting with a letter or digit (it
/// becomes a file name, a cgroup name and a metric label).
pub(crate) fn is_safe_name(name: &str) -> bool {
    name.len() <= 64
        && name
            .chars()
            .next()
            .is_some_and(|c| c.is_ascii_alphanumeric())
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-'))
}

/// A portable environment variable name.
pub(crate) fn is_env_name(name: &str) -> bool {
    name.chars()
        .next()
        .is_some_and(|c| c.is_ascii_alphabetic() || c == '_')
        && name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_')
}

/// A POSIX user name (as useradd accepts) or a numeric uid.
pub(crate) fn is_user_name(name: &str) -> bool {
    (1..=32).contains(&name.len())
        && !name.starts_with('-')
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-'))
        && (!name.chars().all(|c| c.is_ascii_digit()) || name.parse::<u32>().is_ok())
}

/// A systemd credential name: a file name inside `$CREDENTIALS_DIRECTORY`.
pub(crate) fn is_credential_name(name: &str) -> bool {
    !name.is_empty()
        && name != "."
        && name != ".."
        && name.len() <= 255
        && !name.contains('/')
        && !name.contains('\0')
}

/// A Subresource Integrity value as npm writes it: `sha512-<base64>` (or sha256/sha384/sha1).
pub(crate) fn is_sri(s: &str) -> bool {
    s.split_once('-').is_some_and(|(alg, b64)| {
        matches!(alg, "sha1" | "sha256" | "sha384" | "sha512")
            && !b64.is_empty()
            && b64
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'+' | b'/' | b'='))
    })
}

pub(crate) fn has_dot_dot(path: &str) -> bool {
    path.split('/').any(|c| c == "..")
}

/// A `[filesystem]` entry: absolute or `~/`-relative, no `..`, no glob.
pub(crate) fn check_fs_path(s: &str) -> Result<(), String> {
    if s.is_empty() {
        return Err("empty path".into());
    }
    if s.starts_with('~') && s != "~" && !s.starts_with("~/") {
        return Err(format!(
            "{s:?}: ~user is not supported; use ~/ (the server user's home) or an absolute path"
        ));
    }
    if !(s.starts_with('/') || s.starts_with('~')) {
        return Err(format!("{s:?} must be absolute or start with ~/"));
    }
    if has_dot_dot(s) {
        return Err(format!("{s:?} must not contain '..'"));
    }
    if s.contains('\0') {
        return Err(format!("{s:?} contains a NUL byte"));
    }
    if s.contains(['*', '?', '[']) {
        return Err(format!(
            "{s:?} is a glob; filesystem entries are paths (a directory grants its whole tree)"
        ));
    }
    Ok(())
}

/// `512M`, `1G`, `100K`, `2048` (bytes); units are binary (K = 1024) as the kernel's limits are;
/// `KiB`/`MB`-style spellings mean the same.
// Hand-written: bytesize and parse-size read `MB` as 10^6 and accept fractions; the contract is binary.
pub fn parse_size(text: &str) -> Result<u64, String> {
    let t = text.trim();
    let digits = t.find(|c: char| !c.is_ascii_digit()).unwrap_or(t.len());
    let (number, unit) = t.split_at(digits);
    let bad =
        || format!("{text:?} is not a size: write a whole number with K, M, G or T, e.g. 512M");
    let number: u64 = number.parse().map_err(|_| bad())?;
    let shift = match unit.to_ascii_uppercase().as_str() {
        "" | "B" => 0,
        "K" | "KB" | "KIB" => 10,
        "M" | "MB" | "MIB" => 20,
        "G" | "GB" | "GIB" => 30,
        "T" | "TB" | "TIB" => 40,
        _ => return Err(bad()),
    };
    number
        .checked_mul(1u64 << shift)
        .ok_or_else(|| format!("{text:?} is too large"))
}

/// A tool name as `[tools]` accepts it.
pub(crate) fn is_tool_name(s: &str) -> bool {
    !s.trim().is_empty() && !s.chars().any(|c| c.is_whitespace() || c.is_control())
}
