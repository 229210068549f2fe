//! `wharf report RUN`: a recorded run as one self-contained HTML file (no script, no network,
//! no fonts from elsewhere): a timeline of the steps as bars on a time axis with their host
//! calls as ticks, its measurements as dots and the deploy transitions marked, a canary's
//! share of traffic over time, the measurements, then each step's grants, parameters,
//! outputs and log, and the deploy decision. Everything from the run folder is escaped: a
//! run folder may come from anywhere.

use super::outcome::{CommandResult, Exit, Stop};
use crate::journal::Entry;
use crate::journal::reader::Journal;
use clap::Args;
use std::fmt::Write as _;
use std::path::PathBuf;

/// Host-call ticks drawn per step attempt; past it the bar says how many more there were.
const MAX_TICKS: usize = 2000;
/// Log lines shown per step attempt (the last ones); `wharf log RUN --step ID` has them all.
const MAX_LOG_LINES: usize = 2000;
/// Bytes of a log line shown; the rest is counted.
const MAX_LINE_BYTES: usize = 4096;

/// The start of a long line, and how much more there is.
fn cut(line: &str) -> std::borrow::Cow<'_, str> {
    if line.len() <= MAX_LINE_BYTES {
        return std::borrow::Cow::Borrowed(line);
    }
    let mut end = MAX_LINE_BYTES;
    while !line.is_char_boundary(end) {
        end -= 1;
    }
    std::borrow::Cow::Owned(format!("{}… ({} bytes more)", &line[..end], line.len() - end))
}

#[derive(Args)]
pub struct ReportArgs {
    /// A run id (from `wharf runs`) or the path of a run folder
    run: String,
    /// Where to write the report [default: report-RUN.html in the current directory]
    #[arg(short, long, value_name = "FILE.html")]
    output: Option<PathBuf>,
    #[arg(long, value_name = "DIR", default_value = ".")]
    workspace: PathBuf,
}

/// One attempt of a step, gathered from the journal.
#[derive(Default)]
struct Attempt {
    step: String,
    uses: String,
    attempt: u32,
    start_ms: u64,
    end_ms: Option<u64>,
    outcome: Option<String>,
    detail: Option<String>,
    params: Option<serde_json::Value>,
    grants: Vec<String>,
    outputs: Vec<(String, String)>,
    calls: Vec<(u64, String)>,
    more_calls: usize,
    log: std::collections::VecDeque<String>,
    log_total: usize,
    measurements: Vec<Measured>,
}

/// One measurement a step took, and when.
struct Measured {
    at: u64,
    m: crate::journal::Measurement,
}

impl Measured {
    /// The verdict as a CSS class: one of three, whatever the run folder says.
    fn class(&self) -> &'static str {
        match self.m.verdict.as_str() {
            "successful" => "successful",
            "failed" => "failed",
            _ => "inconclusive",
        }
    }
}

/// Measurements drawn per step attempt, like ticks.
const MAX_MEASUREMENTS: usize = 2000;
/// Changes of a canary's traffic kept for the chart.
const MAX_SHIFTS: usize = 10_000;

pub(super) fn report(args: ReportArgs) -> CommandResult {
    let dir = crate::journal::find_run(&args.workspace, &args.run).map_err(Stop::invalid)?;
    let journal = Journal::read(&dir).map_err(Stop::invalid)?;
    let html = render(&journal);
    let path = args
        .output
        .unwrap_or_else(|| PathBuf::from(format!("report-{}.html", file_safe(&journal.run_id()))));
    std::fs::write(&path, html)
        .map_err(|e| Stop::failed(format!("cannot write the report {}: {e}", path.display())))?;
    outln!("wrote {}", path.display());
    Ok(Exit::Success)
}

fn file_safe(id: &str) -> String {
    id.chars()
        .map(|c| if c.is_ascii_alphanumeric() || c == '-' { c } else { '_' })
        .collect()
}

