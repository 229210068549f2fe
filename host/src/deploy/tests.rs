//! The deploy state machine against an in-memory target: every transition, a crash (the
//! deployer dropped, as a killed process drops its locks) between any two, and settling
//! after a run. No process, container or network is involved.

use super::state::{Instance, Revision, Spec, State};
use super::{Actor, DeployError, Deployer, Ledger};
use crate::events::Events;
use crate::pipeline::OnFailure;
use crate::targets::{Host, Target, TargetError, Targets};
use std::collections::HashMap;
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// Instances are entries in a map; running or not is a flag. Shared between the deployers
/// of one test, as a real target outlives the processes that drive it.
#[derive(Default)]
struct MemoryTarget {
    running: Mutex<HashMap<String, bool>>,
    started: Mutex<u32>,
    /// The last instance started under each id.
    by_id: Mutex<HashMap<String, Instance>>,
    /// Start instances, then never return: the deployer is killed mid-start.
    hang_in_start: std::sync::atomic::AtomicBool,
}

#[async_trait::async_trait]
impl Target for MemoryTarget {
    fn name(&self) -> &'static str {
        "memory"
    }

    async fn hosts(&self) -> Result<Vec<Host>, TargetError> {
        Ok(vec![Host {
            name: "memory".into(),
            labels: vec![("storage".into(), "ssd".into())],
        }])
    }

    async fn prepare(&self, _spec: &Spec) -> Result<(), TargetError> {
        Ok(())
    }

    async fn start(&self, spec: &Spec, id: &str, host: &Host) -> Result<Instance, TargetError> {
        let handle = {
            let mut n = self.started.lock().unwrap();
            *n += 1;
            format!("h{n}")
        };
        self.running.lock().unwrap().insert(handle.clone(), true);
        let instance = Instance {
            id: id.to_string(),
            digest: spec.revision.digest.clone(),
            version: spec.revision.version.clone(),
            address: "memory".into(),
            port: 1,
            running: true,
            host: host.name.clone(),
            handle,
            labels: Vec::new(),
            log: None,
            condition: None,
        };
        self.by_id.lock().unwrap().insert(id.to_string(), instance.clone());
        if self.hang_in_start.load(std::sync::atomic::Ordering::Relaxed) {
            std::future::pending::<()>().await;
        }
        Ok(instance)
    }

    async fn find(&self, spec: &Spec, starting: &Instance) -> Result<Option<Instance>, TargetError> {
        let found = self.by_id.lock().unwrap().get(&starting.id).cloned();
        Ok(match found {
            Some(instance) if instance.digest == spec.revision.digest => {
                let running = self.is_running(&instance).await;
                (running || self.running.lock().unwrap().contains_key(&instance.handle))
                    .then_some(Instance { running, ..instance })
            }
            _ => None,
        })
    }

    async fn stop(&self, instance: &Instance) -> Result<(), TargetError> {
        self.running.lock().unwrap().insert(instance.handle.clone(), false);
        Ok(())
    }

    /// A new process for the instance, as the local target starts one.
    async fn resume(&self, spec: &Spec, instance: &Instance) -> Result<Instance, TargetError> {
        let host = Host {
            name: instance.host.clone(),
            labels: Vec::new(),
        };
        self.start(spec, &instance.id, &host).await
    }

    async fn remove(&self, instance: &Instance) -> Result<(), TargetError> {
        self.running.lock().unwrap().remove(&instance.handle);
        Ok(())
    }

    async fn is_running(&self, instance: &Instance) -> bool {
        self.running.lock().unwrap().get(&instance.handle) == Some(&true)
    }

    async fn wait_healthy(&self, instance: &Instance, _path: &str, _timeout: Duration) -> Result<(), TargetError> {
        if self.is_running(instance).await {
            Ok(())
        } else {
            Err(TargetError::Unhealthy {
                instance: instance.id.clone(),
                why: "is not running".into(),
            })
        }
    }
}

struct OnlyMemory(Arc<MemoryTarget>);

#[async_trait::async_trait]
impl Targets for OnlyMemory {
    async fn get(&self, name: &str) -> Result<&dyn Target, TargetError> {
        match name {
            "memory" => Ok(&*self.0),
            other => Err(TargetError::UnknownTarget { target: other.into() }),
        }
    }
}

