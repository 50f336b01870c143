use std::os::unix::fs::PermissionsExt;
use std::path::Path;

use heex_pki::test_kit::TestCa;
use rcgen::{CertificateSigningRequestParams, KeyPair, PublicKeyData, PKCS_ECDSA_P256_SHA256};
use time::Duration as TimeDuration;

use super::*;

struct Ca {
    der: CertificateDer<'static>,
    kit: TestCa,
}

impl Ca {
    fn new() -> Ca {
        let kit = TestCa::named("CA");
        Ca {
            der: kit.ca_der.clone(),
            kit,
        }
    }

    /// Certifies `public` (any key with public data) for `device`, valid from `from` to `to`.
    fn sign(
        &self,
        public: &impl rcgen::PublicKeyData,
        device: &str,
        from: OffsetDateTime,
        to: OffsetDateTime,
    ) -> String {
        let mut params = TestCa::device_params(device);
        params.not_before = from;
        params.not_after = to;
        self.kit.sign(&params, public).pem()
    }

    fn sign_csr(&self, csr_pem: &str, device: &str, to: OffsetDateTime) -> String {
        let csr = CertificateSigningRequestParams::from_pem(csr_pem).unwrap();
        self.sign(
            &csr.public_key,
            device,
            now() - TimeDuration::minutes(5),
            to,
        )
    }
}

fn now() -> OffsetDateTime {
    OffsetDateTime::now_utc().replace_nanosecond(0).unwrap()
}

struct Fixture {
    dir: tempfile::TempDir,
    ca: Ca,
    device: DeviceId,
    files: CredentialFiles,
}

fn fixture() -> Fixture {
    let dir = tempfile::tempdir().unwrap();
    let ca = Ca::new();
    let device = DeviceId::generate();
    let key = KeyPair::generate_for(&PKCS_ECDSA_P256_SHA256).unwrap();
    let cert = ca.sign(
        &key,
        device.as_str(),
        now() - TimeDuration::minutes(5),
        now() + TimeDuration::hours(1),
    );
    let files = CredentialFiles::new(dir.path().join("device.key"), dir.path().join("device.crt"));
    std::fs::write(&files.key, key.serialize_pem()).unwrap();
    std::fs::write(&files.cert, cert).unwrap();
    Fixture {
        dir,
        ca,
        device,
        files,
    }
}

fn read(p: &Path) -> String {
    std::fs::read_to_string(p).unwrap()
}

#[test]
fn renewal_time_is_within_70_to_90_percent() {
    let nb = OffsetDateTime::from_unix_timestamp(1_800_000_000).unwrap();
    let na = nb + TimeDuration::seconds(1000);
    assert_eq!(renewal_time(nb, na, 0.7), nb + TimeDuration::seconds(700));
    assert_eq!(renewal_time(nb, na, 0.9), nb + TimeDuration::seconds(900));
    let mut seen = std::collections::BTreeSet::new();
    for _ in 0..2000 {
        let t = random_renewal_time(nb, na);
        assert!(t >= nb + TimeDuration::seconds(700), "{t}");
        assert!(t <= nb + TimeDuration::seconds(900), "{t}");
        seen.insert((t - nb).whole_seconds() / 50);
    }
    // Spread over the whole window, not one point.
    assert!(seen.len() >= 4, "{seen:?}");
    // Degenerate certificates do not panic.
    assert_eq!(renewal_time(na, nb, 0.8), na);
}

#[test]
fn the_window_starts_when_the_certificate_arrived() {
    let nb = OffsetDateTime::from_unix_timestamp(1_800_000_000).unwrap();
    let na = nb + TimeDuration::seconds(306);
    let got = nb + TimeDuration::seconds(300);
    assert_eq!(lifetime_start(nb, na, Some(got)), got);
    assert_eq!(lifetime_start(nb, na, None), nb);
    assert_eq!(lifetime_start(nb, na, Some(nb - TimeDuration::days(1))), nb);
    assert_eq!(lifetime_start(nb, na, Some(na + TimeDuration::days(1))), na);
    // A 6-second certificate backdated 5 minutes renews 4.2 to 5.4 seconds after arrival,
    // not at once.
    let t = random_renewal_time(lifetime_start(nb, na, Some(got)), na);
    assert!(
        t >= got + TimeDuration::milliseconds(4200) && t <= got + TimeDuration::milliseconds(5400)
    );
}

