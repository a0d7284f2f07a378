//! What a build is made from: the target's data, the kernel source and pik's private workspace
//! of it, the patch series, the cross toolchain, and Kconfig (fragments, merge, check).

pub mod configmemo;
pub mod data;
pub mod kconfig;
pub mod patch;
pub mod source;
pub mod target;
pub mod toolchain;
pub mod workspace;
