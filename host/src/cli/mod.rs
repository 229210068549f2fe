//! The `wharf` command line.

/// `println!` for a command's output: when the reader goes away early (`wharf log RUN | head
/// -1`), the command ends quietly instead of panicking on the closed pipe.
macro_rules! outln {
    ($($arg:tt)*) => {{
        use std::io::Write as _;
        let mut out = std::io::stdout().lock();
        if let Err(e) = writeln!(out, $($arg)*)
            && e.kind() == std::io::ErrorKind::BrokenPipe
        {
            std::process::exit(0);
        }
    }};
}

mod cache;
mod catalog;
mod doctor;
mod environ;
mod history;
mod new;
mod outcome;
mod packages;
pub mod render;
mod report;
mod run;
mod services;
mod signing;

use catalog::{InspectArgs, ValidateArgs};
use history::{LogArgs, ReplayArgs, RunsArgs};
use report::ReportArgs;
use run::RunArgs;
use services::{ServiceArgs, StatusArgs};

use clap::{Parser, Subcommand};
use outcome::{CommandResult, Stop};
use std::path::PathBuf;

const TOP_EXAMPLES: &str = "\
Examples:
  wharf run examples/hello/pipeline.yml
  wharf run pipeline.yml --var status=FAIL -v
  wharf validate pipeline.yml
  wharf steps
  wharf inspect builtin:version
  wharf completions bash > ~/.local/share/bash-completion/completions/wharf";

const RUN_EXAMPLES: &str = "\
Examples:
  wharf run examples/hello/pipeline.yml
  wharf run pipeline.yml --var registry=127.0.0.1:5000 --var status=FAIL
  wharf run pipeline.yml --workspace ../app -v
  wharf run pipeline.yml --jobs 4               # up to 4 steps whose needs are met at once
  wharf run pipeline.yml --resume 20261129-101500-3f2a   # the failed steps and what needs them
  wharf run pipeline.yml --output json > events.ndjson
  wharf run pipeline.yml --events events.ndjson --codequality gl-code-quality.json
  wharf run pipeline.yml --sarif wharf.sarif --junit junit.xml   # Jenkins Warnings NG, code scanning
  wharf run pipeline.yml --no-cache             # run every step, even those the step cache holds
  wharf run pipeline.yml --cache oci://registry.example.com/team/cache --cache-write   # share entries (docs/cache.md)
  WHARF_SECRET_REGISTRY_PASSWORD=... wharf run pipeline.yml

Secrets come from the environment of wharf (WHARF_SECRET_<NAME>) or --secret-file,
never from the pipeline file; their values are masked in all output.";

const EXIT_CODES: &str = "\
Exit codes:
  0  success
  1  a step failed before anything was deployed
  2  invalid pipeline or command line; nothing ran
  3  a step failed after deploying and wharf rolled the service back
  4  a rollback failed: a service needs a human (see `wharf status`)
  5  a replay diverged from the recorded run
  6  an analysis could not decide: an upgrade is held as it stands for a person
     (`wharf confirm SERVICE` finishes it, `wharf rollback SERVICE` undoes it)
  130, 143  stopped by Ctrl-C or SIGTERM (what it deployed was rolled back)";

/// `wharf --version`: the version and the commit it was built from.
const VERSION: &str = concat!(env!("CARGO_PKG_VERSION"), " (commit ", env!("WHARF_COMMIT"), ")");

#[derive(Parser)]
#[command(
    name = "wharf",
    version = VERSION,
    about = "Run CI/CD pipelines whose steps are sandboxed WebAssembly components"
)]
pub struct Cli {
    #[command(subcommand)]
    command: Command,

    /// Directory for compiled components and pulled steps [default: $WHARF_CACHE_DIR, $XDG_CACHE_HOME/wharf or ~/.cache/wharf]
    #[arg(long, global = true, value_name = "DIR")]
    cache_dir: Option<PathBuf>,

    /// Use no cache: compile components in memory only, and run every step (the step cache
    /// of `.wharf/cache` is neither read nor written)
    #[arg(long, global = true)]
    no_cache: bool,

