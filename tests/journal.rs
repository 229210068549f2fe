//! Record and replay: every run writes a journal; a replay answers every host call from it,
//! offline, and stops with a side-by-side report when a step leaves the recorded path.

mod common;
use common::services::{Registry, http_get};
use common::{Run, Workspace, guest};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for entry in std::fs::read_dir(from).unwrap() {
        let entry = entry.unwrap();
        let target = to.join(entry.file_name());
        if entry.file_type().unwrap().is_dir() {
            copy_dir(&entry.path(), &target);
        } else {
            std::fs::copy(entry.path(), target).unwrap();
        }
    }
}

/// Output lines (`→ k=v`) of every step, in order.
fn outputs(run: &Run) -> Vec<String> {
    run.stdout()
        .lines()
        .filter(|l| l.trim_start().starts_with('→'))
        .map(|l| l.trim().to_string())
        .collect()
}

#[test]
fn a_recorded_seed_run_replays_offline_on_another_machine() {
    let registry = Registry::start();
    let ws = Workspace::seed();
    let original = ws.wharf(&[
        "run",
        "pipeline.yml",
        "-v",
        "--var",
        &format!("registry={}", registry.addr),
    ]);
    assert_eq!(original.code(), 0, "{}", original.all());
    let id = original.run_id();
    let run_dir = ws.path().join(".wharf/runs").join(&id);
    assert!(run_dir.join("journal.jsonl").exists());
    assert!(run_dir.join("pipeline.yml").exists());
    // Built-in steps are in the binary: the folder does not carry a copy of each.
    assert!(
        !run_dir.join("components").exists(),
        "a seed run folder holds built-in components"
    );

    // Nothing the run talked to is left: no registry, no service, no workspace.
    drop(registry);
    let removed = ws.wharf(&["remove", "seed"]);
    assert_eq!(removed.code(), 0, "{}", removed.all());
    let elsewhere = tempfile::tempdir().unwrap();
    let copied = elsewhere.path().join(&id);
    copy_dir(&run_dir, &copied);
    let empty = Workspace::new();
    let replay = empty.wharf(&["replay", copied.to_str().unwrap(), "-v"]);
    assert_eq!(replay.code(), 0, "{}", replay.all());
    assert!(
        replay.stdout().contains(&format!(
            "replay of {id} matched the journal: 8 step attempt(s) reproduced"
        )),
        "{}",
        replay.all()
    );
    assert_eq!(
        outputs(&replay),
        outputs(&original),
        "the replay produced other outputs"
    );

    // `runs` and `log` read it back.
    let runs = ws.wharf(&["runs"]);
    assert!(
        runs.stdout().contains(&id) && runs.stdout().contains("success (exit 0)"),
        "{}",
        runs.all()
    );
    let log = ws.wharf(&["log", &id]);
    assert_eq!(log.code(), 0, "{}", log.all());
    let text = log.stdout();
    assert!(text.contains("call wharf:step/process.run"), "{text}");
    assert!(text.contains("call wharf:step/registry.push"), "{text}");
    assert!(text.contains("call wasi:http/outgoing-handler.handle"), "{text}");
    assert!(text.contains("✓ gate success"), "{text}");
    assert!(
        text.contains("run success in") && text.contains("exit code 0"),
        "{text}"
    );
}

#[test]
fn a_changed_step_diverges_at_its_first_different_call() {
    let ws = Workspace::seed();
    let original = ws.wharf(&["run", "pipeline.yml"]);
    assert_eq!(original.code(), 0, "{}", original.all());
    let id = original.run_id();
    let changed = guest("gate_v2");
    let replay = ws.wharf(&["replay", &id, "--step", &format!("gate={}", changed.display())]);
    assert_eq!(replay.code(), 5, "{}", replay.all());
    let out = replay.stdout();
    assert!(
        out.contains("replay diverged in step `gate` (attempt 1) at call #1:"),
        "{out}"
    );
    let recorded = out.lines().find(|l| l.trim_start().starts_with("recorded:")).unwrap();
    let replayed = out.lines().find(|l| l.trim_start().starts_with("replayed:")).unwrap();
    assert!(
        recorded.contains("wasi:http/outgoing-handler.handle") && recorded.contains("/api/v1/status\""),
        "{recorded}"
    );
    assert!(
        replayed.contains("wasi:http/outgoing-handler.handle") && replayed.contains("/api/v1/status?probe=2\""),
        "{replayed}"
    );
    // The steps before it replayed as recorded.
    assert_eq!(replay.status_of("upgrade"), "ok");

    // A mistyped step id or a missing build is refused before anything replays, rather
    // than replaying the recorded component and passing.
    let typo = ws.wharf(&["replay", &id, "--step", &format!("gaet={}", changed.display())]);
    assert_eq!(typo.code(), 2, "{}", typo.all());
    assert!(
        typo.stderr().contains("run ")
            && typo.stderr().contains("has no step `gaet`")
            && typo.stderr().contains("gate"),
        "{}",
        typo.all()
    );
    assert!(!typo.stdout().contains("replay of"), "{}", typo.all());
    let missing = ws.wharf(&["replay", &id, "--step", "gate=no-such.wasm"]);
    assert_eq!(missing.code(), 2, "{}", missing.all());
    assert!(missing.stderr().contains("no-such.wasm"), "{}", missing.all());
}

