//! A test tool's JUnit XML report, read into test cases: `<testsuite>`s (nested or under
//! `<testsuites>`) of `<testcase>`s with `<failure>`, `<error>` or `<skipped>`, the dialect
//! cargo-nextest, pytest, Jest and Maven write. Bounded: the file's size, the XML's nodes,
//! the cases and each case's text.

use wharf_step::log::{TestCase, TestOutcome};

/// Largest report read.
const MAX_BYTES: u64 = 16 << 20;
/// Most test cases reported from one file.
const MAX_CASES: usize = 20_000;
/// Longest failure text or output kept per case.
const MAX_TEXT: usize = 16 << 10;

pub fn read(path: &str) -> Result<Vec<TestCase>, String> {
    let size = std::fs::metadata(path)
        .map_err(|e| format!("cannot read it: {e}"))?
        .len();
    if size > MAX_BYTES {
        return Err(format!("{size} bytes, more than the {MAX_BYTES} read"));
    }
    let text = std::fs::read_to_string(path).map_err(|e| format!("cannot read it: {e}"))?;
    parse(&text)
}

pub fn parse(text: &str) -> Result<Vec<TestCase>, String> {
    let options = roxmltree::ParsingOptions {
        allow_dtd: false,
        nodes_limit: 1_000_000,
        ..Default::default()
    };
    let doc = roxmltree::Document::parse_with_options(text, options).map_err(|e| format!("not XML: {e}"))?;
    let mut cases = Vec::new();
    for case in doc.descendants().filter(|n| n.has_tag_name("testcase")) {
        if cases.len() == MAX_CASES {
            break;
        }
        let suite = case
            .ancestors()
            .find(|n| n.has_tag_name("testsuite"))
            .and_then(|s| s.attribute("name"))
            .unwrap_or("tests")
            .to_string();
        let child = |tag: &str| case.children().find(|n| n.has_tag_name(tag));
        let (outcome, result) = match (child("failure").or_else(|| child("error")), child("skipped")) {
            (Some(failed), _) => (TestOutcome::Failed, Some(failed)),
            (None, Some(skipped)) => (TestOutcome::Skipped, Some(skipped)),
            (None, None) => (TestOutcome::Passed, None),
        };
        let message = result
            .and_then(|r| r.attribute("message"))
            .map(|m| bounded(m.lines().next().unwrap_or("")));
        let output = result
            .and_then(|r| r.text())
            .or_else(|| child("system-out").and_then(|n| n.text()))
            .map(bounded)
            .filter(|t| !t.trim().is_empty());
        let seconds: f64 = case.attribute("time").and_then(|t| t.parse().ok()).unwrap_or(0.0);
        cases.push(TestCase {
            suite,
            name: bounded(case.attribute("name").unwrap_or("(unnamed)")),
            classname: case.attribute("classname").map(bounded),
            duration_ms: (seconds.max(0.0) * 1000.0).round() as u64,
            outcome,
            message,
            output,
        });
    }
    Ok(cases)
}

fn bounded(text: &str) -> String {
    if text.len() <= MAX_TEXT {
        return text.to_string();
    }
    let mut cut = MAX_TEXT;
    while !text.is_char_boundary(cut) {
        cut -= 1;
    }
    format!("{}…", &text[..cut])
}
