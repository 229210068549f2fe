//! The step catalogue and pipeline checks: `wharf validate`, `wharf steps`, `wharf inspect`.

use super::outcome::{CommandResult, Exit, Stop};
use super::run::{Inputs, prepare};
use crate::capabilities::secrets::SecretStore;
use crate::engine::{LoadedStep, Runtime};
use crate::events::Events;
use crate::pipeline::StepSource;
use crate::pipeline::describe::{CapabilityKind, StepInfo};
use crate::pipeline::params::{display, type_name};
use clap::Args;
use std::path::PathBuf;

#[derive(Args)]
pub struct ValidateArgs {
    /// The pipeline file
    file: PathBuf,
    #[command(flatten)]
    pub(super) inputs: Inputs,
}

impl ValidateArgs {
    pub(super) fn workspace(&self) -> PathBuf {
        super::run::pipeline_dir(&self.file)
    }
}

#[derive(Args)]
pub struct InspectArgs {
    /// `builtin:NAME`, a path to a .wasm component, or `oci://REGISTRY/REPO:VERSION`
    step: String,
    /// For an `oci://` step: check its signatures with this public key (repeat for several)
    #[arg(long, value_name = "PUB")]
    key: Vec<PathBuf>,
    #[arg(skip)]
    pub(super) cache: Option<PathBuf>,
}

pub(super) async fn validate(runtime: &Runtime, args: ValidateArgs, secrets: &SecretStore) -> CommandResult {
    let events = Events::new();
    let p = prepare(runtime, &args.file, &args.inputs, secrets, &events).await?;
    for warning in &p.warnings {
        eprintln!("warning: {warning}");
    }
    outln!(
        "{}: valid · pipeline `{}` · {}",
        args.file.display(),
        p.pipeline.name,
        crate::events::count(p.steps.len(), "step")
    );
    outln!("effective grants: `allow:` plus what a built-in step's own parameters name\n");
    for (decl, step) in p.pipeline.steps.iter().zip(&p.steps) {
        let kind = if step.info.is_some() {
            "typed step"
        } else {
            "WASI command"
        };
        outln!(
            "  {:<12} {} ({kind}, {})",
            decl.id,
            decl.uses,
            short_digest(&step.digest)
        );
        let grants = preview_grants(decl, step);
        if grants.is_empty() {
            outln!("      (no grants: it can only log)");
        }
        for line in grants {
            outln!("      {line}");
        }
    }
    Ok(Exit::Success)
}

/// The grants a step will run with, as far as they are known before the run: values that
/// are interpolated show their expression.
fn preview_grants(decl: &crate::pipeline::StepDecl, step: &LoadedStep) -> Vec<String> {
    use crate::pipeline::params::{convert, scalars};
    let mut lines = decl.allow.describe();
    let Some(info) = step.info.as_ref().filter(|_| step.is_builtin()) else {
        return lines;
    };
    let mut values = Vec::new();
    let mut pending = Vec::new();
    for cap in &info.capabilities {
        let Some(name) = &cap.scope_param else { continue };
        let Some(spec) = info.params.iter().find(|p| p.name == *name) else {
            continue;
        };
        match decl.with.iter().find(|p| p.name == *name) {
            Some(p) if scalars(&p.value).iter().any(|s| s.text.contains("${{")) => {
                let raw: Vec<&str> = scalars(&p.value).iter().map(|s| s.text.as_str()).collect();
                pending.push(format!(
                    "{:<9} {}  (from `{name}`, at run time)",
                    capability_name(cap.kind),
                    raw.join(" ")
                ));
            }
            Some(p) => {
                if let Ok(v) = convert(name, &p.value, spec.type_) {
                    values.push((name.clone(), v));
                }
            }
            None => {
                if let Some(d) = &spec.default {
                    values.push((name.clone(), d.clone()));
                }
            }
        }
    }
    let mut derived = crate::sandbox::Grants::default();
    // Paths that lead outside the workspace were refused by validation already.
    let _ = derived.derive(info, &values);
    lines.extend(derived.describe());
    lines.extend(pending);
    lines
}

fn short_digest(d: &str) -> String {
    d.chars().take("sha256:".len() + 12).collect()
}

