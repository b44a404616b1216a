//! Links the code an idle agent runs together (docs/agent.md, "Code after the start").
//!
//! An idle `shoal agent` runs about a megabyte of the binary's code, spread over all of it:
//! every page it runs maps the 64–128 KiB of file around it, so its resident code was most
//! of the binary. `src/hot-code.order` lists that code's symbols, hottest first (written by
//! `bench/hot_code.py` from a release build); the linker places them first in `.text`, so
//! the idle agent's code fills a few contiguous windows. Only the order of the sections
//! changes: the same code, linked elsewhere. Symbols the file names that a build does not
//! have (renamed by a code change) are skipped without a warning; a stale file costs memory,
//! never correctness.
//!
//! Only release builds for `x86_64-unknown-linux-gnu`, where rustc links with its own
//! `rust-lld` (`--symbol-ordering-file` is an lld flag), and only when no other linker is
//! asked for in `RUSTFLAGS` or as the target's linker.

use std::env;

const ORDER: &str = "src/hot-code.order";

fn main() {
    println!("cargo:rerun-if-changed={ORDER}");
    println!("cargo:rerun-if-changed=build.rs");
    println!("cargo:rerun-if-env-changed=CARGO_TARGET_X86_64_UNKNOWN_LINUX_GNU_LINKER");
    let target = env::var("TARGET").unwrap_or_default();
    let release = env::var("PROFILE").is_ok_and(|p| p == "release");
    // A linker named in `RUSTFLAGS`, or in `target.<triple>.linker` (config or environment:
    // Cargo passes it as `RUSTC_LINKER`), may not know the flag: leave the layout out.
    let other_linker = env::var("CARGO_ENCODED_RUSTFLAGS").is_ok_and(|f| f.contains("link"))
        || env::var_os("RUSTC_LINKER").is_some();
    if target != "x86_64-unknown-linux-gnu" || !release || other_linker {
        return;
    }
    let dir = env::var("CARGO_MANIFEST_DIR").unwrap_or_default();
    let order = std::path::Path::new(&dir).join(ORDER);
    if !order.exists() {
        return;
    }
    println!(
        "cargo:rustc-link-arg-bins=-Wl,--symbol-ordering-file={}",
        order.display()
    );
    println!("cargo:rustc-link-arg-bins=-Wl,--no-warn-symbol-ordering");
}
