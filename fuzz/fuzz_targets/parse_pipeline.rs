//! Any text as a pipeline file: parsing returns a model or diagnostics, never panics, and
//! every diagnostic renders.
#![no_main]

use libfuzzer_sys::fuzz_target;
use std::path::Path;
use wharf_pipeline::Pipeline;

fuzz_target!(|text: &str| {
    if let Err(diagnostics) = Pipeline::parse(Path::new("fuzz.yml"), text) {
        let _ = diagnostics.to_string();
    }
});
