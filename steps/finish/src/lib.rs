//! `builtin:finish`: the article's Finish Upgrade / Rollback buttons. `auto` confirms when
//! the gate passed and rolls back otherwise; a service that is not awaiting a decision is
//! left alone.

use wharf_step::deploy::{self, ServiceState};
use wharf_step::{CapabilityKind, Context, Outputs, Step, StepError, StepInfo, error, log, param};

struct Finish;

impl Step for Finish {
    fn describe() -> StepInfo {
        StepInfo::new("finish", "Confirm an upgrade or roll it back")
            .param(param::text("service", "Service name").required())
            .param(param::text("mode", "`confirm`, `rollback` or `auto`").default_text("auto"))
            .param(param::text("gate", "With `auto`: the gate's outcome, `${{ steps.GATE.outcome }}`").default_text(""))
            .output("action", "confirmed, rolled-back or none")
            .output("state", "The service's state afterwards")
            .output("version", "The version running afterwards")
            .needs(
                CapabilityKind::Deploy,
                "confirms or rolls back the service",
                Some("service"),
            )
    }

    fn run(ctx: Context) -> Result<Outputs, StepError> {
        let service = ctx.text("service")?;
        let mode = ctx.text("mode")?;
        let confirm = match mode.as_str() {
            "confirm" => true,
            "rollback" => false,
            "auto" => match ctx.text("gate")?.as_str() {
                "success" => true,
                "failure" => false,
                // The gate never ran (its run failed earlier, or another run holds the
                // service): there is nothing to judge, so nothing is decided here; the
                // run's failure handling rolls back what it deployed itself.
                "skipped" => {
                    log::info(&format!("the gate did not run; nothing to decide for {service}"));
                    let status = deploy::status(&service)?;
                    return Ok(vec![
                        ("action".into(), "none".into()),
                        ("state".into(), state_name(status.state).into()),
                        ("version".into(), status.current.map(|c| c.version).unwrap_or_default()),
                    ]);
                }
                "" => {
                    return Err(error::invalid_input(
                        "mode `auto` needs `gate: ${{ steps.GATE.outcome }}`",
                    ));
                }
                other => {
                    return Err(error::invalid_input(format!(
                        "`gate: {other}` is not an outcome; use `${{{{ steps.GATE.outcome }}}}` (success, failure or skipped)"
                    )));
                }
            },
            other => {
                return Err(error::invalid_input(format!(
                    "unknown mode `{other}`; use confirm, rollback or auto"
                )));
            }
        };
        let status = deploy::status(&service)?;
        let pending = matches!(
            status.state,
            ServiceState::Upgraded | ServiceState::Upgrading | ServiceState::RollingBack
        );
        let (action, status) = if !pending {
            log::info(&format!("{service} is not awaiting a decision; nothing to do"));
            ("none", status)
        } else if confirm && status.state == ServiceState::Upgraded {
            ("confirmed", deploy::confirm(&service)?)
        } else if confirm && status.state == ServiceState::Upgrading {
            // Nothing half-done is confirmed (a canary plan that stopped short of 100%).
            let after = deploy::rollback(&service)?;
            return Err(error::permanent(format!(
                "{service} cannot be confirmed: its upgrade did not finish (a canary plan ends with `traffic: 100`); rolled back to {}",
                after.current.map(|c| c.version).unwrap_or_else(|| "nothing".into())
            )));
        } else {
            ("rolled-back", deploy::rollback(&service)?)
        };
        let version = status.current.map(|c| c.version).unwrap_or_default();
        log::info(&format!(
            "{service}: {action}, running {}",
            if version.is_empty() { "nothing" } else { &version }
        ));
        Ok(vec![
            ("action".into(), action.into()),
            ("state".into(), state_name(status.state).into()),
            ("version".into(), version),
        ])
    }
}

fn state_name(state: ServiceState) -> &'static str {
    match state {
        ServiceState::Absent => "absent",
        ServiceState::Active => "active",
        ServiceState::Upgrading => "upgrading",
        ServiceState::Upgraded => "upgraded",
        ServiceState::RollingBack => "rolling-back",
    }
}

wharf_step::export!(Finish);
