//! Attempts to get out of the sandbox, each reporting what happened as one line: `blocked:
//! WHY` when the sandbox held, `ESCAPED: WHAT` when it did not. The limit attacks (`loop`,
//! `alloc`, `flood`) do not return; the host must stop them.

use std::io::Write;

pub fn attempt(attack: &str, target: &str, log: &mut dyn FnMut(&str)) -> String {
    match attack {
        "read-passwd" => match std::fs::read_to_string("/etc/passwd") {
            Ok(text) => format!("ESCAPED: read /etc/passwd ({} bytes)", text.len()),
            Err(e) => format!("blocked: {e}"),
        },
        "write-outside-relative" => write("../escaped.txt"),
        "write-outside-absolute" => write(&format!("/tmp/wharf-escaped-{}.txt", target)),
        "read-workspace" => match std::fs::read_to_string(target) {
            Ok(text) => format!("read: {}", text.trim()),
            Err(e) => format!("blocked: {e}"),
        },
        "write-workspace" => write(target),
        "tcp" => match std::net::TcpStream::connect(target) {
            Ok(_) => format!("ESCAPED: connected to {target}"),
            Err(e) => format!("blocked: {e}"),
        },
        "http" => http_get(target),
        "env" => {
            let names: Vec<String> = std::env::vars().map(|(k, _)| k).collect();
            let args: Vec<String> = std::env::args().collect();
            format!("env: [{}] args: {}", names.join(","), args.len())
        }
        "loop" => {
            let mut n: u64 = 0;
            loop {
                n = n.wrapping_mul(6364136223846793005).wrapping_add(1);
                if n == 42 {
                    return "unreachable".into();
                }
            }
        }
        "alloc" => {
            let mut hoard: Vec<Vec<u8>> = Vec::new();
            loop {
                // Touch every page, so the memory is really used.
                hoard.push(vec![0xA5; 8 << 20]);
                if hoard.len() == usize::MAX {
                    return "unreachable".into();
                }
            }
        }
        "flood" => loop {
            log(
                "flooding the log with a line that is long enough to fill it up quickly ..................................",
            );
        },
        other => format!("unknown attack `{other}`"),
    }
}

fn write(path: &str) -> String {
    match std::fs::File::create(path).and_then(|mut f| f.write_all(b"escaped")) {
        Ok(()) => format!("ESCAPED: wrote {path}"),
        Err(e) => format!("blocked: {e}"),
    }
}

fn http_get(url: &str) -> String {
    use wasip2::http::outgoing_handler;
    use wasip2::http::types::{Fields, Method, OutgoingRequest, Scheme};
    let (scheme, rest) = match url.split_once("://") {
        Some(("https", r)) => (Scheme::Https, r),
        Some((_, r)) => (Scheme::Http, r),
        None => (Scheme::Http, url),
    };
    let (authority, path) = rest.split_at(rest.find('/').unwrap_or(rest.len()));
    let request = OutgoingRequest::new(Fields::new());
    let _ = request.set_method(&Method::Get);
    let _ = request.set_scheme(Some(&scheme));
    let _ = request.set_authority(Some(authority));
    let _ = request.set_path_with_query(Some(if path.is_empty() { "/" } else { path }));
    let future = match outgoing_handler::handle(request, None) {
        Ok(f) => f,
        Err(e) => return format!("blocked: {e:?}"),
    };
    future.subscribe().block();
    match future.get() {
        Some(Ok(Ok(response))) => format!("ESCAPED: {url} answered {}", response.status()),
        Some(Ok(Err(e))) => format!("blocked: {e:?}"),
        other => format!("blocked: {other:?}"),
    }
}
