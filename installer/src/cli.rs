//! Command-line interface of `heex-installer`.

use std::fmt;
use std::path::PathBuf;

use clap::{ArgGroup, Parser};
use heex_proto::Fingerprint;

/// Default directory for `agent.toml`.
pub const DEFAULT_CONFIG_DIR: &str = "/etc/heex";
/// Default directory for the device key, certificate and CA certificate.
pub const DEFAULT_STATE_DIR: &str = "/var/lib/heex";

/// Enroll this machine with a Heex cloud: generate its private key, exchange a CSR and an
/// API key for a device certificate, and write the credentials and the agent configuration.
///
/// The API key is read from exactly one of: --api-key, $HEEX_API_KEY, the file named by
/// $HEEX_API_KEY_FILE, or a prompt when run in a terminal. It is spent once, never stored.
#[derive(Debug, Parser)]
#[command(name = "heex-installer", version)]
#[command(group(ArgGroup::new("trust").required(true).args(["ca_fingerprint", "ca_file"])))]
pub struct Cli {
    /// Base URL of the Heex cloud API, e.g. https://heex.example.com:8443
    #[arg(long, value_name = "URL")]
    pub server: String,

    /// Trust the server only if it presents the CA with this fingerprint (printed by
    /// `heex-cloud init`).
    #[arg(long, value_name = "sha256:HEX", value_parser = parse_fingerprint)]
    pub ca_fingerprint: Option<Fingerprint>,

    /// Trust the server only if its certificate chains to a CA in this PEM file.
    #[arg(long, value_name = "PEM")]
    pub ca_file: Option<PathBuf>,

    /// The API key (visible to other local users in the process list: prefer
    /// $HEEX_API_KEY_FILE or the prompt).
    #[arg(long, value_name = "KEY", value_parser = parse_secret)]
    pub api_key: Option<SecretArg>,

    /// Device name shown in the console [default: the host name]
    #[arg(long, value_name = "NAME")]
    pub name: Option<String>,

    /// A label for the device; repeat for several.
    #[arg(long = "label", value_name = "KEY=VALUE", value_parser = parse_label)]
    pub labels: Vec<(String, String)>,

    /// Where to write agent.toml.
    #[arg(long, value_name = "DIR", default_value = DEFAULT_CONFIG_DIR)]
    pub config_dir: PathBuf,

    /// Where to write device.key, device.crt and ca.crt.
    #[arg(long, value_name = "DIR", default_value = DEFAULT_STATE_DIR)]
    pub state_dir: PathBuf,

    /// Enroll again even if this machine is already enrolled (spends the key).
    #[arg(long)]
    pub force: bool,

    /// Then install the hardened heex-agent systemd service, enable it and start it
    /// (restart it if the credentials or the unit changed). Needs the default --config-dir
    /// and --state-dir, root, and a machine running systemd.
    #[arg(long)]
    pub systemd: bool,

    /// With --systemd: install and enable the service for the next boot, but do not start it
    /// now.
    #[arg(long, requires = "systemd")]
    pub no_start: bool,

    /// Prefix of the files systemd and the package own (/etc/systemd/system,
    /// /run/systemd/system, /lib/systemd/system, /etc/passwd, /etc/group); the default
    /// directories then lie under it too. For tests.
    #[arg(long, hide = true, value_name = "DIR", default_value = "/")]
    pub systemd_root: PathBuf,
}

/// A secret given on the command line. Its `Debug` never shows the value.
#[derive(Clone)]
pub struct SecretArg(pub String);

impl fmt::Debug for SecretArg {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("SecretArg(<redacted>)")
    }
}

fn parse_secret(s: &str) -> Result<SecretArg, String> {
    Ok(SecretArg(s.to_owned()))
}

fn parse_fingerprint(s: &str) -> Result<Fingerprint, String> {
    s.parse()
        .map_err(|e: heex_proto::fingerprint::FingerprintError| e.to_string())
}

/// Longest label key accepted.
const MAX_LABEL_KEY: usize = 63;
/// Longest label value accepted.
const MAX_LABEL_VALUE: usize = 256;

fn parse_label(s: &str) -> Result<(String, String), String> {
    let Some((key, value)) = s.split_once('=') else {
        return Err("a label is written KEY=VALUE, e.g. --label site=lyon".to_owned());
    };
    let key_ok = !key.is_empty()
        && key.len() <= MAX_LABEL_KEY
        && key
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"._-/".contains(&b));
    if !key_ok {
        return Err(format!(
            "label key must be 1-{MAX_LABEL_KEY} letters, digits, '.', '_', '-' or '/'"
        ));
    }
    heex_proto::text::check_value("label value", value, MAX_LABEL_VALUE)
        .map_err(|e| e.to_string())?;
    Ok((key.to_owned(), value.to_owned()))
}

#[cfg(test)]
mod tests {
    use super::*;

    const PIN: &str = "sha256:0000000000000000000000000000000000000000000000000000000000000000";

    #[test]
    fn parses_a_full_command_line() {
        let cli = Cli::try_parse_from([
            "heex-installer",
            "--server",
            "https://h:8443",
            "--ca-fingerprint",
            PIN,
            "--label",
            "site=lyon",
            "--label",
            "role=arm",
            "--force",
        ])
        .unwrap();
        assert_eq!(cli.labels.len(), 2);
        assert!(cli.force);
        assert_eq!(cli.config_dir, PathBuf::from("/etc/heex"));
        assert_eq!(cli.state_dir, PathBuf::from("/var/lib/heex"));
        assert!(!cli.systemd && !cli.no_start);
        assert_eq!(cli.systemd_root, PathBuf::from("/"));
    }

    #[test]
    fn no_start_needs_systemd() {
        let base = [
            "heex-installer",
            "--server",
            "https://h",
            "--ca-file",
            "/x.pem",
        ];
        let cli = Cli::try_parse_from(base.iter().chain(&["--systemd", "--no-start"])).unwrap();
        assert!(cli.systemd && cli.no_start);
        assert!(Cli::try_parse_from(base.iter().chain(&["--no-start"])).is_err());
    }

    #[test]
    fn requires_exactly_one_trust_option() {
        assert!(Cli::try_parse_from(["heex-installer", "--server", "https://h"]).is_err());
        assert!(Cli::try_parse_from([
            "heex-installer",
            "--server",
            "https://h",
            "--ca-fingerprint",
            PIN,
            "--ca-file",
            "/x.pem",
        ])
        .is_err());
        assert!(Cli::try_parse_from([
            "heex-installer",
            "--server",
            "https://h",
            "--ca-fingerprint",
            "sha256:abc",
        ])
        .is_err());
    }

    #[test]
    fn debug_hides_the_api_key() {
        let cli = Cli::try_parse_from([
            "heex-installer",
            "--server",
            "https://h",
            "--ca-file",
            "/x.pem",
            "--api-key",
            "heex_secretsecret",
        ])
        .unwrap();
        assert!(!format!("{cli:?}").contains("secretsecret"));
    }

    #[test]
    fn labels_are_validated() {
        assert_eq!(
            parse_label("a=b=c").unwrap(),
            ("a".to_owned(), "b=c".to_owned())
        );
        assert_eq!(parse_label("a=").unwrap(), ("a".to_owned(), String::new()));
        assert!(parse_label("novalue").is_err());
        assert!(parse_label("=x").is_err());
        assert!(parse_label("sp ace=x").is_err());
        assert!(parse_label("k=line\nbreak").is_err());
    }
}
