//! Secrets: operator-provided values a step can hold without seeing.
//!
//! Threat: a step (or a program it runs) leaks a credential into logs, outputs or errors,
//! where every CI viewer can read it. Values come only from the operator's side (the
//! environment of the wharf process, files), never from the pipeline file; a step gets an
//! opaque handle, revealing the value is a separate call the host records, and every value is
//! masked (raw, base64 and URL-encoded) in everything the run emits.

use crate::engine::bindings::wharf::step::secrets::{Host, HostSecret};
use crate::engine::bindings::wharf::step::types::{ErrorKind, StepError};
use crate::engine::state::StepState;
use crate::events::Level;
use base64::Engine as _;
use std::collections::BTreeMap;
use std::path::Path;
use wasmtime::component::Resource;

/// Environment variables of the wharf process that hold secrets: `WHARF_SECRET_<NAME>`.
pub const ENV_PREFIX: &str = "WHARF_SECRET_";
/// Shorter values are not masked: masking `ab` would shred every log line.
pub const MIN_MASKED_LEN: usize = 4;
/// Largest `--secret-file` read.
pub const SECRET_FILE_LIMIT: u64 = 1 << 20;

/// An environment variable that holds a secret.
pub fn is_secret_var(name: &str) -> bool {
    name.starts_with(ENV_PREFIX)
}

/// The environment-variable form of a secret name: `registry-password` ->
/// `WHARF_SECRET_REGISTRY_PASSWORD`.
pub fn env_key(name: &str) -> String {
    format!("{ENV_PREFIX}{}", name.to_uppercase().replace(['-', '.'], "_"))
}

#[derive(Debug, Default, Clone)]
pub struct SecretStore {
    /// By canonical name (the env-var form), so `db-pass` and `DB_PASS` are one secret.
    values: BTreeMap<String, String>,
}

impl SecretStore {
    /// From `WHARF_SECRET_<NAME>` variables, by variable name.
    pub fn from_values(values: BTreeMap<String, String>) -> Self {
        Self { values }
    }

    /// `--secret-file NAME=PATH`: the file's content, one trailing newline removed.
    pub fn add_file(&mut self, name: &str, path: &Path) -> Result<(), String> {
        let text = crate::bounded::read_text(path, SECRET_FILE_LIMIT)
            .map_err(|e| format!("secret `{name}`: cannot read it: {e}"))?;
        let value = text.strip_suffix('\n').unwrap_or(&text);
        self.insert(name, value);
        Ok(())
    }

    pub fn insert(&mut self, name: &str, value: &str) {
        self.values.insert(env_key(name), value.to_string());
    }

    pub fn get(&self, name: &str) -> Option<&str> {
        self.values.get(&env_key(name)).map(String::as_str)
    }

    pub fn values(&self) -> impl Iterator<Item = &str> {
        self.values.values().map(String::as_str)
    }
}

/// Masks secret values in text.
#[derive(Debug, Default, Clone)]
pub struct Redactor {
    /// Every form of every secret, longest first so a longer match wins.
    patterns: Vec<String>,
}

pub const MASK: &str = "***";

impl Redactor {
    pub fn add(&mut self, secret: &str) {
        // Output reaches the log line by line: each line of a multi-line secret (a PEM key)
        // is masked on its own as well.
        if secret.contains('\n') {
            for line in secret.lines().map(|l| l.trim_end_matches('\r')) {
                self.add(line);
            }
        }
        if secret.len() < MIN_MASKED_LEN {
            return;
        }
        let b64 = base64::engine::general_purpose::STANDARD.encode(secret);
        let forms = [
            secret.to_string(),
            // Padded and unpadded: the padding must not survive next to the mask.
            b64.clone(),
            b64.trim_end_matches('=').to_string(),
            base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(secret),
            percent_encoding::utf8_percent_encode(secret, percent_encoding::NON_ALPHANUMERIC).to_string(),
        ];
        for form in forms {
            if form.len() >= MIN_MASKED_LEN && !self.patterns.contains(&form) {
                self.patterns.push(form);
            }
        }
        self.patterns.sort_by_key(|p| std::cmp::Reverse(p.len()));
    }

