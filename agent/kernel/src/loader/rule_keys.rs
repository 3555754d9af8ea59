//! A server's rules as the kernel maps' keys: egress networks as LPM entries keyed by cgroup
//! (each carrying the ports of every rule containing it), sensitive paths as exact, prefix and
//! relative-tail keys, and the allowlist writer that swaps a server's entries without a gap.

use std::{collections::BTreeSet, path::Path, sync::Mutex};

use aya::maps::lpm_trie::Key;
use ipnet::IpNet;
use mcp_guard_ebpf::{
    CGROUP_PREFIX_BITS, Ip4Key, Ip6Key, MAX_PORT_RANGES, NAME_LEN, NameKey, PATH_LEN, PathKey,
    PortRange, PortSet, maps,
};

use super::{
    super::net_rule::NetRule, Destination, EgressRule, KernelError, Maps, SensitivePath, lock,
    map_err,
};

/// The allowlist keys one server has in the maps, so they can be updated and removed exactly.
#[derive(Default)]
pub(super) struct Installed {
    pub(super) v4: BTreeSet<(u32, [u8; 4])>,
    pub(super) v6: BTreeSet<(u32, [u8; 16])>,
}

/// Networks stay as they are; hosts go to the resolver with their ports.
pub(super) fn split_rules(rules: &[EgressRule]) -> (Vec<NetRule>, Vec<(String, u16, u16)>) {
    let mut nets = Vec::new();
    let mut hosts = Vec::new();
    for r in rules {
        match &r.dest {
            Destination::Net(net) => nets.push(NetRule {
                net: *net,
                port_lo: r.port_lo,
                port_hi: r.port_hi,
            }),
            Destination::Host(name) => hosts.push((name.clone(), r.port_lo, r.port_hi)),
        }
    }
    (nets, hosts)
}

pub(super) fn v4_key(cgroup_id: u64, bits: u32, addr: [u8; 4]) -> Key<Ip4Key> {
    Key::new(
        CGROUP_PREFIX_BITS + bits,
        Ip4Key {
            cgroup: cgroup_id.to_be_bytes(),
            addr,
        },
    )
}

pub(super) fn v6_key(cgroup_id: u64, bits: u32, addr: [u8; 16]) -> Key<Ip6Key> {
    Key::new(
        CGROUP_PREFIX_BITS + bits,
        Ip6Key {
            cgroup: cgroup_id.to_be_bytes(),
            addr,
        },
    )
}

/// Makes the cgroup's allowlist equal `rules`: every new or changed entry is written first
/// (each write replaces its entry atomically), stale entries are removed after, so an address
/// allowed before and after is never denied in between.
pub(super) fn install_rules(
    maps: &Mutex<Maps>,
    cgroup_id: u64,
    installed: &Mutex<Installed>,
    rules: &[NetRule],
) -> Result<(), KernelError> {
    let entries = allowlist_entries(rules)?;
    let mut maps = lock(maps);
    let mut installed = lock(installed);
    let mut v4 = BTreeSet::new();
    let mut v6 = BTreeSet::new();
    for (net, ports) in &entries {
        let bits = u32::from(net.prefix_len());
        match net {
            IpNet::V4(n) => {
                let addr = n.network().octets();
                maps.v4
                    .insert(&v4_key(cgroup_id, bits, addr), ports, 0)
                    .map_err(map_err(maps::ALLOW_V4))?;
                v4.insert((bits, addr));
            }
            IpNet::V6(n) => {
                let addr = n.network().octets();
                maps.v6
                    .insert(&v6_key(cgroup_id, bits, addr), ports, 0)
                    .map_err(map_err(maps::ALLOW_V6))?;
                v6.insert((bits, addr));
            }
        }
    }
    for &(bits, addr) in installed.v4.difference(&v4) {
        let _ = maps.v4.remove(&v4_key(cgroup_id, bits, addr));
    }
    for &(bits, addr) in installed.v6.difference(&v6) {
        let _ = maps.v6.remove(&v6_key(cgroup_id, bits, addr));
    }
    installed.v4 = v4;
    installed.v6 = v6;
    Ok(())
}

