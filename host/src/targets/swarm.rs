//! The `swarm` target: a wharf service is a Docker Swarm service, driven through a manager's
//! Engine API at `DOCKER_HOST`.
//!
//! - The service and its containers carry the labels `wharf.service`, `wharf.version` and
//!   `wharf.revision`; the image is pinned by digest and every node pulls it from the
//!   registry it was pushed to.
//! - Placement: `host-labels` become constraints (`node.labels.storage==ssd`) and
//!   `one-per-host` becomes `max_replicas_per_node: 1`.
//! - The port is published on each task's own node (host mode), so the nginx upstreams name
//!   `NODE-ADDRESS:PORT` and two tasks never share a node's port: Swarm keeps them apart, as
//!   the article's scheduler did. (The routing mesh needs the engine's iptables rules.)
//! - Upgrades are Swarm rolling updates: `parallelism` from batch-size, `delay` from
//!   interval, `order`, `failure_action: pause`, and a monitor window. Swarm's health check
//!   is the upgrade's `health-command`, run inside each task (else the image's HEALTHCHECK);
//!   wharf then probes every task over HTTP from the host, as on every target. A rollback is another update, to the recorded previous spec,
//!   never Swarm's own rollback, which remembers one step back only.

use super::docker::{DockerTarget, connect_engine, engine_error};
use super::spec::{Instance, Spec};
use super::{Host, Rollout, Target, TargetError};
use bollard::Docker;
use bollard::models::{
    EndpointPortConfig, EndpointPortConfigProtocolEnum, EndpointPortConfigPublishModeEnum, EndpointSpec, HealthConfig,
    LocalNodeState, Node, NodeSpecAvailabilityEnum, NodeState, ServiceSpec, ServiceSpecMode, ServiceSpecModeReplicated,
    ServiceSpecUpdateConfig, ServiceSpecUpdateConfigFailureActionEnum, ServiceSpecUpdateConfigOrderEnum,
    ServiceUpdateStatusStateEnum, Task, TaskSpec, TaskSpecContainerSpec, TaskSpecPlacement, TaskState,
};
use bollard::query_parameters::{InspectServiceOptions, ListNodesOptions, ListTasksOptions, UpdateServiceOptions};
use std::collections::HashMap;
use std::time::{Duration, Instant};

/// How long Swarm watches each new task for failure before it moves on (its own default).
const MONITOR: Duration = Duration::from_secs(5);
/// Beyond the batches' own time: pulls, scheduling, a node declared lost.
const SLACK: Duration = Duration::from_secs(60);
/// Between two runs of a task's health command, and how long one may take; after this many
/// failures in a row the task is unhealthy, and Swarm replaces it.
const HEALTH_INTERVAL: Duration = Duration::from_secs(1);
const HEALTH_RETRIES: i64 = 3;
/// How long a task has to stop after SIGTERM, as on the docker target.
const STOP_GRACE: Duration = Duration::from_secs(5);
/// How long a replica may wait for a node that fits before the rollout settles without it
/// (a lost node), or is given up when other replicas wait on it.
const UNPLACED_GRACE: Duration = Duration::from_secs(10);
/// Between two looks at a rollout in progress.
const POLL: Duration = Duration::from_millis(500);

pub struct SwarmTarget {
    docker: Docker,
}

/// A task as the rollout sees it.
struct TaskView {
    instance: Instance,
    /// Swarm means it to run (a replica slot's current task).
    wanted: bool,
    /// It runs, on a node that is ready.
    running: bool,
    /// Not on any node: the scheduler found none that fits.
    unplaced: bool,
    /// Last seen running on a node that is now lost.
    lost: bool,
    /// Swarm refused to start it (an image it cannot pull, a command it cannot run).
    rejected: Option<String>,
}

/// A node by id: its hostname, the address tasks are reached on, and whether it is up.
struct NodeView {
    name: String,
    address: String,
    ready: bool,
}

fn nanos(d: Duration) -> i64 {
    i64::try_from(d.as_nanos()).unwrap_or(i64::MAX)
}

fn is_not_found(e: &bollard::errors::Error) -> bool {
    matches!(
        e,
        bollard::errors::Error::DockerResponseServerError { status_code: 404, .. }
    )
}

