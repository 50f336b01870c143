//! The command line, as clap parses it.

use std::path::PathBuf;
use std::time::Duration;

use clap::{Args, Parser, Subcommand, ValueEnum};
use clap_complete::Shell;
use heex_proto::api::{Role, Scope};

/// heex: manage a Heex workspace's API keys, members, devices and audit log.
///
/// Credentials come from `heex login` (stored in $XDG_CONFIG_HOME/heex/credentials.toml) or from
/// HEEX_SERVER, HEEX_API_KEY and HEEX_CA_FINGERPRINT, which override the stored values.
#[derive(Debug, Parser)]
#[command(name = "heex", version, propagate_version = true)]
pub struct Cli {
    /// Print the API's JSON instead of tables (for scripts).
    #[arg(long, global = true)]
    pub json: bool,

    /// What to do.
    #[command(subcommand)]
    pub command: Command,
}

/// Top-level commands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Check an API key with the server and store it, with the server and its CA, for later commands.
    Login(LoginArgs),
    /// Delete the stored credentials.
    Logout,
    /// Show who the API key belongs to.
    Whoami,
    /// List, create, copy, revoke and rotate API keys.
    #[command(subcommand)]
    Keys(KeysCommand),
    /// List, invite and remove team members.
    #[command(subcommand)]
    Members(MembersCommand),
    /// Accept an invitation to a workspace.
    #[command(subcommand)]
    Invitations(InvitationsCommand),
    /// List, show, revoke, rename, label and delete enrolled devices.
    #[command(subcommand)]
    Devices(DevicesCommand),
    /// List the reports devices sent.
    #[command(subcommand)]
    Reports(ReportsCommand),
    /// Show the workspace's audit log, newest first.
    Audit(AuditArgs),
    /// Print a one-time sign-in link to the web console (works once, for 5 minutes).
    Console,
    /// Print a shell completion script.
    Completions {
        /// The shell.
        shell: Shell,
    },
}

/// How to reach and trust the server, for commands that do not use stored credentials.
#[derive(Debug, Clone, Args)]
pub struct ServerArgs {
    /// The cloud's API URL, e.g. https://heex.example.com:8443 (default: $HEEX_SERVER).
    #[arg(long, value_name = "URL")]
    pub server: Option<String>,
    /// SHA-256 fingerprint of the cloud's CA, as printed by `heex-cloud init`
    /// (default: $HEEX_CA_FINGERPRINT).
    #[arg(long, value_name = "sha256:HEX", conflicts_with = "ca_file")]
    pub ca_fingerprint: Option<String>,
    /// PEM file of the cloud's CA certificate, instead of a fingerprint (default: $HEEX_CA_FILE).
    #[arg(long, value_name = "PATH")]
    pub ca_file: Option<PathBuf>,
}

/// `heex login`.
#[derive(Debug, Args)]
pub struct LoginArgs {
    /// Server and trust.
    #[command(flatten)]
    pub server: ServerArgs,
    /// The API key (default: $HEEX_API_KEY, else a prompt). Prefer the variable or the
    /// prompt: arguments show in the process list and shell history.
    #[arg(long, value_name = "KEY")]
    pub api_key: Option<String>,
}

/// `heex keys …`.
#[derive(Debug, Subcommand)]
pub enum KeysCommand {
    /// List your keys (or, with --all, every key of the workspace).
    List {
        /// Every member's keys (needs an admin key).
        #[arg(long)]
        all: bool,
    },
    /// Create a key for yourself; it goes to the clipboard on a terminal, to stdout otherwise.
    Create {
        /// What the key is for: "laptop", "ci", "docker-fleet-a".
        name: String,
        /// What the key may do.
        #[arg(long, value_enum, default_value_t = ScopeArg::Enroll)]
        scope: ScopeArg,
        /// Lifetime, e.g. 30d or 12h (default 90 days, at most 365 days).
        #[arg(long, value_name = "DURATION", value_parser = humantime::parse_duration)]
        expires_in: Option<Duration>,
        /// How many devices the key may enroll (default unlimited).
        #[arg(long, value_name = "N", value_parser = clap::value_parser!(u64).range(1..))]
        max_uses: Option<u64>,
    },
    /// Copy one of your keys again (to the clipboard on a terminal, to stdout otherwise).
    Copy {
        /// Key id (the 12 characters after "heex_").
        id: String,
    },
    /// Revoke a key now.
    Revoke {
        /// Key id.
        id: String,
    },
    /// Replace a key with a new one of the same name and scope; the old one is revoked after
    /// the overlap.
    Rotate {
        /// Key id.
        id: String,
        /// How long the old key keeps working, e.g. 1h (default: revoked at once).
        #[arg(long, value_name = "DURATION", value_parser = humantime::parse_duration)]
        overlap: Option<Duration>,
    },
}

