//! Command line of `heex-cloud`.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use clap::{Args, Parser, Subcommand};

pub use crate::datadir::{DataDirArg, InitOptions, WorkspaceOptions};

/// The Heex cloud server: HTTPS API, device CA and mTLS gateway.
#[derive(Debug, Parser)]
#[command(name = "heex-cloud", version, about)]
pub struct Cli {
    /// What to do.
    #[command(subcommand)]
    pub command: Command,
    /// Log lines on stderr: `text`, or `json` (one JSON object per event, for a collector).
    #[arg(long, global = true, env = "HEEX_LOG_FORMAT", default_value = "text")]
    pub log_format: heex_proto::LogFormat,
}

/// `heex-cloud` subcommands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Create a data directory: CA, server certificate, server secret, database, workspace,
    /// owner and the owner's first API key.
    Init(InitArgs),
    /// Serve the HTTPS API and the mTLS gateway (initializing the data directory first if
    /// it is not initialized yet).
    Serve(Box<ServeArgs>),
    /// Manage the workspaces of a data directory (works while `serve` runs).
    #[command(subcommand)]
    Workspaces(WorkspacesCommand),
    /// Break-glass: make an API key for a member, as the host's operator (works while
    /// `serve` runs; audited as an operator action).
    #[command(subcommand)]
    Keys(KeysCommand),
    /// List a workspace's members, as the host's operator.
    #[command(subcommand)]
    Members(MembersCommand),
    /// Write a consistent copy of a SQLite data directory (records and secrets) to one file,
    /// while `serve` runs.
    Backup(BackupArgs),
    /// Make a new data directory from a backup file.
    Restore(RestoreArgs),
    /// Rotate the cloud CA without re-enrolling devices: `rotate`, wait until `status`
    /// shows every device on the new CA, then `retire` (each works while `serve` runs).
    #[command(subcommand)]
    Ca(CaCommand),
}

/// `heex-cloud ca` subcommands.
#[derive(Debug, Subcommand)]
pub enum CaCommand {
    /// Introduce a new CA: device certificates come from it from now on, both CAs are
    /// trusted, and connected agents are sent both and renew onto the new one.
    Rotate(CaArgs),
    /// Where a rotation stands: the CAs, and how many devices still hold a certificate from
    /// the current one.
    Status(CaArgs),
    /// End a rotation: the new CA becomes the only one (the server certificate is
    /// re-issued from it, the old CA's key deleted and the old CA no longer trusted).
    Retire(CaRetireArgs),
}

/// `heex-cloud ca rotate` and `ca status`.
#[derive(Debug, Clone, Args)]
pub struct CaArgs {
    /// Data directory (and store).
    #[command(flatten)]
    pub dir: DataDirArg,
}

/// `heex-cloud ca retire`.
#[derive(Debug, Clone, Args)]
pub struct CaRetireArgs {
    /// Data directory (and store).
    #[command(flatten)]
    pub dir: DataDirArg,
    /// Retire even though some devices still hold a certificate from the old CA: they can
    /// no longer connect and must be enrolled again.
    #[arg(long)]
    pub force: bool,
}

/// `heex-cloud backup`.
#[derive(Debug, Clone, Args)]
pub struct BackupArgs {
    /// Data directory (and store).
    #[command(flatten)]
    pub dir: DataDirArg,
    /// The backup file to write (a new file: written 0600, complete or not at all). It holds
    /// the CA key and the server secret: keep it as safe as the data directory.
    #[arg(long, value_name = "FILE")]
    pub out: PathBuf,
}

/// `heex-cloud restore`.
#[derive(Debug, Clone, Args)]
pub struct RestoreArgs {
    /// The backup file.
    #[arg(long, value_name = "FILE")]
    pub from: PathBuf,
    /// The data directory to create (new, or empty).
    #[arg(long, env = "HEEX_DATA_DIR")]
    pub data_dir: PathBuf,
}

/// `heex-cloud keys` subcommands.
#[derive(Debug, Subcommand)]
pub enum KeysCommand {
    /// Make a key for a current member of a workspace and print it once.
    Create(KeyCreateArgs),
}

/// `heex-cloud keys create`.
#[derive(Debug, Clone, Args)]
pub struct KeyCreateArgs {
    /// Data directory (and store).
    #[command(flatten)]
    pub dir: DataDirArg,
    /// Name of the workspace.
    #[arg(long, default_value = "default")]
    pub workspace: String,
    /// Email of the member who gets the key (a current member: a removed one gets none).
    #[arg(long)]
    pub member: String,
    /// Scope of the key: admin (manage keys, members and devices) or enroll.
    #[arg(long, default_value = "admin")]
    pub scope: heex_proto::api::Scope,
    /// Lifetime of the key (e.g. "7d", "12h"; at most 365 days).
    #[arg(long, default_value = "7d", value_parser = parse_key_lifetime)]
    pub expires_in: Duration,
    /// Name of the key, as key lists show it.
    #[arg(long, default_value = "break-glass")]
    pub name: String,
}

