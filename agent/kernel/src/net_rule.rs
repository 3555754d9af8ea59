//! The allowlist entry both the map writer (`loader`) and the name refresher (`resolve`) speak:
//! its own module, so neither has to import the other for it.

use ipnet::IpNet;

/// A concrete network rule, as the kernel maps hold them.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct NetRule {
    /// Destination network.
    pub net: IpNet,
    /// Lowest allowed port.
    pub port_lo: u16,
    /// Highest allowed port.
    pub port_hi: u16,
}
