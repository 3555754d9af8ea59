//! One kernel's run: boot it with the chosen cases and read what they did; when the guest's
//! kernel crashes (an oops or panic, or QEMU gone without the guest powering off), say so at
//! once and boot it again for the cases the crash spoiled, and only those, while the crashes
//! move on (at most four boots).
//!
//! Why a rerun at all: under TCG the guest's kernel now and then dies of the emulation itself
//! (6.12 took an int3 oops in `syscall_exit_to_user_mode_prepare` while a static branch was
//! being patched), which ends every case after it. A case that failed on its own, in a kernel
//! that had not crashed, is never run again; the crash and the rerun are in the verdict.

use std::{
    collections::BTreeMap,
    fs,
    path::{Path, PathBuf},
    time::Duration,
};

use super::{
    BOOT_MARGIN_S, BUSYBOX, Options, RUN_CAP_S, TestExe, fetch, guest, initramfs,
    matrix::{Case, Kernel, Run},
    report::{self, CaseRun, GuestLog},
    short, vm,
};
use crate::{Result, root};

/// One boot of one kernel.
pub(super) struct BootRun {
    /// The index (in the run's case list) of its first case.
    pub first: usize,
    pub log: GuestLog,
    pub elapsed: Duration,
    pub timed_out: bool,
    pub serial_log: PathBuf,
    /// Why this boot's results stop early (a crash), and from which case.
    pub crashed: Option<CrashNote>,
}

/// A boot whose kernel died: what it said and the first case whose result it spoiled.
pub(super) struct CrashNote {
    pub from: usize,
    /// The kernel's own report, or what the host saw instead.
    pub lines: Vec<String>,
}

/// One kernel's boots (more than one when a boot crashed) and what they showed.
pub(super) struct KernelRun {
    pub kernel: &'static Kernel,
    pub files: fetch::KernelFiles,
    pub boots: Vec<BootRun>,
}

impl KernelRun {
    /// What case `index` did: from the last boot that ran it before any crash.
    pub(super) fn case(&self, index: usize) -> Option<&CaseRun> {
        case_of(&self.boots, index)
    }

    /// A value the first boot that has it reported (doctor may have run in either).
    pub(super) fn first_of<T>(&self, pick: impl Fn(&GuestLog) -> Option<T>) -> Option<T> {
        self.boots.iter().find_map(|b| pick(&b.log))
    }

    pub(super) fn elapsed(&self) -> Duration {
        self.boots.iter().map(|b| b.elapsed).sum()
    }
}

/// What case `index` did in `boots`: the last boot that began at or before it has it, unless a
/// crash in that boot came first.
fn case_of(boots: &[BootRun], index: usize) -> Option<&CaseRun> {
    let boot = boots.iter().rev().find(|b| b.first <= index)?;
    if boot.crashed.as_ref().is_some_and(|c| index >= c.from) {
        return None;
    }
    boot.log.runs.get(&index)
}

/// Boots `kernel` with every case of `opts`; reboots for the cases a kernel crash spoiled
/// ([`rerun_from`]).
pub(super) fn run_kernel(
    kernel: &'static Kernel,
    files: fetch::KernelFiles,
    opts: &Options,
    tests: &BTreeMap<String, TestExe>,
    target: &Path,
) -> Result<KernelRun> {
    let dir = target.join("kernels").join(kernel.series);
    fs::create_dir_all(&dir).map_err(|e| format!("{}: {e}", dir.display()))?;
    let initrd = dir.join("initramfs.cpio");
    initramfs::build(&initrd, Path::new(BUSYBOX), &files.modules)?;
    let mut run = KernelRun {
        kernel,
        files,
        boots: Vec::new(),
    };
    let first = boot_once(&run, &dir, &initrd, 0, opts, tests, target)?;
    run.boots.push(first);
    while let Some(from) = rerun_from(&run.boots, opts.cases.len()) {
        println!(
            "    [{}] !! booting the kernel again for the {} case(s) from {:?} on (a crash, \
             not a test failure: cases that failed on their own are not rerun)",
            kernel.series,
            opts.cases.len() - from,
            opts.cases[from].id
        );
        let again = boot_once(&run, &dir, &initrd, from, opts, tests, target)?;
        run.boots.push(again);
    }
    Ok(run)
}

/// Boots of one kernel at most: the first and three reruns.
const MAX_BOOTS: usize = 4;

/// How much longer a case may take in a rerun, on one emulator thread for both vCPUs.
const SINGLE_THREAD_SLOWDOWN: u32 = 3;

/// Where the next boot starts, if the last one crashed before the end: the case the crash
/// spoiled. A rerun is booted only while the crashes move on (the last boot got past the case it
/// began with); a case that crashes the kernel twice in a row is not emulation noise, and is
/// left as the crash it is.
fn rerun_from(boots: &[BootRun], cases: usize) -> Option<usize> {
    let last = boots.last()?;
    let from = last.crashed.as_ref()?.from;
    let moved_on = boots.len() == 1 || from > last.first;
    (from < cases && moved_on && boots.len() < MAX_BOOTS).then_some(from)
}

