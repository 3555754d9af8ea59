//! Loads mcp-guard's embedded eBPF object, attaches it to server cgroups and keeps the per-cgroup
//! maps in step with each server's policy.
//!
//! This module knows cgroups, addresses and ports; it does not know JSON-RPC or policy files:
//! callers hand it plain [`EgressRule`]s.

use std::{fs::File, net::IpAddr, os::unix::fs::MetadataExt as _, path::Path};

use aya::{
    Ebpf,
    maps::{HashMap, LpmTrie, MapData, lpm_trie::Key},
    programs::{CgroupAttachMode, CgroupSockAddr, links::LinkError},
};
use ipnet::IpNet;
use mcp_guard_ebpf::{
    CGROUP_PREFIX_BITS, GUARD_FLAG_OBSERVE, GuardConfig, Ip4Key, Ip6Key, MAX_PORT_RANGES,
    PortRange, PortSet, maps, programs,
};

/// The eBPF object built by `agent/build.rs` from `agent-ebpf`.
pub static EBPF_OBJECT: &[u8] =
    aya::include_bytes_aligned!(concat!(env!("OUT_DIR"), "/mcp-guard-ebpf"));

/// The egress programs, in the order they are attached.
const EGRESS_PROGRAMS: [&str; 4] = [
    programs::CONNECT4,
    programs::CONNECT6,
    programs::SENDMSG4,
    programs::SENDMSG6,
];

/// One allowed destination: a network and an inclusive port range.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct EgressRule {
    /// Destination network (a single host is a /32 or /128).
    pub net: IpNet,
    /// Lowest allowed port.
    pub port_lo: u16,
    /// Highest allowed port.
    pub port_hi: u16,
}

