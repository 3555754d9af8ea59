//! Benchmark (ignored by default): how long `mcp-guard exec -- /bin/true` takes from start to
//! exit, median of 50 runs each, in one run: the plain command, bubblewrap's sandbox of it (the
//! yardstick issue 23 sets: through the agent within 2x of it, standalone within 10x), exec
//! standalone (with a slot of verified eBPF programs an earlier exec left, and with a fresh
//! pool, where it verifies them itself), exec through the agent as root and as
//! an unprivileged user (the agent's pinned programs). Prints the medians and ratios.
//!
//! `cargo test -p mcp-guard-tests --test startup_bench -- --ignored --nocapture`
//! (debug build; `MCP_GUARD_BIN=/path/to/mcp-guard` measures that binary, which the agent then
//! runs as well).

use std::{
    path::PathBuf,
    process::{Command, Stdio},
    time::{Duration, Instant},
};

use mcp_guard_tests::{
    agent::{Agent, NOBODY, Options, PinDir, Public},
    mcp_guard, require_root, scratch_root,
};
use mcp_guard_tests::{bench::record, median};

const RUNS: usize = 50;

/// bubblewrap, the yardstick.
const BWRAP: &str = "/usr/bin/bwrap";

fn timed(mut cmd: impl FnMut() -> Command) -> Duration {
    // One warm-up run (page cache, first eBPF load), then the samples.
    let run = |cmd: &mut Command| {
        let start = Instant::now();
        let out = cmd.stdin(Stdio::null()).output().expect("run");
        assert!(out.status.success(), "{cmd:?}: {out:?}");
        start.elapsed()
    };
    run(&mut cmd());
    median((0..RUNS).map(|_| run(&mut cmd())).collect())
}

#[test]
#[ignore = "benchmark: run with --ignored --nocapture, as root"]
fn exec_startup_through_the_agent_vs_standalone_vs_plain() {
    require_root();
    let bin = std::env::var_os("MCP_GUARD_BIN").map_or_else(mcp_guard, PathBuf::from);
    let dir = scratch_root()
        .join("mcp-guard-tests")
        .join(format!("startup-bench-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(dir.join("policies")).expect("dir");
    let policy = "name = \"bench\"\n[filesystem]\nread = [\"/usr\", \"/bin\", \"/lib\", \
                  \"/lib64\", \"/etc\"]\nexec = [\"/usr\", \"/bin\", \"/lib\", \"/lib64\"]\n";
    std::fs::write(dir.join("policies/bench.toml"), policy).expect("policy");
    let public = Public::new("startup");
    let guard = public.copy(&bin, "mcp-guard");
    let pins = PinDir::new("startup");
    // The agent runs the measured binary too: a session is its worker's exec of it.
    let agent = Agent::start_with(
        &dir,
        &pins,
        "",
        &Options {
            bin: Some(bin.clone()),
            ..Options::default()
        },
    );
    let state = dir.join("standalone-state");

    let plain = timed(|| Command::new("/bin/true"));
    assert!(
        std::path::Path::new(BWRAP).exists(),
        "{BWRAP} is missing: `cargo xtask setup` installs bubblewrap (apt-get install bubblewrap)"
    );
    let bwrap = timed(|| {
        let mut c = Command::new(BWRAP);
        c.args(["--ro-bind", "/", "/", "--dev", "/dev", "--proc", "/proc"])
            .args(["--tmpfs", "/tmp", "--unshare-all", "--die-with-parent"])
            .arg("/bin/true");
        c
    });
    // The standalone pool of verified programs (README: a standalone exec's verified
    // programs): warm, the programs an earlier exec verified; cold, a fresh pool each run, so
    // each exec verifies them as the first exec on a host does.
    let pool = PinDir::new("startup-standalone");
    let standalone_cmd = |pool: &std::path::Path| {
        let mut c = Command::new(&guard);
        c.env("MCP_GUARD_STANDALONE_BPF_DIR", pool);
        c.arg("--state-dir")
            .arg(&state)
            .arg("--policy-dir")
            .arg(dir.join("policies"))
            .args(["exec", "--standalone", "--passthrough", "--policy", "bench"])
            .args(["--", "/bin/true"]);
        c
    };
    let cold = timed(|| {
        let _ = std::fs::remove_dir_all(&pool.0);
        standalone_cmd(&pool.0)
    });
    let standalone = timed(|| standalone_cmd(&pool.0));
    let args = ["--passthrough", "--policy", "bench", "--", "/bin/true"];
    let root = timed(|| agent.exec(&guard, 0, &args));
    let nobody = timed(|| agent.exec(&guard, NOBODY, &args));
    let ms = |d: Duration| d.as_secs_f64() * 1000.0;
    println!(
        "exec start-up to exit, median of {RUNS} ({}):",
        bin.display()
    );
    println!("  plain /bin/true               {:8.2} ms", ms(plain));
    println!(
        "  bubblewrap                    {:8.2} ms  ({:.0}x plain)",
        ms(bwrap),
        ms(bwrap) / ms(plain)
    );
    println!(
        "  exec standalone               {:8.2} ms  ({:.1}x bubblewrap)",
        ms(standalone),
        ms(standalone) / ms(bwrap)
    );
    println!(
        "  exec standalone, cold slot    {:8.2} ms  ({:.1}x bubblewrap)",
        ms(cold),
        ms(cold) / ms(bwrap)
    );
    println!(
        "  exec through the agent (root) {:8.2} ms  ({:.1}x bubblewrap, {:.2}x standalone)",
        ms(root),
        ms(root) / ms(bwrap),
        ms(root) / ms(standalone)
    );
    println!(
        "  exec through the agent (user) {:8.2} ms  ({:.1}x bubblewrap, {:.2}x standalone)",
        ms(nobody),
        ms(nobody) / ms(bwrap),
        ms(nobody) / ms(standalone)
    );
    for (name, d) in [
        ("bubblewrap", bwrap),
        ("exec standalone", standalone),
        ("exec standalone, cold slot", cold),
        ("exec through the agent (root)", root),
        ("exec through the agent (user)", nobody),
    ] {
        record("startup", name, ms(d), "ms");
        record(
            "startup",
            &format!("{name}/bubblewrap"),
            ms(d) / ms(bwrap),
            "ratio",
        );
    }
    drop(agent);
    let _ = std::fs::remove_dir_all(&dir);
}
