//! Where entries live: `.wharf/cache` in the workspace.
//!
//! ```text
//! key                      32 random bytes, made once, readable by the workspace's owner only
//! entries/IDENTITY/DIGEST  an entry: a line with its HMAC under the key, then its JSON
//! steps/PIPELINE.json      by pipeline (the digest of its name), the identity each of its
//!                          steps last had, part by part (the parts its run shared kept
//!                          once): what changed when no entry has a step's identity; and
//!                          the identities its entries were saved under, so that a miss
//!                          does not look in `entries/`
//! oci/                     files the entries restore, by digest, as an OCI image layout
//!                          (`oci/blobs/sha256/HEX`), so a shared cache moves them as they are
//! known.json               digests of files by inode and times (see `tree`)
//! ```
//!
//! Everything read back is untrusted: an entry is read within a size limit, its HMAC checked
//! before it is parsed, and a blob's digest checked as it is copied out. Whoever cannot read
//! the key cannot write an entry this workspace accepts, and an entry copied from another
//! workspace carries another key's HMAC: refused.

use crate::entry::{Entry, FORMAT};
use crate::identity::{Identity, Parts, Shared};
use crate::tree::Known;
use hmac::Mac as _;
use std::collections::BTreeMap;
use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::sync::Arc;

type HmacSha256 = hmac::Hmac<sha2::Sha256>;

/// Largest entry file read back.
pub const ENTRY_LIMIT: u64 = 32 << 20;
/// Entries kept per identity; older ones go first.
const PER_IDENTITY: usize = 8;
/// Largest digest memory read back.
const KNOWN_LIMIT: u64 = 256 << 20;
/// A cache grows to this many bytes before a run prunes it (`wharf cache prune --max-size`
/// prunes to any size).
pub const DEFAULT_MAX_BYTES: u64 = 2 << 30;

const MAGIC: &str = "wharf-cache-entry";
/// Largest record of a pipeline's steps read back.
const STEPS_LIMIT: u64 = 64 << 20;

/// The identity a step last had.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Last {
    pub identity: Identity,
    /// Runs in a row in which the step missed with an identity its run before did not have.
    pub new_in_a_row: u32,
    /// The identities the step's entries were saved under by its pipeline's runs, newest
    /// first, at most [`SAVED_KEPT`], each by its first [`SAVED_PREFIX`] hex digits: a step
    /// whose identity is not among them is not looked for in `entries/`. A record that lost
    /// one (two runs at once, a crash) costs a miss, never a wrong hit: an entry is still
    /// accepted only by its inputs.
    pub saved: Vec<String>,
}

/// Identities kept in a step's [`Last::saved`].
const SAVED_KEPT: usize = 8;
/// Hex digits of an identity kept in [`Last::saved`]: enough to tell a step's identities
/// apart; one that matched another's would only cost a look in `entries/`.
const SAVED_PREFIX: usize = 16;

impl Last {
    /// Whether entries of the step may be filed under `identity`.
    pub fn saved_under(&self, identity: &str) -> bool {
        self.saved.iter().any(|s| identity.starts_with(s.as_str()))
    }

    /// Entries of the step are filed under `identity`: it goes first.
    pub fn note_saved(&mut self, identity: &str) {
        let prefix = identity.get(..SAVED_PREFIX).unwrap_or(identity);
        self.saved.retain(|s| s != prefix);
        self.saved.insert(0, prefix.to_string());
        self.saved.truncate(SAVED_KEPT);
    }
}

/// `steps/PIPELINE.json`: the parts its steps' runs shared, once each, and each step's own.
#[derive(serde::Deserialize)]
struct StepsFile {
    shared: BTreeMap<String, Parts>,
    steps: BTreeMap<String, StepLine>,
}

#[derive(serde::Deserialize)]
struct StepLine {
    shared: String,
    own: Parts,
    new_in_a_row: u32,
    saved: Vec<String>,
}

