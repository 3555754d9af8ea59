//! What an enforced launch promises, and which kernel mechanisms can keep each promise.
//!
//! Plain data and one pure function: [`choose`] takes the kernel features a host has
//! ([`Features`], probed by the caller) and what a policy asks for ([`Needs`]), and picks for
//! each promise the strongest mechanism available, or says why none can keep it. The launcher
//! refuses (exit 77) exactly for the promises left unkept, naming them; `doctor` prints the
//! same table for the host. Nothing here touches the kernel.

use serde::Serialize;

/// What the host's kernel offers, as far as the promises care.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[expect(
    clippy::struct_excessive_bools,
    reason = "independent probes: each kernel feature is there or not"
)]
pub struct Features {
    /// The landlock ABI the launcher will use (0: no landlock).
    pub landlock_abi: i32,
    /// seccomp filters can be installed.
    pub seccomp: bool,
    /// The launcher is root: the server gets its own mount, PID (and, where chosen, network)
    /// namespaces and a cgroup the eBPF programs attach to.
    pub namespaces: bool,
    /// cgroup `sock_addr` programs (connect4/6, sendmsg4/6) judge egress, and bind4/6 binds.
    pub cgroup_sock_addr: bool,
    /// cgroup `connect_unix`/`sendmsg_unix` programs run (Linux 6.7+).
    pub cgroup_unix: bool,
    /// The event and kill programs attach (BTF-typed `sys_enter`, `bpf_send_signal`).
    pub tracing: bool,
}

/// What a policy asks of the kernel beyond the promises every launch makes.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
#[expect(
    clippy::struct_excessive_bools,
    reason = "independent facts of the policy, each asked or not"
)]
pub struct Needs {
    /// `[network] allow` limits TCP to some ports (no entry covers every port).
    pub tcp_ports_limited: bool,
    /// `[network] allow` has an entry at all: the server needs the host's network.
    pub egress: bool,
    /// `[network] unix` lists abstract names (`@name`).
    pub abstract_names: bool,
    /// `[network] unix` lists any socket at all: the server must be able to make Unix sockets.
    pub unix_sockets: bool,
    /// The read or exec set reaches device files other than the inert ones.
    pub device_files: bool,
}

/// A promise an enforced launch makes.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Promise {
    /// Files outside `[filesystem]` cannot be read, written or executed.
    Filesystem,
    /// Files outside the write set cannot be truncated.
    Truncation,
    /// Devices outside the write set take no ioctl but the generic ones.
    DeviceIoctl,
    /// `[syscalls] deny` and the built-in deny list.
    Syscalls,
    /// Egress only to `[network] allow`.
    Egress,
    /// TCP listens only on the policy's ports.
    TcpBind,
    /// Pathname Unix sockets: only those `[network] unix` lists.
    UnixPathname,
    /// Abstract Unix sockets: only those `[network] unix` lists.
    UnixAbstract,
    /// No signal reaches a process outside the jail.
    Signals,
    /// exec/open/connect recorded, and the sensitive-path kill.
    Events,
}

impl Promise {
    /// Every promise, in table order.
    pub const ALL: [Promise; 10] = [
        Self::Filesystem,
        Self::Truncation,
        Self::DeviceIoctl,
        Self::Syscalls,
        Self::Egress,
        Self::TcpBind,
        Self::UnixPathname,
        Self::UnixAbstract,
        Self::Signals,
        Self::Events,
    ];

