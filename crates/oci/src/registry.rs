//! A client for the OCI distribution API: push with a HEAD check per blob, monolithic
//! streamed uploads, manifest PUT; pull; basic auth, the bearer-token flow and static bearer
//! tokens. Plain HTTP only to loopback registries.

use super::layout::{Store, StoredImage};
use super::{
    DOCKER_MANIFEST, DOCKER_MANIFEST_LIST, Descriptor, Index, MEDIA_INDEX, MEDIA_MANIFEST, Manifest, digest_of,
};
use futures_util::StreamExt;
use reqwest::header::{AUTHORIZATION, CONTENT_LENGTH, CONTENT_TYPE, HeaderValue, LOCATION, WWW_AUTHENTICATE};
use reqwest::{RequestBuilder, Response, StatusCode};
use sha2::{Digest as _, Sha256};
use std::io::Write;
use std::net::IpAddr;
use std::sync::{Arc, Mutex};

const ACCEPT_MANIFESTS: &str = "application/vnd.oci.image.manifest.v1+json, application/vnd.oci.image.index.v1+json, application/vnd.docker.distribution.manifest.v2+json, application/vnd.docker.distribution.manifest.list.v2+json";
const UPLOAD_CHUNK: usize = 1 << 20;
/// Manifests are kilobytes; a registry that sends more is cut off.
pub const MANIFEST_LIMIT: usize = 4 << 20;
/// A bearer token is a few kilobytes of JSON; a token endpoint that sends more is cut off.
pub const TOKEN_LIMIT: usize = 1 << 20;
/// Of an error answer's body, what is kept for the message.
const ERROR_BODY_LIMIT: usize = 16 << 10;

/// How long a registry may keep wharf waiting. Every read of an answer (its headers, each
/// chunk of its body) must come within `idle`, and an exchange of a few kilobytes (a token,
/// a manifest, a HEAD) must end within `exchange`; a blob may take as long as it keeps
/// coming. `WHARF_REGISTRY_TIMEOUT` (`90s`, `5m`) sets `idle`, and `exchange` is twice it.
#[derive(Debug, Clone, Copy)]
pub struct Timeouts {
    pub idle: std::time::Duration,
    pub exchange: std::time::Duration,
}

impl Default for Timeouts {
    fn default() -> Self {
        Self::with_idle(std::time::Duration::from_secs(60))
    }
}

impl Timeouts {
    pub fn with_idle(idle: std::time::Duration) -> Self {
        Timeouts {
            idle,
            exchange: idle.saturating_mul(2),
        }
    }

    /// From `WHARF_REGISTRY_TIMEOUT`, else the default; a value that does not read as a
    /// duration is an error naming it.
    pub fn from_env() -> Result<Self, String> {
        match std::env::var("WHARF_REGISTRY_TIMEOUT") {
            Ok(text) => humantime::parse_duration(text.trim())
                .ok()
                .filter(|d| !d.is_zero())
                .map(Self::with_idle)
                .ok_or_else(|| format!("WHARF_REGISTRY_TIMEOUT=`{text}` is not a duration (90s, 5m)")),
            Err(_) => Ok(Self::default()),
        }
    }
}

#[derive(Clone, Default)]
pub struct Credentials {
    /// With a password: basic auth, and the token flow when the registry asks for it.
    pub username: Option<String>,
    /// Without a username: sent as a bearer token.
    pub password: Option<String>,
}

pub struct Registry {
    http: reqwest::Client,
    timeouts: Timeouts,
    host: String,
    base: String,
    credentials: Credentials,
    /// The `Authorization` value that worked last.
    authorization: Mutex<Option<HeaderValue>>,
}

/// Bytes moved so far and in all, reported as an upload proceeds.
pub type Progress = std::sync::Arc<dyn Fn(u64, u64) + Send + Sync>;

pub fn is_loopback(host: &str) -> bool {
    let name = match host.rsplit_once(':') {
        Some((h, port)) if port.chars().all(|c| c.is_ascii_digit()) => h,
        _ => host,
    };
    let name = name.trim_start_matches('[').trim_end_matches(']');
    name == "localhost" || name.parse::<IpAddr>().is_ok_and(|ip| ip.is_loopback())
}

