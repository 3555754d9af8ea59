//! doctor's table of promises ([`mcp_guard_launch::promises`]) for this host: for a policy with egress
//! and one without, which mechanism keeps each promise, or why none can.

use serde::Serialize;

use super::{CapabilityId, Report};
use mcp_guard_launch::promises::{self, Choice, Features, Holder, Mechanism, Needs, Promise};

/// This host's features, as doctor's probes found them.
pub(super) fn features(report: &Report) -> Features {
    let on = |id| report.is_available(id);
    Features {
        landlock_abi: if on(CapabilityId::Landlock) {
            mcp_guard_launch::landlock::kernel_abi().min(mcp_guard_launch::landlock::MAX_ABI)
        } else {
            0
        },
        seccomp: on(CapabilityId::Seccomp),
        namespaces: on(CapabilityId::Privileges) && on(CapabilityId::Namespaces),
        cgroup_sock_addr: on(CapabilityId::CgroupSockAddr),
        cgroup_unix: on(CapabilityId::CgroupUnix),
        tracing: on(CapabilityId::TpBtf) && on(CapabilityId::SendSignal),
    }
}

/// The two policies the table is shown for. Both read devices, so the device row says what
/// a policy that does gets; neither lists `[network] unix` sockets (the common case).
const WITH_EGRESS: Needs = Needs {
    tcp_ports_limited: true,
    egress: true,
    abstract_names: false,
    unix_sockets: false,
    device_files: true,
};
const WITHOUT_EGRESS: Needs = Needs {
    egress: false,
    ..WITH_EGRESS
};

/// (promise, with egress, without egress) for this host.
fn rows(report: &Report) -> Vec<(Choice, Choice)> {
    let f = features(report);
    promises::choose(&f, &WITH_EGRESS)
        .into_iter()
        .zip(promises::choose(&f, &WITHOUT_EGRESS))
        .collect()
}

fn cell(h: &Holder) -> String {
    match h {
        Holder::Kept { mechanism } => mechanism.name().to_string(),
        Holder::NotNeeded => "-".to_string(),
        Holder::Unkept { .. } => "REFUSED (77)".to_string(),
    }
}

/// The table, for people: each promise, what keeps it, and why not where nothing does.
pub(super) fn render_table(report: &Report) -> String {
    let rows = rows(report);
    let w = Promise::ALL
        .iter()
        .map(|p| p.name().len())
        .max()
        .unwrap_or(10);
    let mut out = format!(
        "\n{:<w$}  {:<20}  {:<20}  WHAT\n",
        "PROMISE", "WITH EGRESS", "WITHOUT EGRESS"
    );
    let mut why = Vec::new();
    for (with, without) in &rows {
        out.push_str(&format!(
            "{:<w$}  {:<20}  {:<20}  {}\n",
            with.promise.name(),
            cell(&with.holder),
            cell(&without.holder),
            with.promise.what()
        ));
        for (c, label) in [(with, "with egress"), (without, "without egress")] {
            if let Holder::Unkept { why: reasons } = &c.holder {
                why.push(format!(
                    "{} ({label}): {}",
                    c.promise.name(),
                    reasons.join("; ")
                ));
            }
        }
    }
    if rows.iter().any(|(with, without)| {
        [with, without].iter().any(|c| {
            c.holder
                == (Holder::Kept {
                    mechanism: Mechanism::SeccompUnix,
                })
        })
    }) {
        out.push_str(
            "seccomp_unix: only for a policy that lists no [network] unix sockets (it takes Unix \
             sockets away); one that lists some is refused (77) on this kernel\n",
        );
    }
    if !why.is_empty() {
        out.push_str(
            "an enforced exec refuses (77) naming the promise where nothing keeps it (device_ioctl \
             only for a policy whose read or exec set reaches devices beyond /dev/null and the \
             like):\n",
        );
        for w in why {
            out.push_str(&format!("  {w}\n"));
        }
    }
    out.push('\n');
    out
}

/// One JSON line per promise. Contract: `{"promise": "<name>", "what": "...",
/// "mechanisms": ["<strongest first>", ...], "with_egress": HOLDER, "without_egress": HOLDER}`
/// where HOLDER is `{"state": "kept", "mechanism": "<name>"}`, `{"state": "not_needed"}` or
/// `{"state": "unkept", "why": ["<mechanism>: <reason>", ...]}`.
pub(super) fn render_json(report: &Report) -> String {
    #[derive(Serialize)]
    struct Line<'a> {
        promise: &'static str,
        what: &'static str,
        mechanisms: Vec<&'static str>,
        with_egress: &'a Holder,
        without_egress: &'a Holder,
    }
    let mut out = String::new();
    for (with, without) in rows(report) {
        let line = Line {
            promise: with.promise.name(),
            what: with.promise.what(),
            mechanisms: promises::mechanisms(with.promise)
                .iter()
                .map(|m| m.name())
                .collect(),
            with_egress: &with.holder,
            without_egress: &without.holder,
        };
        out.push_str(&serde_json::to_string(&line).unwrap_or_default());
        out.push('\n');
    }
    out
}
