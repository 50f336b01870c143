//! The agent's configuration file (`/etc/heex/agent.toml`, written by heex-installer).

use std::path::{Path, PathBuf};
use std::time::Duration;

use heex_proto::gateway_addr::GatewayAddrError;
use heex_proto::{DeviceId, GatewayAddr};
use serde::Deserialize;

/// Where the agent looks for its configuration when no path is given.
pub use heex_proto::device_files::DEFAULT_CONFIG_PATH;
use heex_proto::device_files::{CA_CRT, DEVICE_CRT, DEVICE_KEY, STATUS_JSON};

/// Shortest heartbeat interval accepted.
pub const MIN_HEARTBEAT: Duration = Duration::from_millis(200);
/// Longest heartbeat interval accepted: the gateway drops sessions that stay silent for
/// several minutes, so a slower heartbeat would look like a dead peer.
pub const MAX_HEARTBEAT: Duration = Duration::from_secs(60);

/// The validated agent configuration.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    /// API base URL used at enrollment (kept for renewal and diagnostics).
    pub server: String,
    /// `host:port` of the mTLS gateway.
    pub gateway: String,
    /// This machine's device id (the CN of its certificate).
    pub device_id: DeviceId,
    /// Directory holding `device.key`, `device.crt`, `ca.crt` and `status.json`.
    pub state_dir: PathBuf,
    /// How often the agent sends a heartbeat.
    #[serde(default = "default_heartbeat", with = "humantime_serde")]
    pub heartbeat_interval: Duration,
    /// How often the agent sends refreshed system facts.
    #[serde(default = "default_facts", with = "humantime_serde")]
    pub facts_interval: Duration,
    /// First reconnect delay ceiling.
    #[serde(default = "default_backoff_initial", with = "humantime_serde")]
    pub backoff_initial: Duration,
    /// Largest reconnect delay.
    #[serde(default = "default_backoff_max", with = "humantime_serde")]
    pub backoff_max: Duration,
    /// Bound on the report outbox, in bytes; reports beyond it are refused, never dropped.
    #[serde(default = "default_outbox_max_bytes")]
    pub outbox_max_bytes: u64,
    /// Unix socket where programs on the machine submit reports (see
    /// [`Config::socket_path`] for the default). `socket` is the older name.
    #[serde(default, alias = "socket")]
    pub socket_path: Option<PathBuf>,
    /// Group (name or number) whose members may submit reports on the socket: the socket
    /// and, when it is not the state directory, its directory get this group (0660 and
    /// 0750). Default: the agent's own group.
    #[serde(default)]
    pub socket_group: Option<String>,
}

/// The systemd RuntimeDirectory of the packaged unit; the socket lives here when it exists.
pub const RUNTIME_DIR: &str = "/run/heex";

fn default_heartbeat() -> Duration {
    Duration::from_secs(30)
}
fn default_facts() -> Duration {
    Duration::from_secs(600)
}
fn default_backoff_initial() -> Duration {
    Duration::from_secs(1)
}
fn default_backoff_max() -> Duration {
    Duration::from_secs(60)
}
fn default_outbox_max_bytes() -> u64 {
    crate::outbox::DEFAULT_MAX_BYTES
}

/// Why the configuration cannot be used. Every variant names the file and the fix.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ConfigError {
    /// The file cannot be read.
    #[error("cannot read config {path}: {source}; run heex-installer to enroll this machine or pass --config")]
    Read {
        /// The file.
        path: PathBuf,
        /// The I/O error.
        source: std::io::Error,
    },
    /// The file is not valid TOML or has unknown or ill-typed keys.
    #[error("invalid config {path}: {message}")]
    Parse {
        /// The file.
        path: PathBuf,
        /// The parser's message, on one line.
        message: String,
    },
    /// A value is out of range.
    #[error("invalid config {path}: {message}")]
    Invalid {
        /// The file.
        path: PathBuf,
        /// What is wrong.
        message: String,
    },
}