/// A tiny HTTP server whose answer the test switches from FAIL to OK.
fn switchable_status() -> (String, Arc<AtomicBool>) {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let url = format!("http://{}/status", listener.local_addr().unwrap());
    let ok = Arc::new(AtomicBool::new(false));
    let flag = ok.clone();
    std::thread::spawn(move || {
        for stream in listener.incoming() {
            let Ok(mut stream) = stream else { continue };
            let mut buf = [0u8; 2048];
            let _ = std::io::Read::read(&mut stream, &mut buf);
            let body = if flag.load(Ordering::SeqCst) { "OK" } else { "FAIL" };
            let _ = std::io::Write::write_all(
                &mut stream,
                format!(
                    "HTTP/1.1 200 OK\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
                    body.len()
                )
                .as_bytes(),
            );
        }
    });
    (url, ok)
}

#[test]
fn resume_after_a_failed_gate_runs_only_the_remaining_steps() {
    let ws = Workspace::seed();
    let (url, ok) = switchable_status();
    // The gate checks an outside dependency; the run pauses instead of rolling back.
    let text = std::fs::read_to_string(ws.path().join("pipeline.yml"))
        .unwrap()
        .replace("on-failure: rollback", "on-failure: pause")
        .replace(
            "url: ${{ steps.upgrade.outputs.url }}/api/v1/status",
            "url: ${{ vars.gate-url }}",
        )
        .replace("deadline: 10s", "deadline: 2s")
        .replace(
            "    uses: builtin:finish\n    if: always()\n",
            "    uses: builtin:finish\n",
        )
        .replace("  replicas: \"2\"\n", "  replicas: \"2\"\n  gate-url: \"\"\n");
    ws.write("pipeline.yml", &text);
    let gate = format!("gate-url={url}");
    let failed = ws.wharf(&["run", "pipeline.yml", "-v", "--var", &gate]);
    assert_eq!(failed.code(), 4, "paused for a human:\n{}", failed.all());
    assert_eq!(failed.status_of("gate"), "FAIL");
    assert_eq!(ws.service_state("seed")["state"], "upgraded");
    let first = failed.run_id();

    ok.store(true, Ordering::SeqCst);
    let resumed = ws.wharf(&["run", "pipeline.yml", "-v", "--var", &gate, "--resume", &first]);
    assert_eq!(resumed.code(), 0, "{}", resumed.all());
    for step in ["version", "build", "push", "upgrade", "discover"] {
        assert!(
            resumed.step_line(step).contains(&format!("reused from run {first}")),
            "{}",
            resumed.all()
        );
    }
    let out = resumed.stdout();
    assert!(
        !out.contains("▸ build") && !out.contains("▸ upgrade"),
        "a finished step ran again:\n{out}"
    );
    assert!(out.contains("▸ gate") && out.contains("▸ finish"), "{out}");
    assert_eq!(resumed.output_of("finish", "action").unwrap(), "confirmed");
    let state = ws.service_state("seed");
    assert_eq!(state["state"], "active");
    for url in ws.running_urls("seed") {
        assert_eq!(http_get(&format!("{url}/api/v1/status")).unwrap().1.trim(), "OK");
    }
}

/// A journal with one 200 MB line (a forged folder, or a step allowed a huge log): `wharf
/// log`, `report` and `replay` read it a line at a time and print it as it stands, so the
/// most they hold is about twice that line, where they held four times the journal.
#[test]
fn a_journal_with_one_huge_line_is_read_in_bounded_memory() {
    let ws = Workspace::new();
    ws.write(
        "pipeline.yml",
        "name: huge\nsteps:\n  - id: a\n    uses: ./probe.wasm\n    with: { echo: hi }\n",
    );
    let run = ws.wharf(&["run", "pipeline.yml"]);
    assert_eq!(run.code(), 0, "{}", run.all());
    let journal = ws.path().join(".wharf/runs").join(run.run_id()).join("journal.jsonl");
    let text = std::fs::read_to_string(&journal).unwrap();
    let mut lines: Vec<&str> = text.lines().collect();
    const HUGE: usize = 200 << 20;
    let big = format!(
        "{{\"at_ms\":1,\"kind\":\"log\",\"step\":\"a\",\"level\":\"info\",\"stream\":\"stdout\",\"message\":\"{}\"}}",
        "x".repeat(HUGE)
    );
    let last = lines.pop().unwrap();
    lines.push(&big);
    lines.push(last);
    std::fs::write(&journal, lines.join("\n") + "\n").unwrap();
    drop(big);
    let run_id = run.run_id();
    for command in [
        vec!["log", run_id.as_str()],
        vec!["report", run_id.as_str()],
        vec!["replay", run_id.as_str()],
    ] {
        let (code, peak) = common::peak_memory(ws.command(&command));
        assert_eq!(code, 0, "{command:?}");
        assert!(
            peak < (HUGE as u64) * 5 / 2,
            "{command:?} held {} MB for a {} MB line",
            peak >> 20,
            HUGE >> 20
        );
    }
}

