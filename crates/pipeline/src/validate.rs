//! Checks a whole pipeline before any step runs: every `uses` resolves, every parameter
//! matches the step's `describe`, every reference points at a var or an earlier step.
//! Problems are collected, not stopped at, so one run of `wharf validate` shows them all.

mod plan;
mod races;

use super::diagnostic::{Diagnostic, Diagnostics, suggest};
use super::expr::Reference;
use super::graph::Graph;
use super::model::{Pipeline, StepDecl, template};
use super::params::{self, scalars};
use crate::describe::{ParamType, StepInfo};
use std::collections::BTreeMap;

/// What validation needs to know about a step's component.
#[derive(Debug, Clone)]
pub enum StepShape {
    Typed(StepInfo),
    /// A WASI command: takes any text parameters, declares no outputs.
    Command,
}

/// Why a step's component could not be loaded.
#[derive(Debug, Clone)]
pub struct LoadProblem {
    pub message: String,
    pub help: String,
}

pub fn validate(
    pipeline: &Pipeline,
    shapes: &[Result<StepShape, LoadProblem>],
    overrides: &[(String, String)],
    passed_env: &std::collections::BTreeSet<String>,
) -> Result<(), Diagnostics> {
    let mut errors = Vec::new();
    for var in &pipeline.vars {
        if var.default.is_none() && !overrides.iter().any(|(k, _)| *k == var.name) {
            errors.push(
                Diagnostic::new(
                    var.span,
                    format!("var `{}` has no default and no value was given", var.name),
                )
                .help(format!("pass `--var {}=VALUE`, or give it a default here", var.name)),
            );
        }
    }
    let graph = &pipeline.graph;
    for (index, (step, shape)) in pipeline.steps.iter().zip(shapes).enumerate() {
        match shape {
            Err(problem) => errors.push(Diagnostic::new(step.uses_span, &problem.message).help(&problem.help)),
            Ok(shape) => check_params(step, shape, &mut errors),
        }
        check_references(pipeline, graph, index, shapes, passed_env, &mut errors);
    }
    let mut vars: BTreeMap<&str, &str> = pipeline
        .vars
        .iter()
        .filter_map(|v| Some((v.name.as_str(), v.default.as_deref()?)))
        .collect();
    vars.extend(overrides.iter().map(|(k, v)| (k.as_str(), v.as_str())));
    races::check(pipeline, graph, shapes, &vars, &mut errors);
    plan::check(pipeline, shapes, &vars, &mut errors);
    if errors.is_empty() {
        Ok(())
    } else {
        errors.sort_by_key(|d| (d.span.line, d.span.column));
        // The instances of a matrix step share their source: one report each.
        errors.dedup_by(|a, b| a.span == b.span && a.message == b.message);
        Err(Diagnostics {
            source: pipeline.source.clone(),
            items: errors,
        })
    }
}

fn check_params(step: &StepDecl, shape: &StepShape, errors: &mut Vec<Diagnostic>) {
    let info = match shape {
        StepShape::Typed(info) => info,
        StepShape::Command => {
            for param in &step.with {
                if param.value.as_scalar().is_none() {
                    errors.push(
                        Diagnostic::new(
                            param.value.span(),
                            format!("parameter `{}` must be a single value", param.name),
                        )
                        .help("a WASI command step receives each parameter as one environment variable"),
                    );
                }
            }
            return;
        }
    };
    let uses = &step.uses;
    for param in &step.with {
        let Some(spec) = info.params.iter().find(|p| p.name == param.name) else {
            let names: Vec<&str> = info.params.iter().map(|p| p.name.as_str()).collect();
            let help = match suggest(&param.name, names.iter().copied()) {
                Some(s) => format!("did you mean `{s}`? {uses} takes: {}", names.join(", ")),
                None if names.is_empty() => format!("{uses} takes no parameters"),
                None => format!("{uses} takes: {}", names.join(", ")),
            };
            errors.push(
                Diagnostic::new(
                    param.name_span,
                    format!("unknown parameter `{}` for {uses}", param.name),
                )
                .help(help),
            );
            continue;
        };
        let literal = scalars(&param.value).iter().all(|s| !s.text.contains("${{"));
        if literal {
            if let Err(d) = params::convert(&param.name, &param.value, spec.type_) {
                errors.push(d);
            }
        } else {
            // Interpolated values are known at run time; their shape is known now.
            let shape = params::map_scalars::<()>(&param.value, &mut |_| Ok(String::new())).unwrap();
            let ty = match spec.type_ {
                ParamType::TextList | ParamType::TextMap => spec.type_,
                _ if shape.as_scalar().is_some() => continue,
                _ => spec.type_,
            };
            if let Err(d) = params::convert(&param.name, &shape, ty) {
                errors.push(d);
            }
        }
    }
    if step.uses.starts_with("builtin:") {
        check_derived_paths(step, info, errors);
    }
    for spec in &info.params {
        if spec.required && spec.default.is_none() && !step.with.iter().any(|p| p.name == spec.name) {
            errors.push(
                Diagnostic::new(
                    step.uses_span,
                    format!("{uses} needs parameter `{}`: {}", spec.name, spec.description),
                )
                .help(format!(
                    "add `{}: ...` ({}) under `with:`",
                    spec.name,
                    params::type_name(spec.type_)
                )),
            );
        }
    }
}

