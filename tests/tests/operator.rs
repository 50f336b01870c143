//! The host's operator, with the data directory in hand, recovers a workspace whose every
//! admin key is gone: `heex-cloud keys create` beside a running `serve` (on either store).
#![allow(clippy::unwrap_used, clippy::expect_used)]

use heex_tests::Cloud;
use serde_json::Value;

fn operator(cloud: &Cloud, args: &[&str]) -> std::process::Output {
    cloud
        .command()
        .args(args)
        .arg("--data-dir")
        .arg(cloud.data())
        .output()
        .unwrap()
}

/// The owner revokes their only key: the workspace is locked out over the API. On the
/// host, `heex-cloud keys create --member` makes a working admin key while `serve` runs,
/// and the audit log shows the operator made it; members are listed, and an unknown member
/// gets nothing (exit 64, one line).
#[test]
fn a_locked_out_owner_gets_a_key_from_the_host_operator() {
    let cloud = Cloud::start();
    let owner_id = &cloud.owner_key[5..17];
    let (status, body) = cloud.post(
        &format!("/v1/keys/{owner_id}/revoke"),
        &cloud.owner_key,
        &Value::Null,
    );
    assert_eq!(status, 200, "{body}");
    assert_eq!(cloud.get("/v1/keys", &cloud.owner_key).0, 401);

    let out = operator(&cloud, &["members", "list"]);
    assert!(out.status.success(), "{out:?}");
    let listed = String::from_utf8_lossy(&out.stdout);
    assert!(listed.contains("owner@localhost\towner"), "{listed}");

    let out = operator(&cloud, &["keys", "create", "--member", "owner@localhost"]);
    assert!(out.status.success(), "{out:?}");
    let printed = String::from_utf8_lossy(&out.stdout);
    let key = heex_tests::token(&printed, "heex_", heex_proto::apikey::KEY_LEN).unwrap();
    let (status, keys) = cloud.get("/v1/keys", &key);
    assert_eq!(status, 200, "{keys}");
    let (status, audit) = cloud.get("/v1/audit", &key);
    assert_eq!(status, 200, "{audit}");
    let made = audit["events"]
        .as_array()
        .unwrap()
        .iter()
        .find(|e| e["action"] == "key.create" && e["target"] == key[5..17])
        .cloned()
        .unwrap_or_else(|| panic!("no key.create event for the new key: {audit}"));
    assert!(
        made["actor"].as_str().unwrap().starts_with("operator on "),
        "{made}"
    );
    // Its only admin key now lasts 7 days: the owner is told, with what to do.
    let (_, who) = cloud.get("/v1/whoami", &key);
    let warning = who["warning"].as_str().unwrap_or_default();
    assert!(warning.contains("last admin key expires in"), "{who}");
    // The CLI shows it too.
    let home = tempfile::tempdir().unwrap();
    let out = std::process::Command::new(heex_tests::bin("heex"))
        .arg("whoami")
        .env("XDG_CONFIG_HOME", home.path())
        .env("HOME", home.path())
        .env("HEEX_SERVER", &cloud.api_url)
        .env("HEEX_API_KEY", &key)
        .env("HEEX_CA_FINGERPRINT", &cloud.fingerprint)
        .env_remove("HEEX_CA_FILE")
        .output()
        .unwrap();
    let shown = String::from_utf8_lossy(&out.stdout);
    assert!(
        shown.contains("Warning") && shown.contains("expires in"),
        "{out:?}"
    );
    // Never written anywhere but stdout.
    assert!(heex_tests::files_containing(&cloud.data(), &key[17..]).is_empty());

    let out = operator(
        &cloud,
        &["keys", "create", "--member", "nobody@example.com"],
    );
    assert_eq!(out.status.code(), Some(64));
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(err.trim().lines().count(), 1, "{err}");
    assert!(err.contains("not a current member"), "{err}");
}