/// [`StepsFile`] as written, borrowing what the run holds.
#[derive(serde::Serialize)]
struct StepsOut<'a> {
    shared: BTreeMap<&'a str, &'a Parts>,
    steps: BTreeMap<&'a str, StepOut<'a>>,
}

#[derive(serde::Serialize)]
struct StepOut<'a> {
    shared: &'a str,
    own: &'a Parts,
    new_in_a_row: u32,
    saved: &'a [String],
}

#[derive(Clone)]
pub struct Store {
    dir: PathBuf,
    key: Vec<u8>,
    /// Bytes this process added (entries and new blobs), not yet counted in `size`.
    added: std::sync::Arc<std::sync::atomic::AtomicU64>,
    /// `entries/`, opened when first looked in.
    entries: Arc<std::sync::OnceLock<Option<rustix::fd::OwnedFd>>>,
}

/// An entry that was found but not accepted as an entry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Refused {
    pub path: PathBuf,
    pub why: String,
}

#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Pruned {
    pub entries: usize,
    pub blobs: usize,
    pub bytes: u64,
    pub kept_bytes: u64,
}

impl Store {
    /// The store at `dir`, made (with its key) when absent.
    pub fn open(dir: &Path) -> std::io::Result<Store> {
        for sub in ["entries", "oci/blobs/sha256"] {
            std::fs::create_dir_all(dir.join(sub))?;
        }
        let key = read_or_make_key(&dir.join("key"))?;
        Ok(Store {
            dir: dir.to_path_buf(),
            key: key.to_vec(),
            added: Default::default(),
            entries: Default::default(),
        })
    }

    /// The store at `dir` as another key signs and checks entries: a shared cache's.
    pub fn with_key(dir: &Path, key: &[u8]) -> Store {
        Store {
            dir: dir.to_path_buf(),
            key: key.to_vec(),
            added: Default::default(),
            entries: Default::default(),
        }
    }

    /// The OCI image layout the blobs are kept in.
    pub fn blob_layout(&self) -> PathBuf {
        self.dir.join("oci")
    }

