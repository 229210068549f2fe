//! Image references: `[REGISTRY/]REPOSITORY[:TAG][@sha256:DIGEST]`.

use std::fmt;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ImageRef {
    /// `HOST[:PORT]`; None for the local image store.
    pub registry: Option<String>,
    pub repository: String,
    pub tag: Option<String>,
    pub digest: Option<String>,
}

impl ImageRef {
    pub fn parse(text: &str) -> Result<ImageRef, String> {
        let bad = |why: &str| format!("`{text}` is not an image reference: {why}");
        let (rest, digest) = match text.split_once('@') {
            Some((r, d)) => {
                if super::digest_hex(d).is_none() {
                    return Err(bad("the digest must be `sha256:` and 64 hex digits"));
                }
                (r, Some(d.to_string()))
            }
            None => (text, None),
        };
        let (registry, path) = match rest.split_once('/') {
            Some((first, path)) if first.contains('.') || first.contains(':') || first == "localhost" => {
                (Some(first.to_string()), path)
            }
            _ => (None, rest),
        };
        let (repository, tag) = match path.rsplit_once(':') {
            Some((repo, tag)) if !tag.contains('/') => (repo, Some(tag.to_string())),
            _ => (path, None),
        };
        if !valid_repository(repository) {
            return Err(bad(
                "repositories are `/`-separated parts of lower-case letters and digits, joined by `.`, `_` or `-`",
            ));
        }
        if let Some(tag) = &tag
            && !valid_tag(tag)
        {
            return Err(bad("tags are letters, digits, `.`, `_` and `-`, at most 128"));
        }
        Ok(ImageRef {
            registry,
            repository: repository.to_string(),
            tag,
            digest,
        })
    }

    /// `REPO:TAG` as the local store names it.
    pub fn local_name(&self) -> String {
        match &self.tag {
            Some(tag) => format!("{}:{tag}", self.repository),
            None => self.repository.clone(),
        }
    }

    /// Tags that name a branch or a channel rather than one build (`latest`, `master`):
    /// deploying them makes a rollback land on whatever they point to now.
    pub fn has_mutable_tag(&self) -> bool {
        match &self.tag {
            None => false,
            Some(tag) => {
                const MUTABLE: &[&str] = &[
                    "latest", "master", "main", "stable", "edge", "nightly", "dev", "develop",
                ];
                MUTABLE.contains(&tag.as_str()) || !tag.chars().any(|c| c.is_ascii_digit())
            }
        }
    }
}

/// A tag: letters, digits, `.`, `_` and `-`, at most 128, not starting with `.` or `-`.
pub fn valid_tag(tag: &str) -> bool {
    tag.len() <= 128
        && tag
            .chars()
            .next()
            .is_some_and(|c| c.is_ascii_alphanumeric() || c == '_')
        && tag.chars().all(|c| c.is_ascii_alphanumeric() || "._-".contains(c))
}

/// The OCI distribution name grammar: `/`-separated components, each lower-case letters and
/// digits with single `.`, `_`, `__` or `-` runs between them. No empty, `.` or `..` part can
/// pass, so a name cannot walk to another repository in a URL.
pub fn valid_repository(name: &str) -> bool {
    !name.is_empty()
        && name.split('/').all(|part| {
            let bytes = part.as_bytes();
            !bytes.is_empty()
                && bytes[0].is_ascii_alphanumeric()
                && bytes[bytes.len() - 1].is_ascii_alphanumeric()
                && part
                    .chars()
                    .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || "._-".contains(c))
                && !part.contains("..")
                && !part.contains("._")
                && !part.contains("_.")
        })
}

impl fmt::Display for ImageRef {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if let Some(r) = &self.registry {
            write!(f, "{r}/")?;
        }
        write!(f, "{}", self.repository)?;
        if let Some(t) = &self.tag {
            write!(f, ":{t}")?;
        }
        if let Some(d) = &self.digest {
            write!(f, "@{d}")?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const D: &str = "sha256:0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef";

    #[test]
    fn parses_the_forms_in_use() {
        let r = ImageRef::parse(&format!("127.0.0.1:5000/team/seed:1.0.1-22-7e56158@{D}")).unwrap();
        assert_eq!(r.registry.as_deref(), Some("127.0.0.1:5000"));
        assert_eq!(r.repository, "team/seed");
        assert_eq!(r.tag.as_deref(), Some("1.0.1-22-7e56158"));
        assert_eq!(r.digest.as_deref(), Some(D));
        assert_eq!(r.to_string(), format!("127.0.0.1:5000/team/seed:1.0.1-22-7e56158@{D}"));
        let local = ImageRef::parse("seed:1.0").unwrap();
        assert_eq!(
            (local.registry.clone(), local.local_name()),
            (None, "seed:1.0".to_string())
        );
        assert_eq!(
            ImageRef::parse("localhost/x").unwrap().registry.as_deref(),
            Some("localhost")
        );
        assert!(ImageRef::parse("Seed:1").is_err());
        assert!(ImageRef::parse("r.example/team/../prod:1").is_err());
        assert!(ImageRef::parse("r.example//x:1").is_err());
        assert!(!valid_repository("team/./x") && !valid_repository("-x") && valid_repository("team/app_1.x-y"));
        assert!(ImageRef::parse("seed@sha256:xyz").is_err());
    }

    #[test]
    fn mutable_tags() {
        for tag in ["latest", "master", "prod"] {
            assert!(
                ImageRef::parse(&format!("r/s:{tag}")).unwrap().has_mutable_tag(),
                "{tag}"
            );
        }
        assert!(!ImageRef::parse("r/s:1.0.1-22-7e56158").unwrap().has_mutable_tag());
    }
}
