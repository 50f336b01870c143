//! `GET /v1/openapi.json`: the OpenAPI 3.1 document, generated from the handlers' annotations
//! and the `heex_proto::api` body types when the router is built, then completed by
//! [`finish`] with what the annotations cannot say: the bounds and patterns the handlers
//! enforce (built from the same constants as the checks) and the error responses every
//! operation can give.

use std::sync::Arc;

use axum::http::header::CONTENT_TYPE;
use axum::response::IntoResponse;
use axum::Extension;
use heex_proto::api::{ErrorBody, ErrorCode};
use heex_proto::{DeviceId, KeyId, MemberId, WorkspaceId};
use serde_json::{json, Map, Value};
use utoipa::openapi::security::{HttpAuthScheme, HttpBuilder, SecurityScheme};
use utoipa::{Modify, OpenApi};

use super::enroll;
use super::invitations::{MAX_EMAIL_LEN, MAX_INVITATION_LIFETIME};
use super::keys::{MAX_KEY_LIFETIME, MAX_KEY_NAME, MAX_ROTATION_OVERLAP};
use crate::error;
use crate::store::DeviceSort;
use heex_proto::api::MAX_PAGE_LIMIT;
use heex_proto::token::RANDOM_LEN as TOKEN_RANDOM_LEN;
use heex_proto::InvitationToken;

/// Name of the bearer API key security scheme in the document.
pub const API_KEY: &str = "api_key";

/// The document's fixed parts; the paths come from the routes (see `documented_routes`).
#[derive(OpenApi)]
#[openapi(
    info(
        title = "Heex cloud API",
        description = "Keys, members, devices, enrollment and audit log of a Heex cloud. \
                       Every error answers with an ErrorBody.",
        license(name = "Apache-2.0")
    ),
    modifiers(&BearerApiKey),
    components(schemas(ErrorBody, ErrorCode, KeyId, MemberId, DeviceId, WorkspaceId)),
    tags(
        (name = "server", description = "Health, CA certificate and this document (no key needed)"),
        (name = "keys", description = "API keys: create, list, copy, revoke, rotate"),
        (name = "members", description = "Team members and invitations"),
        (name = "devices", description = "Enrollment and enrolled devices"),
        (name = "audit", description = "The workspace's audit log")
    )
)]
pub struct ApiDoc;

/// Adds the `Authorization: Bearer <API key>` security scheme.
struct BearerApiKey;

impl Modify for BearerApiKey {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        let components = openapi.components.get_or_insert_with(Default::default);
        components.add_security_scheme(
            API_KEY,
            SecurityScheme::Http(
                HttpBuilder::new()
                    .scheme(HttpAuthScheme::Bearer)
                    .bearer_format("heex_<id><secret><checksum>")
                    .description(Some(
                        "A Heex API key. Its scope and its owner's role bound what it may do.",
                    ))
                    .build(),
            ),
        );
    }
}

/// The document rendered once, shared by every request.
#[derive(Clone)]
pub struct Document(Arc<String>);

impl Document {
    /// Renders `doc` as JSON.
    pub fn new(doc: &Value) -> Self {
        Document(Arc::new(doc.to_string()))
    }
}

/// The OpenAPI 3 document of this API (no authentication).
#[utoipa::path(
    get,
    path = "/v1/openapi.json",
    tag = "server",
    responses((status = 200, description = "The OpenAPI document", content_type = "application/json"))
)]
pub(super) async fn openapi_json(Extension(doc): Extension<Document>) -> impl IntoResponse {
    (
        [(CONTENT_TYPE, "application/json")],
        doc.0.as_str().to_owned(),
    )
}

/// Completes the document generated from the annotations: the constraints the handlers
/// enforce ([`constrain`]), unique operation ids, and the error responses of every operation
/// ([`declare_errors`]). A constraint whose target is missing is logged (and fails the tests).
pub fn finish(doc: &utoipa::openapi::OpenApi) -> Value {
    let mut value = match serde_json::to_value(doc) {
        Ok(value) => value,
        Err(e) => {
            // Serializing these plain data structures cannot fail; an empty object would only
            // hide a bug, so say so in the log.
            tracing::error!(error = %e, "cannot render the OpenAPI document");
            return json!({});
        }
    };
    for missing in constrain(&mut value) {
        tracing::error!(target = %missing, "OpenAPI constraint has no target in the document");
    }
    name_operations(&mut value);
    declare_errors(&mut value);
    value
}

