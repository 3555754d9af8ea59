//! Reads the guest's serial log (markers written by guest.rs) and judges each case against
//! what the matrix expects of it on that kernel.

use std::collections::BTreeMap;

use super::matrix::{Case, Expect};

/// What one case did inside the guest.
#[derive(Debug, Clone, Default)]
pub(super) struct CaseRun {
    pub rc: Option<i32>,
    pub secs: Option<f64>,
    pub limit: Option<u32>,
    pub output: Vec<String>,
}

/// Everything parsed from one boot's serial log.
#[derive(Debug, Default)]
pub(super) struct GuestLog {
    pub release: Option<String>,
    /// Seconds from power-on to the run script (the guest's uptime then).
    pub booted_s: Option<f64>,
    pub lsm: Option<String>,
    pub landlock_abi: Option<u32>,
    pub done: bool,
    pub runs: BTreeMap<usize, CaseRun>,
    /// Init and setup failures, kernel oopses and panics: shown verbatim in the report.
    pub alarms: Vec<String>,
    /// The first kernel oops, panic or hang of this boot: what ran after it ran in a broken
    /// kernel.
    pub crash: Option<Crash>,
    /// The case whose output is being read.
    current: Option<usize>,
    /// The last case that ended.
    last_ended: Option<usize>,
}

/// A guest kernel oops, panic or hang, and the case that was running when it happened.
#[derive(Debug, Clone, Default)]
pub(super) struct Crash {
    /// The case running then (`None`: between cases, during setup).
    pub case: Option<usize>,
    /// The oops's first line and the report that follows it (trace, registers), capped.
    pub lines: Vec<String>,
    /// The report's `---[ end trace` line was seen, or the kernel panicked.
    pub ended: bool,
    /// The last case that had ended before it.
    pub after: Option<usize>,
}

impl Crash {
    /// The first case whose result the crash spoils: the one running, else the next one
    /// (`first`: the boot's first case).
    pub(super) fn first_spoiled(&self, first: usize) -> usize {
        self.case.or(self.after.map(|i| i + 1)).unwrap_or(first)
    }
}

/// How many lines of an oops report are kept (the first lines name the fault and the function).
const CRASH_LINES: usize = 60;

/// Drops ANSI colour sequences (doctor colours its table on a terminal, and the serial console
/// is one).
pub(super) fn strip_ansi(line: &str) -> String {
    let mut out = String::with_capacity(line.len());
    let mut chars = line.chars().peekable();
    while let Some(c) = chars.next() {
        if c == '\u{1b}' {
            // CSI (`ESC [ ... letter`) or a two-character escape such as the reset `ESC c`.
            if chars.next() == Some('[') {
                for c in chars.by_ref() {
                    if c.is_ascii_alphabetic() {
                        break;
                    }
                }
            }
            continue;
        }
        if c != '\r' {
            out.push(c);
        }
    }
    out
}

/// Lines of the guest's init and setup that say something failed.
const SETUP_ALARMS: &[&str] = &["MCPG-INIT-FAIL", "MCPG-SETUP-FAIL"];

/// Kernel messages (`[  12.345678] ...`) worth showing: panics, oopses, warnings, OOM kills.
const KERNEL_ALARMS: &[&str] = &[
    "Kernel panic",
    "BUG:",
    "Oops:",
    "WARNING: CPU:",
    "general protection fault",
    "Out of memory",
    "segfault at",
];

/// The kernel's `die()` line (`int3: 0000 [#1] PREEMPT SMP NOPTI`, since 6.10 prefixed with
/// `Oops: `), or a panic. Not soft-lockup or RCU-stall reports: a loaded host stalls a TCG guest
/// and the kernel carries on (but see [`is_hang`]).
pub(super) fn is_crash(line: &str) -> bool {
    if line.contains("Kernel panic") || line.contains("Oops:") {
        return true;
    }
    // An error code of four hex digits, then the oops counter: `: 0000 [#1]`.
    line.match_indices(" [#").any(|(at, _)| {
        let code = line[..at].rsplit(' ').next().unwrap_or("");
        let counter = line[at + 3..].split(']').next().unwrap_or("");
        code.len() == 4
            && code.chars().all(|c| c.is_ascii_hexdigit())
            && !counter.is_empty()
            && counter.chars().all(|c| c.is_ascii_digit())
    })
}

