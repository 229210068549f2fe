//! Compiled components on disk, keyed by the component's sha256 and the engine's
//! precompile-compatibility hash, so a second `wharf run` compiles nothing and a wharf built
//! with other engine settings never loads an artifact it cannot use.
//!
//! Deserializing runs native code, so an entry is loaded only when all of these hold: the
//! directory belongs to this user and no one else may enter it (0700), no directory above it
//! lets another user swap it for one of theirs (each belongs to this user or root, and is
//! writable by others only with the sticky bit, as `/tmp`), it does not lie in the
//! workspace a pipeline's steps write to, and the entry's checksum (stored in front of it)
//! matches its bytes. A damaged entry (a flipped bit, a cut-off write) is compiled again
//! instead of crashing every later run.
//!
//! Beside a compiled entry lies what linking it found ([`Linked`]: a typed step's
//! description, or that it is a WASI command), keyed as well by the wharf build that linked
//! it: the next run checks and describes the step from that record and reads the compiled
//! code only when the step runs, which a step taken from the step cache never does.

use sha2::{Digest, Sha256};
use std::hash::{DefaultHasher, Hash, Hasher};
use std::io::Write;
use std::path::{Path, PathBuf};
use wasmtime::Engine;
use wasmtime::component::Component;

/// An entry: this magic, the sha256 of the rest, then what `Component::serialize` wrote.
const MAGIC: &[u8; 8] = b"WHARFCC1";
const HEADER: usize = MAGIC.len() + 32;
/// Larger entries are not read (compiled built-in steps are a few MiB).
const ENTRY_LIMIT: u64 = 1 << 30;

pub struct ComponentCache {
    dir: Option<PathBuf>,
    engine_hash: u64,
    /// The engine's hash and this build of wharf (its linker, its contract).
    link_hash: u64,
}

/// How a component linked on this build of wharf: a WASI command, or a typed step and its
/// `describe()`.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct Linked {
    pub command: bool,
    pub info: Option<crate::pipeline::describe::StepInfo>,
}

/// Largest record of a link read back.
const LINKED_LIMIT: u64 = 1 << 20;

/// Why a cache directory is not used.
pub fn check_dir(dir: &Path, workspace: Option<&Path>) -> Result<(), String> {
    use std::os::unix::fs::{DirBuilderExt, MetadataExt};
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(dir)
        .map_err(|e| format!("cannot create {}: {e}", dir.display()))?;
    let meta = std::fs::symlink_metadata(dir).map_err(|e| format!("{}: {e}", dir.display()))?;
    if !meta.is_dir() {
        return Err(format!("{} is not a directory", dir.display()));
    }
    let me = rustix::process::geteuid().as_raw();
    if meta.uid() != me {
        return Err(format!(
            "{} belongs to user {}, not to this user ({me}); compiled code is loaded only from a directory of one's own",
            dir.display(),
            meta.uid()
        ));
    }
    if meta.mode() & 0o077 != 0 {
        return Err(format!(
            "{} is open to other users (mode {:o}); make it private with `chmod 700 {}`",
            dir.display(),
            meta.mode() & 0o777,
            dir.display()
        ));
    }
    let real = std::fs::canonicalize(dir).map_err(|e| format!("{}: {e}", dir.display()))?;
    for above in real.ancestors().skip(1) {
        let meta = std::fs::metadata(above).map_err(|e| format!("{}: {e}", above.display()))?;
        if meta.uid() != me && meta.uid() != 0 {
            return Err(format!(
                "{} lies in {}, which belongs to user {}: they could swap the cache for one of their own; use a directory of your own (WHARF_CACHE_DIR)",
                dir.display(),
                above.display(),
                meta.uid()
            ));
        }
        if meta.mode() & 0o022 != 0 && meta.mode() & 0o1000 == 0 {
            return Err(format!(
                "{} lies in {}, which others may write (mode {:o}): they could swap the cache for one of their own; `chmod go-w {}`, or use another directory (WHARF_CACHE_DIR)",
                dir.display(),
                above.display(),
                meta.mode() & 0o7777,
                above.display()
            ));
        }
    }
    if let Some(workspace) = workspace
        && let Ok(ws) = std::fs::canonicalize(workspace)
        && real.starts_with(&ws)
    {
        return Err(format!(
            "{} lies inside the workspace {}, where pipeline steps write; put it elsewhere (WHARF_CACHE_DIR)",
            dir.display(),
            ws.display()
        ));
    }
    Ok(())
}

