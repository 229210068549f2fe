//! Deploying services: one state machine on every target.
//!
//! ```text
//! absent/active --begin_upgrade--> upgrading --finish_upgrade--> upgraded --confirm--> active
//!                                      |                            |
//!                                      +---------rollback-----------+--> rolling-back --> active (previous)
//! ```
//!
//! The previous revision (digest, version and how it ran) is recorded before anything is
//! replaced, and a rollback always returns to that digest, never to whatever a tag points to
//! now. A service left `upgraded` blocks the next upgrade until it is confirmed or rolled
//! back. The upgrade step decides the rolling order; the host owns state, locks and rollback.
//! On a target with a scheduler of its own ([`crate::targets::Rollout`], Swarm) the rolling
//! order is the scheduler's: [`Deployer::rollout`] goes from absent/active to upgraded in one
//! call, and a rollback re-applies the recorded previous spec.

mod error;
pub mod lock;
pub mod state;
#[cfg(test)]
mod tests;

pub use error::DeployError;

use crate::events::{Event, Events, Transition};
use crate::oci::reference::ImageRef;
use crate::pipeline::OnFailure;
use crate::targets::{Host, Rollout, StandardTargets, Target, TargetError, TargetPaths, Targets};
use lock::ServiceLock;
use state::{Instance, ServiceRecord, Spec, State};
use std::collections::{BTreeSet, HashMap};
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::time::Duration;

pub use state::Revision;

/// What the deploys of one run came to; decides the exit code.
#[derive(Debug, Default, Clone)]
pub struct Ledger {
    /// Services this run began upgrading.
    pub touched: BTreeSet<String>,
    pub rolled_back: BTreeSet<String>,
    pub rollback_failed: Vec<(String, String)>,
    /// Left `upgraded` on purpose (`on-failure: pause`).
    pub paused: BTreeSet<String>,
    /// Held for a person by a step (an analysis that could not decide).
    pub held: BTreeSet<String>,
    /// Left upgrading by a run that otherwise succeeded (a canary plan that stopped short
    /// of 100%), and rolled back: the run failed.
    pub unfinished: BTreeSet<String>,
}

/// On whose behalf a deployer acts.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Actor {
    /// A pipeline run: it decides only the upgrades it began.
    Run(String),
    /// A person at the command line (`wharf confirm`, `wharf rollback`): decides any.
    Person,
}

pub struct Deployer {
    /// Where instances run: `local` and `docker`, or what a test gives.
    targets: Box<dyn Targets>,
    /// Where the state lives, for messages.
    state_dir: PathBuf,
    services_dir: PathBuf,
    locks_dir: PathBuf,
    actor: Actor,
    /// Recorded in state files and locks: the run id, or `cli-PID` for a person.
    run_id: String,
    events: Events,
    held: Mutex<HashMap<String, ServiceLock>>,
    ledger: Mutex<Ledger>,
    /// Earlier runs whose unfinished upgrades this run carries on (`--resume`).
    adopted: Mutex<BTreeSet<String>>,
}

fn refused(service: &str, message: String) -> DeployError {
    DeployError::refused(service, message)
}

/// `.wharf/state` under a workspace.
pub fn state_dir(workspace: &Path) -> PathBuf {
    workspace.join(".wharf/state")
}

impl Deployer {
    /// The deployer of a workspace, with wharf's targets (`local`, `docker`).
    pub fn new(workspace: &Path, actor: Actor, events: Events) -> Self {
        let paths = TargetPaths {
            state: state_dir(workspace),
            store: workspace.join(".wharf/oci"),
        };
        Self::with_targets(workspace, actor, events, Box::new(StandardTargets::new(paths)))
    }

    /// The deployer of a workspace, with the given targets.
    pub fn with_targets(workspace: &Path, actor: Actor, events: Events, targets: Box<dyn Targets>) -> Self {
        let run_id = match &actor {
            Actor::Run(id) => id.clone(),
            Actor::Person => format!("cli-{}", std::process::id()),
        };
        let state = state_dir(workspace);
        Self {
            targets,
            services_dir: state.join("services"),
            locks_dir: state.join("locks"),
            state_dir: state,
            actor,
            run_id,
            events,
            held: Mutex::new(HashMap::new()),
            ledger: Mutex::new(Ledger::default()),
            adopted: Mutex::new(BTreeSet::new()),
        }
    }

    /// Carry on the upgrades that `runs` began and left awaiting a decision (a resumed run
    /// takes over from the run it resumes): they are this run's to decide and to settle.
    pub fn adopt(&self, runs: &[String]) {
        self.adopted.lock().unwrap().extend(runs.iter().cloned());
        for record in ServiceRecord::list(&self.services_dir).into_iter().flatten() {
            if record.owner.as_ref().is_some_and(|o| runs.contains(o)) {
                self.ledger.lock().unwrap().touched.insert(record.service);
            }
        }
    }

    /// Whether an upgrade begun by run `owner` is this run's to decide.
    fn owns(&self, owner: &str) -> bool {
        owner == self.run_id || self.adopted.lock().unwrap().contains(owner)
    }

    pub fn ledger(&self) -> Ledger {
        self.ledger.lock().unwrap().clone()
    }

    /// Tell the run's events that `service` went through `transition`, to `spec` if any.
    fn note(&self, service: &str, transition: Transition, spec: Option<&Spec>, message: String) {
        self.note_traffic(service, transition, spec, None, message);
    }

    /// [`Deployer::note`], saying the share of traffic `spec` takes now.
    fn note_traffic(
        &self,
        service: &str,
        transition: Transition,
        spec: Option<&Spec>,
        traffic: Option<u8>,
        message: String,
    ) {
        self.events.emit(Event::Deploy {
            service: service.to_string(),
            transition,
            version: spec.map(|s| s.revision.version.clone()),
            digest: spec.map(|s| s.revision.digest.clone()),
            traffic,
            message,
        });
    }

