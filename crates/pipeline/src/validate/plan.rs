//! A canary plan found before a run: the steps that give one service's new release a share
//! of its traffic (a built-in step's `traffic` parameter, as `builtin:upgrade` takes) only go
//! forward in the order they run, and the last of them gives it all of the traffic (which
//! ends that plan; a later share below 100 begins another). During
//! the run such a plan would be refused at the step that goes back, or rolled back at the
//! end; here it is refused before anything changes.

use super::races::{Known, known_part, reach_of};
use super::{Diagnostic, LoadProblem, StepShape};
use crate::diagnostic::Span;
use crate::model::{Pipeline, StepDecl};
use crate::yaml::Yaml;
use std::collections::BTreeMap;

/// The parameter of a built-in deploying step that shares a service's traffic.
const TRAFFIC: &str = "traffic";

/// One step of a plan: the step, the share it gives, where that is written.
struct Shift<'a> {
    step: &'a StepDecl,
    percent: i64,
    span: Span,
}

pub(super) fn check(
    pipeline: &Pipeline,
    shapes: &[Result<StepShape, LoadProblem>],
    vars: &BTreeMap<&str, &str>,
    errors: &mut Vec<Diagnostic>,
) {
    let mut plans: BTreeMap<String, Vec<Shift<'_>>> = BTreeMap::new();
    for (step, shape) in pipeline.steps.iter().zip(shapes) {
        let Ok(StepShape::Typed(info)) = shape else { continue };
        if !step.uses.starts_with("builtin:") || !info.params.iter().any(|p| p.name == TRAFFIC) {
            continue;
        }
        // The service, where it is known before the run.
        let Some(Some(service)) = reach_of(step, Some(info), vars).deploys.into_iter().next() else {
            continue;
        };
        let (percent, span) = match step.with.iter().find(|p| p.name == TRAFFIC) {
            None => (100, step.id_span),
            Some(param) => {
                let Yaml::Scalar(scalar) = &param.value else { continue };
                let known = known_part(scalar, &Known { vars, step });
                // Known only when the run gets there: the run checks it.
                let Ok(percent) = known.trim().parse::<i64>() else {
                    continue;
                };
                (percent, param.name_span)
            }
        };
        if !(1..=100).contains(&percent) {
            errors.push(
                Diagnostic::new(span, format!("`traffic: {percent}` is not a share of the traffic"))
                    .help("a percent from 1 to 100: below 100 a canary step, 100 the whole upgrade"),
            );
            continue;
        }
        plans.entry(service).or_default().push(Shift { step, percent, span });
    }
    for (service, plan) in &plans {
        // The step of the plan under way, if any: a step of 100 ends a plan, and a later
        // share below 100 begins another.
        let mut open: Option<&Shift<'_>> = None;
        for shift in plan {
            if let Some(before) = open.filter(|before| shift.percent < before.percent) {
                errors.push(
                    Diagnostic::new(
                        shift.span,
                        format!(
                            "step `{}` gives `{service}`'s new release {}% of the traffic after `{}` gave it {}%: a canary plan only goes forward",
                            shift.step.id, shift.percent, before.step.id, before.percent
                        ),
                    )
                    .help("order the shares as they grow (10, 50, 100); to start again, roll back"),
                );
            }
            open = (shift.percent < 100).then_some(shift);
        }
        if let Some(last) = open {
            errors.push(
                Diagnostic::new(
                    last.span,
                    format!(
                        "the canary plan of `{service}` ends at {}% (step `{}`): no step gives the new release all the traffic, so the run's end would roll it back",
                        last.percent, last.step.id
                    ),
                )
                .help("end the plan with a step of `traffic: 100`"),
            );
        }
    }
}
