//! A typed test step. `mode` picks what it does, so the tests can drive every outcome the
//! host must handle from one component.

use wharf_step::{Context, ErrorKind, Outputs, Step, StepError, StepInfo, error, log, param};

struct Probe;

impl Step for Probe {
    fn describe() -> StepInfo {
        StepInfo::new("probe", "Test step: echo a value, fail, or trap on request")
            .version("0.1.0")
            .param(
                param::text("mode", "ok | fail | transient | trap | panic | sleep | fill | secret").default_text("ok"),
            )
            .param(param::text("echo", "Returned as the `echo` output").default_text(""))
            .param(
                param::integer("succeed-on-attempt", "With mode transient: the attempt that succeeds").default_int(0),
            )
            .param(param::integer("count", "An integer, returned as `count`").default_int(0))
            .param(param::duration("wait", "A duration, returned in ms as `wait-ms`").default_ms(0))
            .param(param::text_list("items", "Joined with commas as `items`"))
            .output("echo", "the echo parameter")
            .output("attempt", "which attempt this was")
            .output("count", "the count parameter")
            .output("wait-ms", "the wait parameter in milliseconds")
            .output("items", "the items parameter, comma separated")
    }

    fn run(ctx: Context) -> Result<Outputs, StepError> {
        let mut echo = ctx.text("echo")?;
        log::info(&format!("probe {} attempt {} echo={echo}", ctx.step_id, ctx.attempt));
        match ctx.text("mode")?.as_str() {
            "ok" => {}
            "fail" => return Err(error::permanent(format!("failed on purpose: {echo}"))),
            "gate" => return Err(error::new(ErrorKind::GateFailed, "gate failed on purpose")),
            "transient" => {
                if i64::from(ctx.attempt) < ctx.int("succeed-on-attempt")? {
                    return Err(error::transient(format!(
                        "transient failure on attempt {}",
                        ctx.attempt
                    )));
                }
            }
            "trap" => core::arch::wasm32::unreachable(),
            // Waits as a build or a gate waits: on the host, letting other steps go on.
            "sleep" => std::thread::sleep(std::time::Duration::from_millis(ctx.duration_ms("wait")?)),
            // What a CI shows: progress, and an annotation whose text needs escaping.
            "progress" => {
                let total = ctx.int("count")?.max(1) as u64;
                for done in 0..=total {
                    log::progress("items", done, Some(total));
                    std::thread::sleep(std::time::Duration::from_millis(ctx.duration_ms("wait")?));
                }
            }
            "annotate" => log::annotate(&log::Annotation {
                level: log::Level::Warn,
                title: Some("50% of a, b: c".into()),
                message: format!("first line: 100%\nsecond, line {echo}"),
                file: Some("src/main.rs".into()),
                line: Some(7),
                column: Some(3),
            }),
            // A judge's measurement: `count` as the value of metric `echo`.
            "measure" => log::measure(&log::Measurement {
                metric: echo.clone(),
                value: Some(ctx.int("count")? as f64),
                verdict: log::Verdict::Successful,
                dry_run: false,
                detail: "measured on purpose".into(),
            }),
            "panic" => panic!("probe panicked on purpose"),
            // The length of secret `echo` (its value never leaves the step).
            "secret" => {
                let secret = wharf_step::secrets::get(&echo)?;
                echo = format!("{} characters", secret.reveal().len());
            }
            // An `echo` output of `count` bytes.
            "fill" => echo = "x".repeat(ctx.int("count")?.max(0) as usize),
            other => return Err(error::invalid_input(format!("unknown mode `{other}`"))),
        }
        Ok(vec![
            ("echo".into(), echo),
            ("attempt".into(), ctx.attempt.to_string()),
            ("count".into(), ctx.int("count")?.to_string()),
            ("wait-ms".into(), ctx.duration_ms("wait")?.to_string()),
            ("items".into(), ctx.list("items")?.join(",")),
        ])
    }
}

wharf_step::export!(Probe);
