//! `builtin:http-gate`: the article's `curl .../api/v1/status | grep OK`, with patience: GET a
//! URL until it answers the expected status and body, retrying with backoff within an
//! overall deadline. Fails with kind `gate-failed` and what it last saw. Speaks
//! `wasi:http`, so the host decides which addresses it may reach.

use std::time::{Duration, Instant};
use step_http::{Observation, get, split_url};
use wharf_step::{CapabilityKind, Context, Outputs, Step, StepError, StepInfo, error, log, param};

struct Gate;

const BODY_LIMIT: usize = 64 * 1024;

impl Step for Gate {
    fn describe() -> StepInfo {
        StepInfo::new("http-gate", "Pass when a URL answers the expected status and body")
            .param(param::text("url", "http:// or https:// URL to GET").required())
            .param(param::integer("expect-status", "Expected HTTP status").default_int(200))
            .param(param::text("body-contains", "Text the body must contain"))
            .param(param::text(
                "json-pointer",
                "A JSON pointer into the body, e.g. /status",
            ))
            .param(param::text(
                "json-equals",
                "What the value at `json-pointer` must equal (as text)",
            ))
            .param(param::duration("deadline", "Give up after this long").default_ms(30_000))
            .param(
                param::duration("interval", "First wait between attempts; doubles up to `max-interval`")
                    .default_ms(500),
            )
            .param(param::duration("max-interval", "Longest wait between attempts").default_ms(5_000))
            .param(param::duration("request-timeout", "Timeout of one request").default_ms(5_000))
            .output("status", "The last status seen")
            .output("body", "The last body seen (first 1 KiB)")
            .output("attempts", "Requests made")
            .output("elapsed-ms", "Time until the gate passed")
            .needs(CapabilityKind::Http, "GETs the URL", Some("url"))
    }

    fn run(ctx: Context) -> Result<Outputs, StepError> {
        let url = ctx.text("url")?;
        let (scheme, authority, path) = split_url(&url).map_err(error::invalid_input)?;
        let expect = ctx.int("expect-status")?;
        let contains = ctx.opt_text("body-contains")?.filter(|s| !s.is_empty());
        let pointer = ctx.opt_text("json-pointer")?.filter(|s| !s.is_empty());
        let equals = ctx.opt_text("json-equals")?;
        if pointer.is_some() != equals.is_some() {
            return Err(error::invalid_input("`json-pointer` and `json-equals` go together"));
        }
        let deadline = Duration::from_millis(ctx.duration_ms("deadline")?);
        let max_interval = Duration::from_millis(ctx.duration_ms("max-interval")?);
        let mut interval = Duration::from_millis(ctx.duration_ms("interval")?);
        let timeout = Duration::from_millis(ctx.duration_ms("request-timeout")?);

        let started = Instant::now();
        let mut attempts = 0u32;
        loop {
            attempts += 1;
            let seen = get(&scheme, &authority, &path, timeout, BODY_LIMIT);
            let verdict = judge(
                &seen,
                expect,
                contains.as_deref(),
                pointer.as_deref(),
                equals.as_deref(),
            );
            let short: String = seen.body.chars().take(1024).collect();
            match &verdict {
                None => {
                    log::info(&format!("{url}: passed on attempt {attempts}"));
                    return Ok(vec![
                        ("status".into(), seen.status.map(|s| s.to_string()).unwrap_or_default()),
                        ("body".into(), short),
                        ("attempts".into(), attempts.to_string()),
                        ("elapsed-ms".into(), started.elapsed().as_millis().to_string()),
                    ]);
                }
                Some(why) => log::info(&format!("{url}: attempt {attempts}: {why}")),
            }
            let remaining = deadline.saturating_sub(started.elapsed());
            if remaining.is_zero() {
                return Err(error::gate_failed(format!(
                    "{url} did not pass within {}s after {attempts} attempt(s): {}",
                    deadline.as_secs_f32(),
                    verdict.unwrap_or_default()
                )));
            }
            std::thread::sleep(interval.min(remaining));
            interval = (interval * 2).min(max_interval);
        }
    }
}

/// Why the observation fails the gate, or None when it passes.
fn judge(
    seen: &Observation,
    expect: i64,
    contains: Option<&str>,
    pointer: Option<&str>,
    equals: Option<&str>,
) -> Option<String> {
    if let Some(problem) = &seen.problem {
        return Some(problem.clone());
    }
    let status = seen.status.map(i64::from).unwrap_or(0);
    let first_line = seen
        .body
        .lines()
        .next()
        .unwrap_or("")
        .chars()
        .take(80)
        .collect::<String>();
    if status != expect {
        return Some(format!("status {status}, expected {expect} (body: {first_line:?})"));
    }
    if let Some(text) = contains
        && !seen.body.contains(text)
    {
        return Some(format!("body does not contain {text:?} (body: {first_line:?})"));
    }
    if let (Some(pointer), Some(want)) = (pointer, equals) {
        let json: serde_json::Value = match serde_json::from_str(&seen.body) {
            Ok(j) => j,
            Err(e) => return Some(format!("body is not JSON: {e}")),
        };
        let got = match json.pointer(pointer) {
            None => return Some(format!("no value at {pointer}")),
            Some(serde_json::Value::String(s)) => s.clone(),
            Some(other) => other.to_string(),
        };
        if got != want {
            return Some(format!("{pointer} is {got:?}, expected {want:?}"));
        }
    }
    None
}

wharf_step::export!(Gate);
