//! Signed steps, against a real registry (Debian's docker-registry, which has no referrers
//! API, so signatures travel by the `sha256-DIGEST` tag scheme): `wharf key generate`,
//! `wharf step publish --sign`, the trust policy, `wharf lock` recording the signer, and
//! `--locked` verifying offline before any component is compiled. The registry is read and
//! written behind wharf's back with Python's `requests`, as an attacker would, and the
//! signatures are checked by an independent verifier (securesystemslib's DSSE).

mod common;
use common::services::Registry;
use common::{Run, Workspace, guest, python};

/// Registry surgery and an independent verifier, in Python:
///   bundles REGISTRY REPO DIGEST             the signature bundles attached to DIGEST, as JSON
///   attach REGISTRY REPO DIGEST FILE [SIZE]  attach FILE as a bundle (its descriptor claiming SIZE)
///   delete REGISTRY REPO DIGEST              delete manifest DIGEST
///   verify BUNDLE.json PUB DIGEST            check a bundle with the public key alone
const REGISTRY_PY: &str = r#"
import base64, hashlib, json, sys, requests
BUNDLE = "application/vnd.dev.sigstore.bundle.v0.3+json"
MANIFEST = "application/vnd.oci.image.manifest.v1+json"
INDEX = "application/vnd.oci.image.index.v1+json"

def url(reg, path): return f"http://{reg}/v2/{path}"

def index(reg, repo, digest):
    r = requests.get(url(reg, f"{repo}/manifests/{digest.replace(':', '-')}"), headers={"Accept": INDEX})
    return r.json() if r.status_code == 200 else {"schemaVersion": 2, "mediaType": INDEX, "manifests": []}

def blob(reg, repo, data):
    digest = "sha256:" + hashlib.sha256(data).hexdigest()
    r = requests.post(url(reg, f"{repo}/blobs/uploads/"))
    loc = r.headers["Location"]
    loc = loc if loc.startswith("http") else f"http://{reg}{loc}"
    r = requests.put(loc + ("&" if "?" in loc else "?") + f"digest={digest}", data=data,
                     headers={"Content-Type": "application/octet-stream"})
    assert r.status_code == 201, r.text
    return digest

cmd, reg, repo = sys.argv[1], sys.argv[2], sys.argv[3]
if cmd == "bundles":
    digest = sys.argv[4]
    out = []
    for m in index(reg, repo, digest)["manifests"]:
        man = requests.get(url(reg, f"{repo}/manifests/{m['digest']}"), headers={"Accept": MANIFEST}).json()
        out.append(requests.get(url(reg, f"{repo}/blobs/{man['layers'][0]['digest']}")).json())
    print(json.dumps(out))
elif cmd == "attach":
    digest, data = sys.argv[4], open(sys.argv[5], "rb").read()
    subject = requests.get(url(reg, f"{repo}/manifests/{digest}"), headers={"Accept": MANIFEST})
    config = blob(reg, repo, b"{}")
    layer = blob(reg, repo, data)
    size = int(sys.argv[6]) if len(sys.argv) > 6 else len(data)
    manifest = json.dumps({"schemaVersion": 2, "mediaType": MANIFEST, "artifactType": BUNDLE,
        "config": {"mediaType": "application/vnd.oci.empty.v1+json", "digest": config, "size": 2},
        "layers": [{"mediaType": BUNDLE, "digest": layer, "size": size}],
        "subject": {"mediaType": MANIFEST, "digest": digest, "size": len(subject.content)}}).encode()
    mdigest = "sha256:" + hashlib.sha256(manifest).hexdigest()
    r = requests.put(url(reg, f"{repo}/manifests/{mdigest}"), data=manifest, headers={"Content-Type": MANIFEST})
    assert r.status_code == 201, r.text
    idx = index(reg, repo, digest)
    idx["manifests"].append({"mediaType": MANIFEST, "digest": mdigest, "size": len(manifest), "artifactType": BUNDLE})
    r = requests.put(url(reg, f"{repo}/manifests/{digest.replace(':', '-')}"), data=json.dumps(idx).encode(),
                     headers={"Content-Type": INDEX})
    assert r.status_code == 201, r.text
    print(mdigest)
elif cmd == "delete":
    r = requests.delete(url(reg, f"{repo}/manifests/{sys.argv[4]}"))
    assert r.status_code == 202, r.text
"#;

