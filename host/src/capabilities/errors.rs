//! Domain errors become the WIT `step-error` here, and only here: one `From` per domain
//! error, choosing the error kind a step (and the retry policy) goes by.

use super::bindings::wharf::step::types::{ErrorKind, StepError};

/// How a host call of a step fails: a `step-error` the step receives as a value, or a trap
/// that stops it (a replay that diverged, a limit reached). Host bodies use `?` on domain
/// errors; the bindings turn this back into the WIT result.
#[derive(Debug)]
pub enum CallError {
    Step(StepError),
    Trap(wasmtime::Error),
}

pub type CallResult<T> = Result<T, CallError>;

impl CallError {
    /// The WIT result: the step error, or the trap.
    pub fn into_step_error(self) -> wasmtime::Result<StepError> {
        match self {
            CallError::Step(e) => Ok(e),
            CallError::Trap(t) => Err(t),
        }
    }
}

impl From<wasmtime::Error> for CallError {
    fn from(trap: wasmtime::Error) -> Self {
        CallError::Trap(trap)
    }
}

impl From<StepError> for CallError {
    fn from(e: StepError) -> Self {
        CallError::Step(e)
    }
}

/// Each view a `step-error` returns from: the bindings turn a [`CallError`] back into the
/// WIT result there.
macro_rules! step_error_views {
    ($($view:ty),* $(,)?) => {$(
        impl super::bindings::wharf::step::types::Host for $view {
            fn convert_step_error(&mut self, err: CallError) -> wasmtime::Result<StepError> {
                err.into_step_error()
            }
        }
    )*};
}

step_error_views!(
    &super::StepCall,
    super::process::ProcessView<'_>,
    super::secrets::SecretsView<'_>,
    super::deploy::DeployView<'_>,
);

/// Every domain error reaches a step as its `step-error`.
macro_rules! step_errors {
    ($($domain:ty),* $(,)?) => {$(
        impl From<$domain> for CallError {
            fn from(e: $domain) -> Self {
                CallError::Step(e.into())
            }
        }
    )*};
}

step_errors!(
    crate::beneath::Error,
    crate::oci::registry::RegistryError,
    crate::targets::TargetError,
    crate::deploy::DeployError,
    crate::sandbox::grants::Refusal,
);

/// A path a step named that does not stay in the workspace is refused; one that is not
/// there is the step's mistake.
impl From<crate::beneath::Error> for StepError {
    fn from(e: crate::beneath::Error) -> Self {
        use crate::beneath::Error;
        let kind = match &e {
            Error::Escapes { .. } => ErrorKind::Denied,
            Error::NotFound { .. } => ErrorKind::InvalidInput,
            Error::Io { .. } => ErrorKind::Permanent,
        };
        step_error(kind, e.to_string())
    }
}

/// The host failed at I/O while doing what a step asked: not the step's mistake, and a full
/// disk says so plainly.
pub fn io_failure(what: impl std::fmt::Display, e: &std::io::Error) -> StepError {
    let message = if e.kind() == std::io::ErrorKind::StorageFull {
        format!("{what}: the disk is full (ENOSPC): {e}")
    } else {
        format!("{what}: {e}")
    };
    step_error(ErrorKind::Permanent, message)
}

impl From<crate::oci::registry::RegistryError> for StepError {
    fn from(e: crate::oci::registry::RegistryError) -> Self {
        use crate::oci::registry::RegistryError as E;
        let kind = match &e {
            E::BadHost { .. } | E::TagMoved { .. } | E::InvalidName { .. } => ErrorKind::InvalidInput,
            E::Unreachable { .. } | E::Stalled { .. } => ErrorKind::Transient,
            E::CredentialsRefused { .. } | E::NeedsCredentials { .. } | E::InsecureRealm { .. } => ErrorKind::Denied,
            E::Status { status: 401 | 403, .. } => ErrorKind::Denied,
            E::Status { status, .. } if *status >= 500 || *status == 429 => ErrorKind::Transient,
            E::Status { .. } | E::NotFound { .. } | E::Protocol { .. } | E::Oversized { .. } => ErrorKind::Permanent,
            E::Store { source, .. } => return io_failure("image store", source),
        };
        step_error(kind, e.to_string())
    }
}

impl From<crate::targets::TargetError> for StepError {
    fn from(e: crate::targets::TargetError) -> Self {
        use crate::targets::TargetError as E;
        match e {
            E::Registry(r) => r.into(),
            E::Io {
                ref context,
                ref source,
            } => io_failure(context, source),
            E::Unrunnable { .. }
            | E::BadReference(_)
            | E::Entrypoint { .. }
            | E::Scheduled { .. }
            | E::UnknownTarget { .. } => step_error(ErrorKind::InvalidInput, e.to_string()),
            E::NotInStore { .. }
            | E::NoEngine { .. }
            | E::Unavailable(_)
            | E::Engine { .. }
            | E::Unsettled(_)
            | E::Unhealthy { .. } => step_error(ErrorKind::Permanent, e.to_string()),
        }
    }
}

impl From<crate::deploy::DeployError> for StepError {
    fn from(e: crate::deploy::DeployError) -> Self {
        use crate::deploy::DeployError as E;
        match e {
            E::Target(t) => t.into(),
            E::State {
                ref context,
                ref source,
                ..
            } => io_failure(context, source),
            E::Refused { .. } => step_error(ErrorKind::InvalidInput, e.to_string()),
            E::Busy { .. } => step_error(ErrorKind::Transient, e.to_string()),
            E::NotOwner { .. } | E::Held { .. } => step_error(ErrorKind::Denied, e.to_string()),
            E::Inconsistent { .. } | E::Incomplete { .. } => step_error(ErrorKind::Permanent, e.to_string()),
        }
    }
}

impl From<crate::sandbox::grants::Refusal> for StepError {
    fn from(e: crate::sandbox::grants::Refusal) -> Self {
        use crate::sandbox::grants::Refusal as E;
        let kind = match e {
            E::NotGranted { .. } | E::LeavesWorkspace { .. } | E::Reserved { .. } => ErrorKind::Denied,
            E::BadRepository { .. } => ErrorKind::InvalidInput,
        };
        step_error(kind, e.to_string())
    }
}

pub fn step_error(kind: ErrorKind, message: impl Into<String>) -> StepError {
    StepError {
        kind,
        message: message.into(),
    }
}
