//! Nix: the NAR serialization and hashes of a tree, the kernel package expression written beside
//! an output, and pik as the builder of a derivation.

pub mod builder;
pub mod expr;
pub mod nar;
