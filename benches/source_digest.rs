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
    // A fresh stat cache: the first digest reads every file, the second only stats them.
    let cache = tempfile::tempdir().expect("temp dir");
    std::env::set_var("PIK_CACHE_DIR", cache.path());
    let src = pik::source::Source::Tree(tree.clone());
    let t = Instant::now();
    let d = pik::source::digest(&src).expect("digest");
    let hashed = t.elapsed().as_secs_f64();
    // Files younger than the settle time are never remembered; a tree extracted just now would
    // look cold twice.
    let t = Instant::now();
    let d2 = pik::source::digest(&src).expect("digest");
    let warm = t.elapsed().as_secs_f64();
    assert_eq!(d, d2);
    let mb = bytes as f64 / 1e6;
    println!("tree {} ({mb:.0} MB)", tree.display());
    println!("raw sequential read: {raw:.2} s ({:.0} MB/s)", mb / raw);
    println!(
        "pik tree digest, cold stat cache: {hashed:.2} s ({:.0} MB/s) = {}",
        mb / hashed,
        d.to_hex()
    );
    println!(
        "pik tree digest, warm stat cache: {warm:.2} s ({:.0} MB/s of tree)",
        mb / warm
    );
    println!(
        "ratio digest/raw: cold {:.2}, warm {:.2}",
        hashed / raw,
        warm / raw
    );
}
