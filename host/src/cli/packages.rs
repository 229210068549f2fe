//! Steps as packages on the command line: `oci://` steps in a run (`--locked`,
//! `--offline`), `wharf lock`, `wharf pull`, `wharf step publish`.

use super::outcome::{CommandResult, Exit, Stop};
use crate::capabilities::secrets::SecretStore;
use crate::engine::{LoadedStep, Runtime};
use crate::events::Events;
use crate::oci::artifact::{self, ComponentInfo, Published};
use crate::oci::reference::ImageRef;
use crate::oci::registry::{Credentials, Registry};
use crate::packages::lock::{self, Lock};
use crate::packages::trust::Trust;
use crate::packages::{self, LockMode, PackageError, Packages};
use crate::pipeline::validate::LoadProblem;
use crate::pipeline::{Pipeline, StepSource};
use clap::{Args, Subcommand};
use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::sync::Arc;

/// Where `oci://` steps come from in a run.
#[derive(Args, Clone, Default)]
pub(super) struct SourceArgs {
    /// Refuse to run when a step is missing from wharf.lock or strays from it (a tag that
    /// now names another digest, a changed .wasm, other built-ins): for CI
    #[arg(long)]
    locked: bool,
    /// Never touch the network: `oci://` steps come from the step cache (`wharf pull`)
    #[arg(long)]
    offline: bool,
    /// The step cache, set from `--cache-dir`.
    #[arg(skip)]
    pub(super) cache: Option<PathBuf>,
}

impl SourceArgs {
    fn mode(&self) -> LockMode {
        if self.locked { LockMode::Locked } else { LockMode::Use }
    }
}

/// The step cache: `steps/` in the cache directory.
pub(super) fn step_cache(cache_dir: Option<&Path>) -> Option<PathBuf> {
    cache_dir
        .map(|d| d.join("steps"))
        .or_else(|| packages::cache_dir("steps"))
}

fn open_packages(cache: Option<&Path>, offline: bool, secrets: &SecretStore) -> Result<Packages, Stop> {
    let dir = cache
        .map(Path::to_path_buf)
        .or_else(|| step_cache(None))
        .ok_or_else(|| Stop::invalid("no step cache: set WHARF_CACHE_DIR or HOME"))?;
    let secrets = secrets.clone();
    let credentials = Box::new(move |host: &str| credentials(host, &secrets));
    Packages::open(&dir, offline, credentials).map_err(|e| Stop::failed(explain(&e)))
}

/// A registry's credentials: user `WHARF_REGISTRY_USER_<HOST>`, password the secret
/// `REGISTRY_<HOST>` (`<HOST>` as [`packages::credentials_key`] spells it); else the login
/// `docker login` stored; else none.
pub(super) fn credentials(host: &str, secrets: &SecretStore) -> Credentials {
    let key = packages::credentials_key(host);
    let own = Credentials {
        username: std::env::var(format!("WHARF_REGISTRY_USER_{key}")).ok(),
        password: secrets.get(&format!("REGISTRY_{key}")).map(String::from),
    };
    if own.username.is_some() || own.password.is_some() {
        return own;
    }
    packages::docker_login(host).unwrap_or_default()
}

/// A package problem as a command prints it: what went wrong, then what to do.
fn explain(e: &PackageError) -> String {
    format!("{e}\n  = help: {}", e.help())
}

fn problem(e: PackageError) -> LoadProblem {
    LoadProblem {
        message: e.to_string(),
        help: e.help(),
    }
}

