//! The article's pipeline, end to end on the local target with a real registry
//! (Debian's docker-registry): version, build, push, rolling upgrade, gate, confirm or
//! rollback, interruption, and the state machine's guard rails.

mod common;
use common::Workspace;
use common::services::{Registry, http_get};
use std::time::{Duration, Instant};

const VERSION: &str = r"^\d+\.\d+\.\d+-\d+-[0-9a-f]{7}$";

fn answer(url: &str, path: &str) -> String {
    http_get(&format!("{url}{path}"))
        .map(|(_, body)| body.trim().to_string())
        .unwrap_or_default()
}

#[test]
fn deploys_with_an_immutable_version_through_a_real_registry() {
    let registry = Registry::start();
    let ws = Workspace::seed();
    let run = ws.wharf(&[
        "run",
        "pipeline.yml",
        "-v",
        "--var",
        &format!("registry={}", registry.addr),
    ]);
    assert_eq!(run.code(), 0, "{}", run.all());

    let version = run.output_of("version", "version").unwrap();
    assert!(regex::Regex::new(VERSION).unwrap().is_match(&version), "{version}");
    assert!(version.starts_with("1.0.0-1-"), "{version}");
    let image = run.output_of("push", "image").unwrap();
    let digest = run.output_of("build", "digest").unwrap();
    assert_eq!(image, format!("{}/seed:{version}@{digest}", registry.addr));
    assert_eq!(run.output_of("finish", "action").unwrap(), "confirmed");

    let state = ws.service_state("seed");
    assert_eq!(state["state"], "active");
    assert_eq!(state["current"]["revision"]["image"], image.as_str());
    let urls = ws.running_urls("seed");
    assert_eq!(urls.len(), 2, "two replicas, each on its own port");
    for url in &urls {
        assert_eq!(answer(url, "/api/v1/status"), "OK");
        assert_eq!(answer(url, "/api/v1/version"), version);
    }
}

#[test]
fn a_broken_release_is_rolled_back_to_the_previous_version() {
    let registry = Registry::start();
    let ws = Workspace::seed();
    let reg = format!("registry={}", registry.addr);
    let good = ws.wharf(&["run", "pipeline.yml", "-v", "--var", &reg]);
    assert_eq!(good.code(), 0, "{}", good.all());
    let good_version = good.output_of("version", "version").unwrap();
    let good_digest = good.output_of("push", "digest").unwrap();

    ws.commit("a change that breaks the status endpoint");
    let broken = ws.wharf(&["run", "pipeline.yml", "-v", "--var", &reg, "--var", "status=FAIL"]);
    assert_eq!(broken.code(), 3, "exit code 3 means rolled back:\n{}", broken.all());
    assert!(broken.step_line("gate").contains("gate-failed"), "{}", broken.all());
    assert!(
        broken.step_line("gate").contains("body does not contain \"OK\""),
        "{}",
        broken.all()
    );
    assert_eq!(broken.output_of("finish", "action").unwrap(), "rolled-back");
    assert_eq!(broken.output_of("upgrade", "previous-version").unwrap(), good_version);
    assert!(
        broken
            .stdout()
            .contains(&format!("seed: rolled back to {good_version} ({good_digest})")),
        "{}",
        broken.all()
    );

    let state = ws.service_state("seed");
    assert_eq!(state["state"], "active");
    assert_eq!(state["current"]["revision"]["digest"], good_digest.as_str());
    let urls = ws.running_urls("seed");
    assert_eq!(urls.len(), 2);
    for url in &urls {
        assert_eq!(answer(url, "/api/v1/version"), good_version);
        assert_eq!(answer(url, "/api/v1/status"), "OK");
    }
}

/// The seed pipeline up to the upgrade, plus `extra` steps.
fn pipeline_until_upgrade(ws: &Workspace, extra: &str) -> String {
    let text = std::fs::read_to_string(ws.path().join("pipeline.yml")).unwrap();
    let cut = text.find("  - id: gate").unwrap();
    let name = "partial.yml";
    ws.write(name, &format!("{}{extra}", &text[..cut]));
    name.to_string()
}

/// How many of the workspace's recorded runs have started step `step`.
fn runs_that_started(ws: &Workspace, step: &str) -> usize {
    let started = format!("\"step\":\"{step}\"");
    std::fs::read_dir(ws.path().join(".wharf/runs"))
        .into_iter()
        .flatten()
        .flatten()
        .filter(|run| {
            std::fs::read_to_string(run.path().join("journal.jsonl"))
                .unwrap_or_default()
                .lines()
                .any(|l| l.contains("\"kind\":\"step-started\"") && l.contains(&started))
        })
        .count()
}

