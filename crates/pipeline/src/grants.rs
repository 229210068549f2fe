//! Grants: the pipeline's `allow:` of a step, and those derived from a built-in step's own
//! `with:` values.
//!
//! ```yaml
//! allow:
//!   http: ["https://api.example.com", "http://127.0.0.1:8080"]   # scheme://host[:port]; *.domain
//!   process: [cargo, "nginx -s reload"]                            # program, then argument patterns
//!   read: [src, Cargo.toml]                                        # workspace paths, read-only
//!   write: [target, nginx]                                  # workspace paths, read-write
//!   secrets: [registry-password]
//!   deploy: [seed]                                                 # services
//!   registry: ["127.0.0.1:5000", "registry.example.com/team/*"]    # HOST[:PORT][/REPOSITORY]
//!   source: true                                                   # git describe of the workspace
//!   images: true                                                   # assemble images in the host
//! ```
//!
//! Argument patterns: `*` matches one argument, a final `**` any number, anything else itself.

use crate::describe::{CapabilityKind, StepInfo, Value};
use crate::diagnostic::{Diagnostic, suggest};
use crate::yaml::{Scalar, Yaml};
use std::fmt;
use std::net::IpAddr;
use std::path::{Component, Path};

/// A capability call the grants do not allow.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Refusal {
    /// Not granted: says what the step tried and the YAML that grants it.
    #[error("step `{step}` may not {what}; grant it on the step in the pipeline:\n  allow:\n    {yaml}")]
    NotGranted { step: String, what: String, yaml: String },
    #[error("`{path}` leaves the workspace")]
    LeavesWorkspace { path: String },
    /// wharf's own state: no grant reaches it.
    #[error("`{path}` is in `.wharf/`, wharf's own state (runs, deploys, locks); no grant reaches it")]
    Reserved { path: String },
    #[error("`{repository}` is not a repository name")]
    BadRepository { repository: String },
}

pub const ALLOW_KEYS: &[&str] = &[
    "http",
    "process",
    "read",
    "write",
    "host-read",
    "host-write",
    "signal",
    "secrets",
    "deploy",
    "registry",
    "source",
    "images",
];

/// Where a grant came from, for `wharf validate`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Origin {
    /// The step's `allow:`.
    Allow,
    /// A built-in step's `with:` value of this parameter.
    Derived(String),
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Granted<T> {
    pub what: T,
    pub origin: Origin,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HttpGrant {
    /// `http` or `https`; None for both.
    pub scheme: Option<String>,
    /// A host name, `*.domain`, or an IP literal.
    pub host: String,
    /// None: the scheme's default port... or any port when `:*`.
    pub port: PortRule,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PortRule {
    /// The scheme's default (80, 443).
    Default,
    Any,
    Exactly(u16),
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProcessGrant {
    pub program: String,
    /// None: any arguments.
    pub args: Option<Vec<String>>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RegistryGrant {
    pub host: String,
    /// A repository or a `prefix/*` pattern; None for every repository.
    pub repository: Option<String>,
}

#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Grants {
    pub step_id: String,
    pub http: Vec<Granted<HttpGrant>>,
    pub process: Vec<Granted<ProcessGrant>>,
    /// Normalised workspace-relative paths, `.` for the whole workspace.
    pub read: Vec<Granted<String>>,
    pub write: Vec<Granted<String>>,
    pub secrets: Vec<Granted<String>>,
    pub deploy: Vec<Granted<String>>,
    pub registry: Vec<Granted<RegistryGrant>>,
    pub source: Option<Origin>,
    pub images: Option<Origin>,
    /// Paths of the host outside the workspace its programs may read, or write (a package
    /// cache): absolute, or `~/...` for wharf's home. Programs only.
    pub host_read: Vec<Granted<String>>,
    pub host_write: Vec<Granted<String>>,
    /// Its programs may signal processes of the host (`nginx -s reload`).
    pub signal: Option<Origin>,
}

impl fmt::Display for HttpGrant {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let host = if self.host.contains(':') {
            format!("[{}]", self.host)
        } else {
            self.host.clone()
        };
        let scheme = self.scheme.as_deref().unwrap_or("http(s)");
        match self.port {
            PortRule::Default => write!(f, "{scheme}://{host}"),
            PortRule::Any => write!(f, "{scheme}://{host}:*"),
            PortRule::Exactly(p) => write!(f, "{scheme}://{host}:{p}"),
        }
    }
}

impl fmt::Display for ProcessGrant {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.args {
            None => write!(f, "{}", self.program),
            Some(args) => write!(f, "{} {}", self.program, args.join(" ")),
        }
    }
}

impl fmt::Display for RegistryGrant {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.repository {
            None => write!(f, "{}", self.host),
            Some(r) => write!(f, "{}/{r}", self.host),
        }
    }
}

