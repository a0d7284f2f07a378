use std::process::ExitCode;

fn main() -> ExitCode {
    // Run as a compiler, ahead of any argument parsing: through a masquerade link named like the
    // compiler, or as `pik cc <compiler> <args…>`. This path runs once per compile.
    let mut args = std::env::args_os();
    let argv0 = args.next().unwrap_or_default();
    let name = std::path::Path::new(&argv0)
        .file_name()
        .unwrap_or_default()
        .to_owned();
    if !is_pik(&name.to_string_lossy()) {
        pik::settings::environment_only();
        std::process::exit(pik::wrapper::run_masquerade(&name, args.collect()));
    }
    let rest: Vec<_> = args.collect();
    // `pik cc <compiler> …` skips clap; `pik cc --help`, `pik cc` alone and any other first
    // argument that is an option (no compiler name starts with `-`) go to clap.
    if rest.first().is_some_and(|a| a == "cc")
        && rest
            .get(1)
            .is_some_and(|c| !c.as_encoded_bytes().starts_with(b"-"))
    {
        pik::settings::environment_only();
        std::process::exit(pik::wrapper::run_cc(&rest[1], rest[2..].to_vec()));
    }
    match pik::cmd::run() {
        Ok(code) => code,
        Err(e) => {
            eprintln!("pik: error: {e:#}");
            ExitCode::from(1)
        }
    }
}

/// pik's own names: `pik…`, also as a Nix store file (`<32-char hash>-pik`, what a derivation's
/// `builder = "${./pik}"` runs). Anything else is a compiler name through a masquerade link.
fn is_pik(name: &str) -> bool {
    let unhashed = match name.split_once('-') {
        Some((h, rest)) if h.len() == 32 && h.bytes().all(|b| b.is_ascii_alphanumeric()) => rest,
        _ => name,
    };
    unhashed.starts_with("pik")
}
