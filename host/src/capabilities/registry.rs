//! `registry`: push images from the workspace's store to an OCI distribution registry, and
//! resolve tags to digests. Credentials come from secrets the step holds as handles; the
//! values never enter the step.

use super::bindings::wharf::step::registry::{Host, PushRequest, Pushed};
use super::bindings::wharf::step::types::{ErrorKind, StepError};
use super::images::open_store;
use super::secrets::{SecretHandle, SecretsView};
use super::{CallResult, StepScope, step_error};
use crate::events::{Event, Level, human_duration};
use crate::oci::reference::ImageRef;
use crate::oci::registry::{self, Credentials, Registry, is_loopback};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use wasmtime::component::Resource;

const REGISTRY: &str = "wharf:step/registry";

/// `registry` is served on the secrets view: credentials are secret handles.
impl Host for SecretsView<'_> {
    async fn push(&mut self, request: PushRequest, password: Option<Resource<SecretHandle>>) -> CallResult<Pushed> {
        let secret = self.secret_name(password)?;
        let (call, secrets, release) = (self.call, self.secrets, self.release);
        let args = serde_json::json!({ "request": &request, "password-secret": &secret });
        call.taped(REGISTRY, "push", &args, async {
            call.grants.check_registry(&request.registry, &request.repository)?;
            let password = secret.as_ref().and_then(|n| secrets.get(n)).map(String::from);
            push(&call.scope, request.clone(), password, release).await
        })
        .await
    }

    async fn resolve(
        &mut self,
        reference: String,
        insecure: bool,
        username: Option<String>,
        password: Option<Resource<SecretHandle>>,
    ) -> CallResult<String> {
        let secret = self.secret_name(password)?;
        let (call, secrets) = (self.call, self.secrets);
        let args = serde_json::json!({ "reference": &reference, "insecure": insecure, "username": &username, "password-secret": &secret });
        call.taped(REGISTRY, "resolve", &args, async {
            let parsed = ImageRef::parse(&reference).ok();
            let host = parsed.as_ref().and_then(|r| r.registry.clone()).unwrap_or_default();
            let repository = parsed.map(|r| r.repository).unwrap_or_default();
            call.grants.check_registry(&host, &repository)?;
            let password = secret.as_ref().and_then(|n| secrets.get(n)).map(String::from);
            resolve(&reference, insecure, username.clone(), password).await
        })
        .await
    }
}

fn connect(
    host: &str,
    insecure: bool,
    username: Option<String>,
    password: Option<String>,
) -> Result<Registry, StepError> {
    if insecure && !is_loopback(host) {
        return Err(step_error(
            ErrorKind::InvalidInput,
            format!("plain HTTP is only used for loopback registries; {host} is spoken to over HTTPS"),
        ));
    }
    Ok(Registry::new(host, Credentials { username, password })?)
}

pub async fn push(
    scope: &StepScope,
    req: PushRequest,
    password: Option<String>,
    release: &crate::provenance::StepRelease,
) -> Result<Pushed, StepError> {
    let local = ImageRef::parse(&req.image).map_err(|e| step_error(ErrorKind::InvalidInput, e))?;
    let store = open_store(&scope.workspace)?;
    let name = local.local_name();
    let image = store
        .resolve(local.tag.as_ref().map(|_| name.as_str()), local.digest.as_deref())
        .map_err(|e| step_error(ErrorKind::Permanent, e.to_string()))?
        .ok_or_else(|| {
            step_error(
                ErrorKind::InvalidInput,
                format!("{} is not in the image store; build it first", req.image),
            )
        })?;
    let target = ImageRef::parse(&format!("{}/{}:{}", req.registry, req.repository, req.tag))
        .map_err(|e| step_error(ErrorKind::InvalidInput, e))?;
    let registry = connect(&req.registry, req.insecure, req.username.clone(), password)?;
    let last = Mutex::new(Instant::now() - Duration::from_secs(1));
    let (events, step, label) = (scope.events.clone(), scope.step_id.clone(), format!("push {target}"));
    let progress: registry::Progress = Arc::new(move |done: u64, total: u64| {
        let mut last = last.lock().unwrap();
        if done == total || last.elapsed() >= Duration::from_millis(500) {
            *last = Instant::now();
            events.emit(Event::Progress {
                step: step.clone(),
                label: label.clone(),
                done,
                total: Some(total),
            });
        }
    });
    let started = Instant::now();
    let report = registry::push(
        &store,
        &image,
        &registry,
        &target.repository,
        req.tag.as_str(),
        progress,
    )
    .await?;
    let reference = format!("{}/{}:{}@{}", req.registry, req.repository, req.tag, report.digest);
    scope.log(
        Level::Info,
        format!(
            "pushed {reference}: {} blob(s) uploaded ({} bytes), {} already there, in {}",
            report.uploaded,
            report.bytes,
            report.skipped,
            human_duration(started.elapsed())
        ),
    );
    if let (Some(key), Some(recorder)) = (&release.sign_with, &release.recorder) {
        let revision = store
            .read_json::<crate::oci::ImageConfig>(&image.manifest.config.digest)
            .ok()
            .and_then(|c| c.config.labels?.get(crate::oci::LABEL_REVISION).cloned());
        let name = format!("{}/{}", req.registry, req.repository);
        let statement = recorder.statement(&name, &report.digest, revision.as_deref());
        let attached = crate::provenance::attach(
            &registry,
            &store,
            &target.repository,
            &image.manifest_descriptor,
            &statement,
            key,
        )
        .await?;
        scope.log(
            Level::Info,
            format!(
                "provenance signed by {} attached to {} ({})",
                key.public().fingerprint(),
                report.digest,
                attached.digest
            ),
        );
    }
    Ok(Pushed {
        reference,
        digest: report.digest,
        blobs_uploaded: report.uploaded,
        blobs_skipped: report.skipped,
        bytes_uploaded: report.bytes,
    })
}

pub async fn resolve(
    reference: &str,
    insecure: bool,
    username: Option<String>,
    password: Option<String>,
) -> Result<String, StepError> {
    let r = ImageRef::parse(reference).map_err(|e| step_error(ErrorKind::InvalidInput, e))?;
    let Some(host) = &r.registry else {
        return Err(step_error(
            ErrorKind::InvalidInput,
            format!("{reference} names no registry"),
        ));
    };
    let registry = connect(host, insecure, username, password)?;
    let tag = r.digest.clone().or(r.tag.clone()).unwrap_or_else(|| "latest".into());
    registry
        .manifest_digest(&r.repository, &tag)
        .await?
        .ok_or_else(|| step_error(ErrorKind::Permanent, format!("{reference} does not exist")))
}
