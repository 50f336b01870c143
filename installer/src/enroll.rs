//! The HTTPS conversation with the cloud: a reachability probe (which also proves the server's
//! identity before the key is sent), then `POST /v1/enroll` with the API key as Bearer token.

use std::io::Read;
use std::time::Duration;

use heex_proto::api::{EnrollRequest, EnrollResponse, ErrorBody, ErrorCode};
use heex_proto::{ApiKey, Fingerprint};
use reqwest::blocking::{Client, Response};
use reqwest::header::{HeaderValue, ACCEPT, AUTHORIZATION};
use reqwest::{StatusCode, Url};

use crate::error::InstallError;
use crate::trust::{self, TrustAnchor, Verdict, VerdictLog};

/// Largest response body read from the server.
const MAX_RESPONSE_BYTES: u64 = 1024 * 1024;
/// Longest server message shown to the user.
const MAX_MESSAGE_CHARS: usize = 400;

/// Checks that `s` is an `https://` URL usable as the API base.
pub fn parse_server_url(s: &str) -> Result<Url, InstallError> {
    let usage = |why: &str| InstallError::Usage(format!("--server {s:?} {why}"));
    let mut url = Url::parse(s.trim()).map_err(|e| usage(&format!("is not a URL: {e}")))?;
    if url.scheme() != "https" {
        return Err(usage("must be an https:// URL"));
    }
    if url.host_str().is_none_or(str::is_empty) {
        return Err(usage("has no host"));
    }
    if !url.username().is_empty() || url.password().is_some() {
        return Err(usage("must not contain credentials"));
    }
    if url.query().is_some() || url.fragment().is_some() {
        return Err(usage("must not have a query or fragment"));
    }
    // A base path is allowed (reverse proxies); make it a directory so joins append to it.
    if !url.path().ends_with('/') {
        let path = format!("{}/", url.path());
        url.set_path(&path);
    }
    Ok(url)
}

/// The server URL as written to `agent.toml` and shown: without the trailing slash.
pub fn display_url(url: &Url) -> String {
    url.as_str().trim_end_matches('/').to_owned()
}

/// A client for one Heex cloud, trusting only the configured anchor.
pub struct Cloud {
    http: Client,
    base: Url,
    anchor: TrustAnchor,
    verdicts: VerdictLog,
}

impl Cloud {
    /// A client for the API at `base`, trusting `anchor`.
    pub fn new(base: Url, anchor: TrustAnchor) -> Result<Self, InstallError> {
        let verdicts = VerdictLog::default();
        let tls = trust::client_config(anchor.clone(), verdicts.clone())?;
        let http = Client::builder()
            .use_preconfigured_tls(tls)
            .https_only(true)
            // A redirect would carry the Bearer key somewhere the user did not name.
            .redirect(reqwest::redirect::Policy::none())
            .connect_timeout(Duration::from_secs(10))
            .timeout(Duration::from_secs(30))
            .user_agent(concat!("heex-installer/", env!("CARGO_PKG_VERSION")))
            .build()
            .map_err(|e| InstallError::Unexpected(format!("cannot set up HTTPS: {e}")))?;
        Ok(Cloud {
            http,
            base,
            anchor,
            verdicts,
        })
    }

    fn url(&self, path: &str) -> Result<Url, InstallError> {
        self.base
            .join(path)
            .map_err(|e| InstallError::Unexpected(format!("bad URL for {path}: {e}")))
    }

    /// Connects (`GET /healthz`), proving the server's identity without sending the key.
    /// Returns the fingerprint of the CA the server's chain verified against, when known.
    pub fn probe(&self) -> Result<Option<Fingerprint>, InstallError> {
        let resp = self
            .http
            .get(self.url("healthz")?)
            .send()
            .map_err(|e| self.transport_error(e))?;
        let ca = match self.verdicts.latest() {
            Some(Verdict::Verified { ca }) => ca,
            _ => None,
        };
        let status = resp.status();
        if status.is_success() {
            Ok(ca)
        } else if status.is_server_error() {
            Err(unavailable(status))
        } else {
            Err(InstallError::Unreachable(format!(
                "{} does not look like a Heex cloud API (GET /healthz answered HTTP {}); check --server",
                display_url(&self.base),
                status.as_u16()
            )))
        }
    }

