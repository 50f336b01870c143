//! The data directory: its layout, `init`, and loading it for `serve`.
//!
//! ```text
//! DIR/                (0700)
//!   secret            32 random bytes; API key secrets derive from it (0600)
//!   ca.key  ca.crt    the cloud CA (key 0600)
//!   server.key server.crt   the API/gateway server certificate, signed by the CA (key 0600)
//!   heex.db           the SQLite store (+ -wal, -shm), unless the store is PostgreSQL
//!   cloud.toml        settings; written last by `init`: its presence marks DIR initialized
//! ```
//!
//! With a PostgreSQL store (`--store postgres://…`) the records live in the database and
//! the directory holds only the secrets and the settings: every replica gets a copy of the
//! same directory. The database records the CA fingerprint and a check value of the server
//! secret of the directory that initialized it, and a replica whose directory holds others
//! refuses to start.
//!
//! Every file is written atomically (temporary file in DIR, fsync, rename, fsync DIR), and
//! `cloud.toml` only after everything else is durable, so a crash during `init` leaves a
//! directory that does not look initialized and that the next `init` cleans up and redoes.

use std::fs::{self, DirBuilder, Permissions};
use std::io::Write;
use std::os::unix::fs::{DirBuilderExt, PermissionsExt};
use std::path::{Path, PathBuf};

use clap::Args;
use heex_proto::api::Scope;
use heex_proto::identity::validate_trust_domain;
use heex_proto::{ApiKey, Fingerprint, KeyId, MemberId, WorkspaceId};
use rand::RngCore;
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};
use serde::{Deserialize, Serialize};
use time::OffsetDateTime;

pub mod authority;

use crate::ca::{certificate_names, san_for, server_cert_fits, Ca};
use crate::error::Error;
use crate::store::postgres::PostgresUrl;
use crate::store::{Deployment, NewKey, NewMember, NewWorkspace, Role, Store, StoreError};
use heex_fs::Options;

/// Server secret file.
pub const SECRET: &str = "secret";
/// CA certificate file (PEM).
pub const CA_CERT: &str = "ca.crt";
/// CA private key file (PEM, 0600).
pub const CA_KEY: &str = "ca.key";
/// Server certificate file (PEM).
pub const SERVER_CERT: &str = "server.crt";
/// Server private key file (PEM, 0600).
pub const SERVER_KEY: &str = "server.key";
/// SQLite database file.
pub const DATABASE: &str = "heex.db";
/// Settings file; its presence marks the directory initialized.
pub const SETTINGS: &str = "cloud.toml";
/// Layout version written to `cloud.toml`.
pub const FORMAT: u32 = 1;
/// Lifetime of the owner's first API key.
pub const OWNER_KEY_LIFETIME: time::Duration = time::Duration::days(90);
/// The server certificate is re-issued (at startup, and while serving) when it expires
/// sooner than this, or a third of its lifetime when that is shorter.
const SERVER_CERT_RENEW_BEFORE: time::Duration = time::Duration::days(30);

/// How long before its expiry a server certificate of `lifetime` is re-issued.
pub fn server_cert_renew_before(lifetime: std::time::Duration) -> time::Duration {
    let third = time::Duration::try_from(lifetime / 3).unwrap_or(SERVER_CERT_RENEW_BEFORE);
    third.min(SERVER_CERT_RENEW_BEFORE)
}

/// Files `init` may find from an earlier, interrupted `init`.
const OWN_FILES: &[&str] = &[
    SECRET,
    CA_CERT,
    CA_KEY,
    SERVER_CERT,
    SERVER_KEY,
    DATABASE,
    "heex.db-wal",
    "heex.db-shm",
    "heex.db-journal",
];

/// The 32-byte server secret. Its `Debug` never shows it.
#[derive(Clone)]
pub struct ServerSecret([u8; 32]);

impl ServerSecret {
    /// A fresh random secret.
    pub fn generate() -> Self {
        let mut bytes = [0u8; 32];
        rand::rngs::OsRng.fill_bytes(&mut bytes);
        ServerSecret(bytes)
    }

    /// The secret bytes.
    pub fn as_bytes(&self) -> &[u8; 32] {
        &self.0
    }

    /// A value that tells two secrets apart without revealing either: hex SHA-256 of a
    /// fixed label and the secret.
    pub fn check_value(&self) -> String {
        use sha2::Digest;
        let mut hash = sha2::Sha256::new();
        hash.update(b"heex deployment check v1\0");
        hash.update(self.0);
        hex::encode(hash.finalize())
    }
}

