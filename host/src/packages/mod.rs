//! Steps as packages: `uses: oci://REGISTRY/REPOSITORY:VERSION`, `...@sha256:DIGEST`, or
//! both. A reference comes down to the digest of its artifact's manifest (its own digest,
//! else the lock file's, else what the tag names at the registry now); the artifact is
//! fetched once into a content-addressed store that all runs share, and every read back is
//! checked against its digest, so a cached digest is never fetched again and a damaged
//! cache is never run.

pub mod lock;
pub mod trust;

use crate::oci::artifact::{self, FetchError};
use crate::oci::layout::Store;
use crate::oci::reference::ImageRef;
use crate::oci::referrers::{self, ReferrerError};
use crate::oci::registry::{Credentials, Registry, RegistryError};
use lock::{Lock, LockedSignature};
use sha2::{Digest as _, Sha256};
use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use trust::Trust;
use wharf_sign::bundle::{self as signed, Bundle, BundleError};
use wharf_sign::statement::SIGNATURE_PREDICATE;

pub const SCHEME: &str = "oci://";
/// Largest component wharf fetches.
pub const COMPONENT_LIMIT: u64 = 256 << 20;

/// An `oci://` step reference.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StepRef {
    pub registry: String,
    pub image: ImageRef,
}

impl StepRef {
    /// `uses:` text after `oci://`.
    pub fn parse(text: &str) -> Result<StepRef, PackageError> {
        let bad = |why: String| PackageError::BadReference {
            uses: format!("{SCHEME}{text}"),
            why,
        };
        let image = ImageRef::parse(text).map_err(bad)?;
        let Some(registry) = image.registry.clone() else {
            return Err(bad(
                "it names no registry: write `oci://HOST[:PORT]/REPOSITORY:VERSION`".into(),
            ));
        };
        if image.tag.is_none() && image.digest.is_none() {
            return Err(bad(
                "it names neither a version nor a digest: add `:VERSION`, `@sha256:DIGEST` or both".into(),
            ));
        }
        Ok(StepRef { registry, image })
    }

    /// `oci://HOST/REPO@sha256:...`: what a run records as the step's origin.
    pub fn pinned(&self, digest: &str) -> String {
        format!("{SCHEME}{}/{}@{digest}", self.registry, self.image.repository)
    }
}

#[derive(Debug, thiserror::Error)]
pub enum PackageError {
    #[error("`{uses}` is not a step reference: {why}")]
    BadReference { uses: String, why: String },
    #[error("{uses}: {source}")]
    Fetch {
        uses: String,
        #[source]
        source: Box<FetchError>,
    },
    #[error("{uses}: {source}")]
    Registry {
        uses: String,
        #[source]
        source: Box<RegistryError>,
    },
    #[error("{uses}: the registry has no tag `{tag}`")]
    NoSuchTag { uses: String, tag: String },
    #[error("{uses} is not in {}", lock.display())]
    NotLocked { uses: String, lock: PathBuf },
    #[error("{uses}: the tag now names {now}, but {} has {locked}", lock.display())]
    TagMoved {
        uses: String,
        now: String,
        locked: String,
        lock: PathBuf,
    },
    #[error("{uses} is {now}, but {} has {locked}", lock.display())]
    Changed {
        uses: String,
        now: String,
        locked: String,
        lock: PathBuf,
    },
    #[error("{} locks the built-in steps of {locked}; this is {now}", lock.display())]
    BuiltinsChanged { locked: String, now: String, lock: PathBuf },
    #[error("{uses} names a tag, and the run is offline with no lock entry for it")]
    OfflineTag { uses: String },
    #[error("{uses} ({digest}) is not signed; {} requires a signature by {}", policy.display(), keys.join(" or "))]
    Unsigned {
        uses: String,
        digest: String,
        keys: Vec<String>,
        policy: PathBuf,
    },
    #[error("{uses} ({digest}): its signature {why}")]
    SignatureRefused {
        uses: String,
        digest: String,
        #[source]
        why: BundleError,
    },
    #[error("{uses}: wharf.lock records its signature by {locked}, but it verifies as {now}'s")]
    SignerChanged { uses: String, locked: String, now: String },
    #[error("{uses}: {} records no signature for it, and {} requires one", lock.display(), policy.display())]
    SignatureNotLocked {
        uses: String,
        lock: PathBuf,
        policy: PathBuf,
    },
    #[error("{uses}: its signature: {source}")]
    SignatureFetch {
        uses: String,
        #[source]
        source: Box<ReferrerError>,
    },
    #[error("cannot read {}: {source}", path.display())]
    Local {
        path: PathBuf,
        #[source]
        source: wharf_fs::bounded::ReadError,
    },
    #[error("step cache {}: {source}", dir.display())]
    Cache {
        dir: PathBuf,
        #[source]
        source: std::io::Error,
    },
}

