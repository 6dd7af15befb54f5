//! Builds `stockade-init`, the sandbox's pid 1 (`src/sys/init/program.rs`): a static program
//! without the C library, about a kilobyte, which the library embeds and runs from a sealed
//! memfd. It is compiled with the same `rustc` and target as the library.

use std::env;
use std::path::PathBuf;
use std::process::Command;

fn main() {
    let source = "src/sys/init/program.rs";
    println!("cargo:rerun-if-changed={source}");
    // The modules it takes in (serve mode, the wire format it shares with the library).
    println!("cargo:rerun-if-changed=src/sys/init/serve.rs");
    println!("cargo:rerun-if-changed=src/sys/init/wire.rs");
    println!("cargo:rerun-if-changed=build.rs");
    let out = PathBuf::from(env::var_os("OUT_DIR").expect("cargo sets OUT_DIR")).join("stockade-init");
    let rustc = env::var_os("RUSTC").unwrap_or_else(|| "rustc".into());
    let target = env::var("TARGET").expect("cargo sets TARGET");
    let arch = env::var("CARGO_CFG_TARGET_ARCH").unwrap_or_default();
    if !matches!(arch.as_str(), "x86_64" | "aarch64") {
        panic!("stockade's init program is written for x86_64 and aarch64, not {arch}");
    }
    let mut cmd = Command::new(rustc);
    cmd.args(["--edition=2024", "--crate-type=bin", "--crate-name=stockade_init", "--target", &target])
        .args(["-C", "opt-level=s", "-C", "panic=abort", "-C", "debuginfo=0", "-C", "strip=symbols"])
        .args(["-C", "relocation-model=static", "-C", "target-feature=+crt-static"])
        .args(["-C", "link-arg=-nostartfiles", "-C", "link-arg=-nostdlib", "-C", "link-arg=-static"])
        .arg("-o")
        .arg(&out)
        .arg(source);
    if let Some(linker) = env::var_os("RUSTC_LINKER") {
        cmd.arg("-C").arg({
            let mut arg = std::ffi::OsString::from("linker=");
            arg.push(linker);
            arg
        });
    }
    let status = cmd.status().expect("run rustc for the init program");
    if !status.success() {
        // Cross-checking (`cargo check --target ...`) without that target's linker: the crate
        // type-checks, and sandboxes with a pid namespace would fail at spawn (`Stage::Init`).
        if env::var("HOST").ok().as_deref() != Some(target.as_str()) {
            println!(
                "cargo:warning=stockade's init program could not be linked for {target}: set that target's linker; sandboxes with a pid namespace would fail at spawn"
            );
            std::fs::write(&out, b"").expect("write an empty init program");
            return;
        }
        panic!("building stockade's init program ({source}) failed: {status}");
    }
}
