//! The TCP ports a policy's `[network] allow` names, as landlock and the kernel guard take them.

use mcp_guard_policy::Policy;

/// The TCP ports the policy's network allow list names; `None` when an entry covers all ports.
pub(super) fn tcp_ports(policy: &Policy) -> Option<Vec<u16>> {
    let mut ports: Vec<u16> = tcp_port_ranges(policy)?
        .into_iter()
        .flat_map(|(lo, hi)| lo..=hi)
        .collect();
    ports.sort_unstable();
    ports.dedup();
    Some(ports)
}

/// [`tcp_ports`] as inclusive ranges, one per allow entry: the ports landlock's TCP rules and
/// the kernel guard's bind programs allow (the same ports, so both keep the same promise).
pub fn tcp_port_ranges(policy: &Policy) -> Option<Vec<(u16, u16)>> {
    policy
        .network
        .allow
        .iter()
        .map(|a| (!(a.port_lo <= 1 && a.port_hi == u16::MAX)).then_some((a.port_lo, a.port_hi)))
        .collect()
}
