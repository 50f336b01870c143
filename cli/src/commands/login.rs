//! `heex login`, `heex logout` and `heex invitations accept`: getting credentials in and out of
//! the credentials file.

use heex_proto::api::{AcceptInvitationRequest, AcceptInvitationResponse, WhoAmI};
use heex_proto::{ApiKey, InvitationToken};
use reqwest::Url;

use crate::cli::{InvitationsCommand, LoginArgs, ServerArgs};
use crate::client::ApiClient;
use crate::config::{
    parse_fingerprint, parse_key, parse_server, write_credentials, Env, StoredCredentials,
    ENV_API_KEY, ENV_INVITATION_TOKEN, ENV_SERVER,
};
use crate::context::Ctx;
use crate::error::CliError;
use crate::trust::TrustAnchor;

/// `heex login`: checks the key with `GET /v1/whoami`, then stores server, CA and key.
pub fn login(ctx: &mut Ctx<'_>, args: &LoginArgs) -> Result<(), CliError> {
    let (server, trust) = server_and_trust(&args.server, ctx.env)?;
    let key = login_key(args, ctx.env)?;
    let path = ctx.env.credentials_path()?;
    let client = ApiClient::new(&server, trust.clone(), Some(key.clone()))?;
    let who = client.get::<WhoAmI>("/v1/whoami", &[])?;
    write_credentials(&path, &StoredCredentials::of(&server, &trust, &key))?;
    tracing::info!(key = %key.id(), path = %path.display(), "credentials stored");
    if ctx.json {
        return ctx.print_json(&who.raw);
    }
    let w = &who.value;
    let line = format!(
        "Logged in to {} as {} ({}) in workspace \"{}\" with API key {} (scope {}, expires {}).\n\
         Credentials saved to {}",
        client.server(),
        w.email,
        w.role,
        w.workspace_name,
        w.key.id,
        w.key.scope.as_str(),
        ctx.clock.expiry(w.key.expires_at),
        path.display()
    );
    ctx.println(&line)
}

/// `heex logout`: deletes the credentials file.
pub fn logout(ctx: &mut Ctx<'_>) -> Result<(), CliError> {
    let path = ctx.env.credentials_path()?;
    let line = if crate::config::delete_credentials(&path)? {
        format!("Logged out: deleted {}", path.display())
    } else {
        format!("Not logged in: {} does not exist", path.display())
    };
    ctx.println(&line)
}

/// `heex invitations …`.
pub fn invitations(ctx: &mut Ctx<'_>, cmd: &InvitationsCommand) -> Result<(), CliError> {
    match cmd {
        InvitationsCommand::Accept {
            token,
            token_stdin,
            server,
            key_name,
        } => {
            let input = SecretInput {
                what: "invitation token",
                arg: token.as_deref().map(|t| (t, "the token argument")),
                stdin: *token_stdin,
                env: ctx
                    .env
                    .invitation_token
                    .as_deref()
                    .map(|t| (t, ENV_INVITATION_TOKEN)),
                how: "pass it as the argument, with --token-stdin, or in HEEX_INVITATION_TOKEN",
            };
            let token = input.read(ctx.env)?;
            accept(ctx, &token.text, server, key_name.clone())
        }
        InvitationsCommand::List => super::members::list_invitations(ctx),
        InvitationsCommand::Cancel { id } => super::members::cancel_invitation(ctx, id),
    }
}

/// `heex invitations accept`: joins the workspace and stores the first key like `login`.
fn accept(
    ctx: &mut Ctx<'_>,
    token: &str,
    server_args: &ServerArgs,
    key_name: Option<String>,
) -> Result<(), CliError> {
    let token = check_invitation_token(token)?;
    let (server, trust) = server_and_trust(server_args, ctx.env)?;
    let path = ctx.env.credentials_path()?;
    // The token is the credential here: no API key is sent.
    let client = ApiClient::new(&server, trust.clone(), None)?;
    let reply = client.post::<_, AcceptInvitationResponse>(
        "/v1/invitations/accept",
        &AcceptInvitationRequest {
            token: token.into_secret(),
            key_name,
        },
    )?;
    let joined = &reply.value;
    let key: ApiKey = joined.key.key.expose().parse().map_err(|_| {
        CliError::Unexpected(
            "the server sent a malformed API key; ask an admin for a new invitation".into(),
        )
    })?;
    write_credentials(&path, &StoredCredentials::of(&server, &trust, &key))?;
    tracing::info!(key = %key.id(), path = %path.display(), "credentials stored");
    if ctx.json {
        let summary = format!("API key {}", key.id());
        return ctx.deliver_key(joined.key.key.expose(), &summary, &reply.raw, "/key/key");
    }
    let info = &joined.key.info;
    let line = format!(
        "Joined workspace \"{}\" as {} ({}). API key {} (\"{}\", scope {}, expires {}) saved to {}",
        joined.workspace_name,
        joined.member.email,
        joined.member.role.as_str(),
        info.id,
        info.name,
        info.scope.as_str(),
        ctx.clock.expiry(info.expires_at),
        path.display()
    );
    ctx.println(&line)
}

