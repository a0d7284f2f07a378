//! Source hashing throughput: pik's tree digest against the raw read rate of the same files.
//! Usage: `cargo bench --bench source_digest -- [TREE]` (default: $PIK_KERNEL_SRC or an extracted
//! tree given by the caller). Prints MB/s for both, and their ratio.

use std::path::PathBuf;
use std::time::Instant;

fn main() {
    let arg = std::env::args().skip(1).find(|a| !a.starts_with('-'));
    let Some(tree) = arg
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("PIK_KERNEL_SRC").map(PathBuf::from))
    else {
        eprintln!("usage: cargo bench --bench source_digest -- <kernel tree>");
        return;
    };
    if !tree.is_dir() {
        eprintln!(
            "{} is not a directory; give an extracted kernel tree",
            tree.display()
        );
        return;
    }
    // Warm the page cache so both measure hashing/reading, not the disk.
    let mut bytes = 0u64;
    let t = Instant::now();
    for e in walkdir::WalkDir::new(&tree).into_iter().flatten() {
        if e.file_type().is_file() {
            bytes += std::fs::read(e.path()).map(|b| b.len() as u64).unwrap_or(0);
        }
    }
    let raw = t.elapsed().as_secs_f64();
    let t = Instant::now();
    let d = pik::source::digest(&pik::source::Source::Tree(tree.clone())).expect("digest");
    let hashed = t.elapsed().as_secs_f64();
    let mb = bytes as f64 / 1e6;
    println!("tree {} ({mb:.0} MB)", tree.display());
    println!("raw sequential read: {raw:.2} s ({:.0} MB/s)", mb / raw);
    println!(
        "pik tree digest:     {hashed:.2} s ({:.0} MB/s) = {}",
        mb / hashed,
        d.to_hex()
    );
    println!("ratio digest/raw: {:.2}", hashed / raw);
}
