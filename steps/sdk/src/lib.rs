//! Write wharf steps in Rust.
//!
//! A typed step implements [`Step`] and exports it with [`export!`]:
//!
//! ```ignore
//! use wharf_step::{Context, Outputs, Step, StepError, StepInfo, param};
//!
//! struct Hello;
//! impl Step for Hello {
//!     fn describe() -> StepInfo {
//!         StepInfo::new("hello", "Greets someone").param(param::text("name", "Who to greet").required())
//!     }
//!     fn run(ctx: Context) -> Result<Outputs, StepError> {
//!         let name = ctx.text("name")?;
//!         wharf_step::log::info(&format!("hello, {name}"));
//!         Ok(vec![("greeting".into(), format!("hello, {name}"))])
//!     }
//! }
//! wharf_step::export!(Hello);
//! ```

#[doc(hidden)]
pub mod bindings {
    wit_bindgen::generate!({
        world: "typed-step",
        // `wit/` here links to the repository's `wit/` and is packaged with the crate.
        path: "wit",
        pub_export_macro: true,
        default_bindings_module: "wharf_step::bindings",
        export_macro_name: "export_bindings",
        generate_all,
    });
}

pub mod analysis;
mod condition;

pub use bindings::exports::wharf::step::step::Guest;
pub use bindings::wharf::step::types::{
    Capability, CapabilityKind, Context as RawContext, ErrorKind, OutputSpec, ParamSpec, ParamType, StepError,
    StepInfo as RawStepInfo, Value,
};
pub use bindings::wharf::step::{deploy, images, process, registry, secrets, source};

pub type Outputs = Vec<(String, String)>;

/// A typed step. [`export!`] turns an implementation into the component's exports.
pub trait Step {
    fn describe() -> StepInfo;
    fn run(ctx: Context) -> Result<Outputs, StepError>;
}

/// Export a [`Step`] implementation as the component's `wharf:step/step` interface.
#[macro_export]
macro_rules! export {
    ($ty:ident) => {
        impl $crate::Guest for $ty {
            fn describe() -> $crate::RawStepInfo {
                let mut info = <$ty as $crate::Step>::describe().into_raw();
                // Expanded in the step's crate: its own version, unless the step set one.
                if info.version.is_empty() {
                    info.version = env!("CARGO_PKG_VERSION").into();
                }
                info
            }
            fn run(ctx: $crate::RawContext) -> Result<$crate::Outputs, $crate::StepError> {
                <$ty as $crate::Step>::run($crate::Context::from_raw(ctx))
            }
        }
        $crate::bindings::export_bindings!($ty);
    };
}

/// Builder for what `describe` returns.
pub struct StepInfo(RawStepInfo);

impl StepInfo {
    /// Unless [`StepInfo::version`] says otherwise, [`export!`] gives the step its own
    /// crate's version (`CARGO_PKG_VERSION`), so a rebuilt step reports what it is.
    pub fn new(name: &str, summary: &str) -> Self {
        Self(RawStepInfo {
            name: name.into(),
            version: String::new(),
            summary: summary.into(),
            params: Vec::new(),
            outputs: Vec::new(),
            capabilities: Vec::new(),
        })
    }

    pub fn version(mut self, version: &str) -> Self {
        self.0.version = version.into();
        self
    }

    pub fn param(mut self, param: param::Builder) -> Self {
        self.0.params.push(param.0);
        self
    }

    pub fn output(mut self, name: &str, description: &str) -> Self {
        self.0.outputs.push(OutputSpec {
            name: name.into(),
            description: description.into(),
        });
        self
    }

    /// Declare a host interface the step calls; `scope_param` names the parameter whose
    /// value says which resource (program, host, service) it reaches.
    pub fn needs(mut self, kind: CapabilityKind, reason: &str, scope_param: Option<&str>) -> Self {
        self.0.capabilities.push(Capability {
            kind,
            reason: reason.into(),
            scope_param: scope_param.map(Into::into),
        });
        self
    }

    pub fn into_raw(self) -> RawStepInfo {
        self.0
    }
}

/// Parameter declarations.
pub mod param {
    use super::{ParamSpec, ParamType, Value};

    pub struct Builder(pub(crate) ParamSpec);

    fn spec(name: &str, ty: ParamType, description: &str) -> Builder {
        Builder(ParamSpec {
            name: name.into(),
            type_: ty,
            description: description.into(),
            required: false,
            default: None,
        })
    }

    pub fn text(name: &str, description: &str) -> Builder {
        spec(name, ParamType::Text, description)
    }
    pub fn boolean(name: &str, description: &str) -> Builder {
        spec(name, ParamType::Boolean, description)
    }
    pub fn integer(name: &str, description: &str) -> Builder {
        spec(name, ParamType::Integer, description)
    }
    pub fn duration(name: &str, description: &str) -> Builder {
        spec(name, ParamType::Duration, description)
    }
    pub fn text_list(name: &str, description: &str) -> Builder {
        spec(name, ParamType::TextList, description)
    }
    pub fn text_map(name: &str, description: &str) -> Builder {
        spec(name, ParamType::TextMap, description)
    }