/// Checks an invitation token's shape offline, so a truncated copy fails before any request.
pub fn check_invitation_token(token: &str) -> Result<InvitationToken, CliError> {
    InvitationToken::parse(token).map_err(|e| CliError::Usage(e.to_string()))
}

/// Server URL and trust anchor from flags, else from the environment.
pub fn server_and_trust(args: &ServerArgs, env: &Env) -> Result<(Url, TrustAnchor), CliError> {
    let server = match (&args.server, &env.server) {
        (Some(s), _) => parse_server(s, "--server")?,
        (None, Some(s)) => parse_server(s, ENV_SERVER)?,
        (None, None) => {
            return Err(CliError::Usage(format!(
                "--server is required (or set {ENV_SERVER}): the cloud's API URL, e.g. https://heex.example.com:8443"
            )))
        }
    };
    let trust = match (&args.ca_fingerprint, &args.ca_file) {
        (Some(fp), _) => parse_fingerprint(fp, "--ca-fingerprint")?,
        (None, Some(file)) => {
            let file = std::path::absolute(file).map_err(|e| CliError::file("resolve", file, e))?;
            TrustAnchor::from_ca_file(&file)?
        }
        (None, None) => env.trust()?.ok_or_else(|| {
            CliError::Usage(
                "--ca-fingerprint sha256:… (printed by `heex-cloud init`) or --ca-file is \
                 required to trust the server"
                    .into(),
            )
        })?,
    };
    Ok((server, trust))
}

/// The key to log in with: `--api-key`, else `$HEEX_API_KEY`, else a no-echo prompt.
fn login_key(args: &LoginArgs, env: &Env) -> Result<ApiKey, CliError> {
    let input = SecretInput {
        what: "API key",
        arg: args.api_key.as_deref().map(|k| (k, "--api-key")),
        stdin: false,
        env: env.api_key.as_deref().map(|k| (k, ENV_API_KEY)),
        how: "pass --api-key or set HEEX_API_KEY",
    };
    let typed = input.read(env)?;
    parse_key(&typed.text, typed.from)
}

/// Where a secret the user types (an API key, an invitation token) comes from, in this
/// order: the command line (`-` meaning standard input), standard input when asked, the
/// environment, else a no-echo prompt when standard input is a terminal.
struct SecretInput<'a> {
    /// What the secret is, for the prompt and messages.
    what: &'static str,
    /// The command-line value and how to name it.
    arg: Option<(&'a str, &'static str)>,
    /// Read it from standard input.
    stdin: bool,
    /// The environment's value and the variable's name.
    env: Option<(&'a str, &'static str)>,
    /// The ways to give it, for the message when there is none.
    how: &'static str,
}

/// A secret and where it came from (messages name the source, never the secret).
struct Typed {
    text: String,
    from: &'static str,
}

impl std::fmt::Debug for Typed {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Typed")
            .field("text", &"<redacted>")
            .field("from", &self.from)
            .finish()
    }
}

/// Longest line read from standard input for a secret.
const MAX_SECRET_LINE: u64 = 4096;