struct World {
    workspace: tempfile::TempDir,
    target: Arc<MemoryTarget>,
}

impl World {
    fn new() -> World {
        World {
            workspace: tempfile::tempdir().unwrap(),
            target: Arc::default(),
        }
    }

    fn deployer(&self, actor: Actor) -> Deployer {
        Deployer::with_targets(
            self.workspace.path(),
            actor,
            Events::new(),
            Box::new(OnlyMemory(self.target.clone())),
        )
    }

    fn run(&self, id: &str) -> Deployer {
        self.deployer(Actor::Run(id.into()))
    }

    fn running(&self) -> usize {
        self.target.running.lock().unwrap().values().filter(|r| **r).count()
    }

    fn state_file(&self) -> std::path::PathBuf {
        Path::new(self.workspace.path()).join(".wharf/state/services/svc.json")
    }
}

fn spec(version: &str) -> Spec {
    let digest = format!("sha256:{}", version.repeat(64).chars().take(64).collect::<String>());
    Spec {
        service: "svc".into(),
        target: "memory".into(),
        revision: Revision {
            image: format!("svc:{version}@{digest}"),
            digest,
            version: version.into(),
        },
        replicas: 2,
        port: 8080,
        health_path: "/".into(),
        env: Vec::new(),
        labels: Vec::new(),
        one_per_host: false,
        host_labels: Vec::new(),
        rollout: Default::default(),
    }
}

/// The steps of a start-first rolling upgrade of two instances, as `builtin:upgrade` makes
/// them; `stop_after` calls in, the "process" stops (returns early).
async fn upgrade(d: &Deployer, version: &str, stop_after: usize) -> usize {
    let mut done = 0;
    macro_rules! step {
        ($e:expr) => {
            if done == stop_after {
                return done;
            }
            $e;
            done += 1;
        };
    }
    step!(d.begin_upgrade(spec(version)).await.unwrap());
    let old: Vec<Instance> = d
        .status("svc")
        .await
        .unwrap()
        .instances
        .into_iter()
        .filter(|i| i.running)
        .collect();
    for n in 0..2 {
        step!({
            let started = d.start_instance("svc").await.unwrap();
            d.wait_healthy("svc", &started.id, Duration::from_secs(1))
                .await
                .unwrap();
        });
        if let Some(o) = old.get(n) {
            step!(d.stop_instance("svc", &o.id).await.unwrap());
        }
    }
    step!(d.finish_upgrade("svc").await.unwrap());
    done
}

const STEPS: usize = 6;

async fn active(world: &World, version: &str) {
    let d = world.run("first");
    assert_eq!(
        upgrade(&d, version, usize::MAX).await,
        if version == "1" { 4 } else { STEPS }
    );
    d.confirm("svc").await.unwrap();
}

#[tokio::test]
async fn every_transition_of_an_upgrade() {
    let w = World::new();
    active(&w, "1").await;
    let person = w.deployer(Actor::Person);
    let r = person.status("svc").await.unwrap();
    assert_eq!(
        (r.state, r.current.unwrap().revision.version.as_str()),
        (State::Active, "1")
    );
    assert_eq!(w.running(), 2);

    // Upgrade to 2 and confirm: the old instances go.
    let d = w.run("run-2");
    assert_eq!(upgrade(&d, "2", usize::MAX).await, STEPS);
    let r = d.status("svc").await.unwrap();
    assert_eq!(r.state, State::Upgraded);
    assert_eq!(r.owner.as_deref(), Some("run-2"));
    assert_eq!(r.previous.as_ref().unwrap().revision.version, "1");
    let r = d.confirm("svc").await.unwrap();
    assert_eq!((r.state, r.owner), (State::Active, None));
    assert_eq!(r.instances.len(), 2);
    assert!(r.instances.iter().all(|i| i.version == "2"));
    assert_eq!(w.running(), 2);

    // Upgrade to 3 and roll back: 2 runs again, 3 is gone.
    let d = w.run("run-3");
    upgrade(&d, "3", usize::MAX).await;
    let r = d.rollback("svc").await.unwrap();
    assert_eq!(r.state, State::Active);
    assert_eq!(r.current.unwrap().revision.version, "2");
    assert!(r.instances.iter().all(|i| i.version == "2" && i.running));
    assert_eq!(w.running(), 2);
    assert_eq!(d.ledger().rolled_back.into_iter().collect::<Vec<_>>(), ["svc"]);
}

