//! The cloud's API for `heex`: the shared HTTPS client ([`heex_trust::client`]: trusting only
//! the profile's anchor, HTTPS only, no redirects), `Authorization: Bearer` with the caller's
//! key, typed answers, and errors turned into one line each.

use heex_proto::api::{ErrorBody, ErrorCode};
use heex_proto::ApiKey;
use heex_trust::client::{Answer, Client, RequestError};
use reqwest::Url;
use serde::de::DeserializeOwned;
use serde::Serialize;
use serde_json::Value;

use crate::config::Profile;
use crate::error::CliError;
use crate::trust::TrustAnchor;

/// A successful answer: the typed body and the JSON it came from (printed by `--json`).
#[derive(Debug, Clone)]
pub struct Reply<T> {
    /// The body, typed.
    pub value: T,
    /// The body as the server sent it.
    pub raw: Value,
}

/// A client for one server, trusting one anchor, optionally authenticating with one key.
pub struct ApiClient {
    client: Client,
    key: Option<ApiKey>,
}

impl std::fmt::Debug for ApiClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ApiClient")
            .field("client", &self.client)
            .field("key", &self.key)
            .finish()
    }
}

impl ApiClient {
    /// A client for `server`, trusting only `trust`, sending `key` (if any) as Bearer token.
    pub fn new(server: &Url, trust: TrustAnchor, key: Option<ApiKey>) -> Result<Self, CliError> {
        let user_agent = concat!("heex/", env!("CARGO_PKG_VERSION"));
        Ok(ApiClient {
            client: Client::new(server, trust, user_agent)?,
            key,
        })
    }

    /// A client for a resolved profile.
    pub fn for_profile(profile: &Profile) -> Result<Self, CliError> {
        Self::new(
            &profile.server,
            profile.trust.clone(),
            Some(profile.api_key.clone()),
        )
    }

    /// The server's base URL, without a trailing slash.
    pub fn server(&self) -> &str {
        self.client.server()
    }

    /// `GET path?query`.
    pub fn get<T: DeserializeOwned>(
        &self,
        path: &str,
        query: &[(&str, String)],
    ) -> Result<Reply<T>, CliError> {
        let answer = self.client.get(path, query, self.key.as_ref());
        self.reply(path, answer)
    }

    /// `POST path` with a JSON body.
    pub fn post<B: Serialize, T: DeserializeOwned>(
        &self,
        path: &str,
        body: &B,
    ) -> Result<Reply<T>, CliError> {
        let answer = self.client.post(path, body, self.key.as_ref());
        self.reply(path, answer)
    }

    /// `PATCH path` with a JSON body.
    pub fn patch<B: Serialize, T: DeserializeOwned>(
        &self,
        path: &str,
        body: &B,
    ) -> Result<Reply<T>, CliError> {
        let answer = self.client.patch(path, body, self.key.as_ref());
        self.reply(path, answer)
    }

    /// `DELETE path`, which answers without a body.
    pub fn delete(&self, path: &str) -> Result<(), CliError> {
        let answer = self
            .client
            .delete(path, self.key.as_ref())
            .map_err(|e| self.transport_error(e))?;
        if answer.is_success() {
            return Ok(());
        }
        Err(api_error(answer.status, &answer.body))
    }

    fn reply<T: DeserializeOwned>(
        &self,
        path: &str,
        answer: Result<Answer, RequestError>,
    ) -> Result<Reply<T>, CliError> {
        let answer = answer.map_err(|e| self.transport_error(e))?;
        tracing::debug!(path, status = answer.status, "response");
        if !answer.is_success() {
            return Err(api_error(answer.status, &answer.body));
        }
        let raw: Value = serde_json::from_slice(&answer.body).map_err(|e| {
            CliError::Unexpected(format!(
                "the server's answer to {path} is not JSON ({e}); is {} a Heex cloud?",
                self.server()
            ))
        })?;
        let value = serde_json::from_value(raw.clone()).map_err(|e| {
            CliError::Unexpected(format!(
                "unexpected answer from the server to {path}: {e}; is heex up to date?"
            ))
        })?;
        Ok(Reply { value, raw })
    }

    /// One line for a request that got no HTTP answer: untrusted server, timeout, or network.
    fn transport_error(&self, e: RequestError) -> CliError {
        let server = self.server();
        match e {
            RequestError::Untrusted(why) => CliError::Untrusted(why),
            RequestError::Timeout { .. } => CliError::Unreachable(format!(
                "{server} did not answer in time; check the address and that heex-cloud is running"
            )),
            RequestError::Connect { cause, .. } | RequestError::Failed { cause, .. } => {
                CliError::Unreachable(format!(
                    "cannot reach {server}: {cause}; check the address and that heex-cloud is running"
                ))
            }
            RequestError::TooLarge { .. } | RequestError::Invalid(_) => {
                CliError::Unexpected(e.to_string())
            }
        }
    }
}

/// The error for a non-2xx answer: the server's own message when it sent an [`ErrorBody`].
pub fn api_error(status: u16, body: &[u8]) -> CliError {
    match serde_json::from_slice::<ErrorBody>(body) {
        Ok(err) => CliError::Api {
            status,
            code: err.error,
            // One line, whatever the server sent, and nothing in it drives the terminal.
            message: crate::display::safe(
                &err.message.split_whitespace().collect::<Vec<_>>().join(" "),
            )
            .into_owned(),
        },
        Err(_) => CliError::Api {
            status,
            code: ErrorCode::Other,
            message: format!(
                "the server answered HTTP {status} without details; is the server URL right?"
            ),
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn error_bodies_become_one_line() {
        let body = br#"{"error":"key_revoked","message":"API key abc was revoked on 2026-01-01T00:00:00Z by a@b;\n ask an admin for a new key"}"#;
        let e = api_error(401, body);
        assert_eq!(
            e.to_string(),
            "API key abc was revoked on 2026-01-01T00:00:00Z by a@b; ask an admin for a new key"
        );
        assert!(matches!(
            e,
            CliError::Api {
                code: ErrorCode::KeyRevoked,
                ..
            }
        ));
        assert_eq!(e.exit_code(), heex_proto::exit::KEY_REFUSED);

        let e = api_error(404, b"<html>nope</html>");
        assert!(e.to_string().contains("HTTP 404"), "{e}");
        assert_eq!(e.exit_code(), heex_proto::exit::USAGE);

        let e = api_error(403, br#"{"error":"something_new","message":"no"}"#);
        assert_eq!(e.to_string(), "no");
        assert_eq!(e.exit_code(), heex_proto::exit::KEY_REFUSED);
    }
}
