//! The step cache. A step whose effects can be done again from a record (it read through
//! its grants, wrote into the workspace, logged, returned outputs, assembled images, asked
//! `source` and for secrets) is not run again while everything it used is what it was.
//! Nothing is declared: the inputs are what the sandbox saw the step use
//! ([`crate::journal::witness`], [`observe`]), and for the programs it ran, everything the
//! kernel let them read. An entry is filed by the step's identity (its component, wharf's
//! version, its parameters, grants and environment) and accepted only when each input is
//! unchanged; a hit then restores its files, images, log and outputs ([`restore`]).
//! `docs/cache.md` is the user's account; the records and the store are `wharf-cache`'s.

mod learnt;
pub mod observe;
pub mod remote;
pub mod restore;

use crate::capabilities::secrets::SecretStore;
use crate::engine::LoadedStep;
use crate::engine::step::StepParams;
use crate::events::{Event, Events, Level, Sink, Stream, TestResult};
use crate::journal::witness::Seen;
use crate::pipeline::StepDecl;
use crate::sandbox::Grants;
use serde_json::Value;
use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use wharf_cache::entry::FORMAT;
pub use wharf_cache::identity::Identity;
use wharf_cache::identity::Shared;
use wharf_cache::store::Last;
use wharf_cache::{Effects, Entry, Found, Input, Store};

/// Bytes of log lines, annotations and test results a cached step may have said.
pub const SAID_LIMIT: usize = 16 << 20;

/// Runs in a row a step may miss with a new identity and still be saved.
pub const NEW_IN_A_ROW_NOT_SAVED: u32 = 5;

/// The cache a run uses: the workspace's store, the digests of files it hashed, and what
/// each step it may cache says while it runs.
pub struct StepCache {
    store: Store,
    workspace: PathBuf,
    /// The name of the pipeline the run runs: a cache serves one run.
    pipeline: String,
    /// Digests of files hashed before, read on first use.
    learnt: learnt::Learnt,
    said: Arc<Said>,
    secrets: Arc<SecretStore>,
    events: Events,
    /// The cache CI machines share, when the run was given one.
    remote: Option<remote::Remote>,
    /// Entries being written beside the run, by a thread of their own.
    filer: Mutex<Option<Filer>>,
    /// Entries being added to the shared cache.
    sharing: Mutex<Vec<tokio::task::JoinHandle<()>>>,
    /// The identities the pipeline's steps last had (`steps/PIPELINE.json`), read on first
    /// use.
    last: Mutex<Option<BTreeMap<String, Last>>>,
    /// The identities steps have in this run, for the record when it ends.
    this_run: Mutex<BTreeMap<String, Last>>,
    /// The identity parts every step of the run shares, from its first step.
    shared: std::sync::OnceLock<Arc<Shared>>,
    /// The last limits digested, and their digest.
    limits: Mutex<Option<(crate::engine::limits::StepLimits, String)>>,
}

pub enum Lookup {
    Hit(Box<Entry>),
    /// Why the step runs: the first input that differed from the nearest entry.
    Miss(String),
    /// Why the step runs, and why what it does is not saved: its identity was new run
    /// after run (a parameter carrying the run id, a clock, a counter), so an entry would
    /// be written every run and found by none. It is saved again once its identity repeats.
    MissNotSaved(String),
}

/// `.wharf/cache` of a workspace.
pub fn cache_dir(workspace: &Path) -> PathBuf {
    workspace.join(".wharf/cache")
}

impl StepCache {
    /// The workspace's cache for a run of `pipeline` (its name), listening to the run's
    /// events for what steps say.
    pub fn open(
        workspace: &Path,
        pipeline: &str,
        events: &Events,
        secrets: Arc<SecretStore>,
    ) -> std::io::Result<StepCache> {
        let store = Store::open(&cache_dir(workspace))?;
        let said = Arc::new(Said::default());
        events.add_sink(said.clone());
        Ok(StepCache {
            workspace: workspace.to_path_buf(),
            pipeline: pipeline.to_string(),
            learnt: learnt::Learnt::new(store.clone()),
            store,
            said,
            secrets,
            events: events.clone(),
            remote: None,
            filer: Mutex::default(),
            sharing: Mutex::default(),
            last: Mutex::default(),
            this_run: Mutex::default(),
            shared: Default::default(),
            limits: Mutex::default(),
        })
    }

