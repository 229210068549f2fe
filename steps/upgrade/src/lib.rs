//! `builtin:upgrade`: a two-phase rolling upgrade. The host records the running revision as
//! `previous` and owns the state; this step decides the order: instances are replaced in
//! batches (`start-first`: new before old goes, `stop-first`: old makes room first), each new
//! one must pass its health check, and the service is left `upgraded`, awaiting confirm.
//! A target that schedules services itself (`swarm`) gets the whole rollout in one call,
//! with the same batches, order and health timeout as its policy.
//!
//! A canary is the same upgrade in steps: `traffic: 10` starts enough new instances for a
//! tenth of the replicas (one at least), keeps every old one, and asks the host to weigh
//! them so the new revision takes 10% of the traffic (`wharf.weight`, which a render of the
//! load balancer writes); the service stays `upgrading`. A later step of the same run with
//! `traffic: 50` carries on from there, and `traffic: 100` ends as any upgrade does: the
//! rest of the new instances started, the old ones stopped, the service `upgraded`.

use std::time::Duration;
use wharf_step::deploy::{self, Placement, Revision, RolloutPolicy, ServiceSpec};
use wharf_step::{CapabilityKind, Context, Outputs, Step, StepError, StepInfo, error, log, param};

struct Upgrade;

/// `...:TAG@sha256:...` -> (tag, digest)
fn tag_and_digest(image: &str) -> Result<(Option<String>, String), StepError> {
    let Some((name, digest)) = image.split_once('@') else {
        return Err(error::invalid_input(format!(
            "{image} has no digest; deploys pin digests so a rollback returns to exactly this build: use the push step's `image` output"
        )));
    };
    let last = name.rsplit('/').next().unwrap_or(name);
    Ok((last.split_once(':').map(|(_, t)| t.to_string()), digest.to_string()))
}

/// A tag that names a branch or a channel, not one build.
fn mutable(tag: &str) -> bool {
    [
        "latest", "master", "main", "stable", "edge", "nightly", "dev", "develop",
    ]
    .contains(&tag)
        || !tag.chars().any(|c| c.is_ascii_digit())
}

impl Step for Upgrade {
    fn describe() -> StepInfo {
        StepInfo::new("upgrade", "Rolling upgrade of a service to an image pinned by digest")
            .param(param::text("service", "Service name").required())
            .param(param::text("image", "Image with digest (the push step's `image`)").required())
            .param(param::text(
                "version",
                "Version being deployed [default: the image tag]",
            ))
            .param(param::text("target", "Deploy target: `local`, `docker` or `swarm`").default_text("local"))
            .param(param::integer("replicas", "Instances to run").default_int(1))
            .param(param::integer("batch-size", "Instances replaced at a time").default_int(1))
            .param(param::duration("interval", "Pause between batches").default_ms(0))
            .param(param::text("order", "`start-first` or `stop-first`").default_text("start-first"))
            .param(param::integer("port", "Port the service listens on inside its instance").default_int(8080))
            .param(
                param::text("health-path", "HTTP path that answers 2xx when an instance is healthy").default_text("/"),
            )
            .param(
                param::duration("health-timeout", "How long a new instance may take to become healthy")
                    .default_ms(30_000),
            )
            .param(param::text_list(
                "health-command",
                "On a target that schedules itself (swarm): a command run inside each task to check its health, the program first; it must be in the image",
            ))
            .param(param::text_map("env", "Environment of the instances"))
            .param(param::text_map("labels", "Labels of the instances"))
            .param(param::boolean("one-per-host", "At most one instance per host (anti-affinity)").default_bool(false))
            .param(param::text_map(
                "host-labels",
                "Labels a host must carry to run an instance; a label with an empty value is ignored, so a pipeline variable can turn it off",
            ))
            .param(
                param::integer(
                    "traffic",
                    "Percent of the traffic for the new revision: below 100 a canary step (both revisions run, weighted), 100 the whole upgrade",
                )
                .default_int(100),
            )
            .param(param::boolean("allow-mutable-tag", "Accept tags like `latest` or `master`").default_bool(false))
            .param(param::text(
                "require-provenance",
                "Public-key file in the workspace: deploy only an image whose provenance that key signed (checked by wharf at the image's registry before any instance changes)",
            ))
            .output("service", "The service")
            .output("state", "Its state afterwards: upgraded, or upgrading after a canary step")
            .output("version", "The version now running")
            .output("digest", "The digest now running")
            .output("previous-version", "The version it replaced (empty on a first deploy)")
            .output("previous-digest", "The digest it replaced")
            .output("url", "http://ADDRESS:PORT of the first new instance")
            .output("instances", "Number of new instances")
            .output("traffic", "Percent of the traffic the new revision takes")
            .needs(
                CapabilityKind::Deploy,
                "replaces the service's instances",
                Some("service"),
            )
    }