    /// Length of the longest pattern.
    pub fn longest(&self) -> usize {
        self.patterns.first().map_or(0, String::len)
    }

    /// The masked text, or None when nothing needed masking.
    pub fn redact(&self, text: &str) -> Option<String> {
        if !self.patterns.iter().any(|p| text.contains(p.as_str())) {
            return None;
        }
        let mut out = text.to_string();
        for p in &self.patterns {
            out = out.replace(p.as_str(), MASK);
        }
        Some(out)
    }
}

/// The host side of a `secret` resource: just the name; the value stays in the store.
pub struct SecretHandle {
    pub name: String,
}

impl StepState {
    /// The name behind a handle the step passed to a host call (registry credentials): the
    /// journal records the name, the value is looked up only when the call is made.
    pub fn secret_name(&self, handle: Option<Resource<SecretHandle>>) -> wasmtime::Result<Option<String>> {
        Ok(match handle {
            Some(h) => Some(self.table.get(&h)?.name.clone()),
            None => None,
        })
    }
}

impl Host for StepState {
    async fn get(&mut self, name: String) -> wasmtime::Result<Result<Resource<SecretHandle>, StepError>> {
        let found: Result<String, StepError> = crate::taped!(self, "wharf:step/secrets", "get", name, {
            self.grants.check_secret(&name).and_then(|()| match self.secrets.get(&name) {
                Some(_) => Ok(name.clone()),
                None => Err(StepError {
                    kind: ErrorKind::Denied,
                    message: format!(
                        "secret `{name}` is not set; the operator provides it as environment variable {} of the wharf process, or with `--secret-file {name}=PATH`",
                        env_key(&name)
                    ),
                }),
            })
        });
        Ok(match found {
            Ok(name) => Ok(self.table.push(SecretHandle { name })?),
            Err(e) => Err(e),
        })
    }
}

impl HostSecret for StepState {
    async fn name(&mut self, secret: Resource<SecretHandle>) -> wasmtime::Result<String> {
        Ok(self.table.get(&secret)?.name.clone())
    }

    async fn reveal(&mut self, secret: Resource<SecretHandle>) -> wasmtime::Result<String> {
        let name = self.table.get(&secret)?.name.clone();
        // The journal keeps the masked value; a replay hands the step `***`.
        Ok(crate::taped!(self, "wharf:step/secrets", "reveal", name, {
            self.scope
                .log(Level::Debug, format!("revealed secret `{name}` to the step"));
            self.secrets.get(&name).unwrap_or_default().to_string()
        }))
    }

    async fn drop(&mut self, secret: Resource<SecretHandle>) -> wasmtime::Result<()> {
        self.table.delete(secret)?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn masks_raw_base64_and_url_encoded_forms() {
        let mut r = Redactor::default();
        r.add("s3cr3t/p@ss");
        let b64 = base64::engine::general_purpose::STANDARD.encode("s3cr3t/p@ss");
        let url = "s3cr3t%2Fp%40ss";
        let line = format!("raw=s3cr3t/p@ss b64={b64} url={url}");
        assert_eq!(r.redact(&line).unwrap(), "raw=*** b64=*** url=***");
        assert_eq!(r.redact("nothing here"), None);
    }

    #[test]
    fn every_line_of_a_multi_line_secret_is_masked() {
        let mut r = Redactor::default();
        r.add("-----BEGIN KEY-----\nMIIEvQIBADANBgkq\r\nhkiG9w0BAQEFAASC\n-----END KEY-----");
        assert_eq!(r.redact("line: hkiG9w0BAQEFAASC").unwrap(), "line: ***");
        assert_eq!(r.redact("MIIEvQIBADANBgkq").unwrap(), "***");
    }

    #[test]
    fn short_values_are_not_masked() {
        let mut r = Redactor::default();
        r.add("ab");
        assert_eq!(r.redact("ab cd"), None);
    }

    #[test]
    fn names_map_to_env_vars() {
        assert_eq!(env_key("registry-password"), "WHARF_SECRET_REGISTRY_PASSWORD");
        let mut s = SecretStore::default();
        s.insert("REGISTRY_PASSWORD", "x1234");
        assert_eq!(s.get("registry-password"), Some("x1234"));
    }
}
