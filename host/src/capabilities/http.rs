//! `wasi:http`: a step's outgoing requests. Each passes the sandbox's egress policy
//! ([`crate::sandbox::egress`]) before a connection is made, and every exchange goes through
//! the step's tape like any host call, so a replay answers it from the journal.

use super::StepCall;
use crate::events::Level;
use crate::sandbox::egress;
use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use serde::{Deserialize, Serialize};
use wasmtime_wasi_http::{Error, RequestOptions, WasiBody, WasiHttpHooks};

/// The per-step `wasi:http` hooks: the egress policy first, then the default client.
pub struct StepHttpHooks {
    pub call: StepCall,
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
                "authorization" | "proxy-authorization" | "cookie" | "set-cookie" => crate::events::MASK.to_string(),
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

async fn exchange(call: &StepCall, request: http::Request<WasiBody>, options: Option<RequestOptions>) -> Exchange {
    let uri = request.uri();
    let scheme = uri.scheme_str().unwrap_or("http").to_string();
    let host = uri.host().unwrap_or_default().to_string();
    let port = uri.port_u16().unwrap_or(if scheme == "https" { 443 } else { 80 });
    if let Err(why) = egress::check(&call.grants, &scheme, &host, port).await {
        // An audit lets a missing grant through, never a request for the metadata service.
        let audited = call.audit.is_some()
            && !egress::reaches_metadata(&host, port).await
            && call.permit(Err(why.clone())).is_ok();
        if !audited {
            call.scope.log(Level::Error, why.to_string());
            return Exchange::Error(error_name(&Error::HttpRequestDenied));
        }
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

impl WasiHttpHooks for StepHttpHooks {
    fn send_request(
        &mut self,
        request: http::Request<WasiBody>,
        options: Option<RequestOptions>,
        fut: Box<dyn Future<Output = Result<(), Error>> + Send>,
    ) -> Box<dyn Future<Output = Sent> + Send> {
        let _ = fut;
        let call = self.call.clone();
        Box::new(async move {
            let (parts, body) = request.into_parts();
            let body = body.collect().await?.to_bytes();
            let args = serde_json::json!({
                "method": parts.method.as_str(),
                "uri": parts.uri.to_string(),
                "headers": journal_headers(&parts.headers),
                "body": Body::of(&body),
            });
            let request = http::Request::from_parts(parts, full(body));
            let outcome = call
                .tape
                .call(
                    "wasi:http/outgoing-handler",
                    "handle",
                    &args,
                    exchange(&call, request, options),
                )
                .await
                .map_err(|diverged| Error::InternalError(Some(diverged.to_string())))?;
            deliver(outcome)
        })
    }
}
