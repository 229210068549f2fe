//! A plain WASI command that tries to escape: `WHARF_PARAM_ATTACK`, `WHARF_PARAM_TARGET`;
//! the result goes to `WHARF_OUTPUT` as `result=...`.

use std::io::Write;

fn main() {
    let attack = std::env::var("WHARF_PARAM_ATTACK").unwrap_or_default();
    let target = std::env::var("WHARF_PARAM_TARGET").unwrap_or_default();
    let path = std::env::var("WHARF_OUTPUT").expect("WHARF_OUTPUT");
    // `raw-output`: TARGET (with `\n` for line breaks) is the whole output file.
    if attack == "raw-output" {
        std::fs::write(&path, target.replace("\\n", "\n")).expect("write WHARF_OUTPUT");
        return;
    }
    let result = escape_core::attempt(&attack, &target, &mut |line| println!("{line}"));
    println!("{result}");
    let mut out = std::fs::OpenOptions::new()
        .append(true)
        .create(true)
        .open(path)
        .expect("open WHARF_OUTPUT");
    writeln!(out, "result={result}").expect("write WHARF_OUTPUT");
}
