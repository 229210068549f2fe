//! `wharf-contract`: the checks that keep the `wharf:step` contract's promise, run by
//! `.ci/run` and by whoever changes `wit/`.

mod compat;
mod reference;

use clap::{Parser, Subcommand};
use std::path::PathBuf;
use std::process::ExitCode;

/// Keep the wharf:step contract's promise (docs/contract.md)
#[derive(Parser)]
#[command(after_help = "Examples (from the repository's root):
  cargo run -q -p wharf-contract-tool -- check
  cargo run -q -p wharf-contract-tool -- doc > docs/contract.md
  cargo run -q -p wharf-contract-tool -- doc --check docs/contract.md")]
struct Cli {
    /// The contract's WIT
    #[arg(long, default_value = "wit", global = true)]
    wit: PathBuf,
    /// Where released versions are kept, one directory per version
    #[arg(long, default_value = "wit/released", global = true)]
    released: PathBuf,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Fail unless wit/ is a compatible successor of every release it must keep
    Check,
    /// Print docs/contract.md generated from wit/; with --check FILE, fail if FILE differs
    Doc {
        #[arg(long, value_name = "FILE")]
        check: Option<PathBuf>,
    },
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    match run(cli) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            let chain: Vec<String> = e.chain().map(|c| c.to_string()).collect();
            eprintln!("error: {}", chain.join(": "));
            ExitCode::FAILURE
        }
    }
}

fn run(cli: Cli) -> anyhow::Result<()> {
    match cli.command {
        Command::Check => {
            let verdict = compat::check(&cli.wit, &cli.released)?;
            for line in verdict.lines {
                println!("contract: {line}");
            }
        }
        Command::Doc { check } => {
            let contract = compat::Contract::read(&cli.wit)?;
            let releases: Vec<_> = compat::released(&cli.released)?.into_iter().map(|(v, _)| v).collect();
            let text = reference::render(&contract, &releases)?;
            match check {
                None => print!("{text}"),
                Some(file) => {
                    let on_disk = std::fs::read_to_string(&file).unwrap_or_default();
                    if on_disk != text {
                        anyhow::bail!(
                            "{} is not what wit/ says: regenerate it with `cargo run -q -p wharf-contract-tool -- doc > {}`",
                            file.display(),
                            file.display()
                        );
                    }
                    println!("contract: {} matches wit/", file.display());
                }
            }
        }
    }
    Ok(())
}
