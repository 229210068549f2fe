//! Pushing to a real OCI registry (Debian's docker-registry), checked with skopeo: digests
//! and config as pushed, no blob sent twice, immutable version tags, credentials from
//! secrets.

mod common;
use common::Workspace;
use common::services::{Registry, skopeo_inspect};

/// A pipeline that packages `site/` into an image and pushes it as `app:TAG`.
fn pipeline(ws: &Workspace, extra_push: &str) {
    ws.write(
        "pipeline.yml",
        &format!(
            r#"name: push
vars:
  registry: ""
  tag: 1.0.0-1-abcdef0
steps:
  - id: build
    uses: builtin:build
    with:
      repository: app
      tag: ${{{{ vars.tag }}}}
      files: {{ site: /srv/site }}
      entrypoint: [/srv/site/run]
      env: {{ MODE: production }}
      ports: ["8080"]
      labels: {{ team: platform }}
      revision: 0123456789abcdef
  - id: push
    uses: builtin:push
    with:
      image: ${{{{ steps.build.outputs.image }}}}
      registry: ${{{{ vars.registry }}}}
{extra_push}"#
        ),
    );
}

fn site(ws: &Workspace, content: &str) {
    std::fs::create_dir_all(ws.path().join("site")).unwrap();
    ws.write("site/index.html", content);
    ws.write("site/run", "#!/bin/sh\n");
}

#[test]
fn push_then_skopeo_sees_the_same_digest_and_config() {
    let registry = Registry::start();
    let ws = Workspace::new();
    site(&ws, "hello");
    pipeline(&ws, "");
    let reg = format!("registry={}", registry.addr);
    let run = ws.wharf(&["run", "pipeline.yml", "-v", "--var", &reg]);
    assert_eq!(run.code(), 0, "{}", run.all());
    let digest = run.output_of("push", "digest").unwrap();
    assert_eq!(run.output_of("push", "uploaded").unwrap(), "2", "config and one layer");
    assert_eq!(
        run.output_of("push", "image").unwrap(),
        format!("{}/app:1.0.0-1-abcdef0@{digest}", registry.addr)
    );

    let tag = format!("{}/app:1.0.0-1-abcdef0", registry.addr);
    let inspect = skopeo_inspect(&tag, false);
    assert_eq!(inspect["Digest"], digest.as_str());
    assert_eq!(inspect["Labels"]["org.opencontainers.image.version"], "1.0.0-1-abcdef0");
    assert_eq!(
        inspect["Labels"]["org.opencontainers.image.revision"],
        "0123456789abcdef"
    );
    assert_eq!(inspect["Labels"]["team"], "platform");
    let config = skopeo_inspect(&tag, true);
    assert_eq!(config["config"]["Entrypoint"][0], "/srv/site/run");
    assert_eq!(config["config"]["Env"][0], "MODE=production");
    assert!(config["config"]["ExposedPorts"]["8080/tcp"].is_object(), "{config}");
    assert_eq!(config["os"], "linux");

    // The local store is an OCI layout skopeo reads too.
    let layout = ws.path().join(".wharf/oci");
    let out = std::process::Command::new("skopeo")
        .args(["inspect", &format!("oci:{}:app:1.0.0-1-abcdef0", layout.display())])
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let local: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(local["Digest"], digest.as_str());

    // Same image again: nothing is uploaded.
    let again = ws.wharf(&["run", "pipeline.yml", "-v", "--var", &reg]);
    assert_eq!(again.code(), 0, "{}", again.all());
    assert_eq!(
        again.output_of("push", "digest").unwrap(),
        digest,
        "the build is reproducible"
    );
    assert_eq!(again.output_of("push", "uploaded").unwrap(), "0");
    assert_eq!(again.output_of("push", "skipped").unwrap(), "2");
}

