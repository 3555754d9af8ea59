//! Maps and helpers shared by the egress and tracing programs.

use aya_ebpf::{
    helpers::{bpf_get_current_cgroup_id, bpf_get_current_pid_tgid, bpf_ktime_get_boot_ns},
    macros::map,
    maps::{HashMap, PerCpuArray, RingBuf},
};
use mcp_guard_ebpf::{EventHeader, GuardConfig, drop_reason};

/// The guarded cgroups; every program returns early for a cgroup not in it.
#[map]
pub static GUARDED: HashMap<u64, GuardConfig> = HashMap::with_max_entries(4096, 0);

/// The one ring buffer all events go through (16 MiB: about 50k open events of slack).
#[map]
pub static EVENTS: RingBuf = RingBuf::with_byte_size(16 << 20, 0);

/// Per-CPU loss counters by `drop_reason`.
#[map]
pub static DROPS: PerCpuArray<u64> = PerCpuArray::with_max_entries(drop_reason::COUNT, 0);

/// The guard settings of the calling task's cgroup, if mcp-guard guards it.
#[inline(always)]
pub fn guard() -> Option<(u64, GuardConfig)> {
    // SAFETY: a helper without arguments, valid in every program type used here.
    let cgroup = unsafe { bpf_get_current_cgroup_id() };
    // SAFETY: the value is copied out at once; a concurrent update can at worst give a stale copy.
    let config = unsafe { GUARDED.get(&cgroup) }?;
    Some((cgroup, *config))
}

/// Counts one loss of `reason`.
#[inline(always)]
pub fn count_drop(reason: u32) {
    if let Some(counter) = DROPS.get_ptr_mut(reason) {
        // SAFETY: a per-CPU slot: no other program touches it while this one runs on this CPU.
        unsafe { *counter += 1 };
    }
}

/// A filled-in record header.
#[inline(always)]
pub fn header(kind: u32, cgroup: u64, config: &GuardConfig) -> EventHeader {
    EventHeader {
        kind,
        session: config.session,
        // SAFETY: helper without arguments.
        ts_boot_ns: unsafe { bpf_ktime_get_boot_ns() },
        cgroup,
        pid_tgid: bpf_get_current_pid_tgid(),
    }
}
