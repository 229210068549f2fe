//! A judge of your own: a step that measures a number and lets this module decide, as
//! `builtin:analysis` does. The metric is measured `count` times, `interval` apart after
//! `initial-delay`; each measurement is `failed` when the `failure` condition holds, else
//! `successful` when `success` holds, else `inconclusive` (as is one that could not be
//! taken). More failures than `failure-limit` fail the analysis at once; else more
//! inconclusive ones than `inconclusive-limit` make it inconclusive; else it is successful.
//! Every measurement is reported (`log.measure`: the live view, the journal, the report),
//! the metric is a JUnit case, and the step fails with kind `gate-failed` unless successful
//! (never with `dry-run`). With `service`, an inconclusive analysis holds that service's
//! upgrade for a person (the run exits 6).
//!
//! ```ignore
//! use wharf_step::{analysis, Context, Outputs, Step, StepError, StepInfo};
//!
//! struct QueueDepth;
//! impl Step for QueueDepth {
//!     fn describe() -> StepInfo {
//!         analysis::judge(StepInfo::new("queue-depth", "Judge a release by its queue's depth"))
//!     }
//!     fn run(ctx: Context) -> Result<Outputs, StepError> {
//!         analysis::run(&ctx, "queue-depth", || read_the_depth())
//!     }
//! }
//! ```

pub use crate::condition::Condition;
use crate::log::{self, Measurement, TestReport, TestStatus, Verdict};
use crate::{CapabilityKind, Context, Outputs, StepError, StepInfo, deploy, error, param};
use std::time::Duration;

/// Measurements one analysis may take.
pub const COUNT_LIMIT: i64 = 10_000;

/// The parameters and outputs of a judge, added to `info`: `success`, `failure`, `count`,
/// `interval`, `initial-delay`, `failure-limit`, `inconclusive-limit`, `dry-run`, `metric`,
/// `service`; outputs `phase`, `measurements`, `failed`, `inconclusive`, `values`.
pub fn judge(info: StepInfo) -> StepInfo {
    info.param(
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
    .param(param::text(
        "metric",
        "The metric's name in the log, the report and JUnit [default: the step's own]",
    ))
    .param(param::text(
        "service",
        "The service whose upgrade an inconclusive analysis holds, as it stands, for a person (`wharf confirm` or `wharf rollback`); empty: inconclusive fails the step like failed",
    ))
    .output("phase", "successful, failed or inconclusive")
    .output("measurements", "Measurements taken")
    .output("failed", "Failed measurements")
    .output("inconclusive", "Inconclusive measurements")
    .output("values", "Every result, comma-separated (`-` for none)")
    .needs(
        CapabilityKind::Deploy,
        "holds the upgrade an inconclusive result cannot decide",
        Some("service"),
    )
}

fn verdict_name(verdict: Verdict) -> &'static str {
    match verdict {
        Verdict::Successful => "successful",
        Verdict::Failed => "failed",
        Verdict::Inconclusive => "inconclusive",
    }
}

/// The analysis a judge's parameters describe, checked before anything is measured.
struct Plan {
    success: Condition,
    failure: Option<Condition>,
    count: i64,
    interval: Duration,
    initial_delay: Duration,
    failure_limit: u64,
    inconclusive_limit: u64,
    dry_run: bool,
    metric: String,
    service: Option<String>,
}

impl Plan {
    fn read(ctx: &Context, metric: &str) -> Result<Plan, StepError> {
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
        Ok(Plan {
            success,
            failure,
            count,
            interval: Duration::from_millis(ctx.duration_ms("interval")?),
            initial_delay: Duration::from_millis(ctx.duration_ms("initial-delay")?),
            failure_limit: limit("failure-limit")?,
            inconclusive_limit: limit("inconclusive-limit")?,
            dry_run: ctx.flag("dry-run")?,
            metric: ctx
                .opt_text("metric")?
                .filter(|m| !m.trim().is_empty())
                .unwrap_or_else(|| metric.to_string()),
            service: ctx.opt_text("service")?.filter(|s| !s.is_empty()),
        })
    }

    fn rule(&self) -> String {
        match &self.failure {
            Some(f) => format!("success: {}, failure: {}", self.success.text(), f.text()),
            None => format!("success: {}", self.success.text()),
        }
    }

    fn verdict(&self, measured: &Result<f64, String>) -> (Verdict, Option<String>) {
        match measured {
            Ok(result)
                if self
                    .failure
                    .as_ref()
                    .map_or(!self.success.holds(*result), |f| f.holds(*result)) =>
            {
                (Verdict::Failed, None)
            }
            Ok(result) if self.success.holds(*result) => (Verdict::Successful, None),
            Ok(_) => (Verdict::Inconclusive, Some("neither condition holds".to_string())),
            Err(why) => (Verdict::Inconclusive, Some(why.clone())),
        }
    }
}

