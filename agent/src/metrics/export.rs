//! Per-sink export metrics: how far each sink is behind the store, what it shipped and how often
//! delivering failed. The `sink` label is the sink's configured name (bounded by the config).

use prometheus::{GaugeVec, IntCounterVec, IntGaugeVec, Opts, Registry};

use super::{MetricsError, truncate};

/// The exporter's view of one registry's export families.
#[derive(Clone, Debug)]
pub struct ExportMetrics {
    lag_records: IntGaugeVec,
    lag_seconds: GaugeVec,
    records: IntCounterVec,
    failures: IntCounterVec,
}

impl ExportMetrics {
    /// Creates the families and registers them in `registry`.
    pub(super) fn register(registry: &Registry) -> Result<Self, MetricsError> {
        let lag_records = IntGaugeVec::new(
            Opts::new(
                "mcp_guard_export_lag_records",
                "Records in the store a sink has not received yet.",
            ),
            &["sink"],
        )?;
        let lag_seconds = GaugeVec::new(
            Opts::new(
                "mcp_guard_export_lag_seconds",
                "Age of the oldest record a sink has not received yet (0 when it is caught up).",
            ),
            &["sink"],
        )?;
        let records = IntCounterVec::new(
            Opts::new(
                "mcp_guard_export_records_total",
                "Records delivered to a sink (a record sent again after a failure counts again).",
            ),
            &["sink"],
        )?;
        let failures = IntCounterVec::new(
            Opts::new(
                "mcp_guard_export_failures_total",
                "Failed deliveries to a sink (each is retried with backoff; nothing is dropped).",
            ),
            &["sink"],
        )?;
        registry.register(Box::new(lag_records.clone()))?;
        registry.register(Box::new(lag_seconds.clone()))?;
        registry.register(Box::new(records.clone()))?;
        registry.register(Box::new(failures.clone()))?;
        Ok(Self {
            lag_records,
            lag_seconds,
            records,
            failures,
        })
    }

    /// Creates `sink`'s series at zero, so a dashboard sees the sink before its first record.
    pub fn add_sink(&self, sink: &str) {
        let sink = truncate(sink);
        self.lag_records.with_label_values(&[sink]).set(0);
        self.lag_seconds.with_label_values(&[sink]).set(0.0);
        self.records.with_label_values(&[sink]).inc_by(0);
        self.failures.with_label_values(&[sink]).inc_by(0);
    }

    /// `sink` is `records` behind, the oldest written `seconds` ago.
    pub fn set_lag(&self, sink: &str, records: u64, seconds: f64) {
        let sink = truncate(sink);
        self.lag_records
            .with_label_values(&[sink])
            .set(i64::try_from(records).unwrap_or(i64::MAX));
        self.lag_seconds
            .with_label_values(&[sink])
            .set(seconds.max(0.0));
    }

    /// `n` records delivered to `sink`.
    pub fn delivered(&self, sink: &str, n: u64) {
        self.records.with_label_values(&[truncate(sink)]).inc_by(n);
    }

    /// One failed delivery to `sink`.
    pub fn failed(&self, sink: &str) {
        self.failures.with_label_values(&[truncate(sink)]).inc();
    }
}
