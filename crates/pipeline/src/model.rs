//! The pipeline file, read into a model that remembers where everything came from.

use super::diagnostic::{Diagnostic, Diagnostics, SourceFile, Span, suggest};
use super::expr::{self, Expr, Template};
use super::yaml::{Scalar, Yaml};
use crate::grants::Grants;
use std::path::{Path, PathBuf};
use std::time::Duration;

#[derive(Debug, Clone)]
pub struct Pipeline {
    pub source: SourceFile,
    pub name: String,
    pub vars: Vec<VarDecl>,
    pub on_failure: OnFailure,
    /// Defaults for every step's limits.
    pub limits: LimitOverrides,
    pub steps: Vec<StepDecl>,
}

/// `limits:` of the pipeline or a step; unset fields fall back to the level above.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct LimitOverrides {
    pub memory: Option<u64>,
    pub fuel: Option<u64>,
    pub log: Option<u64>,
    pub output: Option<u64>,
    pub disk: Option<u64>,
    pub journal: Option<u64>,
    pub timeout: Option<Duration>,
}

impl LimitOverrides {
    /// `self` over `below`.
    pub fn over(self, below: LimitOverrides) -> LimitOverrides {
        LimitOverrides {
            memory: self.memory.or(below.memory),
            fuel: self.fuel.or(below.fuel),
            log: self.log.or(below.log),
            output: self.output.or(below.output),
            disk: self.disk.or(below.disk),
            journal: self.journal.or(below.journal),
            timeout: self.timeout.or(below.timeout),
        }
    }
}

#[derive(Debug, Clone)]
pub struct VarDecl {
    pub name: String,
    pub span: Span,
    /// None: the var must be given with `--var NAME=VALUE`.
    pub default: Option<String>,
    pub description: Option<String>,
}

/// What happens to a service left `upgraded` when the run fails or is interrupted.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum OnFailure {
    #[default]
    Rollback,
    /// Leave it for `wharf confirm` / `wharf rollback`.
    Pause,
}

#[derive(Debug, Clone)]
pub struct StepDecl {
    pub id: String,
    pub id_span: Span,
    pub uses: String,
    pub uses_span: Span,
    pub with: Vec<Param>,
    /// The step's explicit `allow:` grants.
    pub allow: Grants,
    pub limits: LimitOverrides,
    pub timeout: Option<Duration>,
    pub retry: Retry,
    /// `if:`; None means `success()`.
    pub condition: Option<(Expr, Span)>,
}

#[derive(Debug, Clone)]
pub struct Param {
    pub name: String,
    pub name_span: Span,
    pub value: Yaml,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Retry {
    /// Total attempts, the first included.
    pub attempts: u32,
    /// Wait before the second attempt; doubles for each later one.
    pub backoff: Duration,
}

impl Default for Retry {
    fn default() -> Self {
        Self {
            attempts: 1,
            backoff: Duration::from_secs(1),
        }
    }
}

/// Where a step's component comes from.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum StepSource {
    Builtin(String),
    File(PathBuf),
    /// `oci://...` as written, a step published to a registry.
    Oci(String),
}

impl StepDecl {
    pub fn source(&self, pipeline_dir: &Path) -> StepSource {
        if self.uses.starts_with("oci://") {
            return StepSource::Oci(self.uses.clone());
        }
        match self.uses.strip_prefix("builtin:") {
            Some(name) => StepSource::Builtin(name.to_string()),
            None => {
                let relative: PathBuf = Path::new(&self.uses)
                    .components()
                    .filter(|c| *c != std::path::Component::CurDir)
                    .collect();
                StepSource::File(pipeline_dir.join(relative))
            }
        }
    }
}

impl Pipeline {
    pub fn dir(&self) -> &Path {
        self.source.path.parent().unwrap_or(Path::new("."))
    }

    pub fn load(path: &Path) -> Result<Pipeline, Diagnostics> {
        let failed = |span, message: String| Diagnostics {
            source: SourceFile {
                path: path.to_path_buf(),
                text: "".into(),
            },
            items: vec![Diagnostic::new(span, message)],
        };
        let bytes = wharf_fs::bounded::read(path, PIPELINE_LIMIT)
            .map_err(|e| failed(Span::new(1, 1), format!("cannot read the pipeline file: {e}")))?;
        match String::from_utf8(bytes) {
            Ok(text) => Self::parse(path, &text),
            Err(e) => {
                let bytes = e.as_bytes();
                let good = e.utf8_error().valid_up_to();
                let before = String::from_utf8_lossy(&bytes[..good]);
                let line = before.matches('\n').count() + 1;
                let column = before.rsplit('\n').next().map_or(0, |l| l.chars().count()) + 1;
                Err(failed(
                    Span::new(line, column),
                    format!(
                        "the pipeline file is not UTF-8: byte 0x{:02x} here is not text",
                        bytes[good]
                    ),
                ))
            }
        }
    }