/// Check a sigstore bundle's DSSE envelope with the public key alone, through
/// securesystemslib and pyca/cryptography; the key id is computed here from the key, as
/// wharf documents its fingerprints. Prints the statement.
pub const VERIFY_PY: &str = r#"
import hashlib, json, sys
from cryptography.hazmat.primitives.serialization import load_pem_public_key, Encoding, PublicFormat
from securesystemslib.dsse import Envelope
from securesystemslib.signer import SSlibKey
bundle, pem, digest = json.load(open(sys.argv[1])), open(sys.argv[2], "rb").read(), sys.argv[3]
public = load_pem_public_key(pem)
der = public.public_bytes(Encoding.DER, PublicFormat.SubjectPublicKeyInfo)
keyid = "ed25519:" + hashlib.sha256(der).hexdigest()[:24]
assert bundle["mediaType"] == "application/vnd.dev.sigstore.bundle.v0.3+json", bundle["mediaType"]
assert bundle["verificationMaterial"]["publicKey"]["hint"] == keyid
envelope = Envelope.from_dict(bundle["dsseEnvelope"])
assert envelope.payload_type == "application/vnd.in-toto+json"
envelope.verify([SSlibKey.from_crypto(public, keyid=keyid)], 1)
statement = json.loads(envelope.payload)
assert statement["_type"] == "https://in-toto.io/Statement/v1", statement["_type"]
assert any(s["digest"]["sha256"] == digest.split(":")[1] for s in statement["subject"]), statement["subject"]
print(json.dumps(statement))
"#;

fn registry_py(args: &[&str]) -> String {
    let out = python(REGISTRY_PY, args);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8(out.stdout).unwrap().trim().to_string()
}

/// `wharf key generate NAME`: the fingerprint it printed.
fn generate(ws: &Workspace, name: &str) -> String {
    let run = ws.wharf(&["key", "generate", name]);
    assert_eq!(run.code(), 0, "{}", run.all());
    let fingerprint = run.stdout().lines().next().unwrap().trim().to_string();
    assert!(fingerprint.starts_with("ed25519:"), "{}", run.all());
    fingerprint
}

/// `wharf step publish STEP TARGET EXTRA...`: its digest.
fn publish(ws: &Workspace, step: &std::path::Path, target: &str, extra: &[&str]) -> String {
    let step = step.display().to_string();
    let mut args = vec!["step", "publish", step.as_str(), target];
    args.extend_from_slice(extra);
    let run = ws.wharf(&args);
    assert_eq!(run.code(), 0, "{}", run.all());
    run.stdout()
        .lines()
        .find_map(|l| l.trim().strip_prefix("digest ").map(String::from))
        .unwrap_or_else(|| panic!("no digest:\n{}", run.all()))
}

fn uses(ws: &Workspace, file: &str, reference: &str) {
    ws.write(
        file,
        &format!("name: signed\nsteps:\n  - id: hello\n    uses: oci://{reference}\n    with: {{ x: hi }}\n"),
    );
}

fn lock_text(ws: &Workspace) -> String {
    std::fs::read_to_string(ws.path().join("wharf.lock")).unwrap()
}

