//! Where the API key comes from: exactly one of `--api-key`, `$HEEX_API_KEY`, the file named by
//! `$HEEX_API_KEY_FILE`, or a no-echo prompt when stdin is a terminal.
//!
//! More than one source is refused rather than silently preferring one: a script that exports
//! a key and also passes another would otherwise spend a key its author did not expect.

use std::ffi::OsString;
use std::fmt;
use std::io::{IsTerminal, Read};
use std::path::PathBuf;

use heex_proto::ApiKey;

use crate::cli::SecretArg;
use crate::error::InstallError;

/// Environment variable holding the key itself.
pub const ENV_KEY: &str = "HEEX_API_KEY";
/// Environment variable naming a file that holds the key.
pub const ENV_KEY_FILE: &str = "HEEX_API_KEY_FILE";

/// Largest key file read; a key is 55 characters, so anything bigger is not a key file.
const MAX_KEY_FILE_BYTES: u64 = 4096;

/// The parts of the process environment the key lookup depends on.
#[derive(Clone, Default)]
pub struct KeyEnv {
    /// Value of `$HEEX_API_KEY` (empty counts as unset).
    pub api_key: Option<OsString>,
    /// Value of `$HEEX_API_KEY_FILE` (empty counts as unset).
    pub api_key_file: Option<OsString>,
    /// Whether stdin is a terminal, so the key may be prompted for.
    pub interactive: bool,
}

impl KeyEnv {
    /// Reads the environment of this process.
    pub fn from_process() -> Self {
        KeyEnv {
            api_key: std::env::var_os(ENV_KEY),
            api_key_file: std::env::var_os(ENV_KEY_FILE),
            interactive: std::io::stdin().is_terminal(),
        }
    }
}

impl fmt::Debug for KeyEnv {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("KeyEnv")
            .field("api_key", &self.api_key.as_ref().map(|_| "<redacted>"))
            .field("api_key_file", &self.api_key_file)
            .field("interactive", &self.interactive)
            .finish()
    }
}

/// One place the key can come from.
#[derive(Clone)]
pub enum KeySource {
    /// `--api-key`.
    Flag(String),
    /// `$HEEX_API_KEY`.
    Env(OsString),
    /// The file named by `$HEEX_API_KEY_FILE`.
    File(PathBuf),
    /// A no-echo prompt on the terminal, not yet answered.
    Prompt,
    /// What was typed at the prompt.
    Entered(String),
}

impl fmt::Debug for KeySource {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            KeySource::Flag(_) => f.write_str("Flag(<redacted>)"),
            KeySource::Env(_) => f.write_str("Env(<redacted>)"),
            KeySource::File(p) => f.debug_tuple("File").field(p).finish(),
            KeySource::Prompt => f.write_str("Prompt"),
            KeySource::Entered(_) => f.write_str("Entered(<redacted>)"),
        }
    }
}

impl fmt::Display for KeySource {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            KeySource::Flag(_) => f.write_str("--api-key"),
            KeySource::Env(_) => write!(f, "${ENV_KEY}"),
            KeySource::File(p) => write!(f, "${ENV_KEY_FILE} ({})", p.display()),
            KeySource::Prompt | KeySource::Entered(_) => f.write_str("the prompt"),
        }
    }
}

fn non_empty(v: &Option<OsString>) -> Option<&OsString> {
    v.as_ref().filter(|v| !v.is_empty())
}

/// The key source the user chose, `None` if they gave none (the caller then decides whether
/// a key is needed at all, and prompts via [`prompt_source`]).
pub fn select(flag: Option<&SecretArg>, env: &KeyEnv) -> Result<Option<KeySource>, InstallError> {
    let mut given = Vec::new();
    if let Some(SecretArg(k)) = flag {
        given.push(KeySource::Flag(k.clone()));
    }
    if let Some(k) = non_empty(&env.api_key) {
        given.push(KeySource::Env(k.clone()));
    }
    if let Some(p) = non_empty(&env.api_key_file) {
        given.push(KeySource::File(PathBuf::from(p)));
    }
    match given.len() {
        0 => Ok(None),
        1 => Ok(given.pop()),
        _ => {
            let names: Vec<String> = given
                .iter()
                .map(|s| match s {
                    KeySource::File(_) => format!("${ENV_KEY_FILE}"),
                    other => other.to_string(),
                })
                .collect();
            let (init, last) = names.split_at(names.len() - 1);
            Err(InstallError::Usage(format!(
                "the API key is given by both {} and {}; use only one",
                init.join(", "),
                last.join("")
            )))
        }
    }
}

/// The prompt when stdin is a terminal; otherwise a usage error saying how to pass the key.
pub fn prompt_source(env: &KeyEnv) -> Result<KeySource, InstallError> {
    if env.interactive {
        Ok(KeySource::Prompt)
    } else {
        Err(InstallError::Usage(format!(
            "no API key: set ${ENV_KEY} or ${ENV_KEY_FILE}, pass --api-key, or run in a terminal to be prompted"
        )))
    }
}