fn render(journal: &Journal) -> String {
    let mut attempts: Vec<Attempt> = Vec::new();
    let mut notices: Vec<(u64, String)> = Vec::new();
    let (mut pipeline, mut vars, mut started, mut run_id) =
        (String::new(), Vec::new(), String::new(), journal.run_id());
    let mut unconfined = false;
    let mut skipped: Vec<(u64, String, Option<String>)> = Vec::new();
    // (at, service, version, percent)
    let mut traffic: Vec<(u64, String, String, u8)> = Vec::new();
    let open = |attempts: &[Attempt], step: &str| -> Option<usize> { attempts.iter().rposition(|a| a.step == step) };
    for record in &journal.records {
        let at = record.at_ms;
        match &record.entry {
            Entry::RunStarted {
                run_id: id,
                pipeline: p,
                vars: v,
                started: s,
                sandbox,
                ..
            } => {
                unconfined = sandbox.as_deref() == Some("off");
                run_id = id.clone();
                pipeline = p.clone();
                vars = v.iter().map(|(k, v)| (k.clone(), v.clone())).collect();
                started = s.clone();
            }
            Entry::StepStarted {
                step,
                uses,
                attempt,
                params,
                grants,
                ..
            } => attempts.push(Attempt {
                step: step.clone(),
                uses: uses.clone(),
                attempt: *attempt,
                start_ms: at,
                params: Some(params.clone()),
                grants: grants.clone(),
                ..Attempt::default()
            }),
            Entry::Call {
                step,
                interface,
                function,
                ..
            } => {
                if let Some(i) = open(&attempts, step) {
                    let a = &mut attempts[i];
                    if a.calls.len() < MAX_TICKS {
                        a.calls.push((at, format!("{interface}.{function}")));
                    } else {
                        a.more_calls += 1;
                    }
                }
            }
            Entry::Log {
                step,
                stream,
                level,
                message,
            } => {
                if let Some(i) = open(&attempts, step) {
                    let a = &mut attempts[i];
                    for line in message.split('\n') {
                        let tag = if stream == "log" && level == "info" {
                            String::new()
                        } else {
                            format!("{stream}/{level} ")
                        };
                        if a.log.len() == MAX_LOG_LINES {
                            a.log.pop_front();
                        }
                        a.log.push_back(format!("{tag}{}", cut(line)));
                        a.log_total += 1;
                    }
                }
            }
            Entry::StepFinished {
                step,
                outcome,
                detail,
                outputs,
                ..
            } => match open(&attempts, step) {
                Some(i) if attempts[i].end_ms.is_none() => {
                    let a = &mut attempts[i];
                    a.end_ms = Some(at);
                    a.outcome = Some(outcome.clone());
                    a.detail = detail.clone();
                    a.outputs = outputs.clone();
                }
                _ => skipped.push((at, step.clone(), detail.clone())),
            },
            Entry::Notice { message } => notices.push((at, message.clone())),
            Entry::Measurement { step, measurement } => {
                if let Some(i) = open(&attempts, step)
                    && attempts[i].measurements.len() < MAX_MEASUREMENTS
                {
                    attempts[i].measurements.push(Measured {
                        at,
                        m: measurement.clone(),
                    });
                }
            }
            Entry::Traffic {
                service,
                version,
                percent,
            } if traffic.len() < MAX_SHIFTS => {
                traffic.push((at, service.clone(), version.clone(), (*percent).min(100)))
            }
            _ => {}
        }
    }
    let end_ms = journal
        .finished()
        .map(|(_, _, millis)| millis)
        .into_iter()
        .chain(journal.records.last().map(|r| r.at_ms))
        .max()
        .unwrap_or(0)
        .max(1);

    let mut h = String::with_capacity(64 * 1024);
    let title = format!("wharf run {} · {}", esc(&pipeline), esc(&run_id));
    let _ = write!(
        h,
        "<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">\
         <meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">\
         <title>{title}</title><style>{STYLE}</style></head><body>\n<h1>{title}</h1>\n"
    );
    let (outcome, exit) = match journal.finished() {
        Some((outcome, code, _)) => (outcome.to_string(), format!("exit code {code}")),
        None if journal.truncated => ("cut off".into(), "the run was killed".into()),
        None => ("unfinished".into(), "no end recorded".into()),
    };
    let _ = writeln!(
        h,
        "<p class=\"meta\"><span class=\"outcome {cls}\" id=\"run-outcome\">{}</span> · {} · started {} · {}</p>",
        esc(&outcome),
        esc(&exit),
        esc(&started),
        crate::events::human_duration(std::time::Duration::from_millis(end_ms)),
        cls = class_of(&outcome)
    );
    if unconfined {
        h.push_str("<p class=\"meta\" id=\"sandbox-off\">sandbox off: this run's programs were not confined (<code>--sandbox off</code>)</p>");
    }
    if !vars.is_empty() {
        h.push_str("<table class=\"kv\"><caption>vars</caption>");
        for (k, v) in &vars {
            let _ = write!(h, "<tr><th>{}</th><td>{}</td></tr>", esc(k), esc(v));
        }
        h.push_str("</table>\n");
    }

    timeline(&mut h, &attempts, &skipped, &notices, end_ms);
    traffic_chart(&mut h, &traffic, end_ms);
    measurements(&mut h, &attempts);

    h.push_str("<h2>Deploy</h2>\n");
    if notices.is_empty() {
        h.push_str("<p id=\"deploy\">nothing was deployed or decided</p>\n");
    } else {
        h.push_str("<ul id=\"deploy\">");
        for (at, message) in &notices {
            let _ = write!(
                h,
                "<li><span class=\"at\">{}</span> {}</li>",
                seconds(*at),
                esc(message)
            );
        }
        h.push_str("</ul>\n");
    }

    h.push_str("<h2>Steps</h2>\n");
    for a in &attempts {
        let outcome = a.outcome.as_deref().unwrap_or("unfinished");
        let _ = write!(
            h,
            "<section class=\"step\" id=\"step-{}-{}\" data-step=\"{}\"><h3><span class=\"outcome {}\">{}</span> {} <small>{} · attempt {} · {}</small></h3>",
            attr(&a.step),
            a.attempt,
            attr(&a.step),
            class_of(outcome),
            esc(outcome),
            esc(&a.step),
            esc(&a.uses),
            a.attempt,
            a.end_ms
                .map(|e| crate::events::human_duration(std::time::Duration::from_millis(e.saturating_sub(a.start_ms))))
                .unwrap_or_else(|| "-".into())
        );
        if let Some(detail) = &a.detail {
            let _ = write!(h, "<pre class=\"detail\">{}</pre>", esc(detail));
        }
        h.push_str("<table class=\"kv\"><caption>grants</caption>");
        if a.grants.is_empty() {
            h.push_str("<tr><td>none</td></tr>");
        }
        for g in &a.grants {
            let _ = write!(h, "<tr><td>{}</td></tr>", esc(g));
        }
        h.push_str("</table>");
        if let Some(params) = &a.params {
            let text = serde_json::to_string_pretty(params).unwrap_or_default();
            let _ = write!(h, "<h4>parameters</h4><pre>{}</pre>", esc(&text));
        }
        if !a.outputs.is_empty() {
            h.push_str("<table class=\"kv\"><caption>outputs</caption>");
            for (k, v) in &a.outputs {
                let _ = write!(h, "<tr><th>{}</th><td>{}</td></tr>", esc(k), esc(v));
            }
            h.push_str("</table>");
        }
        let _ = write!(
            h,
            "<h4>log{}</h4><pre class=\"log\">",
            if a.log_total > a.log.len() {
                format!(" (last {} of {} lines)", a.log.len(), a.log_total)
            } else {
                String::new()
            }
        );
        for line in &a.log {
            h.push_str(&esc(line));
            h.push('\n');
        }
        h.push_str("</pre></section>\n");
    }
    for (_, step, detail) in &skipped {
        let _ = writeln!(
            h,
            "<section class=\"step skipped\" id=\"step-{}-0\" data-step=\"{}\"><h3><span class=\"outcome skipped\">skipped</span> {}</h3><p>{}</p></section>",
            attr(step),
            attr(step),
            esc(step),
            esc(detail.as_deref().unwrap_or(""))
        );
    }
    h.push_str("</body></html>\n");
    h
}

