//! `POST /v1/enroll`: spend an API key once to obtain a device identity.

use std::collections::BTreeMap;

use axum::extract::State;
use axum::http::uri::Authority;
use axum::http::{HeaderMap, StatusCode, Uri};
use axum::Json;
use heex_proto::api::{EnrollRequest, EnrollResponse, ErrorBody, ErrorCode, Scope};
use heex_proto::{DeviceId, SpiffeId};
use serde_json::json;
use time::OffsetDateTime;

use super::{audit_entry, check_name, ApiJson, AppState, GatewayAddress};
use crate::auth::{enroll_refusal, Caller};
use crate::csr::DeviceCsr;
use crate::error::ApiError;
use crate::store::access::Need;
use crate::store::{AuditAction, NewDevice, StoreError};

/// Longest device name, in characters.
pub(super) const MAX_DEVICE_NAME: usize = 128;
/// Most labels a device may carry.
pub(super) const MAX_LABELS: usize = 64;
/// Longest label key, in characters.
pub(super) const MAX_LABEL_KEY: usize = 63;
/// Longest label value, in characters.
pub(super) const MAX_LABEL_VALUE: usize = 256;

/// Spends one use of the key to obtain a device identity: verifies the CSR, signs a
/// certificate built from the server's records, records the device (and the key's use, in
/// the same transaction), and answers 201 with everything the agent needs.
#[utoipa::path(
    post,
    path = "/v1/enroll",
    tag = "devices",
    request_body = EnrollRequest,
    security(("api_key" = [])),
    responses(
        (status = 201, description = "The device's identity and where to connect", body = EnrollResponse),
        (status = 400, description = "Bad CSR, name, labels or facts", body = ErrorBody),
        (status = 401, description = "Missing, unknown, revoked or expired key", body = ErrorBody),
        (status = 403, description = "The key has used all of its enrollments", body = ErrorBody),
        (status = 413, description = "Request body too large", body = ErrorBody)
    )
)]
pub(super) async fn enroll(
    State(state): State<AppState>,
    // Taken as a result so that a refused key counts as an enrollment refused.
    caller: Result<Caller, ApiError>,
    uri: Uri,
    headers: HeaderMap,
    ApiJson(req): ApiJson<EnrollRequest>,
) -> Result<(StatusCode, Json<EnrollResponse>), ApiError> {
    let result = match caller {
        Ok(caller) => enroll_with(state, caller, uri, headers, req).await,
        Err(refused) => Err(refused),
    };
    crate::metrics::get().enrollment(match &result {
        Ok(_) => "ok",
        Err(e) => match e.body().error {
            ErrorCode::KeyRevoked => "key_revoked",
            ErrorCode::KeyExpired => "key_expired",
            // A key that may not enroll (any more): its uses are spent, or its scope.
            ErrorCode::Forbidden => "uses_spent",
            ErrorCode::BadCsr => "bad_csr",
            ErrorCode::BadRequest => "bad_request",
            ErrorCode::Unauthorized => "unauthorized",
            ErrorCode::Unavailable => "unavailable",
            _ => "error",
        },
    });
    result
}

async fn enroll_with(
    state: AppState,
    caller: Caller,
    uri: Uri,
    headers: HeaderMap,
    req: EnrollRequest,
) -> Result<(StatusCode, Json<EnrollResponse>), ApiError> {
    caller.require_scope(&[Scope::Enroll, Scope::Admin], "enrolling a device")?;
    let now = OffsetDateTime::now_utc();
    if let Some(refused) = enroll_refusal(&caller.key, now) {
        return Err(refused);
    }
    check_name("name", &req.name, MAX_DEVICE_NAME)?;
    check_labels(&req.labels)?;
    if let Some(facts) = &req.facts {
        facts
            .check()
            .map_err(|e| ApiError::bad_request(e.to_string()))?;
    }
    let csr = DeviceCsr::from_pem(&req.csr_pem).map_err(|e| ApiError::bad_csr(e.to_string()))?;

    let key = &caller.key;
    let device_id = DeviceId::generate();
    let spiffe_id = SpiffeId::new(
        &state.trust_domain,
        key.workspace_id.clone(),
        device_id.clone(),
    )
    .map_err(ApiError::internal)?;
    let cas = state.cas.current();
    let cert = cas
        .issuing()
        .sign_device(
            &csr,
            &device_id,
            &spiffe_id,
            state.device_cert_lifetime,
            now,
        )
        .map_err(ApiError::internal)?;

    let audit = audit_entry(
        &caller,
        Need::Enroll,
        "enrolling a device",
        now,
        AuditAction::DeviceEnroll,
        device_id.as_str(),
        json!({"name": req.name.trim(), "key": key.id}),
    );
    let device = NewDevice {
        id: device_id.clone(),
        workspace_id: key.workspace_id.clone(),
        name: req.name.trim().to_owned(),
        labels: req.labels,
        facts: req.facts,
        spiffe_id: spiffe_id.clone(),
        enrolled_at: now,
        enrolled_by_key: key.id.clone(),
        enrolled_by_member: key.member_id.clone(),
        cert_serial: cert.serial_hex,
        cert_expires_at: cert.not_after,
        cert_ca: cas.issuing().fingerprint().to_string(),
        cert_key: cert.key_sha256,
    };
    match state.store.insert_device(device, audit).await {
        Ok(()) => {}
        // Revoked, expired or used up since it was checked: say why, as for any refusal.
        Err(StoreError::KeyUnusable(id)) => {
            let latest = state.store.find_key(&id).await?;
            return Err(latest
                .and_then(|k| enroll_refusal(&k, OffsetDateTime::now_utc()))
                .unwrap_or_else(ApiError::unauthorized));
        }
        Err(e) => return Err(e.into()),
    }
    tracing::info!(device = %device_id, key = %key.id, "device enrolled");

    Ok((
        StatusCode::CREATED,
        Json(EnrollResponse {
            device_id,
            spiffe_id,
            certificate_pem: cert.pem,
            ca_pem: cas.bundle_pem().to_owned(),
            gateway: gateway_for(&state.gateway, &uri, &headers),
            expires_at: cert.not_after,
        }),
    ))
}

