//! Session tests against an in-test gateway (real TCP, real TLS 1.3 with client auth).

use std::sync::Arc;
use std::time::Duration;

use heex_proto::frame::{CloseReason, Message};
use heex_proto::DeviceId;
use rustls::crypto::ring;
use rustls::server::WebPkiClientVerifier;
use rustls::{RootCertStore, ServerConfig};
use tokio::net::TcpListener;
use tokio::sync::mpsc;
use tokio_rustls::TlsAcceptor;
use tokio_util::sync::CancellationToken;

use super::*;
use crate::config::Config;
use crate::credentials::Credentials;
use crate::frames::{self, FrameReader};
use crate::testpki::TestPki;

/// How the fake gateway behaves after reading Hello.
#[derive(Clone, Copy)]
enum Behaviour {
    /// Welcome, then ack every heartbeat.
    Normal,
    /// Welcome, then never ack.
    Mute,
    /// Refuse with Close(DeviceRevoked).
    Revoked,
}

struct Fixture {
    pki: TestPki,
    _dir: tempfile::TempDir,
    params: SessionParams,
}

fn fixture(pki: TestPki) -> Fixture {
    let dir = tempfile::tempdir().unwrap();
    let device = DeviceId::generate();
    pki.write_device(dir.path(), &device);
    let text = format!(
        "server = \"https://127.0.0.1:1\"\ngateway = \"127.0.0.1:2\"\n\
         device_id = \"{device}\"\nstate_dir = \"{}\"\n",
        dir.path().display()
    );
    let config = Config::parse(&text, std::path::Path::new("agent.toml")).unwrap();
    let creds = Credentials::load(&config).unwrap();
    let params = SessionParams {
        host: "127.0.0.1".into(),
        port: 0,
        device_id: device,
        tls: creds.tls.clone(),
        heartbeat_interval: Duration::from_millis(50),
        facts_interval: Duration::from_millis(120),
        ack_timeout: Duration::from_millis(400),
        reports: None,
    };
    Fixture {
        pki,
        _dir: dir,
        params,
    }
}

fn server_config(pki: &TestPki, alpn: bool) -> Arc<ServerConfig> {
    let provider = Arc::new(ring::default_provider());
    let mut roots = RootCertStore::empty();
    roots.add(pki.ca_der.clone()).unwrap();
    let verifier = WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider.clone())
        .build()
        .unwrap();
    let (chain, key) = pki.server();
    let mut config = ServerConfig::builder_with_provider(provider)
        .with_protocol_versions(&[&rustls::version::TLS13])
        .unwrap()
        .with_client_cert_verifier(verifier)
        .with_single_cert(chain, key)
        .unwrap();
    if alpn {
        config.alpn_protocols = vec![heex_proto::ALPN.to_vec()];
    }
    Arc::new(config)
}

/// The gateway for the fixture's device.
async fn gateway_for(f: &Fixture, behaviour: Behaviour) -> (u16, mpsc::UnboundedReceiver<Message>) {
    fake_gateway(
        server_config(&f.pki, true),
        behaviour,
        f.params.device_id.clone(),
    )
    .await
}

/// Starts a one-connection gateway that welcomes `welcome`; every message it receives is
/// forwarded on the channel.
async fn fake_gateway(
    config: Arc<ServerConfig>,
    behaviour: Behaviour,
    welcome: DeviceId,
) -> (u16, mpsc::UnboundedReceiver<Message>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let (tx, rx) = mpsc::unbounded_channel();
    tokio::spawn(async move {
        let (tcp, _) = listener.accept().await.unwrap();
        let Ok(mut tls) = TlsAcceptor::from(config).accept(tcp).await else {
            return;
        };
        assert!(tls.get_ref().1.peer_certificates().is_some());
        let mut reader = FrameReader::new();
        let mut buf = Vec::new();
        while let Ok(msg) = reader.read(&mut tls).await {
            let reply = match (&msg, behaviour) {
                (Message::Hello { .. }, Behaviour::Revoked) => Some(Message::Close {
                    reason: CloseReason::DeviceRevoked,
                    message: "device revoked".into(),
                }),
                (Message::Hello { .. }, _) => Some(Message::Welcome {
                    device_id: welcome.clone(),
                    server_time: 0,
                    next_report_seq: 0,
                }),
                (Message::Heartbeat { seq }, Behaviour::Normal) => {
                    Some(Message::HeartbeatAck { seq: *seq })
                }
                _ => None,
            };
            let _ = tx.send(msg);
            if let Some(reply) = reply {
                if frames::write(&mut tls, &reply, &mut buf).await.is_err() {
                    return;
                }
            }
        }
    });
    (port, rx)
}

#[derive(Default)]
struct Recorder {
    connected: u32,
    acks: Vec<u64>,
}

impl Observer for Recorder {
    fn connected(&mut self) {
        self.connected += 1;
    }
    fn heartbeat_acked(&mut self, seq: u64) {
        self.acks.push(seq);
    }
}

#[tokio::test]
async fn welcome_from_another_device_is_refused() {
    // The fake gateway welcomes a random device id: the agent must not accept that.
    let f = fixture(TestPki::new());
    let (port, _rx) = fake_gateway(
        server_config(&f.pki, true),
        Behaviour::Normal,
        DeviceId::generate(),
    )
    .await;
    let params = SessionParams { port, ..f.params };
    let mut rec = Recorder::default();
    let out = run(&params, &mut rec, &CancellationToken::new()).await;
    assert!(
        matches!(out.end, SessionEnd::Failed(SessionError::Protocol(_))),
        "{out:?}"
    );
    assert_eq!(rec.connected, 0);
}

