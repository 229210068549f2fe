//! The one way out of a confined program's network namespace: an HTTP proxy in wharf,
//! listening on the program's own loopback (`HTTP_PROXY`, `HTTPS_PROXY`), that lets a
//! request through only when the step's `http:` grants name its host and port, by the
//! policy `wasi:http` requests pass ([`super::egress`]).
//!
//! `CONNECT host:port` is relayed as bytes (HTTPS stays end to end); a plain `http://`
//! request is sent on with its path. The name is resolved once, checked, and the checked
//! address is the one connected to, so a DNS answer that changes between the check and the
//! connection (rebinding) cannot lead elsewhere.

use super::egress;
use super::grants::Grants;
use crate::events::{Event, Events, Level, Stream};
use std::net::{IpAddr, SocketAddr};
use std::os::fd::OwnedFd;
use std::sync::Arc;
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

/// Largest request head read from a program.
const HEAD_LIMIT: usize = 16 << 10;
/// How long a program may take to send its request head, and a host to accept.
const PATIENCE: Duration = Duration::from_secs(30);

/// Serve the program's proxy socket until the program ends (the task is then dropped).
pub async fn serve(socket: OwnedFd, grants: Arc<Grants>, events: Events) {
    let listener = std::net::TcpListener::from(socket);
    if listener.set_nonblocking(true).is_err() {
        return;
    }
    let Ok(listener) = TcpListener::from_std(listener) else {
        return;
    };
    while let Ok((connection, _)) = listener.accept().await {
        tokio::spawn(relay(connection, grants.clone(), events.clone()));
    }
}

async fn relay(mut program: TcpStream, grants: Arc<Grants>, events: Events) {
    let Ok(Ok((head, rest))) = tokio::time::timeout(PATIENCE, read_head(&mut program)).await else {
        let _ = program.write_all(b"HTTP/1.1 400 Bad Request\r\n\r\n").await;
        return;
    };
    let request = match Request::parse(&head) {
        Some(r) => r,
        None => {
            let _ = program
                .write_all(b"HTTP/1.1 400 Bad Request\r\n\r\nwharf: not a proxy request\n")
                .await;
            return;
        }
    };
    let schemes: &[&str] = if request.connect { &["https", "http"] } else { &["http"] };
    let mut decision = Err(String::new());
    for scheme in schemes {
        decision = resolve_checked(&grants, scheme, &request.host, request.port).await;
        if decision.is_ok() {
            break;
        }
    }
    let address = match decision {
        Ok(address) => address,
        Err(why) => {
            events.emit(Event::Log {
                step: grants.step_id.clone(),
                level: Level::Warn,
                stream: Stream::Log,
                message: format!("proxy: refused {}:{}: {why}", request.host, request.port),
            });
            let body = format!("wharf refused this request: {why}\n");
            let _ = program
                .write_all(format!("HTTP/1.1 403 Forbidden\r\nContent-Length: {}\r\n\r\n{body}", body.len()).as_bytes())
                .await;
            return;
        }
    };
    let Ok(Ok(mut host)) = tokio::time::timeout(PATIENCE, TcpStream::connect(address)).await else {
        let _ = program.write_all(b"HTTP/1.1 502 Bad Gateway\r\n\r\n").await;
        return;
    };
    if request.connect {
        if program
            .write_all(b"HTTP/1.1 200 Connection established\r\n\r\n")
            .await
            .is_err()
        {
            return;
        }
    } else if host.write_all(&request.forwarded(&head)).await.is_err() {
        return;
    }
    if !rest.is_empty() && host.write_all(&rest).await.is_err() {
        return;
    }
    let _ = tokio::io::copy_bidirectional(&mut program, &mut host).await;
}

/// The address to connect to, when the grants allow `scheme://host:port`: the literal
/// address, or the first a name resolves to, every one of them checked.
async fn resolve_checked(grants: &Grants, scheme: &str, host: &str, port: u16) -> Result<SocketAddr, String> {
    let bare = host.trim_start_matches('[').trim_end_matches(']');
    if let Ok(ip) = bare.parse::<IpAddr>() {
        egress::check_resolved(grants, scheme, host, port, &[]).map_err(|e| e.to_string())?;
        return Ok(SocketAddr::new(ip, port));
    }
    egress::check_resolved(grants, scheme, host, port, &[]).map_err(|e| e.to_string())?;
    let addresses: Vec<SocketAddr> = tokio::net::lookup_host((bare, port))
        .await
        .map_err(|e| format!("cannot resolve {bare}: {e}"))?
        .collect();
    let ips: Vec<IpAddr> = addresses.iter().map(SocketAddr::ip).collect();
    egress::check_resolved(grants, scheme, host, port, &ips).map_err(|e| e.to_string())?;
    addresses
        .first()
        .copied()
        .ok_or_else(|| format!("{bare} has no address"))
}

