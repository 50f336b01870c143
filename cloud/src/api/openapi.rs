//! `GET /v1/openapi.json`: the OpenAPI 3 document, generated from the handlers' annotations
//! and the `heex_proto::api` body types when the router is built.

use std::sync::Arc;

use axum::http::header::CONTENT_TYPE;
use axum::response::IntoResponse;
use axum::Extension;
use heex_proto::api::{ErrorBody, ErrorCode};
use utoipa::openapi::security::{HttpAuthScheme, HttpBuilder, SecurityScheme};
use utoipa::{Modify, OpenApi};

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
    components(schemas(ErrorBody, ErrorCode)),
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
    pub fn new(doc: &utoipa::openapi::OpenApi) -> Self {
        // Serializing these plain data structures cannot fail; an empty object would only
        // hide a bug, so say so in the document itself.
        let json = doc.to_json().unwrap_or_else(|e| {
            tracing::error!(error = %e, "cannot render the OpenAPI document");
            "{}".to_owned()
        });
        Document(Arc::new(json))
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
