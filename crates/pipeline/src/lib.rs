//! Pipeline files: the YAML model with positions, the expression language, the grants of
//! `allow:`, and validation against the steps' own descriptions. Knows nothing of the wasm
//! engine: a step is what its [`describe::StepInfo`] says.

pub mod describe;
pub mod diagnostic;
pub mod expr;
pub mod grants;
pub mod graph;
pub mod model;
pub mod params;
pub mod validate;
pub mod yaml;

pub use diagnostic::{Diagnostic, Diagnostics, SourceFile, Span};
pub use grants::Grants;
pub use graph::Graph;
pub use model::{Instance, OnFailure, Param, Pipeline, Retry, StepDecl, StepSource, VarDecl};

/// Environment variables of wharf that hold secrets: `WHARF_SECRET_<NAME>`. A pipeline never
/// reads them as text.
pub const SECRET_ENV_PREFIX: &str = "WHARF_SECRET_";

/// Whether an environment variable holds a secret.
pub fn is_secret_var(name: &str) -> bool {
    name.starts_with(SECRET_ENV_PREFIX)
}
