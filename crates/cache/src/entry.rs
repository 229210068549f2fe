//! An entry: who the step was (its identity), every input it used with what it found, and
//! what it did. An entry is accepted only when each input is still what it was; the first
//! one that is not is the reason for a miss ([`Entry::check`]).

use crate::found::{self, Found};
use crate::tree::{self, Known};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::path::Path;

/// The entry format; another is a miss.
pub const FORMAT: u32 = 1;

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Entry {
    pub format: u32,
    /// The step's identity ([`crate::identity::Identity`]): where the entry is filed.
    pub identity: String,
    /// What the identity was made of, part by part (the component, each parameter, the
    /// grants, each variable): each part's digest.
    pub identity_parts: BTreeMap<String, String>,
    pub step: String,
    /// The run that did the work.
    pub run_id: String,
    /// When it was saved, in seconds since the epoch.
    pub created: u64,
    /// How long the step took when it ran.
    pub millis: u64,
    pub inputs: Vec<Input>,
    pub effects: Effects,
}

/// Something a step used, and what it was.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "input", rename_all = "kebab-case")]
pub enum Input {
    /// A workspace path the step opened or examined, as it first found it.
    Path { path: String, follow: bool, found: Found },
    /// A workspace path the step first opened to replace whatever file was there: any
    /// regular file, or none, gives the same result.
    Replaced { path: String },
    /// A workspace directory the step listed: the digest of its names and kinds; None when
    /// it was not a directory.
    Listing { path: String, digest: Option<String> },
    /// A whole workspace directory a program could read: the digest of its tree, and the
    /// tree itself, so that a miss names the file that changed.
    Tree {
        path: String,
        digest: String,
        #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
        entries: BTreeMap<String, Found>,
    },
    /// A whole host directory a program could read (a `host-read:` grant), by its files'
    /// inodes, sizes and times (a package cache is large, and its files are replaced, not
    /// edited).
    HostTree { path: String, digest: String },
    /// A toolchain programs read, by its files' inodes, sizes and times to a depth
    /// ([`tree::Detail::Stamps`]).
    Toolchain { path: String, depth: usize, digest: String },
    /// A host file: the program a step ran.
    HostFile { path: String, found: Found },
    /// An answer of the host only it can check again (`what` names it for people and for
    /// the host): a `source` answer, a secret's keyed digest.
    Answer { what: String, digest: String },
}

impl Input {
    /// How the input is named in a miss.
    pub fn name(&self) -> String {
        match self {
            Input::Path { path, .. } | Input::Replaced { path } => format!("file `{path}`"),
            Input::Listing { path, .. } => format!("the listing of `{path}`"),
            Input::Tree { path, .. } => format!("everything in `{path}`"),
            Input::HostTree { path, .. } => format!("everything in host directory {path}"),
            Input::Toolchain { path, .. } => format!("toolchain {path}"),
            Input::HostFile { path, .. } => format!("program {path}"),
            Input::Answer { what, .. } => what.clone(),
        }
    }
}

/// What a step did, all of which a hit does again.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Effects {
    pub outputs: Vec<(String, String)>,
    /// Workspace paths as the step left them, in path order; a file's content is a blob of
    /// the store, by its sha256.
    pub files: Vec<(String, Found)>,
    /// What the step said (log lines, annotations, test results), as the host's events.
    pub said: Vec<serde_json::Value>,
    /// Images it put in the local image store.
    pub images: Vec<Image>,
}

/// An image in the local store: its name and its manifest.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Image {
    pub name: String,
    pub digest: String,
    pub media_type: String,
    pub size: u64,
}

/// The first input of an entry that is not what it was.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Difference {
    pub input: String,
    pub was: String,
    pub now: String,
}

impl std::fmt::Display for Difference {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} was {}, is {}", self.input, self.was, self.now)
    }
}

impl Entry {
    /// Whether every input is what it was, in the order the step used them; `answers` gives
    /// the digest of a host answer now (None when it cannot be had: a miss). Trees are
    /// walked with `known` digests.
    pub fn check(
        &self,
        workspace: &Path,
        answers: &mut dyn FnMut(&str) -> Option<String>,
        known: &mut Known,
    ) -> Result<(), Difference> {
        for input in &self.inputs {
            check(input, workspace, answers, known)?;
        }
        Ok(())
    }
}

fn short(digest: &str) -> String {
    format!("sha256 {}", &digest[..digest.len().min(12)])
}

