//! A pipeline step written as a plain WASI command: any language that targets wasip2 can do
//! the same. Parameters arrive as `WHARF_PARAM_<NAME>`; outputs are `key=value` lines
//! appended to the file named by `WHARF_OUTPUT`; exit code 0 is success.

use std::io::Write;

fn main() {
    let name = std::env::var("WHARF_PARAM_NAME").unwrap_or_else(|_| "world".into());
    let version = std::env::var("WHARF_PARAM_VERSION").unwrap_or_default();
    let greeting = format!("Hello, {name}! This is build {version}.");
    println!("{greeting}");

    let Ok(path) = std::env::var("WHARF_OUTPUT") else {
        eprintln!("WHARF_OUTPUT is not set: run me with `wharf run`");
        std::process::exit(2);
    };
    let mut out = std::fs::OpenOptions::new()
        .append(true)
        .create(true)
        .open(path)
        .expect("open WHARF_OUTPUT");
    writeln!(out, "greeting={greeting}").expect("write WHARF_OUTPUT");
}
