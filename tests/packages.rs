//! Steps as packages, against a real registry (Debian's docker-registry) and an independent
//! OCI client (oras, from PyPI): publish, `uses: oci://`, the shared step cache, wharf.lock
//! and `--locked`, `--offline`.

mod common;
use common::services::Registry;
use common::{Run, Workspace, guest, python};
use std::path::{Path, PathBuf};

/// `wharf step publish STEP TARGET ...` from the workspace.
fn publish(ws: &Workspace, step: &Path, target: &str, extra: &[&str]) -> Run {
    let step = step.display().to_string();
    let mut args = vec!["step", "publish", step.as_str(), target];
    args.extend_from_slice(extra);
    ws.wharf(&args)
}

/// The `sha256:` digest `wharf step publish` printed.
fn published_digest(run: &Run) -> String {
    run.stdout()
        .lines()
        .find_map(|l| l.trim().strip_prefix("digest ").map(String::from))
        .unwrap_or_else(|| panic!("no digest:\n{}", run.all()))
}

/// A pipeline of one `cmd` step (it outputs its parameter `x` and says hello) from `uses`.
fn one_step(ws: &Workspace, uses: &str) {
    ws.write(
        "pipeline.yml",
        &format!("name: pkg\nsteps:\n  - id: hello\n    uses: {uses}\n    with: {{ x: hi }}\n"),
    );
}

fn lock_text(ws: &Workspace) -> String {
    std::fs::read_to_string(ws.path().join("wharf.lock")).unwrap()
}

/// A registry where `cmd` is published as `steps/cmd:0.1.0`, and a workspace whose
/// pipeline uses it by tag: the registry, the workspace, the component, the target, the
/// artifact's digest.
fn published_cmd() -> (Registry, Workspace, PathBuf, String, String) {
    let registry = Registry::start();
    let ws = Workspace::new();
    let (cmd, _) = components();
    let target = format!("{}/steps/cmd:0.1.0", registry.addr);
    let digest = published_digest(&publish(&ws, &cmd, &target, &[]));
    one_step(&ws, &format!("oci://{target}"));
    (registry, ws, cmd, target, digest)
}

/// The two components the tests publish: `cmd` (a WASI command) and `probe` (a typed step).
fn components() -> (PathBuf, PathBuf) {
    (guest("cmd-step"), guest("probe_step"))
}