impl std::fmt::Debug for ServerSecret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("ServerSecret(<redacted>)")
    }
}

/// `cloud.toml`.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Settings {
    /// Layout version of the data directory.
    pub format: u32,
    /// SPIFFE trust domain of device identities.
    pub trust_domain: String,
    /// When `init` completed.
    #[serde(with = "time::serde::rfc3339")]
    pub initialized_at: OffsetDateTime,
    /// Where the records are: SQLite in the directory (the default) or PostgreSQL (its URL
    /// is given to every command, never written here).
    #[serde(default)]
    pub store: StoreKind,
}

/// The kind of store a data directory was initialized with.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum StoreKind {
    /// `heex.db` in the directory.
    #[default]
    Sqlite,
    /// A PostgreSQL database shared by replicas.
    Postgres,
}

/// The data directory at a path, with the PostgreSQL store it is used with, if any.
#[derive(Debug, Clone)]
pub struct DataDir {
    root: PathBuf,
    store: Option<PostgresUrl>,
}

/// What `init` created, to show the operator once.
#[derive(Debug)]
pub struct InitReport {
    /// The data directory.
    pub root: PathBuf,
    /// Workspace id.
    pub workspace_id: WorkspaceId,
    /// Workspace name.
    pub workspace_name: String,
    /// Owner's email.
    pub owner_email: String,
    /// The owner's first API key (admin scope).
    pub owner_key: ApiKey,
    /// The CA fingerprint installers pin.
    pub ca_fingerprint: Fingerprint,
}

impl InitReport {
    /// Prints the report (including the full owner key) for the operator.
    pub fn print(&self, out: &mut impl Write) -> std::io::Result<()> {
        writeln!(
            out,
            "Initialized Heex data directory {}",
            self.root.display()
        )?;
        writeln!(
            out,
            "Workspace:      {} ({})",
            self.workspace_name, self.workspace_id
        )?;
        writeln!(out, "Owner:          {}", self.owner_email)?;
        writeln!(out, "Owner API key:  {}", self.owner_key.expose())?;
        writeln!(out, "CA fingerprint: {}", self.ca_fingerprint)?;
        writeln!(
            out,
            "Keep the API key secret; pin the CA fingerprint when installing agents."
        )?;
        out.flush()
    }
}

/// What `heex-cloud workspaces create` created, to show the operator once.
#[derive(Debug)]
pub struct WorkspaceReport {
    /// Workspace id.
    pub workspace_id: WorkspaceId,
    /// Workspace name.
    pub workspace_name: String,
    /// Owner's email.
    pub owner_email: String,
    /// The owner's first API key (admin scope).
    pub owner_key: ApiKey,
}

impl WorkspaceReport {
    /// Prints the report (including the full owner key) for the operator.
    pub fn print(&self, out: &mut impl Write) -> std::io::Result<()> {
        writeln!(
            out,
            "Workspace:      {} ({})",
            self.workspace_name, self.workspace_id
        )?;
        writeln!(out, "Owner:          {}", self.owner_email)?;
        writeln!(out, "Owner API key:  {}", self.owner_key.expose())?;
        writeln!(out, "Keep the API key secret.")?;
        out.flush()
    }
}

/// Everything `serve` needs from the data directory.
pub struct Loaded {
    /// Settings.
    pub settings: Settings,
    /// Server secret.
    pub secret: ServerSecret,
    /// The CAs: one, or two during a CA rotation (see [`crate::datadir::authority`]).
    pub authority: crate::datadir::authority::Authority,
    /// Server certificate chain: leaf, then the CA.
    pub server_chain: Vec<CertificateDer<'static>>,
    /// Server private key.
    pub server_key: PrivateKeyDer<'static>,
    /// The open store.
    pub store: Store,
}

impl DataDir {
    /// The data directory at `root`, its records in SQLite in the directory.
    pub fn new(root: impl Into<PathBuf>) -> Self {
        DataDir {
            root: root.into(),
            store: None,
        }
    }

    /// The data directory at `root` with its records in the PostgreSQL database `store`
    /// (SQLite in the directory when `None`).
    pub fn with_store(root: impl Into<PathBuf>, store: Option<PostgresUrl>) -> Self {
        DataDir {
            root: root.into(),
            store,
        }
    }

