//! Outgoing HTTP of a step: the policy every request passes before a connection is made
//! (the `wasi:http` hook that applies it is [`crate::capabilities::http`]).
//!
//! Threat: a step reaches hosts nobody granted it — or the machine itself (a registry or
//! admin port on loopback) and the cloud metadata service (169.254.169.254, link-local),
//! where credentials live — possibly through a granted DNS name that resolves there.
//! Requests must match an `http` grant by scheme, host and port; a name that resolves to a
//! loopback, link-local or unspecified address is refused even when the name is granted:
//! such addresses are reachable only when a grant names them literally (`127.0.0.1`,
//! `localhost`, `169.254.169.254`).
//!
//! Known gap: the connection resolves the name again after the check, so a DNS server that
//! answers differently within milliseconds (rebinding) is not caught here.

use super::grants::{Grants, Refusal, is_sensitive};
use std::net::IpAddr;

/// Why a request is refused, or Ok to send it. Resolves the name to check its addresses.
pub async fn check(grants: &Grants, scheme: &str, host: &str, port: u16) -> Result<(), Refusal> {
    let bare = host.trim_start_matches('[').trim_end_matches(']');
    if grants.http_grant(scheme, bare, port).is_none() || bare.parse::<IpAddr>().is_ok() {
        return check_resolved(grants, scheme, host, port, &[]);
    }
    let addresses: Vec<IpAddr> = tokio::net::lookup_host((bare, port))
        .await
        .map_err(|e| grants.deny_http(scheme, host, port, &format!(": cannot resolve {bare}: {e}")))?
        .map(|a| a.ip())
        .collect();
    check_resolved(grants, scheme, host, port, &addresses)
}

/// Whether `host` is, or resolves to, a sensitive address other than loopback: link-local
/// (the cloud metadata service and its credentials), unspecified. An audit never lets a
/// request there through; loopback it does, noting the literal grant it would need. A name
/// that does not resolve counts as such an address.
pub async fn reaches_metadata(host: &str, port: u16) -> bool {
    let beyond_loopback = |ip: IpAddr| is_sensitive(ip) && !ip.is_loopback();
    let bare = host.trim_start_matches('[').trim_end_matches(']');
    if let Ok(ip) = bare.parse::<IpAddr>() {
        return beyond_loopback(ip);
    }
    match tokio::net::lookup_host((bare, port)).await {
        Ok(addresses) => addresses.into_iter().any(|a| beyond_loopback(a.ip())),
        Err(_) => true,
    }
}

/// The decision, given the addresses a name resolved to.
pub fn check_resolved(
    grants: &Grants,
    scheme: &str,
    host: &str,
    port: u16,
    addresses: &[IpAddr],
) -> Result<(), Refusal> {
    let bare = host.trim_start_matches('[').trim_end_matches(']');
    let Some(grant) = grants.http_grant(scheme, bare, port) else {
        return Err(grants.deny_http(scheme, host, port, ""));
    };
    if bare.parse::<IpAddr>().is_ok() {
        // A literal address matched a grant that names it: granted explicitly.
        return Ok(());
    }
    let literal_localhost = bare.eq_ignore_ascii_case("localhost") && grant.host == "localhost";
    if let Some(bad) = addresses
        .iter()
        .find(|ip| is_sensitive(**ip) && !(literal_localhost && ip.is_loopback()))
    {
        return Err(grants.deny_http(
            scheme,
            host,
            port,
            &format!(
                ": `{bare}` resolves to {bad}, a loopback or link-local address, which a grant must name literally"
            ),
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::pipeline::yaml::Yaml;

    fn grants(yaml: &str) -> Grants {
        Grants::from_allow("gate", &Yaml::parse(yaml).unwrap()).unwrap()
    }

    #[tokio::test]
    async fn literal_grants_and_ungranted_hosts() {
        let g = grants("http: ['http://localhost:8080', 'http://127.0.0.1:9000', 'http://169.254.169.254']");
        assert!(check(&g, "http", "127.0.0.1", 9000).await.is_ok());
        assert!(check(&g, "http", "localhost", 8080).await.is_ok());
        assert!(check(&g, "http", "169.254.169.254", 80).await.is_ok());
        let e = check(&g, "http", "example.com", 80).await.unwrap_err().to_string();
        assert!(
            e.contains("may not reach http://example.com") && e.contains("http: [\"http://example.com\"]"),
            "{e}"
        );
        let e = check(&g, "http", "127.0.0.1", 9001).await.unwrap_err().to_string();
        assert!(e.contains("http://127.0.0.1:9001"), "{e}");
    }

    /// DNS answers are given here, not looked up: no resolver on this machine maps a name
    /// to the metadata address.
    #[test]
    fn granted_names_that_resolve_to_internal_addresses_are_refused() {
        let g = grants("http: ['http://internal.example', 'https://api.example']");
        for bad in ["127.0.0.1", "169.254.169.254", "::1", "0.0.0.0"] {
            let e = check_resolved(&g, "http", "internal.example", 80, &[bad.parse().unwrap()])
                .unwrap_err()
                .to_string();
            assert!(e.contains(&format!("resolves to {bad}")), "{e}");
        }
        assert!(check_resolved(&g, "https", "api.example", 443, &["93.184.216.34".parse().unwrap()]).is_ok());
    }
}
