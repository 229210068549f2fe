//! `builtin:analysis`: a gate that measures. A metric is measured `count` times, `interval`
//! apart after `initial-delay`; each measurement is `failed` when the `failure` condition
//! holds, else `successful` when `success` holds, else `inconclusive` (as is one that could
//! not be taken: no answer, no data, not one number). More failures than `failure-limit`
//! fail the analysis (at once, without measuring on); else more inconclusive ones than
//! `inconclusive-limit` make it inconclusive; else it is successful. The step fails with
//! kind `gate-failed` unless successful, or never with `dry-run` (measured and recorded,
//! deciding nothing). With `service`, an inconclusive analysis also holds that service's
//! upgrade as it stands (a canary keeps its split) for a person: the run does not roll it
//! back and exits with code 6 until `wharf confirm` or `wharf rollback`.
//!
//! Providers: `http` (a number in the body, or at a JSON pointer) and `prometheus` (an
//! instant PromQL query that must come back as one number). Both speak `wasi:http`, so the
//! host decides which addresses the step reaches, and every answer is journaled: a replay
//! re-decides from the recorded measurements, offline.

mod condition;

use condition::Condition;
use std::time::Duration;
use step_http::{get, split_url};
use wharf_step::log::{Measurement, TestReport, TestStatus, Verdict};
use wharf_step::{CapabilityKind, Context, Outputs, Step, StepError, StepInfo, deploy, error, log, param};

struct Analysis;

/// A metric's answer is a number, a few bytes; a Prometheus answer of one series, a few
/// hundred. More is not a measurement.
const BODY_LIMIT: usize = 64 * 1024;
/// Measurements one analysis may take.
const COUNT_LIMIT: i64 = 10_000;

fn verdict_name(verdict: Verdict) -> &'static str {
    match verdict {
        Verdict::Successful => "successful",
        Verdict::Failed => "failed",
        Verdict::Inconclusive => "inconclusive",
    }
}

enum Provider {
    Http { pointer: Option<String> },
    Prometheus { query: String },
}

impl Step for Analysis {
    fn describe() -> StepInfo {
        StepInfo::new(
            "analysis",
            "Measure a metric over time; pass, fail or stay inconclusive by its conditions",
        )
        .param(param::text("provider", "`http` or `prometheus`").default_text("http"))
        .param(param::text(
            "metric",
            "The metric's name in the log, the report and JUnit [default: the query, the JSON pointer or the URL's path]",
        ))
        .param(
            param::text(
                "url",
                "http: the URL whose body is the number; prometheus: the server (http://HOST:PORT)",
            )
            .required(),
        )
        .param(param::text(
            "query",
            "prometheus: an instant PromQL query returning one number",
        ))
        .param(param::text(
            "json-pointer",
            "http: where the number is in a JSON body (e.g. /errors/rate); empty: the body is the number",
        ))
        .param(
            param::text(
                "success",
                "Condition on `result` a good measurement meets, e.g. `result < 0.05`",
            )
            .required(),
        )
        .param(param::text(
            "failure",
            "Condition on `result` that fails a measurement [default: not `success`]",
        ))
        .param(param::integer("count", "Measurements to take").default_int(3))
        .param(param::duration("interval", "Time between measurements").default_ms(10_000))
        .param(param::duration("initial-delay", "Time before the first measurement").default_ms(0))
        .param(param::integer("failure-limit", "Failed measurements tolerated").default_int(0))
        .param(param::integer("inconclusive-limit", "Inconclusive measurements tolerated").default_int(0))
        .param(param::boolean("dry-run", "Measure and record, decide nothing").default_bool(false))
        .param(param::duration("request-timeout", "Timeout of one request").default_ms(5_000))
        .param(param::text(
            "service",
            "The service whose upgrade an inconclusive analysis holds, as it stands, for a person (`wharf confirm` or `wharf rollback`); empty: inconclusive fails the step like failed",
        ))
        .output("phase", "successful, failed or inconclusive")
        .output("measurements", "Measurements taken")
        .output("failed", "Failed measurements")
        .output("inconclusive", "Inconclusive measurements")
        .output("values", "Every result, comma-separated (`-` for none)")
        .needs(CapabilityKind::Http, "GETs the metric", Some("url"))
        .needs(
            CapabilityKind::Deploy,
            "holds the upgrade an inconclusive result cannot decide",
            Some("service"),
        )
    }

