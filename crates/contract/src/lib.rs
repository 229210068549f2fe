//! The `wharf:step` contract a component was built against, read from the names it imports
//! and exports (`wharf:step/log@1.0.0`), and what this host does with it.
//!
//! A step published once must keep running for years, and one that needs a newer host must
//! say so before it runs instead of failing to link with a type error. The promise
//! (docs/contract.md): within a major version only additions, so a host serves every older
//! 1.x step as it is (wasmtime's linker matches `@1.0.0` imports to a `1.x` host). A step
//! built against a newer 1.x than the host is refused, naming both versions. Steps built
//! against the pre-release `0.1.0` contract, which 1.0.0 kept whole, are read as 1.0.0 by
//! renaming their import and export names (the only place a component carries the
//! version) and run with a warning saying how to rebuild.

use semver::Version;
use std::fmt;

/// The package every wharf interface belongs to.
pub const PACKAGE: &str = "wharf:step";

/// The contract this host speaks: the `package` line of `wit/`, checked by a test.
pub const CURRENT: Version = Version::new(1, 0, 0);

/// The pre-release contract, still served (read as 1.0.0) until wharf 2.
pub const LEGACY: Version = Version::new(0, 1, 0);

/// What a component's names say about the contract it was built against.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Built {
    /// The highest `wharf:step` version among its imports and exports; None for a
    /// component that uses no wharf interface (a plain WASI command).
    pub version: Option<Version>,
}

/// Whether this host runs a component built against `version`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Support {
    /// It uses no wharf interface: a WASI command runs on any host.
    Unversioned,
    /// This host's contract or an older 1.x one: it runs as it is.
    Runs(Version),
    /// The pre-release contract: it runs, read as 1.0.0, and the run says how to rebuild.
    Legacy(Version),
    /// A newer or unknown contract: refused before it runs.
    Refused(Version),
}

impl Support {
    pub fn of(built: &Built) -> Support {
        let Some(version) = &built.version else {
            return Support::Unversioned;
        };
        let version = version.clone();
        if version == LEGACY {
            Support::Legacy(version)
        } else if version.major == CURRENT.major && version.pre.is_empty() && version <= CURRENT {
            Support::Runs(version)
        } else {
            Support::Refused(version)
        }
    }

    /// The contract version the component was built against; None for a WASI command.
    pub fn built(&self) -> Option<&Version> {
        match self {
            Support::Unversioned => None,
            Support::Runs(v) | Support::Legacy(v) | Support::Refused(v) => Some(v),
        }
    }

    pub fn runs(&self) -> bool {
        !matches!(self, Support::Refused(_))
    }

    /// What to do about a legacy or refused step, said to its user.
    pub fn advice(&self) -> Option<String> {
        match self {
            Support::Unversioned | Support::Runs(_) => None,
            Support::Legacy(v) => Some(format!(
                "built against {PACKAGE}@{v}, the pre-release contract; this wharf reads it as \
                 {PACKAGE}@{CURRENT} until wharf 2: rebuild it against {PACKAGE}@{CURRENT} \
                 (`wharf new step` copies this wharf's SDK and wit/; a Rust step takes the new \
                 SDK, a Python one the new wit/)"
            )),
            Support::Refused(v) if v.major == CURRENT.major && v > &CURRENT => Some(format!(
                "built against {PACKAGE}@{v}, newer than the {PACKAGE}@{CURRENT} this wharf \
                 speaks: upgrade wharf to a release with contract {}.{} or later, or rebuild \
                 the step against {PACKAGE}@{CURRENT}",
                v.major, v.minor
            )),
            Support::Refused(v) => Some(format!(
                "built against {PACKAGE}@{v}, which this wharf does not speak (it speaks \
                 {PACKAGE}@{CURRENT} and reads {PACKAGE}@{LEGACY}): rebuild the step against \
                 {PACKAGE}@{CURRENT}"
            )),
        }
    }
}

impl fmt::Display for Support {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Support::Unversioned => write!(f, "no {PACKAGE} interface (a WASI command): runs"),
            Support::Runs(v) => write!(f, "{PACKAGE}@{v}: runs"),
            Support::Legacy(v) => write!(f, "{PACKAGE}@{v}: runs, read as {CURRENT}; rebuild it"),
            Support::Refused(v) => write!(f, "{PACKAGE}@{v}: does not run on {PACKAGE}@{CURRENT}"),
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("not a WebAssembly component: {0}")]
    Malformed(#[from] wasmparser::BinaryReaderError),
    #[error("not a WebAssembly component: a nested module runs past the end of the file")]
    Truncated,
    #[error("`{name}` names {PACKAGE} with a version that is not semver: {reason}")]
    BadVersion { name: String, reason: semver::Error },
}

/// A `wharf:step` name at the top level of a component, and where its version lies.
struct Name {
    version: Version,
    /// Byte range of the version text in the component.
    at: std::ops::Range<usize>,
}