impl ComponentCache {
    /// `dir` None disables the disk cache; so does a directory [`check_dir`] refuses (the
    /// caller has said why).
    pub fn new(engine: &Engine, dir: Option<PathBuf>) -> Self {
        let mut hasher = DefaultHasher::new();
        engine.precompile_compatibility_hash().hash(&mut hasher);
        env!("CARGO_PKG_VERSION").hash(&mut hasher);
        let engine_hash = hasher.finish();
        env!("WHARF_COMMIT").hash(&mut hasher);
        wharf_contract::CURRENT.hash(&mut hasher);
        Self {
            dir: dir.filter(|d| check_dir(d, None).is_ok()),
            engine_hash,
            link_hash: hasher.finish(),
        }
    }

    /// The default location: `$WHARF_CACHE_DIR`, else `$XDG_CACHE_HOME/wharf`, else
    /// `~/.cache/wharf`, with `components/` below it.
    pub fn default_dir() -> Option<PathBuf> {
        crate::packages::cache_dir("components")
    }

    fn path_for(&self, sha256: &str) -> Option<PathBuf> {
        let dir = self.dir.as_ref()?;
        Some(dir.join(format!("{sha256}-{:016x}.cwasm", self.engine_hash)))
    }

    fn linked_path(&self, sha256: &str) -> Option<PathBuf> {
        let dir = self.dir.as_ref()?;
        Some(dir.join(format!("{sha256}-{:016x}.linked", self.link_hash)))
    }

    /// How the component whose bytes have this sha256 linked on this build, if recorded.
    /// A record that does not read is as none: the component is linked again.
    pub fn linked(&self, sha256: &str) -> Option<Linked> {
        let bytes = crate::bounded::read(&self.linked_path(sha256)?, LINKED_LIMIT).ok()?;
        serde_json::from_slice(&bytes).ok()
    }

    /// Record how the component whose bytes have this sha256 linked.
    pub fn remember_linked(&self, sha256: &str, linked: &Linked) {
        let Some(path) = self.linked_path(sha256) else {
            return;
        };
        let write = || -> std::io::Result<()> {
            let tmp = path.with_extension(format!("tmp{}", std::process::id()));
            std::fs::write(&tmp, serde_json::to_vec(linked)?)?;
            std::fs::rename(&tmp, &path)
        };
        if let Err(e) = write() {
            tracing::warn!("could not record how {} linked: {e}", path.display());
        }
    }

    /// Drop the record of how a component linked: it did not hold.
    pub fn forget_linked(&self, sha256: &str) {
        if let Some(path) = self.linked_path(sha256) {
            let _ = std::fs::remove_file(path);
        }
    }

    /// The component for `bytes`, and whether it came from the cache.
    pub fn load(&self, engine: &Engine, sha256: &str, bytes: &[u8]) -> wasmtime::Result<(Component, bool)> {
        if let Some(path) = self.path_for(sha256)
            && let Some(entry) = read_entry(&path)
        {
            // SAFETY: the bytes are what `store` below wrote from `Component::serialize` of
            // an engine with the same compatibility hash (it is in the file name), in a
            // directory only this user can enter, and their checksum matches.
            match unsafe { Component::deserialize(engine, &entry[HEADER..]) } {
                Ok(component) => return Ok((component, true)),
                Err(e) => {
                    tracing::warn!("discarding unreadable cache entry {}: {e}", path.display());
                    let _ = std::fs::remove_file(&path);
                }
            }
        }
        let component = Component::new(engine, bytes)?;
        if let Some(path) = self.path_for(sha256)
            && let Err(e) = store(&component, &path)
        {
            tracing::warn!("could not cache the compiled component at {}: {e}", path.display());
        }
        Ok((component, false))
    }
}

/// An entry whose checksum holds, header and all; a damaged entry is removed.
fn read_entry(path: &Path) -> Option<Vec<u8>> {
    let bytes = match crate::bounded::read(path, ENTRY_LIMIT) {
        Ok(b) => b,
        Err(e) if e.is_not_found() => return None,
        Err(e) => {
            tracing::warn!("discarding cache entry: {e}");
            let _ = std::fs::remove_file(path);
            return None;
        }
    };
    let intact = bytes.len() >= HEADER
        && bytes[..MAGIC.len()] == MAGIC[..]
        && Sha256::digest(&bytes[HEADER..])[..] == bytes[MAGIC.len()..HEADER];
    if !intact {
        tracing::warn!("discarding damaged cache entry {}", path.display());
        let _ = std::fs::remove_file(path);
        return None;
    }
    Some(bytes)
}

fn store(component: &Component, path: &Path) -> anyhow::Result<()> {
    let bytes = component.serialize()?;
    let tmp = path.with_extension(format!("tmp{}", std::process::id()));
    let mut file = std::fs::File::create(&tmp)?;
    file.write_all(MAGIC)?;
    file.write_all(&Sha256::digest(&bytes))?;
    file.write_all(&bytes)?;
    file.sync_all()?;
    std::fs::rename(&tmp, path)?;
    Ok(())
}