/// The characters names, label values and emails may not contain
/// ([`heex_proto::text::CONTROL_OR_FORMAT`]), as the body of a regular expression character
/// class.
static CONTROL: std::sync::LazyLock<String> =
    std::sync::LazyLock::new(heex_proto::text::control_or_format_class);

/// What [`super::check_name`] accepts with `max`: 1 to `max` characters, not only white
/// space, no control characters. (The server trims surrounding white space before counting;
/// the schema counts it.)
fn name(max: usize) -> Value {
    json!({
        "minLength": 1,
        "maxLength": max,
        "pattern": format!("^[^{c}]*[^\\s{c}][^{c}]*$", c = *CONTROL),
    })
}

/// At most `max` characters, no control characters.
fn printable(max: usize) -> Value {
    json!({"maxLength": max, "pattern": format!("^[^{c}]*$", c = *CONTROL)})
}

/// What `enroll::check_labels` accepts.
fn labels() -> Value {
    let mut value = printable(enroll::MAX_LABEL_VALUE);
    value["type"] = json!("string");
    json!({
        "maxProperties": enroll::MAX_LABELS,
        "propertyNames": {
            "minLength": 1,
            "maxLength": enroll::MAX_LABEL_KEY,
            "pattern": format!("^[0-9A-Za-z._/-]{{1,{}}}$", enroll::MAX_LABEL_KEY),
        },
        "additionalProperties": value,
    })
}

/// An integer in `min..=max`.
fn range(min: i64, max: i64) -> Value {
    json!({"minimum": min, "maximum": max})
}

