//! The external interceptor hook: a command run per `tools/call` (and optionally per result) with
//! the message as JSON on stdin; its answer on stdout allows, denies or replaces the message.
//!
//! stdin: `{"direction": "request"|"response", "server", "client", "method", "tool", "message"}`
//! stdout: `{"decision": "allow"}` | `{"decision": "deny", "reason": "..."}` |
//! `{"decision": "replace", "message": {...}, "reason": "..."}`.
//! A timeout, a failure to run, a non-zero exit or an unreadable answer denies (fail closed)
//! unless `fail_open` is set.
//!
//! The hook runs synchronously inside the chain (the proxy's message path waits for it), so its
//! timeout bounds the added latency of each call it sees.

use std::{
    io::{Read, Write},
    path::PathBuf,
    process::{Command, Stdio},
    time::{Duration, Instant},
};

use serde_json::{Value, json};

use super::interceptors::{Ctx, Denial, InterceptOutcome, Interceptor, MsgKind, POLICY_DENIED};

/// External hook settings (plain data).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct HookConfig {
    /// The program.
    pub command: PathBuf,
    /// Its arguments.
    pub args: Vec<String>,
    /// How long one answer may take.
    pub timeout: Duration,
    /// Also send `tools/call` results (not only requests).
    pub results: bool,
    /// Let the message through when the hook fails (default: deny).
    pub fail_open: bool,
}

/// The external-hook interceptor.
pub struct ExternalHook {
    config: HookConfig,
}

impl ExternalHook {
    /// A hook running `config.command`.
    pub fn new(config: HookConfig) -> Self {
        Self { config }
    }

    fn ask(&self, input: &Value) -> Result<Value, String> {
        let mut child = Command::new(&self.config.command)
            .args(&self.config.args)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .map_err(|e| format!("cannot run {}: {e}", self.config.command.display()))?;
        let mut stdin = child.stdin.take().ok_or("no stdin")?;
        let body = serde_json::to_vec(input).map_err(|e| e.to_string())?;
        // A hook that does not read its input must not block us: write from a thread.
        let writer = std::thread::spawn(move || {
            let _ = stdin.write_all(&body);
        });
        let mut stdout = child.stdout.take().ok_or("no stdout")?;
        let reader = std::thread::spawn(move || {
            let mut out = Vec::new();
            let _ = stdout.read_to_end(&mut out);
            out
        });
        let deadline = Instant::now() + self.config.timeout;
        let status = loop {
            match child.try_wait() {
                Ok(Some(s)) => break s,
                Ok(None) if Instant::now() >= deadline => {
                    let _ = child.kill();
                    let _ = child.wait();
                    return Err(format!(
                        "no answer within {} ms",
                        self.config.timeout.as_millis()
                    ));
                }
                Ok(None) => std::thread::sleep(Duration::from_millis(1)),
                Err(e) => return Err(e.to_string()),
            }
        };
        let _ = writer.join();
        let out = reader.join().map_err(|_| "reader thread failed")?;
        if !status.success() {
            return Err(format!("exited with {status}"));
        }
        serde_json::from_slice(&out).map_err(|e| format!("unreadable answer: {e}"))
    }

