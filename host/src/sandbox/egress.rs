//! Outgoing HTTP of a step (`wasi:http`): every request passes [`check`] before a
//! connection is made.
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

use super::grants::{Grants, is_sensitive};
use crate::capabilities::StepScope;
use crate::events::Level;
use crate::journal::tape::Tape;
use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use serde::{Deserialize, Serialize};
use std::net::IpAddr;
use std::sync::Arc;
use wasmtime_wasi_http::{Error, RequestOptions, WasiBody, WasiHttpHooks};

/// The per-step `wasi:http` hooks: grants first, then the default client; every exchange
/// goes through the step's tape, so a replay answers it from the journal.
pub struct StepHttpHooks {
    pub grants: Arc<Grants>,
    pub scope: StepScope,
    pub tape: Tape,
}

/// How a request ended, as the journal keeps it.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
enum Exchange {
    Response {
        status: u16,
        headers: Vec<(String, String)>,
        body: Body,
    },
    /// Refused by the grants, or failed on the way: the error's name.
    Error(String),
}

/// A body in the journal: text when it is UTF-8 (so secrets in it are masked like any
/// text), hex otherwise.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
enum Body {
    Text(String),
    Hex(String),
}

impl Body {
    fn of(bytes: &[u8]) -> Body {
        match std::str::from_utf8(bytes) {
            Ok(text) => Body::Text(text.to_string()),
            Err(_) => Body::Hex(hex::encode(bytes)),
        }
    }

    fn bytes(&self) -> Result<Vec<u8>, Error> {
        match self {
            Body::Text(t) => Ok(t.clone().into_bytes()),
            Body::Hex(h) => hex::decode(h).map_err(|_| Error::InternalError(Some("journal: bad body".into()))),
        }
    }
}

/// Headers as the journal keeps them: credentials masked outright, since a replay gets
/// them from the (masked) secrets anyway.
fn journal_headers(headers: &http::HeaderMap) -> Vec<(String, String)> {
    headers
        .iter()
        .map(|(k, v)| {
            let value = match k.as_str() {
                "authorization" | "proxy-authorization" | "cookie" | "set-cookie" => {
                    crate::capabilities::secrets::MASK.to_string()
                }
                _ => String::from_utf8_lossy(v.as_bytes()).into_owned(),
            };
            (k.to_string(), value)
        })
        .collect()
}

/// Errors a guest tells apart, by name, so a replay hands back the same one.
fn error_name(e: &Error) -> String {
    match e {
        Error::HttpRequestDenied => "HttpRequestDenied".into(),
        Error::ConnectionRefused | Error::Connect(_) => "ConnectionRefused".into(),
        Error::ConnectionTimeout => "ConnectionTimeout".into(),
        Error::ConnectionReadTimeout => "ConnectionReadTimeout".into(),
        Error::DnsTimeout | Error::DnsError { .. } => "DnsError".into(),
        Error::HttpResponseTimeout => "HttpResponseTimeout".into(),
        other => format!("{other:?}"),
    }
}

fn error_from_name(name: &str) -> Error {
    match name {
        "HttpRequestDenied" => Error::HttpRequestDenied,
        "ConnectionRefused" => Error::ConnectionRefused,
        "ConnectionTimeout" => Error::ConnectionTimeout,
        "ConnectionReadTimeout" => Error::ConnectionReadTimeout,
        "DnsError" => Error::DnsError {
            rcode: None,
            info_code: None,
        },
        "HttpResponseTimeout" => Error::HttpResponseTimeout,
        other => Error::InternalError(Some(other.to_string())),
    }
}

/// Largest response body a step may receive whole: it is read into host memory to be
/// recorded.
const BODY_LIMIT: usize = 64 << 20;

fn full(bytes: Bytes) -> WasiBody {
    Full::new(bytes).map_err(|never| match never {}).boxed_unsync()
}

type Sent = Result<
    (
        http::Response<WasiBody>,
        Box<dyn Future<Output = Result<(), Error>> + Send>,
    ),
    Error,
>;

fn done() -> Box<dyn Future<Output = Result<(), Error>> + Send> {
    Box::new(async { Ok(()) })
}

async fn exchange(
    grants: &Grants,
    scope: &StepScope,
    request: http::Request<WasiBody>,
    options: Option<RequestOptions>,
) -> Exchange {
    let uri = request.uri();
    let scheme = uri.scheme_str().unwrap_or("http").to_string();
    let host = uri.host().unwrap_or_default().to_string();
    let port = uri.port_u16().unwrap_or(if scheme == "https" { 443 } else { 80 });
    if let Err(why) = check(grants, &scheme, &host, port).await {
        scope.log(Level::Error, why);
        return Exchange::Error(error_name(&Error::HttpRequestDenied));
    }
    let (response, io) = match wasmtime_wasi_http::default_send_request(request, options).await {
        Ok(sent) => sent,
        Err(e) => return Exchange::Error(error_name(&e)),
    };
    // The connection is driven while the body is read whole, for the journal.
    let io = tokio::spawn(io);
    let (parts, mut body) = response.into_parts();
    let mut bytes = Vec::new();
    while let Some(frame) = body.frame().await {
        match frame {
            Ok(frame) => {
                if let Ok(data) = frame.into_data() {
                    bytes.extend_from_slice(&data);
                }
                if bytes.len() > BODY_LIMIT {
                    return Exchange::Error(error_name(&Error::HttpResponseBodySize(Some(bytes.len() as u64))));
                }
            }
            Err(e) => return Exchange::Error(error_name(&e)),
        }
    }
    let _ = io.await;
    Exchange::Response {
        status: parts.status.as_u16(),
        headers: parts
            .headers
            .iter()
            .map(|(k, v)| (k.to_string(), String::from_utf8_lossy(v.as_bytes()).into_owned()))
            .collect(),
        body: Body::of(&bytes),
    }
}