/// The `wharf:step` names among a component's top-level imports and exports. Nested
/// modules and components are skipped unread, so this costs the size of the import and
/// export sections, not of the component.
fn wharf_names(bytes: &[u8]) -> Result<Vec<Name>, Error> {
    use wasmparser::{Chunk, Parser, Payload};
    let mut names = Vec::new();
    let mut note = |name: &str| -> Result<(), Error> {
        let Some((interface, version)) = name.split_once('@') else {
            return Ok(());
        };
        if !interface.starts_with(PACKAGE) || interface.as_bytes().get(PACKAGE.len()) != Some(&b'/') {
            return Ok(());
        }
        let parsed = Version::parse(version).map_err(|reason| Error::BadVersion {
            name: name.to_string(),
            reason,
        })?;
        // The name is a slice of `bytes` (the reader borrows), so its place is known.
        let start = version.as_ptr() as usize - bytes.as_ptr() as usize;
        names.push(Name {
            version: parsed,
            at: start..start + version.len(),
        });
        Ok(())
    };
    let mut parser = Parser::new(0);
    let mut data = bytes;
    loop {
        let (payload, consumed) = match parser.parse(data, true)? {
            Chunk::Parsed { consumed, payload } => (payload, consumed),
            Chunk::NeedMoreData(_) => unreachable!("parse with eof never asks for more"),
        };
        data = &data[consumed..];
        match payload {
            Payload::ModuleSection { unchecked_range, .. } | Payload::ComponentSection { unchecked_range, .. } => {
                data = data.get(unchecked_range.len()..).ok_or(Error::Truncated)?;
            }
            Payload::ComponentImportSection(reader) => {
                for import in reader {
                    note(import?.name.name)?;
                }
            }
            Payload::ComponentExportSection(reader) => {
                for export in reader {
                    note(export?.name.name)?;
                }
            }
            Payload::End(_) => return Ok(names),
            _ => {}
        }
    }
}

/// The contract `bytes` was built against.
pub fn built_against(bytes: &[u8]) -> Result<Built, Error> {
    let version = wharf_names(bytes)?.into_iter().map(|n| n.version).max();
    Ok(Built { version })
}

/// `bytes` with every `wharf:step/...@0.1.0` name read as `@1.0.0`, for a legacy step:
/// 1.0.0 kept the whole of 0.1.0, so the linker then type-checks it against this host like
/// any 1.0 step. The two versions are spelled with as many bytes, so the component is
/// patched in place and nothing else moves.
pub fn read_legacy_as_current(bytes: &[u8]) -> Result<Vec<u8>, Error> {
    const FROM: &str = "0.1.0";
    const TO: &str = "1.0.0";
    const { assert!(FROM.len() == TO.len()) };
    let mut out = bytes.to_vec();
    for name in wharf_names(bytes)? {
        if name.version == LEGACY {
            out[name.at].copy_from_slice(TO.as_bytes());
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn built(v: &str) -> Built {
        Built {
            version: Some(Version::parse(v).unwrap()),
        }
    }

    #[test]
    fn the_current_version_is_the_one_wit_declares() {
        let world = include_str!("../../../wit/world.wit");
        let declared = world
            .lines()
            .find_map(|l| l.strip_prefix("package wharf:step@"))
            .and_then(|l| l.strip_suffix(';'))
            .expect("wit/world.wit has a package line");
        assert_eq!(declared, CURRENT.to_string());
    }

    #[test]
    fn older_1x_runs_newer_and_other_majors_are_refused_naming_both_versions() {
        assert_eq!(Support::of(&built("1.0.0")), Support::Runs(CURRENT));
        assert!(Support::of(&built("0.1.0")).runs());
        assert!(matches!(Support::of(&built("0.1.0")), Support::Legacy(_)));
        for refused in ["1.99.0", "2.0.0", "0.2.0", "1.0.0-rc.1"] {
            let support = Support::of(&built(refused));
            assert!(!support.runs(), "{refused}");
            let advice = support.advice().unwrap();
            assert!(
                advice.contains(refused) && advice.contains("wharf:step@1.0.0"),
                "{advice}"
            );
        }
        assert!(
            Support::of(&built("1.99.0"))
                .advice()
                .unwrap()
                .contains("upgrade wharf")
        );
        assert_eq!(Support::of(&Built { version: None }), Support::Unversioned);
    }

    #[test]
    fn junk_is_an_error_not_a_panic() {
        assert!(built_against(b"not wasm").is_err());
        assert!(built_against(b"\0asm\x0d\0\x01\0\x0a\x05").is_err());
        assert!(read_legacy_as_current(b"").is_err());
        // A component whose nested module claims more bytes than the file has.
        assert!(built_against(b"\0asm\x0d\0\x01\0\x01\x7f\0asm").is_err());
    }

    /// Every prefix of a real component (a legacy fixture) is an error or a reading, never
    /// a panic; the whole of it reads as 0.1.0 and, rewritten, as 1.0.0 with nothing else
    /// moved.
    #[test]
    fn a_legacy_component_reads_as_current_and_its_prefixes_never_panic() {
        let bytes = std::fs::read(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/../../tests/fixtures/contract/0.1.0/rust-typed.wasm"
        ))
        .unwrap();
        assert_eq!(built_against(&bytes).unwrap().version, Some(LEGACY));
        let read = read_legacy_as_current(&bytes).unwrap();
        assert_eq!(read.len(), bytes.len());
        assert_eq!(built_against(&read).unwrap().version, Some(CURRENT));
        let changed = bytes.iter().zip(&read).filter(|(a, b)| a != b).count();
        let names = wharf_names(&bytes).unwrap().len();
        assert!(changed > 0 && changed <= names * 3, "{changed} bytes for {names} names");
        for cut in (0..bytes.len()).step_by(97) {
            let _ = built_against(&bytes[..cut]);
        }
    }
}