    /// Also use the cache CI machines share.
    pub fn share(self, remote: remote::Remote) -> StepCache {
        StepCache {
            remote: Some(remote),
            ..self
        }
    }

    pub fn store(&self) -> &Store {
        &self.store
    }

    /// The step's identity: its id, its component (a built-in's is wharf's own), its
    /// parameters as resolved, its grants and limits; and what every step of the run shares:
    /// the pipeline, wharf's version, the variables passed to the pipeline, the variables of
    /// wharf's environment its programs get, and how programs are confined. The shared parts
    /// are digested once, by the run's first step: a cache serves one run.
    pub fn identity(&self, step: &StepFacts<'_>) -> Identity {
        let StepFacts {
            decl,
            loaded,
            params,
            grants,
            limits,
            passed,
            confinement,
        } = step;
        let digest = |text: &str| wharf_cache::sha256_hex(text.as_bytes());
        let shared = self.shared.get_or_init(|| {
            let mut parts = BTreeMap::new();
            // A typed step is handed its pipeline's name.
            parts.insert("pipeline".to_string(), digest(&self.pipeline));
            parts.insert(
                "wharf's version".to_string(),
                concat!(env!("CARGO_PKG_VERSION"), " ", env!("WHARF_COMMIT")).to_string(),
            );
            for (name, value) in *passed {
                parts.insert(format!("passed variable `{name}`"), digest(value));
            }
            for name in crate::capabilities::process::PASSTHROUGH_ENV
                .iter()
                .chain(&["SOURCE_DATE_EPOCH"])
            {
                if let Some(value) = std::env::var_os(name) {
                    parts.insert(
                        format!("variable `{name}` of wharf's environment"),
                        digest(&value.to_string_lossy()),
                    );
                }
            }
            parts.insert("programs' confinement".to_string(), confinement.to_string());
            Arc::new(Shared::new(parts))
        });
        let mut own = BTreeMap::new();
        // A typed step is handed its id.
        own.insert("step id".to_string(), decl.id.clone());
        own.insert("component".to_string(), loaded.digest.clone());
        match params {
            StepParams::Typed(values) => {
                for (name, value) in values {
                    let json = serde_json::to_string(value).unwrap_or_default();
                    own.insert(format!("parameter `{name}`"), digest(&json));
                }
            }
            StepParams::Command(values) => {
                for (name, value) in values {
                    own.insert(format!("parameter `{name}`"), digest(value));
                }
            }
        }
        own.insert("grants".to_string(), digest(&grants.describe().join("\n")));
        // A tighter limit could fail what succeeded. Steps mostly share theirs.
        let limits = {
            let mut last = self.limits.lock().unwrap();
            match &*last {
                Some((seen, digest)) if seen == *limits => digest.clone(),
                _ => last.insert((**limits, digest(&format!("{limits:?}")))).1.clone(),
            }
        };
        own.insert("limits".to_string(), limits);
        Identity::new(shared.clone(), own)
    }

    /// Why a step is never cached, from what it may do; None when it may be.
    pub fn never(decl: &StepDecl, grants: &Grants) -> Option<String> {
        let may = |what: &str, first: Option<String>| first.map(|g| format!("it may {what} (`{g}`)"));
        if !decl.cache {
            return Some("`cache: false`".into());
        }
        may("deploy", grants.deploy.first().map(|g| g.what.clone()))
            .or_else(|| may("call HTTP", grants.http.first().map(|g| g.what.to_string())))
            .or_else(|| may("use a registry", grants.registry.first().map(|g| g.what.to_string())))
            .or_else(|| {
                may(
                    "write outside the workspace",
                    grants.host_write.first().map(|g| g.what.clone()),
                )
            })
            .or_else(|| {
                grants
                    .signal
                    .as_ref()
                    .map(|_| "it may signal processes of the host".to_string())
            })
    }