    /// The stable name (output, JSON, refusals).
    pub fn name(self) -> &'static str {
        match self {
            Self::Filesystem => "filesystem",
            Self::Truncation => "truncation",
            Self::DeviceIoctl => "device_ioctl",
            Self::Syscalls => "syscalls",
            Self::Egress => "egress",
            Self::TcpBind => "tcp_bind",
            Self::UnixPathname => "unix_pathname",
            Self::UnixAbstract => "unix_abstract",
            Self::Signals => "signals",
            Self::Events => "events",
        }
    }

    /// What is promised, for people.
    pub fn what(self) -> &'static str {
        match self {
            Self::Filesystem => "files outside [filesystem] cannot be read, written or executed",
            Self::Truncation => "files outside the write set cannot be truncated",
            Self::DeviceIoctl => "device files outside the write set take no ioctl",
            Self::Syscalls => "the denied syscalls fail",
            Self::Egress => "connect/sendmsg reach only [network] allow",
            Self::TcpBind => "TCP binds only the policy's ports",
            Self::UnixPathname => "pathname Unix sockets: only those [network] unix lists",
            Self::UnixAbstract => "abstract Unix sockets: only those [network] unix lists",
            Self::Signals => "no signal reaches a process outside the jail",
            Self::Events => "exec/open/connect are recorded and a sensitive open is killed",
        }
    }
}

/// A kernel mechanism that keeps a promise.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Mechanism {
    /// Landlock's filesystem rights (ABI 1).
    Landlock,
    /// Landlock's truncate right (ABI 3).
    LandlockTruncate,
    /// seccomp: `truncate(2)` and a read-only `open` with `O_TRUNC` fail, `openat2` is ENOSYS
    /// (its flags are out of a filter's reach); `ftruncate` needs a descriptor landlock let
    /// open for writing.
    SeccompTruncate,
    /// Landlock's device ioctl right (ABI 5).
    LandlockIoctlDev,
    /// seccomp filters.
    Seccomp,
    /// cgroup `sock_addr` programs: the eBPF egress allowlist.
    CgroupSockAddr,
    /// Landlock's TCP rules (ABI 4).
    LandlockTcp,
    /// cgroup `bind4`/`bind6` programs: TCP binds only to the policy's ports.
    CgroupBind,
    /// A network namespace of its own (only a loopback): for a policy without egress.
    NetNamespace,
    /// cgroup `connect_unix`/`sendmsg_unix` programs (Linux 6.7).
    CgroupUnix,
    /// The jail's own empty /run, /var/run, /dev/shm and /tmp, showing only listed sockets.
    MountView,
    /// Landlock's scopes (ABI 6).
    LandlockScope,
    /// seccomp: `socket(AF_UNIX, …)` fails, and `socketpair(AF_UNIX, …)` makes only stream and
    /// seqpacket pairs, which cannot be pointed at an address: no Unix socket is reachable by
    /// address at all. Only for a policy that lists no `[network] unix` sockets.
    SeccompUnix,
    /// A PID namespace of its own: no process outside it can be named.
    PidNamespace,
    /// BTF-typed `sys_enter`/`sys_exit` programs with `bpf_send_signal`.
    Tracing,
}

