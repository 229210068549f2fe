//! Canary releases on real parts: the seed's `canary.yml` shifts real traffic, carried by
//! Debian's nginx (reloaded by the pipeline's render steps with the weights wharf gives each
//! instance), from a small load generator on loopback, and judges the canary by its own
//! error rate over HTTP. A good release goes 10/50/100; a release failing one request in five
//! is stopped at the first judge and rolled back, having met a tenth of the traffic; a
//! release the judge cannot decide is held, split as it was, until `wharf confirm`.

mod common;
use common::Workspace;
use common::services::{Answer, CANARY_RUN, Load, Nginx, Registry, reached};
use std::time::Duration;

/// A seed workspace running its first release behind nginx (prefix `nginx/`, as the
/// canary pipeline reloads it), with the next commit ready to go out as a canary.
fn behind_nginx() -> (Workspace, Nginx, String) {
    let ws = Workspace::seed();
    let first = ws.wharf(&["run", "pipeline.yml", "-v"]);
    assert_eq!(first.code(), 0, "{}", first.all());
    let old = first.output_of("version", "version").unwrap();
    let nginx = Nginx::start_in(&ws.path().join("nginx"), &ws.path().join("nginx/upstreams.conf"));
    ws.commit("the release to canary");
    (ws, nginx, old)
}

/// `canary.yml` with nginx reloaded and quick judges, and `vars` on top (`junit=FILE` and
/// `events=FILE` are the run's `--junit` and `--events`).
fn canary(ws: &Workspace, vars: &[&str]) -> common::Run {
    let mut args = CANARY_RUN.to_vec();
    for var in vars {
        match var.split_once('=') {
            Some(("junit", file)) => args.extend(["--junit", file]),
            Some(("events", file)) => args.extend(["--events", file]),
            _ => args.extend(["--var", var]),
        }
    }
    ws.wharf(&args)
}

/// `seed` is active on `version` alone: its two running instances run it.
fn assert_on_alone(ws: &Workspace, version: &str) {
    let state = ws.service_state("seed");
    assert_eq!(state["state"], "active", "{state}");
    assert_eq!(state["current"]["revision"]["version"], version, "{state}");
    let running: Vec<&serde_json::Value> = state["instances"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|i| i["running"] == true)
        .collect();
    assert_eq!(running.len(), 2, "{state}");
    assert!(running.iter().all(|i| i["version"] == version), "{state}");
}

fn upstreams(ws: &Workspace) -> String {
    std::fs::read_to_string(ws.path().join("nginx/upstreams.conf")).unwrap()
}

#[test]
fn a_good_release_is_promoted_through_10_50_100_with_every_request_answered() {
    let (ws, nginx, old) = behind_nginx();
    let load = Load::start(nginx.port);
    let run = canary(&ws, &[]);
    std::thread::sleep(Duration::from_millis(300));
    let answers = load.finish();
    assert_eq!(run.code(), 0, "{}", run.all());
    let new = run.output_of("version", "version").unwrap();
    for step in ["canary-10", "judge-10", "canary-50", "judge-50", "promote", "finish"] {
        assert_eq!(run.status_of(step), "ok", "{step}: {}", run.all());
    }
    assert_eq!(run.status_of("abort"), "skip", "{}", run.all());
    assert_eq!(run.output_of("canary-10", "traffic").unwrap(), "10");
    assert_eq!(run.output_of("canary-10", "state").unwrap(), "upgrading");
    assert_eq!(run.output_of("judge-10", "phase").unwrap(), "successful");
    // Each shift reached nginx: the split was rendered with weights, then the whole release.
    let out = run.stdout();
    assert!(out.contains("seed: 10% of traffic to"), "{out}");
    assert!(out.contains("seed: 50% of traffic to"), "{out}");
    let text = upstreams(&ws);
    assert!(!text.contains(&old), "{text}");
    assert_eq!(text.matches("weight=1;").count(), 2, "{text}");
    assert_eq!(ws.service_state("seed")["state"], "active");

    // Every request was answered by one release or the other, none dropped by a reload.
    assert!(answers.len() > 200, "{} answers", answers.len());
    let failed: Vec<&Answer> = answers.iter().filter(|a| a.status != 200).collect();
    assert!(
        failed.is_empty(),
        "{} failed: {:?}",
        failed.len(),
        &failed[..failed.len().min(5)]
    );
    let (to_new, window) = reached(&answers, &new);
    assert!(
        to_new > 0 && to_new < window,
        "the canary and the old release both served"
    );
}