    fn blobs(&self) -> PathBuf {
        self.dir.join("oci/blobs/sha256")
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// HMAC-SHA256 of `bytes` under the store's key, in hex: how a secret's value is
    /// compared without being kept.
    pub fn keyed(&self, bytes: &[u8]) -> String {
        let mut mac = HmacSha256::new_from_slice(&self.key).expect("any key length");
        mac.update(bytes);
        hex::encode(mac.finalize().into_bytes())
    }

    fn identity_dir(&self, identity: &str) -> Option<PathBuf> {
        is_hex(identity).then(|| self.dir.join("entries").join(identity))
    }

    /// The entries filed under `identity`, newest first; those that are damaged, forged or
    /// of another format are refused, each with why.
    pub fn candidates(&self, identity: &str) -> (Vec<(Entry, PathBuf)>, Vec<Refused>) {
        let (mut found, mut refused) = (Vec::new(), Vec::new());
        let Some(dir) = self.identity_dir(identity) else {
            return (found, refused);
        };
        if !self.may_have(identity) {
            return (found, refused);
        }
        let Ok(listing) = std::fs::read_dir(&dir) else {
            return (found, refused);
        };
        let mut files: Vec<(std::time::SystemTime, PathBuf)> = listing
            .flatten()
            .filter(|e| !e.file_name().to_string_lossy().starts_with('.'))
            .map(|e| {
                let time = e.metadata().and_then(|m| m.modified()).unwrap_or(std::time::UNIX_EPOCH);
                (time, e.path())
            })
            .collect();
        files.sort_by_key(|f| std::cmp::Reverse(f.0));
        for (_, path) in files.into_iter().take(PER_IDENTITY * 2) {
            match self.read_entry(&path) {
                Ok(entry) if entry.identity == identity => found.push((entry, path)),
                Ok(_) => refused.push(Refused {
                    path,
                    why: "it is filed under another identity".into(),
                }),
                Err(why) => refused.push(Refused { path, why }),
            }
        }
        (found, refused)
    }

    /// Whether entries may be filed under `identity` (a digest): one lookup in `entries/`
    /// through a handle held from the first, since most steps of most runs have none.
    fn may_have(&self, identity: &str) -> bool {
        use rustix::fs::{AtFlags, Mode, OFlags};
        let entries = self.entries.get_or_init(|| {
            let flags = OFlags::RDONLY | OFlags::DIRECTORY | OFlags::CLOEXEC;
            rustix::fs::open(self.dir.join("entries"), flags, Mode::empty()).ok()
        });
        match entries {
            Some(dir) => !matches!(
                rustix::fs::statat(dir, identity, AtFlags::SYMLINK_NOFOLLOW),
                Err(rustix::io::Errno::NOENT)
            ),
            None => true,
        }
    }

    /// One entry file, checked: size, HMAC, format.
    pub fn read_entry(&self, path: &Path) -> Result<Entry, String> {
        let bytes = wharf_fs::bounded::read(path, ENTRY_LIMIT).map_err(|e| e.to_string())?;
        let newline = bytes.iter().position(|&b| b == b'\n').ok_or("it has no header line")?;
        let header = std::str::from_utf8(&bytes[..newline]).map_err(|_| "its header is not text")?;
        let body = &bytes[newline + 1..];
        let mac = match header.split(' ').collect::<Vec<_>>()[..] {
            [MAGIC, version, mac] if version == FORMAT.to_string() => mac,
            [MAGIC, version, _] => return Err(format!("it is of format {version}, not {FORMAT}")),
            _ => return Err("it is not a wharf cache entry".into()),
        };
        let mac = hex::decode(mac).map_err(|_| "its signature is not hex")?;
        let mut check = HmacSha256::new_from_slice(&self.key).expect("any key length");
        check.update(body);
        check.verify_slice(&mac).map_err(
            |_| "its signature does not match this workspace's cache key (damaged, or written by someone else)",
        )?;
        let entry: Entry = serde_json::from_slice(body).map_err(|e| format!("it does not parse: {e}"))?;
        if entry.format != FORMAT {
            return Err(format!("it is of format {}, not {FORMAT}", entry.format));
        }
        Ok(entry)
    }

    /// An entry as its file holds it: a line with its HMAC under the key, then its JSON.
    pub fn signed(&self, entry: &Entry) -> std::io::Result<Vec<u8>> {
        let body = serde_json::to_vec(entry).map_err(std::io::Error::other)?;
        let mut mac = HmacSha256::new_from_slice(&self.key).expect("any key length");
        mac.update(&body);
        let mut bytes = format!("{MAGIC} {FORMAT} {}\n", hex::encode(mac.finalize().into_bytes())).into_bytes();
        bytes.extend_from_slice(&body);
        Ok(bytes)
    }

    /// File an entry, signed with the key; keeps the newest few per identity.
    pub fn save(&self, entry: &Entry) -> std::io::Result<PathBuf> {
        let dir = self
            .identity_dir(&entry.identity)
            .ok_or_else(|| std::io::Error::other("the identity is not a digest"))?;
        std::fs::create_dir_all(&dir)?;
        let bytes = self.signed(entry)?;
        let name = crate::sha256_hex(&bytes);
        let mut file = tempfile::Builder::new().prefix(".").tempfile_in(&dir)?;
        file.write_all(&bytes)?;
        let path = dir.join(&name);
        file.persist(&path).map_err(|e| e.error)?;
        self.add(bytes.len() as u64);
        let count = std::fs::read_dir(&dir)?.count();
        if count > PER_IDENTITY {
            let (kept, _) = self.candidates(&entry.identity);
            for (_, old) in kept.into_iter().skip(PER_IDENTITY) {
                let _ = std::fs::remove_file(old);
            }
        }
        Ok(path)
    }

    /// The identity each step of `pipeline` had in the last run that ran it, by step id.
    /// An unreadable record is as none: it only explains misses.
    pub fn last_identities(&self, pipeline: &str) -> BTreeMap<String, Last> {
        let path = self.dir.join(STEPS_DIR).join(steps_record(pipeline));
        let Some(file) = wharf_fs::bounded::read(&path, STEPS_LIMIT)
            .ok()
            .and_then(|bytes| serde_json::from_slice::<StepsFile>(&bytes).ok())
        else {
            return BTreeMap::new();
        };
        let shared: BTreeMap<String, Arc<Shared>> = file
            .shared
            .into_iter()
            .map(|(digest, parts)| (digest, Arc::new(Shared::new(parts))))
            .collect();
        file.steps
            .into_iter()
            .filter_map(|(step, line)| {
                let identity = Identity::new(shared.get(&line.shared)?.clone(), line.own);
                let mut saved = line.saved;
                saved.truncate(SAVED_KEPT);
                Some((
                    step,
                    Last {
                        identity,
                        new_in_a_row: line.new_in_a_row,
                        saved,
                    },
                ))
            })
            .collect()
    }

    /// Record the identities the steps of `pipeline` had in a run, once per run: `all` is
    /// what [`Store::last_identities`] read at its start with the run's own put over it.
    /// Each pipeline has a record of its own: two pipelines with a step of the same id do
    /// not take each other's identity for the step's last, and a run reads and writes
    /// only its own pipeline's steps.
    pub fn remember(&self, pipeline: &str, all: &BTreeMap<String, Last>) -> std::io::Result<()> {
        let out = StepsOut {
            shared: all
                .values()
                .map(|l| (l.identity.shared.digest.as_str(), &l.identity.shared.parts))
                .collect(),
            steps: all
                .iter()
                .map(|(step, l)| {
                    let line = StepOut {
                        shared: &l.identity.shared.digest,
                        own: &l.identity.own,
                        new_in_a_row: l.new_in_a_row,
                        saved: &l.saved,
                    };
                    (step.as_str(), line)
                })
                .collect(),
        };
        let bytes = serde_json::to_vec(&out).map_err(std::io::Error::other)?;
        let (dir, name) = (self.dir.join(STEPS_DIR), steps_record(pipeline));
        match write_over(&dir, &name, &bytes) {
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                std::fs::create_dir_all(&dir)?;
                // The one record of all pipelines that came before, of no use now.
                let _ = std::fs::remove_file(self.dir.join("steps.json"));
                write_over(&dir, &name, &bytes)
            }
            written => written,
        }
    }

