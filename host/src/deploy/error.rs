//! What can go wrong deploying a service, with the facts a caller decides on.

use crate::targets::TargetError;

#[derive(Debug, thiserror::Error)]
pub enum DeployError {
    /// The request cannot be carried out as asked, and nothing changed: an invalid name, an
    /// image without a digest, a service in the wrong state, no host that fits. The message
    /// says why and what to do.
    #[error("{message}")]
    Refused { service: String, message: String },
    /// Another run is changing the service right now.
    #[error("service `{service}` is being changed by {holder}; wait for it to finish")]
    Busy { service: String, holder: String },
    /// A run asked to decide an upgrade that another run began.
    #[error(
        "service `{service}` awaits a decision on the upgrade of run {owner}, not of this run; a run decides only its own upgrades (a person can: `wharf {decision} {service}`)"
    )]
    NotOwner {
        service: String,
        owner: String,
        decision: &'static str,
    },
    /// A run asked to decide an upgrade held for a person.
    #[error(
        "service `{service}` is held for a person ({why}); a run does not decide it: `wharf confirm {service}` finishes the upgrade, `wharf rollback {service}` undoes it"
    )]
    Held { service: String, why: String },
    /// The service's state file or lock could not be read or written.
    #[error("{context}: {source}")]
    State {
        service: String,
        context: String,
        #[source]
        source: std::io::Error,
    },
    /// The state file says something that cannot be (a state without a revision).
    #[error(
        "the state of `{service}` says {state} but records no current revision; fix or remove .wharf/state/services/{service}.json"
    )]
    Inconsistent { service: String, state: &'static str },
    /// Fewer tasks run the revision than the spec asks for (a node was lost, a task failed).
    #[error("`{service}` is not fully rolled out: {why}")]
    Incomplete { service: String, why: String },
    #[error(transparent)]
    Target(#[from] TargetError),
}

impl DeployError {
    pub(crate) fn refused(service: &str, message: String) -> Self {
        DeployError::Refused {
            service: service.to_string(),
            message,
        }
    }

    /// The request was wrong (exit code 2 at the command line), rather than the world.
    pub fn is_refusal(&self) -> bool {
        matches!(
            self,
            DeployError::Refused { .. } | DeployError::Target(TargetError::UnknownTarget { .. })
        ) || matches!(
            self,
            DeployError::Target(TargetError::Unrunnable { .. } | TargetError::BadReference(_))
        )
    }
}
