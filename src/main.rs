use std::process::ExitCode;

fn main() -> ExitCode {
    match pik::cli::run() {
        Ok(code) => code,
        Err(e) => {
            eprintln!("pik: error: {e:#}");
            ExitCode::from(1)
        }
    }
}