/// The timeline: one row per step attempt, a bar from its start to its end, a tick per host
/// call, a dashed line per deploy transition or notice.
fn timeline(
    h: &mut String,
    attempts: &[Attempt],
    skipped: &[(u64, String, Option<String>)],
    notices: &[(u64, String)],
    end_ms: u64,
) {
    const LEFT: f64 = 160.0;
    const WIDTH: f64 = 800.0;
    const ROW: f64 = 26.0;
    let rows = attempts.len() + skipped.len();
    let height = 40.0 + ROW * rows as f64 + 10.0;
    let x = |ms: u64| LEFT + WIDTH * ms as f64 / end_ms as f64;
    let _ = write!(
        h,
        "<h2>Timeline</h2>\n<svg id=\"timeline\" xmlns=\"http://www.w3.org/2000/svg\" viewBox=\"0 0 {} {height}\" width=\"100%\">",
        LEFT + WIDTH + 50.0
    );
    // Axis: five marks.
    for i in 0..=4u64 {
        let ms = end_ms * i / 4;
        let _ = write!(
            h,
            "<line class=\"grid\" x1=\"{0:.1}\" x2=\"{0:.1}\" y1=\"20\" y2=\"{1:.1}\"/><text class=\"axis\" x=\"{0:.1}\" y=\"14\">{2}</text>",
            x(ms),
            height - 10.0,
            seconds(ms)
        );
    }
    for (row, a) in attempts.iter().enumerate() {
        let y = 30.0 + ROW * row as f64;
        let end = a.end_ms.unwrap_or(end_ms);
        let outcome = a.outcome.as_deref().unwrap_or("unfinished");
        let label = if a.attempt > 1 {
            format!("{} (#{})", a.step, a.attempt)
        } else {
            a.step.clone()
        };
        let _ = write!(
            h,
            "<g class=\"row\" data-step=\"{}\"><text class=\"label\" x=\"{:.1}\" y=\"{:.1}\">{}</text>\
             <rect class=\"bar {}\" x=\"{:.1}\" y=\"{y:.1}\" width=\"{:.1}\" height=\"16\"><title>{} · {} · {}</title></rect>",
            attr(&a.step),
            LEFT - 8.0,
            y + 12.0,
            esc(&label),
            class_of(outcome),
            x(a.start_ms),
            (x(end) - x(a.start_ms)).max(2.0),
            esc(&a.step),
            esc(outcome),
            seconds(end.saturating_sub(a.start_ms))
        );
        for (at, call) in &a.calls {
            let _ = write!(
                h,
                "<line class=\"tick\" x1=\"{0:.1}\" x2=\"{0:.1}\" y1=\"{1:.1}\" y2=\"{2:.1}\"><title>{3} at {4}</title></line>",
                x(*at),
                y + 2.0,
                y + 14.0,
                esc(call),
                seconds(*at)
            );
        }
        for m in &a.measurements {
            let _ = write!(
                h,
                "<circle class=\"measure {}\" cx=\"{:.1}\" cy=\"{:.1}\" r=\"4\"><title>{} at {}</title></circle>",
                m.class(),
                x(m.at),
                y + 8.0,
                esc(&m.m.describe()),
                seconds(m.at)
            );
        }
        if a.more_calls > 0 {
            let _ = write!(
                h,
                "<text class=\"axis\" x=\"{:.1}\" y=\"{:.1}\">+{} calls</text>",
                x(end) + 4.0,
                y + 12.0,
                a.more_calls
            );
        }
        h.push_str("</g>");
    }
    for (i, (at, step, _)) in skipped.iter().enumerate() {
        let y = 30.0 + ROW * (attempts.len() + i) as f64;
        let _ = write!(
            h,
            "<g class=\"row\" data-step=\"{}\"><text class=\"label\" x=\"{:.1}\" y=\"{:.1}\">{}</text>\
             <circle class=\"bar skipped\" cx=\"{:.1}\" cy=\"{:.1}\" r=\"5\"><title>{} skipped</title></circle></g>",
            attr(step),
            LEFT - 8.0,
            y + 12.0,
            esc(step),
            x(*at),
            y + 8.0,
            esc(step)
        );
    }
    for (at, message) in notices {
        let _ = write!(
            h,
            "<line class=\"notice\" x1=\"{0:.1}\" x2=\"{0:.1}\" y1=\"20\" y2=\"{1:.1}\"><title>{2}</title></line>",
            x(*at),
            height - 10.0,
            esc(message)
        );
    }
    h.push_str("</svg>\n");
}

