//! Distributed compiles over stock `distccd`: the client side of distcc's wire protocol, so a
//! builder needs nothing but Debian's `distcc` package (`apt install distcc`) and pik opens no
//! listening socket.
//!
//! One job per module:
//! - [`hosts`]: distcc's host syntax (`host[:port][/limit][,lzo][,cpp]`, `user@host` for SSH,
//!   `localhost/N`), parsed into [`Host`]s.
//! - [`wire`]: the 12-byte token framing, read strictly and with bounded lengths.
//! - [`lzo`]: LZO1X compression for protocols 2 and 3, decompression bounded by a cap.
//! - [`transport`]: a connection to one host, over TCP or `ssh HOST distccd --inetd`, with
//!   connect and IO timeouts.
//! - [`args`]: which compiles may run remotely and the argv the server gets
//!   ([`remote_argv`], [`pump_argv`]).
//! - [`client`]: one remote compile, protocols 1, 2 and 3 ([`compile`] → [`Reply`] or
//!   [`Failure`]).
//! - [`verify`]: a remote object is an ELF relocatable for the local machine, made by the
//!   local compiler ([`check_object`], [`CompilerIdentity`]).
//! - [`check`]: `pik hosts check`, a probe of every host.
//! - [`config`]: what `pik build` tells its compiles about distribution (`PIK_DIST`).
//! - [`slots`]: the local and remote slots every compile of a build shares (lock files), and
//!   the backoff of failed hosts.
//! - [`model`]: the scheduling model `pik plan` replays a recorded build with.
//!
//! How the compiler wrapper uses it (see each item's documentation):
//!
//! ```text
//! hosts = dist::parse_hosts(&specs)?                 // once per build
//! ident = dist::CompilerIdentity::local(&cc)?        // once per build (cached in memory)
//! argv  = dist::remote_argv(&args)?                  // Err(StayLocal) → compile locally
//! cpp   = run the local preprocessor (-E) with the original args
//! reply = dist::compile(&host, &Job::Preprocessed { argv: &argv, source: &cpp }, &opts)
//!   Err(failure)          → compile locally (count failure.reason(); back the host off)
//!   Ok(reply) !success    → compile locally (the local compiler reports the real error)
//!   Ok(reply) success     → dist::check_object(&reply.object, &ident)?, else locally
//! ```

pub mod args;
pub mod check;
pub mod client;
pub mod config;
pub mod hosts;
pub mod lzo;
pub mod model;
pub mod slots;
pub mod transport;
pub mod verify;
pub mod wire;

pub use args::{pump_argv, pump_job_argv, remote_argv, PumpArgv, StayLocal};
pub use client::{compile, Failure, Job, PumpFile, PumpFileContent, Reply, WaitStatus};
pub use config::{DistConfig, DIST_ENV};
pub use hosts::{parse_host, parse_hosts, Host, Protocol, Transport};
pub use slots::Slots;
pub use transport::{ConnectOptions, SshOptions, Timeouts};
pub use verify::{check_object, CompilerIdentity, Mismatch};
