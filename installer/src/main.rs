//! `heex-installer`: enroll this machine with a Heex cloud. See the library for the flow.
#![forbid(unsafe_code)]

use std::io::IsTerminal;
use std::process::ExitCode;

use clap::Parser;
use heex_installer::{run, Cli, KeyEnv};
use heex_proto::exit;

fn main() -> ExitCode {
    let cli = match Cli::try_parse() {
        Ok(cli) => cli,
        Err(e) => {
            let _ = e.print();
            return if e.exit_code() == 0 {
                ExitCode::SUCCESS
            } else {
                code(exit::USAGE)
            };
        }
    };
    tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .with_ansi(std::io::stderr().is_terminal())
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn")),
        )
        .init();

    let env = KeyEnv::from_process();
    let mut stdout = std::io::stdout().lock();
    match run(&cli, &env, &mut stdout) {
        Ok(_) => ExitCode::SUCCESS,
        Err(e) => {
            drop(stdout);
            eprintln!("error: {e}");
            code(e.exit_code())
        }
    }
}

fn code(c: i32) -> ExitCode {
    ExitCode::from(u8::try_from(c).unwrap_or(70))
}
