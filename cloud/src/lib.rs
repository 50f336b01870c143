//! `heex-cloud`: the Heex server.
//!
//! It owns the cloud CA and the server secret (in the data directory, see [`datadir`]),
//! serves the HTTPS API where people manage API keys and machines enroll ([`api`], behind
//! [`server`]), signs device certificates ([`ca`]) from verified CSRs ([`csr`]), holds agents'
//! mTLS sessions ([`gateway`]) and keeps its records in a [`store`].
//!
//! `main.rs` only parses the command line and calls [`run`].
#![forbid(unsafe_code)]

pub mod api;
pub mod auth;
pub mod backup;
pub mod cli;
pub mod console;
pub mod context;
pub mod datadir;
pub mod error;
pub mod gateway;
pub mod metrics;
pub mod notify;
pub mod operator;
pub mod replica;
pub mod server;
pub mod server_cert;
pub mod store;

use std::io::Write;
use std::sync::Arc;

use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

use crate::api::{ApiContext, AppState, GatewayAddress};
use crate::cli::{
    Cli, Command, InitArgs, KeysCommand, MembersCommand, ServeArgs, WorkspaceCreateArgs,
    WorkspacesCommand,
};
use crate::datadir::{authority, DataDir};
pub use crate::error::Error;
use crate::gateway::{GatewayTls, SessionRegistry};
/// The CA and the CSR intake live in `heex-pki`; `crate::ca` and `crate::csr` name them.
pub use heex_pki::{ca, csr};

/// Runs one `heex-cloud` command to completion.
pub fn run(cli: Cli) -> Result<(), Error> {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .thread_name("heex-cloud")
        .build()
        .map_err(|e| Error::Internal(format!("cannot start the async runtime: {e}")))?;
    let result = runtime.block_on(async move {
        match cli.command {
            Command::Init(args) => init(args).await,
            Command::Serve(args) => serve(*args).await,
            Command::Workspaces(WorkspacesCommand::Create(args)) => create_workspace(args).await,
            Command::Keys(KeysCommand::Create(args)) => operator::create_key(args).await,
            Command::Members(MembersCommand::List(args)) => operator::list_members(args).await,
            Command::Backup(args) => backup::backup(&args),
            Command::Restore(args) => backup::restore(&args),
            Command::Ca(command) => ca_command(command).await,
        }
    });
    runtime.shutdown_timeout(std::time::Duration::from_secs(1));
    result
}

/// `heex-cloud init`.
pub async fn init(args: InitArgs) -> Result<(), Error> {
    let dir = DataDir::of(&args.dir);
    let report = dir.init(&args.options).await?;
    report
        .print(&mut std::io::stdout().lock())
        .map_err(|e| Error::file("<stdout>", e))
}

/// `heex-cloud ca rotate | status | retire`.
pub async fn ca_command(command: cli::CaCommand) -> Result<(), Error> {
    let stdout = |e| Error::file("<stdout>", e);
    let mut out = std::io::stdout().lock();
    match command {
        cli::CaCommand::Rotate(args) => {
            let dir = DataDir::of(&args.dir);
            let rotated = authority::rotate(&dir, time::OffsetDateTime::now_utc())?;
            writeln!(
                out,
                "New CA {} written to {}.\n\
                 Device certificates come from it once `heex-cloud serve` has read it (within \
                 --ca-reload-interval); connected agents are sent both CAs and renew onto the new \
                 one within --ca-renew-spread. The current CA {} still signs the server \
                 certificate: installers keep pinning it until the rotation is retired.\n\
                 With several replicas, copy {} and {} into every replica's data directory.\n\
                 Follow with `heex-cloud ca status --data-dir {}`; once no device is left on \
                 the current CA, run `heex-cloud ca retire --data-dir {}`.",
                rotated.next,
                dir.path(authority::CA_NEXT_CERT).display(),
                rotated.current,
                authority::CA_NEXT_CERT,
                authority::CA_NEXT_KEY,
                dir.root().display(),
                dir.root().display(),
            )
            .map_err(stdout)
        }
        cli::CaCommand::Status(args) => {
            let dir = DataDir::of(&args.dir);
            authority::status(&dir)
                .await?
                .print(&dir, &mut out)
                .map_err(stdout)
        }
        cli::CaCommand::Retire(args) => {
            let dir = DataDir::of(&args.dir);
            let retired = authority::retire(&dir, args.force).await?;
            if retired.stranded > 0 {
                writeln!(
                    out,
                    "{} device(s) still held a certificate from the retired CA: they must be enrolled again.",
                    retired.stranded
                )
                .map_err(stdout)?;
            }
            writeln!(
                out,
                "CA {} retired; {} is now the cloud's only CA (ca.crt). `heex-cloud serve` \
                 re-issues its server certificate from it within --ca-reload-interval.\n\
                 Installers pin {} from now on. With several replicas, run this command on \
                 every replica's data directory.",
                retired.old, retired.new, retired.new
            )
            .map_err(stdout)
        }
    }
}