impl SwarmTarget {
    /// Connect to the manager at `DOCKER_HOST` (`unix://` or `tcp://`; or the local socket).
    pub async fn connect() -> Result<SwarmTarget, TargetError> {
        let docker = connect_engine().await?;
        let info = docker.info().await.map_err(|e| engine_error("info", e))?;
        let swarm = info.swarm.unwrap_or_default();
        if swarm.control_available != Some(true) {
            let state = match swarm.local_node_state {
                Some(LocalNodeState::ACTIVE) => "a worker, not a manager".to_string(),
                None | Some(LocalNodeState::EMPTY | LocalNodeState::INACTIVE) => "not in a swarm".to_string(),
                Some(state) => format!("in swarm state `{state}`"),
            };
            return Err(TargetError::Unavailable(format!(
                "the Docker engine at {} is {state}; point DOCKER_HOST at a swarm manager (`docker node ls` works there), or start one with `docker swarm init`",
                std::env::var("DOCKER_HOST").unwrap_or_else(|_| "the local socket".into())
            )));
        }
        Ok(SwarmTarget { docker })
    }

    async fn nodes(&self) -> Result<Vec<Node>, TargetError> {
        self.docker
            .list_nodes(None::<ListNodesOptions>)
            .await
            .map_err(|e| engine_error("list nodes", e))
    }

    async fn node_views(&self) -> Result<HashMap<String, NodeView>, TargetError> {
        Ok(self
            .nodes()
            .await?
            .into_iter()
            .filter_map(|node| {
                let id = node.id?;
                let name = node.description.and_then(|d| d.hostname).unwrap_or_else(|| id.clone());
                let status = node.status.unwrap_or_default();
                // A manager may report 0.0.0.0; its manager address then says where it is.
                let address = status
                    .addr
                    .filter(|a| a != "0.0.0.0")
                    .or_else(|| {
                        let addr = node.manager_status?.addr?;
                        Some(addr.rsplit_once(':').map_or(addr.clone(), |(host, _)| host.to_string()))
                    })
                    .unwrap_or_default();
                let ready = status.state == Some(NodeState::READY);
                Some((id, NodeView { name, address, ready }))
            })
            .collect())
    }

    /// Swarm's spec for a wharf spec.
    fn service_spec(spec: &Spec) -> Result<ServiceSpec, TargetError> {
        let image = DockerTarget::pull_reference(spec)?;
        let mut labels: HashMap<String, String> = spec.labels.iter().cloned().collect();
        labels.insert("wharf.service".into(), spec.service.clone());
        labels.insert("wharf.version".into(), spec.revision.version.clone());
        labels.insert("wharf.revision".into(), spec.revision.digest.clone());
        let policy = &spec.rollout;
        Ok(ServiceSpec {
            name: Some(spec.service.clone()),
            labels: Some(labels.clone()),
            task_template: Some(TaskSpec {
                container_spec: Some(TaskSpecContainerSpec {
                    image: Some(image),
                    env: Some(spec.env.iter().map(|(k, v)| format!("{k}={v}")).collect()),
                    labels: Some(labels),
                    stop_grace_period: Some(nanos(STOP_GRACE)),
                    health_check: (!policy.health_command.is_empty()).then(|| HealthConfig {
                        test: Some(
                            std::iter::once("CMD".to_string())
                                .chain(policy.health_command.iter().cloned())
                                .collect(),
                        ),
                        interval: Some(nanos(HEALTH_INTERVAL)),
                        timeout: Some(nanos(HEALTH_INTERVAL * 2)),
                        retries: Some(HEALTH_RETRIES),
                        // Failures while a task starts do not count, for as long as it may take.
                        start_period: Some(nanos(Duration::from_millis(policy.health_timeout_ms))),
                        ..Default::default()
                    }),
                    ..Default::default()
                }),
                placement: Some(TaskSpecPlacement {
                    constraints: Some(
                        spec.host_labels
                            .iter()
                            .map(|(k, v)| format!("node.labels.{k}=={v}"))
                            .collect(),
                    ),
                    max_replicas: spec.one_per_host.then_some(1),
                    ..Default::default()
                }),
                ..Default::default()
            }),
            mode: Some(ServiceSpecMode {
                replicated: Some(ServiceSpecModeReplicated {
                    replicas: Some(i64::from(spec.replicas)),
                }),
                ..Default::default()
            }),
            update_config: Some(ServiceSpecUpdateConfig {
                parallelism: Some(i64::from(policy.batch_size)),
                delay: Some(nanos(Duration::from_millis(policy.interval_ms))),
                failure_action: Some(ServiceSpecUpdateConfigFailureActionEnum::PAUSE),
                monitor: Some(nanos(MONITOR)),
                max_failure_ratio: Some(0.0),
                order: Some(if policy.start_first {
                    ServiceSpecUpdateConfigOrderEnum::START_FIRST
                } else {
                    ServiceSpecUpdateConfigOrderEnum::STOP_FIRST
                }),
            }),
            endpoint_spec: Some(EndpointSpec {
                ports: Some(vec![EndpointPortConfig {
                    protocol: Some(EndpointPortConfigProtocolEnum::TCP),
                    target_port: Some(i64::from(spec.port)),
                    published_port: Some(i64::from(spec.port)),
                    publish_mode: Some(EndpointPortConfigPublishModeEnum::HOST),
                    ..Default::default()
                }]),
                ..Default::default()
            }),
            ..Default::default()
        })
    }

