//! End-to-end enrollment: the real `heex-cloud` and `heex-installer` binaries as separate
//! processes on loopback.
//!
//! Besides the happy path, these tests check the installer's promises: the API key is never
//! printed, logged or written; a malformed key never leaves the machine; an untrusted server
//! never receives it; a refused `--force` leaves the previous credentials byte-identical; and
//! the cloud builds device certificates from its own records, whatever the CSR asks for.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::BTreeMap;
use std::fs;
use std::io::Read;
use std::net::{SocketAddr, TcpListener};
use std::path::Path;
use std::process::{Command, Output};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::Duration;

use heex_proto::Fingerprint;
use heex_tests::{files_containing, mode, Cloud, Machine};
use rcgen::{
    BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair,
    PublicKeyData,
};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};
use serde_json::{json, Value};
use x509_parser::extensions::GeneralName;
use x509_parser::oid_registry::OID_X509_EXT_BASIC_CONSTRAINTS;
use x509_parser::prelude::{FromDer, X509Certificate};

const TIMEOUT: Duration = Duration::from_secs(60);

/// Files the installer writes, relative to the machine root.
const WRITTEN: [&str; 4] = [
    "etc/agent.toml",
    "state/device.key",
    "state/device.crt",
    "state/ca.crt",
];

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

/// The installer for `machine` against any `server` URL, pinned to `pin`, with no key source
/// set: callers add one.
fn installer_to(machine: &Machine, server: &str, pin: &str) -> Command {
    let mut cmd = heex_tests::device_command("heex-installer");
    cmd.arg("--server")
        .arg(server)
        .arg("--ca-fingerprint")
        .arg(pin)
        .arg("--config-dir")
        .arg(machine.config_dir())
        .arg("--state-dir")
        .arg(machine.state_dir())
        .env_remove("HEEX_API_KEY")
        .env_remove("HEEX_API_KEY_FILE");
    cmd
}

fn run_installer(cloud: &Cloud, cmd: &mut Command) -> Output {
    cloud.logs.run("installer", cmd, TIMEOUT)
}

fn describe(out: &Output) -> String {
    format!(
        "status {}\n--- stdout\n{}--- stderr\n{}",
        out.status,
        text(&out.stdout),
        text(&out.stderr)
    )
}

fn assert_exit(out: &Output, code: i32) {
    assert_eq!(out.status.code(), Some(code), "{}", describe(out));
}

/// The 32-character secret inside a full key: scanning for it also catches a log that prints
/// the key without its `heex_` prefix or checksum.
fn secret_of(key: &str) -> &str {
    let start = heex_proto::apikey::PREFIX.len() + heex_proto::apikey::ID_LEN;
    &key[start..start + heex_proto::apikey::SECRET_LEN]
}

/// The key (by its secret) appears in no process output and no file of the machine or of the
/// cloud's data directory.
fn assert_key_nowhere(cloud: &Cloud, machine: &Machine, key: &str) {
    let secret = secret_of(key);
    let logs = cloud.logs.all();
    assert!(
        !logs.contains(secret),
        "the API key appears in process output:\n{logs}"
    );
    let on_machine = files_containing(machine.root(), secret);
    assert!(
        on_machine.is_empty(),
        "the API key was written to {on_machine:?}"
    );
    for dir in cloud.stored_dirs() {
        let in_cloud = files_containing(&dir, secret);
        assert!(
            in_cloud.is_empty(),
            "the cloud stored the API key secret in {in_cloud:?}"
        );
    }
}

/// Bytes of every file the installer writes (None where missing).
fn snapshot(machine: &Machine) -> BTreeMap<&'static str, Option<Vec<u8>>> {
    WRITTEN
        .iter()
        .map(|f| (*f, fs::read(machine.root().join(f)).ok()))
        .collect()
}

fn dir_listing(dir: &Path) -> Vec<String> {
    let mut names: Vec<String> = fs::read_dir(dir)
        .map(|it| {
            it.flatten()
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .collect()
        })
        .unwrap_or_default();
    names.sort();
    names
}

