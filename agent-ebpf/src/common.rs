//! Maps and helpers shared by the egress and tracing programs.

use aya_ebpf::{
    helpers::{
        bpf_get_current_cgroup_id, bpf_get_current_pid_tgid, bpf_ktime_get_boot_ns,
        generated::bpf_get_current_ancestor_cgroup_id,
    },
    macros::map,
    maps::{HashMap, PerCpuArray, RingBuf},
};
use mcp_guard_ebpf::{ANCESTOR_LEVELS, EventHeader, GuardConfig, drop_reason};

/// The guarded cgroups; every program returns early for a cgroup not in it.
#[map]
pub(crate) static GUARDED: HashMap<u64, GuardConfig> = HashMap::with_max_entries(4096, 0);

/// The one ring buffer all events go through (16 MiB: 50k open events of slack with the longest
/// paths, about 150k with paths of a few dozen bytes).
#[map]
pub(crate) static EVENTS: RingBuf = RingBuf::with_byte_size(16 << 20, 0);

/// Per-CPU loss counters by `drop_reason`.
#[map]
pub(crate) static DROPS: PerCpuArray<u64> = PerCpuArray::with_max_entries(drop_reason::COUNT, 0);

/// The guard settings of the calling task's cgroup, if mcp-guard guards it.
#[inline(always)]
pub(crate) fn guard() -> Option<(u64, GuardConfig)> {
    // SAFETY: a helper without arguments, valid in every program type used here.
    let cgroup = unsafe { bpf_get_current_cgroup_id() };
    // SAFETY: the value is copied out at once; a concurrent update can at worst give a stale copy.
    let config = unsafe { GUARDED.get(&cgroup) }?;
    Some((config.rules, *config))
}

/// [`guard`], or else the settings of the nearest guarded ancestor cgroup. Only for programs
/// attached to guarded cgroups (the egress ones): they run only for tasks in a guarded cgroup's
/// subtree, so a task there whose own cgroup is not registered (yet) is judged by its guarded
/// ancestor's rules instead of passing unjudged (fail closed), and unrelated tasks never pay for
/// the walk.
#[inline(always)]
pub(crate) fn guard_or_ancestor() -> Option<(u64, GuardConfig)> {
    if let Some(found) = guard() {
        return Some(found);
    }
    let mut found = None;
    let mut level = 1;
    while level <= ANCESTOR_LEVELS {
        // SAFETY: a helper taking a plain integer; 0 comes back past the task's own level.
        let id = unsafe { bpf_get_current_ancestor_cgroup_id(level) };
        if id == 0 {
            break;
        }
        // SAFETY: as in `guard`: the value is copied out at once.
        if let Some(config) = unsafe { GUARDED.get(&id) } {
            found = Some((config.rules, *config));
        }
        level += 1;
    }
    found
}

/// Counts one loss of `reason`.
#[inline(always)]
pub(crate) fn count_drop(reason: u32) {
    if let Some(counter) = DROPS.get_ptr_mut(reason) {
        // SAFETY: a per-CPU slot: no other program touches it while this one runs on this CPU.
        unsafe { *counter += 1 };
    }
}

/// Submit without waking the reader.
const BPF_RB_NO_WAKEUP: u64 = 1;
const BPF_RB_FORCE_WAKEUP: u64 = 2;
const BPF_RB_AVAIL_DATA: u64 = 0;
/// Wake the reader only once this much is pending; it also polls on a short timer, so a quiet
/// stream is still delivered promptly. Waking on every record would cost each event a wakeup.
const WAKEUP_BYTES: u64 = 256 << 10;
/// Records a CPU submits between two looks at the pending volume. The look reads the
/// consumer position, a cache line the reader on another CPU keeps writing: on every record
/// it was a good part of an event's cost. At 320 bytes at most a record, this looks at least
/// every ~40 KiB per CPU, well within `WAKEUP_BYTES` of slack.
const WAKEUP_CHECK_EVERY: u64 = 128;

/// Per-CPU count of records submitted, for `submit_flags`.
#[map]
static SUBMITTED: PerCpuArray<u64> = PerCpuArray::with_max_entries(1, 0);

/// Submit flags for a record: batch wakeups by pending volume, looked at now and then.
#[inline(always)]
pub(crate) fn submit_flags() -> u64 {
    let Some(n) = SUBMITTED.get_ptr_mut(0) else {
        return BPF_RB_NO_WAKEUP;
    };
    // SAFETY: a per-CPU slot: no other program touches it while this one runs on this CPU.
    let n = unsafe {
        *n += 1;
        *n
    };
    if n % WAKEUP_CHECK_EVERY == 0 && EVENTS.query(BPF_RB_AVAIL_DATA) >= WAKEUP_BYTES {
        BPF_RB_FORCE_WAKEUP
    } else {
        BPF_RB_NO_WAKEUP
    }
}

/// A filled-in record header.
#[inline(always)]
pub(crate) fn header(kind: u32, cgroup: u64, config: &GuardConfig) -> EventHeader {
    EventHeader {
        kind,
        session: config.session,
        // SAFETY: helper without arguments.
        ts_boot_ns: unsafe { bpf_ktime_get_boot_ns() },
        cgroup,
        pid_tgid: bpf_get_current_pid_tgid(),
    }
}
