//! `mcp-guard doctor`: probes what this host supports, for real, and what that means for
//! enforcement.
//!
//! [`probe`] runs every probe and returns plain data that other modules (exec, to decide whether
//! to fail closed) can query with [`Report::is_available`]; [`run`] prints it for humans or as
//! JSON lines. Probes load and attach tiny programs, create and remove a temporary cgroup, and
//! fork short-lived children; nothing is left behind.

mod bpf;
mod cgroups;
mod errno;
mod host;
mod isolation;
mod programs;
mod promises;
mod render;
mod services;

use std::{
    io::{IsTerminal as _, Write as _},
    process::ExitCode,
};

use serde::Serialize;

pub use crate::capability::CapabilityId;
use cgroups::{probe_cgroup_unix, probe_cgroups};
use errno::io_errno;
pub use errno::{Errno, errno_name};
use isolation::{probe_landlock, probe_namespaces, probe_privileges, probe_seccomp};
use programs::{
    probe_btf, probe_lsm, probe_maps, probe_raw_tracepoint, probe_send_signal, probe_tp_btf,
    probe_tracefs, probe_tracepoint,
};
pub use render::{render_json, render_table};
use services::{probe_agent, probe_container_engine, probe_standalone_slots};

/// The outcome of one probe.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Status {
    /// Probed and works.
    Available,
    /// Probed and refused or missing (or the probe could not run at all).
    Unavailable,
    /// Works only in part.
    Degraded,
}

impl Status {
    /// The lowercase word used in output.
    pub fn word(self) -> &'static str {
        match self {
            Self::Available => "available",
            Self::Unavailable => "unavailable",
            Self::Degraded => "degraded",
        }
    }
}

/// One capability's result.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Check {
    /// What was checked.
    pub id: CapabilityId,
    /// The outcome.
    pub status: Status,
    /// What was measured (with the errno when refused).
    pub detail: String,
    /// What mcp-guard does because of it.
    pub consequence: String,
}

/// Every probe's result.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Report {
    /// One check per capability, in [`CapabilityId::ALL`] order.
    pub checks: Vec<Check>,
}

impl Report {
    /// The check for `id`.
    pub fn get(&self, id: CapabilityId) -> Option<&Check> {
        self.checks.iter().find(|c| c.id == id)
    }

    /// Whether `id` was probed and is fully available.
    pub fn is_available(&self, id: CapabilityId) -> bool {
        self.get(id).is_some_and(|c| c.status == Status::Available)
    }

    /// Required capabilities that are not fully available.
    pub fn missing(&self) -> Vec<CapabilityId> {
        CapabilityId::ALL
            .into_iter()
            .filter(|id| id.required() && !self.is_available(*id))
            .collect()
    }

    /// Whether the host can run mcp-guard's full enforcement.
    pub fn ok(&self) -> bool {
        self.missing().is_empty()
    }
}

/// Collects checks in order; a check not recorded by the end is reported as not probed.
struct Builder {
    checks: Vec<Check>,
}

impl Builder {
    fn put(&mut self, id: CapabilityId, status: Status, detail: String, consequence: &str) {
        self.checks.push(Check {
            id,
            status,
            detail,
            consequence: consequence.to_string(),
        });
    }

    fn finish(mut self) -> Report {
        let checks = CapabilityId::ALL
            .into_iter()
            .map(|id| match self.checks.iter().position(|c| c.id == id) {
                Some(i) => self.checks.swap_remove(i),
                None => Check {
                    id,
                    status: Status::Unavailable,
                    detail: "not probed".to_string(),
                    consequence: "treated as missing".to_string(),
                },
            })
            .collect();
        Report { checks }
    }
}

