//! Races found before a run: two steps that may run at the same time must not write where
//! the other reads or writes, nor deploy the same service. What a step reaches is what its
//! grants say: its `allow:`, and for a built-in step what its parameters name.

use super::StepShape;
use super::{Diagnostic, LoadProblem};
use crate::describe::{StepInfo, Value};
use crate::expr::{Reference, Scope, StatusFn};
use crate::graph::Graph;
use crate::model::{Pipeline, StepDecl, template};
use crate::params::{convert, map_scalars};
use crate::yaml::Scalar;
use std::collections::BTreeMap;
use std::convert::Infallible;

/// What one step may reach.
#[derive(Debug)]
pub(super) struct Reach {
    /// Workspace paths, normalized (`.` is all of it).
    reads: Vec<String>,
    writes: Vec<String>,
    /// Services; None for one named only when the run gets there.
    pub(super) deploys: Vec<Option<String>>,
}

pub(super) fn check(
    pipeline: &Pipeline,
    graph: &Graph,
    shapes: &[Result<StepShape, LoadProblem>],
    vars: &BTreeMap<&str, &str>,
    errors: &mut Vec<Diagnostic>,
) {
    let reach: Vec<Reach> = pipeline
        .steps
        .iter()
        .zip(shapes)
        .map(|(step, shape)| {
            let info = match shape {
                Ok(StepShape::Typed(info)) if step.uses.starts_with("builtin:") => Some(info),
                _ => None,
            };
            reach_of(step, info, vars)
        })
        .collect();
    let touching: Vec<usize> = (0..reach.len())
        .filter(|&i| !(reach[i].reads.is_empty() && reach[i].writes.is_empty() && reach[i].deploys.is_empty()))
        .collect();
    for (n, &a) in touching.iter().enumerate() {
        for &b in &touching[n + 1..] {
            if !graph.concurrent(a, b) {
                continue;
            }
            if let Some(why) = conflict(&pipeline.steps[a], &reach[a], &pipeline.steps[b], &reach[b]) {
                let (first, second) = (&pipeline.steps[a], &pipeline.steps[b]);
                let later = second
                    .instance
                    .as_ref()
                    .map_or(second.id.as_str(), |i| i.group.as_str());
                let help = match (&first.instance, &second.instance) {
                    (Some(x), Some(y)) if x.group == y.group => format!(
                        "the instances of `{}` run side by side: give each its own path (e.g. with `${{{{ matrix.NAME }}}}`)",
                        x.group
                    ),
                    _ => format!(
                        "make one wait for the other: add `needs: [{}]` to step `{later}`",
                        first.id
                    ),
                };
                errors.push(
                    Diagnostic::new(
                        second.id_span,
                        format!(
                            "steps `{}` and `{}` may run at the same time, {why}",
                            first.id, second.id
                        ),
                    )
                    .help(help),
                );
            }
        }
    }
}

fn conflict(a: &StepDecl, ra: &Reach, b: &StepDecl, rb: &Reach) -> Option<String> {
    let writes_into = |w: &StepDecl, rw: &Reach, o: &StepDecl, ro: &Reach| {
        for path in &rw.writes {
            if let Some(other) = ro.writes.iter().find(|p| overlap(path, p)) {
                return Some(format!(
                    "and both write `{}`: `{}` writes `{path}`, `{}` writes `{other}`",
                    path.min(other),
                    w.id,
                    o.id
                ));
            }
            if let Some(other) = ro.reads.iter().find(|p| overlap(path, p)) {
                return Some(format!(
                    "and `{}` writes `{path}` while `{}` reads `{other}`",
                    w.id, o.id
                ));
            }
        }
        None
    };
    if let Some(why) = writes_into(a, ra, b, rb).or_else(|| writes_into(b, rb, a, ra)) {
        return Some(why);
    }
    for x in &ra.deploys {
        for y in &rb.deploys {
            match (x, y) {
                (Some(x), Some(y)) if x == y => return Some(format!("and both deploy service `{x}`")),
                (Some(_), Some(_)) => {}
                (None, _) => return Some(format!("and `{}` deploys a service named only at run time", a.id)),
                (_, None) => return Some(format!("and `{}` deploys a service named only at run time", b.id)),
            }
        }
    }
    None
}