    /// The entry to reuse for a step with this identity, if one's inputs are all unchanged
    /// and its effects can be restored; otherwise why not. Damaged or forged entries are
    /// warned of and passed over; the shared cache is asked when the local one has none.
    pub async fn lookup(&self, step: &str, identity: &Identity) -> Lookup {
        // Most misses have an identity no run of the step saved: `entries/` is not asked.
        let saved_here = self.with_last(|last| last.get(step).is_none_or(|l| l.saved_under(&identity.digest)));
        let found = self.find(step, identity, saved_here).await;
        let new_in_a_row = self.note(step, identity, matches!(found, Lookup::Hit(_)));
        match found {
            Lookup::Miss(why) if new_in_a_row >= NEW_IN_A_ROW_NOT_SAVED => Lookup::MissNotSaved(format!(
                "not saved: its identity was new in each of its last {new_in_a_row} runs ({why}); it is saved again once a run repeats the one before"
            )),
            found => found,
        }
    }

    /// The entry to reuse, looked for in the workspace's store when `local`, then in the
    /// shared cache.
    async fn find(&self, step: &str, identity: &Identity, local: bool) -> Lookup {
        let (candidates, refused) = if local {
            self.store.candidates(&identity.digest)
        } else {
            Default::default()
        };
        for r in refused {
            self.warn(format!(
                "an entry of step `{step}` was refused and removed ({}): {}; the step runs",
                r.path.display(),
                r.why
            ));
            // Said once: what cannot be trusted is not kept.
            let _ = std::fs::remove_file(&r.path);
        }
        let mut first: Option<String> = None;
        for (entry, path) in candidates {
            match self.usable(&entry).await {
                Ok(()) => {
                    self.store.touch(&path);
                    return Lookup::Hit(Box::new(entry));
                }
                Err(why) => {
                    first.get_or_insert(why);
                }
            }
        }
        if let Some(remote) = self.remote.as_ref().filter(|r| r.reachable()) {
            match self.shared(remote, identity).await {
                Ok(Some(Ok(entry))) => return Lookup::Hit(Box::new(entry)),
                Ok(Some(Err(differs))) => {
                    first.get_or_insert(differs);
                }
                Ok(None) => {}
                Err(remote::Refused::Unreachable(why)) => {
                    self.warn(format!(
                        "the shared cache {} cannot be reached ({why}); this run goes on without it",
                        remote.describe()
                    ));
                }
                Err(remote::Refused::Entry(why)) => {
                    self.warn(format!(
                        "the entry of step `{step}` in the shared cache {} was refused: {why}; the step runs",
                        remote.describe()
                    ));
                }
            }
        }
        Lookup::Miss(first.unwrap_or_else(|| self.nearest(step, identity)))
    }

    /// The shared cache's entry of this identity, checked, brought down and kept locally;
    /// or the first of its inputs that differs here. An error when it was refused.
    async fn shared(
        &self,
        remote: &remote::Remote,
        identity: &Identity,
    ) -> Result<Option<Result<Entry, String>>, remote::Refused> {
        let Some((entry, manifest)) = remote.entry(&identity.digest).await? else {
            return Ok(None);
        };
        if let Err(differs) = self.usable_inputs(&entry).await {
            return Ok(Some(Err(differs)));
        }
        let refused = remote::Refused::Entry;
        remote
            .fetch_effects(&entry, &manifest, &self.workspace)
            .await
            .map_err(refused)?;
        restore::restorable(
            &self.store,
            &self.workspace,
            &entry.effects.files,
            &entry.effects.images,
        )
        .map_err(refused)?;
        self.store
            .save(&entry)
            .map_err(|e| refused(format!("it could not be kept locally: {e}")))?;
        Ok(Some(Ok(entry)))
    }

    /// Whether an entry's inputs are all unchanged and its effects can be restored.
    async fn usable(&self, entry: &Entry) -> Result<(), String> {
        self.usable_inputs(entry).await?;
        restore::restorable(
            &self.store,
            &self.workspace,
            &entry.effects.files,
            &entry.effects.images,
        )
    }

