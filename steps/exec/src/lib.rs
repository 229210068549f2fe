//! `builtin:exec`: run one program in the workspace (the app's build or test command), with
//! `junit:` report the tests of the tool's JUnit file as this step's, and with `sarif:` the
//! findings of the tool's SARIF log as this step's annotations.

mod junit;
mod sarif;

use wharf_step::process::{self, Command};
use wharf_step::{CapabilityKind, Context, Outputs, Step, StepError, StepInfo, error, log, param};

/// How much of stdout the `stdout` output keeps; the full output is in the step log.
const STDOUT_OUTPUT_LIMIT: usize = 4096;

struct Exec;

impl Step for Exec {
    fn describe() -> StepInfo {
        StepInfo::new("exec", "Run one program in the workspace and fail when it fails")
            .param(param::text("program", "Program to run, found on PATH or relative to the workspace").required())
            .param(param::text_list("args", "Arguments"))
            .param(param::text_map("env", "Environment variables for the program"))
            .param(param::text("cwd", "Working directory, relative to the workspace"))
            .param(param::duration(
                "timeout",
                "Kill the program (and its children) after this long",
            ))
            .param(param::boolean("allow-failure", "Succeed even when the program exits non-zero").default_bool(false))
            .param(param::text(
                "junit",
                "A JUnit XML file the program writes (cargo nextest, pytest --junitxml): its tests join the run's test report",
            ))
            .param(param::text(
                "sarif",
                "A SARIF 2.1.0 log the program writes (ruff, semgrep, bandit, trivy): its findings become this step's annotations",
            ))
            .output("exit-code", "The program's exit code")
            .output("stdout", "The program's standard output, trimmed (first 4 KiB)")
            .needs(CapabilityKind::Process, "runs the program", Some("program"))
            .needs(CapabilityKind::WorkspaceRead, "reads the test tool's JUnit file", Some("junit"))
            .needs(CapabilityKind::WorkspaceRead, "reads the tool's SARIF log", Some("sarif"))
    }

    fn run(ctx: Context) -> Result<Outputs, StepError> {
        let program = ctx.text("program")?;
        let cwd = ctx.opt_text("cwd")?;
        let done = process::run(&Command {
            program: program.clone(),
            args: ctx.list("args")?,
            env: ctx.map("env")?,
            cwd: cwd.clone(),
            timeout_ms: ctx.opt_duration_ms("timeout")?,
        })?;
        let code = done.exit_code;
        // A failing test run still wrote its report: read it either way. A report that
        // cannot be read is an errored test of its own, so the test report says so.
        if let Some(path) = ctx.opt_text("junit")?.filter(|p| !p.trim().is_empty()) {
            match junit::read(&path) {
                Ok(tests) => tests.iter().for_each(log::report_test),
                Err(why) => {
                    let message = format!("the JUnit report `{path}` could not be read: {why}");
                    log::write(log::Level::Error, &message);
                    log::report_test(&log::TestReport {
                        suite: "junit".into(),
                        name: path.clone(),
                        classname: None,
                        duration_ms: 0,
                        status: log::TestStatus::Errored,
                        message: Some(message),
                        kind: Some("unreadable report".into()),
                        details: None,
                        stdout: None,
                        stderr: None,
                    });
                }
            }
        }
        // A linter that found something exits non-zero: its findings are reported first.
        if let Some(path) = ctx.opt_text("sarif")?.filter(|p| !p.trim().is_empty()) {
            let found = sarif::read(&path, cwd.as_deref())
                .map_err(|why| error::permanent(format!("the SARIF log `{path}` could not be read: {why}")))?;
            found.annotations.iter().for_each(log::annotate);
            if found.left_out > 0 {
                log::warn(&format!(
                    "{} more findings in `{path}` were not reported (the first {} were)",
                    found.left_out,
                    found.annotations.len()
                ));
            }
        }
        if code != Some(0) && !ctx.flag("allow-failure")? {
            let how = match code {
                Some(c) => format!("exited with {c}"),
                None => "was killed by a signal".to_string(),
            };
            let tail = last_lines(&done.stderr, 5);
            let mut message = format!("`{program}` {how}");
            if !tail.is_empty() {
                message.push_str(":\n");
                message.push_str(&tail);
            }
            return Err(error::permanent(message));
        }
        let mut stdout = done.stdout.trim().to_string();
        if stdout.len() > STDOUT_OUTPUT_LIMIT {
            let mut cut = STDOUT_OUTPUT_LIMIT;
            while !stdout.is_char_boundary(cut) {
                cut -= 1;
            }
            stdout.truncate(cut);
        }
        Ok(vec![
            ("exit-code".into(), code.map_or("signal".into(), |c| c.to_string())),
            ("stdout".into(), stdout),
        ])
    }
}

/// `text` within `max` bytes, cut at a character and marked `…` when cut.
fn cut(text: &str, max: usize) -> String {
    if text.len() <= max {
        return text.to_string();
    }
    let mut at = max;
    while !text.is_char_boundary(at) {
        at -= 1;
    }
    format!("{}…", &text[..at])
}

fn last_lines(text: &str, n: usize) -> String {
    let lines: Vec<&str> = text.trim_end().lines().collect();
    lines[lines.len().saturating_sub(n)..].join("\n")
}

wharf_step::export!(Exec);