/// The guest's command for `case`.
fn guest_case(
    index: usize,
    case: &Case,
    opts: &Options,
    tests: &BTreeMap<String, TestExe>,
    target: &Path,
) -> guest::GuestCase {
    let (dir, argv) = match case.run {
        Run::McpGuard(args) => {
            let mut argv = vec![
                target
                    .join("debug/mcp-guard")
                    .to_string_lossy()
                    .into_owned(),
            ];
            argv.extend(args.iter().map(std::string::ToString::to_string));
            (root(), argv)
        }
        Run::Shell(script) => (root(), guest::shell_argv(script)),
        Run::Test { target, name } => {
            let exe = &tests[target];
            (
                exe.dir.clone(),
                guest::test_argv(&exe.path, name, &opts.test_args),
            )
        }
    };
    guest::GuestCase {
        index,
        dir,
        argv,
        timeout_s: case.timeout_s,
    }
}

/// One boot running the cases from `first` on.
fn boot_once(
    run: &KernelRun,
    dir: &Path,
    initrd: &Path,
    first: usize,
    opts: &Options,
    tests: &BTreeMap<String, TestExe>,
    target: &Path,
) -> Result<BootRun> {
    let (kernel, files) = (run.kernel, &run.files);
    let cases = &opts.cases[first..];
    // A rerun follows a guest kernel crash, and every one seen so far was the emulation's (a
    // static branch patched while the other vCPU ran it): a rerun takes one emulator thread, so
    // the same race cannot spoil it again, and its cases get the time that costs.
    let single_thread = first > 0;
    let guest_cases: Vec<guest::GuestCase> = cases
        .iter()
        .enumerate()
        .map(|(i, case)| {
            let mut c = guest_case(first + i, case, opts, tests, target);
            if single_thread {
                c.timeout_s *= SINGLE_THREAD_SLOWDOWN;
            }
            c
        })
        .collect();
    let mut env = Vec::new();
    if let Some(t) = std::env::var_os("CARGO_TARGET_DIR") {
        env.push(("CARGO_TARGET_DIR".into(), t.to_string_lossy().into_owned()));
    }
    // Each rerun begins at a later case than the one before it, so this names each boot's log.
    let suffix = if first == 0 {
        String::new()
    } else {
        format!("-rerun-{first}")
    };
    let script = dir.join(format!("run{suffix}.sh"));
    if script.to_string_lossy().contains(char::is_whitespace) {
        // The path travels on the kernel command line, which splits at whitespace.
        return Err(format!(
            "{}: the target dir's path has whitespace; the guest cannot be told it",
            script.display()
        ));
    }
    fs::write(&script, guest::script(&guest_cases, &env))
        .map_err(|e| format!("{}: {e}", script.display()))?;

    let limit: u64 = guest_cases.iter().map(|c| u64::from(c.timeout_s)).sum();
    let timeout = Duration::from_secs((limit + BOOT_MARGIN_S).min(RUN_CAP_S));
    let serial_log = dir.join(format!("serial{suffix}.log"));
    println!(
        "==> kernel {} ({}): booting {} under TCG{}, {} case(s), at most {} s; serial log {}",
        kernel.series,
        files.release,
        files.package,
        if single_thread {
            " with one emulator thread"
        } else {
            ""
        },
        cases.len(),
        timeout.as_secs(),
        serial_log.display()
    );
    let mut log = GuestLog::default();
    let series = kernel.series;
    let mut crash_lines = 0usize;
    let mut on_line = |raw: &str| -> bool {
        let line = report::strip_ansi(raw);
        let before = log.alarms.len();
        let crashed_before = log.crash.is_some();
        log.line(&line);
        if log.alarms.len() > before {
            println!("    [{series}] !! {line}");
        }
        if let Some(crash) = &log.crash {
            if !crashed_before {
                let during = crash
                    .case
                    .and_then(|i| opts.cases.get(i))
                    .map_or("between cases".to_string(), |c| {
                        format!("during {:?}", c.id)
                    });
                println!("    [{series}] !! GUEST KERNEL CRASH {during}: {line}");
            }
            // The kernel's report ends with `---[ end trace`; whatever runs after it runs in a
            // broken kernel, so stop there (or after a screenful, if the end never comes).
            crash_lines += 1;
            return crash.ended || crash_lines > 200;
        }
        if let Some(rest) = line.strip_prefix("MCPG-END ") {
            let index = rest.split_whitespace().next().and_then(|i| i.parse().ok());
            if let Some(case) = index.and_then(|i: usize| opts.cases.get(i)) {
                let run = index.and_then(|i| log.runs.get(&i));
                let verdict = report::judge(case, series, run);
                let secs = run.and_then(|r| r.secs).unwrap_or(0.0);
                println!(
                    "    [{series}] {:<34} {} ({secs:.1} s)",
                    case.id,
                    short(&verdict)
                );
            }
        }
        false
    };
    let outcome = vm::boot(
        &vm::Boot {
            vmlinuz: &files.vmlinuz,
            initramfs: initrd,
            run_script: &script,
            workdir: dir,
            serial_log: &serial_log,
            timeout,
            single_thread,
        },
        &mut on_line,
    )?;
    let crashed = if let Some(crash) = &log.crash {
        Some(CrashNote {
            from: crash.first_spoiled(first),
            lines: crash.lines.clone(),
        })
    } else if !log.done
        && !outcome.timed_out
        && !log.runs.is_empty()
        && !log.alarms.iter().any(|a| a.starts_with("MCPG-INIT-FAIL"))
    {
        // QEMU exited, but the guest never reached its poweroff: the kernel died without a
        // word on the console (a triple fault resets the machine, and `-no-reboot` ends QEMU).
        let running = (first..opts.cases.len())
            .find(|i| log.runs.get(i).is_none_or(|r| r.rc.is_none()))
            .unwrap_or(opts.cases.len());
        println!(
            "    [{series}] !! GUEST STOPPED without powering off and without a kernel message{}",
            opts.cases
                .get(running)
                .map_or(String::new(), |c| format!(", during {:?}", c.id))
        );
        Some(CrashNote {
            from: running,
            lines: vec!["the guest stopped (QEMU exited) before its poweroff".into()],
        })
    } else {
        None
    };
    Ok(BootRun {
        first,
        log,
        elapsed: outcome.elapsed,
        timed_out: outcome.timed_out,
        serial_log,
        crashed,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn boot(first: usize, lines: &[&str], crashed_from: Option<usize>) -> BootRun {
        let mut log = GuestLog::default();
        for l in lines {
            log.line(l);
        }
        BootRun {
            first,
            log,
            elapsed: Duration::ZERO,
            timed_out: false,
            serial_log: PathBuf::new(),
            crashed: crashed_from.map(|from| CrashNote {
                from,
                lines: Vec::new(),
            }),
        }
    }

    #[test]
    fn reruns_go_on_while_the_crashes_move_on_and_stop_at_a_case_that_crashes_twice() {
        let crashed_at = |first, case| {
            boot(
                first,
                &[
                    &format!("MCPG-BEGIN {case}"),
                    "[  9.0] Oops: int3: 0000 [#1] SMP",
                ],
                Some(case),
            )
        };
        let clean = boot(
            4,
            &["MCPG-BEGIN 4", "MCPG-END 4 rc=0 t0=1 t1=2 limit=60"],
            None,
        );
        assert_eq!(rerun_from(&[crashed_at(0, 2)], 6), Some(2));
        // The rerun got past case 2 and crashed at 4: once more, from 4.
        assert_eq!(
            rerun_from(&[crashed_at(0, 2), crashed_at(2, 4)], 6),
            Some(4)
        );
        // Case 2 crashed the kernel again, first thing in its rerun: no more boots.
        assert_eq!(rerun_from(&[crashed_at(0, 2), crashed_at(2, 2)], 6), None);
        // Four boots at most.
        assert_eq!(
            rerun_from(&[crashed_at(0, 1), crashed_at(1, 2), crashed_at(2, 4)], 6),
            Some(4)
        );
        assert_eq!(
            rerun_from(
                &[
                    crashed_at(0, 1),
                    crashed_at(1, 2),
                    crashed_at(2, 4),
                    crashed_at(4, 5)
                ],
                6
            ),
            None
        );
        assert_eq!(rerun_from(&[crashed_at(0, 2), clean], 6), None);
    }

    #[test]
    fn a_rerun_replaces_only_what_the_crash_spoiled() {
        let first = boot(
            0,
            &[
                "MCPG-BEGIN 0",
                "MCPG-END 0 rc=0 t0=1 t1=2 limit=60",
                "MCPG-BEGIN 1",
                "MCPG-END 1 rc=1 t0=2 t1=3 limit=60",
                "MCPG-BEGIN 2",
                "[  9.0] Oops: int3: 0000 [#1] SMP",
                "MCPG-END 2 rc=137 t0=3 t1=9 limit=60",
            ],
            Some(2),
        );
        let rc = |boots: &[BootRun], i| case_of(boots, i).and_then(|r| r.rc);
        // Alone, the crashed boot's case 2 counts for nothing, and case 1's failure stands.
        let alone = [first];
        assert_eq!(rc(&alone, 0), Some(0));
        assert_eq!(rc(&alone, 1), Some(1));
        assert_eq!(rc(&alone, 2), None);
        let [first] = alone;
        let second = boot(
            2,
            &[
                "MCPG-BEGIN 2",
                "MCPG-END 2 rc=0 t0=1 t1=2 limit=60",
                "MCPG-BEGIN 3",
                "MCPG-END 3 rc=0 t0=2 t1=3 limit=60",
            ],
            None,
        );
        let both = [first, second];
        assert_eq!(
            rc(&both, 1),
            Some(1),
            "a case that failed on its own stays failed"
        );
        assert_eq!(rc(&both, 2), Some(0));
        assert_eq!(rc(&both, 3), Some(0));
        assert_eq!(rc(&both, 4), None);
    }
}