#[test]
fn a_journal_cut_off_mid_write_reads_and_replays_as_far_as_it_goes() {
    let ws = Workspace::new();
    ws.write(
        "pipeline.yml",
        "name: cut\nsteps:\n  - id: first\n    uses: ./probe.wasm\n    with: { echo: one }\n  - id: second\n    uses: ./cmd.wasm\n    with: { x: two }\n  - id: hang\n    uses: builtin:exec\n    with: { program: sleep, args: [\"60\"] }\n",
    );
    // Kill the run while its last step hangs, as a crashed CI runner would: once `hang` has
    // started and its program is running (its `$ sleep 60` line follows the step-started
    // entry), so the journal's end is known.
    let mut child = ws
        .command(&["run", "pipeline.yml"])
        .stdout(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let runs = ws.path().join(".wharf/runs");
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(120);
    let started_hang = |l: &str| l.contains("\"kind\":\"step-started\"") && l.contains("\"step\":\"hang\"");
    let (journal, text) = loop {
        assert!(
            std::time::Instant::now() < deadline,
            "the run never reached its `hang` step"
        );
        let found: Option<PathBuf> = std::fs::read_dir(&runs)
            .ok()
            .and_then(|mut d| d.next())
            .map(|e| e.unwrap().path().join("journal.jsonl"));
        if let Some(j) = found {
            let text = std::fs::read_to_string(&j).unwrap_or_default();
            let lines: Vec<&str> = text.lines().collect();
            if let Some(at) = lines.iter().position(|l| started_hang(l))
                && lines[at + 1..].iter().any(|l| l.contains("$ sleep 60"))
            {
                break (j, text);
            }
        }
        std::thread::sleep(std::time::Duration::from_millis(50));
    };
    child.kill().unwrap();
    child.wait().unwrap();
    // Cut the line after `hang`'s step-started entry in half, as a write interrupted by the
    // kill would: the entry itself stays whole, whatever else was written after it.
    let mut end_of_hang = 0;
    for line in text.split_inclusive('\n') {
        end_of_hang += line.len();
        if started_hang(line) {
            break;
        }
    }
    let next = text[end_of_hang..].split_inclusive('\n').next().unwrap_or_default();
    std::fs::write(&journal, &text[..end_of_hang + next.len() / 2]).unwrap();
    let id = journal
        .parent()
        .unwrap()
        .file_name()
        .unwrap()
        .to_str()
        .unwrap()
        .to_string();

    let log = ws.wharf(&["log", &id]);
    assert_eq!(log.code(), 0, "{}", log.all());
    assert!(log.stdout().contains("✓ first success"), "{}", log.all());
    assert!(log.stdout().contains("✓ second success"), "{}", log.all());
    assert!(
        log.stdout()
            .contains("(the journal ends here: the last entry was cut off, the run was killed)"),
        "{}",
        log.all()
    );
    let runs = ws.wharf(&["runs"]);
    assert!(
        runs.stdout().contains("cut off") || runs.stdout().contains("unfinished"),
        "{}",
        runs.all()
    );

    let replay = ws.wharf(&["replay", &id, "-v"]);
    assert_eq!(replay.code(), 0, "{}", replay.all());
    assert_eq!(replay.output_of("first", "echo").unwrap(), "one");
    assert_eq!(replay.output_of("second", "x").unwrap(), "two");
    assert!(
        replay.stdout().contains("the journal ends inside step `hang`"),
        "{}",
        replay.all()
    );
}

#[test]
fn secrets_stay_masked_in_the_journal() {
    let ws = Workspace::new();
    std::fs::copy(guest("escape_step"), ws.path().join("escape.wasm")).unwrap();
    ws.write(
        "pipeline.yml",
        "name: s\nsteps:\n  - id: leak\n    uses: ./escape.wasm\n    allow: { secrets: [token] }\n    with: { attack: secret-output, target: token }\n",
    );
    let run = Run(ws
        .command(&["run", "pipeline.yml"])
        .env("WHARF_SECRET_TOKEN", "journal-secret-42")
        .output()
        .unwrap());
    assert_eq!(run.code(), 0, "{}", run.all());
    let dir = std::fs::read_dir(ws.path().join(".wharf/runs"))
        .unwrap()
        .next()
        .unwrap()
        .unwrap()
        .path();
    let journal = std::fs::read_to_string(dir.join("journal.jsonl")).unwrap();
    assert!(!journal.contains("journal-secret-42"), "{journal}");
    assert!(
        journal.contains("\"function\":\"reveal\"") && journal.contains("***"),
        "{journal}"
    );
    // The replay sees the masked value, consistently.
    let replay = ws.wharf(&["replay", dir.to_str().unwrap(), "-v"]);
    assert_eq!(replay.code(), 0, "{}", replay.all());
}

/// A run folder is untrusted input: a forged snapshot (a symlink out of the scratch
/// directory, an absolute path), a swapped component, a snapshot or preopen named outside
/// the folder: each is refused with the reason, and nothing outside changes.
#[test]
fn a_forged_run_folder_is_refused_and_contained() {
    let ws = Workspace::new();
    std::fs::copy(guest("escape_step"), ws.path().join("escape.wasm")).unwrap();
    std::fs::create_dir_all(ws.path().join("data")).unwrap();
    ws.write("data/in.txt", "recorded");
    ws.write(
        "pipeline.yml",
        "name: forged\nsteps:\n  - id: write\n    uses: ./escape.wasm\n    allow: { write: [data] }\n    with: { attack: write-workspace, target: data/in.txt }\n",
    );
    let run = ws.wharf(&["run", "pipeline.yml", "-v"]);
    assert_eq!(run.code(), 0, "{}", run.all());
    let original = ws.path().join(".wharf/runs").join(run.run_id());
    assert!(original.join("snapshots/write-1.tar").exists());
    let elsewhere = tempfile::tempdir().unwrap();
    let forge = |name: &str, change: &dyn Fn(&Path)| {
        let folder = ws.path().join(name);
        copy_dir(&original, &folder);
        change(&folder);
        let replay = ws.wharf(&["replay", folder.to_str().unwrap(), "-v"]);
        assert!(
            std::fs::read_dir(elsewhere.path()).unwrap().next().is_none(),
            "{name}: a replayed step wrote outside its scratch directory"
        );
        replay
    };
    let tar_with = |build: &dyn Fn(&mut tar::Builder<Vec<u8>>)| {
        let mut b = tar::Builder::new(Vec::new());
        build(&mut b);
        b.into_inner().unwrap()
    };

    // `data` a symlink to another directory: before, the replayed write landed there and
    // the replay still reported a match.
    let replay = forge("symlinked", &|folder| {
        let bytes = tar_with(&|b| {
            let mut h = tar::Header::new_gnu();
            h.set_entry_type(tar::EntryType::Symlink);
            h.set_size(0);
            b.append_link(&mut h, "data", elsewhere.path()).unwrap();
        });
        std::fs::write(folder.join("snapshots/write-1.tar"), bytes).unwrap();
    });
    assert_eq!(replay.code(), 2, "{}", replay.all());
    assert!(
        replay
            .stderr()
            .contains("entry `data` is a symbolic link; a snapshot holds only directories and regular files"),
        "{}",
        replay.all()
    );

    let replay = forge("absolute", &|folder| {
        let bytes = tar_with(&|b| {
            let mut h = tar::Header::new_gnu();
            h.set_entry_type(tar::EntryType::Regular);
            h.set_size(1);
            let name = format!("{}/planted", elsewhere.path().display());
            h.as_old_mut().name[..name.len()].copy_from_slice(name.as_bytes());
            h.set_cksum();
            b.append(&h, &b"x"[..]).unwrap();
        });
        std::fs::write(folder.join("snapshots/write-1.tar"), bytes).unwrap();
    });
    assert_eq!(replay.code(), 2, "{}", replay.all());
    assert!(replay.stderr().contains("is an absolute path"), "{}", replay.all());

    let replay = forge("swapped", &|folder| {
        let components = folder.join("components");
        let stored = std::fs::read_dir(&components).unwrap().next().unwrap().unwrap().path();
        std::fs::copy(guest("probe_step"), stored).unwrap();
    });
    assert_eq!(replay.code(), 2, "{}", replay.all());
    assert!(
        replay.stderr().contains("is not the component the run recorded"),
        "{}",
        replay.all()
    );

    let outside_name = format!("../../../../../../../..{}", elsewhere.path().display());
    let replay = forge("renamed", &|folder| {
        let journal = std::fs::read_to_string(folder.join("journal.jsonl")).unwrap();
        std::fs::write(
            folder.join("journal.jsonl"),
            journal.replace("\"snapshots/write-1.tar\"", &format!("\"{outside_name}/x.tar\"")),
        )
        .unwrap();
    });
    assert_eq!(replay.code(), 2, "{}", replay.all());
    assert!(
        replay
            .stderr()
            .contains("is not a valid snapshot name (`snapshots/NAME.tar`)"),
        "{}",
        replay.all()
    );

    // A step id that walks out: before, the replay made `workspace-{id}-1` wherever it led,
    // unpacked the snapshot into it, opened it to the step and reported a match. Every name
    // a journal holds is checked when it is read, by every command that reads it.
    let escaping_id = format!("{outside_name}/escaped");
    let with_escaping_id = |folder: &Path| {
        let journal = std::fs::read_to_string(folder.join("journal.jsonl")).unwrap();
        std::fs::write(
            folder.join("journal.jsonl"),
            journal.replace("\"step\":\"write\"", &format!("\"step\":\"{escaping_id}\"")),
        )
        .unwrap();
    };
    let replay = forge("escaping-id", &with_escaping_id);
    assert_eq!(replay.code(), 2, "{}", replay.all());
    assert!(replay.stderr().contains("is not a valid step id"), "{}", replay.all());
    let folder = ws.path().join("escaping-id");
    for command in ["log", "report"] {
        let read = ws.wharf(&[command, folder.to_str().unwrap()]);
        assert_eq!(read.code(), 2, "{command}: {}", read.all());
        assert!(read.stderr().contains("journal.jsonl:"), "{command}: {}", read.all());
    }
    assert!(std::fs::read_dir(elsewhere.path()).unwrap().next().is_none());

    let replay = forge("preopen", &|folder| {
        let journal = std::fs::read_to_string(folder.join("journal.jsonl")).unwrap();
        std::fs::write(
            folder.join("journal.jsonl"),
            journal.replace("[\"data\",true]", &format!("[\"{outside_name}\",true]")),
        )
        .unwrap();
    });
    assert_eq!(replay.code(), 2, "{}", replay.all());
    assert!(
        replay.stderr().contains("which is not a workspace path"),
        "{}",
        replay.all()
    );

    // A folder copied without its components, away from the workspace's store: named, with
    // what to do.
    let replay = forge("componentless", &|folder| {
        std::fs::remove_dir_all(folder.join("components")).unwrap();
    });
    assert_eq!(replay.code(), 2, "{}", replay.all());
    assert!(
        replay.stderr().contains("step `write` ran component sha256:")
            && replay
                .stderr()
                .contains("copy that store from the workspace that made the run"),
        "{}",
        replay.all()
    );

    // The untouched folder still replays.
    let replay = forge("untouched", &|_| {});
    assert_eq!(replay.code(), 0, "{}", replay.all());

    // In its workspace, the folder finds the component in the store all runs share.
    std::fs::remove_dir_all(original.join("components")).unwrap();
    let replay = ws.wharf(&["replay", original.to_str().unwrap()]);
    assert_eq!(replay.code(), 0, "{}", replay.all());
}

/// A step that reads the clock a hundred thousand times: each reading is a few bytes of the
/// journal (not an entry of its own), and its replay hands it the same times. A per-step
/// journal limit stops a step whose calls would pass it, naming the limit.
#[test]
fn clock_reads_are_recorded_compactly_and_bounded_per_step() {
    let ws = Workspace::new();
    std::fs::copy(guest("escape_step"), ws.path().join("clock.wasm")).unwrap();
    let pipeline = |limits: &str| {
        format!(
            "name: clock\nsteps:\n  - id: clock\n    uses: ./clock.wasm\n{limits}    with: {{ attack: clock, target: \"100000\" }}\n"
        )
    };
    ws.write("pipeline.yml", &pipeline(""));
    let run = ws.wharf(&["run", "pipeline.yml", "-v"]);
    assert_eq!(run.code(), 0, "{}", run.all());
    assert!(run.stdout().contains("read the clock 100000 times"), "{}", run.all());
    let journal = ws.path().join(".wharf/runs").join(run.run_id()).join("journal.jsonl");
    let size = std::fs::metadata(&journal).unwrap().len();
    // 160 bytes a reading as entries of their own: 16 MB.
    assert!(size < 1_000_000, "the journal of 100,000 clock reads is {size} bytes");
    let replay = ws.wharf(&["replay", &run.run_id()]);
    assert_eq!(replay.code(), 0, "{}", replay.all());
    assert!(replay.stdout().contains("matched the journal"), "{}", replay.all());

    ws.write("bounded.yml", &pipeline("    limits: { journal: 64KiB }\n"));
    let bounded = ws.wharf(&["run", "bounded.yml"]);
    assert_eq!(bounded.code(), 1, "{}", bounded.all());
    assert!(
        bounded
            .all()
            .contains("recorded more than its journal limit of 64 KiB of host calls")
            && bounded
                .all()
                .contains("raise it with `limits: { journal: ... }` on the step"),
        "{}",
        bounded.all()
    );
    let journal = ws
        .path()
        .join(".wharf/runs")
        .join(bounded.run_id())
        .join("journal.jsonl");
    assert!(std::fs::metadata(&journal).unwrap().len() < 80 * 1024);
}

/// A run folder written by a wharf of journal version 1 (the snapshot named in the step's
/// start) still replays: the same run, written the old way, from a copy elsewhere.
#[test]
fn a_version_1_run_folder_still_replays() {
    let ws = Workspace::new();
    std::fs::copy(guest("escape_step"), ws.path().join("read.wasm")).unwrap();
    std::fs::create_dir_all(ws.path().join("data")).unwrap();
    ws.write("data/in.txt", "recorded text");
    ws.write(
        "pipeline.yml",
        "name: old\nsteps:\n  - id: read\n    uses: ./read.wasm\n    allow: { read: [data] }\n    with: { attack: read-workspace, target: data/in.txt }\n",
    );
    let run = ws.wharf(&["run", "pipeline.yml"]);
    assert_eq!(run.code(), 0, "{}", run.all());
    let folder = ws.path().join(".wharf/runs").join(run.run_id());
    let elsewhere = tempfile::tempdir().unwrap();
    let old = elsewhere.path().join("old");
    copy_dir(&folder, &old);
    let mut snapshot = None;
    let mut lines = Vec::new();
    for line in std::fs::read_to_string(old.join("journal.jsonl")).unwrap().lines() {
        let mut entry: serde_json::Value = serde_json::from_str(line).unwrap();
        match entry["kind"].as_str().unwrap() {
            "header" => entry["version"] = 1.into(),
            "snapshot" => {
                snapshot = Some(entry["snapshot"].clone());
                continue;
            }
            _ => {}
        }
        lines.push(entry);
    }
    let snapshot = snapshot.expect("the step's snapshot entry");
    for entry in &mut lines {
        if entry["kind"] == "step-started" {
            entry["snapshot"] = snapshot.clone();
        }
    }
    let text: String = lines.iter().map(|e| format!("{e}\n")).collect();
    std::fs::write(old.join("journal.jsonl"), text).unwrap();
    let replay = Workspace::new().wharf(&["replay", old.to_str().unwrap()]);
    assert_eq!(replay.code(), 0, "{}", replay.all());
    assert!(replay.stdout().contains("matched the journal"), "{}", replay.all());
    // Without its snapshot the step reads nothing, and the replay says it left the path.
    std::fs::remove_file(old.join(snapshot.as_str().unwrap())).unwrap();
    let replay = Workspace::new().wharf(&["replay", old.to_str().unwrap()]);
    assert_eq!(replay.code(), 2, "{}", replay.all());
}

/// `--resume` refuses when what the reused steps worked from has changed: another commit
/// (the version output would name the old code), another pipeline, another component.
#[test]
fn resume_refuses_when_the_workspace_pipeline_or_a_component_changed() {
    let ws = Workspace::new();
    std::fs::copy(guest("cmd-step"), ws.path().join("step.wasm")).unwrap();
    let pipeline = "name: resume\nsteps:\n  - id: version\n    uses: builtin:version\n  - id: made\n    uses: ./step.wasm\n    with: { x: '${{ steps.version.outputs.version }}' }\n  - id: gate\n    uses: ./probe.wasm\n    with: { mode: '${{ vars.mode }}' }\nvars:\n  mode: fail\n";
    ws.write("pipeline.yml", pipeline);
    common::git(ws.path(), &["tag", "v1.0.0"]);
    let failed = ws.wharf(&["run", "pipeline.yml"]);
    assert_eq!(failed.code(), 1, "{}", failed.all());
    let id = failed.run_id();
    let resume = |extra: &[&str]| {
        let mut args = vec!["run", "pipeline.yml", "-v", "--var", "mode=ok", "--resume", id.as_str()];
        args.extend_from_slice(extra);
        ws.wharf(&args)
    };

    ws.commit("new code");
    let refused = resume(&[]);
    assert_eq!(refused.code(), 2, "{}", refused.all());
    let err = refused.stderr();
    assert!(
        err.contains(&format!("run {id} cannot be resumed: the workspace was at")),
        "{err}"
    );
    assert!(err.contains("--force"), "{err}");
    assert!(
        !refused.stdout().contains("wharf run"),
        "nothing ran:\n{}",
        refused.all()
    );

    let forced = resume(&["--force"]);
    assert_eq!(forced.code(), 0, "{}", forced.all());
    assert!(
        forced
            .stderr()
            .contains("warning: --force: resuming although the workspace was at"),
        "{}",
        forced.all()
    );
    assert!(
        forced.step_line("version").contains("reused from run"),
        "{}",
        forced.all()
    );

    // Back to the recorded revision: another pipeline file, then another component.
    common::git(ws.path(), &["reset", "-q", "--hard", "HEAD~1"]);
    ws.write("pipeline.yml", &pipeline.replace("mode: fail", "mode: FAIL"));
    let refused = resume(&[]);
    assert_eq!(refused.code(), 2, "{}", refused.all());
    assert!(
        refused
            .stderr()
            .contains("differs from the pipeline file that run used"),
        "{}",
        refused.all()
    );
    ws.write("pipeline.yml", pipeline);
    std::fs::copy(guest("escape-cmd"), ws.path().join("step.wasm")).unwrap();
    let refused = resume(&[]);
    assert_eq!(refused.code(), 2, "{}", refused.all());
    assert!(
        refused
            .stderr()
            .contains("step `made` would be reused but its component changed"),
        "{}",
        refused.all()
    );
    std::fs::copy(guest("cmd-step"), ws.path().join("step.wasm")).unwrap();
    let resumed = resume(&[]);
    assert_eq!(resumed.code(), 0, "{}", resumed.all());
}

/// A tmpfs of its own, mounted for one test (the tests run as root) and unmounted after.
struct Tmpfs(tempfile::TempDir);

impl Tmpfs {
    fn mount(size: &str) -> Tmpfs {
        let dir = tempfile::tempdir().unwrap();
        let ok = std::process::Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={size}"), "tmpfs"])
            .arg(dir.path())
            .status()
            .unwrap()
            .success();
        assert!(ok, "mounting a tmpfs needs root (the test suite runs as root)");
        Tmpfs(dir)
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let _ = std::process::Command::new("umount").arg(self.0.path()).status();
    }
}

/// A full disk: the journal is cut cleanly at its last whole entry with a notice that says
/// so and why, and a step that cannot write names ENOSPC and the path (not invalid input).
#[test]
fn a_full_disk_is_named_and_the_journal_stays_readable() {
    let ws = Workspace::new();
    let disk = Tmpfs::mount("16m");
    let root = disk.0.path();
    std::fs::copy(guest("probe_step"), root.join("probe.wasm")).unwrap();
    std::fs::write(root.join("data.txt"), vec![b'd'; 1 << 20]).unwrap();
    std::fs::write(
        root.join("pipeline.yml"),
        "name: full\nsteps:\n  - id: before\n    uses: ./probe.wasm\n    with: { echo: recorded }\n  - id: fill\n    uses: builtin:exec\n    allow: { write: [filler] }\n    with:\n      program: sh\n      args: [\"-c\", \"dd if=/dev/zero of=filler/fill bs=1M count=64 2>/dev/null; true\"]\n  - id: chatty\n    uses: builtin:exec\n    with: { program: seq, args: [\"1\", \"50000\"] }\n  - id: pack\n    uses: builtin:build\n    with: { repository: full, tag: '1', files: { data.txt: /data.txt } }\n",
    )
    .unwrap();
    let pipeline = root.join("pipeline.yml");
    let run = ws.wharf(&["run", pipeline.to_str().unwrap()]);
    assert_eq!(run.code(), 1, "{}", run.all());
    let out = run.stdout();
    assert!(out.contains("the journal of this run is incomplete from here"), "{out}");
    assert!(out.contains("(ENOSPC: the disk is full)"), "{out}");
    let pack = run.step_line("pack");
    assert!(pack.contains("permanent: "), "{out}");
    assert!(pack.contains("the disk is full (ENOSPC)"), "{out}");

    // The journal reads to its last whole entry.
    std::fs::remove_file(root.join("filler/fill")).unwrap();
    let log = ws.wharf(&["log", &run.run_id(), "--workspace", root.to_str().unwrap()]);
    assert_eq!(log.code(), 0, "{}", log.all());
    assert!(log.stdout().contains("✓ before success"), "{}", log.all());
}

/// Set when a run's journal was last written: how old the run is.
fn age(ws: &Workspace, id: &str, days: u64) {
    let journal = ws.path().join(".wharf/runs").join(id).join("journal.jsonl");
    let then = std::time::SystemTime::now() - std::time::Duration::from_secs(days * 86_400);
    std::fs::File::options()
        .write(true)
        .open(journal)
        .unwrap()
        .set_modified(then)
        .unwrap();
}

fn run_ids(ws: &Workspace) -> Vec<String> {
    let mut ids: Vec<String> = std::fs::read_dir(ws.path().join(".wharf/runs"))
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    ids.sort();
    ids
}

fn sorted<const N: usize>(ids: [&String; N]) -> Vec<String> {
    let mut ids: Vec<String> = ids.into_iter().cloned().collect();
    ids.sort();
    ids
}

fn stored_components(ws: &Workspace) -> usize {
    std::fs::read_dir(ws.path().join(".wharf/components")).unwrap().count()
}

/// `wharf runs prune` removes runs by count and age, then the stored components no
/// remaining run names; a run still going is never removed; every run applies a cap.
#[test]
fn old_runs_are_pruned_by_count_and_age_and_every_run_keeps_a_cap() {
    let ws = Workspace::new();
    std::fs::copy(guest("escape_step"), ws.path().join("a.wasm")).unwrap();
    std::fs::copy(guest("cmd-step"), ws.path().join("b.wasm")).unwrap();
    std::fs::copy(guest("probe_step"), ws.path().join("wait.wasm")).unwrap();
    ws.write(
        "a.yml",
        "name: a\nsteps:\n  - id: a\n    uses: ./a.wasm\n    with: { attack: env, target: x }\n",
    );
    ws.write(
        "b.yml",
        "name: b\nsteps:\n  - id: b\n    uses: ./b.wasm\n    with: { x: y }\n",
    );
    let run = |file: &str| {
        let run = ws.wharf(&["run", file]);
        assert_eq!(run.code(), 0, "{}", run.all());
        run.run_id()
    };
    let b1 = run("b.yml");
    let a1 = run("a.yml");
    let a2 = run("a.yml");
    let a3 = run("a.yml");
    assert_eq!(stored_components(&ws), 2);
    age(&ws, &b1, 10);
    age(&ws, &a1, 5);

    let none = ws.wharf(&["runs", "prune"]);
    assert_eq!(none.code(), 2, "{}", none.all());
    assert!(
        none.stderr().contains("--keep") && none.stderr().contains("--older-than"),
        "{}",
        none.all()
    );

    let dry = ws.wharf(&["runs", "prune", "--older-than", "7d", "--dry-run"]);
    assert_eq!(dry.code(), 0, "{}", dry.all());
    assert!(
        dry.stdout().contains(&format!("would remove {b1}"))
            && dry
                .stdout()
                .contains("would remove 1 run and 1 stored component no run names"),
        "{}",
        dry.all()
    );
    assert_eq!(run_ids(&ws).len(), 4, "a dry run removes nothing");

    let by_age = ws.wharf(&["runs", "prune", "--older-than", "7d"]);
    assert_eq!(by_age.code(), 0, "{}", by_age.all());
    assert_eq!(run_ids(&ws), sorted([&a1, &a2, &a3]));
    assert_eq!(
        stored_components(&ws),
        1,
        "b's component went with the last run naming it"
    );

    // Both: older than a day and not the newest.
    let both = ws.wharf(&["runs", "prune", "--keep", "1", "--older-than", "1d"]);
    assert_eq!(both.code(), 0, "{}", both.all());
    assert_eq!(run_ids(&ws), sorted([&a2, &a3]));
    let replay = ws.wharf(&["replay", &a2]);
    assert_eq!(
        replay.code(),
        0,
        "the component a remaining run names stays: {}",
        replay.all()
    );

    // The cap every run applies when it ends.
    let capped = ws
        .command(&["run", "a.yml"])
        .env("WHARF_KEEP_RUNS", "2")
        .output()
        .unwrap();
    let capped = common::Run(capped);
    assert_eq!(capped.code(), 0, "{}", capped.all());
    assert!(
        capped
            .stdout()
            .contains("removed 1 old run (keeping the newest 2: --keep-runs)"),
        "{}",
        capped.all()
    );
    assert_eq!(run_ids(&ws), sorted([&a3, &capped.run_id()]));

    // A run still going stays, whatever the policy: one whose step waits and has made
    // nothing but its journal (no scratch space), so the journal's lock is what says so.
    ws.write(
        "wait.yml",
        "name: wait\nsteps:\n  - id: wait\n    uses: ./wait.wasm\n    cache: false\n    with: { mode: sleep, wait: 60s }\n",
    );
    let mut live = ws
        .command(&["run", "wait.yml"])
        .stdout(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
    let live_id = loop {
        assert!(
            std::time::Instant::now() < deadline,
            "the waiting run never started its step"
        );
        if let Some(id) = run_ids(&ws).into_iter().find(|id| {
            std::fs::read_to_string(ws.path().join(".wharf/runs").join(id).join("journal.jsonl"))
                .is_ok_and(|j| j.contains("\"kind\":\"step-started\""))
        }) {
            break id;
        }
        std::thread::sleep(std::time::Duration::from_millis(50));
    };
    assert!(
        !ws.path().join(".wharf/scratch").join(&live_id).exists(),
        "a component step needs no scratch space"
    );
    let all = ws.wharf(&["runs", "prune", "--keep", "0"]);
    live.kill().unwrap();
    live.wait().unwrap();
    assert_eq!(all.code(), 0, "{}", all.all());
    assert_eq!(run_ids(&ws), [live_id]);
}