/// What went wrong talking to a registry, with the facts a caller decides on: the host,
/// the HTTP status, the digests involved.
#[derive(Debug, thiserror::Error)]
pub enum RegistryError {
    #[error("`{host}` is not a registry host (HOST[:PORT])")]
    BadHost { host: String },
    /// The network failed on the way: worth another try.
    #[error("registry {host} unreachable: {detail}")]
    Unreachable { host: String, detail: String },
    #[error("registry {host} refused the credentials{detail}; check the username and the password secret")]
    CredentialsRefused { host: String, detail: String },
    #[error("registry {host} requires authentication; set `username` and `password-secret` on the step")]
    NeedsCredentials { host: String },
    #[error("registry {host} wants credentials sent over plain HTTP to {realm}; refused")]
    InsecureRealm { host: String, realm: String },
    /// A name that cannot go into a request: checked before anything is sent.
    #[error("`{name}` is not a valid {what}; nothing was sent to {host}")]
    InvalidName {
        host: String,
        what: &'static str,
        name: String,
    },
    /// The registry stopped answering: worth another try.
    #[error("registry {host}: {what}")]
    Stalled { host: String, what: String },
    /// The registry sent more than an answer of its kind can hold.
    #[error("registry {host} sent more than {limit} bytes as {what}; cut off")]
    Oversized { host: String, what: String, limit: usize },
    /// An answer other than the protocol's.
    #[error("registry {host}: {what} answered {}: {body}", status_line(*status))]
    Status {
        host: String,
        what: String,
        status: u16,
        body: String,
    },
    #[error("{host}/{repository}:{reference} does not exist")]
    NotFound {
        host: String,
        repository: String,
        reference: String,
    },
    /// A version tag that already names other content.
    #[error(
        "{host}/{repository}:{tag} already points to {existing}; version tags are immutable, so pushing {digest} under it was refused and the tag was left as it was. Build a new version (commit, then re-run) instead"
    )]
    TagMoved {
        host: String,
        repository: String,
        tag: String,
        existing: String,
        digest: String,
    },
    /// The registry broke the protocol: a missing header, a manifest that does not match.
    #[error("registry {host}: {what}")]
    Protocol { host: String, what: String },
    /// The local image store failed.
    #[error("image store: {context}: {source}")]
    Store {
        context: String,
        #[source]
        source: std::io::Error,
    },
}

/// `404 Not Found`, as an HTTP status line says it.
fn status_line(status: u16) -> String {
    StatusCode::from_u16(status).map_or_else(|_| status.to_string(), |s| s.to_string())
}

impl RegistryError {
    pub(crate) fn protocol(host: &str, what: impl Into<String>) -> Self {
        RegistryError::Protocol {
            host: host.to_string(),
            what: what.into(),
        }
    }

    pub(crate) fn store(context: impl Into<String>) -> impl FnOnce(std::io::Error) -> Self {
        let context = context.into();
        move |source| RegistryError::Store { context, source }
    }
}

/// A blob's chunks as read from the store, hashed as they go. The chunk that completes its
/// `size` bytes (as far as an upload of that length reads), or the end of a shorter file,
/// comes out as an error when the blob does not hash to `digest`: a damaged store never
/// completes an upload, and `verdict` says why.
struct Verified<S> {
    chunks: S,
    hasher: Option<Sha256>,
    read: u64,
    size: u64,
    digest: String,
    verdict: Arc<Mutex<Option<String>>>,
    progress: Progress,
}

impl<S> Verified<S> {
    fn verify(&mut self) -> std::io::Result<()> {
        let Some(hasher) = self.hasher.take() else {
            return Ok(());
        };
        let actual = format!("sha256:{}", hex::encode(hasher.finalize()));
        if actual == self.digest && self.read == self.size {
            return Ok(());
        }
        let why = format!(
            "it holds {} bytes hashing to {actual}, not {} bytes of {}",
            self.read, self.size, self.digest
        );
        *self.verdict.lock().unwrap() = Some(why.clone());
        Err(std::io::Error::new(std::io::ErrorKind::InvalidData, why))
    }
}