/// Read the judge's parameters, then measure with `measure` (a number, or why there is none)
/// and decide. `metric` names the metric unless the pipeline gives `metric`.
pub fn run(
    ctx: &Context,
    metric: &str,
    mut measure: impl FnMut() -> Result<f64, String>,
) -> Result<Outputs, StepError> {
    let plan = Plan::read(ctx, metric)?;
    let rule = plan.rule();
    let started = std::time::Instant::now();
    std::thread::sleep(plan.initial_delay);
    let (mut failed, mut inconclusive) = (0u64, 0u64);
    let mut values = Vec::new();
    // Each measurement as a line of the JUnit case.
    let mut lines = Vec::new();
    let mut taken = 0;
    for n in 1..=plan.count {
        if n > 1 {
            std::thread::sleep(plan.interval);
        }
        taken = n;
        let measured = measure().and_then(|v| {
            if v.is_nan() {
                Err("the result is NaN".into())
            } else if v.is_infinite() {
                Err(format!("{v} is not a finite number"))
            } else {
                Ok(v)
            }
        });
        values.push(match &measured {
            Ok(result) => result.to_string(),
            Err(_) => "-".into(),
        });
        let (verdict, why) = plan.verdict(&measured);
        match verdict {
            Verdict::Failed => failed += 1,
            Verdict::Inconclusive => inconclusive += 1,
            Verdict::Successful => {}
        }
        let detail = match &why {
            Some(why) => format!("measurement {n}/{}; {why}; {rule}", plan.count),
            None => format!("measurement {n}/{}; {rule}", plan.count),
        };
        log::measure(&Measurement {
            metric: plan.metric.clone(),
            value: measured.ok(),
            verdict,
            dry_run: plan.dry_run,
            detail: detail.clone(),
        });
        lines.push(format!(
            "{}: {} {}",
            values.last().map_or("-", String::as_str),
            verdict_name(verdict),
            detail
        ));
        if failed > plan.failure_limit && !plan.dry_run {
            break;
        }
    }
    let phase = if failed > plan.failure_limit {
        Verdict::Failed
    } else if inconclusive > plan.inconclusive_limit {
        Verdict::Inconclusive
    } else {
        Verdict::Successful
    };
    let summary = format!(
        "{}: {taken} measurement(s), {failed} failed (limit {}), {inconclusive} inconclusive (limit {}); values {}",
        verdict_name(phase),
        plan.failure_limit,
        plan.inconclusive_limit,
        values.join(", ")
    );
    // A case per metric in the run's JUnit report.
    log::report_test(&TestReport {
        suite: "analysis".into(),
        name: plan.metric.clone(),
        classname: None,
        duration_ms: u64::try_from(started.elapsed().as_millis()).unwrap_or(u64::MAX),
        status: match (phase, plan.dry_run) {
            (Verdict::Successful, _) => TestStatus::Passed,
            (_, true) => TestStatus::Skipped,
            (Verdict::Failed, false) => TestStatus::Failed,
            (Verdict::Inconclusive, false) => TestStatus::Errored,
        },
        message: Some(if plan.dry_run && phase != Verdict::Successful {
            format!("dry run, deciding nothing: {summary}")
        } else {
            summary.clone()
        }),
        kind: None,
        details: None,
        stdout: Some(lines.join("\n")),
        stderr: None,
    });
    let outputs = vec![
        ("phase".to_string(), verdict_name(phase).to_string()),
        ("measurements".to_string(), taken.to_string()),
        ("failed".to_string(), failed.to_string()),
        ("inconclusive".to_string(), inconclusive.to_string()),
        ("values".to_string(), values.join(",")),
    ];
    match (phase, plan.dry_run) {
        (Verdict::Successful, _) => {
            log::info(&summary);
            Ok(outputs)
        }
        (_, true) => {
            log::warn(&format!("dry run, deciding nothing: {summary}"));
            Ok(outputs)
        }
        (Verdict::Inconclusive, false) => {
            if let Some(service) = &plan.service
                && let Err(e) = deploy::hold(service, &format!("analysis {summary}"))
            {
                // Nothing to hold (no upgrade under way): inconclusive fails the step.
                log::warn(&format!("{service} is not held: {}", e.message));
            }
            Err(error::gate_failed(format!("analysis {summary}")))
        }
        _ => Err(error::gate_failed(format!("analysis {summary}"))),
    }
}
