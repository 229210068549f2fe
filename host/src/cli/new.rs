//! `wharf new`: scaffold a step project or a pipeline from templates built into the binary,
//! so a new step needs nothing but wharf, cargo and the wasm32-wasip2 target.

use super::outcome::{CommandResult, Exit, Stop};
use clap::{Args, Subcommand, ValueEnum};
use std::path::{Path, PathBuf};

#[derive(Subcommand)]
pub enum NewCommand {
    /// A step project: source, build command, a pipeline that runs it, a README
    #[command(after_help = "Examples:
  wharf new step hello                    # a typed step in Rust (the SDK is copied in)
  wharf new step hello --lang python      # a typed step in Python (componentize-py)
  wharf new step hello --lang c           # a typed step in C or C++ (wit-bindgen, clang, wasm-tools)
  wharf new step hello --lang command     # a plain WASI command, no SDK
  cd hello && cargo build --target wasm32-wasip2 --release && wharf run pipeline.yml -v")]
    Step(NewStepArgs),
    /// A seed-style deploy pipeline: version, build, push, rolling upgrade, gate, confirm
    #[command(after_help = "Examples:
  wharf new pipeline my-service
  wharf validate my-service/pipeline.yml")]
    Pipeline(NewPipelineArgs),
}

#[derive(Clone, Copy, ValueEnum)]
pub enum Lang {
    /// A typed step with the wharf-step SDK: parameters and outputs checked before a run
    Rust,
    /// A typed step in Python, built with componentize-py (PyPI)
    Python,
    /// A typed step in C (or C++: rename app.c to app.cpp), built with wit-bindgen, clang for
    /// wasm32-wasi and wasm-tools
    C,
    /// A plain WASI command: parameters in WHARF_PARAM_*, outputs to WHARF_OUTPUT
    Command,
}

#[derive(Args)]
pub struct NewStepArgs {
    /// The step's name: lower-case letters, digits and `-`; also the directory
    name: String,
    #[arg(long, value_enum, default_value = "rust")]
    lang: Lang,
    /// Where to create it [default: ./NAME]
    #[arg(long, value_name = "DIR")]
    dir: Option<PathBuf>,
}

#[derive(Args)]
pub struct NewPipelineArgs {
    /// The directory to create
    dir: PathBuf,
}

/// A file of a template: where it goes, and its text with `{{...}}` placeholders.
type File = (&'static str, &'static str);

const STEP_RUST: &[File] = &[
    (
        "Cargo.toml",
        include_str!("../../templates/new/step-rust/Cargo.toml.tmpl"),
    ),
    ("src/lib.rs", include_str!("../../templates/new/step-rust/src/lib.rs")),
    (
        "pipeline.yml",
        include_str!("../../templates/new/step-rust/pipeline.yml"),
    ),
    ("README.md", include_str!("../../templates/new/step-rust/README.md")),
    (".gitignore", include_str!("../../templates/new/step-rust/gitignore")),
    // The SDK and the contract it binds, so the project builds on its own.
    (
        "wharf-step/Cargo.toml",
        include_str!("../../templates/new/sdk-Cargo.toml.tmpl"),
    ),
    ("wharf-step/src/lib.rs", include_str!("../../../steps/sdk/src/lib.rs")),
    (
        "wharf-step/src/analysis.rs",
        include_str!("../../../steps/sdk/src/analysis.rs"),
    ),
    (
        "wharf-step/src/condition.rs",
        include_str!("../../../steps/sdk/src/condition.rs"),
    ),
];

/// The contract, for the SDK and componentize-py to bind: `wit/` of this repository.
const WIT: &[File] = &[
    ("types.wit", include_str!("../../../wit/types.wit")),
    ("world.wit", include_str!("../../../wit/world.wit")),
    ("log.wit", include_str!("../../../wit/log.wit")),
    ("process.wit", include_str!("../../../wit/process.wit")),
    ("source.wit", include_str!("../../../wit/source.wit")),
    ("secrets.wit", include_str!("../../../wit/secrets.wit")),
    ("images.wit", include_str!("../../../wit/images.wit")),
    ("registry.wit", include_str!("../../../wit/registry.wit")),
    ("deploy.wit", include_str!("../../../wit/deploy.wit")),
];