/// The constraints the handlers enforce, put on the schemas of their bodies and parameters.
/// Returns the targets that are not in `doc` (a renamed field, say).
pub(crate) fn constrain(doc: &mut Value) -> Vec<String> {
    let key_lifetime_days = MAX_KEY_LIFETIME.whole_days();
    let key_lifetime_secs = MAX_KEY_LIFETIME.whole_seconds();
    let invitation_secs = MAX_INVITATION_LIFETIME.whole_seconds();
    let overlap_secs = MAX_ROTATION_OVERLAP.whole_seconds();
    let email = json!({
        "maxLength": MAX_EMAIL_LEN,
        "pattern": format!("^[^\\s{c}@]+@[^\\s{c}@]+$", c = *CONTROL),
    });
    let token = json!({
        "minLength": InvitationToken::LEN,
        "maxLength": InvitationToken::LEN,
        "pattern": format!("^{}[0-9A-Za-z]{{{TOKEN_RANDOM_LEN}}}$", InvitationToken::PREFIX),
    });
    let schemas: Vec<(&str, &str, Value)> = vec![
        ("CreateKeyRequest", "name", name(MAX_KEY_NAME)),
        (
            "CreateKeyRequest",
            "expires_in_days",
            range(1, key_lifetime_days),
        ),
        (
            "CreateKeyRequest",
            "expires_in_secs",
            range(1, key_lifetime_secs),
        ),
        ("CreateKeyRequest", "max_uses", range(1, i64::MAX)),
        ("RotateKeyRequest", "overlap_secs", range(0, overlap_secs)),
        ("InviteRequest", "email", email),
        (
            "InviteRequest",
            "expires_in_secs",
            range(1, invitation_secs),
        ),
        ("AcceptInvitationRequest", "token", token),
        // Absent or blank: the first key is named "cli".
        (
            "AcceptInvitationRequest",
            "key_name",
            printable(MAX_KEY_NAME),
        ),
        ("EnrollRequest", "name", name(enroll::MAX_DEVICE_NAME)),
        ("EnrollRequest", "labels", labels()),
        (
            "EnrollRequest",
            "csr_pem",
            json!({"pattern": "-----BEGIN (NEW )?CERTIFICATE REQUEST-----"}),
        ),
        // A null field changes nothing; at least one of the two must be given (see below).
        (
            "UpdateDeviceRequest",
            "name",
            merged(json!({"type": "string"}), name(enroll::MAX_DEVICE_NAME)),
        ),
        (
            "UpdateDeviceRequest",
            "labels",
            merged(json!({"type": "object"}), labels()),
        ),
    ];
    let mut missing = Vec::new();
    for (schema, property, constraint) in schemas {
        match doc
            .pointer_mut(&format!(
                "/components/schemas/{schema}/properties/{property}"
            ))
            .and_then(Value::as_object_mut)
        {
            Some(target) => merge(target, constraint),
            None => missing.push(format!("{schema}.{property}")),
        }
    }
    // "nothing to change" otherwise.
    match doc
        .pointer_mut("/components/schemas/UpdateDeviceRequest")
        .and_then(Value::as_object_mut)
    {
        Some(target) => merge(target, json!({"minProperties": 1})),
        None => missing.push("UpdateDeviceRequest".to_owned()),
    }
    // Every list pages the same way (heex_proto::api::Page).
    let page_limit = range(1, i64::from(MAX_PAGE_LIMIT));
    let mut params: Vec<(&str, &str, &str, Value)> = [
        "/v1/keys",
        "/v1/members",
        "/v1/invitations",
        "/v1/devices",
        "/v1/audit",
        "/v1/devices/{id}/reports",
    ]
    .into_iter()
    .map(|path| ("get", path, "limit", page_limit.clone()))
    .collect();
    let sorts: Vec<String> = DeviceSort::ALL
        .iter()
        .flat_map(|s| [s.as_str().to_owned(), format!("-{}", s.as_str())])
        .collect();
    params.extend([
        ("get", "/v1/audit", "since", json!({"format": "date-time"})),
        (
            "get",
            "/v1/devices/{id}/reports",
            "after",
            range(0, i64::MAX),
        ),
        ("get", "/v1/devices", "sort", json!({ "enum": sorts })),
        (
            "get",
            "/v1/devices",
            "cert_expires_before",
            json!({"format": "date-time"}),
        ),
        (
            "get",
            "/v1/devices",
            "last_seen_before",
            json!({"format": "date-time"}),
        ),
        (
            "get",
            "/v1/devices/summary",
            "expiring_within_days",
            range(0, 3650),
        ),
    ]);
    for (method, path, param, constraint) in params {
        let target = doc
            .pointer_mut(&format!(
                "/paths/{}/{method}/parameters",
                pointer_escape(path)
            ))
            .and_then(Value::as_array_mut)
            .and_then(|params| params.iter_mut().find(|p| p["name"] == param))
            .and_then(|p| p.get_mut("schema"))
            .and_then(Value::as_object_mut);
        match target {
            Some(target) => merge(target, constraint),
            None => missing.push(format!("{method} {path} ?{param}")),
        }
    }
    missing
}

/// `a` with the members of `b` added (replacing those of the same name).
fn merged(mut a: Value, b: Value) -> Value {
    if let Some(target) = a.as_object_mut() {
        merge(target, b);
    }
    a
}

fn merge(target: &mut Map<String, Value>, patch: Value) {
    if let Value::Object(patch) = patch {
        target.extend(patch);
    }
}

/// A JSON pointer segment for `s` (RFC 6901).
fn pointer_escape(s: &str) -> String {
    s.replace('~', "~0").replace('/', "~1")
}

/// Operations that answer without touching the store.
const STORELESS: &[&str] = &["/healthz", "/v1/ca", "/v1/openapi.json"];

