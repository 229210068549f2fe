//! A typed step that imports `acme:vault/keys`, which no wharf host provides: loading it
//! must name the missing import.

mod vault {
    wit_bindgen::generate!({
        inline: "
            package acme:vault;
            interface keys { fetch: func(name: string) -> string; }
            world needs-vault { import keys; }
        ",
        world: "needs-vault",
    });
}

use wharf_step::{Context, Outputs, Step, StepError, StepInfo};

struct Alien;

impl Step for Alien {
    fn describe() -> StepInfo {
        StepInfo::new("alien", "Test step: imports acme:vault/keys")
    }

    fn run(_ctx: Context) -> Result<Outputs, StepError> {
        Ok(vec![("key".into(), vault::acme::vault::keys::fetch("db"))])
    }
}

wharf_step::export!(Alien);
