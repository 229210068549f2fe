//! `deploy`: the WIT face of [`crate::deploy::Deployer`]. Every call is logged to the step.

use super::step_error;
use crate::deploy::Deployer;
use crate::deploy::state::{self, ServiceRecord};
use crate::engine::bindings::wharf::step::deploy::{
    Host, Instance, Revision, ServiceSpec, ServiceState, ServiceStatus,
};
use crate::engine::bindings::wharf::step::types::{ErrorKind, StepError};
use crate::engine::state::StepState;
use crate::events::Level;
use std::sync::Arc;
use std::time::Duration;

impl StepState {
    /// The run's deployer, once the grants allow this service.
    fn deployer(&self, service: &str) -> Result<Arc<Deployer>, StepError> {
        self.grants.check_deploy(service)?;
        self.deployer
            .clone()
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
    }
}

const DEPLOY: &str = "wharf:step/deploy";

impl Host for StepState {
    async fn begin_upgrade(&mut self, s: ServiceSpec) -> wasmtime::Result<Result<ServiceStatus, StepError>> {
        Ok(crate::taped!(self, DEPLOY, "begin-upgrade", s, {
            match self.deployer(&s.service) {
                Ok(d) => d.begin_upgrade(spec(s.clone())).await.map(|r| status(&r)),
                Err(e) => Err(e),
            }
        }))
    }

    async fn start_instance(&mut self, service: String) -> wasmtime::Result<Result<Instance, StepError>> {
        let result: Result<Instance, StepError> = crate::taped!(self, DEPLOY, "start-instance", service, {
            match self.deployer(&service) {
                Ok(d) => d.start_instance(&service).await.map(|i| instance(&i)),
                Err(e) => Err(e),
            }
        });
        if let Ok(i) = &result {
            self.scope.log(
                Level::Info,
                format!("started {} ({}) on {}:{}", i.id, i.version, i.address, i.port),
            );
        }
        Ok(result)
    }

    async fn wait_healthy(
        &mut self,
        service: String,
        instance: String,
        timeout_ms: u64,
    ) -> wasmtime::Result<Result<(), StepError>> {
        let result: Result<(), StepError> =
            crate::taped!(self, DEPLOY, "wait-healthy", (&service, &instance, timeout_ms), {
                match self.deployer(&service) {
                    Ok(d) => {
                        d.wait_healthy(&service, &instance, Duration::from_millis(timeout_ms))
                            .await
                    }
                    Err(e) => Err(e),
                }
            });
        if result.is_ok() {
            self.scope.log(Level::Info, format!("{instance} is healthy"));
        }
        Ok(result)
    }

    async fn stop_instance(&mut self, service: String, instance: String) -> wasmtime::Result<Result<(), StepError>> {
        let result: Result<(), StepError> = crate::taped!(self, DEPLOY, "stop-instance", (&service, &instance), {
            match self.deployer(&service) {
                Ok(d) => d.stop_instance(&service, &instance).await,
                Err(e) => Err(e),
            }
        });
        if result.is_ok() {
            self.scope
                .log(Level::Info, format!("stopped {instance} (kept for rollback)"));
        }
        Ok(result)
    }

    async fn finish_upgrade(&mut self, service: String) -> wasmtime::Result<Result<ServiceStatus, StepError>> {
        Ok(crate::taped!(self, DEPLOY, "finish-upgrade", service, {
            match self.deployer(&service) {
                Ok(d) => d.finish_upgrade(&service).await.map(|r| status(&r)),
                Err(e) => Err(e),
            }
        }))
    }

    async fn confirm(&mut self, service: String) -> wasmtime::Result<Result<ServiceStatus, StepError>> {
        Ok(crate::taped!(self, DEPLOY, "confirm", service, {
            match self.deployer(&service) {
                Ok(d) => d.confirm(&service).await.map(|r| status(&r)),
                Err(e) => Err(e),
            }
        }))
    }

    async fn rollback(&mut self, service: String) -> wasmtime::Result<Result<ServiceStatus, StepError>> {
        Ok(crate::taped!(self, DEPLOY, "rollback", service, {
            match self.deployer(&service) {
                Ok(d) => d.rollback(&service).await.map(|r| status(&r)),
                Err(e) => Err(e),
            }
        }))
    }

    async fn status(&mut self, service: String) -> wasmtime::Result<Result<ServiceStatus, StepError>> {
        Ok(crate::taped!(self, DEPLOY, "status", service, {
            match self.deployer(&service) {
                Ok(d) => d.status(&service).await.map(|r| status(&r)),
                Err(e) => Err(e),
            }
        }))
    }

    async fn instances(&mut self, service: String) -> wasmtime::Result<Result<Vec<Instance>, StepError>> {
        Ok(crate::taped!(self, DEPLOY, "instances", service, {
            match self.deployer(&service) {
                Ok(d) => d.instances(&service).await.map(|v| v.iter().map(instance).collect()),
                Err(e) => Err(e),
            }
        }))
    }
}