impl Mechanism {
    /// The stable name (output, JSON).
    pub fn name(self) -> &'static str {
        match self {
            Self::Landlock => "landlock",
            Self::LandlockTruncate => "landlock_truncate",
            Self::SeccompTruncate => "seccomp_truncate",
            Self::LandlockIoctlDev => "landlock_ioctl_dev",
            Self::Seccomp => "seccomp",
            Self::CgroupSockAddr => "cgroup_sock_addr",
            Self::LandlockTcp => "landlock_tcp",
            Self::CgroupBind => "cgroup_bind",
            Self::NetNamespace => "net_namespace",
            Self::CgroupUnix => "cgroup_unix",
            Self::MountView => "mount_view",
            Self::LandlockScope => "landlock_scope",
            Self::SeccompUnix => "seccomp_unix",
            Self::PidNamespace => "pid_namespace",
            Self::Tracing => "tracing",
        }
    }

    /// Why this mechanism cannot keep its promise here (`None`: it can).
    fn missing(self, f: &Features, n: Needs) -> Option<String> {
        let abi = |need: i32, linux: &str| {
            (f.landlock_abi < need).then(|| {
                format!(
                    "{}: landlock ABI {} < {need} (Linux {linux})",
                    self.name(),
                    f.landlock_abi
                )
            })
        };
        let root =
            |what: &str| (!f.namespaces).then(|| format!("{}: {what} needs root", self.name()));
        match self {
            Self::Landlock => abi(1, "5.13"),
            Self::LandlockTruncate => abi(3, "6.2"),
            Self::LandlockIoctlDev => abi(5, "6.10"),
            Self::LandlockTcp => abi(4, "6.7"),
            Self::LandlockScope if n.abstract_names => Some(format!(
                "{}: [network] unix lists abstract names, which a scope cannot let through",
                self.name()
            )),
            Self::LandlockScope => abi(6, "6.12"),
            Self::Seccomp | Self::SeccompTruncate => {
                (!f.seccomp).then(|| format!("{}: no seccomp filters", self.name()))
            }
            Self::SeccompUnix if n.unix_sockets => Some(format!(
                "{}: [network] unix lists sockets, so the server must be able to make Unix \
                 sockets; list none, or run on a kernel with connect_unix programs (Linux 6.7){}",
                self.name(),
                if n.abstract_names {
                    ""
                } else {
                    " or landlock ABI 6 (Linux 6.12)"
                }
            )),
            Self::SeccompUnix => {
                (!f.seccomp).then(|| format!("{}: no seccomp filters", self.name()))
            }
            Self::CgroupSockAddr => root("a cgroup").or_else(|| {
                (!f.cgroup_sock_addr)
                    .then(|| format!("{}: the egress programs do not load", self.name()))
            }),
            // Loaded and attached with the egress programs (same program type, Linux 4.17).
            Self::CgroupBind => root("a cgroup").or_else(|| {
                (!f.cgroup_sock_addr)
                    .then(|| format!("{}: the bind programs do not load", self.name()))
            }),
            Self::CgroupUnix => root("a cgroup").or_else(|| {
                (!f.cgroup_unix).then(|| {
                    format!(
                        "{}: no connect_unix/sendmsg_unix programs (Linux 6.7)",
                        self.name()
                    )
                })
            }),
            Self::NetNamespace => root("a namespace").or_else(|| {
                if n.egress {
                    Some(format!(
                        "{}: the policy allows egress ([network] allow), which needs the host's \
                         network",
                        self.name()
                    ))
                } else if n.abstract_names {
                    Some(format!(
                        "{}: [network] unix lists abstract names, which live in the host's \
                         network namespace",
                        self.name()
                    ))
                } else {
                    None
                }
            }),
            Self::MountView | Self::PidNamespace => root("a namespace"),
            Self::Tracing => root("a cgroup").or_else(|| {
                (!f.tracing).then(|| {
                    format!(
                        "{}: the sys_enter/sys_exit programs do not attach",
                        self.name()
                    )
                })
            }),
        }
    }
}

/// The mechanisms that can keep `promise`, strongest first.
pub fn mechanisms(promise: Promise) -> &'static [Mechanism] {
    use Mechanism::{
        CgroupBind, CgroupSockAddr, CgroupUnix, Landlock, LandlockIoctlDev, LandlockScope,
        LandlockTcp, LandlockTruncate, MountView, NetNamespace, PidNamespace, Seccomp,
        SeccompTruncate, SeccompUnix, Tracing,
    };
    match promise {
        Promise::Filesystem => &[Landlock],
        Promise::Truncation => &[LandlockTruncate, SeccompTruncate],
        Promise::DeviceIoctl => &[LandlockIoctlDev],
        Promise::Syscalls => &[Seccomp],
        Promise::Egress => &[CgroupSockAddr, NetNamespace],
        // The bind programs keep the promise itself (a bind elsewhere fails); the namespace
        // only leaves such a bind unreachable from outside the jail.
        Promise::TcpBind => &[LandlockTcp, CgroupBind, NetNamespace],
        // The seccomp rule before the mount view: the view hides only the jail's own /run,
        // /tmp and /dev/shm, so a socket elsewhere in the read set (an agent socket under ~)
        // stays reachable; the rule leaves a server that lists no sockets none at all.
        Promise::UnixPathname => &[CgroupUnix, SeccompUnix, MountView],
        // The seccomp rule last: it takes Unix sockets away altogether, where the others judge
        // each socket (or leave a server without egress only its own namespace's).
        Promise::UnixAbstract => &[CgroupUnix, LandlockScope, NetNamespace, SeccompUnix],
        Promise::Signals => &[LandlockScope, PidNamespace],
        Promise::Events => &[Tracing],
    }
}

