//! {{name}}: a typed wharf step. `describe` tells wharf its parameters and outputs, so a
//! pipeline that misuses it is refused before anything runs; `run` does the work.

use wharf_step::{Context, Outputs, Step, StepError, StepInfo, error, param};

struct Greet;

impl Step for Greet {
    fn describe() -> StepInfo {
        StepInfo::new("{{name}}", "Greets someone")
            .param(param::text("name", "Who to greet").required())
            .output("greeting", "What was said")
    }

    fn run(ctx: Context) -> Result<Outputs, StepError> {
        let name = ctx.text("name")?;
        if name.trim().is_empty() {
            return Err(error::invalid_input("`name` is empty"));
        }
        let greeting = format!("hello, {name}");
        wharf_step::log::info(&greeting);
        Ok(vec![("greeting".into(), greeting)])
    }
}

wharf_step::export!(Greet);