    /// Spends `key` to enroll: `POST /v1/enroll`.
    pub fn enroll(
        &self,
        key: &ApiKey,
        request: &EnrollRequest,
    ) -> Result<EnrollResponse, InstallError> {
        let mut bearer = HeaderValue::from_str(&format!("Bearer {}", key.expose()))
            .map_err(|_| InstallError::Unexpected("API key is not a valid header".to_owned()))?;
        bearer.set_sensitive(true);
        let resp = self
            .http
            .post(self.url("v1/enroll")?)
            .header(AUTHORIZATION, bearer)
            .header(ACCEPT, "application/json")
            .json(request)
            .send()
            .map_err(|e| self.transport_error(e))?;
        let status = resp.status();
        let body = read_body(resp).map_err(|e| {
            InstallError::Unreachable(format!(
                "the connection to {} broke while reading its answer: {e}; try again",
                display_url(&self.base)
            ))
        })?;
        if status == StatusCode::CREATED || status == StatusCode::OK {
            return serde_json::from_slice(&body).map_err(|e| {
                InstallError::Unexpected(format!(
                    "the server's enrollment answer does not parse: {e}"
                ))
            });
        }
        Err(refusal(status, &body, key, &display_url(&self.base)))
    }

    /// One line for a failed request: the trust verdict if the server's identity was refused,
    /// otherwise the deepest cause of the transport error.
    fn transport_error(&self, e: reqwest::Error) -> InstallError {
        if let Some(msg) = trust::explain_refusal(&self.anchor, self.verdicts.latest().as_ref()) {
            return InstallError::Untrusted(msg);
        }
        let base = display_url(&self.base);
        let cause = root_cause(&e);
        if e.is_timeout() {
            InstallError::Unreachable(format!(
                "{base} did not answer in time ({cause}); check --server and the network"
            ))
        } else if e.is_connect() {
            InstallError::Unreachable(format!(
                "cannot connect to {base}: {cause}; check --server and that the server is running"
            ))
        } else {
            InstallError::Unreachable(format!("request to {base} failed: {cause}"))
        }
    }
}

fn read_body(resp: Response) -> std::io::Result<Vec<u8>> {
    let mut body = Vec::new();
    resp.take(MAX_RESPONSE_BYTES).read_to_end(&mut body)?;
    Ok(body)
}

