//! A tiny HTTP service for the seed pipeline, standard library only, so it links statically
//! and runs in a FROM-scratch image and as a plain local process.
//!
//! - `GET /api/v1/status` answers `OK`, or `FAIL` when built with `SEED_STATUS=FAIL`;
//! - `GET /api/v1/version` answers the version it was deployed as (`APP_VERSION`);
//! - it listens on `$PORT` (default 8080);
//! - `seed-service probe PATH` is its own health check, for a scheduler to run inside its
//!   container (a FROM-scratch image has no curl): exit 0 when `GET PATH` on `$PORT`
//!   answers 2xx.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};

const STATUS: &str = match option_env!("SEED_STATUS") {
    Some(s) => s,
    None => "OK",
};

fn main() {
    let port = std::env::var("PORT").unwrap_or_else(|_| "8080".into());
    let args: Vec<String> = std::env::args().collect();
    if let [_, probe, path] = args.as_slice()
        && probe == "probe"
    {
        std::process::exit(if healthy(&port, path) { 0 } else { 1 });
    }
    let version = std::env::var("APP_VERSION").unwrap_or_else(|_| "unknown".into());
    let listener = match TcpListener::bind(format!("0.0.0.0:{port}")) {
        Ok(l) => l,
        Err(e) => {
            eprintln!("seed-service: cannot listen on port {port}: {e}");
            std::process::exit(1);
        }
    };
    eprintln!("seed-service {version} listening on {port}, status {STATUS}");
    for stream in listener.incoming().flatten() {
        let version = version.clone();
        std::thread::spawn(move || {
            let _ = serve(stream, &version);
        });
    }
}

fn healthy(port: &str, path: &str) -> bool {
    let answer = (|| -> std::io::Result<String> {
        let mut stream = TcpStream::connect(format!("127.0.0.1:{port}"))?;
        stream.set_read_timeout(Some(std::time::Duration::from_secs(2)))?;
        write!(stream, "GET {path} HTTP/1.0\r\n\r\n")?;
        let mut answer = String::new();
        stream.take(4096).read_to_string(&mut answer)?;
        Ok(answer)
    })();
    answer.is_ok_and(|a| a.split_whitespace().nth(1).is_some_and(|code| code.starts_with('2')))
}

fn serve(mut stream: TcpStream, version: &str) -> std::io::Result<()> {
    let mut reader = BufReader::new(stream.try_clone()?);
    let mut request_line = String::new();
    reader.read_line(&mut request_line)?;
    // Drain the headers.
    let mut line = String::new();
    while reader.read_line(&mut line)? > 2 {
        line.clear();
    }
    let path = request_line.split_whitespace().nth(1).unwrap_or("/");
    let (code, body) = match path {
        "/api/v1/status" => ("200 OK", format!("{STATUS}\n")),
        "/api/v1/version" => ("200 OK", format!("{version}\n")),
        "/" => ("200 OK", format!("seed-service {version}\n")),
        _ => ("404 Not Found", "not found\n".to_string()),
    };
    write!(
        stream,
        "HTTP/1.1 {code}\r\nContent-Type: text/plain\r\nContent-Length: {}\r\nX-Version: {version}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    )?;
    stream.flush()
}
