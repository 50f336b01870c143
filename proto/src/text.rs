//! Text that people will read in tables: names, labels, emails, facts.
//!
//! A control or formatting character is not shown as itself: it moves the cursor, clears the
//! screen, writes the clipboard (ESC), reorders what follows (bidi overrides U+202A–U+202E,
//! isolates U+2066–U+2069) or hides (zero-width U+200B–U+200F, U+FEFF). The cloud refuses
//! them in every name, label, email and fact it stores ([`forbidden_char`]), and the CLI
//! escapes them in everything it prints, for data stored before these checks.

/// The characters of Unicode general categories Cc (controls, ESC and DEL included), Cf
/// (format: bidi controls, zero-width characters, the byte order mark, tags; Unicode 15.1, in
/// full), Zl and Zp (line and paragraph separators): those that change how other text is
/// shown rather than showing themselves. Inclusive ranges, in order.
pub const CONTROL_OR_FORMAT: &[(char, char)] = &[
    ('\u{0000}', '\u{001F}'),
    ('\u{007F}', '\u{009F}'),
    ('\u{00AD}', '\u{00AD}'),
    ('\u{0600}', '\u{0605}'),
    ('\u{061C}', '\u{061C}'),
    ('\u{06DD}', '\u{06DD}'),
    ('\u{070F}', '\u{070F}'),
    ('\u{0890}', '\u{0891}'),
    ('\u{08E2}', '\u{08E2}'),
    ('\u{180E}', '\u{180E}'),
    ('\u{200B}', '\u{200F}'),
    ('\u{2028}', '\u{202E}'),
    ('\u{2060}', '\u{2064}'),
    ('\u{2066}', '\u{206F}'),
    ('\u{FEFF}', '\u{FEFF}'),
    ('\u{FFF9}', '\u{FFFB}'),
    ('\u{110BD}', '\u{110BD}'),
    ('\u{110CD}', '\u{110CD}'),
    ('\u{13430}', '\u{1343F}'),
    ('\u{1BCA0}', '\u{1BCA3}'),
    ('\u{1D173}', '\u{1D17A}'),
    ('\u{E0001}', '\u{E0001}'),
    ('\u{E0020}', '\u{E007F}'),
];

/// True for the characters of [`CONTROL_OR_FORMAT`].
pub fn is_control_or_format(c: char) -> bool {
    CONTROL_OR_FORMAT
        .iter()
        .any(|&(first, last)| (first..=last).contains(&c))
}

/// [`CONTROL_OR_FORMAT`] as the body of a regular-expression character class, for schemas:
/// `\uXXXX` escapes in the Basic Multilingual Plane, the characters themselves beyond it (so
/// that both ECMA-262 with the `u` flag and other engines read them as one code point).
pub fn control_or_format_class() -> String {
    let one = |c: char| {
        if u32::from(c) <= 0xFFFF {
            format!("\\u{:04X}", u32::from(c))
        } else {
            c.to_string()
        }
    };
    CONTROL_OR_FORMAT
        .iter()
        .map(|&(first, last)| {
            if first == last {
                one(first)
            } else {
                format!("{}-{}", one(first), one(last))
            }
        })
        .collect()
}

/// The first control or formatting character of `text` ([`is_control_or_format`]), if any.
pub fn forbidden_char(text: &str) -> Option<char> {
    text.chars().find(|&c| is_control_or_format(c))
}

/// `c` as `U+XXXX`, the way error messages name a character.
pub fn code_point(c: char) -> String {
    format!("U+{:04X}", u32::from(c))
}

/// Why a piece of text was refused. The message names the field, and the character or limit.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum TextError {
    /// Empty after trimming, or longer than the limit.
    #[error("{field} must be 1 to {max} characters")]
    Length {
        /// The field, as the caller named it.
        field: String,
        /// The most characters allowed.
        max: usize,
    },
    /// Longer than the limit (for fields that may be empty).
    #[error("{field} must be at most {max} characters")]
    TooLong {
        /// The field, as the caller named it.
        field: String,
        /// The most characters allowed.
        max: usize,
    },
    /// A control or formatting character.
    #[error(
        "{field} contains {}, a control or invisible formatting character; remove it",
        code_point(*.found)
    )]
    Forbidden {
        /// The field, as the caller named it.
        field: String,
        /// The first such character.
        found: char,
    },
    /// Not shaped like an email address.
    #[error("{field} is not an email address: it needs one '@' with text on both sides and no spaces, at most 254 bytes")]
    NotEmail {
        /// The field, as the caller named it.
        field: String,
    },
}

/// Refuses control and formatting characters in `value`.
pub fn check_printable(field: &str, value: &str) -> Result<(), TextError> {
    match forbidden_char(value) {
        Some(found) => Err(TextError::Forbidden {
            field: field.to_owned(),
            found,
        }),
        None => Ok(()),
    }
}

