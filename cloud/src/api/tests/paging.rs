//! Paged lists through the router: the cursor convention, device filters, and refusals.

use std::collections::BTreeSet;

use heex_proto::api::{AuditPage, DevicePage, DeviceSummary, KeyPage, MemberPage};

use super::*;

/// Enrolls `n` devices (robot-0…) with the owner's key, site lyon for even ones.
async fn enroll(api: &Api, n: usize) {
    for i in 0..n {
        let site = if i % 2 == 0 { "lyon" } else { "oslo" };
        let body = json!({
            "csr_pem": csr_pem(&PKCS_ECDSA_P256_SHA256),
            "name": format!("robot-{i}"),
            "labels": {"site": site},
        });
        let (status, bytes) = api
            .call(
                Method::POST,
                "/v1/enroll",
                Some(&api.owner_key),
                Some(body.to_string()),
            )
            .await;
        assert_eq!(
            status,
            StatusCode::CREATED,
            "{}",
            String::from_utf8_lossy(&bytes)
        );
    }
}

async fn page(api: &Api, path: &str) -> DevicePage {
    api.json(
        Method::GET,
        path,
        Some(&api.owner_key),
        None,
        StatusCode::OK,
    )
    .await
}

#[tokio::test]
async fn devices_page_by_cursor_and_filter() {
    let api = api().await;
    enroll(&api, 7).await;
    let mut names = Vec::new();
    let mut path = "/v1/devices?limit=3&sort=name".to_owned();
    let mut pages = 0;
    loop {
        let p = page(&api, &path).await;
        pages += 1;
        names.extend(p.devices.into_iter().map(|d| d.name));
        match p.next_after {
            Some(c) => path = format!("/v1/devices?limit=3&sort=name&after={c}"),
            None => break,
        }
    }
    assert_eq!(pages, 3, "7 devices in pages of 3: exactly 3 pages");
    let mut sorted = names.clone();
    sorted.sort();
    assert_eq!(names, sorted);
    assert_eq!(names.len(), 7);

    let lyon = page(&api, "/v1/devices?label=site%3Dlyon").await;
    assert_eq!(lyon.devices.len(), 4);
    assert!(lyon.devices.iter().all(|d| d.labels["site"] == "lyon"));
    assert!(lyon.next_after.is_none());
    let none = page(&api, "/v1/devices?label=site%3Dlyon,site%3Doslo").await;
    assert!(none.devices.is_empty());
    let found = page(&api, "/v1/devices?search=ROBOT-3").await;
    assert_eq!(found.devices.len(), 1);
    assert_eq!(found.devices[0].name, "robot-3");
    let offline = page(&api, "/v1/devices?connected=false&revoked=false").await;
    assert_eq!(offline.devices.len(), 7);
    assert!(page(&api, "/v1/devices?connected=true")
        .await
        .devices
        .is_empty());
    let newest = page(&api, "/v1/devices?sort=-enrolled&limit=1").await;
    assert_eq!(newest.devices.len(), 1);
    assert!(newest.next_after.is_some());

    let summary: DeviceSummary = api
        .json(
            Method::GET,
            "/v1/devices/summary?expiring_within_days=0",
            Some(&api.owner_key),
            None,
            StatusCode::OK,
        )
        .await;
    assert_eq!(
        (summary.total, summary.connected, summary.revoked),
        (7, 0, 0)
    );
    assert_eq!(summary.expiring_soon, 0);
    let summary: DeviceSummary = api
        .json(
            Method::GET,
            "/v1/devices/summary?expiring_within_days=3650",
            Some(&api.owner_key),
            None,
            StatusCode::OK,
        )
        .await;
    assert_eq!(summary.expiring_soon, 7);
}

