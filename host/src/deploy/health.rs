//! Health checks: HTTP GET on an instance's health path until it answers 2xx.

use crate::deploy::DeployError;
use crate::deploy::state::Instance;
use crate::targets::Target;
use std::time::{Duration, Instant};

pub async fn wait<T: Target + ?Sized>(
    target: &T,
    instance: &Instance,
    path: &str,
    timeout: Duration,
) -> Result<(), DeployError> {
    let url = format!("http://{}:{}{}", instance.address, instance.port, path);
    crate::oci::registry::tls_provider();
    let client = reqwest::Client::builder()
        .timeout(Duration::from_secs(2))
        .build()
        .map_err(|e| DeployError::Unhealthy {
            instance: instance.id.clone(),
            why: format!("cannot be checked: {e}"),
        })?;
    let deadline = Instant::now() + timeout;
    loop {
        let last = match client.get(&url).send().await {
            Ok(r) if r.status().is_success() => return Ok(()),
            Ok(r) => format!("answered {}", r.status()),
            Err(e) if e.is_connect() => "connection refused".to_string(),
            Err(e) => e.to_string(),
        };
        if !target.is_running(instance).await {
            return Err(DeployError::Unhealthy {
                instance: instance.id.clone(),
                why: format!("exited before it became healthy{}", log_tail(instance)),
            });
        }
        if Instant::now() >= deadline {
            return Err(DeployError::Unhealthy {
                instance: instance.id.clone(),
                why: format!(
                    "did not become healthy within {} ({url}: {last}){}",
                    humantime::format_duration(timeout),
                    log_tail(instance)
                ),
            });
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

fn log_tail(instance: &Instance) -> String {
    let Some(path) = &instance.log else {
        return String::new();
    };
    let text = std::fs::read_to_string(path).unwrap_or_default();
    let lines: Vec<&str> = text.lines().collect();
    let tail = lines[lines.len().saturating_sub(5)..].join("\n");
    if tail.is_empty() {
        format!("; its log {path} is empty")
    } else {
        format!("; the end of its log {path}:\n{tail}")
    }
}