#[test]
fn delays_and_retries() {
    let t = OffsetDateTime::from_unix_timestamp(1_800_000_000).unwrap();
    assert_eq!(delay_until(t - TimeDuration::seconds(5), t), Duration::ZERO);
    assert_eq!(
        delay_until(t + TimeDuration::seconds(5), t),
        Duration::from_secs(5)
    );
    assert_eq!(retry_delay(t, t + TimeDuration::seconds(6)), MIN_RETRY);
    assert_eq!(
        retry_delay(t, t + TimeDuration::seconds(200)),
        Duration::from_secs(10)
    );
    assert_eq!(retry_delay(t, t + TimeDuration::days(30)), MAX_RETRY);
}

#[tokio::test(start_paused = true)]
async fn renewal_is_requested_when_due_and_retried_later() {
    let f = fixture();
    let mut r = Renewal::new(f.files.clone(), vec![f.ca.der.clone()], f.device.clone()).unwrap();
    let cur = r.current().clone();
    // The window runs from when the certificate file was written.
    let written = OffsetDateTime::from(
        std::fs::metadata(&f.files.cert)
            .unwrap()
            .modified()
            .unwrap(),
    );
    let start = lifetime_start(cur.not_before, cur.not_after, Some(written));
    let life = cur.not_after - start;
    assert!(r.due() >= start + life * 0.7 && r.due() <= start + life * 0.9);
    // Paused time: sleeping until the due instant returns at once and exactly then.
    let start = tokio::time::Instant::now();
    let wait = delay_until(r.due(), now());
    tokio::time::sleep(wait).await;
    let slept = tokio::time::Instant::now() - start;
    assert!(
        slept >= wait && slept <= wait + Duration::from_millis(2),
        "{slept:?}"
    );
    let at = now();
    let csr = r.request(at).unwrap();
    assert!(csr.contains("CERTIFICATE REQUEST"));
    // Unanswered: tried again a retry delay later, not in a tight loop.
    let start = lifetime_start(cur.not_before, cur.not_after, Some(now()));
    let retry = retry_delay(start, cur.not_after);
    assert!(r.due() >= at + retry - TimeDuration::seconds(1) && r.due() <= at + retry);
}

#[test]
fn renewal_installs_a_fresh_key_and_certificate() {
    let f = fixture();
    let old_key = read(&f.files.key);
    let old_cert = read(&f.files.cert);
    let mut r = Renewal::new(f.files.clone(), vec![f.ca.der.clone()], f.device.clone()).unwrap();
    let csr = r.request(now()).unwrap();
    let cert =
        f.ca.sign_csr(&csr, f.device.as_str(), now() + TimeDuration::hours(2));
    let renewed = r.complete(&cert, now()).unwrap().clone();
    assert!(renewed.not_after > now() + TimeDuration::minutes(90));
    assert_ne!(read(&f.files.key), old_key);
    assert_ne!(read(&f.files.cert), old_cert);
    assert!(pair_matches(&f.files.key, &f.files.cert));
    assert!(!f.files.key_new().exists() && !f.files.cert_new().exists());
    assert_eq!(
        std::fs::metadata(&f.files.key)
            .unwrap()
            .permissions()
            .mode()
            & 0o777,
        0o600
    );
    // A second response without a request is refused.
    assert!(matches!(
        r.complete(&cert, now()),
        Err(RenewError::NotRequested)
    ));
}

