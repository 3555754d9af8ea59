//! One session with the container backend ([`launch::container`]): the same recording, guard,
//! pump and supervision as the jail, the server in a container whose cgroup is below the
//! session's.

use std::{any::Any, io, path::Path};

use super::{
    ExecArgs, Hooks, Recording, SecretValues, SessionInfo, analysis,
    history::{report_store, started_record},
    redaction::{redaction, warn_passthrough},
    refused, say,
    state_gate::refused_by_state,
    stderr,
    supervise::{KillTree, Signals, drain_stderr, supervise},
};
use crate::exit_codes::{EXIT_POLICY, EXIT_UNENFORCEABLE};
use mcp_guard_launch::{self as launch, LaunchRequest};
use mcp_guard_model::names::StateKey;
use mcp_guard_model::{SessionRecord, Timestamp};
use mcp_guard_policy::Policy;

/// [`super::jail_session::run`] with the container backend ([`launch::container`]): the same recording, guard,
/// pump and supervision, the server in a container whose cgroup is below the session's.
pub(super) async fn run(
    args: ExecArgs,
    policy: Policy,
    (server, observe): (String, bool),
    recording: Recording,
    mut hooks: Hooks,
    signals: Signals<'_>,
) -> i32 {
    use launch::container as ctr;
    let Recording {
        session,
        store,
        state_dir,
    } = recording;
    if !policy.pin.is_empty() || policy.pin.signature.is_some() {
        // The pins name host files; a container's content is pinned by its image digest.
        say(
            "[pin] applies to the jail; with backend = \"container\" the image digest pins \
             what runs: remove [pin] from the policy (refusing to launch rather than ignore it)",
        );
        return i32::from(EXIT_POLICY);
    }
    let req = LaunchRequest {
        policy: &policy,
        server: &server,
        command: &args.command,
        observe,
        state_dir: None,
        caller: args.caller.as_ref(),
    };
    let prepared = match ctr::prepare(&req, &session).await {
        Ok(p) => p,
        Err(e) => return refused(&e),
    };
    for w in &prepared.warnings {
        say(&format!("WARNING: {w}"));
    }
    let key = StateKey {
        policy: policy.name.clone(),
        server: server.clone(),
    };
    warn_passthrough(args.passthrough, &prepared.secrets);
    let (store, stderr_lines) = redaction(&policy, &prepared.secrets, store);
    let refused = refused_by_state(&state_dir, &key).or_else(|| {
        stderr_lines
            .is_none()
            .then_some(i32::from(EXIT_UNENFORCEABLE))
    });
    if let Some(code) = refused {
        let cleaned = launch::cgroup::Mounts::discover()
            .and_then(|mounts| ctr::remove_tree(&mounts, prepared.cgroup.v2_dir()));
        if let Err(e) = cleaned {
            say(&format!("cleanup: {e}"));
        }
        return code;
    }
    let started = started_record(
        &session,
        &server,
        prepared.body.cmd.clone().unwrap_or_default(),
        &policy,
        observe,
    );
    store.send(started.clone());
    let audit = crate::history::audit_config(&policy.audit, &args.audit);
    let (analysis, link) = analysis::start(analysis::Setup {
        policy: &policy,
        server: &server,
        session: &session,
        home: &prepared.home,
        state_dir: &state_dir,
        store: store.clone(),
        cgroup_dir: prepared.cgroup.v2_dir().to_path_buf(),
        observe,
    });
    let mut info = SessionInfo {
        server,
        policy,
        cgroup_dir: prepared.cgroup.v2_dir().to_path_buf(),
        cgroup_id: prepared.cgroup.id().unwrap_or(0),
        observe,
        helper_pid: 0,
        session: session.clone(),
        home: prepared.home.clone(),
        store: store.clone(),
        state_dir,
        analysis: link,
        member_cgroups: Vec::new(),
        client_exe: args.client_exe.clone(),
        audit,
        // The container's own network namespace and mounts are not the jail's: as before, the
        // unix programs are what judge its sockets.
        unix_programs: true,
    };
    let finish = hooks.finish.take();
    let name = format!("mcp-guard-{session}");
    let (code, id) =
        drive_container(&prepared, &mut info, hooks, (&name, stderr_lines), signals).await;
    if let Some(id) = id
        && let Err(e) = ctr::remove(&prepared.docker, &id).await
    {
        say(&format!("cleanup: {e}"));
    }
    let cleaned = launch::cgroup::kill_all(&info.cgroup_dir).and_then(|()| {
        let mounts = launch::cgroup::Mounts::discover()?;
        ctr::remove_tree(&mounts, &info.cgroup_dir)
    });
    if let Err(e) = cleaned {
        say(&format!("cleanup: {e}"));
    }
    if let Some(finish) = finish {
        finish().await;
    }
    analysis.finish().await;
    store.send(SessionRecord {
        ended_at: Some(Timestamp::now()),
        exit_status: Some(code),
        ..started
    });
    report_store(&store);
    code
}

