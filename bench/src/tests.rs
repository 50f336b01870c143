//! A worker against in-process mTLS servers (a gateway-shaped one and an HTTP one): sessions
//! established with real TLS 1.3 client certificates, heartbeats answered and checked, a
//! server-side restart recovered from.

use std::collections::HashMap;
use std::net::{Ipv4Addr, SocketAddr};
use std::sync::{Arc, Mutex};

use heex_proto::frame::{self, CloseReason, FrameError, Message};
use heex_proto::DeviceId;
use rcgen::KeyPair;
use rustls::crypto::ring;
use rustls::server::WebPkiClientVerifier;
use rustls::{RootCertStore, ServerConfig};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;
use tokio_rustls::TlsAcceptor;
use tokio_util::sync::CancellationToken;

use crate::cli::Peer;
use crate::creds::{self, Device, Meta};
use crate::worker::{self, Event, Job, StormJob};
use heex_pki::test_kit::TestCa;

struct Fixture {
    dir: tempfile::TempDir,
    config: Arc<ServerConfig>,
    /// Client certificate (DER) → device.
    devices: Arc<HashMap<Vec<u8>, DeviceId>>,
}

fn fixture(n: usize) -> Fixture {
    let ca = TestCa::new();
    let (server_chain, server_key) = ca.server(&["127.0.0.1"]);

    let mut devices = Vec::new();
    let mut by_cert = HashMap::new();
    for _ in 0..n {
        let id = DeviceId::generate();
        let key = KeyPair::generate().unwrap();
        let mut params = TestCa::device_params(id.as_str());
        params.subject_alt_names.clear();
        let cert = ca.sign(&params, &key);
        by_cert.insert(cert.der().to_vec(), id.clone());
        devices.push(Device {
            device_id: id.to_string(),
            key_pem: key.serialize_pem(),
            cert_pem: cert.pem(),
        });
    }
    let dir = tempfile::tempdir().unwrap();
    let meta = Meta {
        ca_pem: ca.ca_pem.clone(),
        gateway: "127.0.0.1:1".into(),
    };
    creds::save(dir.path(), &meta, &devices).unwrap();

    let provider = Arc::new(ring::default_provider());
    let mut roots = RootCertStore::empty();
    roots.add(ca.ca_der.clone()).unwrap();
    let verifier = WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider.clone())
        .build()
        .unwrap();
    let mut config = ServerConfig::builder_with_provider(provider)
        .with_protocol_versions(&[&rustls::version::TLS13])
        .unwrap()
        .with_client_cert_verifier(verifier)
        .with_single_cert(server_chain, server_key)
        .unwrap();
    config.alpn_protocols = vec![heex_proto::ALPN.to_vec(), b"http/1.1".to_vec()];
    Fixture {
        dir,
        config: Arc::new(config),
        devices: Arc::new(by_cert),
    }
}

/// Sessions accepted before `restart` is called are closed by it (as a gateway shutting
/// down does); later ones are not.
#[derive(Clone, Default)]
struct Restart(Arc<Mutex<Option<CancellationToken>>>);

impl Restart {
    fn watch(&self) -> CancellationToken {
        // After the restart: a token nobody cancels.
        self.0.lock().unwrap().clone().unwrap_or_default()
    }

    fn restart(&self) {
        if let Some(t) = self.0.lock().unwrap().take() {
            t.cancel();
        }
    }
}

/// Serves the gateway protocol (or HTTP, by ALPN) on a loopback port.
async fn serve(f: &Fixture, restart: Restart) -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let acceptor = TlsAcceptor::from(f.config.clone());
    let devices = f.devices.clone();
    tokio::spawn(async move {
        loop {
            let (tcp, _) = listener.accept().await.unwrap();
            let (acceptor, devices) = (acceptor.clone(), devices.clone());
            let kill = restart.watch();
            tokio::spawn(async move {
                let Ok(mut tls) = acceptor.accept(tcp).await else {
                    return;
                };
                let (_, conn) = tls.get_ref();
                let http = conn.alpn_protocol() == Some(b"http/1.1");
                let device = conn
                    .peer_certificates()
                    .and_then(|c| c.first())
                    .and_then(|c| devices.get(c.as_ref()))
                    .cloned()
                    .unwrap();
                let mut buf = Vec::new();
                let mut chunk = [0u8; 1024];
                loop {
                    let n = tokio::select! {
                        _ = kill.cancelled() => {
                            if !http {
                                let close = Message::Close { reason: CloseReason::Shutdown, message: String::new() };
                                let _ = tls.write_all(&frame::to_frame(&close).unwrap()).await;
                            }
                            let _ = tls.shutdown().await;
                            return;
                        }
                        n = tls.read(&mut chunk) => n.unwrap_or(0),
                    };
                    if n == 0 {
                        return;
                    }
                    buf.extend_from_slice(&chunk[..n]);
                    if http {
                        while let Some(end) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
                            buf.drain(..end + 4);
                            let ok = b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok";
                            tls.write_all(ok).await.unwrap();
                        }
                        continue;
                    }
                    loop {
                        let (msg, used) = match frame::decode(&buf) {
                            Ok(x) => x,
                            Err(FrameError::Incomplete) => break,
                            Err(e) => panic!("bad frame: {e}"),
                        };
                        buf.drain(..used);
                        let reply = match msg {
                            Message::Hello { .. } => Message::Welcome {
                                device_id: device.clone(),
                                server_time: 0,
                                next_report_seq: 0,
                            },
                            Message::Heartbeat { seq } => Message::HeartbeatAck { seq },
                            Message::Close { .. } => return,
                            other => panic!("unexpected {other:?}"),
                        };
                        tls.write_all(&frame::to_frame(&reply).unwrap())
                            .await
                            .unwrap();
                    }
                }
            });
        }
    });
    addr
}