impl PackageError {
    /// What to do about it, in one line.
    pub fn help(&self) -> String {
        match self {
            PackageError::BadReference { .. } => {
                "`uses:` takes `builtin:NAME`, a .wasm path, or `oci://HOST[:PORT]/REPOSITORY:VERSION[@sha256:DIGEST]`"
                    .into()
            }
            PackageError::NotLocked { .. } | PackageError::Changed { .. } | PackageError::BuiltinsChanged { .. } => {
                "run `wharf lock PIPELINE` to record it, and commit wharf.lock".into()
            }
            PackageError::TagMoved { .. } => {
                "someone published the tag again: check the new artifact, then `wharf lock --update STEP` to take it"
                    .into()
            }
            PackageError::OfflineTag { .. } => "lock it first (`wharf lock`), or pin it with `@sha256:DIGEST`".into(),
            PackageError::Unsigned { .. } => {
                "do not run it: ask its publisher to sign it (`wharf step publish --sign KEY`); a step the policy should not cover needs a narrower `match:`".into()
            }
            PackageError::SignatureRefused { .. } => {
                "do not run it: a key the policy does not trust signed it, or the signature was changed; if the publisher has a new key, add its public half to wharf.trust.yml".into()
            }
            PackageError::SignatureNotLocked { .. } => "run `wharf lock PIPELINE` online to check and record it, and commit wharf.lock".into(),
            PackageError::SignerChanged { .. } => {
                "check who signed it now; if that is right, `wharf lock --update STEP` records the new signer".into()
            }
            PackageError::SignatureFetch { source, .. } if matches!(**source, ReferrerError::Offline { .. }) => {
                "fetch it into the cache first with `wharf pull PIPELINE` (online)".into()
            }
            PackageError::Fetch { source, .. } if matches!(**source, FetchError::Offline { .. }) => {
                "fetch it into the cache first with `wharf pull PIPELINE` (online)".into()
            }
            PackageError::Registry { uses, source } if matches!(**source, RegistryError::NeedsCredentials { .. }) => {
                let host = StepRef::parse(uses.strip_prefix(SCHEME).unwrap_or(uses))
                    .map(|r| r.registry)
                    .unwrap_or_default();
                let key = credentials_key(&host);
                format!("set WHARF_REGISTRY_USER_{key} and the secret REGISTRY_{key}, or `docker login {host}`")
            }
            _ => "check the reference and that the registry is reachable".into(),
        }
    }
}

/// How a run treats `wharf.lock`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum LockMode {
    /// Use locked digests; what strays from the lock is a warning.
    #[default]
    Use,
    /// What strays from the lock (or is missing from it) stops the run: for CI.
    Locked,
    /// Ignore the lock: resolve every tag now (`wharf lock --update`).
    Update,
}

/// Where the step cache lives: `$WHARF_CACHE_DIR`, else `$XDG_CACHE_HOME/wharf`, else
/// `~/.cache/wharf`, with `KIND` below it.
pub fn cache_dir(kind: &str) -> Option<PathBuf> {
    let base = std::env::var_os("WHARF_CACHE_DIR")
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("XDG_CACHE_HOME").map(|d| PathBuf::from(d).join("wharf")))
        .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".cache/wharf")))?;
    Some(base.join(kind))
}

/// Pulled steps: the shared cache, and the registries spoken to.
pub struct Packages {
    store: Store,
    offline: bool,
    credentials: CredentialsFor,
    registries: Mutex<HashMap<String, Arc<Registry>>>,
}

/// A step resolved through the lock: its origin, its bytes, and what strayed.
pub struct Resolved {
    /// `oci://HOST/REPO@sha256:...` or the file path.
    pub origin: String,
    pub bytes: Vec<u8>,
    /// The digest to lock.
    pub digest: String,
    /// Lock drift that did not stop the run.
    pub warning: Option<PackageError>,
    /// Who signed it, when the trust policy covers it.
    pub signature: Option<LockedSignature>,
}

impl Packages {
    pub fn open(dir: &Path, offline: bool, credentials: CredentialsFor) -> Result<Packages, PackageError> {
        let store = Store::open(dir).map_err(|source| PackageError::Cache {
            dir: dir.to_path_buf(),
            source,
        })?;
        Ok(Packages {
            store,
            offline,
            credentials,
            registries: Mutex::default(),
        })
    }