    /// Colour and symbols in output [default: auto, off when NO_COLOR is set or not a terminal]
    #[arg(long, global = true, value_name = "WHEN", value_parser = ["auto", "always", "never"], default_value = "auto")]
    color: String,
}

#[derive(Subcommand)]
enum Command {
    /// Run a pipeline
    #[command(after_help = RUN_EXAMPLES)]
    Run(RunArgs),
    /// Check a pipeline without running it: keys, steps, parameters, references
    #[command(after_help = "Examples:
  wharf validate examples/hello/pipeline.yml
  wharf validate pipeline.yml --var registry=127.0.0.1:5000

Every problem is reported with file, line and column. Exit code 2 when invalid.")]
    Validate(ValidateArgs),
    /// List the built-in steps
    #[command(after_help = "Examples:
  wharf steps
  wharf inspect builtin:exec      # one step in detail")]
    Steps,
    /// Show what a step declares: parameters, outputs, capabilities
    #[command(after_help = "Examples:
  wharf inspect builtin:version
  wharf inspect ./steps/my-step.wasm
  wharf inspect oci://ghcr.io/acme/steps/my-step:1.2.0   # digest, size, annotations too")]
    Inspect(InspectArgs),
    /// Show deployed services: state, current and previous revision, instances
    #[command(after_help = "Examples:
  wharf status                         # every service deployed from this directory
  wharf status seed --workspace examples/seed")]
    Status(StatusArgs),
    /// Finish an upgrade: keep the new revision, remove the previous one's instances
    #[command(after_help = "Examples:
  wharf confirm seed --workspace examples/seed

Only a service in state `upgraded` can be confirmed.")]
    Confirm(ServiceArgs),
    /// Roll an upgrade back to the recorded previous revision (by digest)
    #[command(after_help = "Examples:
  wharf rollback seed --workspace examples/seed

Exit code 4 when the rollback fails: the service needs a human.")]
    Rollback(ServiceArgs),
    /// Stop and delete a service's instances and forget it
    #[command(after_help = "Examples:
  wharf remove seed --workspace examples/seed")]
    Remove(ServiceArgs),
    /// List recorded runs (id, pipeline, start, duration, outcome), or prune old ones
    #[command(
        after_help = "Every run keeps the newest 100 runs of its workspace (`wharf run --keep-runs N`,
WHARF_KEEP_RUNS); `wharf runs prune` removes more.

Examples:
  wharf runs
  wharf runs --workspace examples/seed
  wharf runs prune --keep 20 --older-than 7d"
    )]
    Runs(RunsArgs),
    /// Print a recorded run's timeline: steps, host calls, logs
    #[command(after_help = "Examples:
  wharf log 20261127-160432-3fa2
  wharf log 20261127-160432-3fa2 --calls        # with every host call's arguments and result
  wharf log 20261127-160432-3fa2 --step build   # one step: all of its output
  wharf log path/to/copied/run-folder")]
    Log(LogArgs),
    /// Re-run a recorded run offline, every host call answered from its journal
    #[command(after_help = "Examples:
  wharf replay 20261127-160432-3fa2
  wharf replay path/to/copied/run-folder         # on another machine, no network needed
  wharf replay RUN --step gate=target/wasm32-wasip2/release/my_gate.wasm

Exit code 5 when the replay diverges: the report shows the recorded call and the new one.")]
    Replay(ReplayArgs),
    /// The step cache: why a step ran or was reused, and pruning it
    #[command(subcommand)]
    Cache(cache::CacheCommand),
    /// Print, per step of an audit run, the smallest `allow:` that would have let it run
    #[command(after_help = "Examples:
  wharf run pipeline.yml --audit        # in a throwaway checkout: refused accesses noted, not failed
  wharf grants 20261127-160432-3fa2     # then paste each step's block into the pipeline

Secrets and deploys are never let through in an audit, so they never show here.")]
    Grants(history::GrantsArgs),
    /// Write a recorded run as one self-contained HTML page: timeline, steps, deploy decision
    #[command(after_help = "Examples:
  wharf report 20261127-160432-3fa2                  # writes report-20261127-160432-3fa2.html
  wharf report path/to/copied/run-folder -o run.html

