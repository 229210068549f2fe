//! docs/contract.md, generated from `wit/`: the promise, the versions, then every
//! interface, type and function with its doc comment and an example. Generated so that it
//! cannot drift from the WIT; `.ci/run` regenerates it and fails on a difference.

use crate::compat::Contract;
use anyhow::Result;
use std::fmt::Write;
use wit_parser::{Resolve, Stability, Type, TypeDefKind, WorldItem, WorldKey};

const PROMISE: &str = include_str!("promise.md");

/// An example per interface, in the Rust SDK unless the interface is the SDK's own.
fn example(interface: &str) -> Option<&'static str> {
    Some(match interface {
        "types" => include_str!("examples/types.md"),
        "log" => include_str!("examples/log.md"),
        "process" => include_str!("examples/process.md"),
        "source" => include_str!("examples/source.md"),
        "secrets" => include_str!("examples/secrets.md"),
        "images" => include_str!("examples/images.md"),
        "registry" => include_str!("examples/registry.md"),
        "deploy" => include_str!("examples/deploy.md"),
        "step" => include_str!("examples/step.md"),
        _ => return None,
    })
}

pub fn render(contract: &Contract, releases: &[semver::Version]) -> Result<String> {
    let r = &contract.resolve;
    let package = &r.packages[contract.package];
    let version = contract.version()?;
    let mut out = String::new();
    writeln!(out, "# The `{}` contract", package.name)?;
    writeln!(out)?;
    writeln!(
        out,
        "<!-- Generated from wit/ by `cargo run -q -p wharf-contract-tool -- doc > docs/contract.md`; \
         .ci/run fails when it differs. Edit wit/ or crates/contract-tool, not this file. -->"
    )?;
    writeln!(out)?;
    out.push_str(&PROMISE.replace("{{version}}", &version.to_string()));
    writeln!(out)?;
    writeln!(out, "## Versions")?;
    writeln!(out)?;
    writeln!(out, "| Version | Kept in | This wharf |")?;
    writeln!(out, "|---|---|---|")?;
    for v in releases.iter().rev() {
        let runs = if *v == wharf_contract::LEGACY {
            format!("runs, read as {version}, with a warning to rebuild")
        } else if v.major == version.major && *v <= version {
            "runs".to_string()
        } else {
            "refused, naming both versions".to_string()
        };
        writeln!(out, "| {v} | `wit/released/{v}/` | {runs} |")?;
    }
    writeln!(out)?;
    for (name, &id) in &package.worlds {
        let world = &r.worlds[id];
        writeln!(out, "## World `{name}`")?;
        writeln!(out)?;
        docs(&mut out, &world.docs.contents)?;
        for (title, items) in [("Imports", &world.imports), ("Exports", &world.exports)] {
            let names: Vec<String> = items
                .iter()
                .filter(|(_, item)| matches!(item, WorldItem::Interface { .. }))
                .map(|(key, _)| format!("`{}`", key_name(r, key)))
                .collect();
            if !names.is_empty() {
                writeln!(out, "{title}: {}.", names.join(", "))?;
                writeln!(out)?;
            }
        }
    }
    for (name, &id) in &package.interfaces {
        let iface = &r.interfaces[id];
        writeln!(out, "## Interface `{name}`{}", stability(&iface.stability))?;
        writeln!(out)?;
        docs(&mut out, &iface.docs.contents)?;
        if !iface.types.is_empty() {
            writeln!(out, "### Types")?;
            writeln!(out)?;
        }
        for (ty_name, &tid) in &iface.types {
            let ty = &r.types[tid];
            writeln!(
                out,
                "#### `{ty_name}`: {}{}",
                kind_name(r, &ty.kind),
                stability(&ty.stability)
            )?;
            writeln!(out)?;
            docs(&mut out, &ty.docs.contents)?;
            members(&mut out, r, &ty.kind)?;
        }
        if !iface.functions.is_empty() {
            writeln!(out, "### Functions")?;
            writeln!(out)?;
        }
        for (func_name, f) in &iface.functions {
            let params: Vec<String> = f
                .params
                .iter()
                .map(|p| format!("{}: {}", p.name, type_name(r, &p.ty)))
                .collect();
            let result = f
                .result
                .as_ref()
                .map(|t| format!(" -> {}", type_name(r, t)))
                .unwrap_or_default();
            // `[method]secret.reveal` is shown as the WIT spells it inside its resource.
            let shown = func_name.split_once(']').map_or(func_name.as_str(), |(_, rest)| rest);
            writeln!(
                out,
                "#### `{shown}`{}\n\n```wit\n{}: func({}){result}\n```\n",
                stability(&f.stability),
                f.item_name(),
                params.join(", ")
            )?;
            docs(&mut out, &f.docs.contents)?;
        }
        if let Some(example) = example(name) {
            writeln!(out, "### Example")?;
            writeln!(out)?;
            out.push_str(example.trim_end());
            writeln!(out)?;
            writeln!(out)?;
        }
    }
    Ok(out.trim_end().to_string() + "\n")
}

