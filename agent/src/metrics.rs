//! Prometheus metrics: the names and labels of the contract (DESIGN.md), the process's own
//! metrics, per-program eBPF run statistics read from the kernel at scrape time, and the HTTP
//! endpoint that serves them (`/metrics`, text exposition format) on TCP or a Unix socket,
//! optionally behind a bearer token.
//!
//! Label values that come from untrusted input are bounded: an MCP server chooses its tool
//! names and a user chooses `--name`, so at most [`MetricsLimits::tools_per_server`] distinct
//! tools per server, [`MetricsLimits::tool_series`] tools in all and [`MetricsLimits::servers`]
//! servers get their own label value; the rest are counted under [`OTHER`] (`"_other"`).
//! Values longer than [`MAX_LABEL_LEN`] bytes are cut at a character boundary.

pub mod auth;
mod bpf;
pub mod export;
mod http;
pub mod listen;

use std::{
    collections::{HashMap, HashSet},
    sync::{Mutex, MutexGuard},
    time::Duration,
};

use prometheus::{
    HistogramOpts, HistogramVec, IntCounter, IntCounterVec, IntGauge, Opts, Registry, TextEncoder,
};

pub use bpf::BpfStatsSource;
pub use http::{CONTENT_TYPE, serve};

/// The label value that stands for every tool or server past the cardinality limits.
pub const OTHER: &str = "_other";

/// Label values are cut to this many bytes (at a character boundary).
pub const MAX_LABEL_LEN: usize = 128;

/// Buckets of `mcp_guard_tool_call_duration_seconds`: a cached answer takes tens of
/// microseconds, a fetch or a build can take a minute.
pub const DURATION_BUCKETS: &[f64] = &[
    0.000_05, 0.000_1, 0.000_25, 0.000_5, 0.001, 0.002_5, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5,
    1.0, 2.5, 5.0, 10.0, 30.0, 60.0,
];

/// Bounds on label values chosen by untrusted parties (servers' tool names, users' server names).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MetricsLimits {
    /// Distinct `server` label values; later servers are counted as [`OTHER`].
    pub servers: usize,
    /// Distinct `tool` label values per server; later tools are counted as [`OTHER`].
    pub tools_per_server: usize,
    /// Distinct (server, tool) pairs over all servers, so many servers cannot multiply the bound.
    pub tool_series: usize,
}

impl Default for MetricsLimits {
    fn default() -> Self {
        // Worst case: 2048 tool pairs × 22 histogram series ≈ 45k series, a few MB in Prometheus.
        Self {
            servers: 256,
            tools_per_server: 128,
            tool_series: 2048,
        }
    }
}

/// Why the metrics could not be set up.
#[derive(Debug, thiserror::Error)]
pub enum MetricsError {
    /// A metric could not be created or registered (a name clash: a bug, not an input error).
    #[error("metrics registry: {0}")]
    Registry(#[from] prometheus::Error),
}

/// Which label values have been handed out, for the cardinality bounds.
#[derive(Default)]
struct LabelBudget {
    servers: HashSet<String>,
    tools: HashMap<String, HashSet<String>>,
    tool_series: usize,
}

impl LabelBudget {
    fn server(&mut self, limits: &MetricsLimits, server: &str) -> String {
        let server = truncate(server);
        if self.servers.contains(server) {
            return server.to_string();
        }
        if self.servers.len() >= limits.servers {
            return OTHER.to_string();
        }
        self.servers.insert(server.to_string());
        server.to_string()
    }

