//! Keeping `.wharf/runs` from growing without end: which recorded runs to remove under a
//! retention policy, and which stored components no remaining run names.
//!
//! A run's age is the time its journal was last written (its end, or where it was killed).
//! A run still going is never removed: its writer holds a lock on its journal ([`is_live`]).

use crate::Entry;
use std::io::{BufRead, BufReader, Read};
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

/// What to keep. With both set, a run goes when it is older than `older_than` *and* not
/// among the `keep` newest; with one, that one decides.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Retention {
    pub keep: Option<usize>,
    pub older_than: Option<Duration>,
}

/// A recorded run in `.wharf/runs`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RunFolder {
    pub id: String,
    pub path: PathBuf,
    /// When its journal was last written.
    pub ended: SystemTime,
}

/// The run folders of `runs_dir`, newest first. Entries without a journal are not runs and
/// are left out (and so never removed).
pub fn list(runs_dir: &Path) -> std::io::Result<Vec<RunFolder>> {
    let mut runs = Vec::new();
    let entries = match std::fs::read_dir(runs_dir) {
        Ok(entries) => entries,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(runs),
        Err(e) => return Err(e),
    };
    for entry in entries {
        let entry = entry?;
        if !entry.file_type()?.is_dir() {
            continue;
        }
        let Ok(journal) = std::fs::symlink_metadata(entry.path().join("journal.jsonl")) else {
            continue;
        };
        if !journal.is_file() {
            continue;
        }
        runs.push(RunFolder {
            id: entry.file_name().to_string_lossy().into_owned(),
            path: entry.path(),
            ended: journal.modified()?,
        });
    }
    runs.sort_by(|a, b| b.ended.cmp(&a.ended).then_with(|| b.id.cmp(&a.id)));
    Ok(runs)
}

/// Whether the run in `run` is still going: its journal's writer holds the lock on it.
pub fn is_live(run: &Path) -> bool {
    std::fs::File::open(run.join("journal.jsonl"))
        .is_ok_and(|journal| matches!(journal.try_lock_shared(), Err(std::fs::TryLockError::WouldBlock)))
}

/// Which of `runs` (newest first) the policy removes, given which are live.
pub fn select(
    runs: &[RunFolder],
    retention: Retention,
    now: SystemTime,
    is_live: impl Fn(&RunFolder) -> bool,
) -> Vec<&RunFolder> {
    if retention.keep.is_none() && retention.older_than.is_none() {
        return Vec::new();
    }
    runs.iter()
        .enumerate()
        .filter(|(newest, run)| {
            let beyond_keep = retention.keep.is_none_or(|keep| *newest >= keep);
            let too_old = retention
                .older_than
                .is_none_or(|age| now.duration_since(run.ended).is_ok_and(|a| a > age));
            beyond_keep && too_old
        })
        .map(|(_, run)| run)
        .filter(|run| !is_live(run))
        .collect()
}

/// Largest journal line read while looking for a run's components.
const LINE_LIMIT: u64 = 1 << 20;

/// The component digests (`sha256:HEX`) a run's journal names. They come before its first
/// step, so only the head of the journal is read.
pub fn components_named(run: &Path) -> std::io::Result<Vec<String>> {
    let file = std::fs::File::open(run.join("journal.jsonl"))?;
    let mut reader = BufReader::new(file);
    let mut digests = Vec::new();
    let mut line = Vec::new();
    loop {
        line.clear();
        let read = (&mut reader).take(LINE_LIMIT).read_until(b'\n', &mut line)?;
        if read == 0 || line.last() != Some(&b'\n') {
            break;
        }
        match serde_json::from_slice::<crate::Record>(&line).map(|r| r.entry) {
            Ok(Entry::Component { digest, .. }) => digests.push(digest),
            Ok(Entry::StepStarted { .. } | Entry::StepFinished { .. } | Entry::RunFinished { .. }) => break,
            _ => {}
        }
    }
    Ok(digests)
}