/// `heex-cloud workspaces create`.
pub async fn create_workspace(args: WorkspaceCreateArgs) -> Result<(), Error> {
    let dir = DataDir::of(&args.dir);
    let report = dir.add_workspace(&args.options).await?;
    report
        .print(&mut std::io::stdout().lock())
        .map_err(|e| Error::file("<stdout>", e))
}

/// `heex-cloud serve`: initializes the data directory if needed (unless `--no-init`), binds
/// both sockets, prints the two "listening" lines, tells systemd it is ready and serves until
/// SIGTERM or SIGINT.
pub async fn serve(args: ServeArgs) -> Result<(), Error> {
    let gateway_address = match &args.gateway_advertise {
        Some(addr) => GatewayAddress::Advertised(check_host_port(addr)?),
        None => GatewayAddress::SameHost(0),
    };
    let dir = DataDir::of(&args.dir);
    if !dir.is_initialized() {
        if args.no_init {
            return Err(Error::NotInitialized(dir.root().to_owned()));
        }
        let report = dir.init(&args.init).await?;
        report
            .print(&mut std::io::stdout().lock())
            .map_err(|e| Error::file("<stdout>", e))?;
    }
    let loaded = dir
        .load_with(&args.init.hostnames, args.server_cert_lifetime)
        .await?;
    let server_cert =
        server_cert::ServerCert::new(loaded.server_chain.clone(), loaded.server_key.clone_key())
            .map_err(|e| Error::corrupt(dir.path(datadir::SERVER_KEY), e.to_string()))?;
    let api_tls = server::tls_config_with(Arc::clone(&server_cert))
        .map_err(|e| Error::corrupt(dir.path(datadir::SERVER_KEY), e.to_string()))?;
    let cas = authority::Authorities::new(loaded.authority);
    let gateway_tls = GatewayTls {
        ca_der: cas.current().server().cert_der().clone(),
        server_chain: loaded.server_chain.clone(),
        server_key: loaded.server_key.clone_key(),
        server_cert: Some(Arc::clone(&server_cert)),
    };

    let api_listener = bind(args.listen)?;
    let gateway_listener = bind(args.gateway_listen)?;
    let metrics_listener = args.metrics_listen.map(bind).transpose()?;
    let metrics_addr = match (&metrics_listener, args.metrics_listen) {
        (Some(l), Some(requested)) => Some(local_addr(l, requested)?),
        _ => None,
    };
    let api_addr = local_addr(&api_listener, args.listen)?;
    let gateway_addr = local_addr(&gateway_listener, args.gateway_listen)?;
    let gateway_address = match gateway_address {
        GatewayAddress::SameHost(_) => GatewayAddress::SameHost(gateway_addr.port()),
        advertised => advertised,
    };

    // The API and the gateway each get their own share of the descriptors, so exhausting
    // one cannot take the other down.
    let open_files = server::raise_open_files_limit();
    let (api_share, gateway_share) = server::split_descriptors(open_files);
    let api_max_connections = args.api_max_connections.unwrap_or(api_share).max(1);
    let gateway_max_connections = args.gateway_max_connections.unwrap_or(gateway_share).max(1);
    let wanted =
        (api_max_connections + gateway_max_connections) as u64 + server::RESERVED_DESCRIPTORS;
    if wanted > open_files {
        tracing::warn!(
            open_files,
            api_max_connections,
            gateway_max_connections,
            "the connection caps exceed the open-files limit: raise LimitNOFILE or lower \
             --api-max-connections / --gateway-max-connections"
        );
    }
    tracing::info!(
        open_files,
        api_max_connections,
        gateway_max_connections,
        "connection caps"
    );
    let store = Arc::new(loaded.store);
    let registry = SessionRegistry::default();
    let replica_options = replica::ReplicaOptions {
        name: args
            .replica_name
            .clone()
            .unwrap_or_else(|| default_replica_name(gateway_addr.port())),
        lease: args.replica_lease,
        check_interval: args.session_check_interval,
    };
    // No session of an earlier run of this replica, or of a replica whose lease lapsed, is
    // live: their connection marks go.
    let stale = replica::start(&store, &registry, &replica_options)
        .await
        .map_err(|e| Error::Internal(format!("cannot start the replica's lease: {e}")))?;
    if stale > 0 {
        tracing::info!(stale, "cleared the connection marks of sessions that ended");
    }
    let gateway_options = gateway::GatewayOptions {
        renewal_grace: args.renewal_grace,
        cert_overlap: args.cert_overlap,
        max_connections: gateway_max_connections,
        signer: Some(gateway::DeviceSigner::following(
            cas.clone(),
            args.device_cert_lifetime,
        )),
        trust: Some(cas.clone()),
        ca_renew_spread: args.ca_renew_spread,
        ..gateway::GatewayOptions::default()
    };
    let state = AppState::new(ApiContext {
        store: Arc::clone(&store),
        cas: cas.clone(),
        secret: loaded.secret,
        registry: registry.clone(),
        trust_domain: loaded.settings.trust_domain,
        device_cert_lifetime: args.device_cert_lifetime,
        gateway: gateway_address,
    });

    {
        let mut out = std::io::stdout().lock();
        writeln!(out, "API listening on https://{api_addr}")
            .and_then(|()| writeln!(out, "Gateway listening on {gateway_addr}"))
            .and_then(|()| match metrics_addr {
                Some(a) => writeln!(out, "Metrics listening on {}", metrics::describe(a)),
                None => Ok(()),
            })
            .and_then(|()| out.flush())
            .map_err(|e| Error::file("<stdout>", e))?;
    }
    tracing::info!(
        %api_addr,
        %gateway_addr,
        data_dir = %dir.root().display(),
        replica = %replica_options.name,
        "serving"
    );
    notify::ready(api_addr, gateway_addr);

    let shutdown = CancellationToken::new();
    tokio::spawn(cancel_on_signal(shutdown.clone()));
    if let Some(listener) = metrics_listener {
        tokio::spawn(metrics::serve(listener, shutdown.clone()));
    }
    tokio::spawn(authority::follow(
        dir.clone(),
        cas.clone(),
        args.ca_reload_interval,
        shutdown.clone(),
    ));
    tokio::spawn(server_cert::keep_fresh(
        dir.clone(),
        cas,
        args.init.hostnames.clone(),
        args.server_cert_lifetime,
        server_cert,
        shutdown.clone(),
    ));
    tokio::spawn({
        let shutdown = shutdown.clone();
        async move {
            shutdown.cancelled().await;
            notify::stopping();
        }
    });
    let api = async {
        server::serve(
            api_listener,
            api_tls,
            console::app(state),
            shutdown.clone(),
            server::ApiOptions {
                max_connections: api_max_connections,
                ..server::ApiOptions::default()
            },
        )
        .await;
        // The API only returns at shutdown; make sure the gateway stops too.
        shutdown.cancel();
    };
    let gateway = async {
        let result = gateway::serve_with(
            gateway_listener,
            gateway_tls,
            Arc::clone(&store),
            registry.clone(),
            shutdown.clone(),
            gateway_options,
        )
        .await;
        shutdown.cancel();
        result
    };
    let replica = replica::run(
        Arc::clone(&store),
        registry.clone(),
        replica_options,
        shutdown.clone(),
    );
    let ((), gateway_result, ()) = tokio::join!(api, gateway, replica);
    replica::stop(&store, &registry).await;
    store.close().await;
    tracing::info!("stopped");
    gateway_result.map_err(|e| Error::Internal(format!("gateway failed: {e:#}")))
}