    fn run(ctx: Context) -> Result<Outputs, StepError> {
        let url = ctx.text("url")?;
        let provider = match ctx.text("provider")?.as_str() {
            "http" => Provider::Http {
                pointer: ctx.opt_text("json-pointer")?.filter(|p| !p.is_empty()),
            },
            "prometheus" => Provider::Prometheus {
                query: ctx
                    .opt_text("query")?
                    .filter(|q| !q.trim().is_empty())
                    .ok_or_else(|| error::invalid_input("provider `prometheus` needs a `query`"))?,
            },
            other => {
                return Err(error::invalid_input(format!(
                    "provider `{other}`: use `http` or `prometheus`"
                )));
            }
        };
        let success = Condition::parse(&ctx.text("success")?).map_err(error::invalid_input)?;
        let failure = match ctx.opt_text("failure")?.filter(|f| !f.trim().is_empty()) {
            Some(text) => Some(Condition::parse(&text).map_err(error::invalid_input)?),
            None => None,
        };
        let count = ctx.int("count")?;
        if !(1..=COUNT_LIMIT).contains(&count) {
            return Err(error::invalid_input(format!(
                "`count` is {count}; take 1 to {COUNT_LIMIT} measurements"
            )));
        }
        let limit = |name: &str| -> Result<u64, StepError> {
            u64::try_from(ctx.int(name)?).map_err(|_| error::invalid_input(format!("`{name}` cannot be negative")))
        };
        let (failure_limit, inconclusive_limit) = (limit("failure-limit")?, limit("inconclusive-limit")?);
        let interval = Duration::from_millis(ctx.duration_ms("interval")?);
        let timeout = Duration::from_millis(ctx.duration_ms("request-timeout")?);
        let dry_run = ctx.flag("dry-run")?;
        let (scheme, authority, base_path) = split_url(&url).map_err(error::invalid_input)?;
        let path = match &provider {
            Provider::Http { .. } => base_path,
            Provider::Prometheus { query } => format!(
                "{}/api/v1/query?query={}",
                base_path.trim_end_matches('/'),
                encode(query)
            ),
        };
        let metric = match (ctx.opt_text("metric")?.filter(|m| !m.trim().is_empty()), &provider) {
            (Some(name), _) => name,
            (None, Provider::Prometheus { query }) => query.clone(),
            (None, Provider::Http { pointer: Some(pointer) }) => pointer.clone(),
            (None, Provider::Http { pointer: None }) => path.split('?').next().unwrap_or("/").to_string(),
        };
        let rule = match &failure {
            Some(f) => format!("success: {}, failure: {}", success.text(), f.text()),
            None => format!("success: {}", success.text()),
        };

        let started = std::time::Instant::now();
        std::thread::sleep(Duration::from_millis(ctx.duration_ms("initial-delay")?));
        let (mut failed, mut inconclusive) = (0u64, 0u64);
        let mut values = Vec::new();
        // Each measurement as a line of the JUnit case.
        let mut journal = Vec::new();
        let mut taken = 0;
        for n in 1..=count {
            if n > 1 {
                std::thread::sleep(interval);
            }
            taken = n;
            let seen = get(&scheme, &authority, &path, timeout, BODY_LIMIT);
            let measured = match &provider {
                Provider::Http { pointer } => number_in_body(&seen, pointer.as_deref()),
                Provider::Prometheus { .. } => number_from_prometheus(&seen),
            };
            values.push(match &measured {
                Ok(result) => result.to_string(),
                Err(_) => "-".into(),
            });
            let (verdict, why) = match &measured {
                Ok(result) if failure.as_ref().map_or(!success.holds(*result), |f| f.holds(*result)) => {
                    (Verdict::Failed, None)
                }
                Ok(result) if success.holds(*result) => (Verdict::Successful, None),
                Ok(_) => (Verdict::Inconclusive, Some("neither condition holds".to_string())),
                Err(why) => (Verdict::Inconclusive, Some(why.clone())),
            };
            match verdict {
                Verdict::Failed => failed += 1,
                Verdict::Inconclusive => inconclusive += 1,
                Verdict::Successful => {}
            }
            let detail = match &why {
                Some(why) => format!("measurement {n}/{count}; {why}; {rule}"),
                None => format!("measurement {n}/{count}; {rule}"),
            };
            log::measure(&Measurement {
                metric: metric.clone(),
                value: measured.ok(),
                verdict,
                dry_run,
                detail: detail.clone(),
            });
            journal.push(format!(
                "{}: {} {}",
                values.last().map_or("-", String::as_str),
                verdict_name(verdict),
                detail
            ));
            if failed > failure_limit && !dry_run {
                break;
            }
        }
        let phase = if failed > failure_limit {
            Verdict::Failed
        } else if inconclusive > inconclusive_limit {
            Verdict::Inconclusive
        } else {
            Verdict::Successful
        };
        let summary = format!(
            "{}: {taken} measurement(s), {failed} failed (limit {failure_limit}), {inconclusive} inconclusive (limit {inconclusive_limit}); values {}",
            verdict_name(phase),
            values.join(", ")
        );
        let outputs = vec![
            ("phase".to_string(), verdict_name(phase).to_string()),
            ("measurements".to_string(), taken.to_string()),
            ("failed".to_string(), failed.to_string()),
            ("inconclusive".to_string(), inconclusive.to_string()),
            ("values".to_string(), values.join(",")),
        ];
        // A case per metric in the run's JUnit report.
        log::report_test(&TestReport {
            suite: "analysis".into(),
            name: metric.clone(),
            classname: None,
            duration_ms: u64::try_from(started.elapsed().as_millis()).unwrap_or(u64::MAX),
            status: match (phase, dry_run) {
                (Verdict::Successful, _) => TestStatus::Passed,
                (_, true) => TestStatus::Skipped,
                (Verdict::Failed, false) => TestStatus::Failed,
                (Verdict::Inconclusive, false) => TestStatus::Errored,
            },
            message: Some(if dry_run && phase != Verdict::Successful {
                format!("dry run, deciding nothing: {summary}")
            } else {
                summary.clone()
            }),
            kind: None,
            details: None,
            stdout: Some(journal.join("\n")),
            stderr: None,
        });
        match (phase, dry_run) {
            (Verdict::Successful, _) => {
                log::info(&summary);
                Ok(outputs)
            }
            (_, true) => {
                log::warn(&format!("dry run, deciding nothing: {summary}"));
                Ok(outputs)
            }
            (Verdict::Inconclusive, false) => {
                if let Some(service) = ctx.opt_text("service")?.filter(|s| !s.is_empty())
                    && let Err(e) = deploy::hold(&service, &format!("analysis {summary}"))
                {
                    // Nothing to hold (no upgrade under way): inconclusive fails the step.
                    log::warn(&format!("{service} is not held: {}", e.message));
                }
                Err(error::gate_failed(format!("analysis {summary}")))
            }
            _ => Err(error::gate_failed(format!("analysis {summary}"))),
        }
    }
}

