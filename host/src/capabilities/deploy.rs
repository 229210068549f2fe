//! `deploy`: the WIT face of [`crate::deploy::Deployer`]. Every call is logged to the step.

use super::bindings::wharf::step::deploy::{
    Host, Instance, Revision, RolloutPolicy, ServiceSpec, ServiceState, ServiceStatus,
};
use super::bindings::wharf::step::types::{ErrorKind, StepError};
use super::{CallResult, StepCall, step_error};
use crate::deploy::Deployer;
use crate::deploy::state::{self, ServiceRecord};
use crate::events::Level;
use std::time::Duration;

/// The view `deploy` is served on: the step's call context and the run's deployer (none
/// while a step is described or replayed).
pub struct DeployView<'a> {
    pub call: &'a StepCall,
    pub deployer: Option<&'a Deployer>,
    /// The provenance an image must carry to be deployed by this step.
    pub release: &'a crate::provenance::StepRelease,
}

/// The linker's marker for [`DeployView`].
pub struct HasDeploy;

impl wasmtime::component::HasData for HasDeploy {
    type Data<'a> = DeployView<'a>;
}

impl<'a> DeployView<'a> {
    /// A call that changed a service: what the journal has so far goes to disk, so a run's
    /// record of its deploys survives a crash of the machine.
    fn durable<T>(&self, result: CallResult<T>) -> CallResult<T> {
        self.call.tape.sync();
        result
    }

    /// An image the step may deploy: with `require-provenance`, one whose provenance a
    /// required key signed, checked at its registry before any instance changes.
    async fn check_provenance(&self, revision: &Revision) -> Result<(), StepError> {
        let keys = &self.release.require;
        if keys.is_empty() {
            return Ok(());
        }
        let image = &revision.image;
        let reference = crate::oci::reference::ImageRef::parse(image)
            .map_err(|e| step_error(ErrorKind::InvalidInput, format!("{image}: {e}")))?;
        let Some(host) = reference.registry.as_deref() else {
            return Err(step_error(
                ErrorKind::Denied,
                format!(
                    "{image} names no registry, so its provenance cannot be found; deploy the pushed reference (`REGISTRY/REPOSITORY:TAG@sha256:...`)"
                ),
            ));
        };
        if reference.digest.as_ref().is_some_and(|d| *d != revision.digest) {
            return Err(step_error(
                ErrorKind::InvalidInput,
                format!("{image} names another digest than the revision's {}", revision.digest),
            ));
        }
        let credentials = crate::packages::docker_login(host).unwrap_or_default();
        let registry = crate::oci::registry::Registry::new(host, credentials)?;
        let store = super::images::open_store(&self.call.scope.workspace)?;
        match crate::provenance::find(&registry, &store, &reference.repository, &revision.digest, image, keys).await {
            Ok(verified) => {
                self.call.scope.log(
                    Level::Info,
                    format!("{image}: provenance signed by {} verified", verified.signer),
                );
                Ok(())
            }
            Err(e) => Err(step_error(
                ErrorKind::Denied,
                format!("{e}; nothing was deployed\n  = help: {}", e.help()),
            )),
        }
    }

    /// The run's deployer, once the grants allow this service.
    fn deployer(&self, service: &str) -> Result<&'a Deployer, StepError> {
        self.call.grants.check_deploy(service)?;
        self.deployer
            .ok_or_else(|| step_error(ErrorKind::Denied, "deploy is not available while describing a step"))
    }
}

fn revision(r: &state::Revision) -> Revision {
    Revision {
        image: r.image.clone(),
        digest: r.digest.clone(),
        version: r.version.clone(),
    }
}

fn instance(i: &state::Instance) -> Instance {
    Instance {
        id: i.id.clone(),
        version: i.version.clone(),
        digest: i.digest.clone(),
        address: i.address.clone(),
        port: i.port,
        running: i.running,
        labels: i.labels.clone(),
    }
}

pub fn status(r: &ServiceRecord) -> ServiceStatus {
    ServiceStatus {
        service: r.service.clone(),
        target: r.target.clone(),
        state: match r.state {
            state::State::Absent => ServiceState::Absent,
            state::State::Active => ServiceState::Active,
            state::State::Upgrading => ServiceState::Upgrading,
            state::State::Upgraded => ServiceState::Upgraded,
            state::State::RollingBack => ServiceState::RollingBack,
        },
        current: r.current.as_ref().map(|s| revision(&s.revision)),
        previous: r.previous.as_ref().map(|s| revision(&s.revision)),
        instances: r.instances.iter().map(instance).collect(),
    }
}

fn spec(s: ServiceSpec) -> state::Spec {
    state::Spec {
        service: s.service,
        target: s.target,
        revision: state::Revision {
            image: s.revision.image,
            digest: s.revision.digest,
            version: s.revision.version,
        },
        replicas: s.replicas,
        port: s.port,
        health_path: s.health_path,
        env: s.env,
        labels: s.labels,
        one_per_host: s.placement.one_per_host,
        host_labels: s.placement.host_labels,
        rollout: state::RolloutPolicy::default(),
    }
}

fn policy(p: &RolloutPolicy) -> state::RolloutPolicy {
    state::RolloutPolicy {
        batch_size: p.batch_size,
        interval_ms: p.interval_ms,
        start_first: p.start_first,
        health_timeout_ms: p.health_timeout_ms,
        health_command: p.health_command.clone(),
    }
}

const DEPLOY: &str = "wharf:step/deploy";