#[tokio::test]
async fn hello_welcome_heartbeats_facts_and_close_on_shutdown() {
    let f = fixture(TestPki::new());
    let (port, mut rx) = gateway_for(&f, Behaviour::Normal).await;
    let params = SessionParams {
        port,
        ..f.params.clone()
    };
    let cancel = CancellationToken::new();
    let stopper = cancel.clone();
    let mut rec = Recorder::default();
    let session = run(&params, &mut rec, &cancel);
    let stop = async {
        tokio::time::sleep(Duration::from_millis(600)).await;
        stopper.cancel();
    };
    let (out, ()) = tokio::join!(session, stop);
    assert!(matches!(out.end, SessionEnd::Shutdown), "{out:?}");
    assert!(out.up_for.is_some());
    assert_eq!(rec.connected, 1);
    assert!(rec.acks.len() >= 5, "acks: {:?}", rec.acks);
    assert!(rec.acks.windows(2).all(|w| w[0] < w[1]));

    // Collect until the gateway saw the Close (it may still be reading it).
    let mut got = Vec::new();
    while let Ok(Some(m)) = tokio::time::timeout(Duration::from_secs(2), rx.recv()).await {
        let close = matches!(m, Message::Close { .. });
        got.push(m);
        if close {
            break;
        }
    }
    match &got[0] {
        Message::Hello {
            facts,
            agent_version,
            ..
        } => {
            assert_eq!(agent_version, heex_proto::VERSION);
            assert!(facts.hostname.is_some());
        }
        other => panic!("first frame {other:?}"),
    }
    assert!(got.iter().any(|m| matches!(m, Message::Facts { .. })));
    assert!(matches!(
        got.last(),
        Some(Message::Close {
            reason: CloseReason::Shutdown,
            ..
        })
    ));
}

#[tokio::test]
async fn missing_acks_mean_a_dead_path() {
    let f = fixture(TestPki::new());
    let (port, _rx) = gateway_for(&f, Behaviour::Mute).await;
    let params = SessionParams {
        port,
        ..f.params.clone()
    };
    let started = Instant::now();
    let out = run(&params, &mut Recorder::default(), &CancellationToken::new()).await;
    assert!(
        matches!(out.end, SessionEnd::Failed(SessionError::DeadPath(_))),
        "{out:?}"
    );
    // First heartbeat at 50 ms, declared dead 400 ms later.
    let took = started.elapsed();
    assert!(
        took >= Duration::from_millis(400) && took < Duration::from_secs(3),
        "{took:?}"
    );
}

#[tokio::test]
async fn refusal_is_reported_with_its_reason() {
    let f = fixture(TestPki::new());
    let (port, _rx) = gateway_for(&f, Behaviour::Revoked).await;
    let params = SessionParams {
        port,
        ..f.params.clone()
    };
    let mut rec = Recorder::default();
    let out = run(&params, &mut rec, &CancellationToken::new()).await;
    assert!(
        matches!(
            out.end,
            SessionEnd::Closed {
                reason: CloseReason::DeviceRevoked,
                ..
            }
        ),
        "{out:?}"
    );
    assert!(out.up_for.is_none());
    assert_eq!(rec.connected, 0);
}

#[tokio::test]
async fn a_gateway_signed_by_another_ca_is_not_trusted() {
    let f = fixture(TestPki::new());
    let impostor = TestPki::new();
    let (port, _rx) = fake_gateway(
        server_config(&impostor, true),
        Behaviour::Normal,
        DeviceId::generate(),
    )
    .await;
    let params = SessionParams {
        port,
        ..f.params.clone()
    };
    let out = run(&params, &mut Recorder::default(), &CancellationToken::new()).await;
    match out.end {
        SessionEnd::Failed(SessionError::Tls(e)) => {
            assert!(e.to_string().contains("certificate"), "{e}")
        }
        other => panic!("{other:?}"),
    }
}

#[tokio::test]
async fn a_gateway_without_heex_alpn_is_refused() {
    let f = fixture(TestPki::new());
    let (port, _rx) = fake_gateway(
        server_config(&f.pki, false),
        Behaviour::Normal,
        DeviceId::generate(),
    )
    .await;
    let params = SessionParams {
        port,
        ..f.params.clone()
    };
    let out = run(&params, &mut Recorder::default(), &CancellationToken::new()).await;
    assert!(
        matches!(out.end, SessionEnd::Failed(SessionError::Alpn)),
        "{out:?}"
    );
}

#[tokio::test]
async fn nothing_listening_is_a_connect_error_and_cancel_is_prompt() {
    let f = fixture(TestPki::new());
    let port = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap().port()
    };
    let params = SessionParams {
        port,
        ..f.params.clone()
    };
    let out = run(&params, &mut Recorder::default(), &CancellationToken::new()).await;
    assert!(
        matches!(out.end, SessionEnd::Failed(SessionError::Connect { .. })),
        "{out:?}"
    );

    let cancel = CancellationToken::new();
    cancel.cancel();
    let out = run(&params, &mut Recorder::default(), &cancel).await;
    assert!(matches!(out.end, SessionEnd::Shutdown));
}