/// A human-given name (device, key, workspace): 1 to `max` characters once trimmed, none of
/// them a control or formatting character.
pub fn check_name(field: &str, value: &str, max: usize) -> Result<(), TextError> {
    check_printable(field, value)?;
    let n = value.trim().chars().count();
    if n == 0 || n > max {
        return Err(TextError::Length {
            field: field.to_owned(),
            max,
        });
    }
    Ok(())
}

/// Text that may be empty (a label value, a fact): at most `max` characters, none of them a
/// control or formatting character.
pub fn check_value(field: &str, value: &str, max: usize) -> Result<(), TextError> {
    check_printable(field, value)?;
    if value.chars().count() > max {
        return Err(TextError::TooLong {
            field: field.to_owned(),
            max,
        });
    }
    Ok(())
}

/// Longest email accepted, in characters.
pub const MAX_EMAIL_LEN: usize = 254;

/// Checks that `value` is a plausible email: printable, one '@' with something on both
/// sides, no white space, no control or formatting character, at most [`MAX_EMAIL_LEN`]
/// characters.
pub fn check_email(field: &str, value: &str) -> Result<(), TextError> {
    check_printable(field, value)?;
    let plausible = value.chars().count() <= MAX_EMAIL_LEN
        && !value.chars().any(char::is_whitespace)
        && value.split_once('@').is_some_and(|(local, domain)| {
            !local.is_empty() && !domain.is_empty() && !domain.contains('@')
        });
    if !plausible {
        return Err(TextError::NotEmail {
            field: field.to_owned(),
        });
    }
    Ok(())
}

/// `text` with every control or formatting character replaced by U+FFFD and cut to `max`
/// characters: what a sender does to text it did not choose (a host name, an OS name) so the
/// cloud's checks accept it.
pub fn fitted(text: &str, max: usize) -> String {
    text.chars()
        .map(|c| {
            if is_control_or_format(c) {
                char::REPLACEMENT_CHARACTER
            } else {
                c
            }
        })
        .take(max)
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn controls_and_format_characters_are_found() {
        for c in [
            '\0',
            '\x1b',
            '\n',
            '\t',
            '\x7f',
            '\u{85}',
            '\u{9b}',
            '\u{200B}',
            '\u{200D}',
            '\u{200E}',
            '\u{200F}',
            '\u{202A}',
            '\u{202E}',
            '\u{2066}',
            '\u{2069}',
            '\u{2028}',
            '\u{2029}',
            '\u{FEFF}',
            '\u{00AD}',
            '\u{E0041}',
        ] {
            assert!(is_control_or_format(c), "{}", code_point(c));
        }
        for c in ['a', 'é', ' ', '-', '\u{4E2D}', '\u{1F916}', '\u{2013}'] {
            assert!(!is_control_or_format(c), "{}", code_point(c));
        }
        assert_eq!(forbidden_char("robot-\u{202E}7"), Some('\u{202E}'));
        assert_eq!(forbidden_char("robot 7 é"), None);
    }

    #[test]
    fn names_are_refused_with_the_code_point() {
        check_name("name", "  robot-7 ", 128).unwrap();
        let e = check_name("name", "evil\u{202E}gpj.exe", 128).unwrap_err();
        assert_eq!(
            e.to_string(),
            "name contains U+202E, a control or invisible formatting character; remove it"
        );
        let e = check_name("name", "a\u{200B}", 128).unwrap_err();
        assert!(e.to_string().contains("U+200B"), "{e}");
        assert!(check_name("name", "   ", 128).is_err());
        assert!(check_name("name", &"x".repeat(129), 128).is_err());
        assert!(check_value("label", "", 5).is_ok());
        assert!(check_value("label", "123456", 5).is_err());
        assert!(check_value("label", "a\x1b[2J", 5).is_err());
    }

    #[test]
    fn emails() {
        check_email("email", "bob@example.com").unwrap();
        for bad in [
            "",
            "bob",
            "@example.com",
            "bob@",
            "b ob@example.com",
            "a@b@c",
            "bob@exa\u{200B}mple.com",
            "bob\u{202E}@example.com",
        ] {
            assert!(check_email("email", bad).is_err(), "{bad:?}");
        }
        let e = check_email("email", "bob\u{2066}@example.com").unwrap_err();
        assert!(e.to_string().contains("U+2066"), "{e}");
    }

    #[test]
    fn fitted_text_passes_the_checks() {
        let t = fitted("host\x1b]52;c;AAAA\x07\u{202E}", 8);
        assert_eq!(t.chars().count(), 8);
        check_value("hostname", &t, 8).unwrap();
        assert_eq!(fitted("debian", 256), "debian");
    }
}