/// `heex-cloud members` subcommands.
#[derive(Debug, Subcommand)]
pub enum MembersCommand {
    /// Print the members of a workspace (removed ones included).
    List(MembersListArgs),
}

/// `heex-cloud members list`.
#[derive(Debug, Clone, Args)]
pub struct MembersListArgs {
    /// Data directory (and store).
    #[command(flatten)]
    pub dir: DataDirArg,
    /// Name of the workspace.
    #[arg(long, default_value = "default")]
    pub workspace: String,
}

/// `heex-cloud workspaces` subcommands.
#[derive(Debug, Subcommand)]
pub enum WorkspacesCommand {
    /// Create a workspace with its owner, and print the owner's first API key.
    Create(WorkspaceCreateArgs),
}

/// `heex-cloud workspaces create`.
#[derive(Debug, Clone, Args)]
pub struct WorkspaceCreateArgs {
    /// Data directory.
    #[command(flatten)]
    pub dir: DataDirArg,
    /// The new workspace.
    #[command(flatten)]
    pub options: WorkspaceOptions,
}

/// `heex-cloud init`.
#[derive(Debug, Clone, Args)]
pub struct InitArgs {
    /// Data directory.
    #[command(flatten)]
    pub dir: DataDirArg,
    /// Initialization options.
    #[command(flatten)]
    pub options: InitOptions,
}

/// `heex-cloud serve`.
#[derive(Debug, Clone, Args)]
pub struct ServeArgs {
    /// Data directory.
    #[command(flatten)]
    pub dir: DataDirArg,
    /// Address of the HTTPS API.
    #[arg(long, default_value = "0.0.0.0:8443")]
    pub listen: SocketAddr,
    /// Address of the mTLS gateway agents connect to.
    #[arg(long, default_value = "0.0.0.0:8444")]
    pub gateway_listen: SocketAddr,
    /// `host:port` handed to enrolling devices as their gateway; by default the host the
    /// client used to reach the API and the gateway's bound port.
    #[arg(long, value_name = "HOST:PORT")]
    pub gateway_advertise: Option<String>,
    /// Lifetime of device certificates (e.g. "30d", "12h").
    #[arg(long, default_value = "30d", value_parser = parse_duration)]
    pub device_cert_lifetime: Duration,
    /// How long after its expiry a device certificate may still be renewed (e.g. "30d";
    /// "0s" disables renewal after expiry).
    #[arg(long, default_value = "30d", value_parser = parse_grace)]
    pub renewal_grace: Duration,
    /// How long after a renewal the superseded device certificate is still admitted (the
    /// agent swaps its files after the renewal; a reconnect in between uses the old one).
    #[arg(long, default_value = "10m", value_parser = parse_grace)]
    pub cert_overlap: Duration,
    /// Most gateway connections open at once; further ones are closed right after accept.
    /// Default: the open-files limit (raised to its hard limit at start-up) less the API's
    /// share and a reserve.
    #[arg(long)]
    pub gateway_max_connections: Option<usize>,
    /// Most API connections open at once; further ones are closed right after accept.
    /// Default: 1/32 of the open-files limit, 64 to 1024.
    #[arg(long)]
    pub api_max_connections: Option<usize>,
    /// Lifetime of the API's and the gateway's server certificate, which the cloud issues
    /// itself from its CA: re-issued while serving, 30 days (or a third of it, if shorter)
    /// before it expires, without agents or clients noticing (they trust the CA).
    #[arg(long, default_value = "730d", value_parser = parse_server_cert_lifetime)]
    pub server_cert_lifetime: Duration,
    /// How often the data directory's CAs are read again, to pick up `heex-cloud ca rotate`
    /// and `ca retire`.
    #[arg(long, default_value = "5s", value_parser = parse_duration)]
    pub ca_reload_interval: Duration,
    /// During a CA rotation, agents renew onto the new CA at a random point within this
    /// spread after they hear of it, so a fleet does not renew all at once.
    #[arg(long, default_value = "1h", value_parser = parse_duration)]
    pub ca_renew_spread: Duration,
    /// Serve Prometheus metrics (OpenMetrics text at `/metrics`, plain HTTP) on this address,
    /// e.g. 127.0.0.1:9464; off by default, and never on the API's port.
    #[arg(long, value_name = "IP:PORT")]
    pub metrics_listen: Option<std::net::SocketAddr>,
    /// Exit 78 when the data directory is not initialized instead of initializing it: for a
    /// service whose data directory `heex-cloud init` prepared, which must never start a new
    /// workspace on an empty or missing directory.
    #[arg(long)]
    pub no_init: bool,
    /// Name of this replica among those sharing a PostgreSQL store (default: the host name
    /// and the gateway port): a restart under the same name clears the connection marks of
    /// its earlier run at once.
    #[arg(long, value_name = "NAME")]
    pub replica_name: Option<String>,
    /// How long this replica's devices still show connected after it stops renewing its
    /// lease (it died, or lost the database); renewed every third of it.
    #[arg(long, default_value = "10s", value_parser = parse_duration)]
    pub replica_lease: Duration,
    /// How often the sessions this replica holds are checked against the store for changes
    /// other replicas made (revocations, the device connecting elsewhere), besides the
    /// notification each change sends.
    #[arg(long, default_value = "5s", value_parser = parse_duration)]
    pub session_check_interval: Duration,
    /// Options used only when the data directory must be initialized first.
    #[command(flatten)]
    pub init: InitOptions,
}