/// Runs every probe on this host and returns the results.
pub fn probe() -> Report {
    let mut b = Builder { checks: Vec::new() };
    let mounts = mcp_guard_launch::mounts::read().unwrap_or_default();
    probe_privileges(&mut b);
    let btf = probe_btf(&mut b);
    let tracefs = probe_tracefs(&mut b, &mounts);
    probe_tracepoint(&mut b, tracefs.as_deref());
    probe_raw_tracepoint(&mut b);
    probe_tp_btf(&mut b, btf.as_ref());
    probe_send_signal(&mut b, btf.as_ref());
    probe_lsm(&mut b, btf.as_ref());
    probe_maps(&mut b);
    probe_cgroups(&mut b, &mounts);
    probe_cgroup_unix(&mut b);
    probe_landlock(&mut b);
    probe_seccomp(&mut b);
    probe_namespaces(&mut b);
    probe_container_engine(&mut b);
    probe_agent(&mut b);
    probe_standalone_slots(&mut b);
    b.finish()
}

/// `mcp-guard doctor [--json]`: probes, prints, and exits 0 when full enforcement is possible,
/// 1 otherwise.
pub fn run(json: bool) -> ExitCode {
    let report = probe();
    let stdout = std::io::stdout();
    let text = if json {
        render_json(&report)
    } else {
        render_table(&report, stdout.is_terminal())
    };
    // A closed stdout (e.g. `| head`) must not turn the verdict into a panic.
    let _ = stdout.lock().write_all(text.as_bytes());
    if report.ok() {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(1)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn report(statuses: &[(CapabilityId, Status)]) -> Report {
        let mut b = Builder { checks: Vec::new() };
        for (id, s) in statuses {
            b.put(*id, *s, "measured".into(), "so");
        }
        b.finish()
    }

    #[test]
    fn unprobed_capabilities_are_never_available() {
        let r = report(&[(CapabilityId::Landlock, Status::Available)]);
        assert_eq!(r.checks.len(), CapabilityId::ALL.len());
        assert!(r.is_available(CapabilityId::Landlock));
        assert!(!r.is_available(CapabilityId::Seccomp));
        assert_eq!(
            r.get(CapabilityId::Seccomp).map(|c| c.detail.as_str()),
            Some("not probed")
        );
        assert!(!r.ok());
    }

    #[test]
    fn optional_and_degraded_decide_the_verdict() {
        let all: Vec<_> = CapabilityId::ALL
            .iter()
            .map(|id| {
                (
                    *id,
                    if id.required() {
                        Status::Available
                    } else {
                        Status::Unavailable
                    },
                )
            })
            .collect();
        assert!(report(&all).ok(), "optional capabilities do not block");
        let mut degraded = all.clone();
        degraded[0].1 = Status::Degraded;
        let r = report(&degraded);
        assert_eq!(r.missing(), vec![CapabilityId::Privileges]);
        let json = render_json(&r);
        let last = json.lines().last().expect("summary line");
        let v: serde_json::Value = serde_json::from_str(last).expect("json");
        assert_eq!(v["summary"], true);
        assert_eq!(v["ok"], false);
        assert_eq!(v["missing"][0], "privileges");
        let table = render_table(&r, false);
        assert!(!table.contains('\x1b'), "no colour when asked for none");
        assert!(
            table
                .trim_end()
                .ends_with("missing for full enforcement: privileges")
        );
    }

    #[test]
    fn names_are_unique_and_lsm_is_optional() {
        let mut names: Vec<_> = CapabilityId::ALL.iter().map(|c| c.name()).collect();
        names.sort_unstable();
        names.dedup();
        assert_eq!(names.len(), CapabilityId::ALL.len());
        assert!(!CapabilityId::Lsm.required());
        assert!(!CapabilityId::ContainerEngine.required());
        assert!(!CapabilityId::Agent.required());
        assert!(CapabilityId::CgroupSockAddr.required());
        assert_eq!(errno_name(libc::EPERM), "EPERM");
        assert_eq!(errno_name(524), "ENOTSUPP");
        let refused = Errno {
            errno: libc::EACCES,
            log: Some("0: R0=ctx\ninvalid mem access 'scalar'\nprocessed 2 insns\n".into()),
        };
        assert_eq!(
            refused.to_string(),
            "EACCES, verifier: \"invalid mem access 'scalar'\""
        );
        let empty = Errno {
            errno: libc::EPERM,
            log: Some(String::new()),
        };
        assert_eq!(empty.to_string(), "EPERM, empty verifier log");
        assert_eq!(Errno::bare(libc::ENOENT).to_string(), "ENOENT");
    }
}
