//! A "new build" of the http-gate step whose behaviour changed: it reads the clock like the
//! original, then GETs `url?probe=2`. Replaying a recorded gate with it must stop at that
//! request.

use wharf_step::{Context, Outputs, Step, StepError, StepInfo, param};

struct GateV2;

impl Step for GateV2 {
    fn describe() -> StepInfo {
        StepInfo::new("gate-v2", "Test step: a changed gate").param(param::text("url", "URL").required())
    }

    fn run(ctx: Context) -> Result<Outputs, StepError> {
        let started = std::time::Instant::now();
        let seen = escape_core::attempt("http", &format!("{}?probe=2", ctx.text("url")?), &mut |_| {});
        Ok(vec![("seen".into(), format!("{seen} after {:?}", started.elapsed()))])
    }
}

wharf_step::export!(GateV2);