/// Whether one input is what it was.
pub fn check(
    input: &Input,
    workspace: &Path,
    answers: &mut dyn FnMut(&str) -> Option<String>,
    known: &mut Known,
) -> Result<(), Difference> {
    let differs = |was: String, now: String| {
        Err(Difference {
            input: input.name(),
            was,
            now,
        })
    };
    match input {
        Input::Path { path, follow, found } => {
            let now = found::probe(workspace, path, *follow);
            if &now != found {
                return differs(found.describe(), now.describe());
            }
        }
        Input::Replaced { path } => {
            let now = found::probe(workspace, path, false);
            if !matches!(now, Found::Absent | Found::File { .. }) {
                return differs("absent or a file".into(), now.describe());
            }
        }
        Input::Listing { path, digest } => {
            let now = found::open_dir(workspace)
                .ok()
                .and_then(|root| found::listing_at(std::os::fd::AsFd::as_fd(&root), path));
            if &now != digest {
                let name = |d: &Option<String>| d.as_deref().map_or("not a directory".into(), short);
                return differs(name(digest), name(&now));
            }
        }
        Input::Tree { path, digest, entries } => {
            let relative = if path == "." { "" } else { path.as_str() };
            match tree::walk(workspace, relative, known) {
                Ok(now) if &now.digest() == digest => {}
                Ok(now) => {
                    let was = tree::Tree {
                        entries: entries.clone(),
                    };
                    let first = was.changes(&now).into_iter().next();
                    return match first {
                        Some((file, found)) => Err(Difference {
                            input: match (relative, file.as_str()) {
                                (dir, "") => format!("`{dir}`"),
                                ("", file) => format!("file `{file}`"),
                                (dir, file) => format!("file `{dir}/{file}`"),
                            },
                            was: was.entries.get(&file).unwrap_or(&Found::Absent).describe(),
                            now: found.describe(),
                        }),
                        None => differs(short(digest), short(&now.digest())),
                    };
                }
                Err(e) => return differs(short(digest), format!("not checkable ({e})")),
            }
        }
        Input::HostTree { path, digest } => {
            let detail = tree::Detail::Stamps { depth: usize::MAX };
            let now = tree::walk_as(Path::new("/"), path.trim_start_matches('/'), known, detail).map(|t| t.digest());
            match now {
                Ok(now) if &now == digest => {}
                Ok(now) => return differs(short(digest), short(&now)),
                Err(e) => return differs(short(digest), format!("not checkable ({e})")),
            }
        }
        Input::Toolchain { path, depth, digest } => {
            let detail = tree::Detail::Stamps { depth: *depth };
            let now = tree::walk_as(Path::new("/"), path.trim_start_matches('/'), known, detail).map(|t| t.digest());
            match now {
                Ok(now) if &now == digest => {}
                Ok(now) => return differs(short(digest), short(&now)),
                Err(e) => return differs(short(digest), format!("not checkable ({e})")),
            }
        }
        Input::HostFile { path, found } => {
            let now = host_file(Path::new(path), known);
            if &now != found {
                return differs(found.describe(), now.describe());
            }
        }
        Input::Answer { what, digest } => match answers(what) {
            Some(now) if &now == digest => {}
            Some(now) => return differs(short(digest), short(&now)),
            None => return differs(short(digest), "not checkable".into()),
        },
    }
    Ok(())
}

/// What a host file is, following links (a program is run through them); its digest
/// remembered by its stamp, like a tree's files (a toolchain's programs are large).
pub fn host_file(path: &Path, known: &mut Known) -> Found {
    match std::fs::File::open(path) {
        Ok(file) => {
            use std::os::unix::fs::PermissionsExt as _;
            match file.metadata() {
                Ok(m) if m.is_file() => match known.file_digest(file) {
                    Ok(sha256) => Found::File {
                        sha256,
                        executable: m.permissions().mode() & 0o111 != 0,
                    },
                    Err(e) => Found::Error {
                        errno: e.raw_os_error().unwrap_or(5),
                    },
                },
                Ok(m) if m.is_dir() => Found::Directory,
                Ok(_) => Found::Other,
                Err(e) => Found::Error {
                    errno: e.raw_os_error().unwrap_or(5),
                },
            }
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Found::Absent,
        Err(e) => Found::Error {
            errno: e.raw_os_error().unwrap_or(5),
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_first_input_that_differs_is_named() {
        let dir = tempfile::tempdir().unwrap();
        let ws = dir.path();
        std::fs::write(ws.join("a.txt"), "one").unwrap();
        let entry = Entry {
            format: FORMAT,
            identity: String::new(),
            identity_parts: BTreeMap::new(),
            step: "s".into(),
            run_id: "r".into(),
            created: 0,
            millis: 1,
            inputs: vec![
                Input::Path {
                    path: "a.txt".into(),
                    follow: true,
                    found: found::probe(ws, "a.txt", true),
                },
                Input::Replaced { path: "out.txt".into() },
                Input::Answer {
                    what: "source describe".into(),
                    digest: "abc".into(),
                },
            ],
            effects: Effects::default(),
        };
        let mut known = Known::default();
        let mut same = |_: &str| Some("abc".to_string());
        assert_eq!(entry.check(ws, &mut same, &mut known), Ok(()));
        // A replaced file may be anything regular, or nothing.
        std::fs::write(ws.join("out.txt"), "whatever").unwrap();
        assert_eq!(entry.check(ws, &mut same, &mut known), Ok(()));
        std::fs::create_dir(ws.join("x")).unwrap();
        std::fs::remove_file(ws.join("out.txt")).unwrap();
        std::os::unix::fs::symlink("x", ws.join("out.txt")).unwrap();
        let why = entry.check(ws, &mut same, &mut known).unwrap_err();
        assert_eq!(why.input, "file `out.txt`");
        std::fs::remove_file(ws.join("out.txt")).unwrap();

        std::fs::write(ws.join("a.txt"), "two").unwrap();
        let why = entry.check(ws, &mut same, &mut known).unwrap_err();
        assert_eq!(why.input, "file `a.txt`");
        assert!(why.to_string().starts_with("file `a.txt` was a file (sha256 "), "{why}");
        std::fs::write(ws.join("a.txt"), "one").unwrap();
        let mut other = |_: &str| Some("abd".to_string());
        assert_eq!(
            entry.check(ws, &mut other, &mut known).unwrap_err().input,
            "source describe"
        );
        let mut none = |_: &str| None;
        assert!(
            entry.check(ws, &mut none, &mut known).is_err(),
            "an input that cannot be checked is a miss"
        );
    }
}
