//! Whether a workspace is a clean checkout of its `HEAD`, told from git's own files without
//! starting git: every run records its workspace's revision (a resumed run compares it), and
//! two git processes cost more than the rest of a small run.
//!
//! The answer is "clean at this commit" only when it is certain, as `git status` would find
//! it: every tracked file's inode, size and times as the index recorded them (and recorded
//! before the index was written, so no change can hide in the same tick), nothing staged
//! (the index's cached tree is the commit's tree), no conflict, submodule, sparse or split
//! index. Anything else, or anything unread, is "ask git".

use std::io::Read;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

/// Largest index read: a bigger repository asks git.
const INDEX_LIMIT: u64 = 64 << 20;
/// Largest object read (a commit).
const OBJECT_LIMIT: u64 = 1 << 20;

/// The commit a clean checkout is at; None when it is not clean or cannot be told.
pub fn clean_head(workspace: &Path) -> Option<String> {
    let (git, root) = git_dir(workspace)?;
    let head = resolve_head(&git)?;
    let index_path = git.join("index");
    let index_time = std::fs::metadata(&index_path).ok()?.modified().ok()?;
    let index = wharf_fs::bounded::read(&index_path, INDEX_LIMIT).ok()?;
    let tree = check_index(&index, &root, index_time)?;
    (commit_tree(&git, &head)? == tree).then_some(head)
}

/// What `git describe` answers from in a clean checkout, as one digest: the commit, every
/// tag (loose and packed) and the shallow boundary. None when the checkout is not clean or
/// cannot be read.
pub fn describe_key(workspace: &Path) -> Option<String> {
    use sha2::Digest as _;
    let head = clean_head(workspace)?;
    let (git, _) = git_dir(workspace)?;
    let mut hasher = sha2::Sha256::new();
    hasher.update(head.as_bytes());
    let mut tags = Vec::new();
    let mut stack = vec![git.join("refs/tags")];
    while let Some(dir) = stack.pop() {
        for entry in std::fs::read_dir(&dir).into_iter().flatten().flatten() {
            let path = entry.path();
            if entry.file_type().ok()?.is_dir() {
                stack.push(path);
            } else {
                let target = wharf_fs::bounded::read(&path, 4096).ok()?;
                tags.push((path.strip_prefix(&git).ok()?.to_string_lossy().into_owned(), target));
            }
        }
    }
    tags.sort();
    for (name, target) in tags {
        hasher.update(name.as_bytes());
        hasher.update(&target);
    }
    for file in ["packed-refs", "shallow"] {
        match wharf_fs::bounded::read(&git.join(file), INDEX_LIMIT) {
            Ok(bytes) => hasher.update(&bytes),
            Err(e) if e.is_not_found() => hasher.update(b"-"),
            Err(_) => return None,
        }
    }
    Some(hex::encode(hasher.finalize()))
}

/// The repository's `.git` directory and its work tree, from a directory inside it.
fn git_dir(workspace: &Path) -> Option<(PathBuf, PathBuf)> {
    let mut dir = Some(workspace);
    while let Some(d) = dir {
        let git = d.join(".git");
        match std::fs::symlink_metadata(&git) {
            Ok(m) if m.is_dir() => return Some((git, d.to_path_buf())),
            // A worktree's or submodule's `.git` file: ask git.
            Ok(_) => return None,
            Err(_) => dir = d.parent(),
        }
    }
    None
}

fn is_sha(text: &str) -> bool {
    text.len() == 40 && text.bytes().all(|b| b.is_ascii_hexdigit())
}

