//! The expression language of `${{ ... }}` interpolation and `if:` conditions.
//!
//! ```text
//! expr    := or
//! or      := and ("||" and)*
//! and     := unary ("&&" unary)*
//! unary   := "!" unary | compare
//! compare := atom (("==" | "!=") atom)?
//! atom    := "(" expr ")" | 'text' | "text" | true | false | NAME "()" | reference
//! reference := vars.NAME | env.NAME | steps.ID.outputs.KEY | steps.ID.outcome | run.id
//! ```
//!
//! Expressions are bounded: at most [`MAX_LEN`] bytes and [`MAX_DEPTH`] levels of `(` and
//! `!`, so parsing, evaluating and dropping one never runs deep on the stack; `&&` and `||`
//! chains are flat lists, however long.

use std::fmt;

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Reference {
    Var(String),
    Env(String),
    StepOutput {
        step: String,
        key: String,
    },
    StepOutcome {
        step: String,
    },
    RunId,
    /// `matrix.NAME`: this instance's value of a `matrix:` axis.
    Matrix(String),
}

impl fmt::Display for Reference {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Reference::Var(n) => write!(f, "vars.{n}"),
            Reference::Env(n) => write!(f, "env.{n}"),
            Reference::StepOutput { step, key } => write!(f, "steps.{step}.outputs.{key}"),
            Reference::StepOutcome { step } => write!(f, "steps.{step}.outcome"),
            Reference::RunId => write!(f, "run.id"),
            Reference::Matrix(n) => write!(f, "matrix.{n}"),
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StatusFn {
    /// Every step this one needs, directly or through others, succeeded (or was skipped):
    /// the default condition.
    Success,
    /// Some step this one needs, directly or through others, failed.
    Failure,
    Always,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Expr {
    Ref(Reference),
    Text(String),
    Bool(bool),
    Status(StatusFn),
    Not(Box<Expr>),
    /// Two or more operands.
    And(Vec<Expr>),
    /// Two or more operands.
    Or(Vec<Expr>),
    Eq(Box<Expr>, Box<Expr>),
    Ne(Box<Expr>, Box<Expr>),
}

impl Expr {
    pub fn references(&self) -> Vec<&Reference> {
        let mut out = Vec::new();
        self.collect_refs(&mut out);
        out
    }

    fn collect_refs<'a>(&'a self, out: &mut Vec<&'a Reference>) {
        match self {
            Expr::Ref(r) => out.push(r),
            Expr::Not(e) => e.collect_refs(out),
            Expr::And(all) | Expr::Or(all) => all.iter().for_each(|e| e.collect_refs(out)),
            Expr::Eq(a, b) | Expr::Ne(a, b) => {
                a.collect_refs(out);
                b.collect_refs(out);
            }
            Expr::Text(_) | Expr::Bool(_) | Expr::Status(_) => {}
        }
    }

    pub fn uses_status(&self) -> bool {
        match self {
            Expr::Status(_) => true,
            Expr::Not(e) => e.uses_status(),
            Expr::And(all) | Expr::Or(all) => all.iter().any(Expr::uses_status),
            Expr::Eq(a, b) | Expr::Ne(a, b) => a.uses_status() || b.uses_status(),
            Expr::Ref(_) | Expr::Text(_) | Expr::Bool(_) => false,
        }
    }
}

/// What expressions are evaluated against.
pub trait Scope {
    fn lookup(&self, reference: &Reference) -> Result<String, String>;
    fn status(&self, f: StatusFn) -> bool;
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Evaluated {
    Text(String),
    Bool(bool),
}

impl Evaluated {
    pub fn truthy(&self) -> bool {
        match self {
            Evaluated::Bool(b) => *b,
            Evaluated::Text(s) => !s.is_empty() && s != "false",
        }
    }

