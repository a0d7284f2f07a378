//! The host fingerprint every record carries: CPU, cores, memory, OS, kernel, toolchain and
//! pik versions. Read once per bench from /proc, /etc/os-release, uname and the tools'
//! `--version`; anything unreadable is left empty rather than failing a bench.

use super::record::Host;
use crate::input::toolchain::first_line_of;
use std::path::Path;

/// The fingerprint of this machine; `cross_cc` is the cross compiler the builds use,
/// `ccache` whether a ccache scenario runs.
pub fn fingerprint(cross_cc: &Path, ccache: bool) -> Host {
    let cpuinfo = std::fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
    let meminfo = std::fs::read_to_string("/proc/meminfo").unwrap_or_default();
    let os = std::fs::read_to_string("/etc/os-release").unwrap_or_default();
    let (hostname, kernel) = uname();
    let tool = |t: &str| first_line_of(t, &["--version"]).unwrap_or_default();
    Host {
        hostname,
        cpu_model: cpu_model(&cpuinfo),
        cores: std::thread::available_parallelism()
            .map(|n| n.get() as u64)
            .unwrap_or(0),
        memory_bytes: mem_total(&meminfo),
        os: os_name(&os),
        kernel,
        toolchain: tool(&cross_cc.to_string_lossy()),
        make: tool("make"),
        ccache: ccache.then(|| tool("ccache")),
        pik_version: env!("CARGO_PKG_VERSION").to_string(),
        pik_blake3: std::env::current_exe()
            .ok()
            .and_then(|p| crate::fsutil::hash_file(&p).ok())
            .unwrap_or_default(),
    }
}

/// The hostname, and `<release> <machine>`.
fn uname() -> (String, String) {
    // SAFETY: utsname is plain old data; uname(2) fills it.
    let mut u: libc::utsname = unsafe { std::mem::zeroed() };
    // SAFETY: a valid pointer to a local.
    if unsafe { libc::uname(&mut u) } != 0 {
        return Default::default();
    }
    let field = |f: &[libc::c_char]| {
        let bytes: Vec<u8> = f
            .iter()
            .take_while(|&&c| c != 0)
            .map(|&c| c as u8)
            .collect();
        String::from_utf8_lossy(&bytes).into_owned()
    };
    (
        field(&u.nodename),
        format!("{} {}", field(&u.release), field(&u.machine)),
    )
}

/// `model name` (x86), else `Model` (a Raspberry Pi's board), else the arm64 CPU part.
fn cpu_model(cpuinfo: &str) -> String {
    let value = |key: &str| {
        cpuinfo.lines().find_map(|l| {
            let (k, v) = l.split_once(':')?;
            (k.trim() == key).then(|| v.trim().to_string())
        })
    };
    value("model name")
        .or_else(|| value("Model"))
        .or_else(|| {
            value("CPU part").map(|p| {
                let implementer = value("CPU implementer").unwrap_or_default();
                format!("CPU implementer {implementer} part {p}")
            })
        })
        .unwrap_or_default()
}

/// `MemTotal` in bytes.
fn mem_total(meminfo: &str) -> u64 {
    meminfo
        .lines()
        .find_map(|l| l.strip_prefix("MemTotal:"))
        .and_then(|v| v.split_whitespace().next()?.parse::<u64>().ok())
        .map_or(0, |kib| kib * 1024)
}

/// `PRETTY_NAME` of os-release, unquoted.
fn os_name(os_release: &str) -> String {
    os_release
        .lines()
        .find_map(|l| l.strip_prefix("PRETTY_NAME="))
        .map(|v| v.trim_matches('"').to_string())
        .unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn proc_files_are_read() {
        let x86 = "processor\t: 0\nmodel name\t: AMD EPYC 7B13\nprocessor\t: 1\n";
        assert_eq!(cpu_model(x86), "AMD EPYC 7B13");
        let pi = "processor\t: 0\nCPU implementer\t: 0x41\nCPU part\t: 0xd0b\n\n\
                  Model\t\t: Raspberry Pi 5 Model B Rev 1.0\n";
        assert_eq!(cpu_model(pi), "Raspberry Pi 5 Model B Rev 1.0");
        assert_eq!(
            cpu_model("CPU implementer\t: 0x41\nCPU part\t: 0xd0b\n"),
            "CPU implementer 0x41 part 0xd0b"
        );
        assert_eq!(mem_total("MemTotal:       24567890 kB\n"), 24567890 * 1024);
        assert_eq!(
            os_name("NAME=\"Debian\"\nPRETTY_NAME=\"Debian GNU/Linux 12 (bookworm)\"\n"),
            "Debian GNU/Linux 12 (bookworm)"
        );
        let h = fingerprint(Path::new("true"), false);
        assert!(
            h.cores > 0 && h.memory_bytes > 0 && !h.kernel.is_empty(),
            "{h:?}"
        );
    }
}
