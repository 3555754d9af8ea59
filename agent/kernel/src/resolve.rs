//! Host names in an egress allowlist: resolved at launch with the host's resolver configuration
//! (/etc/resolv.conf, /etc/hosts) and re-resolved as their records expire.
//!
//! No window of denial for a still-valid address: fresh answers are added before anything is
//! removed, and an address stays allowed until its own TTL has passed, even when a newer answer
//! no longer lists it. The server may also need DNS itself, so a policy naming any host allows
//! the host's resolvers on port 53 (and only then).

use std::{
    fs::File,
    net::IpAddr,
    path::Path,
    sync::Arc,
    time::{Duration, Instant},
};

use hickory_resolver::{
    Hosts, TokioResolver,
    config::{LookupIpStrategy, ResolveHosts},
};
use ipnet::IpNet;
use tokio::sync::mpsc;

use super::{events::ServerLabel, net_rule::NetRule};
use mcp_guard_model::kernel_event::{KernelEvent, KernelEventKind, boot_ns_now};

/// An answer is kept at least this long, even with a TTL of 0 (the server needs time to use it).
const MIN_TTL: Duration = Duration::from_secs(5);
/// Names are re-resolved at least this often (hosts-file answers carry a one-day TTL).
const MAX_REFRESH: Duration = Duration::from_mins(5);
/// After a failed lookup, try again this soon.
const RETRY: Duration = Duration::from_secs(5);

/// Why names could not be resolved or the resolver not set up.
#[derive(Debug, thiserror::Error)]
pub enum ResolveError {
    /// The allowlist names hosts but no resolver was given.
    #[error("the egress allowlist names hosts but no resolver is configured")]
    NoResolver,
    /// The system resolver configuration could not be read.
    #[error("resolver configuration: {0}")]
    Config(String),
    /// The hosts file could not be read.
    #[error("hosts file {path}: {source}")]
    Hosts {
        /// The file.
        path: String,
        /// Why.
        #[source]
        source: std::io::Error,
    },
}

/// A DNS client configured like the host's libc resolver.
pub struct NameResolver {
    inner: TokioResolver,
    nameservers: Vec<IpAddr>,
}

impl NameResolver {
    /// The host's resolvers (/etc/resolv.conf) and /etc/hosts.
    pub fn system() -> Result<Self, ResolveError> {
        Self::build(None)
    }

    /// The host's resolvers, with `hosts` read instead of /etc/hosts.
    pub fn with_hosts_file(hosts: &Path) -> Result<Self, ResolveError> {
        Self::build(Some(hosts))
    }

    fn build(hosts: Option<&Path>) -> Result<Self, ResolveError> {
        let mut builder =
            TokioResolver::builder_tokio().map_err(|e| ResolveError::Config(e.to_string()))?;
        builder.options_mut().use_hosts_file = ResolveHosts::Always;
        builder.options_mut().ip_strategy = LookupIpStrategy::Ipv4AndIpv6;
        let mut inner = builder.build();
        if let Some(path) = hosts {
            let hosts_err = |source| ResolveError::Hosts {
                path: path.display().to_string(),
                source,
            };
            let mut table = Hosts::default();
            table
                .read_hosts_conf(File::open(path).map_err(hosts_err)?)
                .map_err(hosts_err)?;
            inner.set_hosts(Arc::new(table));
        }
        let mut nameservers: Vec<IpAddr> = inner
            .config()
            .name_servers()
            .iter()
            .map(|ns| ns.socket_addr.ip())
            .collect();
        nameservers.sort();
        nameservers.dedup();
        Ok(Self { inner, nameservers })
    }

    /// The resolvers' addresses (from /etc/resolv.conf).
    pub fn nameservers(&self) -> &[IpAddr] {
        &self.nameservers
    }

    /// The addresses of `name` and until when the answer is valid.
    pub async fn lookup(&self, name: &str) -> Result<(Vec<IpAddr>, Instant), String> {
        let answer = self
            .inner
            .lookup_ip(name)
            .await
            .map_err(|e| e.to_string())?;
        let mut addrs: Vec<IpAddr> = answer.iter().collect();
        addrs.sort();
        addrs.dedup();
        Ok((addrs, answer.valid_until()))
    }
}

/// Adds `fresh` (valid until `valid_until`) to `known`, extending deadlines of addresses seen
/// again, then forgets addresses whose deadline has passed.
pub(crate) fn merge(
    known: &mut Vec<(IpAddr, Instant)>,
    fresh: &[IpAddr],
    valid_until: Instant,
    now: Instant,
) {
    for addr in fresh {
        match known.iter_mut().find(|(k, _)| k == addr) {
            Some(entry) => entry.1 = entry.1.max(valid_until),
            None => known.push((*addr, valid_until)),
        }
    }
    known.retain(|(_, deadline)| *deadline > now);
}

/// Per-name state of one server's allowlist.
struct Name {
    #[expect(clippy::struct_field_names, reason = "the DNS name itself")]
    name: String,
    port_lo: u16,
    port_hi: u16,
    known: Vec<(IpAddr, Instant)>,
    next_lookup: Instant,
}

/// Keeps one server's host names resolved and its allowlist rules current.
pub(crate) struct Refresher {
    resolver: NameResolver,
    names: Vec<Name>,
    fixed: Vec<NetRule>,
    tx: mpsc::Sender<KernelEvent>,
    cgroup_id: u64,
    label: ServerLabel,
}

