//! Starts the real `heex-cloud` binary and talks to it over real sockets.
#![allow(clippy::unwrap_used, clippy::expect_used, missing_docs)]

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use heex_proto::api::{
    CreateKeyResponse, DeviceInfo, EnrollResponse, ErrorBody, ErrorCode, WhoAmI,
};
use heex_proto::{exit, Fingerprint};
use rcgen::{CertificateParams, KeyPair, PKCS_ECDSA_P256_SHA256};
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::{DigitallySignedStruct, SignatureScheme};
use serde_json::json;

const BIN: &str = env!("CARGO_BIN_EXE_heex-cloud");

/// A running `heex-cloud serve`, killed on drop.
struct Server {
    child: Child,
    data_dir: PathBuf,
    api: String,
    gateway: String,
    owner_key: Option<String>,
    fingerprint: Option<String>,
}

impl Server {
    fn start(data_dir: &Path, extra: &[&str]) -> Server {
        let mut child = Command::new(BIN)
            .arg("serve")
            .arg("--data-dir")
            .arg(data_dir)
            .args(["--listen", "127.0.0.1:0", "--gateway-listen", "127.0.0.1:0"])
            .args(extra)
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let stdout = BufReader::new(child.stdout.take().unwrap());
        let mut server = Server {
            child,
            data_dir: data_dir.to_owned(),
            api: String::new(),
            gateway: String::new(),
            owner_key: None,
            fingerprint: None,
        };
        for line in stdout.lines() {
            let line = line.unwrap();
            if let Some(k) = line.strip_prefix("Owner API key:") {
                server.owner_key = Some(k.trim().to_owned());
            } else if let Some(f) = line.strip_prefix("CA fingerprint:") {
                server.fingerprint = Some(f.trim().to_owned());
            } else if let Some(a) = line.strip_prefix("API listening on ") {
                server.api = a.to_owned();
            } else if let Some(g) = line.strip_prefix("Gateway listening on ") {
                server.gateway = g.to_owned();
                break;
            }
        }
        assert!(
            server.api.starts_with("https://127.0.0.1:"),
            "{}",
            server.api
        );
        assert!(!server.gateway.is_empty(), "server did not start");
        server
    }

    fn ca_pem(&self) -> Vec<u8> {
        std::fs::read(self.data_dir.join("ca.crt")).unwrap()
    }

    fn client(&self, http1: bool) -> reqwest::Client {
        let ca = reqwest::Certificate::from_pem(&self.ca_pem()).unwrap();
        let mut b = reqwest::Client::builder()
            .tls_built_in_root_certs(false)
            .add_root_certificate(ca);
        if http1 {
            b = b.http1_only();
        }
        b.build().unwrap()
    }

    /// The API URL with `localhost` (the server certificate's DNS name).
    fn url(&self, path: &str) -> String {
        format!("{}{path}", self.api.replace("127.0.0.1", "localhost"))
    }