/// The request head (up to the blank line) and whatever came after it.
async fn read_head(program: &mut TcpStream) -> std::io::Result<(Vec<u8>, Vec<u8>)> {
    let mut buffer = Vec::new();
    let mut chunk = [0u8; 4096];
    loop {
        let n = program.read(&mut chunk).await?;
        if n == 0 {
            return Err(std::io::ErrorKind::UnexpectedEof.into());
        }
        buffer.extend_from_slice(&chunk[..n]);
        if let Some(end) = buffer.windows(4).position(|w| w == b"\r\n\r\n") {
            let rest = buffer.split_off(end + 4);
            return Ok((buffer, rest));
        }
        if buffer.len() > HEAD_LIMIT {
            return Err(std::io::Error::other("request head too long"));
        }
    }
}

/// What a program asked the proxy for.
struct Request {
    connect: bool,
    host: String,
    port: u16,
    /// The request line as the host gets it (`GET /path HTTP/1.1`); for `CONNECT`, empty.
    line: String,
}

impl Request {
    fn parse(head: &[u8]) -> Option<Request> {
        let text = std::str::from_utf8(head).ok()?;
        let first = text.lines().next()?;
        let mut words = first.split(' ');
        let (method, target, version) = (words.next()?, words.next()?, words.next()?);
        if method.eq_ignore_ascii_case("CONNECT") {
            let (host, port) = split_authority(target, 443)?;
            return Some(Request {
                connect: true,
                host,
                port,
                line: String::new(),
            });
        }
        let rest = target.strip_prefix("http://")?;
        let (authority, path) = rest.split_at(rest.find('/').unwrap_or(rest.len()));
        let (host, port) = split_authority(authority, 80)?;
        let path = if path.is_empty() { "/" } else { path };
        Some(Request {
            connect: false,
            host,
            port,
            line: format!("{method} {path} {version}"),
        })
    }

    /// The head as the host gets it: origin-form request line, no `Proxy-` headers.
    fn forwarded(&self, head: &[u8]) -> Vec<u8> {
        let text = String::from_utf8_lossy(head);
        let mut out = format!("{}\r\n", self.line);
        for line in text.split("\r\n").skip(1) {
            if line.is_empty() {
                break;
            }
            if line.to_ascii_lowercase().starts_with("proxy-") {
                continue;
            }
            out.push_str(line);
            out.push_str("\r\n");
        }
        out.push_str("\r\n");
        out.into_bytes()
    }
}

fn split_authority(authority: &str, default_port: u16) -> Option<(String, u16)> {
    if let Some(rest) = authority.strip_prefix('[') {
        let (host, after) = rest.split_once(']')?;
        let port = match after.strip_prefix(':') {
            Some(p) => p.parse().ok()?,
            None => default_port,
        };
        return Some((host.to_string(), port));
    }
    match authority.rsplit_once(':') {
        Some((host, port)) => Some((host.to_string(), port.parse().ok()?)),
        None => Some((authority.to_string(), default_port)),
    }
    .filter(|(host, _)| !host.is_empty())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn requests_as_clients_send_them() {
        let r = Request::parse(b"CONNECT example.com:443 HTTP/1.1\r\nHost: example.com:443\r\n\r\n").unwrap();
        assert!(r.connect && r.host == "example.com" && r.port == 443);
        let r = Request::parse(
            b"GET http://127.0.0.1:8080/api/v1/status HTTP/1.1\r\nHost: x\r\nProxy-Connection: keep-alive\r\n\r\n",
        )
        .unwrap();
        assert!(!r.connect && r.host == "127.0.0.1" && r.port == 8080);
        let forwarded = String::from_utf8(r.forwarded(
            b"GET http://127.0.0.1:8080/api/v1/status HTTP/1.1\r\nHost: x\r\nProxy-Connection: keep-alive\r\n\r\n",
        ))
        .unwrap();
        assert_eq!(forwarded, "GET /api/v1/status HTTP/1.1\r\nHost: x\r\n\r\n");
        let r = Request::parse(b"CONNECT [::1]:8443 HTTP/1.1\r\n\r\n").unwrap();
        assert!(r.host == "::1" && r.port == 8443);
        assert!(Request::parse(b"GET /relative HTTP/1.1\r\n\r\n").is_none());
    }
}
