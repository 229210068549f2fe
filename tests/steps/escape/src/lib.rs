//! A typed step that tries to escape: the attacks of `escape-core`, plus what only a typed
//! step can try (run programs, leak secrets). Reports what happened as output `result`.

use wharf_step::process::{self, Command};
use wharf_step::{Context, Outputs, Step, StepError, StepInfo, deploy, error, log, param, secrets};

struct Escape;

impl Step for Escape {
    fn describe() -> StepInfo {
        StepInfo::new("escape", "Test step: try to get out of the sandbox")
            .version("0.1.0")
            .param(param::text("attack", "What to try").required())
            .param(param::text("target", "A path, address, URL, program or secret name").default_text(""))
            .output("result", "blocked: ... or ESCAPED: ...")
            .output("leak", "A secret, for the output-masking test")
    }

    fn run(ctx: Context) -> Result<Outputs, StepError> {
        let attack = ctx.text("attack")?;
        let target = ctx.text("target")?;
        let result = match attack.as_str() {
            "process" => match process::run(&Command {
                program: target.clone(),
                args: vec!["-c".into(), "echo escaped".into()],
                env: Vec::new(),
                cwd: None,
                timeout_ms: None,
            }) {
                Ok(done) => format!("ESCAPED: ran {target}: {}", done.stdout.trim()),
                Err(e) => format!("blocked: {}", e.message),
            },
            // `SCRIPT`: run `sh -c SCRIPT` (granted `process: [sh]`); what it printed.
            "shell" => match process::run(&Command {
                program: "sh".into(),
                args: vec!["-c".into(), target.clone()],
                env: Vec::new(),
                cwd: None,
                timeout_ms: None,
            }) {
                Ok(done) => format!("ran: {}", done.stdout.trim()),
                Err(e) => format!("blocked: {}", e.message),
            },
            // `SERVICE`: ask the deploy interface about a service.
            "deploy" => match deploy::status(&target) {
                Ok(status) => format!("ESCAPED: status of {target}: {status:?}"),
                Err(e) => format!("blocked: {}", e.message),
            },
            "secret-log" | "secret-output" | "secret-error" | "secret-key" => {
                let value = match secrets::get(&target) {
                    Ok(s) => s.reveal(),
                    Err(e) => return Ok(vec![("result".into(), format!("blocked: {}", e.message))]),
                };
                let b64 = base64(&value);
                let url: String = value
                    .bytes()
                    .map(|b| {
                        if b.is_ascii_alphanumeric() {
                            (b as char).to_string()
                        } else {
                            format!("%{b:02X}")
                        }
                    })
                    .collect();
                match attack.as_str() {
                    "secret-log" => {
                        log::info(&format!("raw {value} base64 {b64} url {url}"));
                        log::annotate(&log::Annotation {
                            level: log::Level::Warn,
                            title: Some(format!("title {value}")),
                            message: format!("annotation {value}"),
                            file: None,
                            line: None,
                            column: None,
                        });
                        "logged".into()
                    }
                    "secret-key" => {
                        return Ok(vec![("result".into(), "returned".into()), (value, "keyed".into())]);
                    }
                    "secret-output" => {
                        return Ok(vec![
                            ("result".into(), "returned".into()),
                            ("leak".into(), format!("{value}|{b64}|{url}")),
                        ]);
                    }
                    _ => return Err(error::permanent(format!("failing with {value} inside"))),
                }
            }
            _ => escape_core::attempt(&attack, &target, &mut |line| log::info(line)),
        };
        log::info(&result);
        Ok(vec![("result".into(), result)])
    }
}

fn base64(input: &str) -> String {
    const T: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let bytes = input.as_bytes();
    let mut out = String::new();
    for chunk in bytes.chunks(3) {
        let b = [chunk[0], *chunk.get(1).unwrap_or(&0), *chunk.get(2).unwrap_or(&0)];
        let n = (u32::from(b[0]) << 16) | (u32::from(b[1]) << 8) | u32::from(b[2]);
        for i in 0..4 {
            if i <= chunk.len() {
                out.push(T[(n >> (18 - 6 * i) & 63) as usize] as char);
            } else {
                out.push('=');
            }
        }
    }
    out
}

wharf_step::export!(Escape);