    pub fn into_text(self) -> String {
        match self {
            Evaluated::Text(s) => s,
            Evaluated::Bool(b) => b.to_string(),
        }
    }
}

pub fn evaluate(expr: &Expr, scope: &dyn Scope) -> Result<Evaluated, String> {
    Ok(match expr {
        Expr::Ref(r) => Evaluated::Text(scope.lookup(r)?),
        Expr::Text(s) => Evaluated::Text(s.clone()),
        Expr::Bool(b) => Evaluated::Bool(*b),
        Expr::Status(f) => Evaluated::Bool(scope.status(*f)),
        Expr::Not(e) => Evaluated::Bool(!evaluate(e, scope)?.truthy()),
        // As in GitHub's expressions, `&&` and `||` give the operand that decided them, so
        // `vars.target == 'swarm' && 'ssd' || ''` picks a value.
        Expr::And(all) => {
            let mut last = Evaluated::Bool(true);
            for e in all {
                last = evaluate(e, scope)?;
                if !last.truthy() {
                    break;
                }
            }
            last
        }
        Expr::Or(all) => {
            let mut last = Evaluated::Bool(false);
            for e in all {
                last = evaluate(e, scope)?;
                if last.truthy() {
                    break;
                }
            }
            last
        }
        Expr::Eq(a, b) => Evaluated::Bool(evaluate(a, scope)?.into_text() == evaluate(b, scope)?.into_text()),
        Expr::Ne(a, b) => Evaluated::Bool(evaluate(a, scope)?.into_text() != evaluate(b, scope)?.into_text()),
    })
}

/// A parse error at a character offset into the expression text.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ParseError {
    pub offset: usize,
    pub message: String,
}

#[derive(Debug, Clone, PartialEq)]
enum Token {
    Ident(String),
    Text(String),
    Dot,
    LParen,
    RParen,
    Not,
    And,
    Or,
    EqEq,
    NotEq,
}

fn tokenize(src: &str) -> Result<Vec<(usize, Token)>, ParseError> {
    let chars: Vec<char> = src.chars().collect();
    let mut i = 0;
    let mut out = Vec::new();
    let err = |offset, message: &str| ParseError {
        offset,
        message: message.to_string(),
    };
    while i < chars.len() {
        let c = chars[i];
        let start = i;
        let two = |n: char| chars.get(i + 1) == Some(&n);
        let token = match c {
            ' ' | '\t' | '\n' | '\r' => {
                i += 1;
                continue;
            }
            '.' => Token::Dot,
            '(' => Token::LParen,
            ')' => Token::RParen,
            '!' if two('=') => {
                i += 1;
                Token::NotEq
            }
            '!' => Token::Not,
            '=' if two('=') => {
                i += 1;
                Token::EqEq
            }
            '&' if two('&') => {
                i += 1;
                Token::And
            }
            '|' if two('|') => {
                i += 1;
                Token::Or
            }
            '\'' | '"' => {
                let mut text = String::new();
                i += 1;
                loop {
                    match chars.get(i) {
                        None => return Err(err(start, "unterminated string")),
                        Some(&q) if q == c => break,
                        Some(&ch) => text.push(ch),
                    }
                    i += 1;
                }
                Token::Text(text)
            }
            c if c.is_ascii_alphanumeric() || c == '_' => {
                let mut ident = String::new();
                while let Some(&ch) = chars.get(i) {
                    if ch.is_ascii_alphanumeric() || ch == '_' || ch == '-' {
                        ident.push(ch);
                        i += 1;
                    } else {
                        break;
                    }
                }
                out.push((start, Token::Ident(ident)));
                continue;
            }
            other => return Err(err(start, &format!("unexpected `{other}`"))),
        };
        out.push((start, token));
        i += 1;
    }
    Ok(out)
}

/// Longest expression text, in bytes.
pub const MAX_LEN: usize = 16 * 1024;
/// Deepest nesting of `(` and `!`.
pub const MAX_DEPTH: usize = 32;

struct Parser {
    tokens: Vec<(usize, Token)>,
    pos: usize,
    end: usize,
    depth: usize,
}

impl Parser {
    fn peek(&self) -> Option<&Token> {
        self.tokens.get(self.pos).map(|(_, t)| t)
    }