/// `http://host:port` -> a grant for exactly that origin.
pub fn parse_http(text: &str) -> Result<HttpGrant, String> {
    let (scheme, rest) = match text.split_once("://") {
        Some((s, r)) if s == "http" || s == "https" => (Some(s.to_string()), r),
        Some((s, _)) => return Err(format!("`{s}` is not http or https")),
        None => (None, text),
    };
    let authority = rest.split('/').next().unwrap_or_default();
    if authority.is_empty() {
        return Err("no host".into());
    }
    let (host, port) = if let Some(v6) = authority.strip_prefix('[') {
        let (h, after) = v6.split_once(']').ok_or("unclosed `[`")?;
        (h.to_string(), after.strip_prefix(':'))
    } else {
        match authority.rsplit_once(':') {
            Some((h, p)) => (h.to_string(), Some(p)),
            None => (authority.to_string(), None),
        }
    };
    let port = match port {
        None => PortRule::Default,
        Some("*") => PortRule::Any,
        Some(p) => PortRule::Exactly(p.parse().map_err(|_| format!("`{p}` is not a port"))?),
    };
    let host = host.to_ascii_lowercase();
    if host.is_empty() || host.contains('*') && !host.starts_with("*.") {
        return Err("a host, `*.domain`, or an IP address".into());
    }
    Ok(HttpGrant { scheme, host, port })
}

pub fn parse_process(text: &str) -> Result<ProcessGrant, String> {
    let mut words = text.split_whitespace().map(String::from);
    let program = words.next().ok_or("empty program")?;
    let args: Vec<String> = words.collect();
    Ok(ProcessGrant {
        program,
        args: (!args.is_empty()).then_some(args),
    })
}

pub fn parse_registry(text: &str) -> Result<RegistryGrant, String> {
    let (host, repository) = match text.split_once('/') {
        Some((h, r)) => (h, Some(r.to_string())),
        None => (text, None),
    };
    if host.is_empty() {
        return Err("no registry host".into());
    }
    Ok(RegistryGrant {
        host: host.to_string(),
        repository,
    })
}

/// `a/./b/../c` -> `a/c`; None when it leaves the workspace or is absolute.
/// A host path a grant may name: absolute or `~/...` (wharf's home), without `..`, not the
/// root itself.
pub fn host_path(path: &str) -> Result<String, String> {
    let (home, rest) = match path.strip_prefix("~/") {
        Some(rest) => (true, rest),
        None if path.starts_with('/') => (false, path),
        None => return Err("host paths are absolute (`/opt/tools`) or in the home directory (`~/.cargo/registry`); workspace paths go in `read:` and `write:`".into()),
    };
    let mut parts: Vec<&str> = Vec::new();
    for part in rest.split('/') {
        match part {
            "" | "." => {}
            ".." => return Err("`..` is not allowed in a host path".into()),
            p => parts.push(p),
        }
    }
    if parts.is_empty() {
        return Err("not the whole of the host (or home)".into());
    }
    Ok(if home {
        format!("~/{}", parts.join("/"))
    } else {
        format!("/{}", parts.join("/"))
    })
}

