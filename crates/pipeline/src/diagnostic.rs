//! Errors about a pipeline file that point at the line and column to fix.

use std::fmt;
use std::path::PathBuf;
use std::sync::Arc;

/// A position in a pipeline file: 1-based line and column.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Span {
    pub line: usize,
    pub column: usize,
}

impl Span {
    pub fn new(line: usize, column: usize) -> Self {
        Self { line, column }
    }

    pub fn from_marked(span: &marked_yaml::Span) -> Self {
        span.start()
            .map_or_else(Self::default, |m| Self::new(m.line(), m.column()))
    }
}

/// The text of a pipeline file, kept to quote the offending line in diagnostics.
#[derive(Debug, Clone)]
pub struct SourceFile {
    pub path: PathBuf,
    pub text: Arc<str>,
}

impl SourceFile {
    pub fn line(&self, line: usize) -> Option<&str> {
        self.text.lines().nth(line.checked_sub(1)?)
    }
}

#[derive(Debug, Clone)]
pub struct Diagnostic {
    pub span: Span,
    pub message: String,
    /// What to do about it.
    pub help: Option<String>,
}

impl Diagnostic {
    pub fn new(span: Span, message: impl Into<String>) -> Self {
        Self {
            span,
            message: message.into(),
            help: None,
        }
    }

    pub fn help(mut self, help: impl Into<String>) -> Self {
        self.help = Some(help.into());
        self
    }
}

/// Every problem found in one file; validation reports them all at once.
#[derive(Debug, Clone)]
pub struct Diagnostics {
    pub source: SourceFile,
    pub items: Vec<Diagnostic>,
}

impl fmt::Display for Diagnostics {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let path = self.source.path.display();
        for (i, d) in self.items.iter().take(MAX_SHOWN).enumerate() {
            if i > 0 {
                writeln!(f)?;
            }
            writeln!(f, "error: {}", d.message)?;
            writeln!(f, "  --> {path}:{}:{}", d.span.line, d.span.column)?;
            if let Some(line) = self.source.line(d.span.line) {
                let (text, column) = window(line, d.span.column);
                let gutter = d.span.line.to_string();
                let pad = " ".repeat(gutter.len());
                writeln!(f, "{pad} |")?;
                writeln!(f, "{gutter} | {text}")?;
                let indent: String = text
                    .chars()
                    .take(column.saturating_sub(1))
                    .map(|c| if c == '\t' { '\t' } else { ' ' })
                    .collect();
                let width = token_width(&text, column);
                writeln!(f, "{pad} | {indent}{}", "^".repeat(width))?;
            }
            if let Some(help) = &d.help {
                writeln!(f, "  = help: {help}")?;
            }
        }
        let n = self.items.len();
        if n > MAX_SHOWN {
            writeln!(f, "\n... and {} more", n - MAX_SHOWN)?;
        }
        write!(
            f,
            "{n} error{} in {path}; nothing was run",
            if n == 1 { "" } else { "s" }
        )
    }
}

impl std::error::Error for Diagnostics {}

/// Diagnostics printed at most; the count says how many there were.
const MAX_SHOWN: usize = 50;

/// A long source line is shown as the part around `column`: (the text, the column in it).
fn window(line: &str, column: usize) -> (String, usize) {
    const WIDTH: usize = 100;
    let count = line.chars().count();
    if count <= WIDTH {
        return (line.to_string(), column);
    }
    let start = column.saturating_sub(40).min(count.saturating_sub(WIDTH));
    let mut text: String = line.chars().skip(start).take(WIDTH).collect();
    let mut column = column - start;
    if start > 0 {
        text.insert(0, '…');
        column += 1;
    }
    if start + WIDTH < count {
        text.push('…');
    }
    (text, column)
}

/// Width of the token starting at `column`, for the caret line: a quoted string, a key up
/// to its `:`, a value in a flow collection up to its `,`, or a value up to a comment.
fn token_width(line: &str, column: usize) -> usize {
    let before: String = line.chars().take(column.saturating_sub(1)).collect();
    let rest: String = line.chars().skip(column.saturating_sub(1)).collect();
    let in_flow = before.matches(['[', '{']).count() > before.matches([']', '}']).count();
    let end = if let Some(quote) = rest.chars().next().filter(|c| *c == '"' || *c == '\'') {
        rest[1..].find(quote).map_or(rest.len(), |end| end + 2)
    } else if in_flow {
        rest.find([',', ']', '}']).unwrap_or(rest.len())
    } else if let Some(colon) = rest.find(": ").or_else(|| rest.strip_suffix(':').map(str::len)) {
        colon
    } else {
        rest.find(" #").unwrap_or(rest.len())
    };
    rest[..end.min(rest.len())].trim_end().chars().count().max(1)
}

/// The closest of `candidates` to `word`, when it is close enough to be a typo.
pub fn suggest<'a>(word: &str, candidates: impl IntoIterator<Item = &'a str>) -> Option<&'a str> {
    candidates
        .into_iter()
        .map(|c| (edit_distance(word, c), c))
        .filter(|(d, c)| *d <= (c.len().max(word.len()) / 3).max(1))
        .min_by_key(|(d, _)| *d)
        .map(|(_, c)| c)
}

/// Optimal-string-alignment distance: a swapped pair of letters counts as one edit.
fn edit_distance(a: &str, b: &str) -> usize {
    let a: Vec<char> = a.chars().collect();
    let b: Vec<char> = b.chars().collect();
    let mut d = vec![vec![0usize; b.len() + 1]; a.len() + 1];
    for (i, row) in d.iter_mut().enumerate() {
        row[0] = i;
    }
    for (j, cell) in d[0].iter_mut().enumerate() {
        *cell = j;
    }
    for i in 1..=a.len() {
        for j in 1..=b.len() {
            let cost = usize::from(a[i - 1] != b[j - 1]);
            d[i][j] = (d[i - 1][j] + 1).min(d[i][j - 1] + 1).min(d[i - 1][j - 1] + cost);
            if i > 1 && j > 1 && a[i - 1] == b[j - 2] && a[i - 2] == b[j - 1] {
                d[i][j] = d[i][j].min(d[i - 2][j - 2] + 1);
            }
        }
    }
    d[a.len()][b.len()]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn suggests_close_names_only() {
        assert_eq!(suggest("progam", ["program", "args"]), Some("program"));
        assert_eq!(suggest("xyz", ["program", "args"]), None);
        assert_eq!(suggest("exce", ["exec", "version"]), Some("exec"));
    }

    #[test]
    fn renders_file_line_column_and_caret() {
        let source = SourceFile {
            path: "p.yml".into(),
            text: "name: x\nsteps:\n  - id: a\n    uses: builtin:nope\n".into(),
        };
        let d = Diagnostics {
            source,
            items: vec![Diagnostic::new(Span::new(4, 11), "unknown step `builtin:nope`").help("see `wharf steps`")],
        };
        let text = d.to_string();
        assert!(text.contains("--> p.yml:4:11"), "{text}");
        assert!(text.contains("4 |     uses: builtin:nope"), "{text}");
        assert!(text.contains("  |           ^^^^^^^^^^^^"), "{text}");
        assert!(text.contains("help: see `wharf steps`"), "{text}");
    }
}