fn parse_server_cert_lifetime(s: &str) -> Result<Duration, String> {
    let d = humantime::parse_duration(s).map_err(|e| format!("{e} (examples: 730d, 90d)"))?;
    if d < Duration::from_secs(3) || d > Duration::from_secs(10 * 365 * 24 * 3600) {
        return Err("must be between 3 seconds and 10 years".to_owned());
    }
    Ok(d)
}

fn parse_grace(s: &str) -> Result<Duration, String> {
    let d = humantime::parse_duration(s).map_err(|e| format!("{e} (examples: 30d, 12h, 0s)"))?;
    if d > Duration::from_secs(10 * 365 * 24 * 3600) {
        return Err("must be at most 10 years".to_owned());
    }
    Ok(d)
}

fn parse_key_lifetime(s: &str) -> Result<Duration, String> {
    let d = parse_duration(s)?;
    if d > Duration::from_secs(365 * 24 * 3600) {
        return Err("must be at most 365 days".to_owned());
    }
    Ok(d)
}

fn parse_duration(s: &str) -> Result<Duration, String> {
    let d = humantime::parse_duration(s).map_err(|e| format!("{e} (examples: 30d, 12h, 90m)"))?;
    if d < Duration::from_secs(1) {
        return Err("must be at least 1s".to_owned());
    }
    if d > Duration::from_secs(10 * 365 * 24 * 3600) {
        return Err("must be at most 10 years".to_owned());
    }
    Ok(d)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn serve_defaults() {
        let cli = Cli::try_parse_from(["heex-cloud", "serve", "--data-dir", "d"]).unwrap();
        let Command::Serve(args) = cli.command else {
            panic!("not serve")
        };
        assert_eq!(args.listen.port(), 8443);
        assert_eq!(args.gateway_listen.port(), 8444);
        assert_eq!(args.device_cert_lifetime, Duration::from_secs(30 * 86400));
        assert_eq!(args.renewal_grace, Duration::from_secs(30 * 86400));
        assert_eq!(args.init.workspace, "default");
        assert_eq!(args.init.trust_domain, "heex.local");
        assert_eq!(args.dir.store, None);
        assert_eq!(args.replica_lease, Duration::from_secs(10));
    }

    #[test]
    fn store_url() {
        let cli = Cli::try_parse_from([
            "heex-cloud",
            "init",
            "--store",
            "postgres://heex:pw@db.example/heex",
        ])
        .unwrap();
        let Command::Init(args) = cli.command else {
            panic!("not init")
        };
        assert_eq!(
            args.dir.store.unwrap().expose(),
            "postgres://heex:pw@db.example/heex"
        );
        let err = Cli::try_parse_from(["heex-cloud", "serve", "--store", "mysql://db"])
            .unwrap_err()
            .to_string();
        assert!(err.contains("postgres://"), "{err}");
    }

    #[test]
    fn init_repeated_hostnames() {
        let cli = Cli::try_parse_from([
            "heex-cloud",
            "init",
            "--data-dir",
            "d",
            "--hostname",
            "a.example",
            "--hostname",
            "10.0.0.1",
        ])
        .unwrap();
        let Command::Init(args) = cli.command else {
            panic!("not init")
        };
        assert_eq!(args.options.hostnames, ["a.example", "10.0.0.1"]);
    }

    #[test]
    fn workspaces_create() {
        let cli = Cli::try_parse_from([
            "heex-cloud",
            "workspaces",
            "create",
            "robots-b",
            "--owner",
            "bo@example.com",
            "--data-dir",
            "d",
        ])
        .unwrap();
        let Command::Workspaces(WorkspacesCommand::Create(args)) = cli.command else {
            panic!("not workspaces create")
        };
        assert_eq!(args.options.name, "robots-b");
        assert_eq!(args.options.owner, "bo@example.com");
        assert!(Cli::try_parse_from(["heex-cloud", "workspaces", "create", "x"]).is_err());
    }

    #[test]
    fn bad_lifetime_is_a_usage_error() {
        assert!(
            Cli::try_parse_from(["heex-cloud", "serve", "--device-cert-lifetime", "soon"]).is_err()
        );
        assert!(
            Cli::try_parse_from(["heex-cloud", "serve", "--device-cert-lifetime", "0s"]).is_err()
        );
    }
}
