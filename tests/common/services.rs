//! Real services the tests drive, started on loopback ports and stopped on drop: Debian's
//! `docker-registry` and `nginx`. A missing program fails the test with the package to
//! install; `.ci/run` installs them.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

fn require(program: &str, package: &str) {
    let found = Command::new("sh")
        .args(["-c", &format!("command -v {program}")])
        .stdout(Stdio::null())
        .status()
        .is_ok_and(|s| s.success());
    assert!(
        found,
        "`{program}` is not installed: `apt-get install {package}` (.ci/run does it)"
    );
}

/// `GET url` over plain HTTP/1.0: (status, body). None when nothing answers.
pub fn http_get(url: &str) -> Option<(u16, String)> {
    let rest = url.strip_prefix("http://")?;
    let (authority, path) = rest.split_at(rest.find('/').unwrap_or(rest.len()));
    let path = if path.is_empty() { "/" } else { path };
    let mut stream = TcpStream::connect(authority).ok()?;
    stream.set_read_timeout(Some(Duration::from_secs(5))).ok()?;
    write!(stream, "GET {path} HTTP/1.0\r\nHost: {authority}\r\n\r\n").ok()?;
    let mut response = String::new();
    stream.read_to_string(&mut response).ok()?;
    let status = response.split_whitespace().nth(1)?.parse().ok()?;
    let body = response
        .split_once("\r\n\r\n")
        .map(|(_, b)| b.to_string())
        .unwrap_or_default();
    Some((status, body))
}

