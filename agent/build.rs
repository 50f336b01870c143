//! Link settings for the size-optimised `heex-agent` binary.
//!
//! When the agent is built at opt-level "z" (the `agent-small` profile, which is how it
//! ships) for Linux with glibc, it links the unwinder from `libgcc_eh.a` (what
//! `gcc -static-libgcc` links) instead of `libgcc_s.so.1`: one shared library fewer to map,
//! about 100 KiB less resident memory. With `panic = "abort"` the unwinder only prints
//! backtraces. The binary stays position-independent: linking it `-no-pie` would save
//! another ~100 KiB (no relocations to read and apply at start-up) but give up address
//! randomisation of the agent's own code, a poor trade for a network-facing daemon.
//!
//! Other builds (debug, tests, `--release`) link the default way.
#![forbid(unsafe_code)]

use std::env;

fn main() {
    println!("cargo::rerun-if-changed=build.rs");
    let var = |name: &str| env::var(name).unwrap_or_default();
    let size_build = var("OPT_LEVEL") == "z";
    let linux_gnu = var("CARGO_CFG_TARGET_OS") == "linux" && var("CARGO_CFG_TARGET_ENV") == "gnu";
    if size_build && linux_gnu {
        // Listed with the agent's own libraries, so it precedes std's `-lgcc_s`, which
        // `--as-needed` then drops.
        println!("cargo::rustc-link-lib=static:-bundle,+verbatim=libgcc_eh.a");
    }
}