    fn apply(&self, ctx: &mut Ctx<'_>, msg: &mut Value, direction: &str) -> InterceptOutcome {
        let input = json!({
            "direction": direction,
            "server": ctx.server,
            "client": ctx.client_name,
            "method": ctx.method,
            "tool": ctx.tool,
            "message": msg,
        });
        let answer = match self.ask(&input) {
            Ok(a) => a,
            Err(e) => {
                let why = format!("external hook {}: {e}", self.config.command.display());
                ctx.report("hook-failed", ctx.tool, why.clone());
                return if self.config.fail_open {
                    InterceptOutcome::Pass
                } else {
                    InterceptOutcome::Deny(Denial::policy(format!(
                        "mcp-guard: refused (fail closed): {why}"
                    )))
                };
            }
        };
        let reason = answer
            .get("reason")
            .and_then(Value::as_str)
            .unwrap_or("no reason given")
            .to_string();
        match answer.get("decision").and_then(Value::as_str) {
            Some("allow") => InterceptOutcome::Pass,
            Some("deny") => InterceptOutcome::Deny(Denial {
                code: POLICY_DENIED,
                message: format!("mcp-guard: refused by the external hook: {reason}"),
            }),
            Some("replace") => match answer.get("message") {
                Some(m) if m.is_object() => {
                    *msg = m.clone();
                    InterceptOutcome::Modified(format!("replaced by the external hook: {reason}"))
                }
                _ => InterceptOutcome::Deny(Denial::policy(
                    "mcp-guard: refused (fail closed): the external hook's replacement is not an object".into(),
                )),
            },
            other => InterceptOutcome::Deny(Denial::policy(format!(
                "mcp-guard: refused (fail closed): the external hook answered decision {other:?}"
            ))),
        }
    }
}

impl Interceptor for ExternalHook {
    fn name(&self) -> &'static str {
        "external-hook"
    }

    fn pre_call(&mut self, ctx: &mut Ctx<'_>, msg: &mut Value) -> InterceptOutcome {
        if ctx.kind == MsgKind::Request && ctx.method == "tools/call" {
            self.apply(ctx, msg, "request")
        } else {
            InterceptOutcome::Pass
        }
    }

    fn post_call(&mut self, ctx: &mut Ctx<'_>, msg: &mut Value) -> InterceptOutcome {
        if self.config.results && ctx.kind == MsgKind::Response && ctx.method == "tools/call" {
            self.apply(ctx, msg, "response")
        } else {
            InterceptOutcome::Pass
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hook(script: &str, timeout_ms: u64, fail_open: bool) -> ExternalHook {
        ExternalHook::new(HookConfig {
            command: "/bin/sh".into(),
            args: vec!["-c".into(), script.into()],
            timeout: Duration::from_millis(timeout_ms),
            results: true,
            fail_open,
        })
    }

    fn run(h: &mut ExternalHook, msg: &mut Value) -> InterceptOutcome {
        let mut ctx = Ctx {
            server: "s",
            client_name: Some("ide"),
            method: "tools/call",
            tool: Some("t"),
            kind: MsgKind::Request,
            findings: vec![],
        };
        h.pre_call(&mut ctx, msg)
    }

    #[test]
    fn allow_deny_replace_and_fail_closed() {
        let mut msg = json!({"params":{"name":"t","arguments":{"x":1}}});
        // The hook sees the message on stdin.
        let mut h = hook(
            r#"grep -q '"tool":"t"' && echo '{"decision":"allow"}' || echo '{"decision":"deny"}'"#,
            5000,
            false,
        );
        assert_eq!(run(&mut h, &mut msg), InterceptOutcome::Pass);
        let mut h = hook(
            r#"cat >/dev/null; echo '{"decision":"deny","reason":"nope"}'"#,
            5000,
            false,
        );
        assert!(
            matches!(run(&mut h, &mut msg), InterceptOutcome::Deny(d) if d.message.contains("nope"))
        );
        let mut h = hook(
            r#"cat >/dev/null; echo '{"decision":"replace","message":{"params":{"name":"t","arguments":{"x":2}}}}'"#,
            5000,
            false,
        );
        assert!(matches!(
            run(&mut h, &mut msg),
            InterceptOutcome::Modified(_)
        ));
        assert_eq!(msg["params"]["arguments"]["x"], 2);
        for bad in [
            "sleep 5",
            "exit 3",
            "echo not-json",
            "echo '{\"decision\":\"maybe\"}'",
        ] {
            let mut h = hook(bad, 300, false);
            assert!(
                matches!(run(&mut h, &mut msg), InterceptOutcome::Deny(d) if d.message.contains("fail closed")),
                "{bad}"
            );
        }
        let mut h = hook("sleep 5", 200, true);
        assert_eq!(run(&mut h, &mut msg), InterceptOutcome::Pass);
    }
}