#[test]
fn bad_renewed_certificates_are_refused_and_the_old_pair_stays() {
    let f = fixture();
    let old_key = read(&f.files.key);
    let other_ca = Ca::new();
    let later = now() + TimeDuration::hours(2);
    type MakeCert<'a> = Box<dyn Fn(&str) -> String + 'a>;
    let cases: Vec<(&str, MakeCert)> = vec![
        (
            "other CA",
            Box::new(|csr| other_ca.sign_csr(csr, f.device.as_str(), later)),
        ),
        (
            "other device",
            Box::new(|csr| f.ca.sign_csr(csr, DeviceId::generate().as_str(), later)),
        ),
        (
            "other key",
            Box::new(|_| {
                let k = KeyPair::generate_for(&PKCS_ECDSA_P256_SHA256).unwrap();
                f.ca.sign(&k, f.device.as_str(), now(), later)
            }),
        ),
        (
            "expired",
            Box::new(|csr| {
                f.ca.sign_csr(csr, f.device.as_str(), now() - TimeDuration::seconds(1))
            }),
        ),
        ("garbage", Box::new(|_| "not a certificate".to_owned())),
    ];
    for (what, make) in cases {
        let mut r =
            Renewal::new(f.files.clone(), vec![f.ca.der.clone()], f.device.clone()).unwrap();
        let csr = r.request(now()).unwrap();
        let err = r.complete(&make(&csr), now()).unwrap_err();
        assert!(matches!(err, RenewError::Certificate(_)), "{what}: {err}");
        assert_eq!(read(&f.files.key), old_key, "{what}");
        assert!(pair_matches(&f.files.key, &f.files.cert), "{what}");
    }
}

#[test]
fn a_renewed_certificate_from_any_ca_of_the_bundle_is_accepted() {
    let f = fixture();
    let next = Ca::new();
    let later = now() + TimeDuration::hours(2);
    // During a rotation: the new CA first, the old one (which issued the current one) next.
    let bundle = vec![next.der.clone(), f.ca.der.clone()];
    let mut r = Renewal::new(f.files.clone(), bundle.clone(), f.device.clone()).unwrap();
    assert!(r.issued_by(&f.ca.der));
    assert!(!r.issued_by(&next.der));
    for ca in [&next, &f.ca] {
        let csr = r.request(now()).unwrap();
        r.complete(&ca.sign_csr(&csr, f.device.as_str(), later), now())
            .unwrap();
        assert!(pair_matches(&f.files.key, &f.files.cert));
        // The current certificate is now the one from `ca`.
        assert!(r.issued_by(&ca.der));
    }
    assert_eq!(r.bundle(), &bundle[..]);
}

#[test]
fn a_renewed_certificate_from_a_ca_outside_the_bundle_is_refused() {
    let f = fixture();
    let next = Ca::new();
    let stranger = Ca::new();
    let later = now() + TimeDuration::hours(2);
    let mut r = Renewal::new(f.files.clone(), vec![f.ca.der.clone()], f.device.clone()).unwrap();
    let old = (read(&f.files.key), read(&f.files.cert));

    // Not yet in the bundle: refused with the wording naming ca.crt.
    let csr = r.request(now()).unwrap();
    let err = r
        .complete(&next.sign_csr(&csr, f.device.as_str(), later), now())
        .unwrap_err();
    assert!(
        err.to_string()
            .contains("not signed by a CA this device trusts (ca.crt)"),
        "{err}"
    );
    assert_eq!((read(&f.files.key), read(&f.files.cert)), old);

    // Trusted once the bundle holds it; a stranger still is not.
    r.set_bundle(vec![next.der.clone(), f.ca.der.clone()]);
    let csr = r.request(now()).unwrap();
    let err = r
        .complete(&stranger.sign_csr(&csr, f.device.as_str(), later), now())
        .unwrap_err();
    assert!(matches!(err, RenewError::Certificate(_)), "{err}");
    assert_eq!((read(&f.files.key), read(&f.files.cert)), old);
    let csr = r.request(now()).unwrap();
    r.complete(&next.sign_csr(&csr, f.device.as_str(), later), now())
        .unwrap();
    assert!(r.issued_by(&next.der));

    // An empty or unparsable bundle trusts nothing, without panicking.
    r.set_bundle(vec![CertificateDer::from(b"junk".to_vec())]);
    let csr = r.request(now()).unwrap();
    let err = r
        .complete(&next.sign_csr(&csr, f.device.as_str(), later), now())
        .unwrap_err();
    assert!(matches!(err, RenewError::Certificate(_)), "{err}");
    r.set_bundle(Vec::new());
    assert!(!r.issued_by(&CertificateDer::from(b"junk".to_vec())));
}

