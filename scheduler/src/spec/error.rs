//! Why a job spec was refused ([`SpecError`]) or can never be placed ([`NeverFitsError`]).

use std::fmt;

use shoal_gossip::Resources;

/// Why a job spec was refused.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SpecError {
    /// Not valid TOML/JSON or not the right shape; the message carries line and column.
    Parse(String),
    /// A field has an invalid value.
    Invalid {
        /// Dotted path of the field, e.g. `resources.cpu`.
        field: String,
        /// What is wrong.
        message: String,
        /// 1-based line in the TOML source, when known.
        line: Option<usize>,
    },
}

impl fmt::Display for SpecError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            SpecError::Parse(m) => write!(f, "malformed job spec: {}", m.trim_end()),
            SpecError::Invalid {
                field,
                message,
                line: Some(line),
            } => {
                write!(f, "invalid job spec: line {line}: `{field}`: {message}")
            }
            SpecError::Invalid {
                field,
                message,
                line: None,
            } => {
                write!(f, "invalid job spec: `{field}`: {message}")
            }
        }
    }
}

impl std::error::Error for SpecError {}

/// Why a job can never be placed on the current cluster.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error(
    "job `{job}` requests {} but no node can ever host it: {detail}",
    fmt_resources(.request)
)]
pub struct NeverFitsError {
    /// Job id.
    pub job: String,
    /// Per-task request.
    pub request: Resources,
    /// Which node comes closest and what it offers.
    pub detail: String,
}

/// `2000m cpu, 512 MiB memory, 0 MiB disk`.
pub(crate) fn fmt_resources(r: &Resources) -> String {
    format!(
        "{}m cpu, {} MiB memory, {} MiB disk",
        r.cpu_millicores, r.memory_mib, r.disk_mib
    )
}
