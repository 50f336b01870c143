//! The command line of `heex-agent`. Public so packaging can render man pages and shell
//! completions from the very definition the binary parses.

use std::path::PathBuf;

use clap::{Parser, Subcommand};

use crate::config::DEFAULT_CONFIG_PATH;

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