    /// Every task of the service Swarm still lists, current and historic.
    async fn task_views(&self, service: &str) -> Result<Vec<TaskView>, TargetError> {
        let filters = HashMap::from([("service".to_string(), vec![service.to_string()])]);
        let tasks = match self
            .docker
            .list_tasks(Some(ListTasksOptions { filters: Some(filters) }))
            .await
        {
            Ok(tasks) => tasks,
            Err(e) if is_not_found(&e) => Vec::new(),
            Err(e) => return Err(engine_error("list tasks", e)),
        };
        let nodes = self.node_views().await?;
        let mut views: Vec<TaskView> = tasks
            .into_iter()
            // The filter matches by name prefix too (`seed` lists `seed-2`'s tasks).
            .filter(|t| {
                t.spec
                    .as_ref()
                    .and_then(|s| s.container_spec.as_ref())
                    .and_then(|c| c.labels.as_ref())
                    .and_then(|l| l.get("wharf.service"))
                    .is_some_and(|s| s == service)
            })
            .map(|t| task_view(service, t, &nodes))
            .collect();
        views.sort_by(|a, b| a.instance.id.cmp(&b.instance.id));
        Ok(views)
    }

    /// The longest a rollout of `spec` may take: every batch started, monitored and healthy.
    fn budget(spec: &Spec) -> Duration {
        let policy = &spec.rollout;
        let batches = spec.replicas.div_ceil(policy.batch_size.max(1));
        let batch = Duration::from_millis(policy.health_timeout_ms + policy.interval_ms) + MONITOR;
        batch * batches + SLACK
    }

    /// Wait until Swarm has done what it can for `spec`: no update in progress, no task of
    /// another digest left, and every replica either running `spec`'s digest or waiting for
    /// a node that fits.
    async fn settle(&self, spec: &Spec) -> Result<Vec<Instance>, TargetError> {
        let budget = Self::budget(spec);
        let deadline = Instant::now() + budget;
        let service = &spec.service;
        let digest = &spec.revision.digest;
        let mut stuck_since: Option<Instant> = None;
        loop {
            let inspected = self
                .docker
                .inspect_service(service, None::<InspectServiceOptions>)
                .await
                .map_err(|e| engine_error(&format!("inspect service {service}"), e))?;
            let update = inspected.update_status.unwrap_or_default();
            if matches!(
                update.state,
                Some(ServiceUpdateStatusStateEnum::PAUSED | ServiceUpdateStatusStateEnum::ROLLBACK_PAUSED)
            ) {
                return Err(TargetError::Unsettled(format!(
                    "Swarm paused the update of `{service}`: {}",
                    update.message.unwrap_or_default()
                )));
            }
            let updating = matches!(
                update.state,
                Some(ServiceUpdateStatusStateEnum::UPDATING | ServiceUpdateStatusStateEnum::ROLLBACK_STARTED)
            );
            let views = self.task_views(service).await?;
            if let Some((id, why)) = views
                .iter()
                .filter(|v| &v.instance.digest == digest)
                .find_map(|v| Some((&v.instance.id, v.rejected.as_ref()?)))
            {
                return Err(TargetError::Unsettled(format!(
                    "Swarm could not start task {id} of `{service}`: {why}"
                )));
            }
            let wanted: Vec<&TaskView> = views.iter().filter(|v| v.wanted).collect();
            let done = wanted
                .iter()
                .all(|v| &v.instance.digest == digest && (v.running || v.unplaced));
            // A replica no node can take now (a lost node, a port still held) may find one a
            // moment later; if it still has none after a grace period, the rollout has done
            // what it can, or, when others wait on it (Swarm updates replica by replica), it
            // cannot go on.
            let stuck = wanted.iter().any(|v| v.unplaced);
            if !stuck {
                stuck_since = None;
                if done && !updating && wanted.len() >= spec.replicas as usize {
                    return Ok(current_tasks(views));
                }
            } else if stuck_since.get_or_insert_with(Instant::now).elapsed() >= UNPLACED_GRACE {
                if done {
                    return Ok(current_tasks(views));
                }
                let (id, why) = wanted
                    .iter()
                    .find(|v| v.unplaced)
                    .map(|v| (v.instance.id.clone(), v.instance.condition.clone().unwrap_or_default()))
                    .unwrap_or_default();
                return Err(TargetError::Unsettled(format!(
                    "Swarm cannot place task {id} of `{service}` ({why}), and its update waits for it"
                )));
            }
            if Instant::now() >= deadline {
                let running = wanted
                    .iter()
                    .filter(|v| v.running && &v.instance.digest == digest)
                    .count();
                let tasks: Vec<String> = views
                    .iter()
                    .filter(|v| v.wanted || v.lost)
                    .map(|v| format!("{} {}", v.instance.id, v.instance.condition.as_deref().unwrap_or("")))
                    .collect();
                return Err(TargetError::Unsettled(format!(
                    "Swarm did not finish rolling out `{service}` within {}: {running} of {} task(s) run {digest}; tasks: {}",
                    humantime::format_duration(budget),
                    spec.replicas,
                    tasks.join("; ")
                )));
            }
            tokio::time::sleep(POLL).await;
        }
    }
}