    pub fn store(&self) -> &Store {
        &self.store
    }

    pub fn registry(&self, r: &StepRef, uses: &str) -> Result<Arc<Registry>, PackageError> {
        let mut known = self.registries.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(registry) = known.get(&r.registry) {
            return Ok(registry.clone());
        }
        let registry = Arc::new(
            Registry::new(&r.registry, (self.credentials)(&r.registry)).map_err(|source| PackageError::Registry {
                uses: uses.to_string(),
                source: Box::new(source),
            })?,
        );
        known.insert(r.registry.clone(), registry.clone());
        Ok(registry)
    }

    /// The digest the tag of `r` names at its registry now.
    pub async fn tag_digest(&self, r: &StepRef, uses: &str) -> Result<String, PackageError> {
        let tag = r.image.tag.as_deref().unwrap_or_default();
        if self.offline {
            return Err(PackageError::OfflineTag { uses: uses.into() });
        }
        let registry = self.registry(r, uses)?;
        match registry.manifest_digest(&r.image.repository, tag).await {
            Ok(Some(digest)) => Ok(digest),
            Ok(None) => Err(PackageError::NoSuchTag {
                uses: uses.into(),
                tag: tag.into(),
            }),
            Err(source) => Err(PackageError::Registry {
                uses: uses.into(),
                source: Box::new(source),
            }),
        }
    }

    /// The component of artifact `digest`, from the cache, else fetched into it.
    pub async fn component(&self, r: &StepRef, uses: &str, digest: &str) -> Result<Vec<u8>, PackageError> {
        let registry = if self.offline {
            None
        } else {
            Some(self.registry(r, uses)?)
        };
        artifact::fetch_component(
            &self.store,
            registry.as_deref(),
            &r.image.repository,
            digest,
            COMPONENT_LIMIT,
        )
        .await
        .map_err(|source| PackageError::Fetch {
            uses: uses.into(),
            source: Box::new(source),
        })
    }

    /// The manifest of artifact `digest` in the cache (after [`Packages::resolve_oci`]).
    pub fn manifest(&self, digest: &str) -> Option<crate::oci::Manifest> {
        artifact::cached_manifest(&self.store, digest, COMPONENT_LIMIT)
            .ok()
            .flatten()
    }

    /// Resolve the `uses:` of a step (`oci://...` or a local file already read) against the
    /// lock in `lock_path`.
    pub async fn resolve_oci(
        &self,
        uses: &str,
        lock: Option<&Lock>,
        lock_path: &Path,
        trust: Option<&Trust>,
        mode: LockMode,
    ) -> Result<Resolved, PackageError> {
        let r = StepRef::parse(uses.strip_prefix(SCHEME).unwrap_or(uses))?;
        let locked = lock
            .filter(|_| mode != LockMode::Update)
            .and_then(|l| l.steps.get(uses));
        let mut warning = None;
        let digest = match (&r.image.digest, locked) {
            (Some(own), Some(locked)) if own != locked => {
                let changed = PackageError::Changed {
                    uses: uses.into(),
                    now: own.clone(),
                    locked: locked.clone(),
                    lock: lock_path.to_path_buf(),
                };
                warning = strayed(mode, changed)?;
                own.clone()
            }
            (Some(own), _) => own.clone(),
            (None, Some(locked)) => {
                // Online, a moved tag is drift worth knowing about; the lock still decides.
                if !self.offline {
                    let now = self.tag_digest(&r, uses).await?;
                    if now != *locked {
                        let moved = PackageError::TagMoved {
                            uses: uses.into(),
                            now,
                            locked: locked.clone(),
                            lock: lock_path.to_path_buf(),
                        };
                        warning = strayed(mode, moved)?;
                    }
                }
                locked.clone()
            }
            (None, None) => self.tag_digest(&r, uses).await?,
        };
        if mode == LockMode::Locked && locked.is_none() {
            return Err(PackageError::NotLocked {
                uses: uses.into(),
                lock: lock_path.to_path_buf(),
            });
        }
        if warning.is_none() && lock.is_some() && locked.is_none() && mode == LockMode::Use {
            warning = Some(PackageError::NotLocked {
                uses: uses.into(),
                lock: lock_path.to_path_buf(),
            });
        }
        // The signature first: an artifact no trusted key vouches for is not even fetched.
        let signature = match trust.and_then(|t| Some((t, t.rule_for(&r.registry, &r.image.repository)?))) {
            Some((trust, rule)) => {
                let locked = lock
                    .filter(|l| mode != LockMode::Update && l.steps.get(uses) == Some(&digest))
                    .and_then(|l| l.signatures.get(uses));
                // Found only online: `--locked` and `--offline` check what the lock recorded.
                if locked.is_none() && (mode == LockMode::Locked || self.offline) {
                    return Err(PackageError::SignatureNotLocked {
                        uses: uses.into(),
                        lock: lock_path.to_path_buf(),
                        policy: trust.path.clone(),
                    });
                }
                Some(self.signature(&r, uses, &digest, rule, locked, &trust.path).await?)
            }
            None => None,
        };
        let bytes = self.component(&r, uses, &digest).await?;
        Ok(Resolved {
            origin: r.pinned(&digest),
            bytes,
            digest,
            warning,
            signature,
        })
    }

