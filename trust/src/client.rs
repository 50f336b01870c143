//! The blocking HTTPS client of the cloud's API, one for the installer and `heex`: rustls
//! trusting only the [`TrustAnchor`], HTTPS only, no redirects (a redirect would carry the
//! Bearer key somewhere the user did not name), bounded time and answer size, and failures
//! as typed [`RequestError`]s that each tool words with its own hint.

use std::io::Read;
use std::time::Duration;

use heex_proto::api::ErrorBody;
use heex_proto::{ApiKey, Fingerprint};
use reqwest::blocking::RequestBuilder;
use reqwest::header::ACCEPT;
use reqwest::{Method, Url};
use serde::Serialize;

use crate::{client_config, explain_refusal, TrustAnchor, TrustError, Verdict, VerdictLog};

/// How long to wait for a TCP and TLS connection.
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);
/// How long a whole request may take.
pub const REQUEST_TIMEOUT: Duration = Duration::from_secs(30);
/// Largest answer read from the server.
pub const MAX_RESPONSE_BYTES: u64 = 16 * 1024 * 1024;
/// Longest server message shown to the user.
pub const MAX_MESSAGE_CHARS: usize = 400;

/// Checks that `text` is an `https://` URL usable as the API base, and makes its path a
/// directory (a base path behind a reverse proxy is kept: requests append to it). The error
/// completes "--server … ": "must be an https:// URL".
pub fn parse_server_url(text: &str) -> Result<Url, String> {
    let mut url = Url::parse(text.trim()).map_err(|e| format!("is not a URL ({e})"))?;
    if url.scheme() != "https" {
        return Err("must be an https:// URL".to_owned());
    }
    if url.host_str().is_none_or(str::is_empty) {
        return Err("has no host".to_owned());
    }
    if !url.username().is_empty() || url.password().is_some() {
        return Err("must not contain credentials".to_owned());
    }
    if url.query().is_some() || url.fragment().is_some() {
        return Err("must not have a query or fragment".to_owned());
    }
    if !url.path().ends_with('/') {
        let path = format!("{}/", url.path());
        url.set_path(&path);
    }
    Ok(url)
}

/// The server URL as shown and stored: without the trailing slash.
pub fn display_url(url: &Url) -> String {
    url.as_str().trim_end_matches('/').to_owned()
}

/// A server's message made safe to print on one line: control characters (escape sequences
/// included) become spaces, runs of white space one space, at most [`MAX_MESSAGE_CHARS`].
pub fn one_line(message: &str) -> String {
    let clean: String = message
        .chars()
        .map(|c| if c.is_control() { ' ' } else { c })
        .collect();
    clean
        .split_whitespace()
        .collect::<Vec<_>>()
        .join(" ")
        .chars()
        .take(MAX_MESSAGE_CHARS)
        .collect()
}

/// Why a request got no answer.
#[derive(Debug, thiserror::Error)]
pub enum RequestError {
    /// The server's identity was refused (the line says why).
    #[error("{0}")]
    Untrusted(String),
    /// No answer in time.
    #[error("{server} did not answer in time ({cause})")]
    Timeout {
        /// The server.
        server: String,
        /// The deepest cause.
        cause: String,
    },
    /// No connection.
    #[error("cannot connect to {server}: {cause}")]
    Connect {
        /// The server.
        server: String,
        /// The deepest cause ("Connection refused").
        cause: String,
    },
    /// The exchange failed otherwise, or broke while the answer was read.
    #[error("the request to {server} failed: {cause}")]
    Failed {
        /// The server.
        server: String,
        /// The deepest cause.
        cause: String,
    },
    /// The answer is larger than [`MAX_RESPONSE_BYTES`].
    #[error("the answer of {server} is larger than {MAX_RESPONSE_BYTES} bytes")]
    TooLarge {
        /// The server.
        server: String,
    },
    /// The request itself could not be made (a path that is not a URL, a body that does not
    /// serialize): a bug.
    #[error("cannot make the request: {0}")]
    Invalid(String),
}

/// An HTTP answer.
#[derive(Debug, Clone)]
pub struct Answer {
    /// The status code.
    pub status: u16,
    /// The body.
    pub body: Vec<u8>,
}

impl Answer {
    /// 2xx.
    pub fn is_success(&self) -> bool {
        (200..300).contains(&self.status)
    }

    /// The server's error body, its message made [`one_line`], when it sent one.
    pub fn error(&self) -> Option<ErrorBody> {
        let mut body: ErrorBody = serde_json::from_slice(&self.body).ok()?;
        body.message = one_line(&body.message);
        Some(body)
    }
}

/// A client for one cloud, trusting one anchor.
pub struct Client {
    http: reqwest::blocking::Client,
    base: Url,
    server: String,
    anchor: TrustAnchor,
    verdicts: VerdictLog,
}

impl std::fmt::Debug for Client {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Client")
            .field("server", &self.server)
            .field("anchor", &self.anchor)
            .finish_non_exhaustive()
    }
}

