//! What a CI sees of a run: GitHub Actions workflow commands, summary and outputs; GitLab
//! sections and Code Quality; plain lines; the JUnit report read by a real consumer
//! (`junitparser` from PyPI); the NDJSON event stream checked against its JSON Schema
//! (Python's `jsonschema`); the live view under a pseudo-terminal (`script`); the HTML report
//! in headless chromium.

mod common;
use common::github_runner::runner_commands;
use common::{Run, Workspace, python, validate_events};
use std::path::Path;

/// A step that annotates with text GitHub must escape, and a `cargo test`-like step that
/// prints 30 lines and fails with exit status 101.
const CI_PIPELINE: &str = r#"
name: ci
steps:
  - id: lint
    uses: ./probe.wasm
    with: { mode: annotate, echo: "x" }
  - id: test
    uses: builtin:exec
    with:
      program: sh
      args: ["-c", "for i in $(seq 1 30); do echo output line $i; done; exit 101"]
  - id: deploy
    uses: ./probe.wasm
"#;

fn github_run(ws: &Workspace, extra: &[&str]) -> (Run, String, String) {
    let summary = ws.path().join("summary.md");
    let outputs = ws.path().join("outputs.txt");
    let mut args = vec!["run", "ci.yml"];
    args.extend_from_slice(extra);
    let out = ws
        .command(&args)
        .env_remove("WHARF_OUTPUT")
        .env("GITHUB_ACTIONS", "true")
        .env("GITHUB_STEP_SUMMARY", &summary)
        .env("GITHUB_OUTPUT", &outputs)
        .env("WHARF_SECRET_TOKEN", "hunter2-is-secret")
        .output()
        .unwrap();
    let read = |p: &Path| std::fs::read_to_string(p).unwrap_or_default();
    (Run(out), read(&summary), read(&outputs))
}

#[test]
fn github_gets_groups_escaped_annotations_a_failure_with_its_output_masks_a_summary_and_outputs() {
    let ws = Workspace::new();
    ws.write("ci.yml", CI_PIPELINE);
    let (run, summary, outputs) = github_run(&ws, &[]);
    assert_eq!(run.code(), 1, "{}", run.all());
    let out = run.stdout();
    let lines: Vec<&str> = out.lines().collect();

    // The secret is masked before anything is printed at all.
    assert_eq!(lines[0], "::add-mask::hunter2-is-secret", "{out}");
    assert_eq!(out.matches("hunter2-is-secret").count(), 1, "{out}");

    // Each step in its group.
    assert!(lines.contains(&"::group::lint · ./probe.wasm"), "{out}");
    assert!(lines.contains(&"::group::test · builtin:exec"), "{out}");
    assert_eq!(
        out.matches("::group::").count(),
        out.matches("::endgroup::").count(),
        "{out}"
    );

    // The annotation, escaped by GitHub's rules: `%`, CR and LF in the message; also `:` and
    // `,` in properties.
    assert!(
        lines.contains(
            &"::warning file=src/main.rs,line=7,col=3,title=50%25 of a%2C b%3A c::first line: 100%25%0Asecond, line x"
        ),
        "{out}"
    );

    // The failure as an error annotation, and its output under it without re-running.
    let error = lines
        .iter()
        .find(|l| l.starts_with("::error title=wharf%3A step test failed::"))
        .unwrap_or_else(|| panic!("no error command:\n{out}"));
    assert!(error.contains("permanent: `sh` exited with 101"), "{error}");
    let after: Vec<&str> = out[out.find("FAIL test").expect("a FAIL line")..].lines().collect();
    assert!(
        after.iter().any(|l| l.contains("last 20 of 31 lines of `test`:")),
        "{out}"
    );
    assert!(after.iter().any(|l| l.ends_with("output line 11")), "{out}");
    assert!(after.iter().any(|l| l.ends_with("output line 30")), "{out}");
    assert!(!after.iter().any(|l| l.ends_with("output line 10")), "{out}");
    let run_id = outputs
        .split("run-id<<WHARF_EOF\n")
        .nth(1)
        .and_then(|rest| rest.lines().next())
        .unwrap_or_else(|| panic!("no run-id output:\n{outputs}"));
    assert!(
        out.contains(&format!("all of it: wharf log {run_id} --step test")),
        "{out}"
    );
    // ... and that command shows all of it.
    let log = ws.wharf(&["log", run_id, "--step", "test"]);
    assert_eq!(log.code(), 0, "{}", log.all());
    assert!(
        log.stdout().contains("output line 1\n") || log.stdout().contains("output line 1 "),
        "{}",
        log.all()
    );
    assert!(!log.stdout().contains("probe"), "only step `test`:\n{}", log.all());

    // The job summary: every step, its outcome, the failure.
    assert!(summary.contains("### wharf run `ci` failed"), "{summary}");
    assert!(summary.contains("| `lint` | ✅ success |"), "{summary}");
    assert!(summary.contains("| `test` | ❌ failure |"), "{summary}");
    assert!(summary.contains("| `deploy` | ⏭ skipped |"), "{summary}");
    assert!(summary.contains("exited with 101"), "{summary}");

    // The outputs: the run, its outcome and each step output.
    assert!(
        outputs.contains("outcome<<WHARF_EOF\nfailure\nWHARF_EOF\n"),
        "{outputs}"
    );
    assert!(outputs.contains("exit-code<<WHARF_EOF\n1\nWHARF_EOF\n"), "{outputs}");
    assert!(outputs.contains("lint.echo<<WHARF_EOF\nx\nWHARF_EOF\n"), "{outputs}");
    assert!(
        outputs.contains(&format!("run-dir<<WHARF_EOF\n./.wharf/runs/{run_id}\nWHARF_EOF\n")),
        "{outputs}"
    );
}

