//! `builtin:analysis`: a gate that measures, the SDK's judge (`wharf_step::analysis`: count,
//! interval, initial delay, success and failure conditions, limits, dry run, holding an
//! upgrade it cannot decide) over two providers: `http` (a number in the body, or at a JSON
//! pointer) and `prometheus` (an instant PromQL query that must come back as one number).
//! Both speak `wasi:http`, so the host decides which addresses the step reaches, and every
//! answer is journaled: a replay re-decides from the recorded measurements, offline. A judge
//! of an organisation's own is a step built on the same module with its own measurement.

use std::time::Duration;
use step_http::{get, split_url};
use wharf_step::{CapabilityKind, Context, Outputs, Step, StepError, StepInfo, analysis, error, param};

struct Analysis;

/// A metric's answer is a number, a few bytes; a Prometheus answer of one series, a few
/// hundred. More is not a measurement.
const BODY_LIMIT: usize = 64 * 1024;

enum Provider {
    Http { pointer: Option<String> },
    Prometheus { query: String },
}

impl Step for Analysis {
    fn describe() -> StepInfo {
        analysis::judge(
            StepInfo::new(
                "analysis",
                "Measure a metric over time; pass, fail or stay inconclusive by its conditions",
            )
            .param(param::text("provider", "`http` or `prometheus`").default_text("http"))
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
            .param(param::duration("request-timeout", "Timeout of one request").default_ms(5_000))
            .needs(CapabilityKind::Http, "GETs the metric", Some("url")),
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
        let timeout = Duration::from_millis(ctx.duration_ms("request-timeout")?);
        let (scheme, authority, base_path) = split_url(&url).map_err(error::invalid_input)?;
        let path = match &provider {
            Provider::Http { .. } => base_path,
            Provider::Prometheus { query } => format!(
                "{}/api/v1/query?query={}",
                base_path.trim_end_matches('/'),
                encode(query)
            ),
        };
        // Named by what is measured, unless the pipeline names it.
        let metric = match &provider {
            Provider::Prometheus { query } => query.clone(),
            Provider::Http { pointer: Some(pointer) } => pointer.clone(),
            Provider::Http { pointer: None } => path.split('?').next().unwrap_or("/").to_string(),
        };
        analysis::run(&ctx, &metric, || {
            let seen = get(&scheme, &authority, &path, timeout, BODY_LIMIT);
            match &provider {
                Provider::Http { pointer } => number_in_body(&seen, pointer.as_deref()),
                Provider::Prometheus { .. } => number_from_prometheus(&seen),
            }
        })
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