    async fn target(&self, name: &str) -> Result<&dyn Target, DeployError> {
        Ok(self.targets.get(name).await?)
    }

    fn load(&self, service: &str) -> Result<Option<ServiceRecord>, DeployError> {
        check_service(service)?;
        ServiceRecord::load(&self.services_dir, service).map_err(|source| DeployError::State {
            service: service.to_string(),
            context: format!("state of `{service}`"),
            source,
        })
    }

    fn save(&self, record: &mut ServiceRecord) -> Result<(), DeployError> {
        record.run_id = Some(self.run_id.clone());
        record.save(&self.services_dir).map_err(|source| DeployError::State {
            service: record.service.clone(),
            context: format!(
                "saving the state of `{}` in {}",
                record.service,
                self.services_dir.display()
            ),
            source,
        })
    }

    fn existing(&self, service: &str) -> Result<ServiceRecord, DeployError> {
        self.load(service)?.ok_or_else(|| {
            let known: Vec<String> = ServiceRecord::list(&self.services_dir)
                .into_iter()
                .flatten()
                .map(|r| r.service)
                .collect();
            refused(
                service,
                format!(
                    "no service `{service}` has been deployed from {}{}",
                    self.state_dir.display(),
                    if known.is_empty() {
                        String::new()
                    } else {
                        format!("; known: {}", known.join(", "))
                    }
                ),
            )
        })
    }

    /// Take the service's lock unless this process holds it already; true when taken now.
    fn lock(&self, service: &str) -> Result<bool, DeployError> {
        check_service(service)?;
        let mut held = self.held.lock().unwrap();
        if held.contains_key(service) {
            return Ok(false);
        }
        let lock = ServiceLock::acquire(&self.locks_dir, service, &self.run_id)?;
        held.insert(service.to_string(), lock);
        Ok(true)
    }

    fn unlock(&self, service: &str) {
        self.held.lock().unwrap().remove(service);
    }

    fn holds(&self, service: &str) -> bool {
        self.held.lock().unwrap().contains_key(service)
    }

    async fn eligible_hosts(&self, target: &dyn Target, spec: &Spec) -> Result<Vec<Host>, DeployError> {
        let hosts = target.hosts().await?;
        let eligible: Vec<Host> = hosts
            .iter()
            .filter(|h| spec.host_labels.iter().all(|want| h.labels.contains(want)))
            .cloned()
            .collect();
        if eligible.is_empty() {
            let want: Vec<String> = spec.host_labels.iter().map(|(k, v)| format!("{k}={v}")).collect();
            let have: Vec<String> = hosts
                .iter()
                .map(|h| {
                    format!(
                        "{} [{}]",
                        h.name,
                        h.labels
                            .iter()
                            .map(|(k, v)| format!("{k}={v}"))
                            .collect::<Vec<_>>()
                            .join(", ")
                    )
                })
                .collect();
            let hint = match target.name() {
                "local" => "label the local host with WHARF_HOST_LABELS=key=value,...",
                "swarm" => "label a node with `docker node update --label-add key=value NODE` on a manager",
                _ => "label the Docker engine (dockerd --label key=value)",
            };
            return Err(refused(
                &spec.service,
                format!(
                    "no host of target `{}` carries the labels {}; hosts: {}; {hint}",
                    target.name(),
                    want.join(", "),
                    have.join("; ")
                ),
            ));
        }
        // A scheduler replacing tasks start-first needs a free host for each new one.
        if target.rollout().is_some()
            && spec.one_per_host
            && spec.rollout.start_first
            && spec.replicas as usize >= eligible.len()
        {
            return Err(refused(
                &spec.service,
                format!(
                    "one instance per host on {} eligible host(s) leaves no host free to start a new instance before an old one stops; use `order: stop-first`",
                    eligible.len()
                ),
            ));
        }
        if spec.one_per_host && spec.replicas as usize > eligible.len() {
            return Err(refused(
                &spec.service,
                format!(
                    "one instance per host allows at most {} replica(s) on target `{}` ({} eligible host{}), not {}",
                    eligible.len(),
                    target.name(),
                    eligible.len(),
                    if eligible.len() == 1 { "" } else { "s" },
                    spec.replicas
                ),
            ));
        }
        Ok(eligible)
    }

    pub async fn begin_upgrade(&self, spec: Spec) -> Result<ServiceRecord, DeployError> {
        check_spec(&spec)?;
        let target = self.target(&spec.target).await?;
        if target.rollout().is_some() {
            return Err(TargetError::Scheduled { target: target.name() }.into());
        }
        self.begin_or_carry_on(spec, target).await
    }

    /// The upgrade of `spec`'s revision: this run's own, carried on (a canary's next step),
    /// or begun now under the service's lock.
    async fn begin_or_carry_on(&self, spec: Spec, target: &dyn Target) -> Result<ServiceRecord, DeployError> {
        let service = spec.service.clone();
        let fresh = self.lock(&service)?;
        if let Some(record) = self.carried_on(fresh, &spec)? {
            return Ok(record);
        }
        let result = self.begin_locked(spec, target).await;
        // Only a lock this call took is given back on failure: one held from an earlier
        // begin-upgrade of this run still guards that upgrade.
        if result.is_err() && fresh {
            self.unlock(&service);
        }
        result
    }

    /// A canary's next step: the upgrade of `spec`'s revision this run holds (`fresh`: the
    /// lock was taken just now, so it holds none), as it stands.
    fn carried_on(&self, fresh: bool, spec: &Spec) -> Result<Option<ServiceRecord>, DeployError> {
        if fresh {
            return Ok(None);
        }
        Ok(self.load(&spec.service)?.filter(|record| {
            record.state == State::Upgrading
                && record.current.as_ref().map(|c| &c.revision.digest) == Some(&spec.revision.digest)
        }))
    }

