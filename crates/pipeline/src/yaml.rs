//! YAML values that keep the position of every node, so that an error about a step's
//! parameter can name its line and column, not only parse errors can.

use super::diagnostic::{Diagnostic, Span};
use marked_yaml::{LoaderOptions, Node};

#[derive(Debug, Clone, PartialEq)]
pub struct Scalar {
    pub text: String,
    pub span: Span,
    /// Unquoted: `true`, `3` and `~` mean boolean, number and null only when plain.
    pub plain: bool,
}

impl Scalar {
    pub fn is_null(&self) -> bool {
        self.plain && matches!(self.text.as_str(), "" | "~" | "null" | "Null" | "NULL")
    }
}

#[derive(Debug, Clone, PartialEq)]
pub enum Yaml {
    Scalar(Scalar),
    List(Vec<Yaml>, Span),
    Map(Vec<(Scalar, Yaml)>, Span),
}

impl Yaml {
    pub fn span(&self) -> Span {
        match self {
            Yaml::Scalar(s) => s.span,
            Yaml::List(_, span) | Yaml::Map(_, span) => *span,
        }
    }

    pub fn kind(&self) -> &'static str {
        match self {
            Yaml::Scalar(_) => "a single value",
            Yaml::List(..) => "a list",
            Yaml::Map(..) => "a mapping",
        }
    }

    pub fn as_scalar(&self) -> Option<&Scalar> {
        match self {
            Yaml::Scalar(s) => Some(s),
            _ => None,
        }
    }

    pub fn parse(text: &str) -> Result<Yaml, Diagnostic> {
        check_depth(text)?;
        let options = LoaderOptions::default()
            .error_on_duplicate_keys(true)
            .prevent_coercion(true);
        let node = marked_yaml::parse_yaml_with_options(0, text, options).map_err(load_error)?;
        let lines: Vec<&str> = text.lines().collect();
        Ok(Self::from_node(&node, &lines))
    }

    fn from_node(node: &Node, lines: &[&str]) -> Yaml {
        match node {
            Node::Scalar(s) => Yaml::Scalar(scalar(s, lines)),
            Node::Sequence(seq) => Yaml::List(
                seq.iter().map(|n| Self::from_node(n, lines)).collect(),
                Span::from_marked(seq.span()),
            ),
            Node::Mapping(map) => {
                let entries: Vec<(Scalar, Yaml)> = map
                    .iter()
                    .map(|(k, v)| (scalar(k, lines), Self::from_node(v, lines)))
                    .collect();
                // The parser marks a block mapping where its first value starts; its first
                // key is where a reader sees it begin.
                let span = entries
                    .first()
                    .map_or_else(|| Span::from_marked(map.span()), |(k, _)| k.span);
                Yaml::Map(entries, span)
            }
        }
    }
}

/// Deepest nesting of mappings and lists a pipeline may have (a real one needs under ten).
pub const MAX_DEPTH: usize = 64;

/// Refuse a document nested deeper than [`MAX_DEPTH`] before any tree is built: building,
/// walking and dropping a tree 100,000 levels deep would overflow the stack. The event
/// parser underneath is not recursive, so this pass is safe on any input.
fn check_depth(text: &str) -> Result<(), Diagnostic> {
    use yaml_rust2::parser::{Event, Parser};
    let mut parser = Parser::new_from_str(text);
    let too_deep = |line: usize, col: usize| {
        Diagnostic::new(
            Span::new(line, col + 1),
            format!("the pipeline nests lists and mappings deeper than {MAX_DEPTH} levels here"),
        )
        .help("a pipeline needs only a few levels; flatten this value")
    };
    let mut depth = 0usize;
    loop {
        let (event, mark) = match parser.next_token() {
            Ok(next) => next,
            // The scanner's own bound on flow nesting (`[[[[...`) says the same.
            Err(e) if e.info().contains("recursion limit") => {
                return Err(too_deep(e.marker().line(), e.marker().col()));
            }
            // Other syntax errors are the loader's to report, with its wording.
            Err(_) => return Ok(()),
        };
        match event {
            Event::StreamEnd => return Ok(()),
            Event::MappingStart(..) | Event::SequenceStart(..) => {
                depth += 1;
                if depth > MAX_DEPTH {
                    return Err(too_deep(mark.line(), mark.col()));
                }
            }
            Event::MappingEnd | Event::SequenceEnd => depth = depth.saturating_sub(1),
            _ => {}
        }
    }
}

