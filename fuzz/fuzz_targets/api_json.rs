//! JSON intake of the HTTPS API: the request bodies the cloud accepts (enrollment with its
//! facts, keys, invitations) and the facts devices send, from hostile clients.
//!
//! Properties: deserializing never panics; anything accepted serializes and deserializes
//! to the same value (a round trip through the wire form loses nothing).
#![no_main]

use heex_proto::api::{
    AcceptInvitationRequest, CreateKeyRequest, EnrollRequest, Facts, InviteRequest,
    RotateKeyRequest,
};
use libfuzzer_sys::fuzz_target;
use serde::de::DeserializeOwned;
use serde::Serialize;

fuzz_target!(|data: &[u8]| {
    if let Some(facts) = round_trip::<Facts>(data) {
        let again: Facts = serde_json::from_slice(&serde_json::to_vec(&facts).unwrap_or_default())
            .expect("serialized facts parse again");
        assert_eq!(again, facts);
    }
    if let Some(req) = round_trip::<EnrollRequest>(data) {
        if let Some(facts) = req.facts {
            let wire = serde_json::to_vec(&facts).expect("facts serialize");
            let again: Facts = serde_json::from_slice(&wire).expect("facts parse again");
            assert_eq!(again, facts);
        }
    }
    round_trip::<CreateKeyRequest>(data);
    round_trip::<InviteRequest>(data);
    round_trip::<AcceptInvitationRequest>(data);
    round_trip::<RotateKeyRequest>(data);
});

/// Parses `data` as `T`; when accepted, checks that its wire form parses to the same value.
fn round_trip<T: Serialize + DeserializeOwned>(data: &[u8]) -> Option<T> {
    let v: T = serde_json::from_slice(data).ok()?;
    let wire = serde_json::to_vec(&v).expect("an accepted body serializes");
    let again: T = serde_json::from_slice(&wire).expect("a serialized body parses again");
    let (a, b) = (
        serde_json::to_value(&v).expect("to_value"),
        serde_json::to_value(&again).expect("to_value"),
    );
    assert_eq!(a, b, "round trip changed the body");
    Some(v)
}
