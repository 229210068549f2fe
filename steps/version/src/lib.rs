//! `builtin:version`: an immutable version from git describe, `1.0.1-22-7e56158`: the nearest
//! tag, the commits since it and the short commit id. Deploying this instead of `latest` is
//! what makes a rollback land on the build it names.

use wharf_step::source::{self, Revision};
use wharf_step::{CapabilityKind, Context, Outputs, Step, StepError, StepInfo, error, param};

struct Version;

impl Step for Version {
    fn describe() -> StepInfo {
        StepInfo::new(
            "version",
            "Derive an immutable version (TAG-COMMITS-SHA) from git describe",
        )
        .param(param::boolean("allow-dirty", "Accept uncommitted changes and append `-dirty`").default_bool(false))
        .output("version", "TAG-COMMITS-SHA, e.g. 1.0.1-22-7e56158")
        .output(
            "tag",
            "The nearest tag without a leading `v`; 0.0.0 when the repository has none",
        )
        .output("commits", "Commits since the tag")
        .output("sha", "Abbreviated commit id")
        .output("dirty", "true when the work tree had uncommitted changes")
        .needs(CapabilityKind::Source, "reads git describe of the workspace", None)
    }

    fn run(ctx: Context) -> Result<Outputs, StepError> {
        let revision = source::describe()?;
        let allow_dirty = ctx.flag("allow-dirty")?;
        let version = version_of(&revision, allow_dirty)?;
        wharf_step::log::info(&format!("version {version}"));
        Ok(vec![
            ("version".into(), version),
            ("tag".into(), tag_of(&revision)),
            ("commits".into(), revision.commits_since.to_string()),
            ("sha".into(), revision.short_sha.clone()),
            ("dirty".into(), revision.dirty.to_string()),
        ])
    }
}

fn tag_of(revision: &Revision) -> String {
    match &revision.tag {
        Some(tag) => tag.strip_prefix('v').unwrap_or(tag).to_string(),
        None => "0.0.0".to_string(),
    }
}

fn version_of(revision: &Revision, allow_dirty: bool) -> Result<String, StepError> {
    let mut version = format!("{}-{}-{}", tag_of(revision), revision.commits_since, revision.short_sha);
    if revision.dirty {
        if !allow_dirty {
            return Err(error::invalid_input(
                "the work tree has uncommitted changes, so the version would not name what is built; \
                 commit them, or set `allow-dirty: true` to build `VERSION-dirty`",
            ));
        }
        version.push_str("-dirty");
    }
    Ok(version)
}

wharf_step::export!(Version);