fn pem_cert(pem: &[u8]) -> Vec<u8> {
    CertificateDer::from_pem_slice(pem)
        .expect("a PEM certificate")
        .to_vec()
}

/// What the tests check in a device certificate.
#[derive(Debug)]
struct CertFacts {
    common_name: String,
    sans: Vec<String>,
    basic_constraints: Option<(bool, bool)>,
    client_auth: bool,
}

fn cert_facts(der: &[u8]) -> CertFacts {
    let (_, cert) = X509Certificate::from_der(der).expect("certificate parses");
    let common_name = cert
        .subject()
        .iter_common_name()
        .next()
        .and_then(|cn| cn.as_str().ok())
        .unwrap_or_default()
        .to_owned();
    let sans = cert
        .subject_alternative_name()
        .expect("valid SAN extension")
        .map(|ext| {
            ext.value
                .general_names
                .iter()
                .map(|n| match n {
                    GeneralName::URI(u) => format!("URI:{u}"),
                    other => format!("{other:?}"),
                })
                .collect()
        })
        .unwrap_or_default();
    let basic_constraints = cert
        .get_extension_unique(&OID_X509_EXT_BASIC_CONSTRAINTS)
        .expect("at most one basicConstraints")
        .map(|ext| {
            let ca = cert
                .basic_constraints()
                .expect("basicConstraints parses")
                .map(|bc| bc.value.ca)
                .unwrap_or(false);
            (ca, ext.critical)
        });
    let client_auth = cert
        .extended_key_usage()
        .expect("EKU parses")
        .map(|eku| eku.value.client_auth)
        .unwrap_or(false);
    CertFacts {
        common_name,
        sans,
        basic_constraints,
        client_auth,
    }
}

fn openssl(args: &[&str], dir: &Path) -> Output {
    Command::new("openssl")
        .args(args)
        .current_dir(dir)
        .output()
        .expect("the openssl command line tool is installed")
}

fn agent_toml(machine: &Machine) -> toml::Table {
    fs::read_to_string(machine.agent_config())
        .unwrap()
        .parse()
        .unwrap()
}

