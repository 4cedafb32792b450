//! Builds the XDP program (`gateway-ebpf`) for `bpfel-unknown-none` and hands the
//! object to the crate through `OUT_DIR`.
//!
//! The eBPF crate is built with Debian's rustc, which ships a prebuilt `core` for
//! the BPF target; `scripts/setup.sh` installs it and
//! `bpf-linker`. The build gets its own target directory so it never mixes
//! artifacts with the host build.

use std::{env, path::PathBuf, process::Command};

const BPF_RUSTC: &str = "/usr/bin/rustc";
const TARGET: &str = "bpfel-unknown-none";

fn main() {
    let manifest_dir = PathBuf::from(env::var("CARGO_MANIFEST_DIR").unwrap());
    let root = manifest_dir.parent().unwrap().to_path_buf();
    let ebpf_dir = root.join("gateway-ebpf");
    let common_dir = root.join("gateway-common");
    for dir in [&ebpf_dir, &common_dir] {
        println!("cargo:rerun-if-changed={}", dir.join("src").display());
        println!(
            "cargo:rerun-if-changed={}",
            dir.join("Cargo.toml").display()
        );
    }
    let target_dir = root.join("target").join("bpf");
    let out_dir = PathBuf::from(env::var("OUT_DIR").unwrap());

    if !std::path::Path::new(BPF_RUSTC).exists() {
        panic!(
            "{BPF_RUSTC} not found: the XDP program is built with Debian's rustc. \
             Run `sudo scripts/setup.sh` (or `cargo xtask setup`) first."
        );
    }

    let cargo = env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let mut cmd = Command::new(cargo);
    cmd.current_dir(&ebpf_dir)
        .args(["build", "--release", "--target", TARGET, "--target-dir"])
        .arg(&target_dir)
        .env("RUSTC", BPF_RUSTC)
        .env("RUSTC_BOOTSTRAP", "1");
    // Nothing of the host build may leak into the BPF build.
    for var in [
        "RUSTC_WRAPPER",
        "RUSTC_WORKSPACE_WRAPPER",
        "RUSTFLAGS",
        "CARGO_ENCODED_RUSTFLAGS",
        "CARGO_TARGET_DIR",
        "CARGO_BUILD_TARGET",
        "CARGO_BUILD_RUSTFLAGS",
        "CARGO_MAKEFLAGS",
        "CARGO_LLVM_COV",
    ] {
        cmd.env_remove(var);
    }
    // BTF for the program: the kernel wants function info for `bpf_loop` callbacks.
    // Warnings are errors, as clippy -D warnings makes them for the host crates
    // (cargo caps lints to `allow` for registry dependencies).
    cmd.env("CARGO_ENCODED_RUSTFLAGS", "-Clink-arg=--btf\x1f-Dwarnings");
    let status = cmd
        .status()
        .unwrap_or_else(|e| panic!("cannot run cargo for the eBPF build: {e}"));
    if !status.success() {
        panic!(
            "building gateway-ebpf failed ({status}). Is bpf-linker installed? \
             Run `sudo scripts/setup.sh`."
        );
    }
    let object = target_dir.join(TARGET).join("release").join("gateway-ebpf");
    std::fs::copy(&object, out_dir.join("gateway-ebpf.o"))
        .unwrap_or_else(|e| panic!("cannot copy {}: {e}", object.display()));
}