/// A CPU stuck this long is a hung guest, not a stalled one: a loaded host's stalls end within
/// about half a minute, no case's own limit reaches this far past them, and a guest this stuck
/// cannot enforce that limit (its timeout never runs).
const HUNG_S: u32 = 120;

/// A soft-lockup report of a CPU stuck for [`HUNG_S`] or more
/// (`watchdog: BUG: soft lockup - CPU#1 stuck for 425s! [mcp-guard:605]`). Seen on 6.1 under TCG
/// with both vCPUs stuck for good, one of them loading eBPF programs (which patches kernel
/// text): the same emulation race as 6.12's int3 crashes, so it is rerun the same way.
pub(super) fn is_hang(line: &str) -> bool {
    line.split_once("soft lockup - CPU#")
        .and_then(|(_, rest)| rest.split_once(" stuck for "))
        .and_then(|(_, rest)| rest.split_once("s!"))
        .and_then(|(secs, _)| secs.parse::<u32>().ok())
        .is_some_and(|secs| secs >= HUNG_S)
}

fn is_kernel_message(line: &str) -> bool {
    line.trim_start().starts_with('[')
        && line.split_once(']').is_some_and(|(ts, _)| {
            ts.trim_start_matches([' ', '['])
                .chars()
                .all(|c| c.is_ascii_digit() || c == '.')
        })
}

impl GuestLog {
    /// Feeds one serial line (ANSI already stripped).
    pub(super) fn line(&mut self, line: &str) {
        // A marker may follow terminal noise or a kernel message that began on the same line.
        let marker = line.find("MCPG-").map_or("", |at| &line[at..]);
        if SETUP_ALARMS.iter().any(|a| marker.starts_with(a)) {
            self.alarms.push(marker.to_string());
            return;
        }
        let line = if marker.is_empty() { line } else { marker };
        if let Some(rest) = line.strip_prefix("MCPG-KERNEL ") {
            let mut words = rest.split_whitespace();
            self.release = words.next().map(str::to_string);
            self.booted_s = words
                .find_map(|w| w.strip_prefix("up="))
                .and_then(|v| v.parse().ok());
        } else if let Some(rest) = line.strip_prefix("MCPG-LSM ") {
            self.lsm = Some(rest.trim().to_string());
        } else if line.trim() == "MCPG-DONE" {
            self.done = true;
        } else if let Some(rest) = line.strip_prefix("MCPG-BEGIN ") {
            if let Ok(i) = rest.trim().parse() {
                self.runs.insert(i, CaseRun::default());
                self.current = Some(i);
            }
        } else if let Some(rest) = line.strip_prefix("MCPG-END ") {
            self.end(rest);
        } else {
            let kernel = is_kernel_message(line);
            if kernel && (KERNEL_ALARMS.iter().any(|a| line.contains(a)) || is_crash(line)) {
                self.alarms.push(line.to_string());
            }
            if let Some(crash) = &mut self.crash {
                if kernel && !crash.ended && crash.lines.len() < CRASH_LINES {
                    crash.lines.push(line.to_string());
                }
                if line.contains("---[ end trace") || line.contains("Kernel panic") {
                    crash.ended = true;
                }
            } else if kernel
                && let hang = is_hang(line)
                && (hang || is_crash(line))
            {
                // A panic or a hang says all it will: nothing after it is worth waiting for.
                self.crash = Some(Crash {
                    case: self.current,
                    lines: vec![line.to_string()],
                    ended: hang || line.contains("Kernel panic"),
                    after: self.last_ended,
                });
            }
            // doctor's landlock row: "landlock  ✓ available  required  ABI 2, a ruleset ..."
            if line.starts_with("landlock ")
                && let Some(abi) = line
                    .split("ABI ")
                    .nth(1)
                    .and_then(|r| r.split(|c: char| !c.is_ascii_digit()).next())
                    .and_then(|d| d.parse().ok())
            {
                self.landlock_abi = Some(abi);
            }
            if let Some(run) = self.current.and_then(|i| self.runs.get_mut(&i)) {
                run.output.push(line.to_string());
            }
        }
    }