impl SecretInput<'_> {
    fn read(&self, env: &Env) -> Result<Typed, CliError> {
        let what = self.what;
        match (self.arg, self.stdin, self.env) {
            (Some(("-", _)), _, _) | (None, true, _) => Ok(Typed {
                text: read_stdin_line(what)?,
                from: "standard input",
            }),
            (Some((text, from)), _, _) | (None, false, Some((text, from))) => Ok(Typed {
                text: text.to_owned(),
                from,
            }),
            (None, false, None) if env.stdin_tty => {
                let typed = rpassword::prompt_password(format!("{}: ", capitalized(what)))
                    .map_err(|e| {
                        CliError::Usage(format!("cannot read the {what} from the terminal: {e}"))
                    })?;
                Ok(Typed {
                    text: typed,
                    from: "the prompt",
                })
            }
            (None, false, None) => Err(CliError::Usage(format!(
                "no {what}: {} (or run on a terminal to be prompted)",
                self.how
            ))),
        }
    }
}

/// The first line of standard input, trimmed.
fn read_stdin_line(what: &str) -> Result<String, CliError> {
    use std::io::{BufRead, Read};
    let mut line = String::new();
    std::io::stdin()
        .lock()
        .take(MAX_SECRET_LINE)
        .read_line(&mut line)
        .map_err(|e| CliError::Usage(format!("cannot read the {what} from standard input: {e}")))?;
    let line = line.trim();
    if line.is_empty() {
        return Err(CliError::Usage(format!(
            "standard input held no {what}: give it on the first line"
        )));
    }
    Ok(line.to_owned())
}

fn capitalized(what: &str) -> String {
    let mut chars = what.chars();
    chars
        .next()
        .map(|c| c.to_uppercase().chain(chars).collect())
        .unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn invitation_tokens_are_checked_offline() {
        let good = format!("heexinv_{}", "a1B2".repeat(8));
        assert_eq!(check_invitation_token(&good).unwrap().expose(), good);
        assert!(check_invitation_token(&good[..good.len() - 1]).is_err());
        assert!(check_invitation_token("heex_abc").is_err());
        let e = check_invitation_token(&format!("heexinv_{}", "-".repeat(32))).unwrap_err();
        assert_eq!(e.exit_code(), heex_proto::exit::USAGE);
    }

    #[test]
    fn secrets_come_from_the_argument_then_the_environment() {
        let input = |arg, env| SecretInput {
            what: "invitation token",
            arg,
            stdin: false,
            env,
            how: "pass it as the argument, with --token-stdin, or in HEEX_INVITATION_TOKEN",
        };
        let no_tty = Env::default();
        let both = input(Some(("a", "the token argument")), Some(("e", "HEEX_X")));
        let got = both.read(&no_tty).unwrap();
        assert_eq!((got.text.as_str(), got.from), ("a", "the token argument"));
        let got = input(None, Some(("e", "HEEX_X"))).read(&no_tty).unwrap();
        assert_eq!((got.text.as_str(), got.from), ("e", "HEEX_X"));
        // Nothing given and no terminal to prompt on: a usage error saying how to give it.
        let e = input(None, None).read(&no_tty).unwrap_err();
        assert_eq!(e.exit_code(), heex_proto::exit::USAGE);
        assert!(
            e.to_string().starts_with("no invitation token: pass it"),
            "{e}"
        );
        assert!(e.to_string().contains("HEEX_INVITATION_TOKEN"), "{e}");
    }

    #[test]
    fn server_and_trust_need_both() {
        let env = Env::default();
        let args = ServerArgs {
            server: Some("https://127.0.0.1:1".into()),
            ca_fingerprint: None,
            ca_file: None,
        };
        let e = server_and_trust(&args, &env).unwrap_err();
        assert!(e.to_string().contains("--ca-fingerprint"), "{e}");
        let fp = format!("sha256:{}", "ab".repeat(32));
        let env = Env {
            server: Some("https://10.0.0.1:8443".into()),
            ca_fingerprint: Some(fp.clone()),
            ..Env::default()
        };
        let none = ServerArgs {
            server: None,
            ca_fingerprint: None,
            ca_file: None,
        };
        let (url, trust) = server_and_trust(&none, &env).unwrap();
        assert_eq!(url.as_str(), "https://10.0.0.1:8443/");
        assert_eq!(trust, TrustAnchor::Pinned(fp.parse().unwrap()));
        // Flags win over the environment.
        let (url, _) = server_and_trust(&args, &env).unwrap();
        assert_eq!(url.as_str(), "https://127.0.0.1:1/");
        let plain = ServerArgs {
            server: Some("http://127.0.0.1:1".into()),
            ..none
        };
        assert!(server_and_trust(&plain, &env).is_err());
    }
}
