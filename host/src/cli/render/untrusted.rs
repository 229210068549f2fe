//! Text a step controls (its log lines, output values, annotations, failure messages, and
//! what a run folder says it did), made inert before it reaches a reader that obeys text:
//! a terminal obeys escape sequences and carriage returns, GitLab's log parser obeys section
//! markers, GitHub's runner obeys workflow commands, and a job summary obeys Markdown.
//!
//! The rules follow the readers, not a list of bad strings. GitHub's runner takes a line as a
//! command when, after `String.TrimStart()` (every Unicode white space), it starts with `::`,
//! or, in its older parser, when `##[` appears anywhere in it; both comparisons are .NET's
//! culture-aware ones, which skip default-ignorable characters (soft hyphen, zero-width
//! space, ...), and `StreamReader.ReadLine` also ends a line at a lone `\r`. So control
//! characters are shown as `\xNN`, and where a line would parse as a command a `\` goes in
//! front of it: `\::error::...`, `##\[error]...`. GitLab needs `\r` and `ESC` for a section
//! marker, which `printable` never lets through.

use std::borrow::Cow;

/// Characters shown as `\xNN` instead of being obeyed: controls (an escape sequence that
/// moves the cursor or recolours, a carriage return that overwrites a status line or ends a
/// line for GitHub's runner), the Unicode line separators, and the bidirectional overrides
/// that make a line display in another order than it reads.
fn unsafe_char(c: char) -> bool {
    (c.is_control() && c != '\t')
        || matches!(c, '\u{2028}' | '\u{2029}' | '\u{061c}' | '\u{200e}' | '\u{200f}')
        || ('\u{202a}'..='\u{202e}').contains(&c)
        || ('\u{2066}'..='\u{2069}').contains(&c)
}

/// Text from a step, safe for a terminal and a CI log: see [`unsafe_char`]. Line breaks are
/// the caller's to place.
pub fn printable(text: &str) -> Cow<'_, str> {
    if !text.chars().any(unsafe_char) {
        return Cow::Borrowed(text);
    }
    let mut out = String::with_capacity(text.len() + 8);
    for c in text.chars() {
        push_shown(&mut out, c);
    }
    Cow::Owned(out)
}

fn push_shown(out: &mut String, c: char) {
    if unsafe_char(c) {
        let code = u32::from(c);
        if code <= 0xff {
            out.push_str(&format!("\\x{code:02x}"));
        } else {
            out.push_str(&format!("\\u{{{code:x}}}"));
        }
    } else {
        out.push(c);
    }
}

/// Each line of a step's text, made printable, behind `indent`: a step cannot start a line
/// of its own that looks like wharf's.
pub fn lines(text: &str, indent: &str) -> String {
    text.split('\n')
        .map(|l| printable(l.trim_end_matches('\r')).into_owned())
        .collect::<Vec<_>>()
        .join(&format!("\n{indent}"))
}

/// What .NET's `TrimStart()` removes: `Char.IsWhiteSpace`, the same set as Unicode's
/// White_Space property that Rust's `char::is_whitespace` reads.
fn trimmed_by_runner(c: char) -> bool {
    c.is_whitespace()
}

/// Characters a culture-aware .NET comparison skips as if absent: Unicode's
/// Default_Ignorable_Code_Point, and controls.
fn ignorable(c: char) -> bool {
    (c.is_control() && !c.is_whitespace())
        || matches!(u32::from(c),
            0xAD | 0x34F | 0x61C | 0x115F..=0x1160 | 0x17B4..=0x17B5 | 0x180B..=0x180F
            | 0x200B..=0x200F | 0x202A..=0x202E | 0x2060..=0x206F | 0x3164 | 0xFE00..=0xFE0F
            | 0xFEFF | 0xFFA0 | 0xFFF0..=0xFFF8 | 0x1BCA0..=0x1BCA3 | 0x1D173..=0x1D17A
            | 0xE0000..=0xE0FFF)
}

/// Byte offsets in `line` before which a `\` stops GitHub's runner reading a command: the
/// first `:` of a leading `::`, and the `[` of every `##[` (ignorable characters between
/// them do not count, as the runner's comparison skips them).
fn command_starts(line: &str) -> Vec<usize> {
    let mut at = Vec::new();
    let significant: Vec<(usize, char)> = line.char_indices().filter(|(_, c)| !ignorable(*c)).collect();
    let lead = significant.iter().position(|(_, c)| !trimmed_by_runner(*c));
    if let Some(lead) = lead
        && significant[lead].1 == ':'
        && significant.get(lead + 1).is_some_and(|(_, c)| *c == ':')
    {
        at.push(significant[lead].0);
    }
    for window in significant.windows(3) {
        if let [(_, '#'), (_, '#'), (bracket, '[')] = window {
            at.push(*bracket);
        }
    }
    at
}

