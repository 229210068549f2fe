//! The swarm target on a real three-node swarm (`.ci/swarm`: a manager labelled storage=hdd,
//! two workers labelled storage=ssd), with the seed pipeline's images pushed to a loopback
//! registry that every node pulls from. What the tests check is read from Swarm itself
//! through the docker CLI. Needs root and dockerd, as `.ci/run` has them.

mod common;
use common::Workspace;
use common::services::{CANARY_RUN, Load, Nginx, Registry, http_get, reached};
use common::swarm::Swarm;
use std::time::{Duration, Instant};

/// A swarm, a registry it pulls from, and a copy of the seed example to deploy from it.
struct Cluster {
    ws: Workspace,
    registry: Registry,
    swarm: Swarm,
}

/// A task of the service as Swarm lists it.
#[derive(Debug)]
struct Task {
    node: String,
    image: String,
    desired: String,
    current: String,
}

impl Cluster {
    fn up() -> Cluster {
        let swarm = Swarm::up();
        let registry = Registry::start();
        swarm.forward(registry.addr.rsplit_once(':').unwrap().1.parse().unwrap());
        Cluster {
            ws: Workspace::seed(),
            registry,
            swarm,
        }
    }

    /// `wharf ARGS` against the swarm's manager.
    fn on_swarm(&self, args: &[&str]) -> std::process::Command {
        let mut command = self.ws.command(args);
        command.env("DOCKER_HOST", &self.swarm.host);
        command
    }

    /// `wharf ARGS --var registry=... --var target=swarm`, against the swarm's manager.
    fn command(&self, args: &[&str]) -> std::process::Command {
        let registry = format!("registry={}", self.registry.addr);
        let mut all = args.to_vec();
        all.extend(["--var", &registry, "--var", "target=swarm"]);
        self.on_swarm(&all)
    }

    fn wharf(&self, args: &[&str]) -> common::Run {
        common::Run(self.command(args).output().unwrap())
    }

    fn status(&self) -> String {
        let out = self.on_swarm(&["status", "seed"]).output().unwrap();
        assert!(out.status.success(), "{out:?}");
        String::from_utf8(out.stdout).unwrap()
    }

    /// Every task Swarm still lists, history included.
    fn tasks(&self) -> Vec<Task> {
        self.swarm
            .docker(&[
                "service",
                "ps",
                "seed",
                "--no-trunc",
                "--format",
                "{{.Node}}|{{.Image}}|{{.DesiredState}}|{{.CurrentState}}",
            ])
            .lines()
            .map(|l| {
                let f: Vec<&str> = l.split('|').collect();
                Task {
                    node: f[0].to_string(),
                    image: f[1].to_string(),
                    desired: f[2].to_string(),
                    current: f[3].to_string(),
                }
            })
            .collect()
    }

    /// The tasks that run now.
    fn running(&self) -> Vec<Task> {
        self.tasks()
            .into_iter()
            .filter(|t| t.desired == "Running" && t.current.starts_with("Running"))
            .collect()
    }

