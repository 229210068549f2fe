//! Signing keys: Ed25519, kept as PEM (PKCS#8 for the private half, SubjectPublicKeyInfo for
//! the public half) so that openssl, pyca/cryptography and securesystemslib read them too.
//! A key is named by its fingerprint everywhere: `ed25519:` and the first 24 hex digits of
//! the SHA-256 of its public key's DER form. A name only names; trust always comes from the
//! key itself, read from a file the workspace commits.

use ed25519_dalek::pkcs8::spki::der::pem::LineEnding;
use ed25519_dalek::pkcs8::{DecodePrivateKey, DecodePublicKey, EncodePrivateKey, EncodePublicKey};
use ed25519_dalek::{Signer as _, SigningKey, VerifyingKey};
use sha2::{Digest as _, Sha256};
use std::fmt;
use std::path::{Path, PathBuf};

/// A key file is a few hundred bytes; a larger one is not one.
pub const KEY_FILE_LIMIT: u64 = 64 << 10;

#[derive(Debug, thiserror::Error)]
pub enum KeyError {
    #[error("cannot read key {}: {source}", path.display())]
    Read {
        path: PathBuf,
        #[source]
        source: wharf_fs::bounded::ReadError,
    },
    #[error("{what} is not an Ed25519 {half} key in PEM form ({why}); `wharf key generate` writes one")]
    NotAKey {
        what: String,
        half: &'static str,
        why: String,
    },
    #[error("{what} is a private key; give the public half (`.pub`) here, and keep the private one secret")]
    PrivateGiven { what: String },
    #[error("cannot write {}: {source}", path.display())]
    Write {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{} exists; remove it or choose another name (a key is never overwritten)", path.display())]
    Exists { path: PathBuf },
    #[error("no randomness from the operating system: {0}")]
    Random(String),
}

/// The name of a public key.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, serde::Serialize, serde::Deserialize)]
#[serde(transparent)]
pub struct Fingerprint(String);

impl Fingerprint {
    pub fn of(key: &VerifyingKey) -> Fingerprint {
        let der = key.to_public_key_der().expect("an Ed25519 key always encodes");
        let digest = hex::encode(Sha256::digest(der.as_bytes()));
        Fingerprint(format!("ed25519:{}", &digest[..24]))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for Fingerprint {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// A public key someone trusts, with its name.
#[derive(Clone, PartialEq, Eq)]
pub struct PublicKey {
    key: VerifyingKey,
    fingerprint: Fingerprint,
}

impl fmt::Debug for PublicKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "PublicKey({})", self.fingerprint)
    }
}

impl PublicKey {
    /// The key in `pem`; `what` names where it came from in errors.
    pub fn from_pem(pem: &str, what: &str) -> Result<PublicKey, KeyError> {
        if pem.contains("PRIVATE KEY-----") {
            return Err(KeyError::PrivateGiven { what: what.into() });
        }
        let key = VerifyingKey::from_public_key_pem(pem.trim()).map_err(|e| KeyError::NotAKey {
            what: what.into(),
            half: "public",
            why: e.to_string(),
        })?;
        Ok(PublicKey::new(key))
    }

    /// The public key in the file `path`.
    pub fn read(path: &Path) -> Result<PublicKey, KeyError> {
        PublicKey::read_as(path, &path.display().to_string())
    }

    /// The public key in the file `path`, named `what` in errors (the path as its user
    /// wrote it, where `path` is where it was found).
    pub fn read_as(path: &Path, what: &str) -> Result<PublicKey, KeyError> {
        PublicKey::from_pem(&read(path)?, what)
    }

    fn new(key: VerifyingKey) -> PublicKey {
        PublicKey {
            fingerprint: Fingerprint::of(&key),
            key,
        }
    }

    pub fn fingerprint(&self) -> &Fingerprint {
        &self.fingerprint
    }

    pub fn to_pem(&self) -> String {
        self.key
            .to_public_key_pem(LineEnding::LF)
            .expect("an Ed25519 key always encodes")
    }

    /// Whether `signature` is this key's over `message` (strict: no malleable encodings).
    pub fn verifies(&self, message: &[u8], signature: &[u8]) -> bool {
        ed25519_dalek::Signature::from_slice(signature).is_ok_and(|s| self.key.verify_strict(message, &s).is_ok())
    }
}

/// A private key, which signs.
pub struct KeyPair {
    key: SigningKey,
    public: PublicKey,
}

impl fmt::Debug for KeyPair {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "KeyPair({})", self.public.fingerprint)
    }
}

impl KeyPair {
    /// A new key from the operating system's randomness.
    pub fn generate() -> Result<KeyPair, KeyError> {
        let mut seed = [0u8; 32];
        getrandom::fill(&mut seed).map_err(|e| KeyError::Random(e.to_string()))?;
        Ok(KeyPair::new(SigningKey::from_bytes(&seed)))
    }

    fn new(key: SigningKey) -> KeyPair {
        KeyPair {
            public: PublicKey::new(key.verifying_key()),
            key,
        }
    }

    /// The private key in `pem`; `what` names where it came from (a file, a secret) in
    /// errors, which never quote the key.
    pub fn from_pem(pem: &str, what: &str) -> Result<KeyPair, KeyError> {
        let key = SigningKey::from_pkcs8_pem(pem.trim()).map_err(|e| KeyError::NotAKey {
            what: what.into(),
            half: "private",
            why: e.to_string(),
        })?;
        Ok(KeyPair::new(key))
    }

