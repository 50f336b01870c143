//! `heex`: the team's command line for a Heex workspace. See the library for the commands.
#![forbid(unsafe_code)]

use std::process::ExitCode;

use clap::Parser;
use heex_cli::{run, Cli, Env};
use heex_proto::exit;

fn main() -> ExitCode {
    // Before any thread exists: the local UTC offset can only be read soundly now.
    heex_cli::table::init_local_offset();
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
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn")),
        )
        .init();

    let env = Env::from_process();
    let mut stdout = std::io::stdout().lock();
    match run(&cli, &env, &mut stdout) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            drop(stdout);
            eprintln!("error: {}", heex_cli::display::safe(&e.to_string()));
            code(e.exit_code())
        }
    }
}

fn code(c: i32) -> ExitCode {
    ExitCode::from(u8::try_from(c).unwrap_or(70))
}