/// Load every step of `pipeline`, `oci://` ones through the lock beside `file` and the step
/// cache. A problem with one step is that step's (reported at its `uses:`); warnings about
/// drift from the lock come back with the steps.
pub(super) async fn load_steps(
    runtime: &Runtime,
    pipeline: &Pipeline,
    file: &Path,
    sources: &SourceArgs,
    secrets: &SecretStore,
    events: &Events,
) -> Result<(Vec<Result<Arc<LoadedStep>, LoadProblem>>, Vec<String>), Stop> {
    let lock_path = Lock::path_for(file);
    let lock = Lock::read(&lock_path).map_err(Stop::invalid)?;
    let trust = Trust::read(&Trust::path_for(file)).map_err(Stop::invalid)?;
    let mode = sources.mode();
    let mut warnings = BTreeSet::new();
    if pipeline.steps.iter().any(|s| s.uses.starts_with("builtin:")) {
        match packages::check_builtins(lock.as_ref(), &lock_path, mode) {
            Ok(warning) => warnings.extend(warning.map(|w| w.to_string())),
            Err(e) => return Err(Stop::invalid(explain(&e))),
        }
    }
    let mut store = None;
    let mut loaded = Vec::new();
    for step in &pipeline.steps {
        let result = match step.source(pipeline.dir()) {
            StepSource::Oci(uses) => {
                let store = match &mut store {
                    Some(store) => store,
                    None => store.insert(open_packages(sources.cache.as_deref(), sources.offline, secrets)?),
                };
                match store
                    .resolve_oci(&uses, lock.as_ref(), &lock_path, trust.as_ref(), mode)
                    .await
                {
                    Ok(resolved) => {
                        warnings.extend(resolved.warning.map(|w| w.to_string()));
                        runtime.load_bytes(resolved.origin, resolved.bytes, events).await
                    }
                    Err(e) => Err(problem(e)),
                }
            }
            source @ StepSource::File(_) => match runtime.load(&source, events).await {
                Ok(loaded) => {
                    match packages::check_local(&step.uses, &loaded.digest, lock.as_ref(), &lock_path, mode) {
                        Ok(warning) => {
                            warnings.extend(warning.map(|w| w.to_string()));
                            Ok(loaded)
                        }
                        Err(e) => Err(problem(e)),
                    }
                }
                Err(e) => Err(e),
            },
            source => runtime.load(&source, events).await,
        };
        loaded.push(result);
    }
    Ok((loaded, warnings.into_iter().collect()))
}

#[derive(Args)]
pub struct LockArgs {
    /// The pipeline file; wharf.lock is written beside it
    file: PathBuf,
    /// Take what the tags name now: every step's, or only these steps' (by id)
    #[arg(long, value_name = "STEP", num_args = 0.., require_equals = false)]
    update: Option<Vec<String>>,
    /// Fetch from the step cache only
    #[arg(long)]
    offline: bool,
    #[arg(skip)]
    pub(super) cache: Option<PathBuf>,
}

