//! Names in a client's config: whether a command already is mcp-guard, a program's own name, and
//! a server key made into an exec `--name` (wrapping and the policy choice both need them).

/// Whether `command` already is mcp-guard (by the configured path or the program's name).
pub(super) fn is_mcp_guard(command: &str, configured: &str) -> bool {
    command == configured || program_name(command) == "mcp-guard"
}

/// A command's file name without directory or Windows extension.
pub(super) fn program_name(command: &str) -> &str {
    let base = command.rsplit(['/', '\\']).next().unwrap_or(command);
    base.strip_suffix(".exe")
        .or_else(|| base.strip_suffix(".cmd"))
        .unwrap_or(base)
}

/// The server key as an exec `--name`: the same rules as a policy name (it names the cgroup,
/// events and metrics); other characters become '-'.
pub(super) fn exec_name(server: &str) -> String {
    let mut name: String = server
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-') {
                c
            } else {
                '-'
            }
        })
        .take(64)
        .collect();
    if !name.starts_with(|c: char| c.is_ascii_alphanumeric()) {
        name.insert(0, 's');
        name.truncate(64);
    }
    name
}