impl Client {
    /// A client for the API at `base` (see [`parse_server_url`]), trusting only `anchor`,
    /// announcing itself as `user_agent`.
    pub fn new(base: &Url, anchor: TrustAnchor, user_agent: &str) -> Result<Client, TrustError> {
        let verdicts = VerdictLog::default();
        let tls = client_config(anchor.clone(), verdicts.clone())?;
        let http = reqwest::blocking::Client::builder()
            .use_preconfigured_tls(tls)
            .https_only(true)
            .redirect(reqwest::redirect::Policy::none())
            .connect_timeout(CONNECT_TIMEOUT)
            .timeout(REQUEST_TIMEOUT)
            .user_agent(user_agent)
            .build()
            .map_err(|e| TrustError::Tls(format!("cannot set up the HTTPS client: {e}")))?;
        let mut base = base.clone();
        if !base.path().ends_with('/') {
            let path = format!("{}/", base.path());
            base.set_path(&path);
        }
        Ok(Client {
            http,
            server: display_url(&base),
            base,
            anchor,
            verdicts,
        })
    }

    /// The server's base URL, without the trailing slash.
    pub fn server(&self) -> &str {
        &self.server
    }

    /// What the server's certificate must chain to.
    pub fn anchor(&self) -> &TrustAnchor {
        &self.anchor
    }

    /// The fingerprint of the CA the latest server chain verified against, when known.
    pub fn verified_ca(&self) -> Option<Fingerprint> {
        match self.verdicts.latest() {
            Some(Verdict::Verified { ca }) => ca,
            _ => None,
        }
    }

    /// `GET path?query`.
    pub fn get(
        &self,
        path: &str,
        query: &[(&str, String)],
        key: Option<&ApiKey>,
    ) -> Result<Answer, RequestError> {
        let request = self.request(Method::GET, path)?.query(query);
        self.send(request, key)
    }

    /// `POST path` with a JSON body.
    pub fn post(
        &self,
        path: &str,
        body: &impl Serialize,
        key: Option<&ApiKey>,
    ) -> Result<Answer, RequestError> {
        let request = self.request(Method::POST, path)?.json(body);
        self.send(request, key)
    }

    /// `PATCH path` with a JSON body.
    pub fn patch(
        &self,
        path: &str,
        body: &impl Serialize,
        key: Option<&ApiKey>,
    ) -> Result<Answer, RequestError> {
        let request = self.request(Method::PATCH, path)?.json(body);
        self.send(request, key)
    }

    /// `DELETE path`.
    pub fn delete(&self, path: &str, key: Option<&ApiKey>) -> Result<Answer, RequestError> {
        let request = self.request(Method::DELETE, path)?;
        self.send(request, key)
    }

    /// `path` (`/v1/keys` or `v1/keys`) under the base URL.
    fn url(&self, path: &str) -> Result<Url, RequestError> {
        self.base
            .join(path.trim_start_matches('/'))
            .map_err(|e| RequestError::Invalid(format!("{path} is not a URL path ({e})")))
    }

    fn request(&self, method: Method, path: &str) -> Result<RequestBuilder, RequestError> {
        Ok(self
            .http
            .request(method, self.url(path)?)
            .header(ACCEPT, "application/json"))
    }

    fn send(&self, request: RequestBuilder, key: Option<&ApiKey>) -> Result<Answer, RequestError> {
        // The header is marked sensitive: never logged, never kept across a redirect.
        let request = match key {
            Some(key) => request.bearer_auth(key.expose()),
            None => request,
        };
        let response = request.send().map_err(|e| self.transport_error(&e))?;
        let status = response.status().as_u16();
        let mut body = Vec::new();
        response
            .take(MAX_RESPONSE_BYTES + 1)
            .read_to_end(&mut body)
            .map_err(|e| RequestError::Failed {
                server: self.server.clone(),
                cause: format!("the connection broke while reading the answer ({e})"),
            })?;
        if body.len() as u64 > MAX_RESPONSE_BYTES {
            return Err(RequestError::TooLarge {
                server: self.server.clone(),
            });
        }
        tracing::debug!(server = %self.server, status, bytes = body.len(), "answer");
        Ok(Answer { status, body })
    }

    /// The trust verdict if the server's identity was refused, otherwise the transport's
    /// deepest cause.
    fn transport_error(&self, e: &reqwest::Error) -> RequestError {
        if let Some(why) = explain_refusal(&self.anchor, self.verdicts.latest().as_ref()) {
            return RequestError::Untrusted(why);
        }
        let server = self.server.clone();
        let cause = root_cause(e);
        if e.is_timeout() {
            RequestError::Timeout { server, cause }
        } else if e.is_connect() {
            RequestError::Connect { server, cause }
        } else if e.is_builder() {
            RequestError::Invalid(cause)
        } else {
            RequestError::Failed { server, cause }
        }
    }
}

/// The deepest error message in a chain: where the actual reason is ("Connection refused").
fn root_cause(e: &(dyn std::error::Error + 'static)) -> String {
    let mut current = e;
    while let Some(next) = current.source() {
        current = next;
    }
    current.to_string()
}

#[cfg(test)]
mod tests;
