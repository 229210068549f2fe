//! Secrets leave wharf's environment at start-up.
//!
//! `WHARF_SECRET_*` variables are how an operator hands wharf secrets, but the environment a
//! process started with stays readable in `/proc/PID/environ` for its whole life, by any
//! process of the same user: a granted program could read its parent's. Removing the
//! variables (`unsetenv`) does not change that memory. So when wharf finds secrets in its
//! environment it writes them to an anonymous memory file, and executes itself again with
//! the secrets removed from the environment and only the number of that file passed along.
//! The new image reads them, closes the file and goes on: from then on the secrets exist only
//! in wharf's memory.

use crate::capabilities::secrets::{ENV_PREFIX, SecretStore};
use std::collections::BTreeMap;
use std::io::{Read, Seek, Write};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};

/// Set on the re-executed wharf: the descriptor holding the secrets.
const FD_VAR: &str = "WHARF_SECRETS_FD";
/// Largest secrets file read back (every secret together).
const LIMIT: u64 = 16 << 20;

/// Take the secrets out of the environment; runs first thing in `main`, while wharf has a
/// single thread. Returns only in the process that keeps running.
pub fn take_secrets() -> Result<SecretStore, String> {
    if let Some(fd) = std::env::var_os(FD_VAR) {
        // SAFETY: single-threaded start-up; nothing reads the environment concurrently.
        unsafe { std::env::remove_var(FD_VAR) };
        return read_back(&fd.to_string_lossy());
    }
    let secrets: BTreeMap<String, String> = std::env::vars_os()
        .filter_map(|(k, v)| Some((k.into_string().ok()?, v.into_string().ok()?)))
        .filter(|(k, _)| k.starts_with(ENV_PREFIX) && k.len() > ENV_PREFIX.len())
        .collect();
    if secrets.is_empty() {
        return Ok(SecretStore::default());
    }
    let error = reexec(&secrets);
    // Still here: the exec failed. Run on, with the variables at least out of what children
    // inherit, and say what remains exposed.
    eprintln!(
        "warning: could not take secrets out of wharf's environment ({error}); they stay readable in /proc/{}/environ",
        std::process::id()
    );
    for name in secrets.keys() {
        // SAFETY: single-threaded start-up.
        unsafe { std::env::remove_var(name) };
    }
    Ok(SecretStore::from_values(secrets))
}

/// Execute wharf again without the secret variables; returns only when that fails.
fn reexec(secrets: &BTreeMap<String, String>) -> String {
    use std::os::unix::process::CommandExt;
    let file = match rustix::fs::memfd_create("wharf-secrets", rustix::fs::MemfdFlags::empty()) {
        Ok(fd) => fd,
        Err(e) => return format!("memfd_create: {e}"),
    };
    let mut file = std::fs::File::from(file);
    let json = serde_json::to_vec(secrets).unwrap_or_default();
    if let Err(e) = file.write_all(&json).and_then(|()| file.rewind()) {
        return e.to_string();
    }
    let mut args = std::env::args_os();
    let argv0 = args.next().unwrap_or_default();
    let mut command = std::process::Command::new("/proc/self/exe");
    command.arg0(argv0).args(args);
    command.env_clear();
    command.envs(std::env::vars_os().filter(|(k, _)| !k.to_string_lossy().starts_with(ENV_PREFIX)));
    command.env(FD_VAR, file.as_raw_fd().to_string());
    command.exec().to_string()
}

fn read_back(fd: &str) -> Result<SecretStore, String> {
    let fd: i32 = fd
        .parse()
        .ok()
        .filter(|n| *n > 2)
        .ok_or_else(|| format!("{FD_VAR}={fd} is not a descriptor wharf passed itself"))?;
    // SAFETY: the descriptor was left open across exec by the previous image for exactly
    // this; nothing else in this process owns it.
    let file = std::fs::File::from(unsafe { OwnedFd::from_raw_fd(fd) });
    let mut json = Vec::new();
    file.take(LIMIT)
        .read_to_end(&mut json)
        .map_err(|e| format!("reading secrets back from descriptor {fd}: {e}"))?;
    // The file is closed here: programs wharf starts do not inherit it.
    let secrets: BTreeMap<String, String> =
        serde_json::from_slice(&json).map_err(|e| format!("reading secrets back from descriptor {fd}: {e}"))?;
    Ok(SecretStore::from_values(secrets))
}
