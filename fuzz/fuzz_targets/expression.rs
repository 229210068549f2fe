//! Any text as an `if:` condition and as a `with:` template: parsing returns an expression or
//! an error, evaluation a value or an error; never a panic, and never a stack overflow
//! however deep the nesting or long the chain.
#![no_main]

use libfuzzer_sys::fuzz_target;
use wharf_pipeline::expr::{Reference, Scope, StatusFn, Template, evaluate, parse_condition};

struct Fixed;

impl Scope for Fixed {
    fn lookup(&self, reference: &Reference) -> Result<String, String> {
        match reference {
            Reference::Var(name) if name.len() % 2 == 0 => Ok(format!("value of {name}")),
            Reference::StepOutcome { .. } => Ok("failure".into()),
            Reference::RunId => Ok("run".into()),
            other => Err(format!("no {other}")),
        }
    }

    fn status(&self, f: StatusFn) -> bool {
        matches!(f, StatusFn::Failure | StatusFn::Always)
    }
}

fuzz_target!(|text: &str| {
    if let Ok(expr) = parse_condition(text) {
        let _ = evaluate(&expr, &Fixed);
        let _ = expr.references();
        let _ = expr.uses_status();
    }
    if let Ok(template) = Template::parse(text) {
        let _ = template.render(&Fixed);
    }
});