    pub fn parse(path: &Path, text: &str) -> Result<Pipeline, Diagnostics> {
        let source = SourceFile {
            path: path.to_path_buf(),
            text: text.into(),
        };
        let mut reader = Reader::default();
        let pipeline = match Yaml::parse(text) {
            Ok(yaml) => reader.pipeline(&yaml, source.clone()),
            Err(d) => {
                reader.errors.push(d);
                None
            }
        };
        match pipeline {
            Some(p) if reader.errors.is_empty() => Ok(p),
            _ => Err(Diagnostics {
                source,
                items: reader.errors,
            }),
        }
    }
}

/// Largest pipeline file read: far beyond any real pipeline.
pub const PIPELINE_LIMIT: u64 = 4 << 20;

pub const PIPELINE_KEYS: &[&str] = &["name", "vars", "on-failure", "limits", "steps"];
pub const STEP_KEYS: &[&str] = &["id", "uses", "with", "allow", "limits", "timeout", "retry", "if"];
const LIMIT_KEYS: &[&str] = &["memory", "fuel", "log", "output", "disk", "journal", "timeout"];
const RETRY_KEYS: &[&str] = &["attempts", "backoff"];
const VAR_KEYS: &[&str] = &["default", "description"];

#[derive(Default)]
struct Reader {
    errors: Vec<Diagnostic>,
}

impl Reader {
    fn error(&mut self, d: Diagnostic) {
        self.errors.push(d);
    }

    fn check_keys(&mut self, map: &[(Scalar, Yaml)], allowed: &[&str], what: &str) {
        for (key, _) in map {
            if !allowed.contains(&key.text.as_str()) {
                let help = match suggest(&key.text, allowed.iter().copied()) {
                    Some(s) => format!("did you mean `{s}`? {what} takes: {}", allowed.join(", ")),
                    None => format!("{what} takes: {}", allowed.join(", ")),
                };
                self.error(Diagnostic::new(key.span, format!("unknown key `{}` in {what}", key.text)).help(help));
            }
        }
    }

    fn text(&mut self, value: &Yaml, what: &str) -> Option<Scalar> {
        match value {
            Yaml::Scalar(s) if !s.is_null() => Some(s.clone()),
            other => {
                self.error(Diagnostic::new(
                    other.span(),
                    format!("{what} must be a single value, not {}", other.kind()),
                ));
                None
            }
        }
    }

    fn pipeline(&mut self, yaml: &Yaml, source: SourceFile) -> Option<Pipeline> {
        let Yaml::Map(map, _) = yaml else {
            self.error(
                Diagnostic::new(yaml.span(), "a pipeline file must be a mapping")
                    .help("start with `name: my-pipeline` and a `steps:` list"),
            );
            return None;
        };
        self.check_keys(map, PIPELINE_KEYS, "a pipeline");
        let get = |k: &str| map.iter().find(|(key, _)| key.text == k).map(|(_, v)| v);

        let name = match get("name") {
            Some(v) => self.text(v, "`name`").map(|s| s.text).unwrap_or_default(),
            None => {
                self.error(
                    Diagnostic::new(yaml.span(), "the pipeline has no `name`")
                        .help("add `name: my-pipeline` at the top"),
                );
                String::new()
            }
        };
        let vars = get("vars").map(|v| self.vars(v)).unwrap_or_default();
        let on_failure = match get("on-failure") {
            None => OnFailure::default(),
            Some(v) => match self.text(v, "`on-failure`").as_ref().map(|s| s.text.as_str()) {
                Some("rollback") => OnFailure::Rollback,
                Some("pause") => OnFailure::Pause,
                Some(other) => {
                    self.error(
                        Diagnostic::new(v.span(), format!("unknown on-failure `{other}`"))
                            .help("use `rollback` (the default) or `pause`"),
                    );
                    OnFailure::default()
                }
                None => OnFailure::default(),
            },
        };
        let limits = get("limits").map(|v| self.limits(v)).unwrap_or_default();
        let steps = match get("steps") {
            Some(Yaml::List(items, _)) => items.iter().filter_map(|s| self.step(s)).collect(),
            Some(other) => {
                self.error(Diagnostic::new(
                    other.span(),
                    format!("`steps` must be a list, not {}", other.kind()),
                ));
                Vec::new()
            }
            None => {
                self.error(Diagnostic::new(yaml.span(), "the pipeline has no `steps`").help("add a `steps:` list"));
                Vec::new()
            }
        };
        let mut seen: Vec<(&str, Span)> = Vec::new();
        let mut duplicates = Vec::new();
        for step in &steps {
            if let Some((_, first)) = seen.iter().find(|(id, _)| *id == step.id) {
                duplicates.push(
                    Diagnostic::new(
                        step.id_span,
                        format!("step id `{}` is used twice (first on line {})", step.id, first.line),
                    )
                    .help("give every step its own id"),
                );
            } else {
                seen.push((&step.id, step.id_span));
            }
        }
        self.errors.extend(duplicates);
        Some(Pipeline {
            source,
            name,
            vars,
            on_failure,
            limits,
            steps,
        })
    }

