//! The verified programs a [`KernelGuard`](super::KernelGuard) attaches: either the object it
//! loaded itself (the agent, an exec without a slot) or programs opened from a standalone
//! slot's pins (`slots`), verified by an earlier exec. Both attach the same way.

use std::path::Path;

use aya::{
    Ebpf, EbpfLoader,
    maps::{MapData, PerCpuArray},
    programs::{
        BtfTracePoint, CgroupSkb, CgroupSockAddr, ProgramError, ProgramInfo,
        cgroup_sock_addr::CgroupSockAddrAttachType,
    },
};
use mcp_guard_ebpf::programs;

use super::{
    super::{
        dns_programs::{self, DNS_PROGRAMS},
        program_load::{self, EGRESS_PROGRAMS, TRACE_PROGRAMS},
        ringbuf::RingReader,
        unix::{RelocatedUnix, UnixPrograms},
    },
    EBPF_OBJECT, KernelError, Maps,
};

/// Where each egress program attaches, for programs opened from pins (the kernel fixed it at
/// load; aya must be told again).
const EGRESS_ATTACH: [(&str, CgroupSockAddrAttachType); 6] = [
    (programs::CONNECT4, CgroupSockAddrAttachType::Connect4),
    (programs::CONNECT6, CgroupSockAddrAttachType::Connect6),
    (programs::SENDMSG4, CgroupSockAddrAttachType::UDPSendMsg4),
    (programs::SENDMSG6, CgroupSockAddrAttachType::UDPSendMsg6),
    (programs::BIND4, CgroupSockAddrAttachType::Bind4),
    (programs::BIND6, CgroupSockAddrAttachType::Bind6),
];

/// The programs of a guard.
pub(super) enum ProgramSet {
    /// Loaded from the embedded object by this process.
    Object(Box<Ebpf>),
    /// Opened from a slot's pins; the tracepoints are attached by this process (their links
    /// go when it does).
    Pinned(PinnedPrograms),
}

/// Programs opened from pins (`prog_<name>` in one directory).
pub(super) struct PinnedPrograms {
    egress: Vec<(&'static str, CgroupSockAddr)>,
    dns: Vec<(&'static str, CgroupSkb)>,
    trace: Vec<(&'static str, BtfTracePoint)>,
}

fn program_error(name: &'static str) -> impl Fn(ProgramError) -> KernelError {
    move |source| KernelError::Program { name, source }
}

/// The pin of program `name` in `dir`.
pub(super) fn prog_pin(dir: &Path, name: &str) -> std::path::PathBuf {
    dir.join(format!("prog_{name}"))
}

/// Every program of the object that a slot pins through aya (the unix ones are pinned by
/// `unix`).
pub(super) fn aya_program_names() -> impl Iterator<Item = &'static str> {
    EGRESS_PROGRAMS
        .into_iter()
        .chain(DNS_PROGRAMS.iter().map(|(n, _)| *n))
        .chain(TRACE_PROGRAMS.iter().map(|(n, _)| *n))
}

impl PinnedPrograms {
    /// Opens the programs pinned in `dir` (nothing attached yet).
    pub(super) fn open(dir: &Path) -> Result<Self, KernelError> {
        let egress = EGRESS_ATTACH
            .iter()
            .map(|&(name, attach)| {
                CgroupSockAddr::from_pin(prog_pin(dir, name), attach)
                    .map(|p| (name, p))
                    .map_err(program_error(name))
            })
            .collect::<Result<_, _>>()?;
        let dns = DNS_PROGRAMS
            .iter()
            .map(|&(name, attach)| {
                CgroupSkb::from_pin(prog_pin(dir, name), attach)
                    .map(|p| (name, p))
                    .map_err(program_error(name))
            })
            .collect::<Result<_, _>>()?;
        let trace = TRACE_PROGRAMS
            .iter()
            .map(|&(name, _)| {
                BtfTracePoint::from_pin(prog_pin(dir, name))
                    .map(|p| (name, p))
                    .map_err(program_error(name))
            })
            .collect::<Result<_, _>>()?;
        Ok(Self { egress, dns, trace })
    }

    /// Attaches the syscall tracepoints (host-wide; they judge only guarded cgroups). The
    /// links live as long as `self`.
    pub(super) fn attach_tracepoints(&mut self) -> Result<(), KernelError> {
        for (name, program) in &mut self.trace {
            program.attach().map_err(program_error(name))?;
        }
        Ok(())
    }
}

impl ProgramSet {
    /// The egress (or bind) program `name`.
    pub(super) fn egress(
        &mut self,
        name: &'static str,
    ) -> Result<&mut CgroupSockAddr, KernelError> {
        match self {
            Self::Object(ebpf) => ebpf
                .program_mut(name)
                .ok_or(KernelError::MissingProgram(name))?
                .try_into()
                .map_err(program_error(name)),
            Self::Pinned(p) => p
                .egress
                .iter_mut()
                .find(|(n, _)| *n == name)
                .map(|(_, p)| p)
                .ok_or(KernelError::MissingProgram(name)),
        }
    }

    /// The DNS capture program `name`.
    pub(super) fn dns(&mut self, name: &'static str) -> Result<&mut CgroupSkb, KernelError> {
        match self {
            Self::Object(ebpf) => dns_programs::program(ebpf, name),
            Self::Pinned(p) => p
                .dns
                .iter_mut()
                .find(|(n, _)| *n == name)
                .map(|(_, p)| p)
                .ok_or(KernelError::MissingProgram(name)),
        }
    }

    /// The kernel's information about the syscall tracing program `name`.
    pub(super) fn trace_info(&self, name: &str) -> Option<ProgramInfo> {
        match self {
            Self::Object(ebpf) => ebpf.program(name)?.info().ok(),
            Self::Pinned(p) => p
                .trace
                .iter()
                .find(|(n, _)| *n == name)
                .and_then(|(_, p)| p.info().ok()),
        }
    }
}

/// Loads the object with `loader` and verifies every program: the unix programs in a thread
/// of their own while the others are verified (on the critical path of a standalone exec's
/// start otherwise). `Err` in the second half: why this kernel cannot run the unix programs.
pub(super) fn verify_object(
    loader: &mut EbpfLoader,
) -> Result<(Ebpf, Result<UnixPrograms, String>), KernelError> {
    let btf = program_load::PendingBtf::start();
    let mut ebpf = loader.load(EBPF_OBJECT)?;
    // Before any map is taken out of `ebpf`: they are relocated against its maps.
    let relocated = UnixPrograms::relocate(&mut ebpf, EBPF_OBJECT);
    let btf = btf.wait()?;
    let (unix, loaded) = std::thread::scope(|scope| {
        let unix = scope.spawn(move || relocated.and_then(RelocatedUnix::verify));
        let loaded = program_load::load_programs(&mut ebpf, &btf);
        let unix = unix
            .join()
            .unwrap_or_else(|_| Err("verifying them: the thread panicked".into()));
        (unix, loaded)
    });
    loaded?;
    Ok((ebpf, unix))
}

/// What a guard is made of, however its programs were loaded.
pub(super) struct Parts {
    pub(super) programs: ProgramSet,
    pub(super) maps: Maps,
    pub(super) drops: PerCpuArray<MapData, u64>,
    pub(super) ring: RingReader,
    pub(super) unix: Result<UnixPrograms, String>,
}
