//! The wasmtime side: one `Engine` per process, a linker with every host interface, the
//! compile cache, and loaded steps kept as `InstancePre` so each run only instantiates.

pub mod cache;
pub mod filesystem;
pub mod limits;
pub mod state;
pub mod step;

use crate::builtins;
use crate::capabilities::bindings::TypedStepPre;
use crate::events::{Event, Events};
use crate::pipeline::StepSource;
use crate::pipeline::describe::StepInfo;
use crate::pipeline::validate::{LoadProblem, StepShape};
use cache::ComponentCache;
use sha2::{Digest, Sha256};
use state::StepState;
use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use wasmtime::component::{Component, Linker};
use wasmtime::{Config, Engine};
use wasmtime_wasi::p2::bindings::CommandPre;
use wharf_contract::Support;

/// How often the epoch advances: the granularity at which a busy step yields so timeouts
/// can fire.
pub const EPOCH_TICK: Duration = Duration::from_millis(10);

/// A step ready to instantiate.
pub struct LoadedStep {
    /// `builtin:NAME` or the file path.
    pub origin: String,
    /// `sha256:HEX` of the component bytes.
    pub digest: String,
    pub kind: StepKind,
    /// `describe()` of a typed step.
    pub info: Option<StepInfo>,
    /// The component itself, for the run's journal.
    pub bytes: Arc<[u8]>,
    /// The `wharf:step` contract it was built against, as this host serves it.
    pub contract: Support,
}

pub enum StepKind {
    Typed(TypedStepPre<StepState>),
    Command(CommandPre<StepState>),
}

impl LoadedStep {
    pub fn engine(&self) -> &Engine {
        match &self.kind {
            StepKind::Typed(pre) => pre.engine(),
            StepKind::Command(pre) => pre.engine(),
        }
    }

    /// A WASI command writes its outputs to a file in a scratch directory.
    pub fn needs_scratch(&self) -> bool {
        matches!(self.kind, StepKind::Command(_))
    }

    pub fn is_builtin(&self) -> bool {
        self.origin.starts_with("builtin:")
    }

    pub fn shape(&self) -> StepShape {
        match &self.info {
            Some(info) => StepShape::Typed(info.clone()),
            None => StepShape::Command,
        }
    }
}

pub struct Runtime {
    engine: Engine,
    linker: Linker<StepState>,
    cache: ComponentCache,
    /// Loaded steps by digest, and by where they came from: a component used by many steps
    /// (or runs of a process) is read, hashed and linked once.
    loaded: Mutex<HashMap<String, Arc<LoadedStep>>>,
    by_source: Mutex<HashMap<StepSource, Arc<LoadedStep>>>,
    ticker: Arc<AtomicBool>,
}

impl Drop for Runtime {
    fn drop(&mut self) {
        self.ticker.store(true, Ordering::Relaxed);
    }
}

/// What a typed step exports; an older 1.x or a legacy step's name is matched to it by
/// semver (a legacy step's names are read as 1.0.0 first).
pub const TYPED_EXPORT: &str = "wharf:step/step@1.0.0";
const TYPED_EXPORT_MAJOR: &str = "wharf:step/step@1.";
pub const COMMAND_EXPORT_PREFIX: &str = "wasi:cli/run@0.2";

impl Runtime {
    /// `cache_dir` None: compile in memory only.
    pub fn new(cache_dir: Option<std::path::PathBuf>) -> anyhow::Result<Self> {
        let engine = new_engine()?;
        let mut linker = Linker::new(&engine);
        wasmtime_wasi::p2::add_to_linker_async(&mut linker)?;
        wasmtime_wasi_http::p2::add_only_http_to_linker_async(&mut linker)?;
        // Clocks and randomness go through the step's tape, so a replay repeats them.
        linker.allow_shadowing(true);
        {
            use crate::capabilities::clocks::HasTapedClocks as Taped;
            use wasmtime_wasi::p2::bindings::{clocks, random};
            clocks::monotonic_clock::add_to_linker::<_, Taped>(&mut linker, StepState::clocks)?;
            clocks::wall_clock::add_to_linker::<_, Taped>(&mut linker, StepState::clocks)?;
            random::random::add_to_linker::<_, Taped>(&mut linker, StepState::clocks)?;
            random::insecure::add_to_linker::<_, Taped>(&mut linker, StepState::clocks)?;
            random::insecure_seed::add_to_linker::<_, Taped>(&mut linker, StepState::clocks)?;
        }
        // Writes to disk are charged against the step's disk limit.
        filesystem::add_to_linker(&mut linker)?;
        linker.allow_shadowing(false);
        add_capabilities(&mut linker)?;
        let cache = ComponentCache::new(&engine, cache_dir);
        let ticker = Arc::new(AtomicBool::new(false));
        let stop = ticker.clone();
        let weak = engine.weak();
        std::thread::Builder::new().name("wharf-epoch".into()).spawn(move || {
            while !stop.load(Ordering::Relaxed) {
                std::thread::sleep(EPOCH_TICK);
                match weak.upgrade() {
                    Some(engine) => engine.increment_epoch(),
                    None => break,
                }
            }
        })?;
        Ok(Self {
            engine,
            linker,
            cache,
            loaded: Mutex::new(HashMap::new()),
            by_source: Mutex::new(HashMap::new()),
            ticker,
        })
    }