impl KeySource {
    /// Reads the key from this source and checks its format and checksum (no network).
    pub fn load(&self) -> Result<ApiKey, InstallError> {
        match self {
            KeySource::Flag(k) => Ok(k.parse()?),
            KeySource::Env(k) => {
                let k = k.to_str().ok_or_else(|| {
                    InstallError::Usage(format!("${ENV_KEY} is not valid text; copy the key again"))
                })?;
                Ok(k.parse()?)
            }
            KeySource::File(path) => {
                let file = std::fs::File::open(path)
                    .map_err(|e| InstallError::file("cannot read the API key file", path, e))?;
                let mut text = String::new();
                file.take(MAX_KEY_FILE_BYTES)
                    .read_to_string(&mut text)
                    .map_err(|e| InstallError::file("cannot read the API key file", path, e))?;
                Ok(text.trim().parse()?)
            }
            KeySource::Prompt => self.ask()?.load(),
            KeySource::Entered(k) => Ok(k.trim().parse()?),
        }
    }

    /// Asks for the key on the terminal (no echo) if this source is the prompt; other
    /// sources are returned as they are.
    pub fn ask(&self) -> Result<KeySource, InstallError> {
        if !matches!(self, KeySource::Prompt) {
            return Ok(self.clone());
        }
        let text = rpassword::prompt_password("API key (input hidden): ").map_err(|e| {
            InstallError::Usage(format!("cannot read the API key from the terminal: {e}"))
        })?;
        if text.trim().is_empty() {
            return Err(InstallError::Usage("no API key entered".to_owned()));
        }
        Ok(KeySource::Entered(text))
    }
}

#[cfg(test)]
mod tests {
    use std::io::Write;

    use heex_proto::{KeyId, KeyParseError};

    use super::*;

    fn key() -> String {
        ApiKey::derive(b"server secret for tests", KeyId::generate()).expose()
    }

    fn env(key: Option<&str>, file: Option<&str>, interactive: bool) -> KeyEnv {
        KeyEnv {
            api_key: key.map(OsString::from),
            api_key_file: file.map(OsString::from),
            interactive,
        }
    }

    #[test]
    fn a_single_source_is_used() {
        let k = key();
        let flag = SecretArg(k.clone());
        let s = select(Some(&flag), &env(None, None, true))
            .unwrap()
            .unwrap();
        assert!(matches!(s, KeySource::Flag(_)));
        assert_eq!(s.load().unwrap().expose(), k);

        let s = select(None, &env(Some(&k), None, false)).unwrap().unwrap();
        assert!(matches!(s, KeySource::Env(_)));
        assert_eq!(s.load().unwrap().expose(), k);

        let s = select(None, &env(None, Some("/k"), false))
            .unwrap()
            .unwrap();
        assert!(matches!(s, KeySource::File(ref p) if p == &PathBuf::from("/k")));
    }

    #[test]
    fn two_sources_conflict_and_the_message_names_them() {
        let k = key();
        let flag = SecretArg(k.clone());
        let err = select(Some(&flag), &env(Some(&k), None, false)).unwrap_err();
        assert_eq!(err.exit_code(), 64);
        let msg = err.to_string();
        assert!(
            msg.contains("--api-key") && msg.contains("$HEEX_API_KEY"),
            "{msg}"
        );
        assert!(!msg.contains(&k));

        let err = select(None, &env(Some(&k), Some("/k"), false)).unwrap_err();
        let msg = err.to_string();
        assert!(
            msg.contains("$HEEX_API_KEY and $HEEX_API_KEY_FILE"),
            "{msg}"
        );

        let err = select(Some(&flag), &env(Some(&k), Some("/k"), false)).unwrap_err();
        assert!(err
            .to_string()
            .contains("--api-key, $HEEX_API_KEY and $HEEX_API_KEY_FILE"));
    }

    #[test]
    fn empty_variables_count_as_unset() {
        let s = select(None, &env(Some(""), Some(""), false)).unwrap();
        assert!(s.is_none());
    }

    #[test]
    fn no_source_prompts_only_on_a_terminal() {
        assert!(matches!(
            prompt_source(&env(None, None, true)),
            Ok(KeySource::Prompt)
        ));
        let err = prompt_source(&env(None, None, false)).unwrap_err();
        assert_eq!(err.exit_code(), 64);
        assert!(err.to_string().contains("HEEX_API_KEY"));
    }

    #[test]
    fn key_file_is_trimmed_and_checked() {
        let k = key();
        let mut f = tempfile::NamedTempFile::new().unwrap();
        writeln!(f, "  {k}  ").unwrap();
        let s = KeySource::File(f.path().to_owned());
        assert_eq!(s.load().unwrap().expose(), k);

        let mut bad = k.clone().into_bytes();
        bad[20] = if bad[20] == b'a' { b'b' } else { b'a' };
        let bad = String::from_utf8(bad).unwrap();
        std::fs::write(f.path(), &bad).unwrap();
        let err = s.load().unwrap_err();
        assert_eq!(err.exit_code(), 64);
        assert!(matches!(
            err,
            InstallError::MalformedKey(KeyParseError::BadChecksum)
        ));
        assert!(!err.to_string().contains(&bad));

        let missing = KeySource::File(PathBuf::from("/nonexistent/heex/key"));
        assert_eq!(missing.load().unwrap_err().exit_code(), 73);
    }

    #[test]
    fn debug_never_shows_the_key() {
        let k = key();
        let shown = format!(
            "{:?} {:?} {:?}",
            KeySource::Flag(k.clone()),
            KeySource::Entered(k.clone()),
            env(Some(&k), None, false)
        );
        assert_eq!(
            KeySource::Entered(format!("{k}\n"))
                .load()
                .unwrap()
                .expose(),
            k
        );
        assert!(!shown.contains(&k));
    }
}
