//! What the user sees while pik works: a live bar on a terminal (phase, objects compiled of the
//! expected total, elapsed, ETA), plain log lines otherwise, or JSON events with `--json`.

use indicatif::{ProgressBar, ProgressStyle};
use serde_json::{json, Value};
use std::io::{IsTerminal, Write};
use std::time::{Duration, Instant};

/// How progress is shown.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    /// A live bar on stderr.
    Bar,
    /// Plain lines on stderr.
    Plain,
    /// JSON events, one per line, on stdout.
    Json,
}

/// The progress reporter of one command.
pub struct Reporter {
    mode: Mode,
    bar: Option<ProgressBar>,
    phase: String,
    started: Instant,
    compiled: u64,
    expected: Option<u64>,
    last_plain: Instant,
}

impl Reporter {
    /// A reporter for `json` mode, else a bar when stderr is a terminal, else plain lines.
    pub fn new(json: bool) -> Reporter {
        Reporter::with_mode(if json {
            Mode::Json
        } else if std::io::stderr().is_terminal() {
            Mode::Bar
        } else {
            Mode::Plain
        })
    }

    /// A reporter in the given mode (a build log, such as Nix's, wants plain lines even when
    /// its stderr is a pseudo-terminal).
    pub fn with_mode(mode: Mode) -> Reporter {
        Reporter {
            mode,
            bar: None,
            phase: String::new(),
            started: Instant::now(),
            compiled: 0,
            expected: None,
            last_plain: Instant::now(),
        }
    }

    fn emit(&self, v: Value) {
        let mut out = std::io::stdout().lock();
        let _ = writeln!(out, "{v}");
        let _ = out.flush();
    }

    fn line(&self, text: &str) {
        match &self.bar {
            Some(b) => b.println(text),
            None => eprintln!("{text}"),
        }
    }

    /// Enters a phase (`source`, `workspace`, `kconfig`, `build`, `install`, `output`).
    pub fn phase(&mut self, phase: &str, detail: &str) {
        self.phase = phase.to_string();
        match self.mode {
            Mode::Json => self.emit(json!({"event": "phase", "phase": phase, "detail": detail,
                "elapsed_s": self.started.elapsed().as_secs_f64()})),
            Mode::Plain => eprintln!("pik: [{phase}] {detail}"),
            Mode::Bar => {
                if let Some(b) = &self.bar {
                    b.finish_and_clear();
                }
                self.line(&format!("pik: [{phase}] {detail}"));
                let b = ProgressBar::new_spinner();
                b.set_style(
                    ProgressStyle::with_template("{spinner} [{elapsed_precise}] {prefix} {msg}")
                        .unwrap(),
                );
                b.set_prefix(phase.to_string());
                b.enable_steady_tick(Duration::from_millis(200));
                self.bar = Some(b);
            }
        }
    }

    /// Starts counting compiled objects; `expected` is the total when known (an earlier build).
    pub fn start_compiling(&mut self, expected: Option<u64>) {
        self.expected = expected;
        self.compiled = 0;
        if let (Mode::Bar, Some(b)) = (self.mode, &self.bar) {
            if let Some(n) = expected {
                b.set_length(n);
                b.set_style(
                    ProgressStyle::with_template(
                        "[{elapsed_precise}] {prefix} {bar:30} {pos}/{len} objects, ETA {eta} {msg}",
                    )
                    .unwrap(),
                );
            }
        }
    }

    /// One more object compiled (`name` is its path in the build).
    pub fn compiled(&mut self, name: &str) {
        self.compiled += 1;
        match self.mode {
            Mode::Bar => {
                if let Some(b) = &self.bar {
                    if self.expected.is_some_and(|e| self.compiled > e) {
                        b.set_length(self.compiled);
                    }
                    b.set_position(self.compiled);
                    if self.expected.is_some() {
                        b.set_message(name.to_string());
                    } else {
                        b.set_message(format!("{} objects compiled, {name}", self.compiled));
                    }
                }
            }
            Mode::Plain => {
                if self.last_plain.elapsed() >= Duration::from_secs(15) {
                    self.last_plain = Instant::now();
                    eprintln!(
                        "pik: [{}] {} objects compiled{} ({:.0} s)",
                        self.phase,
                        self.compiled,
                        self.expected
                            .map(|e| format!(" of ~{e}"))
                            .unwrap_or_default(),
                        self.started.elapsed().as_secs_f64()
                    );
                }
            }
            Mode::Json => {
                if self.last_plain.elapsed() >= Duration::from_secs(2) {
                    self.last_plain = Instant::now();
                    self.emit(json!({"event": "progress", "phase": self.phase,
                        "compiled": self.compiled, "expected": self.expected,
                        "elapsed_s": self.started.elapsed().as_secs_f64()}));
                }
            }
        }
    }

    /// Objects compiled so far in this command.
    pub fn compiled_count(&self) -> u64 {
        self.compiled
    }

    /// A warning the user should read.
    pub fn warn(&self, msg: &str) {
        match self.mode {
            Mode::Json => self.emit(json!({"event": "warning", "message": msg})),
            _ => self.line(&format!("pik: warning: {msg}")),
        }
    }

    /// An informational message.
    pub fn info(&self, msg: &str) {
        match self.mode {
            Mode::Json => self.emit(json!({"event": "info", "message": msg})),
            _ => self.line(&format!("pik: {msg}")),
        }
    }

    /// The final summary: JSON event, or the human text.
    pub fn finish(&mut self, summary: Value, human: &str) {
        if let Some(b) = self.bar.take() {
            b.finish_and_clear();
        }
        match self.mode {
            Mode::Json => self.emit(json!({"event": "summary", "summary": summary})),
            _ => eprintln!("{human}"),
        }
    }

    /// Reports a failure (JSON mode only: other modes print the error from `main`).
    pub fn fail(&mut self, err: &anyhow::Error) {
        if let Some(b) = self.bar.take() {
            b.abandon();
        }
        if self.mode == Mode::Json {
            self.emit(json!({"event": "error", "message": format!("{err:#}")}));
        }
    }
}
