//! Pipeline files: the YAML model with positions, the expression language, and validation
//! against the steps' own descriptions.

pub mod diagnostic;
pub mod expr;
pub mod model;
pub mod params;
pub mod validate;
pub mod yaml;

pub use diagnostic::{Diagnostic, Diagnostics, SourceFile, Span};
pub use model::{OnFailure, Param, Pipeline, Retry, StepDecl, StepSource, VarDecl};