/// A canary's share of traffic over the run: per service, a step line of the percent the
/// new release took, on the timeline's axis, and the changes as a table.
fn traffic_chart(h: &mut String, traffic: &[(u64, String, String, u8)], end_ms: u64) {
    if traffic.is_empty() {
        return;
    }
    const LEFT: f64 = 160.0;
    const WIDTH: f64 = 800.0;
    const HEIGHT: f64 = 100.0;
    let x = |ms: u64| LEFT + WIDTH * ms as f64 / end_ms as f64;
    let y = |percent: u8| 20.0 + HEIGHT * (1.0 - f64::from(percent) / 100.0);
    let services: std::collections::BTreeSet<&str> = traffic.iter().map(|(_, s, _, _)| s.as_str()).collect();
    h.push_str("<h2>Traffic</h2>\n");
    for service in services {
        let _ = write!(
            h,
            "<svg class=\"traffic\" data-service=\"{}\" xmlns=\"http://www.w3.org/2000/svg\" viewBox=\"0 0 {} {}\" width=\"100%\">\
             <text class=\"label\" x=\"{:.1}\" y=\"{:.1}\">{}</text>",
            attr(service),
            LEFT + WIDTH + 50.0,
            HEIGHT + 40.0,
            LEFT - 8.0,
            y(50) + 4.0,
            esc(service)
        );
        for percent in [0u8, 50, 100] {
            let _ = write!(
                h,
                "<line class=\"grid\" x1=\"{LEFT}\" x2=\"{0:.1}\" y1=\"{2:.1}\" y2=\"{2:.1}\"/><text class=\"axis\" x=\"{1:.1}\" y=\"{3:.1}\">{percent}%</text>",
                LEFT + WIDTH,
                LEFT + WIDTH + 4.0,
                y(percent),
                y(percent) + 4.0
            );
        }
        // From 0% at the start, each change held until the next, to the run's end.
        let mut points = format!("{:.1},{:.1}", x(0), y(0));
        let mut now = 0u8;
        for (at, _, version, percent) in traffic.iter().filter(|(_, s, _, _)| s == service) {
            let _ = write!(points, " {0:.1},{1:.1} {0:.1},{2:.1}", x(*at), y(now), y(*percent));
            let _ = write!(
                h,
                "<circle class=\"shift\" cx=\"{:.1}\" cy=\"{:.1}\" r=\"3\"><title>{percent}% to {} at {}</title></circle>",
                x(*at),
                y(*percent),
                esc(version),
                seconds(*at)
            );
            now = *percent;
        }
        let _ = write!(points, " {:.1},{:.1}", x(end_ms), y(now));
        let _ = writeln!(h, "<polyline class=\"weight\" points=\"{points}\"/></svg>");
    }
    h.push_str(
        "<table class=\"kv\" id=\"traffic\"><tr><th>at</th><th>service</th><th>release</th><th>traffic</th></tr>",
    );
    for (at, service, version, percent) in traffic {
        let _ = write!(
            h,
            "<tr><td class=\"at\">{}</td><td>{}</td><td>{}</td><td>{percent}%</td></tr>",
            seconds(*at),
            esc(service),
            esc(version)
        );
    }
    h.push_str("</table>\n");
}