    /// A canary step on a target whose scheduler places the tasks: the new revision as a
    /// service of its own ([`canary_service`]) with `percent` of the replicas, rounded up and
    /// kept between one and all but one, started before the previous revision's service is
    /// scaled down by as many. `None`, having done nothing, on a target whose instances the
    /// upgrade step starts itself (it calls [`Deployer::shift_traffic`]).
    pub async fn canary(&self, spec: Spec, percent: u8) -> Result<Option<ServiceRecord>, DeployError> {
        check_spec(&spec)?;
        let target = self.target(&spec.target).await?;
        let Some(scheduler) = target.rollout() else {
            return Ok(None);
        };
        let service = spec.service.clone();
        check_share(&service, None, percent)?;
        let mut record = self.begin_or_carry_on(spec, target).await?;
        let current = current_spec(&record)?;
        let Some(previous) = record.previous.clone() else {
            return Err(refused(
                &service,
                format!(
                    "`{service}` runs no earlier revision to share traffic with on target `{}`: deploy it first with `traffic: 100`",
                    target.name()
                ),
            ));
        };
        check_share(&service, record.traffic, percent)?;
        let replicas = current.replicas;
        if replicas < 2 {
            return Err(refused(
                &service,
                format!(
                    "on target `{}` a canary is a share of the replicas: it needs 2 at least, not {replicas}",
                    target.name()
                ),
            ));
        }
        let share = canary_share(replicas, percent);
        let canary = Spec {
            service: canary_service(&service),
            replicas: share,
            ..current.clone()
        };
        let stable = Spec {
            replicas: replicas - share,
            ..previous
        };
        record.traffic = Some(percent);
        self.save(&mut record)?;
        // In the upgrade's order: the canary's tasks start before the old ones stop, or (one
        // instance per host) the old make room first.
        let (first, then) = if current.rollout.start_first {
            (&canary, &stable)
        } else {
            (&stable, &canary)
        };
        let mut tasks = scheduler.apply(first).await?;
        tasks.extend(scheduler.apply(then).await?);
        self.check_rolled_out(target, &canary, &tasks).await?;
        record.instances = tasks;
        self.save(&mut record)?;
        self.note_traffic(
            &service,
            Transition::Shifted,
            Some(&current),
            Some(percent),
            format!(
                "{service}: {percent}% of traffic to {}: {share} of {replicas} replicas",
                current.revision.version
            ),
        );
        Ok(Some(weigh(record)))
    }

    /// The whole upgrade, on a target whose scheduler replaces the tasks: from absent or
    /// active to `upgraded`, every task running the new digest and healthy. `None`, having
    /// done nothing, on a target whose instances the upgrade step replaces itself. A failure
    /// after the service began upgrading leaves it upgrading and locked by this run, for the
    /// run's end to roll back, as on every target.
    pub async fn rollout(&self, spec: Spec) -> Result<Option<ServiceRecord>, DeployError> {
        check_spec(&spec)?;
        let target = self.target(&spec.target).await?;
        let Some(scheduler) = target.rollout() else {
            return Ok(None);
        };
        let service = spec.service.clone();
        // Begun now, or the end of this run's canary.
        let mut record = self.begin_or_carry_on(spec, target).await?;
        let spec = current_spec(&record)?;
        record.instances = match record.traffic.take() {
            Some(traffic) => end_canary(scheduler, &spec, traffic).await?,
            None => scheduler.apply(&spec).await?,
        };
        self.save(&mut record)?;
        self.check_rolled_out(target, &spec, &record.instances).await?;
        Ok(Some(self.finish_upgrade(&service).await?))
    }

    /// Every replica runs `spec`'s digest and answers its health check.
    async fn check_rolled_out(&self, target: &dyn Target, spec: &Spec, tasks: &[Instance]) -> Result<(), DeployError> {
        let running: Vec<&Instance> = tasks
            .iter()
            .filter(|t| t.running && t.digest == spec.revision.digest)
            .collect();
        if running.len() < spec.replicas as usize {
            let others: Vec<String> = tasks
                .iter()
                .filter(|t| !running.contains(t))
                .map(|t| format!("{} {}", t.id, t.condition.as_deref().unwrap_or("not running")))
                .collect();
            return Err(DeployError::Incomplete {
                service: spec.service.clone(),
                why: format!(
                    "{} of {} task(s) run {}; {}",
                    running.len(),
                    spec.replicas,
                    spec.revision.version,
                    others.join("; ")
                ),
            });
        }
        let timeout = Duration::from_millis(spec.rollout.health_timeout_ms);
        for task in running {
            target.wait_healthy(task, &spec.health_path, timeout).await?;
        }
        Ok(())
    }

    async fn begin_locked(&self, spec: Spec, target: &dyn Target) -> Result<ServiceRecord, DeployError> {
        let service = &spec.service.clone();
        let mut record = self
            .load(service)?
            .unwrap_or_else(|| ServiceRecord::new(service, &spec.target));
        match record.state {
            State::Upgraded => {
                return Err(refused(
                    service,
                    format!(
                        "service `{service}` is upgraded to {} and awaits a decision; finish it first with `wharf confirm {service}` or `wharf rollback {service}`",
                        record.current.as_ref().map_or("?", |s| s.revision.version.as_str())
                    ),
                ));
            }
            State::Upgrading | State::RollingBack => {
                return Err(refused(
                    service,
                    format!(
                        "an earlier change of service `{service}` did not finish (state {}, run {}); roll it back with `wharf rollback {service}`",
                        record.state.as_str(),
                        record.run_id.as_deref().unwrap_or("?")
                    ),
                ));
            }
            State::Absent | State::Active => {}
        }
        if record.state != State::Absent && record.target != spec.target {
            return Err(refused(
                service,
                format!(
                    "service `{service}` runs on target `{}`, not `{}`; deploy it under another name",
                    record.target, spec.target
                ),
            ));
        }
        self.eligible_hosts(target, &spec).await?;
        target.prepare(&spec).await?;
        self.reconcile(&mut record, target).await?;
        for instance in &mut record.instances {
            instance.running = target.is_running(instance).await;
        }
        record.target = spec.target.clone();
        record.previous = record.current.take();
        record.current = Some(spec);
        record.state = State::Upgrading;
        record.owner = Some(self.run_id.clone());
        self.save(&mut record)?;
        self.ledger.lock().unwrap().touched.insert(service.clone());
        let spec = record.current.as_ref();
        self.note(
            service,
            Transition::Upgrading,
            spec,
            format!("{service}: upgrading to {}", spec.unwrap().revision.version),
        );
        Ok(record)
    }

