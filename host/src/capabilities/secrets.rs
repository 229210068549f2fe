//! Secrets: operator-provided values a step can hold without seeing.
//!
//! Threat: a step (or a program it runs) leaks a credential into logs, outputs or errors,
//! where every CI viewer can read it. Values come only from the operator's side (the
//! environment of the wharf process, files), never from the pipeline file; a step gets an
//! opaque handle, revealing the value is a separate call the host records, and every value is
//! masked (raw, base64 and URL-encoded) in everything the run emits.

use super::bindings::wharf::step::secrets::{Host, HostSecret};
use super::bindings::wharf::step::types::ErrorKind;
use super::{CallResult, StepCall, step_error};
use crate::events::Level;
use std::collections::BTreeMap;
use std::path::Path;
use wasmtime::component::{Resource, ResourceTable};

/// Environment variables of the wharf process that hold secrets: `WHARF_SECRET_<NAME>`.
pub const ENV_PREFIX: &str = crate::pipeline::SECRET_ENV_PREFIX;
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

/// The host side of a `secret` resource: just the name; the value stays in the store.
pub struct SecretHandle {
    pub name: String,
}

/// The view `secrets` (and `registry`, which takes secret handles) is served on.
pub struct SecretsView<'a> {
    pub call: &'a StepCall,
    pub secrets: &'a SecretStore,
    pub table: &'a mut ResourceTable,
    /// What the step's pushes sign (registry is served on this view).
    pub release: &'a crate::provenance::StepRelease,
}

/// The linker's marker for [`SecretsView`].
pub struct HasSecrets;

impl wasmtime::component::HasData for HasSecrets {
    type Data<'a> = SecretsView<'a>;
}

impl SecretsView<'_> {
    /// The name behind a handle the step passed to a host call (registry credentials): the
    /// journal records the name, the value is looked up only when the call is made.
    pub fn secret_name(&self, handle: Option<Resource<SecretHandle>>) -> wasmtime::Result<Option<String>> {
        Ok(match handle {
            Some(h) => Some(self.table.get(&h)?.name.clone()),
            None => None,
        })
    }
}

const SECRETS: &str = "wharf:step/secrets";

impl Host for SecretsView<'_> {
    async fn get(&mut self, name: String) -> CallResult<Resource<SecretHandle>> {
        let (call, secrets) = (self.call, self.secrets);
        let name = call
            .taped(SECRETS, "get", &name, async {
                call.grants.check_secret(&name)?;
                match secrets.get(&name) {
                    Some(_) => Ok(name.clone()),
                    None => Err(step_error(
                        ErrorKind::Denied,
                        format!(
                            "secret `{name}` is not set; the operator provides it as environment variable {} of the wharf process, or with `--secret-file {name}=PATH`",
                            env_key(&name)
                        ),
                    )),
                }
            })
            .await?;
        Ok(self.table.push(SecretHandle { name }).map_err(wasmtime::Error::from)?)
    }
}

impl HostSecret for SecretsView<'_> {
    async fn name(&mut self, secret: Resource<SecretHandle>) -> wasmtime::Result<String> {
        Ok(self.table.get(&secret)?.name.clone())
    }

    async fn reveal(&mut self, secret: Resource<SecretHandle>) -> wasmtime::Result<String> {
        let name = self.table.get(&secret)?.name.clone();
        let (call, secrets) = (self.call, self.secrets);
        // The journal keeps the masked value; a replay hands the step `***`.
        call.tape
            .call(SECRETS, "reveal", &name, async {
                call.scope
                    .log(Level::Debug, format!("revealed secret `{name}` to the step"));
                secrets.get(&name).unwrap_or_default().to_string()
            })
            .await
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
    fn names_map_to_env_vars() {
        assert_eq!(env_key("registry-password"), "WHARF_SECRET_REGISTRY_PASSWORD");
        let mut s = SecretStore::default();
        s.insert("REGISTRY_PASSWORD", "x1234");
        assert_eq!(s.get("registry-password"), Some("x1234"));
    }
}
