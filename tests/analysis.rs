//! `builtin:analysis` on what a metric endpoint can do wrong: hang, send a gigabyte, answer
//! NaN or not a number; and conditions that do not read. No real service misbehaves like
//! this on purpose, so stand-ins play the endpoints (each counts its requests); the run
//! against real Prometheus is in `seed_pipeline.rs`.

mod common;
use common::Workspace;
use common::services::StandIn;
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
