//! What the history adds to the query commands: a call's arguments and result (in `calls`
//! and `trace`, saying what was redacted or cut), and `sessions` with what each server said
//! about itself (which server and version ran, which tool lists it gave).

use std::io::Write;

use serde_json::Value;

use super::{Col, QueryError, hosted_table, list_time, truncate_end};
use crate::Trace;
use mcp_guard_model::{CallAudit, CallRecord, SessionRecord, Timestamp};

/// Lines of a pretty-printed value `trace` shows before it says how many more there are.
const TRACE_LINES: usize = 24;

/// The `ARGUMENTS` cell of `calls`: the arguments as one line of JSON.
pub(super) fn arguments_cell(c: &CallRecord) -> String {
    c.audit
        .as_ref()
        .and_then(|a| a.arguments.as_ref())
        .map(Value::to_string)
        .unwrap_or_default()
}

/// The lines `trace` prints under its header about what the server said about itself.
pub(super) fn server_lines(
    out: &mut dyn Write,
    s: &SessionRecord,
    width: usize,
) -> Result<(), QueryError> {
    if let Some(info) = &s.facts.server_info {
        let mut line = format!("  server says it is {}", server_name(info));
        if let Some(p) = info.get("protocolVersion").and_then(Value::as_str) {
            line.push_str(&format!(" (MCP {p})"));
        }
        writeln!(out, "{}", truncate_end(&line, width))?;
    }
    if let Some(last) = s.facts.tools_listed.last() {
        let changes = s.facts.tools_listed.len();
        let line = format!(
            "  tools listed: {} tool(s), sha256 {}{}",
            last.tools,
            &last.sha256[..last.sha256.len().min(16)],
            if changes > 1 {
                format!(" (the list changed {} time(s) in the session)", changes - 1)
            } else {
                String::new()
            }
        );
        writeln!(out, "{}", truncate_end(&line, width))?;
    }
    Ok(())
}

/// `name version` of a server's `initialize` answer.
fn server_name(info: &Value) -> String {
    let s = |k: &str| info.get(k).and_then(Value::as_str).unwrap_or("");
    match (s("name"), s("version")) {
        ("", "") => "(unnamed)".into(),
        (n, "") => n.into(),
        (n, v) => format!("{n} {v}"),
    }
}

/// The call's arguments and result in `trace`, each saying whether it was cut (and by how
/// much) and what was redacted from them.
pub(super) fn call_lines(
    out: &mut dyn Write,
    trace: &Trace,
    width: usize,
) -> Result<(), QueryError> {
    let c = &trace.call;
    let Some(a) = &c.audit else {
        // [audit] off for the tool, or recorded before calls kept them.
        let line = format!(
            "  arguments and result: not recorded ([audit] off for {})",
            c.tool.as_deref().unwrap_or(&c.method)
        );
        writeln!(out, "{}", truncate_end(&line, width))?;
        return Ok(());
    };
    let CallAudit {
        arguments,
        arguments_cut,
        result,
        result_cut,
        redacted,
    } = a;
    if !redacted.is_empty() {
        let line = format!("  redacted before recording: {}", redacted.join(", "));
        writeln!(out, "{}", truncate_end(&line, width))?;
    }
    part(
        out,
        "arguments",
        arguments.as_ref(),
        *arguments_cut,
        None,
        width,
    )?;
    part(
        out,
        "result",
        result.as_ref(),
        *result_cut,
        c.result_bytes,
        width,
    )?;
    Ok(())
}

/// One part (arguments or result), pretty-printed and indented, after a line that says how
/// much of it is there.
fn part(
    out: &mut dyn Write,
    name: &str,
    value: Option<&Value>,
    cut: u64,
    whole_response: Option<u64>,
    width: usize,
) -> Result<(), QueryError> {
    let Some(v) = value else {
        if cut > 0 {
            writeln!(out, "  {name}: not kept ({cut} bytes)")?;
        }
        return Ok(());
    };
    let text = serde_json::to_string_pretty(v).unwrap_or_default();
    let kept = v.to_string().len() as u64;
    let head = if cut > 0 {
        format!(
            "  {name}: the first {kept} bytes, {cut} bytes cut (the excerpt ends where the cut is)"
        )
    } else if let (Some(total), "result") = (whole_response, name) {
        format!("  {name}: whole ({total} bytes with its response's envelope)")
    } else {
        format!("  {name}:")
    };
    writeln!(out, "{}", truncate_end(&head, width))?;
    let lines: Vec<&str> = text.lines().collect();
    for line in lines.iter().take(TRACE_LINES) {
        writeln!(out, "{}", truncate_end(&format!("    {line}"), width))?;
    }
    if lines.len() > TRACE_LINES {
        writeln!(
            out,
            "    … {} more line(s) (trace --json shows all that was kept)",
            lines.len() - TRACE_LINES
        )?;
    }
    Ok(())
}

/// `sessions`: one line per session, with the server's own name and version and its tools
/// (and each one's host, from the fleet).
pub(super) fn sessions_table(
    out: &mut dyn Write,
    sessions: &[SessionRecord],
    hosts: Option<&[String]>,
    width: usize,
) -> Result<(), QueryError> {
    let cols = vec![
        Col::keep("LOCAL TIME"),
        Col::keep("SESSION"),
        Col::end("SERVER", 6).droppable(1),
        Col::end("SAYS IT IS", 10).wants(36),
        Col::keep("TOOLS"),
        Col::keep("EXIT"),
        Col::end("COMMAND", 8).droppable(0),
    ];
    let rows = sessions
        .iter()
        .map(|s| {
            vec![
                list_time(s.started_at),
                s.session.clone(),
                s.server.clone(),
                s.facts
                    .server_info
                    .as_ref()
                    .map_or_else(|| "-".into(), server_name),
                s.facts.tools_listed.last().map_or_else(
                    || "-".into(),
                    |t| format!("{} {}", t.tools, &t.sha256[..t.sha256.len().min(8)]),
                ),
                match (s.ended_at, s.exit_status) {
                    (None, _) => "running".into(),
                    (Some(_), Some(code)) => code.to_string(),
                    (Some(_), None) => "?".into(),
                },
                s.command.join(" "),
            ]
        })
        .collect();
    hosted_table(out, cols, rows, hosts, width)
}

/// Sessions started at or after `since`, of `server` when given.
pub(super) fn sessions_of(
    store: &crate::Store,
    server: Option<&str>,
    since: Option<Timestamp>,
) -> Result<Vec<SessionRecord>, QueryError> {
    let mut all = store.sessions(since)?;
    if let Some(server) = server {
        all.retain(|s| s.server == server);
    }
    Ok(all)
}
