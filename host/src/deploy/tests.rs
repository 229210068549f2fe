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
        Ok(Instance {
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
        })
    }

    async fn stop(&self, instance: &Instance) -> Result<(), TargetError> {
        self.running.lock().unwrap().insert(instance.handle.clone(), false);
        Ok(())
    }

    async fn resume(&self, _spec: &Spec, instance: &Instance) -> Result<Instance, TargetError> {
        self.running.lock().unwrap().insert(instance.handle.clone(), true);
        Ok(Instance {
            running: true,
            ..instance.clone()
        })
    }

    async fn remove(&self, instance: &Instance) -> Result<(), TargetError> {
        self.running.lock().unwrap().remove(&instance.handle);
        Ok(())
    }

    async fn is_running(&self, instance: &Instance) -> bool {
        self.running.lock().unwrap().get(&instance.handle) == Some(&true)
    }

    async fn wait_healthy(&self, instance: &Instance, _path: &str, _timeout: Duration) -> Result<(), DeployError> {
        if self.is_running(instance).await {
            Ok(())
        } else {
            Err(DeployError::Unhealthy {
                instance: instance.id.clone(),
                why: "is not running".into(),
            })
        }
    }
}

struct OnlyMemory(Arc<MemoryTarget>);

#[async_trait::async_trait]
impl Targets for OnlyMemory {
    async fn get(&self, name: &str) -> Result<&dyn Target, DeployError> {
        match name {
            "memory" => Ok(&*self.0),
            other => Err(DeployError::UnknownTarget { target: other.into() }),
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
