//! `[network] allow` entries: an address, network or DNS name with a port range.

use std::{
    net::{IpAddr, Ipv4Addr, Ipv6Addr},
    str::FromStr,
};

use ipnet::IpNet;

/// One `allow` entry: `host:port`, `a.b.c.d:port`, `cidr:port`, `[v6]:port`, `[v6cidr]:port`;
/// the port may be `lo-hi` or `*` (1-65535).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NetAllow {
    /// The destination.
    pub target: NetTarget,
    /// Lowest allowed port.
    pub port_lo: u16,
    /// Highest allowed port.
    pub port_hi: u16,
}

/// A destination: an address or network, or a name resolved at launch and kept fresh.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum NetTarget {
    /// An address (as a /32 or /128) or a network.
    Net(IpNet),
    /// A DNS name, lowercased, without a trailing dot.
    Host(String),
}

/// Parses a `[network] allow` entry (see [`NetAllow`]).
pub(crate) fn parse_net_allow(s: &str) -> Result<NetAllow, String> {
    let (target, port) = if let Some(rest) = s.strip_prefix('[') {
        let Some((inside, after)) = rest.split_once(']') else {
            return Err(format!("{s:?}: missing ']' after the IPv6 address"));
        };
        let Some(port) = after.strip_prefix(':') else {
            return Err(format!("{s:?} has no port (write [{inside}]:PORT)"));
        };
        let net = if inside.contains('/') {
            match IpNet::from_str(inside) {
                Ok(net @ IpNet::V6(_)) => check_net_bits(net, s)?,
                _ => return Err(format!("{s:?}: {inside:?} is not an IPv6 network")),
            }
        } else {
            match Ipv6Addr::from_str(inside) {
                Ok(addr) => IpNet::from(IpAddr::V6(addr)),
                Err(_) => return Err(format!("{s:?}: {inside:?} is not an IPv6 address")),
            }
        };
        (NetTarget::Net(net), port)
    } else {
        let Some((host, port)) = s.rsplit_once(':') else {
            return Err(format!("{s:?} has no port (write {s}:PORT, e.g. {s}:443)"));
        };
        if host.contains(':') {
            return Err(format!(
                "{s:?}: write IPv6 addresses in brackets, e.g. [::1]:443 or [fd00::/8]:443"
            ));
        }
        (parse_host(host, s)?, port)
    };
    let (port_lo, port_hi) = parse_ports(port, s)?;
    Ok(NetAllow {
        target,
        port_lo,
        port_hi,
    })
}

fn check_net_bits(net: IpNet, s: &str) -> Result<IpNet, String> {
    if net.trunc() == net {
        Ok(net)
    } else {
        Err(format!(
            "{s:?}: {net} has bits set past the prefix length (did you mean {}?)",
            net.trunc()
        ))
    }
}

fn parse_host(host: &str, s: &str) -> Result<NetTarget, String> {
    if host.is_empty() {
        return Err(format!("{s:?} has no host"));
    }
    if host.contains('/') {
        return match IpNet::from_str(host) {
            Ok(net @ IpNet::V4(_)) => Ok(NetTarget::Net(check_net_bits(net, s)?)),
            _ => Err(format!(
                "{s:?}: {host:?} is not an IPv4 network (e.g. 10.0.0.0/8)"
            )),
        };
    }
    if let Ok(addr) = Ipv4Addr::from_str(host) {
        return Ok(NetTarget::Net(IpNet::from(IpAddr::V4(addr))));
    }
    if host.starts_with("*.") {
        return Err(format!(
            "{s:?}: wildcard names are not supported; list each host name"
        ));
    }
    let name = host.strip_suffix('.').unwrap_or(host);
    if !is_dns_name(name) {
        return Err(format!(
            "{s:?}: {host:?} is neither an IPv4 address, a network nor a DNS name"
        ));
    }
    Ok(NetTarget::Host(name.to_ascii_lowercase()))
}

/// A DNS host name (letters, digits, hyphens; labels of 1 to 63; at most 253; the last label not
/// all digits, which would be a mistyped address).
fn is_dns_name(name: &str) -> bool {
    let labels: Vec<&str> = name.split('.').collect();
    name.len() <= 253
        && labels.iter().all(|l| {
            (1..=63).contains(&l.len())
                && !l.starts_with('-')
                && !l.ends_with('-')
                && l.chars().all(|c| c.is_ascii_alphanumeric() || c == '-')
        })
        && labels
            .last()
            .is_some_and(|l| !l.chars().all(|c| c.is_ascii_digit()))
}

/// `443`, `8000-8999` or `*` (1-65535).
fn parse_ports(port: &str, s: &str) -> Result<(u16, u16), String> {
    if port.is_empty() {
        return Err(format!("{s:?} has no port"));
    }
    if port == "*" {
        return Ok((1, u16::MAX));
    }
    // Digits only: u16's parser would also take "+443".
    let one = |p: &str| match p.parse::<u16>() {
        Ok(n) if n > 0 && p.bytes().all(|b| b.is_ascii_digit()) => Ok(n),
        _ => Err(format!("{s:?}: {p:?} is not a port (1 to 65535)")),
    };
    match port.split_once('-') {
        Some((lo, hi)) => {
            let (lo, hi) = (one(lo)?, one(hi)?);
            if lo > hi {
                return Err(format!("{s:?}: port range {lo}-{hi} is reversed"));
            }
            Ok((lo, hi))
        }
        None => one(port).map(|p| (p, p)),
    }
}
