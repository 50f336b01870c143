//! One module per subcommand group, plus helpers they share.

pub mod audit;
pub mod console;
pub mod device_lifecycle;
pub mod devices;
pub mod keys;
pub mod login;
pub mod members;
pub mod reports;
pub mod whoami;

use clap::CommandFactory;
use clap_complete::Shell;
use heex_proto::KeyId;
use time::format_description::well_known::Rfc3339;
use time::OffsetDateTime;

use crate::cli::Cli;
use crate::context::Ctx;
use crate::error::CliError;

/// `heex completions SHELL`: the completion script on stdout.
pub fn completions(ctx: &mut Ctx<'_>, shell: Shell) -> Result<(), CliError> {
    let mut cmd = Cli::command();
    let mut script = Vec::new();
    clap_complete::generate(shell, &mut cmd, "heex", &mut script);
    ctx.print_raw(&String::from_utf8_lossy(&script))
}

/// A key id given on the command line. A full key is refused without echoing it: it belongs
/// in neither arguments nor shell history.
pub fn key_id_arg(text: &str) -> Result<KeyId, CliError> {
    let text = text.trim();
    if text.starts_with(heex_proto::apikey::PREFIX) {
        return Err(CliError::Usage(
            "give the key id (the 12 characters after \"heex_\"), not the whole key; \
             `heex keys list` shows the ids"
                .into(),
        ));
    }
    text.parse().map_err(|_| {
        CliError::Usage(format!(
            "{text:?} is not a key id: key ids are 12 letters or digits; `heex keys list` shows them"
        ))
    })
}

/// A duration in whole seconds, at least 1.
pub fn whole_secs(d: std::time::Duration, flag: &str) -> Result<u64, CliError> {
    match d.as_secs() {
        0 => Err(CliError::Usage(format!("{flag} must be at least 1s"))),
        s => Ok(s),
    }
}

/// A time given as RFC 3339 (2026-05-01T00:00:00Z) or as a duration from `now` (2h, 7d):
/// before it when `direction` is negative, after it otherwise. Answers RFC 3339 in UTC.
pub fn time_arg(
    flag: &str,
    text: &str,
    now: OffsetDateTime,
    direction: i8,
) -> Result<String, CliError> {
    let text = text.trim();
    let at = match OffsetDateTime::parse(text, &Rfc3339) {
        Ok(t) => t,
        Err(_) => {
            let d = humantime::parse_duration(text).map_err(|_| {
                CliError::Usage(format!(
                    "{flag} {text:?} is neither an RFC 3339 time (2026-05-01T00:00:00Z) nor a \
                     duration (2h, 7d)"
                ))
            })?;
            let too_far = || CliError::Usage(format!("{flag} {text:?} is too far off"));
            let d = time::Duration::try_from(d).map_err(|_| too_far())?;
            if direction < 0 {
                now.checked_sub(d)
            } else {
                now.checked_add(d)
            }
            .ok_or_else(too_far)?
        }
    };
    at.to_offset(time::UtcOffset::UTC)
        .format(&Rfc3339)
        .map_err(|e| CliError::Usage(format!("{flag} {text:?}: {e}")))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn key_ids() {
        assert!(key_id_arg("AAAAAAAAAAAA").is_ok());
        let e = key_id_arg("heex_AAAAAAAAAAAAsecret").unwrap_err();
        assert!(!e.to_string().contains("secret"));
        assert_eq!(e.exit_code(), heex_proto::exit::USAGE);
        assert!(key_id_arg("short").is_err());
    }

    #[test]
    fn times_are_rfc3339_or_durations_either_way() {
        let now = time::macros::datetime!(2026-05-01 12:00:00 UTC);
        assert_eq!(
            time_arg("--x", "2h", now, -1).unwrap(),
            "2026-05-01T10:00:00Z"
        );
        assert_eq!(
            time_arg("--x", "30d", now, 1).unwrap(),
            "2026-05-31T12:00:00Z"
        );
        assert_eq!(
            time_arg("--x", "2026-04-30T23:00:00+02:00", now, 1).unwrap(),
            "2026-04-30T21:00:00Z"
        );
        let e = time_arg("--x", "yesterday", now, -1).unwrap_err();
        assert_eq!(e.exit_code(), heex_proto::exit::USAGE);
        assert!(e.to_string().starts_with("--x "), "{e}");
    }
}
