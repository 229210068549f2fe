//! The pipeline file, read into a model that remembers where everything came from.

use super::diagnostic::{Diagnostic, Diagnostics, SourceFile, Span, suggest};
use super::expr::{self, Expr, Template};
use super::graph::Graph;
use super::yaml::{Scalar, Yaml};
use crate::grants::Grants;
use std::collections::HashMap;
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
    /// `concurrency:`: how many steps may run at once unless `--jobs` says otherwise.
    pub concurrency: Option<usize>,
    /// `sandbox: strict`: a program that cannot be confined fully does not start.
    pub sandbox_strict: bool,
    /// Matrix steps come expanded: one [`StepDecl`] per instance.
    pub steps: Vec<StepDecl>,
    /// What runs after what, by index into `steps`.
    pub graph: Graph,
}

/// `limits:` of the pipeline or a step; unset fields fall back to the level above.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct LimitOverrides {
    pub memory: Option<u64>,
    /// Processes its programs may have at once (their user's, as the kernel counts them).
    pub processes: Option<u64>,
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
            processes: self.processes.or(below.processes),
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
    /// The ids of the steps this one runs after (a matrix step's instances, each). Without
    /// `needs:`, a step needs the one before it in the file.
    pub needs: Vec<String>,
    /// Where `needs:` was written; None when the file's order implies the needs.
    pub needs_span: Option<Span>,
    /// Set on an instance of a `matrix:` step.
    pub instance: Option<Instance>,
    /// `cache:` (true unless said otherwise): whether the step cache may reuse its result.
    pub cache: bool,
}

/// One combination of a `matrix:` step's values, run as a step of its own whose id is the
/// matrix step's id and the values, joined by `-` (`build-x86_64-linux`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Instance {
    /// The `id:` written on the matrix step.
    pub group: String,
    /// `${{ matrix.NAME }}` values, in the order the axes were written.
    pub values: Vec<(String, String)>,
    /// `fail-fast:` (default true): once one instance failed, the instances not yet started
    /// are skipped.
    pub fail_fast: bool,
    pub matrix_span: Span,
}

/// Most combinations one `matrix:` may expand to.
pub const MATRIX_LIMIT: usize = 256;
/// Most steps `concurrency:` (or `--jobs`) may let run at once.
pub const MAX_CONCURRENCY: usize = 1024;
/// Most steps a pipeline may hold, matrix instances counted.
pub const STEP_LIMIT: usize = 10_000;
/// Most bytes of steps a pipeline may expand to, matrix instances counted: a few times the
/// largest file, so no file grows past that in memory.
pub const EXPANDED_LIMIT: usize = 4 * PIPELINE_LIMIT as usize;

/// A step as written, before its matrix is expanded and its needs resolved.
struct RawStep {
    decl: StepDecl,
    /// The line the step starts on.
    line: usize,
    /// Bytes of the file the step takes up: what each matrix instance copies.
    size: usize,
    needs: Option<(Vec<Scalar>, Span)>,
    matrix: Option<(Vec<Axis>, Span)>,
    fail_fast: bool,
}

/// One name of a `matrix:` and its values, as written.
type Axis = (Scalar, Vec<Scalar>);

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