/// A built-in step's path parameters become its read and write grants: one that leads out
/// of the workspace would be refused at run time, so it is refused here, where it is written.
fn check_derived_paths(step: &StepDecl, info: &StepInfo, errors: &mut Vec<Diagnostic>) {
    use crate::describe::CapabilityKind;
    for cap in &info.capabilities {
        if !matches!(cap.kind, CapabilityKind::WorkspaceRead | CapabilityKind::WorkspaceWrite) {
            continue;
        }
        let Some(param) = cap
            .scope_param
            .as_ref()
            .and_then(|name| step.with.iter().find(|p| p.name == *name))
        else {
            continue;
        };
        // A mapping's keys are the paths (`files: { SOURCE: TARGET }`), as in the grants.
        let paths: Vec<&super::yaml::Scalar> = match &param.value {
            super::yaml::Yaml::Map(entries, _) => entries.iter().map(|(k, _)| k).collect(),
            other => scalars(other),
        };
        for s in paths {
            if s.text.contains("${{") {
                continue;
            }
            if let Err(why) = crate::grants::grantable(&s.text) {
                errors.push(
                    Diagnostic::new(
                        s.span,
                        format!("`{}` is not a path `{}` may name: {why}", s.text, param.name),
                    )
                    .help("use a path relative to the workspace, without `..` above it, outside `.wharf/`"),
                );
            }
        }
    }
}

