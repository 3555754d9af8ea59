//! Which command gets the policy's `[secrets]`: only the one the policy fixes. Whoever may use a
//! policy chooses the command after `--`; if any command got the secrets, `sh -c 'echo $TOKEN'`
//! would read them. A command is fixed by the policy's `command` (the same program path and the
//! same arguments), or, without one, by `[pin]`: the pinned program whose script argument is the
//! pinned entry script ([`mcp_guard_supply::argv`]). With a container, the image's own command is
//! fixed by the image the policy names. And no variable of the server's environment may load
//! other code into it. Any other command runs without the secrets, and is told which.

use std::path::Path;

use mcp_guard_policy::Policy;

/// Why a command does not get the secrets (for people; names variables, never values).
pub type NotFixed = String;

/// The jail: whether `argv` (its program found at `program`) is the command `policy` fixes.
/// `pinned`: the pins verified and the pinned argv check passed. Returns the argv to run: the
/// policy's `command` as written when it matched (its program is then run by the policy's
/// path, however the caller named the same file), else `argv`.
pub fn jail(
    policy: &Policy,
    program: &Path,
    argv: &[String],
    pinned: bool,
    env: &[(String, String)],
) -> Result<Vec<String>, NotFixed> {
    let fixed = match &policy.command {
        Some(cmd) => {
            let same = cmd
                .first()
                .is_some_and(|p| same_file(Path::new(p), program))
                && argv.get(1..) == cmd.get(1..);
            if !same {
                return Err(format!(
                    "the command is not the one policy {} fixes ({})",
                    policy.name,
                    shell_words(cmd)
                ));
            }
            cmd.clone()
        }
        None if pinned => argv.to_vec(),
        None => {
            return Err(format!(
                "policy {} fixes no command: give it `command = [...]` (or pin the server \
                 with [pin])",
                policy.name
            ));
        }
    };
    clean_env(policy, env)?;
    Ok(fixed)
}

/// The container backend: `requested` is exec's command (empty: the image's own, or the
/// policy's `command`).
pub fn container(
    policy: &Policy,
    requested: &[String],
    env: &[(String, String)],
) -> Result<(), NotFixed> {
    let fixed = requested.is_empty() || policy.command.as_deref() == Some(requested);
    if !fixed {
        return Err(match &policy.command {
            Some(cmd) => format!(
                "the command is not the one policy {} fixes ({})",
                policy.name,
                shell_words(cmd)
            ),
            None => format!(
                "the command is not the image's own, and policy {} fixes no other \
                 (`command = [...]`)",
                policy.name
            ),
        });
    }
    clean_env(policy, env)
}

/// The message for stderr when `names` are withheld.
pub fn withheld(policy: &Policy, why: &str) -> String {
    let names: Vec<&str> = policy.secrets.keys().map(String::as_str).collect();
    format!(
        "secrets {} withheld: {why}; the server runs without them (`mcp-guard exec --policy {} \
         --` with no command runs the policy's command)",
        names.join(", "),
        policy
            .source
            .as_ref()
            .map_or_else(|| policy.name.clone(), |p| p.display().to_string()),
    )
}

/// No variable that loads code (a preload, another module path) in the server's environment.
fn clean_env(policy: &Policy, env: &[(String, String)]) -> Result<(), NotFixed> {
    let loading = mcp_guard_supply::argv::env_refusals(&policy.pin, env);
    if loading.is_empty() {
        Ok(())
    } else {
        Err(format!(
            "the server's environment could load other code into it: {}",
            loading.join("; ")
        ))
    }
}

/// The same path, or two paths to the same file (`/bin/sh` and `/usr/bin/sh`).
fn same_file(a: &Path, b: &Path) -> bool {
    a == b
        || a.canonicalize()
            .is_ok_and(|a| b.canonicalize().is_ok_and(|b| a == b))
}

/// An argv as one would type it (for messages).
fn shell_words(argv: &[String]) -> String {
    argv.iter()
        .map(|a| {
            if !a.is_empty()
                && a.chars()
                    .all(|c| c.is_ascii_alphanumeric() || "/._-=:,+@".contains(c))
            {
                a.clone()
            } else {
                format!("'{}'", a.replace('\'', "'\\''"))
            }
        })
        .collect::<Vec<_>>()
        .join(" ")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn policy(text: &str) -> Policy {
        mcp_guard_policy::parse(&format!("name = \"p\"\n{text}"), None).expect("valid policy")
    }

    fn argv(v: &[&str]) -> Vec<String> {
        v.iter().map(std::string::ToString::to_string).collect()
    }

    #[test]
    fn only_the_fixed_command_gets_the_secrets() {
        let p = policy("command = [\"/usr/bin/node\", \"/srv/x/index.js\"]\n");
        let node = Path::new("/usr/bin/node");
        // `node` found on the PATH is the same program: it runs the policy's argv.
        assert_eq!(
            jail(&p, node, &argv(&["node", "/srv/x/index.js"]), false, &[]),
            Ok(argv(&["/usr/bin/node", "/srv/x/index.js"]))
        );
        let e = jail(&p, node, &argv(&["node", "-e", "1"]), false, &[]).expect_err("other");
        assert!(e.contains("/usr/bin/node /srv/x/index.js"), "{e}");
        let sh = Path::new("/bin/sh");
        assert!(jail(&p, sh, &argv(&["sh", "-c", "echo $T"]), true, &[]).is_err());
        // No command: only a pinned launch.
        let p = policy("");
        assert!(jail(&p, sh, &argv(&["sh"]), false, &[]).is_err());
        assert!(jail(&p, sh, &argv(&["sh"]), true, &[]).is_ok());
        // A preload in the environment could run anything with them.
        let p = policy("command = [\"/usr/bin/node\", \"/srv/x/index.js\"]\n");
        let env = vec![(
            "NODE_OPTIONS".to_string(),
            "--require /tmp/e.js".to_string(),
        )];
        let e = jail(
            &p,
            node,
            &argv(&["/usr/bin/node", "/srv/x/index.js"]),
            false,
            &env,
        )
        .expect_err("preload");
        assert!(e.contains("NODE_OPTIONS: --require"), "{e}");
    }

    #[test]
    fn a_container_gets_them_for_its_own_command() {
        let p = policy("");
        assert!(container(&p, &[], &[]).is_ok());
        assert!(container(&p, &argv(&["sh", "-c", "env"]), &[]).is_err());
        let p = policy("command = [\"/usr/bin/node\", \"/srv/x/index.js\"]\n");
        assert!(container(&p, &argv(&["/usr/bin/node", "/srv/x/index.js"]), &[]).is_ok());
        assert!(container(&p, &argv(&["/usr/bin/node"]), &[]).is_err());
    }
}