fn scalar(s: &marked_yaml::types::MarkedScalarNode, lines: &[&str]) -> Scalar {
    let text = s.as_str().to_string();
    let mut span = Span::from_marked(s.span());
    // The parser marks the first key of a block mapping that opens a sequence entry
    // (`- id: a`) at its colon; find the key itself on that line.
    if s.may_coerce()
        && !text.is_empty()
        && let Some(line) = span.line.checked_sub(1).and_then(|i| lines.get(i))
    {
        let chars: Vec<char> = line.chars().collect();
        let at = |col: usize| {
            chars
                .iter()
                .skip(col.saturating_sub(1))
                .collect::<String>()
                .starts_with(&text)
        };
        if !at(span.column)
            && let Some(col) = (1..span.column).rev().find(|c| at(*c))
        {
            span.column = col;
        }
    }
    Scalar {
        text,
        span,
        plain: s.may_coerce(),
    }
}

fn load_error(e: marked_yaml::LoadError) -> Diagnostic {
    use marked_yaml::LoadError::*;
    let at = |m: &marked_yaml::Marker| Span::new(m.line(), m.column());
    match e {
        TopLevelMustBeMapping(m) => Diagnostic::new(at(&m), "a pipeline file must be a mapping")
            .help("start with `name: my-pipeline` and a `steps:` list"),
        TopLevelMustBeSequence(m) => Diagnostic::new(at(&m), "expected a list"),
        UnexpectedAnchor(m) => Diagnostic::new(at(&m), "YAML anchors and aliases are not supported in pipelines"),
        MappingKeyMustBeScalar(m) => Diagnostic::new(at(&m), "mapping keys must be plain names"),
        UnexpectedTag(m) => Diagnostic::new(at(&m), "YAML tags (`!tag`) are not supported in pipelines"),
        ScanError(m, err) => Diagnostic::new(at(&m), format!("invalid YAML: {}", err.info()))
            .help("check indentation and quoting around this position"),
        DuplicateKey(inner) => {
            let prev = inner.prev_key.span().start().map(|m| m.line()).unwrap_or(0);
            Diagnostic::new(
                Span::from_marked(inner.key.span()),
                format!(
                    "`{}` appears twice in this mapping (first on line {prev})",
                    inner.key.as_str()
                ),
            )
            .help("remove one of them")
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keeps_positions_of_nested_values() {
        let y = Yaml::parse("a:\n  b: [x, 'y']\n").unwrap();
        let Yaml::Map(top, _) = y else { panic!() };
        let Yaml::Map(inner, _) = &top[0].1 else { panic!() };
        let Yaml::List(items, _) = &inner[0].1 else { panic!() };
        assert_eq!(items[1].span(), Span::new(2, 10));
        assert!(!items[1].as_scalar().unwrap().plain);
    }

    #[test]
    fn deep_nesting_is_refused_with_its_position() {
        let flow = format!("a: {}1{}\n", "[".repeat(100_000), "]".repeat(100_000));
        let e = Yaml::parse(&flow).unwrap_err();
        assert!(e.message.contains("deeper than 64"), "{e:?}");
        assert_eq!(e.span.line, 1);
        let mut block = String::new();
        for level in 0..200 {
            block.push_str(&format!("{}k{level}:\n", " ".repeat(level)));
        }
        block.push_str(&format!("{}v: 1\n", " ".repeat(200)));
        let e = Yaml::parse(&block).unwrap_err();
        assert!(e.message.contains("deeper than 64"), "{e:?}");
        assert!(e.span.line > 60 && e.span.line < 70, "{e:?}");
        let ok = format!("a: {}1{}\n", "[".repeat(60), "]".repeat(60));
        assert!(Yaml::parse(&ok).is_ok());
    }

    #[test]
    fn reports_syntax_errors_with_position() {
        let e = Yaml::parse("a: [1, 2\nb: 3\n").unwrap_err();
        assert!(e.span.line >= 1 && e.message.starts_with("invalid YAML"), "{e:?}");
        let e = Yaml::parse("a: 1\na: 2\n").unwrap_err();
        assert_eq!(e.span, Span::new(2, 1));
        assert!(e.message.contains("appears twice"));
    }
}