#[tokio::test]
async fn an_upgraded_service_blocks_the_next_until_decided() {
    let w = World::new();
    active(&w, "1").await;
    let a = w.run("run-a");
    upgrade(&a, "2", usize::MAX).await;
    let b = w.run("run-b");
    let e = b.begin_upgrade(spec("3")).await.unwrap_err();
    assert!(e.to_string().contains("awaits a decision"), "{e}");
    let e = b.rollback("svc").await.unwrap_err();
    assert!(
        matches!(e, DeployError::NotOwner { ref owner, .. } if owner == "run-a"),
        "{e}"
    );
    assert!(
        b.ledger().rollback_failed.is_empty(),
        "a refusal is not a failed rollback"
    );
    // A person decides any upgrade.
    w.deployer(Actor::Person).confirm("svc").await.unwrap();
    b.begin_upgrade(spec("3")).await.unwrap();
}

/// Stop the process after every call of an upgrade in turn: the state file says where it
/// stopped, a new run is refused, and a person's rollback always returns to version 1 with
/// its instances running.
#[tokio::test]
async fn a_crash_between_any_two_calls_leaves_a_state_a_person_can_roll_back() {
    for stop_after in 1..=STEPS {
        let w = World::new();
        active(&w, "1").await;
        {
            let crashed = w.run("crashed");
            assert_eq!(upgrade(&crashed, "2", stop_after).await, stop_after);
            // Dropped here: its lock goes, as with a killed process.
        }
        let text = std::fs::read_to_string(w.state_file()).unwrap();
        let expected = if stop_after == STEPS { "upgraded" } else { "upgrading" };
        assert!(
            text.contains(&format!("\"state\": \"{expected}\"")),
            "after {stop_after}: {text}"
        );

        let next = w.run("next");
        let e = next.begin_upgrade(spec("3")).await.unwrap_err();
        assert!(e.is_refusal(), "after {stop_after}: {e}");

        let r = w.deployer(Actor::Person).rollback("svc").await.unwrap();
        assert_eq!(r.state, State::Active, "after {stop_after}");
        assert_eq!(r.current.unwrap().revision.version, "1", "after {stop_after}");
        assert!(
            r.instances.iter().all(|i| i.version == "1" && i.running),
            "after {stop_after}: {:?}",
            r.instances
        );
        assert_eq!(w.running(), 2, "after {stop_after}");
    }
}

/// Killed while the target starts an instance: it runs, and no record says so but the one
/// saved before the start. The next rollback finds it by its id and removes it, also when
/// the rollback that was killed was starting an instance of the previous revision.
#[tokio::test]
async fn a_crash_inside_a_start_leaves_no_instance_running_unrecorded() {
    use std::sync::atomic::Ordering;
    let w = World::new();
    active(&w, "1").await;
    let crashed = w.run("crashed");
    crashed.begin_upgrade(spec("2")).await.unwrap();
    w.target.hang_in_start.store(true, Ordering::Relaxed);
    let killed = tokio::time::timeout(Duration::from_millis(50), crashed.start_instance("svc")).await;
    assert!(killed.is_err(), "the start never returns");
    drop(crashed);
    assert_eq!(w.running(), 3, "version 2's instance runs");
    let text = std::fs::read_to_string(w.state_file()).unwrap();
    assert!(text.contains("\"condition\": \"starting\""), "{text}");

    // A person's rollback is killed in turn while it starts a replacement for an instance
    // of version 1 that was lost meanwhile.
    let lost = w.deployer(Actor::Person).status("svc").await.unwrap().instances;
    let lost = lost.iter().find(|i| i.version == "1").unwrap().clone();
    w.target.running.lock().unwrap().remove(&lost.handle);
    let person = w.deployer(Actor::Person);
    let killed = tokio::time::timeout(Duration::from_millis(50), person.rollback("svc")).await;
    assert!(killed.is_err());
    drop(person);
    w.target.hang_in_start.store(false, Ordering::Relaxed);

    let r = w.deployer(Actor::Person).rollback("svc").await.unwrap();
    assert_eq!(r.state, State::Active);
    assert!(
        r.instances
            .iter()
            .all(|i| i.version == "1" && i.running && !i.is_starting()),
        "{:?}",
        r.instances
    );
    assert_eq!(w.running(), 2, "nothing runs that the state does not name");
    assert_eq!(r.instances.len(), 2);
}