    /// A node's address on the swarm's bridge, which the host reaches.
    fn address(node: &str) -> &'static str {
        match node {
            "manager" => "10.213.0.10",
            "worker-1" => "10.213.0.11",
            "worker-2" => "10.213.0.12",
            other => panic!("no node {other}"),
        }
    }

    /// A good release, deployed and confirmed: its version and digest.
    fn deploy_good(&self) -> (String, String) {
        let good = self.wharf(&["run", "pipeline.yml", "-v"]);
        assert_eq!(good.code(), 0, "{}", good.all());
        let version = good.output_of("version", "version").unwrap();
        let digest = good.output_of("push", "digest").unwrap();
        self.assert_every_task_runs(&version, &digest);
        (version, digest)
    }

    /// Two tasks run `digest`, one on each ssd worker, and each answers with `version`.
    fn assert_every_task_runs(&self, version: &str, digest: &str) {
        let running = self.running();
        let mut nodes: Vec<&str> = running.iter().map(|t| t.node.as_str()).collect();
        nodes.sort();
        assert_eq!(nodes, ["worker-1", "worker-2"], "{running:#?}");
        for task in &running {
            assert!(task.image.ends_with(&format!("@{digest}")), "{task:?} is not {digest}");
            let url = format!("http://{}:8080/api/v1/version", Self::address(&task.node));
            assert_eq!(
                http_get(&url).map(|(_, body)| body.trim().to_string()),
                Some(version.into())
            );
        }
    }

    /// After a rollback to `digest`: the service is active on it, and every task that runs
    /// (one at least) runs it.
    fn assert_rolled_back_to(&self, digest: &str) {
        let state = self.ws.service_state("seed");
        assert_eq!(state["state"], "active");
        assert_eq!(state["current"]["revision"]["digest"], digest);
        let running = self.running();
        assert!(
            !running.is_empty() && running.iter().all(|t| t.image.ends_with(&format!("@{digest}"))),
            "{running:#?}"
        );
    }

    /// Start `pipeline` in the background and wait until its upgrade is done.
    fn start_until_upgraded(&self, pipeline: &str) -> std::process::Child {
        self.start_until(pipeline, "upgraded")
    }

    /// Start `pipeline` in the background and wait until the service is in `state`.
    fn start_until(&self, pipeline: &str, state: &str) -> std::process::Child {
        let child = self
            .command(&["run", pipeline])
            .stdout(std::process::Stdio::piped())
            .spawn()
            .unwrap();
        let started = Instant::now();
        let file = self.ws.path().join(".wharf/state/services/seed.json");
        let want = format!("\"state\": \"{state}\"");
        while !std::fs::read_to_string(&file).unwrap_or_default().contains(&want) {
            assert!(
                started.elapsed() < Duration::from_secs(180),
                "the service never got {state}"
            );
            std::thread::sleep(Duration::from_millis(100));
        }
        child
    }

    /// The seed pipeline with `step` in place of the gate, before the decision.
    fn pipeline_with(&self, step: &str) -> String {
        let text = std::fs::read_to_string(self.ws.path().join("pipeline.yml")).unwrap();
        let gate = text.find("  - id: gate").unwrap();
        self.ws
            .write("held.yml", &format!("{}{step}\n{}", &text[..gate], &text[gate..]));
        "held.yml".into()
    }
}

fn wait_output(child: std::process::Child) -> (i32, String) {
    let out = child.wait_with_output().unwrap();
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
    )
}