    pub fn engine(&self) -> &Engine {
        &self.engine
    }

    /// Read, compile (or fetch from the cache), link and describe a step.
    pub async fn load(&self, source: &StepSource, events: &Events) -> Result<Arc<LoadedStep>, LoadProblem> {
        if let Some(step) = self.by_source.lock().unwrap().get(source) {
            return Ok(step.clone());
        }
        let (origin, bytes) = read_source(source)?;
        let step = self.load_bytes(origin, bytes, events).await?;
        self.by_source.lock().unwrap().insert(source.clone(), step.clone());
        Ok(step)
    }

    /// The names a component imports and exports (interfaces, functions).
    pub fn interfaces(&self, bytes: &[u8]) -> anyhow::Result<(Vec<String>, Vec<String>)> {
        let digest = hex::encode(Sha256::digest(bytes));
        let (component, _) = self.cache.load(&self.engine, &digest, bytes)?;
        let ty = component.component_type();
        let imports = ty.imports(&self.engine).map(|(name, _)| name.to_string()).collect();
        let exports = ty.exports(&self.engine).map(|(name, _)| name.to_string()).collect();
        Ok((imports, exports))
    }

    /// Load a component from its bytes (a replay's stored components).
    pub async fn load_bytes(
        &self,
        origin: String,
        bytes: Vec<u8>,
        events: &Events,
    ) -> Result<Arc<LoadedStep>, LoadProblem> {
        let digest = format!("sha256:{}", hex::encode(Sha256::digest(&bytes)));
        if let Some(step) = self.loaded.lock().unwrap().get(&digest) {
            return Ok(step.clone());
        }
        check_header(&origin, &bytes)?;
        let contract = contract_of(&origin, &bytes)?;
        // A legacy step is compiled from its names read as 1.0.0: another cache entry.
        let legacy = matches!(contract, Support::Legacy(_))
            .then(|| wharf_contract::read_legacy_as_current(&bytes))
            .transpose()
            .map_err(|e| not_a_component(&origin, &e))?;
        let (engine_bytes, cache_key) = match &legacy {
            Some(read) => (&read[..], hex::encode(Sha256::digest(read))),
            None => (&bytes[..], digest["sha256:".len()..].to_string()),
        };
        let started = Instant::now();
        let (component, cached) = self
            .cache
            .load(&self.engine, &cache_key, engine_bytes)
            .map_err(|e| LoadProblem {
                message: format!("{origin} is not a valid WebAssembly component: {}", root_cause(&e)),
                help: "build it for wasm32-wasip2 (`cargo build --target wasm32-wasip2`) or with a componentizing toolchain".into(),
            })?;
        events.emit(Event::ComponentLoaded {
            origin: origin.clone(),
            digest: digest.clone(),
            cached,
            duration: started.elapsed(),
        });
        let step = self
            .link(origin, digest.clone(), &component, bytes.into(), contract)
            .await?;
        let step = Arc::new(step);
        self.loaded.lock().unwrap().insert(digest, step.clone());
        Ok(step)
    }

