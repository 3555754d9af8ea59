//! What a session redacts its injected secrets from: its records, its log lines and the
//! server's stderr; and the warning when `--passthrough` leaves its stdout unread.

use mcp_guard_policy::Policy;
use mcp_guard_store::StoreHandle;

use super::{history, say, stderr};

/// With `--passthrough` nothing reads the server's stdout: say so when secrets were injected
/// (its stderr is still redacted).
pub(super) fn warn_passthrough(passthrough: bool, secrets: &[(String, String)]) {
    if passthrough && !secrets.is_empty() {
        say(
            "WARNING: --passthrough: the server's output is not read, so injected secrets are NOT \
             redacted from its stdout",
        );
    }
}

/// What a session's secrets are redacted with: its writers' store handle from now on (values
/// and secret rules), its log lines (values), and the server's stderr (values, the policy's PII
/// kinds and secret rules).
pub(super) fn redaction(
    policy: &Policy,
    secrets: &[(String, String)],
    store: StoreHandle,
) -> (StoreHandle, Option<stderr::LineRedactor>) {
    if let Some(s) = mcp_guard_model::redact::Scrubber::new(secrets) {
        crate::say::install_for_logs(s);
    }
    let config = mcp_guard_proxy::secrets::SecretConfig::for_policy(&policy.mcp, secrets.to_vec());
    let lines = match stderr::LineRedactor::new(&config) {
        Ok(l) => Some(l),
        Err(e) => {
            say(&format!("cannot compile the stderr redactor: {e}"));
            None
        }
    };
    let for_store = match history::store_redactor(&config) {
        Ok(r) => Some(r),
        Err(e) => {
            // Nothing is recorded unredacted: the session is refused (as without `lines`).
            say(&format!("cannot compile the records' secret rules: {e}"));
            return (store, None);
        }
    };
    (store.redacting(for_store), lines)
}