#[test]
fn installer_enrolls_and_writes_working_credentials() {
    let cloud = Cloud::start();
    let (key, key_id) = cloud.create_key("fleet", "enroll", None);
    let machine = Machine::new();

    let out = run_installer(
        &cloud,
        machine.installer(&cloud, &key).args([
            "--name",
            "robot-1",
            "--label",
            "site=lyon",
            "--label",
            "arm=left",
        ]),
    );
    assert_exit(&out, 0);
    let stdout = text(&out.stdout);
    for step in [
        "Checking API key format… ok",
        &format!(
            "Connecting to {}… ok (CA {})",
            cloud.api_url, cloud.fingerprint
        ),
        "Generating device key (ECDSA P-256)… ok",
        "Enrolling",
        "Writing credentials… ok",
        "SPIFFE ID:    spiffe://",
        "Certificate:  valid until ",
    ] {
        assert!(stdout.contains(step), "missing {step:?} in:\n{stdout}");
    }
    assert!(stdout.contains(&key_id), "the key id is shown:\n{stdout}");

    // Files, modes, config.
    let state = machine.state_dir();
    assert_eq!(mode(&state.join("device.key")), 0o600);
    assert_eq!(mode(&state), 0o700);
    for f in ["device.crt", "ca.crt"] {
        assert!(state.join(f).is_file(), "{f} written");
    }
    let config = agent_toml(&machine);
    let device_id = config["device_id"].as_str().unwrap().to_owned();
    assert!(device_id.starts_with("dev_"));
    assert_eq!(config["server"].as_str(), Some(cloud.api_url.as_str()));
    assert_eq!(
        config["gateway"].as_str(),
        Some(cloud.gateway.to_string().as_str())
    );
    assert_eq!(config["state_dir"].as_str(), Some(state.to_str().unwrap()));
    assert!(stdout.contains(&device_id));

    // ca.crt is the cloud's CA, the one pinned.
    let ca_der = pem_cert(&fs::read(state.join("ca.crt")).unwrap());
    assert_eq!(ca_der, pem_cert(&fs::read(cloud.ca_file()).unwrap()));
    assert_eq!(Fingerprint::of_der(&ca_der).to_string(), cloud.fingerprint);

    // The chain verifies with an independent implementation.
    let verify = openssl(&["verify", "-CAfile", "ca.crt", "device.crt"], &state);
    assert!(
        verify.status.success() && text(&verify.stdout).contains("device.crt: OK"),
        "openssl verify: {}{}",
        text(&verify.stdout),
        text(&verify.stderr)
    );

    // The certificate is the device's identity: CN, SPIFFE URI SAN, clientAuth, not a CA,
    // for the key on disk.
    let cert_der = pem_cert(&fs::read(state.join("device.crt")).unwrap());
    let facts = cert_facts(&cert_der);
    let device = cloud.device(&device_id).expect("device listed");
    let spiffe = device["spiffe_id"].as_str().unwrap();
    assert!(spiffe.starts_with("spiffe://") && spiffe.ends_with(&format!("/device/{device_id}")));
    assert_eq!(facts.common_name, device_id);
    assert_eq!(facts.sans, vec![format!("URI:{spiffe}")]);
    assert!(facts.client_auth, "clientAuth EKU");
    assert!(
        matches!(facts.basic_constraints, None | Some((false, _))),
        "CA:false: {facts:?}"
    );
    let key_pem = fs::read_to_string(state.join("device.key")).unwrap();
    assert!(key_pem.starts_with("-----BEGIN PRIVATE KEY-----"));
    let (_, cert) = X509Certificate::from_der(&cert_der).unwrap();
    assert_eq!(
        KeyPair::from_pem(&key_pem)
            .unwrap()
            .subject_public_key_info(),
        cert.public_key().raw
    );

    // The cloud recorded what the installer sent.
    assert_eq!(device["name"], "robot-1");
    assert_eq!(device["labels"], json!({"site": "lyon", "arm": "left"}));
    assert_eq!(device["enrolled_by_key"], key_id.as_str());
    assert_eq!(cloud.devices().len(), 1);

    assert_key_nowhere(&cloud, &machine, &key);
    assert!(
        dir_listing(&state) == ["ca.crt", "device.crt", "device.key"],
        "no temporary files left: {:?}",
        dir_listing(&state)
    );
}

#[test]
fn rerun_is_a_no_op_and_does_not_spend_the_key() {
    let cloud = Cloud::start();
    let (key, key_id) = cloud.create_key("fleet", "enroll", None);
    let machine = Machine::new();
    // This run trusts the CA file rather than the fingerprint, and reads the key from a file
    // outside the machine's directories.
    let key_dir = tempfile::tempdir().unwrap();
    let key_file = key_dir.path().join("key");
    fs::write(&key_file, format!("{key}\n")).unwrap();
    let with_ca_file = || {
        let mut cmd = heex_tests::device_command("heex-installer");
        cmd.arg("--server")
            .arg(&cloud.api_url)
            .arg("--ca-file")
            .arg(cloud.ca_file())
            .arg("--config-dir")
            .arg(machine.config_dir())
            .arg("--state-dir")
            .arg(machine.state_dir())
            .arg("--name")
            .arg("robot-2")
            .env_remove("HEEX_API_KEY")
            .env("HEEX_API_KEY_FILE", &key_file);
        cmd
    };

    let out = run_installer(&cloud, &mut with_ca_file());
    assert_exit(&out, 0);
    assert!(text(&out.stdout).contains(&format!("CA {}", cloud.fingerprint)));
    let device_id = machine.device_id();
    let before = snapshot(&machine);

    let out = run_installer(&cloud, &mut with_ca_file());
    assert_exit(&out, 0);
    let stdout = text(&out.stdout);
    assert!(
        stdout.contains(&format!(
            "already enrolled as {device_id} (certificate valid until "
        )),
        "{stdout}"
    );
    assert!(
        !stdout.contains("Connecting"),
        "no network on a re-run:\n{stdout}"
    );
    assert_eq!(cloud.devices().len(), 1);
    assert_eq!(snapshot(&machine), before);

    // Same with the fingerprint and a key that has since been revoked: revoking the key never
    // disturbs an enrolled machine.
    cloud.revoke_key(&key_id);
    let out = run_installer(&cloud, &mut machine.installer(&cloud, &key));
    assert_exit(&out, 0);
    assert!(text(&out.stdout).contains("already enrolled"));
    assert_eq!(cloud.devices().len(), 1);
    assert_eq!(snapshot(&machine), before);

    assert_key_nowhere(&cloud, &machine, &key);
}

