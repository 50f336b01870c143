//! The HTTPS client for the cloud's API: rustls (ring) trusting only the profile's anchor,
//! `Authorization: Bearer` with the caller's key, and errors turned into one line each.

use std::time::Duration;

use heex_proto::api::{ErrorBody, ErrorCode};
use heex_proto::ApiKey;
use reqwest::blocking::{Client, RequestBuilder};
use reqwest::Url;
use serde::de::DeserializeOwned;
use serde::Serialize;
use serde_json::Value;

use crate::config::Profile;
use crate::error::CliError;
use crate::trust::{client_config, explain_refusal, TrustAnchor, VerdictLog};

/// How long to wait for a TCP/TLS connection.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);
/// How long a whole request may take.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(30);

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
    http: Client,
    base: Url,
    key: Option<ApiKey>,
    trust: TrustAnchor,
    verdicts: VerdictLog,
}

impl std::fmt::Debug for ApiClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ApiClient")
            .field("base", &self.base.as_str())
            .field("key", &self.key)
            .field("trust", &self.trust)
            .finish()
    }
}

impl ApiClient {
    /// A client for `server`, trusting only `trust`, sending `key` (if any) as Bearer token.
    pub fn new(server: &Url, trust: TrustAnchor, key: Option<ApiKey>) -> Result<Self, CliError> {
        let verdicts = VerdictLog::default();
        let tls = client_config(trust.clone(), verdicts.clone())?;
        let http = Client::builder()
            .use_preconfigured_tls(tls)
            .connect_timeout(CONNECT_TIMEOUT)
            .timeout(REQUEST_TIMEOUT)
            .user_agent(concat!("heex/", env!("CARGO_PKG_VERSION")))
            .build()
            .map_err(|e| CliError::Unexpected(format!("cannot set up the HTTPS client: {e}")))?;
        Ok(ApiClient {
            http,
            base: server.clone(),
            key,
            trust,
            verdicts,
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
        self.base.as_str().trim_end_matches('/')
    }

    fn url(&self, path: &str) -> Result<Url, CliError> {
        let text = format!("{}{path}", self.server());
        Url::parse(&text).map_err(|e| CliError::Unexpected(format!("bad request URL {text}: {e}")))
    }

    /// `GET path?query`.
    pub fn get<T: DeserializeOwned>(
        &self,
        path: &str,
        query: &[(&str, String)],
    ) -> Result<Reply<T>, CliError> {
        let req = self.http.get(self.url(path)?).query(query);
        self.send(path, req)
    }

    /// `POST path` with a JSON body.
    pub fn post<B: Serialize, T: DeserializeOwned>(
        &self,
        path: &str,
        body: &B,
    ) -> Result<Reply<T>, CliError> {
        let req = self.http.post(self.url(path)?).json(body);
        self.send(path, req)
    }

    /// `PATCH path` with a JSON body.
    pub fn patch<B: Serialize, T: DeserializeOwned>(
        &self,
        path: &str,
        body: &B,
    ) -> Result<Reply<T>, CliError> {
        let req = self.http.patch(self.url(path)?).json(body);
        self.send(path, req)
    }

    /// `DELETE path`, which answers without a body.
    pub fn delete(&self, path: &str) -> Result<(), CliError> {
        let req = self.http.delete(self.url(path)?);
        let req = match &self.key {
            Some(key) => req.bearer_auth(key.expose()),
            None => req,
        };
        tracing::debug!(server = self.server(), path, "request");
        let resp = req.send().map_err(|e| self.transport_error(&e))?;
        let status = resp.status();
        tracing::debug!(path, status = status.as_u16(), "response");
        if status.is_success() {
            return Ok(());
        }
        let bytes = resp.bytes().map_err(|e| self.transport_error(&e))?;
        Err(api_error(status.as_u16(), &bytes))
    }

    fn send<T: DeserializeOwned>(
        &self,
        path: &str,
        req: RequestBuilder,
    ) -> Result<Reply<T>, CliError> {
        let req = match &self.key {
            Some(key) => req.bearer_auth(key.expose()),
            None => req,
        };
        tracing::debug!(server = self.server(), path, "request");
        let resp = req.send().map_err(|e| self.transport_error(&e))?;
        let status = resp.status();
        let bytes = resp.bytes().map_err(|e| self.transport_error(&e))?;
        tracing::debug!(path, status = status.as_u16(), "response");
        if !status.is_success() {
            return Err(api_error(status.as_u16(), &bytes));
        }
        let raw: Value = serde_json::from_slice(&bytes).map_err(|e| {
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
    fn transport_error(&self, e: &reqwest::Error) -> CliError {
        if let Some(why) = explain_refusal(&self.trust, self.verdicts.latest().as_ref()) {
            return CliError::Untrusted(why);
        }
        let server = self.server();
        if e.is_timeout() {
            return CliError::Unreachable(format!(
                "{server} did not answer in time; check the address and that heex-cloud is running"
            ));
        }
        CliError::Unreachable(format!(
            "cannot reach {server}: {}; check the address and that heex-cloud is running",
            root_cause(e)
        ))
    }
}

/// The innermost cause of an error, which names the real problem ("Connection refused").
fn root_cause(e: &(dyn std::error::Error + 'static)) -> String {
    let mut cur = e;
    while let Some(next) = cur.source() {
        cur = next;
    }
    cur.to_string()
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