#[test]
fn the_due_time_moves_forward_never_backward() {
    let f = fixture();
    let mut r = Renewal::new(f.files.clone(), vec![f.ca.der.clone()], f.device.clone()).unwrap();
    let due = r.due();
    assert!(!r.bring_forward(due + TimeDuration::minutes(5)));
    assert_eq!(r.due(), due);
    assert!(!r.bring_forward(due));
    assert_eq!(r.due(), due);
    let earlier = due - TimeDuration::minutes(5);
    assert!(r.bring_forward(earlier));
    assert_eq!(r.due(), earlier);
    assert!(!r.bring_forward(due));
    assert_eq!(r.due(), earlier);
}

#[test]
fn a_random_point_within_a_window() {
    let t = OffsetDateTime::from_unix_timestamp(1_800_000_000).unwrap();
    assert_eq!(random_point_within(t, Duration::ZERO), t);
    let mut seen = std::collections::BTreeSet::new();
    for _ in 0..500 {
        let at = random_point_within(t, Duration::from_secs(100));
        assert!(at >= t && at <= t + TimeDuration::seconds(100), "{at}");
        seen.insert((at - t).whole_seconds() / 10);
    }
    assert!(seen.len() >= 4, "{seen:?}");
    // Absurd windows from a hostile gateway saturate instead of panicking.
    for secs in [u64::MAX, i64::MAX as u64, 1 << 40] {
        assert!(random_point_within(t, Duration::from_secs(secs)) >= t);
    }
}

#[test]
fn a_lagging_clock_accepts_a_certificate_not_yet_valid_locally() {
    let f = fixture();
    let mut r = Renewal::new(f.files.clone(), vec![f.ca.der.clone()], f.device.clone()).unwrap();
    let csr = r.request(now()).unwrap();
    let cert =
        f.ca.sign_csr(&csr, f.device.as_str(), now() + TimeDuration::hours(1));
    // The local clock runs 10 minutes behind the server's: notBefore is "in the future".
    let lagging = now() - TimeDuration::minutes(10);
    r.complete(&cert, lagging).unwrap();
    assert!(pair_matches(&f.files.key, &f.files.cert));
}

/// Stages a renewal like [`CredentialFiles::install`] and stops after `step` of its steps
/// (0: nothing, 1: key.new written, 2: both .new written, 3: cert renamed, 4: key renamed).
fn crash_after(f: &Fixture, step: usize) -> (String, String) {
    let key = KeyPair::generate_for(&PKCS_ECDSA_P256_SHA256).unwrap();
    let cert = f.ca.sign(
        &key,
        f.device.as_str(),
        now() - TimeDuration::minutes(5),
        now() + TimeDuration::hours(2),
    );
    let key_pem = key.serialize_pem();
    if step >= 1 {
        heex_fs::write(
            &f.files.key_new(),
            key_pem.as_bytes(),
            heex_fs::Options::private(),
        )
        .unwrap();
    }
    if step >= 2 {
        heex_fs::write(
            &f.files.cert_new(),
            cert.as_bytes(),
            heex_fs::Options::public(),
        )
        .unwrap();
    }
    if step >= 3 {
        std::fs::rename(f.files.cert_new(), &f.files.cert).unwrap();
    }
    if step >= 4 {
        std::fs::rename(f.files.key_new(), &f.files.key).unwrap();
    }
    (key_pem, cert)
}

