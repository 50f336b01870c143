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
use heex_pki::test_kit::TestCa;

/// How the fake gateway behaves after reading Hello.
#[derive(Clone)]
enum Behaviour {
    /// Welcome, then ack every heartbeat.
    Normal,
    /// Welcome, then this message, then ack every heartbeat.
    AfterWelcome(Box<Message>),
    /// Welcome, then never ack.
    Mute,
    /// Refuse with Close(DeviceRevoked).
    Revoked,
}

struct Fixture {
    pki: TestCa,
    _dir: tempfile::TempDir,
    params: SessionParams,
}

fn fixture(pki: TestCa) -> Fixture {
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
        ca_path: config.ca_path(),
        ca_bundle: Some(creds.ca_bundle_digest()),
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

fn server_config(pki: &TestCa, alpn: bool) -> Arc<ServerConfig> {
    let provider = Arc::new(ring::default_provider());
    let mut roots = RootCertStore::empty();
    roots.add(pki.ca_der.clone()).unwrap();
    let verifier = WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider.clone())
        .build()
        .unwrap();
    let (chain, key) = pki.server(&["127.0.0.1", "localhost"]);
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
        let mut tls = match TlsAcceptor::from(config).accept(tcp).into_fallible().await {
            Ok(tls) => tls,
            Err((_, mut tcp)) => {
                // Like a gateway that lingers: read what the client sent (its Hello) until
                // it goes, so the client reads the alert instead of a reset.
                let mut sink = Vec::new();
                let _ = tokio::time::timeout(
                    Duration::from_secs(5),
                    tokio::io::AsyncReadExt::read_to_end(&mut tcp, &mut sink),
                )
                .await;
                return;
            }
        };
        assert!(tls.get_ref().1.peer_certificates().is_some());
        let mut reader = FrameReader::new();
        let mut buf = Vec::new();
        while let Ok(msg) = reader.read(&mut tls).await {
            let welcome_msg = Message::Welcome {
                device_id: welcome.clone(),
                server_time: 0,
                next_report_seq: 0,
            };
            let replies = match (&msg, &behaviour) {
                (Message::Hello { .. }, Behaviour::Revoked) => vec![Message::Close {
                    reason: CloseReason::DeviceRevoked,
                    message: "device revoked".into(),
                }],
                (Message::Hello { .. }, Behaviour::AfterWelcome(then)) => {
                    vec![welcome_msg, (**then).clone()]
                }
                (Message::Hello { .. }, _) => vec![welcome_msg],
                (Message::Heartbeat { seq }, Behaviour::Normal | Behaviour::AfterWelcome(_)) => {
                    vec![Message::HeartbeatAck { seq: *seq }]
                }
                _ => Vec::new(),
            };
            let _ = tx.send(msg);
            for reply in replies {
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
    bundles: Vec<(String, Duration)>,
}

impl Observer for Recorder {
    fn connected(&mut self) {
        self.connected += 1;
    }
    fn heartbeat_acked(&mut self, seq: u64) {
        self.acks.push(seq);
    }
    fn trust_bundle(&mut self, ca_pem: String, renew_within: Duration) {
        self.bundles.push((ca_pem, renew_within));
    }
}

#[tokio::test]
async fn welcome_from_another_device_is_refused() {
    // The fake gateway welcomes a random device id: the agent must not accept that.
    let f = fixture(TestCa::new());
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
    let f = fixture(TestCa::new());
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
            ca_bundle,
            ..
        } => {
            assert_eq!(agent_version, heex_proto::VERSION);
            assert!(facts.hostname.is_some());
            // The digest of the bundle the session's TLS configuration trusts.
            assert_eq!(
                ca_bundle.as_deref(),
                Some(heex_proto::frame::bundle_digest([f.pki.ca_der.as_ref()]).as_str())
            );
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
    let f = fixture(TestCa::new());
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
    let f = fixture(TestCa::new());
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
    // A CA of the same name (as a rotated CA may be: rustls sees a bad signature) and one of
    // another name (an unknown issuer).
    for impostor in [TestCa::new(), TestCa::named("Impostor CA")] {
        let f = fixture(TestCa::new());
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
            SessionEnd::Failed(e @ SessionError::UntrustedGateway { .. }) => {
                let line = e.to_string();
                let expected = format!(
                    "the gateway's certificate is not signed by a CA this device trusts ({}): \
                     if the cloud rotated its CA while this machine was offline, reinstall \
                     with heex-installer --force and a new API key",
                    params.ca_path.display()
                );
                assert_eq!(line, expected);
            }
            other => panic!("{other:?}"),
        }
    }
}

#[tokio::test]
async fn a_gateway_from_any_ca_of_the_bundle_is_trusted() {
    // ca.crt during a rotation: the new CA first, the old one after it. A gateway with a
    // certificate from either is trusted.
    let f = fixture(TestCa::new());
    let next = TestCa::named("Next CA");
    std::fs::write(
        f.params.ca_path.clone(),
        format!("{}{}", next.ca_pem, f.pki.ca_pem),
    )
    .unwrap();
    let text = format!(
        "server = \"https://127.0.0.1:1\"\ngateway = \"127.0.0.1:2\"\n\
         device_id = \"{}\"\nstate_dir = \"{}\"\n",
        f.params.device_id,
        f._dir.path().display()
    );
    let config = Config::parse(&text, std::path::Path::new("agent.toml")).unwrap();
    let creds = Credentials::load(&config).unwrap();
    for gateway_ca in [&next, &f.pki] {
        // The gateway accepts device certificates of the old CA.
        let provider = Arc::new(ring::default_provider());
        let mut roots = RootCertStore::empty();
        roots.add(f.pki.ca_der.clone()).unwrap();
        let verifier =
            WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider.clone())
                .build()
                .unwrap();
        let (chain, key) = gateway_ca.server(&["127.0.0.1", "localhost"]);
        let mut config = ServerConfig::builder_with_provider(provider)
            .with_protocol_versions(&[&rustls::version::TLS13])
            .unwrap()
            .with_client_cert_verifier(verifier)
            .with_single_cert(chain, key)
            .unwrap();
        config.alpn_protocols = vec![heex_proto::ALPN.to_vec()];
        let (port, _rx) = fake_gateway(
            Arc::new(config),
            Behaviour::Revoked,
            f.params.device_id.clone(),
        )
        .await;
        let params = SessionParams {
            port,
            tls: creds.tls.clone(),
            ..f.params.clone()
        };
        let out = run(&params, &mut Recorder::default(), &CancellationToken::new()).await;
        assert!(matches!(out.end, SessionEnd::Closed { .. }), "{out:?}");
    }
}

