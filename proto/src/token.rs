//! One-time tokens: an invitation ([`InvitationToken`], `heexinv_`) and a console sign-in
//! link ([`SignInToken`], `heexsig_`), each its prefix and 32 random base62 characters (about
//! 190 bits). One type per use, so one is never taken for the other, and one shape check: the
//! cloud refuses a malformed token before looking it up, the CLI a truncated copy before any
//! request. Only a token's SHA-256 is stored ([`secret::sha256_hex`]).

use crate::{base62, secret, Secret};

/// Random base62 characters after a token's prefix.
pub const RANDOM_LEN: usize = 32;

/// A token that does not have its kind's shape; the message says what the whole token looks
/// like.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{what} is \"{prefix}\" followed by {RANDOM_LEN} letters or digits; copy the whole token")]
pub struct TokenError {
    what: &'static str,
    prefix: &'static str,
}

macro_rules! one_time_token {
    ($(#[$doc:meta])* $name:ident, $prefix:literal, $what:literal) => {
        $(#[$doc])*
        ///
        /// `Debug` shows `<redacted>`; the token itself is read through `expose`.
        #[derive(Clone, PartialEq, Eq)]
        pub struct $name(Secret);

        impl $name {
            /// What every token of this kind starts with.
            pub const PREFIX: &'static str = $prefix;
            /// Length of the whole token.
            pub const LEN: usize = $prefix.len() + RANDOM_LEN;

            /// A new token from the operating system's CSPRNG.
            pub fn generate() -> $name {
                $name(Secret::new(format!("{}{}", $prefix, base62::random(RANDOM_LEN))))
            }

            /// Checks the shape of `text` (surrounding white space ignored, as a pasted copy
            /// may carry it).
            pub fn parse(text: &str) -> Result<$name, TokenError> {
                let text = text.trim();
                match text.strip_prefix($prefix) {
                    Some(rest) if rest.len() == RANDOM_LEN && base62::is_base62(rest) => {
                        Ok($name(Secret::new(text)))
                    }
                    _ => Err(TokenError {
                        what: $what,
                        prefix: $prefix,
                    }),
                }
            }

            /// The token itself.
            pub fn expose(&self) -> &str {
                self.0.expose()
            }

            /// The token as an API body carries it.
            pub fn into_secret(self) -> Secret {
                self.0
            }

            /// Hex SHA-256 of the token: all the cloud keeps of it ([`secret::sha256_hex`]).
            pub fn sha256_hex(&self) -> String {
                secret::sha256_hex(self.expose())
            }
        }

        impl std::fmt::Debug for $name {
            fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str(concat!(stringify!($name), "(<redacted>)"))
            }
        }
    };
}

one_time_token!(
    /// The one-time token of an invitation: the invitee accepts with it.
    InvitationToken,
    "heexinv_",
    "an invitation token"
);
one_time_token!(
    /// The one-time token of a console sign-in link (`heex console`).
    SignInToken,
    "heexsig_",
    "a sign-in token"
);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_have_one_shape_per_kind_and_hide_from_debug() {
        let token = InvitationToken::generate();
        assert_eq!(token.expose().len(), InvitationToken::LEN);
        assert_eq!(InvitationToken::parse(token.expose()), Ok(token.clone()));
        assert_eq!(
            InvitationToken::parse(&format!(" {}\n", token.expose())),
            Ok(token.clone()),
            "a pasted copy with white space"
        );
        let text = token.expose();
        for bad in [
            &text[..text.len() - 1],
            &format!("{text}x"),
            &text.replace("heexinv_", "heex_"),
            &format!("heexinv_{}", "-".repeat(RANDOM_LEN)),
            "",
        ] {
            let e = InvitationToken::parse(bad).unwrap_err();
            assert_eq!(
                e.to_string(),
                "an invitation token is \"heexinv_\" followed by 32 letters or digits; copy the whole token"
            );
        }
        // The kinds do not mix.
        let signin = SignInToken::generate();
        assert!(InvitationToken::parse(signin.expose()).is_err());
        assert!(SignInToken::parse(token.expose()).is_err());
        assert!(SignInToken::parse(signin.expose()).is_ok());

        assert_eq!(format!("{token:?}"), "InvitationToken(<redacted>)");
        let hash = token.sha256_hex();
        assert_eq!(hash.len(), 64);
        assert!(!hash.contains(&text[8..]));
        assert_ne!(hash, InvitationToken::generate().sha256_hex());
    }
}
