//! Handing a secret (a new or copied API key) to the user without leaving it on the screen.
//!
//! When stdout is a terminal the key goes to the clipboard through the terminal itself (OSC 52:
//! `ESC ] 52 ; c ; <base64> BEL`, understood by most terminal emulators, also over SSH) and
//! only a confirmation is printed. When stdout is a pipe or a file, a script is asking: the key
//! is printed alone on its line.

use std::io::{self, Write};

use base64::Engine as _;

/// The OSC 52 sequence that asks the terminal to put `text` on the system clipboard.
pub fn osc52(text: &str) -> String {
    let encoded = base64::engine::general_purpose::STANDARD.encode(text.as_bytes());
    format!("\x1b]52;c;{encoded}\x07")
}

/// Delivers `secret`: to the clipboard with the confirmation `summary` when `tty`, else on its
/// own line for the script reading stdout.
pub fn deliver(out: &mut dyn Write, tty: bool, secret: &str, summary: &str) -> io::Result<()> {
    if tty {
        out.write_all(osc52(secret).as_bytes())?;
        writeln!(
            out,
            "copied to clipboard: {}",
            crate::display::safe(summary)
        )?;
    } else {
        writeln!(out, "{secret}")?;
    }
    out.flush()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn osc52_encoding() {
        assert_eq!(osc52("hello"), "\x1b]52;c;aGVsbG8=\x07");
        assert_eq!(osc52(""), "\x1b]52;c;\x07");
        let key = "heex_AAAAAAAAAAAA0123456789abcdefghijklmnopqrstuvQQQQQQ";
        let seq = osc52(key);
        let b64 = seq
            .strip_prefix("\x1b]52;c;")
            .and_then(|s| s.strip_suffix('\x07'))
            .unwrap();
        let decoded = base64::engine::general_purpose::STANDARD
            .decode(b64)
            .unwrap();
        assert_eq!(decoded, key.as_bytes());
        assert!(!seq.contains(key));
    }

    #[test]
    fn terminal_gets_the_clipboard_and_no_plain_key() {
        let key = "heex_secretsecretsecret";
        let mut out = Vec::new();
        deliver(&mut out, true, key, "API key abc").unwrap();
        let text = String::from_utf8(out).unwrap();
        assert!(!text.contains(key));
        assert!(text.starts_with(&osc52(key)));
        assert!(text.ends_with("copied to clipboard: API key abc\n"));
    }

    #[test]
    fn pipe_gets_the_key_alone() {
        let mut out = Vec::new();
        deliver(&mut out, false, "heex_k", "API key abc").unwrap();
        assert_eq!(out, b"heex_k\n");
    }
}
