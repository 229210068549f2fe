//! Audit runs (`wharf run --audit`), for adopting a step someone else wrote: a file, process
//! or HTTP access the grants refuse is let through and noted, as the YAML that would grant
//! it; secrets, deploys and the rest stay refused, and loopback, link-local and metadata
//! addresses stay out of reach. What a step needed becomes its smallest `allow:` block.

use super::grants::Refusal;
use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::sync::Mutex;

/// The `allow:` keys an audit lets through.
const AUDITED: &[&str] = &["read", "write", "process", "http", "host-read", "host-write"];

/// What an audit notes of a read of a path the workspace does not hold: no grant gives what
/// is not there. (A step's absolute path resolves in the workspace: `/etc/passwd` comes
/// here as `etc/passwd`, which a grant would only make look granted.)
const ABSENT: &str = "absent";

/// What one step needed beyond its grants, as `KEY: [VALUE]` lines (and `absent: [PATH]`
/// for what it looked for in vain).
#[derive(Debug)]
pub struct Audit {
    needed: Mutex<BTreeSet<String>>,
    /// The workspace, and the run's scratch space inside it (wharf's own, where no grant
    /// applies), as the kernel names them.
    workspace: PathBuf,
    scratch: PathBuf,
}

impl Audit {
    pub fn new(workspace: &Path, scratch: &Path) -> Audit {
        let real = |p: &Path| std::fs::canonicalize(p).unwrap_or_else(|_| p.to_path_buf());
        Audit {
            needed: Mutex::default(),
            workspace: real(workspace),
            scratch: real(scratch),
        }
    }

    /// `path` beneath the host directory `dir`, relative to the workspace, to check against
    /// the grants; None outside the workspace, in the scratch space, or (for a read) where
    /// nothing is, which is noted as absent instead.
    pub fn workspace_path(&self, dir: &Path, path: &str, write: bool) -> Option<String> {
        if dir.starts_with(&self.scratch) {
            return None;
        }
        let beneath = dir.strip_prefix(&self.workspace).ok()?;
        let relative = beneath.join(path).to_string_lossy().into_owned();
        if !write && let Err(crate::beneath::Error::NotFound { .. }) = crate::beneath::existing(dir, path) {
            self.note(format!("{ABSENT}: [{relative}]"));
            return None;
        }
        Some(relative)
    }

    /// A path a confined program reached beyond its grants, cut to what a grant names: a
    /// workspace path as `read:` or `write:`, another as `host-read:` or `host-write:`
    /// (`~/` for wharf's home).
    pub fn note_program(&self, path: &Path, write: bool) {
        let (key, value) = match path.strip_prefix(&self.workspace) {
            Ok(inside) if inside.as_os_str().is_empty() => return,
            Ok(inside) => (if write { "write" } else { "read" }, inside.display().to_string()),
            Err(_) => {
                let home = std::env::var_os("HOME").map(PathBuf::from);
                let value = match home.as_deref().and_then(|h| path.strip_prefix(h).ok()) {
                    Some(beneath) => format!("~/{}", beneath.display()),
                    None => path.display().to_string(),
                };
                (if write { "host-write" } else { "host-read" }, value)
            }
        };
        self.note(format!("{key}: [{value}]"));
    }

    fn note(&self, line: String) {
        self.needed.lock().unwrap_or_else(|e| e.into_inner()).insert(line);
    }

    /// Let `check` through if it refused only a grant an audit stands in for, noting it.
    pub fn permit(&self, check: Result<(), Refusal>) -> Result<(), Refusal> {
        match check {
            Err(Refusal::NotGranted { yaml, .. }) if audited(&yaml) => {
                self.note(yaml);
                Ok(())
            }
            other => other,
        }
    }

    pub fn needed(&self) -> Vec<String> {
        self.needed
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .iter()
            .cloned()
            .collect()
    }
}

fn audited(yaml: &str) -> bool {
    yaml.split_once(':').is_some_and(|(key, _)| AUDITED.contains(&key))
}