    /// Whether an entry's inputs are all unchanged: host answers asked again, paths and
    /// trees looked at.
    async fn usable_inputs(&self, entry: &Entry) -> Result<(), String> {
        let mut answers = HashMap::new();
        // `source.describe` is not asked again when what it answers from is unchanged.
        let recorded = |name: &str| {
            entry.inputs.iter().find_map(|i| match i {
                Input::Answer { what, digest } if what == name => Some(digest.clone()),
                _ => None,
            })
        };
        if let (Some(from), Some(described)) = (recorded(observe::DESCRIBED_FROM), recorded(observe::DESCRIBED)) {
            let now = observe::answer(&self.workspace, observe::DESCRIBED_FROM, &self.secrets, &self.store).await;
            if now.as_ref() == Some(&from) {
                answers.insert(observe::DESCRIBED.to_string(), Some(described));
            }
            answers.insert(observe::DESCRIBED_FROM.to_string(), now);
        }
        for input in &entry.inputs {
            if let Input::Answer { what, .. } = input
                && !answers.contains_key(what)
            {
                let now = observe::answer(&self.workspace, what, &self.secrets, &self.store).await;
                answers.insert(what.clone(), now);
            }
        }
        let (workspace, learnt) = (self.workspace.clone(), self.learnt.clone());
        let entry = entry.clone();
        tokio::task::spawn_blocking(move || {
            let mut ask = |what: &str| answers.get(what).cloned().flatten();
            learnt
                .with(|known| entry.check(&workspace, &mut ask, known))
                .map_err(|d| d.to_string())
        })
        .await
        .unwrap_or_else(|e| Err(e.to_string()))
    }

    fn warn(&self, message: String) {
        self.events.emit(Event::Notice {
            message: format!("cache: {message}"),
        });
    }

    /// The identities the pipeline's steps last had, read from the store on first use.
    fn with_last<R>(&self, f: impl FnOnce(&BTreeMap<String, Last>) -> R) -> R {
        let mut last = self.last.lock().unwrap();
        f(last.get_or_insert_with(|| self.store.last_identities(&self.pipeline)))
    }

    /// Keep the identity the step has in this run; the runs in a row it missed with a new
    /// one.
    fn note(&self, step: &str, identity: &Identity, hit: bool) -> u32 {
        let (new_in_a_row, saved) = self.with_last(|last| match last.get(step) {
            Some(before) => {
                let new = before.identity.digest != identity.digest;
                let count = if new { before.new_in_a_row.saturating_add(1) } else { 0 };
                (count, before.saved.clone())
            }
            None => (1, Vec::new()),
        });
        let mut now = Last {
            identity: identity.clone(),
            new_in_a_row: if hit { 0 } else { new_in_a_row },
            saved,
        };
        if hit {
            now.note_saved(&identity.digest);
        }
        let new_in_a_row = now.new_in_a_row;
        self.this_run.lock().unwrap().insert(step.to_string(), now);
        new_in_a_row
    }

    /// An entry of the step is being filed under its identity in this run.
    fn note_saved(&self, step: &str, identity: &str) {
        if let Some(now) = self.this_run.lock().unwrap().get_mut(step) {
            now.note_saved(identity);
        }
    }

    /// Why no entry has this identity: what changed since the step's last run.
    fn nearest(&self, step: &str, identity: &Identity) -> String {
        self.with_last(|last| {
            let Some(before) = last
                .get(step)
                .filter(|l| l.identity.digest != identity.digest)
                .map(|l| &l.identity)
            else {
                return "nothing is cached for it yet".into();
            };
            let changed = identity.differences(before);
            if changed.is_empty() {
                "nothing is cached for it yet".into()
            } else {
                changed.join(", ")
            }
        })
    }

    /// Do again what the entry's step did: its files, its images, what it said. Its outputs
    /// are the caller's.
    pub fn replay(&self, step: &str, entry: &Entry, events: &Events) -> Result<(), String> {
        restore::files(&self.store, &self.workspace, &entry.effects.files)
            .map_err(|e| format!("its files could not be restored: {e}"))?;
        restore::images(&self.workspace, &entry.effects.images)?;
        for said in &entry.effects.said {
            if let Some(event) = event_of(step, said) {
                events.emit(event);
            }
        }
        Ok(())
    }

    /// What sees an attempt's host calls for the cache.
    pub fn observer(
        &self,
        grants: Arc<Grants>,
        programs: Arc<crate::sandbox::programs::Programs>,
    ) -> Arc<observe::CallLog> {
        Arc::new(observe::CallLog::new(
            &self.workspace,
            grants,
            self.secrets.clone(),
            programs,
            self.learnt.clone(),
            self.store.clone(),
        ))
    }