    fn run(ctx: Context) -> Result<Outputs, StepError> {
        let service = ctx.text("service")?;
        let image = ctx.text("image")?;
        let (tag, digest) = tag_and_digest(&image)?;
        if let Some(tag) = &tag
            && mutable(tag)
            && !ctx.flag("allow-mutable-tag")?
        {
            return Err(error::invalid_input(format!(
                "tag `{tag}` is mutable: a rollback would redeploy whatever it points to then. Deploy an immutable version tag (builtin:version), or set `allow-mutable-tag: true`"
            )));
        }
        let version = ctx.opt_text("version")?.or(tag).unwrap_or_else(|| digest.clone());
        let replicas = positive(&ctx, "replicas")?;
        let batch = positive(&ctx, "batch-size")? as usize;
        let start_first = match ctx.text("order")?.as_str() {
            "start-first" => true,
            "stop-first" => false,
            other => {
                return Err(error::invalid_input(format!(
                    "unknown order `{other}`; use `start-first` or `stop-first`"
                )));
            }
        };
        let port = u16::try_from(ctx.int("port")?).map_err(|_| error::invalid_input("`port` must be 1-65535"))?;
        let health_timeout = ctx.duration_ms("health-timeout")?;
        let interval = ctx.duration_ms("interval")?;
        let traffic = match u8::try_from(ctx.int("traffic")?) {
            Ok(p @ 1..=100) => p,
            _ => {
                return Err(error::invalid_input(
                    "`traffic` is a percent from 1 to 100: below 100 a canary step, 100 the whole upgrade",
                ));
            }
        };

        let spec = ServiceSpec {
            service: service.clone(),
            target: ctx.text("target")?,
            revision: Revision {
                image: image.clone(),
                digest: digest.clone(),
                version: version.clone(),
            },
            replicas,
            port,
            health_path: ctx.text("health-path")?,
            env: ctx.map("env")?,
            labels: ctx.map("labels")?,
            placement: Placement {
                one_per_host: ctx.flag("one-per-host")?,
                host_labels: ctx
                    .map("host-labels")?
                    .into_iter()
                    .filter(|(_, value)| !value.is_empty())
                    .collect(),
            },
        };
        let policy = RolloutPolicy {
            batch_size: batch as u32,
            interval_ms: interval,
            start_first,
            health_timeout_ms: health_timeout,
            health_command: ctx.list("health-command")?,
        };
        let canary = traffic < 100;
        let scheduled = if canary {
            // A scheduler's share of replicas, the new revision as a service of its own.
            deploy::canary(&spec, &policy, traffic)?.map(|after| (after, traffic))
        } else {
            deploy::rollout(&spec, &policy)?.map(|after| (after, 100))
        };
        if let Some((after, traffic)) = scheduled {
            return Ok(outputs(service, version, digest, &after, traffic));
        }
        // Begun by this step, or carried on from an earlier canary step of this run.
        let before = deploy::begin_upgrade(&spec)?;
        let previous = before.previous.clone();
        let (mut started, running_old): (Vec<deploy::Instance>, Vec<deploy::Instance>) = before
            .instances
            .iter()
            .filter(|i| i.running)
            .cloned()
            .partition(|i| i.digest == digest);
        let mut old: Vec<String> = running_old.into_iter().map(|i| i.id).collect();
        let replacing = old.len();
        match &previous {
            Some(p) if started.is_empty() => log::info(&format!(
                "{service}: {} -> {version}, {} running instance(s) to replace",
                p.version,
                old.len()
            )),
            Some(p) => log::info(&format!(
                "{service}: {} -> {version} carries on: {} new, {} old instance(s) running",
                p.version,
                started.len(),
                old.len()
            )),
            None => log::info(&format!("{service}: first deploy of {version}")),
        }
        if canary {
            if previous.is_none() {
                log::info(&format!(
                    "{service}: first deploy: no earlier revision shares the traffic, every request meets {version}"
                ));
            }
            // Enough new instances for the share of the replicas, one at least.
            let wanted = (u32::from(traffic) * replicas).div_ceil(100).max(1) as usize;
            while started.len() < wanted {
                let instance = deploy::start_instance(&service)?;
                deploy::wait_healthy(&service, &instance.id, health_timeout)?;
                started.push(instance);
            }
            let after = deploy::shift_traffic(&service, traffic)?;
            log::info(&format!(
                "{service}: {traffic}% of the traffic to {version} ({} new, {} old instance(s))",
                started.len(),
                old.len()
            ));
            return Ok(outputs(service, version, digest, &after, traffic));
        }

        let mut round = 0;
        while (started.len() as u32) < replicas || !old.is_empty() {
            if round > 0 && interval > 0 {
                std::thread::sleep(Duration::from_millis(interval));
            }
            round += 1;
            let to_start = batch.min(replicas as usize - started.len());
            let to_stop: Vec<String> = old.drain(..batch.min(old.len())).collect();
            if !start_first {
                for id in &to_stop {
                    deploy::stop_instance(&service, id)?;
                }
            }
            for _ in 0..to_start {
                let instance = deploy::start_instance(&service)?;
                deploy::wait_healthy(&service, &instance.id, health_timeout)?;
                started.push(instance);
            }
            if start_first {
                for id in &to_stop {
                    deploy::stop_instance(&service, id)?;
                }
            }
            match replacing {
                0 => log::progress("instances started", started.len() as u64, Some(u64::from(replicas))),
                n => log::progress("instances replaced", (n - old.len()) as u64, Some(n as u64)),
            }
        }
        let after = deploy::finish_upgrade(&service)?;
        Ok(outputs(service, version, digest, &after, 100))
    }
}

