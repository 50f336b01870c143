//! The command line of `heex-agent`, as its `main.rs` defines it.
//!
//! The agent's clap definition lives in its binary, out of reach of this crate, so it is
//! repeated here for the man pages and completions. The end-to-end test
//! `tests/tests/packaging.rs` compares the help this renders with the real binary's, word for
//! word, so the two cannot drift apart unnoticed.

use std::path::PathBuf;

use clap::{Parser, Subcommand};

/// Where the agent looks for its configuration when no path is given (the agent's
/// `config::DEFAULT_CONFIG_PATH`).
pub const DEFAULT_CONFIG_PATH: &str = "/etc/heex/agent.toml";

/// Heex agent: keeps this machine's mTLS session to the Heex cloud.
#[derive(Debug, Parser)]
#[command(name = "heex-agent", version)]
pub struct Cli {
    /// What to do.
    #[command(subcommand)]
    pub command: Command,
}

/// The agent's subcommands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run the daemon until SIGTERM or SIGINT.
    Run {
        /// Configuration file.
        #[arg(long, env = "HEEX_AGENT_CONFIG", default_value = DEFAULT_CONFIG_PATH)]
        config: PathBuf,
    },
    /// Show whether the daemon is connected, since when, and to what.
    Status {
        /// Configuration file.
        #[arg(long, env = "HEEX_AGENT_CONFIG", default_value = DEFAULT_CONFIG_PATH)]
        config: PathBuf,
        /// Print JSON instead of text.
        #[arg(long)]
        json: bool,
    },
}
