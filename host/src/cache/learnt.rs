//! The digests a run learns by file stamp ([`Known`]): read from the store the first time a
//! lookup, an observer or a capture needs one, shared by all of them, and kept for the next
//! run when it ends. One handle, so that no caller can forget to load them first.

use std::sync::{Arc, Mutex};
use wharf_cache::{Store, tree::Known};

#[derive(Clone)]
pub struct Learnt {
    store: Store,
    known: Arc<Mutex<Option<Known>>>,
}

impl Learnt {
    pub fn new(store: Store) -> Learnt {
        Learnt {
            store,
            known: Arc::default(),
        }
    }

    /// Use the digests, reading them from the store first if this run has not yet.
    pub fn with<R>(&self, f: impl FnOnce(&mut Known) -> R) -> R {
        let mut known = self.known.lock().unwrap();
        f(known.get_or_insert_with(|| self.store.known()))
    }

    /// Keep what the run learnt for the next one (nothing when it looked at nothing).
    pub fn save(&self) {
        if let Some(known) = &*self.known.lock().unwrap() {
            self.store.save_known(known);
        }
    }
}