/// Changes one character of the key's secret part (the checksum then no longer matches).
fn mistype(key: &str) -> String {
    let mut bytes = key.as_bytes().to_vec();
    let i = heex_proto::apikey::PREFIX.len() + heex_proto::apikey::ID_LEN + 3;
    bytes[i] = if bytes[i] == b'x' { b'y' } else { b'x' };
    String::from_utf8(bytes).unwrap()
}

/// A TCP listener that counts the connections made to it.
fn silent_listener() -> (TcpListener, SocketAddr) {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    listener.set_nonblocking(true).unwrap();
    let addr = listener.local_addr().unwrap();
    (listener, addr)
}

#[test]
fn malformed_or_ambiguous_keys_are_refused_before_any_network_io() {
    let cloud = Cloud::start();
    let (key, key_id) = cloud.create_key("fleet", "enroll", None);
    let machine = Machine::new();
    let typo = mistype(&key);

    // Against the real cloud.
    let out = run_installer(&cloud, &mut machine.installer(&cloud, &typo));
    assert_exit(&out, 64);
    let stderr = text(&out.stderr);
    assert!(stderr.contains("checksum does not match"), "{stderr}");
    assert!(!text(&out.stdout).contains("Connecting"));
    assert!(!stderr.contains(secret_of(&typo)) && !stderr.contains(secret_of(&key)));

    // Against a listener that would see any connection at all.
    let (listener, addr) = silent_listener();
    let elsewhere = format!("https://{addr}");
    let out = run_installer(
        &cloud,
        installer_to(&machine, &elsewhere, &cloud.fingerprint).env("HEEX_API_KEY", &typo),
    );
    assert_exit(&out, 64);

    // Two key sources, or none without a terminal: usage errors, also offline.
    let out = run_installer(
        &cloud,
        installer_to(&machine, &elsewhere, &cloud.fingerprint)
            .env("HEEX_API_KEY", &key)
            .arg("--api-key")
            .arg(&key),
    );
    assert_exit(&out, 64);
    let stderr = text(&out.stderr);
    assert!(
        stderr.contains("--api-key") && stderr.contains("$HEEX_API_KEY"),
        "{stderr}"
    );
    let out = run_installer(
        &cloud,
        &mut installer_to(&machine, &elsewhere, &cloud.fingerprint),
    );
    assert_exit(&out, 64);
    assert!(text(&out.stderr).contains("HEEX_API_KEY"));
    assert!(
        listener.accept().is_err(),
        "the installer connected although it had no usable key"
    );

    // Nothing reached the cloud: no device, and the key (same id as the typo) never used.
    assert!(cloud.devices().is_empty());
    assert!(!machine.agent_config().exists());
    let (status, info) = cloud.post(
        &format!("/v1/keys/{key_id}/revoke"),
        &cloud.owner_key,
        &Value::Null,
    );
    assert_eq!(status, 200, "{info}");
    assert!(info["last_used_at"].is_null(), "key was used: {info}");
    assert_key_nowhere(&cloud, &machine, &key);
}