fn wait_until(what: &str, timeout: Duration, mut ready: impl FnMut() -> bool) {
    let start = Instant::now();
    while !ready() {
        assert!(start.elapsed() < timeout, "{what} did not come up within {timeout:?}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// Debian's `docker-registry` (distribution 2.8) on a loopback port.
pub struct Registry {
    child: Child,
    pub addr: String,
    _dir: tempfile::TempDir,
}

impl Registry {
    pub fn start() -> Self {
        Self::start_with(None)
    }

    /// With htpasswd basic auth for one user.
    pub fn start_with_user(user: &str, password: &str) -> Self {
        Self::start_with(Some((user, password)))
    }

    fn start_with(auth: Option<(&str, &str)>) -> Self {
        require("docker-registry", "docker-registry");
        let dir = tempfile::tempdir().unwrap();
        let addr = format!("127.0.0.1:{}", free_port());
        let mut config = format!(
            "version: 0.1\nlog:\n  level: error\n  accesslog:\n    disabled: true\nstorage:\n  filesystem:\n    rootdirectory: {}\n  delete:\n    enabled: true\nhttp:\n  addr: {addr}\n",
            dir.path().join("data").display()
        );
        if let Some((user, password)) = auth {
            let hash = bcrypt::hash(password, 5).unwrap();
            std::fs::write(dir.path().join("htpasswd"), format!("{user}:{hash}\n")).unwrap();
            config.push_str(&format!(
                "auth:\n  htpasswd:\n    realm: wharf-test\n    path: {}\n",
                dir.path().join("htpasswd").display()
            ));
        }
        let config_path = dir.path().join("config.yml");
        std::fs::write(&config_path, config).unwrap();
        let log = std::fs::File::create(dir.path().join("registry.log")).unwrap();
        let child = Command::new("docker-registry")
            .arg("serve")
            .arg(&config_path)
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .unwrap();
        let url = format!("http://{addr}/v2/");
        wait_until("docker-registry", Duration::from_secs(15), || {
            matches!(http_get(&url), Some((200 | 401, _)))
        });
        Registry { child, addr, _dir: dir }
    }
}

impl Drop for Registry {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Debian's Prometheus on a loopback port, scraping every second the targets listed in
/// `targets` (file-based service discovery, the file wharf's render step writes).
pub struct Prometheus {
    child: Child,
    pub addr: String,
    _dir: tempfile::TempDir,
}

impl Prometheus {
    pub fn start(targets: &Path) -> Self {
        require("prometheus", "prometheus");
        let dir = tempfile::tempdir().unwrap();
        let addr = format!("127.0.0.1:{}", free_port());
        let config = dir.path().join("prometheus.yml");
        std::fs::write(
            &config,
            format!(
                "global:\n  scrape_interval: 1s\n  evaluation_interval: 1s\nscrape_configs:\n  - job_name: seed\n    file_sd_configs:\n      - files: [{}]\n        refresh_interval: 1s\n",
                targets.display()
            ),
        )
        .unwrap();
        let log = std::fs::File::create(dir.path().join("prometheus.log")).unwrap();
        let child = Command::new("prometheus")
            .arg(format!("--config.file={}", config.display()))
            .arg(format!("--storage.tsdb.path={}", dir.path().join("data").display()))
            .arg(format!("--web.listen-address={addr}"))
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .unwrap();
        let ready = format!("http://{addr}/-/ready");
        wait_until("prometheus", Duration::from_secs(30), || {
            matches!(http_get(&ready), Some((200, _)))
        });
        Prometheus { child, addr, _dir: dir }
    }

    /// An instant query over the HTTP API: the `data.result` vector.
    pub fn query(&self, promql: &str) -> Vec<serde_json::Value> {
        let encoded: String = promql
            .bytes()
            .map(|b| match b {
                b'a'..=b'z' | b'A'..=b'Z' | b'0'..=b'9' | b'_' | b'.' | b'-' => (b as char).to_string(),
                _ => format!("%{b:02X}"),
            })
            .collect();
        let (status, body) = http_get(&format!("http://{}/api/v1/query?query={encoded}", self.addr)).unwrap();
        assert_eq!(status, 200, "{body}");
        let answer: serde_json::Value = serde_json::from_str(&body).unwrap();
        answer["data"]["result"].as_array().cloned().unwrap_or_default()
    }
}

impl Drop for Prometheus {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// `skopeo inspect` of a tag in a loopback registry, as JSON.
pub fn skopeo_inspect(reference: &str, config: bool) -> serde_json::Value {
    require("skopeo", "skopeo");
    let mut cmd = Command::new("skopeo");
    cmd.arg("inspect").arg("--tls-verify=false");
    if config {
        cmd.arg("--config");
    }
    let out = cmd.arg(format!("docker://{reference}")).output().unwrap();
    assert!(
        out.status.success(),
        "skopeo inspect {reference}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).unwrap()
}

/// nginx proxying `/` to `upstream seed`, whose servers come from an included file.
pub struct Nginx {
    child: Child,
    pub port: u16,
    prefix: PathBuf,
    /// The prefix, when nginx has one of its own (removed on drop).
    _own: Option<tempfile::TempDir>,
}

impl Nginx {
    /// nginx in a temporary prefix of its own.
    pub fn start(upstreams: &Path) -> Self {
        let own = tempfile::tempdir().unwrap();
        let mut nginx = Self::start_in(own.path(), upstreams);
        nginx._own = Some(own);
        nginx
    }

    /// nginx whose configuration, pid and logs are in `prefix` (a directory a pipeline may
    /// reload it from).
    pub fn start_in(prefix: &Path, upstreams: &Path) -> Self {
        Self::start_for("seed", prefix, upstreams)
    }

    /// nginx in `prefix` proxying to `upstream`.
    pub fn start_for(upstream: &str, prefix: &Path, upstreams: &Path) -> Self {
        require("nginx", "nginx");
        std::fs::create_dir_all(prefix).unwrap();
        let port = free_port();
        let p = prefix.display();
        let conf = format!(
            "daemon off;\nworker_processes 1;\nerror_log {p}/error.log;\npid {p}/nginx.pid;\n\
             events {{ worker_connections 64; }}\n\
             http {{\n  access_log off;\n  client_body_temp_path {p}/body;\n  proxy_temp_path {p}/proxy;\n  fastcgi_temp_path {p}/fastcgi;\n  uwsgi_temp_path {p}/uwsgi;\n  scgi_temp_path {p}/scgi;\n\
             include {};\n  server {{\n    listen 127.0.0.1:{port};\n    location / {{ proxy_pass http://{upstream}; }}\n  }}\n}}\n",
            upstreams.display()
        );
        std::fs::write(prefix.join("nginx.conf"), conf).unwrap();
        let nginx = Nginx {
            // Its own process group: the workers go with the master when the test ends.
            child: std::os::unix::process::CommandExt::process_group(
                Command::new("nginx")
                    .args(Self::args(prefix))
                    .stdout(Stdio::null())
                    .stderr(Stdio::null()),
                0,
            )
            .spawn()
            .unwrap(),
            port,
            prefix: prefix.to_path_buf(),
            _own: None,
        };
        wait_until("nginx", Duration::from_secs(10), || {
            TcpStream::connect(("127.0.0.1", port)).is_ok()
        });
        nginx
    }

    fn args(prefix: &Path) -> Vec<String> {
        let p = prefix.display();
        vec![
            "-p".into(),
            format!("{p}/"),
            "-c".into(),
            format!("{p}/nginx.conf"),
            "-e".into(),
            format!("{p}/error.log"),
        ]
    }

    /// The reload command, as the render step's `reload` list.
    pub fn reload_command(&self) -> Vec<String> {
        let mut cmd = vec!["nginx".to_string()];
        cmd.extend(Self::args(&self.prefix));
        cmd.extend(["-s".to_string(), "reload".to_string()]);
        cmd
    }

    /// Where nginx keeps its configuration, pid and logs: what reloading it touches.
    pub fn prefix(&self) -> &Path {
        &self.prefix
    }

    pub fn error_log(&self) -> PathBuf {
        self.prefix.join("error.log")
    }
}

impl Drop for Nginx {
    fn drop(&mut self) {
        // SAFETY: signalling a process group has no memory-safety preconditions.
        unsafe { libc::killpg(self.child.id() as i32, libc::SIGKILL) };
        let _ = self.child.wait();
    }
}

/// A registry that misbehaves on purpose, for what no real registry does: it answers every
/// request with what `answer` writes to the connection, and counts the requests. Stopped
/// (and its connections dropped) on drop.
pub struct StandIn {
    pub addr: String,
    pub requests: std::sync::Arc<std::sync::atomic::AtomicUsize>,
    stop: std::sync::Arc<std::sync::atomic::AtomicBool>,
}

impl StandIn {
    /// `answer(request line and headers, address, connection)`.
    pub fn start(answer: fn(&str, &str, &mut TcpStream)) -> Self {
        use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        listener.set_nonblocking(true).unwrap();
        let addr = listener.local_addr().unwrap().to_string();
        let requests = std::sync::Arc::new(AtomicUsize::new(0));
        let stop = std::sync::Arc::new(AtomicBool::new(false));
        let (count, stopped, at) = (requests.clone(), stop.clone(), addr.clone());
        std::thread::spawn(move || {
            while !stopped.load(Ordering::Relaxed) {
                let Ok((mut conn, _)) = listener.accept() else {
                    std::thread::sleep(Duration::from_millis(10));
                    continue;
                };
                let (count, stopped, at) = (count.clone(), stopped.clone(), at.clone());
                std::thread::spawn(move || {
                    conn.set_nonblocking(false).unwrap();
                    conn.set_read_timeout(Some(Duration::from_millis(200))).unwrap();
                    let mut buf = Vec::new();
                    let mut chunk = [0u8; 4096];
                    while !stopped.load(Ordering::Relaxed) {
                        match conn.read(&mut chunk) {
                            Ok(0) => return,
                            Ok(n) => buf.extend_from_slice(&chunk[..n]),
                            Err(_) => continue,
                        }
                        let Some(end) = buf.windows(4).position(|w| w == b"\r\n\r\n") else {
                            continue;
                        };
                        let head = String::from_utf8_lossy(&buf[..end]).into_owned();
                        buf.drain(..end + 4);
                        count.fetch_add(1, Ordering::Relaxed);
                        answer(&head, &at, &mut conn);
                    }
                });
            }
        });
        StandIn { addr, requests, stop }
    }

    pub fn requests(&self) -> usize {
        self.requests.load(std::sync::atomic::Ordering::Relaxed)
    }
}

impl Drop for StandIn {
    fn drop(&mut self) {
        self.stop.store(true, std::sync::atomic::Ordering::Relaxed);
    }
}

/// One answer through nginx: its status and the version that served it (none for a 502).
#[derive(Debug, Clone)]
pub struct Answer {
    pub status: u16,
    pub version: Option<String>,
}

/// A small load generator: `GET /` through nginx every few milliseconds until stopped.
pub struct Load {
    stop: std::sync::Arc<std::sync::atomic::AtomicBool>,
    answers: std::sync::Arc<std::sync::Mutex<Vec<Answer>>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Load {
    pub fn start(port: u16) -> Self {
        let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        let answers = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
        let (stopped, seen) = (stop.clone(), answers.clone());
        let thread = std::thread::spawn(move || {
            while !stopped.load(std::sync::atomic::Ordering::Relaxed) {
                if let Some(answer) = get(port) {
                    seen.lock().unwrap().push(answer);
                }
                std::thread::sleep(Duration::from_millis(4));
            }
        });
        Load {
            stop,
            answers,
            thread: Some(thread),
        }
    }

    pub fn finish(mut self) -> Vec<Answer> {
        self.stop.store(true, std::sync::atomic::Ordering::Relaxed);
        self.thread.take().unwrap().join().unwrap();
        self.answers.lock().unwrap().clone()
    }
}

impl Drop for Load {
    fn drop(&mut self) {
        self.stop.store(true, std::sync::atomic::Ordering::Relaxed);
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

fn get(port: u16) -> Option<Answer> {
    let mut stream = TcpStream::connect(("127.0.0.1", port)).ok()?;
    stream.set_read_timeout(Some(Duration::from_secs(5))).ok()?;
    write!(stream, "GET / HTTP/1.0\r\nHost: seed\r\n\r\n").ok()?;
    let mut response = String::new();
    stream.read_to_string(&mut response).ok()?;
    let status = response.split_whitespace().nth(1)?.parse().ok()?;
    let version = response
        .lines()
        .take_while(|l| !l.is_empty() && *l != "\r")
        .find_map(|l| l.strip_prefix("X-Version: "))
        .map(|v| v.trim().to_string());
    Some(Answer { status, version })
}

/// The answers from the first the new release served to the last: the canary's window.
pub fn canary_window<'a>(answers: &'a [Answer], new: &str) -> &'a [Answer] {
    let served = |a: &Answer| a.version.as_deref() == Some(new);
    match (answers.iter().position(served), answers.iter().rposition(served)) {
        (Some(first), Some(last)) => &answers[first..=last],
        _ => &[],
    }
}

/// Of the answers in the canary's window, how many `version` served, and how many there were.
pub fn reached(answers: &[Answer], version: &str) -> (usize, usize) {
    let window = canary_window(answers, version);
    let served = window.iter().filter(|a| a.version.as_deref() == Some(version)).count();
    (served, window.len())
}

/// `wharf run canary.yml` of the seed with nginx (prefix `nginx/`) reloaded at each shift and
/// the judges measuring a second apart.
pub const CANARY_RUN: [&str; 7] = [
    "run",
    "canary.yml",
    "-v",
    "--var",
    "reload=nginx",
    "--var",
    "interval=1s",
];
