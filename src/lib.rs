//! pik: a cross-compilation and kernel build accelerator for Raspberry Pi 5 kernels, aimed at NixOS.
//!
//! The library holds the whole pipeline; `main.rs` only dispatches to the compiler wrapper or
//! the command line. The folders follow the data flow of `pik build` (see `../shared/DESIGN.md`):
//! `input` (target data, source, patches, workspace, toolchain, Kconfig) → `build` (the plan,
//! kbuild, progress, the orchestration) → `output` (layout, dev output, manifest, memo, firmware
//! view, publishing) → `nix` (NAR, expression, derivation builder); `wrapper` is the per-compile
//! hot path, `dist` the distcc client it sends compiles to builders with, `cmd` the
//! subcommands, `bench` the benchmark (`pik bench`, and what the `kernel_cache` harness times
//! with).

/// `println!` that fails instead of panicking when standard output is closed or full
/// (`pik targets > /dev/full`): an `anyhow` error to pass on with `?`.
#[macro_export]
macro_rules! outln {
    ($($arg:tt)*) => {{
        use std::io::Write as _;
        writeln!(std::io::stdout().lock(), $($arg)*)
            .map_err(|e| anyhow::anyhow!("writing to standard output: {e}"))
    }};
}

pub mod bench;
mod build;
pub mod cmd;
pub mod dist;
mod fsutil;
mod input;
mod interrupt;
mod nix;
mod output;
mod paths;
pub mod settings;
pub mod store;
pub mod wrapper;

/// Kernel sources and their content digest (for `benches/source_digest`).
pub mod source {
    pub use crate::input::source::{digest, Source};
}