/// `wharf lock`: the digest of every step the pipeline uses, written to wharf.lock.
pub(super) async fn lock(args: LockArgs, secrets: &SecretStore) -> CommandResult {
    let pipeline = Pipeline::load(&args.file)?;
    let lock_path = Lock::path_for(&args.file);
    let old = Lock::read(&lock_path).map_err(Stop::invalid)?;
    let trust = Trust::read(&Trust::path_for(&args.file)).map_err(Stop::invalid)?;
    if let Some(ids) = &args.update {
        for id in ids {
            if !pipeline.steps.iter().any(|s| s.id == *id) {
                return Err(Stop::invalid(format!(
                    "`--update {id}`: {} has no step `{id}`",
                    args.file.display()
                )));
            }
        }
    }
    let mut store = None;
    let mut steps = BTreeMap::new();
    let mut signatures = BTreeMap::new();
    let mut lines = Vec::new();
    for step in &pipeline.steps {
        if steps.contains_key(&step.uses) {
            continue;
        }
        let update = args
            .update
            .as_ref()
            .is_some_and(|ids| ids.is_empty() || ids.contains(&step.id));
        let mode = if update { LockMode::Update } else { LockMode::Use };
        let mut signed = None;
        let digest = match step.source(pipeline.dir()) {
            StepSource::Builtin(_) => continue,
            StepSource::Oci(uses) => {
                let store = match &mut store {
                    Some(store) => store,
                    None => store.insert(open_packages(args.cache.as_deref(), args.offline, secrets)?),
                };
                let resolved = store
                    .resolve_oci(&uses, old.as_ref(), &lock_path, trust.as_ref(), mode)
                    .await
                    .map_err(|e| Stop::failed(format!("step `{}`: {}", step.id, explain(&e))))?;
                if let Some(signature) = resolved.signature {
                    signed = Some(signature.key.clone());
                    signatures.insert(step.uses.clone(), signature);
                }
                if let Some(PackageError::TagMoved { now, .. }) = &resolved.warning {
                    lines.push(format!(
                        "  note: {uses} now names {now}; kept the locked digest (`wharf lock --update {}` takes it)",
                        step.id
                    ));
                }
                resolved.digest
            }
            StepSource::File(path) => {
                let bytes = crate::bounded::read(&path, crate::engine::COMPONENT_LIMIT)
                    .map_err(|e| Stop::invalid(format!("step `{}`: cannot read {}: {e}", step.id, path.display())))?;
                packages::digest_of(&bytes)
            }
        };
        let before = old.as_ref().and_then(|l| l.steps.get(&step.uses));
        let what = match before {
            None => "added".to_string(),
            Some(d) if *d == digest => "kept".to_string(),
            Some(d) => format!("was {}", short(d)),
        };
        lines.push(format!("  {:<12} {} {} ({what})", step.id, step.uses, short(&digest)));
        if let Some(key) = signed {
            lines.push(format!("  {:<12} signed by {key}", ""));
        }
        steps.insert(step.uses.clone(), digest);
    }
    let mut new = Lock::new(steps);
    new.signatures = signatures;
    new.write(&lock_path).map_err(Stop::failed)?;
    outln!(
        "{}: {} locked, built-in steps of {}",
        lock_path.display(),
        crate::events::count(new.steps.len(), "step"),
        lock::builtins_version()
    );
    for line in lines {
        outln!("{line}");
    }
    Ok(Exit::Success)
}

#[derive(Args)]
pub struct PullArgs {
    /// The pipeline file; its wharf.lock decides the digests
    file: PathBuf,
    /// Refuse steps missing from wharf.lock or straying from it
    #[arg(long)]
    locked: bool,
    /// Fetch into this OCI layout instead of the step cache, to carry across an air gap
    #[arg(long, value_name = "DIR", conflicts_with = "from")]
    into: Option<PathBuf>,
    /// Fill the step cache from an OCI layout made by `--into`, without the network
    #[arg(long, value_name = "DIR")]
    from: Option<PathBuf>,
    #[arg(skip)]
    pub(super) cache: Option<PathBuf>,
}