    /// The signature of artifact `digest` by a key of `rule`: the locked one (from the
    /// cache, else fetched by its digest), or else the newest that verifies among those the
    /// registry lists.
    async fn signature(
        &self,
        r: &StepRef,
        uses: &str,
        digest: &str,
        rule: &trust::Rule,
        locked: Option<&LockedSignature>,
        policy: &Path,
    ) -> Result<LockedSignature, PackageError> {
        let registry = if self.offline {
            None
        } else {
            Some(self.registry(r, uses)?)
        };
        let fetched = |source| PackageError::SignatureFetch {
            uses: uses.into(),
            source: Box::new(source),
        };
        let candidates = match locked {
            Some(locked) => vec![locked.bundle.clone()],
            None => {
                let Some(registry) = &registry else {
                    return Err(fetched(ReferrerError::Offline { digest: digest.into() }));
                };
                let listed = referrers::list(registry, &r.image.repository, digest, signed::MEDIA_TYPE)
                    .await
                    .map_err(|e| fetched(e.into()))?;
                listed.into_iter().rev().map(|l| l.digest).collect()
            }
        };
        let mut refusal = None;
        for bundle in candidates {
            let bytes = referrers::fetch(
                registry.as_deref(),
                &self.store,
                &r.image.repository,
                &bundle,
                digest,
                signed::MEDIA_TYPE,
                signed::BUNDLE_LIMIT,
            )
            .await;
            let checked = bytes
                .map_err(&fetched)
                .and_then(|bytes| check_bundle(uses, digest, &bytes, rule));
            match checked {
                // The lock names who signed; a signature that now verifies by another key
                // of the policy is a change to look at, not the same signature.
                Ok(key) if locked.is_some_and(|l| l.key != key) => {
                    return Err(PackageError::SignerChanged {
                        uses: uses.into(),
                        locked: locked.map(|l| l.key.to_string()).unwrap_or_default(),
                        now: key.to_string(),
                    });
                }
                Ok(key) => return Ok(LockedSignature { key, bundle }),
                // The locked signature is the only one: what is wrong with it is the answer.
                Err(e) if locked.is_some() => return Err(e),
                Err(e) => {
                    refusal.get_or_insert(e);
                }
            }
        }
        Err(refusal.unwrap_or_else(|| PackageError::Unsigned {
            uses: uses.into(),
            digest: digest.into(),
            keys: rule.keys.iter().map(|k| k.fingerprint().to_string()).collect(),
            policy: policy.to_path_buf(),
        }))
    }

    /// Sign artifact `digest` of `r` with `key`: a signature bundle attached to it.
    pub async fn sign(
        &self,
        r: &StepRef,
        uses: &str,
        digest: &str,
        key: &wharf_sign::KeyPair,
    ) -> Result<referrers::Referrer, PackageError> {
        let registry = self.registry(r, uses)?;
        let failed = |source| PackageError::Registry {
            uses: uses.into(),
            source: Box::new(source),
        };
        let (manifest, media_type, _) = registry
            .get_manifest(&r.image.repository, digest)
            .await
            .map_err(failed)?;
        let subject = crate::oci::Descriptor {
            media_type,
            digest: digest.into(),
            size: manifest.len() as u64,
            annotations: None,
            platform: None,
        };
        let name = format!("{SCHEME}{}/{}", r.registry, r.image.repository);
        let statement = wharf_sign::Statement::new(
            vec![wharf_sign::Subject::new(&name, digest)],
            SIGNATURE_PREDICATE,
            serde_json::json!({}),
        );
        let bundle = signed::sign(&statement, key);
        let annotations = std::collections::BTreeMap::from([
            (
                "dev.sigstore.bundle.predicateType".to_string(),
                SIGNATURE_PREDICATE.to_string(),
            ),
            ("dev.wharf.signer".to_string(), key.public().fingerprint().to_string()),
        ]);
        referrers::attach(
            &registry,
            &self.store,
            &r.image.repository,
            &subject,
            signed::MEDIA_TYPE,
            &bundle,
            annotations,
        )
        .await
        .map_err(failed)
    }

