//! The DNS capture programs (`cgroup_skb` egress and ingress on each server's cgroup): loading,
//! pinning and attaching them. They copy DNS packets into the ring buffer and never judge; what
//! the packets say is read by `kernel::dns_packet`.

use std::{fs::File, path::Path};

use aya::{
    Ebpf,
    programs::{CgroupAttachMode, CgroupSkb, CgroupSkbAttachType, Program, links::FdLink},
};
use mcp_guard_ebpf::programs;

use super::error::KernelError;

/// The capture programs and where each attaches.
pub(crate) const DNS_PROGRAMS: [(&str, CgroupSkbAttachType); 2] = [
    (programs::DNS_EGRESS, CgroupSkbAttachType::Egress),
    (programs::DNS_INGRESS, CgroupSkbAttachType::Ingress),
];

pub(crate) fn program<'a>(
    ebpf: &'a mut Ebpf,
    name: &'static str,
) -> Result<&'a mut CgroupSkb, KernelError> {
    ebpf.program_mut(name)
        .ok_or(KernelError::MissingProgram(name))?
        .try_into()
        .map_err(|source| KernelError::Program { name, source })
}

/// Loads (verifies) the capture program `name` (`None`: the object lacks it).
pub(crate) fn load(name: &'static str, program: Option<&mut Program>) -> Result<(), KernelError> {
    let program: &mut CgroupSkb = program
        .ok_or(KernelError::MissingProgram(name))?
        .try_into()
        .map_err(|source| KernelError::Program { name, source })?;
    program
        .load()
        .map_err(|source| KernelError::Program { name, source })
}

/// Pins the loaded programs in the agent's directory (`prog_<name>`), as the egress ones are.
pub(crate) fn pin(
    ebpf: &mut Ebpf,
    dir: &Path,
    replace_pin: impl Fn(
        &Path,
        &mut dyn FnMut(&Path) -> Result<(), aya::pin::PinError>,
    ) -> Result<(), KernelError>,
) -> Result<(), KernelError> {
    for (name, _) in DNS_PROGRAMS {
        let p = program(ebpf, name)?;
        replace_pin(&dir.join(format!("prog_{name}")), &mut |path| p.pin(path))?;
    }
    Ok(())
}

/// Attaches the capture program `p` (`name`) to `cgroup` at `attach_type`. Unpinned, it stays
/// as long as the program (the standalone `exec`); with `pins` (agent), its link is pinned there
/// as `<name>`, and goes with that directory.
pub(crate) fn attach(
    name: &'static str,
    attach_type: CgroupSkbAttachType,
    p: &mut CgroupSkb,
    cgroup: &File,
    pins: Option<&Path>,
    replace_pin: impl Fn(
        &Path,
        &mut dyn FnMut(&Path) -> Result<(), aya::pin::PinError>,
    ) -> Result<(), KernelError>,
) -> Result<(), KernelError> {
    let link = p
        .attach(cgroup, attach_type, CgroupAttachMode::Single)
        .map_err(|source| KernelError::Program { name, source })?;
    if let Some(dir) = pins {
        let link = p
            .take_link(link)
            .map_err(|source| KernelError::Program { name, source })?;
        let link = FdLink::try_from(link).map_err(|e| KernelError::Pin {
            path: dir.display().to_string(),
            why: format!("{name}: the cgroup attachment is not a bpf_link: {e}"),
        })?;
        // Pinned once: `replace_pin` calls this exactly once.
        let mut link = Some(link);
        replace_pin(&dir.join(name), &mut |path| match link.take() {
            Some(link) => link.pin(path).map(drop),
            None => Ok(()),
        })?;
    }
    Ok(())
}