    fn tool(&mut self, limits: &MetricsLimits, server: &str, tool: &str) -> String {
        let tool = truncate(tool);
        let full = self.tool_series >= limits.tool_series;
        let tools = self.tools.entry(server.to_string()).or_default();
        if tools.contains(tool) {
            return tool.to_string();
        }
        if full || tools.len() >= limits.tools_per_server {
            return OTHER.to_string();
        }
        tools.insert(tool.to_string());
        self.tool_series += 1;
        tool.to_string()
    }
}

/// `value` cut to at most [`MAX_LABEL_LEN`] bytes without splitting a character.
fn truncate(value: &str) -> &str {
    if value.len() <= MAX_LABEL_LEN {
        return value;
    }
    let mut end = MAX_LABEL_LEN;
    while !value.is_char_boundary(end) {
        end -= 1;
    }
    &value[..end]
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    // The guarded data are plain sets and counters: still consistent after a panic elsewhere.
    m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

/// The agent's metrics: one registry with the contract's metrics, the process collector and,
/// once [`enable_bpf_stats`](Self::enable_bpf_stats) is called, per-program eBPF statistics.
pub struct Metrics {
    registry: Registry,
    limits: MetricsLimits,
    budget: Mutex<LabelBudget>,
    tool_calls: IntCounterVec,
    tool_call_duration: HistogramVec,
    kernel_events: IntCounterVec,
    alerts: IntCounterVec,
    servers_running: IntGauge,
    events_dropped: IntCounterVec,
    store_write_failures: IntCounter,
    /// Last total seen per drop reason (for [`dropped`](Self::dropped)'s deltas).
    drop_totals: Mutex<HashMap<String, u64>>,
}

impl Metrics {
    /// The registry with every contract metric and the process collector, default limits.
    pub fn new() -> Result<Self, MetricsError> {
        Self::with_limits(MetricsLimits::default())
    }

    /// As [`new`](Self::new), with explicit cardinality limits.
    pub fn with_limits(limits: MetricsLimits) -> Result<Self, MetricsError> {
        let registry = Registry::new();
        let tool_calls = IntCounterVec::new(
            Opts::new(
                "mcp_guard_tool_calls_total",
                "MCP tool calls seen by the proxy, by the decision taken on them.",
            ),
            &["server", "tool", "decision"],
        )?;
        let tool_call_duration = HistogramVec::new(
            HistogramOpts::new(
                "mcp_guard_tool_call_duration_seconds",
                "Time from a tool call's request to its response, as seen by the proxy.",
            )
            .buckets(DURATION_BUCKETS.to_vec()),
            &["server", "tool"],
        )?;
        let kernel_events = IntCounterVec::new(
            Opts::new(
                "mcp_guard_kernel_events_total",
                "Kernel events (exec, open, connect, ...) of guarded servers, by verdict.",
            ),
            &["server", "kind", "verdict"],
        )?;
        let alerts = IntCounterVec::new(
            Opts::new(
                "mcp_guard_alerts_total",
                "Alerts raised by the detection rules.",
            ),
            &["server", "rule", "severity"],
        )?;
        let servers_running = IntGauge::new(
            "mcp_guard_servers_running",
            "MCP server sessions currently running under mcp-guard.",
        )?;
        let events_dropped = IntCounterVec::new(
            Opts::new(
                "mcp_guard_events_dropped_total",
                "Events lost before they were recorded (ring buffer full, unreadable path, ...).",
            ),
            &["reason"],
        )?;
        registry.register(Box::new(tool_calls.clone()))?;
        registry.register(Box::new(tool_call_duration.clone()))?;
        registry.register(Box::new(kernel_events.clone()))?;
        registry.register(Box::new(alerts.clone()))?;
        registry.register(Box::new(servers_running.clone()))?;
        let store_write_failures = IntCounter::new(
            "mcp_guard_store_write_failures_total",
            "Records a store writer could not write (disk full, I/O error, lock held too long).",
        )?;
        registry.register(Box::new(events_dropped.clone()))?;
        registry.register(Box::new(store_write_failures.clone()))?;
        // process_cpu_seconds_total, process_resident_memory_bytes, process_open_fds, ...
        registry.register(Box::new(
            prometheus::process_collector::ProcessCollector::for_self(),
        ))?;
        Ok(Self {
            registry,
            limits,
            budget: Mutex::new(LabelBudget::default()),
            tool_calls,
            tool_call_duration,
            kernel_events,
            alerts,
            servers_running,
            events_dropped,
            store_write_failures,
            drop_totals: Mutex::new(HashMap::new()),
        })
    }

    /// The label budget in force.
    pub fn limits(&self) -> MetricsLimits {
        self.limits
    }

    /// Bounded (server) label value.
    fn server_label(&self, server: &str) -> String {
        lock(&self.budget).server(&self.limits, server)
    }

    /// Bounded (server, tool) label values.
    fn tool_labels(&self, server: &str, tool: &str) -> (String, String) {
        let mut budget = lock(&self.budget);
        let server = budget.server(&self.limits, server);
        let tool = budget.tool(&self.limits, &server, tool);
        (server, tool)
    }

    /// One tool call with its `decision` (`allowed|denied|modified`) and, when it got an
    /// answer, how long it took.
    pub fn tool_call(&self, server: &str, tool: &str, decision: &str, duration: Option<Duration>) {
        let (server, tool) = self.tool_labels(server, tool);
        self.tool_calls
            .with_label_values(&[server.as_str(), tool.as_str(), truncate(decision)])
            .inc();
        if let Some(duration) = duration {
            self.tool_call_duration
                .with_label_values(&[server.as_str(), tool.as_str()])
                .observe(duration.as_secs_f64());
        }
    }

    /// One kernel event of `kind` (`exec|open|connect|sendmsg|...`) with its `verdict`
    /// (`allowed|denied|killed`).
    pub fn kernel_event(&self, server: &str, kind: &str, verdict: &str) {
        let server = self.server_label(server);
        self.kernel_events
            .with_label_values(&[server.as_str(), truncate(kind), truncate(verdict)])
            .inc();
    }

    /// One alert raised by `rule` with `severity`.
    pub fn alert(&self, server: &str, rule: &str, severity: &str) {
        let server = self.server_label(server);
        self.alerts
            .with_label_values(&[server.as_str(), truncate(rule), truncate(severity)])
            .inc();
    }

    /// The number of server sessions running now.
    pub fn set_servers_running(&self, n: usize) {
        self.servers_running
            .set(i64::try_from(n).unwrap_or(i64::MAX));
    }

    /// A source's running total of dropped events for `reason` (e.g. the kernel's per-reason
    /// drop counters): the counter grows by the difference to the last total seen. A total
    /// below the last one means the source restarted from zero (the eBPF object was reloaded);
    /// then the whole new total is added.
    pub fn dropped(&self, reason: &str, total_so_far: u64) {
        let reason = truncate(reason);
        let delta = {
            let mut totals = lock(&self.drop_totals);
            let last = totals.insert(reason.to_string(), total_so_far).unwrap_or(0);
            if total_so_far >= last {
                total_so_far - last
            } else {
                total_so_far
            }
        };
        let counter = self.events_dropped.with_label_values(&[reason]);
        // Creates the series at 0 too, so a rule on it sees the reason before the first drop.
        counter.inc_by(delta);
    }

    /// `n` more events dropped for `reason` by a source that counts increments, not totals
    /// (e.g. a full channel in userspace).
    pub fn add_dropped(&self, reason: &str, n: u64) {
        self.events_dropped
            .with_label_values(&[truncate(reason)])
            .inc_by(n);
    }

    /// `n` more records a store writer could not write.
    pub fn add_store_write_failures(&self, n: u64) {
        self.store_write_failures.inc_by(n);
    }

    /// Adds per-program eBPF statistics, read from the kernel at each scrape:
    /// `mcp_guard_bpf_program_runs_total` and `mcp_guard_bpf_program_run_seconds_total`
    /// `{program,id,type}` for every loaded program whose name is in `programs` (names as the
    /// kernel keeps them: the first 15 bytes), and `mcp_guard_bpf_stats_enabled`.
    ///
    /// The kernel counts only while statistics are enabled: this asks for them with
    /// `BPF_ENABLE_STATS` and keeps the returned fd for the life of `self` (the kernel stops
    /// counting when the last such fd closes, unless the `kernel.bpf_stats_enabled` sysctl is
    /// 1). The result says which applies; [`BpfStatsSource::Off`] (no `CAP_SYS_ADMIN`, a kernel
    /// before 5.8) still registers the metrics, with the gauge at 0 and counts that stay flat.
    /// Call it once.
    pub fn enable_bpf_stats(&self, programs: &[&str]) -> Result<BpfStatsSource, MetricsError> {
        let (collector, source) = bpf::BpfCollector::new(programs)?;
        self.registry.register(Box::new(collector))?;
        Ok(source)
    }

    /// Registers the per-sink export metrics (`mcp_guard_export_*{sink}`). Call it once.
    pub fn export_metrics(&self) -> Result<export::ExportMetrics, MetricsError> {
        export::ExportMetrics::register(&self.registry)
    }

    /// Every metric in the Prometheus text exposition format (version 0.0.4).
    pub fn render(&self) -> String {
        let families = self.registry.gather();
        let mut out = String::new();
        if let Err(e) = TextEncoder::new().encode_utf8(&families, &mut out) {
            // Only a metric family without samples or type fails to encode: a bug here, and the
            // scrape should still get the rest.
            tracing::warn!("metrics: cannot encode: {e}");
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample(text: &str, series: &str) -> Option<f64> {
        text.lines()
            .find_map(|l| l.strip_prefix(series)?.strip_prefix(' ')?.parse().ok())
    }

    #[test]
    fn contract_names_and_labels_are_rendered() {
        let m = Metrics::new().expect("metrics");
        m.tool_call(
            "time",
            "get_current_time",
            "allowed",
            Some(Duration::from_micros(300)),
        );
        m.tool_call("time", "get_current_time", "denied", None);
        m.kernel_event("time", "connect", "denied");
        m.alert("time", "sensitive-read", "high");
        m.set_servers_running(3);
        m.dropped("ringbuf_full", 0);
        let text = m.render();
        for series in [
            r#"mcp_guard_tool_calls_total{decision="allowed",server="time",tool="get_current_time"}"#,
            r#"mcp_guard_tool_calls_total{decision="denied",server="time",tool="get_current_time"}"#,
            r#"mcp_guard_tool_call_duration_seconds_count{server="time",tool="get_current_time"}"#,
            r#"mcp_guard_tool_call_duration_seconds_bucket{server="time",tool="get_current_time",le="0.0005"}"#,
            r#"mcp_guard_kernel_events_total{kind="connect",server="time",verdict="denied"}"#,
            r#"mcp_guard_alerts_total{rule="sensitive-read",server="time",severity="high"}"#,
        ] {
            assert_eq!(sample(&text, series), Some(1.0), "{series} in:\n{text}");
        }
        // 300 µs is not in the 250 µs bucket.
        assert_eq!(
            sample(
                &text,
                r#"mcp_guard_tool_call_duration_seconds_bucket{server="time",tool="get_current_time",le="0.00025"}"#
            ),
            Some(0.0)
        );
        assert_eq!(sample(&text, "mcp_guard_servers_running"), Some(3.0));
        assert_eq!(
            sample(
                &text,
                r#"mcp_guard_events_dropped_total{reason="ringbuf_full"}"#
            ),
            Some(0.0)
        );
        assert!(text.contains("# TYPE mcp_guard_tool_call_duration_seconds histogram"));
        assert!(
            text.contains("process_resident_memory_bytes "),
            "process collector missing:\n{text}"
        );
    }

    #[test]
    fn dropped_adds_the_delta_of_running_totals_and_survives_a_reset() {
        let m = Metrics::new().expect("metrics");
        let series = r#"mcp_guard_events_dropped_total{reason="ringbuf_full"}"#;
        m.dropped("ringbuf_full", 5);
        m.dropped("ringbuf_full", 5);
        m.dropped("ringbuf_full", 12);
        assert_eq!(sample(&m.render(), series), Some(12.0));
        // The source restarted from zero and has counted 3 since.
        m.dropped("ringbuf_full", 3);
        assert_eq!(sample(&m.render(), series), Some(15.0));
        m.add_dropped("ringbuf_full", 2);
        assert_eq!(sample(&m.render(), series), Some(17.0));
    }

    #[test]
    fn invented_tool_names_fold_into_other_past_the_limit() {
        let m = Metrics::with_limits(MetricsLimits {
            servers: 2,
            tools_per_server: 3,
            tool_series: 5,
        })
        .expect("metrics");
        for i in 0..10 {
            m.tool_call("evil", &format!("tool{i}"), "allowed", None);
        }
        // Known tools keep their own series after the budget is spent.
        m.tool_call("evil", "tool1", "allowed", None);
        for i in 0..3 {
            m.tool_call("good", &format!("t{i}"), "allowed", None);
        }
        m.tool_call("third", "x", "allowed", None);
        m.kernel_event("fourth", "open", "allowed");
        let text = m.render();
        let calls = |server: &str, tool: &str| {
            sample(
                &text,
                &format!(
                    r#"mcp_guard_tool_calls_total{{decision="allowed",server="{server}",tool="{tool}"}}"#
                ),
            )
        };
        assert_eq!(calls("evil", "tool0"), Some(1.0));
        assert_eq!(calls("evil", "tool1"), Some(2.0));
        assert_eq!(calls("evil", "tool2"), Some(1.0));
        assert_eq!(calls("evil", "tool3"), None);
        assert_eq!(calls("evil", OTHER), Some(7.0));
        // 3 of "evil" + 2 of "good" = the global budget of 5: the third tool of "good" folds.
        assert_eq!(calls("good", "t1"), Some(1.0));
        assert_eq!(calls("good", OTHER), Some(1.0));
        // Only two servers get their own label.
        assert_eq!(calls(OTHER, OTHER), Some(1.0));
        assert_eq!(
            sample(
                &text,
                r#"mcp_guard_kernel_events_total{kind="open",server="_other",verdict="allowed"}"#
            ),
            Some(1.0)
        );
        let series = text
            .lines()
            .filter(|l| l.starts_with("mcp_guard_tool_calls_total{"))
            .count();
        // evil: 3 + _other; good: 2 + _other; _other: _other.
        assert_eq!(series, 8, "{text}");
    }

    #[test]
    fn long_and_hostile_label_values_are_cut_and_escaped() {
        let m = Metrics::new().expect("metrics");
        let long = "é".repeat(200);
        m.tool_call("s", &long, "allowed", None);
        m.tool_call("s", "a\"b\\c\nd", "allowed", None);
        let text = m.render();
        let cut = "é".repeat(MAX_LABEL_LEN / 2);
        assert!(text.contains(&format!("tool=\"{cut}\"")), "{text}");
        assert!(!text.contains(&"é".repeat(MAX_LABEL_LEN / 2 + 1)));
        assert!(text.contains(r#"tool="a\"b\\c\nd""#), "{text}");
    }
}