    fn upgrading(&self, service: &str) -> Result<ServiceRecord, DeployError> {
        let record = self.existing(service)?;
        if record.state != State::Upgrading || !self.holds(service) {
            return Err(refused(
                service,
                format!(
                    "service `{service}` is {}, not being upgraded by this run; call begin-upgrade first",
                    record.state.as_str()
                ),
            ));
        }
        Ok(record)
    }

    pub async fn start_instance(&self, service: &str) -> Result<Instance, DeployError> {
        let mut record = self.upgrading(service)?;
        let spec = current_spec(&record)?;
        let target = self.target(&record.target).await?;
        let hosts = self.eligible_hosts(target, &spec).await?;
        let host = hosts
            .iter()
            .find(|h| !spec.one_per_host || !record.instances.iter().any(|i| i.running && i.host == h.name))
            .ok_or_else(|| {
                refused(service, format!(
                    "one instance per host: every eligible host already runs an instance of `{service}`; use `order: stop-first` so the old one makes room"
                ))
            })?;
        let next = record
            .instances
            .iter()
            .filter_map(|i| i.id.rsplit_once('-').and_then(|(_, n)| n.parse::<u32>().ok()))
            .max()
            .unwrap_or(0)
            + 1;
        let id = format!("{service}-{next}");
        let starting = Instance::starting(&spec, &id, &host.name);
        self.launch(&mut record, starting, target.start(&spec, &id, host)).await
    }

    /// Start an instance so that none runs unrecorded: `starting` is saved first (in place
    /// of the instance of its id, if any), then `start` runs, and what it started takes
    /// `starting`'s place. A wharf killed in between leaves `starting` in the state, which
    /// [`Deployer::reconcile`] resolves on the target by its id.
    async fn launch(
        &self,
        record: &mut ServiceRecord,
        starting: Instance,
        start: impl Future<Output = Result<Instance, TargetError>>,
    ) -> Result<Instance, DeployError> {
        put(record, starting.clone());
        self.save(record)?;
        match start.await {
            Ok(instance) => {
                put(record, instance.clone());
                self.save(record)?;
                Ok(instance)
            }
            Err(e) => {
                record.instances.retain(|i| i.id != starting.id);
                self.save(record)?;
                Err(e.into())
            }
        }
    }

    /// Resolve the instances a killed wharf left starting: what the target started under
    /// their ids takes their place, and an id nothing runs under is dropped. True when the
    /// record changed.
    async fn reconcile(&self, record: &mut ServiceRecord, target: &dyn Target) -> Result<bool, DeployError> {
        if target.rollout().is_some() || !record.instances.iter().any(Instance::is_starting) {
            return Ok(false);
        }
        let mut kept = Vec::new();
        for instance in std::mem::take(&mut record.instances) {
            if !instance.is_starting() {
                kept.push(instance);
                continue;
            }
            let spec = [record.current.as_ref(), record.previous.as_ref()]
                .into_iter()
                .flatten()
                .find(|s| s.revision.digest == instance.digest);
            if let Some(spec) = spec
                && let Some(found) = target.find(spec, &instance).await?
            {
                kept.push(found);
            }
        }
        record.instances = kept;
        Ok(true)
    }

    /// Let the target drop what no service of this workspace runs or may roll back to.
    async fn retain(&self, target: &dyn Target) {
        let mut live = BTreeSet::new();
        for record in ServiceRecord::list(&self.services_dir).into_iter().flatten() {
            live.extend(
                [&record.current, &record.previous]
                    .into_iter()
                    .flatten()
                    .map(|s| s.revision.digest.clone()),
            );
            live.extend(record.instances.iter().map(|i| i.digest.clone()));
        }
        target.retain(&live).await;
    }

    pub async fn wait_healthy(&self, service: &str, id: &str, timeout: Duration) -> Result<(), DeployError> {
        let record = self.existing(service)?;
        let instance = find(&record, id)?;
        let spec = record
            .current
            .as_ref()
            .filter(|s| s.revision.digest == instance.digest)
            .or(record.previous.as_ref());
        let path = spec.map_or("/", |s| s.health_path.as_str());
        let target = self.target(&record.target).await?;
        Ok(target.wait_healthy(instance, path, timeout).await?)
    }

    pub async fn stop_instance(&self, service: &str, id: &str) -> Result<(), DeployError> {
        let mut record = self.upgrading(service)?;
        let target = self.target(&record.target).await?;
        let instance = find(&record, id)?.clone();
        target.stop(&instance).await?;
        if let Some(i) = record.instances.iter_mut().find(|i| i.id == id) {
            i.running = false;
        }
        self.save(&mut record)
    }

    pub async fn finish_upgrade(&self, service: &str) -> Result<ServiceRecord, DeployError> {
        let mut record = self.upgrading(service)?;
        record.state = State::Upgraded;
        record.traffic = None;
        self.save(&mut record)?;
        self.unlock(service);
        self.note(
            service,
            Transition::Upgraded,
            record.current.as_ref(),
            format!("{service}: upgraded, awaiting confirm or rollback"),
        );
        Ok(record)
    }