#[tokio::test]
async fn settle_rolls_back_a_failed_runs_own_upgrade_or_leaves_it_paused() {
    let w = World::new();
    active(&w, "1").await;
    let run = w.run("failed");
    upgrade(&run, "2", usize::MAX).await;
    let ledger: Ledger = run.settle(true, OnFailure::Rollback).await;
    assert_eq!(ledger.rolled_back.iter().collect::<Vec<_>>(), ["svc"]);
    assert_eq!(
        w.deployer(Actor::Person).status("svc").await.unwrap().state,
        State::Active
    );

    let run = w.run("paused");
    upgrade(&run, "3", usize::MAX).await;
    let ledger = run.settle(true, OnFailure::Pause).await;
    assert_eq!(ledger.paused.iter().collect::<Vec<_>>(), ["svc"]);
    assert_eq!(
        w.deployer(Actor::Person).status("svc").await.unwrap().state,
        State::Upgraded
    );

    // A successful run that leaves an upgrade for a person settles nothing.
    w.deployer(Actor::Person).rollback("svc").await.unwrap();
    let run = w.run("left");
    upgrade(&run, "4", usize::MAX).await;
    let ledger = run.settle(false, OnFailure::Rollback).await;
    assert!(ledger.rolled_back.is_empty() && ledger.paused.is_empty());
    assert_eq!(
        w.deployer(Actor::Person).status("svc").await.unwrap().state,
        State::Upgraded
    );

    // Another run's failure does not touch it.
    let other = w.run("other");
    assert!(other.begin_upgrade(spec("5")).await.is_err());
    let ledger = other.settle(true, OnFailure::Rollback).await;
    assert!(ledger.rolled_back.is_empty() && ledger.touched.is_empty());
    assert_eq!(
        w.deployer(Actor::Person).status("svc").await.unwrap().state,
        State::Upgraded
    );
}

/// The weights a load balancer reads, by version.
fn weights(r: &super::state::ServiceRecord) -> Vec<(String, String)> {
    let mut out: Vec<(String, String)> = r
        .instances
        .iter()
        .filter(|i| i.running)
        .map(|i| {
            let w = i.labels.iter().find(|(k, _)| k == super::WEIGHT_LABEL);
            (i.version.clone(), w.map_or("-".into(), |(_, v)| v.clone()))
        })
        .collect();
    out.sort();
    out
}

#[tokio::test]
async fn a_canary_shifts_weights_forward_only_and_finishes_without_them() {
    let w = World::new();
    active(&w, "1").await;
    let d = w.run("canary");
    d.begin_upgrade(spec("2")).await.unwrap();
    let canary = d.start_instance("svc").await.unwrap();
    // 1 new beside 2 old at 10%: 20 against 90 each, over their divisor.
    let r = d.shift_traffic("svc", 10).await.unwrap();
    assert_eq!(r.traffic, Some(10));
    let expect = |v: &[(&str, &str)]| {
        v.iter()
            .map(|(a, b)| (a.to_string(), b.to_string()))
            .collect::<Vec<_>>()
    };
    assert_eq!(weights(&r), expect(&[("1", "9"), ("1", "9"), ("2", "2")]));
    assert_eq!(weights(&d.status("svc").await.unwrap()), weights(&r));
    // The next step of the run carries on with the same revision.
    let again = d.begin_upgrade(spec("2")).await.unwrap();
    assert_eq!((again.state, again.traffic), (State::Upgrading, Some(10)));
    // Backwards, 0 and 100 are refused and change nothing.
    for bad in [5, 0, 100] {
        let e = d.shift_traffic("svc", bad).await.unwrap_err();
        assert!(matches!(e, DeployError::Refused { .. }), "{bad}: {e}");
    }
    let r = d.shift_traffic("svc", 50).await.unwrap();
    assert_eq!(weights(&r), expect(&[("1", "1"), ("1", "1"), ("2", "2")]));
    // The end of the upgrade ends the split.
    d.start_instance("svc").await.unwrap();
    for i in r.instances.iter().filter(|i| i.version == "1") {
        d.stop_instance("svc", &i.id).await.unwrap();
    }
    let r = d.finish_upgrade("svc").await.unwrap();
    assert_eq!(r.traffic, None);
    assert!(weights(&d.status("svc").await.unwrap()).iter().all(|(_, w)| w == "-"));
    let _ = canary;
}