/// The `SENSITIVE` keys for a set of paths: exact paths with their NUL inside the prefix,
/// directories as a prefix ending in `/` plus the directory itself; and the `SENSITIVE_NAMES`
/// keys for bare file names.
pub(super) fn sensitive_keys(
    cgroup_id: u64,
    paths: &[SensitivePath],
) -> Result<(Vec<Key<PathKey>>, Vec<NameKey>), KernelError> {
    use std::os::unix::ffi::OsStrExt as _;
    let mut names = Vec::new();
    for p in paths {
        if let SensitivePath::Name(name) = p {
            if name.is_empty() || name.contains('/') || name.len() >= NAME_LEN {
                return Err(KernelError::SensitivePath {
                    path: name.clone(),
                    why: "a file name must be non-empty, without '/', and under 64 bytes",
                });
            }
            let mut key = NameKey {
                cgroup: cgroup_id.to_be_bytes(),
                name: [0; NAME_LEN],
            };
            key.name[..name.len()].copy_from_slice(name.as_bytes());
            names.push(key);
        }
    }
    let mut keys = Vec::new();
    let mut push = |bytes: &[u8], with_nul: bool, shown: &Path| -> Result<(), KernelError> {
        let len = bytes.len() + usize::from(with_nul);
        if len > PATH_LEN {
            return Err(KernelError::SensitivePath {
                path: shown.display().to_string(),
                why: "longer than the 247 bytes the kernel matcher holds",
            });
        }
        let mut data = PathKey {
            cgroup: cgroup_id.to_be_bytes(),
            path: [0; PATH_LEN],
        };
        data.path[..bytes.len()].copy_from_slice(bytes);
        #[expect(
            clippy::cast_possible_truncation,
            reason = "the length is checked above: a few hundred bits"
        )]
        keys.push(Key::new(((8 + len) * 8) as u32, data));
        Ok(())
    };
    for p in paths {
        let (SensitivePath::Exact(path) | SensitivePath::Under(path)) = p else {
            continue;
        };
        if !path.is_absolute() {
            return Err(KernelError::SensitivePath {
                path: path.display().to_string(),
                why: "must be absolute (expand ~ first)",
            });
        }
        let bytes = path.as_os_str().as_bytes();
        match p {
            SensitivePath::Exact(_) => push(bytes, true, path)?,
            SensitivePath::Under(_) => {
                let trimmed = bytes.strip_suffix(b"/").unwrap_or(bytes);
                push(trimmed, true, path)?;
                let mut dir = trimmed.to_vec();
                dir.push(b'/');
                push(&dir, false, path)?;
            }
            SensitivePath::Name(_) => {}
        }
        for (tail, under) in relative_tails(p) {
            push(&tail, true, path)?;
            if under {
                let mut dir = tail;
                dir.push(b'/');
                push(&dir, false, path)?;
            }
        }
    }
    Ok((keys, names))
}

/// The relative spellings of a sensitive path that name it from one of its ancestors,
/// whatever the process's cwd or dirfd (a relative path that resolves to the sensitive one
/// without `..` or symlinks is one of these): for a directory `/h/u/.ssh`, `.ssh`, `u/.ssh` and
/// `h/u/.ssh` (each also as a prefix, `.ssh/...`); for a file `/h/u/.aws/credentials`, the
/// tails that still name its directory, `.aws/credentials` and up, not the bare file name
/// (that is `**/credentials`, which the policy can say when it means it). `true` marks a
/// directory's tails. A path with `.` or `..` components has none.
fn relative_tails(p: &SensitivePath) -> Vec<(Vec<u8>, bool)> {
    use std::{os::unix::ffi::OsStrExt as _, path::Component};
    let (path, under) = match p {
        SensitivePath::Exact(path) => (path, false),
        SensitivePath::Under(path) => (path, true),
        SensitivePath::Name(_) => return Vec::new(),
    };
    let mut names = Vec::new();
    for c in path.components() {
        match c {
            Component::RootDir => {}
            Component::Normal(name) => names.push(name.as_bytes()),
            _ => return Vec::new(),
        }
    }
    // A file's tails keep its directory; a directory's tails keep the directory.
    let min_names = if under { 1 } else { 2 };
    (0..names.len())
        .filter(|k| names.len() - k >= min_names)
        .map(|k| (names[k..].join(&b'/'), under))
        .collect()
}