/// `heex members …`.
#[derive(Debug, Subcommand)]
pub enum MembersCommand {
    /// List the workspace's members.
    List,
    /// Invite someone; prints the token they accept with.
    Invite {
        /// Their email.
        email: String,
        /// Their role.
        #[arg(long, value_enum, default_value_t = RoleArg::Member)]
        role: RoleArg,
        /// How long the invitation stays valid, e.g. 2d (default 7 days).
        #[arg(long, value_name = "DURATION", value_parser = humantime::parse_duration)]
        expires_in: Option<Duration>,
    },
    /// Remove a member and revoke all of their keys (their devices stay enrolled).
    Remove {
        /// Member id (mem_…) or email.
        member: String,
    },
}

/// `heex invitations …`.
#[derive(Debug, Subcommand)]
pub enum InvitationsCommand {
    /// Join a workspace with an invitation token and store the API key it gives you.
    ///
    /// The token comes from the argument, else --token-stdin, else $HEEX_INVITATION_TOKEN,
    /// else a no-echo prompt on a terminal. An argument shows in the process list and shell
    /// history: prefer the others.
    Accept {
        /// The invitation token (heexinv_…), or `-` to read it from standard input.
        token: Option<String>,
        /// Read the token from the first line of standard input.
        #[arg(long, conflicts_with = "token")]
        token_stdin: bool,
        /// Server and trust.
        #[command(flatten)]
        server: ServerArgs,
        /// Name of your first key.
        #[arg(long, value_name = "NAME")]
        key_name: Option<String>,
    },
    /// List the workspace's pending invitations (owner or admin role; tokens are never shown).
    List,
    /// Cancel a pending invitation: its token stops working at once.
    Cancel {
        /// The invitation id (inv_…), as `heex invitations list` shows it.
        id: String,
    },
}

/// `heex devices …`.
#[derive(Debug, Subcommand)]
pub enum DevicesCommand {
    /// List enrolled devices, a page at a time (oldest enrolled first by default).
    List(DevicesListArgs),
    /// Count devices: total, connected, expiring soon, revoked (without listing them).
    Count {
        /// Days ahead in which a certificate expiring counts as expiring soon (0 to 3650).
        #[arg(long, value_name = "DAYS", default_value_t = 7,
              value_parser = clap::value_parser!(u32).range(0..=3650))]
        expiring_within: u32,
    },
    /// Show one device, with its latest facts.
    Show {
        /// Device id (dev_…).
        id: String,
    },
    /// Revoke a device: its session closes at once and it can no longer connect or renew.
    Revoke {
        /// Device id (dev_…).
        id: String,
    },
    /// Rename a device.
    Rename {
        /// Device id (dev_…).
        id: String,
        /// The new name.
        name: String,
    },
    /// Set labels (KEY=VALUE) or remove them (KEY-) on a device; other labels stay.
    Label {
        /// Device id (dev_…).
        id: String,
        /// KEY=VALUE to set, KEY- to remove.
        #[arg(required = true, value_name = "KEY=VALUE|KEY-")]
        labels: Vec<String>,
    },
    /// Delete a revoked device's record.
    Delete {
        /// Device id (dev_…).
        id: String,
    },
}

/// `heex devices list`.
#[derive(Debug, Default, Args)]
pub struct DevicesListArgs {
    /// Devices a page (and, without --all, the most shown): 1 to 1000.
    #[arg(long, value_name = "N", default_value_t = 100,
          value_parser = clap::value_parser!(u32).range(1..=1000))]
    pub limit: u32,
    /// Every matching device, fetched and printed a page at a time.
    #[arg(long)]
    pub all: bool,
    /// One JSON object a line instead of a table.
    #[arg(long)]
    pub jsonl: bool,
    /// Only devices with a live session.
    #[arg(long, conflicts_with = "disconnected")]
    pub connected: bool,
    /// Only devices without a live session.
    #[arg(long)]
    pub disconnected: bool,
    /// Only revoked devices.
    #[arg(long, conflicts_with = "active")]
    pub revoked: bool,
    /// Only devices not revoked.
    #[arg(long)]
    pub active: bool,
    /// A label selector, all of which must hold: site=lyon, env!=prod, gpu (set), !retired
    /// (not set); repeat or separate with commas.
    #[arg(long, value_name = "SELECTOR")]
    pub label: Vec<String>,
    /// Text in the device's name or id.
    #[arg(long, value_name = "TEXT")]
    pub search: Option<String>,
    /// Only devices enrolled by this member (email or mem_… id).
    #[arg(long, value_name = "MEMBER")]
    pub enrolled_by: Option<String>,
    /// Only devices enrolled with this API key (key id).
    #[arg(long, value_name = "KEY_ID")]
    pub key: Option<String>,
    /// Order: enrolled, name or last_seen; a leading - reverses it (-last_seen).
    #[arg(long, value_name = "ORDER", allow_hyphen_values = true)]
    pub sort: Option<String>,
    /// Only devices whose certificate expires before this time: RFC 3339 or a duration from
    /// now (30d).
    #[arg(long, value_name = "TIME")]
    pub cert_expires_before: Option<String>,
    /// Only devices not seen since this time: RFC 3339 or a duration ago (2h, 7d).
    #[arg(long, value_name = "TIME")]
    pub last_seen_before: Option<String>,
}