/// wharf's own directory in a workspace: runs, deploy state, locks, the image store. The host
/// writes it; no grant reaches into it.
pub const RESERVED: &str = ".wharf";

/// Whether the normalized workspace path `path` is in [`RESERVED`].
pub fn is_reserved(path: &str) -> bool {
    path == RESERVED || path.starts_with(".wharf/")
}

/// A workspace path a grant may name: normalized, inside the workspace, and not wharf's own.
pub fn grantable(path: &str) -> Result<String, String> {
    let normal = normalize(path).ok_or_else(|| "it leaves the workspace".to_string())?;
    if is_reserved(&normal) {
        return Err("`.wharf/` holds wharf's own state (runs, deploys, locks), which no step may reach".into());
    }
    Ok(normal)
}

pub fn normalize(path: &str) -> Option<String> {
    let mut parts: Vec<String> = Vec::new();
    for c in Path::new(path).components() {
        match c {
            Component::Normal(p) => parts.push(p.to_string_lossy().into_owned()),
            Component::CurDir => {}
            Component::ParentDir => {
                parts.pop()?;
            }
            _ => return None,
        }
    }
    Some(if parts.is_empty() { ".".into() } else { parts.join("/") })
}

fn glob(pattern: &str, value: &str) -> bool {
    match pattern.strip_suffix('*') {
        Some(prefix) if !prefix.contains('*') => value.starts_with(prefix),
        _ => pattern == value,
    }
}

fn args_match(patterns: &[String], args: &[String]) -> bool {
    let mut i = 0;
    for (n, p) in patterns.iter().enumerate() {
        if p == "**" && n == patterns.len() - 1 {
            return true;
        }
        match args.get(i) {
            Some(a) if p == "*" || p == a => i += 1,
            _ => return false,
        }
    }
    i == args.len()
}

/// Addresses a step may only reach when a grant names them literally: loopback,
/// link-local (the cloud metadata service, 169.254.169.254, among them), unspecified.
pub fn is_sensitive(ip: IpAddr) -> bool {
    match ip {
        IpAddr::V4(v4) => v4.is_loopback() || v4.is_link_local() || v4.is_unspecified() || v4.octets()[0] == 0,
        IpAddr::V6(v6) => {
            v6.is_loopback()
                || v6.is_unspecified()
                || (v6.segments()[0] & 0xffc0) == 0xfe80
                || v6.to_ipv4_mapped().is_some_and(|v4| is_sensitive(IpAddr::V4(v4)))
        }
    }
}

