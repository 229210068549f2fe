//! Compiled components on disk, keyed by the component's sha256 and the engine's
//! precompile-compatibility hash, so a second `wharf run` compiles nothing and a wharf built
//! with other engine settings never loads an artifact it cannot use.
//!
//! Deserializing runs native code; only files this cache wrote are read: the directory is
//! created private (0700), artifacts are written to a temporary name and renamed into place.

use std::hash::{DefaultHasher, Hash, Hasher};
use std::io::Write;
use std::path::{Path, PathBuf};
use wasmtime::Engine;
use wasmtime::component::Component;

pub struct ComponentCache {
    dir: Option<PathBuf>,
    engine_hash: u64,
}

impl ComponentCache {
    /// `dir` None disables the disk cache.
    pub fn new(engine: &Engine, dir: Option<PathBuf>) -> Self {
        let mut hasher = DefaultHasher::new();
        engine.precompile_compatibility_hash().hash(&mut hasher);
        env!("CARGO_PKG_VERSION").hash(&mut hasher);
        let dir = dir.and_then(|d| match create_private_dir(&d) {
            Ok(()) => Some(d),
            Err(e) => {
                tracing::warn!("compile cache disabled: cannot create {}: {e}", d.display());
                None
            }
        });
        Self {
            dir,
            engine_hash: hasher.finish(),
        }
    }

    /// The default location: `$WHARF_CACHE_DIR`, else `$XDG_CACHE_HOME/wharf`, else
    /// `~/.cache/wharf`, with `components/` below it.
    pub fn default_dir() -> Option<PathBuf> {
        let base = std::env::var_os("WHARF_CACHE_DIR")
            .map(PathBuf::from)
            .or_else(|| std::env::var_os("XDG_CACHE_HOME").map(|d| PathBuf::from(d).join("wharf")))
            .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".cache/wharf")))?;
        Some(base.join("components"))
    }

    fn path_for(&self, sha256: &str) -> Option<PathBuf> {
        let dir = self.dir.as_ref()?;
        Some(dir.join(format!("{sha256}-{:016x}.cwasm", self.engine_hash)))
    }

    /// The component for `bytes`, and whether it came from the cache.
    pub fn load(&self, engine: &Engine, sha256: &str, bytes: &[u8]) -> wasmtime::Result<(Component, bool)> {
        if let Some(path) = self.path_for(sha256)
            && path.exists()
        {
            // SAFETY: the file was written by `store` below from `Component::serialize` of
            // an engine with the same compatibility hash (it is in the file name), in a
            // directory only this user can write.
            match unsafe { Component::deserialize_file(engine, &path) } {
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

fn store(component: &Component, path: &Path) -> anyhow::Result<()> {
    let bytes = component.serialize()?;
    let tmp = path.with_extension(format!("tmp{}", std::process::id()));
    let mut file = std::fs::File::create(&tmp)?;
    file.write_all(&bytes)?;
    file.sync_all()?;
    std::fs::rename(&tmp, path)?;
    Ok(())
}

fn create_private_dir(dir: &Path) -> std::io::Result<()> {
    use std::os::unix::fs::{DirBuilderExt, PermissionsExt};
    std::fs::DirBuilder::new().recursive(true).mode(0o700).create(dir)?;
    let mode = std::fs::metadata(dir)?.permissions().mode();
    if mode & 0o022 != 0 {
        return Err(std::io::Error::other(format!(
            "{} is writable by other users ({:o}); refusing to load compiled code from it",
            dir.display(),
            mode & 0o777
        )));
    }
    Ok(())
}
