//! The session's analysis ([`mcp_guard_analysis`]) on exec's side: started for every session,
//! with or without the kernel guard, fed through the [`Link`] in [`super::SessionInfo`] (the
//! proxy's sink and the kernel guard send to it), and its effects carried out here: records to
//! the store, a kill through the session's cgroup, a denial to the proxy.

use std::{
    collections::HashSet,
    path::{Path, PathBuf},
    sync::{Arc, Mutex},
};

use tokio::{
    sync::{mpsc, oneshot},
    task::JoinHandle,
};

use super::say;
use mcp_guard_analysis::{
    Effect, InputSender, Outcome, Pipeline, PipelineConfig,
    detect::{DetectConfig, Detector, Profile},
    input, pipeline,
};
use mcp_guard_model::names::StateKey;
use mcp_guard_policy::Policy;
use mcp_guard_proxy::CallDenial;
use mcp_guard_store::StoreHandle;

/// Where a session's parts reach its analysis: the input (the proxy's sink, the kernel guard)
/// and, for the proxy, the calls the analysis fails. Cloned into every seam with the
/// [`super::SessionInfo`].
#[derive(Clone, Debug)]
pub struct Link {
    inputs: InputSender,
    denials: Arc<Mutex<Option<mpsc::UnboundedReceiver<CallDenial>>>>,
}

impl Link {
    /// Where the session's inputs go.
    pub fn inputs(&self) -> InputSender {
        self.inputs.clone()
    }

    /// The proxy's end of the denials (once; `None` afterwards).
    pub fn take_denials(&self) -> Option<mpsc::UnboundedReceiver<CallDenial>> {
        self.denials
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .take()
    }
}

/// What the session's analysis starts from.
#[derive(Debug)]
pub struct Setup<'a> {
    /// The policy in force (its `[detect]` rules).
    pub policy: &'a Policy,
    /// Server name.
    pub server: &'a str,
    /// Session id.
    pub session: &'a str,
    /// The server user's home (`~/` in the policy's globs).
    pub home: &'a Path,
    /// The state dir (learned profiles).
    pub state_dir: &'a Path,
    /// Where records go.
    pub store: StoreHandle,
    /// The session's cgroup, killed when a rule's action is `kill` (empty: none).
    pub cgroup_dir: PathBuf,
    /// `--observe`.
    pub observe: bool,
}

/// A running analysis, ended with [`Running::finish`].
#[derive(Debug)]
pub struct Running {
    stop: oneshot::Sender<()>,
    task: JoinHandle<Outcome>,
    state_dir: PathBuf,
    key: StateKey,
}

/// Starts the session's analysis.
pub fn start(setup: Setup<'_>) -> (Running, Link) {
    let key = StateKey {
        policy: setup.policy.name.clone(),
        server: setup.server.to_string(),
    };
    let profile = Profile::load(setup.state_dir, &key).unwrap_or_else(|e| {
        say(&format!("WARNING: {e}; starting from an empty profile"));
        Profile::default()
    });
    let detector = Detector::new(
        DetectConfig::from_policy(setup.policy, setup.home),
        setup.server,
        setup.session,
        profile,
        HashSet::new(),
    );
    let pipeline = Pipeline::new(PipelineConfig {
        server: setup.server.to_string(),
        session: setup.session.to_string(),
        detector,
        observe: setup.observe,
    });
    let (inputs, received) = input::channel();
    let (deny, denials) = mpsc::unbounded_channel();
    let (stop, stopped) = oneshot::channel();
    let (store, cgroup_dir) = (setup.store, setup.cgroup_dir);
    let carry_out = move |effect| match effect {
        // A full queue or a failing disk is counted by the store and reported at exit.
        Effect::Store(record) => {
            let _ = store.send(*record);
        }
        Effect::Kill { rule, summary } => kill(&cgroup_dir, &rule, &summary),
        Effect::DenyCall { call_id, reason } => {
            // The proxy is gone once the session is over: nothing left to fail.
            let _ = deny.send(CallDenial { call_id, reason });
        }
    };
    let task = tokio::spawn(pipeline::run(pipeline, received, stopped, carry_out));
    let running = Running {
        stop,
        task,
        state_dir: setup.state_dir.to_path_buf(),
        key,
    };
    let link = Link {
        inputs,
        denials: Arc::new(Mutex::new(Some(denials))),
    };
    (running, link)
}

impl Running {
    /// Ends the analysis once nothing more can come (the server's processes are gone, the
    /// proxy is done and the kernel guard has flushed): what is queued is taken, everything
    /// held released, a learned profile saved; says what was lost.
    pub async fn finish(self) {
        let _ = self.stop.send(());
        let outcome = match self.task.await {
            Ok(outcome) => outcome,
            Err(e) => {
                say(&format!("the session's analysis failed: {e}"));
                return;
            }
        };
        tracing::debug!(
            "analysis: {} kernel events and {} alerts recorded",
            outcome.events,
            outcome.alerts
        );
        if outcome.dropped_inputs > 0 {
            say(&format!(
                "WARNING: the session's analysis fell behind: {} of the proxy's call facts, \
                 tool listings or findings were not analysed (their calls are still recorded)",
                outcome.dropped_inputs
            ));
        }
        if let Some(learned) = &outcome.learned {
            save_profile(&self.state_dir, &self.key, learned);
        }
    }
}

/// A rule whose action is `kill` fired: kills the server's whole tree through its cgroup.
fn kill(cgroup_dir: &Path, rule: &str, summary: &str) {
    if cgroup_dir.as_os_str().is_empty() {
        say(&format!(
            "WARNING: {summary} ({rule}): the server cannot be killed: it has no cgroup (not root)"
        ));
        return;
    }
    say(&format!("{summary} ({rule}): killing the server"));
    if let Err(e) = mcp_guard_launch::cgroup::kill_all(cgroup_dir) {
        say(&format!("killing the server: {e}"));
    }
}

/// Merges `learned` into the profile on disk (another session of the server may have saved
/// since this one loaded it) and saves it.
fn save_profile(state_dir: &Path, key: &StateKey, learned: &Profile) {
    let path = Profile::path(state_dir, key);
    let mut profile = Profile::load(state_dir, key).unwrap_or_else(|e| {
        say(&format!(
            "WARNING: {e}; replacing it with what this session learned"
        ));
        Profile::default()
    });
    profile.merge(learned);
    match profile.save(state_dir, key) {
        Ok(()) => tracing::info!("learned profile saved to {}", path.display()),
        Err(e) => say(&format!(
            "WARNING: cannot save the learned profile {}: {e}",
            path.display()
        )),
    }
}
