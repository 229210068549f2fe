//! Who a step is, part by part: its component, parameters, grants and limits, and what every
//! step of its run shares (the pipeline, wharf's version, the variables it was passed).
//! Each part is kept by name with its digest, so that a miss can name the part that changed.
//!
//! The shared parts are digested once per run and the step's own parts once per step: a run
//! of a hundred steps does not digest its environment a hundred times, and the record of
//! the identities a pipeline's steps last had (`steps/PIPELINE.json`) keeps the shared parts once.

use sha2::Digest as _;
use std::collections::BTreeMap;
use std::sync::Arc;

/// Parts by name, each a digest (or a short text: a step id, a version).
pub type Parts = BTreeMap<String, String>;

/// The parts every step of a run shares, with their digest.
#[derive(Debug, PartialEq, Eq)]
pub struct Shared {
    pub digest: String,
    pub parts: Parts,
}

impl Shared {
    pub fn new(parts: Parts) -> Shared {
        let mut hasher = sha2::Sha256::new();
        feed(&mut hasher, &parts);
        Shared {
            digest: crate::hex(&hasher.finalize()),
            parts,
        }
    }
}

/// A step's identity: where its entries are filed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Identity {
    pub shared: Arc<Shared>,
    /// The step's own parts.
    pub own: Arc<Parts>,
    pub digest: String,
}

impl Identity {
    pub fn new(shared: Arc<Shared>, own: Parts) -> Identity {
        let mut hasher = sha2::Sha256::new();
        hasher.update(shared.digest.as_bytes());
        feed(&mut hasher, &own);
        Identity {
            digest: crate::hex(&hasher.finalize()),
            shared,
            own: Arc::new(own),
        }
    }

    /// Every part, shared and own: what an entry records.
    pub fn parts(&self) -> Parts {
        let mut all = self.shared.parts.clone();
        all.extend(self.own.iter().map(|(k, v)| (k.clone(), v.clone())));
        all
    }

    /// The parts that differ from `before`'s: `NAME changed`, `NAME is new`, `NAME is
    /// gone`, in the order of their names.
    pub fn differences(&self, before: &Identity) -> Vec<String> {
        let mut out = Vec::new();
        if self.shared.digest != before.shared.digest {
            differences(&before.shared.parts, &self.shared.parts, &mut out);
        }
        differences(&before.own, &self.own, &mut out);
        out
    }
}

/// Each part, its name and value length-prefixed: no two sets of parts feed the same bytes.
fn feed(hasher: &mut sha2::Sha256, parts: &Parts) {
    for (name, value) in parts {
        for text in [name, value] {
            hasher.update((text.len() as u64).to_le_bytes());
            hasher.update(text.as_bytes());
        }
    }
}

/// Both maps walked once, in order.
fn differences(before: &Parts, now: &Parts, out: &mut Vec<String>) {
    let (mut b, mut n) = (before.iter().peekable(), now.iter().peekable());
    loop {
        match (b.peek(), n.peek()) {
            (None, None) => return,
            (Some((name, _)), None) => {
                out.push(format!("{name} is gone"));
                b.next();
            }
            (None, Some((name, _))) => {
                out.push(format!("{name} is new"));
                n.next();
            }
            (Some((bn, bv)), Some((nn, nv))) => match bn.cmp(nn) {
                std::cmp::Ordering::Less => {
                    out.push(format!("{bn} is gone"));
                    b.next();
                }
                std::cmp::Ordering::Greater => {
                    out.push(format!("{nn} is new"));
                    n.next();
                }
                std::cmp::Ordering::Equal => {
                    if bv != nv {
                        out.push(format!("{nn} changed"));
                    }
                    b.next();
                    n.next();
                }
            },
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parts(list: &[(&str, &str)]) -> Parts {
        list.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect()
    }

    #[test]
    fn the_digest_changes_with_any_part_and_names_what_changed() {
        let shared = Arc::new(Shared::new(parts(&[("pipeline", "p1"), ("variable `A`", "a")])));
        let one = Identity::new(shared.clone(), parts(&[("component", "c1"), ("parameter `x`", "1")]));
        assert_eq!(one, Identity::new(shared.clone(), (*one.own).clone()));
        assert!(one.differences(&one).is_empty());

        let param = Identity::new(shared.clone(), parts(&[("component", "c1"), ("parameter `x`", "2")]));
        assert_ne!(param.digest, one.digest);
        assert_eq!(param.differences(&one), ["parameter `x` changed"]);

        let other = Arc::new(Shared::new(parts(&[("pipeline", "p1"), ("variable `B`", "a")])));
        let moved = Identity::new(other, parts(&[("component", "c1"), ("parameter `y`", "1")]));
        assert_ne!(moved.digest, one.digest);
        assert_eq!(
            moved.differences(&one),
            [
                "variable `A` is gone",
                "variable `B` is new",
                "parameter `x` is gone",
                "parameter `y` is new"
            ]
        );
        assert_eq!(moved.parts().len(), 4);
    }

    #[test]
    fn a_part_cannot_pass_for_two() {
        // Without the lengths, `a` = `bc` and `ab` = `c` would feed the same bytes.
        let shared = Arc::new(Shared::new(Parts::new()));
        let one = Identity::new(shared.clone(), parts(&[("a", "bc")]));
        let two = Identity::new(shared.clone(), parts(&[("ab", "c")]));
        assert_ne!(one.digest, two.digest);
        // A part moved between the shared and the own parts is another identity too.
        let moved = Identity::new(Arc::new(Shared::new(parts(&[("a", "bc")]))), Parts::new());
        assert_ne!(moved.digest, one.digest);
    }
}