/// The tasks meant to run, and those last seen running on a node that is now lost.
fn current_tasks(views: Vec<TaskView>) -> Vec<Instance> {
    views
        .into_iter()
        .filter(|v| v.wanted || v.lost)
        .map(|v| v.instance)
        .collect()
}

fn task_view(service: &str, task: Task, nodes: &HashMap<String, NodeView>) -> TaskView {
    let container = task
        .spec
        .as_ref()
        .and_then(|s| s.container_spec.clone())
        .unwrap_or_default();
    let labels = container.labels.unwrap_or_default();
    let image = container.image.unwrap_or_default();
    let status = task.status.unwrap_or_default();
    let state = status.state.unwrap_or(TaskState::NEW);
    let node = task.node_id.as_ref().and_then(|id| nodes.get(id));
    let node_ready = node.is_some_and(|n| n.ready);
    let wanted = task.desired_state == Some(TaskState::RUNNING);
    let running = wanted && state == TaskState::RUNNING && node_ready;
    let err = status.err.filter(|e| !e.is_empty());
    let port = status
        .port_status
        .and_then(|p| p.ports)
        .and_then(|ports| ports.into_iter().find_map(|p| p.published_port))
        .and_then(|p| u16::try_from(p).ok())
        .unwrap_or(0);
    let short: String = task.id.clone().unwrap_or_default().chars().take(12).collect();
    let condition = match node {
        None => format!("{state}{}", err.as_ref().map(|e| format!(": {e}")).unwrap_or_default()),
        Some(n) => {
            let mut text = format!("{state} on {}", n.name);
            if !n.ready {
                text.push_str(", node lost");
            }
            if !wanted && state == TaskState::RUNNING {
                text.push_str(", to be shut down");
            }
            if let Some(e) = &err {
                text.push_str(&format!(": {e}"));
            }
            text
        }
    };
    TaskView {
        rejected: (wanted && state == TaskState::REJECTED).then(|| err.clone().unwrap_or_else(|| "rejected".into())),
        unplaced: wanted && task.node_id.is_none() && err.is_some(),
        lost: state == TaskState::RUNNING && node.is_some() && !node_ready,
        running,
        wanted,
        instance: Instance {
            id: format!("{service}.{}.{short}", task.slot.unwrap_or(0)),
            digest: image.rsplit_once('@').map(|(_, d)| d.to_string()).unwrap_or_default(),
            version: labels.get("wharf.version").cloned().unwrap_or_default(),
            address: node.map(|n| n.address.clone()).unwrap_or_default(),
            port,
            running,
            host: node.map(|n| n.name.clone()).unwrap_or_default(),
            handle: task.id.unwrap_or_default(),
            labels: labels.into_iter().filter(|(k, _)| !k.starts_with("wharf.")).collect(),
            log: None,
            condition: Some(condition),
        },
    }
}

