//! `trace`: one call's timeline (request, its events and alerts by time, the response), as
//! text within the terminal's width or as JSON lines.

use super::{
    AlertRecord, Attribution, EventRecord, QueryError, Timestamp, Trace, Write, duration_text,
    history, io, list_time, target, truncate_end, truncate_middle, verdict_text,
};

/// `trace` of a call: JSON lines (each with `host` when it is given) or the timeline.
pub fn print_trace(
    out: &mut dyn Write,
    trace: &Trace,
    host: Option<&str>,
    json: bool,
    width: usize,
) -> Result<(), QueryError> {
    if json {
        trace_json(out, trace, host)
    } else {
        trace_text(out, trace, host, width)
    }
}

/// One entry of a trace's timeline.
pub(super) enum Step<'a> {
    Request,
    Event(&'a EventRecord),
    Alert(&'a AlertRecord),
    Response,
}

/// The timeline: request, events and alerts by time, response last among equals.
pub(super) fn timeline(trace: &Trace) -> Vec<(Timestamp, Step<'_>)> {
    let mut steps: Vec<(Timestamp, u8, Step<'_>)> = vec![(trace.call.started_at, 0, Step::Request)];
    steps.extend(trace.events.iter().map(|e| (e.ts, 1, Step::Event(e))));
    steps.extend(trace.alerts.iter().map(|a| (a.ts, 2, Step::Alert(a))));
    if let Some(end) = trace.call.ended_at {
        steps.push((end, 3, Step::Response));
    }
    // Stable: same-time events keep the store's order.
    steps.sort_by_key(|(t, rank, _)| (*t, *rank));
    steps.into_iter().map(|(t, _, s)| (t, s)).collect()
}

pub(super) fn trace_json(
    out: &mut dyn Write,
    trace: &Trace,
    host: Option<&str>,
) -> Result<(), QueryError> {
    let line = |out: &mut dyn Write, kind: &str, v: serde_json::Result<serde_json::Value>| {
        let mut v = v.map_err(io::Error::from)?;
        if let serde_json::Value::Object(m) = &mut v {
            m.insert("type".into(), kind.into());
            if let Some(h) = host {
                // An event's own `host` (the name its server resolved) keeps its value under the
                // name of its ClickHouse column, in its place.
                if m.contains_key("host") {
                    *m = std::mem::take(m)
                        .into_iter()
                        .map(|(k, v)| (if k == "host" { "dst_host".into() } else { k }, v))
                        .collect();
                }
                m.insert("host".into(), h.into());
            }
        }
        serde_json::to_writer(&mut *out, &v).map_err(io::Error::from)?;
        out.write_all(b"\n")
    };
    line(out, "call", serde_json::to_value(&trace.call))?;
    for (_, step) in timeline(trace) {
        match step {
            Step::Event(e) => line(out, "event", serde_json::to_value(e))?,
            Step::Alert(a) => line(out, "alert", serde_json::to_value(a))?,
            Step::Request | Step::Response => {}
        }
    }
    Ok(())
}

pub(super) fn trace_text(
    out: &mut dyn Write,
    trace: &Trace,
    host: Option<&str>,
    width: usize,
) -> Result<(), QueryError> {
    let c = &trace.call;
    let start = c.started_at.local();
    let what = c.tool.as_deref().unwrap_or(&c.method);
    match host {
        Some(h) => writeln!(
            out,
            "call {}  {}  on {}  host {h}",
            c.call_id, what, c.server
        )?,
        None => writeln!(out, "call {}  {}  on {}", c.call_id, what, c.server)?,
    }
    let mut facts = vec![
        format!("session {}", c.session),
        format!("{} id {}", c.method, c.request_id),
    ];
    match c.ended_at {
        Some(end) => facts.push(format!(
            "took {}",
            duration_text(end.nanos_since(c.started_at))
        )),
        None => facts.push("no response recorded".into()),
    }
    writeln!(out, "  {}", facts.join(" · "))?;
    if let Some(s) = &trace.session {
        let line = format!("  server command: {}", s.command.join(" "));
        writeln!(out, "{}", truncate_end(&line, width))?;
        writeln!(
            out,
            "  policy: {}{}",
            s.policy,
            if s.observe { " (observe mode)" } else { "" }
        )?;
        history::server_lines(out, s, width)?;
    }
    writeln!(
        out,
        "  started {} (local time, UTC{})",
        start.format("%Y-%m-%d %H:%M:%S%.3f"),
        start.format("%:z")
    )?;
    history::call_lines(out, trace, width)?;
    writeln!(out)?;
    let mut notes = Vec::new();
    for (t, step) in timeline(trace) {
        // Milliseconds with microsecond digits: kernel events within a call are that close.
        #[expect(clippy::cast_precision_loss, reason = "shown to the microsecond")]
        let offset = t.nanos_since(c.started_at) as f64 / 1e6;
        let lead = format!("{offset:>+11.3}ms  ");
        let body = match step {
            Step::Request => {
                let id = format!("(id {})", c.request_id);
                format!("→ request   {} {what} {id}", c.method)
            }
            Step::Event(e) => {
                let mut tail = String::new();
                if e.attribution == Attribution::Ambiguous {
                    let others: Vec<&str> = e
                        .candidates
                        .iter()
                        .map(String::as_str)
                        .filter(|id| *id != c.call_id)
                        .collect();
                    tail = format!("  (ambiguous, also {})", others.join(", "));
                }
                if let Some(r) = e.result.filter(|r| *r < 0) {
                    tail.push_str(&format!("  errno {}", -r));
                }
                if e.would_deny {
                    notes.push("* observe mode: the policy would have denied this");
                }
                let head = format!(
                    "  {:<9} {:<8} pid {:<6} ",
                    e.kind.as_str(),
                    verdict_text(e),
                    e.pid
                );
                let room = width
                    .saturating_sub(
                        lead.chars().count() + head.chars().count() + tail.chars().count(),
                    )
                    .max(12);
                format!("{head}{}{tail}", truncate_middle(&target(e), room))
            }
            Step::Alert(a) => {
                let head = format!("! alert     {:<8} {}: ", a.severity.as_str(), a.rule);
                // A repeat in the session: how often, and when last.
                let tail = if a.count > 1 {
                    format!(" (x{}, last {})", a.count, list_time(a.last_seen))
                } else {
                    String::new()
                };
                let room = width
                    .saturating_sub(
                        lead.chars().count() + head.chars().count() + tail.chars().count(),
                    )
                    .max(12);
                format!("{head}{}{tail}", truncate_end(&a.summary, room))
            }
            Step::Response => {
                let mut s = format!("← response  {}", c.decision);
                if let Some(r) = &c.reason {
                    s.push_str(&format!(": {r}"));
                }
                if let Some(err) = &c.error {
                    s.push_str(&format!(" (error: {err})"));
                }
                truncate_end(&s, width.saturating_sub(lead.chars().count()))
            }
        };
        writeln!(out, "{lead}{body}")?;
    }
    if trace.events.is_empty() {
        writeln!(out, "\n  no kernel events were attributed to this call")?;
    }
    notes.dedup();
    for n in notes {
        writeln!(out, "{n}")?;
    }
    Ok(())
}