    /// Mark an entry as used: pruning takes the least recently used first.
    pub fn touch(&self, path: &Path) {
        if let Ok(file) = std::fs::File::options().append(true).open(path) {
            let _ = file.set_modified(std::time::SystemTime::now());
        }
    }

    /// Keep `file`'s content as a blob; its sha256.
    pub fn put_blob(&self, file: impl Read) -> std::io::Result<String> {
        let blobs = self.blobs();
        let mut temp = tempfile::Builder::new().prefix(".").tempfile_in(&blobs)?;
        let sha = crate::copy_hashing(file, &mut temp)?;
        let path = blobs.join(&sha);
        if !path.exists() {
            let size = temp.as_file().metadata()?.len();
            temp.persist(&path).map_err(|e| e.error)?;
            self.add(size);
        }
        Ok(sha)
    }

    pub fn has_blob(&self, sha256: &str) -> bool {
        is_hex(sha256) && self.blobs().join(sha256).is_file()
    }

    /// Copy blob `sha256` into `out`, checking its digest on the way: a damaged blob is an
    /// error, and `out` must then be thrown away.
    pub fn copy_blob(&self, sha256: &str, out: &mut impl Write) -> std::io::Result<()> {
        if !is_hex(sha256) {
            return Err(std::io::Error::other("not a digest"));
        }
        let file = std::fs::File::open(self.blobs().join(sha256))?;
        if crate::copy_hashing(file, out)? != sha256 {
            return Err(std::io::Error::other(format!("blob {sha256} is damaged")));
        }
        Ok(())
    }

    /// The digests of files remembered from earlier runs.
    pub fn known(&self) -> Known {
        wharf_fs::bounded::read(&self.dir.join("known.json"), KNOWN_LIMIT)
            .ok()
            .and_then(|b| serde_json::from_slice(&b).ok())
            .unwrap_or_default()
    }