    /// A canary: `percent` of the traffic to the revision being rolled out, the rest to the
    /// previous one (see [`weigh`]). A plan only goes forward, and 100 is the end of the
    /// upgrade ([`Deployer::finish_upgrade`]), not a share.
    pub async fn shift_traffic(&self, service: &str, percent: u8) -> Result<ServiceRecord, DeployError> {
        let mut record = self.upgrading(service)?;
        check_share(service, record.traffic, percent)?;
        record.traffic = Some(percent);
        self.save(&mut record)?;
        let current = current_spec(&record)?;
        self.note_traffic(
            service,
            Transition::Shifted,
            Some(&current),
            Some(percent),
            format!("{service}: {percent}% of traffic to {}", current.revision.version),
        );
        Ok(weigh(record))
    }

    /// Leave the upgrade as it stands for a person: the run's end does not roll it back,
    /// no run decides it, and the run exits saying so.
    pub async fn hold(&self, service: &str, reason: &str) -> Result<ServiceRecord, DeployError> {
        self.check_owner(service, "rollback")?;
        let mut record = self.existing(service)?;
        if !matches!(record.state, State::Upgrading | State::Upgraded) {
            return Err(refused(
                service,
                format!(
                    "service `{service}` is {}; only an upgrade under way can be held",
                    record.state.as_str()
                ),
            ));
        }
        let reason: String = reason.chars().filter(|c| !c.is_control()).take(400).collect();
        record.held = Some(reason.clone());
        self.save(&mut record)?;
        self.unlock(service);
        self.ledger.lock().unwrap().held.insert(service.to_string());
        self.note(
            service,
            Transition::Held,
            record.current.as_ref(),
            format!(
                "{service}: held for a person: {reason}; `wharf confirm {service}` finishes the upgrade, `wharf rollback {service}` undoes it"
            ),
        );
        Ok(weigh(record))
    }

    /// A run may decide only an upgrade it began; a person may decide any.
    fn check_owner(&self, service: &str, decision: &'static str) -> Result<(), DeployError> {
        if self.actor == Actor::Person {
            return Ok(());
        }
        let record = self.existing(service)?;
        if let Some(why) = &record.held {
            return Err(DeployError::Held {
                service: service.to_string(),
                why: why.clone(),
            });
        }
        let pending = matches!(record.state, State::Upgrading | State::Upgraded | State::RollingBack);
        match &record.owner {
            Some(owner) if pending && !self.owns(owner) => Err(DeployError::NotOwner {
                service: service.to_string(),
                owner: owner.clone(),
                decision,
            }),
            _ => Ok(()),
        }
    }

    /// Finish Upgrade: the new revision stays, the previous revision's instances go.
    pub async fn confirm(&self, service: &str) -> Result<ServiceRecord, DeployError> {
        self.check_owner(service, "confirm")?;
        self.lock(service)?;
        let result = self.confirm_locked(service).await;
        self.unlock(service);
        result
    }

    async fn confirm_locked(&self, service: &str) -> Result<ServiceRecord, DeployError> {
        let mut record = self.existing(service)?;
        if record.state == State::Upgrading && record.held.is_some() {
            record = self.promote(record).await?;
        }
        if record.state != State::Upgraded {
            return Err(refused(
                service,
                format!(
                    "service `{service}` is {}; only an upgraded service can be confirmed",
                    record.state.as_str()
                ),
            ));
        }
        let target = self.target(&record.target).await?;
        self.reconcile(&mut record, target).await?;
        let current = current_spec(&record)?;
        if let Some(scheduler) = target.rollout() {
            // The scheduler removed the old tasks as it went; what is confirmed is that every
            // replica still runs the new revision (a node lost since the gate is caught here).
            let tasks = scheduler.tasks(service).await?;
            self.check_rolled_out(target, &current, &tasks).await?;
            record.instances = tasks;
        } else {
            let (keep, old): (Vec<Instance>, Vec<Instance>) = record
                .instances
                .drain(..)
                .partition(|i| i.digest == current.revision.digest && i.running);
            for instance in &old {
                target.remove(instance).await?;
            }
            record.instances = keep;
        }
        record.state = State::Active;
        record.owner = None;
        record.held = None;
        self.save(&mut record)?;
        self.retain(target).await;
        self.note(
            service,
            Transition::Confirmed,
            Some(&current),
            format!("{service}: confirmed {}", current.revision.version),
        );
        Ok(record)
    }

    /// A held upgrade carried to its end for a person's confirm: the new revision's
    /// instances started up to its replicas (each healthy), then the previous revision's
    /// stopped, as a rolling upgrade ends.
    async fn promote(&self, mut record: ServiceRecord) -> Result<ServiceRecord, DeployError> {
        let service = record.service.clone();
        let target = self.target(&record.target).await?;
        let spec = current_spec(&record)?;
        if let Some(scheduler) = target.rollout() {
            record.instances = end_canary(scheduler, &spec, record.traffic.take().unwrap_or(1)).await?;
            self.save(&mut record)?;
            self.check_rolled_out(target, &spec, &record.instances).await?;
            record.state = State::Upgraded;
            self.save(&mut record)?;
            return Ok(record);
        }
        self.reconcile(&mut record, target).await?;
        let timeout = Duration::from_millis(spec.rollout.health_timeout_ms.max(60_000));
        let new = |r: &ServiceRecord| {
            r.instances
                .iter()
                .filter(|i| i.running && i.digest == spec.revision.digest)
                .count() as u32
        };
        let host = self
            .eligible_hosts(target, &spec)
            .await?
            .first()
            .cloned()
            .ok_or_else(|| {
                refused(
                    &service,
                    format!("no host of target `{}` fits `{service}`", record.target),
                )
            })?;
        while new(&record) < spec.replicas {
            let next = record.instances.len() + 1;
            let id = format!("{service}-p{next}");
            let starting = Instance::starting(&spec, &id, &host.name);
            let instance = self
                .launch(&mut record, starting, target.start(&spec, &id, &host))
                .await?;
            target.wait_healthy(&instance, &spec.health_path, timeout).await?;
        }
        for i in 0..record.instances.len() {
            let instance = record.instances[i].clone();
            if instance.running && instance.digest != spec.revision.digest {
                target.stop(&instance).await?;
                record.instances[i].running = false;
                self.save(&mut record)?;
            }
        }
        record.state = State::Upgraded;
        record.traffic = None;
        self.save(&mut record)?;
        self.note(
            &service,
            Transition::Upgraded,
            Some(&spec),
            format!("{service}: every instance on {}", spec.revision.version),
        );
        Ok(record)
    }