#[test]
fn a_release_failing_one_request_in_five_is_stopped_at_10_percent_and_rolled_back() {
    let (ws, nginx, old) = behind_nginx();
    let load = Load::start(nginx.port);
    let junit = ws.path().join("junit.xml");
    let events = ws.path().join("events.ndjson");
    let (junit_arg, events_arg) = (
        format!("junit={}", junit.display()),
        format!("events={}", events.display()),
    );
    let run = canary(&ws, &["error-rate=0.2", &junit_arg, &events_arg]);
    std::thread::sleep(Duration::from_millis(300));
    let answers = load.finish();
    // Failed after deploying, rolled back: exit code 3.
    assert_eq!(run.code(), 3, "{}", run.all());
    let new = run.output_of("version", "version").unwrap();
    assert_eq!(run.status_of("judge-10"), "FAIL", "{}", run.all());
    for skipped in ["canary-50", "judge-50", "promote", "finish"] {
        assert_eq!(run.status_of(skipped), "skip", "{skipped}: {}", run.all());
    }
    assert_eq!(run.status_of("abort"), "ok", "{}", run.all());
    assert_eq!(run.status_of("reroute"), "ok", "{}", run.all());
    let out = run.stdout();
    assert!(out.contains("analysis failed"), "{out}");
    assert!(!out.contains("50% of traffic"), "{out}");

    // The old release takes every request again: nginx names its instances alone.
    let text = upstreams(&ws);
    assert!(!text.contains(&new), "{text}");
    assert_eq!(text.matches("weight=1;").count(), 2, "{text}");
    let state = ws.service_state("seed");
    assert_eq!(state["state"], "active");
    assert_eq!(state["current"]["revision"]["version"], old.as_str());

    // While the canary ran, it met about a tenth of the requests, not a third.
    let (to_new, window) = reached(&answers, &new);
    assert!(window > 50, "{} answers in the canary's window", window);
    assert!(
        to_new * 3 < window,
        "{to_new} of {} requests during the canary reached it",
        window
    );
    // Its failures were among those; the old release failed none.
    let errors = answers.iter().filter(|a| a.status == 500).count();
    assert!(
        errors > 0 && errors <= to_new,
        "{errors} errors, {to_new} to the canary"
    );
    assert!(
        answers
            .iter()
            .all(|a| a.status == 200 || a.version.as_deref() == Some(new.as_str()))
    );

    // Every measurement is in the record: the live view printed it, `wharf log` and the
    // report show it, the report draws the traffic over time (10%, then none), and JUnit
    // (read by junitparser) has the metric as a failed case of the judge.
    let judged = out
        .lines()
        .find(|l| l.contains("≈ judge-10: error-rate = "))
        .unwrap_or_else(|| panic!("no measurement line: {out}"));
    assert!(
        judged.contains(": failed (measurement 1/3; success: result <= 0.05"),
        "{judged}"
    );
    let log = ws.wharf(&["log", &run.run_id()]);
    assert!(log.stdout().contains("judge-10 ≈ error-rate = 0."), "{}", log.all());
    assert!(log.stdout().contains("» traffic: 10% of `seed` to"), "{}", log.all());
    let report = ws.path().join("report.html");
    let wrote = ws.wharf(&["report", &run.run_id(), "-o", report.to_str().unwrap()]);
    assert_eq!(wrote.code(), 0, "{}", wrote.all());
    let html = std::fs::read_to_string(&report).unwrap();
    let traffic = &html[html.find("id=\"traffic\"").expect("a traffic table")..];
    let table = traffic.split("</table>").next().unwrap();
    let percents: Vec<&str> = table
        .split("%</td></tr>")
        .filter_map(|row| row.rsplit_once("<td>").map(|(_, percent)| percent))
        .collect();
    assert_eq!(percents, ["10", "0"], "{traffic}");
    assert!(
        html.contains("<tr class=\"measure failed\">"),
        "no failed measurement in the report"
    );
    assert!(
        html.contains("<circle class=\"measure failed\""),
        "no measurement on the timeline"
    );
    let cases = common::python(
        "import sys\nfrom junitparser import JUnitXml, Failure\nfor suite in JUnitXml.fromfile(sys.argv[1]):\n  for case in suite:\n    failed = any(isinstance(r, Failure) for r in case.result)\n    print(case.classname, case.name, 'failed' if failed else 'ok')\n",
        &[&junit],
    );
    let cases = String::from_utf8_lossy(&cases.stdout).into_owned();
    assert!(cases.contains("judge-10.analysis error-rate failed"), "{cases}");
    // The event stream carries them as documented (docs/events.schema.json, jsonschema).
    common::validate_events(&events);
    let stream = std::fs::read_to_string(&events).unwrap();
    let events: Vec<serde_json::Value> = stream.lines().map(|l| serde_json::from_str(l).unwrap()).collect();
    assert!(
        events
            .iter()
            .any(|e| e["event"] == "measurement" && e["verdict"] == "failed" && e["metric"] == "error-rate")
    );
    assert!(
        events
            .iter()
            .any(|e| e["event"] == "deploy" && e["transition"] == "shifted" && e["traffic"] == 10)
    );
}