    pub fn save_known(&self, known: &Known) {
        if !known.changed() {
            return;
        }
        // Lost or torn, it costs the next run only hashing again.
        if let Ok(bytes) = serde_json::to_vec(known) {
            let _ = write_over(&self.dir, "known.json", &bytes);
        }
    }

    /// Remove the least recently used entries until entries and blobs take at most
    /// `max_bytes`, and every blob no entry names; damaged and forged entries go too.
    pub fn prune(&self, max_bytes: u64) -> std::io::Result<Pruned> {
        let mut pruned = Pruned::default();
        let size = |p: &Path| std::fs::symlink_metadata(p).map_or(0, |m| m.len());
        let mut entries: Vec<(std::time::SystemTime, PathBuf, Option<Entry>)> = Vec::new();
        for identity in std::fs::read_dir(self.dir.join("entries"))?.flatten() {
            for file in std::fs::read_dir(identity.path()).into_iter().flatten().flatten() {
                let time = file
                    .metadata()
                    .and_then(|m| m.modified())
                    .unwrap_or(std::time::UNIX_EPOCH);
                entries.push((time, file.path(), self.read_entry(&file.path()).ok()));
            }
        }
        entries.sort_by_key(|e| std::cmp::Reverse(e.0));
        let blob_size = |sha: &str| size(&self.blobs().join(sha));
        let mut kept_blobs = std::collections::HashSet::new();
        let mut total = 0u64;
        for (_, path, entry) in entries {
            let Some(entry) = entry else {
                pruned.bytes += size(&path);
                std::fs::remove_file(&path)?;
                pruned.entries += 1;
                continue;
            };
            let new_blobs: Vec<&str> = blobs_of(&entry).filter(|sha| !kept_blobs.contains(*sha)).collect();
            let cost = size(&path) + new_blobs.iter().map(|s| blob_size(s)).sum::<u64>();
            if total + cost > max_bytes {
                pruned.bytes += size(&path);
                std::fs::remove_file(&path)?;
                pruned.entries += 1;
                continue;
            }
            total += cost;
            kept_blobs.extend(new_blobs.into_iter().map(String::from));
        }
        for blob in std::fs::read_dir(self.blobs())?.flatten() {
            let name = blob.file_name().to_string_lossy().into_owned();
            if !kept_blobs.contains(&name) {
                pruned.bytes += size(&blob.path());
                std::fs::remove_file(blob.path())?;
                pruned.blobs += 1;
            }
        }
        for identity in std::fs::read_dir(self.dir.join("entries"))?.flatten() {
            let _ = std::fs::remove_dir(identity.path());
        }
        pruned.kept_bytes = total;
        std::fs::write(self.dir.join("size"), total.to_string())?;
        Ok(pruned)
    }

    fn add(&self, bytes: u64) {
        self.added.fetch_add(bytes, std::sync::atomic::Ordering::Relaxed);
    }

    /// Count what this process added, and prune to `max_bytes` when the store outgrew it.
    /// The total is kept in a file, so a run does not walk the store to know it; a total
    /// two runs raced on is put right by the next prune.
    pub fn settle(&self, max_bytes: u64) -> std::io::Result<Option<Pruned>> {
        let added = self.added.swap(0, std::sync::atomic::Ordering::Relaxed);
        if added == 0 {
            return Ok(None);
        }
        let counted = self.dir.join("size");
        let known = wharf_fs::bounded::read_text(&counted, 32)
            .ok()
            .and_then(|t| t.trim().parse::<u64>().ok());
        let total = known.map_or_else(|| self.size(), |k| k + added);
        if total <= max_bytes {
            std::fs::write(&counted, total.to_string())?;
            return Ok(None);
        }
        self.prune(max_bytes).map(Some)
    }