#[test]
fn an_interrupted_run_rolls_back_its_upgrade() {
    let ws = Workspace::seed();
    let first = ws.wharf(&["run", "pipeline.yml", "-v"]);
    assert_eq!(first.code(), 0, "{}", first.all());
    let first_version = first.output_of("version", "version").unwrap();

    ws.commit("next");
    let pipeline = pipeline_until_upgrade(
        &ws,
        "  - id: manual-testing\n    uses: builtin:exec\n    with: { program: sleep, args: [\"60\"] }\n",
    );
    // Ctrl-C and SIGTERM alike: the running step is dropped, the upgrade rolled back, the
    // summary printed; the exit code is the shell's for the signal.
    let mut started = Instant::now();
    for (signal, code, word) in [
        (libc::SIGINT, 130, "interrupted (Ctrl-C)"),
        (libc::SIGTERM, 143, "terminated (SIGTERM)"),
    ] {
        if signal == libc::SIGTERM {
            ws.commit("and the next");
        }
        // Upgraded, and the step after the upgrade under way (the upgrade step may still be
        // returning when the state file says upgraded).
        let slept_before = runs_that_started(&ws, "manual-testing");
        let mut child = ws
            .command(&["run", &pipeline])
            .stdout(std::process::Stdio::piped())
            .spawn()
            .unwrap();
        started = Instant::now();
        loop {
            let path = ws.path().join(".wharf/state/services/seed.json");
            let state = std::fs::read_to_string(&path).unwrap_or_default();
            if state.contains("\"state\": \"upgraded\"") && runs_that_started(&ws, "manual-testing") > slept_before {
                break;
            }
            assert!(
                started.elapsed() < Duration::from_secs(60),
                "the upgrade never finished"
            );
            std::thread::sleep(Duration::from_millis(100));
        }
        // SAFETY: sending a signal to our own child process.
        unsafe { libc::kill(child.id() as i32, signal) };
        let status = child.wait().unwrap();
        let mut out = String::new();
        std::io::Read::read_to_string(child.stdout.as_mut().unwrap(), &mut out).unwrap();
        assert_eq!(status.code(), Some(code), "{out}");
        assert!(out.contains(&format!("{word}: stopping the run")), "{out}");
        assert!(out.contains(&format!("seed: rolled back to {first_version}")), "{out}");
        assert!(
            out.contains(&format!(
                "{word} during step `manual-testing`; before it 4 step(s) succeeded, 0 failed, 0 skipped; rolled back: seed"
            )),
            "{out}"
        );
    }
    assert!(
        started.elapsed() < Duration::from_secs(50),
        "the sleeping step was not stopped"
    );
    assert_eq!(ws.service_state("seed")["state"], "active");
    for url in ws.running_urls("seed") {
        assert_eq!(answer(&url, "/api/v1/version"), first_version);
    }
    let lock = std::fs::File::open(ws.path().join(".wharf/state/locks/seed.lock")).unwrap();
    // SAFETY: flock on an open file we own.
    let free = unsafe { libc::flock(std::os::fd::AsRawFd::as_raw_fd(&lock), libc::LOCK_EX | libc::LOCK_NB) };
    assert_eq!(free, 0, "the lock outlived the rollback");
}

