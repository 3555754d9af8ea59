//! The kernel matrix as data: which kernels boot, which tests run in each, and what each test
//! is expected to do on each kernel. This is the one table to edit when a kernel gains a
//! mechanism: turn its `Refuses`/`Fails` entry into nothing (must pass).

/// A Debian kernel series the matrix boots (the newest cloud-amd64 build of it).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct Kernel {
    /// `6.1` matches `linux-image-6.1.*-cloud-amd64`.
    pub series: &'static str,
    /// Where Debian ships it (for the report).
    pub suite: &'static str,
    /// The landlock ABI this series has; the run reports a mismatch with what doctor saw.
    pub landlock_abi: u32,
    /// Run by `cargo xtask test` (CI), not only by `cargo xtask kernels`.
    pub in_ci: bool,
}

pub(super) const KERNELS: &[Kernel] = &[
    Kernel {
        series: "6.1",
        suite: "bookworm",
        landlock_abi: 2,
        in_ci: true,
    },
    Kernel {
        series: "6.12",
        suite: "trixie-security",
        landlock_abi: 6,
        in_ci: true,
    },
    Kernel {
        series: "7.3",
        suite: "trixie-backports",
        landlock_abi: 11,
        in_ci: false,
    },
];

/// What a case must do on a kernel other than pass.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Expect {
    /// Enforcement is refused: the case fails, its output shows an `exec` that exited 77 and
    /// names this promise (a substring of mcp-guard's refusal message).
    Refuses(&'static str),
    /// A known gap on this kernel: the case fails and its output contains this text. Listed in
    /// the verdict as a gap; the run fails if the case passes (so the table gets updated).
    Fails(&'static str),
}

/// How a case runs inside the guest.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Run {
    /// `mcp-guard ARGS` from the workspace's target dir.
    McpGuard(&'static [&'static str]),
    /// A busybox shell script, run as root in the guest (`$MCPG_ROOT_TAG`: the virtiofs tag of
    /// this machine's root).
    Shell(&'static str),
    /// One test of an integration test binary of `tests/` (`--exact`).
    Test {
        target: &'static str,
        name: &'static str,
    },
}

/// One row of the matrix.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct Case {
    /// Short name in the verdict table.
    pub id: &'static str,
    pub run: Run,
    /// Kernels (by series) where the case does not pass today, and what it does instead.
    /// Every kernel not listed here must pass.
    pub except: &'static [(&'static str, Expect)],
    /// Run by `cargo xtask test` (CI) as well as by `cargo xtask kernels`.
    pub in_ci: bool,
    /// Seconds the case may take inside the guest (CPU-bound work runs several times slower
    /// under TCG than on the host) before it is killed and failed.
    pub timeout_s: u32,
}

impl Case {
    /// What this case must do on `series`: `None` means pass.
    pub(super) fn expect_on(&self, series: &str) -> Option<Expect> {
        self.except
            .iter()
            .find(|(s, _)| *s == series)
            .map(|(_, e)| *e)
    }
}

const fn test(target: &'static str, name: &'static str) -> Run {
    Run::Test { target, name }
}

// What mcp-guard does where a kernel lacks something (agent/launch/src/promises.rs picks, for each
// promise, the strongest mechanism the kernel has, and refuses only a promise none can keep).
// The texts are mcp-guard's and the tests' own messages, so the assertions notice when the
// message (or the behaviour) changes.

// Landlock ABI 2 and no cgroup unix programs (6.1): a policy with egress that lists no Unix
// sockets has its abstract-socket promise kept by the jail's seccomp rule (no Unix socket by
// address at all: `unix: egress server, no sockets listed`); its TCP-bind promise by the cgroup
// bind programs (landlock has no TCP rules before ABI 4; `tcp bind: cgroup programs alone` and
// `jail: tcp bind` show them).

/// A policy listing abstract Unix names: only the cgroup unix programs can let just those
/// through.
const NO_ABSTRACT_NAMES: Expect = Expect::Refuses("promise unix_abstract");
/// The cgroup unix programs are what record a Unix-socket connect as an event: where the mount
/// view keeps the promise instead, nothing is recorded.
const NO_UNIX_EVENTS: Expect = Expect::Fails("no connect event for");
/// Where the mount view keeps the pathname-socket promise, an unlisted socket under /run is
/// not there (ENOENT) rather than refused by the programs (EPERM):
/// `unix: out of reach by this kernel's mechanism` asserts the promise itself on every kernel.
const MOUNT_VIEW_ENOENT: Expect = Expect::Fails("errno 2");