    /// The data directory and store the command line names.
    pub fn of(arg: &DataDirArg) -> Self {
        Self::with_store(&arg.data_dir, arg.store.clone())
    }

    /// The kind of store this directory is used with.
    fn store_kind(&self) -> StoreKind {
        match self.store {
            Some(_) => StoreKind::Postgres,
            None => StoreKind::Sqlite,
        }
    }

    /// Opens the store of a directory initialized with a `kind` store; refuses a mismatch
    /// between the directory and the command line.
    async fn open_store(&self, kind: StoreKind) -> Result<Store, Error> {
        match (kind, &self.store) {
            (StoreKind::Sqlite, None) => Ok(Store::open_sqlite(&self.path(DATABASE))?),
            (StoreKind::Sqlite, Some(_)) => Err(Error::Mismatch(format!(
                "{} keeps its records in its own SQLite database ({DATABASE}); leave out --store and HEEX_STORE_URL, or initialize a new data directory with --store",
                self.root.display()
            ))),
            (StoreKind::Postgres, None) => Err(Error::Mismatch(format!(
                "{} keeps its records in PostgreSQL; give the database's URL with --store or HEEX_STORE_URL",
                self.root.display()
            ))),
            (StoreKind::Postgres, Some(url)) => {
                let url = url.clone();
                tokio::task::spawn_blocking(move || Store::open_postgres(url.expose()))
                    .await
                    .map_err(|e| Error::Internal(format!("cannot open the store: {e}")))?
                    .map_err(|e| match e {
                        StoreError::Unavailable(why) => Error::Store(StoreError::Unavailable(
                            format!("{why} (store {})", self.store_display()),
                        )),
                        e => e.into(),
                    })
            }
        }
    }

    /// The store, for messages (a PostgreSQL URL without its password).
    /// The store, for messages: the PostgreSQL URL (without password) or the SQLite file.
    pub fn store_display(&self) -> String {
        match &self.store {
            Some(url) => url.to_string(),
            None => self.path(DATABASE).display().to_string(),
        }
    }

    /// Who the store of this directory belongs to: its CA and secret.
    fn deployment(ca: &Fingerprint, secret: &ServerSecret, now: OffsetDateTime) -> Deployment {
        Deployment {
            ca_fingerprint: ca.to_string(),
            secret_check: secret.check_value(),
            created_at: now,
        }
    }

    /// Opens the store (see [`DataDir::open_store`]) and checks that it belongs to `mine`,
    /// the directory's secrets ([`DataDir::check_deployment`]); closed again when not.
    async fn open_checked_store(&self, kind: StoreKind, mine: Deployment) -> Result<Store, Error> {
        let store = self.open_store(kind).await?;
        if let Err(e) = self.check_deployment(&store, kind, mine).await {
            store.close().await;
            return Err(e);
        }
        Ok(store)
    }

    /// Checks that the store belongs to this directory's secrets; a SQLite store made
    /// before stores recorded their owner is claimed.
    async fn check_deployment(
        &self,
        store: &Store,
        kind: StoreKind,
        mine: Deployment,
    ) -> Result<(), Error> {
        let recorded = match kind {
            StoreKind::Sqlite => store.claim_deployment(mine.clone()).await?,
            StoreKind::Postgres => Some(store.recorded_deployment().await?.ok_or_else(|| {
                Error::Mismatch(format!(
                    "the database {} holds no Heex cloud: give the URL of the database {} was initialized with, or initialize a new data directory with `heex-cloud init --store URL`",
                    self.store_display(),
                    self.root.display()
                ))
            })?),
        };
        let Some(recorded) = recorded else {
            return Ok(());
        };
        // During a CA rotation's `retire` the store moves to the new CA before the files do.
        let next = crate::datadir::authority::next_fingerprint(self).map(|f| f.to_string());
        if recorded.ca_fingerprint != mine.ca_fingerprint
            && Some(&recorded.ca_fingerprint) != next.as_ref()
        {
            return Err(Error::Mismatch(format!(
                "the secrets in {} do not belong to the database {}: its CA is {}, the database's is {}; give every replica a copy of the same data directory",
                self.root.display(),
                self.store_display(),
                mine.ca_fingerprint,
                recorded.ca_fingerprint
            )));
        }
        if recorded.secret_check != mine.secret_check {
            return Err(Error::Mismatch(format!(
                "the server secret in {} is not the one the database {} was initialized with (API keys would not verify); give every replica a copy of the same data directory",
                self.path(SECRET).display(),
                self.store_display()
            )));
        }
        Ok(())
    }

