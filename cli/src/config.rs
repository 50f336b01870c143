//! Where `heex` finds its server, trust anchor and API key.
//!
//! `heex login` stores them in `$XDG_CONFIG_HOME/heex/credentials.toml` (else
//! `~/.config/heex/credentials.toml`), mode 0600 in a 0700 directory, written atomically.
//! `HEEX_SERVER`, `HEEX_API_KEY` and `HEEX_CA_FINGERPRINT` (or `HEEX_CA_FILE`) override the
//! stored values one by one; when all are set, no file is needed and nothing is written.

use std::ffi::OsString;
use std::fmt;
use std::fs;
use std::os::unix::fs::{DirBuilderExt, PermissionsExt};
use std::path::{Path, PathBuf};

use heex_proto::{ApiKey, Fingerprint};
use reqwest::Url;
use serde::{Deserialize, Serialize};

use crate::error::CliError;
use crate::trust::TrustAnchor;

/// Environment variable naming the server URL.
pub const ENV_SERVER: &str = "HEEX_SERVER";
/// Environment variable holding the API key.
pub const ENV_API_KEY: &str = "HEEX_API_KEY";
/// Environment variable holding the pinned CA fingerprint.
pub const ENV_CA_FINGERPRINT: &str = "HEEX_CA_FINGERPRINT";
/// Environment variable naming a CA file (alternative to the fingerprint).
pub const ENV_CA_FILE: &str = "HEEX_CA_FILE";
/// Environment variable holding an invitation token (`heex invitations accept`).
pub const ENV_INVITATION_TOKEN: &str = "HEEX_INVITATION_TOKEN";

/// The parts of the process environment `heex` depends on. Empty values count as unset.
#[derive(Clone, Default)]
pub struct Env {
    /// `$HEEX_SERVER`.
    pub server: Option<String>,
    /// `$HEEX_API_KEY`.
    pub api_key: Option<String>,
    /// `$HEEX_INVITATION_TOKEN`.
    pub invitation_token: Option<String>,
    /// `$HEEX_CA_FINGERPRINT`.
    pub ca_fingerprint: Option<String>,
    /// `$HEEX_CA_FILE`.
    pub ca_file: Option<PathBuf>,
    /// `$XDG_CONFIG_HOME`.
    pub xdg_config_home: Option<PathBuf>,
    /// `$HOME`.
    pub home: Option<PathBuf>,
    /// Whether stdin is a terminal (a key may be prompted for).
    pub stdin_tty: bool,
    /// Whether stdout is a terminal (keys go to the clipboard, not the screen).
    pub stdout_tty: bool,
}

impl fmt::Debug for Env {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Env")
            .field("server", &self.server)
            .field("api_key", &self.api_key.as_ref().map(|_| "<redacted>"))
            .field(
                "invitation_token",
                &self.invitation_token.as_ref().map(|_| "<redacted>"),
            )
            .field("ca_fingerprint", &self.ca_fingerprint)
            .field("ca_file", &self.ca_file)
            .field("xdg_config_home", &self.xdg_config_home)
            .field("home", &self.home)
            .field("stdin_tty", &self.stdin_tty)
            .field("stdout_tty", &self.stdout_tty)
            .finish()
    }
}

impl Env {
    /// Reads this process's environment.
    pub fn from_process() -> Self {
        use std::io::IsTerminal;
        fn var(name: &str) -> Option<OsString> {
            std::env::var_os(name).filter(|v| !v.is_empty())
        }
        fn text(name: &str) -> Option<String> {
            var(name).map(|v| v.to_string_lossy().into_owned())
        }
        Env {
            server: text(ENV_SERVER),
            api_key: text(ENV_API_KEY),
            invitation_token: text(ENV_INVITATION_TOKEN),
            ca_fingerprint: text(ENV_CA_FINGERPRINT),
            ca_file: var(ENV_CA_FILE).map(PathBuf::from),
            xdg_config_home: var("XDG_CONFIG_HOME").map(PathBuf::from),
            home: var("HOME").map(PathBuf::from),
            stdin_tty: std::io::stdin().is_terminal(),
            stdout_tty: std::io::stdout().is_terminal(),
        }
    }

