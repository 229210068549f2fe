//! Making a component ready to instantiate: compiled (or read from the compile cache) and
//! linked against every host interface. The runtime and the steps it loaded share it: a
//! step whose shape the compile cache recorded is compiled and linked only when it first
//! runs, so a run whose steps all come from the step cache never reads compiled code.

use super::cache::ComponentCache;
use super::state::StepState;
use super::{StepKind, root_cause, step};
use crate::capabilities::bindings::TypedStepPre;
use crate::pipeline::describe::StepInfo;
use crate::pipeline::validate::LoadProblem;
use sha2::{Digest, Sha256};
use wasmtime::Engine;
use wasmtime::component::{Component, Linker};
use wasmtime_wasi::p2::bindings::CommandPre;
use wharf_contract::Support;

/// What a typed step exports; an older 1.x or a legacy step's name is matched to it by
/// semver (a legacy step's names are read as 1.0.0 first).
pub const TYPED_EXPORT: &str = "wharf:step/step@1.0.0";
const TYPED_EXPORT_MAJOR: &str = "wharf:step/step@1.";
pub const COMMAND_EXPORT_PREFIX: &str = "wasi:cli/run@0.2";

pub struct Linking {
    pub engine: Engine,
    pub linker: Linker<StepState>,
    pub cache: ComponentCache,
}

impl Linking {
    /// The compiled component of `bytes` (whose digest is `digest`, `sha256:HEX`), and
    /// whether it came from the compile cache. A legacy step is compiled from its names
    /// read as 1.0.0: another cache entry.
    pub fn compile(
        &self,
        origin: &str,
        digest: &str,
        bytes: &[u8],
        contract: &Support,
    ) -> Result<(Component, bool), LoadProblem> {
        let legacy = matches!(contract, Support::Legacy(_))
            .then(|| wharf_contract::read_legacy_as_current(bytes))
            .transpose()
            .map_err(|e| super::not_a_component(origin, &e))?;
        let (engine_bytes, cache_key) = match &legacy {
            Some(read) => (&read[..], hex::encode(Sha256::digest(read))),
            None => (bytes, digest.trim_start_matches("sha256:").to_string()),
        };
        self.cache
            .load(&self.engine, &cache_key, engine_bytes)
            .map_err(|e| LoadProblem {
                message: format!("{origin} is not a valid WebAssembly component: {}", root_cause(&e)),
                help: "build it for wasm32-wasip2 (`cargo build --target wasm32-wasip2`) or with a componentizing toolchain".into(),
            })
    }

    /// Link `component` against every host interface; with `describe`, call a typed
    /// step's `describe()` as well.
    pub async fn link(
        &self,
        origin: &str,
        component: &Component,
        describe: bool,
    ) -> Result<(StepKind, Option<StepInfo>), LoadProblem> {
        let exports: Vec<String> = component
            .component_type()
            .exports(&self.engine)
            .map(|(name, _)| name.to_string())
            .collect();
        let typed = exports.iter().any(|e| e.starts_with(TYPED_EXPORT_MAJOR));
        let command = exports.iter().any(|e| e.starts_with(COMMAND_EXPORT_PREFIX));
        if !typed && !command {
            return Err(LoadProblem {
                message: format!(
                    "{origin} is neither a typed step (exporting `{TYPED_EXPORT}`) nor a WASI command (exporting `wasi:cli/run`); it exports: {}",
                    if exports.is_empty() {
                        "nothing".to_string()
                    } else {
                        exports.join(", ")
                    }
                ),
                help:
                    "build a typed step with the wharf-step crate, or a plain command with `fn main` for wasm32-wasip2"
                        .into(),
            });
        }
        let pre = self.linker.instantiate_pre(component).map_err(|e| {
            let missing = self.missing_imports(component);
            LoadProblem {
                message: if missing.is_empty() {
                    format!("{origin} cannot be linked: {}", root_cause(&e))
                } else {
                    format!("{origin} imports what wharf does not provide: {}", missing.join(", "))
                },
                help: format!(
                    "steps may import the {}@{} interfaces and WASI 0.2 (cli, clocks, filesystem, random, io, http)",
                    wharf_contract::PACKAGE,
                    wharf_contract::CURRENT
                ),
            }
        })?;
        let bad_link = |e: wasmtime::Error| LoadProblem {
            message: format!("{origin} does not match the step contract: {}", root_cause(&e)),
            help: format!(
                "rebuild it against {}@{} (exports `{TYPED_EXPORT}`)",
                wharf_contract::PACKAGE,
                wharf_contract::CURRENT
            ),
        };
        if typed {
            let pre = TypedStepPre::new(pre).map_err(bad_link)?;
            let info = match describe {
                true => Some(step::describe(&pre).await.map_err(|message| LoadProblem {
                    message: format!("{origin}: describe() failed: {message}"),
                    help: "describe() must return without side effects; fix the step".into(),
                })?),
                false => None,
            };
            Ok((StepKind::Typed(pre), info))
        } else {
            let pre = CommandPre::new(pre).map_err(bad_link)?;
            Ok((StepKind::Command(pre), None))
        }
    }

    /// Imports of `component` this host's linker does not define.
    fn missing_imports(&self, component: &Component) -> Vec<String> {
        let provided = self.provided_interfaces();
        component
            .component_type()
            .imports(&self.engine)
            .map(|(name, _)| name.to_string())
            .filter(|name| !provided.iter().any(|p| name.starts_with(p)))
            .collect()
    }

    /// Interface-name prefixes the linker defines; only consulted to explain a failed link
    /// (wasmtime names just the first missing import, and the linker cannot be queried).
    fn provided_interfaces(&self) -> &'static [&'static str] {
        &[
            "wasi:cli/environment@0.2",
            "wasi:cli/exit@0.2",
            "wasi:cli/stdin@0.2",
            "wasi:cli/stdout@0.2",
            "wasi:cli/stderr@0.2",
            "wasi:cli/terminal-input@0.2",
            "wasi:cli/terminal-output@0.2",
            "wasi:cli/terminal-stdin@0.2",
            "wasi:cli/terminal-stdout@0.2",
            "wasi:cli/terminal-stderr@0.2",
            "wasi:clocks/monotonic-clock@0.2",
            "wasi:clocks/wall-clock@0.2",
            "wasi:filesystem/types@0.2",
            "wasi:filesystem/preopens@0.2",
            "wasi:io/error@0.2",
            "wasi:io/poll@0.2",
            "wasi:io/streams@0.2",
            "wasi:random/random@0.2",
            "wasi:random/insecure@0.2",
            "wasi:random/insecure-seed@0.2",
            "wasi:sockets/",
            "wasi:http/types@0.2",
            "wasi:http/outgoing-handler@0.2",
            "wharf:step/types@1.",
            "wharf:step/log@1.",
            "wharf:step/process@1.",
            "wharf:step/source@1.",
            "wharf:step/secrets@1.",
            "wharf:step/images@1.",
            "wharf:step/registry@1.",
            "wharf:step/deploy@1.",
        ]
    }
}