    /// The directory.
    pub fn root(&self) -> &Path {
        &self.root
    }

    /// The path of a file in the directory.
    pub fn path(&self, name: &str) -> PathBuf {
        self.root.join(name)
    }

    /// True when `init` completed here.
    pub fn is_initialized(&self) -> bool {
        fs::symlink_metadata(self.path(SETTINGS)).is_ok()
    }

    /// Creates everything: secret, CA, server certificate, database, workspace, owner and
    /// the owner's first API key. Refuses an initialized directory without touching it.
    pub async fn init(&self, opts: &InitOptions) -> Result<InitReport, Error> {
        validate_init_options(opts)?;
        if self.is_initialized() {
            return Err(Error::AlreadyInitialized(self.root.clone()));
        }
        self.prepare_empty()?;
        let now = OffsetDateTime::now_utc();

        let secret = ServerSecret::generate();
        heex_fs::write(&self.path(SECRET), secret.as_bytes(), Options::private())?;

        let (ca, ca_key_pem) = Ca::generate(now).map_err(|e| Error::Internal(e.to_string()))?;
        heex_fs::write(
            &self.path(CA_KEY),
            ca_key_pem.as_bytes(),
            Options::private(),
        )?;
        heex_fs::write(
            &self.path(CA_CERT),
            ca.cert_pem().as_bytes(),
            Options::public(),
        )?;
        self.write_server_cert(&ca, &opts.hostnames, now, crate::ca::SERVER_CERT_LIFETIME)?;

        let kind = self.store_kind();
        let store = self.open_store(kind).await?;
        let (ws, owner, key) = first_workspace(&opts.workspace, &opts.owner, now);
        let (workspace_id, key_id) = (ws.id.clone(), key.id.clone());
        let created = store
            .init_deployment(
                Self::deployment(&ca.fingerprint(), &secret, now),
                ws,
                owner,
                key,
            )
            .await;
        store.close().await;
        if let Some(existing) = created? {
            return Err(Error::Mismatch(format!(
                "the database {} already holds a Heex cloud (CA {}): give this replica a copy of that cloud's data directory instead of running init, or use an empty database",
                self.store_display(),
                existing.ca_fingerprint
            )));
        }

        let settings = Settings {
            format: FORMAT,
            trust_domain: opts.trust_domain.clone(),
            initialized_at: now,
            store: kind,
        };
        let text = toml::to_string(&settings).map_err(|e| Error::Internal(e.to_string()))?;
        let text = format!(
            "# Heex cloud data directory settings, written last by `heex-cloud init`.\n{text}"
        );
        heex_fs::write(&self.path(SETTINGS), text.as_bytes(), Options::public())?;

        Ok(InitReport {
            root: self.root.clone(),
            workspace_id,
            workspace_name: opts.workspace.clone(),
            owner_email: opts.owner.clone(),
            owner_key: ApiKey::derive(secret.as_bytes(), key_id),
            ca_fingerprint: ca.fingerprint(),
        })
    }

    /// Adds a workspace with its owner and the owner's first API key (admin scope) to an
    /// initialized directory. Safe while `serve` runs on it: the database takes writers in
    /// turn.
    pub async fn add_workspace(&self, opts: &WorkspaceOptions) -> Result<WorkspaceReport, Error> {
        check_workspace_name(&opts.name, "workspace name")?;
        check_email(&opts.owner, "--owner")?;
        let (store, secret) = self.open_checked().await?;
        let now = OffsetDateTime::now_utc();
        let (ws, owner, key) = first_workspace(opts.name.trim(), &opts.owner, now);
        let ids = (ws.id.clone(), key.id.clone());
        let created = store.create_workspace_with_owner(ws, owner, key).await;
        store.close().await;
        let created = created.map(|()| ids);
        let (workspace_id, key_id) = match created {
            Ok(ids) => ids,
            Err(StoreError::Conflict(_)) => {
                return Err(Error::Usage(format!(
                    "a workspace named {:?} exists already; choose another name",
                    opts.name.trim()
                )))
            }
            Err(e) => return Err(e.into()),
        };
        Ok(WorkspaceReport {
            workspace_id,
            workspace_name: opts.name.trim().to_owned(),
            owner_email: opts.owner.clone(),
            owner_key: ApiKey::derive(secret.as_bytes(), key_id),
        })
    }

