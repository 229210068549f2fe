//! `builtin:finish`: the article's Finish Upgrade / Rollback buttons. `auto` confirms when
//! the gate passed and rolls back otherwise; a service that is not awaiting a decision is
//! left alone.

use wharf_step::deploy::{self, ServiceState};
use wharf_step::{CapabilityKind, Context, Outputs, Step, StepError, StepInfo, error, log, param};

struct Finish;

impl Step for Finish {
    fn describe() -> StepInfo {
        StepInfo::new("finish", "Confirm an upgrade or roll it back")
            .version(env!("CARGO_PKG_VERSION"))
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
                "" => {
                    return Err(error::invalid_input(
                        "mode `auto` needs `gate: ${{ steps.GATE.outcome }}`",
                    ));
                }
                _ => false,
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
            (
                "state".into(),
                match status.state {
                    ServiceState::Absent => "absent",
                    ServiceState::Active => "active",
                    ServiceState::Upgrading => "upgrading",
                    ServiceState::Upgraded => "upgraded",
                    ServiceState::RollingBack => "rolling-back",
                }
                .into(),
            ),
            ("version".into(), version),
        ])
    }
}

wharf_step::export!(Finish);
