//! Per-program eBPF statistics (run count, run time) read from `bpf_prog_info` at scrape time.

use std::{os::fd::OwnedFd, sync::Mutex};

use prometheus::{
    CounterVec, IntCounterVec, IntGauge, Opts,
    core::{Collector, Desc},
    proto::MetricFamily,
};

use super::{MetricsError, lock};

/// The kernel's sysctl that enables BPF run statistics host-wide.
const SYSCTL: &str = "/proc/sys/kernel/bpf_stats_enabled";

/// The kernel keeps program names in 16 bytes, NUL included.
const KERNEL_NAME_LEN: usize = 15;

/// What keeps the kernel counting program runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BpfStatsSource {
    /// `BPF_ENABLE_STATS` succeeded: the metrics hold the fd, counting lasts as long as they do.
    EnableStatsFd,
    /// `BPF_ENABLE_STATS` failed but the `kernel.bpf_stats_enabled` sysctl is 1.
    Sysctl,
    /// Neither: run counts and times stay flat (`mcp_guard_bpf_stats_enabled` is 0).
    Off,
}

/// The collector: fresh values from the kernel on every scrape.
pub(super) struct BpfCollector {
    programs: Vec<String>,
    /// Held for its effect: the kernel counts while this fd is open.
    stats_fd: Option<OwnedFd>,
    state: Mutex<Series>,
    descs: Vec<Desc>,
}

struct Series {
    runs: IntCounterVec,
    run_seconds: CounterVec,
    enabled: IntGauge,
}

impl BpfCollector {
    pub(super) fn new(programs: &[&str]) -> Result<(Self, BpfStatsSource), MetricsError> {
        let labels = ["program", "id", "type"];
        let runs = IntCounterVec::new(
            Opts::new(
                "mcp_guard_bpf_program_runs_total",
                "Times the kernel ran each of mcp-guard's eBPF programs (while BPF stats are on).",
            ),
            &labels,
        )?;
        let run_seconds = CounterVec::new(
            Opts::new(
                "mcp_guard_bpf_program_run_seconds_total",
                "CPU time the kernel spent in each of mcp-guard's eBPF programs (while BPF stats are on).",
            ),
            &labels,
        )?;
        let enabled = IntGauge::new(
            "mcp_guard_bpf_stats_enabled",
            "1 when the kernel counts eBPF program runs (BPF_ENABLE_STATS fd or sysctl), else 0.",
        )?;
        let descs = runs
            .desc()
            .into_iter()
            .chain(run_seconds.desc())
            .chain(enabled.desc())
            .cloned()
            .collect();
        let stats_fd = match aya::sys::enable_stats(aya::sys::Stats::RunTime) {
            Ok(fd) => Some(fd),
            Err(e) => {
                tracing::info!("metrics: BPF_ENABLE_STATS refused ({e}); relying on {SYSCTL}");
                None
            }
        };
        let source = if stats_fd.is_some() {
            BpfStatsSource::EnableStatsFd
        } else if sysctl_enabled() {
            BpfStatsSource::Sysctl
        } else {
            BpfStatsSource::Off
        };
        let programs = programs
            .iter()
            .map(|name| kernel_name(name).to_string())
            .collect();
        let collector = Self {
            programs,
            stats_fd,
            state: Mutex::new(Series {
                runs,
                run_seconds,
                enabled,
            }),
            descs,
        };
        Ok((collector, source))
    }
}

/// `name` as the kernel stores it (the first 15 bytes).
fn kernel_name(name: &str) -> &str {
    let mut end = name.len().min(KERNEL_NAME_LEN);
    while !name.is_char_boundary(end) {
        end -= 1;
    }
    &name[..end]
}

fn sysctl_enabled() -> bool {
    std::fs::read_to_string(SYSCTL).is_ok_and(|v| v.trim() == "1")
}

/// `BPF_PROG_TYPE_CGROUP_SOCK_ADDR` → `cgroup_sock_addr`.
fn type_label(info: &aya::programs::ProgramInfo) -> String {
    let raw = format!("{:?}", info.program_type());
    raw.strip_prefix("BPF_PROG_TYPE_")
        .unwrap_or(&raw)
        .to_ascii_lowercase()
}

impl Collector for BpfCollector {
    fn desc(&self) -> Vec<&Desc> {
        self.descs.iter().collect()
    }

    fn collect(&self) -> Vec<MetricFamily> {
        let series = lock(&self.state);
        // Programs come and go (every standalone exec loads its own copy): only what is loaded now.
        series.runs.reset();
        series.run_seconds.reset();
        let on = self.stats_fd.is_some() || sysctl_enabled();
        series.enabled.set(i64::from(on));
        for info in aya::programs::loaded_programs() {
            let info = match info {
                Ok(info) => info,
                // A program unloaded between listing and lookup, or no privilege: skip it.
                Err(e) => {
                    tracing::debug!("metrics: bpf program info: {e}");
                    continue;
                }
            };
            let Some(name) = info.name_as_str() else {
                continue;
            };
            if !self.programs.iter().any(|p| p == name) {
                continue;
            }
            let id = info.id().to_string();
            let kind = type_label(&info);
            let labels = [name, id.as_str(), kind.as_str()];
            series
                .runs
                .with_label_values(&labels)
                .inc_by(info.run_count());
            series
                .run_seconds
                .with_label_values(&labels)
                .inc_by(info.run_time().as_secs_f64());
        }
        let mut families = series.runs.collect();
        families.extend(series.run_seconds.collect());
        families.extend(series.enabled.collect());
        families
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_cut_like_the_kernel_cuts_them() {
        assert_eq!(kernel_name("trace_sys_enter"), "trace_sys_enter");
        assert_eq!(kernel_name("a_much_longer_program_name"), "a_much_longer_p");
        assert_eq!(kernel_name("connect4"), "connect4");
    }
}