/// The Unix-socket tests (issue 18: `[network] unix`). Where the cgroup
/// `connect_unix`/`sendmsg_unix` programs (Linux 6.7+) are missing, the jail's own /run, /var/run,
/// /dev/shm and /tmp keep pathname sockets and its network namespace (policies without egress)
/// abstract ones.
pub(super) const UNIX_SOCKET_CASES: &[Case] = &[
    Case {
        id: "unix: only the listed sockets",
        run: test(
            "unix_sockets",
            "a_jailed_server_reaches_only_the_unix_sockets_its_policy_lists",
        ),
        except: &[("6.1", NO_ABSTRACT_NAMES)],
        in_ci: true,
        timeout_s: 300,
    },
    Case {
        id: "unix: out of reach by this kernel's mechanism",
        run: test(
            "unix_sockets",
            "unlisted_sockets_are_out_of_reach_by_whatever_this_kernel_has",
        ),
        except: &[],
        in_ci: true,
        timeout_s: 180,
    },
    // The attack on 6.1 before the seccomp rule was refused at launch (77, `promise
    // unix_abstract`); with it, every kernel passes: EPERM from the programs or the rule.
    Case {
        id: "unix: egress server, no sockets listed",
        run: test(
            "unix_sockets",
            "an_egress_server_listing_no_unix_sockets_reaches_none_of_the_host_s",
        ),
        except: &[],
        in_ci: true,
        timeout_s: 180,
    },
    // On 6.1 before the seccomp rule kept unix_pathname, only the mount view did: a socket in
    // the read set outside the jail's own /run and /tmp was reachable.
    Case {
        id: "unix: no sockets listed, none in the read set",
        run: test(
            "unix_sockets",
            "a_server_listing_no_unix_sockets_reaches_none_in_its_read_set",
        ),
        except: &[],
        in_ci: true,
        timeout_s: 180,
    },
    Case {
        id: "unix: agent refuses a guarded peer",
        run: test(
            "unix_sockets",
            "the_agent_refuses_a_client_inside_a_guarded_cgroup",
        ),
        except: &[("6.1", NO_UNIX_EVENTS)],
        in_ci: true,
        timeout_s: 180,
    },
    Case {
        id: "unix: standalone enforce and observe",
        run: test(
            "unix_sockets",
            "standalone_exec_enforces_too_and_observe_only_reports",
        ),
        except: &[("6.1", MOUNT_VIEW_ENOENT)],
        // On 6.12 under TCG the guest oopsed once during this case (int3 in
        // syscall_exit_to_user_mode_prepare, in one of podman's threads, while a tracepoint's
        // static branch was being patched). Such a crash no longer ends the kernel's run: it is
        // reported and the spoiled cases run once more in a fresh boot (boots.rs).
        in_ci: true,
        timeout_s: 180,
    },
];

/// The guest is root and runs what the tests run: it mounts the host's root share again,
/// makes the mount writable and tries to create a file. The share is a read-only bind on the
/// host side (vm.rs), so the write must fail whatever the guest does.
const GUEST_CANNOT_WRITE_HOST: &str = r#"
m=$(mktemp -d) || exit 2
mount -t virtiofs "$MCPG_ROOT_TAG" "$m" || exit 2
mount -o remount,rw "$m" && echo "the guest remounted the host's root share read-write"
probe="$m/tmp/.mcpg-guest-write-probe-$$"
if touch "$probe"; then
    echo "FAIL: the guest created $probe on the host"
    rm -f "$probe"
    exit 1
fi
echo "the host's root stays read-only to the guest"
"#;

