//! What every command runs with: the environment, where output goes, `--json`, and the clock.

use std::io::Write;

use serde_json::Value;

use crate::client::ApiClient;
use crate::clipboard;
use crate::config::{self, Env, Profile};
use crate::display;
use crate::error::CliError;
use crate::table::Clock;

/// A command's surroundings.
pub struct Ctx<'a> {
    /// The process environment.
    pub env: &'a Env,
    /// Standard output (or a buffer in tests).
    pub out: &'a mut dyn Write,
    /// `--json`: print the API's JSON instead of tables.
    pub json: bool,
    /// The time everything relative is computed from.
    pub clock: Clock,
}

impl std::fmt::Debug for Ctx<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Ctx")
            .field("env", self.env)
            .field("json", &self.json)
            .field("clock", &self.clock)
            .finish()
    }
}

fn stdout_error(e: std::io::Error) -> CliError {
    CliError::File(format!("cannot write to standard output: {e}"))
}

impl Ctx<'_> {
    /// Writes human-readable `text`, with any control or formatting character other than a
    /// line break shown escaped ([`display::safe_lines`]): whatever server text it holds
    /// cannot drive the terminal.
    pub fn print(&mut self, text: &str) -> Result<(), CliError> {
        self.print_raw(&display::safe_lines(text))
    }

    /// Writes `text` exactly as is: only for bytes this program made for the terminal or a
    /// script (the OSC 52 sequence, completion scripts).
    pub fn print_raw(&mut self, text: &str) -> Result<(), CliError> {
        self.out.write_all(text.as_bytes()).map_err(stdout_error)?;
        self.out.flush().map_err(stdout_error)
    }

    /// Writes `line` and a newline.
    pub fn println(&mut self, line: &str) -> Result<(), CliError> {
        self.print(&format!("{line}\n"))
    }

    /// Prints JSON, pretty, as the API sent it; control and formatting characters in strings
    /// are written as `\uXXXX` escapes (the same JSON value, harmless on a terminal).
    pub fn print_json(&mut self, value: &Value) -> Result<(), CliError> {
        let text = serde_json::to_string_pretty(value)
            .map_err(|e| CliError::Unexpected(format!("cannot format JSON: {e}")))?;
        let text = display::safe_json(&text);
        self.print_raw(&format!("{text}\n"))
    }

    /// Whether stdout is a terminal.
    pub fn tty(&self) -> bool {
        self.env.stdout_tty
    }

    /// The stored or environment credentials.
    pub fn profile(&self) -> Result<Profile, CliError> {
        config::resolve(self.env)
    }

    /// The credentials and a client authenticating with them.
    pub fn client(&self) -> Result<(Profile, ApiClient), CliError> {
        let profile = self.profile()?;
        let client = ApiClient::for_profile(&profile)?;
        Ok((profile, client))
    }

    /// Hands an API key to the user: the clipboard on a terminal, stdout otherwise. With
    /// `--json`, `raw` (the API's answer, holding the key at the JSON pointer `key_pointer`) is
    /// printed instead; on a terminal the key goes to the clipboard and the JSON shows a
    /// placeholder in its place.
    pub fn deliver_key(
        &mut self,
        key: &str,
        summary: &str,
        raw: &Value,
        key_pointer: &str,
    ) -> Result<(), CliError> {
        if !self.json {
            let tty = self.tty();
            return clipboard::deliver(self.out, tty, key, summary).map_err(stdout_error);
        }
        if !self.tty() {
            return self.print_json(raw);
        }
        let mut shown = raw.clone();
        if let Some(v) = shown.pointer_mut(key_pointer) {
            *v = Value::String("<copied to clipboard>".into());
        }
        self.print_raw(&clipboard::osc52(key))?;
        self.print_json(&shown)
    }
}