/// What can go wrong between the eBPF object and the kernel.
#[derive(Debug, thiserror::Error)]
pub enum KernelError {
    /// The object did not load (verifier, missing privileges, old kernel).
    #[error(
        "loading mcp-guard's eBPF programs failed: {0} (root or CAP_BPF+CAP_NET_ADMIN is needed)"
    )]
    Load(#[from] aya::EbpfError),
    /// A program is missing from the object or did not load.
    #[error("eBPF program {name}: {source}")]
    Program {
        /// Program name.
        name: &'static str,
        /// Why.
        #[source]
        source: aya::programs::ProgramError,
    },
    /// A map is missing or has the wrong type.
    #[error("eBPF map {name}: {source}")]
    Map {
        /// Map name.
        name: &'static str,
        /// Why.
        #[source]
        source: aya::maps::MapError,
    },
    /// The eBPF object does not contain a map the agent needs.
    #[error("the eBPF object has no map {0}")]
    MissingMap(&'static str),
    /// The eBPF object does not contain a program the agent needs.
    #[error("the eBPF object has no program {0}")]
    MissingProgram(&'static str),
    /// The cgroup directory could not be opened.
    #[error("cgroup {path}: {source}")]
    Cgroup {
        /// The cgroup directory.
        path: String,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// One network has more distinct port ranges than a map entry holds.
    #[error(
        "{net} needs {count} port ranges; at most {MAX_PORT_RANGES} fit (merge ranges in the policy)"
    )]
    TooManyPortRanges {
        /// The network.
        net: IpNet,
        /// How many ranges it needed.
        count: usize,
    },
    /// Detaching a program failed.
    #[error("detaching: {0}")]
    Link(#[from] LinkError),
}

/// The loaded eBPF object with its egress programs.
pub struct EgressGuard {
    ebpf: Ebpf,
}

impl EgressGuard {
    /// Loads the embedded object into the kernel (programs verified, maps created).
    pub fn load() -> Result<Self, KernelError> {
        let mut ebpf = Ebpf::load(EBPF_OBJECT)?;
        for name in EGRESS_PROGRAMS {
            let program: &mut CgroupSockAddr = ebpf
                .program_mut(name)
                .ok_or(KernelError::MissingProgram(name))?
                .try_into()
                .map_err(|source| KernelError::Program { name, source })?;
            program
                .load()
                .map_err(|source| KernelError::Program { name, source })?;
        }
        Ok(Self { ebpf })
    }

    /// Attaches the egress programs to the cgroup v2 directory `cgroup_dir`.
    ///
    /// Programs attached to a cgroup stay until it is removed, so nothing needs detaching when a
    /// server's cgroup goes away. `AllowMultiple` leaves other tools' programs in place.
    pub fn attach(&mut self, cgroup_dir: &Path) -> Result<(), KernelError> {
        let cgroup = File::open(cgroup_dir).map_err(|source| KernelError::Cgroup {
            path: cgroup_dir.display().to_string(),
            source,
        })?;
        for name in EGRESS_PROGRAMS {
            let program: &mut CgroupSockAddr = self
                .ebpf
                .program_mut(name)
                .ok_or(KernelError::MissingProgram(name))?
                .try_into()
                .map_err(|source| KernelError::Program { name, source })?;
            program
                .attach(&cgroup, CgroupAttachMode::AllowMultiple)
                .map_err(|source| KernelError::Program { name, source })?;
        }
        Ok(())
    }

    /// Starts judging the egress of cgroup `cgroup_id` against `rules` (default deny).
    pub fn guard(
        &mut self,
        cgroup_id: u64,
        session: u32,
        observe: bool,
        rules: &[EgressRule],
    ) -> Result<(), KernelError> {
        let entries = allowlist_entries(rules)?;
        {
            let mut v4: LpmTrie<&mut MapData, Ip4Key, PortSet> = self.map(maps::ALLOW_V4)?;
            for (net, ports) in &entries {
                if let IpNet::V4(n) = net {
                    let key = Key::new(
                        CGROUP_PREFIX_BITS + u32::from(n.prefix_len()),
                        Ip4Key {
                            cgroup: cgroup_id.to_be_bytes(),
                            addr: n.network().octets(),
                        },
                    );
                    v4.insert(&key, ports, 0)
                        .map_err(|source| KernelError::Map {
                            name: maps::ALLOW_V4,
                            source,
                        })?;
                }
            }
        }
        {
            let mut v6: LpmTrie<&mut MapData, Ip6Key, PortSet> = self.map(maps::ALLOW_V6)?;
            for (net, ports) in &entries {
                if let IpNet::V6(n) = net {
                    let key = Key::new(
                        CGROUP_PREFIX_BITS + u32::from(n.prefix_len()),
                        Ip6Key {
                            cgroup: cgroup_id.to_be_bytes(),
                            addr: n.network().octets(),
                        },
                    );
                    v6.insert(&key, ports, 0)
                        .map_err(|source| KernelError::Map {
                            name: maps::ALLOW_V6,
                            source,
                        })?;
                }
            }
        }
        let mut guarded: HashMap<&mut MapData, u64, GuardConfig> = self.map(maps::GUARDED)?;
        let config = GuardConfig {
            flags: if observe { GUARD_FLAG_OBSERVE } else { 0 },
            session,
        };
        guarded
            .insert(cgroup_id, config, 0)
            .map_err(|source| KernelError::Map {
                name: maps::GUARDED,
                source,
            })
    }

    fn map<'a, T>(&'a mut self, name: &'static str) -> Result<T, KernelError>
    where
        T: TryFrom<&'a mut aya::maps::Map, Error = aya::maps::MapError>,
    {
        let map = self
            .ebpf
            .map_mut(name)
            .ok_or(KernelError::MissingMap(name))?;
        T::try_from(map).map_err(|source| KernelError::Map { name, source })
    }
}

/// The id of a cgroup v2 directory: its inode number, as `bpf_get_current_cgroup_id` returns.
pub fn cgroup_id(cgroup_dir: &Path) -> std::io::Result<u64> {
    Ok(std::fs::metadata(cgroup_dir)?.ino())
}

/// Turns rules into LPM entries: each network carries the ports of every rule containing it, so
/// the kernel's longest-prefix match alone gives the full answer for an address.
fn allowlist_entries(rules: &[EgressRule]) -> Result<Vec<(IpNet, PortSet)>, KernelError> {
    let mut nets: Vec<IpNet> = rules.iter().map(|r| r.net.trunc()).collect();
    nets.sort();
    nets.dedup();
    nets.into_iter()
        .map(|net| {
            let mut ranges: Vec<(u16, u16)> = rules
                .iter()
                .filter(|r| r.net.trunc().contains(&net))
                .map(|r| (r.port_lo, r.port_hi))
                .collect();
            let ranges = merge_ranges(&mut ranges);
            if ranges.len() > MAX_PORT_RANGES {
                return Err(KernelError::TooManyPortRanges {
                    net,
                    count: ranges.len(),
                });
            }
            let mut set = PortSet::default();
            for (slot, (lo, hi)) in set.ranges.iter_mut().zip(&ranges) {
                *slot = PortRange { lo: *lo, hi: *hi };
            }
            set.len = ranges.len() as u32;
            Ok((net, set))
        })
        .collect()
}

/// Sorts and merges overlapping or adjacent inclusive ranges.
fn merge_ranges(ranges: &mut [(u16, u16)]) -> Vec<(u16, u16)> {
    ranges.sort_unstable();
    let mut merged: Vec<(u16, u16)> = Vec::with_capacity(ranges.len());
    for &(lo, hi) in ranges.iter() {
        match merged.last_mut() {
            Some(last) if u32::from(lo) <= u32::from(last.1) + 1 => last.1 = last.1.max(hi),
            _ => merged.push((lo, hi)),
        }
    }
    merged
}

/// Whether an address is covered by `rules`, computed the way the kernel will (for tests and
/// `policy check` explanations).
pub fn rules_allow(rules: &[EgressRule], addr: IpAddr, port: u16) -> bool {
    rules
        .iter()
        .any(|r| r.net.contains(&addr) && r.port_lo <= port && port <= r.port_hi)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rule(net: &str, lo: u16, hi: u16) -> EgressRule {
        EgressRule {
            net: net.parse().expect("test net"),
            port_lo: lo,
            port_hi: hi,
        }
    }

    #[test]
    fn nested_networks_inherit_ports_of_the_wider_rule() {
        let rules = [rule("10.0.0.0/8", 443, 443), rule("10.1.0.0/16", 80, 80)];
        let entries = allowlist_entries(&rules).expect("entries");
        let inner = entries
            .iter()
            .find(|(n, _)| n.prefix_len() == 16)
            .expect("inner entry");
        assert!(inner.1.allows(443) && inner.1.allows(80) && !inner.1.allows(22));
        let outer = entries
            .iter()
            .find(|(n, _)| n.prefix_len() == 8)
            .expect("outer entry");
        assert!(outer.1.allows(443) && !outer.1.allows(80));
    }

    #[test]
    fn ranges_merge_and_overflow_is_an_error() {
        assert_eq!(
            merge_ranges(&mut [(10, 20), (21, 30), (5, 12), (40, 40)]),
            vec![(5, 30), (40, 40)]
        );
        let many: Vec<EgressRule> = (0..=MAX_PORT_RANGES as u16)
            .map(|i| rule("192.0.2.1/32", i * 10, i * 10))
            .collect();
        assert!(matches!(
            allowlist_entries(&many),
            Err(KernelError::TooManyPortRanges { .. })
        ));
    }
}