/// Text a step controls that GitHub's runner or GitLab's log would obey, in every place a
/// step can put text: log lines on stdout and stderr, a failure's message and the stderr tail
/// under it, an annotation, output values, and the pipeline's name.
const ATTACK: &str = r#"![t](https://evil.example/t.png) <img src=x>\n\t::error::pwned-tab\n\u3000::stop-commands::T0KEN\n\u00a0::add-mask::a\n\u2003::set-output name=exit-code::0\nx ##[set-output name=a;]pwned\n#\u00ad#[error]pwned\nline\r::error::pwned-cr\n\u200b::warning::pwned-zwsp\n\e[2K\rok fake\n\e[0Ksection_end:1:wharf_step_noisy\r\e[0K"#;

fn attack_pipeline() -> String {
    format!(
        r#"
name: "ci\r\e[2K::error::name-pwned"
steps:
  - id: lint
    uses: ./probe.wasm
    with: {{ mode: annotate, echo: "{ATTACK}" }}
  - id: exit
    uses: ./cmd.wasm
    with: {{ code: "0" }}
  - id: run
    uses: ./cmd.wasm
    with: {{ id: "forged", dir: "/etc" }}
  - id: a
    uses: ./cmd.wasm
    with: {{ b-c: "1" }}
  - id: a-b
    uses: ./cmd.wasm
    with: {{ c: "2" }}
  - id: noisy
    uses: ./probe.wasm
    with: {{ mode: fail, echo: "{ATTACK}" }}
  - id: noisy-exec
    if: always()
    uses: builtin:exec
    with:
      program: sh
      args: ["-c", 'printf "%s\n" "$ATTACK"; printf "%s\n" "$ATTACK" >&2; exit 3']
      env: {{ ATTACK: "{ATTACK}" }}
"#
    )
}

fn gitlab_run(ws: &Workspace, extra: &[&str]) -> Run {
    let mut args = vec!["run", "ci.yml"];
    args.extend_from_slice(extra);
    Run(ws
        .command(&args)
        .env_remove("WHARF_OUTPUT")
        .env("GITLAB_CI", "true")
        .output()
        .unwrap())
}

/// `$GITHUB_OUTPUT`'s `NAME<<DELIMITER` blocks, in order.
fn github_outputs(text: &str) -> Vec<(String, String)> {
    let mut pairs = Vec::new();
    let mut lines = text.split('\n');
    while let Some(header) = lines.next() {
        let Some((name, delimiter)) = header.split_once("<<") else {
            assert!(header.is_empty(), "not an output block: {header:?}");
            continue;
        };
        let value: Vec<&str> = lines.by_ref().take_while(|l| *l != delimiter).collect();
        pairs.push((name.to_string(), value.join("\n")));
    }
    pairs
}

#[test]
fn a_step_cannot_command_github_or_gitlab_through_its_text_nor_choose_wharfs_outputs() {
    let ws = Workspace::new();
    ws.write("ci.yml", &attack_pipeline());
    let (run, summary, outputs) = github_run(&ws, &[]);
    assert_eq!(run.code(), 1, "{}", run.all());
    let out = run.stdout();
    assert!(
        out.contains("pwned-tab") && out.contains("T0KEN"),
        "the text is shown:\n{out}"
    );

    // What GitHub's runner would obey: wharf's own commands, nothing else.
    let commands = runner_commands(&out);
    let count = |name: &str| commands.iter().filter(|c| c.name == name).count();
    for command in &commands {
        assert!(
            ["add-mask", "group", "endgroup", "error", "warning"].contains(&command.name.as_str()),
            "a step's text ran {command:?}\n{out}"
        );
    }
    assert_eq!(count("add-mask"), 1, "{commands:#?}");
    assert_eq!(count("error"), 2, "the two failures only: {commands:#?}");
    assert_eq!(count("warning"), 1, "the annotation only: {commands:#?}");
    assert_eq!(count("group"), count("endgroup"), "{commands:#?}");
    assert!(
        commands
            .iter()
            .filter(|c| c.name == "error")
            .all(|c| c.properties.starts_with("title=wharf%3A step noisy")),
        "{commands:#?}"
    );

    // wharf's own outputs are wharf's, and no two steps' outputs share a key.
    let pairs = github_outputs(&outputs);
    let mut names: Vec<&str> = pairs.iter().map(|(n, _)| n.as_str()).collect();
    names.sort();
    let before = names.len();
    names.dedup();
    assert_eq!(names.len(), before, "a key written twice: {pairs:#?}");
    let value = |name: &str| pairs.iter().find(|(n, _)| n == name).map(|(_, v)| v.as_str());
    let run_id = value("run-id").expect("run-id");
    assert_ne!(run_id, "forged");
    assert_eq!(value("exit-code"), Some("1"), "{outputs}");
    assert_eq!(
        value("run-dir"),
        Some(format!("./.wharf/runs/{run_id}").as_str()),
        "{outputs}"
    );
    assert_eq!(value("exit.code"), Some("0"), "{outputs}");
    assert_eq!(value("run.dir"), Some("/etc"), "{outputs}");
    assert_eq!(value("a.b-c"), Some("1"), "{outputs}");
    assert_eq!(value("a-b.c"), Some("2"), "{outputs}");

    // The job summary shows step text as code: no image, link or HTML comes out of it.
    let code_span = regex::Regex::new(r"(`+)[^`]*?(`+)").unwrap();
    for line in summary.lines() {
        let outside = code_span.replace_all(line, "");
        for markup in ["](", "<img", "http"] {
            assert!(
                !outside.contains(markup),
                "{markup} outside code in {line:?}\n{summary}"
            );
        }
    }

    // GitLab obeys section markers (which need `\r` and ESC) and escape sequences: only
    // wharf's own reach its log.
    let run = gitlab_run(&ws, &[]);
    assert_eq!(run.code(), 1, "{}", run.all());
    let marker = regex::Regex::new(
        r"section_((?:start)|(?:end)):(\d+):([a-zA-Z0-9_.-]+)(\[(?:\w+=\w+)(?:, ?(?:\w+=\w+))*\])?\r\x1b\[0K",
    )
    .unwrap();
    let out = run.stdout();
    let mut sections = Vec::new();
    for found in marker.captures_iter(&out) {
        sections.push(format!("{} {}", &found[1], &found[3]));
    }
    let opened: Vec<&String> = sections.iter().filter(|s| s.starts_with("start")).collect();
    assert_eq!(opened.len(), 7, "one section a step: {sections:#?}");
    assert_eq!(sections.len(), 14, "{sections:#?}");
    assert!(sections.iter().all(|s| s.contains(" wharf_step_")), "{sections:#?}");
    let rest = marker.replace_all(&out, "");
    let rest = rest.replace("\x1b[0K", "");
    assert!(!rest.contains('\r') && !rest.contains('\x1b'), "{rest:?}");
}

