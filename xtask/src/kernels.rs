//! `cargo xtask kernels`: mcp-guard's enforcement tests inside Debian's own kernels.
//!
//! Builds the binaries and test executables here, then for each kernel in the matrix
//! (matrix.rs) boots it under QEMU (software emulation) with this machine's root shared
//! read-only, runs doctor and the chosen tests inside, and judges each against the table.

mod boots;
mod fetch;
mod guest;
mod initramfs;
pub(crate) mod json;
mod matrix;
mod report;
mod vm;

use std::{
    collections::BTreeMap,
    fs,
    path::{Path, PathBuf},
    process::{Command, Stdio},
};

use boots::KernelRun;
use matrix::{Case, KERNELS, Kernel, Run};
use report::Verdict;

use crate::{Result, root, run};

pub(crate) const USAGE: &str = "usage: cargo xtask kernels [--kernel SERIES]... [--case TEXT]... [--ci] [--refresh] [-- TEST ARGS]

  --kernel SERIES  boot only this series (repeatable): 6.1, 6.12, 7.3 (default: all)
  --case TEXT      run only the cases whose name contains TEXT (repeatable)
  --ci             only the kernels and cases `cargo xtask test` runs
  --refresh        look for a newer build of each series in the archive (else the cached one)
  -- TEST ARGS     passed to every test executable (e.g. --nocapture)

Needs root, qemu-system-x86, busybox-static and Debian's archive (cargo xtask setup).";

/// Seconds to boot, set up and power off, on top of the cases' own limits.
const BOOT_MARGIN_S: u64 = 180;

/// Hard limit on one kernel's boot-run-poweroff, whatever the cases' limits add up to, so a
/// hung guest fails CI with a clear message well inside its job limit.
const RUN_CAP_S: u64 = 2400;

/// The static busybox from Debian's busybox-static: the initramfs shell, and the guest's PID 1
/// after the switch (it is on the shared root too).
const BUSYBOX: &str = "/bin/busybox";

struct Options {
    kernels: Vec<&'static Kernel>,
    cases: Vec<&'static Case>,
    refresh: bool,
    test_args: Vec<String>,
}

fn parse(args: &[String]) -> Result<Options> {
    let mut series = Vec::new();
    let mut filters = Vec::new();
    let (mut ci, mut refresh) = (false, false);
    let mut test_args = Vec::new();
    let mut it = args.iter();
    while let Some(arg) = it.next() {
        match arg.as_str() {
            "--kernel" => series.push(it.next().ok_or("--kernel needs a series")?.clone()),
            "--case" => filters.push(it.next().ok_or("--case needs a text")?.clone()),
            "--ci" => ci = true,
            "--refresh" => refresh = true,
            "--" => {
                test_args = it.by_ref().cloned().collect();
            }
            "-h" | "--help" => return Err(USAGE.into()),
            other => return Err(format!("unknown argument {other:?}\n{USAGE}")),
        }
    }
    let mut kernels = Vec::new();
    for s in &series {
        let k = KERNELS.iter().find(|k| k.series == s).ok_or_else(|| {
            let known: Vec<&str> = KERNELS.iter().map(|k| k.series).collect();
            format!(
                "no kernel {s:?} in the matrix (known: {})",
                known.join(", ")
            )
        })?;
        kernels.push(k);
    }
    if kernels.is_empty() {
        kernels = KERNELS.iter().filter(|k| !ci || k.in_ci).collect();
    }
    let cases: Vec<&Case> = matrix::all_cases()
        .filter(|c| !ci || c.in_ci)
        .filter(|c| filters.is_empty() || filters.iter().any(|f| c.id.contains(f.as_str())))
        .collect();
    if cases.is_empty() {
        return Err(format!("no case matches {filters:?}"));
    }
    Ok(Options {
        kernels,
        cases,
        refresh,
        test_args,
    })
}

/// `cargo xtask kernels ARGS`.
pub(crate) fn command(args: &[String]) -> Result {
    if matches!(args.first().map(String::as_str), Some("-h" | "--help")) {
        println!("{USAGE}");
        return Ok(());
    }
    matrix_run(&parse(args)?)
}

