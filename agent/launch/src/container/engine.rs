//! The Docker Engine API client: which engine, connecting to it, what it says about itself, and
//! the image the policy names.

use std::path::Path;

use bollard::Docker;

use crate::LaunchError;
use mcp_guard_policy::ImageRef;

/// Engine API timeout for one request (seconds).
const API_TIMEOUT: u64 = 120;

/// The engine address: the policy's `engine`, else `DOCKER_HOST`, else the first default socket
/// that exists (Docker's, then podman's), else Docker's.
pub fn engine_address(policy_engine: Option<&str>) -> String {
    if let Some(e) = policy_engine {
        return e.to_string();
    }
    if let Ok(h) = std::env::var("DOCKER_HOST")
        && !h.is_empty()
    {
        return h;
    }
    for sock in ["/var/run/docker.sock", "/run/podman/podman.sock"] {
        if Path::new(sock).exists() {
            return format!("unix://{sock}");
        }
    }
    "unix:///var/run/docker.sock".into()
}

/// What the engine says about itself (`doctor`).
#[derive(Clone, Debug)]
pub struct EngineInfo {
    /// The address used.
    pub address: String,
    /// Product and version, e.g. "Podman Engine 4.3.1".
    pub version: String,
    /// `cgroupfs` or `systemd`.
    pub cgroup_driver: String,
    /// The default OCI runtime.
    pub runtime: String,
}

/// Connects to the engine at `address` and checks that it answers.
pub async fn connect(address: &str) -> Result<Docker, String> {
    let unreachable = |e: &dyn std::fmt::Display| {
        format!(
            "the container engine at {address} is not reachable: {e}\nstart it (Docker: \
             `systemctl start docker`; podman: `podman system service --time=0 \
             unix:///run/podman/podman.sock`), or point DOCKER_HOST or [isolation] engine at it"
        )
    };
    let docker = if let Some(path) = address.strip_prefix("unix://") {
        Docker::connect_with_unix(path, API_TIMEOUT, bollard::API_DEFAULT_VERSION)
    } else {
        return Err(unreachable(&"only unix:// engine sockets are supported"));
    }
    .map_err(|e| unreachable(&e))?;
    docker.ping().await.map_err(|e| unreachable(&e))?;
    Ok(docker)
}

/// The engine's version, cgroup driver and runtime.
pub async fn engine_info(address: &str) -> Result<EngineInfo, String> {
    let docker = connect(address).await?;
    let version = docker.version().await.map_err(|e| e.to_string())?;
    let info = docker.info().await.map_err(|e| e.to_string())?;
    let product = version
        .components
        .as_ref()
        .and_then(|c| c.first())
        .map_or_else(|| "Docker Engine".into(), |c| c.name.clone());
    Ok(EngineInfo {
        address: address.to_string(),
        version: format!("{product} {}", version.version.unwrap_or_default()),
        cgroup_driver: info
            .cgroup_driver
            .map(|d| d.to_string())
            .unwrap_or_default(),
        runtime: info.default_runtime.unwrap_or_default(),
    })
}

/// Finds the local image the policy's reference names ([`crate::image_lookup`]) and checks it;
/// returns the image id to create from. A digest must equal the image id or one of its repo
/// digests.
pub async fn resolve_image(docker: &Docker, image: &ImageRef) -> Result<String, LaunchError> {
    let mut missing = Vec::new();
    let mut found = None;
    for lookup in crate::image_lookup::candidates(image) {
        match docker.inspect_image(&lookup).await {
            Ok(f) => {
                found = Some((lookup, f));
                break;
            }
            Err(e) => missing.push(format!("{lookup}: {e}")),
        }
    }
    let Some((lookup, found)) = found else {
        return Err(LaunchError::Config(format!(
            "image {image}: not found in the engine ({}); mcp-guard does not pull: load or pull \
             it first",
            missing.join("; ")
        )));
    };
    let id = found.id.clone().unwrap_or_default();
    let Some(want) = &image.digest else {
        return Ok(id);
    };
    let repo_digests: Vec<String> = found
        .repo_digests
        .unwrap_or_default()
        .iter()
        .filter_map(|d| d.rsplit_once('@').map(|(_, d)| d.to_string()))
        .collect();
    let id_digest = if id.starts_with("sha256:") {
        id.clone()
    } else {
        format!("sha256:{id}")
    };
    if *want == id_digest || repo_digests.contains(want) {
        Ok(id)
    } else {
        Err(LaunchError::Unenforceable(format!(
            "image {image}: the local image {lookup} does not match the pinned digest: it is id \
             {id_digest}, repo digests [{}]; refusing to launch (the image changed, or the pin \
             is wrong)",
            repo_digests.join(", ")
        )))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn engine_address_prefers_the_policy() {
        assert_eq!(engine_address(Some("unix:///x.sock")), "unix:///x.sock");
    }
}