    fn read_secret(&self) -> Result<ServerSecret, Error> {
        let secret_path = self.path(SECRET);
        warn_if_exposed(&secret_path);
        let secret_bytes = fs::read(&secret_path).map_err(|e| Error::file(&secret_path, e))?;
        Ok(ServerSecret(secret_bytes.try_into().map_err(|_| {
            Error::corrupt(&secret_path, "must hold exactly 32 bytes")
        })?))
    }

    /// The store of an initialized directory, checked to belong to the directory's secrets,
    /// and the server secret: for the commands an operator runs beside `serve`.
    pub async fn open_checked(&self) -> Result<(Store, ServerSecret), Error> {
        let settings = self.read_settings()?;
        let secret = self.read_secret()?;
        let cert_path = self.path(CA_CERT);
        let ca_der = CertificateDer::from_pem_slice(read_text(&cert_path)?.as_bytes())
            .map_err(|e| Error::corrupt(&cert_path, e.to_string()))?;
        let mine = Self::deployment(
            &Fingerprint::of_der(&ca_der),
            &secret,
            OffsetDateTime::now_utc(),
        );
        let store = self.open_checked_store(settings.store, mine).await?;
        Ok((store, secret))
    }

    /// The settings of an initialized directory.
    /// `cloud.toml`, checked.
    pub fn settings(&self) -> Result<Settings, Error> {
        self.read_settings()
    }

    fn read_settings(&self) -> Result<Settings, Error> {
        if !self.is_initialized() {
            return Err(Error::corrupt(
                self.path(SETTINGS),
                "missing: the data directory is not initialized (run `heex-cloud init`)",
            ));
        }
        let settings_path = self.path(SETTINGS);
        let settings: Settings = toml::from_str(&read_text(&settings_path)?)
            .map_err(|e| Error::corrupt(&settings_path, e.message().to_owned()))?;
        if settings.format != FORMAT {
            return Err(Error::corrupt(
                &settings_path,
                format!(
                    "data directory format {} is not supported by this heex-cloud (format {FORMAT})",
                    settings.format
                ),
            ));
        }
        validate_trust_domain(&settings.trust_domain)
            .map_err(|e| Error::corrupt(&settings_path, e.to_string()))?;
        Ok(settings)
    }

    /// Loads an initialized directory and opens its store, which must belong to the
    /// directory's secrets. Re-issues the server certificate when it expires within 30 days
    /// or does not cover every name in `hostnames`.
    pub async fn load(&self, hostnames: &[String]) -> Result<Loaded, Error> {
        self.load_with(hostnames, crate::ca::SERVER_CERT_LIFETIME)
            .await
    }

    /// Like [`DataDir::load`], for a server certificate of `lifetime`: one that expires
    /// within [`server_cert_renew_before`] of it, or outlives it, is re-issued.
    pub async fn load_with(
        &self,
        hostnames: &[String],
        lifetime: std::time::Duration,
    ) -> Result<Loaded, Error> {
        let settings = self.read_settings()?;
        let secret = self.read_secret()?;

        let ca_key_path = self.path(CA_KEY);
        warn_if_exposed(&ca_key_path);
        crate::datadir::authority::complete_interrupted_retire(self)?;
        let authority = crate::datadir::authority::read(self)?;
        let ca = authority.server();

        let now = OffsetDateTime::now_utc();
        let cert_path = self.path(SERVER_CERT);
        let leaf = CertificateDer::from_pem_slice(read_text(&cert_path)?.as_bytes())
            .map_err(|e| Error::corrupt(&cert_path, e.to_string()))?;
        let outlives = crate::ca::not_after(&leaf).is_some_and(|t| {
            t > now + time::Duration::try_from(lifetime).unwrap_or(time::Duration::MAX)
        });
        // A CA rotation's `retire` leaves the certificate of the retired CA behind.
        if outlives
            || !ca.signed(&leaf)
            || !server_cert_fits(&leaf, hostnames, now + server_cert_renew_before(lifetime))
        {
            tracing::info!("re-issuing the server certificate");
            self.write_server_cert(ca, hostnames, now, lifetime)?;
        }
        let leaf = CertificateDer::from_pem_slice(read_text(&cert_path)?.as_bytes())
            .map_err(|e| Error::corrupt(&cert_path, e.to_string()))?;
        let key_path = self.path(SERVER_KEY);
        warn_if_exposed(&key_path);
        let server_key = PrivateKeyDer::from_pem_slice(read_text(&key_path)?.as_bytes())
            .map_err(|e| Error::corrupt(&key_path, e.to_string()))?;

        let mine = Self::deployment(&ca.fingerprint(), &secret, now);
        let store = self.open_checked_store(settings.store, mine).await?;
        Ok(Loaded {
            settings,
            secret,
            server_chain: vec![leaf, ca.cert_der().clone()],
            server_key,
            store,
            authority,
        })
    }

