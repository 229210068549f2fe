//! Provenance of the images wharf pushes: an in-toto v1 statement with a SLSA v1
//! provenance predicate, signed into a sigstore bundle and attached to the image's manifest
//! as a referrer. It names the builder (wharf and its version), the pipeline file's digest,
//! every step's component digest and the parameters the steps ran with, the source
//! revision, the run id, and the digest of the run's journal as it stood when the image was
//! pushed: the release is tied to a record anyone can replay offline.
//!
//! A deploy that requires provenance finds it at the image's registry, checks it with the
//! public key alone, and refuses an image without it before any instance changes.

use crate::oci::Descriptor;
use crate::oci::layout::Store;
use crate::oci::referrers::{self, Referrer, ReferrerError};
use crate::oci::registry::{Registry, RegistryError};
use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use wharf_sign::bundle::{self as signed, BundleError};
use wharf_sign::statement::{SLSA_PROVENANCE, Statement, Subject};
use wharf_sign::{Fingerprint, KeyPair, PublicKey};

pub const BUILD_TYPE: &str = "https://wharf.dev/provenance/pipeline-run/v1";
pub const BUILDER: &str = "https://wharf.dev/wharf";

/// The parameter of a step that pushes (`builtin:push`): the secret holding the private key
/// that signs the provenance of what it pushes.
pub const SIGN_PARAM: &str = "provenance-key";
/// The parameter of a step that deploys (`builtin:upgrade`): the public-key file (in the
/// workspace) whose provenance an image must carry to be deployed.
pub const REQUIRE_PARAM: &str = "require-provenance";

/// What the host does about provenance for one step, from those parameters: the host acts
/// on them, not the step, so a step cannot push unsigned or deploy unchecked by leaving
/// them out of its own calls.
#[derive(Clone, Default)]
pub struct StepRelease {
    pub recorder: Option<Arc<Recorder>>,
    pub sign_with: Option<Arc<KeyPair>>,
    pub require: Vec<PublicKey>,
}

/// The run's journal as it stands.
pub struct JournalSoFar {
    pub digest: String,
    pub bytes: u64,
    pub whole: bool,
}

/// What a run knows about how its images came to be, gathered as it goes.
pub struct Recorder {
    run_id: String,
    started: String,
    pipeline_path: String,
    pipeline_digest: String,
    /// Per step, in pipeline order: id, `uses:`, component digest.
    steps: Vec<(String, String, String)>,
    /// The parameters each step ran with, as it started.
    params: Mutex<BTreeMap<String, serde_json::Value>>,
    /// The run's journal so far: its digest, its length, and whether it is whole (it stops
    /// being written when the disk fills).
    journal: Box<dyn Fn() -> Option<JournalSoFar> + Send + Sync>,
    /// Secrets masked as in the journal: a parameter may carry one.
    mask: wharf_journal::writer::Mask,
}

impl Recorder {
    pub fn new(
        run_id: &str,
        pipeline_path: &str,
        pipeline_text: &str,
        steps: Vec<(String, String, String)>,
        journal: Box<dyn Fn() -> Option<JournalSoFar> + Send + Sync>,
        mask: wharf_journal::writer::Mask,
    ) -> Recorder {
        Recorder {
            run_id: run_id.into(),
            started: humantime::format_rfc3339_seconds(std::time::SystemTime::now()).to_string(),
            pipeline_path: pipeline_path.into(),
            pipeline_digest: crate::oci::digest_of(pipeline_text.as_bytes()),
            steps,
            params: Mutex::default(),
            journal,
            mask,
        }
    }

    pub fn step_started(&self, step: &str, params: serde_json::Value) {
        self.params.lock().unwrap().insert(step.into(), params);
    }

    /// The statement for image `name` of manifest `digest`, built from source `revision`.
    pub fn statement(&self, name: &str, digest: &str, revision: Option<&str>) -> Statement {
        let hex = |d: &str| serde_json::json!({ "sha256": d.strip_prefix("sha256:").unwrap_or(d) });
        let mut dependencies: Vec<serde_json::Value> = Vec::new();
        if let Some(revision) = revision {
            dependencies.push(serde_json::json!({ "name": "source", "digest": { "gitCommit": revision } }));
        }
        for (id, uses, digest) in &self.steps {
            dependencies.push(serde_json::json!({ "name": format!("step:{id}"), "uri": uses, "digest": hex(digest) }));
        }
        let mut byproducts = Vec::new();
        if let Some(journal) = (self.journal)() {
            // A journal that stopped being written records the run only up to there: the
            // provenance says so rather than vouching for a whole record.
            let recorded = if journal.whole { "whole" } else { "stopped early" };
            byproducts.push(serde_json::json!({
                "name": "journal.jsonl",
                "uri": format!("wharf-run:{}/journal.jsonl", self.run_id),
                "digest": hex(&journal.digest),
                "annotations": { "bytes": journal.bytes, "recorded": recorded },
            }));
        }
        let mut predicate = serde_json::json!({
            "buildDefinition": {
                "buildType": BUILD_TYPE,
                "externalParameters": {
                    "pipeline": { "path": self.pipeline_path, "digest": hex(&self.pipeline_digest) },
                    "steps": *self.params.lock().unwrap(),
                },
                "internalParameters": { "wharf": env!("CARGO_PKG_VERSION") },
                "resolvedDependencies": dependencies,
            },
            "runDetails": {
                "builder": { "id": BUILDER, "version": { "wharf": env!("CARGO_PKG_VERSION") } },
                "metadata": { "invocationId": self.run_id, "startedOn": self.started },
                "byproducts": byproducts,
            },
        });
        wharf_journal::writer::redact_value(&mut predicate, &self.mask);
        Statement::new(vec![Subject::new(name, digest)], SLSA_PROVENANCE, predicate)
    }
}