#[async_trait::async_trait]
impl Target for SwarmTarget {
    fn name(&self) -> &'static str {
        "swarm"
    }

    /// The nodes that take tasks: ready and not drained or paused.
    async fn hosts(&self) -> Result<Vec<Host>, TargetError> {
        Ok(self
            .nodes()
            .await?
            .into_iter()
            .filter(|n| n.status.as_ref().and_then(|s| s.state) == Some(NodeState::READY))
            .filter(|n| n.spec.as_ref().and_then(|s| s.availability) == Some(NodeSpecAvailabilityEnum::ACTIVE))
            .map(|n| {
                let spec = n.spec.unwrap_or_default();
                let mut labels: Vec<(String, String)> = spec.labels.unwrap_or_default().into_iter().collect();
                labels.sort();
                Host {
                    name: n.description.and_then(|d| d.hostname).unwrap_or_default(),
                    labels,
                }
            })
            .collect())
    }

    /// The nodes pull the image themselves; it must be in a registry they reach.
    async fn prepare(&self, spec: &Spec) -> Result<(), TargetError> {
        DockerTarget::pull_reference(spec).map(drop)
    }

    /// A scheduler's tasks are found by asking it ([`Rollout::tasks`]); it never starts one
    /// on wharf's word alone.
    async fn find(&self, _: &Spec, _: &Instance) -> Result<Option<Instance>, TargetError> {
        Ok(None)
    }

    async fn start(&self, _: &Spec, _: &str, _: &Host) -> Result<Instance, TargetError> {
        Err(TargetError::Scheduled { target: "swarm" })
    }

    async fn stop(&self, _: &Instance) -> Result<(), TargetError> {
        Err(TargetError::Scheduled { target: "swarm" })
    }

    async fn resume(&self, _: &Spec, _: &Instance) -> Result<Instance, TargetError> {
        Err(TargetError::Scheduled { target: "swarm" })
    }

    async fn remove(&self, _: &Instance) -> Result<(), TargetError> {
        Err(TargetError::Scheduled { target: "swarm" })
    }

    /// The task runs, Swarm still wants it to, and its node is up.
    async fn is_running(&self, instance: &Instance) -> bool {
        let Ok(task) = self.docker.inspect_task(&instance.handle).await else {
            return false;
        };
        let Ok(nodes) = self.node_views().await else {
            return false;
        };
        let service = instance.id.split('.').next().unwrap_or_default();
        task_view(service, task, &nodes).running
    }

    fn rollout(&self) -> Option<&dyn Rollout> {
        Some(self)
    }
}

#[async_trait::async_trait]
impl Rollout for SwarmTarget {
    async fn apply(&self, spec: &Spec) -> Result<Vec<Instance>, TargetError> {
        let body = Self::service_spec(spec)?;
        let service = &spec.service;
        match self
            .docker
            .inspect_service(service, None::<InspectServiceOptions>)
            .await
        {
            Ok(existing) => {
                let version = existing.version.and_then(|v| v.index).unwrap_or(0);
                let options = UpdateServiceOptions {
                    version: i32::try_from(version).unwrap_or(i32::MAX),
                    ..Default::default()
                };
                self.docker
                    .update_service(service, body, options, None)
                    .await
                    .map_err(|e| engine_error(&format!("update service {service}"), e))?;
            }
            Err(e) if is_not_found(&e) => {
                self.docker
                    .create_service(body, None)
                    .await
                    .map_err(|e| engine_error(&format!("create service {service}"), e))?;
            }
            Err(e) => return Err(engine_error(&format!("inspect service {service}"), e)),
        }
        self.settle(spec).await
    }

    async fn tasks(&self, service: &str) -> Result<Vec<Instance>, TargetError> {
        Ok(current_tasks(self.task_views(service).await?))
    }

    async fn delete(&self, service: &str) -> Result<(), TargetError> {
        match self.docker.delete_service(service).await {
            Ok(()) => Ok(()),
            Err(e) if is_not_found(&e) => Ok(()),
            Err(e) => Err(engine_error(&format!("delete service {service}"), e)),
        }
    }
}
