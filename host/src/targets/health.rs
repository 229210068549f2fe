//! Health checks: HTTP GET on an instance's health path until it answers 2xx.

use super::spec::Instance;
use super::{Target, TargetError};
use std::time::{Duration, Instant};

pub async fn wait<T: Target + ?Sized>(
    target: &T,
    instance: &Instance,
    path: &str,
    timeout: Duration,
) -> Result<(), TargetError> {
    let url = format!("http://{}:{}{}", instance.address, instance.port, path);
    crate::oci::registry::tls_provider();
    let client = reqwest::Client::builder()
        .timeout(Duration::from_secs(2))
        .build()
        .map_err(|e| TargetError::Unhealthy {
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
            return Err(TargetError::Unhealthy {
                instance: instance.id.clone(),
                why: format!("exited before it became healthy{}", log_tail(instance)),
            });
        }
        if Instant::now() >= deadline {
            return Err(TargetError::Unhealthy {
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

/// The last lines of the instance's log, read from its last 16 KiB: a service may have
/// written gigabytes.
fn log_tail(instance: &Instance) -> String {
    use std::io::{Read, Seek, SeekFrom};
    let Some(path) = &instance.log else {
        return String::new();
    };
    let mut end = Vec::new();
    if let Ok(mut file) = std::fs::File::open(path) {
        let from = file.seek(SeekFrom::End(0)).unwrap_or(0).saturating_sub(16 << 10);
        let _ = file.seek(SeekFrom::Start(from));
        let _ = file.take(16 << 10).read_to_end(&mut end);
    }
    let text = String::from_utf8_lossy(&end);
    let lines: Vec<&str> = text.lines().collect();
    let tail = lines[lines.len().saturating_sub(5)..].join("\n");
    if tail.is_empty() {
        format!("; its log {path} is empty")
    } else {
        format!("; the end of its log {path}:\n{tail}")
    }
}