#[test]
fn an_analysis_that_cannot_decide_holds_the_split_until_wharf_confirm() {
    let (ws, nginx, old) = behind_nginx();
    let load = Load::start(nginx.port);
    // One request in five fails: over the budget, under the limit.
    let run = canary(&ws, &["error-rate=0.2", "error-budget=0.01", "error-limit=0.5"]);
    let answers = load.finish();
    assert_eq!(run.code(), 6, "{}", run.all());
    let new = run.output_of("version", "version").unwrap();
    assert_eq!(run.status_of("judge-10"), "FAIL", "{}", run.all());
    let out = run.stdout();
    assert!(out.contains("analysis inconclusive"), "{out}");
    assert!(out.contains("seed: held for a person"), "{out}");
    // The run's own rollback step is refused: the upgrade is a person's to decide.
    assert!(out.contains("is held for a person"), "{out}");

    // Held as it stood: both releases serve, weighted 10/90.
    let state = ws.service_state("seed");
    assert_eq!(state["state"], "upgrading");
    assert_eq!(state["traffic"], 10);
    let text = upstreams(&ws);
    assert!(text.contains(&old) && text.contains(&new), "{text}");
    assert!(text.contains("weight=2;") && text.contains("weight=9;"), "{text}");
    assert!(answers.iter().any(|a| a.version.as_deref() == Some(new.as_str())));

    let status = ws.wharf(&["status", "seed"]);
    assert!(
        status.stdout().contains(&format!("traffic   10% to {new} (a canary)")),
        "{}",
        status.all()
    );
    assert!(
        status.stdout().contains("held      analysis inconclusive"),
        "{}",
        status.all()
    );

    // A later run cannot take it over; a person decides.
    ws.commit("another");
    let next = ws.wharf(&["run", "pipeline.yml"]);
    assert_ne!(next.code(), 0, "{}", next.all());
    let confirm = ws.wharf(&["confirm", "seed"]);
    assert_eq!(confirm.code(), 0, "{}", confirm.all());
    let state = ws.service_state("seed");
    assert!(state.get("held").is_none() && state.get("traffic").is_none(), "{state}");
    assert_on_alone(&ws, &new);
}

