//! Stopping promptly on Ctrl-C or SIGTERM, in every phase: the handler records the interruption
//! and passes it to the external program running at the time (tar, patch, make and every compiler
//! it started: each runs in a process group of its own), and pik's own long loops (hashing,
//! linking, walking trees) check [`check`] as they go. The error then unwinds like any other
//! failure, so temp dirs are removed and the previous output is left as it was.

use anyhow::{bail, Context, Result};
use std::os::unix::process::CommandExt;
use std::process::{Child, Command, Output, Stdio};
use std::sync::atomic::{AtomicBool, AtomicI32, Ordering};

static INTERRUPTED: AtomicBool = AtomicBool::new(false);

/// The process group of the external program running now (0 = none).
static CHILD_PGID: AtomicI32 = AtomicI32::new(0);

/// Installs the SIGINT/SIGTERM/SIGHUP handler.
pub fn install_handler() {
    let _ = ctrlc::set_handler(|| {
        INTERRUPTED.store(true, Ordering::SeqCst);
        let pgid = CHILD_PGID.load(Ordering::SeqCst);
        if pgid > 0 {
            // SAFETY: sending a signal to a process group pik created; no memory is touched.
            unsafe {
                libc::kill(-pgid, libc::SIGINT);
            }
        }
    });
}

/// Whether pik was asked to stop.
pub fn requested() -> bool {
    INTERRUPTED.load(Ordering::Relaxed)
}

/// Fails with "interrupted" once pik was asked to stop; `during` says what was going on.
pub fn check(during: &str) -> Result<()> {
    if requested() {
        bail!("interrupted (signal received) during {during}");
    }
    Ok(())
}

/// The registration of the external program running now, so that an interruption reaches it;
/// dropped once it has ended.
pub struct Registration(());

impl Drop for Registration {
    fn drop(&mut self) {
        CHILD_PGID.store(0, Ordering::SeqCst);
    }
}

/// Starts `cmd` in a process group of its own and registers it (`what` names it in errors).
pub fn spawn(cmd: &mut Command, what: &str) -> Result<(Child, Registration)> {
    check(what)?;
    let child = cmd
        .process_group(0)
        .spawn()
        .with_context(|| format!("running {what}"))?;
    CHILD_PGID.store(child.id() as i32, Ordering::SeqCst);
    // A signal that came between the check and the registration would otherwise be lost.
    if requested() {
        // SAFETY: signalling the group just created.
        unsafe {
            libc::kill(-(child.id() as i32), libc::SIGINT);
        }
    }
    Ok((child, Registration(())))
}

/// Runs `cmd` to completion like [`Command::output`] (no stdin, output captured),
/// interruptibly.
pub fn output(cmd: &mut Command, what: &str) -> Result<Output> {
    cmd.stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let (child, registration) = spawn(cmd, what)?;
    let out = child
        .wait_with_output()
        .with_context(|| format!("waiting for {what}"))?;
    drop(registration);
    check(what)?;
    Ok(out)
}
