//! The report for people (a table, coloured on a terminal) and for programs (JSON lines).

use serde::Serialize;

use super::{CapabilityId, Report, Status, promises};

/// JSON line for one capability. Contract (field names are stable):
/// `{"capability": name, "status": "available"|"unavailable"|"degraded", "required": bool,
/// "detail": what was measured, "consequence": what mcp-guard does because of it}`.
#[derive(Serialize)]
struct JsonCheck<'a> {
    capability: &'static str,
    status: Status,
    required: bool,
    detail: &'a str,
    consequence: &'a str,
}

/// The last JSON line. Contract: `{"summary": true, "ok": bool, "missing": [capability names]}`,
/// where `missing` lists the required capabilities that are not `available`.
#[derive(Serialize)]
struct JsonSummary {
    summary: bool,
    ok: bool,
    missing: Vec<&'static str>,
}

/// Renders `report` as JSON lines; the field names are a contract for scripts:
///
/// - one line per capability, in [`CapabilityId::ALL`] order:
///   `{"capability": "<CapabilityId::name>", "status": "available"|"unavailable"|"degraded",
///   "required": bool, "detail": "<what was measured, errno when refused>",
///   "consequence": "<what mcp-guard does because of it>"}`
/// - then one line per promise (`mcp_guard_launch::promises`), in `Promise::ALL` order: which mechanism
///   keeps it on this host for a policy with egress and one without (see
///   `promises::render_json` for the fields);
/// - then one summary line: `{"summary": true, "ok": bool, "missing": ["<name>", ...]}`, where
///   `missing` lists the required capabilities whose status is not `available` and `ok` is
///   `missing == []` (the exit status is 0 exactly when `ok`).
pub fn render_json(report: &Report) -> String {
    let mut out = String::new();
    for c in &report.checks {
        let line = JsonCheck {
            capability: c.id.name(),
            status: c.status,
            required: c.id.required(),
            detail: &c.detail,
            consequence: &c.consequence,
        };
        out.push_str(&serde_json::to_string(&line).unwrap_or_default());
        out.push('\n');
    }
    out.push_str(&promises::render_json(report));
    let summary = JsonSummary {
        summary: true,
        ok: report.ok(),
        missing: report
            .missing()
            .into_iter()
            .map(CapabilityId::name)
            .collect(),
    };
    out.push_str(&serde_json::to_string(&summary).unwrap_or_default());
    out.push('\n');
    out
}

/// Renders `report` as an aligned table; `color` adds ANSI colours to the status column.
pub fn render_table(report: &Report, color: bool) -> String {
    let name_w = report
        .checks
        .iter()
        .map(|c| c.id.name().len())
        .max()
        .unwrap_or(10)
        .max(10);
    let mut out = format!(
        "{:<name_w$}  {:<13}  {:<8}  DETAIL\n",
        "CAPABILITY", "STATUS", "NEED"
    );
    let indent = name_w + 2 + 13 + 2 + 8 + 2;
    for c in &report.checks {
        let (symbol, ansi) = match c.status {
            Status::Available => ("✓", "32"),
            Status::Unavailable => ("✗", "31"),
            Status::Degraded => ("~", "33"),
        };
        let status = format!("{symbol} {:<11}", c.status.word());
        let status = if color {
            format!("\x1b[{ansi}m{status}\x1b[0m")
        } else {
            status
        };
        let need = if c.id.required() {
            "required"
        } else {
            "optional"
        };
        out.push_str(&format!(
            "{:<name_w$}  {status}  {need:<8}  {}\n",
            c.id.name(),
            c.detail
        ));
        out.push_str(&format!("{:indent$}→ {}\n", "", c.consequence));
    }
    out.push_str(&promises::render_table(report));
    let missing: Vec<&str> = report
        .missing()
        .into_iter()
        .map(CapabilityId::name)
        .collect();
    let optional: Vec<&str> = report
        .checks
        .iter()
        .filter(|c| !c.id.required() && c.status != Status::Available)
        .map(|c| c.id.name())
        .collect();
    if missing.is_empty() {
        out.push_str("OK: this host can run mcp-guard's full enforcement");
        if !optional.is_empty() {
            out.push_str(&format!(
                " (optional, not available: {})",
                optional.join(", ")
            ));
        }
        out.push('\n');
    } else {
        out.push_str(&format!(
            "NOT OK: missing for full enforcement: {}\n",
            missing.join(", ")
        ));
    }
    out
}