/// A multi-line secret (a PEM key) is masked line by line, as wharf's redactor masks it, but
/// never a line too short to mask: `::add-mask::-` would hide every dash in the log.
#[test]
fn a_multi_line_secret_is_masked_by_its_lines_of_four_bytes_or_more() {
    let ws = Workspace::new();
    ws.write(
        "ci.yml",
        "name: ci\nsteps:\n  - id: lint\n    uses: ./probe.wasm\n    with: { echo: a-b-c }\n",
    );
    let out = ws
        .command(&["run", "ci.yml", "-v"])
        .env_remove("WHARF_OUTPUT")
        .env("GITHUB_ACTIONS", "true")
        .env(
            "WHARF_SECRET_PEM",
            "-----BEGIN KEY-----\nMIIEpQIBAAKCAQEA\n-\nab\n-----END KEY-----\n",
        )
        .output()
        .unwrap();
    let run = Run(out);
    assert_eq!(run.code(), 0, "{}", run.all());
    let masks: Vec<String> = runner_commands(&run.stdout())
        .into_iter()
        .filter(|c| c.name == "add-mask")
        .map(|c| c.data)
        .collect();
    assert_eq!(
        masks,
        ["-----BEGIN KEY-----", "MIIEpQIBAAKCAQEA", "-----END KEY-----"],
        "{}",
        run.all()
    );
    assert!(
        run.stdout().contains("echo=a-b-c"),
        "dashes stay visible: {}",
        run.all()
    );
}

#[test]
fn a_run_keeps_and_writes_out_bounded_outputs_however_many_steps_return_a_mebibyte() {
    let ws = Workspace::new();
    let values: Vec<String> = (1..=16).map(|n| n.to_string()).collect();
    let values = values.join(", ");
    ws.write(
        "ci.yml",
        &format!(
            "name: big\nsteps:\n  - id: fill\n    uses: ./probe.wasm\n    matrix: {{ a: [{values}], b: [{values}] }}\n    with: {{ mode: fill, count: 1048000 }}\n"
        ),
    );
    let (run, _, outputs) = github_run(&ws, &["--jobs", "1"]);
    assert_eq!(run.code(), 1, "{}", run.all());
    let out = run.stdout();
    // The run keeps 64 MiB of outputs in all: the 65th mebibyte fails its step, and
    // fail-fast skips the rest of the matrix.
    assert!(out.contains("would take the run's outputs past 64 MiB in all"), "{out}");
    // GitHub gets at most a mebibyte of step outputs, and a warning saying where the rest is.
    assert!(outputs.len() < 2_200_000, "{} bytes", outputs.len());
    let warning = runner_commands(&out)
        .into_iter()
        .find(|c| c.name == "warning")
        .unwrap_or_else(|| panic!("no warning:\n{out}"));
    assert!(warning.data.contains("are not in $GITHUB_OUTPUT"), "{warning:?}");
    // The journal holds no more than the run kept.
    let journal = std::fs::metadata(
        ws.path()
            .join(format!(".wharf/runs/{}/journal.jsonl", run_id_of(&outputs))),
    )
    .unwrap();
    assert!(journal.len() < 70 << 20, "{} bytes", journal.len());
}

/// The run id from `$GITHUB_OUTPUT`.
fn run_id_of(outputs: &str) -> String {
    github_outputs(outputs)
        .into_iter()
        .find(|(n, _)| n == "run-id")
        .map(|(_, v)| v)
        .unwrap_or_else(|| panic!("no run-id in {outputs}"))
}

