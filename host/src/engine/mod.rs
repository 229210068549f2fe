//! The wasmtime side: one `Engine` per process, a linker with every host interface, the
//! compile cache, and loaded steps kept as `InstancePre` so each run only instantiates.

pub mod cache;
pub mod filesystem;
pub mod limits;
pub mod linking;
pub mod state;
pub mod step;

use crate::builtins;
use crate::capabilities::bindings::TypedStepPre;
use crate::events::{Event, Events};
use crate::pipeline::StepSource;
use crate::pipeline::describe::StepInfo;
use crate::pipeline::validate::{LoadProblem, StepShape};
use cache::{ComponentCache, Linked};
use linking::Linking;
use sha2::{Digest, Sha256};
use state::StepState;
use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use wasmtime::component::Linker;
use wasmtime::{Config, Engine};
use wasmtime_wasi::p2::bindings::CommandPre;
use wharf_contract::Support;

/// How often the epoch advances: the granularity at which a busy step yields so timeouts
/// can fire.
pub const EPOCH_TICK: Duration = Duration::from_millis(10);

/// A step, checked and described: ready to instantiate once linked.
pub struct LoadedStep {
    /// `builtin:NAME` or the file path.
    pub origin: String,
    /// `sha256:HEX` of the component bytes.
    pub digest: String,
    /// `describe()` of a typed step.
    pub info: Option<StepInfo>,
    /// The component itself, for the run's journal.
    pub bytes: Arc<[u8]>,
    /// The `wharf:step` contract it was built against, as this host serves it.
    pub contract: Support,
    /// A WASI command, not a typed step.
    command: bool,
    /// Linked when loaded, or (described from the compile cache's record of an earlier
    /// link) when it first runs.
    linked: tokio::sync::OnceCell<StepKind>,
    linking: Arc<Linking>,
}

pub enum StepKind {
    Typed(TypedStepPre<StepState>),
    Command(CommandPre<StepState>),
}

impl LoadedStep {
    pub fn engine(&self) -> &Engine {
        &self.linking.engine
    }

    /// Ready to instantiate: compiled and linked now if that was left until it ran (its
    /// `component-loaded` event is then told to `events`).
    pub async fn kind(&self, events: &Events) -> Result<&StepKind, String> {
        self.linked
            .get_or_try_init(|| async {
                let linked = self.link_now(events).await;
                if linked.is_err() {
                    // The record did not hold: the next run links the step before it runs.
                    self.linking.cache.forget_linked(&self.digest["sha256:".len()..]);
                }
                linked
            })
            .await
    }

    async fn link_now(&self, events: &Events) -> Result<StepKind, String> {
        let started = Instant::now();
        let (component, cached) = self
            .linking
            .compile(&self.origin, &self.digest, &self.bytes, &self.contract)
            .map_err(|p| p.message)?;
        let (kind, _) = self
            .linking
            .link(&self.origin, &component, false)
            .await
            .map_err(|p| p.message)?;
        events.emit(Event::ComponentLoaded {
            origin: self.origin.clone(),
            digest: self.digest.clone(),
            cached,
            duration: started.elapsed(),
        });
        match (&kind, self.command) {
            (StepKind::Command(_), true) | (StepKind::Typed(_), false) => Ok(kind),
            _ => Err(format!(
                "{} links as another kind of step than the compile cache recorded; run again",
                self.origin
            )),
        }
    }

    /// A WASI command writes its outputs to a file in a scratch directory.
    pub fn needs_scratch(&self) -> bool {
        self.command
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
    linking: Arc<Linking>,
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

pub use linking::{COMMAND_EXPORT_PREFIX, TYPED_EXPORT};

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
            linking: Arc::new(Linking { engine, linker, cache }),
            loaded: Mutex::new(HashMap::new()),
            by_source: Mutex::new(HashMap::new()),
            ticker,
        })
    }

    pub fn engine(&self) -> &Engine {
        &self.linking.engine
    }

    /// Read, check and describe a step: compiled (or fetched from the compile cache) and
    /// linked now, or when it first runs if the compile cache recorded its shape.
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
        let engine = self.engine();
        let (component, _) = self.linking.cache.load(engine, &digest, bytes)?;
        let ty = component.component_type();
        let imports = ty.imports(engine).map(|(name, _)| name.to_string()).collect();
        let exports = ty.exports(engine).map(|(name, _)| name.to_string()).collect();
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
        let started = Instant::now();
        let hex = &digest["sha256:".len()..];
        let linking = &self.linking;
        // Described from the record of an earlier link, the step is compiled and linked
        // when it first runs; else now.
        let (linked, recorded) = match linking.cache.linked(hex) {
            Some(recorded) => (None, recorded),
            None => {
                let (component, cached) = linking.compile(&origin, &digest, &bytes, &contract)?;
                let (kind, info) = linking.link(&origin, &component, true).await?;
                events.emit(Event::ComponentLoaded {
                    origin: origin.clone(),
                    digest: digest.clone(),
                    cached,
                    duration: started.elapsed(),
                });
                let recorded = Linked {
                    command: matches!(kind, StepKind::Command(_)),
                    info,
                };
                linking.cache.remember_linked(hex, &recorded);
                (Some(kind), recorded)
            }
        };
        let step = LoadedStep {
            origin,
            digest: digest.clone(),
            info: recorded.info,
            bytes: bytes.into(),
            contract,
            command: recorded.command,
            linked: tokio::sync::OnceCell::new_with(linked),
            linking: linking.clone(),
        };
        let step = Arc::new(step);
        self.loaded.lock().unwrap().insert(digest, step.clone());
        Ok(step)
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