    /// Rollback: remove the new revision's instances and bring back the recorded previous
    /// revision by digest.
    pub async fn rollback(&self, service: &str) -> Result<ServiceRecord, DeployError> {
        self.check_owner(service, "rollback")?;
        self.lock(service)?;
        let result = self.rollback_locked(service).await;
        self.unlock(service);
        let mut ledger = self.ledger.lock().unwrap();
        match &result {
            Ok(_) => {
                ledger.rolled_back.insert(service.to_string());
            }
            Err(e) => ledger.rollback_failed.push((service.to_string(), e.to_string())),
        }
        result
    }

    async fn rollback_locked(&self, service: &str) -> Result<ServiceRecord, DeployError> {
        let mut record = self.existing(service)?;
        if !matches!(record.state, State::Upgrading | State::Upgraded | State::RollingBack) {
            return Err(refused(
                service,
                format!(
                    "service `{service}` is {}{}; there is no upgrade to roll back",
                    record.state.as_str(),
                    record
                        .current
                        .as_ref()
                        .map(|s| format!(" on {}", s.revision.version))
                        .unwrap_or_default()
                ),
            ));
        }
        let target = self.target(&record.target).await?;
        self.reconcile(&mut record, target).await?;
        record.state = State::RollingBack;
        self.save(&mut record)?;
        if let Some(scheduler) = target.rollout() {
            return self.restore(record, target, scheduler).await;
        }
        let previous = record.previous.clone();
        let previous_digest = previous.as_ref().map(|s| s.revision.digest.clone());
        // The new revision's instances go; an instance of the previous digest started by
        // this upgrade (a redeploy of the same image) stays.
        let mut kept = Vec::new();
        for instance in std::mem::take(&mut record.instances) {
            if Some(&instance.digest) == previous_digest.as_ref() {
                kept.push(instance);
            } else {
                target.remove(&instance).await?;
            }
        }
        record.instances = kept;
        self.save(&mut record)?;
        if let Some(prev) = &previous {
            let hosts = self.eligible_hosts(target, prev).await.unwrap_or_default();
            let host = hosts.first().cloned().unwrap_or(Host {
                name: target.name().into(),
                labels: Vec::new(),
            });
            target.prepare(prev).await?;
            let mut running = 0;
            for instance in record.instances.clone() {
                let instance = if target.is_running(&instance).await {
                    instance
                } else {
                    let starting = Instance::starting(prev, &instance.id, &instance.host);
                    self.launch(&mut record, starting, target.resume(prev, &instance))
                        .await?
                };
                target
                    .wait_healthy(&instance, &prev.health_path, Duration::from_secs(60))
                    .await?;
                put(
                    &mut record,
                    Instance {
                        running: true,
                        ..instance
                    },
                );
                running += 1;
                self.save(&mut record)?;
            }
            while running < prev.replicas {
                let id = format!("{service}-r{}", record.instances.len() + 1);
                let starting = Instance::starting(prev, &id, &host.name);
                let instance = self
                    .launch(&mut record, starting, target.start(prev, &id, &host))
                    .await?;
                target
                    .wait_healthy(&instance, &prev.health_path, Duration::from_secs(60))
                    .await?;
                running += 1;
            }
            record.state = State::Active;
        } else {
            record.state = State::Absent;
        }
        let record = self.rolled_back(record, String::new())?;
        self.retain(target).await;
        Ok(record)
    }

    /// Rollback on a scheduling target: the recorded previous spec is applied again, to every
    /// task at once (or the service deleted, on a first deploy). Replicas the scheduler cannot
    /// place now (a node was lost) are reported, not waited for: every task that runs, runs
    /// the previous digest.
    async fn restore(
        &self,
        mut record: ServiceRecord,
        target: &dyn Target,
        scheduler: &dyn Rollout,
    ) -> Result<ServiceRecord, DeployError> {
        let service = record.service.clone();
        let mut shortfall = String::new();
        // A canary beside it, if any (recorded or not: a wharf killed while starting one).
        scheduler.delete(&canary_service(&service)).await?;
        match record.previous.clone() {
            Some(mut previous) => {
                // Every task at once: the revision going away failed, and replica by replica
                // an update would wait on a replica no node can take now.
                previous.rollout.batch_size = previous.replicas;
                record.instances = scheduler.apply(&previous).await?;
                self.save(&mut record)?;
                if let Err(e) = self.check_rolled_out(target, &previous, &record.instances).await {
                    let DeployError::Incomplete { why, .. } = e else {
                        return Err(e);
                    };
                    shortfall = format!("; short of replicas: {why}");
                }
                record.state = State::Active;
            }
            None => {
                scheduler.delete(&service).await?;
                record.instances.clear();
                record.state = State::Absent;
            }
        }
        self.rolled_back(record, shortfall)
    }

