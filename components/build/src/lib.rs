//! Used from `build.rs` scripts (the host's and the test suite's) to compile adapter crates of this
//! workspace into WebAssembly components, the way wasmtime's `test-programs/artifacts` does.
//!
//! It runs a nested `cargo build --target wasm32-wasip2 --profile wasm` with its own target
//! directory (the outer build holds the lock on the main one) and returns the path of each
//! component. Rust's `wasm32-wasip2` target links components directly, so no extra tool is needed.

use std::path::{Path, PathBuf};
use std::process::Command;

/// The target every component is built for.
pub const TARGET: &str = "wasm32-wasip2";

/// Build `packages` (cargo package names of this workspace) as components.
///
/// `subdir` names the nested target directory under `<workspace>/target/`, so independent build
/// scripts do not wait on each other's lock. Returns `(package, path to .wasm)` in input order.
///
/// # Panics
/// With a message saying what to do when the build fails (most often: the target is missing,
/// run `rustup target add wasm32-wasip2`). A build script cannot recover from that.
pub fn build_components(workspace: &Path, subdir: &str, packages: &[&str]) -> Vec<(String, PathBuf)> {
    let target_dir = workspace.join("target").join(subdir);
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".to_string());
    let mut cmd = Command::new(cargo);
    cmd.current_dir(workspace)
        .arg("build")
        .arg("--quiet")
        .arg("--target")
        .arg(TARGET)
        .arg("--profile")
        .arg("wasm")
        .arg("--target-dir")
        .arg(&target_dir);
    for p in packages {
        cmd.arg("-p").arg(p);
    }
    // The outer build's flags (coverage, sanitizers, a native target) must not leak into a
    // wasm build.
    for (k, _) in std::env::vars() {
        if k == "RUSTFLAGS"
            || k == "CARGO_ENCODED_RUSTFLAGS"
            || k == "CARGO_TARGET_DIR"
            || k == "CARGO_BUILD_TARGET"
            || k == "CARGO_BUILD_RUSTFLAGS"
            || k.starts_with("CARGO_PROFILE_")
            || k.starts_with("CARGO_TARGET_")
            || k == "CARGO_LLVM_COV"
            || k == "RUSTC_WORKSPACE_WRAPPER"
        {
            cmd.env_remove(k);
        }
    }
    let out = cmd.output().expect("run cargo to build the adapter components");
    if !out.status.success() {
        let stderr = String::from_utf8_lossy(&out.stderr);
        let hint = if stderr.contains("target may not be installed") || stderr.contains("can't find crate for `core`") {
            "\nThe wasm32-wasip2 target is missing: run `rustup target add wasm32-wasip2`.\n"
        } else {
            ""
        };
        panic!("building the adapter components ({}) failed:{hint}\n{stderr}", packages.join(", "));
    }
    let dir = target_dir.join(TARGET).join("wasm");
    packages
        .iter()
        .map(|p| {
            let file = dir.join(format!("{}.wasm", p.replace('-', "_")));
            assert!(file.exists(), "cargo built {p} but {} is missing", file.display());
            (p.to_string(), file)
        })
        .collect()
}

/// Tell cargo to rerun the build script when the WIT or any of these crate directories change.
pub fn rerun_if_changed(workspace: &Path, dirs: &[&str]) {
    println!("cargo:rerun-if-changed={}", workspace.join("wit").display());
    for d in dirs {
        println!("cargo:rerun-if-changed={}", workspace.join(d).display());
    }
    println!("cargo:rerun-if-changed={}", workspace.join("Cargo.toml").display());
}