#[test]
fn a_canary_plan_goes_forward_only() {
    let ws = Workspace::seed();
    let first = ws.wharf(&["run", "pipeline.yml", "-v"]);
    assert_eq!(first.code(), 0, "{}", first.all());
    let old = first.output_of("version", "version").unwrap();
    ws.commit("next");
    let canary = std::fs::read_to_string(ws.path().join("canary.yml")).unwrap();
    let line_of = |text: &str, needle: &str| text.lines().position(|l| l.trim() == needle.trim()).unwrap() + 1;

    // Known before the run: refused with where it is written, nothing deployed.
    for (name, from, to, expected) in [
        (
            "backwards.yml",
            "traffic: 50\n",
            "traffic: 5\n",
            "step `canary-50` gives `seed`'s new release 5% of the traffic after `canary-10` gave it 10%: a canary plan only goes forward",
        ),
        (
            "short.yml",
            "traffic: 100\n",
            "traffic: 60\n",
            "the canary plan of `seed` ends at 60% (step `promote`): no step gives the new release all the traffic",
        ),
        (
            "zero.yml",
            "traffic: 10",
            "traffic: 0",
            "`traffic: 0` is not a share of the traffic",
        ),
    ] {
        let plan = canary.replace(from, to);
        ws.write(name, &plan);
        let run = ws.wharf(&["run", name]);
        assert_eq!(run.code(), 2, "{}", run.all());
        assert!(run.all().contains(expected), "{expected}: {}", run.all());
        let at = format!("{name}:{}:", line_of(&plan, to));
        assert!(run.all().contains(&at), "{at}: {}", run.all());
        assert_eq!(ws.service_state("seed")["current"]["revision"]["version"], old.as_str());
    }

    // Known only when the run gets there (another step's output): refused at the step that
    // goes back, before anything changes, and the canary is rolled back.
    let plan = canary.replace("traffic: 50", "traffic: \"${{ steps.version.outputs.commits }}\"");
    ws.write("late.yml", &plan);
    let run = ws.wharf(&["run", "late.yml", "--var", "interval=100ms", "--var", "measurements=1"]);
    assert_eq!(run.code(), 3, "{}", run.all());
    assert!(
        run.stdout()
            .contains("already takes 10% of the traffic; a plan only goes forward (10 -> 2)"),
        "{}",
        run.all()
    );
    assert_on_alone(&ws, &old);
}

/// The same plan on the docker target: each instance a container of the engine pulled by
/// digest from a loopback registry, weighed in nginx the same way; a good release is
/// promoted, a bad one stopped at 10% and rolled back to the containers of the old.
#[test]
fn the_plan_runs_on_the_docker_target() {
    let registry = Registry::start();
    let ws = Workspace::seed();
    // Unique per test run: containers of other runs on the same engine stay out of the way.
    let service = format!("canary-{}", std::process::id());
    let vars = [
        format!("registry={}", registry.addr),
        "target=docker".to_string(),
        format!("service={service}"),
    ];
    let mut first = vec!["run", "pipeline.yml"];
    for var in &vars {
        first.extend(["--var", var]);
    }
    let deployed = ws.wharf(&first);
    assert_eq!(deployed.code(), 0, "{}", deployed.all());
    let nginx = Nginx::start_for(
        &service,
        &ws.path().join("nginx"),
        &ws.path().join("nginx/upstreams.conf"),
    );
    let vars: Vec<&str> = vars.iter().map(String::as_str).collect();

    ws.commit("good");
    let load = Load::start(nginx.port);
    let good = canary(&ws, &vars);
    let answers = load.finish();
    assert_eq!(good.code(), 0, "{}", good.all());
    let new = good.output_of("version", "version").unwrap();
    assert!(good.stdout().contains(&format!("{service}: 50% of traffic to {new}")));
    assert!(
        answers.len() > 100 && answers.iter().all(|a| a.status == 200),
        "{} answers",
        answers.len()
    );
    assert!(answers.iter().any(|a| a.version.as_deref() == Some(new.as_str())));
    let state = ws.service_state(&service);
    assert_eq!(
        (state["state"].as_str(), state["target"].as_str()),
        (Some("active"), Some("docker"))
    );
    assert_eq!(upstreams(&ws).matches(&new).count(), 2, "{}", upstreams(&ws));

    ws.commit("bad");
    let load = Load::start(nginx.port);
    let mut bad_vars = vars.clone();
    bad_vars.push("error-rate=0.2");
    let bad = canary(&ws, &bad_vars);
    let answers = load.finish();
    assert_eq!(bad.code(), 3, "{}", bad.all());
    assert_eq!(bad.status_of("judge-10"), "FAIL", "{}", bad.all());
    let bad_version = bad.output_of("version", "version").unwrap();
    let (to_bad, window) = reached(&answers, &bad_version);
    assert!(to_bad * 3 < window, "{to_bad} of {} reached the canary", window);
    let state = ws.service_state(&service);
    assert_eq!(state["current"]["revision"]["version"], new.as_str());
    let text = upstreams(&ws);
    assert!(
        !text.contains(&bad_version) && text.matches(&new).count() == 2,
        "{text}"
    );
}

