//! Text from the server shown on a terminal, made harmless.
//!
//! Names, labels, facts and error messages come from other people and from devices. A control
//! or formatting character in them would act instead of showing: ESC starts sequences that
//! write the clipboard (OSC 52) or clear the screen, a newline forges a `Name:` line, a bidi
//! override (U+202E) reverses what follows, a zero-width character makes two names look
//! alike. Every such character ([`heex_proto::text::is_control_or_format`]) is shown as a
//! visible escape instead: `\x1b`, `\n`, `\u{202e}`.

use std::borrow::Cow;
use std::fmt::Write as _;

use heex_proto::text::is_control_or_format;

/// `text` with every control and formatting character escaped (`\x1b`, `\n`, `\t`,
/// `\u{202e}`); borrowed when there is none.
pub fn safe(text: &str) -> Cow<'_, str> {
    escape_where(text, is_control_or_format)
}

/// Like [`safe`] but keeps line breaks: for whole messages this program composed, whose
/// server-supplied parts went through [`safe`] already.
pub fn safe_lines(text: &str) -> Cow<'_, str> {
    escape_where(text, |c| c != '\n' && is_control_or_format(c))
}

fn escape_where(text: &str, unsafe_char: impl Fn(char) -> bool) -> Cow<'_, str> {
    if !text.chars().any(&unsafe_char) {
        return Cow::Borrowed(text);
    }
    let mut out = String::with_capacity(text.len() + 8);
    for c in text.chars() {
        if unsafe_char(c) {
            push_escape(&mut out, c);
        } else {
            out.push(c);
        }
    }
    Cow::Owned(out)
}

fn push_escape(out: &mut String, c: char) {
    // Writing to a String cannot fail.
    let _ = match c {
        '\n' => write!(out, "\\n"),
        '\r' => write!(out, "\\r"),
        '\t' => write!(out, "\\t"),
        c if u32::from(c) < 0x80 => write!(out, "\\x{:02x}", u32::from(c)),
        c => write!(out, "\\u{{{:x}}}", u32::from(c)),
    };
}

/// JSON text with every control and formatting character written as a `\uXXXX` escape: the
/// same JSON value for any parser, harmless on a terminal. Such characters can only occur
/// inside strings (outside them JSON allows only spaces and line breaks, which are kept), and
/// `serde_json` already escapes the C0 controls there.
pub fn safe_json(json: &str) -> Cow<'_, str> {
    let unsafe_char = |c: char| c != '\n' && is_control_or_format(c);
    if !json.chars().any(unsafe_char) {
        return Cow::Borrowed(json);
    }
    let mut out = String::with_capacity(json.len() + 8);
    for c in json.chars() {
        if unsafe_char(c) {
            let mut units = [0u16; 2];
            for unit in c.encode_utf16(&mut units) {
                let _ = write!(out, "\\u{unit:04x}");
            }
        } else {
            out.push(c);
        }
    }
    Cow::Owned(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hostile_text_is_shown_escaped() {
        assert!(matches!(safe("robot-7 é 中"), Cow::Borrowed(_)));
        assert_eq!(
            safe("x\x1b]52;c;ZXZpbA==\x07\x1b[2J\nName: forged"),
            "x\\x1b]52;c;ZXZpbA==\\x07\\x1b[2J\\nName: forged"
        );
        assert_eq!(safe("evil\u{202E}txt.exe"), "evil\\u{202e}txt.exe");
        assert_eq!(
            safe("a\u{200B}b\u{FEFF}\u{2028}\x7f\u{9b}"),
            "a\\u{200b}b\\u{feff}\\u{2028}\\x7f\\u{9b}"
        );
        assert_eq!(safe("tab\there\r"), "tab\\there\\r");
        for s in [
            safe("\x1b\u{202e}\u{2066}\u{200f}"),
            safe_lines("\x1b\n\u{202e}"),
        ] {
            assert!(
                !s.chars().any(|c| c != '\n' && is_control_or_format(c)),
                "{s}"
            );
        }
        assert_eq!(safe_lines("line 1\nline\x1b 2\n"), "line 1\nline\\x1b 2\n");
    }

    #[test]
    fn json_stays_the_same_value() {
        let value = serde_json::json!({
            "name": "evil\u{202E}gpj\u{200B}",
            "hostname": "x\x1b[2J\u{E0041}\u{9b}",
            "plain": "é 中 🤖",
        });
        let text = serde_json::to_string_pretty(&value).unwrap();
        let shown = safe_json(&text);
        assert!(
            !shown.chars().any(|c| c != '\n' && is_control_or_format(c)),
            "{shown}"
        );
        assert!(
            shown.contains("\\u202e") && shown.contains("\\udb40\\udc41"),
            "{shown}"
        );
        let back: serde_json::Value = serde_json::from_str(&shown).unwrap();
        assert_eq!(back, value);
        assert!(matches!(safe_json("{\n  \"a\": 1\n}"), Cow::Borrowed(_)));
    }
}
