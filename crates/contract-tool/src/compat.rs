//! The machine check behind the contract's promise (docs/contract.md): `wit/` may only
//! grow within a major version, every addition says since when, and a released version is
//! never edited in place.
//!
//! Released versions live in `wit/released/VERSION/`, copies of `wit/` as it was released.
//! Against them, the current `wit/` must be
//! - the same contract as its own release, when its version is released (docs may change,
//!   nothing else);
//! - a compatible successor of the newest release of its major version, when it is not:
//!   a component built against that release must still instantiate against the current
//!   worlds (wasm-tools' `component semver-check`), and each interface, type or function
//!   the release did not have carries `@since(version = CURRENT)` or `@unstable`;
//! - a compatible successor of the pre-release 0.1.0, which the host serves by reading
//!   its names as 1.0.0.

use anyhow::{Context, Result, bail};
use semver::Version;
use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use wharf_contract::LEGACY;
use wit_parser::{PackageId, Resolve, Stability};

/// A contract read from a directory of WIT files.
pub struct Contract {
    pub resolve: Resolve,
    pub package: PackageId,
    pub dir: PathBuf,
}

impl Contract {
    pub fn read(dir: &Path) -> Result<Contract> {
        let mut resolve = Resolve {
            all_features: true,
            ..Resolve::default()
        };
        let (package, _) = resolve
            .push_dir(dir)
            .with_context(|| format!("reading the WIT in {}", dir.display()))?;
        Ok(Contract {
            resolve,
            package,
            dir: dir.to_path_buf(),
        })
    }

    pub fn version(&self) -> Result<Version> {
        let name = &self.resolve.packages[self.package].name;
        name.version
            .clone()
            .with_context(|| format!("{}: package {name} has no version", self.dir.display()))
    }

    /// The contract as WIT text without its docs: what a component can depend on.
    fn shape(&self) -> Result<String> {
        let mut printer = wit_component::WitPrinter::default();
        printer.emit_docs(false);
        printer.print(&self.resolve, self.package, &[])?;
        Ok(printer.output.to_string())
    }

    /// `interface`, `interface.type`, `interface.function` and `world` names it defines,
    /// with the stability each was declared with.
    fn items(&self) -> Vec<(String, Stability)> {
        let r = &self.resolve;
        let mut items = Vec::new();
        for (name, &id) in &r.packages[self.package].interfaces {
            let iface = &r.interfaces[id];
            items.push((name.clone(), iface.stability.clone()));
            for (ty, &tid) in &iface.types {
                items.push((format!("{name}.{ty}"), r.types[tid].stability.clone()));
            }
            for (func, f) in &iface.functions {
                items.push((format!("{name}.{func}"), f.stability.clone()));
            }
        }
        for (name, &id) in &r.packages[self.package].worlds {
            items.push((format!("world {name}"), r.worlds[id].stability.clone()));
        }
        items
    }
}

/// What the check found when all is well, for the log of `.ci/run`.
#[derive(Debug)]
pub struct Verdict {
    pub lines: Vec<String>,
}

/// The released versions under `released`, oldest first.
pub fn released(released: &Path) -> Result<Vec<(Version, PathBuf)>> {
    let mut versions = Vec::new();
    for entry in std::fs::read_dir(released).with_context(|| format!("listing {}", released.display()))? {
        let entry = entry?;
        let name = entry.file_name();
        let Some(version) = name.to_str().and_then(|n| Version::parse(n).ok()) else {
            bail!(
                "{}: a released contract's directory is named by its version (like 1.0.0)",
                entry.path().display()
            );
        };
        versions.push((version, entry.path()));
    }
    versions.sort();
    Ok(versions)
}