/// Whether two workspace paths reach the same files: equal, or one inside the other.
fn overlap(a: &str, b: &str) -> bool {
    let inside = |x: &str, y: &str| x == "." || y.strip_prefix(x).is_some_and(|rest| rest.starts_with('/'));
    a == b || inside(a, b) || inside(b, a)
}

/// What a step may reach: its `allow:`, and for a built-in what [`crate::grants::Grants::derive`]
/// grants it from its parameters, as at run time, with the values known before the run.
pub(super) fn reach_of(step: &StepDecl, info: Option<&StepInfo>, vars: &BTreeMap<&str, &str>) -> Reach {
    let mut grants = step.allow.clone();
    if let Some(info) = info {
        let scope = Known { vars, step };
        let values: Vec<(String, Value)> = info
            .params
            .iter()
            .filter_map(|spec| match step.with.iter().find(|p| p.name == spec.name) {
                Some(param) => {
                    let value = map_scalars::<Infallible>(&param.value, &mut |s| Ok(known_part(s, &scope))).ok()?;
                    convert(&param.name, &value, spec.type_)
                        .ok()
                        .map(|v| (spec.name.clone(), v))
                }
                None => spec.default.clone().map(|d| (spec.name.clone(), d)),
            })
            .collect();
        // A path that leads out of the workspace is reported where it is written.
        let _refused = grants.derive(info, &values);
    }
    Reach {
        reads: grants.read.into_iter().map(|g| g.what).collect(),
        writes: grants.write.into_iter().map(|g| g.what).collect(),
        deploys: grants
            .deploy
            .into_iter()
            .map(|g| (g.what != UNKNOWN).then_some(g.what))
            .collect(),
    }
}

/// What [`known_part`] makes of a value with nothing known before its first unknown part:
/// as a path the whole workspace, as a service any service.
const UNKNOWN: &str = ".";

/// A parameter's value as far as it is known before the run: vars and matrix values are,
/// another step's outputs are not. A value with an unknown part becomes the directory
/// written out before it (a path known only at run time may be anywhere below that), or
/// [`UNKNOWN`].
pub(super) fn known_part(s: &Scalar, scope: &Known<'_>) -> String {
    if let Some(known) = template(s).ok().and_then(|t| t.render(scope).ok()) {
        return known;
    }
    let before = &s.text[..s.text.find("${{").unwrap_or(0)];
    before
        .rfind('/')
        .map_or(UNKNOWN.to_string(), |slash| before[..slash].to_string())
}

/// What validation knows of a step's references.
pub(super) struct Known<'a> {
    pub(super) vars: &'a BTreeMap<&'a str, &'a str>,
    pub(super) step: &'a StepDecl,
}

impl Scope for Known<'_> {
    fn lookup(&self, reference: &Reference) -> Result<String, String> {
        match reference {
            Reference::Var(name) => self
                .vars
                .get(name.as_str())
                .map(|v| v.to_string())
                .ok_or_else(String::new),
            Reference::Matrix(name) => self
                .step
                .instance
                .as_ref()
                .and_then(|i| i.values.iter().find(|(n, _)| n == name))
                .map(|(_, v)| v.clone())
                .ok_or_else(String::new),
            _ => Err(String::new()),
        }
    }

    fn status(&self, _: StatusFn) -> bool {
        true
    }
}

#[cfg(test)]
mod tests {
    use super::overlap;

    #[test]
    fn paths_overlap_when_one_holds_the_other() {
        assert!(overlap("out", "out"));
        assert!(overlap("out", "out/bin"));
        assert!(overlap("out/bin", "out"));
        assert!(overlap(".", "src"));
        assert!(!overlap("out", "output"));
        assert!(!overlap("out/a", "out/b"));
    }
}
