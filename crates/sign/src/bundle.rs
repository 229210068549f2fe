//! A signed statement as a sigstore bundle v0.3: a DSSE envelope (the statement, its
//! payload type and signatures over the pre-authentication encoding of both) with the
//! signing key named by fingerprint as the public-key hint. It is what cosign 3 writes for
//! a key it was given, and what anyone holding the public key checks offline: no
//! transparency log, no certificate.
//!
//! Bundles come from registries and caches, so reading one is bounded (size, signatures)
//! and a bundle that is not one says what it is instead.

use crate::key::{Fingerprint, KeyPair, PublicKey};
use crate::statement::Statement;
use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as BASE64;

pub const MEDIA_TYPE: &str = "application/vnd.dev.sigstore.bundle.v0.3+json";
/// The payload type of an in-toto statement in a DSSE envelope.
pub const IN_TOTO: &str = "application/vnd.in-toto+json";
/// A bundle is a few kilobytes (a provenance with many steps, tens); more is not one.
pub const BUNDLE_LIMIT: u64 = 1 << 20;
/// Signatures looked at in one envelope.
const SIGNATURE_LIMIT: usize = 16;

#[derive(Debug, thiserror::Error)]
pub enum BundleError {
    #[error("is {size} bytes, over the {BUNDLE_LIMIT} bytes a signature bundle may have")]
    TooBig { size: u64 },
    #[error("is not JSON: {0}")]
    NotJson(String),
    #[error("is not a sigstore bundle: {0}")]
    NotABundle(String),
    #[error("holds no DSSE envelope (wharf checks signed statements, not bare message signatures)")]
    NoEnvelope,
    #[error("its payload is `{0}`, not an in-toto statement (`{IN_TOTO}`)")]
    PayloadType(String),
    #[error("has {0} signatures; wharf reads at most {SIGNATURE_LIMIT}")]
    TooManySignatures(usize),
    #[error("is by {}, not by a trusted key ({})", list(found), list(trusted))]
    Untrusted {
        found: Vec<String>,
        trusted: Vec<Fingerprint>,
    },
    #[error("names trusted key {key}, but the signature does not verify: the bundle or its statement was changed")]
    BadSignature { key: Fingerprint },
    #[error("its statement is not an in-toto v1 statement: {0}")]
    Statement(String),
    #[error("by {signer} is a `{found}` statement, not `{wanted}`")]
    Predicate {
        signer: Fingerprint,
        found: String,
        wanted: &'static str,
    },
    #[error("by {signer} is about another artifact, not {digest}")]
    OtherSubject { signer: Fingerprint, digest: String },
}

fn list<T: std::fmt::Display>(items: &[T]) -> String {
    if items.is_empty() {
        return "none".into();
    }
    items.iter().map(|i| i.to_string()).collect::<Vec<_>>().join(", ")
}

#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "camelCase")]
struct BundleJson {
    media_type: String,
    verification_material: VerificationMaterial,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    dsse_envelope: Option<Envelope>,
}

#[derive(Debug, Clone, Default, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "camelCase")]
struct VerificationMaterial {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    public_key: Option<KeyHint>,
    #[serde(default)]
    tlog_entries: Vec<serde_json::Value>,
    #[serde(default)]
    timestamp_verification_data: serde_json::Value,
}

#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
struct KeyHint {
    hint: String,
}

/// A DSSE envelope as JSON: the payload and signatures in base64.
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Envelope {
    pub payload: String,
    pub payload_type: String,
    pub signatures: Vec<EnvelopeSignature>,
}

#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
pub struct EnvelopeSignature {
    #[serde(default)]
    pub keyid: String,
    pub sig: String,
}

/// Text from a bundle, as a message may show it: at most 80 characters, control characters
/// escaped, so it cannot forge lines in a CI log.
fn shown(text: &str) -> String {
    text.chars().take(80).flat_map(char::escape_debug).collect()
}

/// DSSE's pre-authentication encoding: what a signature covers.
pub fn pae(payload_type: &str, payload: &[u8]) -> Vec<u8> {
    let mut out = format!("DSSEv1 {} {payload_type} {} ", payload_type.len(), payload.len()).into_bytes();
    out.extend_from_slice(payload);
    out
}