    fn vars(&mut self, yaml: &Yaml) -> Vec<VarDecl> {
        let Yaml::Map(map, _) = yaml else {
            self.error(
                Diagnostic::new(yaml.span(), format!("`vars` must be a mapping, not {}", yaml.kind()))
                    .help("write `vars:` then `  NAME: default` lines"),
            );
            return Vec::new();
        };
        let mut out = Vec::new();
        for (key, value) in map {
            if !is_identifier(&key.text) {
                self.error(
                    Diagnostic::new(key.span, format!("`{}` is not a valid var name", key.text))
                        .help("use letters, digits, `_` and `-`, starting with a letter"),
                );
            }
            let (default, description) = match value {
                Yaml::Scalar(s) if s.is_null() => (None, None),
                Yaml::Scalar(s) => (Some(s.text.clone()), None),
                Yaml::Map(fields, _) => {
                    self.check_keys(fields, VAR_KEYS, "a var");
                    let field = |k: &str| fields.iter().find(|(f, _)| f.text == k).map(|(_, v)| v);
                    let default = field("default").and_then(|v| match v {
                        Yaml::Scalar(s) if s.is_null() => None,
                        v => self.text(v, "a var default").map(|s| s.text),
                    });
                    let description = field("description")
                        .and_then(|v| self.text(v, "a var description"))
                        .map(|s| s.text);
                    (default, description)
                }
                Yaml::List(_, span) => {
                    self.error(Diagnostic::new(
                        *span,
                        format!("var `{}` must be a single value", key.text),
                    ));
                    (None, None)
                }
            };
            out.push(VarDecl {
                name: key.text.clone(),
                span: key.span,
                default,
                description,
            });
        }
        out
    }

    fn step(&mut self, yaml: &Yaml) -> Option<StepDecl> {
        let Yaml::Map(map, span) = yaml else {
            self.error(
                Diagnostic::new(yaml.span(), format!("a step must be a mapping, not {}", yaml.kind()))
                    .help("write `- id: NAME` and `uses: builtin:NAME` under `steps:`"),
            );
            return None;
        };
        self.check_keys(map, STEP_KEYS, "a step");
        let get = |k: &str| map.iter().find(|(key, _)| key.text == k).map(|(_, v)| v);
        let id = match get("id") {
            Some(v) => self.text(v, "`id`")?,
            None => {
                self.error(
                    Diagnostic::new(*span, "this step has no `id`").help("add `id: NAME`; later steps refer to it"),
                );
                return None;
            }
        };
        if !is_identifier(&id.text) {
            self.error(
                Diagnostic::new(id.span, format!("`{}` is not a valid step id", id.text))
                    .help("use letters, digits, `_` and `-`, starting with a letter"),
            );
        }
        let uses = match get("uses") {
            Some(v) => self.text(v, "`uses`")?,
            None => {
                self.error(
                    Diagnostic::new(id.span, format!("step `{}` has no `uses`", id.text))
                        .help("add `uses: builtin:NAME` (see `wharf steps`) or `uses: ./path/to/step.wasm`"),
                );
                return None;
            }
        };
        let with = match get("with") {
            None => Vec::new(),
            Some(Yaml::Map(params, _)) => params
                .iter()
                .map(|(k, v)| Param {
                    name: k.text.clone(),
                    name_span: k.span,
                    value: v.clone(),
                })
                .collect(),
            Some(other) => {
                self.error(Diagnostic::new(
                    other.span(),
                    format!("`with` must be a mapping of parameters, not {}", other.kind()),
                ));
                Vec::new()
            }
        };
        let timeout = get("timeout").and_then(|v| {
            let s = self.text(v, "`timeout`")?;
            self.duration(&s)
        });
        let retry = get("retry").map(|v| self.retry(v)).unwrap_or_default();
        let condition = get("if").and_then(|v| {
            let s = self.text(v, "`if`")?;
            match expr::parse_condition(&s.text) {
                Ok(e) => Some((e, s.span)),
                Err(e) => {
                    self.error(expression_error(&s, &e));
                    None
                }
            }
        });
        let allow = match get("allow") {
            None => Grants {
                step_id: id.text.clone(),
                ..Grants::default()
            },
            Some(v) => Grants::from_allow(&id.text, v).unwrap_or_else(|errors| {
                self.errors.extend(errors);
                Grants::default()
            }),
        };
        Some(StepDecl {
            id: id.text,
            id_span: id.span,
            uses: uses.text,
            uses_span: uses.span,
            with,
            allow,
            limits: get("limits").map(|v| self.limits(v)).unwrap_or_default(),
            timeout,
            retry,
            condition,
        })
    }