pub const PIPELINE_KEYS: &[&str] = &[
    "name",
    "vars",
    "on-failure",
    "limits",
    "concurrency",
    "sandbox",
    "steps",
];
pub const STEP_KEYS: &[&str] = &[
    "id",
    "uses",
    "needs",
    "if",
    "with",
    "allow",
    "matrix",
    "fail-fast",
    "limits",
    "timeout",
    "retry",
    "cache",
];
const LIMIT_KEYS: &[&str] = &[
    "memory",
    "fuel",
    "log",
    "output",
    "disk",
    "journal",
    "timeout",
    "processes",
];
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
        let concurrency = get("concurrency").and_then(|v| {
            let s = self.text(v, "`concurrency`")?;
            self.number(
                &s,
                1..=MAX_CONCURRENCY,
                "steps",
                &format!("how many steps may run at once: a number from 1 to {MAX_CONCURRENCY}"),
            )
        });
        let sandbox_strict = match get("sandbox") {
            None => false,
            Some(v) => match self.text(v, "`sandbox`").as_ref().map(|s| s.text.as_str()) {
                Some("strict") => true,
                Some("auto") => false,
                Some(other) => {
                    self.error(Diagnostic::new(v.span(), format!("unknown sandbox `{other}`")).help(
                        "use `strict` (a program that cannot be confined fully does not start) or `auto` (the default)",
                    ));
                    false
                }
                None => false,
            },
        };
        let raw: Vec<RawStep> = match get("steps") {
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
        let mut raw = raw;
        // Each step takes the lines up to the next step's (at least its own line).
        let line_starts: Vec<usize> = std::iter::once(0)
            .chain(source.text.match_indices('\n').map(|(i, _)| i + 1))
            .chain(std::iter::once(source.text.len()))
            .collect();
        let offset = |line: usize| {
            line_starts
                .get(line.saturating_sub(1))
                .copied()
                .unwrap_or(source.text.len())
        };
        let starts: Vec<usize> = raw.iter().map(|r| r.line).collect();
        for (n, step) in raw.iter_mut().enumerate() {
            let next = starts.get(n + 1).copied().unwrap_or(usize::MAX).max(step.line + 1);
            step.size = offset(next).saturating_sub(offset(step.line));
        }
        let mut steps = self.expand(&raw);
        if steps.len() > STEP_LIMIT {
            self.error(
                Diagnostic::new(
                    yaml.span(),
                    format!("the pipeline has {} steps; at most {STEP_LIMIT}", steps.len()),
                )
                .help("split it into several pipelines"),
            );
            steps.truncate(STEP_LIMIT);
        }
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
        self.resolve_needs(&raw, &mut steps);
        let graph = Graph::new(&steps);
        if let Some(cycle) = graph.cycle() {
            let first = &steps[cycle[0]];
            let names: Vec<&str> = cycle.iter().chain([&cycle[0]]).map(|&i| steps[i].id.as_str()).collect();
            self.error(
                Diagnostic::new(
                    first.needs_span.unwrap_or(first.id_span),
                    format!("`needs:` makes a cycle: {}", names.join(" → ")),
                )
                .help("each step here needs the next; remove one of these needs"),
            );
        }
        Some(Pipeline {
            source,
            name,
            vars,
            on_failure,
            limits,
            concurrency,
            sandbox_strict,
            steps,
            graph,
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

    fn step(&mut self, yaml: &Yaml) -> Option<RawStep> {
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
        let needs = get("needs").and_then(|v| self.needs(v));
        let matrix = get("matrix").and_then(|v| self.matrix(v));
        let fail_fast = get("fail-fast").is_none_or(|v| {
            self.flag(
                v,
                "fail-fast",
                true,
                "true (the default) skips the instances not yet started once one failed",
            )
        });
        let cache = get("cache").is_none_or(|v| {
            self.flag(
                v,
                "cache",
                true,
                "true (the default) reuses the step's last result while everything it used is unchanged; false always runs it",
            )
        });
        if matrix.is_none()
            && let Some((key, _)) = map.iter().find(|(k, _)| k.text == "fail-fast")
        {
            self.error(
                Diagnostic::new(key.span, "`fail-fast` only applies to a step with a `matrix:`")
                    .help("remove it, or add `matrix:`"),
            );
        }
        Some(RawStep {
            line: span.line,
            size: 0,
            decl: StepDecl {
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
                needs: Vec::new(),
                needs_span: None,
                instance: None,
                cache,
            },
            needs,
            matrix,
            fail_fast,
        })
    }

    /// `true` or `false`; `default` (and an error) for anything else.
    fn flag(&mut self, yaml: &Yaml, key: &str, default: bool, help: &str) -> bool {
        match self
            .text(yaml, &format!("`{key}`"))
            .as_ref()
            .map(|s| (s.text.as_str(), s.span))
        {
            Some(("true", _)) => true,
            Some(("false", _)) => false,
            Some((other, span)) => {
                self.error(Diagnostic::new(span, format!("`{key}` must be true or false, not `{other}`")).help(help));
                default
            }
            None => default,
        }
    }

    /// `needs: ID` or `needs: [ID, ...]`.
    fn needs(&mut self, yaml: &Yaml) -> Option<(Vec<Scalar>, Span)> {
        match yaml {
            Yaml::Scalar(s) if !s.is_null() => Some((vec![s.clone()], s.span)),
            Yaml::List(items, span) => {
                let mut ids = Vec::new();
                for item in items {
                    if let Some(s) = self.text(item, "a need") {
                        ids.push(s);
                    }
                }
                Some((ids, *span))
            }
            other => {
                self.error(
                    Diagnostic::new(
                        other.span(),
                        format!("`needs` must be a list of step ids, not {}", other.kind()),
                    )
                    .help("write `needs: [build, test]`"),
                );
                None
            }
        }
    }

    /// `matrix: { NAME: [VALUE, ...], ... }`.
    fn matrix(&mut self, yaml: &Yaml) -> Option<(Vec<Axis>, Span)> {
        let Yaml::Map(axes, span) = yaml else {
            self.error(
                Diagnostic::new(yaml.span(), format!("`matrix` must be a mapping, not {}", yaml.kind()))
                    .help("write `matrix: { target: [x86_64, aarch64] }`"),
            );
            return None;
        };
        let mut out = Vec::new();
        for (name, values) in axes {
            if !is_identifier(&name.text) {
                self.error(
                    Diagnostic::new(name.span, format!("`{}` is not a valid matrix name", name.text))
                        .help("use letters, digits, `_` and `-`, starting with a letter"),
                );
                continue;
            }
            let values = match values {
                Yaml::List(items, _) => items.iter().filter_map(|v| self.text(v, "a matrix value")).collect(),
                other => {
                    self.error(
                        Diagnostic::new(other.span(), format!("matrix `{}` must be a list of values", name.text))
                            .help(format!("write `{}: [a, b]`", name.text)),
                    );
                    continue;
                }
            };
            out.push((name.clone(), values));
        }
        Some((out, *span))
    }

    /// One step per combination of a matrix step's values; other steps as they are.
    fn expand(&mut self, raw: &[RawStep]) -> Vec<StepDecl> {
        let mut steps = Vec::new();
        for step in raw {
            let Some((axes, span)) = &step.matrix else {
                steps.push(step.decl.clone());
                continue;
            };
            let id = &step.decl.id;
            if let Some((name, _)) = axes.iter().find(|(_, values)| values.is_empty()) {
                self.error(
                    Diagnostic::new(
                        name.span,
                        format!(
                            "the matrix of step `{id}` has no combination: `{}` lists no value",
                            name.text
                        ),
                    )
                    .help("give every matrix name at least one value, or remove the `matrix:`"),
                );
                continue;
            }
            if axes.is_empty() {
                self.error(
                    Diagnostic::new(*span, format!("the matrix of step `{id}` has no combination"))
                        .help("write `matrix: { NAME: [VALUE, ...] }`"),
                );
                continue;
            }
            let count = axes.iter().try_fold(1usize, |n, (_, values)| {
                n.checked_mul(values.len()).filter(|n| *n <= MATRIX_LIMIT)
            });
            if let Some(count) = count
                && count.saturating_mul(step.size) > EXPANDED_LIMIT
            {
                self.error(
                    Diagnostic::new(
                        *span,
                        format!(
                            "the matrix of step `{id}` would copy its {} bytes {count} times, more than the {} MiB a pipeline may expand to",
                            step.size,
                            EXPANDED_LIMIT >> 20
                        ),
                    )
                    .help("make the step smaller, or list fewer values"),
                );
                continue;
            }
            let Some(count) = count else {
                let sizes: Vec<String> = axes.iter().map(|(n, v)| format!("{} {}", v.len(), n.text)).collect();
                self.error(
                    Diagnostic::new(
                        *span,
                        format!(
                            "the matrix of step `{id}` has more than {MATRIX_LIMIT} combinations ({})",
                            sizes.join(" × ")
                        ),
                    )
                    .help("split the step, or list fewer values"),
                );
                continue;
            };
            for n in 0..count {
                // Mixed radix: the last axis changes fastest, as the values read.
                let mut rest = n;
                let mut picked = vec![String::new(); axes.len()];
                for (slot, (_, values)) in picked.iter_mut().zip(axes).rev() {
                    *slot = values[rest % values.len()].text.clone();
                    rest /= values.len();
                }
                let values: Vec<(String, String)> =
                    axes.iter().map(|(name, _)| name.text.clone()).zip(picked).collect();
                let suffix: Vec<String> = values.iter().map(|(_, v)| id_part(v)).collect();
                let mut decl = step.decl.clone();
                decl.id = format!("{id}-{}", suffix.join("-"));
                decl.allow.step_id = decl.id.clone();
                decl.instance = Some(Instance {
                    group: id.clone(),
                    values,
                    fail_fast: step.fail_fast,
                    matrix_span: *span,
                });
                steps.push(decl);
            }
        }
        steps
    }

    /// Fill in every step's `needs`: as written, a matrix step's id standing for all its
    /// instances; without `needs:`, the step (or instances) before.
    fn resolve_needs(&mut self, raw: &[RawStep], steps: &mut [StepDecl]) {
        // The ids a name in `needs:` stands for: a step's own, or a matrix step's instances.
        let mut members: HashMap<String, Vec<String>> = HashMap::new();
        for step in steps.iter() {
            let group = step.instance.as_ref().map_or(&step.id, |i| &i.group);
            members.entry(group.clone()).or_default().push(step.id.clone());
            if step.instance.is_some() {
                members.entry(step.id.clone()).or_default().push(step.id.clone());
            }
        }
        let position: HashMap<&str, usize> = raw
            .iter()
            .enumerate()
            .rev()
            .map(|(n, r)| (r.decl.id.as_str(), n))
            .collect();
        let resolved: Vec<(Vec<String>, Option<Span>)> = steps
            .iter()
            .map(|decl| {
                let group = decl.instance.as_ref().map_or(&decl.id, |i| &i.group).clone();
                let index = position.get(group.as_str()).copied().unwrap_or(0);
                let Some((names, span)) = &raw[index].needs else {
                    let before = index
                        .checked_sub(1)
                        .and_then(|i| members.get(&raw[i].decl.id).cloned())
                        .unwrap_or_default();
                    return (before, None);
                };
                let mut needs: Vec<String> = Vec::new();
                for name in names {
                    if name.text == group || name.text == decl.id {
                        self.error(
                            Diagnostic::new(name.span, format!("step `{group}` needs itself"))
                                .help("a step needs the steps it runs after; remove this one"),
                        );
                        continue;
                    }
                    let found = members.get(&name.text).cloned().unwrap_or_default();
                    if found.is_empty() {
                        let ids = raw.iter().map(|r| r.decl.id.as_str()).filter(|id| *id != group);
                        let help = match suggest(&name.text, ids) {
                            Some(s) => format!("did you mean `{s}`?"),
                            None => "`needs:` lists the ids of other steps of this pipeline".into(),
                        };
                        self.error(
                            Diagnostic::new(
                                name.span,
                                format!(
                                    "step `{group}` needs `{}`, which is not a step of this pipeline",
                                    name.text
                                ),
                            )
                            .help(help),
                        );
                    }
                    for id in found {
                        if !needs.contains(&id) {
                            needs.push(id);
                        }
                    }
                }
                (needs, Some(*span))
            })
            .collect();
        for (decl, (needs, span)) in steps.iter_mut().zip(resolved) {
            decl.needs = needs;
            decl.needs_span = span;
        }
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
                "processes" => match s.text.replace('_', "").parse::<u64>() {
                    Ok(n) if n > 0 => limits.processes = Some(n),
                    _ => self.error(
                        Diagnostic::new(s.span, format!("`{}` is not a number of processes", s.text))
                            .help("a whole number, e.g. 256"),
                    ),
                },
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
        let n = self.number(
            s,
            1..=100,
            "attempts",
            "attempts count the first try: a number from 1 to 100",
        )?;
        u32::try_from(n).ok()
    }

    /// A whole number within `range`; else an error saying what it counts.
    fn number(
        &mut self,
        s: &Scalar,
        range: std::ops::RangeInclusive<usize>,
        counts: &str,
        help: &str,
    ) -> Option<usize> {
        match s.text.parse::<usize>() {
            Ok(n) if range.contains(&n) => Some(n),
            _ => {
                self.error(Diagnostic::new(s.span, format!("`{}` is not a number of {counts}", s.text)).help(help));
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

/// A matrix value as part of a step id: characters a step id cannot hold become `_`.
fn id_part(value: &str) -> String {
    let part: String = value
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '_' || c == '-' {
                c
            } else {
                '_'
            }
        })
        .collect();
    if part.is_empty() { "_".into() } else { part }
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

    #[test]
    fn a_matrix_becomes_one_step_per_combination() {
        let p = parse(
            "name: m\nsteps:\n  - id: first\n    uses: x.wasm\n  - id: build\n    uses: x.wasm\n    \
             matrix: { os: [linux, mac], version: ['1.75', beta] }\n    fail-fast: false\n  - id: after\n    uses: x.wasm\n",
        )
        .unwrap();
        let ids: Vec<&str> = p.steps.iter().map(|s| s.id.as_str()).collect();
        assert_eq!(
            ids,
            [
                "first",
                "build-linux-1_75",
                "build-linux-beta",
                "build-mac-1_75",
                "build-mac-beta",
                "after"
            ]
        );
        let instance = p.steps[1].instance.as_ref().unwrap();
        assert_eq!(instance.group, "build");
        assert!(!instance.fail_fast);
        assert_eq!(
            instance.values,
            [
                ("os".to_string(), "linux".to_string()),
                ("version".to_string(), "1.75".to_string())
            ]
        );
        // Without `needs:`, each instance needs the step before; the step after needs them all.
        assert_eq!(p.steps[2].needs, ["first"]);
        assert_eq!(p.steps[5].needs.len(), 4);
        assert_eq!(p.steps[1].allow.step_id, "build-linux-1_75");
    }

    #[test]
    fn a_matrix_that_would_copy_a_big_step_too_often_is_refused() {
        let big = "x".repeat(100_000);
        let values: Vec<String> = (0..256).map(|n| n.to_string()).collect();
        let text = format!(
            "name: m\nsteps:\n  - id: big\n    uses: x.wasm\n    matrix: {{ n: [{}] }}\n    with: {{ blob: {big} }}\n",
            values.join(", ")
        );
        let e = parse(&text).unwrap_err().to_string();
        assert!(e.contains("the matrix of step `big` would copy its"), "{e}");
        assert!(e.contains("more than the 16 MiB a pipeline may expand to"), "{e}");
        // The same step without the matrix, or with few values, is fine.
        assert!(parse(&text.replace(&values.join(", "), "1, 2")).is_ok());
    }

    #[test]
    fn fail_fast_and_needs_are_checked_where_written() {
        let e = parse(
            "name: m\nsteps:\n  - id: a\n    uses: x.wasm\n    fail-fast: maybe\n    needs: { a: b }\n  \
             - id: b\n    uses: x.wasm\n    needs: [b]\n",
        )
        .unwrap_err()
        .to_string();
        assert!(e.contains("`fail-fast` must be true or false, not `maybe`"), "{e}");
        assert!(e.contains("`fail-fast` only applies to a step with a `matrix:`"), "{e}");
        assert!(e.contains("`needs` must be a list of step ids, not a mapping"), "{e}");
        assert!(e.contains("step `b` needs itself"), "{e}");
        assert!(e.contains("p.yml:9:13"), "{e}");
        let e = parse("name: m\nconcurrency: 0\nsteps: []\n").unwrap_err().to_string();
        assert!(e.contains("`0` is not a number of steps"), "{e}");
        assert_eq!(
            parse("name: m\nconcurrency: 3\nsteps: []\n").unwrap().concurrency,
            Some(3)
        );
    }
}