/// Check the contract in `wit` against the releases in `released`.
pub fn check(wit: &Path, released_dir: &Path) -> Result<Verdict> {
    let current = Contract::read(wit)?;
    let version = current.version()?;
    // Each release read once, and checked to be the version its directory names.
    let mut releases = Vec::new();
    for (v, dir) in released(released_dir)? {
        let release = Contract::read(&dir)?;
        if release.version()? != v {
            bail!(
                "{}: the directory says {v} but its package line says {}",
                dir.display(),
                release.version()?
            );
        }
        releases.push((v, release));
    }
    let mut lines = Vec::new();
    if let Some((_, release)) = releases.iter().find(|(v, _)| *v == version) {
        if release.shape()? != current.shape()? {
            bail!(
                "wit/ changed but its version is still {version}, which is released ({}): a \
                 released contract never changes. Bump the package version in every wit/*.wit \
                 (to {}.{}.0 for an addition) and mark each addition \
                 `@since(version = {}.{}.0)`",
                release.dir.display(),
                version.major,
                version.minor + 1,
                version.major,
                version.minor + 1
            );
        }
        lines.push(format!("wit/ is the released {version} (docs aside)"));
    } else {
        let newest = releases.iter().rfind(|(v, _)| v.major == version.major && *v < version);
        match newest {
            Some((base, release)) => {
                compatible(release, &current)?;
                since_marked(release, &current, &version)?;
                lines.push(format!(
                    "wit/ {version} is a compatible successor of the released {base}"
                ));
            }
            None if releases.iter().any(|(v, _)| *v > version) => {
                bail!("wit/ is {version}, older than a released version: versions only go forward")
            }
            None => lines.push(format!("wit/ {version} is the first of its major version")),
        }
    }
    // Legacy steps are read as 1.x, so only 1.x must keep them whole.
    if version.major == 1
        && let Some((_, legacy)) = releases.iter().find(|(v, _)| *v == LEGACY)
    {
        compatible(legacy, &current).context("wharf reads 0.1.0 steps as 1.x: 1.x must keep the whole of 0.1.0")?;
        lines.push(format!(
            "wit/ {version} keeps the whole of {LEGACY} (read as {version})"
        ));
    }
    Ok(Verdict { lines })
}

/// Every world of `old` can be served by the same world of `new`: a component built
/// against `old` instantiates where `new` is expected.
pub fn compatible(old: &Contract, new: &Contract) -> Result<()> {
    let mut resolve = new.resolve.clone();
    let new_pkg = new.package;
    // Both packages in one Resolve, as semver_check wants.
    let remap = resolve.merge(old.resolve.clone())?;
    let old_pkg = remap.packages[old.package.index()];
    let old_version = old.version()?;
    let new_version = new.version()?;
    for (name, &old_world) in &resolve.packages[old_pkg].worlds.clone() {
        let Some(&new_world) = resolve.packages[new_pkg].worlds.get(name) else {
            bail!("{new_version} has no world `{name}`, which {old_version} had");
        };
        wit_component::semver_check(resolve.clone(), old_world, new_world).map_err(|e| {
            let chain: Vec<String> = e.chain().map(|c| c.to_string()).collect();
            anyhow::anyhow!(
                "{new_version} is not a compatible successor of {old_version}: a step built \
                 against {old_version}'s world `{name}` would not run on it: {}",
                chain.join(": ")
            )
        })?;
    }
    Ok(())
}

/// Each item `new` has that `old` did not says since when (or that it is unstable).
fn since_marked(old: &Contract, new: &Contract, version: &Version) -> Result<()> {
    let had: BTreeSet<String> = old.items().into_iter().map(|(name, _)| name).collect();
    let mut unmarked = Vec::new();
    for (name, stability) in new.items() {
        if had.contains(&name) {
            continue;
        }
        match stability {
            Stability::Stable { since, .. } if since == *version => {}
            Stability::Unstable { .. } => {}
            Stability::Stable { since, .. } => {
                unmarked.push(format!("{name} (says @since({since}), but it is new in {version})"))
            }
            Stability::Unknown => unmarked.push(name),
        }
    }
    if !unmarked.is_empty() {
        bail!(
            "new in {version} without `@since(version = {version})`: {}",
            unmarked.join(", ")
        );
    }
    Ok(())
}