    /// The end of every rollback: the previous revision is current again.
    fn rolled_back(&self, mut record: ServiceRecord, remark: String) -> Result<ServiceRecord, DeployError> {
        let service = record.service.clone();
        record.current = record.previous.take();
        record.owner = None;
        record.traffic = None;
        record.held = None;
        self.save(&mut record)?;
        let message = match &record.current {
            Some(spec) => format!(
                "{service}: rolled back to {} ({}){remark}",
                spec.revision.version, spec.revision.digest
            ),
            None => format!("{service}: rolled back; no earlier revision, nothing runs"),
        };
        self.note(&service, Transition::RolledBack, record.current.as_ref(), message);
        Ok(record)
    }

    /// Stop and delete every instance and forget the service (its images stay).
    pub async fn remove(&self, service: &str) -> Result<ServiceRecord, DeployError> {
        self.lock(service)?;
        let result = async {
            let mut record = self.existing(service)?;
            let target = self.target(&record.target).await?;
            self.reconcile(&mut record, target).await?;
            match target.rollout() {
                Some(scheduler) => {
                    scheduler.delete(&canary_service(service)).await?;
                    scheduler.delete(service).await?;
                }
                None => {
                    for instance in &record.instances {
                        target.remove(instance).await?;
                    }
                }
            }
            record.instances.clear();
            let file = self.services_dir.join(format!("{service}.json"));
            std::fs::remove_file(&file).map_err(|source| DeployError::State {
                service: service.to_string(),
                context: format!("removing {}", file.display()),
                source,
            })?;
            record.state = State::Absent;
            self.retain(target).await;
            self.note(service, Transition::Removed, None, format!("{service}: removed"));
            Ok(record)
        }
        .await;
        self.unlock(service);
        result
    }

    /// The service with each instance's running flag checked against the target.
    pub async fn status(&self, service: &str) -> Result<ServiceRecord, DeployError> {
        let mut record = self.existing(service)?;
        let target = self.target(&record.target).await?;
        if let Some(scheduler) = target.rollout() {
            record.instances = scheduler.tasks(service).await?;
            if record.traffic.is_some() {
                record
                    .instances
                    .extend(scheduler.tasks(&canary_service(service)).await?);
            }
            return Ok(weigh(record));
        }
        // Shown as found; a decision (rollback, remove) records it.
        self.reconcile(&mut record, target).await?;
        for instance in &mut record.instances {
            instance.running = target.is_running(instance).await;
        }
        Ok(weigh(record))
    }

    /// Every service, each with its instances checked; a service whose state cannot be read
    /// is an error of its own, and the others are still listed.
    pub async fn list(&self) -> Vec<Result<ServiceRecord, DeployError>> {
        let mut out = Vec::new();
        for r in ServiceRecord::list(&self.services_dir) {
            out.push(match r {
                Ok(r) => self.status(&r.service).await,
                Err((service, source)) => Err(DeployError::State {
                    context: format!("state of `{service}`"),
                    service,
                    source,
                }),
            });
        }
        out
    }

    /// Running instances; none for a service never deployed (a template's fallback).
    pub async fn instances(&self, service: &str) -> Result<Vec<Instance>, DeployError> {
        if self.load(service)?.is_none() {
            return Ok(Vec::new());
        }
        Ok(self
            .status(service)
            .await?
            .instances
            .into_iter()
            .filter(|i| i.running)
            .collect())
    }

    /// Roll back what a run left, saying `why` first, and saying so if it fails: the service
    /// then needs a human.
    async fn settle_by_rollback(&self, record: &ServiceRecord, why: String) {
        let service = &record.service;
        self.note(service, Transition::RollingBack, record.previous.as_ref(), why);
        if let Err(e) = self.rollback(service).await {
            self.note(
                service,
                Transition::RollbackFailed,
                record.previous.as_ref(),
                format!(
                    "{service}: the rollback FAILED: {e}; the service needs a human: see `wharf status {service}`, then `wharf rollback {service}`"
                ),
            );
        }
    }

    /// After a run: a failed or interrupted run rolls back what it left unconfirmed, unless
    /// the pipeline says `on-failure: pause`.
    pub async fn settle(&self, run_failed: bool, on_failure: OnFailure) -> Ledger {
        let touched = self.ledger.lock().unwrap().touched.clone();
        for service in touched {
            let Ok(Some(record)) = self.load(&service) else {
                continue;
            };
            if !matches!(record.state, State::Upgrading | State::Upgraded | State::RollingBack) {
                continue;
            }
            // Decided meanwhile by a person, and upgraded again by another run: not ours.
            // Held for a person: not the run's to decide.
            if record.owner.as_ref().is_some_and(|owner| !self.owns(owner)) || record.held.is_some() {
                continue;
            }
            if !run_failed && record.state == State::Upgrading {
                // Never left split: a plan that stops short of 100% is undone.
                self.ledger.lock().unwrap().unfinished.insert(service.clone());
                let why = format!(
                    "{service}: the run ended with the upgrade unfinished{}; a canary plan ends with `traffic: 100`. Rolling back",
                    record
                        .traffic
                        .map(|t| format!(" at {t}% of the traffic"))
                        .unwrap_or_default()
                );
                self.settle_by_rollback(&record, why).await;
                continue;
            }
            if !run_failed {
                if record.state == State::Upgraded {
                    self.note(
                        &service,
                        Transition::LeftUpgraded,
                        record.current.as_ref(),
                        format!(
                            "{service}: left upgraded; finish with `wharf confirm {service}` or `wharf rollback {service}`"
                        ),
                    );
                }
                continue;
            }
            match on_failure {
                OnFailure::Rollback => {
                    self.settle_by_rollback(&record, format!("{service}: the run failed; rolling back"))
                        .await;
                }
                OnFailure::Pause => {
                    self.unlock(&service);
                    self.ledger.lock().unwrap().paused.insert(service.clone());
                    self.note(
                        &service,
                        Transition::Paused,
                        record.current.as_ref(),
                        format!(
                            "{service}: the run failed and on-failure is pause; decide with `wharf confirm {service}` or `wharf rollback {service}`"
                        ),
                    );
                }
            }
        }
        self.ledger()
    }
}

