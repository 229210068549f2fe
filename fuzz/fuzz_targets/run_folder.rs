//! A run folder is untrusted input: any bytes as its journal and any bytes as one of its
//! snapshots. Reading the journal returns entries or an error; unpacking the snapshot fills
//! a scratch directory or refuses; never a panic, and nothing lands outside the scratch
//! directory (it is checked after every input). Every name of a journal that reads (step
//! ids, run ids, file and snapshot names, digests) meets its rule, so none can name a path
//! out of where wharf puts it.
#![no_main]

use libfuzzer_sys::fuzz_target;
use std::path::Path;
use wharf_journal::NameKind;
use wharf_journal::reader::Journal;
use wharf_journal::snapshot;

fuzz_target!(|input: (&[u8], &[u8])| {
    let (journal, archive) = input;
    if let Ok(journal) = Journal::parse(journal, Path::new("journal.jsonl")) {
        for (kind, name) in journal.entries().flat_map(|e| e.names()) {
            assert!(kind.admits(name), "{kind:?} `{name}` was read");
            if kind != NameKind::Line {
                let path = Path::new(name);
                assert!(
                    !name.is_empty()
                        && !path.is_absolute()
                        && path.components().all(|c| matches!(c, std::path::Component::Normal(_))),
                    "{kind:?} `{name}` could name a path out"
                );
            }
        }
        let _ = journal.step_outcomes();
        let _ = journal.finished();
        let _ = journal.run_id();
    }
    let outer = tempfile::tempdir().unwrap();
    let scratch = outer.path().join("scratch");
    std::fs::create_dir(&scratch).unwrap();
    let small = snapshot::Limits { bytes: 1 << 20, entries: 1000 };
    let _ = snapshot::unpack(archive, "fuzz.tar", &scratch, small);
    let beside: Vec<_> = std::fs::read_dir(outer.path()).unwrap().collect();
    assert_eq!(beside.len(), 1, "a snapshot entry landed outside the scratch directory");
});