    /// Issues a server certificate covering the defaults, `hostnames` and the names of the
    /// current certificate, and writes it (key first).
    fn write_server_cert(
        &self,
        ca: &Ca,
        hostnames: &[String],
        now: OffsetDateTime,
        lifetime: std::time::Duration,
    ) -> Result<(), Error> {
        let mut names = self.current_server_names();
        for h in hostnames {
            if !names.contains(h) {
                names.push(h.clone());
            }
        }
        let issued = ca
            .issue_server_cert(&names, now, lifetime)
            .map_err(|e| Error::Usage(e.to_string()))?;
        // Both written before either replaces its predecessor, back to back.
        let mut swap = heex_fs::Swap::new();
        swap.stage(
            &self.path(SERVER_KEY),
            issued.key_pem.as_bytes(),
            Options::private(),
        )?;
        swap.stage(
            &self.path(SERVER_CERT),
            issued.cert_pem.as_bytes(),
            Options::public(),
        )?;
        Ok(swap.commit()?)
    }

    /// Issues a new server certificate (the current one's names and `hostnames`) and writes
    /// it, key first: the chain (leaf, CA) and key to serve from now on.
    pub fn reissue_server_cert(
        &self,
        ca: &Ca,
        hostnames: &[String],
        lifetime: std::time::Duration,
    ) -> Result<(Vec<CertificateDer<'static>>, PrivateKeyDer<'static>), Error> {
        self.write_server_cert(ca, hostnames, OffsetDateTime::now_utc(), lifetime)?;
        let cert_path = self.path(SERVER_CERT);
        let leaf = CertificateDer::from_pem_slice(read_text(&cert_path)?.as_bytes())
            .map_err(|e| Error::corrupt(&cert_path, e.to_string()))?;
        let key_path = self.path(SERVER_KEY);
        let key = PrivateKeyDer::from_pem_slice(read_text(&key_path)?.as_bytes())
            .map_err(|e| Error::corrupt(&key_path, e.to_string()))?;
        Ok((vec![leaf, ca.cert_der().clone()], key))
    }

    /// The DNS names and IP addresses of the current server certificate, if any.
    fn current_server_names(&self) -> Vec<String> {
        let Ok(text) = fs::read_to_string(self.path(SERVER_CERT)) else {
            return Vec::new();
        };
        let Ok(der) = CertificateDer::from_pem_slice(text.as_bytes()) else {
            return Vec::new();
        };
        certificate_names(&der)
    }

    /// Creates the directory (0700) or checks that it holds nothing but leftovers of an
    /// interrupted `init`, which it removes.
    fn prepare_empty(&self) -> Result<(), Error> {
        match fs::symlink_metadata(&self.root) {
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                DirBuilder::new()
                    .recursive(true)
                    .mode(0o700)
                    .create(&self.root)
                    .map_err(|e| Error::file(&self.root, e))?;
                return Ok(());
            }
            Err(e) => return Err(Error::file(&self.root, e)),
            Ok(meta) if !meta.is_dir() => {
                return Err(Error::file(
                    &self.root,
                    std::io::Error::other("exists and is not a directory"),
                ))
            }
            Ok(_) => {}
        }
        let mut leftovers = Vec::new();
        for entry in fs::read_dir(&self.root).map_err(|e| Error::file(&self.root, e))? {
            let entry = entry.map_err(|e| Error::file(&self.root, e))?;
            let name = entry.file_name().to_string_lossy().into_owned();
            // Temporary files a crash left (".tmp-*" from earlier versions).
            let temporary = heex_fs::is_temporary(&name) || name.starts_with(".tmp-");
            if OWN_FILES.contains(&name.as_str()) || temporary {
                leftovers.push(entry.path());
            } else {
                return Err(Error::NotEmpty(self.root.clone()));
            }
        }
        for path in leftovers {
            match fs::remove_file(&path) {
                // Gone meanwhile: SQLite removes its -wal and -shm files when the last
                // connection of an earlier open closes.
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                r => r.map_err(|e| Error::file(&path, e))?,
            }
        }
        fs::set_permissions(&self.root, Permissions::from_mode(0o700))
            .map_err(|e| Error::file(&self.root, e))
    }
}

