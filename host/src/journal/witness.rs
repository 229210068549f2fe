//! What a step used, as the sandbox saw it: the step cache's record of a recorded attempt.
//! Every workspace path the step opened, examined or listed is an input, as it first found
//! it (before the step could change it); every path it wrote is an effect; every host call
//! goes, before and after it is made, to an [`Observer`] (the cache's, which knows what each
//! call means).
//!
//! Like [`super::capture`], paths are named by where the step's directory handle sits in the
//! workspace and looked at beneath it by the kernel.

use super::capture::{join, workspace_name};
use super::snapshot::is_wharf_state;
use serde_json::Value;
use std::collections::{BTreeSet, HashSet};
use std::os::fd::BorrowedFd;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use wharf_cache::{Input, found};

/// How a step uses a workspace path.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Use {
    /// Opens or examines it; `follow` a final symbolic link.
    Read { follow: bool },
    /// Opens it to replace the file there, without reading it (create, truncate, write only).
    Replace,
    /// Changes it: opens it to write, removes, renames, creates it.
    Write { follow: bool },
    /// Lists the directory.
    List,
}

/// What sees a step's host calls.
pub trait Observer: Send + Sync {
    /// Before the call is made.
    fn before(&self, interface: &str, function: &str, args: &Value);
    /// After, with its result (a secret in clear, for `secrets.reveal`: never keep it).
    fn after(&self, interface: &str, function: &str, args: &Value, result: &Value);
}

pub struct Witness {
    roots: Vec<(PathBuf, String)>,
    pub observer: Arc<dyn Observer>,
    seen: Mutex<Seen>,
}

/// The paths an attempt used so far.
#[derive(Debug, Default, Clone)]
pub struct Seen {
    /// In the order first used.
    pub inputs: Vec<Input>,
    named: HashSet<(bool, PathBuf)>,
    /// Workspace paths it changed.
    pub written: BTreeSet<String>,
    /// Why what it used cannot be told: a name that is not UTF-8, a write through a link.
    pub unclear: Option<String>,
}

impl Witness {
    /// `roots`: the workspace directories opened to the step (host path, workspace name).
    pub fn new(roots: Vec<(PathBuf, String)>, observer: Arc<dyn Observer>) -> Witness {
        Witness {
            roots,
            observer,
            seen: Mutex::default(),
        }
    }

    /// The step is about to use `path` beneath its directory handle `dir`.
    pub fn look(&self, dir: BorrowedFd<'_>, path: &str, how: Use) {
        let Some(base) = workspace_name(&self.roots, dir) else {
            return;
        };
        let Some(name) = join(&base, path) else { return };
        if is_wharf_state(&name) {
            return;
        }
        let mut seen = self.seen.lock().unwrap();
        let Some(text) = name.to_str().map(String::from) else {
            seen.unclear
                .get_or_insert_with(|| format!("`{}` is not UTF-8", name.display()));
            return;
        };
        let through_link = matches!(how, Use::Replace | Use::Write { follow: true })
            && matches!(found::probe_at(dir, path, false), wharf_cache::Found::Link { .. });
        if through_link {
            seen.unclear
                .get_or_insert_with(|| format!("it wrote through the symbolic link `{text}`"));
        }
        let listing = how == Use::List;
        if seen.named.insert((listing, name)) {
            let input = match how {
                Use::List => Input::Listing {
                    path: text.clone(),
                    digest: found::listing_at(dir, path),
                },
                Use::Replace => Input::Replaced { path: text.clone() },
                Use::Read { follow } | Use::Write { follow } => Input::Path {
                    path: text.clone(),
                    follow,
                    found: found::probe_at(dir, path, follow),
                },
            };
            seen.inputs.push(input);
        }
        if matches!(how, Use::Replace | Use::Write { .. }) {
            seen.written.insert(text);
        }
    }

    /// What the attempt used.
    pub fn seen(&self) -> Seen {
        self.seen.lock().unwrap().clone()
    }
}