#[test]
fn gitlab_gets_a_collapsible_section_per_step_and_a_code_quality_report() {
    let ws = Workspace::new();
    ws.write("ci.yml", CI_PIPELINE);
    let run = gitlab_run(&ws, &["--codequality", "cq.json"]);
    assert_eq!(run.code(), 1, "{}", run.all());
    let out = run.stdout();
    let start =
        regex::Regex::new(r"\x1b\[0Ksection_start:\d+:wharf_step_test\[collapsed=true\]\r\x1b\[0Ktest · builtin:exec")
            .unwrap();
    assert!(start.is_match(&out), "{out:?}");
    let end = regex::Regex::new(r"\x1b\[0Ksection_end:\d+:wharf_step_test\r\x1b\[0K").unwrap();
    assert!(end.is_match(&out), "{out:?}");
    assert!(out.contains("last 20 of 31 lines of `test`:"), "{out}");

    let report: serde_json::Value = serde_json::from_slice(&std::fs::read(ws.path().join("cq.json")).unwrap()).unwrap();
    let issue = &report[0];
    assert_eq!(issue["location"]["path"], "src/main.rs", "{report}");
    assert_eq!(issue["location"]["lines"]["begin"], 7, "{report}");
    assert_eq!(issue["severity"], "minor", "{report}");
    assert_eq!(issue["check_name"], "wharf/lint", "{report}");
    assert!(issue["fingerprint"].as_str().unwrap().len() == 64, "{report}");
}