#[tokio::test]
async fn a_gateway_that_refuses_the_device_certificate_says_so() {
    // The gateway trusts another CA for device certificates: it answers with a TLS alert,
    // which a TLS 1.3 client sees when it reads the Welcome.
    let f = fixture(TestCa::new());
    let other = TestCa::named("Other CA");
    let provider = Arc::new(ring::default_provider());
    let mut roots = RootCertStore::empty();
    roots.add(other.ca_der.clone()).unwrap();
    let verifier = WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider.clone())
        .build()
        .unwrap();
    let (chain, key) = f.pki.server(&["127.0.0.1", "localhost"]);
    let mut config = ServerConfig::builder_with_provider(provider)
        .with_protocol_versions(&[&rustls::version::TLS13])
        .unwrap()
        .with_client_cert_verifier(verifier)
        .with_single_cert(chain, key)
        .unwrap();
    config.alpn_protocols = vec![heex_proto::ALPN.to_vec()];
    let (port, _rx) = fake_gateway(
        Arc::new(config),
        Behaviour::Normal,
        f.params.device_id.clone(),
    )
    .await;
    let params = SessionParams {
        port,
        ..f.params.clone()
    };
    let out = run(&params, &mut Recorder::default(), &CancellationToken::new()).await;
    match out.end {
        SessionEnd::Failed(
            e @ SessionError::CertificateRefused {
                alert: AlertDescription::UnknownCA,
            },
        ) => assert_eq!(
            e.to_string(),
            "the gateway refused this device's certificate (TLS alert unknown_ca): reinstall \
             with heex-installer --force and a new API key if it persists"
        ),
        other => panic!("{other:?}"),
    }
}