/// This machine's name (its node name), for replica names and the operator's audit actor.
pub(crate) fn host_name() -> String {
    rustix::system::uname()
        .nodename()
        .to_string_lossy()
        .into_owned()
}

/// `host:port` of this machine's name and the gateway port: one replica per port per host.
fn default_replica_name(gateway_port: u16) -> String {
    format!("{}:{gateway_port}", host_name())
}

/// Connections the kernel may hold for us before we accept them (capped by the system's
/// `net.core.somaxconn`). After a restart a whole fleet reconnects at once: a short queue
/// overflows, and each refused agent then waits out TCP retransmission timeouts (1 s, 3 s,
/// 7 s, …) instead of its turn.
const LISTEN_BACKLOG: u32 = 4096;

fn bind(addr: std::net::SocketAddr) -> Result<TcpListener, Error> {
    let bind = || {
        let socket = if addr.is_ipv4() {
            tokio::net::TcpSocket::new_v4()
        } else {
            tokio::net::TcpSocket::new_v6()
        }?;
        socket.set_reuseaddr(true)?;
        socket.bind(addr)?;
        socket.listen(LISTEN_BACKLOG)
    };
    bind().map_err(|source| Error::Bind { addr, source })
}

fn local_addr(
    listener: &TcpListener,
    requested: std::net::SocketAddr,
) -> Result<std::net::SocketAddr, Error> {
    listener.local_addr().map_err(|source| Error::Bind {
        addr: requested,
        source,
    })
}