impl Config {
    /// Reads and validates the configuration at `path`.
    pub fn load(path: &Path) -> Result<Config, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            path: path.to_owned(),
            source,
        })?;
        Config::parse(&text, path)
    }

    /// Parses and validates configuration text; `path` is only used in messages.
    pub fn parse(text: &str, path: &Path) -> Result<Config, ConfigError> {
        let config: Config = toml::from_str(text).map_err(|e| ConfigError::Parse {
            path: path.to_owned(),
            message: one_line(&e.to_string()),
        })?;
        config.validate().map_err(|message| ConfigError::Invalid {
            path: path.to_owned(),
            message,
        })?;
        Ok(config)
    }

    fn validate(&self) -> Result<(), String> {
        self.gateway_addr()?;
        if !(self.server.starts_with("https://") || self.server.starts_with("http://")) {
            return Err(format!("server {:?} must be an https:// URL", self.server));
        }
        if self.state_dir.as_os_str().is_empty() {
            return Err("state_dir must not be empty".into());
        }
        if self.heartbeat_interval < MIN_HEARTBEAT || self.heartbeat_interval > MAX_HEARTBEAT {
            return Err(format!(
                "heartbeat_interval must be between {} and {}",
                humantime::format_duration(MIN_HEARTBEAT),
                humantime::format_duration(MAX_HEARTBEAT)
            ));
        }
        if self.facts_interval < self.heartbeat_interval {
            return Err("facts_interval must not be shorter than heartbeat_interval".into());
        }
        if self.backoff_initial.is_zero() {
            return Err("backoff_initial must be greater than zero".into());
        }
        if self.backoff_max < self.backoff_initial {
            return Err("backoff_max must not be shorter than backoff_initial".into());
        }
        if let Some(g) = &self.socket_group {
            if g.is_empty() || g.contains(|c: char| c == ':' || c.is_whitespace()) {
                return Err(format!("socket_group {g:?} is not a group name or number"));
            }
        }
        if self.outbox_max_bytes < crate::outbox::MIN_MAX_BYTES {
            return Err(format!(
                "outbox_max_bytes must be at least {}",
                crate::outbox::MIN_MAX_BYTES
            ));
        }
        Ok(())
    }

    /// The gateway's address, parsed as the cloud and the installer parse it.
    pub fn gateway_addr(&self) -> Result<GatewayAddr, String> {
        self.gateway
            .parse()
            .map_err(|e: GatewayAddrError| e.to_string())
    }

    /// The gateway's host name or IP address (IPv6 without brackets).
    pub fn gateway_host(&self) -> String {
        self.gateway_addr()
            .map(|a| a.host().to_owned())
            .unwrap_or_default()
    }

    /// The gateway's port.
    pub fn gateway_port(&self) -> u16 {
        self.gateway_addr().map_or(0, |a| a.port())
    }

    /// The device's private key.
    pub fn key_path(&self) -> PathBuf {
        self.state_dir.join(DEVICE_KEY)
    }
    /// The device's certificate.
    pub fn cert_path(&self) -> PathBuf {
        self.state_dir.join(DEVICE_CRT)
    }
    /// The cloud CAs this device trusts (`ca.crt`: one, or several during a CA rotation).
    pub fn ca_path(&self) -> PathBuf {
        self.state_dir.join(CA_CRT)
    }
    /// The status file `heex-agent status` reads.
    pub fn status_path(&self) -> PathBuf {
        self.state_dir.join(STATUS_JSON)
    }
    /// The report outbox directory.
    pub fn outbox_dir(&self) -> PathBuf {
        self.state_dir.join("outbox")
    }
    /// The report intake socket: `socket_path`, else `/run/heex/agent.sock` when
    /// `/run/heex` exists (the packaged unit's RuntimeDirectory, where a group may reach
    /// it), else `<state_dir>/agent.sock` (reachable by the agent's user only: the state
    /// directory is 0700).
    pub fn socket_path(&self) -> PathBuf {
        if let Some(p) = &self.socket_path {
            return p.clone();
        }
        let runtime = Path::new(RUNTIME_DIR);
        if runtime.is_dir() {
            return runtime.join("agent.sock");
        }
        self.state_dir.join("agent.sock")
    }
}

fn one_line(s: &str) -> String {
    s.split_whitespace().collect::<Vec<_>>().join(" ")
}

#[cfg(test)]
mod tests {
    use super::*;

    const DEVICE: &str = "dev_AAAAAAAAAAAAAAAAAAAA";

    fn minimal() -> String {
        format!(
            "server = \"https://127.0.0.1:8443\"\ngateway = \"127.0.0.1:8444\"\n\
             device_id = \"{DEVICE}\"\nstate_dir = \"/var/lib/heex\"\n"
        )
    }

    #[test]
    fn every_key_the_installer_may_write_or_keep_is_accepted_and_no_other() {
        use heex_proto::device_files::{OWNED_KEYS, SETTINGS};
        let text = minimal();
        for key in OWNED_KEYS {
            assert!(text.contains(&format!("{key} = ")), "{key}");
        }
        for key in SETTINGS {
            let value = match key {
                "outbox_max_bytes" => "1048576",
                "socket_path" | "socket" => "\"/run/heex/agent.sock\"",
                "socket_group" => "\"heex\"",
                "backoff_max" | "facts_interval" => "\"90s\"",
                _ => "\"5s\"",
            };
            let with = format!("{text}{key} = {value}\n");
            Config::parse(&with, Path::new("agent.toml"))
                .unwrap_or_else(|e| panic!("{key} is listed in SETTINGS but refused: {e}"));
        }
        let err = Config::parse(
            &format!("{text}heartbeat = \"5s\"\n"),
            Path::new("agent.toml"),
        )
        .unwrap_err();
        assert!(err.to_string().contains("heartbeat"), "{err}");
    }