impl Grants {
    /// Parse a step's `allow:` mapping; errors point at the offending value.
    pub fn from_allow(step_id: &str, yaml: &Yaml) -> Result<Grants, Vec<Diagnostic>> {
        let mut grants = Grants {
            step_id: step_id.to_string(),
            ..Grants::default()
        };
        let mut errors = Vec::new();
        let Yaml::Map(entries, _) = yaml else {
            return Err(vec![
                Diagnostic::new(yaml.span(), format!("`allow` must be a mapping, not {}", yaml.kind()))
                    .help("write e.g. `allow: { http: [\"https://api.example.com\"], process: [cargo] }`"),
            ]);
        };
        for (key, value) in entries {
            let list = |errors: &mut Vec<Diagnostic>| -> Vec<Scalar> {
                match value {
                    Yaml::List(items, _) => items
                        .iter()
                        .filter_map(|i| match i {
                            Yaml::Scalar(s) => Some(s.clone()),
                            other => {
                                errors.push(Diagnostic::new(
                                    other.span(),
                                    format!("`allow.{}` entries are single values", key.text),
                                ));
                                None
                            }
                        })
                        .collect(),
                    Yaml::Scalar(s) if !s.is_null() => vec![s.clone()],
                    other => {
                        errors.push(Diagnostic::new(
                            other.span(),
                            format!("`allow.{}` must be a list", key.text),
                        ));
                        Vec::new()
                    }
                }
            };
            let flag = |errors: &mut Vec<Diagnostic>| -> bool {
                match value {
                    Yaml::Scalar(s) if s.text == "true" => true,
                    Yaml::Scalar(s) if s.text == "false" => false,
                    other => {
                        errors.push(Diagnostic::new(
                            other.span(),
                            format!("`allow.{}` is `true` or `false`", key.text),
                        ));
                        false
                    }
                }
            };
            macro_rules! each {
                ($field:ident, $parse:expr, $what:literal) => {
                    for s in list(&mut errors) {
                        match $parse(s.text.as_str()) {
                            Ok(v) => grants.$field.push(Granted {
                                what: v,
                                origin: Origin::Allow,
                            }),
                            Err(why) => errors.push(Diagnostic::new(
                                s.span,
                                format!("`{}` is not {}: {why}", s.text, $what),
                            )),
                        }
                    }
                };
            }
            match key.text.as_str() {
                "http" => each!(http, parse_http, "an http grant (scheme://host[:port])"),
                "process" => each!(process, parse_process, "a program"),
                "read" => each!(read, grantable, "a workspace path"),
                "write" => each!(write, grantable, "a workspace path"),
                "host-read" => each!(host_read, host_path, "a host path"),
                "host-write" => each!(host_write, host_path, "a host path"),
                "signal" => grants.signal = flag(&mut errors).then_some(Origin::Allow),
                "secrets" => each!(secrets, |s: &str| Ok::<_, String>(s.to_string()), "a secret name"),
                "deploy" => each!(deploy, |s: &str| Ok::<_, String>(s.to_string()), "a service"),
                "registry" => each!(registry, parse_registry, "a registry (HOST[:PORT][/REPOSITORY])"),
                "source" => grants.source = flag(&mut errors).then_some(Origin::Allow),
                "images" => grants.images = flag(&mut errors).then_some(Origin::Allow),
                other => {
                    let help = match suggest(other, ALLOW_KEYS.iter().copied()) {
                        Some(s) => format!("did you mean `{s}`? allow takes: {}", ALLOW_KEYS.join(", ")),
                        None => format!("allow takes: {}", ALLOW_KEYS.join(", ")),
                    };
                    errors.push(Diagnostic::new(key.span, format!("unknown grant `{other}`")).help(help));
                }
            }
        }
        if errors.is_empty() { Ok(grants) } else { Err(errors) }
    }

