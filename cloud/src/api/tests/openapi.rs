//! The OpenAPI document and the router agree, in both directions.

use std::collections::BTreeSet;

use super::*;

/// Routes the API contract promises (method, path template); the API may have more, each
/// documented and routed (checked by the other test).
const CONTRACT: &[(&str, &str)] = &[
    ("GET", "/healthz"),
    ("GET", "/readyz"),
    ("GET", "/v1/ca"),
    ("GET", "/v1/openapi.json"),
    ("GET", "/v1/whoami"),
    ("POST", "/v1/enroll"),
    ("GET", "/v1/keys"),
    ("POST", "/v1/keys"),
    ("POST", "/v1/keys/{id}/copy"),
    ("POST", "/v1/keys/{id}/revoke"),
    ("POST", "/v1/keys/{id}/rotate"),
    ("GET", "/v1/members"),
    ("POST", "/v1/members/{id}/remove"),
    ("POST", "/v1/invitations"),
    ("POST", "/v1/invitations/accept"),
    ("GET", "/v1/invitations"),
    ("DELETE", "/v1/invitations/{id}"),
    ("GET", "/v1/devices"),
    ("GET", "/v1/devices/{id}"),
    ("GET", "/v1/devices/{id}/reports"),
    ("GET", "/v1/audit"),
    ("POST", "/v1/console/signin-links"),
];

const METHODS: [&str; 5] = ["GET", "POST", "PUT", "PATCH", "DELETE"];

/// (METHOD, path) of every operation in the served document.
async fn documented(api: &Api) -> BTreeSet<(String, String)> {
    let (status, body) = api.call(Method::GET, "/v1/openapi.json", None, None).await;
    assert_eq!(status, StatusCode::OK);
    let doc: serde_json::Value = serde_json::from_slice(&body).unwrap();
    assert!(
        doc["openapi"].as_str().unwrap().starts_with("3."),
        "{}",
        doc["openapi"]
    );
    let mut ops = BTreeSet::new();
    for (path, item) in doc["paths"].as_object().unwrap() {
        for (method, _) in item.as_object().unwrap() {
            if METHODS.contains(&method.to_uppercase().as_str()) {
                ops.insert((method.to_uppercase(), path.clone()));
            }
        }
    }
    ops
}

/// A concrete path for a template: well-formed ids that exist nowhere.
fn concrete(template: &str) -> String {
    template.replace("{id}", "AAAAAAAAAAAA")
}

/// True when the router's fallbacks answered: the route does not exist.
fn unrouted(status: StatusCode, body: &[u8]) -> bool {
    status == StatusCode::METHOD_NOT_ALLOWED
        || (status == StatusCode::NOT_FOUND
            && serde_json::from_slice::<ErrorBody>(body)
                .is_ok_and(|e| e.message == "no such API endpoint"))
}

#[tokio::test]
async fn every_documented_operation_is_routed_and_no_other_method_is() {
    let api = api().await;
    let ops = documented(&api).await;
    let paths: BTreeSet<&String> = ops.iter().map(|(_, p)| p).collect();
    for path in paths {
        for method in METHODS {
            let (status, body) = api
                .call(
                    method.parse().unwrap(),
                    &concrete(path),
                    Some(&api.owner_key),
                    None,
                )
                .await;
            let is_documented = ops.contains(&(method.to_owned(), path.clone()));
            assert_eq!(
                !unrouted(status, &body),
                is_documented,
                "{method} {path} answered {status}: {}",
                String::from_utf8_lossy(&body)
            );
        }
    }
}

#[tokio::test]
async fn every_route_is_documented() {
    let api = api().await;
    let ops = documented(&api).await;
    let contract: BTreeSet<(String, String)> = CONTRACT
        .iter()
        .map(|(m, p)| ((*m).to_owned(), (*p).to_owned()))
        .collect();
    let missing: Vec<_> = contract.difference(&ops).collect();
    assert!(missing.is_empty(), "not documented: {missing:?}");
    // And each of them is served (not a fallback).
    for (method, path) in &contract {
        let (status, body) = api
            .call(method.parse().unwrap(), &concrete(path), None, None)
            .await;
        assert!(!unrouted(status, &body), "{method} {path}: {status}");
    }
    // That no route is served undocumented holds by construction: `router()` takes its
    // routes from `documented_routes().split_for_parts()` alone, and `documented_routes`
    // registers each handler through `routes!`, which documents it.
}

