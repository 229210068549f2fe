//! `builtin:analysis` on what a metric endpoint can do wrong: hang, send a gigabyte, answer
//! NaN or not a number; and conditions that do not read. No real service misbehaves like
//! this on purpose, so stand-ins play the endpoints (each counts its requests); the run
//! against real Prometheus is in `seed_pipeline.rs`. And a judge of an organisation's own,
//! a WebAssembly step that only measures, decided by the same analysis.

mod common;
use common::services::StandIn;
use common::{Workspace, guest, python};
use std::io::Write;
use std::time::{Duration, Instant};

fn analysis(ws: &Workspace, url: &str, extra: &str) -> common::Run {
    let count = if extra.contains("count:") {
        ""
    } else {
        "      count: 2\n"
    };
    ws.write(
        "analysis.yml",
        &format!(
            "name: a\nsteps:\n  - id: judge\n    uses: builtin:analysis\n    with:\n      url: {url}\n{count}      interval: 100ms\n      request-timeout: 1s\n      success: result < 0.05\n{extra}"
        ),
    );
    ws.wharf(&["run", "analysis.yml", "-v", "--no-cache"])
}

fn answer(conn: &mut std::net::TcpStream, body: &str) {
    let _ = write!(
        conn,
        "HTTP/1.1 200 OK\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    );
}

#[test]
fn a_hanging_flooding_or_nonsense_metric_is_inconclusive_in_bounded_time() {
    let hangs = StandIn::start(|_, _, conn| {
        let _ = write!(conn, "HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\n");
        std::thread::sleep(Duration::from_secs(30));
    });
    let floods = StandIn::start(|_, _, conn| {
        let _ = write!(conn, "HTTP/1.1 200 OK\r\nContent-Length: 1000000000\r\n\r\n");
        let zeros = vec![b'0'; 1 << 16];
        while conn.write_all(&zeros).is_ok() {}
    });
    let nan = StandIn::start(|_, _, conn| answer(conn, "NaN\n"));
    let infinite = StandIn::start(|_, _, conn| answer(conn, "1e999\n"));
    let words = StandIn::start(|_, _, conn| answer(conn, "\u{1b}[2Jlots\n"));
    let ws = Workspace::new();
    for (endpoint, expected) in [
        (&hangs, "request failed"),
        (&floods, "the answer is over the host's size limit for a response"),
        (&nan, "the result is NaN"),
        (&infinite, "`1e999` is not a finite number"),
        (&words, "`\\u{1b}[2Jlots` is not a number"),
    ] {
        let started = Instant::now();
        let run = analysis(&ws, &format!("http://{}/metric", endpoint.addr), "");
        assert_eq!(run.code(), 1, "{}", run.all());
        assert!(run.all().contains(expected), "{expected}: {}", run.all());
        assert!(
            run.all()
                .contains("analysis inconclusive: 2 measurement(s), 0 failed (limit 0), 2 inconclusive (limit 0)"),
            "{}",
            run.all()
        );
        assert!(started.elapsed() < Duration::from_secs(20), "{:?}", started.elapsed());
        assert_eq!(endpoint.requests(), 2, "one request per measurement");
        // Within the limit of inconclusive measurements, the analysis passes.
        let tolerated = analysis(
            &ws,
            &format!("http://{}/metric", endpoint.addr),
            "      inconclusive-limit: 2\n",
        );
        assert_eq!(tolerated.code(), 0, "{}", tolerated.all());
    }
}

#[test]
fn conditions_and_plans_that_do_not_read_stop_before_anything_is_measured() {
    let endpoint = StandIn::start(|_, _, conn| answer(conn, "0.01\n"));
    let ws = Workspace::new();
    let url = format!("http://{}/metric", endpoint.addr);
    for (extra, expected) in [
        ("      failure: result >> 3\n", "`> 3` is not a number"),
        ("      failure: 3 < 4\n", "does not compare `result` with a number"),
        ("      failure: result\n", "compares nothing"),
        ("      count: 0\n", "take 1 to 10000 measurements"),
        ("      failure-limit: -1\n", "`failure-limit` cannot be negative"),
        ("      provider: prometheus\n", "provider `prometheus` needs a `query`"),
        (
            "      provider: datadog\n",
            "provider `datadog`: use `http` or `prometheus`",
        ),
    ] {
        let run = analysis(&ws, &url, extra);
        assert_eq!(run.code(), 1, "{extra}: {}", run.all());
        assert!(run.step_line("judge").contains("invalid-input"), "{}", run.all());
        assert!(run.all().contains(expected), "{expected}: {}", run.all());
    }
    assert_eq!(endpoint.requests(), 0, "nothing was measured");
    let good = analysis(&ws, &url, "      failure: result >= 0.05 || result < 0\n");
    assert_eq!(good.code(), 0, "{}", good.all());
    assert_eq!(good.output_of("judge", "values").as_deref(), Some("0.01,0.01"));
    assert!(
        good.all()
            .contains("/metric = 0.01: successful (measurement 2/2; success: result"),
        "{}",
        good.all()
    );

    // The decision replays offline, from the measurements the journal holds.
    drop(endpoint);
    let replay = ws.wharf(&["replay", &good.run_id()]);
    assert_eq!(replay.code(), 0, "{}", replay.all());
    assert!(replay.stdout().contains("matched the journal"), "{}", replay.all());
}

/// A judge of an organisation's own (tests/steps/judge: a step built on the SDK's
/// `analysis`, measuring the readings it is given) is decided, reported and replayed as
/// `builtin:analysis` is.
#[test]
fn an_organisations_own_judge_is_decided_like_the_builtin() {
    let ws = Workspace::new();
    std::fs::copy(guest("judge_step"), ws.path().join("judge.wasm")).unwrap();
    let judge = |readings: &str, extra: &str| {
        ws.write(
            "judge.yml",
            &format!(
                "name: j\nsteps:\n  - id: queue\n    uses: ./judge.wasm\n    with:\n      readings: [{readings}]\n      metric: queue-depth\n      count: 3\n      interval: 10ms\n      success: result < 10\n      failure: result >= 100\n{extra}"
            ),
        );
        let junit = ws.path().join("junit.xml");
        ws.wharf(&[
            "run",
            "judge.yml",
            "-v",
            "--no-cache",
            "--junit",
            junit.to_str().unwrap(),
        ])
    };
    // A failed measurement fails it at once; past the limit it does not.
    let failed = judge("3, 250, 4", "");
    assert_eq!(failed.code(), 1, "{}", failed.all());
    assert!(
        failed
            .step_line("queue")
            .contains("gate-failed: analysis failed: 2 measurement(s), 1 failed")
    );
    assert!(failed.stdout().contains(
        "≈ queue: queue-depth = 250: failed (measurement 2/3; success: result < 10, failure: result >= 100)"
    ));
    let cases = python(
        "import sys\nfrom junitparser import JUnitXml, Failure\nfor suite in JUnitXml.fromfile(sys.argv[1]):\n  for case in suite:\n    failed = any(isinstance(r, Failure) for r in case.result)\n    print(case.classname, case.name, 'failed' if failed else 'ok')\n",
        &[ws.path().join("junit.xml")],
    );
    assert!(String::from_utf8_lossy(&cases.stdout).contains("queue.analysis queue-depth failed"));
    let tolerated = judge("3, 250, 4", "      failure-limit: 1\n");
    assert_eq!(tolerated.code(), 0, "{}", tolerated.all());
    assert_eq!(tolerated.output_of("queue", "values").as_deref(), Some("3,250,4"));
    // Neither condition, or no number at all: inconclusive.
    let unsure = judge("50, gone, 60", "");
    assert_eq!(unsure.code(), 1, "{}", unsure.all());
    assert!(unsure.stdout().contains("no reading in `gone`"), "{}", unsure.all());
    assert!(
        unsure
            .step_line("queue")
            .contains("analysis inconclusive: 3 measurement(s), 0 failed (limit 0), 3 inconclusive"),
        "{}",
        unsure.all()
    );
    // A dry run decides nothing.
    let dry = judge("3, 250, 400", "      dry-run: true\n");
    assert_eq!(dry.code(), 0, "{}", dry.all());
    assert_eq!(dry.output_of("queue", "phase").as_deref(), Some("failed"));
    assert!(dry.stdout().contains("[dry run]"), "{}", dry.all());
    // Its decision replays from the journal.
    let replay = ws.wharf(&["replay", &failed.run_id()]);
    assert_eq!(replay.code(), 0, "{}", replay.all());
}