    /// Add what a built-in step's declared capabilities reach with these parameter values.
    /// Returns the path values it refused: they lead outside the workspace.
    #[must_use]
    pub fn derive(&mut self, info: &StepInfo, params: &[(String, Value)]) -> Vec<String> {
        let mut refused = Vec::new();
        for cap in &info.capabilities {
            let origin = |param: &str| Origin::Derived(param.to_string());
            let Some(param) = &cap.scope_param else {
                match cap.kind {
                    CapabilityKind::Source => {
                        self.source = self.source.clone().or(Some(Origin::Derived(String::new())))
                    }
                    CapabilityKind::Images => {
                        self.images = self.images.clone().or(Some(Origin::Derived(String::new())))
                    }
                    _ => {}
                }
                continue;
            };
            let Some(value) = params.iter().find(|(n, _)| n == param).map(|(_, v)| v) else {
                continue;
            };
            let texts: Vec<String> = match value {
                Value::Text(t) => vec![t.clone()],
                Value::TextList(l) => l.clone(),
                Value::TextMap(m) => m.iter().map(|(k, _)| k.clone()).collect(),
                _ => Vec::new(),
            };
            let texts: Vec<String> = texts.into_iter().filter(|t| !t.trim().is_empty()).collect();
            match cap.kind {
                CapabilityKind::Process => match value {
                    // A list is the whole command line: grant exactly it.
                    Value::TextList(l) if !l.is_empty() => self.process.push(Granted {
                        what: ProcessGrant {
                            program: l[0].clone(),
                            args: Some(l[1..].to_vec()),
                        },
                        origin: origin(param),
                    }),
                    _ => {
                        for t in texts {
                            self.process.push(Granted {
                                what: ProcessGrant { program: t, args: None },
                                origin: origin(param),
                            });
                        }
                    }
                },
                CapabilityKind::Http => {
                    for t in texts {
                        if let Ok(mut g) = parse_http(&t) {
                            if g.port == PortRule::Default
                                && let Some(p) = explicit_port(&t)
                            {
                                g.port = PortRule::Exactly(p);
                            }
                            self.http.push(Granted {
                                what: g,
                                origin: origin(param),
                            });
                        }
                    }
                }
                CapabilityKind::Registry => {
                    for t in texts {
                        if let Ok(g) = parse_registry(&t) {
                            self.registry.push(Granted {
                                what: g,
                                origin: origin(param),
                            });
                        }
                    }
                }
                CapabilityKind::Secrets => texts.into_iter().for_each(|t| {
                    self.secrets.push(Granted {
                        what: t,
                        origin: origin(param),
                    })
                }),
                CapabilityKind::Deploy => texts.into_iter().for_each(|t| {
                    self.deploy.push(Granted {
                        what: t,
                        origin: origin(param),
                    })
                }),
                CapabilityKind::WorkspaceRead | CapabilityKind::WorkspaceWrite => {
                    let list = if cap.kind == CapabilityKind::WorkspaceRead {
                        &mut self.read
                    } else {
                        &mut self.write
                    };
                    for t in texts {
                        match grantable(&t) {
                            Ok(p) => list.push(Granted {
                                what: p,
                                origin: origin(param),
                            }),
                            Err(why) => {
                                refused.push(format!("its `{param}` (`{t}`) is not a path a step may use: {why}"))
                            }
                        }
                    }
                }
                CapabilityKind::Source => self.source = self.source.clone().or(Some(origin(param))),
                CapabilityKind::Images => self.images = self.images.clone().or(Some(origin(param))),
            }
        }
        refused
    }

    /// What these grants allow that a careful operator wants to hear of: writing `.git/`
    /// (git runs the hooks there for whoever commits next).
    pub fn cautions(&self) -> Vec<String> {
        self.write
            .iter()
            .filter(|g| g.what == "." || g.what == ".git" || g.what.starts_with(".git/"))
            .map(|g| {
                format!(
                    "step `{}` may write `{}`, which holds `.git/`: git runs the hooks in `.git/hooks` for whoever commits next; grant the paths it writes instead",
                    self.step_id, g.what
                )
            })
            .collect()
    }

    fn denied(&self, what: String, yaml: String) -> Refusal {
        Refusal::NotGranted {
            step: self.step_id.clone(),
            what,
            yaml,
        }
    }

    pub fn check_process(&self, program: &str, args: &[String]) -> Result<(), Refusal> {
        let ok = self.process.iter().any(|g| {
            g.what.program == program && g.what.args.as_ref().is_none_or(|patterns| args_match(patterns, args))
        });
        if ok {
            return Ok(());
        }
        Err(self.denied(format!("run `{program}`"), format!("process: [{program}]")))
    }

    pub fn check_source(&self) -> Result<(), Refusal> {
        match self.source {
            Some(_) => Ok(()),
            None => Err(self.denied("read the workspace's git state".into(), "source: true".into())),
        }
    }

    pub fn check_images(&self) -> Result<(), Refusal> {
        match self.images {
            Some(_) => Ok(()),
            None => Err(self.denied("assemble images".into(), "images: true".into())),
        }
    }

    pub fn check_secret(&self, name: &str) -> Result<(), Refusal> {
        if self.secrets.iter().any(|g| g.what == name) {
            return Ok(());
        }
        Err(self.denied(format!("use secret `{name}`"), format!("secrets: [{name}]")))
    }

    pub fn check_deploy(&self, service: &str) -> Result<(), Refusal> {
        if self.deploy.iter().any(|g| g.what == service) {
            return Ok(());
        }
        Err(self.denied(
            format!("change or read service `{service}`"),
            format!("deploy: [{service}]"),
        ))
    }