/// The `allow:` block of `KEY: [VALUE]` lines, values of one key together:
///
/// ```text
/// allow:
///   http: ["http://127.0.0.1:8080"]
///   process: [git]
/// ```
pub fn allow_block(lines: &[String]) -> String {
    let mut by_key: BTreeMap<&str, BTreeSet<&str>> = BTreeMap::new();
    for line in lines {
        if let Some((key, list)) = line.split_once(": ")
            && AUDITED.contains(&key)
        {
            let values = list.trim().trim_start_matches('[').trim_end_matches(']');
            by_key
                .entry(key)
                .or_default()
                .extend(values.split(", ").filter(|v| !v.is_empty()));
        }
    }
    let mut block = String::from("allow:\n");
    for (key, values) in by_key {
        let values: Vec<&str> = values.into_iter().collect();
        block.push_str(&format!("  {key}: [{}]\n", values.join(", ")));
    }
    block
}

/// The paths a step looked for in vain, of the noted `lines`.
pub fn absent(lines: &[String]) -> Vec<&str> {
    lines
        .iter()
        .filter_map(|l| l.strip_prefix(ABSENT)?.strip_prefix(": [")?.strip_suffix(']'))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn refused(yaml: &str) -> Result<(), Refusal> {
        Err(Refusal::NotGranted {
            step: "s".into(),
            what: "something".into(),
            yaml: yaml.into(),
        })
    }

    #[test]
    fn files_processes_and_http_are_noted_the_rest_stays_refused() {
        let audit = Audit::new(Path::new("/ws"), Path::new("/ws/.wharf/runs/r/scratch"));
        for yaml in [
            "process: [git]",
            "http: [\"http://127.0.0.1:8080\"]",
            "write: [out]",
            "read: [src]",
        ] {
            assert_eq!(audit.permit(refused(yaml)), Ok(()), "{yaml}");
        }
        for yaml in [
            "secrets: [token]",
            "deploy: [seed]",
            "registry: [\"ghcr.io\"]",
            "source: true",
        ] {
            assert!(audit.permit(refused(yaml)).is_err(), "{yaml}");
        }
        let outside = Err(Refusal::LeavesWorkspace { path: "../x".into() });
        assert!(audit.permit(outside).is_err());
        assert_eq!(
            allow_block(&audit.needed()),
            "allow:\n  http: [\"http://127.0.0.1:8080\"]\n  process: [git]\n  read: [src]\n  write: [out]\n"
        );
        assert_eq!(
            allow_block(&["process: [git]".into(), "process: [cargo]".into()]),
            "allow:\n  process: [cargo, git]\n"
        );
    }

    #[test]
    fn paths_are_the_workspaces_but_not_the_scratch_space_nor_what_is_not_there() {
        let ws = tempfile::tempdir().unwrap();
        let ws = std::fs::canonicalize(ws.path()).unwrap();
        std::fs::create_dir_all(ws.join("src")).unwrap();
        std::fs::write(ws.join("src/a.rs"), "").unwrap();
        let scratch = ws.join(".wharf/runs/r/scratch");
        std::fs::create_dir_all(scratch.join("step-1")).unwrap();
        let audit = Audit::new(&ws, &scratch);
        assert_eq!(
            audit.workspace_path(&ws.join("src"), "a.rs", false).as_deref(),
            Some("src/a.rs")
        );
        assert_eq!(audit.workspace_path(&ws, "out", true).as_deref(), Some("out"));
        assert_eq!(audit.workspace_path(&scratch.join("step-1"), "output", true), None);
        assert_eq!(audit.workspace_path(Path::new("/elsewhere"), "x", false), None);
        // `/etc/passwd` in the step: not a grant to suggest, a path it looked for in vain.
        assert_eq!(audit.workspace_path(&ws, "etc/passwd", false), None);
        let noted = audit.needed();
        assert_eq!(absent(&noted), ["etc/passwd"]);
        assert_eq!(allow_block(&noted), "allow:\n");
    }
}
