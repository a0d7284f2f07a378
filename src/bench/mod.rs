//! `pik bench`: kernel build times across hosts, and the report people compare them by.
//!
//! `runner` runs each scenario (`scenario`: plain make, pik cold/warm/memo, the edits,
//! ccache, dist) N times in fresh build dirs, in rotating order, timing each through `measure`
//! (wall, CPU and peak memory of the process tree via `wait4`, the store's page-cache state,
//! the cache outcome), with `pik` running `pik build` itself and `make` the kernel's make;
//! each run appends a versioned `record` (with the `host` fingerprint) to a JSON-lines file.
//! `report` merges files from many hosts into tables, `chart` into an SVG.

pub mod chart;
pub mod host;
mod make;
pub mod measure;
mod pik;
pub mod record;
pub mod report;
pub(crate) mod runner;
pub mod scenario;

pub use runner::claim_dir;
pub use scenario::Scenario;