/// Whether `needs` asks for `promise` at all.
fn needed(promise: Promise, n: Needs) -> bool {
    match promise {
        Promise::TcpBind => n.tcp_ports_limited,
        Promise::DeviceIoctl => n.device_files,
        _ => true,
    }
}

/// Who keeps one promise on this host.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
#[serde(tag = "state", rename_all = "snake_case")]
pub enum Holder {
    /// The strongest mechanism available.
    Kept { mechanism: Mechanism },
    /// The policy does not ask for it.
    NotNeeded,
    /// No mechanism available: why not, one reason per mechanism.
    Unkept { why: Vec<String> },
}

/// One row of the table.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Choice {
    pub promise: Promise,
    pub holder: Holder,
}

/// For each promise, the strongest mechanism this host has, or why none can keep it.
pub fn choose(f: &Features, n: &Needs) -> Vec<Choice> {
    Promise::ALL
        .into_iter()
        .map(|promise| {
            let holder = if needed(promise, *n) {
                let mut why = Vec::new();
                let mut kept = None;
                for &m in mechanisms(promise) {
                    match m.missing(f, *n) {
                        None => {
                            kept = Some(m);
                            break;
                        }
                        Some(reason) => why.push(reason),
                    }
                }
                match kept {
                    Some(mechanism) => Holder::Kept { mechanism },
                    None => Holder::Unkept { why },
                }
            } else {
                Holder::NotNeeded
            };
            Choice { promise, holder }
        })
        .collect()
}

/// The mechanism holding `promise` in `choices`, if one does.
pub fn holder(choices: &[Choice], promise: Promise) -> Option<Mechanism> {
    choices.iter().find_map(|c| match c.holder {
        Holder::Kept { mechanism } if c.promise == promise => Some(mechanism),
        _ => None,
    })
}

/// Whether any promise is held by `mechanism`.
pub fn uses(choices: &[Choice], mechanism: Mechanism) -> bool {
    choices
        .iter()
        .any(|c| c.holder == Holder::Kept { mechanism })
}

/// The refusal text for one unkept promise: it names the promise and each mechanism's reason.
pub fn unkept_message(choice: &Choice) -> Option<String> {
    let Holder::Unkept { why } = &choice.holder else {
        return None;
    };
    Some(format!(
        "promise {} ({}) cannot be kept on this kernel: {}",
        choice.promise.name(),
        choice.promise.what(),
        why.join("; ")
    ))
}

/// Device files a server may read without their ioctls mattering.
const INERT_DEVICES: &[&str] = &[
    "/dev/null",
    "/dev/zero",
    "/dev/full",
    "/dev/random",
    "/dev/urandom",
];

/// Directories below /dev that hold no devices (the jail mounts its own /dev/shm).
const NOT_DEVICES: &[&str] = &["/dev/shm", "/dev/mqueue"];

/// Whether a read or exec grant of `path` (absolute, expanded) reaches device files beyond
/// the inert ones: `/dev` itself, a path below it, or an ancestor of it.
pub fn reaches_devices(path: &std::path::Path) -> bool {
    use std::path::Path;
    let dev = Path::new("/dev");
    if INERT_DEVICES.iter().any(|d| path == Path::new(d))
        || NOT_DEVICES.iter().any(|d| path.starts_with(d))
    {
        return false;
    }
    path.starts_with(dev) || dev.starts_with(path)
}

#[cfg(test)]
mod tests {
    use super::*;
    use Mechanism::*;