/// A spec wharf can deploy: a valid service name and an image pinned by its own digest.
fn check_spec(spec: &Spec) -> Result<(), DeployError> {
    let service = spec.service.clone();
    check_service(&service)?;
    let reference = ImageRef::parse(&spec.revision.image).map_err(|why| refused(&service, why))?;
    match &reference.digest {
        None => {
            return Err(refused(
                &service,
                format!(
                    "{} has no digest; deploys pin digests so a rollback returns to exactly this build: use the `image` output of builtin:push",
                    spec.revision.image
                ),
            ));
        }
        Some(d) if *d != spec.revision.digest => {
            return Err(refused(
                &service,
                format!("{} does not match digest {}", spec.revision.image, spec.revision.digest),
            ));
        }
        Some(_) => {}
    }
    Ok(())
}

fn current_spec(record: &ServiceRecord) -> Result<Spec, DeployError> {
    record.current.clone().ok_or_else(|| DeployError::Inconsistent {
        service: record.service.clone(),
        state: record.state.as_str(),
    })
}

/// Service names become file names: letters, digits, `-` and `_` only.
fn check_service(service: &str) -> Result<(), DeployError> {
    if crate::pipeline::model::is_identifier(service) {
        Ok(())
    } else {
        Err(refused(
            service,
            format!("`{service}` is not a valid service name (letters, digits, `-`, `_`)"),
        ))
    }
}

/// A canary's next share of the traffic, after `now`: 1 to 99 (100 ends the upgrade instead),
/// and never less than it had (a plan only goes forward).
fn check_share(service: &str, now: Option<u8>, percent: u8) -> Result<(), DeployError> {
    if !(1..=99).contains(&percent) {
        return Err(refused(
            service,
            format!(
                "a canary takes 1 to 99 percent of the traffic, not {percent}; at 100 the upgrade finishes and the previous revision's instances stop"
            ),
        ));
    }
    match now.filter(|now| percent < *now) {
        Some(now) => Err(refused(
            service,
            format!(
                "the canary of `{service}` already takes {now}% of the traffic; a plan only goes forward ({now} -> {percent}): roll back to start again"
            ),
        )),
        None => Ok(()),
    }
}

/// On a target that schedules services itself, the service a canary of `service` runs as.
fn canary_service(service: &str) -> String {
    format!("{service}-canary")
}

/// The replicas a canary of `percent` takes of `replicas` on a scheduling target: rounded
/// up, one at least, all but one at most.
fn canary_share(replicas: u32, percent: u8) -> u32 {
    (u32::from(percent) * replicas)
        .div_ceil(100)
        .clamp(1, replicas.saturating_sub(1).max(1))
}

/// The end of a canary on a scheduling target, some task serving throughout: the previous
/// revision's service takes the new revision at its reduced size (the canary's tasks serve
/// while its tasks are replaced), the canary service goes, and the service grows to all its
/// replicas. The tasks afterwards.
async fn end_canary(scheduler: &dyn Rollout, spec: &Spec, traffic: u8) -> Result<Vec<Instance>, DeployError> {
    let reduced = Spec {
        replicas: spec.replicas - canary_share(spec.replicas, traffic).min(spec.replicas.saturating_sub(1)),
        ..spec.clone()
    };
    scheduler.apply(&reduced).await?;
    scheduler.delete(&canary_service(&spec.service)).await?;
    Ok(scheduler.apply(spec).await?)
}

/// The label a load balancer's template reads an instance's weight from.
pub const WEIGHT_LABEL: &str = "wharf.weight";

/// A canary's split as weights: while both revisions run, each running instance is labelled
/// with an integer weight such that the current revision's instances together take
/// `traffic` percent (n_old new instances at `traffic`, n_new old ones at `100 - traffic`,
/// over their greatest common divisor).
fn weigh(mut record: ServiceRecord) -> ServiceRecord {
    let (Some(traffic), Some(current)) = (record.traffic, record.current.as_ref()) else {
        return record;
    };
    if record.state != State::Upgrading {
        return record;
    }
    let digest = current.revision.digest.clone();
    let running = |new: bool| {
        record
            .instances
            .iter()
            .filter(|i| i.running && (i.digest == digest) == new)
            .count() as u64
    };
    let (n_new, n_old) = (running(true), running(false));
    if n_new == 0 || n_old == 0 {
        return record;
    }
    let (w_new, w_old) = (u64::from(traffic) * n_old, u64::from(100 - traffic) * n_new);
    let g = gcd(w_new, w_old);
    for instance in record.instances.iter_mut().filter(|i| i.running) {
        let weight = if instance.digest == digest { w_new } else { w_old } / g;
        instance.labels.retain(|(k, _)| k != WEIGHT_LABEL);
        instance.labels.push((WEIGHT_LABEL.to_string(), weight.to_string()));
    }
    record
}

fn gcd(a: u64, b: u64) -> u64 {
    if b == 0 { a.max(1) } else { gcd(b, a % b) }
}

/// Put `instance` in the record in place of the one of its id, or add it.
fn put(record: &mut ServiceRecord, instance: Instance) {
    match record.instances.iter_mut().find(|i| i.id == instance.id) {
        Some(slot) => *slot = instance,
        None => record.instances.push(instance),
    }
}

fn find<'a>(record: &'a ServiceRecord, id: &str) -> Result<&'a Instance, DeployError> {
    record.instances.iter().find(|i| i.id == id).ok_or_else(|| {
        refused(
            &record.service,
            format!("service `{}` has no instance `{id}`", record.service),
        )
    })
}
