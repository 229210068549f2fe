//! `builtin:build`: run the build command, then assemble an OCI image from workspace files
//! into the local image store (or build a Dockerfile on a Docker engine). The image carries
//! `org.opencontainers.image.version` and `.revision` labels.

use wharf_step::images::{self, AssembleRequest, DockerBuildRequest, FileMapping, ImageConfig};
use wharf_step::process::{self, Command};
use wharf_step::{CapabilityKind, Context, Outputs, Step, StepError, StepInfo, error, log, param, source};

struct Build;

impl Step for Build {
    fn describe() -> StepInfo {
        StepInfo::new("build", "Run the build command and package the result as an OCI image")
            .param(param::text(
                "command",
                "Build program to run first (e.g. cargo, make); none to only package",
            ))
            .param(param::text_list("args", "Arguments of the build command"))
            .param(param::text_map("build-env", "Environment of the build command"))
            .param(
                param::duration("build-timeout", "Stop the build command after this long").default_ms(30 * 60 * 1000),
            )
            .param(
                param::text(
                    "builder",
                    "`oci` (assemble in wharf) or `docker` (docker build of a Dockerfile)",
                )
                .default_text("oci"),
            )
            .param(param::text("repository", "Image repository name in the local store, e.g. `seed`").required())
            .param(param::text("tag", "Image tag: the immutable version").required())
            .param(param::text(
                "base",
                "Base image REGISTRY/REPO:TAG[@DIGEST]; none builds FROM scratch",
            ))
            .param(param::text_map("files", "Workspace path -> absolute path in the image"))
            .param(param::text_list("entrypoint", "Image entrypoint"))
            .param(param::text_list("cmd", "Image cmd"))
            .param(param::text_map("env", "Image environment"))
            .param(param::text_list("ports", "Exposed ports, `8080` or `8080/tcp`"))
            .param(param::text_map("labels", "Image labels"))
            .param(param::text("workdir", "Working directory in the image"))
            .param(param::text("user", "User in the image"))
            .param(param::text(
                "revision",
                "The `org.opencontainers.image.revision` label [default: the workspace's git commit]",
            ))
            .param(param::text(
                "context",
                "Docker build context, a directory of the workspace (`builder: docker`)",
            ))
            .param(param::text("dockerfile", "Dockerfile, relative to the context").default_text("Dockerfile"))
            .param(param::text_map("build-args", "Docker build arguments"))
            .output("image", "REPO:TAG@sha256:... in the local image store")
            .output("digest", "The manifest digest")
            .output("reference", "REPO:TAG")
            .output("size", "Compressed size of the layers, bytes")
            .needs(CapabilityKind::Process, "runs the build command", Some("command"))
            .needs(CapabilityKind::Source, "reads the commit for the revision label", None)
            .needs(CapabilityKind::Images, "assembles the image in the host", None)
            .needs(CapabilityKind::WorkspaceRead, "packages these files", Some("files"))
            .needs(
                CapabilityKind::WorkspaceRead,
                "sends the build context to Docker",
                Some("context"),
            )
    }

    fn run(ctx: Context) -> Result<Outputs, StepError> {
        if let Some(program) = ctx.opt_text("command")?.filter(|p| !p.is_empty()) {
            let done = process::run(&Command {
                program: program.clone(),
                args: ctx.list("args")?,
                env: ctx.map("build-env")?,
                cwd: None,
                timeout_ms: ctx.opt_duration_ms("build-timeout")?,
            })?;
            if done.exit_code != Some(0) {
                let tail: Vec<&str> = done.stderr.trim_end().lines().rev().take(8).collect();
                let tail: Vec<&str> = tail.into_iter().rev().collect();
                return Err(error::permanent(format!(
                    "build command `{program}` failed ({}):\n{}",
                    done.exit_code.map_or("killed".to_string(), |c| format!("exit {c}")),
                    tail.join("\n")
                )));
            }
            log::info(&format!("build command finished in {} ms", done.duration_ms));
        }
        let repository = ctx.text("repository")?;
        let tag = ctx.text("tag")?;
        let revision = match ctx.opt_text("revision")? {
            Some(r) => r,
            None => source::describe().map(|r| r.sha).unwrap_or_default(),
        };
        let mut labels = ctx.map("labels")?;
        labels.push(("org.opencontainers.image.version".into(), tag.clone()));
        if !revision.is_empty() {
            labels.push(("org.opencontainers.image.revision".into(), revision));
        }
        let image = match ctx.text("builder")?.as_str() {
            "oci" => {
                let files: Vec<FileMapping> = ctx
                    .map("files")?
                    .into_iter()
                    .map(|(source, target)| FileMapping { source, target })
                    .collect();
                if files.is_empty() {
                    return Err(error::invalid_input(
                        "`files` is empty: name the workspace paths to put in the image",
                    ));
                }
                images::assemble(&AssembleRequest {
                    repository,
                    tag,
                    base: ctx.opt_text("base")?.filter(|b| !b.is_empty()),
                    files,
                    config: ImageConfig {
                        entrypoint: ctx.list("entrypoint")?,
                        cmd: ctx.list("cmd")?,
                        env: ctx.map("env")?,
                        exposed_ports: ctx.list("ports")?,
                        labels,
                        workdir: ctx.opt_text("workdir")?,
                        user: ctx.opt_text("user")?,
                    },
                })?
            }
            "docker" => images::docker_build(&DockerBuildRequest {
                repository,
                tag,
                context: ctx.opt_text("context")?.ok_or_else(|| {
                    error::invalid_input("`builder: docker` needs `context:`, the directory to build")
                })?,
                dockerfile: ctx.opt_text("dockerfile")?,
                build_args: ctx.map("build-args")?,
                labels,
            })?,
            other => {
                return Err(error::invalid_input(format!(
                    "unknown builder `{other}`; use `oci` or `docker`"
                )));
            }
        };
        log::info(&format!(
            "image {}@{} ({} layers, {} bytes)",
            image.reference, image.digest, image.layers, image.size
        ));
        Ok(vec![
            ("image".into(), format!("{}@{}", image.reference, image.digest)),
            ("digest".into(), image.digest),
            ("reference".into(), image.reference),
            ("size".into(), image.size.to_string()),
        ])
    }
}

wharf_step::export!(Build);
