//! One container's life through the engine: create, attach to its stdio, find its process and
//! cgroup, wait for its exit, remove it.

use std::{
    path::{Path, PathBuf},
    time::Duration,
};

use bollard::{
    Docker,
    models::ContainerCreateBody,
    query_parameters::{
        AttachContainerOptions, CreateContainerOptions, RemoveContainerOptions,
        WaitContainerOptions,
    },
};
use futures_util::StreamExt;

use super::spec::{PROFILE_DIR, profile_file};

/// Force-removes a container (killing it). Retried for a moment: the engine may be cleaning the
/// container up itself right then (it just exited) and refuse in the meantime.
pub async fn remove(docker: &Docker, id: &str) -> Result<(), String> {
    let opts = RemoveContainerOptions {
        force: true,
        v: true,
        ..Default::default()
    };
    let mut attempt = 0;
    loop {
        match docker.remove_container(id, Some(opts.clone())).await {
            // Gone already counts as removed.
            Ok(())
            | Err(bollard::errors::Error::DockerResponseServerError {
                status_code: 404, ..
            }) => return Ok(()),
            Err(e) if attempt >= 20 => return Err(format!("removing container {id}: {e}")),
            Err(e) => {
                tracing::debug!("removing container {id} (attempt {attempt}): {e}");
                attempt += 1;
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }
    }
}

/// Creates the container; returns its id. The seccomp profile goes inline (Docker); when the
/// engine reads it as a file name instead (podman), it is written to a file and the create
/// retried with its path.
pub async fn create(
    docker: &Docker,
    mut body: ContainerCreateBody,
    name: &str,
) -> Result<String, String> {
    let opts = CreateContainerOptions {
        name: Some(name.to_string()),
        ..Default::default()
    };
    let first = docker
        .create_container(Some(opts.clone()), body.clone())
        .await;
    let err = match first {
        Ok(r) => return Ok(r.id),
        Err(e) => e.to_string(),
    };
    if !err.contains("seccomp profile") {
        return Err(format!("creating the container: {err}"));
    }
    let Some(opts_list) = body
        .host_config
        .as_mut()
        .and_then(|h| h.security_opt.as_mut())
    else {
        return Err(format!("creating the container: {err}"));
    };
    for opt in opts_list.iter_mut() {
        if let Some(json) = opt.strip_prefix("seccomp=") {
            let path = profile_file(json)
                .map_err(|e| format!("writing the seccomp profile under {PROFILE_DIR}: {e}"))?;
            *opt = format!("seccomp={}", path.display());
        }
    }
    docker
        .create_container(Some(opts), body)
        .await
        .map(|r| r.id)
        .map_err(|e| format!("creating the container: {e}"))
}

/// The leaf cgroups the engines make for container `id` below `parent` (podman, Docker).
pub fn leaf_candidates(parent: &Path, id: &str) -> Vec<PathBuf> {
    vec![parent.join(format!("libpod-{id}")), parent.join(id)]
}

/// Attaches to the container's stdio: (stdin writer, stdout reader, stderr reader, closed when
/// the output ends); exec carries stderr through its redactor.
/// Two attach connections: stdout/stderr on one, stdin alone on the other, so that closing the
/// stdin writer closes its whole connection and the engine closes the container's stdin
/// (`StdinOnce`); podman does not pass a half-close of a shared connection on as EOF.
pub async fn attach(
    docker: &Docker,
    id: &str,
) -> Result<
    (
        std::pin::Pin<Box<dyn tokio::io::AsyncWrite + Send>>,
        tokio::io::DuplexStream,
        tokio::io::DuplexStream,
        tokio::sync::oneshot::Receiver<()>,
    ),
    String,
> {
    let out_opts = AttachContainerOptions {
        stream: true,
        stdout: true,
        stderr: true,
        ..Default::default()
    };
    let out = docker
        .attach_container(id, Some(out_opts))
        .await
        .map_err(|e| format!("attaching to the container's output: {e}"))?;
    let in_opts = AttachContainerOptions {
        stream: true,
        stdin: true,
        ..Default::default()
    };
    let input = docker
        .attach_container(id, Some(in_opts))
        .await
        .map_err(|e| format!("attaching to the container's stdin: {e}"))?;
    // Only the writer is kept: when it is dropped the connection closes.
    drop(input.output);
    let (mut writer, reader) = tokio::io::duplex(256 * 1024);
    let (mut stderr, errors) = tokio::io::duplex(64 * 1024);
    let mut output = out.output;
    let (closed_tx, closed) = tokio::sync::oneshot::channel();
    tokio::spawn(async move {
        use tokio::io::AsyncWriteExt;
        while let Some(Ok(chunk)) = output.next().await {
            match chunk {
                bollard::container::LogOutput::StdOut { message }
                | bollard::container::LogOutput::Console { message } => {
                    if writer.write_all(&message).await.is_err() {
                        break;
                    }
                }
                bollard::container::LogOutput::StdErr { message } => {
                    let _ = stderr.write_all(&message).await;
                }
                bollard::container::LogOutput::StdIn { .. } => {}
            }
        }
        let _ = writer.shutdown().await;
        let _ = stderr.shutdown().await;
        let _ = closed_tx.send(());
    });
    Ok((input.input, reader, errors, closed))
}

/// The container's main pid (host namespace).
pub async fn pid(docker: &Docker, id: &str) -> Result<u32, String> {
    let c = docker
        .inspect_container(id, None)
        .await
        .map_err(|e| format!("inspecting the container: {e}"))?;
    c.state
        .and_then(|s| s.pid)
        .and_then(|p| u32::try_from(p).ok())
        .filter(|p| *p > 0)
        .ok_or_else(|| "the container has no running process".to_string())
}

/// The v2 cgroup of `pid`, below `v2root`.
pub fn v2_cgroup_of(pid: u32, v2root: &Path) -> Option<PathBuf> {
    let text = std::fs::read_to_string(format!("/proc/{pid}/cgroup")).ok()?;
    let rel = text.lines().find_map(|l| l.strip_prefix("0::"))?;
    Some(v2root.join(rel.trim_start_matches('/')))
}

/// Waits for the container to exit; its exit code. `output_closed` fires when its output
/// stream ends (normally: it exited); the engine's state is read then, which is quicker than
/// podman's polling wait, and the wait endpoint is the fallback.
pub async fn wait(
    docker: Docker,
    id: String,
    output_closed: tokio::sync::oneshot::Receiver<()>,
) -> Option<i32> {
    if output_closed.await.is_ok() {
        for _ in 0..50 {
            let Ok(c) = docker.inspect_container(&id, None).await else {
                break;
            };
            let state = c.state.unwrap_or_default();
            if state.running != Some(true) {
                return state.exit_code.and_then(|c| i32::try_from(c).ok());
            }
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    }
    let opts = WaitContainerOptions {
        condition: "not-running".into(),
    };
    let mut s = docker.wait_container(&id, Some(opts));
    match s.next().await {
        Some(Ok(r)) => i32::try_from(r.status_code).ok(),
        Some(Err(bollard::errors::Error::DockerContainerWaitError { code, .. })) => {
            i32::try_from(code).ok()
        }
        _ => None,
    }
}