    /// Sends SIGTERM and waits for the exit code.
    fn terminate(mut self) -> i32 {
        let status = Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status()
            .unwrap();
        assert!(status.success());
        let deadline = Instant::now() + Duration::from_secs(15);
        loop {
            if let Some(s) = self.child.try_wait().unwrap() {
                return s.code().unwrap_or(-1);
            }
            assert!(Instant::now() < deadline, "server did not stop on SIGTERM");
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn csr() -> String {
    let key = KeyPair::generate_for(&PKCS_ECDSA_P256_SHA256).unwrap();
    CertificateParams::new(Vec::<String>::new())
        .unwrap()
        .serialize_request(&key)
        .unwrap()
        .pem()
        .unwrap()
}

#[tokio::test]
async fn auto_init_serve_enroll_and_graceful_stop() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("data");
    let server = Server::start(&dir, &["--device-cert-lifetime", "2h"]);

    let key = server
        .owner_key
        .clone()
        .expect("auto-init printed the owner key");
    assert!(key.starts_with("heex_") && key.len() == 55, "{key}");
    let fingerprint = server.fingerprint.clone().unwrap();
    let ca_der = CertificateDer::from_pem_slice(&server.ca_pem()).unwrap();
    assert_eq!(fingerprint, Fingerprint::of_der(&ca_der).to_string());

    for http1 in [true, false] {
        let client = server.client(http1);
        let resp = client
            .get(server.url("/v1/whoami"))
            .bearer_auth(&key)
            .send()
            .await
            .unwrap();
        let want = if http1 {
            reqwest::Version::HTTP_11
        } else {
            reqwest::Version::HTTP_2
        };
        assert_eq!(resp.version(), want);
        let me: WhoAmI = resp.json().await.unwrap();
        assert_eq!(me.email, "owner@localhost");
        assert_eq!(me.workspace_name, "default");
    }

    let client = server.client(false);
    let enroller: CreateKeyResponse = client
        .post(server.url("/v1/keys"))
        .bearer_auth(&key)
        .json(&json!({"name": "fleet", "scope": "enroll"}))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let resp = client
        .post(server.url("/v1/enroll"))
        .bearer_auth(enroller.key.expose())
        .json(&json!({"csr_pem": csr(), "name": "robot-1"}))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 201);
    let enrolled: EnrollResponse = resp.json().await.unwrap();
    let gw_port = server.gateway.rsplit_once(':').unwrap().1;
    assert_eq!(enrolled.gateway, format!("localhost:{gw_port}"));
    let lifetime = enrolled.expires_at - time::OffsetDateTime::now_utc();
    assert!(lifetime > time::Duration::minutes(119) && lifetime <= time::Duration::hours(2));

    let devices: Vec<DeviceInfo> = client
        .get(server.url("/v1/devices"))
        .bearer_auth(&key)
        .send()
        .await
        .unwrap()
        .json::<heex_proto::api::DevicePage>()
        .await
        .unwrap()
        .devices;
    assert_eq!(devices.len(), 1);
    assert_eq!(devices[0].id, enrolled.device_id);

    // Revoking the enrolling key disturbs nothing already enrolled.
    let resp = client
        .post(server.url(&format!("/v1/keys/{}/revoke", enroller.info.id)))
        .bearer_auth(&key)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    let resp = client
        .post(server.url("/v1/enroll"))
        .bearer_auth(enroller.key.expose())
        .json(&json!({"csr_pem": csr(), "name": "robot-2"}))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 401);
    let e: ErrorBody = resp.json().await.unwrap();
    assert_eq!(e.error, ErrorCode::KeyRevoked);

    // Stop while the clients still hold open connections (off the runtime thread, so the
    // clients keep answering): in-flight connections are closed gracefully, quickly.
    let started = Instant::now();
    let code = tokio::task::spawn_blocking(move || server.terminate())
        .await
        .unwrap();
    assert_eq!(code, 0);
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "{:?}",
        started.elapsed()
    );

    // Restart: no second init, same CA, data kept.
    let again = Server::start(&dir, &[]);
    assert!(again.owner_key.is_none(), "init happens once");
    assert_eq!(again.ca_pem(), ca_der_pem(&dir));
    let devices: Vec<DeviceInfo> = again
        .client(true)
        .get(again.url("/v1/devices"))
        .bearer_auth(&key)
        .send()
        .await
        .unwrap()
        .json::<heex_proto::api::DevicePage>()
        .await
        .unwrap()
        .devices;
    assert_eq!(devices.len(), 1);
}

fn ca_der_pem(dir: &Path) -> Vec<u8> {
    std::fs::read(dir.join("ca.crt")).unwrap()
}

/// Records the chain the server presents, then verifies it properly.
#[derive(Debug)]
struct Recording {
    inner: Arc<dyn ServerCertVerifier>,
    presented: Mutex<Vec<CertificateDer<'static>>>,
}

impl ServerCertVerifier for Recording {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        server_name: &ServerName<'_>,
        ocsp: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        *self.presented.lock().unwrap() = intermediates
            .iter()
            .map(|c| c.clone().into_owned())
            .collect();
        self.inner
            .verify_server_cert(end_entity, intermediates, server_name, ocsp, now)
    }
    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.inner.verify_tls12_signature(message, cert, dss)
    }
    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.inner.verify_tls13_signature(message, cert, dss)
    }
    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.inner.supported_verify_schemes()
    }
}