impl<S> futures_util::Stream for Verified<S>
where
    S: futures_util::Stream<Item = std::io::Result<bytes::Bytes>> + Unpin,
{
    type Item = std::io::Result<bytes::Bytes>;

    fn poll_next(
        self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<Self::Item>> {
        use std::task::Poll;
        let this = self.get_mut();
        let Poll::Ready(next) = std::pin::Pin::new(&mut this.chunks).poll_next(cx) else {
            return Poll::Pending;
        };
        Poll::Ready(match next {
            Some(Ok(bytes)) => {
                if let Some(hasher) = &mut this.hasher {
                    hasher.update(&bytes);
                }
                this.read += bytes.len() as u64;
                (this.progress)(this.read, this.size);
                if this.read >= this.size {
                    Some(this.verify().map(|()| bytes))
                } else {
                    Some(Ok(bytes))
                }
            }
            Some(Err(e)) => Some(Err(e)),
            None => this.verify().err().map(Err),
        })
    }
}

/// Install rustls' ring provider as the process default, once, before any HTTPS client is
/// built. Ring is the provider wasmtime-wasi-http already uses; reqwest's default
/// (aws-lc-rs) would add a C library to every cold build.
pub fn tls_provider() {
    static ONCE: std::sync::Once = std::sync::Once::new();
    ONCE.call_once(|| {
        // Err: the process already has one, which serves as well.
        let _ = rustls::crypto::ring::default_provider().install_default();
    });
}

impl Registry {
    /// Loopback registries are spoken to over plain HTTP, every other over HTTPS; the
    /// timeouts come from the environment ([`Timeouts::from_env`]).
    pub fn new(host: &str, credentials: Credentials) -> Result<Registry, RegistryError> {
        let timeouts = Timeouts::from_env().map_err(|what| RegistryError::protocol(host, what))?;
        Self::with_timeouts(host, credentials, timeouts)
    }

    pub fn with_timeouts(host: &str, credentials: Credentials, timeouts: Timeouts) -> Result<Registry, RegistryError> {
        if host.is_empty() || host.contains('/') {
            return Err(RegistryError::BadHost { host: host.to_string() });
        }
        let scheme = if is_loopback(host) { "http" } else { "https" };
        tls_provider();
        let http = reqwest::Client::builder()
            .user_agent(concat!("wharf/", env!("CARGO_PKG_VERSION")))
            .connect_timeout(std::time::Duration::from_secs(10))
            .read_timeout(timeouts.idle)
            .pool_max_idle_per_host(4)
            .build()
            .map_err(|e| RegistryError::protocol(host, format!("cannot create an HTTP client: {e}")))?;
        let authorization = match (&credentials.username, &credentials.password) {
            (None, Some(token)) => HeaderValue::from_str(&format!("Bearer {token}")).ok(),
            _ => None,
        };
        Ok(Registry {
            http,
            timeouts,
            host: host.to_string(),
            base: format!("{scheme}://{host}"),
            credentials,
            authorization: Mutex::new(authorization),
        })
    }

    pub fn host(&self) -> &str {
        &self.host
    }

    fn same_origin(&self, url: &str) -> bool {
        url.starts_with(&format!("{}/", self.base)) || url == self.base
    }

    fn url(&self, path: &str) -> String {
        if path.starts_with("http://") || path.starts_with("https://") {
            path.to_string()
        } else {
            format!("{}{path}", self.base)
        }
    }

    /// Send a request, answering one authentication challenge if the registry raises it.
    async fn send(
        &self,
        make: &(dyn Fn(&reqwest::Client) -> RequestBuilder + Sync),
    ) -> Result<Response, RegistryError> {
        for attempt in 0..2 {
            let mut request = make(&self.http);
            if let Some(auth) = self.authorization.lock().unwrap().clone() {
                request = request.header(AUTHORIZATION, auth);
            }
            let response = request.send().await.map_err(|e| self.network_error(e))?;
            if response.status() != StatusCode::UNAUTHORIZED {
                return Ok(response);
            }
            if attempt == 1 {
                // An anonymous token that does not cover this (a push, a private repository).
                if self.credentials.username.is_none() && self.credentials.password.is_none() {
                    return Err(RegistryError::NeedsCredentials {
                        host: self.host.clone(),
                    });
                }
                return Ok(response);
            }
            let challenge = response
                .headers()
                .get(WWW_AUTHENTICATE)
                .and_then(|v| v.to_str().ok())
                .unwrap_or_default()
                .to_string();
            let auth = self.answer(&challenge).await?;
            *self.authorization.lock().unwrap() = Some(auth);
        }
        unreachable!("the loop returns on its second attempt")
    }

    fn network_error(&self, e: reqwest::Error) -> RegistryError {
        if e.is_timeout() {
            return RegistryError::Stalled {
                host: self.host.clone(),
                what: format!(
                    "stopped answering (nothing for {}, or an exchange over {}); set WHARF_REGISTRY_TIMEOUT for a slower registry",
                    humantime::format_duration(self.timeouts.idle),
                    humantime::format_duration(self.timeouts.exchange)
                ),
            };
        }
        let mut detail = e.to_string();
        let mut source = std::error::Error::source(&e);
        while let Some(s) = source {
            detail.push_str(&format!(": {s}"));
            source = s.source();
        }
        RegistryError::Unreachable {
            host: self.host.clone(),
            detail,
        }
    }

    async fn answer(&self, challenge: &str) -> Result<HeaderValue, RegistryError> {
        let denied = |why: &str| RegistryError::CredentialsRefused {
            host: self.host.clone(),
            detail: why.to_string(),
        };
        let (scheme, params) = challenge.split_once(' ').unwrap_or((challenge, ""));
        let login = match (&self.credentials.username, &self.credentials.password) {
            (Some(user), Some(pass)) => Some((user, pass)),
            (None, Some(_)) => return Err(denied(" (bearer token)")),
            // Anonymous: public registries hand a pull token to anyone who asks for one.
            _ if scheme.eq_ignore_ascii_case("bearer") => None,
            _ => {
                return Err(RegistryError::NeedsCredentials {
                    host: self.host.clone(),
                });
            }
        };
        if let Some((user, pass)) = login
            && scheme.eq_ignore_ascii_case("basic")
        {
            let basic = base64::Engine::encode(&base64::engine::general_purpose::STANDARD, format!("{user}:{pass}"));
            return HeaderValue::from_str(&format!("Basic {basic}")).map_err(|_| denied(""));
        }
        if !scheme.eq_ignore_ascii_case("bearer") {
            return Err(RegistryError::protocol(
                &self.host,
                format!("asks for unsupported auth `{scheme}`"),
            ));
        }
        let fields = parse_challenge(params);
        let realm = fields
            .iter()
            .find(|(k, _)| k == "realm")
            .map(|(_, v)| v.clone())
            .ok_or_else(|| RegistryError::protocol(&self.host, "sent a bearer challenge without a realm"))?;
        // Basic credentials travel in clear over HTTP: only to a loopback token service.
        if realm.starts_with("http://")
            && !realm
                .strip_prefix("http://")
                .is_some_and(|r| is_loopback(r.split('/').next().unwrap_or_default()))
        {
            return Err(RegistryError::InsecureRealm {
                host: self.host.clone(),
                realm,
            });
        }
        let query: Vec<(String, String)> = fields
            .into_iter()
            .filter(|(k, _)| k == "service" || k == "scope")
            .collect();
        let mut request = self.http.get(&realm).query(&query).timeout(self.timeouts.exchange);
        if let Some((user, pass)) = login {
            request = request.basic_auth(user, Some(pass));
        }
        let response = request.send().await.map_err(|e| self.network_error(e))?;
        if login.is_none() && response.status() == StatusCode::UNAUTHORIZED {
            return Err(RegistryError::NeedsCredentials {
                host: self.host.clone(),
            });
        }
        if !response.status().is_success() {
            return Err(denied(&format!(" (token endpoint answered {})", response.status())));
        }
        let body = self.body_within(response, TOKEN_LIMIT, "a token response").await?;
        let body: serde_json::Value = serde_json::from_slice(&body)
            .map_err(|e| RegistryError::protocol(&self.host, format!("token response: {e}")))?;
        let token = body
            .get("token")
            .or_else(|| body.get("access_token"))
            .and_then(|t| t.as_str())
            .ok_or_else(|| RegistryError::protocol(&self.host, "token response has no token"))?;
        HeaderValue::from_str(&format!("Bearer {token}")).map_err(|_| denied(""))
    }

    fn unexpected(&self, what: &str, status: StatusCode, body: &str) -> RegistryError {
        RegistryError::Status {
            host: self.host.clone(),
            what: what.to_string(),
            status: status.as_u16(),
            body: body.trim().to_string(),
        }
    }

    /// An answer that is not the protocol's, with the start of its body for the message:
    /// read no further than [`ERROR_BODY_LIMIT`], as a registry may say anything at length.
    async fn refusal(&self, what: &str, response: Response) -> RegistryError {
        let status = response.status();
        let mut body = Vec::new();
        let mut chunks = response.bytes_stream();
        while body.len() < ERROR_BODY_LIMIT
            && let Ok(Some(Ok(chunk))) = tokio::time::timeout(self.timeouts.idle, chunks.next()).await
        {
            body.extend_from_slice(&chunk);
        }
        body.truncate(ERROR_BODY_LIMIT);
        self.unexpected(what, status, &String::from_utf8_lossy(&body))
    }

    /// A whole answer of at most `limit` bytes; more is an error naming `what`.
    async fn body_within(&self, response: Response, limit: usize, what: &str) -> Result<Vec<u8>, RegistryError> {
        let mut bytes = Vec::new();
        let mut body = response.bytes_stream();
        while let Some(chunk) = body.next().await {
            bytes.extend_from_slice(&chunk.map_err(|e| self.network_error(e))?);
            if bytes.len() > limit {
                return Err(RegistryError::Oversized {
                    host: self.host.clone(),
                    what: what.to_string(),
                    limit,
                });
            }
        }
        Ok(bytes)
    }

    /// `repository` and a tag or digest, checked against the distribution grammar before
    /// they become part of a URL.
    fn check_names(&self, repository: &str, reference: &str) -> Result<(), RegistryError> {
        let invalid = |what, name: &str| RegistryError::InvalidName {
            host: self.host.clone(),
            what,
            name: name.to_string(),
        };
        if !super::reference::valid_repository(repository) {
            return Err(invalid("repository name", repository));
        }
        if reference.contains(':') {
            if super::digest_hex(reference).is_none() {
                return Err(invalid("digest (sha256: and 64 hex digits)", reference));
            }
        } else if !super::reference::valid_tag(reference) {
            return Err(invalid("tag", reference));
        }
        Ok(())
    }

    /// A digest a registry names in a header, checked like every other.
    fn header_digest(&self, response: &Response) -> Result<Option<String>, RegistryError> {
        match response.headers().get("Docker-Content-Digest") {
            None => Ok(None),
            Some(value) => match value.to_str().ok().filter(|d| super::digest_hex(d).is_some()) {
                Some(digest) => Ok(Some(digest.to_string())),
                None => Err(RegistryError::protocol(
                    &self.host,
                    format!(
                        "answered with Docker-Content-Digest `{}`, not a sha256 digest",
                        String::from_utf8_lossy(value.as_bytes())
                    ),
                )),
            },
        }
    }

    /// The digest a tag or digest names now, or None when the registry does not have it.
    pub async fn manifest_digest(&self, repository: &str, reference: &str) -> Result<Option<String>, RegistryError> {
        self.check_names(repository, reference)?;
        let url = self.url(&format!("/v2/{repository}/manifests/{reference}"));
        let exchange = self.timeouts.exchange;
        let response = self
            .send(&|c| c.head(&url).header("Accept", ACCEPT_MANIFESTS).timeout(exchange))
            .await?;
        match response.status() {
            StatusCode::NOT_FOUND => Ok(None),
            s if s.is_success() => match self.header_digest(&response)? {
                Some(digest) => Ok(Some(digest)),
                // The header is optional: the manifest itself tells.
                None => Ok(Some(self.get_manifest(repository, reference).await?.2)),
            },
            s => Err(self.unexpected("manifest HEAD", s, "")),
        }
    }

    pub async fn blob_exists(&self, repository: &str, digest: &str) -> Result<bool, RegistryError> {
        self.check_names(repository, digest)?;
        let url = self.url(&format!("/v2/{repository}/blobs/{digest}"));
        let exchange = self.timeouts.exchange;
        let response = self.send(&|c| c.head(&url).timeout(exchange)).await?;
        match response.status() {
            StatusCode::NOT_FOUND => Ok(false),
            s if s.is_success() => Ok(true),
            s => Err(self.unexpected("blob HEAD", s, "")),
        }
    }

    /// One monolithic upload, streamed from the store.
    pub async fn upload_blob(
        &self,
        store: &Store,
        repository: &str,
        digest: &str,
        size: u64,
        progress: Progress,
    ) -> Result<(), RegistryError> {
        self.check_names(repository, digest)?;
        let start = self.url(&format!("/v2/{repository}/blobs/uploads/"));
        let exchange = self.timeouts.exchange;
        let response = self
            .send(&|c| c.post(&start).header(CONTENT_LENGTH, 0).timeout(exchange))
            .await?;
        if response.status() != StatusCode::ACCEPTED {
            return Err(self.refusal("upload start", response).await);
        }
        let location = response
            .headers()
            .get(LOCATION)
            .and_then(|v| v.to_str().ok())
            .ok_or_else(|| RegistryError::protocol(&self.host, "started an upload without a Location"))?
            .to_string();
        let separator = if location.contains('?') { '&' } else { '?' };
        let put = self.url(&format!("{location}{separator}digest={digest}"));
        let path = store.blob_path(digest).map_err(RegistryError::store(digest))?;
        let file = tokio::fs::File::open(&path)
            .await
            .map_err(RegistryError::store(path.display().to_string()))?;
        let damaged: Arc<Mutex<Option<String>>> = Arc::default();
        let body = Verified {
            chunks: tokio_util::io::ReaderStream::with_capacity(file, UPLOAD_CHUNK),
            hasher: Some(Sha256::new()),
            read: 0,
            size,
            digest: digest.to_string(),
            verdict: damaged.clone(),
            progress,
        };
        // No challenge round here: the upload's POST above already settled authentication,
        // and a streamed body cannot be sent twice.
        let mut request = self
            .http
            .put(&put)
            .header(CONTENT_TYPE, "application/octet-stream")
            .header(CONTENT_LENGTH, size)
            .body(reqwest::Body::wrap_stream(body));
        // Credentials go to the registry itself, not to a host its Location points at.
        if self.same_origin(&put)
            && let Some(auth) = self.authorization.lock().unwrap().clone()
        {
            request = request.header(AUTHORIZATION, auth);
        }
        let sent = request.send().await;
        if let Some(why) = damaged.lock().unwrap().take() {
            return Err(RegistryError::Store {
                context: format!("blob {}", path.display()),
                source: std::io::Error::new(
                    std::io::ErrorKind::InvalidData,
                    format!("{why}; the image store is damaged: remove it (`.wharf/oci`) and build the image again"),
                ),
            });
        }
        let response = sent.map_err(|e| self.network_error(e))?;
        if response.status() != StatusCode::CREATED {
            return Err(self.refusal(&format!("upload of {digest}"), response).await);
        }
        Ok(())
    }

    pub async fn put_manifest(
        &self,
        repository: &str,
        tag: &str,
        media_type: &str,
        bytes: &[u8],
    ) -> Result<String, RegistryError> {
        let response = self
            .send_manifest(repository, tag, media_type, bytes, "manifest PUT")
            .await?;
        Ok(self.header_digest(&response)?.unwrap_or_else(|| digest_of(bytes)))
    }

    /// PUT a manifest as `repository:reference`; the registry's answer once it took it.
    async fn send_manifest(
        &self,
        repository: &str,
        reference: &str,
        media_type: &str,
        bytes: &[u8],
        what: &str,
    ) -> Result<Response, RegistryError> {
        self.check_names(repository, reference)?;
        let url = self.url(&format!("/v2/{repository}/manifests/{reference}"));
        let body = bytes.to_vec();
        let exchange = self.timeouts.exchange;
        let response = self
            .send(&|c| {
                c.put(&url)
                    .header(CONTENT_TYPE, media_type)
                    .body(body.clone())
                    .timeout(exchange)
            })
            .await?;
        if response.status() != StatusCode::CREATED {
            return Err(self.refusal(what, response).await);
        }
        Ok(response)
    }

    /// Put a manifest that refers to another (`subject`) by its own digest; true when the
    /// registry says it keeps the referrers list itself (OCI 1.1's `OCI-Subject` header).
    pub async fn put_referrer(&self, repository: &str, media_type: &str, bytes: &[u8]) -> Result<bool, RegistryError> {
        let digest = digest_of(bytes);
        let response = self
            .send_manifest(repository, &digest, media_type, bytes, "referrer manifest PUT")
            .await?;
        Ok(response.headers().contains_key("OCI-Subject"))
    }

    /// The referrers API's index of what refers to `digest`, within [`MANIFEST_LIMIT`];
    /// None when the registry has no referrers API (the tag scheme is the fallback).
    pub async fn referrers(&self, repository: &str, digest: &str) -> Result<Option<Vec<u8>>, RegistryError> {
        self.check_names(repository, digest)?;
        let url = self.url(&format!("/v2/{repository}/referrers/{digest}"));
        let exchange = self.timeouts.exchange;
        let response = self
            .send(&|c| c.get(&url).header("Accept", MEDIA_INDEX).timeout(exchange))
            .await?;
        let status = response.status();
        let is_index = response
            .headers()
            .get(CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .is_some_and(|t| t.starts_with(MEDIA_INDEX));
        if status == StatusCode::NOT_FOUND
            || status == StatusCode::METHOD_NOT_ALLOWED
            || (status.is_success() && !is_index)
        {
            return Ok(None);
        }
        if !status.is_success() {
            return Err(self.refusal("referrers GET", response).await);
        }
        let what = format!("the referrers of {repository}@{digest}");
        Ok(Some(self.body_within(response, MANIFEST_LIMIT, &what).await?))
    }

    /// Manifest bytes, their media type and digest (checked when asked for by digest).
    pub async fn get_manifest(
        &self,
        repository: &str,
        reference: &str,
    ) -> Result<(Vec<u8>, String, String), RegistryError> {
        self.check_names(repository, reference)?;
        let url = self.url(&format!("/v2/{repository}/manifests/{reference}"));
        let exchange = self.timeouts.exchange;
        let response = self
            .send(&|c| c.get(&url).header("Accept", ACCEPT_MANIFESTS).timeout(exchange))
            .await?;
        let status = response.status();
        if status == StatusCode::NOT_FOUND {
            return Err(RegistryError::NotFound {
                host: self.host.clone(),
                repository: repository.to_string(),
                reference: reference.to_string(),
            });
        }
        if !status.is_success() {
            return Err(self.refusal("manifest GET", response).await);
        }
        let media_type = response
            .headers()
            .get(CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .unwrap_or(MEDIA_MANIFEST)
            .to_string();
        let bytes = self
            .body_within(
                response,
                MANIFEST_LIMIT,
                &format!("the manifest of {repository}:{reference}"),
            )
            .await?;
        let digest = digest_of(&bytes);
        if reference.starts_with("sha256:") && digest != reference {
            return Err(RegistryError::protocol(
                &self.host,
                format!("returned a manifest that does not match {reference}"),
            ));
        }
        Ok((bytes, media_type, digest))
    }

    /// Download a blob of `size` bytes into the store, checking its digest; a registry that
    /// sends more is cut off.
    pub async fn fetch_blob(
        &self,
        store: &Store,
        repository: &str,
        digest: &str,
        size: u64,
    ) -> Result<(), RegistryError> {
        self.check_names(repository, digest)?;
        if store.has_blob(digest) {
            return Ok(());
        }
        let url = self.url(&format!("/v2/{repository}/blobs/{digest}"));
        let response = self.send(&|c| c.get(&url)).await?;
        if !response.status().is_success() {
            return Err(self.refusal(&format!("blob GET {digest}"), response).await);
        }
        let mut writer = store.blob_writer().map_err(RegistryError::store(digest))?;
        let mut body = response.bytes_stream();
        let mut received = 0u64;
        while let Some(chunk) = body.next().await {
            let chunk = chunk.map_err(|e| self.network_error(e))?;
            received += chunk.len() as u64;
            if received > size {
                return Err(RegistryError::protocol(
                    &self.host,
                    format!("sent more than the {size} bytes of blob {digest}"),
                ));
            }
            writer.write_all(&chunk).map_err(RegistryError::store(digest))?;
        }
        writer
            .finish_expecting(Some(digest))
            .map_err(|e| RegistryError::protocol(&self.host, e.to_string()))?;
        Ok(())
    }
}

fn parse_challenge(params: &str) -> Vec<(String, String)> {
    let mut out = Vec::new();
    let mut rest = params.trim();
    while let Some((key, after)) = rest.split_once('=') {
        let key = key.trim().trim_start_matches(',').trim().to_string();
        let after = after.trim_start();
        let (value, next) = if let Some(quoted) = after.strip_prefix('"') {
            let end = quoted.find('"').unwrap_or(quoted.len());
            (&quoted[..end], quoted.get(end + 1..).unwrap_or(""))
        } else {
            let end = after.find(',').unwrap_or(after.len());
            (&after[..end], &after[end..])
        };
        out.push((key, value.to_string()));
        rest = next.trim_start_matches(',').trim();
    }
    out
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PushReport {
    pub digest: String,
    pub uploaded: u32,
    pub skipped: u32,
    pub bytes: u64,
}

/// Push `image` as `repository:tag`. Version tags are immutable: a tag that points to
/// another digest is refused and left as it was; the same digest again uploads nothing.
pub async fn push(
    store: &Store,
    image: &StoredImage,
    registry: &Registry,
    repository: &str,
    tag: &str,
    progress: Progress,
) -> Result<PushReport, RegistryError> {
    let digest = &image.manifest_descriptor.digest;
    if let Some(existing) = registry.manifest_digest(repository, tag).await? {
        if existing == *digest {
            return Ok(PushReport {
                digest: digest.clone(),
                uploaded: 0,
                skipped: 1 + image.manifest.layers.len() as u32,
                bytes: 0,
            });
        }
        return Err(RegistryError::TagMoved {
            host: registry.host().to_string(),
            repository: repository.to_string(),
            tag: tag.to_string(),
            existing,
            digest: digest.clone(),
        });
    }
    push_manifest(
        store,
        &image.manifest_descriptor,
        &image.manifest,
        registry,
        repository,
        tag,
        progress,
    )
    .await
}

/// Push the blobs `manifest` names (those the registry lacks), then the manifest as
/// `repository:tag`, whatever the tag named before.
pub async fn push_manifest(
    store: &Store,
    manifest_descriptor: &Descriptor,
    manifest: &Manifest,
    registry: &Registry,
    repository: &str,
    tag: &str,
    progress: Progress,
) -> Result<PushReport, RegistryError> {
    let digest = &manifest_descriptor.digest;
    let blobs: Vec<&Descriptor> = std::iter::once(&manifest.config).chain(&manifest.layers).collect();
    let mut report = PushReport {
        digest: digest.clone(),
        uploaded: 0,
        skipped: 0,
        bytes: 0,
    };
    let total: u64 = blobs.iter().map(|b| b.size).sum();
    let mut done = 0u64;
    for blob in blobs {
        if registry.blob_exists(repository, &blob.digest).await? {
            report.skipped += 1;
            done += blob.size;
            continue;
        }
        let base = done;
        let overall = progress.clone();
        let blob_progress: Progress = std::sync::Arc::new(move |sent, _size| overall(base + sent, total));
        registry
            .upload_blob(store, repository, &blob.digest, blob.size, blob_progress)
            .await?;
        done += blob.size;
        report.uploaded += 1;
        report.bytes += blob.size;
    }
    let bytes = store.read_blob(digest).map_err(RegistryError::store(digest.as_str()))?;
    let media_type = manifest.media_type.clone().unwrap_or_else(|| MEDIA_MANIFEST.into());
    let pushed = registry.put_manifest(repository, tag, &media_type, &bytes).await?;
    if pushed != *digest {
        return Err(RegistryError::protocol(
            registry.host(),
            format!("stored the manifest as {pushed}, expected {digest}"),
        ));
    }
    Ok(report)
}

/// Pull `repository` at `reference` (tag or digest) into the store, choosing linux/amd64
/// from a multi-platform index, and name it `name` there.
pub async fn pull(
    store: &Store,
    registry: &Registry,
    repository: &str,
    reference: &str,
    name: Option<&str>,
) -> Result<StoredImage, RegistryError> {
    let (mut bytes, mut media_type, mut digest) = registry.get_manifest(repository, reference).await?;
    if media_type.starts_with(MEDIA_INDEX) || media_type.starts_with(DOCKER_MANIFEST_LIST) {
        let index: Index = serde_json::from_slice(&bytes)
            .map_err(|e| RegistryError::protocol(registry.host(), format!("image index: {e}")))?;
        let chosen = index
            .manifests
            .iter()
            .find(|d| {
                d.platform
                    .as_ref()
                    .is_some_and(|p| p.os == "linux" && p.architecture == "amd64")
            })
            .ok_or_else(|| {
                RegistryError::protocol(
                    registry.host(),
                    format!("{repository}:{reference} has no linux/amd64 image"),
                )
            })?;
        (bytes, media_type, digest) = registry.get_manifest(repository, &chosen.digest).await?;
    }
    if !(media_type.starts_with(MEDIA_MANIFEST) || media_type.starts_with(DOCKER_MANIFEST)) {
        return Err(RegistryError::protocol(
            registry.host(),
            format!("{repository}:{reference} is a `{media_type}`, not an image manifest"),
        ));
    }
    let manifest: Manifest = serde_json::from_slice(&bytes)
        .map_err(|e| RegistryError::protocol(registry.host(), format!("manifest: {e}")))?;
    for blob in std::iter::once(&manifest.config).chain(&manifest.layers) {
        registry.fetch_blob(store, repository, &blob.digest, blob.size).await?;
    }
    store.put_blob(&bytes).map_err(RegistryError::store(digest.as_str()))?;
    let descriptor = Descriptor {
        media_type: media_type
            .split(';')
            .next()
            .unwrap_or(MEDIA_MANIFEST)
            .trim()
            .to_string(),
        digest: digest.clone(),
        size: bytes.len() as u64,
        annotations: None,
        platform: None,
    };
    if let Some(name) = name {
        store.tag(name, &descriptor).map_err(RegistryError::store(name))?;
    }
    store
        .resolve(None, Some(&digest))
        .map_err(RegistryError::store(digest.as_str()))?
        .ok_or_else(|| RegistryError::protocol(registry.host(), format!("pulled {digest} but cannot read it back")))
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    /// A stand-in for a registry with a token service: no token server runs here (Debian has
    /// none), so this checks the client's side of the bearer flow only. Real pushes, with
    /// basic auth, are tested against docker-registry in tests/registry_push.rs. Returns the
    /// stand-in's address, and every request it has seen.
    async fn token_registry() -> (std::net::SocketAddr, std::sync::Arc<Mutex<Vec<String>>>) {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let seen = std::sync::Arc::new(Mutex::new(Vec::<String>::new()));
        let log = seen.clone();
        tokio::spawn(async move {
            loop {
                let (mut sock, _) = listener.accept().await.unwrap();
                let mut buf = vec![0u8; 4096];
                let n = sock.read(&mut buf).await.unwrap();
                let request = String::from_utf8_lossy(&buf[..n]).to_string();
                log.lock().unwrap().push(request.clone());
                let response = if request.starts_with("GET /token") {
                    let body = r#"{"token":"t0ken"}"#;
                    format!(
                        "HTTP/1.1 200 OK\r\nContent-Length: {}\r\nContent-Type: application/json\r\n\r\n{body}",
                        body.len()
                    )
                } else if request.contains("Bearer t0ken") {
                    "HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\n\r\n".to_string()
                } else {
                    format!(
                        "HTTP/1.1 401 Unauthorized\r\nContent-Length: 0\r\nWWW-Authenticate: Bearer realm=\"http://{addr}/token\",service=\"test\",scope=\"repository:team/app:pull\"\r\n\r\n"
                    )
                };
                sock.write_all(response.as_bytes()).await.unwrap();
            }
        });
        (addr, seen)
    }

    /// Look a tag up through the stand-in with `credentials`: the request for a token, and
    /// the last request made.
    async fn token_flow(credentials: Credentials) -> (String, String) {
        let (addr, seen) = token_registry().await;
        let registry = Registry::new(&addr.to_string(), credentials).unwrap();
        assert_eq!(registry.manifest_digest("team/app", "1.0.0").await.unwrap(), None);
        let seen = seen.lock().unwrap();
        let token_request = seen
            .iter()
            .find(|r| r.starts_with("GET /token"))
            .expect("no token request")
            .clone();
        assert!(token_request.contains("service=test"), "{token_request}");
        assert!(
            token_request.contains("scope=repository%3Ateam%2Fapp%3Apull"),
            "{token_request}"
        );
        (token_request, seen.last().unwrap().clone())
    }

    #[tokio::test]
    async fn bearer_token_flow() {
        let (token_request, last) = token_flow(Credentials {
            username: Some("ci".into()),
            password: Some("pw".into()),
        })
        .await;
        // Basic credentials go to the token endpoint only.
        let basic = base64::Engine::encode(&base64::engine::general_purpose::STANDARD, "ci:pw");
        assert!(token_request.contains(&format!("Basic {basic}")), "{token_request}");
        assert!(last.contains("Bearer t0ken"));
    }

    /// Without credentials, the token is asked for anonymously, as public registries allow.
    #[tokio::test]
    async fn anonymous_bearer_token_flow() {
        let (token_request, last) = token_flow(Credentials::default()).await;
        assert!(
            !token_request.to_ascii_lowercase().contains("authorization:"),
            "{token_request}"
        );
        assert!(last.contains("Bearer t0ken"));
    }

    /// A registry that sends more than a blob's declared size, or an endless manifest, is
    /// cut off (a stand-in: docker-registry never does either).
    #[tokio::test]
    async fn a_registry_sending_too_much_is_cut_off() {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(async move {
            loop {
                let (mut sock, _) = listener.accept().await.unwrap();
                let mut buf = vec![0u8; 4096];
                let _ = sock.read(&mut buf).await;
                let body = vec![b'x'; MANIFEST_LIMIT + 1];
                let head = format!(
                    "HTTP/1.1 200 OK\r\nContent-Type: {MEDIA_MANIFEST}\r\nContent-Length: {}\r\n\r\n",
                    body.len()
                );
                let _ = sock.write_all(head.as_bytes()).await;
                let _ = sock.write_all(&body).await;
            }
        });
        let registry = Registry::new(&addr.to_string(), Credentials::default()).unwrap();
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path()).unwrap();
        let digest = format!("sha256:{}", "0".repeat(64));
        let blob = registry.fetch_blob(&store, "a/b", &digest, 1024).await.unwrap_err();
        assert!(blob.to_string().contains("sent more than the 1024 bytes"), "{blob}");
        assert!(!store.has_blob(&digest));
        let manifest = registry.get_manifest("a/b", "1.0").await.unwrap_err();
        assert!(
            manifest
                .to_string()
                .contains("more than 4194304 bytes as the manifest of a/b:1.0"),
            "{manifest}"
        );
    }

    #[test]
    fn challenges_and_loopback() {
        let c = parse_challenge(
            r#"realm="https://auth.example/token",service="registry.example",scope="repository:a/b:pull,push""#,
        );
        assert_eq!(c[0], ("realm".into(), "https://auth.example/token".into()));
        assert_eq!(c[2], ("scope".into(), "repository:a/b:pull,push".into()));
        assert!(is_loopback("127.0.0.1:5000"));
        assert!(is_loopback("localhost:5000"));
        assert!(is_loopback("[::1]:5000"));
        assert!(!is_loopback("registry.example:5000"));
    }
}
