//! `builtin:render`: the consul-template role. Renders a Jinja template (minijinja) over the
//! running instances of one or more services into a file, and runs a reload command only
//! when the file changed. With no instance running, the template's `{% else %}` branch
//! renders: the article's "force a 502" upstream.
//!
//! Each instance offers `id`, `address`, `port`, `version`, `digest`, `labels` and `weight`
//! (1, or during a canary its share as the host weighs it, for nginx's `weight=`).
//!
//! ```jinja
//! upstream seed {
//! {% for i in services["seed"] %}  server {{ i.address }}:{{ i.port }} weight={{ i.weight }};
//! {% else %}  server 127.0.0.1:65535; # force a 502
//! {% endfor %}}
//! ```

use serde::Serialize;
use std::collections::BTreeMap;
use wharf_step::process::{self, Command};
use wharf_step::{CapabilityKind, Context, Outputs, Step, StepError, StepInfo, deploy, error, log, param};

struct Render;

#[derive(Serialize)]
struct InstanceView {
    id: String,
    address: String,
    port: u16,
    version: String,
    digest: String,
    /// The instance's relative share of traffic: 1, or while a canary runs the weight the
    /// host gives it (`wharf.weight`), for a load balancer's `weight=`.
    weight: u64,
    labels: BTreeMap<String, String>,
}

impl Step for Render {
    fn describe() -> StepInfo {
        StepInfo::new(
            "render",
            "Render a template over live service instances; reload on change",
        )
        .param(param::text("template", "Template file (minijinja), relative to the workspace").required())
        .param(param::text("output", "File to write, relative to the workspace").required())
        .param(
            param::text_list(
                "services",
                "Services whose instances the template sees as services[NAME]",
            )
            .required(),
        )
        .param(param::text_list(
            "reload",
            "Program and arguments to run when the file changed, e.g. [nginx, -s, reload]; an empty program runs nothing",
        ))
        .output("changed", "true when the file was rewritten")
        .output("instances", "Running instances the template saw")
        .needs(
            CapabilityKind::Deploy,
            "lists the services' instances",
            Some("services"),
        )
        .needs(CapabilityKind::WorkspaceRead, "reads the template", Some("template"))
        .needs(CapabilityKind::WorkspaceWrite, "writes the output file", Some("output"))
        .needs(CapabilityKind::Process, "runs the reload command", Some("reload"))
    }

    fn run(ctx: Context) -> Result<Outputs, StepError> {
        let template_path = ctx.text("template")?;
        let output_path = ctx.text("output")?;
        let template = std::fs::read_to_string(&template_path)
            .map_err(|e| error::invalid_input(format!("cannot read template `{template_path}`: {e}")))?;
        let mut services: BTreeMap<String, Vec<InstanceView>> = BTreeMap::new();
        let mut count = 0;
        for name in ctx.list("services")? {
            let instances: Vec<InstanceView> = deploy::instances(&name)?
                .into_iter()
                .map(|i| InstanceView {
                    weight: i
                        .labels
                        .iter()
                        .find(|(k, _)| k == "wharf.weight")
                        .and_then(|(_, v)| v.parse().ok())
                        .unwrap_or(1),
                    id: i.id,
                    address: i.address,
                    port: i.port,
                    version: i.version,
                    digest: i.digest,
                    labels: i.labels.into_iter().collect(),
                })
                .collect();
            count += instances.len();
            services.insert(name, instances);
        }
        let mut env = minijinja::Environment::new();
        env.set_undefined_behavior(minijinja::UndefinedBehavior::Strict);
        env.add_template("template", &template)
            .map_err(|e| error::invalid_input(format!("{template_path}: {e}")))?;
        let rendered = env
            .get_template("template")
            .and_then(|t| t.render(minijinja::context! { services => services }))
            .map_err(|e| error::invalid_input(format!("{template_path}: {e}")))?;
        let before = std::fs::read_to_string(&output_path).ok();
        let changed = before.as_deref() != Some(rendered.as_str());
        if changed {
            if let Some(parent) = std::path::Path::new(&output_path)
                .parent()
                .filter(|p| !p.as_os_str().is_empty())
            {
                std::fs::create_dir_all(parent).map_err(|e| error::permanent(format!("{}: {e}", parent.display())))?;
            }
            std::fs::write(&output_path, &rendered)
                .map_err(|e| error::permanent(format!("cannot write `{output_path}`: {e}")))?;
            log::info(&format!("rendered {output_path} over {count} instance(s)"));
            let reload = ctx.list("reload")?;
            // An empty program (a pipeline variable left empty) reloads nothing.
            if let Some((program, args)) = reload.split_first().filter(|(program, _)| !program.is_empty()) {
                let done = process::run(&Command {
                    program: program.clone(),
                    args: args.to_vec(),
                    env: Vec::new(),
                    cwd: None,
                    timeout_ms: Some(60_000),
                })?;
                if done.exit_code != Some(0) {
                    return Err(error::permanent(format!(
                        "reload `{}` failed: {}",
                        reload.join(" "),
                        done.stderr.trim()
                    )));
                }
                log::info(&format!("reloaded with `{}`", reload.join(" ")));
            }
        } else {
            log::info(&format!("{output_path} unchanged; no reload"));
        }
        Ok(vec![
            ("changed".into(), changed.to_string()),
            ("instances".into(), count.to_string()),
        ])
    }
}

wharf_step::export!(Render);