    pub fn read(path: &Path) -> Result<KeyPair, KeyError> {
        let pem = read(path)?;
        KeyPair::from_pem(&pem, &path.display().to_string())
    }

    pub fn public(&self) -> &PublicKey {
        &self.public
    }

    pub fn sign(&self, message: &[u8]) -> Vec<u8> {
        self.key.sign(message).to_bytes().to_vec()
    }

    /// Write the pair as `PATH.key` (owner-only) and `PATH.pub`, never over an existing file.
    pub fn write(&self, base: &Path) -> Result<(PathBuf, PathBuf), KeyError> {
        let private = base.with_extension("key");
        let public = base.with_extension("pub");
        for path in [&private, &public] {
            if path.exists() {
                return Err(KeyError::Exists { path: path.clone() });
            }
        }
        if let Some(dir) = private.parent().filter(|d| !d.as_os_str().is_empty()) {
            std::fs::create_dir_all(dir).map_err(|source| KeyError::Write {
                path: dir.to_path_buf(),
                source,
            })?;
        }
        let pem = self
            .key
            .to_pkcs8_pem(LineEnding::LF)
            .expect("an Ed25519 key always encodes");
        create(&private, pem.as_bytes(), 0o600)?;
        create(&public, self.public.to_pem().as_bytes(), 0o644)?;
        Ok((private, public))
    }
}

fn read(path: &Path) -> Result<String, KeyError> {
    wharf_fs::bounded::read_text(path, KEY_FILE_LIMIT).map_err(|source| KeyError::Read {
        path: path.to_path_buf(),
        source,
    })
}

fn create(path: &Path, bytes: &[u8], mode: u32) -> Result<(), KeyError> {
    use std::io::Write as _;
    use std::os::unix::fs::OpenOptionsExt as _;
    let failed = |source| KeyError::Write {
        path: path.to_path_buf(),
        source,
    };
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(mode)
        .open(path)
        .map_err(|e| match e.kind() {
            std::io::ErrorKind::AlreadyExists => KeyError::Exists {
                path: path.to_path_buf(),
            },
            _ => failed(e),
        })?;
    file.write_all(bytes).map_err(failed)?;
    file.sync_all().map_err(failed)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_pair_written_reads_back_with_the_same_name_and_signs() {
        let dir = tempfile::tempdir().unwrap();
        let pair = KeyPair::generate().unwrap();
        let (private, public) = pair.write(&dir.path().join("release")).unwrap();
        use std::os::unix::fs::PermissionsExt as _;
        assert_eq!(std::fs::metadata(&private).unwrap().permissions().mode() & 0o777, 0o600);
        let again = KeyPair::read(&private).unwrap();
        let public = PublicKey::read(&public).unwrap();
        assert_eq!(again.public().fingerprint(), pair.public().fingerprint());
        assert_eq!(public.fingerprint(), pair.public().fingerprint());
        assert!(public.fingerprint().as_str().starts_with("ed25519:"));
        assert_eq!(public.fingerprint().as_str().len(), "ed25519:".len() + 24);
        let signature = pair.sign(b"message");
        assert!(public.verifies(b"message", &signature));
        assert!(!public.verifies(b"massage", &signature));
        assert!(!public.verifies(b"message", &signature[1..]));
        let e = pair.write(&dir.path().join("release")).unwrap_err();
        assert!(matches!(e, KeyError::Exists { .. }), "{e}");
    }

    #[test]
    fn a_file_that_is_not_a_key_is_named_and_never_trusted() {
        let dir = tempfile::tempdir().unwrap();
        let pair = KeyPair::generate().unwrap();
        let (private, _) = pair.write(&dir.path().join("k")).unwrap();
        let e = PublicKey::read(&private).unwrap_err().to_string();
        assert!(e.contains("is a private key"), "{e}");
        let junk = dir.path().join("junk.pub");
        std::fs::write(&junk, "ssh-ed25519 AAAA hello").unwrap();
        let e = PublicKey::read(&junk).unwrap_err().to_string();
        assert!(
            e.contains("not an Ed25519 public key") && e.contains("wharf key generate"),
            "{e}"
        );
        let e = KeyPair::read(&junk).unwrap_err().to_string();
        assert!(e.contains("not an Ed25519 private key"), "{e}");
        let big = dir.path().join("big.pub");
        std::fs::write(&big, vec![b'A'; KEY_FILE_LIMIT as usize + 1]).unwrap();
        assert!(matches!(PublicKey::read(&big), Err(KeyError::Read { .. })));
        // An RSA or P-256 public key in PEM is still not an Ed25519 one.
        let p256 = "-----BEGIN PUBLIC KEY-----\nMFkwEwYHKoZIzj0CAQYIKoZIzj0DAQcDQgAEEVs/o5+uQbTjL3chynL4wXgUg2R9\nq9UU8I5mEovUf86QZ7kOBIjJwqnzD1omageEHWwHdBO6B+dFabmdT9POxg==\n-----END PUBLIC KEY-----\n";
        let e = PublicKey::from_pem(p256, "p256.pub").unwrap_err().to_string();
        assert!(e.contains("not an Ed25519 public key"), "{e}");
    }
}