#[tokio::test]
async fn bad_paging_and_filters_are_400_with_the_fix() {
    let api = api().await;
    enroll(&api, 2).await;
    let by_name = page(&api, "/v1/devices?limit=1&sort=name").await;
    let cursor = by_name.next_after.unwrap();
    let audit: AuditPage = api
        .json(
            Method::GET,
            "/v1/audit?limit=1",
            Some(&api.owner_key),
            None,
            StatusCode::OK,
        )
        .await;
    let audit_cursor = audit.next_after.unwrap();
    // A cursor bound to one order, used with another; one of another list; a tampered one.
    let mut flipped = cursor.clone().into_bytes();
    flipped[3] ^= 0x01;
    let flipped = String::from_utf8(flipped).unwrap();
    for (query, why) in [
        (format!("after={cursor}"), "cursor"),
        (format!("sort=-name&after={cursor}"), "cursor"),
        (format!("sort=name&after={audit_cursor}"), "cursor"),
        (format!("sort=name&after={flipped}"), "cursor"),
        ("after=%00%01".to_owned(), "cursor"),
        ("limit=0".to_owned(), "limit"),
        ("limit=1001".to_owned(), "limit"),
        ("limit=-1".to_owned(), "limit"),
        ("sort=age".to_owned(), "sort"),
        ("label=%3Dlyon".to_owned(), "label selector"),
        ("connected=maybe".to_owned(), "connected"),
        ("cert_expires_before=tomorrow".to_owned(), "RFC 3339"),
        ("key=heex_secret".to_owned(), "key"),
        (format!("search={}", "x".repeat(201)), "search"),
        ("colour=red".to_owned(), "colour"),
    ] {
        let e = api
            .error(
                Method::GET,
                &format!("/v1/devices?{query}"),
                Some(&api.owner_key),
                None,
                StatusCode::BAD_REQUEST,
            )
            .await;
        assert!(e.message.contains(why), "{query}: {}", e.message);
        assert!(!e.message.contains('\n'), "{query}: one line");
    }
    for path in [
        format!("/v1/keys?after={cursor}"),
        format!("/v1/members?after={cursor}"),
        format!("/v1/invitations?after={cursor}"),
        format!("/v1/audit?after={cursor}"),
        "/v1/members?limit=0".to_owned(),
        "/v1/devices/summary?expiring_within_days=4000".to_owned(),
    ] {
        api.error(
            Method::GET,
            &path,
            Some(&api.owner_key),
            None,
            StatusCode::BAD_REQUEST,
        )
        .await;
    }
}

#[tokio::test]
async fn keys_members_and_audit_page_the_same_way() {
    let api = api().await;
    for i in 0..4 {
        api.create_key(&api.owner_key, json!({"name": format!("k{i}")}))
            .await;
    }
    let mut seen = Vec::new();
    let mut after: Option<String> = None;
    loop {
        let path = match &after {
            Some(c) => format!("/v1/keys?limit=2&after={c}"),
            None => "/v1/keys?limit=2".to_owned(),
        };
        let p: KeyPage = api
            .json(
                Method::GET,
                &path,
                Some(&api.owner_key),
                None,
                StatusCode::OK,
            )
            .await;
        seen.extend(p.keys.into_iter().map(|k| k.info.id));
        after = p.next_after;
        if after.is_none() {
            break;
        }
    }
    assert_eq!(seen.len(), 5, "the first key and 4 more");
    assert_eq!(seen.iter().collect::<BTreeSet<_>>().len(), 5);
    let members: MemberPage = api
        .json(
            Method::GET,
            "/v1/members?limit=1",
            Some(&api.owner_key),
            None,
            StatusCode::OK,
        )
        .await;
    assert_eq!(members.members.len(), 1);
    assert!(members.next_after.is_none(), "one member: no next page");
    // Audit: newest first, pages do not overlap.
    let first: AuditPage = api
        .json(
            Method::GET,
            "/v1/audit?limit=2",
            Some(&api.owner_key),
            None,
            StatusCode::OK,
        )
        .await;
    let second: AuditPage = api
        .json(
            Method::GET,
            &format!("/v1/audit?limit=2&after={}", first.next_after.unwrap()),
            Some(&api.owner_key),
            None,
            StatusCode::OK,
        )
        .await;
    assert!(first.events[0].id > first.events[1].id);
    assert!(first.events[1].id > second.events[0].id);
}
