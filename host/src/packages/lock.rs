//! `wharf.lock`: beside a pipeline, the digest of every step it uses (an `oci://` artifact's
//! manifest, a local component's bytes) and the wharf version whose built-in steps it was
//! locked with. A run uses the locked digests; `--locked` refuses anything that strays.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

pub const FILE_NAME: &str = "wharf.lock";
const VERSION: u32 = 1;
/// A lock file is a few lines per step; a larger one is not one.
const SIZE_LIMIT: u64 = 4 << 20;

#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Lock {
    pub version: u32,
    /// The wharf version whose built-in steps were locked.
    pub builtins: String,
    /// `uses:` as the pipeline writes it, to `sha256:HEX`.
    pub steps: BTreeMap<String, String>,
    /// For a step the trust policy covers: who signed its locked digest, and the signature
    /// (the digest of the referrer holding the bundle), checked again by every run offline.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub signatures: BTreeMap<String, LockedSignature>,
}

#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LockedSignature {
    /// The fingerprint of the key that signed.
    pub key: wharf_sign::Fingerprint,
    /// `sha256:` of the referrer manifest whose layer is the signature bundle.
    pub bundle: String,
}

#[derive(Debug, thiserror::Error)]
pub enum LockError {
    #[error("cannot read {path}: {source}")]
    Read {
        path: PathBuf,
        source: wharf_fs::bounded::ReadError,
    },
    #[error("{path}:{line}:{column}: not a wharf lock file: {message}")]
    Parse {
        path: PathBuf,
        line: usize,
        column: usize,
        message: String,
    },
    #[error(
        "{path}: `{uses}` is locked to `{digest}`, which is not a sha256 digest; run `wharf lock --update` to lock it again"
    )]
    BadDigest {
        path: PathBuf,
        uses: String,
        digest: String,
    },
    #[error("{path} is lock format {found}; this wharf reads format {VERSION}: run `wharf lock --update`")]
    Version { path: PathBuf, found: u32 },
    #[error("cannot write {path}: {source}")]
    Write { path: PathBuf, source: std::io::Error },
}

impl Lock {
    pub fn new(steps: BTreeMap<String, String>) -> Lock {
        Lock {
            version: VERSION,
            builtins: builtins_version(),
            steps,
            signatures: BTreeMap::new(),
        }
    }

    /// Where the lock of the pipeline in `pipeline_file` lives.
    pub fn path_for(pipeline_file: &Path) -> PathBuf {
        pipeline_file.parent().unwrap_or(Path::new(".")).join(FILE_NAME)
    }

    /// The lock at `path`, or None when there is none.
    pub fn read(path: &Path) -> Result<Option<Lock>, LockError> {
        let text = match wharf_fs::bounded::read_text(path, SIZE_LIMIT) {
            Ok(text) => text,
            Err(wharf_fs::bounded::ReadError::Io { source, .. }) if source.kind() == std::io::ErrorKind::NotFound => {
                return Ok(None);
            }
            Err(source) => {
                return Err(LockError::Read {
                    path: path.to_path_buf(),
                    source,
                });
            }
        };
        let lock: Lock = serde_json::from_str(&text).map_err(|e| LockError::Parse {
            path: path.to_path_buf(),
            line: e.line(),
            column: e.column(),
            message: e
                .to_string()
                .trim_end_matches(&format!(" at line {} column {}", e.line(), e.column()))
                .to_string(),
        })?;
        if lock.version != VERSION {
            return Err(LockError::Version {
                path: path.to_path_buf(),
                found: lock.version,
            });
        }
        // A digest goes into paths of the step cache and URLs of registries: checked here.
        let signatures = lock.signatures.iter().map(|(uses, s)| (uses, &s.bundle));
        if let Some((uses, digest)) = lock
            .steps
            .iter()
            .chain(signatures)
            .find(|(_, d)| crate::oci::digest_hex(d).is_none())
        {
            return Err(LockError::BadDigest {
                path: path.to_path_buf(),
                uses: uses.clone(),
                digest: digest.clone(),
            });
        }
        Ok(Some(lock))
    }

    /// Write the lock to `path` whole or not at all.
    pub fn write(&self, path: &Path) -> Result<(), LockError> {
        let failed = |source| LockError::Write {
            path: path.to_path_buf(),
            source,
        };
        let mut text = serde_json::to_string_pretty(self).map_err(|e| failed(std::io::Error::other(e)))?;
        text.push('\n');
        let dir = path
            .parent()
            .filter(|d| !d.as_os_str().is_empty())
            .unwrap_or(Path::new("."));
        let mut staged = tempfile::NamedTempFile::new_in(dir).map_err(failed)?;
        std::io::Write::write_all(&mut staged, text.as_bytes()).map_err(failed)?;
        staged.persist(path).map_err(|e| failed(e.error))?;
        Ok(())
    }
}

/// The version the built-in steps of this wharf carry.
pub fn builtins_version() -> String {
    format!("wharf {}", env!("CARGO_PKG_VERSION"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip_and_bad_files() {
        let dir = tempfile::tempdir().unwrap();
        let path = Lock::path_for(&dir.path().join("pipeline.yml"));
        assert_eq!(Lock::read(&path).unwrap(), None);
        let lock = Lock::new(BTreeMap::from([(
            "./a.wasm".into(),
            format!("sha256:{}", "0".repeat(64)),
        )]));
        lock.write(&path).unwrap();
        assert_eq!(Lock::read(&path).unwrap(), Some(lock));
        std::fs::write(&path, "{\n  \"version\": 1,\n  \"oops\": 2\n}").unwrap();
        let e = Lock::read(&path).unwrap_err().to_string();
        assert!(
            e.contains("wharf.lock:3:")
                && e.ends_with("unknown field `oops`, expected one of `version`, `builtins`, `steps`, `signatures`"),
            "{e}"
        );
        std::fs::write(&path, r#"{"version": 9, "builtins": "x", "steps": {}}"#).unwrap();
        assert!(matches!(Lock::read(&path), Err(LockError::Version { found: 9, .. })));
    }
}