#[test]
fn plain_output_is_timestamped_lines_without_escape_sequences() {
    let ws = Workspace::new();
    ws.write("ci.yml", CI_PIPELINE);
    let run = ws.wharf(&["run", "ci.yml", "--output", "plain"]);
    assert_eq!(run.code(), 1, "{}", run.all());
    let out = run.stdout();
    let stamp = regex::Regex::new(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ ").unwrap();
    for line in out.lines() {
        assert!(stamp.is_match(line), "not timestamped: {line:?}\n{out}");
    }
    assert!(!out.contains('\x1b'), "{out:?}");
    assert!(out.contains("last 20 of 31 lines of `test`:"), "{out}");
}

/// A JUnit report as `junitparser` reads it: totals, and each case in order.
fn read_junit(report: &Path) -> serde_json::Value {
    let read = python(
        r#"
import sys, json
from junitparser import JUnitXml
xml = JUnitXml.fromfile(sys.argv[1])
cases = []
for suite in xml:
    for case in suite:
        result = case.result[0] if case.result else None
        cases.append({
            "suite": suite.name, "classname": case.classname, "name": case.name, "time": case.time,
            "result": type(result).__name__ if result else "passed",
            "type": getattr(result, "type", None), "message": getattr(result, "message", None),
            "text": getattr(result, "text", None),
            "system_out": case.system_out, "system_err": case.system_err,
        })
print(json.dumps({"tests": xml.tests, "failures": xml.failures, "errors": xml.errors, "skipped": xml.skipped, "cases": cases}))
"#,
        &[report],
    );
    assert!(read.status.success(), "{}", String::from_utf8_lossy(&read.stderr));
    serde_json::from_slice(&read.stdout).unwrap()
}

#[test]
fn junit_report_is_read_by_junitparser_with_counts_times_and_failure_output() {
    let ws = Workspace::new();
    ws.write("ci.yml", CI_PIPELINE);
    let run = ws.wharf(&["run", "ci.yml", "--junit", "report.xml"]);
    assert_eq!(run.code(), 1, "{}", run.all());
    let report = ws.path().join("report.xml");
    let parsed = read_junit(&report);
    assert_eq!(parsed["tests"], 3, "{parsed}");
    assert_eq!(parsed["failures"], 1, "{parsed}");
    assert_eq!(parsed["skipped"], 1, "{parsed}");
    let cases = parsed["cases"].as_array().unwrap();
    let names: Vec<&str> = cases.iter().map(|c| c["name"].as_str().unwrap()).collect();
    assert_eq!(names, ["lint", "test", "deploy"], "{parsed}");
    assert!(cases.iter().all(|c| c["suite"] == "ci"), "{parsed}");
    let test = &cases[1];
    assert_eq!(test["result"], "Failure", "{parsed}");
    assert_eq!(test["type"], "permanent", "{parsed}");
    assert!(
        test["message"].as_str().unwrap().contains("exited with 101"),
        "{parsed}"
    );
    let text = test["text"].as_str().unwrap();
    assert!(text.contains("output line 30") && text.contains("wharf log"), "{text}");
    assert!(test["time"].as_f64().unwrap() > 0.0, "{parsed}");
    assert_eq!(cases[2]["result"], "Skipped", "{parsed}");
}

#[test]
fn every_event_of_a_seed_run_validates_against_the_schema_and_every_step_finishes() {
    let ws = Workspace::seed();
    let events = ws.path().join("events.ndjson");
    let run = ws.wharf(&["run", "pipeline.yml", "--events", events.to_str().unwrap()]);
    assert_eq!(run.code(), 0, "{}", run.all());
    validate_events(&events);
    let text = std::fs::read_to_string(&events).unwrap();
    let lines: Vec<serde_json::Value> = text.lines().map(|l| serde_json::from_str(l).unwrap()).collect();
    // Loading the steps comes first, then the run.
    let first_other = lines.iter().find(|l| l["event"] != "component-loaded").unwrap();
    assert_eq!(first_other["event"], "run-started", "{text}");
    let last = lines.last().unwrap();
    assert_eq!(last["event"], "run-finished");
    assert_eq!(last["exit_code"], 0);
    let kinds = |kind: &str| -> Vec<String> {
        lines
            .iter()
            .filter(|l| l["event"] == kind)
            .map(|l| l["step"].as_str().unwrap().to_string())
            .collect()
    };
    let started = kinds("step-started");
    let finished = kinds("step-finished");
    assert_eq!(started.len(), 8, "{text}");
    for step in &started {
        assert!(finished.contains(step), "`{step}` started and never finished:\n{text}");
    }
    let transitions: Vec<&str> = lines
        .iter()
        .filter(|l| l["event"] == "deploy")
        .map(|l| l["transition"].as_str().unwrap())
        .collect();
    assert_eq!(transitions, ["upgrading", "upgraded", "confirmed"], "{text}");

    // The same stream on stdout with --output json, and nothing else there.
    ws.commit("next");
    let json = ws.wharf(&["run", "pipeline.yml", "--output", "json"]);
    assert_eq!(json.code(), 0, "{}", json.all());
    for line in json.stdout().lines() {
        let value: serde_json::Value = serde_json::from_str(line).unwrap_or_else(|e| panic!("{e}: {line:?}"));
        assert_eq!(value["v"], 1, "{line}");
    }
}

#[test]
fn the_live_view_draws_progress_on_a_terminal_and_nothing_but_lines_to_a_pipe() {
    let ws = Workspace::new();
    ws.write(
        "progress.yml",
        "name: p\nsteps:\n  - id: items\n    uses: ./probe.wasm\n    with: { mode: progress, count: 20, wait: 60ms }\n",
    );
    // Under a pseudo-terminal: `script` gives wharf one, and keeps what it drew.
    let drawn = ws.on_terminal("run progress.yml --output human");
    assert!(
        drawn.contains("items · ./probe.wasm"),
        "no spinner for the running step:\n{drawn:?}"
    );
    assert!(drawn.contains("] 10/20"), "no progress bar:\n{drawn:?}");
    assert!(drawn.contains("\x1b["), "no cursor movement on a terminal:\n{drawn:?}");
    assert!(drawn.contains("succeeded"), "{drawn:?}");

    // To a pipe: the same run as lines, no escape sequence, no redrawing.
    let piped = ws.wharf(&["run", "progress.yml", "--output", "human"]);
    assert_eq!(piped.code(), 0, "{}", piped.all());
    assert!(!piped.stdout().contains('\x1b'), "{:?}", piped.stdout());
    assert!(!piped.stdout().contains('\r'), "{:?}", piped.stdout());
    assert!(piped.stdout().contains("items: 20 of 20 (100%)"), "{}", piped.stdout());
}

#[test]
fn the_html_report_shows_every_step_in_a_real_browser_and_needs_no_network() {
    let ws = Workspace::new();
    ws.write("ci.yml", CI_PIPELINE);
    let run = ws.wharf(&["run", "ci.yml"]);
    assert_eq!(run.code(), 1, "{}", run.all());
    let id = run.run_id();
    let made = ws.wharf(&["report", &id, "-o", "report.html"]);
    assert_eq!(made.code(), 0, "{}", made.all());
    let page = ws.path().join("report.html");
    let html = std::fs::read_to_string(&page).unwrap();
    // Self-contained: nothing to fetch (the SVG namespace is a name, not a request).
    let fetches = regex::Regex::new(r#"(?i)(src|href)\s*=|url\(|@import"#).unwrap();
    assert!(!fetches.is_match(&html), "the page fetches something");

    let shot = ws.path().join("report.png");
    let browser_tmp = ws.path().join("browser-tmp");
    std::fs::create_dir(&browser_tmp).unwrap();
    let browse = python(
        r##"
import os, sys, json
# Chromium's own temporary files go where the test's temporary directory removes them.
os.environ["TMPDIR"] = sys.argv[3]
from selenium import webdriver
from selenium.webdriver.chrome.service import Service
from selenium.webdriver.common.by import By
options = webdriver.ChromeOptions()
options.binary_location = "/usr/bin/chromium"
for arg in ["--headless=new", "--no-sandbox", "--disable-gpu", "--window-size=1200,1400",
            "--user-data-dir=" + os.path.join(sys.argv[3], "profile")]:
    options.add_argument(arg)
driver = webdriver.Chrome(service=Service("/usr/bin/chromedriver"), options=options)
try:
    driver.get("file://" + sys.argv[1])
    sections = driver.find_elements(By.CSS_SELECTOR, "section.step")
    rows = driver.find_elements(By.CSS_SELECTOR, "#timeline g.row")
    bars = [r.find_element(By.CSS_SELECTOR, ".bar") for r in rows]
    print(json.dumps({
        "title": driver.title,
        "sections": [s.get_attribute("data-step") for s in sections],
        "rows": [r.get_attribute("data-step") for r in rows],
        "bar_sizes": [b.size["width"] for b in bars],
        "ticks": len(driver.find_elements(By.CSS_SELECTOR, "#timeline .tick")),
        "outcome": driver.find_element(By.ID, "run-outcome").text,
        "failure_text": driver.find_element(By.CSS_SELECTOR, "section[data-step=test] pre.detail").text,
        "resources": driver.execute_script("return performance.getEntriesByType('resource').length"),
    }))
    driver.save_screenshot(sys.argv[2])
finally:
    driver.quit()
"##,
        &[&page, &shot, &browser_tmp],
    );
    assert!(browse.status.success(), "{}", String::from_utf8_lossy(&browse.stderr));
    let seen: serde_json::Value = serde_json::from_slice(&browse.stdout).unwrap();
    assert!(seen["title"].as_str().unwrap().contains(&id), "{seen}");
    assert_eq!(
        seen["sections"],
        serde_json::json!(["lint", "test", "deploy"]),
        "{seen}"
    );
    assert_eq!(seen["rows"], serde_json::json!(["lint", "test", "deploy"]), "{seen}");
    assert!(
        seen["bar_sizes"]
            .as_array()
            .unwrap()
            .iter()
            .all(|w| w.as_f64().unwrap() > 0.0),
        "{seen}"
    );
    assert!(seen["ticks"].as_u64().unwrap() > 0, "host calls drawn as ticks: {seen}");
    assert_eq!(seen["outcome"], "failure", "{seen}");
    assert!(
        seen["failure_text"].as_str().unwrap().contains("exited with 101"),
        "{seen}"
    );
    assert_eq!(seen["resources"], 0, "{seen}");
    assert!(
        std::fs::metadata(&shot).unwrap().len() > 10_000,
        "a screenshot was taken"
    );
}

#[test]
fn a_test_tools_own_junit_file_joins_the_report_as_the_steps_test_cases() {
    let ws = Workspace::new();
    ws.write(
        "test_sample.py",
        "import pytest\n\ndef test_ok():\n    print('said on stdout')\n    assert 1 + 1 == 2\n\ndef test_bad():\n    assert 'wharf' == 'dock', 'names differ'\n\n@pytest.mark.skip(reason='not today')\ndef test_later():\n    pass\n\n@pytest.fixture\ndef database():\n    raise RuntimeError('no database here')\n\ndef test_needs_database(database):\n    pass\n",
    );
    // A tool whose report holds a character XML cannot: the escape a test printed, as a
    // reference and as the byte itself.
    ws.write(
        "broken.xml",
        "<testsuite name=\"shell\"><testcase name=\"colours\" classname=\"sh\"><system-out>\u{1b}[31mred &#x1b;[0m</system-out></testcase><testcase name=\"bell\" classname=\"sh\"><failure message=\"rang &#7;\">\u{7}</failure></testcase></testsuite>",
    );
    // Programs come from PATH (a path outside the workspace is refused): the environment's
    // `python`, which has pytest, comes first.
    let interpreter = std::env::var("WHARF_TEST_PYTHON").unwrap_or_else(|_| "python3".into());
    let bin = Path::new(&interpreter).parent().unwrap().to_path_buf();
    let path = format!("{}:{}", bin.display(), std::env::var("PATH").unwrap_or_default());
    ws.write(
        "tests.yml",
        "name: unit\nsteps:\n  - id: pytest\n    uses: builtin:exec\n    allow: { read: [test_sample.py], write: [reports] }\n    with:\n      program: python\n      args: [-m, pytest, -q, -p, no:cacheprovider, -o, junit_logging=all, --junitxml=reports/junit.xml, test_sample.py]\n      junit: reports/junit.xml\n  - id: shell\n    if: always()\n    uses: builtin:exec\n    with: { program: \"true\", junit: broken.xml }\n  - id: missing\n    if: always()\n    uses: builtin:exec\n    with: { program: \"true\", junit: never-written.xml }\n",
    );
    let run = Run(ws
        .command(&["run", "tests.yml", "--junit", "report.xml", "--events", "events.ndjson"])
        .env("PATH", path)
        .output()
        .unwrap());
    assert_eq!(run.code(), 1, "pytest fails one test:\n{}", run.all());
    let events = ws.path().join("events.ndjson");
    validate_events(&events);
    let reported = std::fs::read_to_string(&events).unwrap();
    assert_eq!(reported.matches("\"event\":\"test-case\"").count(), 7, "{reported}");
    let report = ws.path().join("report.xml");
    let parsed = read_junit(&report);
    // Each step, then its tool's tests as its cases: pytest's four, the shell report's two,
    // and for the report never written, an errored case saying so.
    assert_eq!(parsed["tests"], 10, "{parsed}");
    assert_eq!(parsed["failures"], 3, "{parsed}");
    assert_eq!(parsed["errors"], 2, "{parsed}");
    assert_eq!(parsed["skipped"], 1, "{parsed}");
    let cases: serde_json::Map<String, serde_json::Value> = parsed["cases"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| {
            (
                format!("{}::{}", c["classname"].as_str().unwrap(), c["name"].as_str().unwrap()),
                c.clone(),
            )
        })
        .collect();
    assert_eq!(cases["pytest.test_sample::test_ok"]["result"], "passed", "{parsed}");
    assert!(
        cases["pytest.test_sample::test_ok"]["system_out"]
            .as_str()
            .unwrap_or_default()
            .contains("said on stdout"),
        "{parsed}"
    );
    let errored = &cases["pytest.test_sample::test_needs_database"];
    assert_eq!(errored["result"], "Error", "{parsed}");
    assert!(
        errored["text"]
            .as_str()
            .unwrap_or_default()
            .contains("no database here"),
        "{parsed}"
    );
    assert_eq!(
        cases["shell.sh::colours"]["system_out"], "\\x1b[31mred \\x1b[0m",
        "{parsed}"
    );
    assert_eq!(cases["shell.sh::bell"]["result"], "Failure", "{parsed}");
    assert_eq!(cases["shell.sh::bell"]["message"], "rang \\x07", "{parsed}");
    let unread = &cases["missing.junit::never-written.xml"];
    assert_eq!(unread["result"], "Error", "{parsed}");
    assert!(
        unread["message"].as_str().unwrap().contains("could not be read"),
        "{parsed}"
    );
    assert_eq!(cases["pytest.test_sample::test_bad"]["result"], "Failure", "{parsed}");
    assert!(
        cases["pytest.test_sample::test_bad"]["message"]
            .as_str()
            .unwrap()
            .contains("names differ"),
        "{parsed}"
    );
    assert_eq!(cases["pytest.test_sample::test_later"]["result"], "Skipped", "{parsed}");
    assert!(
        cases["unit.pytest::pytest"]["text"]
            .as_str()
            .unwrap()
            .contains("exited with 1"),
        "{parsed}"
    );
}

/// A SARIF log as an independent reader (`sarif-pydantic`, PyPI) reads it: each result's
/// rule, level, message and first location.
fn read_sarif(log: &Path) -> serde_json::Value {
    let read = python(
        r#"
import sys, json
from sarif_pydantic import Sarif
log = Sarif.model_validate_json(open(sys.argv[1]).read())
run = log.runs[0]
results = []
for r in run.results or []:
    loc = r.locations[0].physical_location if r.locations else None
    art = loc.artifact_location if loc else None
    reg = loc.region if loc else None
    results.append({
        "rule": r.rule_id, "level": r.level.value if hasattr(r.level, "value") else r.level,
        "message": r.message.text,
        "uri": art.uri if art else None, "base": art.uri_base_id if art else None,
        "line": reg.start_line if reg else None, "column": reg.start_column if reg else None,
        "step": (r.properties or {}).get("wharf.step") if isinstance(r.properties, dict) else getattr(r.properties, "wharf.step", None),
    })
print(json.dumps({
    "version": log.version.value if hasattr(log.version, "value") else log.version,
    "tool": run.tool.driver.name,
    "rules": [rule.id for rule in run.tool.driver.rules or []],
    "results": results,
}))
"#,
        &[log],
    );
    assert!(read.status.success(), "{}", String::from_utf8_lossy(&read.stderr));
    serde_json::from_slice(&read.stdout).unwrap()
}

/// A real linter's SARIF (ruff, PyPI) read by `builtin:exec` becomes the step's
/// annotations, which reach GitHub's annotations, the JUnit report, the events, the HTML
/// report, and wharf's own SARIF log, as an independent reader sees it.
#[test]
fn a_linters_sarif_becomes_annotations_everywhere_and_wharf_writes_sarif_an_independent_reader_reads() {
    let ws = Workspace::new();
    std::fs::create_dir(ws.path().join("lint")).unwrap();
    ws.write("lint/bad.py", "import os\n\n\ndef f():\n    return undefined_name\n");
    ws.write(
        "ci.yml",
        r#"name: lint
steps:
  - id: note
    uses: ./probe.wasm
    with: { mode: annotate, echo: "x" }
  - id: ruff
    uses: builtin:exec
    allow: { read: [lint], write: [reports] }
    with:
      program: ruff
      args: [check, --no-cache, --output-format, sarif, --output-file, reports/ruff.sarif, lint]
      sarif: reports/ruff.sarif
"#,
    );
    let run = Run(ws
        .command(&[
            "run",
            "ci.yml",
            "--output",
            "github",
            "--junit",
            "junit.xml",
            "--sarif",
            "wharf.sarif",
            "--events",
            "events.ndjson",
        ])
        .env("PATH", common::tools_path())
        .env("GITHUB_ACTIONS", "true")
        .output()
        .unwrap());
    // ruff exits 1 with findings: the step fails, and its findings are reported first.
    assert_eq!(run.code(), 1, "{}", run.all());
    let out = run.stdout();
    // GitHub: each finding on its line, titled with the tool and the rule, the path
    // relative to the workspace although ruff wrote an absolute file: URI.
    let github: Vec<&str> = out
        .lines()
        .filter(|l| l.starts_with("::error file=lint/") || l.starts_with("::warning file="))
        .collect();
    assert!(
        github
            .iter()
            .any(|l| l.starts_with("::error file=lint/bad.py,line=1,col=8,title=ruff F401::")),
        "{out}"
    );
    assert!(
        github
            .iter()
            .any(|l| l.starts_with("::error file=lint/bad.py,line=5,col=12,title=ruff F821::")),
        "{out}"
    );
    assert_eq!(github.len(), 3, "the probe's and ruff's two: {github:#?}");

    // wharf's SARIF, as sarif-pydantic reads it: every result with the level and place
    // GitHub was shown.
    let sarif = read_sarif(&ws.path().join("wharf.sarif"));
    assert_eq!(sarif["version"], "2.1.0", "{sarif}");
    assert_eq!(sarif["tool"], "wharf", "{sarif}");
    assert_eq!(sarif["rules"], serde_json::json!(["note", "ruff"]), "{sarif}");
    let results = sarif["results"].as_array().unwrap();
    assert_eq!(results.len(), github.len(), "{sarif}");
    for line in &github {
        let (level, rest) = line.trim_start_matches("::").split_once(' ').unwrap();
        let (props, message) = rest.split_once("::").unwrap();
        let prop = |k: &str| props.split(',').find_map(|p| p.strip_prefix(&format!("{k}="))).unwrap();
        let found = results.iter().find(|r| {
            r["uri"] == prop("file")
                && r["line"].as_u64() == prop("line").parse().ok()
                && r["column"].as_u64() == prop("col").parse().ok()
        });
        let found = found.unwrap_or_else(|| panic!("{line} is not in the SARIF log: {sarif}"));
        assert_eq!(found["level"], level, "{line}: {found}");
        assert_eq!(found["base"], "%SRCROOT%", "{found}");
        let first_words = message.split("%0A").next().unwrap().replace("%25", "%");
        assert!(
            found["message"].as_str().unwrap().contains(&first_words),
            "{line}: {found}"
        );
    }
    let ruff = results.iter().find(|r| r["rule"] == "ruff").unwrap();
    assert_eq!(ruff["step"], "ruff", "{sarif}");

    // JUnit: the step's case carries its findings as its output.
    let junit = read_junit(&ws.path().join("junit.xml"));
    let case = junit["cases"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["name"] == "ruff")
        .unwrap();
    let said = case["system_out"].as_str().unwrap_or_default();
    assert!(said.contains("error lint/bad.py:1:8: ruff F401: "), "{junit}");
    assert!(said.contains("error lint/bad.py:5:12: ruff F821: "), "{junit}");

    // The events and the HTML report of the run.
    validate_events(&ws.path().join("events.ndjson"));
    let events = std::fs::read_to_string(ws.path().join("events.ndjson")).unwrap();
    assert_eq!(events.matches("\"event\":\"annotation\"").count(), 3, "{events}");
    let report = ws.wharf(&["report", &run.run_id(), "-o", "report.html"]);
    assert_eq!(report.code(), 0, "{}", report.all());
    let html = std::fs::read_to_string(ws.path().join("report.html")).unwrap();
    assert!(html.contains("lint/bad.py:1: "), "the finding in the step's log");
}

/// A SARIF log that is too large, nested too deep or not SARIF fails its step saying which,
/// in bounded memory; a finding outside the workspace keeps its message and loses its place.
#[test]
fn a_sarif_log_too_large_too_deep_or_not_sarif_is_a_clear_step_error() {
    let ws = Workspace::new();
    // 1 GB that would be read, were it read: a sparse file.
    let huge = std::fs::File::create(ws.path().join("huge.sarif")).unwrap();
    huge.set_len(1 << 30).unwrap();
    ws.write(
        "deep.sarif",
        &format!(
            r#"{{"version":"2.1.0","runs":[{{"tool":{{"driver":{{"name":"x"}}}},"properties":{}1{}}}]}}"#,
            "[".repeat(10_000),
            "]".repeat(10_000)
        ),
    );
    ws.write("junit.sarif", "<testsuite name=\"not sarif\"/>");
    ws.write(
        "outside.sarif",
        r#"{"version":"2.1.0","runs":[{"tool":{"driver":{"name":"scan"}},"results":[
            {"ruleId":"S1","level":"warning","message":{"text":"a secret in passwd"},
             "locations":[{"physicalLocation":{"artifactLocation":{"uri":"file:///etc/passwd"},"region":{"startLine":1}}}]},
            {"ruleId":"S2","level":"note","message":{"text":"climbs out"},
             "locations":[{"physicalLocation":{"artifactLocation":{"uri":"../../up.txt"}}}]}]}]}"#,
    );
    let step = |id: &str, file: &str| {
        format!("  - {{ id: {id}, if: always(), uses: builtin:exec, with: {{ program: \"true\", sarif: {file} }} }}\n")
    };
    ws.write(
        "ci.yml",
        &format!(
            "name: bad-logs\nsteps:\n{}{}{}{}",
            step("huge", "huge.sarif"),
            step("deep", "deep.sarif"),
            step("junit", "junit.sarif"),
            step("outside", "outside.sarif")
        ),
    );
    let (code, peak) = common::peak_memory(ws.command(&["run", "ci.yml"]));
    assert_eq!(code, 1);
    assert!(peak < 200 << 20, "wharf's peak RSS {peak} bytes reading a 1 GB log");
    let run = ws.wharf(&["run", "ci.yml", "--output", "github"]);
    assert_eq!(run.code(), 1, "{}", run.all());
    let all = run.all();
    for said in [
        "the SARIF log `huge.sarif` could not be read: 1073741824 bytes, more than the 16777216 read",
        "the SARIF log `deep.sarif` could not be read: nested deeper than the 64 levels read (line 1, column",
        "the SARIF log `junit.sarif` could not be read: not a SARIF 2.1.0 log: expected value at line 1 column 1",
    ] {
        assert!(all.contains(said), "{said}: {all}");
    }
    assert_eq!(run.status_of("outside"), "ok", "{all}");
    assert!(
        all.contains("::warning title=scan S1::a secret in passwd (at /etc/passwd, outside the workspace)"),
        "{all}"
    );
    assert!(
        all.contains("::notice title=scan S2::climbs out (at ../../up.txt, outside the workspace)"),
        "{all}"
    );
}
