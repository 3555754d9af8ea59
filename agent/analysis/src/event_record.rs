//! The stored form of a kernel event: [`event_record`] is the one conversion from a kernel event
//! to an [`EventRecord`]. It leaves the event unattributed (`attribution: none`, `call_id:
//! null`); the pipeline fills those from the correlator's verdict.

use mcp_guard_model::{
    EgressVerdict, EventRecord, KernelEvent, KernelEventKind, Timestamp, Verdict, boot_to_unix_ns,
};

/// The stored form of one kernel event, unattributed. `event_id` must be unique in the store.
///
/// `ts` is the event's `CLOCK_BOOTTIME` stamp moved to the wall clock. Verdicts: an open that
/// failed with EACCES/EPERM is `denied`; an egress let through only because of `--observe` is
/// `allowed` with `would_deny`; an exec is reported when attempted (`allowed`).
pub fn event_record(event: &KernelEvent, event_id: String) -> EventRecord {
    let unix_ns = boot_to_unix_ns(event.ts_boot_ns);
    let mut rec = EventRecord::new(
        event_id,
        Timestamp::from_unix_nanos(i64::try_from(unix_ns).unwrap_or(i64::MAX)),
        &event.server,
        &event.session,
        event.pid,
        event.kind.contract_kind(),
    );
    match &event.kind {
        KernelEventKind::Exec { path, argv, result } => {
            rec.path = Some(path.clone());
            rec.argv = Some(argv.clone());
            rec.result = *result;
        }
        KernelEventKind::Open {
            path,
            flags,
            result,
        } => {
            rec.path = Some(path.clone());
            rec.flags = Some(*flags);
            rec.result = *result;
            let refused = [-i64::from(libc::EACCES), -i64::from(libc::EPERM)];
            if result.is_some_and(|r| refused.contains(&r)) {
                rec.verdict = Verdict::Denied;
            }
        }
        KernelEventKind::Connect {
            addr,
            proto,
            verdict,
            ..
        } => {
            rec.addr = Some(addr.ip().to_string());
            rec.port = Some(addr.port());
            rec.proto = Some(match proto {
                6 => "tcp".to_string(),
                17 => "udp".to_string(),
                p => p.to_string(),
            });
            match verdict {
                EgressVerdict::Allowed => {}
                EgressVerdict::Denied => rec.verdict = Verdict::Denied,
                EgressVerdict::Observed => rec.would_deny = true,
            }
        }
        KernelEventKind::Unix {
            path,
            sock_type,
            verdict,
            ..
        } => {
            rec.path = Some(path.clone());
            rec.proto = Some("unix".to_string());
            rec.detail = Some(serde_json::json!({
                "sock_type": match sock_type {
                    1 => "stream".to_string(),
                    2 => "dgram".to_string(),
                    5 => "seqpacket".to_string(),
                    t => t.to_string(),
                }
            }));
            match verdict {
                EgressVerdict::Allowed => {}
                EgressVerdict::Denied => rec.verdict = Verdict::Denied,
                EgressVerdict::Observed => rec.would_deny = true,
            }
        }
        KernelEventKind::Killed { path, signal } => {
            rec.path = Some(path.clone());
            rec.verdict = Verdict::Killed;
            rec.detail = Some(serde_json::json!({ "signal": signal }));
        }
        KernelEventKind::Resolve {
            name,
            addrs,
            ttl_secs,
            error,
        } => {
            rec.detail = Some(serde_json::json!({
                "name": name,
                "addrs": addrs.iter().map(ToString::to_string).collect::<Vec<_>>(),
                "ttl_secs": ttl_secs,
                "error": error,
            }));
        }
        // Not stored (the pipeline learns from it); should one get here, it says what it was.
        KernelEventKind::Dns(packet) => {
            rec.addr = Some(packet.peer.ip().to_string());
            rec.port = Some(packet.peer.port());
        }
    }
    rec
}

#[cfg(test)]
mod tests {
    use std::{sync::Arc, time::Duration};

    use super::*;
    use mcp_guard_model::{Attribution, EventKind, SockOp, boot_ns_now};

    fn event(kind: KernelEventKind) -> KernelEvent {
        KernelEvent {
            ts_boot_ns: boot_ns_now(),
            cgroup_id: 1,
            pid: 42,
            tid: 42,
            server: Arc::from("srv"),
            session: Arc::from("sess"),
            kind,
        }
    }

    #[test]
    fn events_become_unattributed_records_with_contract_fields() {
        let before = Timestamp::now();
        let rec = event_record(
            &event(KernelEventKind::Connect {
                addr: "127.0.0.2:80".parse().expect("addr"),
                proto: 6,
                op: SockOp::Connect,
                verdict: EgressVerdict::Denied,
            }),
            "sess-e1".into(),
        );
        let after = Timestamp::now();
        assert!(
            rec.ts >= before.saturating_sub(Duration::from_millis(5))
                && rec.ts <= after.saturating_add(Duration::from_millis(5)),
            "boot time moved to the wall clock: {} not in [{before}, {after}]",
            rec.ts
        );
        assert_eq!(rec.kind, EventKind::Connect);
        assert_eq!(
            (rec.addr.as_deref(), rec.port),
            (Some("127.0.0.2"), Some(80))
        );
        assert_eq!(rec.verdict, Verdict::Denied);
        assert_eq!(
            (rec.attribution, rec.call_id.as_deref()),
            (Attribution::None, None)
        );
        assert_eq!(
            (rec.server.as_str(), rec.session.as_str(), rec.pid),
            ("srv", "sess", 42)
        );

        let observed = event_record(
            &event(KernelEventKind::Connect {
                addr: "[::1]:53".parse().expect("addr"),
                proto: 17,
                op: SockOp::Sendmsg,
                verdict: EgressVerdict::Observed,
            }),
            "x".into(),
        );
        assert_eq!(observed.kind, EventKind::Sendmsg);
        assert_eq!(observed.verdict, Verdict::Allowed);
        assert!(observed.would_deny);
        assert_eq!(observed.proto.as_deref(), Some("udp"));

        let open = event_record(
            &event(KernelEventKind::Open {
                path: "/root/.ssh/id_rsa".into(),
                flags: 0,
                result: Some(-i64::from(libc::EACCES)),
            }),
            "y".into(),
        );
        assert_eq!((open.verdict, open.result), (Verdict::Denied, Some(-13)));

        let killed = event_record(
            &event(KernelEventKind::Killed {
                path: "/h/.aws/credentials".into(),
                signal: 9,
            }),
            "z".into(),
        );
        assert_eq!(killed.kind, EventKind::Killed);
        assert_eq!(killed.verdict, Verdict::Killed);
        assert_eq!(killed.path.as_deref(), Some("/h/.aws/credentials"));
    }
}
