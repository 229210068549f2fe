//! One GET over `wasi:http`, within a timeout and a size, for the built-in steps that look at
//! an HTTP answer (`http-gate`, `analysis`). The host decides which addresses a step may
//! reach; a failure comes back as what was seen, never as a trap.

use std::time::Duration;
use wasip2::http::outgoing_handler;
use wasip2::http::types::{Fields, Method, OutgoingRequest, RequestOptions, Scheme};

/// What one GET saw.
pub struct Observation {
    pub status: Option<u16>,
    pub body: String,
    /// Why there is no answer (refused, timed out, no response).
    pub problem: Option<String>,
    /// The body went on past the limit and was cut there.
    pub truncated: bool,
}

/// A URL's scheme, authority and path with query, or why it is not an http(s) URL.
pub fn split_url(url: &str) -> Result<(Scheme, String, String), String> {
    let (scheme, rest) = if let Some(r) = url.strip_prefix("http://") {
        (Scheme::Http, r)
    } else if let Some(r) = url.strip_prefix("https://") {
        (Scheme::Https, r)
    } else {
        return Err(format!("`{url}` must start with http:// or https://"));
    };
    let (authority, path) = match rest.find('/') {
        Some(i) => (&rest[..i], &rest[i..]),
        None => (rest, "/"),
    };
    if authority.is_empty() {
        return Err(format!("`{url}` has no host"));
    }
    Ok((scheme, authority.to_string(), path.to_string()))
}

/// GET `path` of `authority`, every wait within `timeout`, the body within `limit` bytes.
pub fn get(scheme: &Scheme, authority: &str, path: &str, timeout: Duration, limit: usize) -> Observation {
    let fail = |problem: String| Observation {
        status: None,
        body: String::new(),
        problem: Some(problem),
        truncated: false,
    };
    let request = OutgoingRequest::new(Fields::new());
    let _ = request.set_method(&Method::Get);
    let _ = request.set_scheme(Some(scheme));
    let _ = request.set_authority(Some(authority));
    let _ = request.set_path_with_query(Some(path));
    let options = RequestOptions::new();
    let nanos = u64::try_from(timeout.as_nanos()).unwrap_or(u64::MAX);
    let _ = options.set_connect_timeout(Some(nanos));
    let _ = options.set_first_byte_timeout(Some(nanos));
    let _ = options.set_between_bytes_timeout(Some(nanos));
    let future = match outgoing_handler::handle(request, Some(options)) {
        Ok(f) => f,
        Err(e) => return fail(format!("request refused: {}", said(&e))),
    };
    future.subscribe().block();
    let response = match future.get() {
        Some(Ok(Ok(r))) => r,
        Some(Ok(Err(e))) => return fail(format!("request failed: {}", said(&e))),
        _ => return fail("request failed: no response".into()),
    };
    let status = response.status();
    let mut body = Vec::new();
    // The stream is dropped before the body it reads, as wasi:http requires.
    if let Ok(incoming) = response.consume()
        && let Ok(stream) = incoming.stream()
    {
        while body.len() <= limit {
            match stream.blocking_read(16 * 1024) {
                Ok(chunk) if !chunk.is_empty() => body.extend_from_slice(&chunk),
                Ok(_) => continue,
                Err(_) => break,
            }
        }
    }
    let truncated = body.len() > limit;
    body.truncate(limit);
    Observation {
        status: Some(status),
        body: String::from_utf8_lossy(&body).into_owned(),
        problem: None,
        truncated,
    }
}

/// What a wasi:http error means, in a few words; the error's own form for the rest.
fn said(e: &wasip2::http::types::ErrorCode) -> String {
    use wasip2::http::types::ErrorCode as E;
    match e {
        E::ConnectionRefused => "connection refused".into(),
        E::ConnectionTimeout => "no connection within the timeout".into(),
        E::ConnectionReadTimeout => "no answer within the timeout".into(),
        E::DnsError(_) => "the name does not resolve".into(),
        E::HttpRequestDenied => "denied by the step's http grants".into(),
        E::HttpResponseBodySize(_) => "the answer is over the host's size limit for a response".into(),
        E::InternalError(Some(text)) if text.contains("HttpResponseBodySize") => {
            "the answer is over the host's size limit for a response".into()
        }
        other => format!("{other:?}"),
    }
}
