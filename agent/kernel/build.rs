//! Builds the eBPF programs of `agent-ebpf` for the BPF target and leaves the object in `OUT_DIR`,
//! where `loader` embeds it, so the installed `mcp-guard` is a single file.
use anyhow::{Context as _, anyhow};

fn main() -> anyhow::Result<()> {
    let metadata = cargo_metadata::MetadataCommand::new()
        .no_deps()
        .exec()
        .context("cargo metadata")?;
    let package = metadata
        .packages
        .iter()
        .find(|p| p.name.as_str() == "mcp-guard-ebpf")
        .ok_or_else(|| anyhow!("the mcp-guard-ebpf package is not in the workspace"))?;
    let root_dir = package
        .manifest_path
        .parent()
        .ok_or_else(|| anyhow!("no parent for {}", package.manifest_path))?;
    let ebpf = aya_build::Package {
        name: package.name.as_str(),
        root_dir: root_dir.as_str(),
        ..Default::default()
    };
    aya_build::build_ebpf([ebpf], aya_build::Toolchain::default()).context(
        "building the eBPF programs failed; run `cargo xtask setup` to install the nightly \
         rust-src and bpf-linker they need",
    )
}