The page needs no network: open it from a CI artifact or attach it to a ticket.")]
    Report(ReportArgs),
    /// Record the digest of every step a pipeline uses in wharf.lock beside it
    #[command(after_help = "Examples:
  wharf lock pipeline.yml                    # lock what is not locked yet, keep the rest
  wharf lock pipeline.yml --update           # take what every tag names now
  wharf lock pipeline.yml --update gate      # only step `gate`

Commit wharf.lock. `wharf run` uses the locked digests and warns where a step strays;
`wharf run --locked` (for CI) refuses to run instead.")]
    Lock(packages::LockArgs),
    /// Fetch every `oci://` step of a pipeline into the step cache, for `wharf run --offline`
    #[command(after_help = "Examples:
  wharf pull pipeline.yml
  wharf pull pipeline.yml --locked && wharf run pipeline.yml --locked --offline
  wharf pull pipeline.yml --into steps-layout/       # an OCI layout to carry across an air gap
  wharf pull pipeline.yml --from steps-layout/       # on the other side: fill the cache, offline")]
    Pull(packages::PullArgs),
    /// Scaffold a step project or a pipeline
    #[command(subcommand)]
    New(new::NewCommand),
    /// Steps as packages: publish a step to an OCI registry
    #[command(subcommand)]
    Step(packages::StepCommand),
    /// Signing keys: generate a pair, show a key's fingerprint
    #[command(subcommand)]
    Key(signing::KeyCommand),
    /// Check an image's provenance with a public key, offline from any other service, and print it
    #[command(after_help = "Examples:
  wharf verify 127.0.0.1:5000/seed-service:1.0.1-22-7e56158 --key keys/release.pub
  wharf verify ghcr.io/acme/app@sha256:4f1c... --key keys/release.pub --key keys/old.pub

The provenance is an in-toto statement with a SLSA v1 predicate in a sigstore bundle,
attached to the image by `builtin:push` with `provenance-key:`. Exit code 1 when no
provenance signed by one of the keys verifies.")]
    Verify(signing::VerifyArgs),
    /// Say what this machine's kernel lets wharf enforce on the programs steps run
    #[command(after_help = "Examples:
  wharf doctor

Prints Landlock's ABI, whether namespaces can be made, seccomp, and the level programs are
confined to here (full, landlock or none) with what it leaves open.")]
    Doctor,
    /// Print a shell completion script
    #[command(after_help = "Examples:
  wharf completions bash > ~/.local/share/bash-completion/completions/wharf
  wharf completions zsh > \"${fpath[1]}/_wharf\"
  wharf completions fish > ~/.config/fish/completions/wharf.fish")]
    Completions {
        #[arg(value_enum)]
        shell: clap_complete::Shell,
    },
}

impl Command {
    /// The workspace a command's steps write to, when it has one.
    fn workspace(&self) -> Option<PathBuf> {
        match self {
            Command::Run(args) => Some(args.workspace()),
            Command::Validate(args) => Some(args.workspace()),
            Command::Replay(args) => Some(args.workspace()),
            _ => None,
        }
    }
}

/// Commands whose help lists the exit codes.
const WITH_EXIT_CODES: &[&str] = &["run"];

pub fn main() -> std::process::ExitCode {
    use clap::{CommandFactory, FromArgMatches};
    // First, while wharf has one thread: secrets out of the environment (this may execute
    // wharf again).
    let secrets = match environ::take_secrets() {
        Ok(s) => s,
        Err(e) => return ended(Err(Stop::invalid(e))),
    };
    let mut command = Cli::command().after_help(format!("{TOP_EXAMPLES}\n\n{EXIT_CODES}"));
    for name in WITH_EXIT_CODES {
        command = command.mut_subcommand(name, |sub| {
            let examples = sub.get_after_help().map(|h| h.to_string()).unwrap_or_default();
            sub.after_help(format!("{examples}\n\n{EXIT_CODES}"))
        });
    }
    let cli = match Cli::from_arg_matches(&command.get_matches()) {
        Ok(cli) => cli,
        Err(e) => e.exit(),
    };
    let runtime = match tokio::runtime::Builder::new_multi_thread().enable_all().build() {
        Ok(rt) => rt,
        Err(e) => return ended(Err(Stop::failed(format!("cannot start the async runtime: {e}")))),
    };
    ended(runtime.block_on(dispatch(cli, secrets)))
}