    /// Start keeping what `step` says.
    pub fn listen(&self, step: &str) {
        self.said
            .steps
            .lock()
            .unwrap()
            .insert(step.to_string(), Buffer::default());
    }

    /// Save what a successful attempt used and did; why not, when it cannot be cached.
    pub async fn save(self: &Arc<Self>, attempt: Attempt, refused: Refusals) -> Result<(), String> {
        let said = self
            .said
            .steps
            .lock()
            .unwrap()
            .remove(&attempt.step)
            .unwrap_or_default();
        if said.overflow {
            return Err(format!("it said more than {} MiB", SAID_LIMIT >> 20));
        }
        // What the step left is taken now, before a later step can change it; reading the
        // workspace waits on a thread of its own unless there is nothing to read.
        let reads =
            !attempt.seen.written.is_empty() || !attempt.seen.inputs.is_empty() || !attempt.calls.inputs.is_empty();
        let entry = if reads {
            let cache = self.clone();
            tokio::task::spawn_blocking(move || cache.capture(attempt, said.events))
                .await
                .map_err(|e| e.to_string())??
        } else {
            self.capture(attempt, said.events)?
        };
        // Filing it (and sharing it) goes on beside the run; the run's end waits for it.
        if let Some(remote) = self.remote.as_ref().filter(|r| r.writes()) {
            let (cache, entry) = (self.clone(), entry.clone());
            let describe = remote.describe();
            let shared = tokio::spawn(async move {
                let remote = cache.remote.as_ref().expect("shared");
                if let Err(why) = remote.publish(&cache, &entry).await {
                    cache.warn(format!(
                        "step `{}` could not be added to the shared cache {describe}: {why}",
                        entry.step
                    ));
                }
            });
            self.sharing.lock().unwrap().push(shared);
        }
        self.note_saved(&entry.step, &entry.identity);
        let mut filer = self.filer.lock().unwrap();
        let filer = filer.get_or_insert_with(|| Filer::start(self.store.clone(), refused));
        filer.file(entry);
        Ok(())
    }

    /// The entry of a successful attempt: what it used, and what it left, its files kept as
    /// blobs.
    fn capture(&self, attempt: Attempt, said: Vec<Value>) -> Result<Entry, String> {
        let Attempt {
            step,
            identity,
            run_id,
            millis,
            outputs,
            seen,
            calls,
        } = attempt;
        if let Some(why) = seen.unclear.or(calls.refused) {
            return Err(why);
        }
        let mut left: BTreeMap<String, Found> = BTreeMap::new();
        for path in &seen.written {
            left.insert(path.clone(), wharf_cache::found::probe(&self.workspace, path, false));
        }
        for (grant, before) in &calls.trees_before {
            let after = self
                .learnt
                .with(|known| wharf_cache::tree::walk(&self.workspace, grant, known))
                .map_err(|e| format!("what its programs wrote cannot be read: {e}"))?;
            for (path, found) in before.changes(&after) {
                let full = match (grant.as_str(), path.as_str()) {
                    ("", p) => p.to_string(),
                    (g, "") => g.to_string(),
                    (g, p) => format!("{g}/{p}"),
                };
                left.insert(full, found);
            }
        }
        let mut files = Vec::new();
        for (path, found) in left {
            if crate::journal::snapshot::is_wharf_state(Path::new(&path)) {
                continue;
            }
            match &found {
                Found::File { sha256, .. } => {
                    let real = crate::beneath::existing(&self.workspace, &path).map_err(|e| e.to_string())?;
                    let file = std::fs::File::open(&real).map_err(|e| format!("`{path}`: {e}"))?;
                    let kept = self.store.put_blob(file).map_err(|e| format!("`{path}`: {e}"))?;
                    if &kept != sha256 {
                        return Err(format!("`{path}` changed while it was saved"));
                    }
                }
                Found::Other | Found::Error { .. } => {
                    return Err(format!(
                        "it left `{path}` {}, which cannot be restored",
                        found.describe()
                    ));
                }
                _ => {}
            }
            files.push((path, found));
        }
        let mut images = calls.images;
        if !images.is_empty() {
            let oci = wharf_oci::layout::Store::open(&crate::capabilities::images::store_dir(&self.workspace))
                .map_err(|e| e.to_string())?;
            for image in &mut images {
                image.size = oci
                    .blob_path(&image.digest)
                    .and_then(std::fs::metadata)
                    .map_err(|e| format!("image {}: {e}", image.name))?
                    .len();
            }
        }
        let mut inputs = seen.inputs;
        for input in calls.inputs {
            if !inputs.contains(&input) {
                inputs.push(input);
            }
        }
        // What it read must still be what it found: an input changed by someone else while
        // the step ran would file its result under the wrong key. What the step wrote itself
        // is left out.
        let changed: Vec<&str> = seen
            .written
            .iter()
            .map(String::as_str)
            .chain(calls.trees_before.iter().map(|(grant, _)| grant.as_str()))
            .collect();
        for input in &inputs {
            let path = match input {
                Input::Path { path, .. } | Input::Replaced { path } | Input::Listing { path, .. } => path.as_str(),
                Input::Tree { path, .. } if path == "." => "",
                Input::Tree { path, .. } => path.as_str(),
                Input::Answer { .. } => continue,
                Input::HostTree { .. } | Input::Toolchain { .. } | Input::HostFile { .. } => "/",
            };
            if path != "/" && changed.iter().any(|w| overlaps(path, w)) {
                continue;
            }
            self.learnt
                .with(|known| wharf_cache::entry::check(input, &self.workspace, &mut |_| None, known))
                .map_err(|d| format!("{d} by the time it ended: it changed while the step ran"))?;
        }
        let entry = Entry {
            format: FORMAT,
            identity_parts: identity.parts(),
            identity: identity.digest,
            step,
            run_id,
            created: std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(0, |d| d.as_secs()),
            millis,
            inputs,
            effects: Effects {
                outputs,
                files,
                said,
                images,
            },
        };
        Ok(entry)
    }