#[tokio::test]
async fn a_held_canary_is_left_by_its_run_and_finished_by_a_person() {
    let w = World::new();
    active(&w, "1").await;
    let d = w.run("canary");
    d.begin_upgrade(spec("2")).await.unwrap();
    d.start_instance("svc").await.unwrap();
    d.shift_traffic("svc", 10).await.unwrap();
    d.hold("svc", "analysis inconclusive").await.unwrap();
    // The run may not decide it, and its end leaves it split.
    assert!(matches!(d.rollback("svc").await.unwrap_err(), DeployError::Held { .. }));
    let ledger = d.settle(true, OnFailure::Rollback).await;
    assert!(ledger.held.contains("svc") && ledger.rolled_back.is_empty());
    drop(d);
    let r = w.deployer(Actor::Person).status("svc").await.unwrap();
    assert_eq!((r.state, r.traffic), (State::Upgrading, Some(10)));
    assert_eq!(w.running(), 3);
    // Another run cannot begin over it.
    assert!(w.run("other").begin_upgrade(spec("3")).await.is_err());
    // A person's confirm carries it to every instance on 2.
    let r = w.deployer(Actor::Person).confirm("svc").await.unwrap();
    assert_eq!((r.state, r.held, r.traffic), (State::Active, None, None));
    assert_eq!(r.instances.iter().filter(|i| i.running && i.version == "2").count(), 2);
    assert!(r.instances.iter().all(|i| i.version == "2"));
    assert_eq!(w.running(), 2);
}

#[tokio::test]
async fn a_run_that_ends_with_its_canary_short_of_100_is_rolled_back() {
    let w = World::new();
    active(&w, "1").await;
    let d = w.run("short");
    d.begin_upgrade(spec("2")).await.unwrap();
    d.start_instance("svc").await.unwrap();
    d.shift_traffic("svc", 60).await.unwrap();
    let ledger = d.settle(false, OnFailure::Rollback).await;
    assert!(ledger.unfinished.contains("svc") && ledger.rolled_back.contains("svc"));
    let r = d.status("svc").await.unwrap();
    assert_eq!((r.state, r.traffic), (State::Active, None));
    assert_eq!(r.current.unwrap().revision.version, "1");
    assert_eq!(w.running(), 2);
}

#[tokio::test]
async fn a_resumed_run_carries_on_the_upgrade_it_adopts() {
    let w = World::new();
    active(&w, "1").await;
    let first = w.run("first-try");
    upgrade(&first, "2", usize::MAX).await;
    drop(first);
    let resumed = w.run("resumed");
    resumed.adopt(&["first-try".to_string()]);
    resumed.confirm("svc").await.unwrap();
    assert_eq!(
        w.deployer(Actor::Person).status("svc").await.unwrap().state,
        State::Active
    );
}

/// A target with a scheduler of its own, in memory: a service is the specs applied to it.
/// Each apply places the spec's replicas, less those no node can take (`unplaceable`, as
/// after a node was lost), which wait for one.
#[derive(Default)]
struct MemoryScheduler {
    applied: Mutex<Vec<Spec>>,
    unplaceable: Mutex<u32>,
}

impl MemoryScheduler {
    fn tasks_now(&self) -> Vec<Instance> {
        let Some(spec) = self.applied.lock().unwrap().last().cloned() else {
            return Vec::new();
        };
        let placed = spec.replicas.saturating_sub(*self.unplaceable.lock().unwrap());
        (1..=spec.replicas)
            .map(|slot| {
                let running = slot <= placed;
                Instance {
                    id: format!("svc.{slot}"),
                    digest: spec.revision.digest.clone(),
                    version: spec.revision.version.clone(),
                    address: format!("node-{slot}"),
                    port: 8080,
                    running,
                    host: if running { format!("node-{slot}") } else { String::new() },
                    handle: format!("task-{slot}"),
                    labels: Vec::new(),
                    log: None,
                    condition: Some(if running {
                        format!("running on node-{slot}")
                    } else {
                        "pending: no suitable node".into()
                    }),
                }
            })
            .collect()
    }

    fn last_applied(&self) -> Option<Spec> {
        self.applied.lock().unwrap().last().cloned()
    }
}