/// The matrix step of `cargo xtask test`: the CI kernels and cases (`--ci`).
pub(crate) fn ci() -> Result {
    matrix_run(&parse(&["--ci".to_string()])?)
}

fn matrix_run(opts: &Options) -> Result {
    preflight()?;
    let target = target_dir();
    // The checkout first: a guest that cannot see it makes the build below wasted work.
    same_filesystem_as_root(&[root(), target.clone()])?;
    let tests = build(&opts.cases)?;
    let mut needed = vec![root(), target.clone(), root().join(".venv/bin/python")];
    needed.push(root().join("tests/node_modules"));
    needed.extend(tests.values().map(|t| t.path.clone()));
    same_filesystem_as_root(&needed)?;
    let mut fetcher = fetch::Fetcher::new(opts.refresh)?;
    let mut results = Vec::new();
    for kernel in &opts.kernels {
        let files = fetcher.kernel(kernel)?;
        results.push(boots::run_kernel(kernel, files, opts, &tests, &target)?);
    }
    print_verdict(opts, &results)
}

/// Runs `program args` with its output captured; fails with its stderr.
pub(crate) fn run_quiet(program: &str, args: &[&str]) -> Result {
    let out = Command::new(program)
        .args(args)
        .output()
        .map_err(|e| format!("cannot start {program}: {e}"))?;
    if out.status.success() {
        Ok(())
    } else {
        Err(format!(
            "`{program} {}` failed: {}",
            args.join(" "),
            String::from_utf8_lossy(&out.stderr).trim()
        ))
    }
}

fn preflight() -> Result {
    let euid = Command::new("id")
        .arg("-u")
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string())
        .unwrap_or_default();
    if euid != "0" {
        return Err("cargo xtask kernels needs root (virtiofsd, mounts, the tests)".into());
    }
    let mut missing = Vec::new();
    for (what, path) in [
        ("qemu-system-x86", format!("/usr/bin/{}", vm::QEMU)),
        ("qemu-system-common (virtiofsd)", vm::VIRTIOFSD.to_string()),
        ("busybox-static", BUSYBOX.to_string()),
        ("dpkg (dpkg-deb)", "/usr/bin/dpkg-deb".to_string()),
        ("apt (apt-get)", "/usr/bin/apt-get".to_string()),
        ("util-linux (unshare)", "/usr/bin/unshare".to_string()),
    ] {
        if !Path::new(&path).exists() {
            missing.push(format!("{path} (Debian package {what})"));
        }
    }
    if missing.is_empty() {
        Ok(())
    } else {
        Err(format!(
            "missing: {}\n  run `cargo xtask setup`",
            missing.join(", ")
        ))
    }
}

/// The guest sees this machine's `/` filesystem only (a non-recursive read-only bind: a
/// recursive one cannot be made read-only with this util-linux): refuse clearly when something
/// the tests run from lives on another mount.
fn same_filesystem_as_root(paths: &[PathBuf]) -> Result {
    use std::os::unix::fs::MetadataExt;
    let dev = |p: &Path| {
        fs::metadata(p)
            .map(|m| m.dev())
            .map_err(|e| format!("{}: {e} (run `cargo xtask setup`)", p.display()))
    };
    let root_dev = dev(Path::new("/"))?;
    for p in paths {
        let real = fs::canonicalize(p).map_err(|e| format!("{}: {e}", p.display()))?;
        if let Some(hidden) = guest::HIDDEN_BY_TMPFS.iter().find(|d| real.starts_with(d)) {
            return Err(format!(
                "{} is below {hidden}, which the guest covers with a fresh tmpfs: put the \
                 checkout and its target dir elsewhere on /",
                real.display()
            ));
        }
        if dev(&real)? != root_dev {
            return Err(format!(
                "{} is on another filesystem than /: the guest sees only the / filesystem \
                 (shared read-only, without submounts); put the checkout and its target dir on /",
                real.display()
            ));
        }
    }
    Ok(())
}

fn target_dir() -> PathBuf {
    std::env::var_os("CARGO_TARGET_DIR").map_or_else(|| root().join("target"), PathBuf::from)
}