/// `wharf pull`: every `oci://` step of a pipeline into the step cache, for `--offline`.
pub(super) async fn pull(args: PullArgs, secrets: &SecretStore) -> CommandResult {
    let pipeline = Pipeline::load(&args.file)?;
    let lock_path = Lock::path_for(&args.file);
    let lock = Lock::read(&lock_path).map_err(Stop::invalid)?;
    let trust = Trust::read(&Trust::path_for(&args.file)).map_err(Stop::invalid)?;
    let mode = if args.locked { LockMode::Locked } else { LockMode::Use };
    if let Some(dir) = &args.from
        && !dir.join("oci-layout").is_file()
    {
        return Err(Stop::invalid(format!(
            "{} is not an OCI layout (no oci-layout file); make one with `wharf pull PIPELINE --into DIR`",
            dir.display()
        )));
    }
    // Where the steps come from (a carried layout, offline; else their registries) and
    // where they go (a layout to carry, or the step cache).
    let store = match (&args.from, &args.into) {
        (Some(from), _) => open_packages(Some(from), true, secrets)?,
        (None, into) => open_packages(into.as_deref().or(args.cache.as_deref()), false, secrets)?,
    };
    let cache = match &args.from {
        Some(_) => Some(open_packages(args.cache.as_deref(), true, secrets)?),
        None => None,
    };
    let mut pulled = BTreeSet::new();
    for step in &pipeline.steps {
        if let StepSource::Oci(uses) = step.source(pipeline.dir())
            && pulled.insert(uses.clone())
        {
            let resolved = store
                .resolve_oci(&uses, lock.as_ref(), &lock_path, trust.as_ref(), mode)
                .await
                .map_err(|e| Stop::failed(format!("step `{}`: {}", step.id, explain(&e))))?;
            if let Some(warning) = &resolved.warning {
                outln!("  warning: {warning}");
            }
            let stored = match &cache {
                Some(cache) => artifact::copy_artifact(
                    store.store(),
                    cache.store(),
                    &resolved.digest,
                    packages::COMPONENT_LIMIT,
                )
                .and_then(|()| match &resolved.signature {
                    Some(signature) => packages::copy_signature(store.store(), cache.store(), &signature.bundle),
                    None => Ok(()),
                }),
                None if args.into.is_some() => {
                    let name = uses.strip_prefix(packages::SCHEME).unwrap_or(&uses);
                    let name = name.split('@').next().unwrap_or(name);
                    artifact::name_artifact(store.store(), name, &resolved.digest)
                }
                None => Ok(()),
            };
            stored.map_err(|e| Stop::failed(format!("step `{}`: {uses}: {e}", step.id)))?;
            outln!("  {:<12} {} {}", step.id, uses, short(&resolved.digest));
        }
    }
    let into = cache.as_ref().unwrap_or(&store).store().root();
    outln!("{} in {}", crate::events::count(pulled.len(), "step"), into.display());
    Ok(Exit::Success)
}

#[derive(Subcommand)]
pub enum StepCommand {
    /// Publish a step component to an OCI registry as a Wasm artifact
    #[command(after_help = "Examples:
  wharf step publish target/wasm32-wasip2/release/my_step.wasm ghcr.io/acme/steps/my-step:1.2.0
  wharf step publish step.wasm 127.0.0.1:5000/steps/hello:0.1.0 --source https://github.com/acme/steps

The artifact is the CNCF Wasm layout that wkg and oras use (config
application/vnd.wasm.config.v0+json, one application/wasm layer). Version tags are immutable:
publishing the same component again changes nothing, another one under the same tag is
refused. Credentials: WHARF_REGISTRY_USER_<HOST> and the secret REGISTRY_<HOST>
(WHARF_SECRET_REGISTRY_<HOST>), <HOST> upper-cased with `_` for every other character.
Then use it as `uses: oci://HOST/REPOSITORY:VERSION` and pin it with `wharf lock`.")]
    Publish(PublishArgs),
}

#[derive(Args)]
pub struct PublishArgs {
    /// The component (.wasm)
    step: PathBuf,
    /// Where to: REGISTRY/REPOSITORY:VERSION
    target: String,
    /// Allow a tag that is not a version (`latest`, `main`): it can be moved, so a run that
    /// uses it can change under a pipeline
    #[arg(long)]
    allow_mutable_tag: bool,
    /// Where the step's source lives (org.opencontainers.image.source)
    #[arg(long, value_name = "URL")]
    source: Option<String>,
    /// Sign the artifact with this private key: a file (`wharf key generate`), or
    /// `secret:NAME` for the secret NAME (WHARF_SECRET_NAME)
    #[arg(long, value_name = "KEY")]
    sign: Option<String>,
    #[arg(skip)]
    pub(super) cache: Option<PathBuf>,
}

/// The private key `--sign` names.
fn signing_key(spec: &str, secrets: &SecretStore) -> Result<wharf_sign::KeyPair, Stop> {
    match spec.strip_prefix("secret:") {
        Some(name) => {
            let pem = secrets
                .get(name)
                .ok_or_else(|| Stop::invalid(format!("--sign {spec}: no secret `{name}` (set WHARF_SECRET_{name})")))?;
            wharf_sign::KeyPair::from_pem(pem, &format!("secret `{name}`")).map_err(Stop::invalid)
        }
        None => wharf_sign::KeyPair::read(Path::new(spec)).map_err(Stop::invalid),
    }
}

