//! The HTTPS conversation with the cloud: a reachability probe (which also proves the server's
//! identity before the key is sent), then `POST /v1/enroll` with the API key as Bearer token.

use heex_proto::api::{EnrollRequest, EnrollResponse, ErrorBody, ErrorCode};
use heex_proto::{ApiKey, Fingerprint};
use heex_trust::client::{one_line, Client, RequestError};
use reqwest::{StatusCode, Url};

use crate::error::InstallError;
use crate::trust::TrustAnchor;

pub use heex_trust::client::display_url;

/// Checks that `s` is an `https://` URL usable as the API base.
pub fn parse_server_url(s: &str) -> Result<Url, InstallError> {
    heex_trust::client::parse_server_url(s)
        .map_err(|why| InstallError::Usage(format!("--server {s:?} {why}")))
}

/// A client for one Heex cloud, trusting only the configured anchor.
pub struct Cloud {
    client: Client,
}

impl Cloud {
    /// A client for the API at `base`, trusting `anchor`.
    pub fn new(base: Url, anchor: TrustAnchor) -> Result<Self, InstallError> {
        let user_agent = concat!("heex-installer/", env!("CARGO_PKG_VERSION"));
        Ok(Cloud {
            client: Client::new(&base, anchor, user_agent)?,
        })
    }

    /// Connects (`GET /healthz`), proving the server's identity without sending the key.
    /// Returns the fingerprint of the CA the server's chain verified against, when known.
    pub fn probe(&self) -> Result<Option<Fingerprint>, InstallError> {
        let answer = self.client.get("healthz", &[], None).map_err(unreachable)?;
        let status = StatusCode::from_u16(answer.status).unwrap_or(StatusCode::BAD_GATEWAY);
        if status.is_success() {
            Ok(self.client.verified_ca())
        } else if status.is_server_error() {
            Err(unavailable(status))
        } else {
            Err(InstallError::Unreachable(format!(
                "{} does not look like a Heex cloud API (GET /healthz answered HTTP {}); check --server",
                self.client.server(),
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
        let answer = self
            .client
            .post("v1/enroll", request, Some(key))
            .map_err(unreachable)?;
        let status = StatusCode::from_u16(answer.status).unwrap_or(StatusCode::BAD_GATEWAY);
        if status == StatusCode::CREATED || status == StatusCode::OK {
            return serde_json::from_slice(&answer.body).map_err(|e| {
                InstallError::Unexpected(format!(
                    "the server's enrollment answer does not parse: {e}"
                ))
            });
        }
        Err(refusal(status, &answer.body, key, self.client.server()))
    }
}

/// The installer's line for a request that got no answer: the shared client's reason and
/// what to check.
fn unreachable(e: RequestError) -> InstallError {
    match e {
        RequestError::Untrusted(why) => InstallError::Untrusted(why),
        RequestError::Timeout { .. } => {
            InstallError::Unreachable(format!("{e}; check --server and the network"))
        }
        RequestError::Connect { .. } => InstallError::Unreachable(format!(
            "{e}; check --server and that the server is running"
        )),
        RequestError::Failed { .. } | RequestError::TooLarge { .. } => {
            InstallError::Unreachable(format!("{e}; try again"))
        }
        RequestError::Invalid(why) => InstallError::Unexpected(why),
    }
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
        .map(|b| one_line(&b.message))
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
    use heex_trust::client::MAX_MESSAGE_CHARS;

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
        assert_eq!(one_line("a\nb\x1b[31m"), "a b [31m");
        assert_eq!(one_line(&"x".repeat(1000)).len(), MAX_MESSAGE_CHARS);
    }
}