    fn offset(&self) -> usize {
        self.tokens.get(self.pos).map_or(self.end, |(o, _)| *o)
    }

    fn error<T>(&self, message: impl Into<String>) -> Result<T, ParseError> {
        Err(ParseError {
            offset: self.offset(),
            message: message.into(),
        })
    }

    fn eat(&mut self, token: &Token) -> bool {
        if self.peek() == Some(token) {
            self.pos += 1;
            true
        } else {
            false
        }
    }

    /// One level deeper (a `(` or a `!`), or an error past [`MAX_DEPTH`].
    fn descend(&mut self) -> Result<(), ParseError> {
        self.depth += 1;
        if self.depth > MAX_DEPTH {
            return self.error(format!(
                "the expression nests deeper than {MAX_DEPTH} levels of `(` and `!`; split it up"
            ));
        }
        Ok(())
    }

    fn or(&mut self) -> Result<Expr, ParseError> {
        let mut all = vec![self.and()?];
        while self.eat(&Token::Or) {
            all.push(self.and()?);
        }
        Ok(if all.len() == 1 {
            all.pop().unwrap()
        } else {
            Expr::Or(all)
        })
    }

    fn and(&mut self) -> Result<Expr, ParseError> {
        let mut all = vec![self.unary()?];
        while self.eat(&Token::And) {
            all.push(self.unary()?);
        }
        Ok(if all.len() == 1 {
            all.pop().unwrap()
        } else {
            Expr::And(all)
        })
    }

    fn unary(&mut self) -> Result<Expr, ParseError> {
        if self.peek() == Some(&Token::Not) {
            self.descend()?;
            self.pos += 1;
            let inner = self.unary()?;
            self.depth -= 1;
            return Ok(Expr::Not(Box::new(inner)));
        }
        let left = self.atom()?;
        if self.eat(&Token::EqEq) {
            return Ok(Expr::Eq(Box::new(left), Box::new(self.atom()?)));
        }
        if self.eat(&Token::NotEq) {
            return Ok(Expr::Ne(Box::new(left), Box::new(self.atom()?)));
        }
        Ok(left)
    }

