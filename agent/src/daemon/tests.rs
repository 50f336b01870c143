//! The daemon's handling of a CA bundle sent by the cloud, on a real state directory.

use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::sync::Arc;

use heex_proto::DeviceId;

use super::*;
use heex_pki::test_kit::TestCa;

struct Fixture {
    dir: tempfile::TempDir,
    pki: TestCa,
    config: Config,
    notifier: Notifier,
}

fn fixture() -> Fixture {
    let dir = tempfile::tempdir().unwrap();
    let pki = TestCa::new();
    let device = DeviceId::generate();
    pki.write_device(dir.path(), &device);
    let text = format!(
        "server = \"https://127.0.0.1:1\"\ngateway = \"127.0.0.1:2\"\n\
         device_id = \"{device}\"\nstate_dir = \"{}\"\n",
        dir.path().display()
    );
    let config = Config::parse(&text, Path::new("agent.toml")).unwrap();
    Fixture {
        dir,
        pki,
        config,
        notifier: Notifier::disabled(),
    }
}

/// The daemon's tracker for the fixture, as `run` builds it.
fn tracker(f: &Fixture) -> Tracker<'_> {
    let creds = Credentials::load(&f.config).unwrap();
    let now = OffsetDateTime::now_utc();
    let status = StatusFile::create(
        f.config.status_path(),
        Status {
            state: State::Connected,
            since: now,
            connected_since: Some(now),
            sessions: 1,
            gateway: f.config.gateway.clone(),
            device_id: f.config.device_id.clone(),
            certificate_expires_at: creds.not_after,
            last_heartbeat_ack: None,
            heartbeats_acked: 0,
            last_error: None,
            pid: std::process::id(),
            updated_at: now,
        },
    );
    let renewal = Renewal::new(
        CredentialFiles::new(f.config.key_path(), f.config.cert_path()),
        creds.ca.clone(),
        f.config.device_id.clone(),
    )
    .unwrap();
    Tracker {
        status,
        notifier: &f.notifier,
        gateway: &f.config.gateway,
        config: &f.config,
        renewal: Some(renewal),
        tls: creds.tls.clone(),
        ca_digest: creds.ca_bundle_digest(),
    }
}

fn ca_crt(f: &Fixture) -> String {
    std::fs::read_to_string(f.config.ca_path()).unwrap()
}

fn dir_listing(dir: &Path) -> Vec<String> {
    let mut names: Vec<String> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    names
}

#[test]
fn a_new_bundle_is_written_reloaded_and_schedules_a_renewal() {
    let f = fixture();
    let next = TestCa::new();
    let mut t = tracker(&f);
    let old_tls = t.tls.clone();
    let old_due = t.renewal.as_ref().unwrap().due();
    let before = dir_listing(f.dir.path());

    // The new CA issues device certificates now; the old one is still trusted.
    let start = OffsetDateTime::now_utc();
    let pem = format!("{}{}", next.ca_pem, f.pki.ca_pem);
    t.trust_bundle(pem, Duration::from_secs(60));

    // ca.crt holds exactly the bundle, in order, 0644, written without leftovers.
    let bundle = vec![next.ca_der.clone(), f.pki.ca_der.clone()];
    assert_eq!(
        crate::credentials::parse_ca_bundle(&ca_crt(&f)).unwrap(),
        bundle
    );
    let mode = std::fs::metadata(f.config.ca_path())
        .unwrap()
        .permissions()
        .mode();
    assert_eq!(mode & 0o777, 0o644);
    assert_eq!(dir_listing(f.dir.path()), before);
    // The next connection trusts the new bundle, and announces it.
    let creds = Credentials::load(&f.config).unwrap();
    assert_eq!(creds.ca, bundle);
    assert!(!Arc::ptr_eq(&t.tls, &old_tls));
    assert_eq!(t.ca_digest, crate::credentials::bundle_digest(&bundle));
    // The device certificate is from the old CA: renewal within the minute, never later.
    let renewal = t.renewal.as_ref().unwrap();
    assert_eq!(renewal.bundle(), &bundle[..]);
    assert!(renewal.due() < old_due);
    assert!(renewal.due() >= start.replace_nanosecond(0).unwrap());
    assert!(renewal.due() <= OffsetDateTime::now_utc() + time::Duration::seconds(60));
}