const STEP_PYTHON: &[File] = &[
    ("app.py", include_str!("../../templates/new/step-python/app.py")),
    (
        "wharf_step.py",
        include_str!("../../templates/new/step-python/wharf_step.py"),
    ),
    ("build.sh", include_str!("../../templates/new/step-python/build.sh")),
    (
        "pipeline.yml",
        include_str!("../../templates/new/step-python/pipeline.yml"),
    ),
    ("README.md", include_str!("../../templates/new/step-python/README.md")),
    (".gitignore", include_str!("../../templates/new/step-python/gitignore")),
];

const STEP_C: &[File] = &[
    ("app.c", include_str!("../../templates/new/step-c/app.c")),
    ("build.sh", include_str!("../../templates/new/step-c/build.sh")),
    ("pipeline.yml", include_str!("../../templates/new/step-c/pipeline.yml")),
    ("README.md", include_str!("../../templates/new/step-c/README.md")),
    (".gitignore", include_str!("../../templates/new/step-c/gitignore")),
];

/// The WASI preview-1 adapter of the WASI this wharf runs, which turns a wasm32-wasi
/// module (C, C++) into a component.
const REACTOR_ADAPTER: (&str, &[u8]) = (
    "wasi_snapshot_preview1.reactor.wasm",
    wasi_preview1_component_adapter_provider::WASI_SNAPSHOT_PREVIEW1_REACTOR_ADAPTER,
);

const STEP_COMMAND: &[File] = &[
    (
        "Cargo.toml",
        include_str!("../../templates/new/step-command/Cargo.toml.tmpl"),
    ),
    // The hello example's step: the whole contract in twenty lines.
    ("src/main.rs", include_str!("../../../examples/hello/greet/src/main.rs")),
    (
        "pipeline.yml",
        include_str!("../../templates/new/step-command/pipeline.yml"),
    ),
    ("README.md", include_str!("../../templates/new/step-command/README.md")),
    (".gitignore", include_str!("../../templates/new/step-command/gitignore")),
];

/// The seed example, as it is in this repository.
const PIPELINE: &[File] = &[
    ("pipeline.yml", include_str!("../../../examples/seed/pipeline.yml")),
    (
        "templates/upstreams.conf.tmpl",
        include_str!("../../../examples/seed/templates/upstreams.conf.tmpl"),
    ),
    (
        "templates/prometheus.json.tmpl",
        include_str!("../../../examples/seed/templates/prometheus.json.tmpl"),
    ),
    (
        "service/Cargo.toml",
        include_str!("../../../examples/seed/service/Cargo.toml"),
    ),
    (
        "service/Cargo.lock",
        include_str!("../../../examples/seed/service/Cargo.lock"),
    ),
    (
        "service/src/main.rs",
        include_str!("../../../examples/seed/service/src/main.rs"),
    ),
    (".gitignore", include_str!("../../../examples/seed/.gitignore")),
];

/// The wit-bindgen the SDK is built and tested with.
const WIT_BINDGEN: &str = "0.61.1";

