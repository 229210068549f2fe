//! Builds the guest workspace (`steps/`: the built-in steps and the example step) for
//! wasm32-wasip2 and embeds the built-in steps in the binary as `builtin:NAME`. Test steps
//! are not here: the tests build their own workspace (`tests/steps`).
//!
//! The nested cargo gets its own target directory: the outer build holds the lock on ours.
//! A toolchain without the wasm target gets it from rustup, as `rust-toolchain.toml` asks
//! (rustup adds a toolchain file's targets only when it installs the toolchain itself);
//! where rustup cannot, the build stops with the command that adds it. Cargo runs this
//! script only once the dependencies it schedules first are built, so that is no earlier
//! than a few minutes into a first build; `rustup toolchain install`, run in the repository
//! before it, installs the pinned toolchain with the target.

use std::env;
use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::process::Command;

const TARGET: &str = "wasm32-wasip2";
/// Built-in steps: crate `step-NAME` in `steps/NAME`, embedded as `builtin:NAME`.
const BUILTINS: &[&str] = &[
    "analysis",
    "build",
    "exec",
    "finish",
    "http-gate",
    "push",
    "render",
    "upgrade",
    "version",
];
/// Example steps copied next to the pipeline that uses them: (artifact, destination).
const EXAMPLE_STEPS: &[(&str, &str)] = &[("greet", "examples/hello/greet.wasm")];

fn main() {
    let manifest_dir = PathBuf::from(env::var("CARGO_MANIFEST_DIR").unwrap());
    let root = manifest_dir.parent().unwrap().to_path_buf();
    for watched in ["steps", "wit", "examples/hello/greet"] {
        println!("cargo:rerun-if-changed={}", root.join(watched).display());
    }

    let target_dir = env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .map(|dir| if dir.is_absolute() { dir } else { root.join(dir) })
        .unwrap_or_else(|| root.join("target"))
        .join("guests");

    let artifacts = target_dir.join(TARGET).join("release");
    let out = PathBuf::from(env::var("OUT_DIR").unwrap()).join("builtins.rs");

    if !target_installed() {
        if let Err(why) = add_target() {
            panic!(
                "\n\nwharf embeds its built-in steps, which build for {TARGET}, and this toolchain lacks that target ({why}). Add it with:\n\n    rustup target add {TARGET}\n"
            );
        }
        println!(
            "cargo:warning=added the {TARGET} target to this toolchain with rustup (rust-toolchain.toml names it)"
        );
    }
    build_guests(&root, &target_dir);

    let mut code = String::from("/// Built-in steps, embedded at build time: (name, component bytes).\n");
    code.push_str("pub static BUILTINS: &[(&str, &[u8])] = &[\n");
    for name in BUILTINS {
        let wasm = artifacts.join(format!("step_{}.wasm", name.replace('-', "_")));
        assert!(
            wasm.exists(),
            "built-in step {name} was not built: {} is missing",
            wasm.display()
        );
        writeln!(
            code,
            "    ({name:?}, include_bytes!({:?})),",
            wasm.display().to_string()
        )
        .unwrap();
    }
    code.push_str("];\n");
    std::fs::write(out, code).unwrap();

    for (artifact, destination) in EXAMPLE_STEPS {
        let built = artifacts.join(format!("{artifact}.wasm"));
        copy_if_changed(&built, &root.join(destination));
    }

    println!("cargo:rustc-env=WHARF_COMMIT={}", commit(&root));
}

/// The commit the build comes from, read from `.git` (no git needed); `unknown` outside a
/// checkout, as in a crate downloaded from a registry.
fn commit(root: &Path) -> String {
    let git = root.join(".git");
    let head_file = git.join("HEAD");
    println!("cargo:rerun-if-changed={}", head_file.display());
    let Ok(head) = std::fs::read_to_string(&head_file) else {
        return "unknown".into();
    };
    let head = head.trim();
    let Some(reference) = head.strip_prefix("ref: ") else {
        return head.chars().take(12).collect();
    };
    let loose = git.join(reference);
    println!("cargo:rerun-if-changed={}", loose.display());
    println!("cargo:rerun-if-changed={}", git.join("packed-refs").display());
    let hash = std::fs::read_to_string(&loose).ok().or_else(|| {
        let packed = std::fs::read_to_string(git.join("packed-refs")).ok()?;
        packed
            .lines()
            .find_map(|l| l.strip_suffix(reference).map(|h| h.trim().to_string()))
    });
    match hash {
        Some(h) if h.trim().len() >= 12 => h.trim().chars().take(12).collect(),
        _ => "unknown".into(),
    }
}

/// `rustup target add` for the toolchain this build runs with.
fn add_target() -> Result<(), String> {
    let mut rustup = Command::new("rustup");
    rustup.args(["target", "add", TARGET]);
    if let Ok(toolchain) = env::var("RUSTUP_TOOLCHAIN") {
        rustup.args(["--toolchain", &toolchain]);
    }
    // Its progress is ours to show: our stdout is cargo's directive channel.
    rustup.stdout(std::process::Stdio::from(std::io::stderr()));
    match rustup.status() {
        Ok(status) if status.success() && target_installed() => Ok(()),
        Ok(status) if status.success() => {
            Err("rustup counts it as added, yet the toolchain has no standard library for it".into())
        }
        Ok(status) => Err(format!("`rustup target add {TARGET}` failed: {status}")),
        Err(e) => Err(format!("rustup cannot be run: {e}")),
    }
}

fn target_installed() -> bool {
    let rustc = env::var("RUSTC").unwrap_or_else(|_| "rustc".into());
    let Ok(out) = Command::new(rustc).args(["--print", "sysroot"]).output() else {
        return false;
    };
    let sysroot = String::from_utf8_lossy(&out.stdout).trim().to_string();
    Path::new(&sysroot)
        .join("lib/rustlib")
        .join(TARGET)
        .join("lib")
        .exists()
}

fn build_guests(root: &Path, target_dir: &Path) {
    let cargo = env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let mut cmd = Command::new(cargo);
    cmd.args(["build", "--release", "--workspace", "--target", TARGET])
        .arg("--manifest-path")
        .arg(root.join("steps/Cargo.toml"))
        .arg("--target-dir")
        .arg(target_dir);
    // Flags meant for the host build must not leak into the guest build; clippy's wrapper
    // would lint the guests on every `cargo clippy`.
    for var in [
        "CARGO_ENCODED_RUSTFLAGS",
        "RUSTFLAGS",
        "CARGO_BUILD_TARGET",
        "CARGO_TARGET_DIR",
        "RUSTC_WORKSPACE_WRAPPER",
        "RUSTC_WRAPPER",
        "CARGO_PRIMARY_PACKAGE",
        "CARGO_MANIFEST_DIR",
        "CARGO_MANIFEST_PATH",
    ] {
        cmd.env_remove(var);
    }
    // Our stdout is cargo's directive channel; the nested build talks on stderr.
    cmd.stdout(std::process::Stdio::from(std::io::stderr()));
    let status = cmd.status().expect("run cargo for the guest workspace");
    assert!(
        status.success(),
        "building the guest steps (steps/Cargo.toml) for {TARGET} failed; see above"
    );
}

fn copy_if_changed(from: &Path, to: &Path) {
    let new = std::fs::read(from).unwrap_or_else(|e| panic!("read {}: {e}", from.display()));
    if std::fs::read(to).ok().as_deref() != Some(&new[..]) {
        std::fs::write(to, new).unwrap_or_else(|e| panic!("write {}: {e}", to.display()));
    }
}