/// A test executable and the directory cargo runs it in (its package's).
struct TestExe {
    path: PathBuf,
    dir: PathBuf,
}

/// Builds the workspace binaries and the test executables the cases need; returns them by
/// target name.
fn build(cases: &[&Case]) -> Result<BTreeMap<String, TestExe>> {
    run("build", "cargo", &["build", "--workspace", "--bins"])?;
    let mut targets: Vec<&str> = cases
        .iter()
        .filter_map(|c| match c.run {
            Run::Test { target, .. } => Some(target),
            Run::McpGuard(_) | Run::Shell(_) => None,
        })
        .collect();
    targets.sort_unstable();
    targets.dedup();
    if targets.is_empty() {
        return Ok(BTreeMap::new());
    }
    let mut args = vec![
        "test",
        "-p",
        "mcp-guard-tests",
        "--no-run",
        "--message-format=json",
    ];
    for t in &targets {
        args.extend(["--test", t]);
    }
    println!("==> test executables: cargo {}", args.join(" "));
    let out = Command::new("cargo")
        .args(&args)
        .current_dir(root())
        .stderr(Stdio::inherit())
        .output()
        .map_err(|e| format!("cannot start cargo: {e}"))?;
    if !out.status.success() {
        return Err(format!(
            "building the test executables failed ({})",
            out.status
        ));
    }
    let mut exes = BTreeMap::new();
    for line in String::from_utf8_lossy(&out.stdout).lines() {
        let Ok(msg) = json::parse(line) else { continue };
        let (Some(target), Some(exe)) = (
            msg.get("target"),
            msg.get("executable").and_then(json::Value::as_str),
        ) else {
            continue;
        };
        let is_test = msg.get("reason").and_then(json::Value::as_str) == Some("compiler-artifact")
            && target
                .get("kind")
                .is_some_and(|k| k.as_array().contains(&json::Value::String("test".into())));
        let Some(name) = target.get("name").and_then(json::Value::as_str) else {
            continue;
        };
        let manifest = msg.get("manifest_path").and_then(json::Value::as_str);
        if is_test && targets.contains(&name) {
            let dir = manifest
                .and_then(|m| Path::new(m).parent())
                .map_or_else(|| root().join("tests"), Path::to_path_buf);
            exes.insert(
                name.to_string(),
                TestExe {
                    path: exe.into(),
                    dir,
                },
            );
        }
    }
    for t in &targets {
        if !exes.contains_key(*t) {
            return Err(format!("cargo reported no test executable for --test {t}"));
        }
    }
    Ok(exes)
}

fn short(v: &Verdict) -> String {
    match v {
        Verdict::Pass => "pass".into(),
        Verdict::Refused(_) => "refuses (77)".into(),
        Verdict::KnownGap(_) => "known gap".into(),
        Verdict::Wrong(..) => "FAIL".into(),
    }
}