pub(super) fn new(command: NewCommand) -> CommandResult {
    match command {
        NewCommand::Step(args) => {
            if !valid_name(&args.name) {
                return Err(Stop::invalid(format!(
                    "`{}` is not a step name: lower-case letters, digits and `-`, starting with a letter",
                    args.name
                )));
            }
            let dir = args.dir.unwrap_or_else(|| PathBuf::from(&args.name));
            let (files, wit, build) = match args.lang {
                Lang::Rust => (
                    STEP_RUST,
                    Some("wharf-step/wit"),
                    "cargo build --target wasm32-wasip2 --release",
                ),
                Lang::Python => (STEP_PYTHON, Some("wit"), "./build.sh   # needs componentize-py (PyPI)"),
                Lang::C => (
                    STEP_C,
                    Some("wit"),
                    "./build.sh   # needs clang, wasi-libc, wit-bindgen and wasm-tools (README.md)",
                ),
                Lang::Command => (STEP_COMMAND, None, "cargo build --target wasm32-wasip2 --release"),
            };
            let wit_files: Vec<(String, &str)> = wit
                .map(|dir| {
                    WIT.iter()
                        .map(|(name, text)| (format!("{dir}/{name}"), *text))
                        .collect()
                })
                .unwrap_or_default();
            let fill = |text: &str| {
                text.replace("{{name}}", &args.name)
                    .replace("{{crate}}", &args.name.replace('-', "_"))
                    .replace("{{version}}", env!("CARGO_PKG_VERSION"))
                    .replace("{{wit_bindgen}}", WIT_BINDGEN)
            };
            let adapter = matches!(args.lang, Lang::C).then_some(REACTOR_ADAPTER);
            let all = files
                .iter()
                .map(|(path, text)| (path.to_string(), *text))
                .chain(wit_files)
                .map(|(path, text)| (path, fill(text).into_bytes()))
                .chain(adapter.map(|(path, bytes)| (path.to_string(), bytes.to_vec())));
            write_all(&dir, all)?;
            outln!("created {}", dir.display());
            outln!("  cd {}", dir.display());
            outln!("  {build}");
            outln!("  wharf run pipeline.yml -v");
            Ok(Exit::Success)
        }
        NewCommand::Pipeline(args) => {
            let files = PIPELINE
                .iter()
                .map(|(path, text)| (path.to_string(), text.as_bytes().to_vec()));
            write_all(&args.dir, files)?;
            outln!("created {}", args.dir.display());
            outln!("  wharf validate {}", args.dir.join("pipeline.yml").display());
            outln!("  (it versions from git: `git init`, commit and tag v0.1.0 before a run)");
            Ok(Exit::Success)
        }
    }
}

fn valid_name(name: &str) -> bool {
    name.starts_with(|c: char| c.is_ascii_lowercase())
        && name.len() <= 64
        && name
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-')
        && !name.ends_with('-')
}

/// Write every file beneath `dir`, which must not exist yet (nothing of the user's is
/// overwritten); on failure, what was created is removed again.
fn write_all(dir: &Path, files: impl Iterator<Item = (String, Vec<u8>)>) -> Result<(), Stop> {
    let taken = || {
        Stop::invalid(format!(
            "{} already exists; `wharf new` creates a new directory (pick another name or --dir)",
            dir.display()
        ))
    };
    // Anything there, a link that leads nowhere included, is the user's: the directory is
    // made new, in one call that fails if anything is in its place.
    if std::fs::symlink_metadata(dir).is_ok() {
        return Err(taken());
    }
    if let Some(parent) = dir.parent().filter(|p| !p.as_os_str().is_empty()) {
        std::fs::create_dir_all(parent)
            .map_err(|e| Stop::failed(format!("cannot create {}: {e}", parent.display())))?;
    }
    match std::fs::create_dir(dir) {
        Ok(()) => {}
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => return Err(taken()),
        Err(e) => return Err(Stop::failed(format!("cannot create {}: {e}", dir.display()))),
    }
    let written = (|| -> std::io::Result<()> {
        use std::os::unix::fs::PermissionsExt;
        for (path, text) in files {
            let to = dir.join(&path);
            if let Some(parent) = to.parent() {
                std::fs::create_dir_all(parent)?;
            }
            std::fs::write(&to, text)?;
            if path.ends_with(".sh") {
                std::fs::set_permissions(&to, std::fs::Permissions::from_mode(0o755))?;
            }
        }
        Ok(())
    })();
    written.map_err(|e| {
        let _ = std::fs::remove_dir_all(dir);
        Stop::failed(format!("cannot create {}: {e}", dir.display()))
    })
}