#[test]
fn revoked_and_expired_keys_are_refused_by_the_server() {
    let cloud = Cloud::start();
    let machine = Machine::new();

    let (revoked, revoked_id) = cloud.create_key("old", "enroll", None);
    cloud.revoke_key(&revoked_id);
    let out = run_installer(&cloud, &mut machine.installer(&cloud, &revoked));
    assert_exit(&out, 77);
    let stderr = text(&out.stderr);
    assert!(stderr.contains("revoked"), "{stderr}");
    assert!(stderr.contains(&revoked_id), "{stderr}");
    assert_eq!(stderr.trim().lines().count(), 1, "one line: {stderr}");

    let (expired, _) = cloud.create_key("short", "enroll", Some(1));
    std::thread::sleep(Duration::from_secs(2));
    let out = run_installer(&cloud, &mut machine.installer(&cloud, &expired));
    assert_exit(&out, 77);
    let stderr = text(&out.stderr);
    assert!(stderr.contains("expired"), "{stderr}");

    // A well-formed key this server never issued: the plain answer.
    let unknown = heex_proto::ApiKey::derive(b"another server", heex_proto::KeyId::generate());
    let unknown = unknown.expose();
    let out = run_installer(&cloud, &mut machine.installer(&cloud, &unknown));
    assert_exit(&out, 77);
    assert!(
        text(&out.stderr).contains("does not know this API key"),
        "{}",
        describe(&out)
    );

    assert!(cloud.devices().is_empty());
    assert!(!machine.agent_config().exists());
    assert!(!machine.state_dir().join("device.key").exists());
    for k in [&revoked, &expired, &unknown] {
        assert_key_nowhere(&cloud, &machine, k);
    }
}

/// A TLS server with a certificate of the test's choosing that records every byte of
/// application data it receives.
struct Impostor {
    addr: SocketAddr,
    connections: Arc<AtomicUsize>,
    plaintext: Arc<Mutex<Vec<u8>>>,
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

impl Impostor {
    fn start(chain: Vec<CertificateDer<'static>>, key: PrivateKeyDer<'static>) -> Impostor {
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let config = Arc::new(
            rustls::ServerConfig::builder_with_provider(provider)
                .with_safe_default_protocol_versions()
                .unwrap()
                .with_no_client_auth()
                .with_single_cert(chain, key)
                .unwrap(),
        );
        let (listener, addr) = silent_listener();
        let connections = Arc::new(AtomicUsize::new(0));
        let plaintext = Arc::new(Mutex::new(Vec::new()));
        let stop = Arc::new(AtomicBool::new(false));
        let thread = {
            let (connections, plaintext, stop) =
                (connections.clone(), plaintext.clone(), stop.clone());
            std::thread::spawn(move || {
                while !stop.load(Ordering::Relaxed) {
                    let Ok((mut tcp, _)) = listener.accept() else {
                        std::thread::sleep(Duration::from_millis(10));
                        continue;
                    };
                    connections.fetch_add(1, Ordering::Relaxed);
                    tcp.set_nonblocking(false).unwrap();
                    tcp.set_read_timeout(Some(Duration::from_secs(2))).unwrap();
                    let mut conn = rustls::ServerConnection::new(config.clone()).unwrap();
                    let mut tls = rustls::Stream::new(&mut conn, &mut tcp);
                    let mut buf = [0u8; 4096];
                    while let Ok(n) = tls.read(&mut buf) {
                        if n == 0 {
                            break;
                        }
                        plaintext.lock().unwrap().extend_from_slice(&buf[..n]);
                    }
                }
            })
        };
        Impostor {
            addr,
            connections,
            plaintext,
            stop,
            thread: Some(thread),
        }
    }

    fn url(&self) -> String {
        format!("https://{}", self.addr)
    }

    /// Stops accepting; returns (connections, application bytes received).
    fn finish(mut self) -> (usize, Vec<u8>) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            t.join().unwrap();
        }
        (
            self.connections.load(Ordering::Relaxed),
            self.plaintext.lock().unwrap().clone(),
        )
    }
}