#[test]
fn signed_steps_run_and_unsigned_foreign_or_damaged_ones_are_refused() {
    let registry = Registry::start();
    let reg = registry.addr.as_str();
    let ws = Workspace::new();
    let (cmd, probe) = (guest("cmd-step"), guest("probe_step"));
    let acme = generate(&ws, "keys/acme");
    let other = generate(&ws, "keys/other");
    assert_ne!(acme, other);
    let again = ws.wharf(&["key", "generate", "keys/acme"]);
    assert_eq!(again.code(), 2, "a key is never overwritten: {}", again.all());
    let show = ws.wharf(&["key", "show", "keys/acme.key"]);
    assert!(show.stdout().starts_with(&acme), "{}", show.all());

    // Publish signed; `wharf inspect` says who signed, checked with the public key.
    let target = format!("{reg}/steps/cmd:0.1.0");
    let digest = publish(&ws, &cmd, &target, &["--sign", "keys/acme.key"]);
    let inspect = ws.wharf(&["inspect", &format!("oci://{target}"), "--key", "keys/acme.pub"]);
    assert!(
        inspect.stdout().contains(&format!("signed by {acme} (verified)")),
        "{}",
        inspect.all()
    );
    let unchecked = ws.wharf(&["inspect", &format!("oci://{target}")]);
    assert!(
        unchecked.stdout().contains(&format!("claims {acme}")),
        "{}",
        unchecked.all()
    );

    // The independent verifier agrees, from the registry's bytes and the public key alone.
    let bundles = registry_py(&["bundles", reg, "steps/cmd", &digest]);
    let bundles: Vec<serde_json::Value> = serde_json::from_str(&bundles).unwrap();
    assert_eq!(bundles.len(), 1);
    let bundle_file = ws.write("bundle.json", &bundles[0].to_string());
    let verify = |key: &str| {
        let key = ws.path().join(key);
        let args: [&std::ffi::OsStr; 3] = [bundle_file.as_os_str(), key.as_os_str(), digest.as_ref()];
        python(VERIFY_PY, &args)
    };
    let checked = verify("keys/acme.pub");
    assert!(checked.status.success(), "{}", String::from_utf8_lossy(&checked.stderr));
    let statement: serde_json::Value = serde_json::from_slice(&checked.stdout).unwrap();
    assert_eq!(statement["predicateType"], "https://sigstore.dev/cosign/sign/v1");
    let wrong = verify("keys/other.pub");
    assert!(!wrong.status.success(), "another key does not verify it");

    // The policy: steps under steps/ must be signed by acme. Lock, then run --locked.
    ws.write(
        "wharf.trust.yml",
        &format!("steps:\n  - match: {reg}/steps/**\n    keys: [keys/acme.pub]\n"),
    );
    uses(&ws, "pipeline.yml", &target);
    let lock = ws.wharf(&["lock", "pipeline.yml"]);
    assert_eq!(lock.code(), 0, "{}", lock.all());
    assert!(lock.stdout().contains(&format!("signed by {acme}")), "{}", lock.all());
    let locked: serde_json::Value = serde_json::from_str(&lock_text(&ws)).unwrap();
    assert_eq!(locked["signatures"][format!("oci://{target}")]["key"], acme.as_str());
    let run = ws.wharf(&["run", "pipeline.yml", "--locked", "-v"]);
    assert_eq!(run.code(), 0, "{}", run.all());
    assert_eq!(run.output_of("hello", "x").as_deref(), Some("hi"));
    // The lock's signer is checked too: an edited `key` does not pass for the real one.
    let honest = lock_text(&ws);
    std::fs::write(ws.path().join("wharf.lock"), honest.replace(&acme, &other)).unwrap();
    let edited = ws.wharf(&["run", "pipeline.yml", "--locked"]);
    assert_eq!(edited.code(), 2, "{}", edited.all());
    assert!(
        edited.stderr().contains(&format!(
            "records its signature by {other}, but it verifies as {acme}'s"
        )),
        "{}",
        edited.all()
    );
    std::fs::write(ws.path().join("wharf.lock"), honest).unwrap();

    // A runner with an empty cache: --offline has nothing to check; once pulled, it runs
    // with the registry gone from its reach.
    let far = tempfile::tempdir().unwrap();
    let run_far = |args: &[&str]| Run(ws.command(args).env("WHARF_CACHE_DIR", far.path()).output().unwrap());
    let offline = run_far(&["run", "pipeline.yml", "--locked", "--offline"]);
    assert_eq!(offline.code(), 2, "{}", offline.all());
    assert_eq!(run_far(&["pull", "pipeline.yml", "--locked"]).code(), 0);
    let offline = run_far(&["run", "pipeline.yml", "--locked", "--offline", "--no-cache"]);
    assert_eq!(offline.code(), 0, "{}", offline.all());
    // Across an air gap, the signatures travel with the steps.
    assert_eq!(
        ws.wharf(&["pull", "pipeline.yml", "--locked", "--into", "layout"])
            .code(),
        0
    );
    let gapped = tempfile::tempdir().unwrap();
    let run_gapped = |args: &[&str]| Run(ws.command(args).env("WHARF_CACHE_DIR", gapped.path()).output().unwrap());
    let filled = run_gapped(&["pull", "pipeline.yml", "--locked", "--from", "layout"]);
    assert_eq!(filled.code(), 0, "{}", filled.all());
    let offline = run_gapped(&["run", "pipeline.yml", "--locked", "--offline", "--no-cache"]);
    assert_eq!(offline.code(), 0, "{}", offline.all());

    // An unsigned step, and one signed by a key the policy does not name: refused, naming
    // the step, the keys and the policy; nothing runs, and `wharf lock` keeps the old lock.
    let before = lock_text(&ws);
    let unsigned = format!("{reg}/steps/unsigned:0.1.0");
    publish(&ws, &cmd, &unsigned, &[]);
    let foreign = format!("{reg}/steps/foreign:0.1.0");
    publish(&ws, &cmd, &foreign, &["--sign", "keys/other.key"]);
    for (reference, expected) in [
        (
            &unsigned,
            vec!["is not signed".to_string(), acme.clone(), "wharf.trust.yml".into()],
        ),
        (
            &foreign,
            vec![other.clone(), acme.clone(), "not by a trusted key".into()],
        ),
    ] {
        uses(&ws, "other.yml", reference);
        let refused = ws.wharf(&["run", "other.yml"]);
        assert_eq!(refused.code(), 2, "{}", refused.all());
        for text in &expected {
            assert!(refused.stderr().contains(text.as_str()), "{text}: {}", refused.all());
        }
        assert!(refused.stderr().contains("other.yml:4:11"), "{}", refused.all());
        assert!(refused.stderr().contains("nothing was run"), "{}", refused.all());
        let lock = ws.wharf(&["lock", "other.yml"]);
        assert_ne!(lock.code(), 0, "{}", lock.all());
    }
    assert_eq!(lock_text(&ws), before, "a refused lock writes nothing");

    // A moved tag, now naming an artifact signed by another key: --locked refuses the
    // move; taking it (`lock --update`) is refused for the signature, and the lock stays.
    let channel = format!("{reg}/steps/channel:latest");
    publish(&ws, &cmd, &channel, &["--allow-mutable-tag", "--sign", "keys/acme.key"]);
    uses(&ws, "pipeline.yml", &channel);
    assert_eq!(ws.wharf(&["lock", "pipeline.yml"]).code(), 0);
    let before = lock_text(&ws);
    let moved = publish(
        &ws,
        &probe,
        &channel,
        &["--allow-mutable-tag", "--sign", "keys/other.key"],
    );
    let strict = ws.wharf(&["run", "pipeline.yml", "--locked"]);
    assert_eq!(strict.code(), 2, "{}", strict.all());
    assert!(strict.stderr().contains(&moved), "{}", strict.all());
    let update = ws.wharf(&["lock", "pipeline.yml", "--update"]);
    assert_ne!(update.code(), 0, "{}", update.all());
    assert!(
        update.stderr().contains(&other) && update.stderr().contains(&moved),
        "{}",
        update.all()
    );
    assert_eq!(lock_text(&ws), before);

    // The locked signature deleted from the registry: a runner without it cached refuses.
    uses(&ws, "pipeline.yml", &target);
    assert_eq!(ws.wharf(&["lock", "pipeline.yml", "--update"]).code(), 0);
    let locked: serde_json::Value = serde_json::from_str(&lock_text(&ws)).unwrap();
    let bundle = locked["signatures"][format!("oci://{target}")]["bundle"]
        .as_str()
        .unwrap()
        .to_string();
    registry_py(&["delete", reg, "steps/cmd", &bundle]);
    let empty = tempfile::tempdir().unwrap();
    let deleted = Run(ws
        .command(&["run", "pipeline.yml", "--locked"])
        .env("WHARF_CACHE_DIR", empty.path())
        .output()
        .unwrap());
    assert_eq!(deleted.code(), 2, "{}", deleted.all());
    assert!(
        deleted.stderr().contains("its signature") && deleted.stderr().contains(&bundle),
        "{}",
        deleted.all()
    );

    // A damaged signature: acme's bundle with its statement swapped for one about another
    // artifact, attached to that artifact. The key id is acme's; the signature fails.
    let forged_target = format!("{reg}/steps/forged:0.1.0");
    let forged_digest = publish(&ws, &probe, &forged_target, &[]);
    let mut forged = bundles[0].clone();
    let statement = serde_json::json!({
        "_type": "https://in-toto.io/Statement/v1",
        "subject": [{ "name": "x", "digest": { "sha256": forged_digest.trim_start_matches("sha256:") } }],
        "predicateType": "https://sigstore.dev/cosign/sign/v1",
        "predicate": {},
    });
    use base64::Engine as _;
    forged["dsseEnvelope"]["payload"] = base64::engine::general_purpose::STANDARD
        .encode(statement.to_string())
        .into();
    let forged_file = ws.write("forged.json", &forged.to_string());
    registry_py(&[
        "attach",
        reg,
        "steps/forged",
        &forged_digest,
        forged_file.to_str().unwrap(),
    ]);
    uses(&ws, "other.yml", &forged_target);
    let damaged = ws.wharf(&["run", "other.yml"]);
    assert_eq!(damaged.code(), 2, "{}", damaged.all());
    assert!(
        damaged.stderr().contains("does not verify") && damaged.stderr().contains(&acme),
        "{}",
        damaged.all()
    );
}