    /// Where the credentials file lives: `$XDG_CONFIG_HOME/heex/credentials.toml`, else
    /// `$HOME/.config/heex/credentials.toml`. A relative `XDG_CONFIG_HOME` is ignored, as the
    /// XDG specification requires.
    pub fn credentials_path(&self) -> Result<PathBuf, CliError> {
        let base = match (&self.xdg_config_home, &self.home) {
            (Some(xdg), _) if xdg.is_absolute() => xdg.clone(),
            (_, Some(home)) => home.join(".config"),
            _ => {
                return Err(CliError::Config(
                    "cannot find a config directory: set XDG_CONFIG_HOME or HOME".into(),
                ))
            }
        };
        Ok(base.join("heex").join("credentials.toml"))
    }

    /// The trust anchor the environment names, if any.
    pub fn trust(&self) -> Result<Option<TrustAnchor>, CliError> {
        match (&self.ca_fingerprint, &self.ca_file) {
            (Some(_), Some(_)) => Err(CliError::Usage(format!(
                "set only one of {ENV_CA_FINGERPRINT} and {ENV_CA_FILE}"
            ))),
            (Some(fp), None) => parse_fingerprint(fp, ENV_CA_FINGERPRINT).map(Some),
            (None, Some(path)) => Ok(Some(TrustAnchor::from_ca_file(path)?)),
            (None, None) => Ok(None),
        }
    }
}

/// Parses a fingerprint, naming where it came from on error.
pub fn parse_fingerprint(text: &str, origin: &str) -> Result<TrustAnchor, CliError> {
    text.parse::<Fingerprint>()
        .map(TrustAnchor::Pinned)
        .map_err(|e| CliError::Usage(format!("{origin}: {e}")))
}

/// Parses an API key, naming where it came from on error (the key itself is never shown).
pub fn parse_key(text: &str, origin: &str) -> Result<ApiKey, CliError> {
    text.parse::<ApiKey>()
        .map_err(|e| CliError::Usage(format!("{origin}: {e}")))
}

/// Parses a server URL: `https://host[:port]` (and a base path), as the installer does.
pub fn parse_server(text: &str, origin: &str) -> Result<Url, CliError> {
    heex_trust::client::parse_server_url(text).map_err(|why| {
        CliError::Usage(format!(
            "{origin} {text:?} {why}; use https://host:port (heex talks to the cloud only over TLS)"
        ))
    })
}

/// How to reach the cloud and who to be there.
#[derive(Clone)]
pub struct Profile {
    /// The API base URL.
    pub server: Url,
    /// What the server's certificate must chain to.
    pub trust: TrustAnchor,
    /// The caller's API key.
    pub api_key: ApiKey,
    /// The credentials file the profile was read from, when one was.
    pub file: Option<PathBuf>,
}

impl fmt::Debug for Profile {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Profile")
            .field("server", &self.server.as_str())
            .field("trust", &self.trust)
            .field("api_key", &self.api_key)
            .field("file", &self.file)
            .finish()
    }
}

/// The credentials file's contents.
#[derive(Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StoredCredentials {
    /// API base URL.
    pub server: String,
    /// Pinned CA fingerprint (`sha256:…`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ca_fingerprint: Option<String>,
    /// CA file, when trust was given as a file instead.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ca_file: Option<PathBuf>,
    /// The API key.
    pub api_key: String,
}

impl fmt::Debug for StoredCredentials {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("StoredCredentials")
            .field("server", &self.server)
            .field("ca_fingerprint", &self.ca_fingerprint)
            .field("ca_file", &self.ca_file)
            .field("api_key", &"<redacted>")
            .finish()
    }
}

impl StoredCredentials {
    /// What to store for a profile.
    pub fn of(server: &Url, trust: &TrustAnchor, api_key: &ApiKey) -> Self {
        let (ca_fingerprint, ca_file) = match trust {
            TrustAnchor::Pinned(fp) => (Some(fp.to_string()), None),
            TrustAnchor::CaFile { path, .. } => (None, Some(path.clone())),
        };
        StoredCredentials {
            server: server.as_str().trim_end_matches('/').to_owned(),
            ca_fingerprint,
            ca_file,
            api_key: api_key.expose(),
        }
    }
}

