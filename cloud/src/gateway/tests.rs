//! Gateway tests over real TCP and TLS, with an in-test device directory and test PKI.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use heex_pki::test_kit::TestCa;
use heex_pki::{DeviceCertificate, IdentityError};
use heex_proto::api::Facts;
use heex_proto::frame::{self, CloseReason, Message};
use heex_proto::{DeviceId, WorkspaceId};
use rcgen::{KeyPair, SanType};
use rustls::crypto::ring;
use rustls::{ClientConfig, RootCertStore};
use rustls_pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer, ServerName};
use time::OffsetDateTime;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::task::JoinHandle;
use tokio_rustls::client::TlsStream;
use tokio_rustls::TlsConnector;
use tokio_util::sync::CancellationToken;

use super::frames::FrameReader;

use super::*;

// ---------------------------------------------------------------- test PKI

struct Pki {
    ca_der: CertificateDer<'static>,
    kit: TestCa,
}

struct DeviceCert {
    chain: Vec<CertificateDer<'static>>,
    key: PrivateKeyDer<'static>,
}

impl Pki {
    fn new() -> Pki {
        let kit = TestCa::new();
        Pki {
            ca_der: kit.ca_der.clone(),
            kit,
        }
    }

    fn gateway_tls(&self) -> GatewayTls {
        let (server_chain, server_key) = self.kit.server(&["127.0.0.1"]);
        GatewayTls {
            server_cert: None,
            ca_der: self.ca_der.clone(),
            server_chain,
            server_key,
        }
    }

    /// A device certificate with `cn` as CN and a SPIFFE SAN for `san_device` in `ws`.
    fn device_cert(&self, cn: &str, ws: &WorkspaceId, san_device: &str) -> DeviceCert {
        let key = KeyPair::generate().unwrap();
        let mut params = TestCa::device_params(cn);
        params.subject_alt_names = vec![SanType::URI(
            format!("spiffe://heex.test/ws/{ws}/device/{san_device}")
                .try_into()
                .unwrap(),
        )];
        let cert = self.kit.sign(&params, &key);
        DeviceCert {
            chain: vec![cert.der().clone()],
            key: PrivatePkcs8KeyDer::from(key.serialize_der()).into(),
        }
    }
}

// ---------------------------------------------------------------- directory

#[derive(Default)]
struct Directory {
    devices: Mutex<HashMap<DeviceId, DeviceStatus>>,
    seen: Mutex<Vec<(DeviceId, Option<Facts>)>>,
    stored: Mutex<Vec<(DeviceId, u64)>>,
    status_reads: Mutex<HashMap<DeviceId, usize>>,
    fail: Mutex<bool>,
    /// Report storage fails (the database out of reach) while set.
    fail_reports: Mutex<bool>,
    /// Connection marks, as the store keeps them.
    marks: Mutex<HashMap<DeviceId, String>>,
    /// Revokes a device (store, then registry, as the API does) right after its record
    /// was read: a revocation landing just after the gateway's device check.
    revoke_after_read: Mutex<Option<SessionRegistry>>,
}

impl Directory {
    fn add(&self, id: &DeviceId, ws: &WorkspaceId, revoked: bool) {
        self.add_with_serial(id, ws, revoked, "");
    }
    fn add_with_serial(&self, id: &DeviceId, ws: &WorkspaceId, revoked: bool, serial: &str) {
        self.devices.lock().unwrap().insert(
            id.clone(),
            DeviceStatus {
                workspace_id: ws.clone(),
                revoked_at: revoked.then(OffsetDateTime::now_utc),
                cert_serial: serial.to_owned(),
                previous_cert: None,
                cert_key: None,
            },
        );
    }
    fn revoke(&self, id: &DeviceId) {
        let mut devices = self.devices.lock().unwrap();
        devices.get_mut(id).unwrap().revoked_at = Some(OffsetDateTime::now_utc());
    }
    /// As a renewal recorded `at` does: `serial` becomes current, the old one previous.
    fn renewed(&self, id: &DeviceId, serial: &str, at: OffsetDateTime) {
        let mut devices = self.devices.lock().unwrap();
        let d = devices.get_mut(id).unwrap();
        let old = std::mem::replace(&mut d.cert_serial, serial.to_owned());
        d.previous_cert = Some((old, at));
    }
    fn seen(&self) -> Vec<(DeviceId, Option<Facts>)> {
        self.seen.lock().unwrap().clone()
    }
    fn stored(&self) -> Vec<(DeviceId, u64)> {
        self.stored.lock().unwrap().clone()
    }
    fn status_reads(&self, id: &DeviceId) -> usize {
        self.status_reads
            .lock()
            .unwrap()
            .get(id)
            .copied()
            .unwrap_or(0)
    }
    fn mark(&self, id: &DeviceId) -> Option<String> {
        self.marks.lock().unwrap().get(id).cloned()
    }
    fn live(&self, id: &DeviceId) -> bool {
        let devices = self.devices.lock().unwrap();
        devices.get(id).is_some_and(|s| s.revoked_at.is_none())
    }
}