#[test]
fn bad_signatures_and_keys_are_clear_errors_in_bounded_memory() {
    let registry = Registry::start();
    let reg = registry.addr.as_str();
    let ws = Workspace::new();
    generate(&ws, "keys/acme");
    ws.write(
        "wharf.trust.yml",
        &format!("steps:\n  - match: {reg}/steps/*\n    keys: [keys/acme.pub]\n"),
    );
    let cmd = guest("cmd-step");

    // A bundle that claims a gigabyte, one of 2 MiB, one that is not JSON.
    let big = ws.write("big.json", &"x".repeat(2 << 20));
    let junk = ws.write("junk.json", "\u{0}not json at all");
    for (name, file, size, expected) in [
        (
            "gigabyte",
            &junk,
            Some((1u64 << 30).to_string()),
            "is 1073741824 bytes, over the limit",
        ),
        ("large", &big, None, "is 2097152 bytes, over the limit"),
        ("junk", &junk, None, "is not JSON"),
    ] {
        let target = format!("{reg}/steps/{name}:0.1.0");
        let digest = publish(&ws, &cmd, &target, &[]);
        let mut args = vec![
            "attach",
            reg,
            &format!("steps/{name}")[..],
            &digest,
            file.to_str().unwrap(),
        ]
        .into_iter()
        .map(String::from)
        .collect::<Vec<_>>();
        args.extend(size);
        registry_py(&args.iter().map(String::as_str).collect::<Vec<_>>());
        uses(&ws, "pipeline.yml", &target);
        let (code, peak) = common::peak_memory(ws.command(&["run", "pipeline.yml"]));
        let run = ws.wharf(&["run", "pipeline.yml"]);
        assert_eq!((code, run.code()), (2, 2), "{}", run.all());
        assert!(run.stderr().contains(expected), "{name}: {}", run.all());
        assert!(peak < 200 << 20, "{name}: {peak} bytes at peak");
    }

    // Keys that are not keys: a clear error naming the file, never trusted.
    ws.write(
        "keys/junk.pub",
        "-----BEGIN PUBLIC KEY-----\nAAAA\n-----END PUBLIC KEY-----\n",
    );
    let verify = ws.wharf(&["verify", &format!("{reg}/steps/junk:0.1.0"), "--key", "keys/junk.pub"]);
    assert_eq!(verify.code(), 2, "{}", verify.all());
    assert!(
        verify.stderr().contains("keys/junk.pub is not an Ed25519 public key"),
        "{}",
        verify.all()
    );
    let private = ws.wharf(&["verify", &format!("{reg}/steps/junk:0.1.0"), "--key", "keys/acme.key"]);
    assert!(private.stderr().contains("is a private key"), "{}", private.all());
    ws.write(
        "wharf.trust.yml",
        &format!("steps:\n  - match: {reg}/steps/*\n    keys: [keys/junk.pub]\n"),
    );
    let policy = ws.wharf(&["run", "pipeline.yml"]);
    assert_eq!(policy.code(), 2, "{}", policy.all());
    assert!(
        policy
            .stderr()
            .contains("wharf.trust.yml:3:12: keys/junk.pub is not an Ed25519 public key"),
        "{}",
        policy.all()
    );
}