impl Refresher {
    /// `hosts` are (name, `port_lo`, `port_hi`); `nets` the allowlist's fixed networks.
    pub(crate) fn new(
        resolver: NameResolver,
        hosts: Vec<(String, u16, u16)>,
        mut nets: Vec<NetRule>,
        tx: mpsc::Sender<KernelEvent>,
        cgroup_id: u64,
        label: ServerLabel,
    ) -> Self {
        // The server resolves the names itself: let it reach the host's resolvers, on 53 only.
        for ns in resolver.nameservers() {
            nets.push(NetRule {
                net: IpNet::from(*ns),
                port_lo: 53,
                port_hi: 53,
            });
        }
        let now = Instant::now();
        let names = hosts
            .into_iter()
            .map(|(name, port_lo, port_hi)| Name {
                name,
                port_lo,
                port_hi,
                known: Vec::new(),
                next_lookup: now,
            })
            .collect();
        Self {
            resolver,
            names,
            fixed: nets,
            tx,
            cgroup_id,
            label,
        }
    }

    /// Re-resolves the names that are due and returns the full rule set to install.
    pub(crate) async fn refresh(&mut self) -> Vec<NetRule> {
        let mut events = Vec::new();
        for name in &mut self.names {
            let now = Instant::now();
            if name.next_lookup > now {
                merge(&mut name.known, &[], now, now);
                continue;
            }
            let before: Vec<IpAddr> = name.known.iter().map(|(a, _)| *a).collect();
            let (ttl, error) = match self.resolver.lookup(&name.name).await {
                Ok((addrs, valid_until)) => {
                    let now = Instant::now();
                    let valid_until = valid_until.max(now + MIN_TTL);
                    merge(&mut name.known, &addrs, valid_until, now);
                    let ttl = valid_until - now;
                    name.next_lookup =
                        now + (ttl * 3 / 4).clamp(Duration::from_secs(1), MAX_REFRESH);
                    (ttl, None)
                }
                Err(e) => {
                    let now = Instant::now();
                    merge(&mut name.known, &[], now, now);
                    name.next_lookup = now + RETRY;
                    (Duration::ZERO, Some(e))
                }
            };
            let after: Vec<IpAddr> = name.known.iter().map(|(a, _)| *a).collect();
            if after != before || error.is_some() {
                events.push(KernelEvent {
                    ts_boot_ns: boot_ns_now(),
                    cgroup_id: self.cgroup_id,
                    pid: 0,
                    tid: 0,
                    server: self.label.server.clone(),
                    session: self.label.session.clone(),
                    kind: KernelEventKind::Resolve {
                        name: name.name.clone(),
                        addrs: after,
                        ttl_secs: ttl.as_secs(),
                        error,
                    },
                });
            }
        }
        for event in events {
            // A full channel must not stall enforcement: the event waits, the rules do not.
            let _ = self.tx.try_send(event);
        }
        self.rules()
    }

    fn rules(&self) -> Vec<NetRule> {
        let mut rules = self.fixed.clone();
        for name in &self.names {
            for (addr, _) in &name.known {
                rules.push(NetRule {
                    net: IpNet::from(*addr),
                    port_lo: name.port_lo,
                    port_hi: name.port_hi,
                });
            }
        }
        rules
    }

    /// When something is due next: a lookup, or an address to expire.
    fn next_wake(&self) -> Instant {
        let mut wake = Instant::now() + MAX_REFRESH;
        for name in &self.names {
            wake = wake.min(name.next_lookup);
            for (_, deadline) in &name.known {
                wake = wake.min(*deadline);
            }
        }
        wake
    }

    /// Refreshes forever, handing each new rule set to `install`.
    pub(crate) async fn run<E: std::fmt::Display>(
        mut self,
        install: impl Fn(&[NetRule]) -> Result<(), E>,
    ) {
        loop {
            tokio::time::sleep_until(self.next_wake().into()).await;
            let rules = self.refresh().await;
            if let Err(e) = install(&rules) {
                tracing::warn!(
                    cgroup = self.cgroup_id,
                    "updating the egress allowlist: {e}"
                );
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn new_addresses_come_in_and_old_ones_stay_until_their_ttl() {
        let t0 = Instant::now();
        let a: IpAddr = "192.0.2.1".parse().expect("addr");
        let b: IpAddr = "192.0.2.2".parse().expect("addr");
        let mut known = Vec::new();
        merge(&mut known, &[a], t0 + Duration::from_mins(1), t0);
        // The name now answers b only: a is still valid for 60s and stays.
        merge(
            &mut known,
            &[b],
            t0 + Duration::from_secs(90),
            t0 + Duration::from_secs(30),
        );
        assert_eq!(known.len(), 2);
        // Past a's deadline it goes; b stays.
        merge(&mut known, &[], t0, t0 + Duration::from_secs(61));
        assert_eq!(known, vec![(b, t0 + Duration::from_secs(90))]);
        // Seen again: its deadline only grows.
        merge(
            &mut known,
            &[b],
            t0 + Duration::from_secs(70),
            t0 + Duration::from_secs(62),
        );
        assert_eq!(known, vec![(b, t0 + Duration::from_secs(90))]);
    }
}
