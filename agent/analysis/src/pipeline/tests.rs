use std::{collections::HashSet, path::Path, sync::Arc};

use super::*;
use crate::detect::DetectConfig;
use mcp_guard_model::{Attribution, KernelEvent, KernelEventKind};

fn pipeline(policy_extra: &str, observe: bool) -> Pipeline {
    let policy = mcp_guard_policy::parse(
        &format!("name = \"x\"\n[detect]\nsensitive = [\"/srv/secret/*.key\"]\n{policy_extra}"),
        None,
    )
    .expect("policy");
    let config = DetectConfig::from_policy(&policy, Path::new("/home/u"));
    Pipeline::new(PipelineConfig {
        server: "srv".into(),
        session: "sess".into(),
        detector: Detector::new(config, "srv", "sess", Profile::default(), HashSet::new()),
        observe,
    })
}

fn started(id: &str, at: u64) -> SessionInput {
    SessionInput::Call(CallFact::Started {
        call_id: id.into(),
        tool: Some("read".into()),
        at_boot_ns: at,
    })
}

fn ended(id: &str, at: u64, denied: bool) -> SessionInput {
    SessionInput::Call(CallFact::Ended {
        call_id: id.into(),
        at_boot_ns: at,
        tool: Some("read".into()),
        result_bytes: None,
        denied,
    })
}

fn open(path: &str, at: u64) -> SessionInput {
    SessionInput::Kernel(KernelEvent {
        ts_boot_ns: at,
        cgroup_id: 1,
        pid: 7,
        tid: 7,
        server: Arc::from(""),
        session: Arc::from(""),
        kind: KernelEventKind::Open {
            path: path.into(),
            flags: 0,
            result: Some(3),
        },
    })
}

fn alerts(effects: &[Effect]) -> Vec<&AlertRecord> {
    effects
        .iter()
        .filter_map(|e| match e {
            Effect::Store(r) => match &**r {
                Record::Alert(a) => Some(a),
                _ => None,
            },
            _ => None,
        })
        .collect()
}

const MS: u64 = 1_000_000;

#[test]
fn a_proxy_finding_is_stored_as_an_alert_with_its_severity() {
    let mut p = pipeline("", false);
    p.input(SessionInput::Finding(Finding {
        server: "srv".into(),
        session: "sess".into(),
        ts: "2026-01-02T03:04:05.000000006Z".into(),
        rule: "tool-poisoning".into(),
        tool: Some("t".into()),
        summary: "poisoned".into(),
    }));
    let effects = p.take_effects();
    let got = alerts(&effects);
    assert_eq!(got.len(), 1, "{effects:?}");
    assert_eq!(got[0].alert_id, "sess-f1");
    assert_eq!(got[0].severity, Severity::High);
    assert_eq!(got[0].tool.as_deref(), Some("t"));
}

#[test]
fn denied_calls_alone_raise_a_denial_burst_naming_the_call() {
    // No kernel event at all: the call-level rules still judge the proxy's facts.
    let mut p = pipeline("", false);
    for i in 0..5u64 {
        let id = format!("sess-{i}");
        p.input(started(&id, (10 + i) * MS));
        p.input(ended(&id, (10 + i) * MS + 1, true));
    }
    p.settled(20 * MS);
    p.poll(20 * MS + END_GRACE_NS);
    let effects = p.take_effects();
    let got = alerts(&effects);
    assert_eq!(got.len(), 1, "{effects:?}");
    assert_eq!(got[0].rule, "denial-burst");
    assert_eq!(got[0].call_id.as_deref(), Some("sess-4"));
}

#[test]
fn a_deny_call_rule_asks_once_per_call_and_not_under_observe() {
    for observe in [false, true] {
        let mut p = pipeline("on_sensitive = \"deny-call\"\n", observe);
        p.input(started("c1", 10 * MS));
        p.input(open("/srv/secret/a.key", 11 * MS));
        p.input(open("/srv/secret/b.key", 12 * MS));
        p.settled(13 * MS);
        p.poll(13 * MS);
        let effects = p.take_effects();
        let denials: Vec<&Effect> = effects
            .iter()
            .filter(|e| matches!(e, Effect::DenyCall { .. }))
            .collect();
        assert_eq!(denials.len(), usize::from(!observe), "{effects:?}");
        assert_eq!(alerts(&effects).len(), 2, "both reads alerted: {effects:?}");
        let events: Vec<&Effect> = effects
            .iter()
            .filter(|e| {
                matches!(e, Effect::Store(r) if matches!(&**r, Record::Event(ev)
                    if ev.attribution == Attribution::Call && ev.server == "srv"))
            })
            .collect();
        assert_eq!(events.len(), 2, "{effects:?}");
    }
}

#[tokio::test]
async fn run_takes_what_is_queued_when_stopped_and_releases_everything() {
    let (tx, rx) = crate::input::channel();
    let (stop, stopped) = oneshot::channel();
    let now = boot_ns_now();
    tx.offer(started("c1", now));
    assert!(
        tx.kernel(match open("/srv/secret/a.key", now + 1) {
            SessionInput::Kernel(e) => e,
            _ => unreachable!(),
        })
        .await
    );
    stop.send(()).expect("pipeline waiting");
    let mut effects = Vec::new();
    let outcome = run(pipeline("", false), rx, stopped, |e| effects.push(e)).await;
    assert_eq!((outcome.events, outcome.alerts), (1, 1), "{effects:?}");
    assert!(outcome.learned.is_none());
}