/// `heex reports …`.
#[derive(Debug, Subcommand)]
pub enum ReportsCommand {
    /// List one device's stored reports in sequence order.
    List {
        /// Device id (dev_…).
        #[arg(long)]
        device: String,
        /// Only reports with sequence numbers above this.
        #[arg(long, value_name = "N", default_value_t = 0)]
        after: u64,
        /// At most this many reports (at most 1000).
        #[arg(long, value_name = "N", default_value_t = 100,
              value_parser = clap::value_parser!(u32).range(1..=1000))]
        limit: u32,
    },
}

/// `heex audit`.
#[derive(Debug, Args)]
pub struct AuditArgs {
    /// Only events by this actor (member email, device id or "system").
    #[arg(long)]
    pub actor: Option<String>,
    /// Only this action, or a prefix like "key.".
    #[arg(long)]
    pub action: Option<String>,
    /// Only events on this object (key id, member email, device id).
    #[arg(long)]
    pub target: Option<String>,
    /// Only events since this time: RFC 3339 (2026-05-01T00:00:00Z) or a duration ago (2h, 7d).
    #[arg(long, value_name = "TIME")]
    pub since: Option<String>,
    /// At most this many events (default 100).
    #[arg(long, value_name = "N", conflicts_with = "all",
          value_parser = clap::value_parser!(u64).range(1..))]
    pub limit: Option<u64>,
    /// Every matching event, fetched and printed a page at a time.
    #[arg(long)]
    pub all: bool,
}

/// Key scopes on the command line.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum ScopeArg {
    /// May only enroll devices.
    Enroll,
    /// May also manage keys, members and devices.
    Admin,
}

impl From<ScopeArg> for Scope {
    fn from(s: ScopeArg) -> Scope {
        match s {
            ScopeArg::Enroll => Scope::Enroll,
            ScopeArg::Admin => Scope::Admin,
        }
    }
}

/// Member roles on the command line.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum RoleArg {
    /// Manages their own keys and enrolls devices.
    Member,
    /// Also manages members, keys and devices.
    Admin,
    /// Full control.
    Owner,
}

impl From<RoleArg> for Role {
    fn from(r: RoleArg) -> Role {
        match r {
            RoleArg::Member => Role::Member,
            RoleArg::Admin => Role::Admin,
            RoleArg::Owner => Role::Owner,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::CommandFactory;

    #[test]
    fn command_line_is_consistent() {
        Cli::command().debug_assert();
    }

    #[test]
    fn parses_the_documented_forms() {
        let cli = Cli::try_parse_from([
            "heex",
            "keys",
            "create",
            "ci",
            "--scope",
            "admin",
            "--expires-in",
            "30d",
            "--max-uses",
            "3",
            "--json",
        ])
        .unwrap();
        let Command::Keys(KeysCommand::Create {
            name,
            scope,
            expires_in,
            max_uses,
        }) = cli.command
        else {
            panic!("{cli:?}");
        };
        assert!(cli.json);
        assert_eq!(name, "ci");
        assert_eq!(scope, ScopeArg::Admin);
        assert_eq!(expires_in, Some(Duration::from_secs(30 * 86400)));
        assert_eq!(max_uses, Some(3));

        assert!(Cli::try_parse_from(["heex", "keys", "create", "x", "--max-uses", "0"]).is_err());
        assert!(Cli::try_parse_from(["heex", "keys", "create", "x", "--scope", "root"]).is_err());
        assert!(Cli::try_parse_from([
            "heex",
            "login",
            "--ca-fingerprint",
            "sha256:00",
            "--ca-file",
            "/x"
        ])
        .is_err());
        let cli =
            Cli::try_parse_from(["heex", "keys", "rotate", "abc", "--overlap", "1h"]).unwrap();
        assert!(matches!(
            cli.command,
            Command::Keys(KeysCommand::Rotate { overlap: Some(d), .. }) if d == Duration::from_secs(3600)
        ));
    }
}