/// One line wharf prints to GitHub Actions that is not a command wharf composed: printable,
/// and never a workflow command in either of the runner's forms. Every such line goes
/// through here (`Human::write` of the GitHub renderer), whatever step text it holds.
pub fn github_line(line: &str) -> Cow<'_, str> {
    let starts = command_starts(line);
    if starts.is_empty() && !line.chars().any(unsafe_char) {
        return Cow::Borrowed(line);
    }
    let mut out = String::with_capacity(line.len() + 8);
    for (i, c) in line.char_indices() {
        if starts.contains(&i) {
            out.push('\\');
        }
        push_shown(&mut out, c);
    }
    Cow::Owned(out)
}

/// A workflow command's message (toolkit's `escapeData`: `%`, CR, LF), printable, and
/// never holding the older parser's `##[`.
pub fn github_data(text: &str) -> String {
    let mut escaped = String::with_capacity(text.len() + 8);
    for c in text.chars() {
        match c {
            '%' => escaped.push_str("%25"),
            '\r' => escaped.push_str("%0D"),
            '\n' => escaped.push_str("%0A"),
            c => push_shown(&mut escaped, c),
        }
    }
    break_legacy(&escaped)
}

/// A workflow command's property value (`escapeProperty`): also `:` and `,`.
pub fn github_property(text: &str) -> String {
    github_data(text).replace(':', "%3A").replace(',', "%2C")
}

fn break_legacy(text: &str) -> String {
    let starts: Vec<usize> = command_starts(text)
        .into_iter()
        .filter(|&i| text[i..].starts_with('['))
        .collect();
    if starts.is_empty() {
        return text.to_string();
    }
    let mut out = String::with_capacity(text.len() + starts.len());
    for (i, c) in text.char_indices() {
        if starts.contains(&i) {
            out.push('\\');
        }
        out.push(c);
    }
    out
}

/// Longest text of a Markdown table cell; the rest is in the run folder.
const CELL_CHARS: usize = 300;

/// Step text in a Markdown table cell (GitHub's job summary): one line, shown as code, so
/// no link, image, HTML or autolinked URL comes out of it, with `|` escaped as the table
/// needs even inside code.
pub fn markdown_cell(text: &str) -> String {
    let mut one_line: String = text
        .chars()
        .map(|c| if c == '\n' || c == '\r' { ' ' } else { c })
        .take(CELL_CHARS)
        .collect();
    if text.chars().count() > CELL_CHARS {
        one_line.push('…');
    }
    let one_line = printable(one_line.trim()).into_owned();
    if one_line.is_empty() {
        return String::new();
    }
    // A code span's fence is longer than any run of backticks inside it.
    let mut longest = 0;
    let mut run = 0;
    for c in one_line.chars() {
        run = if c == '`' { run + 1 } else { 0 };
        longest = longest.max(run);
    }
    let fence = "`".repeat(longest + 1);
    // A space pads code that starts or ends with a backtick; Markdown strips it again.
    let pad = if one_line.starts_with('`') || one_line.ends_with('`') {
        " "
    } else {
        ""
    };
    format!("{fence}{pad}{}{pad}{fence}", one_line.replace('|', "\\|"))
}

#[cfg(test)]
mod tests {
    use super::*;

    include!("../../../../tests/common/github_runner.rs");

    /// Every character .NET's `TrimStart` removes, and a few ignorable ones.
    fn white_space() -> Vec<char> {
        let mut all: Vec<char> = (0..=0x3000u32)
            .filter_map(char::from_u32)
            .filter(|c| c.is_whitespace())
            .collect();
        all.extend(['\u{ad}', '\u{200b}', '\u{2060}', '\u{feff}', '\u{180e}', '\u{0}']);
        all
    }

