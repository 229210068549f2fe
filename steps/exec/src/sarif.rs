//! A tool's SARIF 2.1.0 log (ruff, semgrep, bandit, trivy, eslint's formatter, ...) read
//! into annotations, so a linter's findings show wherever wharf renders annotations: CI
//! annotations, the JUnit and SARIF reports, the events and the HTML report.
//!
//! Bounded: the bytes read (whatever the file claims to be), the JSON's nesting (checked
//! before parsing, also inside fields this ignores), the results reported and each
//! message's length. A location is handed to the host as a path: a relative URI is
//! resolved against its base (`originalUriBaseIds`) or the program's directory, a `file:`
//! URI becomes its path, and the host makes it workspace-relative or, when it lies outside
//! the workspace, keeps the message and names the place in it instead.

use serde::Deserialize;
use std::collections::BTreeMap;
use std::io::Read;
use wharf_step::log::{Annotation, Level};

/// Largest log read.
const MAX_BYTES: u64 = 16 << 20;
/// Most results reported from one log.
const MAX_RESULTS: usize = 5_000;
/// Longest message kept per result.
const MAX_TEXT: usize = 4 << 10;
/// Deepest nesting of arrays and objects read; a SARIF result's location is about ten.
const MAX_DEPTH: usize = 64;

#[derive(Deserialize)]
struct Log {
    version: String,
    runs: Vec<Run>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct Run {
    tool: Tool,
    #[serde(default)]
    results: Option<Vec<Finding>>,
    #[serde(default)]
    original_uri_base_ids: BTreeMap<String, ArtifactLocation>,
}

#[derive(Deserialize)]
struct Tool {
    driver: Driver,
}

#[derive(Deserialize)]
struct Driver {
    name: String,
    #[serde(default)]
    rules: Vec<Rule>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct Rule {
    #[serde(default)]
    id: String,
    default_configuration: Option<Configuration>,
}

#[derive(Deserialize)]
struct Configuration {
    level: Option<String>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct Finding {
    rule_id: Option<String>,
    rule_index: Option<usize>,
    level: Option<String>,
    message: Message,
    #[serde(default)]
    locations: Vec<Location>,
}

#[derive(Deserialize)]
struct Message {
    text: Option<String>,
    markdown: Option<String>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct Location {
    physical_location: Option<PhysicalLocation>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct PhysicalLocation {
    artifact_location: Option<ArtifactLocation>,
    region: Option<Region>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct ArtifactLocation {
    uri: Option<String>,
    uri_base_id: Option<String>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct Region {
    start_line: Option<u32>,
    start_column: Option<u32>,
}

/// What a log said: its findings as annotations, and how many more there were.
pub struct Findings {
    pub annotations: Vec<Annotation>,
    pub left_out: usize,
}

/// Read the log at `path` (workspace-relative); `cwd` is where the program ran, which a
/// relative URI without a base is relative to.
pub fn read(path: &str, cwd: Option<&str>) -> Result<Findings, String> {
    let file = std::fs::File::open(path).map_err(|e| format!("cannot read it: {e}"))?;
    let claimed = file.metadata().map(|m| m.len()).unwrap_or(0);
    if claimed > MAX_BYTES {
        return Err(format!("{claimed} bytes, more than the {MAX_BYTES} read"));
    }
    let mut bytes = Vec::new();
    file.take(MAX_BYTES + 1)
        .read_to_end(&mut bytes)
        .map_err(|e| format!("cannot read it: {e}"))?;
    if bytes.len() as u64 > MAX_BYTES {
        return Err(format!("more than the {MAX_BYTES} bytes read"));
    }
    parse(&bytes, cwd)
}

pub fn parse(bytes: &[u8], cwd: Option<&str>) -> Result<Findings, String> {
    nesting_within(bytes, MAX_DEPTH)?;
    let log: Log = serde_json::from_slice(bytes).map_err(|e| format!("not a SARIF 2.1.0 log: {e}"))?;
    if log.version != "2.1.0" {
        return Err(format!("SARIF version {}: this reads 2.1.0", log.version));
    }
    let mut annotations = Vec::new();
    let mut left_out = 0;
    for run in &log.runs {
        for finding in run.results.iter().flatten() {
            if annotations.len() == MAX_RESULTS {
                left_out += 1;
                continue;
            }
            annotations.push(annotation(run, finding, cwd));
        }
    }
    Ok(Findings { annotations, left_out })
}

fn annotation(run: &Run, finding: &Finding, cwd: Option<&str>) -> Annotation {
    let driver = &run.tool.driver;
    let rule = finding
        .rule_index
        .and_then(|i| driver.rules.get(i))
        .or_else(|| driver.rules.iter().find(|r| Some(&r.id) == finding.rule_id.as_ref()));
    let level = finding
        .level
        .as_deref()
        .or_else(|| rule.and_then(|r| r.default_configuration.as_ref()?.level.as_deref()))
        .unwrap_or("warning");
    let rule_id = finding.rule_id.as_deref().or(rule.map(|r| r.id.as_str()));
    let message = finding
        .message
        .text
        .as_deref()
        .or(finding.message.markdown.as_deref())
        .unwrap_or("(no message)");
    let physical = finding.locations.first().and_then(|l| l.physical_location.as_ref());
    let file = physical
        .and_then(|p| p.artifact_location.as_ref())
        .and_then(|a| path_of(a, &run.original_uri_base_ids, cwd));
    let region = physical.and_then(|p| p.region.as_ref());
    Annotation {
        level: match level {
            "error" => Level::Error,
            "warning" => Level::Warn,
            _ => Level::Info,
        },
        title: Some(bounded(&match rule_id {
            Some(id) => format!("{} {id}", driver.name),
            None => driver.name.clone(),
        })),
        message: bounded(message),
        line: file.as_ref().and(region.and_then(|r| r.start_line)),
        column: file.as_ref().and(region.and_then(|r| r.start_column)),
        file,
    }
}

/// The path a location names: a `file:` URI's path, or a relative URI joined to its base
/// or to the program's directory. Another scheme names no file here.
fn path_of(
    location: &ArtifactLocation,
    bases: &BTreeMap<String, ArtifactLocation>,
    cwd: Option<&str>,
) -> Option<String> {
    let uri = location.uri.as_deref()?;
    if let Some(path) = file_path(uri) {
        return Some(path);
    }
    if uri.contains(':') && !uri.starts_with('/') {
        return Some(uri.to_string()); // the host names it outside the workspace
    }
    let relative = decode(uri);
    let base = location
        .uri_base_id
        .as_ref()
        .and_then(|id| bases.get(id))
        .and_then(|b| b.uri.as_deref())
        .and_then(file_path);
    Some(match (base, cwd) {
        (Some(base), _) => format!("{}/{relative}", base.trim_end_matches('/')),
        (None, Some(cwd)) if !cwd.is_empty() && cwd != "." => format!("{}/{relative}", cwd.trim_end_matches('/')),
        _ => relative,
    })
}

/// `file:///a/b` and `file://host/a/b` to `/a/b`; `file:/a/b` too.
fn file_path(uri: &str) -> Option<String> {
    let rest = uri.strip_prefix("file:")?;
    let path = match rest.strip_prefix("//") {
        Some(authority_and_path) => &authority_and_path[authority_and_path.find('/')?..],
        None => rest,
    };
    Some(decode(path))
}

/// Percent-decoding; a malformed escape is kept as written.
fn decode(text: &str) -> String {
    let bytes = text.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let hex = |b: u8| (b as char).to_digit(16);
        match (
            bytes[i],
            bytes.get(i + 1).copied().and_then(hex),
            bytes.get(i + 2).copied().and_then(hex),
        ) {
            (b'%', Some(high), Some(low)) => {
                out.push((high * 16 + low) as u8);
                i += 3;
            }
            (b, _, _) => {
                out.push(b);
                i += 1;
            }
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// Fails where arrays and objects nest deeper than `limit`, strings skipped as JSON
/// writes them; what is not JSON is left for the parser to name.
fn nesting_within(bytes: &[u8], limit: usize) -> Result<(), String> {
    let (mut depth, mut line, mut column) = (0usize, 1usize, 0usize);
    let (mut in_string, mut escaped) = (false, false);
    for &b in bytes {
        column += 1;
        if in_string {
            match (escaped, b) {
                (true, _) => escaped = false,
                (false, b'\\') => escaped = true,
                (false, b'"') => in_string = false,
                _ => {}
            }
            continue;
        }
        match b {
            b'"' => in_string = true,
            b'[' | b'{' => {
                depth += 1;
                if depth > limit {
                    return Err(format!(
                        "nested deeper than the {limit} levels read (line {line}, column {column})"
                    ));
                }
            }
            b']' | b'}' => depth = depth.saturating_sub(1),
            b'\n' => (line, column) = (line + 1, 0),
            _ => {}
        }
    }
    Ok(())
}

fn bounded(text: &str) -> String {
    crate::cut(text, MAX_TEXT)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn findings_become_annotations_with_their_places() {
        let log = br#"{"version":"2.1.0","runs":[{"tool":{"driver":{"name":"ruff","rules":[{"id":"F401"}]}},
            "originalUriBaseIds":{"ROOT":{"uri":"file:///work/ws/"}},
            "results":[
              {"ruleId":"F401","level":"error","message":{"text":"unused"},"locations":[{"physicalLocation":{"artifactLocation":{"uri":"file:///work/ws/a%20b.py"},"region":{"startLine":3,"startColumn":8}}}]},
              {"ruleIndex":0,"message":{"text":"based"},"locations":[{"physicalLocation":{"artifactLocation":{"uri":"src/x.py","uriBaseId":"ROOT"}}}]},
              {"message":{"text":"relative"},"locations":[{"physicalLocation":{"artifactLocation":{"uri":"y.py"}}}]},
              {"level":"note","message":{"text":"nowhere"}}
            ]}]}"#;
        let found = parse(log, Some("app")).unwrap();
        let a = &found.annotations;
        assert_eq!(a.len(), 4);
        assert_eq!(a[0].file.as_deref(), Some("/work/ws/a b.py"));
        assert_eq!((a[0].line, a[0].column), (Some(3), Some(8)));
        assert!(matches!(a[0].level, Level::Error));
        assert_eq!(a[0].title.as_deref(), Some("ruff F401"));
        assert_eq!(a[1].file.as_deref(), Some("/work/ws/src/x.py"));
        assert!(matches!(a[1].level, Level::Warn), "SARIF's default level");
        assert_eq!(a[2].file.as_deref(), Some("app/y.py"));
        assert_eq!((a[3].file.as_deref(), a[3].line), (None, None));
        assert!(matches!(a[3].level, Level::Info));
    }

    #[test]
    fn what_is_not_sarif_or_too_deep_is_a_clear_error() {
        let not = parse(b"{\"hello\": 1}", None).err().unwrap();
        assert!(not.starts_with("not a SARIF 2.1.0 log: missing field"), "{not}");
        let old = parse(br#"{"version":"1.0.0","runs":[]}"#, None).err().unwrap();
        assert_eq!(old, "SARIF version 1.0.0: this reads 2.1.0");
        let deep = format!(
            r#"{{"version":"2.1.0","runs":[{{"tool":{{"driver":{{"name":"x"}}}},"properties":{}1{}}}]}}"#,
            "[".repeat(10_000),
            "]".repeat(10_000)
        );
        let deep = parse(deep.as_bytes(), None).err().unwrap();
        assert_eq!(deep, "nested deeper than the 64 levels read (line 1, column 134)");
        // Brackets inside strings are text.
        let quoted = format!(
            r#"{{"version":"2.1.0","runs":[{{"tool":{{"driver":{{"name":"{}"}}}}}}]}}"#,
            "[".repeat(1000)
        );
        assert!(parse(quoted.as_bytes(), None).is_ok());
    }
}
