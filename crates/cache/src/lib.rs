//! The step cache's records and checks, knowing nothing of WebAssembly or pipelines.
//!
//! A step is cached by what it used, not by what anyone declared: the host notes what the
//! sandbox saw a step look at, and an entry is accepted only when each of those inputs is
//! still what it was. Here: what a path is ([`found`]), a directory as a whole ([`tree`]),
//! who a step is ([`identity`]), an entry, what a step used and what it did ([`entry`]),
//! and the store that keeps entries beneath `.wharf/cache`, each authenticated by a key
//! only the workspace holds ([`store`]).

pub mod entry;
pub mod found;
pub mod identity;
pub mod store;
pub mod tree;

pub use entry::{Effects, Entry, Image, Input};
pub use found::Found;
pub use store::Store;

/// The sha256 of `bytes`, in hex.
pub fn sha256_hex(bytes: &[u8]) -> String {
    use sha2::Digest as _;
    hex(&sha2::Sha256::digest(bytes))
}

/// `bytes` in lower-case hex, through a table (`hex::encode` goes character by character).
pub(crate) fn hex(bytes: &[u8]) -> String {
    let mut out = vec![0u8; bytes.len() * 2];
    hex::encode_to_slice(bytes, &mut out).expect("twice the length");
    String::from_utf8(out).expect("hex is ASCII")
}

/// Copy `from` into `to`, chunk by chunk; the sha256 of what was copied.
pub(crate) fn copy_hashing(mut from: impl std::io::Read, to: &mut impl std::io::Write) -> std::io::Result<String> {
    use sha2::Digest as _;
    let mut hasher = sha2::Sha256::new();
    let mut chunk = vec![0u8; 64 * 1024];
    loop {
        let n = from.read(&mut chunk)?;
        if n == 0 {
            break;
        }
        hasher.update(&chunk[..n]);
        to.write_all(&chunk[..n])?;
    }
    Ok(hex(&hasher.finalize()))
}
