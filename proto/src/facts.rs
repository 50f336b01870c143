//! Bounds on [`Facts`]: devices report them (at enrollment, in Hello and Facts frames) and
//! people read them in `heex devices show`, so the cloud stores only facts within these
//! bounds and made of printable text ([`crate::text`]). Senders pass what they gather through
//! [`Facts::fitted`] so their own facts always pass.

use crate::api::Facts;
use crate::text::{self, TextError};

/// Most characters in one text fact (host name, OS, version, kernel, architecture).
pub const MAX_FACT_CHARS: usize = 256;
/// Most bytes of facts as compact JSON.
pub const MAX_FACTS_BYTES: usize = 16 * 1024;

/// Most characters of the agent version a Hello gives.
pub const MAX_AGENT_VERSION_CHARS: usize = 64;

/// Checks the agent version of a Hello: at most [`MAX_AGENT_VERSION_CHARS`] characters, no
/// control or formatting character (the console and the CLI show it).
pub fn check_agent_version(version: &str) -> Result<(), FactsError> {
    Ok(text::check_value(
        "agent_version",
        version,
        MAX_AGENT_VERSION_CHARS,
    )?)
}

/// Why facts were refused: the message names the field and the limit.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum FactsError {
    /// One field is too long or holds a control or formatting character.
    #[error("{0}")]
    Field(#[from] TextError),
    /// The whole is too large.
    #[error("facts are {len} bytes of JSON; the most is {max}")]
    TooLarge {
        /// Their size as compact JSON.
        len: usize,
        /// [`MAX_FACTS_BYTES`].
        max: usize,
    },
}

impl Facts {
    /// The text fields with their names as they appear in the API.
    fn texts(&self) -> [(&'static str, &Option<String>); 5] {
        [
            ("facts.hostname", &self.hostname),
            ("facts.os", &self.os),
            ("facts.os_version", &self.os_version),
            ("facts.kernel", &self.kernel),
            ("facts.arch", &self.arch),
        ]
    }

    /// Checks every text fact (at most [`MAX_FACT_CHARS`] characters, no control or
    /// formatting character) and the total size ([`MAX_FACTS_BYTES`]).
    pub fn check(&self) -> Result<(), FactsError> {
        for (field, value) in self.texts() {
            if let Some(v) = value {
                text::check_value(field, v, MAX_FACT_CHARS)?;
            }
        }
        let len = serde_json::to_vec(self).map_or(usize::MAX, |v| v.len());
        if len > MAX_FACTS_BYTES {
            return Err(FactsError::TooLarge {
                len,
                max: MAX_FACTS_BYTES,
            });
        }
        Ok(())
    }

    /// These facts made to pass [`Facts::check`]: control and formatting characters replaced
    /// by U+FFFD, text cut to [`MAX_FACT_CHARS`] characters.
    pub fn fitted(self) -> Facts {
        let fit = |s: Option<String>| s.map(|s| text::fitted(&s, MAX_FACT_CHARS));
        Facts {
            hostname: fit(self.hostname),
            os: fit(self.os),
            os_version: fit(self.os_version),
            kernel: fit(self.kernel),
            arch: fit(self.arch),
            ..self
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn long_or_hostile_facts_are_refused_and_fitted_ones_pass() {
        let ok = Facts {
            hostname: Some("robot-7".into()),
            cpus: Some(4),
            ..Facts::default()
        };
        ok.check().unwrap();
        let long = Facts {
            kernel: Some("k".repeat(MAX_FACT_CHARS + 1)),
            ..Facts::default()
        };
        let e = long.check().unwrap_err();
        assert_eq!(e.to_string(), "facts.kernel must be at most 256 characters");
        let hostile = Facts {
            hostname: Some("x\x1b]52;c;ZXZpbA==\x07\nName: forged".into()),
            os: Some("\u{202E}xunil".into()),
            ..Facts::default()
        };
        let e = hostile.check().unwrap_err();
        assert!(
            e.to_string().starts_with("facts.hostname contains U+001B"),
            "{e}"
        );
        let fitted = hostile.fitted();
        fitted.check().unwrap();
        assert!(!fitted.hostname.unwrap().contains('\x1b'));
        long.fitted().check().unwrap();
    }
}