#[tokio::test]
async fn the_document_describes_bodies_and_authentication() {
    let api = api().await;
    let (_, body) = api.call(Method::GET, "/v1/openapi.json", None, None).await;
    let doc: serde_json::Value = serde_json::from_slice(&body).unwrap();
    let schemas = doc["components"]["schemas"].as_object().unwrap();
    for name in [
        "CreateKeyRequest",
        "CreateKeyResponse",
        "KeyListEntry",
        "KeyStatus",
        "CopyKeyResponse",
        "RotateKeyRequest",
        "MemberInfo",
        "InviteRequest",
        "InviteResponse",
        "AcceptInvitationRequest",
        "AcceptInvitationResponse",
        "RemoveMemberResponse",
        "AuditEvent",
        "DeviceInfo",
        "EnrollRequest",
        "EnrollResponse",
        "WhoAmI",
        "ErrorBody",
        "KeyId",
    ] {
        assert!(schemas.contains_key(name), "no schema {name}");
    }
    let scheme = &doc["components"]["securitySchemes"][crate::api::openapi::API_KEY];
    assert_eq!(scheme["scheme"], "bearer");
    // Authenticated operations name the scheme; the open ones do not.
    let security = |method: &str, path: &str| doc["paths"][path][method]["security"].clone();
    assert_eq!(
        security("get", "/v1/keys")[0][crate::api::openapi::API_KEY],
        json!([])
    );
    for (method, path) in [
        ("get", "/healthz"),
        ("get", "/readyz"),
        ("get", "/v1/ca"),
        ("get", "/v1/openapi.json"),
        ("post", "/v1/invitations/accept"),
    ] {
        assert!(security(method, path).is_null(), "{method} {path}");
    }
    let params = &doc["paths"]["/v1/audit"]["get"]["parameters"];
    let names: BTreeSet<&str> = params
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["name"].as_str().unwrap())
        .collect();
    assert_eq!(
        names,
        ["action", "actor", "after", "limit", "since", "target"].into()
    );
    // Rotation's body may be left out (`required` absent means false).
    let rotate_body = &doc["paths"]["/v1/keys/{id}/rotate"]["post"]["requestBody"];
    assert!(rotate_body["content"]["application/json"].is_object());
    assert_ne!(rotate_body["required"], json!(true));
    // The same document is available without a router.
    let built = serde_json::to_value(openapi_document()).unwrap();
    assert_eq!(built, doc);
}

/// Every `$ref` of `node` (with where it is).
fn refs(node: &serde_json::Value, at: &str, out: &mut Vec<(String, String)>) {
    match node {
        serde_json::Value::Object(map) => {
            for (k, v) in map {
                match (k.as_str(), v) {
                    ("$ref", serde_json::Value::String(r)) => out.push((at.to_owned(), r.clone())),
                    _ => refs(v, &format!("{at}/{k}"), out),
                }
            }
        }
        serde_json::Value::Array(items) => {
            for (i, v) in items.iter().enumerate() {
                refs(v, &format!("{at}/{i}"), out);
            }
        }
        _ => {}
    }
}

#[tokio::test]
async fn every_ref_resolves_and_operation_ids_are_unique() {
    let doc = openapi_document();
    assert_eq!(doc["openapi"], "3.1.0");
    let mut found = Vec::new();
    refs(&doc, "#", &mut found);
    assert!(found.len() > 20, "{found:?}");
    for (at, r) in &found {
        let pointer = r.strip_prefix('#').unwrap_or(r);
        assert!(
            doc.pointer(pointer).is_some(),
            "{at}: $ref {r} resolves to nothing"
        );
    }
    let mut ids = BTreeSet::new();
    for (path, item) in doc["paths"].as_object().unwrap() {
        for (method, op) in item.as_object().unwrap() {
            let id = op["operationId"].as_str().unwrap();
            assert!(
                ids.insert(id.to_owned()),
                "{method} {path}: operationId {id} repeats"
            );
        }
    }
}