pub(super) async fn steps(runtime: &Runtime) -> CommandResult {
    let (package, current) = (wharf_contract::PACKAGE, &wharf_contract::CURRENT);
    let runs = match current.minor {
        0 => format!("{package}@{}.0", current.major),
        minor => format!("{package}@{}.0 to {}.{minor}", current.major, current.major),
    };
    outln!(
        "contract {package}@{current}: runs steps built against {runs}, and {package}@{} steps with a warning\n",
        wharf_contract::LEGACY
    );
    let events = Events::new();
    let mut rows = Vec::new();
    for name in crate::builtins::names() {
        match runtime.load(&StepSource::Builtin(name.into()), &events).await {
            Ok(step) => {
                let info = step.info.as_ref();
                rows.push((
                    format!("builtin:{name}"),
                    info.map(|i| i.version.clone()).unwrap_or_default(),
                    info.map(|i| i.summary.clone()).unwrap_or_default(),
                ));
            }
            Err(p) => rows.push((
                format!("builtin:{name}"),
                "?".into(),
                format!("failed to load: {}", p.message),
            )),
        }
    }
    let width = rows.iter().map(|r| r.0.len()).max().unwrap_or(0);
    for (name, version, summary) in rows {
        outln!("{name:<width$}  {version:<6}  {summary}");
    }
    outln!("\n`wharf inspect builtin:NAME` shows a step's parameters, outputs and capabilities.");
    Ok(Exit::Success)
}

pub(super) async fn inspect(runtime: &Runtime, args: InspectArgs, secrets: &SecretStore) -> CommandResult {
    if args.step.starts_with(crate::packages::SCHEME) {
        let keys = args
            .key
            .iter()
            .map(|k| wharf_sign::PublicKey::read(k))
            .collect::<Result<Vec<_>, _>>()
            .map_err(Stop::invalid)?;
        return super::packages::inspect(runtime, &args.step, &keys, args.cache.as_deref(), secrets).await;
    }
    let source = match args.step.strip_prefix("builtin:") {
        Some(name) => StepSource::Builtin(name.into()),
        None => StepSource::File(PathBuf::from(&args.step)),
    };
    let step = runtime
        .load(&source, &Events::new())
        .await
        .map_err(|p| Stop::invalid(format!("{}\n  = help: {}", p.message, p.help)))?;
    outln!("{}  ({})", step.origin, step.digest);
    describe(&step);
    Ok(Exit::Success)
}

/// What a loaded step declares: parameters, outputs, capabilities; or how a command works.
pub(super) fn describe(step: &LoadedStep) {
    outln!("contract: {}", step.contract);
    if let Some(advice) = step.contract.advice() {
        outln!("  = note: {advice}");
    }
    match &step.info {
        Some(info) => print_info(info),
        None => {
            outln!("WASI command step (exports wasi:cli/run)");
            outln!("  parameters arrive as WHARF_PARAM_<NAME> environment variables;");
            outln!("  outputs are key=value lines written to the file named by WHARF_OUTPUT;");
            outln!("  exit code 0 is success.");
        }
    }
}

fn print_info(info: &StepInfo) {
    outln!("{} {} · {}", info.name, info.version, info.summary);
    outln!("\nparameters:");
    if info.params.is_empty() {
        outln!("  (none)");
    }
    for p in &info.params {
        let mut attrs = vec![type_name(p.type_).to_string()];
        if p.required {
            attrs.push("required".into());
        }
        if let Some(d) = &p.default {
            attrs.push(format!("default {}", display(d)));
        }
        outln!(
            "  {:<18} {:<34} {}",
            p.name,
            format!("({})", attrs.join(", ")),
            p.description
        );
    }
    outln!("\noutputs:");
    if info.outputs.is_empty() {
        outln!("  (none)");
    }
    for o in &info.outputs {
        outln!("  {:<18} {}", o.name, o.description);
    }
    outln!("\ncapabilities:");
    if info.capabilities.is_empty() {
        outln!("  (none)");
    }
    for c in &info.capabilities {
        let scope = c
            .scope_param
            .as_ref()
            .map(|p| format!(" (scoped by `{p}`)"))
            .unwrap_or_default();
        outln!("  {:<18} {}{scope}", capability_name(c.kind), c.reason);
    }
}

pub fn capability_name(kind: CapabilityKind) -> &'static str {
    match kind {
        CapabilityKind::Process => "process",
        CapabilityKind::Source => "source",
        CapabilityKind::Secrets => "secrets",
        CapabilityKind::Http => "http",
        CapabilityKind::Images => "images",
        CapabilityKind::Registry => "registry",
        CapabilityKind::Deploy => "deploy",
        CapabilityKind::WorkspaceRead => "workspace-read",
        CapabilityKind::WorkspaceWrite => "workspace-write",
    }
}
