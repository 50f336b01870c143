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
    /// Log lines on stderr: `text`, or `json` (one JSON object per event, for a collector).
    #[arg(long, global = true, env = "HEEX_LOG_FORMAT", default_value = "text")]
    pub log_format: heex_proto::LogFormat,
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
    /// Queue one report (a JSON value) for the cloud; succeeds once it is durable on disk.
    ///
    /// Works whether or not the daemon runs; the daemon delivers it when connected.
    #[command(group = clap::ArgGroup::new("input").required(true).multiple(false))]
    Report {
        /// Configuration file.
        #[arg(long, env = "HEEX_AGENT_CONFIG", default_value = DEFAULT_CONFIG_PATH)]
        config: PathBuf,
        /// The report as JSON text.
        #[arg(long, group = "input")]
        data: Option<String>,
        /// Read the report from this file (`-` for standard input).
        #[arg(long, group = "input")]
        file: Option<PathBuf>,
        /// Read the report from standard input.
        #[arg(value_name = "-", group = "input", value_parser = clap::builder::PossibleValuesParser::new(["-"]))]
        stdin: Option<String>,
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
