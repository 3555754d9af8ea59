//! The TCP ports a guarded server may bind, as the `cgroup/bind4`/`bind6` programs read them
//! (`agent-ebpf/src/bind.rs`): one [`BindPorts`] bitmap per server cgroup in `BIND_PORTS`.
//!
//! The loader calls [`install`] when it guards a server and [`remove`] when it lets go; the
//! ports come from [`ServerSpec::tcp_bind`](super::loader::ServerSpec::tcp_bind), which the
//! launcher fills from the same ports as landlock's TCP rules. A server without an entry binds
//! freely.

use aya::maps::{HashMap, MapData};
use mcp_guard_ebpf::{BindPorts, maps};

use super::error::KernelError;

/// The bitmap allowing exactly the ports of `ranges` (inclusive, host order).
pub fn port_set(ranges: &[(u16, u16)]) -> Box<BindPorts> {
    let mut set = Box::new(BindPorts::NONE);
    for &(lo, hi) in ranges {
        for port in lo..=hi {
            set.allow(port);
        }
    }
    set
}

/// Limits the binds of `cgroup_id` to `ranges` (`None`: no limit, any entry is removed). The
/// map is `None` in the pinned maps of a build from before the bind programs: that build's
/// programs do not judge binds, so there is nothing to write.
pub(crate) fn install(
    map: Option<&mut HashMap<MapData, u64, BindPorts>>,
    cgroup_id: u64,
    ranges: Option<&[(u16, u16)]>,
) -> Result<(), KernelError> {
    let Some(map) = map else {
        return Ok(());
    };
    if let Some(ranges) = ranges {
        map.insert(cgroup_id, *port_set(ranges), 0)
            .map_err(|source| KernelError::Map {
                name: maps::BIND_PORTS,
                source,
            })
    } else {
        let _ = map.remove(&cgroup_id);
        Ok(())
    }
}

/// Removes the entry of `cgroup_id`, if there is one.
pub(crate) fn remove(map: Option<&mut HashMap<MapData, u64, BindPorts>>, cgroup_id: u64) {
    if let Some(map) = map {
        let _ = map.remove(&cgroup_id);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn raw(port: u16) -> u32 {
        BindPorts::index(port)
    }

    #[test]
    fn the_set_holds_exactly_the_ranges() {
        let set = port_set(&[(80, 80), (8000, 8002), (65535, 65535)]);
        for port in [80, 8000, 8001, 8002, 65535] {
            assert!(set.allows_raw(raw(port)), "{port}");
        }
        for port in [0, 79, 81, 7999, 8003, 65534] {
            assert!(!set.allows_raw(raw(port)), "{port}");
        }
        // No range: nothing may be bound, not even an ephemeral port (port 0).
        assert!(!port_set(&[]).allows_raw(raw(0)));
        // Port 0 only where a range starts at 0, as with landlock's rule for port 0.
        assert!(port_set(&[(0, 10)]).allows_raw(raw(0)));
    }
}