    /// The signature bundles the registry lists for artifact `digest` of `r`, each read
    /// (not verified): for `wharf inspect`.
    pub async fn signatures(
        &self,
        r: &StepRef,
        uses: &str,
        digest: &str,
    ) -> Result<Vec<(String, Result<Bundle, String>)>, PackageError> {
        let registry = self.registry(r, uses)?;
        let listed = referrers::list(&registry, &r.image.repository, digest, signed::MEDIA_TYPE)
            .await
            .map_err(|source| PackageError::Registry {
                uses: uses.into(),
                source: Box::new(source),
            })?;
        let mut found = Vec::new();
        for referrer in listed {
            let read = referrers::fetch(
                Some(&registry),
                &self.store,
                &r.image.repository,
                &referrer.digest,
                digest,
                signed::MEDIA_TYPE,
                signed::BUNDLE_LIMIT,
            )
            .await
            .map_err(|e| e.to_string())
            .and_then(|bytes| Bundle::parse(&bytes).map_err(|e| e.to_string()));
            found.push((referrer.digest, read));
        }
        Ok(found)
    }
}

/// Who signed artifact `digest`, if the bundle in `bytes` is a signature of it by a key of
/// `rule`.
fn check_bundle(
    uses: &str,
    digest: &str,
    bytes: &[u8],
    rule: &trust::Rule,
) -> Result<wharf_sign::Fingerprint, PackageError> {
    signed::verify_about(bytes, &rule.keys, SIGNATURE_PREDICATE, digest)
        .map(|verified| verified.signer)
        .map_err(|why| PackageError::SignatureRefused {
            uses: uses.into(),
            digest: digest.into(),
            why,
        })
}

/// Copy the signature `digest` (a referrer and its bundle) between step caches.
pub fn copy_signature(from: &Store, to: &Store, digest: &str) -> Result<(), FetchError> {
    referrers::copy(from, to, digest, signed::BUNDLE_LIMIT).map_err(|e| FetchError::Cache(std::io::Error::other(e)))
}

/// Check a local component (its `sha256:` digest) against the lock.
pub fn check_local(
    uses: &str,
    digest: &str,
    lock: Option<&Lock>,
    lock_path: &Path,
    mode: LockMode,
) -> Result<Option<PackageError>, PackageError> {
    let Some(lock) = lock.filter(|_| mode != LockMode::Update) else {
        return Ok(None);
    };
    let now = digest.to_string();
    let problem = match lock.steps.get(uses) {
        Some(locked) if *locked == now => return Ok(None),
        Some(locked) => PackageError::Changed {
            uses: uses.into(),
            now,
            locked: locked.clone(),
            lock: lock_path.to_path_buf(),
        },
        None => PackageError::NotLocked {
            uses: uses.into(),
            lock: lock_path.to_path_buf(),
        },
    };
    strayed(mode, problem)
}

/// Check the lock's built-in version against this wharf's.
pub fn check_builtins(
    lock: Option<&Lock>,
    lock_path: &Path,
    mode: LockMode,
) -> Result<Option<PackageError>, PackageError> {
    let Some(lock) = lock.filter(|_| mode != LockMode::Update) else {
        return Ok(None);
    };
    let now = lock::builtins_version();
    if lock.builtins == now {
        return Ok(None);
    }
    let problem = PackageError::BuiltinsChanged {
        locked: lock.builtins.clone(),
        now,
        lock: lock_path.to_path_buf(),
    };
    strayed(mode, problem)
}

/// What strays from the lock: a warning, or under `--locked` the end of the run.
fn strayed(mode: LockMode, problem: PackageError) -> Result<Option<PackageError>, PackageError> {
    if mode == LockMode::Locked {
        Err(problem)
    } else {
        Ok(Some(problem))
    }
}

pub fn digest_of(bytes: &[u8]) -> String {
    format!("sha256:{}", hex::encode(Sha256::digest(bytes)))
}