/// A statement signed by one key, as a bundle's bytes.
pub fn sign(statement: &Statement, key: &KeyPair) -> Vec<u8> {
    let payload = serde_json::to_vec(statement).expect("a statement serialises");
    let signature = key.sign(&pae(IN_TOTO, &payload));
    let fingerprint = key.public().fingerprint().to_string();
    let bundle = BundleJson {
        media_type: MEDIA_TYPE.into(),
        verification_material: VerificationMaterial {
            public_key: Some(KeyHint {
                hint: fingerprint.clone(),
            }),
            tlog_entries: Vec::new(),
            timestamp_verification_data: serde_json::json!({}),
        },
        dsse_envelope: Some(Envelope {
            payload: BASE64.encode(&payload),
            payload_type: IN_TOTO.into(),
            signatures: vec![EnvelopeSignature {
                keyid: fingerprint,
                sig: BASE64.encode(signature),
            }],
        }),
    };
    serde_json::to_vec_pretty(&bundle).expect("a bundle serialises")
}

/// The statement in bundle `bytes`, if a key of `trusted` signed it, it says
/// `predicate_type`, and its subject is the artifact `digest`.
pub fn verify_about(
    bytes: &[u8],
    trusted: &[PublicKey],
    predicate_type: &'static str,
    digest: &str,
) -> Result<Verified, BundleError> {
    Bundle::parse(bytes)?.verify_about(trusted, predicate_type, digest)
}

/// A bundle read from untrusted bytes, not yet verified.
#[derive(Debug, Clone)]
pub struct Bundle {
    envelope: Envelope,
    hint: Option<String>,
}

/// What a verified bundle says, and who said it.
#[derive(Debug, Clone)]
pub struct Verified {
    pub signer: Fingerprint,
    pub statement: Statement,
}

impl Bundle {
    pub fn parse(bytes: &[u8]) -> Result<Bundle, BundleError> {
        if bytes.len() as u64 > BUNDLE_LIMIT {
            return Err(BundleError::TooBig {
                size: bytes.len() as u64,
            });
        }
        let value: serde_json::Value =
            serde_json::from_slice(bytes).map_err(|e| BundleError::NotJson(e.to_string()))?;
        let bundle: BundleJson = serde_json::from_value(value).map_err(|e| BundleError::NotABundle(e.to_string()))?;
        if !bundle.media_type.starts_with("application/vnd.dev.sigstore.bundle") {
            return Err(BundleError::NotABundle(format!(
                "its media type is `{}`",
                shown(&bundle.media_type)
            )));
        }
        let envelope = bundle.dsse_envelope.ok_or(BundleError::NoEnvelope)?;
        if envelope.payload_type != IN_TOTO {
            return Err(BundleError::PayloadType(shown(&envelope.payload_type)));
        }
        if envelope.signatures.len() > SIGNATURE_LIMIT {
            return Err(BundleError::TooManySignatures(envelope.signatures.len()));
        }
        Ok(Bundle {
            envelope,
            hint: bundle.verification_material.public_key.map(|k| k.hint),
        })
    }

    /// The keys the bundle says signed it (unverified: for display).
    pub fn claimed_signers(&self) -> Vec<String> {
        let mut names: Vec<String> = self
            .envelope
            .signatures
            .iter()
            .map(|s| s.keyid.clone())
            .chain(self.hint.clone())
            .filter(|k| !k.is_empty())
            .map(|k| shown(&k))
            .collect();
        names.sort();
        names.dedup();
        names
    }

    /// The statement, if a key of `trusted` signed it, it says `predicate_type`, and its
    /// subject is the artifact `digest`.
    pub fn verify_about(
        &self,
        trusted: &[PublicKey],
        predicate_type: &'static str,
        digest: &str,
    ) -> Result<Verified, BundleError> {
        let verified = self.verify(trusted)?;
        if verified.statement.predicate_type != predicate_type {
            return Err(BundleError::Predicate {
                signer: verified.signer,
                found: shown(&verified.statement.predicate_type),
                wanted: predicate_type,
            });
        }
        if !verified.statement.covers(digest) {
            return Err(BundleError::OtherSubject {
                signer: verified.signer,
                digest: digest.into(),
            });
        }
        Ok(verified)
    }