pub(super) async fn step(runtime: &Runtime, command: StepCommand, secrets: &SecretStore) -> CommandResult {
    match command {
        StepCommand::Publish(args) => publish(runtime, args, secrets).await,
    }
}

async fn publish(runtime: &Runtime, args: PublishArgs, secrets: &SecretStore) -> CommandResult {
    let target = ImageRef::parse(&args.target).map_err(Stop::invalid)?;
    let (Some(host), Some(tag), None) = (&target.registry, &target.tag, &target.digest) else {
        return Err(Stop::invalid(format!(
            "`{}`: publish to REGISTRY/REPOSITORY:VERSION (a registry host, a version tag, no digest)",
            args.target
        )));
    };
    if target.has_mutable_tag() && !args.allow_mutable_tag {
        return Err(Stop::invalid(format!(
            "`{tag}` is not a version: a tag like it is moved from build to build, and a pipeline that uses it runs whatever it names today\n  = help: publish under a version (`:1.2.0`), or pass --allow-mutable-tag if you mean it"
        )));
    }
    // A key that cannot sign stops the publish before anything is sent.
    let key = args
        .sign
        .as_deref()
        .map(|spec| signing_key(spec, secrets))
        .transpose()?;
    let bytes = crate::bounded::read(&args.step, crate::engine::COMPONENT_LIMIT)
        .map_err(|e| Stop::invalid(format!("cannot read step: {e}")))?;
    let events = Events::new();
    let loaded = runtime
        .load_bytes(args.step.display().to_string(), bytes.clone(), &events)
        .await
        .map_err(|p| Stop::invalid(format!("{}\n  = help: {}", p.message, p.help)))?;
    let (imports, exports) = runtime
        .interfaces(&bytes)
        .map_err(|e| Stop::invalid(format!("{}: {e}", args.step.display())))?;
    let name = match &loaded.info {
        Some(info) if !info.name.is_empty() => info.name.clone(),
        _ => target.repository.rsplit('/').next().unwrap_or("step").to_string(),
    };
    let mut annotations = BTreeMap::new();
    let created = humantime::format_rfc3339_seconds(std::time::SystemTime::now()).to_string();
    annotations.insert("org.opencontainers.image.created".to_string(), created.clone());
    annotations.insert("org.opencontainers.image.title".to_string(), name.clone());
    annotations.insert("dev.wharf.step.name".to_string(), name.clone());
    // What a registry's reader needs to know before pulling: which wharf runs it.
    if let Some(contract) = loaded.contract.built() {
        annotations.insert("dev.wharf.step.contract".to_string(), contract.to_string());
    }
    let version = loaded
        .info
        .as_ref()
        .map(|i| i.version.clone())
        .filter(|v| !v.is_empty())
        .unwrap_or_else(|| tag.clone());
    annotations.insert("org.opencontainers.image.version".to_string(), version.clone());
    annotations.insert("dev.wharf.step.version".to_string(), version);
    if let Some(summary) = loaded
        .info
        .as_ref()
        .map(|i| i.summary.clone())
        .filter(|s| !s.is_empty())
    {
        annotations.insert("org.opencontainers.image.description".to_string(), summary.clone());
        annotations.insert("dev.wharf.step.summary".to_string(), summary);
    }
    if let Some(source) = &args.source {
        annotations.insert("org.opencontainers.image.source".to_string(), source.clone());
    }
    let store = open_packages(args.cache.as_deref(), false, secrets)?;
    let stored = artifact::store_component(
        store.store(),
        &bytes,
        &name,
        &ComponentInfo { exports, imports },
        &created,
        annotations,
    )
    .map_err(|e| Stop::failed(format!("step cache {}: {e}", store.store().root().display())))?;
    let registry = Registry::new(host, credentials(host, secrets)).map_err(Stop::invalid)?;
    let published = artifact::publish(
        store.store(),
        &stored,
        &registry,
        &target.repository,
        tag,
        // Version tags stay immutable whatever the flag says.
        target.has_mutable_tag() && args.allow_mutable_tag,
    )
    .await
    .map_err(Stop::failed)?;
    let digest = match published {
        Published::Pushed(report) => {
            outln!(
                "published {} as {host}/{}:{tag} ({} sent, {} already there)",
                args.step.display(),
                target.repository,
                crate::events::count(report.uploaded as usize, "blob"),
                report.skipped
            );
            report.digest
        }
        Published::AlreadyThere { digest } => {
            outln!(
                "{host}/{}:{tag} already holds this component: nothing sent",
                target.repository
            );
            digest
        }
    };
    outln!("  digest {digest}");
    if let Some(key) = &key {
        let uses = format!("{}{host}/{}:{tag}", packages::SCHEME, target.repository);
        let r =
            packages::StepRef::parse(uses.strip_prefix(packages::SCHEME).unwrap_or(&uses)).map_err(Stop::invalid)?;
        let signature = store
            .sign(&r, &uses, &digest, key)
            .await
            .map_err(|e| Stop::failed(explain(&e)))?;
        outln!(
            "  signed by {} (signature {})",
            key.public().fingerprint(),
            short(&signature.digest)
        );
    }
    outln!("  uses: oci://{host}/{}:{tag}@{digest}", target.repository);
    Ok(Exit::Success)
}