#[test]
fn a_version_tag_cannot_be_moved_to_other_content() {
    let registry = Registry::start();
    let ws = Workspace::new();
    site(&ws, "first");
    pipeline(&ws, "");
    let reg = format!("registry={}", registry.addr);
    let first = ws.wharf(&["run", "pipeline.yml", "-v", "--var", &reg]);
    assert_eq!(first.code(), 0, "{}", first.all());
    let first_digest = first.output_of("push", "digest").unwrap();

    site(&ws, "different content, same version");
    let second = ws.wharf(&["run", "pipeline.yml", "-v", "--var", &reg]);
    assert_eq!(second.code(), 1, "{}", second.all());
    let line = second.step_line("push");
    assert!(
        line.contains(&format!("app:1.0.0-1-abcdef0 already points to {first_digest}")),
        "{line}"
    );
    assert!(line.contains("version tags are immutable"), "{line}");
    let inspect = skopeo_inspect(&format!("{}/app:1.0.0-1-abcdef0", registry.addr), false);
    assert_eq!(inspect["Digest"], first_digest.as_str(), "the tag moved");

    // A new version of the same content shares its blobs.
    let third = ws.wharf(&[
        "run",
        "pipeline.yml",
        "-v",
        "--var",
        &reg,
        "--var",
        "tag=1.0.0-2-bcdef01",
    ]);
    assert_eq!(third.code(), 0, "{}", third.all());
    assert_eq!(third.output_of("push", "skipped").unwrap(), "0");
}

#[test]
fn credentials_come_from_secrets_and_stay_out_of_the_output() {
    let registry = Registry::start_with_user("ci", "s3cret-passw0rd");
    let ws = Workspace::new();
    site(&ws, "auth");
    pipeline(&ws, "      username: ci\n      password-secret: registry-password\n");
    let reg = format!("registry={}", registry.addr);

    let missing = ws.wharf(&["run", "pipeline.yml", "--var", &reg]);
    assert_eq!(missing.code(), 1, "{}", missing.all());
    assert!(
        missing
            .step_line("push")
            .contains("secret `registry-password` is not set"),
        "{}",
        missing.all()
    );
    assert!(
        missing.stdout().contains("WHARF_SECRET_REGISTRY_PASSWORD"),
        "{}",
        missing.all()
    );

    let wrong = ws
        .command(&["run", "pipeline.yml", "--var", &reg])
        .env("WHARF_SECRET_REGISTRY_PASSWORD", "not-the-password")
        .output()
        .unwrap();
    let wrong = common::Run(wrong);
    assert_eq!(wrong.code(), 1, "{}", wrong.all());
    assert!(wrong.step_line("push").contains("denied"), "{}", wrong.all());

    let right = ws
        .command(&["run", "pipeline.yml", "-v", "--var", &reg])
        .env("WHARF_SECRET_REGISTRY_PASSWORD", "s3cret-passw0rd")
        .output()
        .unwrap();
    let right = common::Run(right);
    assert_eq!(right.code(), 0, "{}", right.all());
    assert!(!right.all().contains("s3cret-passw0rd"));
    assert_eq!(right.output_of("push", "uploaded").unwrap(), "2");
}

/// A blob of the local store that no longer hashes to its digest is not sent: the push
/// stops, says the store is damaged and what to do, and the registry never has the blob.
#[test]
fn a_damaged_store_blob_is_never_pushed() {
    let registry = Registry::start();
    let ws = Workspace::new();
    site(&ws, &"x".repeat(100_000));
    pipeline(&ws, "");
    let built = ws.wharf(&["run", "pipeline.yml", "-v"]);
    assert_eq!(built.code(), 0, "{}", built.all());
    let image = built.output_of("build", "image").unwrap();
    let store = ws.path().join(".wharf/oci");
    let manifest_digest = image.rsplit_once('@').unwrap().1;
    let blob = |digest: &str| store.join("blobs/sha256").join(digest.trim_start_matches("sha256:"));
    let manifest: serde_json::Value = serde_json::from_slice(&std::fs::read(blob(manifest_digest)).unwrap()).unwrap();
    let layer = manifest["layers"][0]["digest"].as_str().unwrap().to_string();
    // Same size, other content: only its hash tells.
    let mut bytes = std::fs::read(blob(&layer)).unwrap();
    bytes[0] ^= 0xff;
    std::fs::write(blob(&layer), &bytes).unwrap();

    ws.write(
        "push.yml",
        &format!(
            "name: push\nsteps:\n  - id: push\n    uses: builtin:push\n    with:\n      image: {image}\n      registry: {}\n",
            registry.addr
        ),
    );
    let push = ws.wharf(&["run", "push.yml", "-v"]);
    assert_eq!(push.code(), 1, "{}", push.all());
    let line = push.step_line("push");
    assert!(
        line.contains("the image store is damaged: remove it (`.wharf/oci`) and build the image again")
            && line.contains(&format!("not {} bytes of {layer}", bytes.len())),
        "{line}"
    );
    let url = format!("http://{}/v2/app/blobs/{layer}", registry.addr);
    assert_eq!(
        common::services::http_get(&url).map(|r| r.0),
        Some(404),
        "the registry has the blob"
    );
}