    fn atom(&mut self) -> Result<Expr, ParseError> {
        let start = self.offset();
        match self.peek().cloned() {
            Some(Token::LParen) => {
                self.descend()?;
                self.pos += 1;
                let e = self.or()?;
                self.depth -= 1;
                if !self.eat(&Token::RParen) {
                    return self.error("expected `)`");
                }
                Ok(e)
            }
            Some(Token::Text(s)) => {
                self.pos += 1;
                Ok(Expr::Text(s))
            }
            Some(Token::Ident(first)) => {
                self.pos += 1;
                if self.eat(&Token::LParen) {
                    if !self.eat(&Token::RParen) {
                        return self.error("status functions take no arguments: write `success()`");
                    }
                    return match first.as_str() {
                        "success" => Ok(Expr::Status(StatusFn::Success)),
                        "failure" => Ok(Expr::Status(StatusFn::Failure)),
                        "always" => Ok(Expr::Status(StatusFn::Always)),
                        other => Err(ParseError {
                            offset: start,
                            message: format!("unknown function `{other}()`; use success(), failure() or always()"),
                        }),
                    };
                }
                match first.as_str() {
                    "true" => return Ok(Expr::Bool(true)),
                    "false" => return Ok(Expr::Bool(false)),
                    _ => {}
                }
                let mut path = vec![first];
                while self.eat(&Token::Dot) {
                    match self.peek().cloned() {
                        Some(Token::Ident(part)) => {
                            self.pos += 1;
                            path.push(part);
                        }
                        _ => return self.error("expected a name after `.`"),
                    }
                }
                reference(&path)
                    .map(Expr::Ref)
                    .map_err(|message| ParseError { offset: start, message })
            }
            Some(_) => self.error("expected a value: a reference such as `vars.NAME`, a 'string' or success()"),
            None => self.error("expected an expression"),
        }
    }
}

fn reference(path: &[String]) -> Result<Reference, String> {
    let p: Vec<&str> = path.iter().map(String::as_str).collect();
    match p.as_slice() {
        ["vars", name] => Ok(Reference::Var(name.to_string())),
        ["env", name] => Ok(Reference::Env(name.to_string())),
        ["steps", step, "outputs", key] => Ok(Reference::StepOutput {
            step: step.to_string(),
            key: key.to_string(),
        }),
        ["steps", step, "outcome"] => Ok(Reference::StepOutcome { step: step.to_string() }),
        ["run", "id"] => Ok(Reference::RunId),
        ["matrix", name] => Ok(Reference::Matrix(name.to_string())),
        _ => Err(format!(
            "unknown reference `{}`; use vars.NAME, env.NAME, steps.ID.outputs.KEY, steps.ID.outcome, matrix.NAME or run.id",
            p.join(".")
        )),
    }
}

pub fn parse(src: &str) -> Result<Expr, ParseError> {
    if src.len() > MAX_LEN {
        return Err(ParseError {
            offset: 0,
            message: format!(
                "the expression is {} bytes long, more than the {MAX_LEN} an expression may have; split it up",
                src.len()
            ),
        });
    }
    let tokens = tokenize(src)?;
    let mut parser = Parser {
        tokens,
        pos: 0,
        end: src.chars().count(),
        depth: 0,
    };
    let expr = parser.or()?;
    if parser.pos < parser.tokens.len() {
        return parser.error("unexpected text after the expression");
    }
    Ok(expr)
}

/// A string with `${{ expr }}` holes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Template {
    pub parts: Vec<Part>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Part {
    Literal(String),
    Expr(Expr),
}

impl Template {
    pub fn parse(src: &str) -> Result<Self, ParseError> {
        let mut parts = Vec::new();
        let mut rest = src;
        let mut consumed = 0;
        while let Some(open) = rest.find("${{") {
            if open > 0 {
                parts.push(Part::Literal(rest[..open].to_string()));
            }
            let inner_start = open + 3;
            let Some(close) = rest[inner_start..].find("}}") else {
                return Err(ParseError {
                    offset: src[..consumed + open].chars().count(),
                    message: "`${{` without a closing `}}`".into(),
                });
            };
            let inner = &rest[inner_start..inner_start + close];
            let expr = parse(inner).map_err(|e| ParseError {
                offset: src[..consumed + inner_start].chars().count() + e.offset,
                message: e.message,
            })?;
            parts.push(Part::Expr(expr));
            let next = inner_start + close + 2;
            consumed += next;
            rest = &rest[next..];
        }
        if !rest.is_empty() {
            parts.push(Part::Literal(rest.to_string()));
        }
        Ok(Self { parts })
    }

    pub fn is_literal(&self) -> bool {
        self.parts.iter().all(|p| matches!(p, Part::Literal(_)))
    }

    pub fn exprs(&self) -> impl Iterator<Item = &Expr> {
        self.parts.iter().filter_map(|p| match p {
            Part::Expr(e) => Some(e),
            Part::Literal(_) => None,
        })
    }

