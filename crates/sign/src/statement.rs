//! in-toto v1 statements: what is said (a predicate of some type) about which artifacts
//! (subjects named by digest). wharf says two things: that a key vouches for a step
//! (cosign's signature predicate) and how an image was built (SLSA v1 provenance).

use std::collections::BTreeMap;

pub const STATEMENT_TYPE: &str = "https://in-toto.io/Statement/v1";
/// A key vouches for the subject, and says nothing more (what `cosign sign` attests).
pub const SIGNATURE_PREDICATE: &str = "https://sigstore.dev/cosign/sign/v1";
/// How the subject was built.
pub const SLSA_PROVENANCE: &str = "https://slsa.dev/provenance/v1";

#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Statement {
    #[serde(rename = "_type")]
    pub kind: String,
    pub subject: Vec<Subject>,
    pub predicate_type: String,
    #[serde(default)]
    pub predicate: serde_json::Value,
}

#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct Subject {
    #[serde(default)]
    pub name: String,
    pub digest: BTreeMap<String, String>,
}

impl Subject {
    /// A subject named `name` with the OCI digest `digest` (`sha256:HEX`).
    pub fn new(name: &str, digest: &str) -> Subject {
        let (algorithm, hex) = digest.split_once(':').unwrap_or(("sha256", digest));
        Subject {
            name: name.to_string(),
            digest: BTreeMap::from([(algorithm.to_string(), hex.to_string())]),
        }
    }
}

impl Statement {
    pub fn new(subject: Vec<Subject>, predicate_type: &str, predicate: serde_json::Value) -> Statement {
        Statement {
            kind: STATEMENT_TYPE.into(),
            subject,
            predicate_type: predicate_type.into(),
            predicate,
        }
    }

    /// A statement from a verified payload.
    pub fn parse(payload: &[u8]) -> Result<Statement, String> {
        let statement: Statement = serde_json::from_slice(payload).map_err(|e| e.to_string())?;
        if statement.kind != STATEMENT_TYPE {
            return Err(format!("its type is `{}`", statement.kind));
        }
        Ok(statement)
    }

    /// Whether a subject is the artifact of OCI digest `digest`.
    pub fn covers(&self, digest: &str) -> bool {
        let Some((algorithm, hex)) = digest.split_once(':') else {
            return false;
        };
        self.subject
            .iter()
            .any(|s| s.digest.get(algorithm).is_some_and(|h| h.eq_ignore_ascii_case(hex)))
    }
}