/// 100,000 referrers: no registry here accepts an index that large (Debian's refuses
/// manifests over 4 MiB), so a stand-in serves one through the referrers API.
#[test]
fn a_flood_of_referrers_is_cut_off() {
    use common::services::StandIn;
    use std::io::Write;
    let flood = StandIn::start(|head, _, conn| {
        let digest = format!("sha256:{}", "a".repeat(64));
        if head.starts_with("HEAD /v2/steps/flood/manifests/0.1.0") {
            let _ = write!(
                conn,
                "HTTP/1.1 200 OK\r\nDocker-Content-Digest: {digest}\r\nContent-Type: application/vnd.oci.image.manifest.v1+json\r\nContent-Length: 0\r\n\r\n"
            );
        } else if head.starts_with("GET /v2/steps/flood/referrers/") {
            let entry = format!(
                "{{\"mediaType\":\"application/vnd.oci.image.manifest.v1+json\",\"digest\":\"{digest}\",\"size\":1,\"artifactType\":\"application/vnd.dev.sigstore.bundle.v0.3+json\"}}"
            );
            let body = format!(
                "{{\"schemaVersion\":2,\"mediaType\":\"application/vnd.oci.image.index.v1+json\",\"manifests\":[{}]}}",
                vec![entry; 100_000].join(",")
            );
            let _ = write!(
                conn,
                "HTTP/1.1 200 OK\r\nContent-Type: application/vnd.oci.image.index.v1+json\r\nContent-Length: {}\r\n\r\n",
                body.len()
            );
            let _ = conn.write_all(body.as_bytes());
        } else {
            let _ = write!(conn, "HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\n\r\n");
        }
    });
    let ws = Workspace::new();
    generate(&ws, "keys/acme");
    ws.write(
        "wharf.trust.yml",
        &format!("steps:\n  - match: {}/steps/*\n    keys: [keys/acme.pub]\n", flood.addr),
    );
    uses(&ws, "pipeline.yml", &format!("{}/steps/flood:0.1.0", flood.addr));
    let (code, peak) = common::peak_memory(ws.command(&["run", "pipeline.yml"]));
    let run = ws.wharf(&["run", "pipeline.yml"]);
    assert_eq!((code, run.code()), (2, 2), "{}", run.all());
    assert!(
        run.stderr().contains("the referrers of steps/flood@") && run.stderr().contains("4194304"),
        "{}",
        run.all()
    );
    assert!(peak < 200 << 20, "{peak} bytes at peak");
}