#[test]
fn published_steps_are_wasm_artifacts_that_oras_reads_and_runs_use() {
    let registry = Registry::start();
    let ws = Workspace::new();
    let (cmd, probe) = components();
    let target = format!("{}/steps/probe:1.0.0", registry.addr);
    let first = publish(&ws, &probe, &target, &["--source", "https://example.com/steps"]);
    assert_eq!(first.code(), 0, "{}", first.all());
    let digest = published_digest(&first);

    // The CNCF Wasm layout, as an independent client sees it; the layer is the component.
    let out = python(
        r#"
import sys, json, hashlib, oras.client
client = oras.client.OrasClient(insecure=True)
manifest = client.get_manifest(sys.argv[1])
files = client.pull(target=sys.argv[1], outdir=sys.argv[2])
print(json.dumps({"manifest": manifest, "files": [[f, hashlib.sha256(open(f, "rb").read()).hexdigest()] for f in files]}))
"#,
        &[target.as_str(), &ws.path().join("pulled").display().to_string()],
    );
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let seen: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let manifest = &seen["manifest"];
    assert_eq!(manifest["config"]["mediaType"], "application/vnd.wasm.config.v0+json");
    assert_eq!(manifest["layers"].as_array().unwrap().len(), 1);
    assert_eq!(manifest["layers"][0]["mediaType"], "application/wasm");
    let annotations = &manifest["annotations"];
    assert_eq!(
        annotations["org.opencontainers.image.source"],
        "https://example.com/steps"
    );
    assert!(annotations["org.opencontainers.image.created"].is_string());
    assert!(annotations["org.opencontainers.image.version"].is_string());
    assert!(annotations["dev.wharf.step.name"].is_string());
    let own = hex::encode(<sha2::Sha256 as sha2::Digest>::digest(std::fs::read(&probe).unwrap()));
    assert_eq!(seen["files"][0][1], own, "oras pulled the component itself");

    // A step built with the SDK reports its own crate's version (gate-v2 is 2.0.0) unless it
    // says otherwise; `wharf inspect` shows it with the annotations, running nothing.
    let gate = format!("{}/steps/gate:2.0.0", registry.addr);
    let published = publish(&ws, &guest("gate_v2"), &gate, &[]);
    assert_eq!(published.code(), 0, "{}", published.all());
    let inspect = ws.wharf(&["inspect", &format!("oci://{gate}")]);
    assert_eq!(inspect.code(), 0, "{}", inspect.all());
    for line in [
        "gate-v2 2.0.0 · ",
        "org.opencontainers.image.version: 2.0.0",
        "dev.wharf.step.name: gate-v2",
        "dev.wharf.step.contract: 1.0.0",
        "contract: wharf:step@1.0.0: runs",
        "url ",
    ] {
        assert!(inspect.stdout().contains(line), "{line}: {}", inspect.all());
    }

    // Publishing is repeatable; a version tag never moves; `latest` needs saying so.
    let again = publish(&ws, &probe, &target, &[]);
    assert_eq!(again.code(), 0, "{}", again.all());
    assert!(again.stdout().contains("nothing sent"), "{}", again.all());
    assert_eq!(published_digest(&again), digest);
    let other = publish(&ws, &cmd, &target, &["--allow-mutable-tag"]);
    assert_eq!(other.code(), 1, "{}", other.all());
    assert!(
        other.stderr().contains(&format!("already points to {digest}")) && other.stderr().contains("immutable"),
        "{}",
        other.all()
    );
    let latest = publish(&ws, &cmd, &format!("{}/steps/cmd:latest", registry.addr), &[]);
    assert_eq!(latest.code(), 2, "{}", latest.all());
    assert!(latest.stderr().contains("--allow-mutable-tag"), "{}", latest.all());

    // A step oras pushed runs from its tag and from its digest.
    std::fs::copy(&cmd, ws.path().join("cmd.wasm")).unwrap();
    ws.write("config.json", r#"{"architecture": "wasm", "os": "wasip2"}"#);
    let pushed = format!("{}/steps/from-oras:2.0.0", registry.addr);
    let out = python(
        r#"
import sys, os, oras.client
os.chdir(sys.argv[2])
client = oras.client.OrasClient(insecure=True)
response = client.push(target=sys.argv[1], files=["cmd.wasm:application/wasm"],
                       manifest_config="config.json:application/vnd.wasm.config.v0+json")
print(response.headers["Docker-Content-Digest"])
"#,
        &[pushed.as_str(), &ws.path().display().to_string()],
    );
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let oras_digest = String::from_utf8(out.stdout).unwrap().trim().to_string();
    for uses in [format!("oci://{pushed}"), format!("oci://{pushed}@{oras_digest}")] {
        one_step(&ws, &uses);
        let run = ws.wharf(&["run", "pipeline.yml", "-v"]);
        assert_eq!(run.code(), 0, "{uses}: {}", run.all());
        assert_eq!(run.output_of("hello", "x").as_deref(), Some("hi"), "{}", run.all());
    }
}

#[test]
fn a_fetched_digest_is_never_fetched_again_and_offline_runs_need_it_cached() {
    let (registry, ws, cmd, target, digest) = published_cmd();

    // Offline, a tag with no lock entry cannot be resolved: named, with what to do.
    let offline = ws.wharf(&["run", "pipeline.yml", "--offline"]);
    assert_eq!(offline.code(), 2, "{}", offline.all());
    assert!(
        offline.stderr().contains("offline") && offline.stderr().contains("pipeline.yml:4:11"),
        "{}",
        offline.all()
    );

    // Pinned by digest, in another workspace with the same cache: the publish put it there.
    let lock = ws.wharf(&["lock", "pipeline.yml"]);
    assert_eq!(lock.code(), 0, "{}", lock.all());
    assert!(lock_text(&ws).contains(&digest), "{}", lock_text(&ws));
    drop(registry);
    let run = ws.wharf(&["run", "pipeline.yml", "--offline", "--locked", "-v"]);
    assert_eq!(run.code(), 0, "{}", run.all());
    assert_eq!(run.output_of("hello", "x").as_deref(), Some("hi"));
    // Without --offline, the registry (now gone) is asked only whether the tag moved.
    one_step(&ws, &format!("oci://{target}@{digest}"));
    let pinned = ws.wharf(&["run", "pipeline.yml"]);
    assert_eq!(pinned.code(), 0, "a cached digest needs no registry: {}", pinned.all());

    // A damaged cache is never run: the component no longer hashes to its digest.
    let blobs = ws.cache.path().join("steps/blobs/sha256");
    let own = hex::encode(<sha2::Sha256 as sha2::Digest>::digest(std::fs::read(&cmd).unwrap()));
    std::fs::write(blobs.join(&own), b"\0asm\x0d\0\x01\0tampered").unwrap();
    let damaged = ws.wharf(&["run", "pipeline.yml", "--offline"]);
    assert_eq!(damaged.code(), 2, "{}", damaged.all());
    assert!(
        damaged.stderr().contains("not in the step cache") && damaged.stderr().contains("wharf pull"),
        "{}",
        damaged.all()
    );
}

#[test]
fn the_lock_pins_digests_and_locked_runs_refuse_what_strays() {
    let registry = Registry::start();
    let ws = Workspace::new();
    let (cmd, probe) = components();
    let channel = format!("{}/steps/channel:latest", registry.addr);
    let old = published_digest(&publish(&ws, &cmd, &channel, &["--allow-mutable-tag"]));
    std::fs::copy(&cmd, ws.path().join("local.wasm")).unwrap();
    ws.write(
        "pipeline.yml",
        &format!(
            "name: pkg\nsteps:\n  - id: remote\n    uses: oci://{channel}\n    with: {{ x: hi }}\n  - id: local\n    uses: ./local.wasm\n    with: {{ x: hi }}\n"
        ),
    );
    let lock = ws.wharf(&["lock", "pipeline.yml"]);
    assert_eq!(lock.code(), 0, "{}", lock.all());
    let locked = lock_text(&ws);
    assert!(locked.contains(&old) && locked.contains("./local.wasm") && locked.contains("\"builtins\""));

    // The tag moves to another component.
    let moved = publish(&ws, &probe, &channel, &["--allow-mutable-tag"]);
    assert_eq!(moved.code(), 0, "{}", moved.all());
    let new = published_digest(&moved);
    assert_ne!(new, old);

    // A plain run keeps to the lock, and says the tag moved.
    let run = ws.wharf(&["run", "pipeline.yml", "-v"]);
    assert_eq!(run.code(), 0, "{}", run.all());
    assert_eq!(
        run.output_of("remote", "x").as_deref(),
        Some("hi"),
        "the locked command ran"
    );
    assert!(
        run.stdout().contains(&format!("the tag now names {new}")),
        "{}",
        run.all()
    );
    // --locked refuses, naming both digests, at the step's `uses:`.
    let strict = ws.wharf(&["run", "pipeline.yml", "--locked"]);
    assert_eq!(strict.code(), 2, "{}", strict.all());
    assert!(
        strict.stderr().contains(&new)
            && strict.stderr().contains(&old)
            && strict.stderr().contains("pipeline.yml:4:11"),
        "{}",
        strict.all()
    );
    // So does a changed local component, and a step missing from the lock.
    std::fs::copy(&probe, ws.path().join("local.wasm")).unwrap();
    ws.write(
        "pipeline.yml",
        "name: pkg\nsteps:\n  - id: local\n    uses: ./local.wasm\n  - id: other\n    uses: ./other.wasm\n",
    );
    std::fs::copy(&cmd, ws.path().join("other.wasm")).unwrap();
    let strict = ws.wharf(&["run", "pipeline.yml", "--locked"]);
    assert_eq!(strict.code(), 2, "{}", strict.all());
    assert!(strict.stderr().contains("./local.wasm is sha256:"), "{}", strict.all());
    assert!(strict.stderr().contains("./other.wasm is not in"), "{}", strict.all());

    // `wharf lock --update STEP` is the explicit upgrade.
    ws.write(
        "pipeline.yml",
        &format!("name: pkg\nsteps:\n  - id: remote\n    uses: oci://{channel}\n"),
    );
    let update = ws.wharf(&["lock", "pipeline.yml", "--update", "remote"]);
    assert_eq!(update.code(), 0, "{}", update.all());
    assert!(lock_text(&ws).contains(&new), "{}", lock_text(&ws));
    let strict = ws.wharf(&["run", "pipeline.yml", "--locked"]);
    assert_eq!(strict.code(), 0, "{}", strict.all());
}

#[test]
fn an_image_is_not_a_step() {
    let registry = Registry::start();
    let ws = Workspace::new();
    std::fs::create_dir_all(ws.path().join("site")).unwrap();
    ws.write("site/index.html", "hello");
    ws.write(
        "image.yml",
        &format!(
            "name: image\nsteps:\n  - id: build\n    uses: builtin:build\n    with: {{ repository: app, tag: 1.0.0, files: {{ site: /srv/site }} }}\n  - id: push\n    uses: builtin:push\n    with: {{ image: \"${{{{ steps.build.outputs.image }}}}\", registry: \"{}\" }}\n",
            registry.addr
        ),
    );
    let pushed = ws.wharf(&["run", "image.yml"]);
    assert_eq!(pushed.code(), 0, "{}", pushed.all());
    one_step(&ws, &format!("oci://{}/app:1.0.0", registry.addr));
    let run = ws.wharf(&["run", "pipeline.yml"]);
    assert_eq!(run.code(), 2, "{}", run.all());
    assert!(
        run.stderr().contains("application/vnd.oci.image.config.v1+json")
            && run.stderr().contains("not a Wasm component")
            && run.stderr().contains("pipeline.yml:4:11"),
        "{}",
        run.all()
    );
}

#[test]
fn a_registry_login_comes_from_wharf_secrets_or_from_docker_login() {
    let registry = Registry::start_with_user("ci", "s3cret");
    let ws = Workspace::new();
    let (cmd, _) = components();
    let key: String = registry
        .addr
        .chars()
        .map(|c| if c.is_ascii_alphanumeric() { c } else { '_' })
        .collect();
    let target = format!("{}/private/cmd:1.0.0", registry.addr);
    let step = cmd.display().to_string();
    let published = Run(ws
        .command(&["step", "publish", &step, &target])
        .env(format!("WHARF_REGISTRY_USER_{key}"), "ci")
        .env(format!("WHARF_SECRET_REGISTRY_{key}"), "s3cret")
        .output()
        .unwrap());
    assert_eq!(published.code(), 0, "{}", published.all());

    one_step(&ws, &format!("oci://{target}"));
    let docker = ws.path().join("docker");
    let fresh_cache = tempfile::tempdir().unwrap();
    let anonymous = Run(ws
        .command(&["run", "pipeline.yml"])
        .env("WHARF_CACHE_DIR", fresh_cache.path())
        .env("DOCKER_CONFIG", &docker)
        .output()
        .unwrap());
    assert_eq!(anonymous.code(), 2, "{}", anonymous.all());
    assert!(
        anonymous.stderr().contains("requires authentication")
            && anonymous.stderr().contains(&format!("WHARF_REGISTRY_USER_{key}")),
        "{}",
        anonymous.all()
    );

    std::fs::create_dir_all(&docker).unwrap();
    let auth = base64::Engine::encode(&base64::engine::general_purpose::STANDARD, "ci:s3cret");
    std::fs::write(
        docker.join("config.json"),
        format!(r#"{{"auths": {{"{}": {{"auth": "{auth}"}}}}}}"#, registry.addr),
    )
    .unwrap();
    let logged_in = Run(ws
        .command(&["run", "pipeline.yml", "-v"])
        .env("WHARF_CACHE_DIR", fresh_cache.path())
        .env("DOCKER_CONFIG", &docker)
        .output()
        .unwrap());
    assert_eq!(logged_in.code(), 0, "{}", logged_in.all());
    assert_eq!(logged_in.output_of("hello", "x").as_deref(), Some("hi"));
}

#[test]
fn an_air_gapped_runner_takes_its_steps_from_a_carried_layout() {
    let (registry, ws, _, _, digest) = published_cmd();
    assert_eq!(ws.wharf(&["lock", "pipeline.yml"]).code(), 0);

    // Online: the locked steps into an OCI layout, named as OCI tools list them.
    let carried = ws.wharf(&["pull", "pipeline.yml", "--locked", "--into", "layout"]);
    assert_eq!(carried.code(), 0, "{}", carried.all());
    let index = std::fs::read_to_string(ws.path().join("layout/index.json")).unwrap();
    assert!(index.contains(&digest) && index.contains("steps/cmd:0.1.0"), "{index}");
    drop(registry);

    // Across the gap: a runner with an empty step cache and no registry.
    let far = tempfile::tempdir().unwrap();
    let run_far = |args: &[&str]| Run(ws.command(args).env("WHARF_CACHE_DIR", far.path()).output().unwrap());
    let before = run_far(&["run", "pipeline.yml", "--offline", "--locked"]);
    assert_eq!(before.code(), 2, "{}", before.all());
    assert!(before.stderr().contains("not in the step cache"), "{}", before.all());
    let not_layout = run_far(&["pull", "pipeline.yml", "--from", "."]);
    assert_eq!(not_layout.code(), 2, "{}", not_layout.all());
    assert!(
        not_layout.stderr().contains("not an OCI layout"),
        "{}",
        not_layout.all()
    );
    let filled = run_far(&["pull", "pipeline.yml", "--locked", "--from", "layout"]);
    assert_eq!(filled.code(), 0, "{}", filled.all());
    let run = run_far(&["run", "pipeline.yml", "--offline", "--locked", "-v"]);
    assert_eq!(run.code(), 0, "{}", run.all());
    assert_eq!(run.output_of("hello", "x").as_deref(), Some("hi"));
}

/// Every request without a token is challenged for one at `/token`.
fn challenge(head: &str, addr: &str, conn: &mut std::net::TcpStream) -> bool {
    use std::io::Write;
    if head.starts_with("GET /token") {
        return false;
    }
    let _ = write!(
        conn,
        "HTTP/1.1 401 Unauthorized\r\nContent-Length: 0\r\nWWW-Authenticate: Bearer realm=\"http://{addr}/token\",service=\"test\",scope=\"repository:team/step:pull\"\r\n\r\n"
    );
    true
}

/// A token endpoint that announces 1.5 GB and sends it; another that sends its headers and
/// then nothing. Neither exists as a real registry here, so stand-ins play them.
#[test]
fn a_token_endpoint_that_sends_too_much_or_nothing_is_cut_off() {
    use common::services::StandIn;
    use std::io::Write;
    let endless = StandIn::start(|head, addr, conn| {
        if challenge(head, addr, conn) {
            return;
        }
        let _ = write!(
            conn,
            "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: 1500000000\r\n\r\n{{\"token\":\""
        );
        let zeros = vec![b'0'; 1 << 16];
        while conn.write_all(&zeros).is_ok() {}
    });
    let silent = StandIn::start(|head, addr, conn| {
        if challenge(head, addr, conn) {
            return;
        }
        let _ = write!(
            conn,
            "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: 100\r\n\r\n"
        );
    });
    let ws = Workspace::new();
    for (registry, expected) in [
        (&endless, "sent more than 1048576 bytes as a token response; cut off"),
        (&silent, "stopped answering (nothing for 2s"),
    ] {
        let started = std::time::Instant::now();
        let run = Run(ws
            .command(&["inspect", &format!("oci://{}/team/step:1.0", registry.addr)])
            .env("WHARF_REGISTRY_TIMEOUT", "2s")
            .output()
            .unwrap());
        assert_ne!(run.code(), 0, "{}", run.all());
        assert!(run.stderr().contains(expected), "{}", run.all());
        assert!(
            started.elapsed() < std::time::Duration::from_secs(30),
            "{:?}",
            started.elapsed()
        );
        assert!(registry.requests() >= 2, "the challenge, then the token");
    }
}

/// A digest from `wharf.lock` (a file anyone with commit rights writes) goes into registry
/// URLs and cache paths: one that is not `sha256:` and 64 hex digits is refused before any
/// request.
#[test]
fn a_lock_with_a_malformed_digest_is_refused_before_anything_is_sent() {
    use common::services::StandIn;
    let registry = StandIn::start(|head, addr, conn| {
        challenge(head, addr, conn);
    });
    let ws = Workspace::new();
    let uses = format!("oci://{}/team/step:1.0", registry.addr);
    one_step(&ws, &uses);
    ws.write(
        "wharf.lock",
        &format!(
            "{{\"version\":1,\"builtins\":\"{}\",\"steps\":{{\"{uses}\":\"sha256:../../../../v2/other/manifests/x\"}}}}",
            env!("CARGO_PKG_VERSION")
        ),
    );
    let run = ws.wharf(&["run", "pipeline.yml"]);
    assert_eq!(run.code(), 2, "{}", run.all());
    assert!(
        run.stderr().contains("wharf.lock: `") && run.stderr().contains("which is not a sha256 digest"),
        "{}",
        run.all()
    );
    assert_eq!(registry.requests(), 0);
}

/// An image index (what `docker buildx` and multi-platform tools push) is named as one, with
/// what it lists and the digest to pin instead.
#[test]
fn an_image_index_is_named_as_one_with_what_to_pin() {
    let (registry, ws, _, target, digest) = published_cmd();
    let index = format!(
        r#"{{"schemaVersion":2,"mediaType":"application/vnd.oci.image.index.v1+json","manifests":[{{"mediaType":"application/vnd.oci.image.manifest.v1+json","digest":"{digest}","size":400,"platform":{{"os":"wasip2","architecture":"wasm"}}}}]}}"#
    );
    let put = python(
        "import sys, urllib.request\n\
         r = urllib.request.Request(sys.argv[1], data=sys.argv[2].encode(), method='PUT', headers={'Content-Type': 'application/vnd.oci.image.index.v1+json'})\n\
         print(urllib.request.urlopen(r).status)",
        &[format!("http://{}/v2/steps/cmd/manifests/multi", registry.addr), index],
    );
    assert!(String::from_utf8_lossy(&put.stdout).contains("201"), "{put:?}");
    one_step(
        &ws,
        &target
            .replace(":0.1.0", ":multi")
            .replace(&registry.addr, &format!("oci://{}", registry.addr)),
    );
    let run = ws.wharf(&["run", "pipeline.yml"]);
    assert_eq!(run.code(), 2, "{}", run.all());
    assert!(
        run.stderr().contains("is an image index of 1 manifest(s)")
            && run.stderr().contains(&format!("{digest} for wasip2/wasm")),
        "{}",
        run.all()
    );
}
