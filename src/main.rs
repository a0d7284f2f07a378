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
    if !name.to_string_lossy().starts_with("pik") {
        std::process::exit(pik::wrapper::run_masquerade(&name, args.collect()));
    }
    let rest: Vec<_> = args.collect();
    if rest.first().is_some_and(|a| a == "cc") && rest.len() >= 2 {
        std::process::exit(pik::wrapper::run_cc(&rest[1], rest[2..].to_vec()));
    }
    match pik::cli::run() {
        Ok(code) => code,
        Err(e) => {
            eprintln!("pik: error: {e:#}");
            ExitCode::from(1)
        }
    }
}