#[test]
fn tls_errors_are_classified() {
    use std::io::{Error, ErrorKind};
    let wrap = |e: rustls::Error| Error::new(ErrorKind::InvalidData, e);
    let untrusted = [
        CertificateError::UnknownIssuer,
        CertificateError::BadSignature,
    ];
    for c in untrusted {
        assert_eq!(
            tls_refusal(&wrap(rustls::Error::InvalidCertificate(c))),
            Some(TlsRefusal::UntrustedGateway)
        );
    }
    for alert in [
        AlertDescription::UnknownCA,
        AlertDescription::BadCertificate,
        AlertDescription::CertificateUnknown,
    ] {
        assert_eq!(
            tls_refusal(&wrap(rustls::Error::AlertReceived(alert))),
            Some(TlsRefusal::CertificateRefused(alert))
        );
    }
    // Anything else stays a plain TLS error.
    for other in [
        wrap(rustls::Error::InvalidCertificate(CertificateError::Expired)),
        wrap(rustls::Error::InvalidCertificate(
            CertificateError::NotValidForName,
        )),
        wrap(rustls::Error::AlertReceived(
            AlertDescription::HandshakeFailure,
        )),
        wrap(rustls::Error::DecryptError),
        Error::new(ErrorKind::ConnectionReset, "reset"),
        Error::from(ErrorKind::UnexpectedEof),
    ] {
        assert_eq!(tls_refusal(&other), None, "{other}");
    }
    let path = std::path::Path::new("/var/lib/heex/ca.crt");
    let e = tls_error(
        wrap(rustls::Error::InvalidCertificate(
            CertificateError::UnknownIssuer,
        )),
        path,
    );
    assert!(
        e.to_string().starts_with(
            "the gateway's certificate is not signed by a CA this device trusts \
             (/var/lib/heex/ca.crt): "
        ),
        "{e}"
    );
    let e = tls_error(
        wrap(rustls::Error::AlertReceived(
            AlertDescription::BadCertificate,
        )),
        path,
    );
    assert!(e.to_string().contains("(TLS alert bad_certificate)"), "{e}");
    let e = tls_error(wrap(rustls::Error::DecryptError), path);
    assert!(matches!(e, SessionError::Tls(_)), "{e}");
    // After the handshake (reading the Welcome) the same classification applies.
    let e = early_error(
        FrameIoError::Io(wrap(rustls::Error::AlertReceived(
            AlertDescription::CertificateUnknown,
        ))),
        path,
    );
    assert!(matches!(e, SessionError::CertificateRefused { .. }), "{e}");
    assert!(matches!(
        early_error(FrameIoError::Closed, path),
        SessionError::Frame(FrameIoError::Closed)
    ));
    for e in [
        SessionError::UntrustedGateway {
            ca_path: path.to_owned(),
            source: Error::from(ErrorKind::InvalidData),
        },
        SessionError::CertificateRefused {
            alert: AlertDescription::UnknownCA,
        },
    ] {
        assert!(!e.to_string().contains('\n'), "{e}");
    }
}

#[tokio::test]
async fn a_trust_bundle_reaches_the_observer_and_the_session_goes_on() {
    let f = fixture(TestCa::new());
    let next = TestCa::new();
    let ca_pem = format!("{}{}", next.ca_pem, f.pki.ca_pem);
    let (port, _rx) = gateway_for(
        &f,
        Behaviour::AfterWelcome(Box::new(Message::TrustBundle {
            ca_pem: ca_pem.clone(),
            renew_within_secs: 3600,
        })),
    )
    .await;
    let params = SessionParams {
        port,
        ..f.params.clone()
    };
    let cancel = CancellationToken::new();
    let stopper = cancel.clone();
    let mut rec = Recorder::default();
    let session = run(&params, &mut rec, &cancel);
    let stop = async {
        tokio::time::sleep(Duration::from_millis(400)).await;
        stopper.cancel();
    };
    let (out, ()) = tokio::join!(session, stop);
    assert!(matches!(out.end, SessionEnd::Shutdown), "{out:?}");
    assert_eq!(rec.bundles, [(ca_pem, Duration::from_secs(3600))]);
    // Heartbeats went on after the bundle.
    assert!(rec.acks.len() >= 3, "acks: {:?}", rec.acks);
}

#[tokio::test]
async fn a_gateway_without_heex_alpn_is_refused() {
    let f = fixture(TestCa::new());
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
    let f = fixture(TestCa::new());
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
