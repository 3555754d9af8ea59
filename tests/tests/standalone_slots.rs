//! Standalone `exec` shares verified eBPF programs with later execs through slots pinned on
//! bpffs (`MCP_GUARD_STANDALONE_BPF_DIR`). Each test has its own pool below a sticky,
//! world-writable directory of its own, as bpffs is when mounted without a mode (and as
//! /sys/fs/bpf is on many hosts). Needs root.

mod kernel_common;

use std::{
    io::{BufRead as _, BufReader, Write as _},
    os::unix::{fs::PermissionsExt as _, process::CommandExt as _},
    path::{Path, PathBuf},
    process::{Child, Command, Output, Stdio},
};

use kernel_common::fixture_bin;
use mcp_guard_tests::{
    agent::NOBODY, describe, fresh_dir, mcp_guard, net::port_on_two_addresses, require_root,
};

/// A pool's parent on bpffs (root's, mode 1777) and the test's scratch tree; both removed on
/// drop.
struct Pool {
    parent: PathBuf,
    scratch: PathBuf,
    policy: PathBuf,
    a: u16,
}

impl Pool {
    fn new(tag: &str) -> Self {
        let parent = PathBuf::from(format!(
            "/sys/fs/bpf/mcp-guard-test-slots-{tag}-{}",
            std::process::id()
        ));
        let _ = std::fs::remove_dir_all(&parent);
        std::fs::create_dir(&parent).expect("make the pool's parent on bpffs");
        std::fs::set_permissions(&parent, std::fs::Permissions::from_mode(0o1777))
            .expect("chmod 1777");
        let scratch = fresh_dir("standalone-slots", tag);
        let a = port_on_two_addresses();
        let bindir = fixture_bin("netprobe");
        let bindir = bindir.parent().expect("bin dir").display();
        let policy = scratch.join("policy.toml");
        std::fs::write(
            &policy,
            format!(
                "name = \"slots\"\n[filesystem]\nread = [\"/usr\", \"/lib\", \"/lib64\", \
                 \"/bin\", \"/etc/ld.so.cache\", \"{bindir}\"]\nexec = [\"/usr\", \"/lib\", \
                 \"/lib64\", \"/bin\", \"{bindir}\"]\n[network]\nallow = [\"127.0.0.1:{a}\"]\n"
            ),
        )
        .expect("write policy");
        Pool {
            parent,
            scratch,
            policy,
            a,
        }
    }

    /// The pool directory standalone execs are pointed at.
    fn base(&self) -> PathBuf {
        self.parent.join("pool")
    }

    /// `mcp-guard exec --standalone` of `args` with this pool.
    fn exec(&self, args: &[&str]) -> Command {
        let mut cmd = Command::new(mcp_guard());
        cmd.env("MCP_GUARD_STANDALONE_BPF_DIR", self.base())
            .arg("--state-dir")
            .arg(self.scratch.join("state"))
            .args(["exec", "--standalone", "--passthrough", "--policy"])
            .arg(&self.policy)
            .arg("--")
            .args(args);
        cmd
    }

    /// Runs netprobe in a session: 127.0.0.1:A is allowed, 127.0.0.2:A is not (landlock lets
    /// port A through, so a refusal there is the eBPF program's). Its result lines.
    fn probe(&self) -> (String, Output) {
        let netprobe = fixture_bin("netprobe");
        let out = self
            .exec(&[
                netprobe.to_str().expect("utf-8"),
                &format!("tcp:127.0.0.1:{}", self.a),
                &format!("tcp:127.0.0.2:{}", self.a),
            ])
            .stdin(Stdio::null())
            .output()
            .expect("run mcp-guard exec");
        (String::from_utf8_lossy(&out.stdout).into_owned(), out)
    }

    /// A session that stays up (its slot locked) until the returned child's stdin closes.
    fn hold(&self) -> Child {
        let mut child = self
            .exec(&["/bin/sh", "-c", "echo up; read x"])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .expect("spawn exec");
        let mut line = String::new();
        BufReader::new(child.stdout.as_mut().expect("stdout"))
            .read_line(&mut line)
            .expect("read");
        assert_eq!(line.trim(), "up", "the held session did not start");
        child
    }

    /// The build directories in the pool.
    fn builds(&self) -> Vec<PathBuf> {
        let mut out: Vec<PathBuf> = std::fs::read_dir(self.base())
            .into_iter()
            .flatten()
            .flatten()
            .map(|e| e.path())
            .collect();
        out.sort();
        out
    }
}

impl Drop for Pool {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.parent);
        let _ = std::fs::remove_dir_all(&self.scratch);
    }
}

/// Runs `script` with `sh` as the unprivileged user `nobody`.
fn as_nobody(script: &str) -> Output {
    Command::new("/bin/sh")
        .args(["-c", script])
        .uid(NOBODY)
        .gid(NOBODY)
        .output()
        .expect("run sh as nobody")
}

fn denied() -> String {
    format!("ok\nerrno {}\n", libc::EPERM)
}

/// The id the kernel gave the program pinned at `path`.
fn program_id(path: &Path) -> u32 {
    aya::programs::ProgramInfo::from_pin(path)
        .unwrap_or_else(|e| panic!("{}: {e}", path.display()))
        .id()
}