/// Creates, guards, attaches and starts the container, then supervises it. Returns exec's status
/// and the container id when one was created (the caller removes it).
async fn drive_container(
    prepared: &launch::container::ContainerPrepared,
    info: &mut SessionInfo,
    hooks: Hooks,
    (name, stderr_lines): (&str, Option<stderr::LineRedactor>),
    signals: Signals<'_>,
) -> (i32, Option<String>) {
    use launch::container as ctr;
    let fail = |msg: String| {
        say(&msg);
        i32::from(EXIT_UNENFORCEABLE)
    };
    let docker = &prepared.docker;
    let id = match ctr::create(docker, prepared.body.clone(), name).await {
        Ok(id) => id,
        Err(e) => return (fail(e), None),
    };
    let leaves = ctr::leaf_candidates(&info.cgroup_dir, &id);
    for leaf in &leaves {
        if let Err(e) = std::fs::create_dir(leaf)
            && e.kind() != io::ErrorKind::AlreadyExists
        {
            return (
                fail(format!("creating cgroup {}: {e}", leaf.display())),
                Some(id),
            );
        }
    }
    info.member_cgroups.clone_from(&leaves);
    // The seam: the cgroups exist, nothing of the server runs yet.
    let _guard: Option<Box<dyn Any>> = match hooks.attach {
        Some(attach) => match attach(info.clone()).await {
            Ok(g) => Some(g),
            Err(e) => {
                return (
                    fail(format!(
                        "kernel guard: {e}\nrefusing to launch (fail closed)"
                    )),
                    Some(id),
                );
            }
        },
        None => None,
    };
    let (input, output, errors, output_closed) = match ctr::attach(docker, &id).await {
        Ok(io) => io,
        Err(e) => return (fail(e), Some(id)),
    };
    let stderr_task =
        stderr_lines.map(|lines| tokio::spawn(stderr::carry(errors, tokio::io::stderr(), lines)));
    // podman's attach already starts a created container: 304 (already started) is fine.
    match docker.start_container(&id, None).await {
        Ok(())
        | Err(bollard::errors::Error::DockerResponseServerError {
            status_code: 304, ..
        }) => {}
        Err(e) => return (fail(format!("starting the container: {e}")), Some(id)),
    }
    // The container must be where the guard looks (a short-lived server may be gone already).
    if let Ok(pid) = ctr::pid(docker, &id).await {
        info.helper_pid = pid;
        let v2root = info
            .cgroup_dir
            .parent()
            .and_then(Path::parent)
            .map(Path::to_path_buf)
            .unwrap_or_default();
        match ctr::v2_cgroup_of(pid, &v2root) {
            Some(cg) if leaves.contains(&cg) => {}
            Some(cg) => {
                return (
                    fail(format!(
                        "the engine put the container in cgroup {}, not one mcp-guard registered \
                         ({}): its events would not be seen; refusing to run it (fail closed)",
                        cg.display(),
                        leaves
                            .iter()
                            .map(|l| l.display().to_string())
                            .collect::<Vec<_>>()
                            .join(", ")
                    )),
                    Some(id),
                );
            }
            None => {}
        }
    }
    let secrets = SecretValues(prepared.secrets.clone());
    let exit = Box::pin(ctr::wait(docker.clone(), id.clone(), output_closed));
    let (kill_docker, kill_id) = (docker.clone(), id.clone());
    let kill: KillTree = Box::new(move || {
        Box::pin(async move {
            if let Err(e) = ctr::remove(&kill_docker, &kill_id).await {
                say(&format!("cleanup: {e}"));
            }
        })
    });
    let code = supervise(
        info,
        hooks.pump,
        (Box::new(input), Box::new(output)),
        secrets,
        exit,
        kill,
        signals,
    )
    .await;
    drain_stderr(stderr_task).await;
    (code, Some(id))
}
