//! `cargo xtask kernels`: mcp-guard's enforcement tests inside Debian's own kernels.
//!
//! Builds the binaries and test executables here, then for each kernel in the matrix
//! (matrix.rs) boots it under QEMU (software emulation) with this machine's root shared
//! read-only, runs doctor and the chosen tests inside, and judges each against the table.

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
    time::Duration,
};

use matrix::{Case, KERNELS, Kernel, Run};
use report::{GuestLog, Verdict};

use crate::{Result, root, run};

pub const USAGE: &str = "usage: cargo xtask kernels [--kernel SERIES]... [--case TEXT]... [--ci] [--refresh] [-- TEST ARGS]

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
pub fn command(args: &[String]) -> Result {
    if matches!(args.first().map(String::as_str), Some("-h" | "--help")) {
        println!("{USAGE}");
        return Ok(());
    }
    matrix_run(parse(args)?)
}

/// The matrix step of `cargo xtask test`: the CI kernels and cases (`--ci`).
pub fn ci() -> Result {
    matrix_run(parse(&["--ci".to_string()])?)
}

fn matrix_run(opts: Options) -> Result {
    preflight()?;
    let tests = build(&opts.cases)?;
    let target = target_dir();
    let mut needed = vec![root(), target.clone(), root().join(".venv/bin/python")];
    needed.push(root().join("tests/node_modules"));
    needed.extend(tests.values().map(|t| t.path.clone()));
    same_filesystem_as_root(&needed)?;
    let mut fetcher = fetch::Fetcher::new(opts.refresh)?;
    let mut results = Vec::new();
    for kernel in &opts.kernels {
        let files = fetcher.kernel(kernel)?;
        results.push(run_kernel(kernel, files, &opts, &tests, &target)?);
    }
    print_verdict(&opts, &results)
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
    std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| root().join("target"))
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
                .map(Path::to_path_buf)
                .unwrap_or_else(|| root().join("tests"));
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

/// One kernel's boot and what it showed.
struct KernelRun {
    kernel: &'static Kernel,
    files: fetch::KernelFiles,
    log: GuestLog,
    elapsed: Duration,
    timed_out: bool,
    serial_log: PathBuf,
}

fn run_kernel(
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

    let mcp_guard = target.join("debug/mcp-guard");
    let mut guest_cases = Vec::new();
    for (index, case) in opts.cases.iter().enumerate() {
        let (dir, argv) = match case.run {
            Run::McpGuard(args) => {
                let mut argv = vec![mcp_guard.to_string_lossy().into_owned()];
                argv.extend(args.iter().map(|a| a.to_string()));
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
        guest_cases.push(guest::GuestCase {
            index,
            dir,
            argv,
            timeout_s: case.timeout_s,
        });
    }
    let mut env = Vec::new();
    if let Some(t) = std::env::var_os("CARGO_TARGET_DIR") {
        env.push(("CARGO_TARGET_DIR".into(), t.to_string_lossy().into_owned()));
    }
    let script = dir.join("run.sh");
    if script.to_string_lossy().contains(char::is_whitespace) {
        // The path travels on the kernel command line, which splits at whitespace.
        return Err(format!(
            "{}: the target dir's path has whitespace; the guest cannot be told it",
            script.display()
        ));
    }
    fs::write(&script, guest::script(&guest_cases, &env))
        .map_err(|e| format!("{}: {e}", script.display()))?;

    let limit: u64 = opts.cases.iter().map(|c| u64::from(c.timeout_s)).sum();
    let timeout = Duration::from_secs((limit + BOOT_MARGIN_S).min(RUN_CAP_S));
    let serial_log = dir.join("serial.log");
    println!(
        "==> kernel {} ({}): booting {} under TCG, {} case(s), at most {} s; serial log {}",
        kernel.series,
        files.release,
        files.package,
        opts.cases.len(),
        timeout.as_secs(),
        serial_log.display()
    );
    let mut log = GuestLog::default();
    let series = kernel.series;
    let mut on_line = |raw: &str| {
        let line = report::strip_ansi(raw);
        let before = log.alarms.len();
        log.line(&line);
        if log.alarms.len() > before {
            println!("    [{series}] !! {line}");
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
    };
    let outcome = vm::boot(
        &vm::Boot {
            vmlinuz: &files.vmlinuz,
            initramfs: &initrd,
            run_script: &script,
            workdir: &dir,
            serial_log: &serial_log,
            timeout,
        },
        &mut on_line,
    )?;
    Ok(KernelRun {
        kernel,
        files,
        log,
        elapsed: outcome.elapsed,
        timed_out: outcome.timed_out,
        serial_log,
    })
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
    println!("\n==> kernel matrix: QEMU TCG, 2 vCPUs; time = boot + run + poweroff");
    for r in runs {
        let abi = r
            .log
            .landlock_abi
            .map_or("?".to_string(), |a| a.to_string());
        let booted = r
            .log
            .booted_s
            .map_or("?".to_string(), |s| format!("{s:.1}"));
        println!(
            "  {:<5} {} {} (release {}, {}), landlock ABI {abi}: {:.0} s (userspace after {booted} s){}",
            r.kernel.series,
            r.files.package,
            r.files.version,
            r.log.release.as_deref().unwrap_or("?"),
            r.kernel.suite,
            r.elapsed.as_secs_f64(),
            if r.timed_out { ", TIMED OUT" } else { "" }
        );
        if let Some(abi) = r.log.landlock_abi
            && abi != r.kernel.landlock_abi
        {
            failures.push(format!(
                "{}: doctor saw landlock ABI {abi}, the matrix says {}",
                r.kernel.series, r.kernel.landlock_abi
            ));
        }
        if r.timed_out {
            failures.push(format!(
                "{}: the guest did not power off within {} s; serial log {}",
                r.kernel.series,
                r.elapsed.as_secs(),
                r.serial_log.display()
            ));
        } else if !r.log.done {
            failures.push(format!(
                "{}: the guest stopped before the last case; serial log {}",
                r.kernel.series,
                r.serial_log.display()
            ));
        }
        for alarm in &r.log.alarms {
            notes.push(format!("{}: {alarm}", r.kernel.series));
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
            let run = r.log.runs.get(&index);
            let verdict = report::judge(case, r.kernel.series, run);
            let secs = run
                .and_then(|x| x.secs)
                .map_or(String::new(), |s| format!(" {s:.1}s"));
            print!(" {:<22}", format!("{}{secs}", short(&verdict)));
            let at = format!("{} · {}", r.kernel.series, case.id);
            match verdict {
                Verdict::Pass => {}
                Verdict::Refused(p) => {
                    notes.push(format!("{at}: refused with exit 77 naming {p:?}"))
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
    if failures.is_empty() {
        println!("\n==> kernel matrix: every case did what the matrix expects");
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