/// Ctrl-C while the canary is judged: the run stops, rolls the canary back and leaves every
/// instance on the old release. A killed wharf leaves the split recorded, and
/// `wharf rollback` (what the next run asks for) ends it the same way.
#[test]
fn an_interrupted_or_killed_canary_ends_on_one_release() {
    let ws = Workspace::seed();
    let first = ws.wharf(&["run", "pipeline.yml", "-v"]);
    assert_eq!(first.code(), 0, "{}", first.all());
    let old = first.output_of("version", "version").unwrap();
    let state_file = ws.path().join(".wharf/state/services/seed.json");
    let on_old_alone = |ws: &Workspace| {
        assert_on_alone(ws, &old);
        for url in ws.running_urls("seed") {
            let (_, body) = common::services::http_get(&format!("{url}/api/v1/version")).unwrap();
            assert_eq!(body.trim(), old);
        }
    };
    for signal in [libc::SIGINT, libc::SIGKILL] {
        ws.commit("canary");
        let mut child = ws
            .command(&["run", "canary.yml", "--var", "measurements=60"])
            .stdout(std::process::Stdio::piped())
            .spawn()
            .unwrap();
        let started = std::time::Instant::now();
        while !std::fs::read_to_string(&state_file)
            .unwrap_or_default()
            .contains("\"traffic\": 10")
        {
            assert!(started.elapsed() < Duration::from_secs(60), "the canary never took 10%");
            std::thread::sleep(Duration::from_millis(50));
        }
        std::thread::sleep(Duration::from_millis(300));
        // SAFETY: sending a signal to our own child process.
        unsafe { libc::kill(child.id() as i32, signal) };
        let status = child.wait().unwrap();
        let mut out = String::new();
        std::io::Read::read_to_string(child.stdout.as_mut().unwrap(), &mut out).unwrap();
        if signal == libc::SIGINT {
            assert_eq!(status.code(), Some(130), "{out}");
            assert!(out.contains(&format!("seed: rolled back to {old}")), "{out}");
        } else {
            // Killed: the split is on record, and the next run will not start over it.
            let state = ws.service_state("seed");
            assert_eq!(
                (state["state"].as_str(), state["traffic"].as_u64()),
                (Some("upgrading"), Some(10))
            );
            let next = ws.wharf(&["run", "canary.yml"]);
            assert_eq!(next.code(), 1, "{}", next.all());
            assert!(next.all().contains("wharf rollback seed"), "{}", next.all());
            let rollback = ws.wharf(&["rollback", "seed"]);
            assert_eq!(rollback.code(), 0, "{}", rollback.all());
            assert!(ws.service_state("seed").get("traffic").is_none());
        }
        on_old_alone(&ws);
    }
}

/// A step of 100 ends a plan and a later share begins another; each service has its own;
/// a share from a var is known before the run.
#[test]
fn plans_are_checked_per_service_and_one_after_another() {
    let ws = Workspace::new();
    ws.write(
        "plans.yml",
        "name: p\nvars: { share: \"20\" }\nsteps:\n\
         - { id: a, uses: builtin:upgrade, with: { service: web, image: x, traffic: 10 } }\n\
         - { id: b, uses: builtin:upgrade, with: { service: api, image: x, traffic: 50 } }\n\
         - { id: c, uses: builtin:upgrade, with: { service: web, image: x, traffic: 100 } }\n\
         - { id: d, uses: builtin:upgrade, with: { service: web, image: x, traffic: \"${{ vars.share }}\" } }\n\
         - { id: e, uses: builtin:upgrade, with: { service: web, image: x } }\n\
         - { id: f, uses: builtin:upgrade, with: { service: api, image: x } }\n",
    );
    let valid = ws.wharf(&["validate", "plans.yml"]);
    assert_eq!(valid.code(), 0, "{}", valid.all());
    // After `c` (100) a share of 5 begins a new plan: not a step back.
    let anew = ws.wharf(&["validate", "plans.yml", "--var", "share=5"]);
    assert_eq!(anew.code(), 0, "{}", anew.all());
    let text = std::fs::read_to_string(ws.path().join("plans.yml")).unwrap();
    ws.write(
        "short.yml",
        &text
            .lines()
            .filter(|l| !l.contains("id: f,"))
            .map(|l| format!("{l}\n"))
            .collect::<String>(),
    );
    let short = ws.wharf(&["validate", "short.yml"]);
    assert_eq!(short.code(), 2, "{}", short.all());
    assert!(
        short.all().contains("the canary plan of `api` ends at 50% (step `b`)"),
        "{}",
        short.all()
    );
    assert!(!short.all().contains("`web`"), "{}", short.all());
}