fn short(digest: &str) -> &str {
    let hex = digest.strip_prefix("sha256:").unwrap_or(digest);
    &hex[..hex.len().min(12)]
}

/// `wharf inspect oci://...`: what the step declares, its digest, size and annotations,
/// without running it.
pub(super) async fn inspect(
    runtime: &Runtime,
    uses: &str,
    keys: &[wharf_sign::PublicKey],
    cache: Option<&Path>,
    secrets: &SecretStore,
) -> CommandResult {
    let store = open_packages(cache, false, secrets)?;
    let resolved = store
        .resolve_oci(uses, None, Path::new(lock::FILE_NAME), None, LockMode::Use)
        .await
        .map_err(|e| Stop::invalid(explain(&e)))?;
    let manifest = store.manifest(&resolved.digest);
    let size = resolved.bytes.len();
    let step = runtime
        .load_bytes(resolved.origin.clone(), resolved.bytes, &Events::new())
        .await
        .map_err(|p| Stop::invalid(format!("{}\n  = help: {}", p.message, p.help)))?;
    outln!("{}", resolved.origin);
    outln!("  component {} ({size} bytes)", step.digest);
    for (key, value) in manifest.and_then(|m| m.annotations).unwrap_or_default() {
        outln!("  {key}: {value}");
    }
    let r = packages::StepRef::parse(uses.strip_prefix(packages::SCHEME).unwrap_or(uses)).map_err(Stop::invalid)?;
    let signatures = store
        .signatures(&r, uses, &resolved.digest)
        .await
        .map_err(|e| Stop::failed(explain(&e)))?;
    if signatures.is_empty() {
        outln!("  signatures: none");
    }
    for (referrer, bundle) in signatures {
        let said = match bundle {
            Err(why) => format!("unreadable: {why}"),
            Ok(bundle) => match keys.is_empty() {
                true => format!("claims {} (check it: --key PUB)", bundle.claimed_signers().join(", ")),
                false => {
                    match bundle.verify_about(keys, wharf_sign::statement::SIGNATURE_PREDICATE, &resolved.digest) {
                        Ok(v) => format!("signed by {} (verified)", v.signer),
                        Err(e) => format!("refused: {e}"),
                    }
                }
            },
        };
        outln!("  signature {}: {said}", short(&referrer));
    }
    outln!();
    super::catalog::describe(&step);
    Ok(Exit::Success)
}