#[test]
fn the_seed_deploys_on_ssd_nodes_one_per_node_and_a_broken_release_is_rolled_back() {
    let cluster = Cluster::up();
    let (version, digest) = cluster.deploy_good();

    // The article's rules as Swarm's own: ssd nodes only, one task per node, rolled out one
    // at a time with the old task making room, paused on failure.
    let spec = cluster.swarm.docker(&[
        "service",
        "inspect",
        "seed",
        "--format",
        "{{json .Spec.TaskTemplate.Placement}} {{json .Spec.UpdateConfig}} {{json .Spec.TaskTemplate.ContainerSpec.Healthcheck}} {{index .Spec.Labels \"wharf.revision\"}}",
    ]);
    assert!(spec.contains(r#""Constraints":["node.labels.storage==ssd"]"#), "{spec}");
    assert!(spec.contains(r#""MaxReplicas":1"#), "{spec}");
    // Swarm's health check is the service's own probe, run inside each task.
    assert!(
        spec.contains(r#""Test":["CMD","/seed-service","probe","/api/v1/version"]"#),
        "{spec}"
    );
    for want in [
        r#""Parallelism":1"#,
        r#""FailureAction":"pause""#,
        r#""Order":"stop-first""#,
    ] {
        assert!(spec.contains(want), "{want} not in {spec}");
    }
    assert!(spec.trim_end().ends_with(&digest), "{spec}");

    // `wharf status` names each task's node.
    let status = cluster.status();
    assert!(status.contains("state active"), "{status}");
    for node in ["worker-1", "worker-2"] {
        assert!(status.contains(&format!("running on {node}")), "{status}");
    }

    // The render step wrote an upstream per task, at its node's address; nginx on the host
    // reaches the tasks on both nodes through them.
    let upstreams = cluster.ws.path().join("nginx/upstreams.conf");
    let text = std::fs::read_to_string(&upstreams).unwrap();
    for node in ["worker-1", "worker-2"] {
        assert!(
            text.contains(&format!("server {}:8080 weight=1;", Cluster::address(node))),
            "{text}"
        );
    }
    let nginx = Nginx::start(&upstreams);
    for _ in 0..4 {
        let front = http_get(&format!("http://127.0.0.1:{}/api/v1/version", nginx.port));
        assert_eq!(
            front.map(|(code, body)| (code, body.trim().to_string())),
            Some((200, version.clone()))
        );
    }
    let errors = std::fs::read_to_string(nginx.error_log()).unwrap_or_default();
    assert!(!errors.contains("connect() failed"), "{errors}");

    // A broken release passes its health check, fails the gate, and every task goes back to
    // the previous digest.
    cluster.ws.commit("broken");
    let broken = cluster.wharf(&["run", "pipeline.yml", "-v", "--var", "status=FAIL"]);
    assert_eq!(broken.code(), 3, "{}", broken.all());
    assert!(broken.step_line("gate").contains("gate-failed"), "{}", broken.all());
    assert!(
        broken.all().contains(&format!("seed: rolled back to {version}")),
        "{}",
        broken.all()
    );
    cluster.assert_every_task_runs(&version, &digest);
    assert_eq!(cluster.ws.service_state("seed")["state"], "active");

    // A release whose tasks never pass Swarm's health check: Swarm pauses its update, and
    // wharf rolls back without waiting for the gate.
    cluster.ws.commit("unhealthy");
    let text = std::fs::read_to_string(cluster.ws.path().join("pipeline.yml")).unwrap();
    let text = text.replace(
        "health-command: [/seed-service, probe, /api/v1/version]",
        "health-command: [/seed-service, probe, /missing]\n      health-timeout: 3s",
    );
    cluster.ws.write("unhealthy.yml", &text);
    let unhealthy = cluster.wharf(&["run", "unhealthy.yml"]);
    assert_eq!(unhealthy.code(), 3, "{}", unhealthy.all());
    assert!(
        unhealthy
            .step_line("upgrade")
            .contains("Swarm paused the update of `seed`"),
        "{}",
        unhealthy.all()
    );
    assert_eq!(unhealthy.status_of("gate"), "skip", "{}", unhealthy.all());
    cluster.assert_every_task_runs(&version, &digest);
    assert_eq!(cluster.ws.service_state("seed")["state"], "active");
}

#[test]
fn an_interrupt_after_the_upgrade_rolls_every_task_back() {
    let cluster = Cluster::up();
    let (version, digest) = cluster.deploy_good();
    cluster.ws.commit("next");
    let pipeline = cluster.pipeline_with(
        "  - id: manual-testing\n    uses: builtin:exec\n    with: { program: sleep, args: [\"120\"] }\n",
    );
    let child = cluster.start_until_upgraded(&pipeline);
    let new_digest = cluster.ws.service_state("seed")["current"]["revision"]["digest"]
        .as_str()
        .unwrap()
        .to_string();
    assert_ne!(new_digest, digest);
    assert!(
        cluster.running().iter().all(|t| t.image.ends_with(&new_digest)),
        "{:#?}",
        cluster.running()
    );
    // SAFETY: sending a signal to our own child process.
    unsafe { libc::kill(child.id() as i32, libc::SIGINT) };
    let (code, out) = wait_output(child);
    assert_eq!(code, 130, "{out}");
    assert!(out.contains(&format!("seed: rolled back to {version}")), "{out}");
    cluster.assert_every_task_runs(&version, &digest);
    assert_eq!(cluster.ws.service_state("seed")["state"], "active");
}

#[test]
fn a_worker_lost_before_the_decision_is_rolled_back_and_shown() {
    let cluster = Cluster::up();
    let (version, digest) = cluster.deploy_good();
    cluster.ws.commit("next");
    // Time between the upgrade and the gate, for the worker to die in.
    let pipeline =
        cluster.pipeline_with("  - id: soak\n    uses: builtin:exec\n    with: { program: sleep, args: [\"20\"] }\n");
    let child = cluster.start_until_upgraded(&pipeline);
    cluster.swarm.kill_engine("worker-1");
    let (code, out) = wait_output(child);

    // The gate fails (its task was there) or the confirm finds a task lost: either way, the
    // run rolls back and says so.
    assert_eq!(code, 3, "{out}");
    assert!(
        out.contains("gate-failed") || out.contains("not fully rolled out"),
        "{out}"
    );
    assert!(out.contains(&format!("seed: rolled back to {version}")), "{out}");

    // Consistent afterwards: the previous revision is active, every task that runs runs its
    // digest (worker-2's), the replica that has no node left waits for one, and the status
    // shows the lost node's task.
    cluster.assert_rolled_back_to(&digest);
    let running = cluster.running();
    assert!(running.iter().any(|t| t.node == "worker-2"), "{running:#?}");
    let status = cluster.status();
    assert!(status.contains("on worker-1, node lost"), "{status}");
    assert!(status.contains("pending: no suitable node"), "{status}");
    let url = format!("http://{}:8080/api/v1/version", Cluster::address("worker-2"));
    assert_eq!(http_get(&url).map(|(_, body)| body.trim().to_string()), Some(version));

    // The dead engine's containers outlived it; the swarm's tear-down stops them too.
    drop(cluster);
    let left = common::swarm::processes_left();
    assert!(left.is_empty(), "processes left in the nodes' cgroups: {left}");
}

#[test]
fn a_worker_lost_during_the_upgrade_is_rolled_back() {
    let cluster = Cluster::up();
    let (version, digest) = cluster.deploy_good();
    cluster.ws.commit("next");
    let child = cluster.start_until("pipeline.yml", "upgrading");
    // Into Swarm's rolling update, which replaces one task at a time.
    std::thread::sleep(Duration::from_secs(3));
    cluster.swarm.kill_engine("worker-1");
    let (code, out) = wait_output(child);

    // The upgrade fails: a replica lost its node and no other node can take it, found when
    // the update has done the rest, or while the update waits on that replica (which one
    // Swarm replaced first decides). The run rolls back what it changed; the replica still
    // waits for a node, and the rollback says so.
    assert_eq!(code, 3, "{out}");
    assert!(
        out.contains("`seed` is not fully rolled out") || out.contains("Swarm cannot place task"),
        "{out}"
    );
    assert!(out.contains(&format!("seed: rolled back to {version}")), "{out}");
    assert!(out.contains("short of replicas"), "{out}");
    cluster.assert_rolled_back_to(&digest);
}

#[test]
fn the_swarm_target_needs_a_manager_and_a_service_stays_on_its_target() {
    let cluster = Cluster::up();
    let refused = |docker_host: &str| {
        let run = common::Run(
            cluster
                .command(&["run", "pipeline.yml"])
                .env("DOCKER_HOST", docker_host)
                .output()
                .unwrap(),
        );
        assert_eq!(run.code(), 1, "{}", run.all());
        run.step_line("upgrade")
    };
    // A worker's engine, and the machine's own engine, which is in no swarm.
    let worker = format!("unix://{}/worker-1/docker.sock", cluster.swarm.dir.display());
    let line = refused(&worker);
    assert!(
        line.contains("is a worker, not a manager; point DOCKER_HOST at a swarm manager"),
        "{line}"
    );
    let line = refused("unix:///var/run/docker.sock");
    assert!(line.contains("is not in a swarm"), "{line}");
    assert!(line.contains("docker swarm init"), "{line}");
    // DOCKER_HOST is honoured whatever its scheme: an address where nothing listens is not
    // quietly replaced by the local socket, and a scheme wharf does not speak says so.
    let line = refused("tcp://127.0.0.1:9");
    assert!(line.contains("no Docker engine reachable"), "{line}");
    let line = refused("ssh://deploy@manager");
    assert!(
        line.contains("DOCKER_HOST=ssh://deploy@manager is not a scheme wharf speaks"),
        "{line}"
    );

    // The nodes pull from a registry: an image only in the local store cannot be deployed.
    let unpushed = common::Run(
        cluster
            .on_swarm(&["run", "pipeline.yml", "--var", "target=swarm"])
            .output()
            .unwrap(),
    );
    assert_eq!(unpushed.code(), 1, "{}", unpushed.all());
    assert!(
        unpushed.step_line("upgrade").contains("is only in the local store, and Docker engines (targets `docker` and `swarm`) pull images from a registry; push it first"),
        "{}",
        unpushed.all()
    );

    // A service deployed on one target is not upgraded on another.
    let local = cluster.ws.wharf(&["run", "pipeline.yml"]);
    assert_eq!(local.code(), 0, "{}", local.all());
    cluster.ws.commit("next");
    let moved = cluster.wharf(&["run", "pipeline.yml"]);
    assert_eq!(moved.code(), 1, "{}", moved.all());
    assert!(
        moved
            .step_line("upgrade")
            .contains("service `seed` runs on target `local`, not `swarm`; deploy it under another name"),
        "{}",
        moved.all()
    );
    assert!(cluster.swarm.docker(&["service", "ls", "-q"]).trim().is_empty());
}

/// `require-provenance:` on the swarm: a release whose provenance the release key signed
/// rolls out; the next one, pushed without provenance, is refused before any task changes.
#[test]
fn a_release_without_provenance_is_not_rolled_out_on_the_swarm() {
    let cluster = Cluster::up();
    let generate = cluster.ws.wharf(&["key", "generate", "keys/release"]);
    assert_eq!(generate.code(), 0, "{}", generate.all());
    let fingerprint = generate.stdout().lines().next().unwrap().trim().to_string();
    let key = std::fs::read_to_string(cluster.ws.path().join("keys/release.key")).unwrap();
    let run = |extra: &[&str]| {
        let mut args = vec![
            "run",
            "pipeline.yml",
            "-v",
            "--var",
            "require-provenance=keys/release.pub",
        ];
        args.extend_from_slice(extra);
        common::Run(
            cluster
                .command(&args)
                .env("WHARF_SECRET_RELEASE_KEY", &key)
                .output()
                .unwrap(),
        )
    };
    let good = run(&["--var", "provenance-key=RELEASE_KEY"]);
    assert_eq!(good.code(), 0, "{}", good.all());
    assert!(
        good.stdout()
            .contains(&format!("provenance signed by {fingerprint} verified")),
        "{}",
        good.all()
    );
    let version = good.output_of("version", "version").unwrap();
    let digest = good.output_of("push", "digest").unwrap();
    cluster.assert_every_task_runs(&version, &digest);

    cluster.ws.commit("unsigned");
    let unsigned = run(&[]);
    assert_eq!(unsigned.code(), 1, "{}", unsigned.all());
    assert!(
        unsigned
            .all()
            .contains(&format!("has no provenance signed by {fingerprint}")),
        "{}",
        unsigned.all()
    );
    cluster.assert_every_task_runs(&version, &digest);
    let spec = cluster.swarm.docker(&[
        "service",
        "inspect",
        "seed",
        "--format",
        "{{index .Spec.Labels \"wharf.revision\"}}",
    ]);
    assert_eq!(spec.trim(), digest, "the service spec was not touched");
}

/// The canary plan on the swarm: the new release runs as a service of its own,
/// `seed-canary`, with its share of the replicas (one of two) beside the old service scaled
/// down by as many, and nginx weighs the tasks 10/90, then 50/50. A good release rolls out
/// to every task and the canary service goes; a release failing one request in five is
/// stopped at the first judge, having met about a tenth of the requests: the canary service
/// removed, the old one back to a task on each node.
#[test]
fn the_canary_plan_runs_on_the_swarm_by_a_share_of_replicas() {
    let cluster = Cluster::up();
    let (_, old_digest) = cluster.deploy_good();
    let ws = &cluster.ws;
    let nginx = Nginx::start_in(&ws.path().join("nginx"), &ws.path().join("nginx/upstreams.conf"));
    let services = || {
        cluster
            .swarm
            .docker(&["service", "ls", "--format", "{{.Name}} {{.Replicas}}"])
    };
    // canary.yml under load through nginx: its exit code and output, the services while the
    // canary took 10%, and every answer.
    let canary = |extra: &[&str]| {
        let load = Load::start(nginx.port);
        let mut args = CANARY_RUN.to_vec();
        args.extend(extra.iter().flat_map(|v| ["--var", *v]));
        let child = cluster
            .command(&args)
            .stdout(std::process::Stdio::piped())
            .spawn()
            .unwrap();
        let started = Instant::now();
        let mut during = services();
        while !during.contains("seed-canary 1/1") {
            assert!(started.elapsed() < Duration::from_secs(180), "no canary task: {during}");
            std::thread::sleep(Duration::from_millis(200));
            during = services();
        }
        let (code, out) = wait_output(child);
        (code, out, during, load.finish())
    };

    cluster.ws.commit("good");
    let (code, out, during, answers) = canary(&[]);
    assert_eq!(code, 0, "{out}");
    assert!(
        out.contains("seed: 10% of traffic to") && out.contains("1 of 2 replicas"),
        "{out}"
    );
    assert!(
        during.contains("seed 1/1") && during.contains("seed-canary 1/1"),
        "{during}"
    );
    let state = ws.service_state("seed");
    assert_eq!(state["state"], "active");
    let new_version = state["current"]["revision"]["version"].as_str().unwrap().to_string();
    let new_digest = state["current"]["revision"]["digest"].as_str().unwrap().to_string();
    assert_ne!(new_digest, old_digest);
    cluster.assert_every_task_runs(&new_version, &new_digest);
    assert!(!services().contains("seed-canary"), "{}", services());
    assert!(
        answers
            .iter()
            .any(|a| a.version.as_deref() == Some(new_version.as_str()))
    );
    assert!(
        answers.iter().all(|a| a.status == 200),
        "{:?}",
        answers.iter().find(|a| a.status != 200)
    );

    cluster.ws.commit("bad");
    let (code, out, during, answers) = canary(&["error-rate=0.2"]);
    assert_eq!(code, 3, "{out}");
    assert!(during.contains("seed-canary 1/1"), "{during}");
    assert!(out.contains("FAIL judge-10"), "{out}");
    assert!(!services().contains("seed-canary"), "{}", services());
    cluster.assert_every_task_runs(&new_version, &new_digest);
    let bad = answers
        .iter()
        .filter_map(|a| a.version.clone())
        .find(|v| *v != new_version)
        .expect("the canary served some requests");
    let (to_bad, window) = reached(&answers, &bad);
    assert!(to_bad * 3 < window, "{to_bad} of {window} requests reached the canary");
}