#[test]
fn an_unconfirmed_upgrade_blocks_the_next_until_confirm_or_rollback() {
    let ws = Workspace::seed();
    let first = ws.wharf(&["run", "pipeline.yml"]);
    assert_eq!(first.code(), 0, "{}", first.all());
    let first_version = ws.service_state("seed")["current"]["revision"]["version"]
        .as_str()
        .unwrap()
        .to_string();

    // Upgrade without a gate or a finish: the run succeeds and leaves the service upgraded.
    ws.commit("second");
    let pipeline = pipeline_until_upgrade(&ws, "");
    let upgraded = ws.wharf(&["run", &pipeline, "-v"]);
    assert_eq!(upgraded.code(), 0, "{}", upgraded.all());
    assert!(
        upgraded
            .stdout()
            .contains("seed: left upgraded; finish with `wharf confirm seed` or `wharf rollback seed`"),
        "{}",
        upgraded.all()
    );
    let second_version = upgraded.output_of("version", "version").unwrap();
    assert_eq!(ws.service_state("seed")["state"], "upgraded");

    // The next upgrade is refused and names both ways out; nothing changes.
    ws.commit("third");
    let blocked = ws.wharf(&["run", &pipeline]);
    assert_eq!(blocked.code(), 1, "{}", blocked.all());
    let line = blocked.step_line("upgrade");
    assert!(line.contains("awaits a decision"), "{line}");
    assert!(
        line.contains("`wharf confirm seed`") && line.contains("`wharf rollback seed`"),
        "{line}"
    );
    assert_eq!(
        ws.service_state("seed")["current"]["revision"]["version"],
        second_version.as_str()
    );

    let status = ws.wharf(&["status", "seed"]);
    assert!(status.stdout().contains("state upgraded"), "{}", status.all());
    assert!(
        status.stdout().contains(&format!("previous  {first_version}")),
        "{}",
        status.all()
    );

    // Rollback brings back the first version; then the third can go out and be confirmed.
    let rollback = ws.wharf(&["rollback", "seed"]);
    assert_eq!(rollback.code(), 0, "{}", rollback.all());
    assert_eq!(
        ws.service_state("seed")["current"]["revision"]["version"],
        first_version.as_str()
    );
    for url in ws.running_urls("seed") {
        assert_eq!(answer(&url, "/api/v1/version"), first_version);
    }
    let again = ws.wharf(&["rollback", "seed"]);
    assert_eq!(again.code(), 2, "{}", again.all());
    assert!(
        again.stderr().contains("there is no upgrade to roll back"),
        "{}",
        again.all()
    );

    let third = ws.wharf(&["run", &pipeline, "-v"]);
    assert_eq!(third.code(), 0, "{}", third.all());
    let third_version = third.output_of("version", "version").unwrap();
    let confirm = ws.wharf(&["confirm", "seed"]);
    assert_eq!(confirm.code(), 0, "{}", confirm.all());
    let state = ws.service_state("seed");
    assert_eq!(state["state"], "active");
    assert_eq!(state["current"]["revision"]["version"], third_version.as_str());
    assert_eq!(
        state["instances"].as_array().unwrap().len(),
        2,
        "confirm removed the old instances: {state}"
    );
    for url in ws.running_urls("seed") {
        assert_eq!(answer(&url, "/api/v1/version"), third_version);
    }

    // Remove stops everything and forgets the service.
    let urls = ws.running_urls("seed");
    let remove = ws.wharf(&["remove", "seed"]);
    assert_eq!(remove.code(), 0, "{}", remove.all());
    for url in urls {
        assert!(
            http_get(&format!("{url}/api/v1/version")).is_none(),
            "{url} still answers"
        );
    }
    let status = ws.wharf(&["status"]);
    assert!(status.stdout().contains("no services deployed"), "{}", status.all());
}

#[test]
fn mutable_tags_and_digestless_images_are_refused() {
    let ws = Workspace::seed();
    let latest = "name: m\nsteps:\n  - id: up\n    uses: builtin:upgrade\n    with:\n      service: seed\n      image: 127.0.0.1:5000/seed:latest@sha256:0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef\n";
    ws.write("latest.yml", latest);
    let run = ws.wharf(&["run", "latest.yml"]);
    assert_eq!(run.code(), 1, "{}", run.all());
    assert!(run.step_line("up").contains("tag `latest` is mutable"), "{}", run.all());

    ws.write(
        "nodigest.yml",
        &latest
            .replace(
                "@sha256:0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef",
                "",
            )
            .replace(":latest", ":1.0.0-1-abcdef0"),
    );
    let run = ws.wharf(&["run", "nodigest.yml"]);
    assert_eq!(run.code(), 1, "{}", run.all());
    assert!(run.step_line("up").contains("has no digest"), "{}", run.all());
}