/// Every measurement of the run, in order, with the step that took it.
fn measurements(h: &mut String, attempts: &[Attempt]) {
    let mut all: Vec<(&Attempt, &Measured)> = attempts
        .iter()
        .flat_map(|a| a.measurements.iter().map(move |m| (a, m)))
        .collect();
    if all.is_empty() {
        return;
    }
    all.sort_by_key(|(_, m)| m.at);
    h.push_str("<h2>Measurements</h2>\n<table class=\"kv\" id=\"measurements\"><tr><th>at</th><th>step</th><th>metric</th><th>value</th><th>verdict</th><th>how</th></tr>");
    for (a, m) in all {
        let _ = write!(
            h,
            "<tr class=\"measure {}\"><td class=\"at\">{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}{}</td><td>{}</td></tr>",
            m.class(),
            seconds(m.at),
            esc(&a.step),
            esc(&m.m.metric),
            esc(&m.m.value_text()),
            m.class(),
            if m.m.dry_run { " (dry run)" } else { "" },
            esc(&m.m.detail)
        );
    }
    h.push_str("</table>\n");
}

fn seconds(ms: u64) -> String {
    format!("{:.3}s", ms as f64 / 1000.0)
}

fn class_of(outcome: &str) -> &'static str {
    match outcome {
        "success" => "success",
        "failure" => "failure",
        "skipped" => "skipped",
        _ => "unfinished",
    }
}

