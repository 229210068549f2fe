//! Signatures wharf makes and checks, knowing nothing of registries or runs: Ed25519 keys
//! named by fingerprint ([`key`]), in-toto statements ([`statement`]), and the DSSE
//! envelope in a sigstore bundle that carries one signed ([`bundle`]). Everything checks
//! offline with a public key alone.

pub mod bundle;
pub mod key;
pub mod statement;

pub use bundle::{Bundle, BundleError, Verified};
pub use key::{Fingerprint, KeyError, KeyPair, PublicKey};
pub use statement::{Statement, Subject};
