//! The server's own launch chain: the program the jail starts and every later exec of that same
//! process until the client's `initialize` is answered (`env`, version-manager shims trying each
//! `PATH` entry, the interpreter it ends in). That is how the server is started, not something
//! it does, so it is its baseline: the detector never sees those execs (they are still recorded).
//!
//! Only the launching process counts: a child it forks (a shell running `curl`) is judged as
//! ever, before `initialize` too, and so is any exec of the launching process after it.

use mcp_guard_model::kernel_event::{KernelEvent, KernelEventKind};

/// Tracks which exec events belong to the launch chain.
#[derive(Debug, Default)]
pub struct LaunchChain {
    /// The process the jail started (the pid of the first exec in the cgroup).
    pid: Option<u32>,
    /// When `initialize` was answered (`CLOCK_BOOTTIME` ns).
    initialized_at: Option<u64>,
}

impl LaunchChain {
    /// The client's `initialize` was answered at `at_boot_ns`: the chain ends there.
    pub fn initialized(&mut self, at_boot_ns: u64) {
        self.initialized_at.get_or_insert(at_boot_ns);
    }

    /// Whether `ev` (events come in time order) is an exec of the launch chain.
    pub fn is_launch(&mut self, ev: &KernelEvent) -> bool {
        if !matches!(ev.kind, KernelEventKind::Exec { .. }) {
            return false;
        }
        match self.pid {
            None => {
                self.pid = Some(ev.pid);
                true
            }
            Some(pid) => pid == ev.pid && self.initialized_at.is_none_or(|t| ev.ts_boot_ns < t),
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use super::*;

    fn exec(pid: u32, ts: u64, path: &str) -> KernelEvent {
        KernelEvent {
            ts_boot_ns: ts,
            cgroup_id: 1,
            pid,
            tid: pid,
            server: Arc::from("s"),
            session: Arc::from("x"),
            kind: KernelEventKind::Exec {
                path: path.into(),
                argv: vec![],
                result: Some(0),
            },
        }
    }

    #[test]
    fn the_launching_process_until_initialize_is_the_chain_and_nothing_else() {
        let mut chain = LaunchChain::default();
        // The jail starts the command; `env` tries each PATH entry, then the interpreter.
        assert!(chain.is_launch(&exec(10, 1, "/srv/bin/server")));
        assert!(chain.is_launch(&exec(10, 2, "/usr/bin/env")));
        assert!(chain.is_launch(&exec(10, 3, "/home/u/.pyenv/shims/node")));
        assert!(chain.is_launch(&exec(10, 4, "/usr/bin/node")));
        // A child before initialize is the server's doing.
        assert!(!chain.is_launch(&exec(11, 5, "/bin/sh")));
        chain.initialized(10);
        assert!(
            chain.is_launch(&exec(10, 6, "/usr/bin/node")),
            "before initialize"
        );
        // After initialize, the launching process itself is judged too.
        assert!(!chain.is_launch(&exec(10, 11, "/bin/sh")));
        // The first answer to initialize ends it; a later one does not reopen it.
        chain.initialized(100);
        assert!(!chain.is_launch(&exec(10, 50, "/bin/sh")));
    }
}
