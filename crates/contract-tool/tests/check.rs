//! The contract check as `.ci/run` runs it, on temporary copies of the repository's `wit/`
//! changed the ways an author might change it.

use std::path::{Path, PathBuf};
use std::process::Command;

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

/// A copy of today's `wit/` (without its releases) that a test may change.
struct Wit {
    dir: tempfile::TempDir,
}

impl Wit {
    fn today() -> Wit {
        let dir = tempfile::tempdir().unwrap();
        for entry in std::fs::read_dir(repo().join("wit")).unwrap() {
            let path = entry.unwrap().path();
            if path.extension().is_some_and(|e| e == "wit") {
                std::fs::copy(&path, dir.path().join(path.file_name().unwrap())).unwrap();
            }
        }
        Wit { dir }
    }

    fn edit(&self, file: &str, from: &str, to: &str) -> &Self {
        let path = self.dir.path().join(file);
        let text = std::fs::read_to_string(&path).unwrap();
        assert!(text.contains(from), "{file} has no `{from}`");
        std::fs::write(&path, text.replacen(from, to, 1)).unwrap();
        self
    }

    /// Set every file's package version.
    fn version(&self, version: &str) -> &Self {
        for entry in std::fs::read_dir(self.dir.path()).unwrap() {
            let path = entry.unwrap().path();
            let text = std::fs::read_to_string(&path).unwrap();
            let text = text.replacen(
                "package wharf:step@1.0.0;",
                &format!("package wharf:step@{version};"),
                1,
            );
            std::fs::write(&path, text).unwrap();
        }
        self
    }

    /// `wharf-contract check` against the repository's releases: (passed, what it said).
    fn check(&self) -> (bool, String) {
        let out = Command::new(env!("CARGO_BIN_EXE_wharf-contract"))
            .arg("--wit")
            .arg(self.dir.path())
            .arg("--released")
            .arg(repo().join("wit/released"))
            .arg("check")
            .output()
            .unwrap();
        let said = String::from_utf8_lossy(&out.stdout).to_string() + &String::from_utf8_lossy(&out.stderr);
        (out.status.success(), said)
    }
}

const MEASURE: &str = "    measure: func(m: measurement);\n";

#[test]
fn todays_wit_is_its_own_release_and_keeps_the_whole_of_0_1() {
    let (ok, said) = Wit::today().check();
    assert!(ok, "{said}");
    assert!(said.contains("is the released 1.0.0"), "{said}");
    assert!(said.contains("keeps the whole of 0.1.0"), "{said}");
}

#[test]
fn a_removed_function_fails_naming_it() {
    let wit = Wit::today();
    wit.version("1.1.0").edit("log.wit", MEASURE, "");
    let (ok, said) = wit.check();
    assert!(!ok, "{said}");
    assert!(said.contains("1.1.0 is not a compatible successor of 1.0.0"), "{said}");
    assert!(said.contains("wharf:step/log") && said.contains("`measure`"), "{said}");
}

#[test]
fn a_changed_record_fails_naming_it() {
    let wit = Wit::today();
    wit.version("1.1.0").edit(
        "log.wit",
        "        column: option<u32>,\n",
        "        column: option<u32>,\n        end-line: option<u32>,\n",
    );
    let (ok, said) = wit.check();
    assert!(!ok, "{said}");
    assert!(
        said.contains("`annotation`") && said.contains("expected 6 fields, found 7"),
        "{said}"
    );
}

#[test]
fn a_changed_function_signature_fails_naming_it() {
    let wit = Wit::today();
    wit.version("1.1.0").edit(
        "log.wit",
        "write: func(level: level, message: string);",
        "write: func(level: level, message: string, source: string);",
    );
    let (ok, said) = wit.check();
    assert!(!ok, "{said}");
    assert!(said.contains("`write`"), "{said}");
}

#[test]
fn an_addition_marked_since_its_version_passes() {
    let wit = Wit::today();
    wit.version("1.1.0").edit(
        "log.wit",
        MEASURE,
        &format!("{MEASURE}\n    /// A new call.\n    @since(version = 1.1.0)\n    sparkle: func(note: string);\n"),
    );
    let (ok, said) = wit.check();
    assert!(ok, "{said}");
    assert!(
        said.contains("1.1.0 is a compatible successor of the released 1.0.0"),
        "{said}"
    );
    // A new interface, marked, passes too.
    std::fs::write(
        wit.dir.path().join("cache.wit"),
        "package wharf:step@1.1.0;\n\n@since(version = 1.1.0)\ninterface cache {\n    @since(version = 1.1.0)\n    hit: func() -> bool;\n}\n",
    )
    .unwrap();
    wit.edit(
        "world.wit",
        "    import deploy;\n",
        "    import deploy;\n    @since(version = 1.1.0)\n    import cache;\n",
    );
    let (ok, said) = wit.check();
    assert!(ok, "{said}");
}

#[test]
fn an_addition_without_since_fails_naming_it() {
    let wit = Wit::today();
    wit.version("1.1.0").edit(
        "log.wit",
        MEASURE,
        &format!("{MEASURE}    sparkle: func(note: string);\n"),
    );
    let (ok, said) = wit.check();
    assert!(!ok, "{said}");
    assert!(
        said.contains("without `@since(version = 1.1.0)`: log.sparkle"),
        "{said}"
    );
}

#[test]
fn a_change_without_a_new_version_fails() {
    let wit = Wit::today();
    wit.edit(
        "log.wit",
        MEASURE,
        &format!("{MEASURE}    @since(version = 1.0.0)\n    sparkle: func(note: string);\n"),
    );
    let (ok, said) = wit.check();
    assert!(!ok, "{said}");
    assert!(
        said.contains("wit/ changed but its version is still 1.0.0, which is released"),
        "{said}"
    );
    // Docs may change without a new version: they are not part of what a step links to.
    let wit = Wit::today();
    wit.edit("log.wit", "/// Step logs,", "/// Logs of a step,");
    let (ok, said) = wit.check();
    assert!(ok, "{said}");
}

#[test]
fn a_removal_at_a_new_major_version_is_allowed_but_not_one_that_drops_0_1() {
    // 2.0 is where breaking changes go; 0.1 steps are then no longer read.
    let wit = Wit::today();
    wit.version("2.0.0").edit("log.wit", MEASURE, "");
    let (ok, said) = wit.check();
    assert!(ok, "{said}");
    assert!(said.contains("first of its major version"), "{said}");
}

#[test]
fn the_reference_is_generated_from_wit_and_drift_is_caught() {
    let doc = Command::new(env!("CARGO_BIN_EXE_wharf-contract"))
        .current_dir(repo())
        .args(["doc", "--check", "docs/contract.md"])
        .output()
        .unwrap();
    assert!(doc.status.success(), "{}", String::from_utf8_lossy(&doc.stderr));
    let wit = Wit::today();
    wit.edit("log.wit", "/// Step logs,", "/// Logs of a step,");
    let drift = Command::new(env!("CARGO_BIN_EXE_wharf-contract"))
        .current_dir(repo())
        .arg("--wit")
        .arg(wit.dir.path())
        .args(["doc", "--check", "docs/contract.md"])
        .output()
        .unwrap();
    assert!(!drift.status.success());
    assert!(String::from_utf8_lossy(&drift.stderr).contains("docs/contract.md is not what wit/ says"));
}