/// Checks labels: count, key characters and lengths, printable values.
pub(super) fn check_labels(labels: &BTreeMap<String, String>) -> Result<(), ApiError> {
    if labels.len() > MAX_LABELS {
        return Err(ApiError::bad_request(format!(
            "at most {MAX_LABELS} labels are allowed"
        )));
    }
    for (k, v) in labels {
        let key_ok = !k.is_empty()
            && k.chars().count() <= MAX_LABEL_KEY
            && k.chars()
                .all(|c| c.is_ascii_alphanumeric() || "-_./".contains(c));
        if !key_ok {
            return Err(ApiError::bad_request(format!(
                "label key {k:?} must be 1 to {MAX_LABEL_KEY} letters, digits, '-', '_', '.' or '/'"
            )));
        }
        heex_proto::text::check_value(&format!("label {k:?} value"), v, MAX_LABEL_VALUE)
            .map_err(|e| ApiError::bad_request(e.to_string()))?;
    }
    Ok(())
}

/// The gateway `host:port` for a request: the advertised address, or the host the client
/// used (URI authority for HTTP/2, else the Host header) with the gateway's port.
pub(super) fn gateway_for(gateway: &GatewayAddress, uri: &Uri, headers: &HeaderMap) -> String {
    match gateway {
        GatewayAddress::Advertised(addr) => addr.clone(),
        GatewayAddress::SameHost(port) => {
            let host = uri
                .authority()
                .map(|a| a.host().to_owned())
                .or_else(|| {
                    headers
                        .get(axum::http::header::HOST)
                        .and_then(|h| h.to_str().ok())
                        .and_then(|h| h.parse::<Authority>().ok())
                        .map(|a| a.host().to_owned())
                })
                .filter(|h| !h.is_empty())
                .unwrap_or_else(|| "localhost".to_owned());
            format!("{host}:{port}")
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::http::HeaderValue;

    fn host(value: &str) -> HeaderMap {
        let mut h = HeaderMap::new();
        h.insert(
            axum::http::header::HOST,
            HeaderValue::from_str(value).unwrap(),
        );
        h
    }

    #[test]
    fn gateway_address() {
        let same = GatewayAddress::SameHost(8444);
        let path: Uri = "/v1/enroll".parse().unwrap();
        assert_eq!(
            gateway_for(&same, &path, &host("cloud.example:8443")),
            "cloud.example:8444"
        );
        assert_eq!(
            gateway_for(&same, &path, &host("127.0.0.1")),
            "127.0.0.1:8444"
        );
        assert_eq!(gateway_for(&same, &path, &host("[::1]:8443")), "[::1]:8444");
        assert_eq!(
            gateway_for(&same, &path, &HeaderMap::new()),
            "localhost:8444"
        );
        let h2: Uri = "https://10.0.0.5:9000/v1/enroll".parse().unwrap();
        assert_eq!(gateway_for(&same, &h2, &host("ignored")), "10.0.0.5:8444");
        let fixed = GatewayAddress::Advertised("gw.example:443".into());
        assert_eq!(gateway_for(&fixed, &h2, &host("x")), "gw.example:443");
    }

    #[test]
    fn labels_are_checked() {
        let mut labels = BTreeMap::new();
        labels.insert("site".to_owned(), "lab-3".to_owned());
        labels.insert("team/robots".to_owned(), "".to_owned());
        check_labels(&labels).unwrap();
        labels.insert("bad key".to_owned(), "x".to_owned());
        assert!(check_labels(&labels).is_err());
        let too_many: BTreeMap<_, _> = (0..=MAX_LABELS)
            .map(|i| (format!("k{i}"), String::new()))
            .collect();
        assert!(check_labels(&too_many).is_err());
    }
}