    /// What each kernel the README names has, for a root launch with the kernel guard loading.
    fn kernel(series: &str) -> Features {
        let (landlock_abi, cgroup_unix) = match series {
            "5.15" => (1, false),
            "6.1" => (2, false),
            "6.8" => (4, true),
            "6.12" => (6, true),
            other => panic!("no feature set for {other}"),
        };
        Features {
            landlock_abi,
            seccomp: true,
            namespaces: true,
            cgroup_sock_addr: true,
            cgroup_unix,
            tracing: true,
        }
    }

    fn table(f: &Features, n: Needs) -> Vec<(&'static str, String)> {
        choose(f, &n)
            .into_iter()
            .map(|c| {
                let h = match c.holder {
                    Holder::Kept { mechanism } => mechanism.name().to_string(),
                    Holder::NotNeeded => "-".into(),
                    Holder::Unkept { .. } => "REFUSED".into(),
                };
                (c.promise.name(), h)
            })
            .collect()
    }

    fn kept(f: &Features, n: Needs, p: Promise) -> Option<Mechanism> {
        holder(&choose(f, &n), p)
    }

    /// A typical server with egress on a few ports and a pathname socket.
    const NET: Needs = Needs {
        tcp_ports_limited: true,
        egress: true,
        abstract_names: false,
        unix_sockets: false,
        device_files: false,
    };
    /// A server without any network (the filesystem server).
    const OFFLINE: Needs = Needs {
        tcp_ports_limited: true,
        egress: false,
        abstract_names: false,
        unix_sockets: false,
        device_files: false,
    };

    #[test]
    fn on_6_12_the_strongest_mechanisms_are_today_s() {
        let f = kernel("6.12");
        let t = table(&f, NET);
        let want = [
            ("filesystem", "landlock"),
            ("truncation", "landlock_truncate"),
            ("device_ioctl", "-"),
            ("syscalls", "seccomp"),
            ("egress", "cgroup_sock_addr"),
            ("tcp_bind", "landlock_tcp"),
            ("unix_pathname", "cgroup_unix"),
            ("unix_abstract", "cgroup_unix"),
            ("signals", "landlock_scope"),
            ("events", "tracing"),
        ];
        let want: Vec<(&str, String)> = want.iter().map(|(p, m)| (*p, m.to_string())).collect();
        assert_eq!(t, want);
        // Nothing falls back to a namespace or a seccomp rule on 6.12.
        assert!(!uses(&choose(&f, &OFFLINE), NetNamespace));
        assert!(!uses(&choose(&f, &OFFLINE), SeccompTruncate));
        for n in [NET, OFFLINE] {
            assert!(!uses(&choose(&f, &n), SeccompUnix), "{n:?}");
        }
        // Devices in the read set: landlock's ioctl right.
        let dev = Needs {
            device_files: true,
            ..NET
        };
        assert_eq!(kept(&f, dev, Promise::DeviceIoctl), Some(LandlockIoctlDev));
    }

    #[test]
    fn on_6_8_signals_fall_back_to_the_pid_namespace_and_devices_are_refused() {
        let f = kernel("6.8");
        let c = choose(&f, &NET);
        assert_eq!(holder(&c, Promise::TcpBind), Some(LandlockTcp));
        assert_eq!(holder(&c, Promise::Truncation), Some(LandlockTruncate));
        assert_eq!(holder(&c, Promise::UnixAbstract), Some(CgroupUnix));
        assert!(!uses(&c, SeccompUnix));
        assert_eq!(holder(&c, Promise::Signals), Some(PidNamespace));
        assert!(c.iter().all(|c| unkept_message(c).is_none()), "{c:?}");
        let dev = Needs {
            device_files: true,
            ..NET
        };
        let c = choose(&f, &dev);
        let refused: Vec<String> = c.iter().filter_map(unkept_message).collect();
        assert_eq!(refused.len(), 1, "{refused:?}");
        assert!(
            refused[0].starts_with("promise device_ioctl"),
            "{refused:?}"
        );
        assert!(refused[0].contains("landlock ABI 4 < 5"), "{refused:?}");
    }

