//! A plain WASI command step, written with the standard library only: every
//! `WHARF_PARAM_<NAME>` comes back as output `<name>` (lower case), stdout and stderr carry
//! one line each, and `WHARF_PARAM_EXIT` chooses the exit code.

use std::io::Write;

fn main() {
    let mut outputs = String::new();
    for (key, value) in std::env::vars() {
        if let Some(name) = key.strip_prefix("WHARF_PARAM_") {
            outputs.push_str(&format!("{}={}\n", name.to_lowercase().replace('_', "-"), value));
        }
    }
    println!("cmd-step says hello on stdout");
    eprintln!("cmd-step says hello on stderr");
    let path = std::env::var("WHARF_OUTPUT").expect("WHARF_OUTPUT is set");
    let mut file = std::fs::OpenOptions::new()
        .append(true)
        .create(true)
        .open(&path)
        .expect("open WHARF_OUTPUT");
    file.write_all(outputs.as_bytes()).expect("write outputs");
    let code: i32 = std::env::var("WHARF_PARAM_EXIT")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(0);
    std::process::exit(code);
}