    #[test]
    fn minimal_config_gets_defaults() {
        let c = Config::parse(&minimal(), Path::new("agent.toml")).unwrap();
        assert_eq!(c.device_id.as_str(), DEVICE);
        assert_eq!(c.gateway_host(), "127.0.0.1");
        assert_eq!(c.gateway_port(), 8444);
        assert_eq!(c.heartbeat_interval, Duration::from_secs(30));
        assert_eq!(c.facts_interval, Duration::from_secs(600));
        assert_eq!(c.backoff_initial, Duration::from_secs(1));
        assert_eq!(c.backoff_max, Duration::from_secs(60));
        assert_eq!(c.cert_path(), Path::new("/var/lib/heex/device.crt"));
    }

    #[test]
    fn the_documented_example_parses() {
        let text = format!(
            "{}heartbeat_interval = \"1s\"\nfacts_interval = \"10m\"\n\
             backoff_initial = \"500ms\"\nbackoff_max = \"1m\"\n",
            minimal()
        );
        let c = Config::parse(&text, Path::new("agent.toml")).unwrap();
        assert_eq!(c.heartbeat_interval, Duration::from_secs(1));
        assert_eq!(c.backoff_initial, Duration::from_millis(500));
    }

    #[test]
    fn unknown_keys_are_rejected() {
        let text = format!("{}colour = \"blue\"\n", minimal());
        let err = Config::parse(&text, Path::new("/etc/heex/agent.toml")).unwrap_err();
        let msg = err.to_string();
        assert!(msg.contains("/etc/heex/agent.toml"), "{msg}");
        assert!(msg.contains("colour"), "{msg}");
        assert!(!msg.contains('\n'), "{msg}");
    }

    #[test]
    fn bad_values_are_rejected() {
        for (extra, what) in [
            ("heartbeat_interval = \"0s\"\n", "heartbeat_interval"),
            ("heartbeat_interval = \"10m\"\n", "heartbeat_interval"),
            ("heartbeat_interval = \"soon\"\n", "heartbeat_interval"),
            (
                "backoff_initial = \"10s\"\nbackoff_max = \"1s\"\n",
                "backoff_max",
            ),
            ("facts_interval = \"1s\"\n", "facts_interval"),
        ] {
            let text = format!("{}{extra}", minimal());
            let err = Config::parse(&text, Path::new("a.toml")).unwrap_err();
            assert!(err.to_string().contains(what), "{extra}: {err}");
        }
        let bad_gateway = minimal().replace("127.0.0.1:8444", "nowhere");
        assert!(Config::parse(&bad_gateway, Path::new("a.toml")).is_err());
        let bad_device = minimal().replace(DEVICE, "dev_short");
        assert!(Config::parse(&bad_device, Path::new("a.toml")).is_err());
    }

    #[test]
    fn ipv6_gateway() {
        let text = minimal().replace("127.0.0.1:8444", "[::1]:9000");
        let c = Config::parse(&text, Path::new("a.toml")).unwrap();
        assert_eq!(c.gateway_host(), "::1");
        assert_eq!(c.gateway_port(), 9000);
        assert!(Config::parse(
            &minimal().replace("127.0.0.1:8444", "::1:9000"),
            Path::new("a")
        )
        .is_err());
    }

    #[test]
    fn outbox_and_socket_settings() {
        let c = Config::parse(&minimal(), Path::new("a.toml")).unwrap();
        assert_eq!(c.outbox_max_bytes, crate::outbox::DEFAULT_MAX_BYTES);
        assert_eq!(c.outbox_dir(), Path::new("/var/lib/heex/outbox"));
        if !Path::new(RUNTIME_DIR).is_dir() {
            assert_eq!(c.socket_path(), Path::new("/var/lib/heex/agent.sock"));
        }
        let text = format!(
            "{}outbox_max_bytes = 1048576\nsocket = \"/run/heex/agent.sock\"\n",
            minimal()
        );
        let c = Config::parse(&text, Path::new("a.toml")).unwrap();
        assert_eq!(c.outbox_max_bytes, 1 << 20);
        assert_eq!(c.socket_path(), Path::new("/run/heex/agent.sock"));
        let text = format!(
            "{}socket_path = \"/tmp/x.sock\"\nsocket_group = \"robots\"\n",
            minimal()
        );
        let c = Config::parse(&text, Path::new("a.toml")).unwrap();
        assert_eq!(c.socket_path(), Path::new("/tmp/x.sock"));
        assert_eq!(c.socket_group.as_deref(), Some("robots"));
        let bad = format!("{}socket_group = \"a:b\"\n", minimal());
        let err = Config::parse(&bad, Path::new("a.toml")).unwrap_err();
        assert!(err.to_string().contains("socket_group"), "{err}");
        let tiny = format!("{}outbox_max_bytes = 1000\n", minimal());
        let err = Config::parse(&tiny, Path::new("a.toml")).unwrap_err();
        assert!(err.to_string().contains("outbox_max_bytes"), "{err}");
    }

    #[test]
    fn missing_file_names_the_fix() {
        let err = Config::load(Path::new("/nonexistent/agent.toml")).unwrap_err();
        let msg = err.to_string();
        assert!(
            msg.contains("/nonexistent/agent.toml") && msg.contains("heex-installer"),
            "{msg}"
        );
    }
}
