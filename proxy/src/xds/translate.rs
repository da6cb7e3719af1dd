//! Translation of xDS resources, as istiod sends them to a sidecar, into the snapshot's
//! types: pure functions over the decoded protos, one per resource, so that every rule is
//! unit-tested without a control plane. A resource Skiff cannot honour faithfully is
//! refused with an [`Invalid`] that names the field and why; the ADS client turns it into
//! a NACK. Istio's own typed configs that do not change forwarding are accepted and
//! ignored (see [`IGNORED_TYPES`]).

use std::fmt;

mod cluster;
mod endpoint;
mod listener;
mod route;

pub use cluster::*;
pub use endpoint::*;
pub use listener::*;
pub use route::*;

/// Why a resource was refused: the path of the field inside the resource (`filter_chains[2]
/// .filters[0].typed_config.cluster`) and the reason, as the NACK's `error_detail` says it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Invalid {
    pub field: String,
    pub reason: String,
}

impl Invalid {
    pub fn new(field: impl Into<String>, reason: impl Into<String>) -> Invalid {
        Invalid {
            field: field.into(),
            reason: reason.into(),
        }
    }

    /// The same error, one level further out: `inner.at("filter_chains[2]")`.
    pub fn at(mut self, outer: &str) -> Invalid {
        self.field = if self.field.is_empty() {
            outer.to_owned()
        } else {
            format!("{outer}.{}", self.field)
        };
        self
    }
}

impl fmt::Display for Invalid {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.field, self.reason)
    }
}

impl std::error::Error for Invalid {}
