//! The docker target end to end on the machine's Docker engine: build, push to a loopback
//! registry, pull by digest, rolling upgrade, gate, and rollback of a broken release. No
//! engine is a failure, not a skip.

mod common;
use common::Workspace;
use common::services::{Registry, http_get};
use std::process::Command;

fn containers(service: &str) -> Vec<(String, String, String)> {
    let out = Command::new("docker")
        .args([
            "ps",
            "--filter",
            &format!("label=wharf.service={service}"),
            "--format",
            "{{.ID}} {{.Label \"wharf.version\"}} {{.Label \"wharf.revision\"}}",
        ])
        .output()
        .expect("the docker CLI is needed to look at the containers");
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(|l| {
            let mut w = l.split_whitespace().map(String::from);
            (
                w.next().unwrap(),
                w.next().unwrap_or_default(),
                w.next().unwrap_or_default(),
            )
        })
        .collect()
}

#[test]
fn docker_target_deploys_by_digest_and_rolls_back() {
    let engine = Command::new("docker")
        .args(["info", "--format", "{{.ServerVersion}}"])
        .output();
    let ok = engine.as_ref().is_ok_and(|o| o.status.success());
    assert!(
        ok,
        "no Docker engine answers here ({}); the docker target test needs one",
        engine
            .map(|o| String::from_utf8_lossy(&o.stderr).into_owned())
            .unwrap_or_else(|e| e.to_string())
    );

    let registry = Registry::start();
    let ws = Workspace::seed();
    // Unique per test run: containers of other runs on the same engine stay out of the way.
    let service = format!("seed-{}", std::process::id());
    let vars = [
        "--var".to_string(),
        format!("registry={}", registry.addr),
        "--var".to_string(),
        "target=docker".to_string(),
        "--var".to_string(),
        format!("service={service}"),
    ];
    let mut args = vec!["run", "pipeline.yml", "-v"];
    args.extend(vars.iter().map(String::as_str));
    let good = ws.wharf(&args);
    assert_eq!(good.code(), 0, "{}", good.all());
    let good_version = good.output_of("version", "version").unwrap();
    let good_digest = good.output_of("push", "digest").unwrap();
    let running = containers(&service);
    assert_eq!(running.len(), 2, "{running:?}");
    for (_, version, revision) in &running {
        assert_eq!(
            (version.as_str(), revision.as_str()),
            (good_version.as_str(), good_digest.as_str())
        );
    }
    for url in ws.running_urls(&service) {
        assert_eq!(http_get(&format!("{url}/api/v1/status")).unwrap().1.trim(), "OK");
    }

    ws.commit("broken");
    args.extend(["--var", "status=FAIL"]);
    let broken = ws.wharf(&args);
    assert_eq!(broken.code(), 3, "{}", broken.all());
    assert!(broken.step_line("gate").contains("gate-failed"), "{}", broken.all());
    let running = containers(&service);
    assert_eq!(running.len(), 2, "{running:?}");
    for (_, version, revision) in &running {
        assert_eq!(
            (version.as_str(), revision.as_str()),
            (good_version.as_str(), good_digest.as_str())
        );
    }
    for url in ws.running_urls(&service) {
        assert_eq!(
            http_get(&format!("{url}/api/v1/version")).unwrap().1.trim(),
            good_version
        );
    }

    // Killed while the engine started a container of the next release: the rollback finds
    // it by its name and removes it.
    ws.commit("next");
    let text = std::fs::read_to_string(ws.path().join("pipeline.yml")).unwrap();
    ws.write("partial.yml", &text[..text.find("  - id: gate").unwrap()]);
    let mut partial = vec!["run", "partial.yml"];
    partial.extend(vars.iter().map(String::as_str));
    let upgraded = ws.wharf(&partial);
    assert_eq!(upgraded.code(), 0, "{}", upgraded.all());
    let unrecorded = ws.as_if_killed_mid_start(&service);
    assert!(
        containers(&service)
            .iter()
            .any(|(id, _, _)| unrecorded.starts_with(id.as_str()))
    );
    let rollback = ws.wharf(&["rollback", &service]);
    assert_eq!(rollback.code(), 0, "{}", rollback.all());
    let running = containers(&service);
    assert_eq!(running.len(), 2, "{running:?}");
    assert!(
        running.iter().all(|(_, version, _)| *version == good_version),
        "{running:?}"
    );
}

#[test]
fn builder_docker_builds_a_dockerfile_into_the_store_and_pushes_it() {
    let engine = Command::new("docker").args(["info"]).output();
    assert!(
        engine.is_ok_and(|o| o.status.success()),
        "no Docker engine answers here; this test needs one"
    );
    let registry = common::services::Registry::start();
    let ws = Workspace::new();
    std::fs::create_dir_all(ws.path().join("site")).unwrap();
    ws.write("site/index.html", "built by docker\n");
    ws.write(
        "site/Dockerfile",
        "FROM scratch\nCOPY index.html /srv/index.html\nLABEL built.with=dockerfile\n",
    );
    ws.write(
        "pipeline.yml",
        "name: docker-build\nvars:\n  registry: \"\"\nsteps:\n  - id: build\n    uses: builtin:build\n    with:\n      builder: docker\n      context: site\n      repository: site\n      tag: 2.0.0-1-abcdef0\n  - id: push\n    uses: builtin:push\n    with:\n      image: ${{ steps.build.outputs.image }}\n      registry: ${{ vars.registry }}\n",
    );
    let run = ws.wharf(&[
        "run",
        "pipeline.yml",
        "-v",
        "--var",
        &format!("registry={}", registry.addr),
    ]);
    assert_eq!(run.code(), 0, "{}", run.all());
    let digest = run.output_of("push", "digest").unwrap();
    let tag = format!("{}/site:2.0.0-1-abcdef0", registry.addr);
    let inspect = common::services::skopeo_inspect(&tag, false);
    assert_eq!(inspect["Digest"], digest.as_str());
    assert_eq!(inspect["Labels"]["built.with"], "dockerfile");
    assert_eq!(inspect["Labels"]["org.opencontainers.image.version"], "2.0.0-1-abcdef0");
    let _ = Command::new("docker")
        .args(["rmi", "-f", "wharf-build/site:2.0.0-1-abcdef0"])
        .output();
}