#[async_trait::async_trait]
impl Target for MemoryScheduler {
    fn name(&self) -> &'static str {
        "scheduler"
    }

    async fn hosts(&self) -> Result<Vec<Host>, TargetError> {
        Ok((1..=2)
            .map(|n| Host {
                name: format!("node-{n}"),
                labels: vec![("storage".into(), "ssd".into())],
            })
            .collect())
    }

    async fn prepare(&self, _spec: &Spec) -> Result<(), TargetError> {
        Ok(())
    }

    async fn find(&self, _: &Spec, _: &Instance) -> Result<Option<Instance>, TargetError> {
        Ok(None)
    }

    async fn start(&self, _: &Spec, _: &str, _: &Host) -> Result<Instance, TargetError> {
        Err(TargetError::Scheduled { target: "scheduler" })
    }

    async fn stop(&self, _: &Instance) -> Result<(), TargetError> {
        Err(TargetError::Scheduled { target: "scheduler" })
    }

    async fn resume(&self, _: &Spec, _: &Instance) -> Result<Instance, TargetError> {
        Err(TargetError::Scheduled { target: "scheduler" })
    }

    async fn remove(&self, _: &Instance) -> Result<(), TargetError> {
        Err(TargetError::Scheduled { target: "scheduler" })
    }

    async fn is_running(&self, instance: &Instance) -> bool {
        self.tasks_now().iter().any(|t| t.id == instance.id && t.running)
    }

    async fn wait_healthy(&self, instance: &Instance, _path: &str, _timeout: Duration) -> Result<(), TargetError> {
        if instance.running {
            Ok(())
        } else {
            Err(TargetError::Unhealthy {
                instance: instance.id.clone(),
                why: "is not running".into(),
            })
        }
    }

    fn rollout(&self) -> Option<&dyn crate::targets::Rollout> {
        Some(self)
    }
}

#[async_trait::async_trait]
impl crate::targets::Rollout for MemoryScheduler {
    async fn apply(&self, spec: &Spec) -> Result<Vec<Instance>, TargetError> {
        self.applied.lock().unwrap().push(spec.clone());
        Ok(self.tasks_now())
    }

    async fn tasks(&self, _service: &str) -> Result<Vec<Instance>, TargetError> {
        Ok(self.tasks_now())
    }

    async fn delete(&self, _service: &str) -> Result<(), TargetError> {
        self.applied.lock().unwrap().clear();
        Ok(())
    }
}

struct BothTargets(Arc<MemoryTarget>, Arc<MemoryScheduler>);

#[async_trait::async_trait]
impl Targets for BothTargets {
    async fn get(&self, name: &str) -> Result<&dyn Target, TargetError> {
        match name {
            "memory" => Ok(&*self.0),
            "scheduler" => Ok(&*self.1),
            other => Err(TargetError::UnknownTarget { target: other.into() }),
        }
    }
}

struct SchedulerWorld {
    workspace: tempfile::TempDir,
    scheduler: Arc<MemoryScheduler>,
}

impl SchedulerWorld {
    fn new() -> Self {
        Self {
            workspace: tempfile::tempdir().unwrap(),
            scheduler: Arc::default(),
        }
    }

    fn deployer(&self, actor: Actor) -> Deployer {
        Deployer::with_targets(
            self.workspace.path(),
            actor,
            Events::new(),
            Box::new(BothTargets(Arc::default(), self.scheduler.clone())),
        )
    }

    fn state(&self) -> super::state::ServiceRecord {
        super::state::ServiceRecord::load(&self.workspace.path().join(".wharf/state/services"), "svc")
            .unwrap()
            .unwrap()
    }
}

fn scheduled(version: &str) -> Spec {
    Spec {
        target: "scheduler".into(),
        one_per_host: true,
        ..spec(version)
    }
}

