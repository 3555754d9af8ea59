//! What a session leaves behind, removed: the containers and cgroups of execs that are gone, and
//! a session's cgroup tree in every hierarchy.

use std::{
    collections::HashMap,
    io,
    path::{Path, PathBuf},
    time::{Duration, Instant},
};

use bollard::{Docker, query_parameters::ListContainersOptions};

use super::{LABEL, LABEL_EXEC_PID, remove};
use crate::cgroup;

/// Removes mcp-guard containers whose exec process is gone; returns their ids.
pub async fn reap_stale(docker: &Docker) -> Vec<String> {
    let mut removed = Vec::new();
    let opts = ListContainersOptions {
        all: true,
        filters: Some(HashMap::from([(
            "label".to_string(),
            vec![LABEL.to_string()],
        )])),
        ..Default::default()
    };
    // podman refuses the whole list while a container is mid-teardown: retry for a moment.
    let mut attempt = 0;
    let list = loop {
        match docker.list_containers(Some(opts.clone())).await {
            Ok(list) => break list,
            Err(e) if attempt >= 20 => {
                tracing::warn!("listing stale mcp-guard containers: {e}");
                return removed;
            }
            Err(e) => {
                tracing::debug!("listing containers (attempt {attempt}): {e}");
                attempt += 1;
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }
    };
    for c in list {
        let pid: Option<i32> = c
            .labels
            .as_ref()
            .and_then(|l| l.get(LABEL_EXEC_PID))
            .and_then(|p| p.parse().ok());
        tracing::debug!(
            "mcp-guard container {:?} of exec {pid:?}: {:?}",
            c.id,
            c.state
        );
        if pid.is_some_and(alive) {
            continue;
        }
        let Some(id) = c.id else { continue };
        match remove(docker, &id).await {
            Ok(()) => removed.push(id),
            Err(e) => tracing::warn!("stale container: {e}"),
        }
    }
    removed
}

/// Removes the session cgroups (with the container leaves below them, in v2 and v1) of execs
/// that are gone and whose cgroups are empty: what a `SIGKILLed` exec leaves. Run after
/// [`reap_stale`] removed their containers.
pub fn reap_stale_cgroups(mounts: &cgroup::Mounts) -> Vec<PathBuf> {
    let mut removed = Vec::new();
    let Some(v2) = &mounts.v2 else {
        return removed;
    };
    let Ok(entries) = std::fs::read_dir(v2.join(cgroup::PARENT)) else {
        return removed;
    };
    for entry in entries.flatten() {
        let path = entry.path();
        if !path.is_dir() {
            continue;
        }
        let name = entry.file_name().to_string_lossy().into_owned();
        let Some(pid) = cgroup::exec_pid(&name) else {
            continue;
        };
        if Path::new(&format!("/proc/{pid}")).exists() {
            continue;
        }
        // Only trees with container leaves (the jail's own reaper handles flat leaves), and
        // only when nothing runs there any more.
        let has_children =
            std::fs::read_dir(&path).is_ok_and(|d| d.flatten().any(|e| e.path().is_dir()));
        let populated = std::fs::read_to_string(path.join("cgroup.events"))
            .map_or(true, |t| t.lines().any(|l| l == "populated 1"));
        if has_children && !populated && remove_tree(mounts, &path).is_ok() {
            removed.push(path);
        }
    }
    removed
}

/// Whether `pid` runs (a zombie does not: it is a dead exec its parent has not reaped yet).
fn alive(pid: i32) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/stat")).is_ok_and(|stat| {
        // The state follows the parenthesised command name, which may contain anything.
        stat.rsplit_once(')')
            .and_then(|(_, rest)| rest.split_whitespace().next())
            .is_some_and(|state| state != "Z" && state != "X")
    })
}

/// Removes a cgroup directory and everything below it (deepest first), in the v2 hierarchy and
/// in every v1 hierarchy at the same relative path (runc makes those for the container).
pub fn remove_tree(mounts: &cgroup::Mounts, v2_dir: &Path) -> io::Result<()> {
    let mut dirs = vec![v2_dir.to_path_buf()];
    if let Some(v2root) = &mounts.v2
        && let Ok(rel) = v2_dir.strip_prefix(v2root)
    {
        for (_, m) in &mounts.v1 {
            dirs.push(m.join(rel));
        }
    }
    let mut first_err = None;
    for d in dirs {
        if let Err(e) = remove_below(&d)
            && first_err.is_none()
        {
            first_err = Some(e);
        }
    }
    first_err.map_or(Ok(()), Err)
}

fn remove_below(dir: &Path) -> io::Result<()> {
    if !dir.exists() {
        return Ok(());
    }
    for entry in std::fs::read_dir(dir)?.flatten() {
        if entry.file_type().is_ok_and(|t| t.is_dir()) {
            remove_below(&entry.path())?;
        }
    }
    let deadline = Instant::now() + Duration::from_secs(2);
    loop {
        match std::fs::remove_dir(dir) {
            Ok(()) => return Ok(()),
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(()),
            Err(e) if e.raw_os_error() == Some(libc::EBUSY) && Instant::now() < deadline => {
                std::thread::sleep(Duration::from_millis(5));
            }
            Err(e) => {
                return Err(io::Error::new(
                    e.kind(),
                    format!("removing cgroup {}: {e}", dir.display()),
                ));
            }
        }
    }
}