#[test]
fn reconcile_leaves_a_matching_pair_after_a_crash_at_every_step() {
    for step in 0..=4 {
        let f = fixture();
        let old = (read(&f.files.key), read(&f.files.cert));
        let (new_key, new_cert) = crash_after(&f, step);
        let outcome = reconcile(&f.files);
        assert!(
            pair_matches(&f.files.key, &f.files.cert),
            "step {step}: {outcome:?}"
        );
        assert!(
            !f.files.key_new().exists() && !f.files.cert_new().exists(),
            "step {step}"
        );
        let now_pair = (read(&f.files.key), read(&f.files.cert));
        match step {
            0 => assert_eq!(outcome, Reconciled::Clean),
            1 | 2 => {
                assert_eq!(outcome, Reconciled::KeptOld, "step {step}");
                assert_eq!(now_pair, old, "step {step}");
            }
            3 => {
                assert_eq!(outcome, Reconciled::CompletedNew);
                assert_eq!(now_pair, (new_key.clone(), new_cert.clone()));
            }
            _ => {
                assert_eq!(outcome, Reconciled::Clean);
                assert_eq!(now_pair, (new_key, new_cert));
            }
        }
        // Idempotent.
        assert_eq!(reconcile(&f.files), Reconciled::Clean);
        drop(f.dir);
    }
}

#[test]
fn reconcile_completes_a_staged_pair_when_the_old_one_is_unusable() {
    let f = fixture();
    let (new_key, new_cert) = crash_after(&f, 2);
    std::fs::write(&f.files.cert, "torn").unwrap();
    assert_eq!(reconcile(&f.files), Reconciled::CompletedNew);
    assert_eq!(read(&f.files.key), new_key);
    assert_eq!(read(&f.files.cert), new_cert);
}

#[test]
fn reconcile_leaves_unrelated_files_alone() {
    let f = fixture();
    std::fs::write(&f.files.cert, "torn").unwrap();
    assert_eq!(reconcile(&f.files), Reconciled::NoMatch);
    assert_eq!(read(&f.files.cert), "torn");
}

/// The public key a CSR (PEM) asks to certify, DER.
fn csr_key(csr_pem: &str) -> Vec<u8> {
    CertificateSigningRequestParams::from_pem(csr_pem)
        .unwrap()
        .public_key
        .der_bytes()
        .to_vec()
}

/// Killed after sending a request (its answer may have been recorded by the cloud and never
/// installed here): the key is on disk, 0600, before the CSR leaves; the restarted agent
/// renews at once and asks for that same key; once an answer is installed the kept key is
/// gone, and the next renewal has a fresh key.
#[test]
fn a_request_s_key_is_kept_on_disk_until_its_answer_is_installed() {
    let f = fixture();
    let bundle = vec![f.ca.der.clone()];
    let mut first = Renewal::new(f.files.clone(), bundle.clone(), f.device.clone()).unwrap();
    assert!(first.due() > now(), "a fresh certificate renews later");
    let csr = first.request(now()).unwrap();
    let pending = f.files.key_pending();
    assert_eq!(
        std::fs::metadata(&pending).unwrap().permissions().mode() & 0o777,
        0o600
    );
    drop(first);

    // The restarted agent: due now, and the same key asked for, as often as it takes.
    let mut again = Renewal::new(f.files.clone(), bundle.clone(), f.device.clone()).unwrap();
    assert!(again.due() <= now() + TimeDuration::seconds(1));
    let repeated = again.request(now()).unwrap();
    assert_eq!(csr_key(&repeated), csr_key(&csr));
    assert_eq!(csr_key(&again.request(now()).unwrap()), csr_key(&csr));

    let cert =
        f.ca.sign_csr(&repeated, f.device.as_str(), now() + TimeDuration::hours(2));
    again.complete(&cert, now()).unwrap();
    assert!(pair_matches(&f.files.key, &f.files.cert));
    assert!(!pending.exists(), "the kept key outlived its renewal");
    let installed = KeyPair::from_pem(&read(&f.files.key)).unwrap();
    assert_eq!(installed.der_bytes(), csr_key(&csr));

    // A kept key left behind after its answer was installed (a crash just then) is the
    // current key: not asked for again, and no early renewal.
    std::fs::write(&pending, read(&f.files.key)).unwrap();
    let mut later = Renewal::new(f.files.clone(), bundle, f.device.clone()).unwrap();
    assert!(later.due() > now());
    let fresh = later.request(now()).unwrap();
    assert_ne!(csr_key(&fresh), csr_key(&csr));
}