    impl Builder {
        pub fn required(mut self) -> Self {
            self.0.required = true;
            self
        }
        pub fn default(mut self, value: Value) -> Self {
            self.0.default = Some(value);
            self
        }
        pub fn default_text(self, value: &str) -> Self {
            self.default(Value::Text(value.into()))
        }
        pub fn default_bool(self, value: bool) -> Self {
            self.default(Value::Boolean(value))
        }
        pub fn default_int(self, value: i64) -> Self {
            self.default(Value::Integer(value))
        }
        pub fn default_ms(self, value: u64) -> Self {
            self.default(Value::DurationMs(value))
        }
    }
}

/// The run context with typed parameter access.
pub struct Context {
    pub step_id: String,
    pub run_id: String,
    pub pipeline: String,
    pub attempt: u32,
    params: Vec<(String, Value)>,
}

impl Context {
    pub fn from_raw(raw: RawContext) -> Self {
        Self {
            step_id: raw.step_id,
            run_id: raw.run_id,
            pipeline: raw.pipeline,
            attempt: raw.attempt,
            params: raw.params,
        }
    }

    pub fn value(&self, name: &str) -> Option<&Value> {
        self.params.iter().find(|(n, _)| n == name).map(|(_, v)| v)
    }

    fn wrong(name: &str, want: &str) -> StepError {
        error::invalid_input(format!("parameter `{name}` is not {want}"))
    }

    fn missing(name: &str) -> StepError {
        error::invalid_input(format!("parameter `{name}` is required"))
    }

    pub fn opt_text(&self, name: &str) -> Result<Option<String>, StepError> {
        match self.value(name) {
            None => Ok(None),
            Some(Value::Text(s)) => Ok(Some(s.clone())),
            Some(_) => Err(Self::wrong(name, "text")),
        }
    }
    pub fn text(&self, name: &str) -> Result<String, StepError> {
        self.opt_text(name)?.ok_or_else(|| Self::missing(name))
    }
    pub fn opt_bool(&self, name: &str) -> Result<Option<bool>, StepError> {
        match self.value(name) {
            None => Ok(None),
            Some(Value::Boolean(b)) => Ok(Some(*b)),
            Some(_) => Err(Self::wrong(name, "a boolean")),
        }
    }
    pub fn flag(&self, name: &str) -> Result<bool, StepError> {
        Ok(self.opt_bool(name)?.unwrap_or(false))
    }
    pub fn opt_int(&self, name: &str) -> Result<Option<i64>, StepError> {
        match self.value(name) {
            None => Ok(None),
            Some(Value::Integer(i)) => Ok(Some(*i)),
            Some(_) => Err(Self::wrong(name, "an integer")),
        }
    }
    pub fn int(&self, name: &str) -> Result<i64, StepError> {
        self.opt_int(name)?.ok_or_else(|| Self::missing(name))
    }
    pub fn opt_duration_ms(&self, name: &str) -> Result<Option<u64>, StepError> {
        match self.value(name) {
            None => Ok(None),
            Some(Value::DurationMs(ms)) => Ok(Some(*ms)),
            Some(_) => Err(Self::wrong(name, "a duration")),
        }
    }
    pub fn duration_ms(&self, name: &str) -> Result<u64, StepError> {
        self.opt_duration_ms(name)?.ok_or_else(|| Self::missing(name))
    }
    pub fn list(&self, name: &str) -> Result<Vec<String>, StepError> {
        match self.value(name) {
            None => Ok(Vec::new()),
            Some(Value::TextList(l)) => Ok(l.clone()),
            Some(_) => Err(Self::wrong(name, "a list")),
        }
    }
    pub fn map(&self, name: &str) -> Result<Vec<(String, String)>, StepError> {
        match self.value(name) {
            None => Ok(Vec::new()),
            Some(Value::TextMap(m)) => Ok(m.clone()),
            Some(_) => Err(Self::wrong(name, "a map")),
        }
    }
}

/// Constructors for [`StepError`].
pub mod error {
    use super::{ErrorKind, StepError};

    pub fn new(kind: ErrorKind, message: impl Into<String>) -> StepError {
        StepError {
            kind,
            message: message.into(),
        }
    }
    pub fn invalid_input(message: impl Into<String>) -> StepError {
        new(ErrorKind::InvalidInput, message)
    }
    pub fn permanent(message: impl Into<String>) -> StepError {
        new(ErrorKind::Permanent, message)
    }
    pub fn transient(message: impl Into<String>) -> StepError {
        new(ErrorKind::Transient, message)
    }
    pub fn gate_failed(message: impl Into<String>) -> StepError {
        new(ErrorKind::GateFailed, message)
    }
}

/// Logging through the host's `log` interface.
pub mod log {
    pub use super::bindings::wharf::step::log::{
        Annotation, Level, Measurement, TestCase, TestOutcome, TestReport, TestStatus, Verdict, annotate, measure,
        progress, report_test, test_result, write,
    };

    pub fn debug(message: &str) {
        write(Level::Debug, message)
    }
    pub fn info(message: &str) {
        write(Level::Info, message)
    }
    pub fn warn(message: &str) {
        write(Level::Warn, message)
    }
    pub fn error(message: &str) {
        write(Level::Error, message)
    }
}