/// Declares on every operation the errors any request to it can meet, whatever the handler:
/// authentication (401), the JSON body and query extractors (400, 413), and the store's
/// failures ([`error::STORE_FAILURES`]).
fn declare_errors(doc: &mut Value) {
    let Some(paths) = doc.get_mut("paths").and_then(Value::as_object_mut) else {
        return;
    };
    for (path, item) in paths.iter_mut() {
        let Some(item) = item.as_object_mut() else {
            continue;
        };
        for (_method, op) in item.iter_mut() {
            let Some(op) = op.as_object_mut() else {
                continue;
            };
            let authenticated = op.get("security").is_some_and(|s| s != &json!([]));
            let has_body = op.contains_key("requestBody");
            let has_query = op
                .get("parameters")
                .and_then(Value::as_array)
                .is_some_and(|ps| ps.iter().any(|p| p["in"] == "query"));
            let mut errors: Vec<(u16, &str)> = Vec::new();
            if authenticated {
                errors.push((401, "Missing, unknown, revoked or expired key"));
            }
            if has_body {
                errors.push((
                    400,
                    "Malformed JSON, wrong Content-Type, an unknown field, or a value the \
                     schema refuses",
                ));
                errors.push((413, "Request body larger than 64 KiB"));
            }
            if has_query {
                errors.push((400, "Unknown or malformed query parameter"));
            }
            // The listener's whole-request deadline (`server::ApiOptions::request_timeout`).
            errors.push((
                408,
                "The request, its body included, took longer than the server allows",
            ));
            if !STORELESS.contains(&path.as_str()) {
                for (status, description) in error::STORE_FAILURES {
                    errors.push((status.as_u16(), description));
                }
            }
            let responses = op
                .entry("responses")
                .or_insert_with(|| json!({}))
                .as_object_mut();
            let Some(responses) = responses else {
                continue;
            };
            for (status, description) in errors {
                let mut response = json!({
                    "description": description,
                    "content": {"application/json": {"schema": {"$ref": "#/components/schemas/ErrorBody"}}},
                });
                if status == 401 {
                    response["headers"] = json!({"WWW-Authenticate": {
                        "description": "Bearer realm=\"heex\"",
                        "schema": {"type": "string"},
                    }});
                }
                let entry = responses
                    .entry(status.to_string())
                    .or_insert_with(|| response.clone());
                // Keep the handler's own description; add the header where it lacks one.
                if status == 401 {
                    if let Some(entry) = entry.as_object_mut() {
                        entry
                            .entry("headers")
                            .or_insert_with(|| response["headers"].clone());
                    }
                }
            }
        }
    }
}

/// Operation ids, unique as OpenAPI requires (the handlers' function names repeat: `list`);
/// generated clients name their functions after them. An operation missing here is named
/// after its method and path.
const OPERATION_IDS: &[(&str, &str, &str)] = &[
    ("get", "/healthz", "health"),
    ("get", "/readyz", "ready"),
    ("get", "/v1/ca", "get_ca_certificate"),
    ("get", "/v1/openapi.json", "get_openapi_document"),
    ("get", "/v1/whoami", "whoami"),
    ("post", "/v1/enroll", "enroll"),
    ("get", "/v1/keys", "list_keys"),
    ("post", "/v1/keys", "create_key"),
    ("post", "/v1/keys/{id}/copy", "copy_key"),
    ("post", "/v1/keys/{id}/revoke", "revoke_key"),
    ("post", "/v1/keys/{id}/rotate", "rotate_key"),
    ("get", "/v1/members", "list_members"),
    ("post", "/v1/members/{id}/remove", "remove_member"),
    ("post", "/v1/invitations", "invite"),
    ("post", "/v1/invitations/accept", "accept_invitation"),
    ("get", "/v1/devices", "list_devices"),
    ("get", "/v1/devices/summary", "device_summary"),
    ("get", "/v1/devices/{id}", "show_device"),
    ("patch", "/v1/devices/{id}", "update_device"),
    ("delete", "/v1/devices/{id}", "delete_device"),
    ("post", "/v1/devices/{id}/revoke", "revoke_device"),
    ("get", "/v1/devices/{id}/reports", "list_reports"),
    ("get", "/v1/audit", "list_audit_events"),
    (
        "post",
        "/v1/console/signin-links",
        "create_console_signin_link",
    ),
];

fn name_operations(doc: &mut Value) {
    let Some(paths) = doc.get_mut("paths").and_then(Value::as_object_mut) else {
        return;
    };
    for (path, item) in paths.iter_mut() {
        let Some(item) = item.as_object_mut() else {
            continue;
        };
        for (method, op) in item.iter_mut() {
            let Some(op) = op.as_object_mut() else {
                continue;
            };
            let id = OPERATION_IDS
                .iter()
                .find(|(m, p, _)| m == method && p == path)
                .map(|(_, _, id)| (*id).to_owned())
                .unwrap_or_else(|| {
                    let words: Vec<&str> = path
                        .split(|c: char| !c.is_ascii_alphanumeric())
                        .filter(|w| !w.is_empty())
                        .collect();
                    format!("{method}_{}", words.join("_"))
                });
            op.insert("operationId".to_owned(), json!(id));
        }
    }
}
