//! Push of a ~100 MB image to a loopback registry (Debian's docker-registry): `wharf run` of
//! a one-step push pipeline against `skopeo copy` of the same OCI layout, side by side in one
//! run, plus the re-push of an unchanged image.
//!
//! `cargo bench --bench push` (needs `docker-registry` and `skopeo`).
//!
//! Every sample gets a fresh registry, so neither tool finds blobs already there, and skopeo
//! gets a fresh HOME, so its blob-info cache cannot turn an upload into a cross-repository
//! mount.

#[path = "../../tests/common/services.rs"]
#[allow(dead_code)]
mod services;

#[path = "support/measure.rs"]
#[allow(dead_code)]
mod measure;

use measure::{median, ms};
use services::Registry;
use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

const SAMPLES: usize = 5;
const IMAGE_BYTES: usize = 100 << 20;

fn run(cmd: &mut Command) -> Duration {
    let t = Instant::now();
    let out = cmd.output().unwrap();
    let took = t.elapsed();
    assert!(
        out.status.success(),
        "{cmd:?}:\n{}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    took
}

fn main() {
    let wharf = Path::new(env!("CARGO_BIN_EXE_wharf"));
    let ws = tempfile::tempdir().unwrap();
    let cache = tempfile::tempdir().unwrap();
    // Incompressible content, so the layer stays ~100 MB after gzip.
    let mut state = 0x9E37_79B9_7F4A_7C15u64;
    let data: Vec<u8> = (0..IMAGE_BYTES / 8)
        .flat_map(|_| {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            state.to_le_bytes()
        })
        .collect();
    std::fs::write(ws.path().join("blob.bin"), &data).unwrap();
    std::fs::write(
        ws.path().join("build.yml"),
        "name: build\nsteps:\n  - id: build\n    uses: builtin:build\n    cache: false\n    with:\n      repository: big\n      tag: 1.0.0-1-abcdef0\n      files: { blob.bin: /blob.bin }\n      revision: bench\n",
    )
    .unwrap();
    std::fs::write(
        ws.path().join("push.yml"),
        "name: push\nvars:\n  registry:\nsteps:\n  - id: push\n    uses: builtin:push\n    cache: false\n    with:\n      image: big:1.0.0-1-abcdef0\n      registry: ${{ vars.registry }}\n",
    )
    .unwrap();
    let wharf_cmd = |args: &[&str]| {
        let mut c = Command::new(wharf);
        c.args(args).current_dir(ws.path()).env("WHARF_CACHE_DIR", cache.path());
        c
    };
    run(&mut wharf_cmd(&["run", "build.yml"]));
    // The push step takes REPO:TAG@DIGEST; find the digest the build recorded.
    let index: serde_json::Value =
        serde_json::from_slice(&std::fs::read(ws.path().join(".wharf/oci/index.json")).unwrap()).unwrap();
    let digest = index["manifests"][0]["digest"].as_str().unwrap().to_string();
    let image = format!("big:1.0.0-1-abcdef0@{digest}");
    std::fs::write(
        ws.path().join("push.yml"),
        std::fs::read_to_string(ws.path().join("push.yml"))
            .unwrap()
            .replace("big:1.0.0-1-abcdef0", &image),
    )
    .unwrap();
    let layer_size: u64 = std::fs::read_dir(ws.path().join(".wharf/oci/blobs/sha256"))
        .unwrap()
        .map(|e| e.unwrap().metadata().unwrap().len())
        .max()
        .unwrap();
    println!(
        "image: {image}, largest blob {:.1} MiB",
        layer_size as f64 / (1 << 20) as f64
    );

    let layout = ws.path().join(".wharf/oci");
    let mut wharf_times = Vec::new();
    let mut skopeo_times = Vec::new();
    for i in 0..SAMPLES {
        let mut sample = |tool: &str| {
            let registry = Registry::start();
            match tool {
                "wharf" => wharf_times.push(run(&mut wharf_cmd(&[
                    "run",
                    "push.yml",
                    "--var",
                    &format!("registry={}", registry.addr),
                ]))),
                _ => {
                    let home = tempfile::tempdir().unwrap();
                    skopeo_times.push(run(Command::new("skopeo")
                        .env("HOME", home.path())
                        .args(["copy", "--quiet", "--dest-tls-verify=false"])
                        .arg(format!("oci:{}:big:1.0.0-1-abcdef0", layout.display()))
                        .arg(format!("docker://{}/big:1.0.0-1-abcdef0", registry.addr))));
                }
            }
        };
        // Alternate the order so neither tool always runs on a warmer machine.
        if i % 2 == 0 {
            sample("wharf");
            sample("skopeo");
        } else {
            sample("skopeo");
            sample("wharf");
        }
    }
    let (w, s) = (median(wharf_times.clone()), median(skopeo_times.clone()));
    println!("push ~100 MB, fresh registry each sample (n={SAMPLES})");
    println!(
        "  wharf run (push step)  median {:>8.1} ms   samples {:?}",
        ms(w),
        wharf_times.iter().map(|d| ms(*d).round()).collect::<Vec<_>>()
    );
    println!(
        "  skopeo copy            median {:>8.1} ms   samples {:?}",
        ms(s),
        skopeo_times.iter().map(|d| ms(*d).round()).collect::<Vec<_>>()
    );
    println!(
        "  ratio wharf/skopeo     {:.2} (target <= 1.0)",
        w.as_secs_f64() / s.as_secs_f64()
    );

    // Re-push of an unchanged image: one manifest HEAD, nothing sent.
    let registry = Registry::start();
    let reg = format!("registry={}", registry.addr);
    run(&mut wharf_cmd(&["run", "push.yml", "--var", &reg]));
    let repush: Vec<Duration> = (0..20)
        .map(|_| run(&mut wharf_cmd(&["run", "push.yml", "--var", &reg])))
        .collect();
    println!(
        "re-push unchanged image, whole `wharf run` process (n=20): median {:.1} ms (target < 100 ms)",
        ms(median(repush))
    );
}