/// The number an HTTP answer carries: the whole body, or the value at a JSON pointer.
fn number_in_body(seen: &step_http::Observation, pointer: Option<&str>) -> Result<f64, String> {
    answered(seen)?;
    let value = match pointer {
        None => seen.body.trim().to_string(),
        Some(pointer) => {
            let json: serde_json::Value =
                serde_json::from_str(&seen.body).map_err(|e| format!("the body is not JSON: {e}"))?;
            match json.pointer(pointer) {
                None => return Err(format!("no value at {pointer}")),
                Some(serde_json::Value::String(s)) => s.clone(),
                Some(serde_json::Value::Number(n)) => n.to_string(),
                Some(other) => return Err(format!("{pointer} is {}, not a number", kind(other))),
            }
        }
    };
    number(&value)
}

/// The one number an instant query answers: a scalar, or a vector of one sample.
fn number_from_prometheus(seen: &step_http::Observation) -> Result<f64, String> {
    answered(seen)?;
    let json: serde_json::Value =
        serde_json::from_str(&seen.body).map_err(|e| format!("Prometheus answered no JSON: {e}"))?;
    if json["status"] != "success" {
        return Err(format!(
            "Prometheus says {}: {}",
            json["errorType"].as_str().unwrap_or("error"),
            json["error"].as_str().unwrap_or("no reason given")
        ));
    }
    let data = &json["data"];
    let sample = match data["resultType"].as_str() {
        Some("scalar") => &data["result"],
        Some("vector") => match data["result"].as_array().map(Vec::as_slice) {
            Some([one]) => &one["value"],
            Some([]) | None => return Err("the query returned no data".into()),
            Some(many) => {
                return Err(format!(
                    "the query returned a vector of {} series, not one number (aggregate it, e.g. sum(...))",
                    many.len()
                ));
            }
        },
        other => {
            return Err(format!(
                "the query returned a {}, not one number",
                other.unwrap_or("nothing")
            ));
        }
    };
    number(sample[1].as_str().unwrap_or_default())
}

fn answered(seen: &step_http::Observation) -> Result<(), String> {
    if let Some(problem) = &seen.problem {
        return Err(problem.clone());
    }
    if seen.truncated {
        return Err(format!("the answer is over {BODY_LIMIT} bytes, not a measurement"));
    }
    match seen.status {
        Some(status) if (200..300).contains(&status) => Ok(()),
        status => Err(format!("answered {}", status.unwrap_or(0))),
    }
}

fn number(text: &str) -> Result<f64, String> {
    let shown: String = text.chars().take(40).flat_map(char::escape_debug).collect();
    match text.trim().parse::<f64>() {
        Ok(n) if n.is_nan() => Err("the result is NaN".into()),
        Ok(n) if n.is_infinite() => Err(format!("`{shown}` is not a finite number")),
        Ok(n) => Ok(n),
        Err(_) => Err(format!("`{shown}` is not a number")),
    }
}

fn kind(value: &serde_json::Value) -> &'static str {
    match value {
        serde_json::Value::Null => "null",
        serde_json::Value::Bool(_) => "a boolean",
        serde_json::Value::Array(_) => "a list",
        serde_json::Value::Object(_) => "an object",
        _ => "a value",
    }
}

/// A query as a URL's query component.
fn encode(text: &str) -> String {
    text.bytes()
        .map(|b| match b {
            b'a'..=b'z' | b'A'..=b'Z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => (b as char).to_string(),
            _ => format!("%{b:02X}"),
        })
        .collect()
}

wharf_step::export!(Analysis);
