//! OpenAPI schemas of the identifiers that travel as strings (feature `openapi`).
//!
//! The API bodies in [`crate::api`] derive `utoipa::ToSchema` under the same feature; the
//! identifiers here have hand-written schemas because their text form has a fixed shape.

use utoipa::openapi::schema::{ObjectBuilder, Schema, SchemaFormat, Type};
use utoipa::openapi::RefOr;

use crate::{DeviceId, KeyId, MemberId, SpiffeId, WorkspaceId};

fn string_schema(description: &str, pattern: &str, example: &str) -> RefOr<Schema> {
    ObjectBuilder::new()
        .schema_type(Type::String)
        .description(Some(description))
        .pattern(Some(pattern))
        .examples([example])
        .into()
}

macro_rules! string_id_schema {
    ($ty:ty, $description:literal, $pattern:literal, $example:literal) => {
        impl utoipa::PartialSchema for $ty {
            fn schema() -> RefOr<Schema> {
                string_schema($description, $pattern, $example)
            }
        }
        impl utoipa::ToSchema for $ty {}
    };
}

string_id_schema!(
    KeyId,
    "Public id of an API key: the 12 characters after `heex_`.",
    "^[0-9A-Za-z]{12}$",
    "k3yId0exampl"
);
string_id_schema!(
    DeviceId,
    "A device's stable opaque id, also the CN of its certificate.",
    "^dev_[0-9A-Za-z]{20}$",
    "dev_0123456789abcdefABCD"
);
string_id_schema!(
    WorkspaceId,
    "A workspace's id.",
    "^ws_[0-9A-Za-z]{12}$",
    "ws_0123456789ab"
);
string_id_schema!(
    MemberId,
    "A team member's id.",
    "^mem_[0-9A-Za-z]{12}$",
    "mem_0123456789ab"
);

impl utoipa::PartialSchema for SpiffeId {
    fn schema() -> RefOr<Schema> {
        ObjectBuilder::new()
            .schema_type(Type::String)
            .format(Some(SchemaFormat::Custom("uri".to_owned())))
            .description(Some(
                "The device's SPIFFE ID: spiffe://<trust-domain>/ws/<workspace-id>/device/<device-id>.",
            ))
            .examples(["spiffe://heex.local/ws/ws_0123456789ab/device/dev_0123456789abcdefABCD"])
            .into()
    }
}
impl utoipa::ToSchema for SpiffeId {}

#[cfg(test)]
mod tests {
    use utoipa::PartialSchema;

    use super::*;

    #[test]
    fn id_examples_match_their_patterns() {
        // The examples are what a reader copies: they must parse.
        assert!("dev_0123456789abcdefABCD".parse::<DeviceId>().is_ok());
        assert!("ws_0123456789ab".parse::<WorkspaceId>().is_ok());
        assert!("mem_0123456789ab".parse::<MemberId>().is_ok());
        assert!("k3yId0exampl".parse::<KeyId>().is_ok());
        let json = serde_json::to_value(KeyId::schema()).unwrap();
        assert_eq!(json["type"], "string");
    }
}
