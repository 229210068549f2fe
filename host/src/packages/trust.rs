//! `wharf.trust.yml`: beside a pipeline and its lock, which keys may sign which `oci://`
//! steps. A step that a rule matches runs only with a signature by one of the rule's keys;
//! the keys are public-key files the workspace commits, named by fingerprint in every
//! message. The first rule that matches a step decides.
//!
//! ```yaml
//! steps:
//!   - match: ghcr.io/acme/*          # REGISTRY/REPOSITORY; `*` is one path segment, `**` any
//!     keys: [keys/acme-steps.pub]
//! ```

use crate::pipeline::diagnostic::{Diagnostic, Span};
use crate::pipeline::yaml::Yaml;
use std::path::{Path, PathBuf};
use wharf_sign::PublicKey;

pub const FILE_NAME: &str = "wharf.trust.yml";
/// A policy is a few lines per publisher.
const SIZE_LIMIT: u64 = 1 << 20;

#[derive(Debug, Clone)]
pub struct Trust {
    pub path: PathBuf,
    rules: Vec<Rule>,
}

#[derive(Debug, Clone)]
pub struct Rule {
    /// The pattern as written.
    pub pattern: String,
    pub keys: Vec<PublicKey>,
}

#[derive(Debug, thiserror::Error)]
pub enum TrustError {
    #[error("cannot read {}: {source}", path.display())]
    Read {
        path: PathBuf,
        source: wharf_fs::bounded::ReadError,
    },
    #[error("{}:{}:{}: {message}\n  = help: {help}", path.display(), at.line, at.column)]
    Invalid {
        path: PathBuf,
        at: Span,
        message: String,
        help: String,
    },
}

impl Trust {
    /// Where the policy of the pipeline in `pipeline_file` lives.
    pub fn path_for(pipeline_file: &Path) -> PathBuf {
        pipeline_file.parent().unwrap_or(Path::new(".")).join(FILE_NAME)
    }

    /// The policy at `path`, or None when there is none. Key files are read beneath the
    /// policy's directory.
    pub fn read(path: &Path) -> Result<Option<Trust>, TrustError> {
        let text = match wharf_fs::bounded::read_text(path, SIZE_LIMIT) {
            Ok(text) => text,
            Err(e) if e.is_not_found() => return Ok(None),
            Err(source) => {
                return Err(TrustError::Read {
                    path: path.to_path_buf(),
                    source,
                });
            }
        };
        let invalid = |at: Span, message: String, help: &str| TrustError::Invalid {
            path: path.to_path_buf(),
            at,
            message,
            help: help.to_string(),
        };
        let from = |d: Diagnostic| invalid(d.span, d.message, d.help.as_deref().unwrap_or("see docs/security.md"));
        let root = Yaml::parse(&text).map_err(from)?;
        let shape =
            "a policy is `steps:`, a list of `- match: REGISTRY/REPOSITORY` with `keys: [PUBLIC-KEY-FILE, ...]`";
        let Yaml::Map(entries, _) = &root else {
            return Err(invalid(
                root.span(),
                format!("the policy is {}, not a mapping", root.kind()),
                shape,
            ));
        };
        let dir = path
            .parent()
            .filter(|d| !d.as_os_str().is_empty())
            .unwrap_or(Path::new("."));
        let mut rules = Vec::new();
        for (key, value) in entries {
            if key.text != "steps" {
                return Err(invalid(key.span, format!("unknown key `{}`", key.text), shape));
            }
            let Yaml::List(items, _) = value else {
                return Err(invalid(
                    value.span(),
                    format!("`steps` is {}, not a list", value.kind()),
                    shape,
                ));
            };
            for item in items {
                rules.push(rule(item, dir, &invalid, shape)?);
            }
        }
        Ok(Some(Trust {
            path: path.to_path_buf(),
            rules,
        }))
    }

    /// The rule for the step at `registry/repository`, if one matches.
    pub fn rule_for(&self, registry: &str, repository: &str) -> Option<&Rule> {
        let name = format!("{}/{repository}", normal_host(registry));
        self.rules.iter().find(|r| matches(&r.pattern, &name))
    }
}

/// A registry host as it is reached, whatever its spelling: lower case, no trailing dot, no
/// default HTTPS port (`GHCR.IO.:443` is `ghcr.io`), so another spelling of a covered
/// registry cannot slip past its rule.
fn normal_host(host: &str) -> String {
    let host = host.to_ascii_lowercase();
    let host = host.strip_suffix(":443").unwrap_or(&host);
    host.trim_end_matches('.').to_string()
}