#[tokio::test]
async fn tls_chain_includes_the_ca_for_fingerprint_pinning() {
    let tmp = tempfile::tempdir().unwrap();
    let server = Server::start(&tmp.path().join("data"), &[]);
    let ca_der = CertificateDer::from_pem_slice(&server.ca_pem()).unwrap();
    let mut roots = rustls::RootCertStore::empty();
    roots.add(ca_der.clone()).unwrap();
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let inner = rustls::client::WebPkiServerVerifier::builder_with_provider(
        Arc::new(roots),
        provider.clone(),
    )
    .build()
    .unwrap();
    let recording = Arc::new(Recording {
        inner,
        presented: Mutex::new(Vec::new()),
    });
    let config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .unwrap()
        .dangerous()
        .with_custom_certificate_verifier(recording.clone())
        .with_no_client_auth();
    let connector = tokio_rustls::TlsConnector::from(Arc::new(config));
    let addr = server.api.trim_start_matches("https://").to_owned();
    let tcp = tokio::net::TcpStream::connect(&addr).await.unwrap();
    let name = ServerName::try_from("127.0.0.1").unwrap();
    connector.connect(name, tcp).await.unwrap();
    let presented = recording.presented.lock().unwrap().clone();
    assert!(
        presented.contains(&ca_der),
        "the CA is in the presented chain"
    );
    let fingerprint: Fingerprint = server.fingerprint.clone().unwrap().parse().unwrap();
    assert!(presented
        .iter()
        .any(|c| Fingerprint::of_der(c) == fingerprint));
}

#[test]
fn init_twice_refuses_with_exit_73_in_one_line() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("data");
    let out = Command::new(BIN)
        .args(["init", "--data-dir"])
        .arg(&dir)
        .args([
            "--workspace",
            "robots",
            "--owner",
            "alice@example.com",
            "--hostname",
            "cloud.example",
        ])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(0));
    let stdout = String::from_utf8(out.stdout).unwrap();
    let key_line = stdout
        .lines()
        .find(|l| l.starts_with("Owner API key:"))
        .unwrap();
    let key = key_line.split_whitespace().last().unwrap();
    assert!(key.parse::<heex_proto::ApiKey>().is_ok());
    assert!(stdout
        .lines()
        .any(|l| l.starts_with("CA fingerprint: sha256:")));

    let before = std::fs::read(dir.join("secret")).unwrap();
    let out = Command::new(BIN)
        .args(["init", "--data-dir"])
        .arg(&dir)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(exit::FILE_ERROR));
    let stderr = String::from_utf8(out.stderr).unwrap();
    let error_lines: Vec<_> = stderr
        .lines()
        .filter(|l| l.starts_with("heex-cloud:"))
        .collect();
    assert_eq!(error_lines.len(), 1, "{stderr}");
    assert!(error_lines[0].contains("already initialized"));
    assert_eq!(std::fs::read(dir.join("secret")).unwrap(), before);
}

#[test]
fn usage_errors_exit_64_and_help_exits_0() {
    let out = Command::new(BIN)
        .args(["serve", "--listen", "nowhere"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(exit::USAGE));
    let out = Command::new(BIN).arg("--help").output().unwrap();
    assert_eq!(out.status.code(), Some(0));
    let out = Command::new(BIN).arg("--version").output().unwrap();
    assert_eq!(out.status.code(), Some(0));
}

#[test]
fn port_in_use_exits_69() {
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = taken.local_addr().unwrap().to_string();
    let tmp = tempfile::tempdir().unwrap();
    let out = Command::new(BIN)
        .args(["serve", "--data-dir"])
        .arg(tmp.path().join("d"))
        .args(["--listen", &addr, "--gateway-listen", "127.0.0.1:0"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(exit::UNAVAILABLE));
}