/// Turns rules into LPM entries: each network carries the ports of every rule containing it, so
/// the kernel's longest-prefix match alone gives the full answer for an address.
fn allowlist_entries(rules: &[NetRule]) -> Result<Vec<(IpNet, PortSet)>, KernelError> {
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
            #[expect(
                clippy::cast_possible_truncation,
                reason = "at most MAX_PORT_RANGES, checked above"
            )]
            let len = ranges.len() as u32;
            set.len = len;
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

#[cfg(test)]
mod tests {
    use super::*;

    fn rule(net: &str, lo: u16, hi: u16) -> NetRule {
        NetRule {
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
    fn sensitive_paths_become_exact_prefix_and_name_keys() {
        let (keys, names) = sensitive_keys(
            7,
            &[
                SensitivePath::Exact("/root/.aws/credentials".into()),
                SensitivePath::Under("/root/.ssh/".into()),
                SensitivePath::Name(".env".into()),
            ],
        )
        .expect("valid paths");
        // Exact (with NUL), then its relative tails `root/.aws/credentials` and
        // `.aws/credentials` (with NUL); the directory itself (with NUL) and its prefix, then
        // its tails `root/.ssh` and `.ssh`, each with NUL and as a prefix.
        let shown: Vec<(String, u32)> = keys
            .iter()
            .map(|k| {
                let bits = k.prefix_len();
                let len = (bits / 8 - 8) as usize;
                let data = k.data();
                (
                    String::from_utf8_lossy(&data.path[..len]).into_owned(),
                    bits,
                )
            })
            .collect();
        let want = [
            ("/root/.aws/credentials\0", 23),
            ("root/.aws/credentials\0", 22),
            (".aws/credentials\0", 17),
            ("/root/.ssh\0", 11),
            ("/root/.ssh/", 11),
            ("root/.ssh\0", 10),
            ("root/.ssh/", 10),
            (".ssh\0", 5),
            (".ssh/", 5),
        ];
        let want: Vec<(String, u32)> = want
            .iter()
            .map(|(p, n)| (p.to_string(), (8 + n) * 8))
            .collect();
        assert_eq!(shown, want);
        assert!(
            sensitive_keys(7, &[SensitivePath::Exact("/a/../b".into())])
                .expect("valid")
                .0
                .len()
                == 1,
            "no tails for a path with `..`"
        );
        assert_eq!(&names[0].name[..5], b".env\0");
        assert!(sensitive_keys(7, &[SensitivePath::Exact("relative".into())]).is_err());
        assert!(sensitive_keys(7, &[SensitivePath::Name("a/b".into())]).is_err());
    }

    #[test]
    fn ranges_merge_and_overflow_is_an_error() {
        assert_eq!(
            merge_ranges(&mut [(10, 20), (21, 30), (5, 12), (40, 40)]),
            vec![(5, 30), (40, 40)]
        );
        let many: Vec<NetRule> = (0..=u16::try_from(MAX_PORT_RANGES).expect("a few ranges"))
            .map(|i| rule("192.0.2.1/32", i * 10, i * 10))
            .collect();
        assert!(matches!(
            allowlist_entries(&many),
            Err(KernelError::TooManyPortRanges { .. })
        ));
    }
}