fn rule(
    item: &Yaml,
    dir: &Path,
    invalid: &impl Fn(Span, String, &str) -> TrustError,
    shape: &str,
) -> Result<Rule, TrustError> {
    let Yaml::Map(fields, span) = item else {
        return Err(invalid(
            item.span(),
            format!("a rule is {}, not a mapping", item.kind()),
            shape,
        ));
    };
    let mut pattern = None;
    let mut keys = Vec::new();
    for (key, value) in fields {
        match (key.text.as_str(), value) {
            ("match", Yaml::Scalar(s)) => {
                let text = s.text.strip_prefix(crate::packages::SCHEME).unwrap_or(&s.text);
                if text.is_empty() || !text.contains('/') {
                    return Err(invalid(
                        s.span,
                        format!("`{}` names no repository", s.text),
                        "write `REGISTRY/REPOSITORY`, with `*` for one path segment or `**` for any",
                    ));
                }
                let (host, path) = text.split_once('/').unwrap_or((text, ""));
                pattern = Some(format!("{}/{path}", normal_host(host)));
            }
            ("keys", Yaml::List(list, _)) => {
                for entry in list {
                    let Some(file) = entry.as_scalar() else {
                        return Err(invalid(entry.span(), "a key is a public-key file's path".into(), shape));
                    };
                    let found = wharf_fs::beneath::existing(dir, &file.text).map_err(|e| {
                        invalid(
                            file.span,
                            format!("key `{}`: {e}", file.text),
                            "keys are files beside the policy (`wharf key generate` writes NAME.pub)",
                        )
                    })?;
                    let key = PublicKey::read_as(&found, &file.text).map_err(|e| {
                        invalid(
                            file.span,
                            e.to_string(),
                            "give the `.pub` file `wharf key generate` wrote",
                        )
                    })?;
                    keys.push(key);
                }
            }
            ("match" | "keys", other) => {
                return Err(invalid(
                    other.span(),
                    format!("`{}` is {}", key.text, other.kind()),
                    shape,
                ));
            }
            (other, _) => return Err(invalid(key.span, format!("unknown key `{other}` in a rule"), shape)),
        }
    }
    let Some(pattern) = pattern else {
        return Err(invalid(*span, "a rule without `match:`".into(), shape));
    };
    if keys.is_empty() {
        return Err(invalid(
            *span,
            format!("the rule for `{pattern}` names no key"),
            "a rule names the keys that may sign the steps it matches",
        ));
    }
    Ok(Rule { pattern, keys })
}

/// Whether `name` (`REGISTRY/REPOSITORY`) matches `pattern`: `*` is any run of characters
/// within a path segment, `**` any run at all.
fn matches(pattern: &str, name: &str) -> bool {
    fn at(p: &[u8], n: &[u8]) -> bool {
        match p {
            [] => n.is_empty(),
            [b'*', b'*', rest @ ..] => (0..=n.len()).any(|i| at(rest, &n[i..])),
            [b'*', rest @ ..] => (0..=n.len())
                .take_while(|&i| i == 0 || n[i - 1] != b'/')
                .any(|i| at(rest, &n[i..])),
            [c, rest @ ..] => n.first() == Some(c) && at(rest, &n[1..]),
        }
    }
    at(pattern.as_bytes(), name.as_bytes())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn patterns_match_by_segment() {
        assert!(matches("ghcr.io/acme/*", "ghcr.io/acme/hello"));
        assert!(!matches("ghcr.io/acme/*", "ghcr.io/acme/team/hello"));
        assert!(matches("ghcr.io/acme/**", "ghcr.io/acme/team/hello"));
        assert!(matches("**", "127.0.0.1:5000/x"));
        assert!(!matches("ghcr.io/acme/*", "ghcr.io/acmeevil/hello"));
        assert!(!matches("ghcr.io/acme/hello", "ghcr.io/acme/hello2"));
        for spelling in ["GHCR.IO", "ghcr.io.", "ghcr.io:443", "Ghcr.Io.:443"] {
            assert_eq!(normal_host(spelling), "ghcr.io", "{spelling}");
        }
        assert_eq!(normal_host("127.0.0.1:5000"), "127.0.0.1:5000");
    }

    #[test]
    fn a_policy_reads_its_keys_and_says_where_it_is_wrong() {
        let dir = tempfile::tempdir().unwrap();
        let pair = wharf_sign::KeyPair::generate().unwrap();
        std::fs::create_dir(dir.path().join("keys")).unwrap();
        pair.write(&dir.path().join("keys/acme")).unwrap();
        let path = dir.path().join(FILE_NAME);
        assert!(Trust::read(&path).unwrap().is_none());
        std::fs::write(
            &path,
            "steps:\n  - match: oci://127.0.0.1:5000/acme/*\n    keys: [keys/acme.pub]\n",
        )
        .unwrap();
        let trust = Trust::read(&path).unwrap().unwrap();
        let rule = trust.rule_for("127.0.0.1:5000", "acme/hello").unwrap();
        assert_eq!(rule.keys[0].fingerprint(), pair.public().fingerprint());
        assert!(trust.rule_for("127.0.0.1:5000", "other/hello").is_none());
        std::fs::write(&path, "steps:\n  - match: GHCR.io/acme/*\n    keys: [keys/acme.pub]\n").unwrap();
        let trust = Trust::read(&path).unwrap().unwrap();
        assert!(trust.rule_for("ghcr.io.:443", "acme/hello").is_some());

        for (text, line, what) in [
            (
                "steps:\n  - match: a/b\n    keys: [keys/acme.key]\n",
                3,
                "is a private key",
            ),
            (
                "steps:\n  - match: a/b\n    keys: [../../etc/passwd]\n",
                3,
                "leads outside",
            ),
            (
                "steps:\n  - match: a/b\n    keys: [keys/none.pub]\n",
                3,
                "does not exist",
            ),
            ("steps:\n  - match: a/b\n", 2, "names no key"),
            ("steps:\n  - mach: a/b\n", 2, "unknown key `mach`"),
            ("signers: []\n", 1, "unknown key `signers`"),
        ] {
            std::fs::write(&path, text).unwrap();
            let e = Trust::read(&path).unwrap_err().to_string();
            assert!(
                e.contains(&format!("{FILE_NAME}:{line}:")) && e.contains(what),
                "{text}: {e}"
            );
        }
    }
}