impl Host for DeployView<'_> {
    async fn rollout(&mut self, s: ServiceSpec, p: RolloutPolicy) -> CallResult<Option<ServiceStatus>> {
        let this = &*self;
        let result = this
            .call
            .taped(DEPLOY, "rollout", &(&s, &p), async {
                let spec = state::Spec {
                    rollout: policy(&p),
                    ..spec(s.clone())
                };
                let deployer = this.deployer(&s.service)?;
                this.check_provenance(&s.revision).await?;
                Ok(deployer.rollout(spec).await?.as_ref().map(status))
            })
            .await;
        this.durable(result)
    }

    async fn canary(&mut self, s: ServiceSpec, p: RolloutPolicy, percent: u8) -> CallResult<Option<ServiceStatus>> {
        let this = &*self;
        let result = this
            .call
            .taped(DEPLOY, "canary", &(&s, &p, percent), async {
                let spec = state::Spec {
                    rollout: policy(&p),
                    ..spec(s.clone())
                };
                let deployer = this.deployer(&s.service)?;
                this.check_provenance(&s.revision).await?;
                Ok(deployer.canary(spec, percent).await?.as_ref().map(status))
            })
            .await;
        this.durable(result)
    }

    async fn begin_upgrade(&mut self, s: ServiceSpec) -> CallResult<ServiceStatus> {
        let this = &*self;
        let result = this
            .call
            .taped(DEPLOY, "begin-upgrade", &s, async {
                let deployer = this.deployer(&s.service)?;
                this.check_provenance(&s.revision).await?;
                let record = deployer.begin_upgrade(spec(s.clone())).await?;
                Ok(status(&record))
            })
            .await;
        this.durable(result)
    }

    async fn start_instance(&mut self, service: String) -> CallResult<Instance> {
        let this = &*self;
        let started = this.durable(
            this.call
                .taped(DEPLOY, "start-instance", &service, async {
                    Ok(instance(&this.deployer(&service)?.start_instance(&service).await?))
                })
                .await,
        )?;
        this.call.scope.log(
            Level::Info,
            format!(
                "started {} ({}) on {}:{}",
                started.id, started.version, started.address, started.port
            ),
        );
        Ok(started)
    }

    async fn wait_healthy(&mut self, service: String, instance: String, timeout_ms: u64) -> CallResult<()> {
        let this = &*self;
        this.call
            .taped(DEPLOY, "wait-healthy", &(&service, &instance, timeout_ms), async {
                let timeout = Duration::from_millis(timeout_ms);
                Ok(this
                    .deployer(&service)?
                    .wait_healthy(&service, &instance, timeout)
                    .await?)
            })
            .await?;
        this.call.scope.log(Level::Info, format!("{instance} is healthy"));
        Ok(())
    }

    async fn stop_instance(&mut self, service: String, instance: String) -> CallResult<()> {
        let this = &*self;
        this.durable(
            this.call
                .taped(DEPLOY, "stop-instance", &(&service, &instance), async {
                    Ok(this.deployer(&service)?.stop_instance(&service, &instance).await?)
                })
                .await,
        )?;
        this.call
            .scope
            .log(Level::Info, format!("stopped {instance} (kept for rollback)"));
        Ok(())
    }

    async fn finish_upgrade(&mut self, service: String) -> CallResult<ServiceStatus> {
        let this = &*self;
        let result = this
            .call
            .taped(DEPLOY, "finish-upgrade", &service, async {
                Ok(status(&this.deployer(&service)?.finish_upgrade(&service).await?))
            })
            .await;
        this.durable(result)
    }

    async fn shift_traffic(&mut self, service: String, percent: u8) -> CallResult<ServiceStatus> {
        let this = &*self;
        let result = this
            .call
            .taped(DEPLOY, "shift-traffic", &(&service, percent), async {
                Ok(status(
                    &this.deployer(&service)?.shift_traffic(&service, percent).await?,
                ))
            })
            .await;
        this.durable(result)
    }

    async fn hold(&mut self, service: String, reason: String) -> CallResult<ServiceStatus> {
        let this = &*self;
        let result = this
            .call
            .taped(DEPLOY, "hold", &(&service, &reason), async {
                Ok(status(&this.deployer(&service)?.hold(&service, &reason).await?))
            })
            .await;
        this.durable(result)
    }

    async fn confirm(&mut self, service: String) -> CallResult<ServiceStatus> {
        let this = &*self;
        let result = this
            .call
            .taped(DEPLOY, "confirm", &service, async {
                Ok(status(&this.deployer(&service)?.confirm(&service).await?))
            })
            .await;
        this.durable(result)
    }

    async fn rollback(&mut self, service: String) -> CallResult<ServiceStatus> {
        let this = &*self;
        let result = this
            .call
            .taped(DEPLOY, "rollback", &service, async {
                Ok(status(&this.deployer(&service)?.rollback(&service).await?))
            })
            .await;
        this.durable(result)
    }

    async fn status(&mut self, service: String) -> CallResult<ServiceStatus> {
        let this = &*self;
        this.call
            .taped(DEPLOY, "status", &service, async {
                Ok(status(&this.deployer(&service)?.status(&service).await?))
            })
            .await
    }

    async fn instances(&mut self, service: String) -> CallResult<Vec<Instance>> {
        let this = &*self;
        this.call
            .taped(DEPLOY, "instances", &service, async {
                let running = this.deployer(&service)?.instances(&service).await?;
                Ok(running.iter().map(instance).collect())
            })
            .await
    }
}