/// A new workspace, its owner and the owner's first API key (admin scope).
fn first_workspace(
    name: &str,
    owner: &str,
    now: OffsetDateTime,
) -> (NewWorkspace, NewMember, NewKey) {
    let workspace_id = WorkspaceId::generate();
    let member_id = MemberId::generate();
    let ws = NewWorkspace {
        id: workspace_id.clone(),
        name: name.to_owned(),
        created_at: now,
    };
    let member = NewMember {
        id: member_id.clone(),
        workspace_id: workspace_id.clone(),
        email: owner.to_owned(),
        role: Role::Owner,
        created_at: now,
    };
    let key = NewKey {
        id: KeyId::generate(),
        workspace_id,
        member_id,
        name: "owner".to_owned(),
        scope: Scope::Admin,
        created_at: now,
        expires_at: now + OWNER_KEY_LIFETIME,
        max_uses: None,
    };
    (ws, member, key)
}

fn validate_init_options(opts: &InitOptions) -> Result<(), Error> {
    check_workspace_name(&opts.workspace, "--workspace")?;
    check_email(&opts.owner, "--owner")?;
    validate_trust_domain(&opts.trust_domain)
        .map_err(|e| Error::Usage(format!("--trust-domain: {e}")))?;
    for h in &opts.hostnames {
        san_for(h).map_err(|e| Error::Usage(format!("--hostname: {e}")))?;
    }
    Ok(())
}

fn check_workspace_name(name: &str, what: &str) -> Result<(), Error> {
    heex_proto::text::check_name(what, name, 64).map_err(|e| Error::Usage(e.to_string()))
}

fn check_email(owner: &str, what: &str) -> Result<(), Error> {
    heex_proto::text::check_email(what, owner).map_err(|e| Error::Usage(e.to_string()))
}

/// A text file of the data directory; a read failure names the file.
pub(crate) fn read_text(path: &Path) -> Result<String, Error> {
    fs::read_to_string(path).map_err(|e| Error::file(path, e))
}

fn warn_if_exposed(path: &Path) {
    if let Ok(meta) = fs::metadata(path) {
        if meta.permissions().mode() & 0o077 != 0 {
            tracing::warn!(path = %path.display(), "private file is readable by others; chmod 600 it");
        }
    }
}

/// What a new workspace is created with.
#[derive(Debug, Clone, Args)]
pub struct WorkspaceOptions {
    /// Unique name of the workspace.
    pub name: String,
    /// Email of the workspace owner, who receives the first API key.
    #[arg(long)]
    pub owner: String,
}

/// Where the data directory is.
#[derive(Debug, Clone, Args)]
pub struct DataDirArg {
    /// Data directory (CA, server certificate, secret, database).
    #[arg(long, env = "HEEX_DATA_DIR", default_value = "heex-data")]
    pub data_dir: PathBuf,
    /// PostgreSQL database of the records (`postgres://USER:PASSWORD@HOST:PORT/DB`), shared
    /// by every replica; by default a SQLite database in the data directory. The data
    /// directory still holds the secrets: every replica needs a copy of the same one.
    #[arg(
        long,
        env = "HEEX_STORE_URL",
        value_name = "URL",
        hide_env_values = true
    )]
    pub store: Option<PostgresUrl>,
}

/// What a fresh data directory is initialized with.
#[derive(Debug, Clone, Args)]
pub struct InitOptions {
    /// Name of the first workspace.
    #[arg(long, default_value = "default")]
    pub workspace: String,
    /// Email of the workspace owner, who receives the first API key.
    #[arg(long, default_value = "owner@localhost")]
    pub owner: String,
    /// Extra DNS name or IP address for the server certificate (repeatable); localhost,
    /// 127.0.0.1 and ::1 are always included. `serve` re-issues the server certificate when
    /// it lacks one of them or expires within 30 days.
    #[arg(long = "hostname", value_name = "NAME")]
    pub hostnames: Vec<String>,
    /// SPIFFE trust domain of device identities.
    #[arg(long, default_value = "heex.local")]
    pub trust_domain: String,
}

#[cfg(test)]
mod tests;