fn key_name(r: &Resolve, key: &WorldKey) -> String {
    match key {
        WorldKey::Name(name) => name.clone(),
        WorldKey::Interface(id) => r.interfaces[*id].name.clone().unwrap_or_default(),
    }
}

fn stability(s: &Stability) -> String {
    match s {
        Stability::Unknown => String::new(),
        Stability::Stable { since, deprecated } => {
            let mut text = format!(" (since {since}");
            if let Some(d) = deprecated {
                write!(text, ", deprecated in {d}").unwrap();
            }
            text + ")"
        }
        Stability::Unstable { feature, .. } => format!(" (unstable: feature `{feature}`)"),
    }
}

fn docs(out: &mut String, docs: &Option<String>) -> std::fmt::Result {
    if let Some(text) = docs {
        writeln!(out, "{}\n", text.trim())?;
    }
    Ok(())
}

fn kind_name(r: &Resolve, kind: &TypeDefKind) -> String {
    match kind {
        TypeDefKind::Record(_) => "record".into(),
        TypeDefKind::Variant(_) => "variant".into(),
        TypeDefKind::Enum(_) => "enum".into(),
        TypeDefKind::Flags(_) => "flags".into(),
        TypeDefKind::Resource => "resource".into(),
        TypeDefKind::Type(t) => format!("`{}`", type_name(r, t)),
        other => format!("`{}`", anonymous(r, other)),
    }
}

fn members(out: &mut String, r: &Resolve, kind: &TypeDefKind) -> std::fmt::Result {
    let mut rows: Vec<(String, Option<String>, &Option<String>)> = Vec::new();
    match kind {
        TypeDefKind::Record(rec) => {
            for f in &rec.fields {
                rows.push((f.name.clone(), Some(type_name(r, &f.ty)), &f.docs.contents));
            }
        }
        TypeDefKind::Variant(v) => {
            for c in &v.cases {
                rows.push((c.name.clone(), c.ty.as_ref().map(|t| type_name(r, t)), &c.docs.contents));
            }
        }
        TypeDefKind::Enum(e) => {
            for c in &e.cases {
                rows.push((c.name.clone(), None, &c.docs.contents));
            }
        }
        TypeDefKind::Flags(f) => {
            for c in &f.flags {
                rows.push((c.name.clone(), None, &c.docs.contents));
            }
        }
        _ => {}
    }
    if rows.is_empty() {
        return Ok(());
    }
    for (name, ty, docs) in rows {
        let ty = ty.map(|t| format!(": `{t}`")).unwrap_or_default();
        let docs = docs
            .as_ref()
            .map(|d| format!(" — {}", d.split_whitespace().collect::<Vec<_>>().join(" ")))
            .unwrap_or_default();
        writeln!(out, "- `{name}`{ty}{docs}")?;
    }
    writeln!(out)
}

fn type_name(r: &Resolve, t: &Type) -> String {
    match t {
        Type::Bool => "bool".into(),
        Type::U8 => "u8".into(),
        Type::U16 => "u16".into(),
        Type::U32 => "u32".into(),
        Type::U64 => "u64".into(),
        Type::S8 => "s8".into(),
        Type::S16 => "s16".into(),
        Type::S32 => "s32".into(),
        Type::S64 => "s64".into(),
        Type::F32 => "f32".into(),
        Type::F64 => "f64".into(),
        Type::Char => "char".into(),
        Type::String => "string".into(),
        Type::ErrorContext => "error-context".into(),
        Type::Id(id) => {
            let def = &r.types[*id];
            match &def.name {
                Some(name) => name.clone(),
                None => anonymous(r, &def.kind),
            }
        }
    }
}

fn anonymous(r: &Resolve, kind: &TypeDefKind) -> String {
    let opt = |t: &Option<Type>| t.as_ref().map(|t| type_name(r, t)).unwrap_or_else(|| "_".into());
    match kind {
        TypeDefKind::Option(t) => format!("option<{}>", type_name(r, t)),
        TypeDefKind::List(t) => format!("list<{}>", type_name(r, t)),
        TypeDefKind::Result(res) => match (&res.ok, &res.err) {
            (None, None) => "result".into(),
            (ok, err) => format!("result<{}, {}>", opt(ok), opt(err)),
        },
        TypeDefKind::Tuple(t) => format!(
            "tuple<{}>",
            t.types.iter().map(|t| type_name(r, t)).collect::<Vec<_>>().join(", ")
        ),
        TypeDefKind::Handle(wit_parser::Handle::Borrow(id)) => {
            format!("borrow<{}>", r.types[*id].name.clone().unwrap_or_default())
        }
        TypeDefKind::Handle(wit_parser::Handle::Own(id)) => r.types[*id].name.clone().unwrap_or_default(),
        TypeDefKind::Type(t) => type_name(r, t),
        other => other.as_str().to_string(),
    }
}
