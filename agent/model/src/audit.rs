//! A call's arguments and result as the history keeps them (redacted and bounded by the store
//! writer, see `mcp-guard-store`'s `audit`): the fields `calls --json` adds to a call.

use serde::{Deserialize, Serialize};
use serde_json::Value;

#[expect(
    clippy::trivially_copy_pass_by_ref,
    reason = "serde's skip_serializing_if passes a reference"
)]
fn is_zero(n: &u64) -> bool {
    *n == 0
}

/// A call's arguments and result as stored and shown (JSON fields of `calls --json`).
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct CallAudit {
    /// The arguments, redacted; cut when `arguments_cut` is not zero.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub arguments: Option<Value>,
    /// Bytes of the arguments as sent that the stored ones lack.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub arguments_cut: u64,
    /// The result, redacted; an excerpt when `result_cut` is not zero.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub result: Option<Value>,
    /// Bytes of the result as the server sent it that the excerpt lacks.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub result_cut: u64,
    /// What was redacted from them (`secret NAME`, a shape or PII kind), once each.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub redacted: Vec<String>,
}

impl CallAudit {
    /// Nothing kept.
    pub fn is_empty(&self) -> bool {
        self.arguments.is_none() && self.result.is_none() && self.redacted.is_empty()
    }
}