fn print_verdict(opts: &Options, runs: &[KernelRun]) -> Result {
    let mut failures = Vec::new();
    let mut notes = Vec::new();
    let mut crashes = Vec::new();
    println!(
        "\n==> kernel matrix: QEMU TCG, {}; time = boot + run + poweroff",
        vm::MACHINE
    );
    for r in runs {
        let abi = r
            .first_of(|l| l.landlock_abi)
            .map_or("?".to_string(), |a| a.to_string());
        let booted = r
            .boots
            .first()
            .and_then(|b| b.log.booted_s)
            .map_or("?".to_string(), |s| format!("{s:.1}"));
        let last = r.boots.last();
        println!(
            "  {:<5} {} {} (release {}, {}), landlock ABI {abi}: {:.0} s{} (userspace after {booted} s){}",
            r.kernel.series,
            r.files.package,
            r.files.version,
            r.first_of(|l| l.release.clone()).as_deref().unwrap_or("?"),
            r.kernel.suite,
            r.elapsed().as_secs_f64(),
            if r.boots.len() > 1 {
                format!(" in {} boots (the first CRASHED)", r.boots.len())
            } else {
                String::new()
            },
            if last.is_some_and(|b| b.timed_out) {
                ", TIMED OUT"
            } else {
                ""
            }
        );
        if let Some(abi) = r.first_of(|l| l.landlock_abi)
            && abi != r.kernel.landlock_abi
        {
            failures.push(format!(
                "{}: doctor saw landlock ABI {abi}, the matrix says {}",
                r.kernel.series, r.kernel.landlock_abi
            ));
        }
        for (n, boot) in r.boots.iter().enumerate() {
            if let Some(crash) = &boot.crashed {
                let during = opts
                    .cases
                    .get(crash.from)
                    .map_or("after the last case".to_string(), |c| {
                        format!("from {:?} on", c.id)
                    });
                let rerun = if n + 1 < r.boots.len() {
                    "rerun in a fresh boot"
                } else {
                    "not rerun (the same case crashed twice, or this was the last boot)"
                };
                let mut text = format!(
                    "{}, boot {}: the guest's kernel crashed; the cases {during} {rerun}; serial log {}",
                    r.kernel.series,
                    n + 1,
                    boot.serial_log.display()
                );
                for l in crash.lines.iter().take(12) {
                    text.push_str(&format!("\n      | {l}"));
                }
                crashes.push(text);
            }
        }
        if let Some(boot) = last {
            if boot.crashed.is_some() {
                failures.push(format!(
                    "{}: the guest's kernel crashed{} (see above)",
                    r.kernel.series,
                    if r.boots.len() > 1 {
                        " again in its last boot"
                    } else {
                        ""
                    }
                ));
            } else if boot.timed_out {
                failures.push(format!(
                    "{}: the guest did not power off within {} s; serial log {}",
                    r.kernel.series,
                    boot.elapsed.as_secs(),
                    boot.serial_log.display()
                ));
            } else if !boot.log.done {
                failures.push(format!(
                    "{}: the guest stopped before the last case; serial log {}",
                    r.kernel.series,
                    boot.serial_log.display()
                ));
            }
        }
        for boot in &r.boots {
            for alarm in &boot.log.alarms {
                notes.push(format!("{}: {alarm}", r.kernel.series));
            }
        }
    }
    print!("\n  {:<34}", "case");
    for r in runs {
        print!(" {:<22}", r.kernel.series);
    }
    println!();
    for (index, case) in opts.cases.iter().enumerate() {
        print!("  {:<34}", case.id);
        for r in runs {
            let run = r.case(index);
            let verdict = report::judge(case, r.kernel.series, run);
            let secs = run
                .and_then(|x| x.secs)
                .map_or(String::new(), |s| format!(" {s:.1}s"));
            print!(" {:<22}", format!("{}{secs}", short(&verdict)));
            let at = format!("{} · {}", r.kernel.series, case.id);
            match verdict {
                Verdict::Pass => {}
                Verdict::Refused(p) => {
                    notes.push(format!("{at}: refused with exit 77 naming {p:?}"));
                }
                Verdict::KnownGap(g) => notes.push(format!("{at}: known gap, failed with {g:?}")),
                Verdict::Wrong(why, lines) => {
                    let mut text = format!("{at}: {why}");
                    for l in lines {
                        text.push_str(&format!("\n      | {l}"));
                    }
                    failures.push(text);
                }
            }
        }
        println!();
    }
    if !notes.is_empty() {
        println!("\n  expected on these kernels today (xtask/src/kernels/matrix.rs):");
        for n in &notes {
            println!("    {n}");
        }
    }
    if !crashes.is_empty() {
        println!(
            "\n  !! GUEST KERNEL CRASHES (not a test's failure; each crashed boot's spoiled cases ran again):"
        );
        for c in &crashes {
            println!("    !! {c}");
        }
    }
    if failures.is_empty() {
        println!(
            "\n==> kernel matrix: every case did what the matrix expects{}",
            if crashes.is_empty() {
                ""
            } else {
                ", after a rerun for a guest kernel crash (above)"
            }
        );
        Ok(())
    } else {
        println!("\n  not as the matrix expects:");
        for f in &failures {
            println!("    {f}");
        }
        Err(format!(
            "kernel matrix: {} case(s) or boot(s) not as expected (serial logs under {})",
            failures.len(),
            target_dir().join("kernels").display()
        ))
    }
}