    #[test]
    fn on_6_1_an_offline_server_is_kept_by_namespaces_seccomp_and_the_bind_programs() {
        let f = kernel("6.1");
        let t = table(&f, OFFLINE);
        let want = [
            ("filesystem", "landlock"),
            ("truncation", "seccomp_truncate"),
            ("device_ioctl", "-"),
            ("syscalls", "seccomp"),
            ("egress", "cgroup_sock_addr"),
            ("tcp_bind", "cgroup_bind"),
            // The mount view would hide only the jail's own /run and /tmp.
            ("unix_pathname", "seccomp_unix"),
            ("unix_abstract", "net_namespace"),
            ("signals", "pid_namespace"),
            ("events", "tracing"),
        ];
        let want: Vec<(&str, String)> = want.iter().map(|(p, m)| (*p, m.to_string())).collect();
        assert_eq!(t, want);
    }

    #[test]
    fn on_6_1_a_server_with_egress_and_no_unix_sockets_is_kept_by_the_seccomp_rule() {
        let f = kernel("6.1");
        let t = table(&f, NET);
        let want = [
            ("filesystem", "landlock"),
            ("truncation", "seccomp_truncate"),
            ("device_ioctl", "-"),
            ("syscalls", "seccomp"),
            ("egress", "cgroup_sock_addr"),
            // No landlock TCP rules before ABI 4: the bind programs keep the TCP-bind promise.
            ("tcp_bind", "cgroup_bind"),
            ("unix_pathname", "seccomp_unix"),
            // No connect_unix (6.7), no scope (ABI 6), and the namespace would cut egress.
            ("unix_abstract", "seccomp_unix"),
            ("signals", "pid_namespace"),
            ("events", "tracing"),
        ];
        let want: Vec<(&str, String)> = want.iter().map(|(p, m)| (*p, m.to_string())).collect();
        assert_eq!(t, want);
        // Egress on every port: the same.
        let any_port = Needs {
            tcp_ports_limited: false,
            ..NET
        };
        assert_eq!(kept(&f, any_port, Promise::UnixAbstract), Some(SeccompUnix));
        // Without egress the namespace, stronger (it leaves the server its Unix sockets), wins.
        assert_eq!(kept(&f, OFFLINE, Promise::UnixAbstract), Some(NetNamespace));
        // Without seccomp nothing is left.
        let no_seccomp = Features {
            seccomp: false,
            ..f
        };
        let msg: Vec<String> = choose(&no_seccomp, &NET)
            .iter()
            .filter_map(unkept_message)
            .filter(|m| m.starts_with("promise unix_abstract"))
            .collect();
        assert_eq!(msg.len(), 1, "{msg:?}");
        assert!(
            msg[0].contains("seccomp_unix: no seccomp filters"),
            "{msg:?}"
        );
    }

    #[test]
    fn on_6_1_a_server_with_egress_listing_unix_sockets_is_refused_saying_what_would_work() {
        let f = kernel("6.1");
        let listed = Needs {
            unix_sockets: true,
            ..NET
        };
        let c = choose(&f, &listed);
        let refused: Vec<String> = c.iter().filter_map(unkept_message).collect();
        assert_eq!(refused.len(), 1, "{refused:?}");
        let m = &refused[0];
        assert!(m.starts_with("promise unix_abstract"), "{m}");
        assert!(m.contains("no connect_unix"), "{m}");
        assert!(m.contains("allows egress"), "{m}");
        assert!(
            m.contains("seccomp_unix: [network] unix lists sockets"),
            "{m}"
        );
        assert!(m.contains("list none"), "{m}");
        assert!(m.contains("connect_unix programs (Linux 6.7)"), "{m}");
        assert!(m.contains("landlock ABI 6 (Linux 6.12)"), "{m}");
        // Listed abstract names: neither a scope, a namespace nor the seccomp rule can let
        // just those through; only the kernel programs can.
        let named = Needs {
            abstract_names: true,
            unix_sockets: true,
            ..OFFLINE
        };
        let msg: Vec<String> = choose(&f, &named)
            .iter()
            .filter_map(unkept_message)
            .collect();
        assert_eq!(msg.len(), 1, "{msg:?}");
        assert!(msg[0].starts_with("promise unix_abstract"), "{msg:?}");
        assert!(msg[0].contains("abstract names"), "{msg:?}");
        assert!(msg[0].contains("(Linux 6.7)"), "{msg:?}");
        assert!(!msg[0].contains("landlock ABI 6 (Linux 6.12)"), "{msg:?}");
        // A policy listing pathname sockets without egress: the namespace keeps it.
        let offline_listed = Needs {
            unix_sockets: true,
            ..OFFLINE
        };
        assert_eq!(
            kept(&f, offline_listed, Promise::UnixAbstract),
            Some(NetNamespace)
        );
    }