#[test]
fn a_stale_lock_of_a_dead_process_is_taken_over_and_a_live_one_is_respected() {
    let ws = Workspace::seed();
    let locks = ws.path().join(".wharf/state/locks");
    std::fs::create_dir_all(&locks).unwrap();
    // A lock left behind by a crashed wharf.
    std::fs::write(
        locks.join("seed.lock"),
        r#"{"pid":999999999,"comm":"wharf","run_id":"crashed","since":"2026-01-01T00:00:00Z"}"#,
    )
    .unwrap();
    let run = ws.wharf(&["run", "pipeline.yml"]);
    assert_eq!(run.code(), 0, "a stale lock blocked the run:\n{}", run.all());

    // A lock held by a live process (this test, pretending to be wharf): the file says who,
    // the flock on it is the lock.
    std::fs::write(
        locks.join("seed.lock"),
        format!(r#"{{"pid":{},"run_id":"busy","since":"now"}}"#, std::process::id()),
    )
    .unwrap();
    let held = std::fs::File::open(locks.join("seed.lock")).unwrap();
    // SAFETY: flock on an open file we own.
    assert_eq!(
        unsafe { libc::flock(std::os::fd::AsRawFd::as_raw_fd(&held), libc::LOCK_EX) },
        0
    );
    ws.commit("next");
    let run = ws.wharf(&["run", "pipeline.yml"]);
    assert_eq!(run.code(), 1, "{}", run.all());
    assert!(
        run.step_line("upgrade").contains("is being changed by run busy"),
        "{}",
        run.all()
    );
}

/// The seed pipeline up to the upgrade, with more `with:` lines for the upgrade step, in
/// place of its placement (which only a swarm target turns on).
fn upgrade_with(ws: &Workspace, name: &str, lines: &str) -> String {
    let text = std::fs::read_to_string(ws.path().join("pipeline.yml")).unwrap();
    let cut = text.find("  - id: gate").unwrap();
    let placement = text.find("      # The article's placement").unwrap();
    assert!(placement < cut, "the placement is the upgrade's last");
    let text = format!("{}{lines}\n", &text[..placement]);
    ws.write(name, &text);
    name.to_string()
}

#[test]
fn placement_rules_host_labels_and_one_per_host() {
    let ws = Workspace::seed();
    let ssd = upgrade_with(&ws, "ssd.yml", "      host-labels: { storage: ssd }\n");
    let unlabelled = ws.wharf(&["run", &ssd]);
    assert_eq!(unlabelled.code(), 1, "{}", unlabelled.all());
    let line = unlabelled.step_line("upgrade");
    assert!(
        line.contains("no host of target `local` carries the labels storage=ssd"),
        "{line}"
    );
    assert!(line.contains("WHARF_HOST_LABELS"), "{line}");

    let labelled = common::Run(
        ws.command(&["run", &ssd, "--var", "replicas=1"])
            .env("WHARF_HOST_LABELS", "storage=ssd,zone=a")
            .output()
            .unwrap(),
    );
    assert_eq!(labelled.code(), 0, "{}", labelled.all());
    let confirm = ws.wharf(&["confirm", "seed"]);
    assert_eq!(confirm.code(), 0, "{}", confirm.all());

    // The article's anti-affinity: one instance per host. The local target is one host.
    ws.commit("next");
    let spread = upgrade_with(&ws, "spread.yml", "      one-per-host: true\n");
    let two = ws.wharf(&["run", &spread]);
    assert_eq!(two.code(), 1, "{}", two.all());
    assert!(
        two.step_line("upgrade")
            .contains("one instance per host allows at most 1 replica(s) on target `local`"),
        "{}",
        two.all()
    );

    let start_first = ws.wharf(&["run", &spread, "--var", "replicas=1"]);
    assert_eq!(start_first.code(), 3, "{}", start_first.all());
    assert!(
        start_first.step_line("upgrade").contains("use `order: stop-first`"),
        "{}",
        start_first.all()
    );

    let stop_first = upgrade_with(&ws, "stop-first.yml", "      one-per-host: true\n");
    let text = std::fs::read_to_string(ws.path().join(&stop_first))
        .unwrap()
        .lines()
        .map(|l| {
            if l.starts_with("      order:") {
                "      order: stop-first"
            } else {
                l
            }
        })
        .collect::<Vec<_>>()
        .join("\n");
    ws.write(&stop_first, &text);
    let ok = ws.wharf(&["run", &stop_first, "--var", "replicas=1", "-v"]);
    assert_eq!(ok.code(), 0, "{}", ok.all());
    assert_eq!(ok.output_of("upgrade", "instances").unwrap(), "1");
}

/// Run A upgrades the service and waits before its gate; run B of the same pipeline is
/// refused the upgrade and must then decide nothing: its `finish` (gate skipped) leaves A's
/// release alone, B exits 1 (it deployed nothing), and A goes on to confirm its own.
#[test]
fn one_run_does_not_decide_another_runs_deploy() {
    let ws = Workspace::seed();
    let text = std::fs::read_to_string(ws.path().join("pipeline.yml")).unwrap();
    let hold = "  - id: hold\n    uses: builtin:exec\n    allow: { write: [hold] }\n    with:\n      program: sh\n      args: [\"-c\", \"touch hold/holding; while [ ! -e hold/go ]; do sleep 0.1; done\"]\n\n";
    ws.write(
        "a.yml",
        &text.replace("  - id: gate\n", &format!("{hold}  - id: gate\n")),
    );
    let mut a = ws
        .command(&["run", "a.yml", "-v"])
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let started = Instant::now();
    while !ws.path().join("hold/holding").exists() {
        if started.elapsed() > Duration::from_secs(120) {
            let _ = a.kill();
            let out = a.wait_with_output().unwrap();
            panic!(
                "run A never reached its hold:\n{}",
                String::from_utf8_lossy(&out.stdout)
            );
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    let state = ws.service_state("seed");
    assert_eq!(state["state"], "upgraded");
    let owner = state["owner"].as_str().unwrap().to_string();
    let a_urls = ws.running_urls("seed");
    assert_eq!(a_urls.len(), 2);

    let b = ws.wharf(&["run", "pipeline.yml", "-v"]);
    assert_eq!(b.code(), 1, "B deployed nothing:\n{}", b.all());
    assert!(b.step_line("upgrade").contains("awaits a decision"), "{}", b.all());
    assert_eq!(b.status_of("gate"), "skip");
    assert_eq!(b.output_of("finish", "action").as_deref(), Some("none"), "{}", b.all());
    assert!(!b.stdout().contains("rolled back"), "{}", b.all());
    let state = ws.service_state("seed");
    assert_eq!(state["state"], "upgraded", "B changed A's upgrade: {state}");
    assert_eq!(state["owner"].as_str(), Some(owner.as_str()));
    assert_eq!(ws.running_urls("seed"), a_urls);

    // A run that tries to decide it outright is refused as well; a person is not.
    ws.write(
        "decide.yml",
        "name: decide\nsteps:\n  - id: finish\n    uses: builtin:finish\n    with: { service: seed, mode: rollback }\n",
    );
    let c = ws.wharf(&["run", "decide.yml"]);
    assert_eq!(c.code(), 1, "{}", c.all());
    assert!(
        c.step_line("finish").contains(&format!(
            "awaits a decision on the upgrade of run {owner}, not of this run"
        )),
        "{}",
        c.all()
    );
    assert_eq!(ws.service_state("seed")["state"], "upgraded");

    std::fs::write(ws.path().join("hold/go"), "").unwrap();
    let a = a.wait_with_output().unwrap();
    let out = String::from_utf8_lossy(&a.stdout);
    assert_eq!(a.status.code(), Some(0), "{out}");
    assert!(out.contains("seed: confirmed"), "{out}");
    assert_eq!(ws.service_state("seed")["state"], "active");
}

/// An image whose layers try to write, link or delete outside its root filesystem is not
/// unpacked, and nothing outside changes.
#[test]
fn an_image_cannot_unpack_outside_its_root_filesystem() {
    use wharf::oci::layout::Store;
    use wharf::oci::{ContainerConfig, Descriptor, ImageConfig, MEDIA_CONFIG, MEDIA_MANIFEST, Manifest, RootFs};
    let ws = Workspace::new();
    let outside = tempfile::tempdir().unwrap();
    std::fs::write(outside.path().join("victim"), "keep me").unwrap();
    let mut layer = tar::Builder::new(Vec::new());
    let mut link = tar::Header::new_gnu();
    link.set_entry_type(tar::EntryType::Symlink);
    link.set_size(0);
    layer.append_link(&mut link, "evil", outside.path()).unwrap();
    let mut file = tar::Header::new_gnu();
    file.set_entry_type(tar::EntryType::Regular);
    file.set_size(5);
    file.set_mode(0o755);
    layer.append_data(&mut file, "evil/planted", &b"pwned"[..]).unwrap();
    let layer = layer.into_inner().unwrap();
    // The image, written into the workspace's store as a build would leave it.
    let store = Store::open(&ws.path().join(".wharf/oci")).unwrap();
    let descriptor = |media: &str, (digest, size): (String, u64)| Descriptor {
        media_type: media.into(),
        digest,
        size,
        annotations: None,
        platform: None,
    };
    let layer = descriptor(
        "application/vnd.oci.image.layer.v1.tar",
        store.put_blob(&layer).unwrap(),
    );
    let config = ImageConfig {
        architecture: "amd64".into(),
        os: "linux".into(),
        config: ContainerConfig {
            entrypoint: Some(vec!["/evil/planted".into()]),
            ..Default::default()
        },
        rootfs: RootFs {
            kind: "layers".into(),
            diff_ids: vec![layer.digest.clone()],
        },
        ..Default::default()
    };
    let config = descriptor(
        MEDIA_CONFIG,
        store.put_blob(&serde_json::to_vec(&config).unwrap()).unwrap(),
    );
    let manifest = Manifest {
        schema_version: 2,
        media_type: Some(MEDIA_MANIFEST.into()),
        config,
        layers: vec![layer],
        annotations: None,
    };
    let manifest = descriptor(
        MEDIA_MANIFEST,
        store.put_blob(&serde_json::to_vec(&manifest).unwrap()).unwrap(),
    );
    store.tag("evil:1", &manifest).unwrap();
    let image = format!("evil:1@{}", manifest.digest);
    ws.write(
        "evil.yml",
        &format!(
            "name: evil\nsteps:\n  - id: upgrade\n    uses: builtin:upgrade\n    with: {{ service: evil, image: \"{image}\", version: \"1\", port: 8080 }}\n"
        ),
    );
    let run = ws.wharf(&["run", "evil.yml"]);
    assert_eq!(run.code(), 1, "{}", run.all());
    assert!(
        run.step_line("upgrade").contains("entry `evil/planted`"),
        "{}",
        run.all()
    );
    assert!(
        !outside.path().join("planted").exists(),
        "a layer wrote outside the rootfs"
    );
    assert_eq!(
        std::fs::read_to_string(outside.path().join("victim")).unwrap(),
        "keep me"
    );
}

/// When the automatic rollback fails, the run says why (and exits 4: a human is needed).
#[test]
fn a_failed_rollback_says_why() {
    let ws = Workspace::seed();
    let first = ws.wharf(&["run", "pipeline.yml"]);
    assert_eq!(first.code(), 0, "{}", first.all());
    ws.commit("broken");
    // The previous revision's image is gone from the store (a cleanup went too far).
    let previous = ws.service_state("seed")["current"]["revision"]["digest"]
        .as_str()
        .unwrap()
        .trim_start_matches("sha256:")
        .to_string();
    let pipeline = pipeline_until_upgrade(
        &ws,
        &format!(
            "  - id: break-it\n    uses: builtin:exec\n    with: {{ program: rm, args: [\"-rf\", \".wharf/oci/blobs/sha256/{previous}\", \".wharf/state/rootfs/{previous}\"] }}\n    allow: {{ process: [rm] }}\n  - id: fail\n    uses: builtin:exec\n    with: {{ program: \"false\" }}\n"
        ),
    );
    // The cleanup is another actor's: no confined program may touch wharf's store.
    let run = ws.wharf(&["run", &pipeline, "--sandbox", "off"]);
    assert_eq!(run.code(), 4, "{}", run.all());
    let out = run.stdout();
    assert!(out.contains("seed: the run failed; rolling back"), "{out}");
    assert!(out.contains("seed: the rollback FAILED: "), "{out}");
    assert!(out.contains("the service needs a human"), "{out}");
}

/// Whether process `pid` is alive (not gone, not a zombie).
fn alive(pid: i32) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .ok()
        .and_then(|stat| {
            stat.rsplit_once(')')
                .map(|(_, rest)| rest.trim_start().starts_with(['Z', 'X']))
        })
        .is_some_and(|dead| !dead)
}

/// Kills `pid` on drop, should the test fail with it alive.
struct Reap(i32);

impl Drop for Reap {
    fn drop(&mut self) {
        // SAFETY: signalling a process group has no memory-safety preconditions.
        unsafe { libc::killpg(self.0, libc::SIGKILL) };
    }
}

/// The seed's last instance as a wharf killed mid-start leaves it: its pid, killed on drop.
fn killed_mid_start(ws: &Workspace) -> (i32, Reap) {
    let handle = ws.as_if_killed_mid_start("seed");
    let pid: i32 = handle.split(':').next().unwrap().parse().unwrap();
    assert!(alive(pid));
    (pid, Reap(pid))
}

#[test]
fn an_instance_started_but_never_recorded_is_found_by_rollback_and_remove() {
    let ws = Workspace::seed();
    let first = ws.wharf(&["run", "pipeline.yml"]);
    assert_eq!(first.code(), 0, "{}", first.all());
    let pipeline = pipeline_until_upgrade(&ws, "");
    let rootfs = || -> Vec<String> {
        let mut all: Vec<String> = std::fs::read_dir(ws.path().join(".wharf/state/rootfs"))
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        all.sort();
        all
    };
    let digest_hex = |state: &serde_json::Value, of: &str| {
        state[of]["revision"]["digest"]
            .as_str()
            .unwrap()
            .trim_start_matches("sha256:")
            .to_string()
    };

    // Killed during the upgrade's start of its second instance: rollback finds it by its id.
    ws.commit("second");
    let upgraded = ws.wharf(&["run", &pipeline]);
    assert_eq!(upgraded.code(), 0, "{}", upgraded.all());
    let state = ws.service_state("seed");
    let (first_digest, second_digest) = (digest_hex(&state, "previous"), digest_hex(&state, "current"));
    let (orphan, _reap) = killed_mid_start(&ws);
    let status = ws.wharf(&["status", "seed"]);
    assert_eq!(status.code(), 0, "{}", status.all());
    // Unpacked root filesystems an hour old: kept only while a service needs them.
    for name in rootfs() {
        let dir = ws.path().join(".wharf/state/rootfs").join(name);
        let touched = std::process::Command::new("touch")
            .args(["-d", "2 hours ago"])
            .arg(&dir)
            .status()
            .unwrap();
        assert!(touched.success());
    }
    assert_eq!(rootfs(), {
        let mut both = vec![first_digest.clone(), second_digest.clone()];
        both.sort();
        both
    });
    let rollback = ws.wharf(&["rollback", "seed"]);
    assert_eq!(rollback.code(), 0, "{}", rollback.all());
    assert!(!alive(orphan), "the instance started but never recorded still runs");
    assert_eq!(
        rootfs(),
        std::slice::from_ref(&first_digest),
        "the rolled-back release's root filesystem goes"
    );
    for url in ws.running_urls("seed") {
        assert_eq!(answer(&url, "/api/v1/status"), "OK");
    }

    // Killed again, and the service removed: nothing of it runs.
    ws.commit("third");
    let upgraded = ws.wharf(&["run", &pipeline]);
    assert_eq!(upgraded.code(), 0, "{}", upgraded.all());
    let urls = ws.running_urls("seed");
    let (orphan, _reap) = killed_mid_start(&ws);
    let remove = ws.wharf(&["remove", "seed"]);
    assert_eq!(remove.code(), 0, "{}", remove.all());
    assert!(!alive(orphan), "the instance started but never recorded still runs");
    for url in urls {
        assert!(
            http_get(&format!("{url}/api/v1/version")).is_none(),
            "{url} still answers"
        );
    }
    assert!(
        std::fs::read_dir(ws.path().join(".wharf/state/instances/seed"))
            .unwrap()
            .next()
            .is_none(),
        "pid files of removed instances go"
    );
}

/// Parse a Prometheus text exposition with the reference client's own parser and print
/// `name{labels} value` per sample, sorted, as JSON lines.
const PARSE_METRICS_PY: &str = r#"
import json, sys
from prometheus_client.parser import text_string_to_metric_families
for family in text_string_to_metric_families(sys.stdin.read()):
    for s in family.samples:
        print(json.dumps({"name": s.name, "labels": s.labels, "value": s.value, "type": family.type}))
"#;

/// A release built to fail one request in five (`error-rate=0.2`) passes the status gate
/// (its status endpoint still says OK); its `/metrics`, read by Prometheus' own parser,
/// counts exactly the failures its clients saw, and Debian's Prometheus, finding both
/// instances through the targets file the pipeline rendered, sums the same.
#[test]
fn a_release_failing_one_request_in_five_passes_the_gate_and_its_metrics_count_the_errors() {
    let ws = Workspace::seed();
    let run = ws.wharf(&["run", "pipeline.yml", "-v", "--var", "error-rate=0.2"]);
    assert_eq!(run.code(), 0, "the gate cannot see it:\n{}", run.all());
    let version = run.output_of("version", "version").unwrap();
    let urls = ws.running_urls("seed");
    assert_eq!(urls.len(), 2, "{urls:?}");
    let url = urls[0].clone();
    let codes: Vec<u16> = (0..50).map(|_| http_get(&format!("{url}/")).unwrap().0).collect();
    let failed = codes.iter().filter(|&&c| c == 500).count();
    assert_eq!(failed, 10, "{codes:?}");
    assert!(codes.iter().all(|&c| c == 200 || c == 500), "{codes:?}");
    assert_eq!(http_get(&format!("{url}/api/v1/status")).unwrap().1.trim(), "OK");

    let (status, text) = http_get(&format!("{url}/metrics")).unwrap();
    assert_eq!(status, 200);
    let python = std::env::var("WHARF_TEST_PYTHON").unwrap_or_else(|_| "python3".into());
    let mut child = std::process::Command::new(&python)
        .args(["-c", PARSE_METRICS_PY])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    std::io::Write::write_all(&mut child.stdin.take().unwrap(), text.as_bytes()).unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(out.status.success(), "{}\n{text}", String::from_utf8_lossy(&out.stderr));
    let samples: Vec<serde_json::Value> = String::from_utf8(out.stdout)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    let value = |name: &str, labels: serde_json::Value| {
        samples
            .iter()
            .find(|s| s["name"] == name && s["labels"] == labels)
            .and_then(|s| s["value"].as_f64())
            .unwrap_or_else(|| panic!("no {name} {labels} in\n{text}"))
    };
    let ok = value("seed_requests_total", serde_json::json!({ "path": "/", "code": "200" }));
    let errors = value("seed_request_errors_total", serde_json::json!({ "path": "/" }));
    assert_eq!((ok, errors), (40.0, 10.0), "{text}");
    assert!(
        samples
            .iter()
            .any(|s| s["name"] == "seed_request_duration_seconds_count" && s["type"] == "histogram"),
        "{text}"
    );
    assert_eq!(
        value(
            "seed_build_info",
            serde_json::json!({ "version": version, "status": "OK", "error_rate": "0.2" })
        ),
        1.0
    );

    // Prometheus finds both instances through the rendered file, labelled with the release.
    let targets = ws.path().join("prometheus/targets.json");
    let listed: Vec<serde_json::Value> = serde_json::from_str(&std::fs::read_to_string(&targets).unwrap()).unwrap();
    assert_eq!(listed.len(), 2, "{listed:?}");
    let prometheus = common::services::Prometheus::start(&targets);
    let started = Instant::now();
    loop {
        let up = prometheus.query("up{job=\"seed\",service=\"seed\"} == 1");
        let errors = prometheus.query("sum(seed_request_errors_total{path=\"/\"})");
        let scraped = errors.first().and_then(|e| e["value"][1].as_str()).map(String::from);
        if up.len() == 2 && scraped.as_deref() == Some("10") {
            assert!(up.iter().all(|s| s["metric"]["version"] == version.as_str()), "{up:?}");
            break;
        }
        assert!(
            started.elapsed() < Duration::from_secs(60),
            "Prometheus never saw both instances and the 10 errors: up {up:?}, errors {errors:?}"
        );
        std::thread::sleep(Duration::from_millis(250));
    }

    // builtin:analysis judges the release on Prometheus' numbers: the error ratio fails it
    // at the first measurement; as a dry run it is recorded and decides nothing; a query of
    // several series is inconclusive; the status endpoint's errors (none) pass.
    let analysis = |extra: &str| {
        ws.write(
            "analysis.yml",
            &format!(
                "name: analysis\nsteps:\n  - id: errors\n    uses: builtin:analysis\n    with:\n      provider: prometheus\n      url: http://{}\n      count: 3\n      interval: 200ms\n{extra}",
                prometheus.addr
            ),
        );
        ws.wharf(&["run", "analysis.yml", "-v", "--no-cache"])
    };
    let ratio = "      query: sum(seed_request_errors_total{path=\"/\"}) / sum(seed_requests_total{path=\"/\"})\n      success: result < 0.05\n";
    let failed = analysis(ratio);
    assert_eq!(failed.code(), 1, "{}", failed.all());
    assert!(failed.step_line("errors").contains("gate-failed"), "{}", failed.all());
    assert!(
        failed
            .all()
            .contains(" = 0.2: failed (measurement 1/3; success: result < 0.05)")
            && failed
                .all()
                .contains("analysis failed: 1 measurement(s), 1 failed (limit 0)"),
        "{}",
        failed.all()
    );
    let dry = analysis(&format!("{ratio}      dry-run: true\n"));
    assert_eq!(dry.code(), 0, "{}", dry.all());
    assert_eq!(dry.output_of("errors", "phase").as_deref(), Some("failed"));
    assert_eq!(dry.output_of("errors", "values").as_deref(), Some("0.2,0.2,0.2"));
    let several = analysis("      query: seed_requests_total\n      success: result >= 0\n");
    assert_eq!(several.code(), 1, "{}", several.all());
    assert!(
        several.all().contains("not one number") && several.all().contains("analysis inconclusive"),
        "{}",
        several.all()
    );
    let good = analysis(
        "      query: sum(seed_request_errors_total{path=\"/api/v1/status\"})\n      success: result == 0\n      failure: result > 0\n",
    );
    assert_eq!(good.code(), 0, "{}", good.all());
    assert_eq!(good.output_of("errors", "phase").as_deref(), Some("successful"));
    // The http provider reads a number out of any JSON answer (here Prometheus' own).
    ws.write(
        "http.yml",
        &format!(
            "name: http\nsteps:\n  - id: errors\n    uses: builtin:analysis\n    with:\n      url: http://{}/api/v1/query?query=sum(seed_request_errors_total)\n      json-pointer: /data/result/0/value/1\n      count: 1\n      success: result < 1\n      failure: result >= 10\n",
            prometheus.addr
        ),
    );
    let http = ws.wharf(&["run", "http.yml", "-v", "--no-cache"]);
    assert_eq!(http.code(), 1, "{}", http.all());
    assert!(
        http.all()
            .contains("/data/result/0/value/1 = 10: failed (measurement 1/1;"),
        "{}",
        http.all()
    );
}