    fn end(&mut self, rest: &str) {
        let mut fields = rest.split_whitespace();
        let Some(i) = fields.next().and_then(|i| i.parse::<usize>().ok()) else {
            return;
        };
        let kv: BTreeMap<&str, &str> = fields.filter_map(|f| f.split_once('=')).collect();
        let run = self.runs.entry(i).or_default();
        run.rc = kv.get("rc").and_then(|v| v.parse().ok());
        run.limit = kv.get("limit").and_then(|v| v.parse().ok());
        let t = |k| kv.get(k).and_then(|v: &&str| v.parse::<f64>().ok());
        if let (Some(t0), Some(t1)) = (t("t0"), t("t1")) {
            run.secs = Some(t1 - t0);
        }
        self.current = None;
        self.last_ended = Some(i);
    }
}

/// The verdict on one case on one kernel.
#[derive(Debug, Clone, PartialEq)]
pub(super) enum Verdict {
    Pass,
    /// Refused as the table expects (exit 77, the promise named).
    Refused(&'static str),
    /// Failed as the table expects (a known gap).
    KnownGap(&'static str),
    /// Not what the table expects: the reason, and output lines that show it.
    Wrong(String, Vec<String>),
}

impl Verdict {
    #[cfg(test)]
    fn ok(&self) -> bool {
        !matches!(self, Verdict::Wrong(..))
    }
}

/// How an `exec` that exited 77 shows in a test's failure output (`describe()` prints the
/// wait status; 77 << 8 = 19712) or in a plain exit-status message.
const EXIT_77: &[&str] = &[
    "unix_wait_status(19712)",
    "exit status: 77",
    "code: Some(77)",
];

/// Lines worth quoting from a failed case: panics and their assertion, mcp-guard's message.
fn evidence(output: &[String]) -> Vec<String> {
    let interesting = |l: &&String| {
        l.contains("panicked at")
            || l.contains("assertion")
            || l.contains("mcp-guard:")
            || l.contains("Error")
            || l.contains("error:")
            || l.starts_with("NOT OK")
            || l.contains("timed out")
    };
    let mut lines: Vec<String> = output.iter().filter(interesting).take(6).cloned().collect();
    if lines.is_empty() {
        lines = output
            .iter()
            .rev()
            .filter(|l| !l.trim().is_empty())
            .take(4)
            .cloned()
            .collect();
        lines.reverse();
    }
    lines
        .into_iter()
        .map(|l| l.chars().take(300).collect())
        .collect()
}

/// Judges `run` (None: the case never started or never ended) against the table.
pub(super) fn judge(case: &Case, series: &str, run: Option<&CaseRun>) -> Verdict {
    let Some(run) = run else {
        return Verdict::Wrong(
            "did not run (the guest stopped before it)".into(),
            Vec::new(),
        );
    };
    let Some(rc) = run.rc else {
        return Verdict::Wrong(
            "did not finish (the guest stopped or timed out during it)".into(),
            evidence(&run.output),
        );
    };
    let timed_out = matches!((run.secs, run.limit), (Some(s), Some(l)) if s >= f64::from(l) - 1.0);
    if timed_out {
        return Verdict::Wrong(
            format!("killed at its {} s limit (rc {rc})", run.limit.unwrap_or(0)),
            evidence(&run.output),
        );
    }
    let text = run.output.join("\n");
    match case.expect_on(series) {
        None if rc == 0 => Verdict::Pass,
        None => Verdict::Wrong(format!("failed (rc {rc})"), evidence(&run.output)),
        Some(expect) if rc == 0 => Verdict::Wrong(
            format!(
                "passed, but the matrix expects {expect:?} on {series}: update xtask/src/kernels/matrix.rs"
            ),
            Vec::new(),
        ),
        Some(Expect::Refuses(promise)) => {
            let exited_77 = EXIT_77.iter().any(|m| text.contains(m));
            if exited_77 && text.contains(promise) {
                Verdict::Refused(promise)
            } else {
                Verdict::Wrong(
                    format!(
                        "failed (rc {rc}), but not as expected: exit 77 {}, promise {promise:?} {}",
                        if exited_77 { "seen" } else { "NOT seen" },
                        if text.contains(promise) {
                            "named"
                        } else {
                            "NOT named"
                        }
                    ),
                    evidence(&run.output),
                )
            }
        }
        Some(Expect::Fails(because)) if text.contains(because) => Verdict::KnownGap(because),
        Some(Expect::Fails(because)) => Verdict::Wrong(
            format!("failed (rc {rc}), but without the known reason {because:?}"),
            evidence(&run.output),
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::kernels::matrix::Run;

    const CASE: Case = Case {
        id: "t",
        run: Run::McpGuard(&["doctor"]),
        except: &[
            ("6.1", Expect::Refuses("has no scopes")),
            ("6.12", Expect::Fails("verifier said no")),
        ],
        in_ci: true,
        timeout_s: 60,
    };

    fn parse(lines: &[&str]) -> GuestLog {
        let mut log = GuestLog::default();
        for l in lines {
            log.line(&strip_ansi(l));
        }
        log
    }

    #[test]
    fn parses_markers_and_the_landlock_abi() {
        let log = parse(&[
            "\u{1b}c\u{1b}[?7l\u{1b}[2JMCPG-KERNEL 6.1.0-57-cloud-amd64 up=4.25\r",
            "mcp-guard: WARNING: on_sensitive = \"kill\" cannot kill in the kernel",
            "MCPG-BEGIN 0",
            "landlock            \u{1b}[32m✓ available  \u{1b}[0m  required  ABI 2, a ruleset",
            "MCPG-END 0 rc=0 t0=7.19 t1=15.36 limit=60",
            "[    5.712345] Kernel panic - not syncing",
            "MCPG-SETUP-FAIL mount -t bpf bpf /sys/fs/bpf",
            "MCPG-DONE",
        ]);
        assert_eq!(log.release.as_deref(), Some("6.1.0-57-cloud-amd64"));
        assert_eq!(log.booted_s, Some(4.25));
        assert_eq!(log.landlock_abi, Some(2));
        let run = &log.runs[&0];
        assert_eq!(run.rc, Some(0));
        assert!((run.secs.unwrap_or(0.0) - 8.17).abs() < 1e-9);
        assert!(log.done);
        assert_eq!(
            log.alarms,
            [
                "[    5.712345] Kernel panic - not syncing",
                "MCPG-SETUP-FAIL mount -t bpf bpf /sys/fs/bpf"
            ]
        );
    }

    #[test]
    fn an_oops_is_a_crash_and_spoils_the_case_it_happened_in() {
        assert!(is_crash(
            "[  901.123456] Oops: int3: 0000 [#1] PREEMPT SMP NOPTI"
        ));
        // Before 6.10 the die line has no `Oops:` prefix.
        assert!(is_crash("[  33.000001] int3: 0000 [#1] PREEMPT SMP NOPTI"));
        assert!(is_crash(
            "[  33.000001] general protection fault, probably for non-canonical address 0xdead: 0000 [#2] SMP"
        ));
        assert!(is_crash(
            "[  40.1] Kernel panic - not syncing: Fatal exception"
        ));
        assert!(!is_crash(
            "[  50.2] watchdog: BUG: soft lockup - CPU#1 stuck for 23s! [podman:412]"
        ));
        assert!(!is_crash(
            "[  50.2] rcu: INFO: rcu_preempt self-detected stall on CPU"
        ));
        assert!(!is_crash("test [#1] passed: 0000"));

        let log = parse(&[
            "MCPG-BEGIN 4",
            "MCPG-END 4 rc=1 t0=1 t1=2 limit=60",
            "MCPG-BEGIN 5",
            "[  901.1] Oops: int3: 0000 [#1] PREEMPT SMP NOPTI",
            "[  901.1] RIP: 0010:syscall_exit_to_user_mode_prepare+0x5/0x80",
            "[  901.2] ---[ end trace 0000000000000000 ]---",
            "[  901.3] something after the report",
        ]);
        let crash = log.crash.as_ref().expect("the oops is a crash");
        assert_eq!(crash.case, Some(5));
        assert!(crash.ended);
        assert_eq!(crash.lines.len(), 3, "{:?}", crash.lines);
        assert_eq!(crash.first_spoiled(0), 5);
        // Between cases: the next case is the first spoiled (case 4 failed on its own).
        let between = parse(&[
            "MCPG-BEGIN 4",
            "MCPG-END 4 rc=1 t0=1 t1=2 limit=60",
            "[  33.0] int3: 0000 [#1] SMP",
        ]);
        assert_eq!(between.crash.as_ref().map(|c| c.first_spoiled(0)), Some(5));
        assert_eq!(
            parse(&["[  1.0] Oops: int3: 0000 [#1] SMP"])
                .crash
                .map(|c| c.first_spoiled(7)),
            Some(7)
        );
    }

    #[test]
    fn a_cpu_stuck_for_minutes_is_a_hang_that_spoils_its_case_and_ends_the_boot() {
        // A loaded host's stall: the kernel carries on.
        assert!(!is_hang(
            "[  50.2] watchdog: BUG: soft lockup - CPU#1 stuck for 23s! [podman:412]"
        ));
        assert!(!is_hang(
            "[  50.2] rcu: INFO: rcu_preempt self-detected stall on CPU"
        ));
        assert!(is_hang(
            "[  216.8] watchdog: BUG: soft lockup - CPU#0 stuck for 127s! [ebpf-load:607]"
        ));
        let log = parse(&[
            "MCPG-BEGIN 8",
            "MCPG-END 8 rc=0 t0=1 t1=2 limit=60",
            "MCPG-BEGIN 9",
            "[  60.8] watchdog: BUG: soft lockup - CPU#0 stuck for 22s! [ebpf-load:607]",
            "[  88.8] watchdog: BUG: soft lockup - CPU#0 stuck for 48s! [ebpf-load:607]",
            "[ 180.8] watchdog: BUG: soft lockup - CPU#0 stuck for 140s! [ebpf-load:607]",
        ]);
        let crash = log.crash.as_ref().expect("a CPU stuck for 140 s is a hang");
        assert_eq!(crash.first_spoiled(0), 9);
        assert!(crash.ended, "nothing after it is waited for");
        assert_eq!(crash.lines.len(), 1, "{:?}", crash.lines);
    }

    #[test]
    fn a_refusal_needs_exit_77_and_the_promise() {
        let run = |rc, lines: &[&str]| CaseRun {
            rc: Some(rc),
            secs: Some(1.0),
            limit: Some(60),
            output: lines.iter().map(std::string::ToString::to_string).collect(),
        };
        let refused = run(
            101,
            &[
                "status ExitStatus(unix_wait_status(19712))",
                "mcp-guard: landlock ABI 2 has no scopes (needs ABI 6",
            ],
        );
        assert_eq!(
            judge(&CASE, "6.1", Some(&refused)),
            Verdict::Refused("has no scopes")
        );
        let other = run(
            101,
            &["status ExitStatus(unix_wait_status(256))", "has no scopes"],
        );
        assert!(!judge(&CASE, "6.1", Some(&other)).ok());
        let unnamed = run(101, &["status ExitStatus(unix_wait_status(19712))"]);
        assert!(!judge(&CASE, "6.1", Some(&unnamed)).ok());
        assert!(
            !judge(&CASE, "6.1", Some(&run(0, &[]))).ok(),
            "passing is news"
        );
        assert_eq!(judge(&CASE, "7.3", Some(&run(0, &[]))), Verdict::Pass);
        assert!(!judge(&CASE, "7.3", Some(&refused)).ok());
        assert_eq!(
            judge(&CASE, "6.12", Some(&run(1, &["the verifier said no"]))),
            Verdict::KnownGap("verifier said no")
        );
        assert!(!judge(&CASE, "6.12", Some(&run(1, &["other"]))).ok());
        assert!(!judge(&CASE, "7.3", None).ok());
        let slow = CaseRun {
            secs: Some(60.2),
            ..run(137, &[])
        };
        assert!(!judge(&CASE, "7.3", Some(&slow)).ok());
    }
}