    pub fn check_registry(&self, host: &str, repository: &str) -> Result<(), Refusal> {
        if !wharf_oci::reference::valid_repository(repository) {
            return Err(Refusal::BadRepository {
                repository: repository.to_string(),
            });
        }
        let ok = self
            .registry
            .iter()
            .any(|g| g.what.host == host && g.what.repository.as_deref().is_none_or(|r| glob(r, repository)));
        if ok {
            return Ok(());
        }
        Err(self.denied(
            format!("use registry {host}/{repository}"),
            format!("registry: [\"{host}/{repository}\"]"),
        ))
    }

    /// A workspace path (relative), for reading or writing.
    pub fn check_path(&self, path: &str, write: bool) -> Result<(), Refusal> {
        let Some(path) = normalize(path) else {
            return Err(Refusal::LeavesWorkspace { path: path.to_string() });
        };
        if is_reserved(&path) {
            return Err(Refusal::Reserved { path });
        }
        let covers = |g: &Granted<String>| g.what == "." || path == g.what || path.starts_with(&format!("{}/", g.what));
        if self.write.iter().any(covers) || (!write && self.read.iter().any(covers)) {
            return Ok(());
        }
        let key = if write { "write" } else { "read" };
        Err(self.denied(format!("{key} `{path}` in the workspace"), format!("{key}: [{path}]")))
    }

    /// The grant that covers this URL's host and port, if any.
    pub fn http_grant(&self, scheme: &str, host: &str, port: u16) -> Option<&HttpGrant> {
        let host = host.trim_start_matches('[').trim_end_matches(']').to_ascii_lowercase();
        self.http.iter().map(|g| &g.what).find(|g| {
            let scheme_ok = g.scheme.as_deref().is_none_or(|s| s == scheme);
            let host_ok = match g.host.strip_prefix("*.") {
                Some(domain) => host.ends_with(&format!(".{domain}")),
                None => g.host == host,
            };
            let default = if scheme == "https" { 443 } else { 80 };
            let port_ok = match g.port {
                PortRule::Any => true,
                PortRule::Default => port == default,
                PortRule::Exactly(p) => p == port,
            };
            scheme_ok && host_ok && port_ok
        })
    }

    pub fn deny_http(&self, scheme: &str, host: &str, port: u16, why: &str) -> Refusal {
        let default = if scheme == "https" { 443 } else { 80 };
        let origin = if port == default {
            format!("{scheme}://{host}")
        } else {
            format!("{scheme}://{host}:{port}")
        };
        self.denied(format!("reach {origin}{why}"), format!("http: [\"{origin}\"]"))
    }

    /// Every grant as `kind  value  (origin)` lines, for `wharf validate`.
    pub fn describe(&self) -> Vec<String> {
        fn origin(o: &Origin) -> String {
            match o {
                Origin::Allow => "allow".into(),
                Origin::Derived(p) if p.is_empty() => "built-in".into(),
                Origin::Derived(p) => format!("from `{p}`"),
            }
        }
        let mut out = Vec::new();
        let mut push = |kind: &str, value: String, o: &Origin| out.push(format!("{kind:<9} {value}  ({})", origin(o)));
        self.http
            .iter()
            .for_each(|g| push("http", g.what.to_string(), &g.origin));
        self.process
            .iter()
            .for_each(|g| push("process", g.what.to_string(), &g.origin));
        self.read.iter().for_each(|g| push("read", g.what.clone(), &g.origin));
        self.write.iter().for_each(|g| push("write", g.what.clone(), &g.origin));
        self.secrets
            .iter()
            .for_each(|g| push("secrets", g.what.clone(), &g.origin));
        self.deploy
            .iter()
            .for_each(|g| push("deploy", g.what.clone(), &g.origin));
        self.registry
            .iter()
            .for_each(|g| push("registry", g.what.to_string(), &g.origin));
        self.host_read
            .iter()
            .for_each(|g| push("host-read", g.what.clone(), &g.origin));
        self.host_write
            .iter()
            .for_each(|g| push("host-write", g.what.clone(), &g.origin));
        if let Some(o) = &self.signal {
            push("signal", "host processes".into(), o);
        }
        if let Some(o) = &self.source {
            push("source", "git describe".into(), o);
        }
        if let Some(o) = &self.images {
            push("images", "assemble".into(), o);
        }
        out
    }
}