/// The one place a command's end becomes the process's: a stop is printed, once.
fn ended(result: CommandResult) -> std::process::ExitCode {
    let exit = match result {
        Ok(exit) => exit,
        Err(stop) => {
            eprintln!("{}", stop.report);
            stop.exit
        }
    };
    std::process::ExitCode::from(exit.code())
}

impl Cli {
    /// The compile cache to use, if any; a directory that is not safe to load compiled code
    /// from is refused with a warning (compiling still works, only slower).
    fn cache_dir(&self) -> Option<PathBuf> {
        if self.no_cache {
            return None;
        }
        let dir = self
            .cache_dir
            .clone()
            .map(|d| d.join("components"))
            .or_else(crate::engine::cache::ComponentCache::default_dir)?;
        match crate::engine::cache::check_dir(&dir, self.command.workspace().as_deref()) {
            Ok(()) => Some(dir),
            Err(why) => {
                eprintln!("warning: not using the compile cache: {why}");
                None
            }
        }
    }

    fn color(&self) -> bool {
        use std::io::IsTerminal;
        match self.color.as_str() {
            "always" => true,
            "never" => false,
            _ => std::env::var_os("NO_COLOR").is_none() && std::io::stdout().is_terminal(),
        }
    }
}

async fn dispatch(cli: Cli, secrets: crate::capabilities::secrets::SecretStore) -> CommandResult {
    let color = cli.color();
    let color_forced = cli.color == "always";
    // The engine only for the commands that load steps.
    let engine = || {
        crate::engine::Runtime::new(cli.cache_dir())
            .map_err(|e| Stop::failed(format!("cannot start the WebAssembly engine: {e:#}")))
    };
    let runtime = match cli.command {
        Command::Run(_)
        | Command::Validate(_)
        | Command::Steps
        | Command::Inspect(_)
        | Command::Replay(_)
        | Command::Step(_) => Some(engine()?),
        _ => None,
    };
    let step_cache = packages::step_cache(cli.cache_dir.as_deref());
    let mut cli = cli;
    match &mut cli.command {
        Command::Run(args) => {
            args.inputs.sources.cache = step_cache;
            args.reuse_results = !cli.no_cache;
        }
        Command::Validate(args) => args.inputs.sources.cache = step_cache,
        Command::Lock(args) => args.cache = step_cache,
        Command::Inspect(args) => args.cache = step_cache,
        Command::Pull(args) => args.cache = step_cache,
        Command::Step(packages::StepCommand::Publish(args)) => args.cache = step_cache,
        _ => {}
    }
    let runtime = || runtime.as_ref().expect("an engine for this command");
    match cli.command {
        Command::Run(args) => run::run(runtime(), args, color, color_forced, secrets).await,
        Command::Validate(args) => catalog::validate(runtime(), args, &secrets).await,
        Command::Steps => catalog::steps(runtime()).await,
        Command::Inspect(args) => catalog::inspect(runtime(), args, &secrets).await,
        Command::Status(args) => services::status(args).await,
        Command::Confirm(args) => services::decide(args, true).await,
        Command::Rollback(args) => services::decide(args, false).await,
        Command::Remove(args) => services::remove(args).await,
        Command::Runs(args) => history::runs(args),
        Command::Log(args) => history::log(args),
        Command::Replay(args) => history::replay(runtime(), args, color).await,
        Command::Report(args) => report::report(args),
        Command::Doctor => doctor::doctor().await,
        Command::Grants(args) => history::grants(args),
        Command::Cache(command) => cache::cache(command),
        Command::Lock(args) => packages::lock(args, &secrets).await,
        Command::New(command) => new::new(command),
        Command::Pull(args) => packages::pull(args, &secrets).await,
        Command::Step(command) => packages::step(runtime(), command, &secrets).await,
        Command::Key(command) => signing::key(command),
        Command::Verify(args) => signing::verify(args, &secrets).await,
        Command::Completions { shell } => {
            let mut command = <Cli as clap::CommandFactory>::command();
            clap_complete::generate(shell, &mut command, "wharf", &mut std::io::stdout());
            Ok(outcome::Exit::Success)
        }
    }
}