    fn duration(&mut self, s: &Scalar) -> Option<Duration> {
        match parse_duration(&s.text) {
            Ok(d) => Some(d),
            Err(message) => {
                self.error(Diagnostic::new(s.span, message).help("write a duration such as `90s`, `5m` or `1h30m`"));
                None
            }
        }
    }

    fn limits(&mut self, yaml: &Yaml) -> LimitOverrides {
        let mut limits = LimitOverrides::default();
        let Yaml::Map(fields, _) = yaml else {
            self.error(Diagnostic::new(yaml.span(), "`limits` must be a mapping").help(
                "write e.g. `limits: { memory: 256MiB, timeout: 10m, fuel: 1000000000, log: 1MiB, disk: 100MiB }`",
            ));
            return limits;
        };
        self.check_keys(fields, LIMIT_KEYS, "`limits`");
        for (key, value) in fields {
            let Some(s) = self.text(value, &format!("`limits.{}`", key.text)) else {
                continue;
            };
            let size = |reader: &mut Reader| match parse_size(&s.text) {
                Ok(n) => Some(n),
                Err(why) => {
                    reader.error(
                        Diagnostic::new(s.span, why).help("write a size such as `256MiB`, `1GiB` or `500000` (bytes)"),
                    );
                    None
                }
            };
            match key.text.as_str() {
                "memory" => limits.memory = size(self),
                "log" => limits.log = size(self),
                "output" => limits.output = size(self),
                "disk" => limits.disk = size(self),
                "journal" => limits.journal = size(self),
                "fuel" => match s.text.replace('_', "").parse::<u64>() {
                    Ok(n) if n > 0 => limits.fuel = Some(n),
                    _ => self.error(
                        Diagnostic::new(s.span, format!("`{}` is not an amount of fuel", s.text))
                            .help("a whole number of fuel units, e.g. 1000000000"),
                    ),
                },
                "timeout" => limits.timeout = self.duration(&s),
                _ => {}
            }
        }
        limits
    }

    fn retry(&mut self, yaml: &Yaml) -> Retry {
        let mut retry = Retry::default();
        match yaml {
            Yaml::Scalar(s) => {
                if let Some(n) = self.attempts(s) {
                    retry.attempts = n;
                }
            }
            Yaml::Map(fields, _) => {
                self.check_keys(fields, RETRY_KEYS, "`retry`");
                for (k, v) in fields {
                    let Some(s) = self.text(v, &format!("`retry.{}`", k.text)) else {
                        continue;
                    };
                    match k.text.as_str() {
                        "attempts" => retry.attempts = self.attempts(&s).unwrap_or(retry.attempts),
                        "backoff" => retry.backoff = self.duration(&s).unwrap_or(retry.backoff),
                        _ => {}
                    }
                }
            }
            Yaml::List(_, span) => self.error(
                Diagnostic::new(*span, "`retry` must be a number of attempts or a mapping")
                    .help("write `retry: 3` or `retry: { attempts: 3, backoff: 2s }`"),
            ),
        }
        retry
    }

    fn attempts(&mut self, s: &Scalar) -> Option<u32> {
        match s.text.parse::<u32>() {
            Ok(n) if (1..=100).contains(&n) => Some(n),
            _ => {
                self.error(
                    Diagnostic::new(s.span, format!("`{}` is not a number of attempts", s.text))
                        .help("attempts count the first try: a number from 1 to 100"),
                );
                None
            }
        }
    }
}