/// The vagrant box's provisioning smoke test (vagrant/smoke.sh, which provision.sh runs), here
/// inside the booted kernel: the box's pieces set up as provision.sh does (the repository's
/// policies, checked; the agent with a metrics token; a Claude config for mcp-server-time
/// wrapped by `client-config --write`; the server's venv at the box's /opt/mcp-servers), in a
/// mount namespace of its own so the other cases see nothing of it. Differences, because the
/// guest's root is this machine's, read-only: the agent runs in the background, not under
/// systemd; the client is `nobody` (the box's `vagrant`) and the agent's socket is mode 0666
/// (the box's group `mcp`); the server runs as `python -m mcp_server_time` (the venv's own
/// scripts name this machine's venv path in their #!). And one because the CPU is emulated:
/// time.toml's `cpu = 0.25` is a quarter of a vCPU, which under TCG does a small fraction of
/// what a quarter of a real core does (the server's imports took minutes at that share), so the
/// guest's copy gets one vCPU; every promise of the policy stays as shipped. Each step prints
/// its time.
const VAGRANT_SMOKE: &str = r#"
set -eu
G="${CARGO_TARGET_DIR:-$PWD/target}/debug/mcp-guard"
VENV=$(readlink -f .venv)
D=$(mktemp -d /tmp/vagrant-box.XXXXXX)
chmod 755 "$D"
export G VENV D
exec unshare --mount --propagation private /bin/busybox sh -c '
set -eu
up() { cut -d" " -f1 /proc/uptime; }
t0=$(up)
step() { echo "vagrant-smoke: $1 done at $(awk "BEGIN { printf \"%.1f\", $(up) - $t0 }") s"; }
mount -t tmpfs -o mode=0755 tmpfs /opt
mkdir /opt/mcp-servers
mount --bind "$VENV" /opt/mcp-servers
mkdir -p "$D/policies" /run/mcp-guard
cp policies/*.toml "$D/policies/"
grep -q "^cpu = 0.25$" "$D/policies/time.toml" \
    || { echo "time.toml no longer says cpu = 0.25: update the vagrant case of xtask/src/kernels/matrix.rs"; exit 1; }
sed -i "s/^cpu = 0.25$/cpu = 1/" "$D/policies/time.toml"
"$G" policy check "$D"/policies/*.toml
step "policy check"
head -c 32 /dev/urandom | od -An -tx1 | tr -d " \n" > "$D/metrics.token"
chmod 600 "$D/metrics.token"
printf "%s\n" "socket = \"/run/mcp-guard/agent.sock\"" "socket_mode = \"0666\"" \
    "metrics = \"127.0.0.1:9464\"" "metrics_token_file = \"$D/metrics.token\"" > "$D/agent.toml"
"$G" --policy-dir "$D/policies" agent --config "$D/agent.toml" > "$D/agent.log" 2>&1 &
agent=$!
i=0
while [ ! -S /run/mcp-guard/agent.sock ] && [ $i -lt 600 ]; do sleep 0.2; i=$((i + 1)); done
step "agent listening"
printf "%s\n" "{\"mcpServers\": {\"time\": {\"command\": \"/opt/mcp-servers/bin/python\", \"args\": [\"-m\", \"mcp_server_time\"]}}}" > "$D/claude_desktop_config.json"
"$G" --policy-dir "$D/policies" client-config --write "$D/claude_desktop_config.json"
chmod 644 "$D/claude_desktop_config.json"
step "client-config --write"
rc=0
sh vagrant/smoke.sh "$D/claude_desktop_config.json" nobody nogroup "" \
    /opt/mcp-servers/bin/python "$D/metrics.token" || rc=$?
step "smoke.sh (rc $rc)"
if [ $rc -ne 0 ]; then echo "--- agent log"; cat "$D/agent.log"; fi
kill $agent
exit $rc
'
"#;

/// Every case but the Unix-socket ones, in the order they run.
pub(super) const CASES: &[Case] = &[
    Case {
        id: "vm: host root is read-only",
        run: Run::Shell(GUEST_CANNOT_WRITE_HOST),
        except: &[],
        in_ci: true,
        timeout_s: 60,
    },
    Case {
        id: "doctor",
        run: Run::McpGuard(&["doctor"]),
        except: &[],
        in_ci: true,
        timeout_s: 120,
    },
    // Each program of the eBPF object loads exactly where the kernel has what it needs
    // (agent/kernel/src/compat.rs), within a tenth of the verifier's limit.
    Case {
        id: "ebpf: programs load per compat table",
        run: test(
            "ebpf_compat",
            "each_program_loads_exactly_where_the_kernel_has_what_it_needs",
        ),
        except: &[],
        in_ci: true,
        timeout_s: 120,
    },
    // The jail's escape tests: each escape is refused when enforced and works under --observe.
    // (Not `limits_stop_fork_bombs_and_memory_hogs`: under TCG its 256 MiB allocation under
    // --observe now and then outlasts exec's 5 s grace after stdin closes, and is killed.)
    Case {
        id: "jail: filesystem escapes",
        run: test("jail", "filesystem_escapes_are_denied_by_landlock"),
        except: &[],
        in_ci: true,
        timeout_s: 300,
    },
    Case {
        id: "jail: dangerous syscalls",
        run: test("jail", "dangerous_syscalls_are_denied_by_seccomp_and_caps"),
        except: &[],
        in_ci: true,
        timeout_s: 300,
    },
    // Landlock's truncate right from ABI 3 (EACCES); before, the jail's seccomp rule (EPERM).
    Case {
        id: "jail: truncation",
        run: test(
            "jail",
            "truncation_outside_the_write_set_is_denied_on_every_kernel",
        ),
        except: &[],
        in_ci: true,
        timeout_s: 180,
    },
    Case {
        id: "jail: tcp ports",
        run: test("jail", "tcp_connect_only_to_allowed_ports"),
        except: &[],
        in_ci: true,
        timeout_s: 180,
    },
    // Landlock's TCP rule from ABI 4 (EACCES); before, the kernel guard's bind programs (EPERM).
    Case {
        id: "jail: tcp bind",
        run: test(
            "jail",
            "tcp_bind_outside_the_policy_is_denied_on_every_kernel",
        ),
        except: &[],
        in_ci: true,
        timeout_s: 180,
    },
    Case {
        id: "jail: signals",
        run: test("jail", "signals_do_not_leave_the_jail"),
        except: &[],
        in_ci: true,
        timeout_s: 180,
    },
    Case {
        id: "jail: unenforceable policy",
        run: test("jail", "unenforceable_policy_launches_nothing"),
        except: &[],
        in_ci: true,
        timeout_s: 120,
    },
    // Egress allow/deny in the kernel: v4, v6, v4-mapped v6 and UDP.
    Case {
        id: "egress: connect4 deny",
        run: test(
            "egress",
            "foundation_object_loads_and_connect4_denies_inside_only",
        ),
        except: &[],
        in_ci: true,
        timeout_s: 120,
    },
    Case {
        id: "egress: v4/v6/udp allowlist",
        run: test("egress", "allowlist_by_address_port_family_and_mapped_v4"),
        except: &[],
        in_ci: true,
        timeout_s: 120,
    },
    // The cgroup bind4/bind6 programs alone, without landlock: only the policy's TCP ports.
    Case {
        id: "tcp bind: cgroup programs alone",
        run: test(
            "tcp_bind",
            "a_guarded_server_binds_only_the_ports_its_policy_allows",
        ),
        except: &[],
        in_ci: true,
        timeout_s: 120,
    },
    Case {
        id: "exec: egress + session recorded",
        run: test(
            "exec_kernel",
            "egress_is_filtered_per_address_and_the_session_is_recorded",
        ),
        except: &[],
        in_ci: true,
        timeout_s: 180,
    },
    Case {
        id: "exec: observe without eBPF",
        run: test(
            "exec_kernel",
            "without_ebpf_observe_runs_unguarded_and_says_what_doctor_says",
        ),
        except: &[],
        in_ci: true,
        timeout_s: 120,
    },
    // The event stream: exec/open/connect seen with paths and verdicts.
    Case {
        id: "events: exec/open/connect",
        run: test(
            "events",
            "exec_open_and_connect_events_of_a_guarded_fixture",
        ),
        except: &[],
        in_ci: true,
        timeout_s: 120,
    },
    // The sensitive-path kill, in the kernel, before the open returns.
    Case {
        id: "events: sensitive-path kill",
        run: test("events", "sensitive_open_kills_even_in_observe_mode"),
        except: &[],
        in_ci: true,
        timeout_s: 120,
    },
    // Sensitive names at the end of long paths: the window the kernel scans for them.
    Case {
        id: "events: sensitive names, long paths",
        run: test(
            "events",
            "sensitive_names_are_found_at_the_end_of_long_paths",
        ),
        except: &[],
        in_ci: true,
        timeout_s: 120,
    },
    // One real MCP server session through the MCP Python SDK's client: the npm filesystem
    // server. (Not a Python server: under TCG, mcp-server-time's imports from a cold bytecode
    // cache outlast the client's 90 s session timeout.)
    Case {
        id: "mcp: filesystem server via SDK",
        run: test("jail", "real_filesystem_server_answers_through_the_jail"),
        except: &[],
        in_ci: true,
        timeout_s: 300,
    },
    // The shipped vagrant box (Debian 12): its provisioning smoke test, on each kernel.
    Case {
        id: "vagrant: provisioning smoke test",
        run: Run::Shell(VAGRANT_SMOKE),
        except: &[],
        in_ci: true,
        timeout_s: 300,
    },
];

/// The cases in run order: [`CASES`], then [`UNIX_SOCKET_CASES`].
pub(super) fn all_cases() -> impl Iterator<Item = &'static Case> {
    CASES.iter().chain(UNIX_SOCKET_CASES)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_table_is_consistent() {
        let mut ids = std::collections::BTreeSet::new();
        for case in all_cases() {
            assert!(ids.insert(case.id), "duplicate case id {:?}", case.id);
            for (series, _) in case.except {
                assert!(
                    KERNELS.iter().any(|k| k.series == *series),
                    "{}: no kernel {series} in KERNELS",
                    case.id
                );
            }
            assert!(case.timeout_s > 0, "{}", case.id);
        }
        assert!(KERNELS.iter().filter(|k| k.in_ci).count() >= 2);
    }
}