#[test]
fn a_later_exec_reuses_the_verified_programs_and_still_enforces() {
    require_root();
    let pool = Pool::new("reuse");
    let (first, out) = pool.probe();
    assert_eq!(first, denied(), "{}", describe(&out));
    let builds = pool.builds();
    assert_eq!(builds.len(), 1, "one build directory: {builds:?}");
    let prog = builds[0].join("slot-0/prog_connect4");
    let id = program_id(&prog);
    let (second, out) = pool.probe();
    assert_eq!(second, denied(), "{}", describe(&out));
    assert_eq!(
        program_id(&prog),
        id,
        "the second exec used the same verified program"
    );
    // Two sessions at once take two slots; both enforce.
    let mut held = pool.hold();
    let (third, out) = pool.probe();
    assert_eq!(third, denied(), "{}", describe(&out));
    assert!(builds[0].join("slot-1/ready").is_dir(), "a second slot");
    drop(held.stdin.take());
    let _ = held.wait();
}

#[test]
fn a_killed_exec_leaves_nothing_that_guards_or_spares_a_later_session() {
    require_root();
    let pool = Pool::new("killed");
    let mut held = pool.hold();
    let slot = pool.builds()[0].join("slot-0");
    let guarded = slot.join("maps/GUARDED");
    let entries = |path: &Path| {
        let data = aya::maps::MapData::from_pin(path).expect("open pinned GUARDED");
        let map: aya::maps::HashMap<_, u64, mcp_guard_ebpf::GuardConfig> =
            aya::maps::HashMap::try_from(aya::maps::Map::HashMap(data)).expect("hash map");
        map.keys().filter_map(Result::ok).collect::<Vec<u64>>()
    };
    assert_eq!(entries(&guarded).len(), 1, "the held session is guarded");
    held.kill().expect("SIGKILL the exec");
    let _ = held.wait();
    // Its flock went with it: the next exec takes slot-0 again, empties what the dead one left
    // and is guarded by its own rules.
    let (lines, out) = pool.probe();
    assert_eq!(lines, denied(), "{}", describe(&out));
    assert!(
        !slot.parent().expect("build").join("slot-1").exists(),
        "slot-0 was free again"
    );
    assert!(
        entries(&guarded).is_empty(),
        "the ended session removed its entries, and nothing of the killed one is left"
    );
}

#[test]
fn a_stale_or_incomplete_slot_is_replaced_not_trusted() {
    require_root();
    let pool = Pool::new("stale");
    let (lines, out) = pool.probe();
    assert_eq!(lines, denied(), "{}", describe(&out));
    let build = pool.builds()[0].clone();
    let slot = build.join("slot-0");
    // An exec killed while preparing the slot leaves it without `ready`; one of another build
    // leaves a directory of another name.
    std::fs::remove_dir(slot.join("ready")).expect("unmark the slot");
    let before = program_id(&slot.join("prog_connect4"));
    let other = pool.base().join("0000000000000000");
    std::os::unix::fs::DirBuilderExt::mode(&mut std::fs::DirBuilder::new(), 0o700)
        .create(&other)
        .expect("another build's directory");
    let (lines, out) = pool.probe();
    assert_eq!(lines, denied(), "{}", describe(&out));
    assert!(slot.join("ready").is_dir(), "the slot was prepared again");
    assert_ne!(
        program_id(&slot.join("prog_connect4")),
        before,
        "the incomplete slot's programs were not reused"
    );
    assert!(
        !other.exists(),
        "the other build's unused directory was removed"
    );
}

/// The attack: on a host where the pool's parent is world-writable (bpffs mounted without a
/// mode is 1777), a local user makes the pool directory and the build and slot directories
/// before root does. Owning the slot directories, the user cannot touch a pinned object but can
/// rename the pins: swapping two slots' programs makes an exec fill the maps of one slot while
/// the programs of the other judge its server, which then connects where its policy denies.
#[test]
fn a_user_who_made_the_pool_directory_cannot_unguard_a_later_session() {
    require_root();
    let pool = Pool::new("attack");
    // The build id is the embedded object's hash: anyone can read it from the binary; here it
    // is learnt from a pool of root's own.
    let trusted = Pool::new("attack-trusted");
    let (lines, out) = trusted.probe();
    assert_eq!(lines, denied(), "{}", describe(&out));
    let build = trusted.builds()[0]
        .file_name()
        .expect("build name")
        .to_string_lossy()
        .into_owned();
    let base = pool.base();
    let made = as_nobody(&format!(
        "umask 0 && mkdir -p {b}/{build}/slot-0 {b}/{build}/slot-1",
        b = base.display()
    ));
    assert!(made.status.success(), "{}", describe(&made));
    // Two sessions at once: slot-0 and slot-1 prepared (if root uses the user's directories).
    let mut held = pool.hold();
    let (lines, out) = pool.probe();
    assert_eq!(lines, denied(), "{}", describe(&out));
    drop(held.stdin.take());
    let _ = held.wait();
    let swapped = as_nobody(&format!(
        "cd {b}/{build} && for p in slot-0/prog_*; do n=${{p#slot-0/}}; \
         mv slot-0/$n x && mv slot-1/$n slot-0/$n && mv x slot-1/$n; done",
        b = base.display()
    ));
    let (lines, out) = pool.probe();
    assert_eq!(
        lines,
        denied(),
        "the server reached 127.0.0.2 (swap: {})\n{}",
        describe(&swapped),
        describe(&out)
    );
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("not sharing verified eBPF programs"),
        "exec says why it does not use the pool: {}",
        describe(&out)
    );
    let _ = std::io::stdout().flush();
}
