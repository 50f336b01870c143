//! The Heex agent daemon.
//!
//! `heex-agent run` holds one persistent mTLS session to the cloud gateway using the device
//! certificate written by heex-installer (never an API key): Hello with system facts, then
//! heartbeats and periodic facts, reconnecting with jittered exponential backoff when the
//! path fails. It reports to systemd (`sd_notify`) and keeps `<state_dir>/status.json`
//! current for `heex-agent status`.
//!
//! The binary is a thin shell over this library; every module is usable on its own.
#![forbid(unsafe_code)]
#![warn(missing_docs)]

pub mod backoff;
pub mod cli;
pub mod config;
pub mod credentials;
pub mod daemon;
pub mod delivery;
pub mod facts;
pub mod frames;
pub mod intake;
pub mod notify;
pub mod outbox;
pub mod reconnect;
pub mod renew;
pub mod report;
pub mod session;
pub mod status;

use std::path::Path;

use heex_proto::exit;

pub use config::Config;
pub use credentials::Credentials;

/// Why the agent could not do what was asked. Each message is one line for the user.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum AgentError {
    /// The configuration is missing or invalid.
    #[error(transparent)]
    Config(#[from] config::ConfigError),
    /// The credentials are missing or corrupt.
    #[error(transparent)]
    Credentials(#[from] credentials::CredentialsError),
    /// The daemon could not start.
    #[error(transparent)]
    Daemon(#[from] daemon::DaemonError),
    /// The async runtime could not be built.
    #[error("cannot start the runtime: {0}")]
    Runtime(std::io::Error),
    /// A report could not be queued.
    #[error(transparent)]
    Report(#[from] outbox::OutboxError),
    /// The report input could not be read.
    #[error("cannot read the report from {0}")]
    ReportInput(String),
    /// Neither the outbox nor the report socket may be used by this user.
    #[error("{0}")]
    ReportAccess(String),
}

impl AgentError {
    /// The process exit code for this error (see [`heex_proto::exit`]).
    pub fn exit_code(&self) -> i32 {
        match self {
            AgentError::Config(_) | AgentError::Credentials(_) => exit::CONFIG,
            AgentError::Daemon(daemon::DaemonError::Backoff(_)) => exit::CONFIG,
            AgentError::Daemon(daemon::DaemonError::Outbox(_)) => exit::FILE_ERROR,
            AgentError::Daemon(_) | AgentError::Runtime(_) => exit::SOFTWARE,
            AgentError::Report(e) => report::exit_code(e),
            AgentError::ReportInput(_) | AgentError::ReportAccess(_) => exit::FILE_ERROR,
        }
    }
}

/// Loads the configuration and the credentials it points to.
pub fn load(config_path: &Path) -> Result<(Config, Credentials), AgentError> {
    let config = Config::load(config_path)?;
    // Finish or discard a certificate renewal a crash interrupted, before loading the pair.
    renew::reconcile(&renew::CredentialFiles::new(
        config.key_path(),
        config.cert_path(),
    ));
    let creds = Credentials::load(&config)?;
    Ok((config, creds))
}

/// Runs the daemon on a current-thread runtime until SIGTERM or SIGINT.
///
/// One thread is plenty for one session, and keeps the resident footprint small.
pub fn run(config_path: &Path) -> Result<(), AgentError> {
    let (config, creds) = load(config_path)?;
    let runtime = tokio::runtime::Builder::new_current_thread()
        // A handful of descriptors to watch: no need for room for 1024 events per poll.
        .max_io_events_per_tick(32)
        .enable_all()
        .build()
        .map_err(AgentError::Runtime)?;
    let notifier = notify::Notifier::from_env();
    // Boxed: the daemon's future (several KiB) is then not copied onto the main stack, whose
    // deepest point stays resident for the life of the process.
    runtime.block_on(Box::pin(daemon::run_until_signal(
        &config, &creds, &notifier,
    )))?;
    Ok(())
}

/// The text `heex-agent status` prints: human-readable, or JSON with `json`.
pub fn status(config_path: &Path, json: bool) -> Result<String, AgentError> {
    let config = Config::load(config_path)?;
    let report = status::report(&config);
    if json {
        // Serializing a struct of plain fields cannot fail.
        Ok(serde_json::to_string_pretty(&report).unwrap_or_default() + "\n")
    } else {
        Ok(report.render())
    }
}

/// Logs to stderr at `info`; `RUST_LOG` overrides with `level` or `target=level` directives
/// (e.g. `debug`, `heex_agent=debug,rustls=warn`).
///
/// `Targets` rather than `EnvFilter`: it needs no regular-expression engine, which keeps the
/// binary and its resident memory small.
pub fn init_logging(format: heex_proto::LogFormat) {
    use std::io::IsTerminal;
    use tracing_subscriber::filter::{LevelFilter, Targets};
    use tracing_subscriber::prelude::*;
    let default = || Targets::new().with_default(LevelFilter::INFO);
    let filter = match std::env::var("RUST_LOG") {
        Ok(spec) if !spec.trim().is_empty() => {
            spec.parse::<Targets>().unwrap_or_else(|_| default())
        }
        _ => default(),
    };
    let layer = tracing_subscriber::fmt::layer().with_writer(std::io::stderr);
    let _ = match format {
        heex_proto::LogFormat::Text => tracing_subscriber::registry()
            .with(layer.with_ansi(std::io::stderr().is_terminal()))
            .with(filter)
            .try_init(),
        heex_proto::LogFormat::Json => tracing_subscriber::registry()
            .with(
                layer
                    .json()
                    .flatten_event(true)
                    .with_current_span(false)
                    .with_span_list(false),
            )
            .with(filter)
            .try_init(),
    };
}
