//! A judge of an organisation's own: the SDK's analysis decides, this step only measures.
//! Its measurement is the next of `readings` (a number, or anything else for none), as a
//! real judge would read a queue's depth or a test's score.

use std::cell::Cell;
use wharf_step::{Context, Outputs, Step, StepError, StepInfo, analysis, param};

struct Judge;

impl Step for Judge {
    fn describe() -> StepInfo {
        analysis::judge(
            StepInfo::new("judge", "Judges a release by readings it is given")
                .param(param::text_list("readings", "The measurements, in turn").required()),
        )
    }

    fn run(ctx: Context) -> Result<Outputs, StepError> {
        let readings = ctx.list("readings")?;
        let next = Cell::new(0);
        analysis::run(&ctx, "readings", || {
            let reading = readings.get(next.get()).cloned().unwrap_or_default();
            next.set(next.get() + 1);
            reading
                .trim()
                .parse::<f64>()
                .map_err(|_| format!("no reading in `{reading}`"))
        })
    }
}

wharf_step::export!(Judge);
