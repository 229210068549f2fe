//! Attempts to get out of the sandbox, each reporting what happened as one line: `blocked:
//! WHY` when the sandbox held, `ESCAPED: WHAT` when it did not. The limit attacks (`loop`,
//! `alloc`, `flood`) do not return; the host must stop them. `empty-writes` must end, with
//! the host's memory where it was.

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
        // `N`: read the monotonic clock N times (and the wall clock every thousandth time).
        "clock" => {
            let n: u64 = target.parse().unwrap_or(0);
            let start = std::time::Instant::now();
            let mut walls = 0;
            for i in 0..n {
                std::hint::black_box(std::time::Instant::now());
                if i % 1000 == 0 {
                    walls += std::time::SystemTime::now()
                        .duration_since(std::time::UNIX_EPOCH)
                        .map_or(0, |d| d.as_secs() & 1);
                }
            }
            format!(
                "read the clock {n} times in {:?} ({walls})",
                start.elapsed() > std::time::Duration::ZERO
            )
        }
        "list-workspace" => match std::fs::read_dir(target) {
            Ok(entries) => format!("listed: {} entries", entries.count()),
            Err(e) => format!("blocked: {e}"),
        },
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
        // `LINK=TARGET`: plant a symlink for a later step or the host to follow.
        "symlink" => {
            let (link, to) = target.split_once('=').unwrap_or((target, ""));
            #[allow(deprecated)]
            match std::fs::soft_link(to, link) {
                Ok(()) => format!("planted {link} -> {to}"),
                Err(e) => format!("blocked: {e}"),
            }
        }
        // `PATH=MIB`: write that many MiB of zeros to PATH, 1 MiB at a time.
        "fill" => fill(target),
        // As `fill`, then wait to be killed.
        "fill-and-wait" => {
            let result = fill(target);
            log(&result);
            std::thread::sleep(std::time::Duration::from_secs(120));
            result
        }
        // `DIR=N`: create N empty files in DIR.
        "many-files" => {
            let (dir, n) = target.split_once('=').unwrap_or((target, "0"));
            let n: usize = n.parse().unwrap_or(0);
            for i in 0..n {
                if let Err(e) = std::fs::File::create(format!("{dir}/f{i}")) {
                    return format!("blocked after {i} files: {e}");
                }
            }
            format!("created {n} files")
        }
        "empty-writes" => empty_writes(target.parse().unwrap_or(1_000_000)),
        "flood" => loop {
            log(
                "flooding the log with a line that is long enough to fill it up quickly ..................................",
            );
        },
        other => format!("unknown attack `{other}`"),
    }
}

/// Write `n` empty chunks to stdout and to a file, through the WASI streams themselves
/// (`std` skips an empty write): each must cost the host nothing it keeps.
fn empty_writes(n: u64) -> String {
    let stdout = wasip2::cli::stdout::get_stdout();
    // A file in the preopened directory `out` (grant `write: [out]`), if there is one.
    let file = wasip2::filesystem::preopens::get_directories()
        .into_iter()
        .find(|(_, name)| name == "out")
        .and_then(|(dir, _)| {
            dir.open_at(
                wasip2::filesystem::types::PathFlags::empty(),
                "empty-writes.txt",
                wasip2::filesystem::types::OpenFlags::CREATE,
                wasip2::filesystem::types::DescriptorFlags::WRITE,
            )
            .ok()
        })
        .and_then(|f| f.write_via_stream(0).ok());
    // As the stream contract asks: `check-write`, then a write within what it allowed (for
    // the file, whose writes go on in the background, the blocking form waits for that).
    for i in 0..n {
        if let Err(e) = stdout.check_write().and_then(|_| stdout.write(&[])) {
            return format!("stdout refused an empty write after {i}: {e:?}");
        }
        if let Some(file) = &file
            && let Err(e) = file.blocking_write_and_flush(&[])
        {
            return format!("a file refused an empty write after {i}: {e:?}");
        }
    }
    format!(
        "wrote {n} empty chunks to stdout{}",
        if file.is_some() { " and a file" } else { "" }
    )
}

fn fill(target: &str) -> String {
    let (path, mib) = target.split_once('=').unwrap_or((target, "1"));
    let mib: usize = mib.parse().unwrap_or(1);
    let mut file = match std::fs::File::create(path) {
        Ok(f) => f,
        Err(e) => return format!("blocked: {e}"),
    };
    let chunk = vec![0u8; 1 << 20];
    for written in 0..mib {
        if let Err(e) = file.write_all(&chunk) {
            return format!("blocked after {written} MiB: {e}");
        }
    }
    format!("ESCAPED: wrote {mib} MiB to {path}")
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
