//! The closed vocabularies of the records: decisions, verdicts, attributions, severities and
//! event kinds, stored and printed by their contract names.

use std::{fmt, str::FromStr};

use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// A string that was not one of an enum's names.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("unknown {what} {value:?} (expected one of: {expected})")]
pub struct UnknownName {
    what: &'static str,
    value: String,
    expected: &'static str,
}

/// Closed enums stored and printed as their lowercase names.
macro_rules! named_enum {
    ($(#[$m:meta])* $name:ident, $what:literal { $($(#[$vm:meta])* $variant:ident = $s:literal,)+ }) => {
        $(#[$m])*
        #[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
        #[serde(rename_all = "lowercase")]
        pub enum $name {
            $($(#[$vm])* $variant,)+
        }

        impl $name {
            /// The contract name.
            pub const fn as_str(self) -> &'static str {
                match self { $(Self::$variant => $s,)+ }
            }
        }

        impl FromStr for $name {
            type Err = UnknownName;
            fn from_str(s: &str) -> Result<Self, UnknownName> {
                match s {
                    $($s => Ok(Self::$variant),)+
                    _ => Err(UnknownName {
                        what: $what,
                        value: s.to_string(),
                        expected: concat!($($s, " "),+),
                    }),
                }
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(self.as_str())
            }
        }
    };
}

named_enum!(
    /// What mcp-guard did with a tool call.
    Decision, "decision" {
        /// Forwarded unchanged.
        Allowed = "allowed",
        /// Refused; the client got a JSON-RPC error.
        Denied = "denied",
        /// Forwarded after an interceptor changed the request or the response.
        Modified = "modified",
    }
);

named_enum!(
    /// What happened to a kernel action.
    Verdict, "verdict" {
        /// It went through (in observe mode also when the policy would deny it; see `would_deny`).
        Allowed = "allowed",
        /// It was refused (EPERM/EACCES).
        Denied = "denied",
        /// The process was killed for it.
        Killed = "killed",
    }
);

named_enum!(
    /// How an event was tied to a tool call.
    Attribution, "attribution" {
        /// Exactly one call was in flight: `call_id` names it.
        Call = "call",
        /// Several calls were in flight: `candidates` lists them, `call_id` is null.
        Ambiguous = "ambiguous",
        /// No call was in flight (startup, background work).
        None = "none",
    }
);

named_enum!(
    /// How bad an alert is.
    Severity, "severity" {
        /// Worth knowing.
        Info = "info",
        /// Unusual.
        Low = "low",
        /// Suspicious.
        Medium = "medium",
        /// Likely an attack.
        High = "high",
        /// An attack in progress.
        Critical = "critical",
    }
);

/// What kind of kernel event (the contract's `kind`). Kinds a newer mcp-guard writes read back as
/// [`EventKind::Other`] rather than failing.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum EventKind {
    /// A program executed (execve/execveat).
    Exec,
    /// A file opened.
    Open,
    /// A connect(2).
    Connect,
    /// A sendmsg/sendto with a destination.
    Sendmsg,
    /// An allowlisted host name (re)resolved by mcp-guard.
    Resolve,
    /// mcp-guard killed the process.
    Killed,
    /// Any other kind, by name.
    Other(String),
}

impl EventKind {
    /// The contract name.
    pub fn as_str(&self) -> &str {
        match self {
            Self::Exec => "exec",
            Self::Open => "open",
            Self::Connect => "connect",
            Self::Sendmsg => "sendmsg",
            Self::Resolve => "resolve",
            Self::Killed => "killed",
            Self::Other(s) => s,
        }
    }

    /// Kind from its name; never fails (unknown names become `Other`).
    pub fn from_name(s: &str) -> Self {
        match s {
            "exec" => Self::Exec,
            "open" => Self::Open,
            "connect" => Self::Connect,
            "sendmsg" => Self::Sendmsg,
            "resolve" => Self::Resolve,
            // "kill" is accepted as a synonym: both names were in use while the contract settled.
            "killed" | "kill" => Self::Killed,
            other => Self::Other(other.to_string()),
        }
    }
}

impl fmt::Display for EventKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl Serialize for EventKind {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(self.as_str())
    }
}

impl<'de> Deserialize<'de> for EventKind {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        Ok(Self::from_name(&String::deserialize(d)?))
    }
}
