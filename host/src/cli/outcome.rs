//! How a command ends. Every command returns an [`CommandResult`]: the [`Exit`] of work that ran,
//! or a [`Stop`] saying why it could not; `main` prints a stop once and maps an exit to
//! its code here, in one place.

use crate::pipeline::Diagnostics;
use std::fmt;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Exit {
    /// The pipeline ran and every step that had to run succeeded.
    Success,
    /// A step failed; no deploy was changed (or none was involved).
    StepFailed,
    /// The pipeline file or the command line is invalid; nothing ran.
    Invalid,
    /// A step failed after a deploy and the service was rolled back to its previous revision.
    RolledBack,
    /// A rollback failed or was not possible: a service needs a human.
    NeedsHuman,
    /// A replay left the recorded path.
    Diverged,
    /// An analysis could not decide: a service's upgrade is held, as it stands, for a person.
    Held,
    /// Stopped by Ctrl-C (SIGINT), after rolling back what it left unconfirmed.
    Interrupted,
    /// Stopped by SIGTERM, likewise.
    Terminated,
}

impl Exit {
    pub fn code(self) -> u8 {
        match self {
            Exit::Success => 0,
            Exit::StepFailed => 1,
            Exit::Invalid => 2,
            Exit::RolledBack => 3,
            Exit::NeedsHuman => 4,
            Exit::Diverged => 5,
            Exit::Held => 6,
            Exit::Interrupted => 130,
            Exit::Terminated => 143,
        }
    }
}

/// A command that stopped: what went wrong (printed once, on stderr) and how wharf exits.
#[derive(Debug)]
pub struct Stop {
    pub exit: Exit,
    pub report: Report,
}

#[derive(Debug)]
pub enum Report {
    Message(String),
    /// Problems in a pipeline file, with positions: printed as they render.
    Diagnostics(Diagnostics),
}

impl Stop {
    /// The command line or its input was wrong; nothing ran.
    pub fn invalid(message: impl fmt::Display) -> Stop {
        Stop {
            exit: Exit::Invalid,
            report: Report::Message(message.to_string()),
        }
    }

    /// The work itself failed.
    pub fn failed(message: impl fmt::Display) -> Stop {
        Stop {
            exit: Exit::StepFailed,
            report: Report::Message(message.to_string()),
        }
    }

    pub fn with_exit(exit: Exit, message: impl fmt::Display) -> Stop {
        Stop {
            exit,
            report: Report::Message(message.to_string()),
        }
    }
}

impl From<Diagnostics> for Stop {
    fn from(d: Diagnostics) -> Self {
        Stop {
            exit: Exit::Invalid,
            report: Report::Diagnostics(d),
        }
    }
}

impl fmt::Display for Report {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Report::Message(m) => write!(f, "error: {m}"),
            Report::Diagnostics(d) => write!(f, "{d}"),
        }
    }
}

pub type CommandResult = Result<Exit, Stop>;