/// Sign `statement` with `key` and attach it to `subject` in `repository`.
pub async fn attach(
    registry: &Registry,
    store: &Store,
    repository: &str,
    subject: &Descriptor,
    statement: &Statement,
    key: &KeyPair,
) -> Result<Referrer, RegistryError> {
    let bundle = signed::sign(statement, key);
    let annotations = BTreeMap::from([
        (
            "dev.sigstore.bundle.predicateType".to_string(),
            SLSA_PROVENANCE.to_string(),
        ),
        ("dev.wharf.signer".to_string(), key.public().fingerprint().to_string()),
    ]);
    referrers::attach(
        registry,
        store,
        repository,
        subject,
        signed::MEDIA_TYPE,
        &bundle,
        annotations,
    )
    .await
}

#[derive(Debug, thiserror::Error)]
pub enum ProvenanceError {
    #[error("{image} has no provenance signed by {}", list(keys))]
    Missing { image: String, keys: Vec<Fingerprint> },
    #[error("{image}: its provenance {why}")]
    Refused {
        image: String,
        #[source]
        why: BundleError,
    },
    #[error("{image}: {source}")]
    Fetch {
        image: String,
        #[source]
        source: Box<ReferrerError>,
    },
}

fn list(keys: &[Fingerprint]) -> String {
    keys.iter().map(|k| k.to_string()).collect::<Vec<_>>().join(" or ")
}

impl ProvenanceError {
    pub fn help(&self) -> &'static str {
        match self {
            ProvenanceError::Missing { .. } => {
                "push the image with `provenance-key:` on builtin:push (a secret holding the private key), or deploy one that was"
            }
            ProvenanceError::Refused { .. } => "do not deploy it: no trusted key vouches for how this image was built",
            ProvenanceError::Fetch { .. } => "check that the image's registry is reachable",
        }
    }
}

/// The provenance of manifest `digest` in `repository` signed by one of `keys`: the newest
/// that verifies among the bundles the registry lists; if none does, the newest one's
/// failure is the answer.
pub async fn find(
    registry: &Registry,
    store: &Store,
    repository: &str,
    digest: &str,
    image: &str,
    keys: &[PublicKey],
) -> Result<wharf_sign::Verified, ProvenanceError> {
    let fetch = |source| ProvenanceError::Fetch {
        image: image.into(),
        source: Box::new(source),
    };
    let listed = referrers::list(registry, repository, digest, signed::MEDIA_TYPE)
        .await
        .map_err(|e| fetch(e.into()))?;
    let mut first_failure = None;
    for referrer in listed.iter().rev() {
        let checked = match referrers::fetch(
            Some(registry),
            store,
            repository,
            &referrer.digest,
            digest,
            signed::MEDIA_TYPE,
            signed::BUNDLE_LIMIT,
        )
        .await
        {
            Ok(bytes) => check(&bytes, digest, image, keys),
            Err(e) => Err(fetch(e)),
        };
        match checked {
            Ok(verified) => return Ok(verified),
            Err(e) => {
                first_failure.get_or_insert(e);
            }
        }
    }
    Err(first_failure.unwrap_or_else(|| ProvenanceError::Missing {
        image: image.into(),
        keys: keys.iter().map(|k| k.fingerprint().clone()).collect(),
    }))
}

fn check(bytes: &[u8], digest: &str, image: &str, keys: &[PublicKey]) -> Result<wharf_sign::Verified, ProvenanceError> {
    signed::verify_about(bytes, keys, SLSA_PROVENANCE, digest).map_err(|why| ProvenanceError::Refused {
        image: image.into(),
        why,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_provenance_names_what_the_run_used_and_never_a_secret() {
        let recorder = Recorder::new(
            "RUN",
            "pipeline.yml",
            "name: x\n",
            vec![(
                "build".into(),
                "builtin:build".into(),
                format!("sha256:{}", "b".repeat(64)),
            )],
            Box::new(|| {
                Some(JournalSoFar {
                    digest: format!("sha256:{}", "c".repeat(64)),
                    bytes: 42,
                    whole: false,
                })
            }),
            Box::new(|text: &str| text.replace("hunter2", "***")),
        );
        recorder.step_started("build", serde_json::json!({ "token": "hunter2", "tag": "1.0.0" }));
        let digest = format!("sha256:{}", "a".repeat(64));
        let statement = recorder.statement("127.0.0.1:5000/app", &digest, Some("0123abc"));
        assert!(statement.covers(&digest));
        let text = serde_json::to_string(&statement).unwrap();
        assert!(!text.contains("hunter2") && text.contains("***"), "{text}");
        let predicate = &statement.predicate;
        assert_eq!(predicate["runDetails"]["metadata"]["invocationId"], "RUN");
        assert_eq!(predicate["runDetails"]["byproducts"][0]["annotations"]["bytes"], 42);
        assert_eq!(
            predicate["runDetails"]["byproducts"][0]["annotations"]["recorded"],
            "stopped early"
        );
        assert_eq!(
            predicate["buildDefinition"]["resolvedDependencies"][0]["digest"]["gitCommit"],
            "0123abc"
        );
        assert_eq!(
            predicate["buildDefinition"]["resolvedDependencies"][1]["digest"]["sha256"],
            "b".repeat(64)
        );
    }
}