fn check_references(
    pipeline: &Pipeline,
    graph: &Graph,
    index: usize,
    shapes: &[Result<StepShape, LoadProblem>],
    passed_env: &std::collections::BTreeSet<String>,
    errors: &mut Vec<Diagnostic>,
) {
    let step = &pipeline.steps[index];
    let mut refs: Vec<(Reference, super::Span)> = Vec::new();
    for param in &step.with {
        for s in scalars(&param.value) {
            match template(s) {
                Ok(t) => {
                    for e in t.exprs() {
                        refs.extend(e.references().into_iter().map(|r| (r.clone(), s.span)));
                    }
                }
                Err(d) => errors.push(d),
            }
        }
    }
    if let Some((cond, span)) = &step.condition {
        refs.extend(cond.references().into_iter().map(|r| (r.clone(), *span)));
    }
    for (reference, span) in refs {
        match &reference {
            Reference::Var(name) => {
                if !pipeline.vars.iter().any(|v| v.name == *name) {
                    let names: Vec<&str> = pipeline.vars.iter().map(|v| v.name.as_str()).collect();
                    let help = match suggest(name, names.iter().copied()) {
                        Some(s) => format!("did you mean `vars.{s}`?"),
                        None => {
                            format!("declare it under `vars:` at the top, e.g. `{name}: default`")
                        }
                    };
                    errors.push(Diagnostic::new(span, format!("`{reference}` refers to an undeclared var")).help(help));
                }
            }
            Reference::StepOutput { step: target, .. } | Reference::StepOutcome { step: target } => {
                let Some(target_index) = pipeline.steps.iter().position(|s| s.id == *target) else {
                    let instances: Vec<&str> = pipeline
                        .steps
                        .iter()
                        .filter(|s| s.instance.as_ref().is_some_and(|i| i.group == *target))
                        .map(|s| s.id.as_str())
                        .collect();
                    if !instances.is_empty() {
                        errors.push(
                            Diagnostic::new(span, format!("`{reference}`: step `{target}` has a matrix, so it has no outputs of its own"))
                                .help(format!("name one of its instances: {}", instances.join(", "))),
                        );
                        continue;
                    }
                    let help = match suggest(target, pipeline.steps.iter().map(|s| s.id.as_str())) {
                        Some(s) => format!("did you mean `{s}`?"),
                        None => "a step can refer to the steps it needs".to_string(),
                    };
                    errors.push(
                        Diagnostic::new(span, format!("`{reference}` refers to an unknown step `{target}`")).help(help),
                    );
                    continue;
                };
                if !graph.after(index, target_index) {
                    let chained = step.needs_span.is_none();
                    let sibling = match (&step.instance, &pipeline.steps[target_index].instance) {
                        (Some(a), Some(b)) => a.group == b.group,
                        _ => false,
                    };
                    let diagnostic = if target_index == index {
                        Diagnostic::new(span, format!("`{reference}` refers to step `{target}`, which runs as this step"))
                            .help("a step can only use outputs of the steps it needs")
                    } else if sibling {
                        Diagnostic::new(span, format!("`{reference}` refers to `{target}`, another instance of the same matrix"))
                            .help("the instances of a matrix run side by side; use the outputs in a step that needs them")
                    } else if chained && target_index > index {
                        Diagnostic::new(span, format!("`{reference}` refers to step `{target}`, which runs later"))
                            .help("a step can only use outputs of the steps before it; move it below")
                    } else {
                        Diagnostic::new(
                            span,
                            format!("`{reference}` refers to step `{target}`, which is not among this step's needs"),
                        )
                        .help(format!(
                            "add `{}` to `needs:` of step `{}`, so that it runs first",
                            target,
                            step.instance.as_ref().map_or(step.id.as_str(), |i| i.group.as_str())
                        ))
                    };
                    errors.push(diagnostic);
                    continue;
                }
                if let (Reference::StepOutput { key, .. }, Some(Ok(StepShape::Typed(info)))) =
                    (&reference, shapes.get(target_index))
                    && !info.outputs.iter().any(|o| o.name == *key)
                {
                    let names: Vec<&str> = info.outputs.iter().map(|o| o.name.as_str()).collect();
                    errors.push(
                        Diagnostic::new(
                            span,
                            format!(
                                "step `{target}` ({}) has no output `{key}`",
                                pipeline.steps[target_index].uses
                            ),
                        )
                        .help(format!("its outputs are: {}", names.join(", "))),
                    );
                }
            }
            Reference::Env(name) if crate::is_secret_var(name) => errors.push(
                Diagnostic::new(span, format!("`{reference}` would hand a secret to the step as text"))
                    .help("grant it instead: `allow: { secrets: [NAME] }`, and let the step ask for it"),
            ),
            Reference::Env(name) if !passed_env.contains(name) => errors.push(
                Diagnostic::new(
                    span,
                    format!("`{reference}` reads a variable of wharf's environment that was not passed to the pipeline"),
                )
                .help(format!(
                    "pass it with `--pass-env {name}` (or WHARF_PASS_ENV={name}); only the variables the operator lists reach a pipeline"
                )),
            ),
            Reference::Matrix(name) => match &step.instance {
                None => errors.push(
                    Diagnostic::new(span, format!("`{reference}` is used in step `{}`, which has no `matrix:`", step.id))
                        .help("add `matrix: { NAME: [VALUE, ...] }` to the step"),
                ),
                Some(instance) if !instance.values.iter().any(|(n, _)| n == name) => {
                    let names: Vec<&str> = instance.values.iter().map(|(n, _)| n.as_str()).collect();
                    let help = match suggest(name, names.iter().copied()) {
                        Some(s) => format!("did you mean `matrix.{s}`?"),
                        None => format!("its matrix names: {}", names.join(", ")),
                    };
                    errors.push(Diagnostic::new(span, format!("`{reference}` is not a name of this step's matrix")).help(help));
                }
                Some(_) => {}
            },
            Reference::Env(_) | Reference::RunId => {}
        }
    }
}