/// Text for HTML: escaped, and control characters shown rather than passed on.
fn esc(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            '\n' | '\t' => out.push(c),
            c if c.is_control() => {
                let _ = write!(out, "\\x{:02x}", u32::from(c));
            }
            c => out.push(c),
        }
    }
    out
}

fn attr(text: &str) -> String {
    esc(text).replace('\n', "&#10;")
}

const STYLE: &str = "\
body{font:14px/1.45 system-ui,sans-serif;margin:2em auto;max-width:1100px;padding:0 1em;color:#1d2330}\
h1{font-size:1.4em}h2{margin-top:1.6em;border-bottom:1px solid #ddd}h3{margin:.2em 0}\
.meta{color:#555}.outcome{font-weight:600;padding:0 .4em;border-radius:3px}\
.outcome.success{background:#d8f3dc;color:#1b5e20}.outcome.failure{background:#ffd6d6;color:#8b0000}\
.outcome.skipped,.outcome.unfinished{background:#eee;color:#555}\
svg text{font-size:11px;fill:#333}.label{text-anchor:end}.axis{fill:#777}\
.grid{stroke:#eee}.bar.success{fill:#52b788}.bar.failure{fill:#e63946}.bar.skipped,.bar.unfinished{fill:#adb5bd}\
.tick{stroke:#1d3557;stroke-width:1;opacity:.55}.notice{stroke:#f4a261;stroke-width:2;stroke-dasharray:4 3}\
.step{border:1px solid #e3e3e3;border-radius:6px;padding:.6em 1em;margin:1em 0}\
table.kv{border-collapse:collapse;margin:.4em 0}table.kv caption{text-align:left;font-weight:600}\
table.kv th,table.kv td{border:1px solid #e3e3e3;padding:.15em .5em;text-align:left;vertical-align:top;word-break:break-all}\
pre{background:#f6f8fa;padding:.5em;overflow:auto;max-height:30em;white-space:pre-wrap;word-break:break-all}\
.detail{background:#fff0f0}.at{color:#777;font-family:monospace}\
circle.measure.successful{fill:#2d6a4f}circle.measure.failed{fill:#d00000}circle.measure.inconclusive{fill:#f4a261}\
tr.measure.failed td{background:#fff0f0}tr.measure.inconclusive td{background:#fff8e6}\
.weight{fill:none;stroke:#1d3557;stroke-width:2}.shift{fill:#1d3557}";

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn text_from_a_run_folder_cannot_become_markup() {
        assert_eq!(
            esc("<script>alert('x')</script> & \x1b[2J"),
            "&lt;script&gt;alert(&#39;x&#39;)&lt;/script&gt; &amp; \\x1b[2J"
        );
        assert_eq!(attr("a\"b\nc"), "a&quot;b&#10;c");
    }
}
