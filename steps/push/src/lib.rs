//! `builtin:push`: push an image from the local store to an OCI registry. Version tags are
//! immutable: moving a tag to another digest fails, the same digest again is a no-op. With no
//! registry the local store is the destination and the image is passed on as it is.

use wharf_step::registry::{self, PushRequest};
use wharf_step::{CapabilityKind, Context, Outputs, Step, StepError, StepInfo, error, log, param, secrets};

struct Push;

/// `REPO:TAG@DIGEST` -> (repo, tag, digest)
fn split(image: &str) -> Result<(String, String, String), StepError> {
    let bad = || {
        error::invalid_input(format!(
            "`{image}` is not REPO:TAG@sha256:... (use the build step's `image` output)"
        ))
    };
    let (name, digest) = image.split_once('@').ok_or_else(bad)?;
    let (repo, tag) = name.rsplit_once(':').ok_or_else(bad)?;
    Ok((repo.to_string(), tag.to_string(), digest.to_string()))
}

impl Step for Push {
    fn describe() -> StepInfo {
        StepInfo::new(
            "push",
            "Push an image to an OCI registry under an immutable version tag",
        )
        .param(
            param::text(
                "image",
                "REPO:TAG@sha256:... in the local store (the build step's `image`)",
            )
            .required(),
        )
        .param(param::text("registry", "HOST[:PORT]; empty keeps the image in the local store").default_text(""))
        .param(param::text(
            "repository",
            "Repository in the registry [default: the image's]",
        ))
        .param(param::text("tag", "Tag in the registry [default: the image's]"))
        .param(param::text("username", "Registry user (with `password-secret`)"))
        .param(param::text(
            "password-secret",
            "Name of the secret holding the password or token",
        ))
        .param(
            param::boolean("insecure", "Plain HTTP (loopback registries only; they use it anyway)").default_bool(false),
        )
        .param(param::text(
            "provenance-key",
            "Name of the secret holding the private key (`wharf key generate`) that signs the pushed image's provenance; wharf attaches it to the image",
        ))
        .output("image", "REGISTRY/REPO:TAG@sha256:... as pushed")
        .output("digest", "The manifest digest")
        .output("uploaded", "Blobs sent")
        .output("skipped", "Blobs the registry already had")
        .needs(CapabilityKind::Registry, "pushes the image", Some("registry"))
        .needs(CapabilityKind::Secrets, "registry credentials", Some("password-secret"))
        .needs(CapabilityKind::Secrets, "signs the image's provenance", Some("provenance-key"))
    }

    fn run(ctx: Context) -> Result<Outputs, StepError> {
        let image = ctx.text("image")?;
        let (repo, tag, digest) = split(&image)?;
        let registry_host = ctx.text("registry")?;
        if registry_host.is_empty() {
            log::info(&format!("no registry given: {image} stays in the local image store"));
            return Ok(vec![
                ("image".into(), image),
                ("digest".into(), digest),
                ("uploaded".into(), "0".into()),
                ("skipped".into(), "0".into()),
            ]);
        }
        let password = match ctx.opt_text("password-secret")? {
            Some(name) if !name.is_empty() => Some(secrets::get(&name)?),
            _ => None,
        };
        let pushed = registry::push(
            &PushRequest {
                image: format!("{repo}:{tag}@{digest}"),
                registry: registry_host,
                repository: ctx.opt_text("repository")?.unwrap_or(repo),
                tag: ctx.opt_text("tag")?.unwrap_or(tag),
                insecure: ctx.flag("insecure")?,
                username: ctx.opt_text("username")?.filter(|u| !u.is_empty()),
            },
            password.as_ref(),
        )?;
        Ok(vec![
            ("image".into(), pushed.reference),
            ("digest".into(), pushed.digest),
            ("uploaded".into(), pushed.blobs_uploaded.to_string()),
            ("skipped".into(), pushed.blobs_skipped.to_string()),
        ])
    }
}

wharf_step::export!(Push);