#[tokio::test]
async fn a_scheduling_target_takes_the_whole_rollout_and_a_rollback_reapplies_the_previous_spec() {
    let w = SchedulerWorld::new();
    let run = w.deployer(Actor::Run("r1".into()));
    // A target without a scheduler: nothing done, the step drives the instances.
    assert!(run.rollout(spec("1")).await.unwrap().is_none());
    assert!(!w.workspace.path().join(".wharf/state/services/svc.json").exists());
    // A scheduler's target refuses the per-instance calls.
    let refused = run.begin_upgrade(scheduled("1")).await.unwrap_err().to_string();
    assert!(refused.contains("places and replaces tasks itself"), "{refused}");

    let first = run.rollout(scheduled("1")).await.unwrap().unwrap();
    assert_eq!(first.state, State::Upgraded);
    assert_eq!(first.instances.iter().filter(|i| i.running).count(), 2);
    assert_eq!(run.confirm("svc").await.unwrap().state, State::Active);

    let run = w.deployer(Actor::Run("r2".into()));
    let second = run.rollout(scheduled("2")).await.unwrap().unwrap();
    assert_eq!(second.previous.as_ref().unwrap().revision.version, "1");
    let applied = w.scheduler.last_applied().unwrap();
    assert_eq!(
        (applied.revision.version.as_str(), applied.rollout.batch_size),
        ("2", 1)
    );
    let back = run.rollback("svc").await.unwrap();
    assert_eq!(back.state, State::Active);
    assert_eq!(back.current.as_ref().unwrap().revision.version, "1");
    // The previous spec again, every task at once; the record keeps its own batches.
    let applied = w.scheduler.last_applied().unwrap();
    assert_eq!(
        (applied.revision.version.as_str(), applied.rollout.batch_size),
        ("1", 2)
    );
    assert_eq!(w.state().current.unwrap().rollout.batch_size, 1);
    assert!(back.instances.iter().all(|i| i.running && i.version == "1"));

    // A first deploy rolled back deletes the service.
    let w = SchedulerWorld::new();
    let run = w.deployer(Actor::Run("r3".into()));
    run.rollout(scheduled("1")).await.unwrap().unwrap();
    assert_eq!(run.rollback("svc").await.unwrap().state, State::Absent);
    assert!(w.scheduler.last_applied().is_none());
}

#[tokio::test]
async fn a_lost_replica_fails_the_rollout_or_the_confirm_and_the_rollback_reports_it() {
    let w = SchedulerWorld::new();
    let person = w.deployer(Actor::Person);
    person.rollout(scheduled("1")).await.unwrap().unwrap();
    person.confirm("svc").await.unwrap();

    // Lost during the rollout: the upgrade fails, left for the run's end to roll back.
    *w.scheduler.unplaceable.lock().unwrap() = 1;
    let run = w.deployer(Actor::Run("during".into()));
    let failed = run.rollout(scheduled("2")).await.unwrap_err().to_string();
    assert!(
        failed.contains("not fully rolled out: 1 of 2 task(s) run 2"),
        "{failed}"
    );
    assert!(failed.contains("svc.2 pending: no suitable node"), "{failed}");
    assert_eq!(w.state().state, State::Upgrading);
    let ledger = run.settle(true, OnFailure::Rollback).await;
    assert_eq!(ledger.rolled_back.iter().collect::<Vec<_>>(), ["svc"]);
    let state = w.state();
    assert_eq!(
        (state.state, state.current.unwrap().revision.version.as_str()),
        (State::Active, "1")
    );

    // Lost after the rollout, before the decision: confirm refuses, rollback goes through.
    *w.scheduler.unplaceable.lock().unwrap() = 0;
    let run = w.deployer(Actor::Run("after".into()));
    run.rollout(scheduled("3")).await.unwrap().unwrap();
    *w.scheduler.unplaceable.lock().unwrap() = 1;
    let refused = run.confirm("svc").await.unwrap_err();
    assert!(matches!(refused, DeployError::Incomplete { .. }), "{refused}");
    assert_eq!(w.state().state, State::Upgraded);
    let back = run.rollback("svc").await.unwrap();
    assert_eq!(back.state, State::Active);
    assert!(back.instances.iter().filter(|i| i.running).all(|i| i.version == "1"));
}

#[tokio::test]
async fn start_first_on_every_host_with_one_per_host_is_refused_before_anything_changes() {
    let w = SchedulerWorld::new();
    let run = w.deployer(Actor::Run("r".into()));
    let mut spec = scheduled("1");
    spec.rollout.start_first = true;
    let refused = run.rollout(spec).await.unwrap_err();
    assert!(refused.is_refusal(), "{refused}");
    assert!(refused.to_string().contains("use `order: stop-first`"), "{refused}");
    assert!(w.scheduler.last_applied().is_none());
    assert!(!w.workspace.path().join(".wharf/state/services/svc.json").exists());
}