    /// The statement, if a key of `trusted` signed it. A signature naming a trusted key
    /// that does not verify is damage, never passed over for another.
    pub fn verify(&self, trusted: &[PublicKey]) -> Result<Verified, BundleError> {
        let payload = BASE64
            .decode(self.envelope.payload.as_bytes())
            .map_err(|e| BundleError::NotABundle(format!("its payload is not base64: {e}")))?;
        let message = pae(&self.envelope.payload_type, &payload);
        let mut signer = None;
        for signature in &self.envelope.signatures {
            let Some(key) = trusted.iter().find(|k| k.fingerprint().as_str() == signature.keyid) else {
                continue;
            };
            let bytes = BASE64.decode(signature.sig.as_bytes()).unwrap_or_default();
            if !key.verifies(&message, &bytes) {
                return Err(BundleError::BadSignature {
                    key: key.fingerprint().clone(),
                });
            }
            signer = Some(key.fingerprint().clone());
            break;
        }
        // A signature without a key id (other tools leave it empty) is tried on each key.
        if signer.is_none() {
            signer = self
                .envelope
                .signatures
                .iter()
                .filter(|s| s.keyid.is_empty())
                .find_map(|s| {
                    let bytes = BASE64.decode(s.sig.as_bytes()).ok()?;
                    trusted.iter().find(|k| k.verifies(&message, &bytes))
                })
                .map(|k| k.fingerprint().clone());
        }
        let Some(signer) = signer else {
            return Err(BundleError::Untrusted {
                found: self.claimed_signers(),
                trusted: trusted.iter().map(|k| k.fingerprint().clone()).collect(),
            });
        };
        let statement = Statement::parse(&payload).map_err(BundleError::Statement)?;
        Ok(Verified { signer, statement })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::statement::{SIGNATURE_PREDICATE, Subject};

    fn statement(digest: &str) -> Statement {
        Statement::new(
            vec![Subject::new("oci://127.0.0.1:5000/acme/hello", digest)],
            SIGNATURE_PREDICATE,
            serde_json::json!({}),
        )
    }

    #[test]
    fn a_bundle_verifies_with_its_key_alone() {
        let key = KeyPair::generate().unwrap();
        let digest = format!("sha256:{}", "a".repeat(64));
        let bytes = sign(&statement(&digest), &key);
        let value: serde_json::Value = serde_json::from_slice(&bytes).unwrap();
        assert_eq!(value["mediaType"], MEDIA_TYPE);
        assert_eq!(
            value["verificationMaterial"]["publicKey"]["hint"],
            key.public().fingerprint().as_str()
        );
        let trusted = [key.public().clone()];
        let verified = verify_about(&bytes, &trusted, SIGNATURE_PREDICATE, &digest).unwrap();
        assert_eq!(&verified.signer, key.public().fingerprint());
        let other = format!("sha256:{}", "b".repeat(64));
        let e = verify_about(&bytes, &trusted, SIGNATURE_PREDICATE, &other).unwrap_err();
        assert!(matches!(e, BundleError::OtherSubject { .. }), "{e}");
        let e = verify_about(&bytes, &trusted, crate::statement::SLSA_PROVENANCE, &digest).unwrap_err();
        assert!(matches!(e, BundleError::Predicate { .. }), "{e}");
    }

    #[test]
    fn another_key_a_changed_statement_and_junk_are_refused() {
        let key = KeyPair::generate().unwrap();
        let other = KeyPair::generate().unwrap();
        let digest = format!("sha256:{}", "a".repeat(64));
        let bytes = sign(&statement(&digest), &key);
        let e = Bundle::parse(&bytes)
            .unwrap()
            .verify(&[other.public().clone()])
            .unwrap_err();
        let text = e.to_string();
        assert!(
            text.contains(key.public().fingerprint().as_str()) && text.contains(other.public().fingerprint().as_str()),
            "{text}"
        );

        // The statement swapped for one naming another digest, the signature kept.
        let mut value: serde_json::Value = serde_json::from_slice(&bytes).unwrap();
        let forged = serde_json::to_vec(&statement(&format!("sha256:{}", "b".repeat(64)))).unwrap();
        value["dsseEnvelope"]["payload"] = BASE64.encode(forged).into();
        let bytes = serde_json::to_vec(&value).unwrap();
        let e = Bundle::parse(&bytes)
            .unwrap()
            .verify(&[key.public().clone()])
            .unwrap_err();
        assert!(matches!(e, BundleError::BadSignature { .. }), "{e}");

        for (junk, what) in [
            (&b"\x00\x01 not json"[..], "is not JSON"),
            (&b"{\"mediaType\": 3}"[..], "is not a sigstore bundle"),
            (&b"[1, 2]"[..], "is not a sigstore bundle"),
        ] {
            let e = Bundle::parse(junk).unwrap_err().to_string();
            assert!(e.contains(what), "{e}");
        }
        let e = Bundle::parse(&vec![b' '; BUNDLE_LIMIT as usize + 1]).unwrap_err();
        assert!(matches!(e, BundleError::TooBig { .. }), "{e}");
    }
}
