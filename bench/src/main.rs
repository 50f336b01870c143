//! `heex-loadgen`: drives a Heex cloud (or, for comparison, an HTTP/1.1 peer such as nginx)
//! with the real protocol and real mTLS, and reports rates, latency percentiles and failures.
//!
//! - `enroll`: enrollments per second, keeping the devices' credentials (`--out`).
//! - `hold`: N sessions with heartbeats from many loopback source addresses, spread over
//!   several processes (one process can hold at most about 19,000 sockets).
//! - `storm`: hold N, let the gateway restart, measure until every session is back.
//! - `revocations`: hold N sessions on one gateway, revoke them through an API, time each
//!   revoke request to the session's Close.
//! - `table`: heex-cloud and the peer side by side, from `--json` summaries.
#![forbid(unsafe_code)]

mod cli;
mod creds;
mod enroll;
mod hold;
mod outbox;
mod revocations;
mod rss;
mod session;
mod stats;
mod table;
#[cfg(test)]
mod tests;
mod worker;

use clap::Parser;
use heex_proto::exit;

use cli::{Cli, Cmd};

fn main() {
    let cli = match Cli::try_parse() {
        Ok(cli) => cli,
        Err(e) => {
            let code = if e.exit_code() == 0 { 0 } else { exit::USAGE };
            let _ = e.print();
            std::process::exit(code);
        }
    };
    tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn")),
        )
        .init();
    let result = match cli.command {
        Cmd::Enroll(args) => enroll::run(args),
        Cmd::Hold(args) => hold::hold(args),
        Cmd::Storm(args) => hold::storm(args),
        Cmd::Revocations(args) => revocations::run(args),
        Cmd::Outbox(args) => outbox::run(&args),
        Cmd::Table(args) => table::run(args),
        Cmd::Worker { job } => worker::run(&job),
    };
    if let Err(e) = result {
        eprintln!("heex-loadgen: {e:#}");
        std::process::exit(exit::SOFTWARE);
    }
}
