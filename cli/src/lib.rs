//! `heex`, the team's command line for a Heex workspace: API keys, members, invitations,
//! devices and the audit log, over the cloud's HTTPS API.
//!
//! The binary's `main.rs` only parses the command line and maps errors to exit codes
//! ([`heex_proto::exit`]); everything else lives here so tests call the same code:
//! [`config`] finds credentials (file or environment), [`trust`] and [`client`] talk to the
//! cloud trusting only its pinned CA, [`commands`] implement each subcommand, [`table`] and
//! [`clipboard`] shape what the user sees, and [`display`] escapes control and formatting
//! characters in everything shown that came from the server.
//!
//! An API key is never logged and never printed, except by `keys create|copy|rotate` (and
//! `invitations accept --json`) when stdout is not a terminal — a script asked for it. On a
//! terminal the key goes to the clipboard (OSC 52) instead.
#![forbid(unsafe_code)]

pub mod cli;
pub mod client;
pub mod clipboard;
pub mod commands;
pub mod config;
pub mod context;
pub mod display;
pub mod error;
pub mod paging;
pub mod table;
pub mod trust;

pub use cli::Cli;
pub use config::Env;
pub use context::Ctx;
pub use error::CliError;

use std::io::Write;

use crate::cli::Command;
use crate::table::Clock;

/// Runs one parsed command line with `env`, writing results to `out`.
pub fn run(cli: &Cli, env: &Env, out: &mut dyn Write) -> Result<(), CliError> {
    let mut ctx = Ctx {
        env,
        out,
        json: cli.json,
        clock: Clock::system(),
    };
    match &cli.command {
        Command::Login(args) => commands::login::login(&mut ctx, args),
        Command::Logout => commands::login::logout(&mut ctx),
        Command::Whoami => commands::whoami::whoami(&mut ctx),
        Command::Keys(cmd) => commands::keys::run(&mut ctx, cmd),
        Command::Members(cmd) => commands::members::run(&mut ctx, cmd),
        Command::Invitations(cmd) => commands::login::invitations(&mut ctx, cmd),
        Command::Devices(cmd) => commands::devices::run(&mut ctx, cmd),
        Command::Reports(cmd) => commands::reports::run(&mut ctx, cmd),
        Command::Audit(args) => commands::audit::run(&mut ctx, args),
        Command::Console => commands::console::console(&mut ctx),
        Command::Completions { shell } => commands::completions(&mut ctx, *shell),
    }
}
