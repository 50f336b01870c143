//! `heex-agent`: the Heex agent daemon (`run`) and its status command (`status`).
#![forbid(unsafe_code)]

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};
use heex_proto::exit;

/// Heex agent: keeps this machine's mTLS session to the Heex cloud.
#[derive(Parser)]
#[command(name = "heex-agent", version)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run the daemon until SIGTERM or SIGINT.
    Run {
        /// Configuration file.
        #[arg(long, env = "HEEX_AGENT_CONFIG", default_value = heex_agent::config::DEFAULT_CONFIG_PATH)]
        config: PathBuf,
    },
    /// Show whether the daemon is connected, since when, and to what.
    Status {
        /// Configuration file.
        #[arg(long, env = "HEEX_AGENT_CONFIG", default_value = heex_agent::config::DEFAULT_CONFIG_PATH)]
        config: PathBuf,
        /// Print JSON instead of text.
        #[arg(long)]
        json: bool,
    },
}

fn main() -> ExitCode {
    let cli = match Cli::try_parse() {
        Ok(cli) => cli,
        Err(e) => {
            let _ = e.print();
            return code(if e.exit_code() == 0 {
                exit::OK
            } else {
                exit::USAGE
            });
        }
    };
    let result = match cli.command {
        Command::Run { config } => {
            heex_agent::init_logging();
            heex_agent::run(&config)
        }
        Command::Status { config, json } => heex_agent::status(&config, json).map(|text| {
            print!("{text}");
        }),
    };
    match result {
        Ok(()) => code(exit::OK),
        Err(e) => {
            eprintln!("heex-agent: {e}");
            code(e.exit_code())
        }
    }
}

fn code(c: i32) -> ExitCode {
    ExitCode::from(u8::try_from(c).unwrap_or(1))
}