fn job(f: &Fixture, gateway: SocketAddr, peer: Peer, count: usize) -> Job {
    Job {
        creds: f.dir.path().to_owned(),
        offset: 0,
        count,
        gateways: vec![gateway],
        peer,
        source_ips: vec![Ipv4Addr::new(127, 0, 0, 2), Ipv4Addr::new(127, 0, 0, 3)],
        interval_ms: 40,
        duration_ms: 300,
        ack_timeout_ms: 2000,
        connect_rate: 0.0,
        connect_concurrency: 3,
        storm: None,
    }
}

#[tokio::test]
async fn holds_gateway_sessions_and_checks_every_ack() {
    let f = fixture(5);
    let addr = serve(&f, Restart::default()).await;
    let mut ready = Vec::new();
    let stats = worker::work(job(&f, addr, Peer::Heex, 5), &mut |e| {
        ready.push(e);
        Ok(())
    })
    .await
    .unwrap();
    assert_eq!(
        ready,
        [Event::Ready {
            established: 5,
            failed: 0
        }]
    );
    assert_eq!(stats.established, 5);
    assert_eq!(stats.connect_latency.len(), 5);
    assert!(stats.connect_window.end_ms >= stats.connect_window.start_ms);
    assert!(stats.heartbeats_sent >= 10, "{stats:?}");
    assert_eq!(stats.heartbeats_acked, stats.heartbeats_sent);
    assert_eq!(stats.ack_latency.len() as u64, stats.heartbeats_acked);
    assert_eq!(stats.heartbeat_failures.total(), 0);
    assert_eq!(stats.drops.total(), 0);
}

#[tokio::test]
async fn holds_http_peer_sessions() {
    let f = fixture(3);
    let addr = serve(&f, Restart::default()).await;
    let stats = worker::work(job(&f, addr, Peer::Http, 3), &mut |_| Ok(()))
        .await
        .unwrap();
    assert_eq!(stats.established, 3);
    assert!(stats.heartbeats_sent >= 6, "{stats:?}");
    assert_eq!(stats.heartbeats_acked, stats.heartbeats_sent);
    assert_eq!(stats.drops.total(), 0);
}

#[tokio::test]
async fn failures_are_counted_by_reason() {
    let f = fixture(2);
    // Nothing listens there: every connection is refused.
    let closed = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap()
    };
    // More sessions than credentials: the missing ones are failures too.
    let mut j = job(&f, closed, Peer::Heex, 3);
    j.duration_ms = 10;
    let stats = worker::work(j, &mut |_| Ok(())).await.unwrap();
    assert_eq!(stats.established, 0);
    assert_eq!(
        stats.connect_failures.0.get("tcp: connection refused"),
        Some(&2)
    );
    assert_eq!(stats.connect_failures.0.get("no credentials"), Some(&1));
}

#[tokio::test]
async fn storm_reconnects_every_session_after_a_restart() {
    let f = fixture(4);
    let restart = Restart(Arc::new(Mutex::new(Some(CancellationToken::new()))));
    let addr = serve(&f, restart.clone()).await;
    let mut j = job(&f, addr, Peer::Heex, 4);
    j.duration_ms = 10_000;
    j.storm = Some(StormJob {
        backoff_initial_ms: 20,
        backoff_max_ms: 100,
        settle_ms: 400,
    });
    let stats = worker::work(j, &mut |_| {
        restart.restart();
        Ok(())
    })
    .await
    .unwrap();
    let storm = stats.storm.unwrap();
    assert_eq!(storm.dropped, 4);
    assert_eq!(storm.back, 4);
    assert_eq!(storm.recovery.len(), 4);
    assert!(storm.attempts >= 4);
    assert!(storm.window.end_ms >= storm.window.start_ms && storm.window.start_ms > 0);
    assert_eq!(stats.drops.0.get("closed: shutdown"), Some(&4));
    // Sessions back during the settle time keep beating, and every beat is acked except one
    // in flight when its session was closed.
    assert!(stats.heartbeats_acked > 0);
    let lost = stats
        .heartbeat_failures
        .0
        .get("lost before ack")
        .copied()
        .unwrap_or(0);
    assert_eq!(stats.heartbeat_failures.total(), lost);
    assert_eq!(stats.heartbeats_acked + lost, stats.heartbeats_sent);
}