/// The seed pipeline run with `provenance-key:` on its push and `require-provenance:` on its
/// upgrade, on `target`: its release verifies (with `wharf verify` and independently, and
/// the journal digest it names is the run's journal's); a release pushed without provenance,
/// or with provenance by another key, is refused before any instance changes.
fn provenance_on(target: &str, service: &str) {
    let registry = Registry::start();
    let ws = Workspace::seed();
    let release = generate(&ws, "keys/release");
    let other = generate(&ws, "keys/other");
    let key = |name: &str| std::fs::read_to_string(ws.path().join(format!("keys/{name}.key"))).unwrap();
    let vars = |extra: &[&str]| {
        let mut args: Vec<String> = ["run", "pipeline.yml", "-v"].map(String::from).to_vec();
        for var in [
            format!("registry={}", registry.addr),
            format!("target={target}"),
            format!("service={service}"),
            "require-provenance=keys/release.pub".into(),
        ]
        .into_iter()
        .chain(extra.iter().map(|e| e.to_string()))
        {
            args.extend(["--var".to_string(), var]);
        }
        args
    };
    let run = |extra: &[&str]| {
        let args = vars(extra);
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        Run(ws
            .command(&args)
            .env("WHARF_SECRET_RELEASE_KEY", key("release"))
            .env("WHARF_SECRET_OTHER_KEY", key("other"))
            .output()
            .unwrap())
    };

    let good = run(&["provenance-key=RELEASE_KEY"]);
    assert_eq!(good.code(), 0, "{}", good.all());
    assert!(
        good.stdout()
            .contains(&format!("provenance signed by {release} verified")),
        "{}",
        good.all()
    );
    let version = good.output_of("version", "version").unwrap();
    let digest = good.output_of("push", "digest").unwrap();
    let run_id = good.run_id();

    // `wharf verify` with the public key alone prints what the provenance says.
    let image = format!("{}/{service}:{version}", registry.addr);
    let verify = ws.wharf(&["verify", &image, "--key", "keys/release.pub"]);
    assert_eq!(verify.code(), 0, "{}", verify.all());
    let said = verify.stdout();
    assert!(
        said.contains(&format!("signed by {release}")) && said.contains(&run_id),
        "{said}"
    );
    let refused = ws.wharf(&["verify", &image, "--key", "keys/other.pub"]);
    assert_eq!(refused.code(), 1, "{}", refused.all());
    assert!(refused.stderr().contains(&other), "{}", refused.all());

    // The independent verifier, and the journal digest checked against the run's journal.
    let bundles = registry_py(&["bundles", &registry.addr, service, &digest]);
    let bundles: Vec<serde_json::Value> = serde_json::from_str(&bundles).unwrap();
    let bundle_file = ws.write("provenance.json", &bundles[0].to_string());
    let pem = ws.path().join("keys/release.pub");
    let args: [&std::ffi::OsStr; 3] = [bundle_file.as_os_str(), pem.as_os_str(), digest.as_ref()];
    let checked = python(VERIFY_PY, &args);
    assert!(checked.status.success(), "{}", String::from_utf8_lossy(&checked.stderr));
    let statement: serde_json::Value = serde_json::from_slice(&checked.stdout).unwrap();
    assert_eq!(statement["predicateType"], "https://slsa.dev/provenance/v1");
    let predicate = &statement["predicate"];
    assert_eq!(predicate["runDetails"]["metadata"]["invocationId"], run_id.as_str());
    assert_eq!(
        predicate["runDetails"]["builder"]["version"]["wharf"],
        env!("CARGO_PKG_VERSION")
    );
    let pipeline = std::fs::read(ws.path().join("pipeline.yml")).unwrap();
    use sha2::Digest as _;
    assert_eq!(
        predicate["buildDefinition"]["externalParameters"]["pipeline"]["digest"]["sha256"],
        hex::encode(sha2::Sha256::digest(&pipeline))
    );
    let dependencies = predicate["buildDefinition"]["resolvedDependencies"].as_array().unwrap();
    for step in ["version", "build", "push", "upgrade", "gate", "finish"] {
        assert!(
            dependencies.iter().any(|d| d["name"] == format!("step:{step}")),
            "{step}: {dependencies:?}"
        );
    }
    let revision = std::process::Command::new("git")
        .args(["rev-parse", "HEAD"])
        .current_dir(ws.path())
        .output()
        .unwrap();
    let revision = String::from_utf8(revision.stdout).unwrap();
    assert!(
        dependencies.iter().any(|d| d["digest"]["gitCommit"] == revision.trim()),
        "{dependencies:?}"
    );
    let params = &predicate["buildDefinition"]["externalParameters"]["steps"]["build"];
    assert!(params.to_string().contains("seed-service"), "{params}");
    let journal = &predicate["runDetails"]["byproducts"][0];
    assert_eq!(journal["annotations"]["recorded"], "whole");
    let length = journal["annotations"]["bytes"].as_u64().unwrap() as usize;
    let recorded = std::fs::read(ws.path().join(format!(".wharf/runs/{run_id}/journal.jsonl"))).unwrap();
    assert!(length > 0 && length < recorded.len());
    assert_eq!(
        journal["digest"]["sha256"],
        hex::encode(sha2::Sha256::digest(&recorded[..length])),
        "the journal as it stood at the push"
    );

    // Without provenance, and with provenance by a key the upgrade does not require: refused
    // at the upgrade, before any instance changed; the good release still serves.
    for (extra, expected) in [
        (vec![], format!("has no provenance signed by {release}")),
        (vec!["provenance-key=OTHER_KEY"], other.clone()),
    ] {
        ws.commit("next");
        let refused = run(&extra);
        assert_eq!(refused.code(), 1, "{}", refused.all());
        assert!(refused.step_line("upgrade").contains("denied"), "{}", refused.all());
        assert!(
            refused.all().contains(&expected) && refused.all().contains("nothing was deployed"),
            "{expected}: {}",
            refused.all()
        );
        let state = ws.service_state(service);
        assert_eq!(state["state"], "active", "{state}");
        assert_eq!(state["current"]["revision"]["digest"], digest.as_str(), "{state}");
        for url in ws.running_urls(service) {
            assert_eq!(
                common::services::http_get(&format!("{url}/api/v1/version"))
                    .unwrap()
                    .1
                    .trim(),
                version
            );
        }
    }
}

#[test]
fn provenance_is_attached_verified_and_required_by_upgrades_on_local() {
    provenance_on("local", "seed");
}

#[test]
fn provenance_is_required_by_upgrades_on_docker() {
    provenance_on("docker", &format!("seed-prov-{}", std::process::id()));
}