impl DeviceDirectory for Directory {
    async fn device_status(&self, id: &DeviceId) -> anyhow::Result<Option<DeviceStatus>> {
        if *self.fail.lock().unwrap() {
            anyhow::bail!("database is on fire");
        }
        *self
            .status_reads
            .lock()
            .unwrap()
            .entry(id.clone())
            .or_default() += 1;
        let status = self.devices.lock().unwrap().get(id).cloned();
        let revoker = self.revoke_after_read.lock().unwrap().clone();
        if let Some(registry) = revoker {
            if status.is_some() {
                self.revoke(id);
                registry.close(id, CloseReason::DeviceRevoked);
            }
        }
        Ok(status)
    }
    async fn record_seen(
        &self,
        id: &DeviceId,
        facts: Option<&Facts>,
        _agent_version: Option<&str>,
        _at: OffsetDateTime,
        connection: &str,
        claim: bool,
    ) -> anyhow::Result<Seen> {
        if !self.live(id) {
            return Ok(Seen::NotLive);
        }
        let mut marks = self.marks.lock().unwrap();
        if !claim && marks.get(id).is_some_and(|c| c != connection) {
            return Ok(Seen::Superseded);
        }
        self.seen.lock().unwrap().push((id.clone(), facts.cloned()));
        marks.insert(id.clone(), connection.to_owned());
        Ok(Seen::Recorded)
    }
    async fn record_disconnected(&self, id: &DeviceId, connection: &str) -> anyhow::Result<()> {
        let mut marks = self.marks.lock().unwrap();
        if marks.get(id).is_some_and(|c| c == connection) {
            marks.remove(id);
        }
        Ok(())
    }
    async fn store_reports(
        &self,
        id: &DeviceId,
        reports: Arc<[(u64, String)]>,
    ) -> anyhow::Result<super::StoredReports> {
        // As the store: decided in the write.
        if !self.live(id) {
            return Err(DeviceNotLive.into());
        }
        if *self.fail_reports.lock().unwrap() {
            anyhow::bail!("the database cannot be reached");
        }
        let highest = reports.iter().map(|r| r.0).max().unwrap_or(0);
        let mut stored = self.stored.lock().unwrap();
        stored.extend(reports.iter().map(|r| (id.clone(), r.0)));
        Ok(super::StoredReports {
            highest,
            conflicts: Vec::new(),
            next_seq: highest + 1,
        })
    }
    async fn highest_report_seq(&self, _id: &DeviceId) -> anyhow::Result<u64> {
        Ok(0)
    }
    async fn record_renewal(
        &self,
        id: &DeviceId,
        from_serial: &str,
        _cert: crate::store::IssuedCert,
    ) -> anyhow::Result<bool> {
        Ok(self
            .devices
            .lock()
            .unwrap()
            .get(id)
            .is_some_and(|s| s.revoked_at.is_none() && s.cert_serial == from_serial))
    }
}

// ---------------------------------------------------------------- harness

struct Gateway {
    addr: SocketAddr,
    pki: Pki,
    ws: WorkspaceId,
    directory: Arc<Directory>,
    registry: SessionRegistry,
    shutdown: CancellationToken,
    task: JoinHandle<anyhow::Result<()>>,
}

fn fast_options() -> GatewayOptions {
    GatewayOptions {
        handshake_timeout: Duration::from_secs(2),
        hello_timeout: Duration::from_secs(2),
        idle_timeout: Duration::from_secs(5),
        write_timeout: Duration::from_secs(2),
        max_handshakes: 8,
        seen_interval: Duration::from_secs(3600),
        shutdown_grace: Duration::from_secs(2),
        ..GatewayOptions::default()
    }
}

async fn start(options: GatewayOptions) -> Gateway {
    let pki = Pki::new();
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let directory = Arc::new(Directory::default());
    let registry = SessionRegistry::new();
    let shutdown = CancellationToken::new();
    let task = tokio::spawn(serve_with(
        listener,
        pki.gateway_tls(),
        directory.clone(),
        registry.clone(),
        shutdown.clone(),
        options,
    ));
    Gateway {
        addr,
        pki,
        ws: WorkspaceId::generate(),
        directory,
        registry,
        shutdown,
        task,
    }
}