/// `HEAD` as a commit: a branch's ref (loose or packed), or a detached commit.
fn resolve_head(git: &Path) -> Option<String> {
    let head = wharf_fs::bounded::read_text(&git.join("HEAD"), 4096).ok()?;
    let head = head.trim();
    let Some(reference) = head.strip_prefix("ref: ") else {
        return is_sha(head).then(|| head.to_string());
    };
    if !reference.starts_with("refs/") || reference.contains("..") {
        return None;
    }
    if let Ok(sha) = wharf_fs::bounded::read_text(&git.join(reference), 4096) {
        let sha = sha.trim();
        return is_sha(sha).then(|| sha.to_string());
    }
    let packed = wharf_fs::bounded::read_text(&git.join("packed-refs"), INDEX_LIMIT).ok()?;
    packed.lines().find_map(|line| {
        let (sha, name) = line.split_once(' ')?;
        (name == reference && is_sha(sha)).then(|| sha.to_string())
    })
}

fn be32(bytes: &[u8], at: usize) -> Option<u32> {
    Some(u32::from_be_bytes(bytes.get(at..at + 4)?.try_into().ok()?))
}

/// The tree the index would commit, when every entry matches its file; None otherwise.
fn check_index(index: &[u8], root: &Path, index_time: std::time::SystemTime) -> Option<String> {
    if index.get(..4)? != b"DIRC" {
        return None;
    }
    let version = be32(index, 4)?;
    if version != 2 && version != 3 {
        return None;
    }
    let count = be32(index, 8)? as usize;
    let stamp = index_time.duration_since(std::time::UNIX_EPOCH).ok()?;
    let mut at = 12;
    for _ in 0..count {
        let field = |i: usize| be32(index, at + i * 4);
        let (ctime, ctime_ns, mtime, mtime_ns) = (field(0)?, field(1)?, field(2)?, field(3)?);
        let (ino, mode, size) = (field(5)?, field(6)?, field(9)?);
        let flags = u16::from_be_bytes(index.get(at + 60..at + 62)?.try_into().ok()?);
        let mut header = 62;
        if flags & 0x4000 != 0 {
            // Extended flags: skip-worktree or intent-to-add entries are not plain files.
            if version < 3 {
                return None;
            }
            let extended = u16::from_be_bytes(index.get(at + 62..at + 64)?.try_into().ok()?);
            if extended & 0x6000 != 0 {
                return None;
            }
            header = 64;
        }
        if flags & 0x3000 != 0 || mode & 0o170000 == 0o160000 {
            return None;
        }
        let name_end = index.get(at + header..)?.iter().position(|&b| b == 0)? + at + header;
        let name = std::str::from_utf8(&index[at + header..name_end]).ok()?;
        // Entries are padded with NULs to a multiple of eight bytes.
        let length = (name_end - at + 8) & !7;
        at += length;
        let meta = std::fs::symlink_metadata(root.join(name)).ok()?;
        let same = meta.ctime() as u32 == ctime
            && meta.ctime_nsec() as u32 == ctime_ns
            && meta.mtime() as u32 == mtime
            && meta.mtime_nsec() as u32 == mtime_ns
            && meta.ino() as u32 == ino
            && meta.size() as u32 == size
            && (meta.mode() & 0o170000) == (mode & 0o170000);
        // Changed in the tick the index was written: git itself would look inside.
        let racy = u64::from(mtime) > stamp.as_secs()
            || (u64::from(mtime) == stamp.as_secs() && mtime_ns >= stamp.subsec_nanos());
        if !same || racy {
            return None;
        }
    }
    // Extensions, up to the trailing checksum; the cached tree's root is what HEAD must be.
    let end = index.len().checked_sub(20)?;
    let mut tree = None;
    while at + 8 <= end {
        let signature = index.get(at..at + 4)?;
        let size = be32(index, at + 4)? as usize;
        let data = index.get(at + 8..at + 8 + size)?;
        match signature {
            b"TREE" => tree = root_tree(data),
            // Split index, sparse index, an extension that must be understood: ask git.
            s if s[0].is_ascii_lowercase() => return None,
            _ => {}
        }
        at += 8 + size;
    }
    tree
}