/// Reads the credentials file, `None` when it does not exist.
pub fn read_credentials(path: &Path) -> Result<Option<StoredCredentials>, CliError> {
    let text = match fs::read_to_string(path) {
        Ok(text) => text,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => {
            return Err(CliError::Config(format!(
                "cannot read credentials file {}: {e}",
                path.display()
            )))
        }
    };
    if let Ok(meta) = fs::metadata(path) {
        let mode = meta.permissions().mode() & 0o777;
        if mode & 0o077 != 0 {
            tracing::warn!(
                "credentials file {} has mode {mode:o}; others may read your API key (chmod 600 it)",
                path.display()
            );
        }
    }
    toml::from_str(&text).map(Some).map_err(|e| {
        CliError::Config(format!(
            "credentials file {} is corrupt ({}); run `heex login` again",
            path.display(),
            e.message()
        ))
    })
}

/// Writes the credentials file atomically ([`heex_fs::write`], 0600) in a 0700 directory.
pub fn write_credentials(path: &Path, creds: &StoredCredentials) -> Result<(), CliError> {
    let dir = path
        .parent()
        .ok_or_else(|| CliError::Config(format!("{} has no parent directory", path.display())))?;
    if !dir.is_dir() {
        fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(dir)
            .map_err(|e| CliError::file("create directory", dir, e))?;
    }
    let text = toml::to_string(creds)
        .map_err(|e| CliError::Unexpected(format!("cannot encode credentials: {e}")))?;
    heex_fs::write(path, text.as_bytes(), heex_fs::Options::private())
        .map_err(|e| CliError::file(e.action.verb(), &e.path, e.source))?;
    Ok(())
}

/// Deletes the credentials file; false when there was none.
pub fn delete_credentials(path: &Path) -> Result<bool, CliError> {
    match fs::remove_file(path) {
        Ok(()) => Ok(true),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(false),
        Err(e) => Err(CliError::file("delete", path, e)),
    }
}

/// The profile commands run with: environment variables first, then the credentials file.
pub fn resolve(env: &Env) -> Result<Profile, CliError> {
    let env_trust = env.trust()?;
    let from_env = |server: &str, key: &str, trust: TrustAnchor| -> Result<Profile, CliError> {
        Ok(Profile {
            server: parse_server(server, ENV_SERVER)?,
            trust,
            api_key: parse_key(key, ENV_API_KEY)?,
            file: None,
        })
    };
    if let (Some(server), Some(key), Some(trust)) = (&env.server, &env.api_key, &env_trust) {
        return from_env(server, key, trust.clone());
    }
    let path = env.credentials_path()?;
    let Some(stored) = read_credentials(&path)? else {
        return Err(CliError::Config(format!(
            "not logged in: run `heex login --server URL --ca-fingerprint sha256:…`, or set \
             {ENV_SERVER}, {ENV_API_KEY} and {ENV_CA_FINGERPRINT}"
        )));
    };
    let corrupt = |e: CliError| {
        CliError::Config(format!(
            "credentials file {}: {e}; run `heex login` again",
            path.display()
        ))
    };
    let server = match &env.server {
        Some(s) => parse_server(s, ENV_SERVER)?,
        None => parse_server(&stored.server, "server").map_err(corrupt)?,
    };
    let api_key = match &env.api_key {
        Some(k) => parse_key(k, ENV_API_KEY)?,
        None => parse_key(&stored.api_key, "api_key").map_err(corrupt)?,
    };
    let trust = match env_trust {
        Some(t) => t,
        None => match (&stored.ca_fingerprint, &stored.ca_file) {
            (Some(fp), None) => parse_fingerprint(fp, "ca_fingerprint").map_err(corrupt)?,
            (None, Some(file)) => TrustAnchor::from_ca_file(file)?,
            _ => {
                return Err(corrupt(CliError::Config(
                    "exactly one of ca_fingerprint and ca_file must be set".into(),
                )))
            }
        },
    };
    Ok(Profile {
        server,
        trust,
        api_key,
        file: Some(path),
    })
}

#[cfg(test)]
mod tests;