fn test_ca(name: &str) -> (CertificateDer<'static>, Issuer<'static, KeyPair>) {
    let key = KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).unwrap();
    let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
    params.distinguished_name.push(DnType::CommonName, name);
    params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    let der = params.self_signed(&key).unwrap().der().clone();
    (der, Issuer::new(params, key))
}

fn loopback_leaf(
    issuer: &Issuer<'static, KeyPair>,
) -> (CertificateDer<'static>, PrivateKeyDer<'static>) {
    let key = KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).unwrap();
    let mut params =
        CertificateParams::new(vec!["127.0.0.1".to_owned(), "localhost".to_owned()]).unwrap();
    params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
    let cert = params.signed_by(&key, issuer).unwrap().der().clone();
    let key = PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(key.serialize_der()));
    (cert, key)
}

#[test]
fn untrusted_servers_never_receive_the_key() {
    let cloud = Cloud::start();
    let (key, key_id) = cloud.create_key("fleet", "enroll", None);
    let machine = Machine::new();

    // The real cloud, but the wrong pin.
    let wrong = Fingerprint::of_der(b"some other CA").to_string();
    let out = run_installer(
        &cloud,
        installer_to(&machine, &cloud.api_url, &wrong).env("HEEX_API_KEY", &key),
    );
    assert_exit(&out, 69);
    let stderr = text(&out.stderr);
    assert!(
        stderr.contains(&format!(
            "the server's CA does not match --ca-fingerprint {wrong}"
        )) && stderr.contains("refusing to send the API key"),
        "{stderr}"
    );
    assert!(
        stderr.contains(&cloud.fingerprint),
        "says what was presented: {stderr}"
    );

    // An impostor presenting its own CA, pinned against the real one.
    let real_ca = pem_cert(&fs::read(cloud.ca_file()).unwrap());
    let (impostor_ca, impostor_issuer) = test_ca("Heex CA");
    let (leaf, leaf_key) = loopback_leaf(&impostor_issuer);
    let impostor = Impostor::start(
        vec![leaf.clone(), impostor_ca.clone()],
        leaf_key.clone_key(),
    );
    let out = run_installer(
        &cloud,
        installer_to(&machine, &impostor.url(), &cloud.fingerprint).env("HEEX_API_KEY", &key),
    );
    assert_exit(&out, 69);
    assert!(text(&out.stderr).contains("does not match --ca-fingerprint"));
    let (connections, received) = impostor.finish();
    assert!(connections >= 1, "the installer did try the impostor");
    assert!(
        received.is_empty(),
        "impostor received {:?}",
        text(&received)
    );

    // An impostor that copies the real CA certificate into its chain: the pin matches, but the
    // real CA did not sign the impostor's leaf.
    let impostor = Impostor::start(
        vec![leaf.clone(), CertificateDer::from(real_ca)],
        leaf_key.clone_key(),
    );
    let out = run_installer(
        &cloud,
        installer_to(&machine, &impostor.url(), &cloud.fingerprint).env("HEEX_API_KEY", &key),
    );
    assert_exit(&out, 69);
    let stderr = text(&out.stderr);
    assert!(stderr.contains("refusing to send the API key"), "{stderr}");
    let (connections, received) = impostor.finish();
    assert!(connections >= 1);
    assert!(
        received.is_empty(),
        "impostor received {:?}",
        text(&received)
    );

    // Control: pinned to the impostor's own CA, the same server does receive requests, so the
    // two checks above could have failed. (The probe carries no key.)
    let impostor = Impostor::start(vec![leaf, impostor_ca.clone()], leaf_key);
    let impostor_pin = Fingerprint::of_der(&impostor_ca).to_string();
    let out = run_installer(
        &cloud,
        installer_to(&machine, &impostor.url(), &impostor_pin).env("HEEX_API_KEY", &key),
    );
    assert_exit(&out, 69);
    let (_, received) = impostor.finish();
    assert!(
        text(&received).starts_with("GET /healthz"),
        "control impostor got {:?}",
        text(&received)
    );

    // A server that is not there.
    let (listener, addr) = silent_listener();
    drop(listener);
    let out = run_installer(
        &cloud,
        installer_to(&machine, &format!("https://{addr}"), &cloud.fingerprint)
            .env("HEEX_API_KEY", &key),
    );
    assert_exit(&out, 69);
    assert!(
        text(&out.stderr).contains("cannot connect"),
        "{}",
        describe(&out)
    );

    assert!(cloud.devices().is_empty());
    assert!(!machine.agent_config().exists());
    let (status, info) = cloud.post(
        &format!("/v1/keys/{key_id}/revoke"),
        &cloud.owner_key,
        &Value::Null,
    );
    assert_eq!(status, 200, "{info}");
    assert!(info["last_used_at"].is_null(), "key was used: {info}");
    assert_key_nowhere(&cloud, &machine, &key);
}