/// Checks a `host:port` flag value, as the installer and the agent will read it.
fn check_host_port(value: &str) -> Result<String, Error> {
    value
        .parse::<heex_proto::GatewayAddr>()
        .map(|a| a.to_string())
        .map_err(|e| Error::Usage(format!("--gateway-advertise: {e}")))
}

/// Cancels `token` on SIGTERM or SIGINT.
async fn cancel_on_signal(token: CancellationToken) {
    let terminate = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(e) => {
                tracing::warn!(error = %e, "cannot listen for SIGTERM");
                std::future::pending::<()>().await;
            }
        }
    };
    tokio::select! {
        () = terminate => tracing::info!("SIGTERM received, shutting down"),
        _ = tokio::signal::ctrl_c() => tracing::info!("SIGINT received, shutting down"),
        () = token.cancelled() => {}
    }
    token.cancel();
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn host_port_flag() {
        assert!(check_host_port("gw.example:8444").is_ok());
        assert!(check_host_port("[::1]:8444").is_ok());
        for bad in ["gw.example", ":8444", "gw:0", "gw:http", "::1:8444"] {
            assert_eq!(check_host_port(bad).unwrap_err().exit_code(), 64, "{bad}");
        }
    }

    /// `serve --no-init` refuses a missing or empty data directory with exit 78 and leaves
    /// it as it was.
    #[tokio::test]
    async fn serve_no_init_refuses_an_uninitialized_directory() {
        use clap::Parser;
        let tmp = tempfile::tempdir().unwrap();
        for dir in [tmp.path().join("missing"), tmp.path().to_owned()] {
            let cli = Cli::try_parse_from([
                "heex-cloud".as_ref(),
                "serve".as_ref(),
                "--no-init".as_ref(),
                "--listen".as_ref(),
                "127.0.0.1:0".as_ref(),
                "--gateway-listen".as_ref(),
                "127.0.0.1:0".as_ref(),
                "--data-dir".as_ref(),
                dir.as_os_str(),
            ])
            .unwrap();
            let Command::Serve(args) = cli.command else {
                panic!("not serve")
            };
            let err = serve(*args).await.unwrap_err();
            assert_eq!(err.exit_code(), 78, "{err}");
            assert!(
                err.to_string().contains("heex-cloud init --data-dir"),
                "{err}"
            );
        }
        assert!(!tmp.path().join("missing").exists());
        assert_eq!(std::fs::read_dir(tmp.path()).unwrap().count(), 0);
    }
}