    /// The run is over: keep the digests learnt, and prune the store when what the run
    /// added took it past its bound.
    pub async fn finish(&self) {
        let sharing: Vec<_> = std::mem::take(&mut *self.sharing.lock().unwrap());
        for shared in sharing {
            let _ = shared.await;
        }
        let filer = self.filer.lock().unwrap().take();
        if let Some(filer) = filer {
            let _ = tokio::task::spawn_blocking(move || filer.finish()).await;
        }
        self.learnt.save();
        // Written only when a step's identity or its count changed (not for a run of hits).
        let this_run = std::mem::take(&mut *self.this_run.lock().unwrap());
        if let Some(last) = &mut *self.last.lock().unwrap()
            && this_run.iter().any(|(step, now)| last.get(step) != Some(now))
        {
            last.extend(this_run);
            if let Err(e) = self.store.remember(&self.pipeline, last) {
                tracing::warn!("cache: cannot record the steps' identities: {e}");
            }
        }
        if let Err(e) = self.store.settle(wharf_cache::store::DEFAULT_MAX_BYTES) {
            tracing::warn!("cache: cannot prune {}: {e}", self.store.dir().display());
        }
    }
}

/// Whether one workspace path is the other or lies beneath it (`""` is the workspace).
fn overlaps(a: &str, b: &str) -> bool {
    let under = |inner: &str, outer: &str| {
        outer.is_empty() || inner == outer || inner.strip_prefix(outer).is_some_and(|rest| rest.starts_with('/'))
    };
    under(a, b) || under(b, a)
}

/// What the run knows of a step before it runs it: what its identity is made of.
pub struct StepFacts<'a> {
    pub decl: &'a StepDecl,
    pub loaded: &'a LoadedStep,
    pub params: &'a StepParams,
    pub grants: &'a Grants,
    pub limits: &'a crate::engine::limits::StepLimits,
    /// The variables passed to the pipeline.
    pub passed: &'a BTreeMap<String, String>,
    /// How programs are confined (`--sandbox`).
    pub confinement: &'a str,
}

/// Writes entries on a thread of its own while the run goes on: a run waits for it only
/// at its end. It records the identities the steps were saved with, once.
struct Filer {
    entries: std::sync::mpsc::Sender<Entry>,
    thread: std::thread::JoinHandle<()>,
}