/// A diagnostic for an expression error inside a scalar, pointing at the offending
/// character when the scalar sits on one line.
pub fn expression_error(s: &Scalar, e: &expr::ParseError) -> Diagnostic {
    let quote = usize::from(!s.plain);
    let span = if s.text.contains('\n') {
        s.span
    } else {
        Span::new(s.span.line, s.span.column + quote + e.offset)
    };
    // A long expression is shown by its start: the position says where.
    let shown: String = if s.text.chars().count() > 60 {
        format!("{}…", s.text.chars().take(60).collect::<String>())
    } else {
        s.text.clone()
    };
    Diagnostic::new(span, format!("in `{shown}`: {}", e.message))
}

/// Parse a `with:` string template, pointing errors into the scalar.
pub fn template(s: &Scalar) -> Result<Template, Diagnostic> {
    Template::parse(&s.text).map_err(|e| expression_error(s, &e))
}

pub fn parse_duration(text: &str) -> Result<Duration, String> {
    let text = text.trim();
    if text.chars().all(|c| c.is_ascii_digit()) && !text.is_empty() {
        return Err(format!("`{text}` has no unit"));
    }
    humantime::parse_duration(text).map_err(|_| format!("`{text}` is not a duration"))
}

/// `512MiB`, `1GiB`, `10MB`, `4096`: bytes.
pub fn parse_size(text: &str) -> Result<u64, String> {
    let t = text.trim();
    let split = t.find(|c: char| !c.is_ascii_digit()).unwrap_or(t.len());
    let (digits, unit) = t.split_at(split);
    let n: u64 = digits.parse().map_err(|_| format!("`{text}` is not a size"))?;
    let factor: u64 = match unit.trim() {
        "" | "B" => 1,
        "KiB" | "K" => 1 << 10,
        "MiB" | "M" => 1 << 20,
        "GiB" | "G" => 1 << 30,
        "kB" | "KB" => 1000,
        "MB" => 1_000_000,
        "GB" => 1_000_000_000,
        other => return Err(format!("`{other}` is not a size unit (KiB, MiB, GiB, kB, MB, GB)")),
    };
    n.checked_mul(factor)
        .filter(|n| *n > 0)
        .ok_or_else(|| format!("`{text}` is not a size"))
}

pub fn is_identifier(s: &str) -> bool {
    let mut chars = s.chars();
    chars.next().is_some_and(|c| c.is_ascii_alphabetic())
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-')
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> Result<Pipeline, Diagnostics> {
        Pipeline::parse(Path::new("p.yml"), text)
    }

    #[test]
    fn reads_a_full_pipeline() {
        let p = parse(
            "name: demo\nvars:\n  status: OK\n  registry:\n  target: { default: local, description: where }\n\
             on-failure: pause\nsteps:\n  - id: a\n    uses: builtin:exec\n    with: { program: 'true' }\n    \
             timeout: 90s\n    retry: { attempts: 3, backoff: 2s }\n  - id: b\n    uses: ./b.wasm\n    if: failure()\n",
        )
        .unwrap();
        assert_eq!(p.name, "demo");
        assert_eq!(p.on_failure, OnFailure::Pause);
        assert_eq!(p.vars[0].default.as_deref(), Some("OK"));
        assert_eq!(p.vars[1].default, None);
        assert_eq!(p.vars[2].description.as_deref(), Some("where"));
        assert_eq!(p.steps[0].timeout, Some(Duration::from_secs(90)));
        assert_eq!(p.steps[0].retry.attempts, 3);
        assert_eq!(p.steps[1].source(Path::new("/x")), StepSource::File("/x/b.wasm".into()));
        assert!(p.steps[1].condition.is_some());
    }

    #[test]
    fn reports_every_error_with_its_position() {
        let e = parse(
            "name: demo\nstep: []\nsteps:\n  - id: a\n    uses: builtin:exec\n    timout: 5s\n  - id: a\n    uses: x.wasm\n    \
             if: succes()\n    timeout: 5\n",
        )
        .unwrap_err();
        let text = e.to_string();
        assert!(text.contains("unknown key `step` in a pipeline"), "{text}");
        assert!(text.contains("p.yml:2:1"), "{text}");
        assert!(text.contains("did you mean `timeout`?"), "{text}");
        assert!(text.contains("p.yml:6:5"), "{text}");
        assert!(text.contains("step id `a` is used twice (first on line 4)"), "{text}");
        assert!(text.contains("unknown function `succes()`"), "{text}");
        assert!(text.contains("p.yml:9:9"), "{text}");
        assert!(text.contains("`5` has no unit"), "{text}");
        assert_eq!(e.items.len(), 5, "{text}");
    }
}