    pub fn render(&self, scope: &dyn Scope) -> Result<String, String> {
        let mut out = String::new();
        for part in &self.parts {
            match part {
                Part::Literal(s) => out.push_str(s),
                Part::Expr(e) => out.push_str(&evaluate(e, scope)?.into_text()),
            }
        }
        Ok(out)
    }
}

/// An `if:` condition; a `${{ }}` wrapper around it is optional.
pub fn parse_condition(src: &str) -> Result<Expr, ParseError> {
    let trimmed = src.trim();
    if let Some(inner) = trimmed.strip_prefix("${{").and_then(|s| s.strip_suffix("}}")) {
        let lead = src.find("${{").unwrap_or(0) + 3;
        return parse(inner).map_err(|e| ParseError {
            offset: lead + e.offset,
            ..e
        });
    }
    parse(src)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    struct TestScope {
        values: HashMap<String, String>,
        failed: bool,
    }

    impl Scope for TestScope {
        fn lookup(&self, r: &Reference) -> Result<String, String> {
            self.values
                .get(&r.to_string())
                .cloned()
                .ok_or_else(|| format!("no {r}"))
        }
        fn status(&self, f: StatusFn) -> bool {
            match f {
                StatusFn::Success => !self.failed,
                StatusFn::Failure => self.failed,
                StatusFn::Always => true,
            }
        }
    }

    fn scope(failed: bool) -> TestScope {
        let mut values = HashMap::new();
        values.insert("vars.status".into(), "OK".into());
        values.insert("steps.gate.outcome".into(), "failure".into());
        values.insert("steps.version.outputs.version".into(), "1.0.1-22-7e56158".into());
        TestScope { values, failed }
    }

    #[test]
    fn conditions_over_outcomes() {
        let s = scope(true);
        let eval = |src: &str| evaluate(&parse_condition(src).unwrap(), &s).unwrap().truthy();
        assert!(eval("failure()"));
        assert!(!eval("success()"));
        assert!(eval("${{ failure() && steps.gate.outcome == 'failure' }}"));
        assert!(eval("always()"));
        assert!(!eval("!always()"));
        assert!(eval("vars.status != 'FAIL' || false"));
        assert!(eval("(success() || failure()) && vars.status == \"OK\""));
        let text = |src: &str| Template::parse(src).unwrap().render(&s).unwrap();
        assert_eq!(text("${{ vars.status == 'OK' && 'ssd' || '' }}"), "ssd");
        assert_eq!(text("${{ vars.status == 'FAIL' && 'ssd' || '' }}"), "");
        assert_eq!(text("${{ vars.status == 'FAIL' && 'ssd' || 'hdd' }}"), "hdd");
        assert_eq!(text("${{ vars.status == 'OK' }}"), "true");
    }

    #[test]
    fn templates_interpolate() {
        let t = Template::parse("app:${{ steps.version.outputs.version }}-${{vars.status}}").unwrap();
        assert_eq!(t.render(&scope(false)).unwrap(), "app:1.0.1-22-7e56158-OK");
        assert!(Template::parse("plain").unwrap().is_literal());
    }

    #[test]
    fn deep_and_long_expressions_are_refused_not_overflowed() {
        let deep = format!("{}true{}", "(".repeat(5_000), ")".repeat(5_000));
        let e = parse_condition(&deep).unwrap_err();
        assert!(e.message.contains("deeper than 32"), "{}", e.message);
        assert_eq!(e.offset, 32);
        let nots = format!("{}true", "!".repeat(5_000));
        assert!(parse(&nots).unwrap_err().message.contains("deeper than 32"));
        let long = vec!["success()"; 100_000].join(" && ");
        assert!(parse(&long).unwrap_err().message.contains("more than the 16384"));
        // Within the limits, a long chain is flat and evaluates without recursion.
        let chain = vec!["success()"; 1_000].join(" && ");
        let e = parse(&chain).unwrap();
        assert!(matches!(&e, Expr::And(all) if all.len() == 1_000));
        assert!(evaluate(&e, &scope(false)).unwrap().truthy());
        let ok = format!("{}true{}", "(".repeat(32), ")".repeat(32));
        assert!(parse(&ok).is_ok());
    }

    #[test]
    fn errors_point_into_the_text() {
        let e = Template::parse("x ${{ steps.a.output.b }}").unwrap_err();
        assert_eq!(e.offset, 6);
        assert!(
            e.message.contains("unknown reference `steps.a.output.b`"),
            "{}",
            e.message
        );
        let e = Template::parse("${{ vars.a").unwrap_err();
        assert!(e.message.contains("closing"));
        let e = parse("succes()").unwrap_err();
        assert!(e.message.contains("unknown function"));
        assert!(parse("vars.a ==").is_err());
        assert!(parse("vars.a vars.b").is_err());
    }
}