/// Of the components the removed runs named (`candidates`, as `sha256:HEX`), the stored
/// files of `store` no run in `remaining` (newest first) names. The journals are read only
/// until every candidate is found named, usually in the newest run alone: this is the cap
/// every run applies when it ends, and it must not read a hundred journals each time.
pub fn no_longer_named(store: &Path, candidates: Vec<String>, remaining: &[RunFolder]) -> Vec<PathBuf> {
    let mut unnamed: std::collections::HashSet<String> = candidates
        .into_iter()
        .map(|d| d.trim_start_matches("sha256:").to_string())
        .collect();
    for run in remaining {
        if unnamed.is_empty() {
            break;
        }
        // A journal that cannot be read keeps everything: better a stale file than a lost one.
        let Ok(digests) = components_named(&run.path) else {
            return Vec::new();
        };
        for digest in digests {
            unnamed.remove(digest.trim_start_matches("sha256:"));
        }
    }
    let mut out: Vec<PathBuf> = unnamed
        .into_iter()
        .filter(|hex| !hex.is_empty() && hex.bytes().all(|b| b.is_ascii_hexdigit()))
        .map(|hex| store.join(format!("{hex}.wasm")))
        .filter(|path| path.is_file())
        .collect();
    out.sort();
    out
}

/// The stored components of `store` that no run in `remaining` names.
pub fn unreferenced(store: &Path, remaining: &[RunFolder]) -> std::io::Result<Vec<PathBuf>> {
    let mut named = std::collections::HashSet::new();
    for run in remaining {
        // A journal that cannot be read keeps everything: better a stale file than a lost one.
        let Ok(digests) = components_named(&run.path) else {
            return Ok(Vec::new());
        };
        named.extend(digests.into_iter().map(|d| d.trim_start_matches("sha256:").to_string()));
    }
    let entries = match std::fs::read_dir(store) {
        Ok(entries) => entries,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(e),
    };
    let mut unused = Vec::new();
    for entry in entries {
        let entry = entry?;
        let name = entry.file_name().to_string_lossy().into_owned();
        if let Some(hex) = name.strip_suffix(".wasm")
            && !hex.starts_with('.')
            && !named.contains(hex)
        {
            unused.push(entry.path());
        }
    }
    unused.sort();
    Ok(unused)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn runs(n: usize, now: SystemTime) -> Vec<RunFolder> {
        // Newest first, one day apart.
        (0..n)
            .map(|i| RunFolder {
                id: format!("run-{i}"),
                path: PathBuf::from(format!("/runs/run-{i}")),
                ended: now - Duration::from_secs(86_400 * i as u64 + 60),
            })
            .collect()
    }

    fn ids(selected: Vec<&RunFolder>) -> Vec<&str> {
        selected.into_iter().map(|r| r.id.as_str()).collect()
    }

    #[test]
    fn keep_older_than_and_both() {
        let now = SystemTime::now();
        let all = runs(5, now);
        let none = |_: &RunFolder| false;
        let keep2 = Retention {
            keep: Some(2),
            older_than: None,
        };
        assert_eq!(ids(select(&all, keep2, now, none)), ["run-2", "run-3", "run-4"]);
        let days3 = Retention {
            keep: None,
            older_than: Some(Duration::from_secs(3 * 86_400)),
        };
        assert_eq!(ids(select(&all, days3, now, none)), ["run-3", "run-4"]);
        let keep4_days1 = Retention {
            keep: Some(4),
            older_than: Some(Duration::from_secs(86_400)),
        };
        assert_eq!(ids(select(&all, keep4_days1, now, none)), ["run-4"]);
        assert!(select(&all, Retention::default(), now, none).is_empty());
        // A live run stays whatever its age.
        let live = |r: &RunFolder| r.id == "run-3";
        assert_eq!(ids(select(&all, keep2, now, live)), ["run-2", "run-4"]);
    }

    #[test]
    fn components_no_remaining_run_names_are_unreferenced() {
        let dir = tempfile::tempdir().unwrap();
        let store = dir.path().join("components");
        std::fs::create_dir_all(&store).unwrap();
        for hex in ["aa", "bb", "cc"] {
            std::fs::write(store.join(format!("{hex}.wasm")), "x").unwrap();
        }
        std::fs::write(store.join(".dd.wasm.123"), "staged").unwrap();
        let run = dir.path().join("runs/r1");
        std::fs::create_dir_all(&run).unwrap();
        let lines = [
            r#"{"at_ms":0,"kind":"header","format":"wharf-journal","version":2,"wharf":"0"}"#,
            r#"{"at_ms":0,"kind":"component","step":"a","origin":"x","digest":"sha256:aa"}"#,
            r#"{"at_ms":0,"kind":"component","step":"b","origin":"y","digest":"sha256:cc"}"#,
            r#"{"at_ms":0,"kind":"step-started","step":"a","uses":"x","attempt":1,"params":null,"grants":[]}"#,
            r#"{"at_ms":0,"kind":"component","step":"late","origin":"z","digest":"sha256:bb"}"#,
        ];
        std::fs::write(run.join("journal.jsonl"), lines.join("\n") + "\n").unwrap();
        let remaining = list(&dir.path().join("runs")).unwrap();
        assert_eq!(remaining.len(), 1);
        assert_eq!(components_named(&run).unwrap(), ["sha256:aa", "sha256:cc"]);
        let unused = unreferenced(&store, &remaining).unwrap();
        assert_eq!(unused, [store.join("bb.wasm")]);
        // No run left: every stored component is unreferenced.
        assert_eq!(unreferenced(&store, &[]).unwrap().len(), 3);
    }

    #[test]
    fn a_removed_runs_components_go_only_when_no_remaining_run_names_them() {
        let dir = tempfile::tempdir().unwrap();
        let store = dir.path().join("components");
        std::fs::create_dir_all(&store).unwrap();
        for hex in ["aa", "bb", "cc"] {
            std::fs::write(store.join(format!("{hex}.wasm")), "x").unwrap();
        }
        let journal = |id: &str, digests: &[&str]| {
            let run = dir.path().join("runs").join(id);
            std::fs::create_dir_all(&run).unwrap();
            let mut text =
                String::from(r#"{"at_ms":0,"kind":"header","format":"wharf-journal","version":2,"wharf":"0"}"#);
            for d in digests {
                text.push_str(&format!(
                    "\n{{\"at_ms\":0,\"kind\":\"component\",\"step\":\"s\",\"origin\":\"x\",\"digest\":\"sha256:{d}\"}}"
                ));
            }
            std::fs::write(run.join("journal.jsonl"), text + "\n").unwrap();
        };
        journal("new", &["aa"]);
        journal("old", &["bb"]);
        let remaining = list(&dir.path().join("runs")).unwrap();
        let candidates = |d: &[&str]| d.iter().map(|d| format!("sha256:{d}")).collect::<Vec<_>>();
        // `aa` is still named, `cc` was named by no remaining run, `zz` is not stored, and a
        // name that is not a digest names no file.
        assert_eq!(
            no_longer_named(&store, candidates(&["aa", "cc", "zz", "../cc"]), &remaining),
            [store.join("cc.wasm")]
        );
        assert!(no_longer_named(&store, candidates(&["aa", "bb"]), &remaining).is_empty());
        // A journal that cannot be read keeps everything.
        std::fs::remove_file(dir.path().join("runs/new/journal.jsonl")).unwrap();
        std::fs::create_dir(dir.path().join("runs/new/journal.jsonl")).unwrap();
        let mut broken = remaining.clone();
        broken.truncate(2);
        assert!(no_longer_named(&store, candidates(&["bb", "cc"]), &broken).is_empty());
    }
}
