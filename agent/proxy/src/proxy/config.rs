//! What the proxy is told: [`ProxyConfig`] (plain data, filled from the policy by `exec`) and
//! the standard interceptor chain built from it.

use crate::{
    frame,
    interceptors::{Chain, ToolAccess, ToolRules},
};

/// Everything the proxy needs from the policy, as plain data. `exec` fills it from the policy;
/// [`ProxyConfig::new`] is transparent apart from secret-shape detection and the scanner.
#[derive(Clone, Debug)]
pub struct ProxyConfig {
    /// Server name (pins, records, messages).
    pub server: String,
    /// Session id for records.
    pub session: String,
    /// Largest accepted message (one line) in bytes, either direction.
    pub max_message_bytes: usize,
    /// Tool allowlist/denylist and per-client scoping.
    pub tools: ToolRules,
    /// Secret values and shapes, PII.
    pub secrets: crate::secrets::SecretConfig,
    /// Tool-definition pinning (off when `None`).
    pub pins: Option<crate::pins::PinConfig>,
    /// The poisoning scanner over everything the server sends (off when `None`).
    pub scan: Option<crate::scan::ScanConfig>,
    /// Argument checks on `tools/call`.
    pub args: crate::args::ArgConfig,
    /// An external interceptor command (off when `None`).
    pub hook: Option<crate::hook::HookConfig>,
    /// Observe only (`--observe`): run every interceptor, report what it would have done as an
    /// `observe` finding, but forward the original message.
    pub observe: bool,
    /// Measure how long each message spends inside the proxy (benchmarks): see
    /// [`ProxyOutcome::client_to_server`](super::ProxyOutcome::client_to_server). Off, nothing is measured.
    pub timing: bool,
    /// What the history keeps of each call's arguments and result.
    pub audit: crate::audit::AuditConfig,
}

impl ProxyConfig {
    /// Defaults for `server`: no tool rules, no pins, secret shapes detected, the scanner with
    /// its default actions.
    pub fn new(server: &str) -> Self {
        Self {
            server: server.into(),
            session: mcp_guard_model::new_session_id(),
            max_message_bytes: frame::DEFAULT_MAX_MESSAGE_BYTES,
            tools: ToolRules {
                policy: server.into(),
                ..ToolRules::default()
            },
            secrets: crate::secrets::SecretConfig::default(),
            pins: None,
            scan: Some(crate::scan::ScanConfig::default()),
            args: crate::args::ArgConfig::default(),
            hook: None,
            observe: false,
            timing: false,
            audit: crate::audit::AuditConfig::default(),
        }
    }
}

impl ProxyConfig {
    /// The configuration `exec` derives from a policy: `[tools]` (allow/deny, `[tools.clients]`
    /// scoping, `[tools.args]` rules, `validate_schema`), the `[mcp]` table (message size,
    /// poisoned descriptions, secret shapes, PII, the external hook), the policy's secrets
    /// (their resolved `values`, by variable name) redacted from server output, and tool pinning
    /// in `<state_dir>/pins/<policy>`.
    pub fn from_policy(
        policy: &mcp_guard_policy::Policy,
        server: &str,
        state_dir: &std::path::Path,
        secret_values: Vec<(String, String)>,
    ) -> Self {
        use crate::args::{ArgCheck, ArgRule};
        use crate::scan::{interceptor::Action, walk::Controls};
        use mcp_guard_policy::{ArgCheck as P, ControlAction as C, PoisonAction as PP};
        let mut c = Self::new(server);
        let mcp = &policy.mcp;
        c.max_message_bytes = usize::try_from(mcp.max_message_size).unwrap_or(usize::MAX);
        c.tools = ToolRules {
            policy: policy.name.clone(),
            allow: policy.tools.allow.clone(),
            deny: policy.tools.deny.clone(),
            per_client: crate::client_scope::ClientScopes::new(&policy.tools.clients),
            client_exe: None,
        };
        c.args = crate::args::ArgConfig {
            validate_schema: policy.tools.validate_schema,
            rules: policy
                .tools
                .args
                .iter()
                .map(|(tool, rules)| {
                    let rules = rules
                        .iter()
                        .map(|r| ArgRule {
                            arg: r.arg.clone(),
                            check: match &r.check {
                                P::Regex(re) => ArgCheck::Regex(re.clone()),
                                P::Enum(v) => ArgCheck::Enum(v.clone()),
                                P::PathPrefix(p) => ArgCheck::PathPrefix(p.clone()),
                                P::MaxLength(n) => ArgCheck::MaxLen(*n),
                            },
                        })
                        .collect();
                    (tool.clone(), rules)
                })
                .collect(),
        };
        c.secrets = crate::secrets::SecretConfig::for_policy(mcp, secret_values);
        c.pins = Some(crate::pins::PinConfig {
            state_dir: state_dir.to_path_buf(),
            policy: policy.name.clone(),
        });
        let action = |a: PP| match a {
            PP::Block => Action::Block,
            PP::Strip => Action::Strip,
            PP::Alert => Action::Alert,
            PP::Fail => Action::Fail,
        };
        c.scan = Some(crate::scan::ScanConfig {
            definitions: action(mcp.poisoned_descriptions),
            schema: action(mcp.poisoned_schemas),
            annotations: action(mcp.poisoned_annotations),
            prompts: action(mcp.poisoned_prompts),
            results: action(mcp.poisoned_results),
            controls: match mcp.control_characters {
                C::Strip => Controls::Strip,
                C::Visible => Controls::Visible,
                C::Keep => Controls::Keep,
            },
            state: mcp_guard_model::names::StateKey::new(&policy.name, server)
                .ok()
                .map(|k| (state_dir.to_path_buf(), k)),
            foreign: Vec::new(),
        });
        c.hook = mcp.hook.as_ref().map(|h| crate::hook::HookConfig {
            command: h.command.clone(),
            args: h.args.clone(),
            timeout: std::time::Duration::from_millis(h.timeout_ms),
            results: h.results,
            fail_open: !h.fail_closed,
        });
        c
    }
}

/// Builds the standard interceptor chain for `config`: tool access, pins (of definitions as the
/// server sent them), the poisoning scanner, argument checks, secrets, then the external hook
/// (which so never sees unredacted results).
pub fn build_chain(config: &ProxyConfig) -> anyhow::Result<Chain> {
    let mut chain = Chain::new();
    chain.push(Box::new(ToolAccess::new(config.tools.clone())));
    if let Some(pins) = &config.pins {
        chain.push(Box::new(crate::pins::PinInterceptor::open(
            &config.server,
            pins,
        )?));
    }
    if let Some(scan) = &config.scan {
        chain.push(Box::new(crate::scan::ScanInterceptor::new(scan.clone())));
    }
    chain.push(Box::new(crate::args::ArgInterceptor::new(
        config.args.clone(),
    )));
    chain.push(Box::new(crate::secrets::SecretInterceptor::new(
        &config.secrets,
    )?));
    if let Some(hook) = &config.hook {
        chain.push(Box::new(crate::hook::ExternalHook::new(hook.clone())));
    }
    Ok(chain)
}