    /// Bytes the entries and blobs take.
    pub fn size(&self) -> u64 {
        let mut total = 0;
        for sub in ["entries", "oci/blobs"] {
            let mut stack = vec![self.dir.join(sub)];
            while let Some(dir) = stack.pop() {
                for e in std::fs::read_dir(&dir).into_iter().flatten().flatten() {
                    match e.metadata() {
                        Ok(m) if m.is_dir() => stack.push(e.path()),
                        Ok(m) => total += m.len(),
                        Err(_) => {}
                    }
                }
            }
        }
        total
    }
}

/// Make `bytes` the content of `dir/name`, a record runs rewrite (`steps/PIPELINE.json`,
/// `known.json`): in place when it is a regular file with no other name, since on ext4 a
/// file renamed over another is written out at once (`auto_da_alloc`), half a millisecond
/// a run. Anything else there (a symlink, a hard link to a file elsewhere, a pipe) is
/// replaced, never written through. Two runs writing at once, or a crash, can leave it
/// torn: it must be a record whose loss costs little, and that reads as none when it does
/// not parse.
fn write_over(dir: &Path, name: &str, bytes: &[u8]) -> std::io::Result<()> {
    use rustix::fs::{Mode, OFlags};
    use std::os::unix::fs::{FileExt as _, MetadataExt as _};
    let path = dir.join(name);
    let flags = OFlags::WRONLY | OFlags::NOFOLLOW | OFlags::NONBLOCK | OFlags::CLOEXEC;
    if let Ok(fd) = rustix::fs::open(&path, flags, Mode::empty()) {
        let file = std::fs::File::from(fd);
        let meta = file.metadata()?;
        if meta.is_file() && meta.nlink() == 1 {
            file.write_all_at(bytes, 0)?;
            return file.set_len(bytes.len() as u64);
        }
    }
    let mut temp = tempfile::Builder::new().prefix(".").tempfile_in(dir)?;
    // One write: the temporary file is not buffered.
    temp.write_all(bytes)?;
    temp.persist(&path).map_err(|e| e.error)?;
    Ok(())
}

/// Where the records of pipelines' steps are, in the store.
const STEPS_DIR: &str = "steps";

/// The file name of the record of `pipeline`'s steps, in [`STEPS_DIR`]: the digest of the
/// pipeline's name, whatever the name holds.
fn steps_record(pipeline: &str) -> String {
    format!("{}.json", crate::sha256_hex(pipeline.as_bytes()))
}

fn blobs_of(entry: &Entry) -> impl Iterator<Item = &str> {
    entry.effects.files.iter().filter_map(|(_, found)| match found {
        crate::Found::File { sha256, .. } => Some(sha256.as_str()),
        _ => None,
    })
}

fn is_hex(s: &str) -> bool {
    s.len() == 64 && s.bytes().all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
}

