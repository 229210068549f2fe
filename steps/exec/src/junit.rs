//! A test tool's JUnit XML report, read into test reports: `<testsuite>`s (nested or under
//! `<testsuites>`) of `<testcase>`s with `<failure>`, `<error>` or `<skipped>`, and
//! `<system-out>` and `<system-err>`, the dialect cargo-nextest, pytest, Jest and Maven
//! write. Bounded: the file's size, the XML's nodes, the cases and each case's text.
//!
//! Test tools write what their tests printed into the report, and a test that prints a
//! control character makes the file invalid XML (`&#x1b;`, or the byte itself). Such
//! characters are shown as `\xNN` before parsing, so one test's output does not lose the
//! report of all the others.

use wharf_step::log::{TestReport, TestStatus};

/// Largest report read.
const MAX_BYTES: u64 = 16 << 20;
/// Most test cases reported from one file.
const MAX_CASES: usize = 20_000;
/// Longest failure text or output kept per case.
const MAX_TEXT: usize = 16 << 10;

pub fn read(path: &str) -> Result<Vec<TestReport>, String> {
    let size = std::fs::metadata(path)
        .map_err(|e| format!("cannot read it: {e}"))?
        .len();
    if size > MAX_BYTES {
        return Err(format!("{size} bytes, more than the {MAX_BYTES} read"));
    }
    let bytes = std::fs::read(path).map_err(|e| format!("cannot read it: {e}"))?;
    parse(&String::from_utf8_lossy(&bytes))
}

pub fn parse(text: &str) -> Result<Vec<TestReport>, String> {
    let text = legal_xml(text);
    let options = roxmltree::ParsingOptions {
        allow_dtd: false,
        nodes_limit: 1_000_000,
        ..Default::default()
    };
    let doc = roxmltree::Document::parse_with_options(&text, options).map_err(|e| format!("not XML: {e}"))?;
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
        let (status, result) = match (child("failure"), child("error"), child("skipped")) {
            (Some(failed), _, _) => (TestStatus::Failed, Some(failed)),
            (None, Some(errored), _) => (TestStatus::Errored, Some(errored)),
            (None, None, Some(skipped)) => (TestStatus::Skipped, Some(skipped)),
            (None, None, None) => (TestStatus::Passed, None),
        };
        let text_of = |node: Option<roxmltree::Node>| {
            node.and_then(|n| n.text())
                .map(bounded)
                .filter(|t| !t.trim().is_empty())
        };
        let seconds: f64 = case.attribute("time").and_then(|t| t.parse().ok()).unwrap_or(0.0);
        cases.push(TestReport {
            suite,
            name: bounded(case.attribute("name").unwrap_or("(unnamed)")),
            classname: case.attribute("classname").map(bounded),
            duration_ms: (seconds.max(0.0) * 1000.0).round() as u64,
            status,
            message: result
                .and_then(|r| r.attribute("message"))
                .map(|m| bounded(m.lines().next().unwrap_or(""))),
            kind: result.and_then(|r| r.attribute("type")).map(bounded),
            details: text_of(result),
            stdout: text_of(child("system-out")),
            stderr: text_of(child("system-err")),
        });
    }
    Ok(cases)
}

/// Whether XML 1.0 can hold `c` at all.
fn xml_char(c: u32) -> bool {
    matches!(c, 0x9 | 0xA | 0xD | 0x20..=0xD7FF | 0xE000..=0xFFFD | 0x10000..=0x10FFFF)
}

/// `text` with every character XML 1.0 cannot hold, raw or as a character reference,
/// shown as `\xNN` instead.
fn legal_xml(text: &str) -> std::borrow::Cow<'_, str> {
    let bad_reference = |rest: &str| -> Option<(usize, u32)> {
        let body = rest.strip_prefix("&#")?;
        let end = body.find(';')?;
        let digits = &body[..end];
        // Digits too many for any character read as none.
        let code = match digits.strip_prefix(['x', 'X']) {
            Some(hex) if !hex.is_empty() && hex.chars().all(|c| c.is_ascii_hexdigit()) => {
                u32::from_str_radix(hex, 16).unwrap_or(0)
            }
            None if !digits.is_empty() && digits.chars().all(|c| c.is_ascii_digit()) => digits.parse().unwrap_or(0),
            _ => return None,
        };
        (!xml_char(code)).then_some((end + 3, code))
    };
    if !text.contains("&#") && text.chars().all(|c| xml_char(u32::from(c))) {
        return std::borrow::Cow::Borrowed(text);
    }
    let mut out = String::with_capacity(text.len());
    let mut at = 0;
    while let Some(c) = text[at..].chars().next() {
        if c == '&'
            && let Some((len, code)) = bad_reference(&text[at..])
        {
            out.push_str(&format!("\\x{code:02x}"));
            at += len;
            continue;
        }
        if xml_char(u32::from(c)) {
            out.push(c);
        } else {
            out.push_str(&format!("\\x{:02x}", u32::from(c)));
        }
        at += c.len_utf8();
    }
    std::borrow::Cow::Owned(out)
}

fn bounded(text: &str) -> String {
    crate::cut(text, MAX_TEXT)
}