/// The deepest error message in a chain: that is where the actual reason is
/// ("Connection refused", "invalid peer certificate: …").
fn root_cause(e: &(dyn std::error::Error + 'static)) -> String {
    let mut current = e;
    while let Some(next) = current.source() {
        current = next;
    }
    current.to_string()
}

/// A server's message, made safe to print on one line.
fn sanitize(message: &str) -> String {
    let clean: String = message
        .chars()
        .map(|c| if c.is_control() { ' ' } else { c })
        .take(MAX_MESSAGE_CHARS)
        .collect();
    clean.trim().to_owned()
}

fn unavailable(status: StatusCode) -> InstallError {
    InstallError::Unreachable(format!(
        "the server is unavailable (HTTP {}); try again later",
        status.as_u16()
    ))
}

/// The user's line for a refused enrollment.
fn refusal(status: StatusCode, body: &[u8], key: &ApiKey, base: &str) -> InstallError {
    let parsed: Option<ErrorBody> = serde_json::from_slice(body).ok();
    let code = parsed.as_ref().map(|b| b.error);
    let message = parsed
        .as_ref()
        .map(|b| sanitize(&b.message))
        .filter(|m| !m.is_empty());
    let id = key.id();
    match status {
        StatusCode::UNAUTHORIZED => match (code, message) {
            (Some(ErrorCode::KeyRevoked | ErrorCode::KeyExpired), Some(m)) => {
                InstallError::KeyRefused(m)
            }
            (Some(ErrorCode::KeyRevoked), None) => InstallError::KeyRefused(format!(
                "API key {id} was revoked; ask an admin for a new key"
            )),
            (Some(ErrorCode::KeyExpired), None) => {
                InstallError::KeyRefused(format!("API key {id} expired; create a new key"))
            }
            _ => InstallError::KeyRefused(format!(
                "the server does not know this API key ({id}); check you copied it from the right workspace"
            )),
        },
        StatusCode::FORBIDDEN => InstallError::KeyRefused(message.unwrap_or_else(|| {
            format!("API key {id} may not enroll devices; use a key with the enroll scope")
        })),
        StatusCode::BAD_REQUEST if code == Some(ErrorCode::BadCsr) => InstallError::Unexpected(
            format!(
                "the server rejected the certificate request: {}",
                message.unwrap_or_default()
            ),
        ),
        StatusCode::BAD_REQUEST => InstallError::Usage(format!(
            "the server rejected the enrollment: {}",
            message.unwrap_or_else(|| "bad request".to_owned())
        )),
        StatusCode::NOT_FOUND | StatusCode::METHOD_NOT_ALLOWED => InstallError::Unreachable(format!(
            "{base} has no enrollment endpoint (HTTP {}); check --server points at the Heex cloud API",
            status.as_u16()
        )),
        StatusCode::BAD_GATEWAY | StatusCode::SERVICE_UNAVAILABLE | StatusCode::GATEWAY_TIMEOUT => {
            unavailable(status)
        }
        _ => InstallError::Unexpected(format!(
            "unexpected answer from the server: HTTP {}{}",
            status.as_u16(),
            message.map(|m| format!(": {m}")).unwrap_or_default()
        )),
    }
}

#[cfg(test)]
mod tests {
    use heex_proto::KeyId;

    use super::*;

    fn key() -> ApiKey {
        ApiKey::derive(b"test server secret", KeyId::generate())
    }

    fn body(code: &str, message: &str) -> Vec<u8> {
        serde_json::to_vec(&serde_json::json!({"error": code, "message": message})).unwrap()
    }

    #[test]
    fn server_urls() {
        let u = parse_server_url("https://127.0.0.1:8443").unwrap();
        assert_eq!(
            u.join("v1/enroll").unwrap().as_str(),
            "https://127.0.0.1:8443/v1/enroll"
        );
        assert_eq!(display_url(&u), "https://127.0.0.1:8443");
        let u = parse_server_url("https://h.example/heex").unwrap();
        assert_eq!(
            u.join("v1/enroll").unwrap().as_str(),
            "https://h.example/heex/v1/enroll"
        );
        for bad in [
            "http://h:8443",
            "h:8443",
            "https://user:pw@h",
            "https://h/?x=1",
            "",
        ] {
            assert_eq!(parse_server_url(bad).unwrap_err().exit_code(), 64, "{bad}");
        }
    }

    #[test]
    fn refusals_map_to_exit_codes_and_lines() {
        let k = key();
        let b = "https://h";
        let revoked =
            "API key X was revoked on 2026-01-01T00:00:00Z by a@b; ask an admin for a new key";
        let e = refusal(
            StatusCode::UNAUTHORIZED,
            &body("key_revoked", revoked),
            &k,
            b,
        );
        assert_eq!(e.exit_code(), 77);
        assert_eq!(e.to_string(), revoked);

        let e = refusal(
            StatusCode::UNAUTHORIZED,
            &body("key_expired", "API key X expired on d; create a new key"),
            &k,
            b,
        );
        assert_eq!(e.exit_code(), 77);
        assert!(e.to_string().contains("expired"));

        let e = refusal(
            StatusCode::UNAUTHORIZED,
            &body("unauthorized", "unauthorized"),
            &k,
            b,
        );
        assert_eq!(e.exit_code(), 77);
        assert!(e
            .to_string()
            .starts_with("the server does not know this API key"));
        assert!(e.to_string().contains(k.id().as_str()));
        assert!(!e.to_string().contains(&k.expose()));

        let e = refusal(StatusCode::UNAUTHORIZED, b"not json", &k, b);
        assert_eq!(e.exit_code(), 77);

        let e = refusal(StatusCode::FORBIDDEN, &body("forbidden", "no"), &k, b);
        assert_eq!(e.exit_code(), 77);
        assert_eq!(
            refusal(StatusCode::BAD_REQUEST, &body("bad_csr", "x"), &k, b).exit_code(),
            70
        );
        assert_eq!(
            refusal(StatusCode::BAD_REQUEST, &body("bad_request", "x"), &k, b).exit_code(),
            64
        );
        assert_eq!(refusal(StatusCode::NOT_FOUND, b"", &k, b).exit_code(), 69);
        assert_eq!(
            refusal(StatusCode::SERVICE_UNAVAILABLE, b"", &k, b).exit_code(),
            69
        );
        assert_eq!(
            refusal(
                StatusCode::INTERNAL_SERVER_ERROR,
                &body("internal", "boom"),
                &k,
                b
            )
            .exit_code(),
            70
        );
    }

    #[test]
    fn server_messages_are_one_line() {
        assert_eq!(sanitize("a\nb\x1b[31m"), "a b [31m");
        assert_eq!(sanitize(&"x".repeat(1000)).len(), MAX_MESSAGE_CHARS);
    }
}