fn read_or_make_key(path: &Path) -> std::io::Result<[u8; 32]> {
    use std::os::unix::fs::OpenOptionsExt as _;
    match std::fs::File::options()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)
    {
        Ok(mut file) => {
            let mut key = [0u8; 32];
            std::fs::File::open("/dev/urandom")?.read_exact(&mut key)?;
            file.write_all(hex::encode(key).as_bytes())?;
            file.sync_all()?;
            Ok(key)
        }
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {
            let text = wharf_fs::bounded::read_text(path, 128).map_err(std::io::Error::other)?;
            let bytes = hex::decode(text.trim()).map_err(|_| std::io::Error::other("the cache key is not hex"))?;
            bytes
                .try_into()
                .map_err(|_| std::io::Error::other(format!("{} is not a 32-byte key", path.display())))
        }
        Err(e) => Err(e),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::entry::{Effects, Input};
    use crate::found::Found;

    fn entry(step: &str, identity: &str, blob: &str) -> Entry {
        Entry {
            format: FORMAT,
            identity: identity.into(),
            identity_parts: Default::default(),
            step: step.into(),
            run_id: "r1".into(),
            created: 1,
            millis: 10,
            inputs: vec![Input::Answer {
                what: "x".into(),
                digest: "y".into(),
            }],
            effects: Effects {
                files: vec![(
                    "out.txt".into(),
                    Found::File {
                        sha256: blob.into(),
                        executable: false,
                    },
                )],
                ..Effects::default()
            },
        }
    }

    #[test]
    fn entries_are_accepted_only_as_this_workspace_wrote_them() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(&dir.path().join("cache")).unwrap();
        let blob = store.put_blob(&b"content"[..]).unwrap();
        let id = crate::sha256_hex(b"identity");
        let path = store.save(&entry("build", &id, &blob)).unwrap();
        let (found, refused) = store.candidates(&id);
        assert_eq!((found.len(), refused.len()), (1, 0));
        let shared = Arc::new(Shared::new(BTreeMap::from([("pipeline".into(), "p".into())])));
        let last = Last {
            identity: Identity::new(shared, BTreeMap::from([("component".into(), "c".into())])),
            new_in_a_row: 2,
            saved: vec![id[..16].to_string()],
        };
        // The one record of all pipelines an earlier wharf kept goes with the first of the
        // records by pipeline.
        let legacy = store.dir().join("steps.json");
        std::fs::write(&legacy, "{}").unwrap();
        store
            .remember("p", &BTreeMap::from([("build".to_string(), last.clone())]))
            .unwrap();
        assert!(!legacy.exists());
        assert_eq!(store.last_identities("p").get("build"), Some(&last));
        // Another pipeline's step of the same id is another step.
        assert!(store.last_identities("q").is_empty());
        let other = Last {
            new_in_a_row: 4,
            ..last.clone()
        };
        store
            .remember("q", &BTreeMap::from([("build".to_string(), other.clone())]))
            .unwrap();
        assert_eq!(store.last_identities("p").get("build"), Some(&last));
        assert_eq!(store.last_identities("q").get("build"), Some(&other));
        // The record only explains misses: one of an older layout, or naming shared parts
        // it does not hold, is as none.
        let steps = store.dir().join(STEPS_DIR).join(steps_record("p"));
        let older = format!(r#"{{"build":{{"identity":"{id}","parts":{{}},"new_in_a_row":2}}}}"#);
        std::fs::write(&steps, older).unwrap();
        assert!(store.last_identities("p").is_empty());
        std::fs::write(
            &steps,
            r#"{"shared":{},"steps":{"build":{"shared":"x","own":{},"new_in_a_row":1,"saved":[]}}}"#,
        )
        .unwrap();
        assert!(store.last_identities("p").is_empty());

        // Tampered: one byte of the body changed.
        let text = std::fs::read_to_string(&path).unwrap();
        std::fs::write(&path, text.replace("\"millis\":10", "\"millis\":11")).unwrap();
        let (found, refused) = store.candidates(&id);
        assert!(found.is_empty());
        assert!(refused[0].why.contains("signature does not match"), "{refused:?}");

        // Signed by another workspace's key.
        let other = Store::open(&dir.path().join("other")).unwrap();
        let foreign = other.save(&entry("build", &id, &blob)).unwrap();
        std::fs::copy(&foreign, &path).unwrap();
        assert!(store.candidates(&id).0.is_empty());

        // Not an entry at all, or too big to read.
        std::fs::write(&path, "garbage").unwrap();
        assert!(!store.candidates(&id).1.is_empty());
        let big = std::fs::File::create(&path).unwrap();
        big.set_len(ENTRY_LIMIT + 1).unwrap();
        assert!(store.candidates(&id).0.is_empty());

        // A damaged blob is found out while copied.
        let mut out = Vec::new();
        store.copy_blob(&blob, &mut out).unwrap();
        assert_eq!(out, b"content");
        std::fs::write(store.blob_layout().join("blobs/sha256").join(&blob), "changed").unwrap();
        assert!(store.copy_blob(&blob, &mut Vec::new()).is_err());
        assert!(store.copy_blob("../key", &mut Vec::new()).is_err());
    }

    #[test]
    fn the_steps_record_is_rewritten_in_place_and_never_through_a_link() {
        use std::os::unix::fs::MetadataExt as _;
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(&dir.path().join("cache")).unwrap();
        let steps = store.dir().join(STEPS_DIR).join(steps_record("p"));
        let shared = Arc::new(Shared::new(BTreeMap::new()));
        let record = |n: usize| -> BTreeMap<String, Last> {
            (0..n)
                .map(|i| {
                    let own = BTreeMap::from([("step id".to_string(), format!("s{i}"))]);
                    let identity = Identity::new(shared.clone(), own);
                    (
                        format!("s{i}"),
                        Last {
                            identity,
                            new_in_a_row: 1,
                            saved: Vec::new(),
                        },
                    )
                })
                .collect()
        };
        store.remember("p", &record(5)).unwrap();
        let inode = std::fs::metadata(&steps).unwrap().ino();
        // Shorter the second time: nothing of the first is left after it.
        store.remember("p", &record(2)).unwrap();
        assert_eq!(std::fs::metadata(&steps).unwrap().ino(), inode, "rewritten in place");
        assert_eq!(store.last_identities("p"), record(2));

        // Planted: a hard link to a file elsewhere, then a symlink to one. Each is replaced.
        for plant in ["hard", "symbolic"] {
            let victim = dir.path().join(format!("victim-{plant}"));
            std::fs::write(&victim, "keep").unwrap();
            std::fs::remove_file(&steps).unwrap();
            match plant {
                "hard" => std::fs::hard_link(&victim, &steps).unwrap(),
                _ => std::os::unix::fs::symlink(&victim, &steps).unwrap(),
            }
            store.remember("p", &record(3)).unwrap();
            assert_eq!(std::fs::read_to_string(&victim).unwrap(), "keep", "{plant} link");
            assert!(std::fs::symlink_metadata(&steps).unwrap().is_file());
            assert_eq!(store.last_identities("p"), record(3));
        }
    }

    #[test]
    fn a_step_keeps_the_identities_it_was_saved_under_newest_first_and_bounded() {
        let shared = Arc::new(Shared::new(BTreeMap::new()));
        let mut last = Last {
            identity: Identity::new(shared, BTreeMap::new()),
            new_in_a_row: 0,
            saved: Vec::new(),
        };
        let ids: Vec<String> = (0..10)
            .map(|i| crate::sha256_hex(format!("id{i}").as_bytes()))
            .collect();
        for id in &ids {
            last.note_saved(id);
        }
        assert_eq!(last.saved.len(), SAVED_KEPT);
        assert!(last.saved_under(&ids[9]) && last.saved_under(&ids[2]));
        assert!(
            !last.saved_under(&ids[1]) && !last.saved_under(&ids[0]),
            "the oldest go"
        );
        assert!(last.saved.iter().all(|s| s.len() == SAVED_PREFIX));
        // Saved again: first, and kept once.
        last.note_saved(&ids[2]);
        assert!(ids[2].starts_with(&last.saved[0]) && last.saved.len() == SAVED_KEPT);
        assert!(last.saved_under(&ids[3]), "{:?}", last.saved);
    }

    #[test]
    fn pruning_keeps_the_most_recently_used_within_the_size() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(&dir.path().join("cache")).unwrap();
        let mut paths = Vec::new();
        for i in 0..4 {
            let blob = store.put_blob(&vec![i as u8; 10_000][..]).unwrap();
            let id = crate::sha256_hex(format!("id{i}").as_bytes());
            let path = store.save(&entry(&format!("s{i}"), &id, &blob)).unwrap();
            let age = std::time::SystemTime::now() - std::time::Duration::from_secs(100 - i);
            std::fs::File::options()
                .append(true)
                .open(&path)
                .unwrap()
                .set_modified(age)
                .unwrap();
            paths.push(path);
        }
        store.touch(&paths[0]);
        let before = store.size();
        let pruned = store.prune(25_000).unwrap();
        assert_eq!((pruned.entries, pruned.blobs), (2, 2), "{pruned:?}");
        assert!(paths[0].exists() && paths[3].exists() && !paths[1].exists() && !paths[2].exists());
        assert!(store.size() <= 25_000 && store.size() < before);
    }
}
