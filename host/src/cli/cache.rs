//! `wharf cache`: why a step ran or was reused, and pruning the step cache.

use super::outcome::{CommandResult, Exit, Stop};
use crate::journal::Entry;
use crate::journal::reader::Journal;
use clap::{Args, Subcommand};
use std::path::PathBuf;

#[derive(Subcommand)]
pub enum CacheCommand {
    /// Say why a run's step ran (the first input that differed from the nearest cache
    /// entry, or why it is never cached) or which run it was reused from
    #[command(after_help = "Examples:
  wharf cache why 20261205-101500-3f2a build
  wharf cache why 20261205-101500-3f2a          # every step of the run")]
    Why(WhyArgs),
    /// Remove the least recently used entries of the step cache until it fits a size
    #[command(after_help = "Examples:
  wharf cache prune                     # down to 2 GiB, the bound every run keeps
  wharf cache prune --max-size 500M
  wharf cache prune --all               # empty it

A run prunes the cache itself when it grew past 2 GiB.")]
    Prune(PruneArgs),
}

#[derive(Args)]
pub struct WhyArgs {
    /// A run id (from `wharf runs`) or the path of a run folder
    run: String,
    /// The step; every step of the run when left out
    step: Option<String>,
    #[arg(long, value_name = "DIR", default_value = ".")]
    workspace: PathBuf,
}

#[derive(Args)]
pub struct PruneArgs {
    /// Keep at most this much: bytes, or with K, M or G (powers of 1024)
    #[arg(long, value_name = "SIZE", value_parser = parse_size, conflicts_with = "all")]
    max_size: Option<u64>,
    /// Remove every entry
    #[arg(long)]
    all: bool,
    #[arg(long, value_name = "DIR", default_value = ".")]
    workspace: PathBuf,
}

pub(super) fn cache(command: CacheCommand) -> CommandResult {
    match command {
        CacheCommand::Why(args) => why(args),
        CacheCommand::Prune(args) => prune(args),
    }
}

fn why(args: WhyArgs) -> CommandResult {
    let journal = crate::journal::find_run(&args.workspace, &args.run)
        .and_then(|d| Journal::read(&d))
        .map_err(Stop::invalid)?;
    let mut said = 0;
    for record in &journal.records {
        let Entry::Cache { step, hit, detail } = &record.entry else {
            continue;
        };
        if args.step.as_ref().is_some_and(|s| s != step) {
            continue;
        }
        said += 1;
        let what = if *hit { "was reused" } else { "ran" };
        outln!("{step}: {what}: {detail}");
    }
    if said == 0 {
        let why = match &args.step {
            Some(step) if !journal.records.iter().any(|r| r.entry.step() == Some(step)) => {
                format!("run {} has no step `{step}`", journal.run_id())
            }
            Some(step) => format!(
                "run {} decided nothing about step `{step}` (it ran with --no-cache, or the step did not run)",
                journal.run_id()
            ),
            None => format!(
                "run {} decided nothing about its steps (it ran with --no-cache, in an audit, or with a wharf without a step cache)",
                journal.run_id()
            ),
        };
        return Err(Stop::invalid(format!(
            "{why}\n  = help: `wharf log {}` shows what ran",
            args.run
        )));
    }
    Ok(Exit::Success)
}

fn prune(args: PruneArgs) -> CommandResult {
    let dir = crate::cache::cache_dir(&args.workspace);
    if !dir.is_dir() {
        outln!("{} holds no step cache", args.workspace.display());
        return Ok(Exit::Success);
    }
    let store = wharf_cache::Store::open(&dir).map_err(|e| Stop::failed(format!("{}: {e}", dir.display())))?;
    let max = if args.all {
        0
    } else {
        args.max_size.unwrap_or(wharf_cache::store::DEFAULT_MAX_BYTES)
    };
    let pruned = store
        .prune(max)
        .map_err(|e| Stop::failed(format!("cannot prune {}: {e}", dir.display())))?;
    let mib = |b: u64| b as f64 / f64::from(1 << 20);
    outln!(
        "removed {} and {} ({:.1} MiB); the step cache holds {:.1} MiB",
        match pruned.entries {
            1 => "1 entry".to_string(),
            n => format!("{n} entries"),
        },
        crate::events::count(pruned.blobs, "file"),
        mib(pruned.bytes),
        mib(pruned.kept_bytes)
    );
    Ok(Exit::Success)
}

/// `500M`, `2G`, `1024`: bytes.
fn parse_size(text: &str) -> Result<u64, String> {
    let text = text.trim();
    let (digits, unit) = match text.char_indices().find(|(_, c)| !c.is_ascii_digit()) {
        Some((i, _)) => text.split_at(i),
        None => (text, ""),
    };
    let number: u64 = digits
        .parse()
        .map_err(|_| format!("`{text}` is not a size: write bytes, or a number with K, M or G"))?;
    let shift = match unit.to_ascii_uppercase().trim_end_matches(['B', 'I']) {
        "" => 0,
        "K" => 10,
        "M" => 20,
        "G" => 30,
        _ => return Err(format!("`{text}` is not a size: the unit is K, M or G")),
    };
    number
        .checked_mul(1 << shift)
        .ok_or_else(|| format!("`{text}` is too large"))
}

#[cfg(test)]
mod tests {
    #[test]
    fn sizes_read_as_people_write_them() {
        assert_eq!(super::parse_size("1024"), Ok(1024));
        assert_eq!(super::parse_size("500M"), Ok(500 << 20));
        assert_eq!(super::parse_size("2G"), Ok(2 << 30));
        assert_eq!(super::parse_size("2GiB"), Ok(2 << 30));
        assert!(super::parse_size("lots").is_err());
        assert!(super::parse_size("5T").is_err());
    }
}