/// The root entry of the cached-tree extension: `\0ENTRIES SUBTREES\n` then its sha; an
/// invalidated tree (-1 entries) has none.
fn root_tree(data: &[u8]) -> Option<String> {
    if *data.first()? != 0 {
        return None;
    }
    let line_end = data.iter().position(|&b| b == b'\n')?;
    let line = std::str::from_utf8(&data[1..line_end]).ok()?;
    let (entries, _) = line.split_once(' ')?;
    if entries.parse::<i64>().ok()? < 0 {
        return None;
    }
    Some(hex::encode(data.get(line_end + 1..line_end + 21)?))
}

/// The tree of commit `sha`: a loose object, or an undeltified one in a pack.
fn commit_tree(git: &Path, sha: &str) -> Option<String> {
    let loose = git.join("objects").join(&sha[..2]).join(&sha[2..]);
    let body = match std::fs::File::open(&loose) {
        Ok(file) => {
            let mut text = Vec::new();
            flate2::read::ZlibDecoder::new(file)
                .take(OBJECT_LIMIT)
                .read_to_end(&mut text)
                .ok()?;
            let nul = text.iter().position(|&b| b == 0)?;
            if !text.starts_with(b"commit ") {
                return None;
            }
            text[nul + 1..].to_vec()
        }
        Err(_) => packed_commit(git, sha)?,
    };
    let text = std::str::from_utf8(&body).ok()?;
    let tree = text.lines().next()?.strip_prefix("tree ")?;
    is_sha(tree).then(|| tree.to_string())
}

/// A commit stored whole in one of the packs (found through its `.idx`, version 2).
fn packed_commit(git: &Path, sha: &str) -> Option<Vec<u8>> {
    let wanted = hex::decode(sha).ok()?;
    let packs = std::fs::read_dir(git.join("objects/pack")).ok()?;
    for idx_path in packs.flatten().map(|e| e.path()) {
        if idx_path.extension().is_none_or(|e| e != "idx") {
            continue;
        }
        let Ok(idx) = wharf_fs::bounded::read(&idx_path, INDEX_LIMIT * 4) else {
            continue;
        };
        let Some(offset) = idx_offset(&idx, &wanted) else {
            continue;
        };
        return pack_object(&idx_path.with_extension("pack"), offset);
    }
    None
}

/// Where object `wanted` is in the pack of this index; None when it is not there.
fn idx_offset(idx: &[u8], wanted: &[u8]) -> Option<u64> {
    if idx.get(..8)? != b"\xfftOc\x00\x00\x00\x02" {
        return None;
    }
    let fanout = |i: usize| be32(idx, 8 + i * 4).map(|n| n as usize);
    let count = fanout(255)?;
    let first = wanted[0] as usize;
    let (mut low, mut high) = (if first == 0 { 0 } else { fanout(first - 1)? }, fanout(first)?);
    let names = 8 + 256 * 4;
    while low < high {
        let mid = (low + high) / 2;
        let name = idx.get(names + mid * 20..names + mid * 20 + 20)?;
        match name.cmp(wanted) {
            std::cmp::Ordering::Equal => {
                let offsets = names + count * 20 + count * 4;
                let offset = be32(idx, offsets + mid * 4)?;
                if offset & 0x8000_0000 != 0 {
                    let large = offsets + count * 4 + (offset & 0x7fff_ffff) as usize * 8;
                    return Some(u64::from_be_bytes(idx.get(large..large + 8)?.try_into().ok()?));
                }
                return Some(u64::from(offset));
            }
            std::cmp::Ordering::Less => low = mid + 1,
            std::cmp::Ordering::Greater => high = mid,
        }
    }
    None
}

