//! Loading the object's egress and syscall-trace programs into the kernel, with the verifier's
//! work spread over threads, and the kernel's BTF parsed beside it.
//!
//! Most of a kernel guard's start-up is the kernel verifying the programs: CPU-bound work done in the
//! thread that calls `BPF_PROG_LOAD`, with no lock shared between a privileged caller's loads.
//! Loading each syscall tracepoint in a thread of its own, while this thread loads the egress
//! programs, lets a machine with more than one core verify them at once. Nothing else changes:
//! every program is loaded exactly as one at a time would load it, and the first error (in the
//! order the programs are listed) is the one returned.

use std::thread;

use aya::{
    Btf, Ebpf, Endianness,
    programs::{BtfTracePoint, CgroupSockAddr, Program},
};

use mcp_guard_ebpf::programs;

use super::{
    btf_layout,
    dns_programs::{self, DNS_PROGRAMS},
    error::KernelError,
};

/// The egress and bind programs, in the order they are attached.
pub(crate) const EGRESS_PROGRAMS: [&str; 6] = [
    programs::CONNECT4,
    programs::CONNECT6,
    programs::SENDMSG4,
    programs::SENDMSG6,
    programs::BIND4,
    programs::BIND6,
];

/// The syscall tracepoints: (program name, `tp_btf` target).
pub(crate) const TRACE_PROGRAMS: [(&str, &str); 2] = [
    (programs::SYS_ENTER, "sys_enter"),
    (programs::SYS_EXIT, "sys_exit"),
];

/// The kernel's BTF, being parsed in a thread of its own (the tracepoints need it; parsing it
/// overlaps parsing and relocating the object).
pub(crate) struct PendingBtf(thread::JoinHandle<Result<Btf, KernelError>>);

impl PendingBtf {
    /// Starts parsing `/sys/kernel/btf/vmlinux` (the bytes the struct layouts read too).
    pub(crate) fn start() -> Self {
        PendingBtf(thread::spawn(|| {
            let data =
                btf_layout::vmlinux().map_err(|why| KernelError::Io(std::io::Error::other(why)))?;
            Ok(Btf::parse(data, Endianness::default())?)
        }))
    }

    /// The parsed BTF.
    pub(crate) fn wait(self) -> Result<Btf, KernelError> {
        self.0
            .join()
            .map_err(|_| panicked("parsing the kernel BTF"))?
    }
}

fn panicked(what: &str) -> KernelError {
    KernelError::Io(std::io::Error::other(format!(
        "{what}: the thread panicked"
    )))
}

/// Loads (verifies) the egress programs, the DNS capture programs and the syscall tracepoints of
/// `ebpf`; attaching and pinning stay with the caller.
pub(crate) fn load_programs(ebpf: &mut Ebpf, btf: &Btf) -> Result<(), KernelError> {
    let mut egress: Vec<Option<&mut Program>> = EGRESS_PROGRAMS.iter().map(|_| None).collect();
    let mut trace: Vec<Option<&mut Program>> = TRACE_PROGRAMS.iter().map(|_| None).collect();
    let mut dns: Vec<Option<&mut Program>> = DNS_PROGRAMS.iter().map(|_| None).collect();
    for (name, program) in ebpf.programs_mut() {
        if let Some(i) = EGRESS_PROGRAMS.iter().position(|n| *n == name) {
            egress[i] = Some(program);
        } else if let Some(i) = DNS_PROGRAMS.iter().position(|(n, _)| *n == name) {
            dns[i] = Some(program);
        } else if let Some(i) = TRACE_PROGRAMS.iter().position(|(n, _)| *n == name) {
            trace[i] = Some(program);
        }
    }
    thread::scope(|scope| {
        let tracing: Vec<_> = TRACE_PROGRAMS
            .iter()
            .zip(trace)
            .map(|(&(name, target), program)| {
                scope.spawn(move || {
                    let program: &mut BtfTracePoint = program
                        .ok_or(KernelError::MissingProgram(name))?
                        .try_into()
                        .map_err(|source| KernelError::Program { name, source })?;
                    program
                        .load(target, btf)
                        .map_err(|source| KernelError::Program { name, source })
                })
            })
            .collect();
        let egress = EGRESS_PROGRAMS
            .iter()
            .zip(egress)
            .try_for_each(|(&name, program)| {
                let program: &mut CgroupSockAddr = program
                    .ok_or(KernelError::MissingProgram(name))?
                    .try_into()
                    .map_err(|source| KernelError::Program { name, source })?;
                program
                    .load()
                    .map_err(|source| KernelError::Program { name, source })
            });
        // After the egress programs, on this thread, while the tracepoints verify.
        let dns = DNS_PROGRAMS
            .iter()
            .zip(dns)
            .try_for_each(|(&(name, _), program)| dns_programs::load(name, program));
        // Every thread is joined before the first error is returned.
        let tracing: Vec<Result<(), KernelError>> = tracing
            .into_iter()
            .map(|t| {
                t.join()
                    .unwrap_or_else(|_| Err(panicked("loading a tracepoint")))
            })
            .collect();
        egress?;
        dns?;
        tracing.into_iter().collect()
    })
}