fn deliver(outcome: Exchange) -> Sent {
    match outcome {
        Exchange::Error(name) => Err(error_from_name(&name)),
        Exchange::Response { status, headers, body } => {
            let mut response = http::Response::builder().status(status);
            for (k, v) in headers {
                response = response.header(k, v);
            }
            let body = body.bytes()?;
            let response = response
                .body(full(Bytes::from(body)))
                .map_err(|e| Error::InternalError(Some(e.to_string())))?;
            Ok((response, done()))
        }
    }
}

/// Why a request is refused, or Ok to send it. Resolves the name to check its addresses.
pub async fn check(grants: &Grants, scheme: &str, host: &str, port: u16) -> Result<(), String> {
    let bare = host.trim_start_matches('[').trim_end_matches(']');
    if grants.http_grant(scheme, bare, port).is_none() || bare.parse::<IpAddr>().is_ok() {
        return check_resolved(grants, scheme, host, port, &[]);
    }
    let addresses: Vec<IpAddr> = tokio::net::lookup_host((bare, port))
        .await
        .map_err(|e| format!("cannot resolve {bare}: {e}"))?
        .map(|a| a.ip())
        .collect();
    check_resolved(grants, scheme, host, port, &addresses)
}

/// The decision, given the addresses a name resolved to.
pub fn check_resolved(
    grants: &Grants,
    scheme: &str,
    host: &str,
    port: u16,
    addresses: &[IpAddr],
) -> Result<(), String> {
    let bare = host.trim_start_matches('[').trim_end_matches(']');
    let Some(grant) = grants.http_grant(scheme, bare, port) else {
        return Err(grants.deny_http(scheme, host, port, "").message);
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
        return Err(grants
            .deny_http(
                scheme,
                host,
                port,
                &format!(
                    ": `{bare}` resolves to {bad}, a loopback or link-local address, which a grant must name literally"
                ),
            )
            .message);
    }
    Ok(())
}

impl WasiHttpHooks for StepHttpHooks {
    fn send_request(
        &mut self,
        request: http::Request<WasiBody>,
        options: Option<RequestOptions>,
        fut: Box<dyn Future<Output = Result<(), Error>> + Send>,
    ) -> Box<dyn Future<Output = Sent> + Send> {
        let _ = fut;
        let grants = self.grants.clone();
        let scope = self.scope.clone();
        let tape = self.tape.clone();
        Box::new(async move {
            let (parts, body) = request.into_parts();
            let body = body.collect().await?.to_bytes();
            let args = serde_json::json!({
                "method": parts.method.as_str(),
                "uri": parts.uri.to_string(),
                "headers": journal_headers(&parts.headers),
                "body": Body::of(&body),
            });
            const HANDLE: (&str, &str) = ("wasi:http/outgoing-handler", "handle");
            match tape.replay::<Exchange>(HANDLE.0, HANDLE.1, &args) {
                Ok(Some(recorded)) => return deliver(recorded),
                Ok(None) => {}
                Err(diverged) => return Err(Error::InternalError(Some(diverged.to_string()))),
            }
            let started = std::time::Instant::now();
            let request = http::Request::from_parts(parts, full(body));
            let outcome = exchange(&grants, &scope, request, options).await;
            tape.record(HANDLE.0, HANDLE.1, args, &outcome, started);
            deliver(outcome)
        })
    }
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
        let e = check(&g, "http", "example.com", 80).await.unwrap_err();
        assert!(
            e.contains("may not reach http://example.com") && e.contains("http: [\"http://example.com\"]"),
            "{e}"
        );
        let e = check(&g, "http", "127.0.0.1", 9001).await.unwrap_err();
        assert!(e.contains("http://127.0.0.1:9001"), "{e}");
    }

    /// DNS answers are given here, not looked up: no resolver on this machine maps a name
    /// to the metadata address.
    #[test]
    fn granted_names_that_resolve_to_internal_addresses_are_refused() {
        let g = grants("http: ['http://internal.example', 'https://api.example']");
        for bad in ["127.0.0.1", "169.254.169.254", "::1", "0.0.0.0"] {
            let e = check_resolved(&g, "http", "internal.example", 80, &[bad.parse().unwrap()]).unwrap_err();
            assert!(e.contains(&format!("resolves to {bad}")), "{e}");
        }
        assert!(check_resolved(&g, "https", "api.example", 443, &["93.184.216.34".parse().unwrap()]).is_ok());
    }
}