/// An openssl-made CSR that asks for everything it should not get.
fn evil_csr(dir: &Path) -> String {
    let key = openssl(
        &[
            "ecparam",
            "-genkey",
            "-name",
            "prime256v1",
            "-noout",
            "-out",
            "evil.key",
        ],
        dir,
    );
    assert!(key.status.success(), "{}", text(&key.stderr));
    let req = openssl(
        &[
            "req",
            "-new",
            "-key",
            "evil.key",
            "-subj",
            "/CN=evil",
            "-addext",
            "basicConstraints=critical,CA:TRUE",
            "-addext",
            "subjectAltName=URI:spiffe://evil/x",
            "-out",
            "evil.csr",
        ],
        dir,
    );
    assert!(req.status.success(), "{}", text(&req.stderr));
    fs::read_to_string(dir.join("evil.csr")).unwrap()
}

#[test]
fn the_cloud_builds_certificates_from_its_own_records() {
    let cloud = Cloud::start();
    let (key, _) = cloud.create_key("raw", "enroll", None);
    let dir = tempfile::tempdir().unwrap();

    let csr = evil_csr(dir.path());
    let (status, body) = cloud.post(
        "/v1/enroll",
        &key,
        &json!({"csr_pem": csr, "name": "raw-client", "labels": {}}),
    );
    assert_eq!(status, 201, "{body}");
    let device_id = body["device_id"].as_str().unwrap();
    let spiffe = body["spiffe_id"].as_str().unwrap();
    assert!(!spiffe.contains("evil"));
    let cert_der = pem_cert(body["certificate_pem"].as_str().unwrap().as_bytes());
    let facts = cert_facts(&cert_der);
    assert_eq!(facts.common_name, device_id);
    assert_eq!(facts.sans, vec![format!("URI:{spiffe}")]);
    assert!(
        matches!(facts.basic_constraints, None | Some((false, _))),
        "CA:false: {facts:?}"
    );
    assert!(facts.client_auth);

    // The certificate is for the CSR's key, and verifies under the cloud CA.
    fs::write(
        dir.path().join("device.crt"),
        body["certificate_pem"].as_str().unwrap(),
    )
    .unwrap();
    fs::write(dir.path().join("ca.crt"), body["ca_pem"].as_str().unwrap()).unwrap();
    let verify = openssl(&["verify", "-CAfile", "ca.crt", "device.crt"], dir.path());
    assert!(verify.status.success(), "{}", text(&verify.stderr));
    let cert_pub = openssl(
        &["x509", "-in", "device.crt", "-noout", "-pubkey"],
        dir.path(),
    );
    let key_pub = openssl(&["pkey", "-in", "evil.key", "-pubout"], dir.path());
    assert_eq!(text(&cert_pub.stdout), text(&key_pub.stdout));

    // A CSR whose signature does not verify: flip a bit in the last byte (inside the
    // signature's `s` integer) of a valid DER CSR.
    let der = openssl(
        &[
            "req", "-in", "evil.csr", "-outform", "DER", "-out", "evil.der",
        ],
        dir.path(),
    );
    assert!(der.status.success(), "{}", text(&der.stderr));
    let mut bytes = fs::read(dir.path().join("evil.der")).unwrap();
    let last = bytes.len() - 1;
    bytes[last] ^= 0x01;
    fs::write(dir.path().join("bad.der"), &bytes).unwrap();
    let pem = openssl(
        &[
            "req", "-inform", "DER", "-in", "bad.der", "-outform", "PEM", "-out", "bad.csr",
        ],
        dir.path(),
    );
    assert!(pem.status.success(), "{}", text(&pem.stderr));
    // (openssl 3.0 exits 0 either way; its message tells.)
    let verdict = |csr: &str| {
        let out = openssl(&["req", "-in", csr, "-noout", "-verify"], dir.path());
        format!("{}{}", text(&out.stdout), text(&out.stderr))
    };
    assert!(verdict("evil.csr").contains("verify OK"));
    assert!(
        !verdict("bad.csr").contains("verify OK"),
        "the tampered CSR must not verify"
    );
    let bad = fs::read_to_string(dir.path().join("bad.csr")).unwrap();
    let (status, body) = cloud.post(
        "/v1/enroll",
        &key,
        &json!({"csr_pem": bad, "name": "tampered", "labels": {}}),
    );
    assert_eq!(status, 400, "{body}");
    assert_eq!(cloud.devices().len(), 1);
}