#[tokio::test]
async fn every_constraint_finds_its_target_and_uses_the_checks_constants() {
    let mut raw = serde_json::to_value(documented_routes().into_openapi()).unwrap();
    let missing = crate::api::openapi::constrain(&mut raw);
    assert!(
        missing.is_empty(),
        "constraints without a target: {missing:?}"
    );
    let doc = openapi_document();
    let schema =
        |name: &str, prop: &str| doc["components"]["schemas"][name]["properties"][prop].clone();
    assert_eq!(
        schema("CreateKeyRequest", "name")["maxLength"],
        keys::MAX_KEY_NAME
    );
    assert_eq!(
        schema("EnrollRequest", "name")["maxLength"],
        enroll::MAX_DEVICE_NAME
    );
    assert_eq!(
        schema("EnrollRequest", "labels")["maxProperties"],
        enroll::MAX_LABELS
    );
    assert_eq!(
        schema("CreateKeyRequest", "expires_in_days")["maximum"],
        keys::MAX_KEY_LIFETIME.whole_days()
    );
    assert_eq!(schema("CreateKeyRequest", "max_uses")["minimum"], 1);
    assert_eq!(
        schema("AcceptInvitationRequest", "token")["pattern"],
        "^heexinv_[0-9A-Za-z]{32}$"
    );
    assert_eq!(
        doc["components"]["schemas"]["CreateKeyRequest"]["additionalProperties"],
        false
    );
}

#[tokio::test]
async fn every_answer_to_a_bad_request_has_a_documented_status() {
    let api = api().await;
    let doc = openapi_document();
    let (status, body) = api
        .call(
            Method::POST,
            "/v1/keys",
            Some(&api.owner_key),
            Some(json!({"name": "enroll only", "scope": "enroll"}).to_string()),
        )
        .await;
    assert_eq!(status, StatusCode::CREATED);
    let created: CreateKeyResponse = serde_json::from_slice(&body).unwrap();
    let enroll_key = created.key.into_exposed();
    let forged = ApiKey::derive(b"not the server secret, not at all", KeyId::generate()).expose();
    let oversized = format!(
        "{{\"name\": \"{}\"}}",
        "x".repeat(heex_proto::api::MAX_BODY_BYTES)
    );
    let mut answers = 0;
    for (path, item) in doc["paths"].as_object().unwrap() {
        for (method, op) in item.as_object().unwrap() {
            let declared = op["responses"].as_object().unwrap();
            let concrete = concrete(path);
            let mut tries: Vec<(Option<&str>, Option<String>)> = vec![
                (None, None),
                (Some(forged.as_str()), None),
                (Some(enroll_key.as_str()), None),
                (Some(api.owner_key.as_str()), None),
            ];
            if op.get("requestBody").is_some() {
                for body in ["{", "[]", "{\"bogus\": 1}", oversized.as_str()] {
                    tries.push((Some(api.owner_key.as_str()), Some(body.to_owned())));
                }
            }
            for (key, body) in tries {
                let (status, bytes) = api
                    .call(method.to_uppercase().parse().unwrap(), &concrete, key, body)
                    .await;
                answers += 1;
                assert!(
                    declared.contains_key(status.as_str()),
                    "{method} {path} answered {status}, not declared ({:?}): {}",
                    declared.keys().collect::<Vec<_>>(),
                    String::from_utf8_lossy(&bytes)
                );
                if !status.is_success() {
                    serde_json::from_slice::<ErrorBody>(&bytes).unwrap_or_else(|e| {
                        panic!("{method} {path} {status}: not an ErrorBody ({e})")
                    });
                }
            }
        }
    }
    assert!(answers > 80, "{answers}");
}
