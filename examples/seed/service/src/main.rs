//! A tiny HTTP service for the seed pipeline, standard library only, so it links statically
//! and runs in a FROM-scratch image and as a plain local process.
//!
//! - `GET /api/v1/status` answers `OK`, or `FAIL` when built with `SEED_STATUS=FAIL`;
//! - `GET /api/v1/version` answers the version it was deployed as (`APP_VERSION`);
//! - `GET /` is the service's own work: built with `SEED_ERROR_RATE=0.2`, one request in
//!   five fails with a 500 (deterministically: the fifth, the tenth, ...), while the status
//!   endpoint still says `OK`: a release only measurement catches;
//! - `GET /api/v1/stats` answers `GET /`'s record as JSON, for a measurement without a
//!   Prometheus: `{"version": ..., "requests": N, "errors": E, "error-rate": E/N}` (0 before
//!   the first request);
//! - `GET /metrics` answers in Prometheus' text format: requests by path and code, errors
//!   by path, and a latency histogram;
//! - it listens on `$PORT` (default 8080);
//! - `seed-service probe PATH` is its own health check, for a scheduler to run inside its
//!   container (a FROM-scratch image has no curl): exit 0 when `GET PATH` on `$PORT`
//!   answers 2xx.

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::sync::Mutex;
use std::time::Instant;

const STATUS: &str = match option_env!("SEED_STATUS") {
    Some(s) => s,
    None => "OK",
};

/// The share of `GET /` that fails, as built: `SEED_ERROR_RATE`, 0 by default.
fn error_rate() -> f64 {
    option_env!("SEED_ERROR_RATE")
        .and_then(|r| r.trim().parse::<f64>().ok())
        .filter(|r| (0.0..=1.0).contains(r))
        .unwrap_or(0.0)
}

/// Upper bounds of the latency histogram's buckets, in seconds.
const BUCKETS: [f64; 8] = [0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.1, 1.0];