fn client_config(
    ca: &CertificateDer<'static>,
    cert: Option<DeviceCert>,
    versions: &[&'static rustls::SupportedProtocolVersion],
    alpn: bool,
) -> Arc<ClientConfig> {
    let mut roots = RootCertStore::empty();
    roots.add(ca.clone()).unwrap();
    let builder = ClientConfig::builder_with_provider(Arc::new(ring::default_provider()))
        .with_protocol_versions(versions)
        .unwrap()
        .with_root_certificates(roots);
    let mut config = match cert {
        Some(c) => builder.with_client_auth_cert(c.chain, c.key).unwrap(),
        None => builder.with_no_client_auth(),
    };
    if alpn {
        config.alpn_protocols = vec![heex_proto::ALPN.to_vec()];
    }
    Arc::new(config)
}

struct Client {
    tls: TlsStream<TcpStream>,
    reader: FrameReader,
}

impl Client {
    async fn connect(addr: SocketAddr, config: Arc<ClientConfig>) -> std::io::Result<Client> {
        let tcp = TcpStream::connect(addr).await?;
        let name = ServerName::try_from("127.0.0.1").unwrap();
        let tls = TlsConnector::from(config).connect(name, tcp).await?;
        Ok(Client {
            tls,
            reader: FrameReader::default(),
        })
    }

    async fn send(&mut self, msg: &Message) {
        let bytes = frame::to_frame(msg).unwrap();
        self.tls.write_all(&bytes).await.unwrap();
        self.tls.flush().await.unwrap();
    }

    /// The next frame, or `None` when the connection ends (or errors) first.
    async fn recv(&mut self) -> Option<Message> {
        tokio::time::timeout(Duration::from_secs(5), self.reader.read(&mut self.tls))
            .await
            .expect("no frame within 5 s")
            .ok()
    }

    async fn hello(&mut self) -> Message {
        self.send(&Message::Hello {
            agent_version: "test".into(),
            facts: Facts {
                hostname: Some("robot-7".into()),
                ..Facts::default()
            },
            next_report_seq: 0,
            ca_bundle: None,
        })
        .await;
        self.recv().await.expect("an answer to hello")
    }

    /// True once the peer closed the connection (EOF or error), within 5 s.
    async fn closed(&mut self) -> bool {
        let mut byte = [0u8; 1];
        matches!(
            tokio::time::timeout(Duration::from_secs(5), self.tls.read(&mut byte)).await,
            Ok(Ok(0)) | Ok(Err(_))
        )
    }
}

impl Gateway {
    /// A known, valid device and a client configuration for it.
    fn device(&self) -> (DeviceId, Arc<ClientConfig>) {
        let id = DeviceId::generate();
        let cert = self.pki.device_cert(id.as_str(), &self.ws, id.as_str());
        let serial = serial_of(&cert.chain[0]);
        self.directory
            .add_with_serial(&id, &self.ws, false, &serial);
        (
            id,
            client_config(
                &self.pki.ca_der,
                Some(cert),
                &[&rustls::version::TLS13],
                true,
            ),
        )
    }

    async fn welcomed(&self) -> (DeviceId, Client) {
        let (id, config) = self.device();
        let mut c = Client::connect(self.addr, config).await.unwrap();
        match c.hello().await {
            Message::Welcome { device_id, .. } => assert_eq!(device_id, id),
            other => panic!("expected welcome, got {other:?}"),
        }
        (id, c)
    }

    async fn wait_connected(&self, id: &DeviceId, want: bool) {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
        while self.registry.is_connected(id) != want {
            assert!(
                tokio::time::Instant::now() < deadline,
                "connected never became {want}"
            );
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }
}

fn is_close(msg: &Option<Message>, want: CloseReason) -> bool {
    matches!(msg, Some(Message::Close { reason, .. }) if *reason == want)
}

// ---------------------------------------------------------------- tests

#[tokio::test]
async fn hello_welcome_heartbeat_facts_close() {
    let gw = start(fast_options()).await;
    let (id, mut c) = gw.welcomed().await;
    assert!(gw.registry.is_connected(&id));
    let seen = gw.directory.seen();
    assert_eq!(seen.len(), 1);
    assert_eq!(
        seen[0].1.as_ref().unwrap().hostname.as_deref(),
        Some("robot-7")
    );

    for seq in 1..=3 {
        c.send(&Message::Heartbeat { seq }).await;
        assert_eq!(c.recv().await, Some(Message::HeartbeatAck { seq }));
    }
    // Heartbeats do not hit the store more often than `seen_interval`.
    assert_eq!(gw.directory.seen().len(), 1);

    let facts = Facts {
        hostname: Some("robot-7b".into()),
        ..Facts::default()
    };
    c.send(&Message::Facts {
        facts: facts.clone(),
    })
    .await;
    c.send(&Message::Heartbeat { seq: 4 }).await;
    assert_eq!(c.recv().await, Some(Message::HeartbeatAck { seq: 4 }));
    assert_eq!(gw.directory.seen().last().unwrap().1, Some(facts));

    c.send(&Message::Close {
        reason: CloseReason::Shutdown,
        message: "bye".into(),
    })
    .await;
    gw.wait_connected(&id, false).await;
}

#[tokio::test]
async fn heartbeats_refresh_last_seen_at_most_every_seen_interval() {
    let gw = start(GatewayOptions {
        seen_interval: Duration::from_millis(200),
        ..fast_options()
    })
    .await;
    let (_, mut c) = gw.welcomed().await;
    for seq in 1..=6 {
        c.send(&Message::Heartbeat { seq }).await;
        assert!(c.recv().await.is_some());
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let n = gw.directory.seen().len();
    assert!((3..=5).contains(&n), "{n} records for 600 ms of heartbeats");
}

#[tokio::test]
async fn unknown_and_revoked_devices_are_refused_before_any_frame() {
    let gw = start(fast_options()).await;
    let cfg = |id: &DeviceId| {
        let cert = gw.pki.device_cert(id.as_str(), &gw.ws, id.as_str());
        client_config(&gw.pki.ca_der, Some(cert), &[&rustls::version::TLS13], true)
    };

    let unknown = DeviceId::generate();
    let mut c = Client::connect(gw.addr, cfg(&unknown)).await.unwrap();
    // The client sends nothing: the refusal comes first.
    assert!(is_close(&c.recv().await, CloseReason::DeviceUnknown));
    assert!(c.closed().await);

    let revoked = DeviceId::generate();
    gw.directory.add(&revoked, &gw.ws, true);
    let mut c = Client::connect(gw.addr, cfg(&revoked)).await.unwrap();
    assert!(is_close(&c.recv().await, CloseReason::DeviceRevoked));
    assert!(c.closed().await);
    assert!(!gw.registry.is_connected(&revoked));

    // Same device id, but the certificate claims another workspace.
    let moved = DeviceId::generate();
    gw.directory.add(&moved, &WorkspaceId::generate(), false);
    let mut c = Client::connect(gw.addr, cfg(&moved)).await.unwrap();
    assert!(is_close(&c.recv().await, CloseReason::DeviceUnknown));
    assert!(gw.directory.seen().is_empty());
}

#[tokio::test]
async fn cn_and_spiffe_id_must_agree() {
    let gw = start(fast_options()).await;
    let a = DeviceId::generate();
    let b = DeviceId::generate();
    gw.directory.add(&a, &gw.ws, false);
    gw.directory.add(&b, &gw.ws, false);
    let cert = gw.pki.device_cert(a.as_str(), &gw.ws, b.as_str());
    let config = client_config(&gw.pki.ca_der, Some(cert), &[&rustls::version::TLS13], true);
    let mut c = Client::connect(gw.addr, config).await.unwrap();
    assert!(is_close(&c.recv().await, CloseReason::DeviceUnknown));

    let cert = gw.pki.device_cert("not-a-device", &gw.ws, b.as_str());
    let config = client_config(&gw.pki.ca_der, Some(cert), &[&rustls::version::TLS13], true);
    let mut c = Client::connect(gw.addr, config).await.unwrap();
    assert!(is_close(&c.recv().await, CloseReason::DeviceUnknown));
}

#[tokio::test]
async fn store_failure_asks_the_agent_to_come_back_later() {
    let gw = start(fast_options()).await;
    let (_, config) = gw.device();
    *gw.directory.fail.lock().unwrap() = true;
    let mut c = Client::connect(gw.addr, config).await.unwrap();
    assert!(is_close(&c.recv().await, CloseReason::Shutdown));
}

/// In TLS 1.3 the client learns of a rejected certificate only after its side of the
/// handshake: the refusal shows as a failed connect or a failed first read.
async fn refused(addr: SocketAddr, config: Arc<ClientConfig>) -> bool {
    match Client::connect(addr, config).await {
        Err(_) => true,
        Ok(mut c) => {
            let mut byte = [0u8; 1];
            matches!(
                tokio::time::timeout(Duration::from_secs(5), c.tls.read(&mut byte)).await,
                Ok(Err(_)) | Ok(Ok(0))
            )
        }
    }
}

#[tokio::test]
async fn tls_refusals() {
    let gw = start(fast_options()).await;
    let tls13: &[&'static rustls::SupportedProtocolVersion] = &[&rustls::version::TLS13];

    // No client certificate.
    let none = client_config(&gw.pki.ca_der, None, tls13, true);
    assert!(refused(gw.addr, none).await);

    // A certificate from another CA, for a device the directory knows.
    let other = Pki::new();
    let id = DeviceId::generate();
    gw.directory.add(&id, &gw.ws, false);
    let foreign = other.device_cert(id.as_str(), &gw.ws, id.as_str());
    let config = client_config(&gw.pki.ca_der, Some(foreign), tls13, true);
    assert!(refused(gw.addr, config).await);

    // TLS 1.2 only.
    let cert = gw.pki.device_cert(id.as_str(), &gw.ws, id.as_str());
    let config = client_config(&gw.pki.ca_der, Some(cert), &[&rustls::version::TLS12], true);
    assert!(Client::connect(gw.addr, config).await.is_err());

    // A valid certificate but no heex/1 ALPN.
    let cert = gw.pki.device_cert(id.as_str(), &gw.ws, id.as_str());
    let config = client_config(&gw.pki.ca_der, Some(cert), tls13, false);
    assert!(refused(gw.addr, config).await);

    assert!(gw.directory.seen().is_empty());
    assert!(!gw.registry.is_connected(&id));
    // The gateway still serves good clients.
    let _ = gw.welcomed().await;
}

#[tokio::test]
async fn garbage_or_oversized_frames_cost_only_their_own_session() {
    let gw = start(fast_options()).await;
    let (good_id, mut good) = gw.welcomed().await;

    // Garbage after Welcome.
    let (bad_id, mut bad) = gw.welcomed().await;
    bad.tls
        .write_all(&[0, 0, 0, 5, b'{', b'x', 0xff, 0, 1])
        .await
        .unwrap();
    bad.tls.flush().await.unwrap();
    assert!(is_close(&bad.recv().await, CloseReason::ProtocolError));
    gw.wait_connected(&bad_id, false).await;

    // An oversized length prefix: refused without buffering it.
    let (big_id, mut big) = gw.welcomed().await;
    big.tls.write_all(&u32::MAX.to_be_bytes()).await.unwrap();
    big.tls.flush().await.unwrap();
    assert!(is_close(&big.recv().await, CloseReason::ProtocolError));
    gw.wait_connected(&big_id, false).await;

    // Garbage instead of Hello.
    let (_, config) = gw.device();
    let mut early = Client::connect(gw.addr, config).await.unwrap();
    early
        .tls
        .write_all(b"GET / HTTP/1.1\r\n\r\n")
        .await
        .unwrap();
    early.tls.flush().await.unwrap();
    assert!(is_close(&early.recv().await, CloseReason::ProtocolError));
    assert!(early.closed().await);

    // The well-behaved session is untouched.
    assert!(gw.registry.is_connected(&good_id));
    good.send(&Message::Heartbeat { seq: 9 }).await;
    assert_eq!(good.recv().await, Some(Message::HeartbeatAck { seq: 9 }));
}

#[tokio::test]
async fn unexpected_frames_are_protocol_errors() {
    let gw = start(fast_options()).await;
    let (_, mut c) = gw.welcomed().await;
    // Acks flow from the gateway to the agent, never the other way.
    c.send(&Message::ReportAck { seq: 1 }).await;
    assert!(is_close(&c.recv().await, CloseReason::ProtocolError));

    let (_, config) = gw.device();
    let mut c = Client::connect(gw.addr, config).await.unwrap();
    c.send(&Message::Heartbeat { seq: 1 }).await;
    assert!(is_close(&c.recv().await, CloseReason::ProtocolError));
}

#[tokio::test]
async fn a_hello_with_a_hostile_or_long_agent_version_is_refused() {
    let gw = start(fast_options()).await;
    for version in [
        "1.0\x1b]52;c;ZXZpbA==\x07".to_owned(),
        "9".repeat(heex_proto::facts::MAX_AGENT_VERSION_CHARS + 1),
    ] {
        let (id, config) = gw.device();
        let mut c = Client::connect(gw.addr, config).await.unwrap();
        c.send(&Message::Hello {
            agent_version: version,
            facts: Facts::default(),
            next_report_seq: 0,
            ca_bundle: None,
        })
        .await;
        assert!(is_close(&c.recv().await, CloseReason::ProtocolError));
        assert!(!gw.registry.is_connected(&id));
    }
}

#[tokio::test]
async fn reports_are_acknowledged_cumulatively_and_bad_ones_refused() {
    let gw = start(fast_options()).await;
    let (_, mut c) = gw.welcomed().await;
    for seq in 1..=5 {
        c.send(&Message::Report {
            seq,
            payload: serde_json::json!({ "n": seq }),
        })
        .await;
    }
    // Acks may be coalesced, but they only grow and end at the last report.
    let mut last = 0;
    while last < 5 {
        match c.recv().await {
            Some(Message::ReportAck { seq }) => {
                assert!(seq > last, "ack {seq} after {last}");
                last = seq;
            }
            other => panic!("expected a report ack, got {other:?}"),
        }
    }

    let big = "x".repeat(heex_proto::frame::MAX_REPORT_BYTES);
    c.send(&Message::Report {
        seq: 6,
        payload: serde_json::json!({ "big": big }),
    })
    .await;
    assert!(is_close(&c.recv().await, CloseReason::ProtocolError));

    let (_, mut c) = gw.welcomed().await;
    c.send(&Message::Report {
        seq: 0,
        payload: serde_json::json!({}),
    })
    .await;
    assert!(is_close(&c.recv().await, CloseReason::ProtocolError));
}

/// The store failing while reports arrive (the database out of reach) keeps the session:
/// heartbeats are still answered, the reports stay unacknowledged, and they are stored and
/// acknowledged once the store is back.
#[tokio::test]
async fn reports_wait_for_a_failing_store_without_closing_the_session() {
    let gw = start(fast_options()).await;
    let (_, mut c) = gw.welcomed().await;
    *gw.directory.fail_reports.lock().unwrap() = true;
    for seq in 1..=3 {
        c.send(&Message::Report {
            seq,
            payload: serde_json::json!({ "n": seq }),
        })
        .await;
    }
    tokio::time::sleep(Duration::from_millis(700)).await;
    c.send(&Message::Heartbeat { seq: 7 }).await;
    assert_eq!(c.recv().await, Some(Message::HeartbeatAck { seq: 7 }));
    assert!(gw.directory.stored.lock().unwrap().is_empty());
    *gw.directory.fail_reports.lock().unwrap() = false;
    let mut last = 0;
    while last < 3 {
        match tokio::time::timeout(Duration::from_secs(10), c.recv()).await {
            Ok(Some(Message::ReportAck { seq })) => last = seq,
            other => panic!("expected a report ack, got {other:?}"),
        }
    }
    let stored: Vec<u64> = gw
        .directory
        .stored
        .lock()
        .unwrap()
        .iter()
        .map(|r| r.1)
        .collect();
    assert_eq!(stored, [1, 2, 3]);
}

#[tokio::test]
async fn a_newer_session_replaces_the_older() {
    let gw = start(fast_options()).await;
    let (id, config) = gw.device();
    let mut first = Client::connect(gw.addr, config.clone()).await.unwrap();
    assert!(matches!(first.hello().await, Message::Welcome { .. }));
    let first_session = gw.registry.session_of(&id).unwrap();

    let mut second = Client::connect(gw.addr, config).await.unwrap();
    assert!(matches!(second.hello().await, Message::Welcome { .. }));
    assert!(is_close(&first.recv().await, CloseReason::Replaced));
    assert!(first.closed().await);

    let second_session = gw.registry.session_of(&id).unwrap();
    assert_ne!(first_session, second_session);
    second.send(&Message::Heartbeat { seq: 1 }).await;
    assert_eq!(second.recv().await, Some(Message::HeartbeatAck { seq: 1 }));
    assert!(gw.registry.is_connected(&id));
}

/// Waits until `cond` holds (5 s at most).
async fn eventually(what: &str, cond: impl Fn() -> bool) {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
    while !cond() {
        assert!(tokio::time::Instant::now() < deadline, "never: {what}");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

#[tokio::test]
async fn the_connection_mark_is_the_live_sessions_and_goes_with_it() {
    let gw = start(fast_options()).await;
    let (id, config) = gw.device();
    assert_eq!(gw.directory.mark(&id), None);
    let mut first = Client::connect(gw.addr, config.clone()).await.unwrap();
    assert!(matches!(first.hello().await, Message::Welcome { .. }));
    // Written before the Welcome.
    let first_mark = gw.directory.mark(&id).expect("marked at hello");

    let mut second = Client::connect(gw.addr, config).await.unwrap();
    assert!(matches!(second.hello().await, Message::Welcome { .. }));
    let second_mark = gw.directory.mark(&id).expect("marked at hello");
    assert_ne!(first_mark, second_mark, "each session has its own name");
    assert!(is_close(&first.recv().await, CloseReason::Replaced));
    assert!(first.closed().await);
    // The replaced session's end does not clear the live one's mark.
    second.send(&Message::Heartbeat { seq: 1 }).await;
    assert_eq!(second.recv().await, Some(Message::HeartbeatAck { seq: 1 }));
    tokio::time::sleep(Duration::from_millis(100)).await;
    assert_eq!(gw.directory.mark(&id), Some(second_mark));

    drop(second);
    eventually("the mark is cleared when the session ends", || {
        gw.directory.mark(&id).is_none()
    })
    .await;
}

#[tokio::test]
async fn registry_close_drops_the_live_session() {
    let gw = start(fast_options()).await;
    let (id, mut c) = gw.welcomed().await;
    assert!(gw.registry.close(&id, CloseReason::DeviceRevoked));
    assert!(is_close(&c.recv().await, CloseReason::DeviceRevoked));
    assert!(c.closed().await);
    assert!(!gw.registry.is_connected(&id));
}

#[tokio::test]
async fn silent_sessions_are_dropped() {
    let gw = start(GatewayOptions {
        idle_timeout: Duration::from_millis(300),
        hello_timeout: Duration::from_millis(300),
        ..fast_options()
    })
    .await;
    let (id, mut c) = gw.welcomed().await;
    assert!(c.closed().await);
    gw.wait_connected(&id, false).await;

    // Connected but never says Hello.
    let (_, config) = gw.device();
    let mut mute = Client::connect(gw.addr, config).await.unwrap();
    assert!(mute.closed().await);
}

#[tokio::test]
async fn a_stalled_handshake_does_not_block_others() {
    let gw = start(GatewayOptions {
        max_handshakes: 2,
        handshake_timeout: Duration::from_millis(500),
        ..fast_options()
    })
    .await;
    // Two connections that never speak TLS hold both handshake slots until they time out.
    let _a = TcpStream::connect(gw.addr).await.unwrap();
    let _b = TcpStream::connect(gw.addr).await.unwrap();
    let started = tokio::time::Instant::now();
    let _ = gw.welcomed().await;
    assert!(started.elapsed() < Duration::from_secs(3));
}

#[tokio::test]
async fn shutdown_closes_every_session_and_returns() {
    let gw = start(fast_options()).await;
    let mut clients = Vec::new();
    for _ in 0..5 {
        clients.push(gw.welcomed().await);
    }
    assert_eq!(gw.registry.connected_count(), 5);
    gw.shutdown.cancel();
    for (_, c) in &mut clients {
        assert!(is_close(&c.recv().await, CloseReason::Shutdown));
    }
    let r = tokio::time::timeout(Duration::from_secs(5), gw.task).await;
    r.expect("serve returns").unwrap().unwrap();
    assert_eq!(gw.registry.connected_count(), 0);
    assert!(TcpStream::connect(gw.addr).await.is_err());
}

#[test]
fn identity_is_read_from_cn_and_spiffe() {
    let pki = Pki::new();
    let ws = WorkspaceId::generate();
    let id = DeviceId::generate();
    let cert = pki.device_cert(id.as_str(), &ws, id.as_str());
    let spiffe = DeviceCertificate::parse(&cert.chain[0]).unwrap().spiffe;
    assert_eq!(spiffe.device(), &id);
    assert_eq!(spiffe.workspace(), &ws);

    let other = DeviceId::generate();
    let cert = pki.device_cert(id.as_str(), &ws, other.as_str());
    assert!(matches!(
        DeviceCertificate::parse(&cert.chain[0]),
        Err(IdentityError::Mismatch { .. })
    ));
    assert!(matches!(
        DeviceCertificate::parse(&CertificateDer::from(vec![1, 2, 3])),
        Err(IdentityError::Unparsable(_))
    ));
}

/// The serial of a certificate, as the cloud records it.
fn serial_of(der: &CertificateDer<'_>) -> String {
    heex_pki::Certificate::parse(der).unwrap().serial
}

fn rss_kib() -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap();
    let line = status.lines().find(|l| l.starts_with("VmRSS:")).unwrap();
    line.split_whitespace().nth(1).unwrap().parse().unwrap()
}

/// Memory of idle sessions. The clients live in this process too, so the figure covers
/// both ends of each session: an upper bound for the gateway's share. Run with
/// `cargo test -p heex-cloud gateway::tests::idle_session_memory -- --ignored --nocapture`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "measurement; prints figures"]
async fn idle_session_memory() {
    const N: usize = 3000;
    let gw = start(GatewayOptions {
        max_handshakes: 64,
        idle_timeout: Duration::from_secs(600),
        ..fast_options()
    })
    .await;
    let configs: Vec<_> = (0..N).map(|_| gw.device()).collect();
    let before = rss_kib();
    let mut clients = Vec::with_capacity(N);
    for (_, config) in configs {
        let mut c = Client::connect(gw.addr, config).await.unwrap();
        assert!(matches!(c.hello().await, Message::Welcome { .. }));
        clients.push(c);
    }
    assert_eq!(gw.registry.connected_count(), N);
    tokio::time::sleep(Duration::from_millis(500)).await;
    let after = rss_kib();
    println!(
        "{N} idle sessions: RSS +{} KiB, {} KiB per session (gateway and client ends together)",
        after - before,
        (after - before) as f64 / N as f64
    );
    assert_eq!(gw.registry.connected_count(), N);
}

/// Every idle session holds its task for as long as it is connected, and a task is as large
/// as the largest state its future can be in. Rarely taken steps run in their own
/// allocations (see `session::handshake`); this keeps a new `.await` in the session from
/// quietly growing every idle session (it was 6 KiB before they did). Measured with the
/// cloud's real store as the directory, whose futures are the ones the gateway runs.
#[tokio::test]
async fn session_task_stays_small() {
    let dir = tempfile::tempdir().unwrap();
    let store = Arc::new(crate::store::Store::open_sqlite(&dir.path().join("heex.db")).unwrap());
    let shared = Arc::new(session::Shared {
        directory: store,
        registry: SessionRegistry::new(),
        shutdown: CancellationToken::new(),
        handshakes: Arc::new(tokio::sync::Semaphore::new(1)),
        options: GatewayOptions::default(),
        tls: server_config(Pki::new().gateway_tls()).unwrap(),
    });
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let _client = TcpStream::connect(listener.local_addr().unwrap())
        .await
        .unwrap();
    let (tcp, peer) = listener.accept().await.unwrap();
    let connection = Arc::new(tokio::sync::Semaphore::new(1))
        .acquire_owned()
        .await
        .unwrap();
    let source = limits::Sources::new(1).enter(peer.ip()).unwrap();
    let admission = session::Admission { connection, source };
    let task = session::run(tcp, peer, shared, admission);
    let size = std::mem::size_of_val(&task);
    assert!(
        size <= 1536,
        "the session future is {size} bytes; box the new rarely taken await"
    );
}

/// The session transport carries data both ways in messages of any size, releases every
/// buffer once idle, ends with close_notify, and refuses what is not TLS.
#[tokio::test]
async fn transport_round_trip_holds_no_buffer_while_idle() {
    let pki = Pki::new();
    let config = server_config(pki.gateway_tls()).unwrap();
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let (ws, id) = (WorkspaceId::generate(), DeviceId::generate());
    let cert = pki.device_cert(id.as_str(), &ws, id.as_str());
    let client_tls = client_config(&pki.ca_der, Some(cert), &[&rustls::version::TLS13], true);
    // An echo client: sends back what it reads, then waits for close_notify.
    let client = tokio::spawn(async move {
        let tcp = TcpStream::connect(addr).await.unwrap();
        let name = ServerName::try_from("127.0.0.1").unwrap();
        let mut tls = TlsConnector::from(client_tls)
            .connect(name, tcp)
            .await
            .unwrap();
        let suite = tls.get_ref().1.negotiated_cipher_suite().unwrap().suite();
        let mut buf = vec![0u8; 100_000];
        tls.read_exact(&mut buf).await.unwrap();
        tls.write_all(&buf).await.unwrap();
        tls.flush().await.unwrap();
        let mut rest = Vec::new();
        tls.read_to_end(&mut rest).await.unwrap();
        (rest.len(), suite)
    });
    let (tcp, _) = listener.accept().await.unwrap();
    let mut server = transport::TlsTransport::accept(tcp, config.clone())
        .await
        .unwrap();
    assert_eq!(server.alpn_protocol(), Some(heex_proto::ALPN));
    assert_eq!(server.peer_certificates().map(|c| c.len()), Some(1));
    assert_eq!(server.buffered_capacity(), 0);

    let data: Vec<u8> = (0..100_000u32).map(|i| (i % 251) as u8).collect();
    server.write_all(&data).await.unwrap();
    server.flush().await.unwrap();
    let mut back = vec![0u8; data.len()];
    server.read_exact(&mut back).await.unwrap();
    assert!(back == data, "echoed data differs");
    assert_eq!(server.buffered_capacity(), 0);
    server.shutdown().await.unwrap();
    let (rest, suite) = client.await.unwrap();
    assert_eq!(rest, 0, "the client saw close_notify");
    // The gateway's preference (SHA-256 suites first) wins over the client's default order.
    assert_eq!(suite, rustls::CipherSuite::TLS13_AES_128_GCM_SHA256);

    // Not TLS at all: a clear failure, not a hang.
    let mut raw = TcpStream::connect(addr).await.unwrap();
    raw.write_all(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
        .await
        .unwrap();
    let (tcp, _) = listener.accept().await.unwrap();
    let refused = tokio::time::timeout(
        Duration::from_secs(5),
        transport::TlsTransport::accept(tcp, config),
    )
    .await
    .unwrap();
    assert!(refused.is_err());
}

// ------------------------------------------------- revocation, caps and certificate serials

/// Waits until the gateway read `id`'s record `n` times (the connection passed its device
/// check).
async fn wait_status_reads(gw: &Gateway, id: &DeviceId, n: usize) {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
    while gw.directory.status_reads(id) < n {
        assert!(
            tokio::time::Instant::now() < deadline,
            "device never checked"
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

/// A connection that finished TLS and passed the device check but keeps quiet is still a
/// connection of the device: revoking the device (store, then registry, as the API does)
/// reaches it, and its later Hello is answered with Close, never Welcome.
#[tokio::test]
async fn revocation_reaches_a_connection_waiting_for_hello() {
    let gw = start(GatewayOptions {
        hello_timeout: Duration::from_secs(5),
        ..fast_options()
    })
    .await;
    let (id, config) = gw.device();
    let mut spare = Client::connect(gw.addr, config).await.unwrap();
    wait_status_reads(&gw, &id, 1).await;
    tokio::time::sleep(Duration::from_millis(50)).await;

    gw.directory.revoke(&id);
    gw.registry.close(&id, CloseReason::DeviceRevoked);
    // Closed at once; a Hello sent now is never welcomed.
    let hello = frame::to_frame(&Message::Hello {
        agent_version: "test".into(),
        facts: Facts::default(),
        next_report_seq: 0,
        ca_bundle: None,
    })
    .unwrap();
    let _ = spare.tls.write_all(&hello).await;
    let _ = spare.tls.flush().await;
    let answer = spare.recv().await;
    assert!(is_close(&answer, CloseReason::DeviceRevoked), "{answer:?}");
    assert_eq!(spare.recv().await, None, "nothing after Close");
    assert!(!gw.registry.is_connected(&id));
    assert!(gw.directory.seen().is_empty());
}

/// The revocation lands right after the gateway read the (still live) record: the
/// connection was registered before that read, so the close reaches it.
#[tokio::test]
async fn a_revocation_right_after_the_device_check_is_not_missed() {
    let gw = start(fast_options()).await;
    let (id, config) = gw.device();
    *gw.directory.revoke_after_read.lock().unwrap() = Some(gw.registry.clone());
    let mut c = Client::connect(gw.addr, config).await.unwrap();
    let answer = c.hello().await;
    assert!(
        is_close(&Some(answer.clone()), CloseReason::DeviceRevoked),
        "{answer:?}"
    );
    assert!(!gw.registry.is_connected(&id));
}

/// A session whose device was revoked without the registry hearing of it (e.g. the
/// revocation's close raced the report) stores nothing: the store refuses in its write and
/// the session ends as revoked. Its next recorded heartbeat or facts end it too.
#[tokio::test]
async fn a_revoked_device_stores_no_report_and_is_closed() {
    let gw = start(fast_options()).await;
    let (id, mut c) = gw.welcomed().await;
    c.send(&Message::Report {
        seq: 1,
        payload: serde_json::json!({ "n": 1 }),
    })
    .await;
    assert_eq!(c.recv().await, Some(Message::ReportAck { seq: 1 }));

    gw.directory.revoke(&id);
    c.send(&Message::Report {
        seq: 2,
        payload: serde_json::json!({ "n": 2 }),
    })
    .await;
    let answer = c.recv().await;
    assert!(is_close(&answer, CloseReason::DeviceRevoked), "{answer:?}");
    assert_eq!(gw.directory.stored(), vec![(id.clone(), 1)]);
    gw.wait_connected(&id, false).await;

    // Facts (recorded at once) end a revoked session the same way.
    let (other, mut c) = gw.welcomed().await;
    gw.directory.revoke(&other);
    c.send(&Message::Facts {
        facts: Facts::default(),
    })
    .await;
    let answer = c.recv().await;
    assert!(is_close(&answer, CloseReason::DeviceRevoked), "{answer:?}");
}

/// Sequence numbers the store cannot hold are the agent's protocol error, refused before
/// the store is asked (not a store failure the agent would retry forever).
#[tokio::test]
async fn report_seq_beyond_i64_max_is_a_protocol_error() {
    let gw = start(fast_options()).await;
    let (_, mut c) = gw.welcomed().await;
    let seq = 1u64 << 63;
    c.send(&Message::Report {
        seq,
        payload: serde_json::json!({}),
    })
    .await;
    match c.recv().await {
        Some(Message::Close { reason, message }) => {
            assert_eq!(reason, CloseReason::ProtocolError);
            assert!(
                message.contains(&format!("report seq {seq} exceeds")),
                "{message}"
            );
        }
        other => panic!("expected Close, got {other:?}"),
    }
    assert!(gw.directory.stored().is_empty());
}

/// One certificate opening 50 connections that each announce a 1 MiB frame instead of
/// Hello: only `max_pending_per_device` of them wait; the others are refused at once with a
/// Close saying why. The welcomed session of the device is not affected.
#[tokio::test]
async fn connections_waiting_for_hello_are_capped_per_device() {
    let gw = start(GatewayOptions {
        hello_timeout: Duration::from_secs(10),
        ..fast_options()
    })
    .await;
    let (id, config) = gw.device();
    let mut waiting = Vec::new();
    let mut refused = 0;
    for _ in 0..50 {
        let mut c = Client::connect(gw.addr, config.clone()).await.unwrap();
        let len = heex_proto::frame::MAX_FRAME_LEN as u32;
        c.tls.write_all(&len.to_be_bytes()).await.unwrap();
        c.tls.flush().await.unwrap();
        let next = tokio::time::timeout(Duration::from_millis(300), c.reader.read(&mut c.tls));
        match next.await {
            Err(_) => waiting.push(c),
            Ok(Ok(Message::Close { reason, message })) => {
                assert_eq!(reason, CloseReason::ProtocolError);
                assert!(message.contains("waiting to send hello"), "{message}");
                refused += 1;
            }
            Ok(other) => panic!("unexpected answer {other:?}"),
        }
    }
    assert_eq!(waiting.len(), 4);
    assert_eq!(refused, 46);
    // The waiting ones are still open, and a place frees up when one goes.
    drop(waiting.pop());
    tokio::time::sleep(Duration::from_millis(100)).await;
    let mut c = Client::connect(gw.addr, config).await.unwrap();
    assert!(matches!(c.hello().await, Message::Welcome { .. }));
    assert!(gw.registry.is_connected(&id));
}

/// A TCP connection from `source` that never sends a byte.
async fn silent_from(source: &str, to: SocketAddr) -> std::io::Result<TcpStream> {
    let socket = tokio::net::TcpSocket::new_v4()?;
    socket.bind(format!("{source}:0").parse().unwrap())?;
    socket.connect(to).await
}

/// ~600 silent TCP connections from one address hold no handshake slot and at most
/// `max_unadmitted_per_source` places: real clients from another address still complete
/// TLS and Hello at once (before, 256 of them stalled every handshake for 10 s).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn silent_connections_from_one_address_do_not_keep_devices_out() {
    let gw = start(GatewayOptions::default()).await;
    let mut silent = Vec::new();
    for _ in 0..600 {
        silent.push(silent_from("127.0.0.2", gw.addr).await.unwrap());
    }
    // Past the per-source cap the gateway hangs up at once.
    let mut hung_up = 0;
    for s in &mut silent {
        let mut byte = [0u8; 1];
        if let Ok(Ok(0) | Err(_)) =
            tokio::time::timeout(Duration::from_millis(20), s.read(&mut byte)).await
        {
            hung_up += 1;
        }
    }
    assert!(hung_up >= 600 - 32, "only {hung_up} of 600 closed");

    let started = tokio::time::Instant::now();
    for _ in 0..5 {
        let _ = gw.welcomed().await;
    }
    assert!(
        started.elapsed() < Duration::from_secs(3),
        "devices waited {:?} behind silent connections",
        started.elapsed()
    );
    // The silent ones that were kept are closed after the first-byte deadline.
    tokio::time::sleep(GatewayOptions::default().first_byte_timeout + Duration::from_millis(500))
        .await;
    for s in &mut silent {
        let mut byte = [0u8; 1];
        let r = tokio::time::timeout(Duration::from_millis(500), s.read(&mut byte)).await;
        assert!(
            matches!(r, Ok(Ok(0)) | Ok(Err(_))),
            "a silent connection stayed open"
        );
    }
}

/// Beyond `max_connections` the gateway closes new connections right after accepting them;
/// once one ends, a new one is served.
#[tokio::test]
async fn connections_beyond_the_cap_are_closed_at_once() {
    let gw = start(GatewayOptions {
        max_connections: 2,
        ..fast_options()
    })
    .await;
    let (_, mut a) = gw.welcomed().await;
    let (_, _b) = gw.welcomed().await;
    let (_, config) = gw.device();
    assert!(Client::connect(gw.addr, config.clone()).await.is_err());
    a.send(&Message::Close {
        reason: CloseReason::Shutdown,
        message: "bye".into(),
    })
    .await;
    assert!(a.closed().await);
    tokio::time::sleep(Duration::from_millis(100)).await;
    let mut c = Client::connect(gw.addr, config).await.unwrap();
    assert!(matches!(c.hello().await, Message::Welcome { .. }));
}

/// After a renewal the previous certificate is admitted only during the overlap; older ones
/// and a previous one past the overlap are refused as superseded. The registry shows which
/// serial the live session uses.
#[tokio::test]
async fn only_the_current_certificate_and_briefly_the_previous_one_are_admitted() {
    let gw = start(fast_options()).await;
    let id = DeviceId::generate();
    let cert = |pki: &Pki| pki.device_cert(id.as_str(), &gw.ws, id.as_str());
    let (oldest, previous, current) = (cert(&gw.pki), cert(&gw.pki), cert(&gw.pki));
    let serial = |c: &DeviceCert| serial_of(&c.chain[0]);
    let (oldest_serial, previous_serial, current_serial) =
        (serial(&oldest), serial(&previous), serial(&current));
    gw.directory
        .add_with_serial(&id, &gw.ws, false, &oldest_serial);
    let config =
        |c: DeviceCert| client_config(&gw.pki.ca_der, Some(c), &[&rustls::version::TLS13], true);
    let (oldest, previous, current) = (config(oldest), config(previous), config(current));
    gw.directory
        .renewed(&id, &previous_serial, OffsetDateTime::now_utc());
    gw.directory
        .renewed(&id, &current_serial, OffsetDateTime::now_utc());

    let mut c = Client::connect(gw.addr, current.clone()).await.unwrap();
    assert!(matches!(c.hello().await, Message::Welcome { .. }));
    assert_eq!(
        gw.registry.session_serial(&id),
        Some(current_serial.clone())
    );

    // Within the overlap the previous certificate still connects...
    let mut p = Client::connect(gw.addr, previous.clone()).await.unwrap();
    assert!(matches!(p.hello().await, Message::Welcome { .. }));
    assert_eq!(
        gw.registry.session_serial(&id),
        Some(previous_serial.clone())
    );
    // ...but may not renew.
    p.send(&Message::RenewRequest {
        csr_pem: "not even a CSR".into(),
    })
    .await;
    let answer = p.recv().await;
    // Refused for what it is, before the request itself is even looked at.
    assert!(
        is_close(&answer, CloseReason::CertificateSuperseded),
        "{answer:?}"
    );

    // The one before is refused before any frame.
    let mut o = Client::connect(gw.addr, oldest).await.unwrap();
    match o.recv().await {
        Some(Message::Close { reason, message }) => {
            assert_eq!(reason, CloseReason::CertificateSuperseded);
            assert!(message.contains(&oldest_serial), "{message}");
        }
        other => panic!("expected Close, got {other:?}"),
    }

    // Past the overlap the previous one is refused too.
    {
        let mut devices = gw.directory.devices.lock().unwrap();
        let d = devices.get_mut(&id).unwrap();
        d.previous_cert = Some((
            previous_serial.clone(),
            OffsetDateTime::now_utc() - time::Duration::minutes(11),
        ));
    }
    let mut p = Client::connect(gw.addr, previous).await.unwrap();
    assert!(is_close(
        &p.recv().await,
        CloseReason::CertificateSuperseded
    ));
    let mut c = Client::connect(gw.addr, current).await.unwrap();
    assert!(matches!(c.hello().await, Message::Welcome { .. }));
}
