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
}