/// The object at `offset` of a pack, when it is a commit stored whole.
fn pack_object(pack: &Path, offset: u64) -> Option<Vec<u8>> {
    use std::io::{Seek, SeekFrom};
    let mut file = std::fs::File::open(pack).ok()?;
    file.seek(SeekFrom::Start(offset)).ok()?;
    let mut byte = [0u8; 1];
    file.read_exact(&mut byte).ok()?;
    let kind = (byte[0] >> 4) & 7;
    let mut size = u64::from(byte[0] & 0x0f);
    let mut shift = 4;
    while byte[0] & 0x80 != 0 {
        file.read_exact(&mut byte).ok()?;
        size |= u64::from(byte[0] & 0x7f) << shift;
        shift += 7;
        if shift > 63 {
            return None;
        }
    }
    if kind != 1 || size > OBJECT_LIMIT {
        return None;
    }
    let mut body = Vec::new();
    flate2::read::ZlibDecoder::new(file)
        .take(size)
        .read_to_end(&mut body)
        .ok()?;
    (body.len() as u64 == size).then_some(body)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::process::Command;

    fn git(dir: &Path, args: &[&str]) -> String {
        let out = Command::new("git")
            .arg("-C")
            .arg(dir)
            .args(args)
            .env("GIT_AUTHOR_NAME", "t")
            .env("GIT_AUTHOR_EMAIL", "t@e")
            .env("GIT_COMMITTER_NAME", "t")
            .env("GIT_COMMITTER_EMAIL", "t@e")
            .output()
            .unwrap();
        assert!(out.status.success(), "git {args:?}");
        String::from_utf8_lossy(&out.stdout).trim().to_string()
    }

    /// Let the index be written in a later tick than the files, as it is in practice.
    fn settle(dir: &Path) {
        std::thread::sleep(std::time::Duration::from_millis(20));
        git(dir, &["update-index", "--really-refresh"]);
    }

    #[test]
    fn a_clean_checkout_is_told_without_git_and_anything_else_asks_git() {
        let dir = tempfile::tempdir().unwrap();
        let ws = dir.path();
        git(ws, &["init", "-q"]);
        std::fs::create_dir(ws.join("sub")).unwrap();
        std::fs::write(ws.join("a.txt"), "1").unwrap();
        std::fs::write(ws.join("sub/b.txt"), "2").unwrap();
        git(ws, &["add", "."]);
        git(ws, &["commit", "-qm", "one"]);
        settle(ws);
        let head = git(ws, &["rev-parse", "HEAD"]);
        assert_eq!(clean_head(ws), Some(head.clone()), "a loose commit");
        assert_eq!(clean_head(&ws.join("sub")), Some(head.clone()), "from a subdirectory");

        // A change to a tracked file, then a staged one: git must be asked.
        std::fs::write(ws.join("a.txt"), "changed").unwrap();
        assert_eq!(clean_head(ws), None);
        git(ws, &["add", "a.txt"]);
        settle(ws);
        assert_eq!(clean_head(ws), None, "staged, not committed");
        git(ws, &["commit", "-qm", "two"]);
        settle(ws);
        let head = git(ws, &["rev-parse", "HEAD"]);
        assert_eq!(clean_head(ws), Some(head.clone()));

        // An untracked file is not a change (as `status --untracked-files=no`).
        std::fs::write(ws.join("new.txt"), "untracked").unwrap();
        assert_eq!(clean_head(ws), Some(head.clone()));

        // Everything packed, refs too: as a fresh clone has it.
        git(ws, &["gc", "-q", "--prune=now"]);
        settle(ws);
        assert!(!ws.join(".git/refs/heads/master").exists() || !ws.join(".git/packed-refs").exists());
        assert_eq!(clean_head(ws), Some(head));

        // What describe answers from: a new tag changes it.
        let key = describe_key(ws).unwrap();
        assert_eq!(describe_key(ws), Some(key.clone()));
        git(ws, &["tag", "v9"]);
        assert_ne!(describe_key(ws), Some(key));

        // A deleted tracked file.
        std::fs::remove_file(ws.join("sub/b.txt")).unwrap();
        assert_eq!(clean_head(ws), None);
        assert_eq!(describe_key(ws), None);
    }
}