#[test]
fn a_failed_force_leaves_the_previous_credentials_intact() {
    let mut cloud = Cloud::start();
    let (key, _) = cloud.create_key("fleet", "enroll", None);
    let (revoked, revoked_id) = cloud.create_key("old", "enroll", None);
    cloud.revoke_key(&revoked_id);
    let machine = Machine::new();
    let first = machine.enroll(&cloud, &key, "robot-3");
    let before = snapshot(&machine);
    assert!(before.values().all(Option::is_some));
    let listings = (
        dir_listing(&machine.config_dir()),
        dir_listing(&machine.state_dir()),
    );

    let out = run_installer(&cloud, machine.installer(&cloud, &revoked).arg("--force"));
    assert_exit(&out, 77);
    assert!(text(&out.stderr).contains("revoked"));
    assert_eq!(
        snapshot(&machine),
        before,
        "credentials changed by a refused --force"
    );
    assert_eq!(
        (
            dir_listing(&machine.config_dir()),
            dir_listing(&machine.state_dir())
        ),
        listings,
        "no temporary files left behind"
    );

    // Server down: same.
    cloud.kill9();
    let out = run_installer(&cloud, machine.installer(&cloud, &key).arg("--force"));
    assert_exit(&out, 69);
    assert_eq!(snapshot(&machine), before);

    // A successful --force replaces everything, keeps the administrator's settings, and the
    // new key and certificate match.
    cloud.serve();
    machine.configure("heartbeat_interval = \"5s\"");
    // A renewal the old enrollment had in flight: its key means nothing to the new one.
    let pending = machine.state_dir().join("device.key.pending");
    std::fs::write(&pending, before["state/device.key"].as_ref().unwrap()).unwrap();
    let out = run_installer(&cloud, machine.installer(&cloud, &key).arg("--force"));
    assert_exit(&out, 0);
    assert!(!pending.exists(), "the old enrollment's pending key stayed");
    let second = machine.device_id();
    assert_ne!(first, second);
    let after = snapshot(&machine);
    for f in ["state/device.key", "state/device.crt"] {
        assert_ne!(after[f], before[f], "{f} replaced");
    }
    assert_eq!(after["state/ca.crt"], before["state/ca.crt"]);
    assert_eq!(
        agent_toml(&machine)["heartbeat_interval"].as_str(),
        Some("5s")
    );
    assert_eq!(mode(&machine.state_dir().join("device.key")), 0o600);
    let verify = openssl(
        &["verify", "-CAfile", "ca.crt", "device.crt"],
        &machine.state_dir(),
    );
    assert!(verify.status.success());
    assert_eq!(cloud.devices().len(), 2);
    assert_key_nowhere(&cloud, &machine, &key);
    assert_key_nowhere(&cloud, &machine, &revoked);
}
