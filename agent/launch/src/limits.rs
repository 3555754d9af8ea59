//! `[limits]` written to the session's cgroup: v2, else v1, else an rlimit, else refused.

use super::{Enforce, LaunchError, cgroup};
use mcp_guard_policy::Policy;

type Missing<'a> = dyn FnMut(String, &mut Vec<String>) -> Result<(), LaunchError> + 'a;

/// Writes each limit through v2, else v1, else an rlimit (said in the log), else refuses.
pub(super) fn apply_limits(
    cg: &mut cgroup::Cgroup,
    mounts: &cgroup::Mounts,
    policy: &Policy,
    mut enforce: Option<Enforce>,
    warnings: &mut Vec<String>,
    missing: &mut Missing<'_>,
) -> Result<Option<Enforce>, LaunchError> {
    use cgroup::{Applied, Controller};
    let Some(enf) = enforce.as_mut() else {
        return Ok(None);
    };
    let l = &policy.limits;
    let limits = cgroup::Limits {
        memory: l.memory,
        pids: l.pids,
        cpu: l.cpu,
    };
    for (c, wanted) in [
        (Controller::Memory, l.memory.is_some()),
        (Controller::Pids, l.pids.is_some()),
        (Controller::Cpu, l.cpu.is_some()),
    ] {
        if !wanted {
            continue;
        }
        let applied = cg
            .apply(mounts, c, &limits)
            .map_err(|e| format!("cannot apply the {} limit: {e}", c.name()));
        match applied {
            Ok(Applied::V2) => tracing::debug!("{} limit: cgroup v2", c.name()),
            Ok(Applied::V1(dir)) => {
                tracing::debug!("{} limit: cgroup v1 {}", c.name(), dir.display());
            }
            Ok(Applied::Unavailable) => match (c, l.memory, l.pids) {
                (Controller::Memory, Some(m), _) => {
                    warnings.push(format!(
                        "no memory cgroup controller (v2 or v1): memory limited by RLIMIT_AS = \
                         {m} bytes per process instead (a last resort: address space, not RSS)"
                    ));
                    enf.rlimits.push((libc::RLIMIT_AS, m));
                }
                (Controller::Pids, _, Some(p)) => {
                    warnings.push(format!(
                        "no pids cgroup controller (v2 or v1): tasks limited by RLIMIT_NPROC = {p} \
                         instead (a last resort: it counts every process of the server's user)"
                    ));
                    enf.rlimits.push((libc::RLIMIT_NPROC, p));
                }
                _ => missing(
                    format!(
                        "no {} cgroup controller (v2 or v1) and no rlimit equivalent: the limit \
                         cannot be applied",
                        c.name()
                    ),
                    warnings,
                )?,
            },
            Err(e) => missing(e, warnings)?,
        }
    }
    Ok(enforce)
}