/// What `/metrics` reports.
#[derive(Default)]
struct Metrics {
    /// Requests by (path, status code); paths other than the service's own are `other`.
    requests: BTreeMap<(&'static str, u16), u64>,
    /// Requests of `GET /` so far, which decides the next one's fate.
    work: u64,
    /// Latency: count per bucket (not cumulative), then the sum of seconds and the count.
    buckets: [u64; BUCKETS.len()],
    seconds: f64,
    count: u64,
}

static METRICS: Mutex<Option<Metrics>> = Mutex::new(None);

fn metrics<T>(f: impl FnOnce(&mut Metrics) -> T) -> T {
    let mut guard = METRICS.lock().unwrap_or_else(|e| e.into_inner());
    f(guard.get_or_insert_with(Metrics::default))
}

fn main() {
    let port = std::env::var("PORT").unwrap_or_else(|_| "8080".into());
    let args: Vec<String> = std::env::args().collect();
    if let [_, probe, path] = args.as_slice()
        && probe == "probe"
    {
        std::process::exit(if healthy(&port, path) { 0 } else { 1 });
    }
    let version = std::env::var("APP_VERSION").unwrap_or_else(|_| "unknown".into());
    let listener = match TcpListener::bind(format!("0.0.0.0:{port}")) {
        Ok(l) => l,
        Err(e) => {
            eprintln!("seed-service: cannot listen on port {port}: {e}");
            std::process::exit(1);
        }
    };
    eprintln!(
        "seed-service {version} listening on {port}, status {STATUS}, error rate {}",
        error_rate()
    );
    for stream in listener.incoming().flatten() {
        let version = version.clone();
        std::thread::spawn(move || {
            let _ = serve(stream, &version);
        });
    }
}

fn healthy(port: &str, path: &str) -> bool {
    let answer = (|| -> std::io::Result<String> {
        let mut stream = TcpStream::connect(format!("127.0.0.1:{port}"))?;
        stream.set_read_timeout(Some(std::time::Duration::from_secs(2)))?;
        write!(stream, "GET {path} HTTP/1.0\r\n\r\n")?;
        let mut answer = String::new();
        stream.take(4096).read_to_string(&mut answer)?;
        Ok(answer)
    })();
    answer.is_ok_and(|a| a.split_whitespace().nth(1).is_some_and(|code| code.starts_with('2')))
}

fn serve(mut stream: TcpStream, version: &str) -> std::io::Result<()> {
    let mut reader = BufReader::new(stream.try_clone()?);
    let mut request_line = String::new();
    reader.read_line(&mut request_line)?;
    // Drain the headers.
    let mut line = String::new();
    while reader.read_line(&mut line)? > 2 {
        line.clear();
    }
    let started = Instant::now();
    let path = request_line.split_whitespace().nth(1).unwrap_or("/");
    let (label, code, body) = match path {
        "/api/v1/status" => ("/api/v1/status", 200, format!("{STATUS}\n")),
        "/api/v1/version" => ("/api/v1/version", 200, format!("{version}\n")),
        "/metrics" => ("/metrics", 200, exposition(version)),
        "/api/v1/stats" => ("/api/v1/stats", 200, stats(version)),
        "/" => {
            let rate = error_rate();
            let fails = metrics(|m| {
                m.work += 1;
                // The n-th request fails when the count of failures due by n goes up.
                (m.work as f64 * rate).floor() > ((m.work - 1) as f64 * rate).floor()
            });
            if fails {
                ("/", 500, "failed (SEED_ERROR_RATE)\n".to_string())
            } else {
                ("/", 200, format!("seed-service {version}\n"))
            }
        }
        _ => ("other", 404, "not found\n".to_string()),
    };
    let reason = match code {
        200 => "OK",
        404 => "Not Found",
        _ => "Internal Server Error",
    };
    let content_type = match label {
        "/metrics" => "text/plain; version=0.0.4",
        "/api/v1/stats" => "application/json",
        _ => "text/plain",
    };
    write!(
        stream,
        "HTTP/1.1 {code} {reason}\r\nContent-Type: {content_type}\r\nContent-Length: {}\r\nX-Version: {version}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    )?;
    stream.flush()?;
    let seconds = started.elapsed().as_secs_f64();
    metrics(|m| {
        *m.requests.entry((label, code)).or_default() += 1;
        if let Some(bucket) = BUCKETS.iter().position(|&le| seconds <= le) {
            m.buckets[bucket] += 1;
        }
        m.seconds += seconds;
        m.count += 1;
    });
    Ok(())
}

/// `GET /`'s requests and errors so far, as JSON.
fn stats(version: &str) -> String {
    metrics(|m| {
        let count = |code: Option<u16>| -> u64 {
            m.requests
                .iter()
                .filter(|((path, c), _)| *path == "/" && code.is_none_or(|code| *c == code))
                .map(|(_, n)| n)
                .sum()
        };
        let (requests, errors) = (count(None), count(Some(500)));
        let rate = if requests == 0 { 0.0 } else { errors as f64 / requests as f64 };
        format!("{{\"version\":\"{version}\",\"requests\":{requests},\"errors\":{errors},\"error-rate\":{rate}}}\n")
    })
}

/// The metrics in Prometheus' text exposition format (version 0.0.4).
fn exposition(version: &str) -> String {
    use std::fmt::Write as _;
    metrics(|m| {
        let mut out = String::new();
        let _ = writeln!(
            out,
            "# HELP seed_requests_total Requests answered, by path and status code."
        );
        let _ = writeln!(out, "# TYPE seed_requests_total counter");
        for ((path, code), n) in &m.requests {
            let _ = writeln!(out, "seed_requests_total{{path=\"{path}\",code=\"{code}\"}} {n}");
        }
        let _ = writeln!(
            out,
            "# HELP seed_request_errors_total Requests answered with a 5xx, by path."
        );
        let _ = writeln!(out, "# TYPE seed_request_errors_total counter");
        let mut errors: BTreeMap<&str, u64> = BTreeMap::new();
        for ((path, code), n) in &m.requests {
            let entry = errors.entry(path).or_default();
            if *code >= 500 {
                *entry += n;
            }
        }
        for (path, n) in errors {
            let _ = writeln!(out, "seed_request_errors_total{{path=\"{path}\"}} {n}");
        }
        let _ = writeln!(out, "# HELP seed_request_duration_seconds Time to answer a request.");
        let _ = writeln!(out, "# TYPE seed_request_duration_seconds histogram");
        let mut cumulative = 0;
        for (le, n) in BUCKETS.iter().zip(m.buckets) {
            cumulative += n;
            let _ = writeln!(out, "seed_request_duration_seconds_bucket{{le=\"{le}\"}} {cumulative}");
        }
        let _ = writeln!(out, "seed_request_duration_seconds_bucket{{le=\"+Inf\"}} {}", m.count);
        let _ = writeln!(out, "seed_request_duration_seconds_sum {}", m.seconds);
        let _ = writeln!(out, "seed_request_duration_seconds_count {}", m.count);
        let _ = writeln!(
            out,
            "# HELP seed_build_info The release: its version and the error rate it was built with."
        );
        let _ = writeln!(out, "# TYPE seed_build_info gauge");
        let _ = writeln!(
            out,
            "seed_build_info{{version=\"{}\",status=\"{STATUS}\",error_rate=\"{}\"}} 1",
            version.replace('\\', "\\\\").replace('"', "\\\"").replace('\n', "\\n"),
            error_rate()
        );
        out
    })
}
