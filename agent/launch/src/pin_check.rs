//! The policy's `[pin]` table checked before anything runs: the files, and that the pinned
//! program runs the pinned script.

use super::{LaunchError, LaunchRequest};
use mcp_guard_policy::Policy;

/// Verifies the policy's `[pin]` table before anything runs; a mismatch refuses the launch
/// (exit 77) naming each changed file, or under observe is only said. Returns the executable's
/// pinned digest for the jail to check again on the fd it execs.
pub(super) fn check_pins(
    policy: &Policy,
    program: &std::path::Path,
    req: &LaunchRequest<'_>,
    warnings: &mut Vec<String>,
) -> Result<Option<String>, LaunchError> {
    let pins = &policy.pin;
    if pins.is_empty() && pins.signature.is_none() {
        return Ok(None);
    }
    let observe = req.observe;
    let Err(problems) = mcp_guard_supply::verify(pins, program, req.state_dir) else {
        return Ok(pins.executable.clone());
    };
    let list: Vec<String> = problems.iter().map(|p| format!("  {p}")).collect();
    let msg = format!(
        "supply-chain pins of policy {} do not verify:\n{}",
        policy.name,
        list.join("\n")
    );
    if observe {
        warnings.push(format!("NOT ENFORCED (observe): {msg}"));
        Ok(None)
    } else {
        Err(LaunchError::Unenforceable(format!(
            "{msg}\nrefusing to launch (nothing ran); if the change is intended, re-pin with \
             `mcp-guard policy pin -- COMMAND` and update [pin]"
        )))
    }
}

/// With `[pin]`, checks that the pinned program runs the pinned script and nothing else
/// ([`mcp_guard_supply::argv`]): refused (exit 77) naming what, or under observe only said.
/// `Some(variables to add)` when it passed; `None` without pins or when it failed under
/// observe.
pub(super) fn check_pinned_argv(
    policy: &Policy,
    program: &std::path::Path,
    argv: &[String],
    env: &[(String, String)],
    req: &LaunchRequest<'_>,
    warnings: &mut Vec<String>,
) -> Result<Option<Vec<(String, String)>>, LaunchError> {
    use mcp_guard_supply::argv;
    if policy.pin.is_empty() {
        return Ok(None);
    }
    match argv::check(&policy.pin, &argv::Launch { program, argv, env }) {
        Ok(checked) => Ok(Some(checked.env)),
        Err(refused) => {
            let msg = format!(
                "policy {} pins what runs, and this launch would run something else:\n{}",
                policy.name,
                refused
                    .iter()
                    .map(|r| format!("  {r}"))
                    .collect::<Vec<_>>()
                    .join("\n")
            );
            if req.observe {
                warnings.push(format!("NOT ENFORCED (observe): {msg}"));
                Ok(None)
            } else {
                Err(LaunchError::Unenforceable(format!(
                    "{msg}\nrefusing to launch (nothing ran): run the pinned entry script \
                     itself, without inline code or preloads"
                )))
            }
        }
    }
}
