//! The script the guest runs after switching into this machine's root: it mounts what a real
//! host has (cgroup2 with its controllers enabled, bpffs, tracefs, debugfs, securityfs, fresh
//! tmpfs over /tmp, /run, mcp-guard's state dir and podman's storage so nothing of the host's
//! state leaks in),
//! runs each case with a time limit and prints markers the host parses (report.rs).

use std::path::{Path, PathBuf};

/// One command for the guest to run.
pub(super) struct GuestCase {
    pub index: usize,
    pub dir: PathBuf,
    pub argv: Vec<String>,
    pub timeout_s: u32,
}

/// The directories the guest mounts a fresh tmpfs over (see the prelude): whatever the host has
/// below them is out of the guest's sight, a checkout included.
pub(super) const HIDDEN_BY_TMPFS: &[&str] = &[
    "/tmp",
    "/run",
    "/var/lib/mcp-guard",
    "/var/lib/containers",
    "/dev/shm",
];

const PRELUDE: &str = r#"# Written by `cargo xtask kernels`; run by the guest as PID 1 (busybox sh).
export PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin
export HOME=/root LANG=C.UTF-8 TERM=dumb NO_COLOR=1 RUST_BACKTRACE=0
export MCPG_ROOT_TAG=@TAG@
bb=/bin/busybox
uptime_s() { $bb cut -d' ' -f1 /proc/uptime; }
setup_fail() { echo "MCPG-SETUP-FAIL $*"; }
mnt() { $bb mount "$@" || setup_fail "mount $*"; }
mnt -t tmpfs -o mode=1777 tmpfs /tmp
mnt -t tmpfs -o mode=0755 tmpfs /run
$bb mkdir -p /var/lib/mcp-guard /dev/pts /dev/shm
mnt -t tmpfs -o mode=0700 tmpfs /var/lib/mcp-guard
# Podman's storage (the Unix-socket tests start its API service): the host's records name the
# overlay driver, which podman refuses over the guest's overlay root, and a fresh one on tmpfs
# works.
$bb mkdir -p /var/lib/containers
mnt -t tmpfs -o mode=0700 tmpfs /var/lib/containers
mnt -t devpts -o gid=5,mode=0620,ptmxmode=0666 devpts /dev/pts
mnt -t tmpfs -o mode=1777 tmpfs /dev/shm
mnt -t cgroup2 cgroup2 /sys/fs/cgroup
# As systemd does on a real host: every controller available to child cgroups.
for c in $($bb cat /sys/fs/cgroup/cgroup.controllers); do
    echo "+$c" > /sys/fs/cgroup/cgroup.subtree_control || setup_fail "enable cgroup controller $c"
done
mnt -t bpf bpf /sys/fs/bpf
mnt -t tracefs tracefs /sys/kernel/tracing
mnt -t debugfs debugfs /sys/kernel/debug
mnt -t securityfs securityfs /sys/kernel/security
$bb ip link set lo up || setup_fail "loopback up"
$bb hostname mcpg-guest
echo "MCPG-KERNEL $($bb uname -r) up=$(uptime_s)"
echo "MCPG-LSM $($bb cat /sys/kernel/security/lsm)"
# run_case INDEX TIMEOUT DIR ARGV...: the case's output, framed by markers with its exit status
# and start/end uptime (seconds).
run_case() {
    i=$1; limit=$2; dir=$3; shift 3
    echo "MCPG-BEGIN $i"
    t0=$(uptime_s)
    (cd "$dir" && exec $bb timeout -s KILL "$limit" "$@") < /dev/null 2>&1
    rc=$?
    echo ""
    echo "MCPG-END $i rc=$rc t0=$t0 t1=$(uptime_s) limit=$limit"
}
"#;

const EPILOGUE: &str = r#"echo "MCPG-DONE"
$bb sync
$bb poweroff -f
"#;

/// Single-quotes `s` for sh.
fn quote(s: &str) -> String {
    format!("'{}'", s.replace('\'', r"'\''"))
}

/// The script text; `env` are exported before the cases run.
pub(super) fn script(cases: &[GuestCase], env: &[(String, String)]) -> String {
    let mut out = PRELUDE.replace("@TAG@", super::initramfs::ROOT_TAG);
    for (k, v) in env {
        out.push_str(&format!("export {k}={}\n", quote(v)));
    }
    for c in cases {
        let argv: Vec<String> = c.argv.iter().map(|a| quote(a)).collect();
        out.push_str(&format!(
            "run_case {} {} {} {}\n",
            c.index,
            c.timeout_s,
            quote(&c.dir.to_string_lossy()),
            argv.join(" ")
        ));
    }
    out.push_str(EPILOGUE);
    out
}

/// The argv of a shell case.
pub(super) fn shell_argv(script: &str) -> Vec<String> {
    vec![
        "/bin/busybox".into(),
        "sh".into(),
        "-c".into(),
        script.into(),
    ]
}

/// The argv of one integration test, run alone, without colour.
pub(super) fn test_argv(executable: &Path, name: &str, extra: &[String]) -> Vec<String> {
    let mut argv = vec![
        executable.to_string_lossy().into_owned(),
        "--exact".into(),
        name.into(),
        "--color".into(),
        "never".into(),
    ];
    argv.extend(extra.iter().cloned());
    argv
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_hidden_directories_are_the_ones_the_prelude_mounts_tmpfs_over() {
        for dir in HIDDEN_BY_TMPFS {
            assert!(
                PRELUDE
                    .lines()
                    .any(|l| l.contains(" tmpfs ") && l.ends_with(&format!(" {dir}"))),
                "{dir}"
            );
        }
    }

    #[test]
    fn quotes_survive_the_shell() {
        assert_eq!(quote("a b"), "'a b'");
        assert_eq!(quote("it's"), r"'it'\''s'");
        let s = script(
            &[GuestCase {
                index: 3,
                dir: "/w/tests".into(),
                argv: vec!["/w/bin".into(), "x y".into()],
                timeout_s: 60,
            }],
            &[("CARGO_TARGET_DIR".into(), "/w/t".into())],
        );
        assert!(s.contains("export CARGO_TARGET_DIR='/w/t'\n"));
        assert!(s.contains("run_case 3 60 '/w/tests' '/w/bin' 'x y'\n"));
        assert!(s.ends_with("poweroff -f\n"));
    }
}