/// The name under which the credentials for `host` are looked up: upper case, every other
/// character `_` (`ghcr.io` -> `GHCR_IO`): user `WHARF_REGISTRY_USER_GHCR_IO`, password the
/// secret `REGISTRY_GHCR_IO` (`WHARF_SECRET_REGISTRY_GHCR_IO`).
pub fn credentials_key(host: &str) -> String {
    host.chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() {
                c.to_ascii_uppercase()
            } else {
                '_'
            }
        })
        .collect()
}

/// Credentials for a registry host.
pub type CredentialsFor = Box<dyn Fn(&str) -> Credentials + Send + Sync>;

/// The login `docker login HOST` stored for `host` in Docker's `config.json`
/// (`$DOCKER_CONFIG/config.json`, else `~/.docker/config.json`), read only: an `auths`
/// entry's `auth` (base64 of `USER:PASSWORD`). Credential helpers are not asked.
pub fn docker_login(host: &str) -> Option<Credentials> {
    let path = std::env::var_os("DOCKER_CONFIG")
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".docker")))?
        .join("config.json");
    let text = wharf_fs::bounded::read_text(&path, 1 << 20).ok()?;
    let config: serde_json::Value = serde_json::from_str(&text).ok()?;
    let auths = config.get("auths")?.as_object()?;
    let entry = [host.to_string(), format!("https://{host}"), format!("http://{host}")]
        .iter()
        .find_map(|key| auths.get(key))?;
    let encoded = entry.get("auth")?.as_str()?;
    let decoded = base64::Engine::decode(&base64::engine::general_purpose::STANDARD, encoded).ok()?;
    let (user, password) = String::from_utf8(decoded)
        .ok()?
        .split_once(':')
        .map(|(u, p)| (u.to_string(), p.to_string()))?;
    Some(Credentials {
        username: Some(user),
        password: Some(password),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::BTreeMap;

    #[test]
    fn references_name_a_registry_and_a_version_or_digest() {
        let r = StepRef::parse("127.0.0.1:5000/steps/hello:1.0.0").unwrap();
        assert_eq!(r.registry, "127.0.0.1:5000");
        assert_eq!(r.image.repository, "steps/hello");
        let digest = format!("sha256:{}", "a".repeat(64));
        assert_eq!(r.pinned(&digest), format!("oci://127.0.0.1:5000/steps/hello@{digest}"));
        for (bad, why) in [
            ("steps/hello:1.0.0", "names no registry"),
            ("ghcr.io/steps/hello", "neither a version nor a digest"),
            ("ghcr.io/Steps/hello:1", "repositories are"),
            ("ghcr.io/steps/hello@sha256:abc", "digest must be"),
        ] {
            let e = StepRef::parse(bad).unwrap_err().to_string();
            assert!(e.contains(why) && e.contains(&format!("oci://{bad}")), "{bad}: {e}");
        }
    }

    #[test]
    fn local_components_and_builtins_against_the_lock() {
        let path = Path::new("wharf.lock");
        let a = format!("sha256:{}", "a".repeat(64));
        let b = format!("sha256:{}", "b".repeat(64));
        let lock = Lock::new(BTreeMap::from([("./s.wasm".to_string(), a.clone())]));
        let check = |uses, digest: &str, mode| check_local(uses, digest, Some(&lock), path, mode);
        assert!(matches!(check("./s.wasm", &a, LockMode::Locked), Ok(None)));
        assert!(matches!(
            check("./s.wasm", &b, LockMode::Use),
            Ok(Some(PackageError::Changed { .. }))
        ));
        let e = check("./s.wasm", &b, LockMode::Locked).unwrap_err().to_string();
        assert!(e.contains(&a) && e.contains(&b), "{e}");
        assert!(matches!(
            check("./t.wasm", &a, LockMode::Locked),
            Err(PackageError::NotLocked { .. })
        ));
        assert!(matches!(check("./t.wasm", &b, LockMode::Update), Ok(None)));
        assert!(matches!(
            check_local("./t.wasm", &a, None, path, LockMode::Locked),
            Ok(None)
        ));

        let mut old = lock.clone();
        old.builtins = "wharf 0.0.1".into();
        assert!(matches!(check_builtins(Some(&lock), path, LockMode::Locked), Ok(None)));
        assert!(matches!(
            check_builtins(Some(&old), path, LockMode::Locked),
            Err(PackageError::BuiltinsChanged { .. })
        ));
        assert!(matches!(check_builtins(Some(&old), path, LockMode::Use), Ok(Some(_))));
    }
}