/// The step's outputs from the service as the upgrade (or canary step) left it: `url` is
/// that of the first running instance of the new revision.
fn outputs(service: String, version: String, digest: String, after: &deploy::ServiceStatus, traffic: u8) -> Outputs {
    let previous = after.previous.as_ref();
    let new: Vec<&deploy::Instance> = after
        .instances
        .iter()
        .filter(|i| i.running && i.digest == digest)
        .collect();
    let url = new
        .first()
        .map(|i| format!("http://{}:{}", i.address, i.port))
        .unwrap_or_default();
    vec![
        ("service".into(), service),
        // A canary step leaves the upgrade under way.
        (
            "state".into(),
            if traffic < 100 { "upgrading" } else { "upgraded" }.into(),
        ),
        ("version".into(), version),
        ("digest".into(), digest),
        (
            "previous-version".into(),
            previous.map(|p| p.version.clone()).unwrap_or_default(),
        ),
        (
            "previous-digest".into(),
            previous.map(|p| p.digest.clone()).unwrap_or_default(),
        ),
        ("url".into(), url),
        ("instances".into(), new.len().to_string()),
        ("traffic".into(), traffic.to_string()),
    ]
}

fn positive(ctx: &Context, name: &str) -> Result<u32, StepError> {
    match u32::try_from(ctx.int(name)?) {
        Ok(n) if n > 0 => Ok(n),
        _ => Err(error::invalid_input(format!("`{name}` must be at least 1"))),
    }
}

wharf_step::export!(Upgrade);