#[test]
fn a_bundle_led_by_the_current_issuer_schedules_no_renewal() {
    let f = fixture();
    let next = TestCa::new();
    let mut t = tracker(&f);
    let due = t.renewal.as_ref().unwrap().due();
    t.trust_bundle(
        format!("{}{}", f.pki.ca_pem, next.ca_pem),
        Duration::from_secs(60),
    );
    assert_eq!(
        Credentials::load(&f.config).unwrap().ca,
        [f.pki.ca_der.clone(), next.ca_der.clone()]
    );
    assert_eq!(t.renewal.as_ref().unwrap().due(), due);
}

#[test]
fn the_bundle_already_trusted_writes_nothing() {
    let f = fixture();
    // Same certificates, other text: a rewrite would show.
    let original = format!("# installed by heex-installer\n{}", f.pki.ca_pem);
    std::fs::write(f.config.ca_path(), &original).unwrap();
    let mut t = tracker(&f);
    let tls = t.tls.clone();
    let due = t.renewal.as_ref().unwrap().due();
    t.trust_bundle(f.pki.ca_pem.clone(), Duration::from_secs(60));
    assert_eq!(ca_crt(&f), original);
    assert!(Arc::ptr_eq(&t.tls, &tls));
    assert_eq!(t.renewal.as_ref().unwrap().due(), due);
}

#[test]
fn invalid_bundles_are_ignored_and_ca_crt_stays() {
    let f = fixture();
    let next = TestCa::new();
    let (leaf, key) = f.pki.device(&f.config.device_id);
    let mut t = tracker(&f);
    let tls = t.tls.clone();
    let digest = t.ca_digest.clone();
    let due = t.renewal.as_ref().unwrap().due();
    let original = ca_crt(&f);
    let bad = [
        String::new(),
        "garbage".to_owned(),
        "-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n".to_owned(),
        "-----BEGIN CERTIFICATE-----\n".to_owned(),
        leaf.clone(),
        format!("{}{leaf}", next.ca_pem),
        format!("{}{key}", next.ca_pem),
        "\u{0}\u{ff}-----BEGIN CERTIFICATE-----\n\u{1}\n".to_owned(),
    ];
    for pem in bad {
        for within in [0, 60, u64::MAX] {
            t.trust_bundle(pem.clone(), Duration::from_secs(within));
            assert_eq!(ca_crt(&f), original, "{pem:?}");
            assert!(Arc::ptr_eq(&t.tls, &tls), "{pem:?}");
            assert_eq!(t.ca_digest, digest);
            assert_eq!(t.renewal.as_ref().unwrap().due(), due);
        }
    }
}

#[test]
fn absurd_renewal_windows_do_not_panic() {
    let f = fixture();
    let next = TestCa::new();
    let mut t = tracker(&f);
    let due = t.renewal.as_ref().unwrap().due();
    t.trust_bundle(next.ca_pem.clone(), Duration::from_secs(u64::MAX));
    // Installed; the renewal never moves later than it was.
    assert_eq!(
        Credentials::load(&f.config).unwrap().ca,
        std::slice::from_ref(&next.ca_der)
    );
    assert!(t.renewal.as_ref().unwrap().due() <= due);
    // And the next bundle is handled as usual, without renewal state.
    t.renewal = None;
    t.trust_bundle(f.pki.ca_pem.clone(), Duration::ZERO);
    assert_eq!(
        Credentials::load(&f.config).unwrap().ca,
        std::slice::from_ref(&f.pki.ca_der)
    );
}

#[test]
fn a_write_failure_keeps_the_current_bundle() {
    let f = fixture();
    let next = TestCa::new();
    let mut t = tracker(&f);
    let tls = t.tls.clone();
    let original = ca_crt(&f);
    // A read-only state directory: the temp file cannot be created (unless running as
    // root, which ignores the mode; then there is nothing to check).
    let dir = f.dir.path();
    std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o555)).unwrap();
    let writable = tempfile::tempfile_in(dir).is_ok();
    t.trust_bundle(next.ca_pem.clone(), Duration::from_secs(60));
    std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o755)).unwrap();
    if !writable {
        assert_eq!(ca_crt(&f), original);
        assert!(Arc::ptr_eq(&t.tls, &tls));
    }
}
