//! What checking signatures costs a run: `wharf run --locked` of a pipeline of 10 `oci://`
//! steps (each its own repository on a loopback registry, Debian's docker-registry), warm
//! (components in the step cache, compiled), with a trust policy that covers all ten (each
//! step's signature read from the cache and verified before anything is compiled) against
//! the same pipeline without one, side by side in one run of this program, interleaved
//! round by round. Both runs ask the registry for each tag (the lock's drift check) and run
//! the ten steps.
//!
//! `cargo bench --bench signatures`

#[path = "../../tests/common/mod.rs"]
mod common;

#[path = "support/measure.rs"]
#[allow(dead_code)]
mod measure;

use common::services::Registry;
use common::{Workspace, guest};
use measure::{median, ms, timed};
use std::time::Duration;

const ROUNDS: usize = 25;
const STEPS: usize = 10;

fn pipeline(registry: &str) -> String {
    let mut text = String::from("name: signed\nsteps:\n");
    for i in 0..STEPS {
        text.push_str(&format!(
            "  - id: s{i}\n    uses: oci://{registry}/steps/s{i}:0.1.0\n    cache: false\n    with: {{ x: \"{i}\" }}\n"
        ));
    }
    text
}

fn main() {
    let registry = Registry::start();
    let ws = Workspace::new();
    let wharf = |args: &[&str]| {
        let run = ws.wharf(args);
        assert_eq!(run.code(), 0, "{args:?}: {}", run.all());
    };
    wharf(&["key", "generate", "keys/acme"]);
    let cmd = guest("cmd-step");
    for i in 0..STEPS {
        let target = format!("{}/steps/s{i}:0.1.0", registry.addr);
        wharf(&[
            "step",
            "publish",
            cmd.to_str().unwrap(),
            &target,
            "--sign",
            "keys/acme.key",
        ]);
    }
    // signed/: a trust policy over every step; plain/: none. Locked, pulled, run once.
    for (dir, policy) in [("signed", true), ("plain", false)] {
        std::fs::create_dir_all(ws.path().join(dir)).unwrap();
        ws.write(&format!("{dir}/pipeline.yml"), &pipeline(&registry.addr));
        if policy {
            std::fs::create_dir_all(ws.path().join("signed/keys")).unwrap();
            std::fs::copy(ws.path().join("keys/acme.pub"), ws.path().join("signed/keys/acme.pub")).unwrap();
            ws.write(
                "signed/wharf.trust.yml",
                &format!(
                    "steps:\n  - match: {}/steps/*\n    keys: [keys/acme.pub]\n",
                    registry.addr
                ),
            );
        }
        let file = format!("{dir}/pipeline.yml");
        wharf(&["lock", &file]);
        wharf(&["run", &file, "--locked"]);
    }
    let locked = std::fs::read_to_string(ws.path().join("signed/wharf.lock")).unwrap();
    assert_eq!(locked.matches("\"key\": \"ed25519:").count(), STEPS, "{locked}");

    let mut signed: Vec<Duration> = Vec::new();
    let mut plain: Vec<Duration> = Vec::new();
    for _ in 0..ROUNDS {
        signed.push(timed(
            ws.command(&["run", "signed/pipeline.yml", "--locked"])
                .env("WHARF_KEEP_RUNS", "20"),
        ));
        plain.push(timed(
            ws.command(&["run", "plain/pipeline.yml", "--locked"])
                .env("WHARF_KEEP_RUNS", "20"),
        ));
    }
    let (s, p) = (median(signed), median(plain));
    println!("\n`wharf run --locked`, {STEPS} oci:// steps, warm, median of {ROUNDS}");
    println!("{:<40} {:>9.1} ms", "signatures checked (trust policy)", ms(s));
    println!("{:<40} {:>9.1} ms", "no trust policy", ms(p));
    println!(
        "{:<40} {:>+9.2} ms ({:.3}x)",
        "difference",
        ms(s) - ms(p),
        s.as_secs_f64() / p.as_secs_f64()
    );
}
