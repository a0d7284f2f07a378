//! pik: a cross-compilation and kernel build accelerator for Raspberry Pi 5 kernels, aimed at NixOS.
//!
//! The library holds the whole pipeline; `main.rs` only parses arguments and reports errors.
//! One module per step of `pik build` (see `../shared/DESIGN.md`):
//! target data → source → patches → Kconfig → kbuild → outputs + manifest.

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

pub mod cachecmd;
pub mod claim;
pub mod cli;
pub mod data;
pub mod dev;
pub mod doctor;
pub mod firmware;
pub mod fsutil;
pub mod interrupt;
pub mod kbuild;
pub mod kconfig;
pub mod manifest;
pub mod memo;
pub mod nar;
pub mod nixbuilder;
pub mod nixexpr;
pub mod output;
pub mod patch;
pub mod paths;
pub mod pipeline;
pub mod progress;
pub mod source;
pub mod target;
pub mod toolchain;
pub mod workspace;
pub mod wrapper;
