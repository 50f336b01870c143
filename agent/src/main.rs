//! `heex-agent`: the Heex agent daemon (`run`) and its status command (`status`).
#![forbid(unsafe_code)]

use std::process::ExitCode;

use clap::Parser;
use heex_agent::cli::{Cli, Command};
use heex_proto::exit;

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
            heex_agent::init_logging(cli.log_format);
            heex_agent::run(&config)
        }
        Command::Report {
            config,
            data,
            file,
            stdin,
        } => heex_agent::report::run(&config, data, file, stdin.is_some()).map(|seq| {
            println!("queued report {seq}");
        }),
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
