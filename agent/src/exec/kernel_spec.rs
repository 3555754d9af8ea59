//! Policy → kernel: the [`ServerSpec`] the kernel guard enforces for one server.
//!
//! The kernel module takes plain data and does not know policy files; this is the one place that
//! reads a [`Policy`] for it.

use std::path::Path;

use mcp_guard_kernel::loader::{Destination, EgressRule, SensitivePath, ServerSpec};
use mcp_guard_policy::{NetAllow, NetTarget, OnSensitive, Policy, expand_home};

/// What the kernel guard enforces for a server run under `policy`.
///
/// `home` expands `~/` in `[detect] sensitive` (the server user's home); `observe` reports egress
/// verdicts instead of enforcing them. A sensitive-path kill stays on under `observe`: that is
/// how a server run with `--observe` (no landlock) is still stopped at its first credential read.
pub fn server_spec(
    policy: &Policy,
    server: &str,
    session: &str,
    home: &Path,
    observe: bool,
) -> ServerSpec {
    ServerSpec {
        server: server.to_string(),
        session: session.to_string(),
        observe,
        egress: policy.network.allow.iter().map(egress_rule).collect(),
        sensitive: policy
            .detect
            .sensitive
            .iter()
            .filter_map(|p| sensitive_path(p, home))
            .collect(),
        kill_on_sensitive: policy.detect.on_sensitive == OnSensitive::Kill,
        unix: policy.network.unix.clone(),
        // As for the rest of the guard: only observe or a policy that accepts degraded
        // enforcement runs where the kernel cannot judge Unix sockets.
        unix_optional: observe || policy.enforcement.allow_degraded,
        // The bind programs judge the ports landlock's TCP rules allow, on every kernel (where
        // landlock has TCP rules it refuses first; where not, the programs keep the promise).
        tcp_bind: mcp_guard_launch::tcp_port_ranges(policy),
    }
}

/// One `[network] allow` entry as an egress rule.
pub fn egress_rule(allow: &NetAllow) -> EgressRule {
    EgressRule {
        dest: match &allow.target {
            NetTarget::Net(net) => Destination::Net(*net),
            NetTarget::Host(name) => Destination::Host(name.clone()),
        },
        port_lo: allow.port_lo,
        port_hi: allow.port_hi,
    }
}

/// A `[detect] sensitive` pattern as a path the kernel matcher can express, if it can:
/// `~/x/**` or `/x/**` → everything under `x`; a pattern without wildcards → that exact path;
/// `**/name` → a file called `name` in any directory.
///
/// Anything else (`/etc/ssh/ssh_host_*_key`, `~/x/*.pem`, `~/x/**/y`) is not killed in the
/// kernel; landlock still denies it unless the read set grants it, and the detector reports it
/// from the open events (which carry every path).
pub fn sensitive_path(pattern: &str, home: &Path) -> Option<SensitivePath> {
    let wild = |s: &str| s.contains(['*', '?', '[', ']', '{', '}']);
    if let Some(name) = pattern.strip_prefix("**/") {
        return (!name.is_empty() && !name.contains('/') && !wild(name))
            .then(|| SensitivePath::Name(name.to_string()));
    }
    if let Some(dir) = pattern.strip_suffix("/**") {
        return (!dir.is_empty() && !wild(dir))
            .then(|| SensitivePath::Under(expand_home(dir, home)))
            .filter(|p| matches!(p, SensitivePath::Under(d) if d.is_absolute()));
    }
    if wild(pattern) {
        return None;
    }
    let path = expand_home(pattern, home);
    path.is_absolute().then_some(SensitivePath::Exact(path))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sensitive_patterns_map_to_kernel_paths_or_none() {
        let home = Path::new("/home/u");
        let p = |s| sensitive_path(s, home);
        assert_eq!(
            p("~/.ssh/**"),
            Some(SensitivePath::Under("/home/u/.ssh".into()))
        );
        assert_eq!(
            p("~/.aws/credentials"),
            Some(SensitivePath::Exact("/home/u/.aws/credentials".into()))
        );
        assert_eq!(p("**/.env"), Some(SensitivePath::Name(".env".into())));
        assert_eq!(
            p("/etc/shadow"),
            Some(SensitivePath::Exact("/etc/shadow".into()))
        );
        assert_eq!(
            p("/srv/secrets/**"),
            Some(SensitivePath::Under("/srv/secrets".into()))
        );
        assert_eq!(p("/etc/ssh/ssh_host_*_key"), None);
        assert_eq!(p("**/*.pem"), None);
        assert_eq!(p("**/a/b"), None);
        assert_eq!(p("~/x/**/y"), None);
    }

    #[test]
    fn policy_becomes_a_server_spec() {
        let policy = mcp_guard_policy::parse(
            r#"name = "t"
[network]
allow = ["127.0.0.1:8080", "10.0.0.0/8:1000-2000", "api.example.com:443"]
unix = ["/run/db.sock", "@bus"]
[detect]
sensitive = ["~/.aws/credentials", "**/.env", "/etc/ssh/ssh_host_*_key"]
on_sensitive = "kill"
"#,
            None,
        )
        .expect("valid policy");
        let spec = server_spec(&policy, "srv", "sess", Path::new("/h"), true);
        assert_eq!(
            (spec.server.as_str(), spec.session.as_str()),
            ("srv", "sess")
        );
        assert!(spec.observe && spec.kill_on_sensitive);
        assert_eq!(spec.unix, ["/run/db.sock", "@bus"]);
        assert!(spec.unix_optional, "observe runs without the unix programs");
        assert_eq!(
            spec.tcp_bind,
            Some(vec![(8080, 8080), (1000, 2000), (443, 443)]),
            "the ports landlock's TCP rules allow"
        );
        assert_eq!(
            spec.egress,
            vec![
                EgressRule {
                    dest: Destination::Net("127.0.0.1/32".parse().expect("net")),
                    port_lo: 8080,
                    port_hi: 8080
                },
                EgressRule {
                    dest: Destination::Net("10.0.0.0/8".parse().expect("net")),
                    port_lo: 1000,
                    port_hi: 2000
                },
                EgressRule {
                    dest: Destination::Host("api.example.com".into()),
                    port_lo: 443,
                    port_hi: 443
                },
            ]
        );
        assert_eq!(
            spec.sensitive,
            vec![
                SensitivePath::Exact("/h/.aws/credentials".into()),
                SensitivePath::Name(".env".into())
            ]
        );
        let default = mcp_guard_policy::builtin_default();
        let spec = server_spec(&default, "d", "s", Path::new("/h"), false);
        assert!(!spec.kill_on_sensitive);
        assert!(spec.unix.is_empty() && !spec.unix_optional);
        let any = mcp_guard_policy::parse(
            "name = \"t\"\n[network]\nallow = [\"10.0.0.1:80\", \"10.0.0.2:*\"]\n",
            None,
        )
        .expect("valid policy");
        let spec = server_spec(&any, "a", "s", Path::new("/h"), false);
        assert_eq!(
            spec.tcp_bind, None,
            "an entry on every port: binds are not limited"
        );
    }
}