    #[test]
    fn on_5_15_truncation_falls_back_to_seccomp() {
        let f = kernel("5.15");
        let c = choose(&f, &OFFLINE);
        assert_eq!(holder(&c, Promise::Filesystem), Some(Landlock));
        assert_eq!(holder(&c, Promise::Truncation), Some(SeccompTruncate));
        assert_eq!(holder(&c, Promise::UnixAbstract), Some(NetNamespace));
        assert!(c.iter().all(|c| unkept_message(c).is_none()), "{c:?}");
        assert_eq!(kept(&f, NET, Promise::UnixAbstract), Some(SeccompUnix));
        // Without landlock nothing keeps the filesystem promise.
        let none = Features {
            landlock_abi: 0,
            ..f
        };
        let msg: Vec<String> = choose(&none, &OFFLINE)
            .iter()
            .filter_map(unkept_message)
            .collect();
        assert!(msg[0].starts_with("promise filesystem"), "{msg:?}");
    }

    #[test]
    fn without_root_only_what_a_process_does_to_itself_remains() {
        let f = Features {
            namespaces: false,
            ..kernel("6.12")
        };
        let c = choose(&f, &NET);
        assert_eq!(holder(&c, Promise::Signals), Some(LandlockScope));
        assert_eq!(holder(&c, Promise::UnixAbstract), Some(LandlockScope));
        assert_eq!(holder(&c, Promise::TcpBind), Some(LandlockTcp));
        for p in [Promise::Egress, Promise::Events] {
            assert_eq!(holder(&c, p), None, "{p:?}");
        }
        // A policy listing no sockets: the seccomp rule, the process's own, keeps named ones.
        assert_eq!(holder(&c, Promise::UnixPathname), Some(SeccompUnix));
        // Before landlock's TCP rules, the bind programs need a cgroup, hence root.
        let old = Features {
            namespaces: false,
            ..kernel("6.1")
        };
        let msg: Vec<String> = choose(&old, &NET)
            .iter()
            .filter_map(unkept_message)
            .filter(|m| m.starts_with("promise tcp_bind"))
            .collect();
        assert_eq!(msg.len(), 1, "{msg:?}");
        assert!(
            msg[0].contains("cgroup_bind: a cgroup needs root"),
            "{msg:?}"
        );
        // The seccomp rule is the process's own: it keeps abstract sockets without root.
        assert_eq!(kept(&old, NET, Promise::UnixAbstract), Some(SeccompUnix));
    }

    #[test]
    fn device_grants_beyond_the_inert_ones_need_the_ioctl_promise() {
        use std::path::Path;
        assert!(!reaches_devices(Path::new("/dev/null")));
        assert!(!reaches_devices(Path::new("/dev/urandom")));
        assert!(!reaches_devices(Path::new("/usr/lib")));
        assert!(!reaches_devices(Path::new("/dev/shm")));
        assert!(reaches_devices(Path::new("/dev")));
        assert!(reaches_devices(Path::new("/dev/tty")));
        assert!(reaches_devices(Path::new("/")));
    }
}