/// The port written in a URL, if any.
fn explicit_port(url: &str) -> Option<u16> {
    let rest = url.split_once("://").map_or(url, |(_, r)| r);
    let authority = rest.split('/').next()?;
    authority.rsplit_once(':')?.1.parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn grants(yaml: &str) -> Grants {
        let y = Yaml::parse(yaml).unwrap();
        Grants::from_allow("s", &y).unwrap()
    }

    #[test]
    fn http_grants_match_scheme_host_and_port() {
        let g =
            grants("http: ['https://api.example.com', 'http://127.0.0.1:8080', '*.corp.example', 'http://[::1]:*']");
        assert!(g.http_grant("https", "api.example.com", 443).is_some());
        assert!(g.http_grant("http", "api.example.com", 80).is_none());
        assert!(g.http_grant("https", "api.example.com", 8443).is_none());
        assert!(g.http_grant("http", "127.0.0.1", 8080).is_some());
        assert!(g.http_grant("http", "127.0.0.1", 8081).is_none());
        assert!(g.http_grant("https", "x.corp.example", 443).is_some());
        assert!(g.http_grant("https", "corp.example", 443).is_none());
        assert!(g.http_grant("http", "[::1]", 1234).is_some());
    }

    #[test]
    fn processes_paths_and_the_yaml_to_add() {
        let g = grants(
            "process: [cargo, 'nginx -s reload', 'git * **']\nread: [src, ./docs/../README.md]\nwrite: [target]",
        );
        assert!(g.check_process("cargo", &["build".into()]).is_ok());
        assert!(g.check_process("nginx", &["-s".into(), "reload".into()]).is_ok());
        assert!(g.check_process("nginx", &["-s".into(), "stop".into()]).is_err());
        assert!(
            g.check_process("git", &["describe".into(), "--tags".into(), "x".into()])
                .is_ok()
        );
        assert!(g.check_process("git", &[]).is_err());
        let e = g.check_process("curl", &[]).unwrap_err();
        assert!(matches!(e, Refusal::NotGranted { .. }));
        let message = e.to_string();
        assert!(message.contains("step `s` may not run `curl`"), "{message}");
        assert!(message.contains("  allow:\n    process: [curl]"), "{message}");
        assert!(g.check_path("src/main.rs", false).is_ok());
        assert!(g.check_path("src/main.rs", true).is_err());
        assert!(g.check_path("README.md", false).is_ok());
        assert!(g.check_path("target/x", true).is_ok());
        assert!(g.check_path("srcx/main.rs", false).is_err());
        assert!(g.check_path("../etc/passwd", false).is_err());
    }

    #[test]
    fn bad_allow_is_reported_with_positions() {
        let y = Yaml::parse("htp: [x]\nhttp: ['ftp://x']\nsource: maybe\n").unwrap();
        let errors = Grants::from_allow("s", &y).unwrap_err();
        assert_eq!(errors.len(), 3);
        assert!(errors[0].help.as_ref().unwrap().contains("did you mean `http`?"));
        assert!(errors[1].message.contains("`ftp` is not http or https"));
        assert_eq!(errors[1].span.line, 2);
    }

    #[test]
    fn sensitive_addresses() {
        for ip in [
            "127.0.0.1",
            "169.254.169.254",
            "0.0.0.0",
            "::1",
            "fe80::1",
            "::ffff:127.0.0.1",
        ] {
            assert!(is_sensitive(ip.parse().unwrap()), "{ip}");
        }
        for ip in ["93.184.216.34", "10.0.0.1", "2001:db8::1"] {
            assert!(!is_sensitive(ip.parse().unwrap()), "{ip}");
        }
    }
}