impl Filer {
    fn start(store: Store, refused: Refusals) -> Filer {
        let (entries, received) = std::sync::mpsc::channel::<Entry>();
        let thread = std::thread::spawn(move || {
            for entry in received {
                if let Err(e) = store.save(&entry) {
                    refused(&entry.step, format!("the entry could not be written: {e}"));
                }
            }
        });
        Filer { entries, thread }
    }

    fn file(&self, entry: Entry) {
        let _ = self.entries.send(entry);
    }

    /// Wait for every entry sent to be written.
    fn finish(self) {
        drop(self.entries);
        let _ = self.thread.join();
    }
}

/// Where a step's reason not to be cached goes when it is found after the step ended.
pub type Refusals = Arc<dyn Fn(&str, String) + Send + Sync>;

/// A successful attempt, as the cache saves it.
pub struct Attempt {
    pub step: String,
    pub identity: Identity,
    pub run_id: String,
    pub millis: u64,
    pub outputs: Vec<(String, String)>,
    pub seen: Seen,
    pub calls: observe::Calls,
}

/// What the steps being cached say (log lines, annotations, test results, measurements,
/// where each progress bar ended), kept per step from its attempt's start.
#[derive(Default)]
struct Said {
    steps: Mutex<HashMap<String, Buffer>>,
}

#[derive(Default)]
struct Buffer {
    events: Vec<Value>,
    bytes: usize,
    overflow: bool,
}

impl Sink for Said {
    fn event(&self, event: &Event) {
        let step = match event {
            Event::StepStarted { step, .. } => {
                if let Some(buffer) = self.steps.lock().unwrap().get_mut(step) {
                    *buffer = Buffer::default();
                }
                return;
            }
            Event::Log { step, .. }
            | Event::Annotation { step, .. }
            | Event::TestCase { step, .. }
            | Event::Measurement { step, .. }
            | Event::Progress { step, .. } => step,
            _ => return,
        };
        let mut steps = self.steps.lock().unwrap();
        let Some(buffer) = steps.get_mut(step) else { return };
        if buffer.overflow {
            return;
        }
        let Ok(value) = serde_json::to_value(event) else { return };
        // Of a progress bar, where it ended.
        if let Event::Progress { label, .. } = event
            && let Some(kept) = buffer
                .events
                .iter_mut()
                .find(|e| e["event"] == "progress" && e["label"] == label.as_str())
        {
            *kept = value;
            return;
        }
        buffer.bytes += value.to_string().len();
        if buffer.bytes > SAID_LIMIT {
            buffer.overflow = true;
            buffer.events.clear();
            return;
        }
        buffer.events.push(value);
    }
}

/// A kept event of `step`, as the run emits it again.
fn event_of(step: &str, value: &Value) -> Option<Event> {
    let text = |k: &str| value.get(k).and_then(Value::as_str).map(String::from);
    fn parse<T: serde::de::DeserializeOwned>(value: &Value, k: &str) -> Option<T> {
        value.get(k).cloned().and_then(|v| serde_json::from_value(v).ok())
    }
    let step = step.to_string();
    match value.get("event")?.as_str()? {
        "log" => Some(Event::Log {
            step,
            level: parse(value, "level")?,
            stream: parse::<Stream>(value, "stream")?,
            message: text("message")?,
        }),
        "annotation" => Some(Event::Annotation {
            step,
            level: parse::<Level>(value, "level")?,
            title: text("title"),
            message: text("message")?,
            file: text("file"),
            line: parse(value, "line"),
            column: parse(value, "column"),
        }),
        "progress" => Some(Event::Progress {
            step,
            label: text("label")?,
            done: value.get("done")?.as_u64()?,
            total: value.get("total").and_then(Value::as_u64),
        }),
        "test-case" => Some(Event::TestCase {
            step,
            suite: text("suite")?,
            name: text("name")?,
            classname: text("classname"),
            duration: std::time::Duration::from_secs_f64(
                value.get("duration_ms").and_then(Value::as_f64).unwrap_or(0.0).max(0.0) / 1e3,
            ),
            outcome: parse::<TestResult>(value, "outcome")?,
            message: text("message"),
            kind: text("type"),
            output: text("output"),
            stdout: text("stdout"),
            stderr: text("stderr"),
        }),
        "measurement" => Some(Event::Measurement {
            step,
            measurement: serde_json::from_value(value.clone()).ok()?,
        }),
        _ => None,
    }
}