    async fn link(
        &self,
        origin: String,
        digest: String,
        component: &Component,
        bytes: Arc<[u8]>,
        contract: Support,
    ) -> Result<LoadedStep, LoadProblem> {
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
            let info = step::describe(&pre).await.map_err(|message| LoadProblem {
                message: format!("{origin}: describe() failed: {message}"),
                help: "describe() must return without side effects; fix the step".into(),
            })?;
            Ok(LoadedStep {
                origin,
                digest,
                kind: StepKind::Typed(pre),
                info: Some(info),
                bytes,
                contract,
            })
        } else {
            let pre = CommandPre::new(pre).map_err(bad_link)?;
            Ok(LoadedStep {
                origin,
                digest,
                kind: StepKind::Command(pre),
                info: None,
                bytes,
                contract,
            })
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

/// The `wharf:step` interfaces, each served on its own narrow view of a step's state.
fn add_capabilities(linker: &mut Linker<StepState>) -> wasmtime::Result<()> {
    use crate::capabilities::deploy::HasDeploy;
    use crate::capabilities::log::HasLog;
    use crate::capabilities::process::HasProcess;
    use crate::capabilities::secrets::HasSecrets;
    use crate::capabilities::{HasCall, bindings::wharf::step as wit};
    wit::types::add_to_linker::<_, HasCall>(linker, |s| &s.call)?;
    wit::log::add_to_linker::<_, HasLog>(linker, |s| &mut s.call.scope)?;
    wit::process::add_to_linker::<_, HasProcess>(linker, StepState::process)?;
    wit::source::add_to_linker::<_, HasCall>(linker, |s| &s.call)?;
    wit::secrets::add_to_linker::<_, HasSecrets>(linker, StepState::secrets)?;
    wit::images::add_to_linker::<_, HasCall>(linker, |s| &s.call)?;
    wit::registry::add_to_linker::<_, HasSecrets>(linker, StepState::secrets)?;
    wit::deploy::add_to_linker::<_, HasDeploy>(linker, StepState::deploy)?;
    Ok(())
}

/// On-demand instance allocation: measured beside the pooling allocator on whole runs, it
/// was as fast (docs/performance.md), without reserving hundreds of GiB of address space.
fn new_engine() -> anyhow::Result<Engine> {
    let mut config = Config::new();
    config.epoch_interruption(true);
    // Fuel makes a CPU limit exact and repeatable; steps without one get u64::MAX.
    config.consume_fuel(true);
    config.wasm_component_model(true);
    Ok(Engine::new(&config)?)
}

/// Largest component file wharf reads (the built-in steps are well under 1 MiB each).
pub const COMPONENT_LIMIT: u64 = 256 << 20;

fn read_source(source: &StepSource) -> Result<(String, Vec<u8>), LoadProblem> {
    match source {
        StepSource::Builtin(name) => match builtins::get(name) {
            Some(bytes) => Ok((format!("builtin:{name}"), bytes.to_vec())),
            None => Err(LoadProblem {
                message: format!("unknown built-in step `builtin:{name}`"),
                help: match crate::pipeline::diagnostic::suggest(name, builtins::names()) {
                    Some(s) => format!("did you mean `builtin:{s}`? `wharf steps` lists them all"),
                    None => format!(
                        "built-in steps: {}",
                        builtins::names()
                            .map(|n| format!("builtin:{n}"))
                            .collect::<Vec<_>>()
                            .join(", ")
                    ),
                },
            }),
        },
        StepSource::Oci(uses) => Err(LoadProblem {
            message: format!("{uses} is fetched from its registry, not read here"),
            help: "resolve `oci://` steps through `packages::Packages` first".into(),
        }),
        StepSource::File(path) => match crate::bounded::read(path, COMPONENT_LIMIT) {
            Ok(bytes) => Ok((path.display().to_string(), bytes)),
            Err(e) => Err(LoadProblem {
                message: format!("cannot read step: {e}"),
                help: "`uses:` takes `builtin:NAME` or a .wasm path relative to the pipeline file".into(),
            }),
        },
    }
}

/// Name the common mistakes before wasmtime's parser does.
/// The contract a component was built against; refused before it compiles when this host
/// does not speak it.
fn contract_of(origin: &str, bytes: &[u8]) -> Result<Support, LoadProblem> {
    let built = wharf_contract::built_against(bytes).map_err(|e| not_a_component(origin, &e))?;
    let support = Support::of(&built);
    match support.advice() {
        Some(advice) if !support.runs() => Err(LoadProblem {
            message: format!("{origin} cannot run on this wharf: {support}"),
            help: advice,
        }),
        _ => Ok(support),
    }
}

fn not_a_component(origin: &str, e: &wharf_contract::Error) -> LoadProblem {
    LoadProblem {
        message: format!("{origin} is not a valid WebAssembly component: {e}"),
        help: "build it for wasm32-wasip2 (`cargo build --target wasm32-wasip2`) or with a componentizing toolchain"
            .into(),
    }
}

fn check_header(origin: &str, bytes: &[u8]) -> Result<(), LoadProblem> {
    const MAGIC: &[u8] = b"\0asm";
    if bytes.len() < 8 || &bytes[..4] != MAGIC {
        return Err(LoadProblem {
            message: format!("{origin} is not a WebAssembly file (no `\\0asm` header)"),
            help: "point `uses:` at a .wasm component built for wasm32-wasip2".into(),
        });
    }
    // Layer field: 0 for a core module, 1 for a component.
    if bytes[6..8] == [0, 0] {
        return Err(LoadProblem {
            message: format!("{origin} is a core WebAssembly module, not a component"),
            help: "build for wasm32-wasip2, or wrap it: `wasm-tools component new module.wasm --adapt wasi_snapshot_preview1.command.wasm -o step.wasm`".into(),
        });
    }
    Ok(())
}

pub fn root_cause(e: &wasmtime::Error) -> String {
    let chain: Vec<String> = e.chain().map(|c| c.to_string()).collect();
    chain.join(": ")
}