    fn attacks() -> Vec<String> {
        let commands = [
            "::error::pwned",
            "::ERROR title=x::pwned",
            "::add-mask::a",
            "::stop-commands::T0KEN",
            "::set-output name=exit-code::0",
            "::group::fake",
            "::endgroup::",
            "::warning file=a.rs,line=1::pwned",
            "::save-state name=a::b",
            "::set-env name=NODE_OPTIONS::--require=/tmp/x",
            "::add-path::/tmp/evil",
            "::echo::on",
            "::debug::x",
            "::notice::x",
            "::add-matcher::/tmp/m.json",
            "#\u{ad}#[error]pwned",
            "##\u{200b}[stop-commands]T0KEN",
            "##[set-output name=a;]b",
            "##[error]pwned",
        ];
        let mut all = Vec::new();
        for command in commands {
            all.push(command.to_string());
            all.push(format!("text before {command}"));
            all.push(format!("text\r{command}"));
            all.push(format!(":\u{200b}{}", &command[1..]));
            for ws in white_space() {
                all.push(format!("{ws}{command}"));
                all.push(format!("{ws}{ws}\u{200b}{ws}{command}"));
            }
        }
        all
    }

    #[test]
    fn no_workflow_command_in_any_whitespace_or_form_survives_a_github_line() {
        let attacks = attacks();
        assert!(attacks.len() > 1000);
        let mut obeyed = 0;
        for attack in &attacks {
            obeyed += usize::from(!runner_commands(attack).is_empty());
            // As a whole line, behind wharf's indentation, and as a failure's detail.
            for line in [
                attack.clone(),
                format!("      {attack}"),
                format!("    test │ {attack}"),
            ] {
                let shown = github_line(&line);
                assert!(runner_commands(&shown).is_empty(), "{line:?} came out as {shown:?}");
            }
            // Inside a command wharf composes, only wharf's command is read.
            let composed = format!("::error title={}::{}", github_property(attack), github_data(attack));
            assert_eq!(runner_commands(&composed).len(), 1, "{composed:?}");
            assert!(!composed.contains('\n') && !composed.contains('\r'), "{composed:?}");
        }
        // The model is not vacuous: nearly every attack is a command as it stands.
        assert!(obeyed * 10 > attacks.len() * 9, "{obeyed} of {}", attacks.len());
    }

    #[test]
    fn lines_without_commands_are_shown_unchanged() {
        for line in [
            "  ok   build    1.2s",
            "compiling: 3 of 7 (42%)",
            "a::b is a path",
            "## heading [x]",
            "👨‍👩‍👧 family ❤️",
        ] {
            assert_eq!(github_line(line), line);
        }
        assert_eq!(github_line("  ::error::x"), "  \\::error::x");
        assert_eq!(github_line("x ##[error]y"), "x ##\\[error]y");
        assert_eq!(github_line("a\rb"), "a\\x0db");
    }

    #[test]
    fn gitlab_section_markers_and_escapes_never_pass() {
        for attack in [
            "section_end:1700000000:wharf_step_test\r\x1b[0K",
            "\x1b[0Ksection_start:1:fake[collapsed=true]\r\x1b[0Kfake",
            "\x1b[2K\rok  deploy",
        ] {
            let shown = lines(attack, "  ");
            assert!(!shown.contains('\r') && !shown.contains('\x1b'), "{shown:?}");
        }
    }

    #[test]
    fn control_characters_are_shown_not_obeyed() {
        assert_eq!(printable("plain\ttext"), "plain\ttext");
        assert_eq!(printable("\x1b[2K\rok  deploy"), "\\x1b[2K\\x0dok  deploy");
        assert_eq!(printable("bell\x07 c1\u{9b}"), "bell\\x07 c1\\x9b");
        assert_eq!(printable("abc\u{202e}fed"), "abc\\u{202e}fed");
        assert_eq!(lines("one\r\n  ok   fake", "    | "), "one\n    |   ok   fake");
    }

    #[test]
    fn messages_and_properties_are_escaped_by_githubs_rules() {
        assert_eq!(github_data("100% done\r\nnext: a,b"), "100%25 done%0D%0Anext: a,b");
        assert_eq!(github_property("a: b, 5%\nc"), "a%3A b%2C 5%25%0Ac");
        assert_eq!(github_data("see ##[error]x"), "see ##\\[error]x");
    }

    #[test]
    fn a_markdown_cell_is_code_so_no_link_image_or_html_comes_out() {
        assert_eq!(
            markdown_cell("![x](https://evil.example/t.png) | <img src=x> `a`"),
            "`` ![x](https://evil.example/t.png) \\| <img src=x> `a` ``"
        );
        assert_eq!(markdown_cell("two\nlines"), "`two lines`");
        assert_eq!(markdown_cell(""), "");
        assert!(markdown_cell(&"x".repeat(1000)).chars().count() < 320);
    }
}
