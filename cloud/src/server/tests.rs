//! The API listener's deadlines and cap, over real TLS on loopback.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use axum::routing::{get, post};
use axum::Router;
use rustls::pki_types::ServerName;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio_rustls::client::TlsStream;
use tokio_rustls::TlsConnector;
use tokio_util::sync::CancellationToken;

use super::{serve, split_descriptors, tls_config, ApiOptions};

/// Far above every deadline below: a connection still open after it was not closed.
const BOUND: Duration = Duration::from_secs(5);

struct Server {
    addr: SocketAddr,
    connector: TlsConnector,
    h2: TlsConnector,
    shutdown: CancellationToken,
}

impl Drop for Server {
    fn drop(&mut self) {
        self.shutdown.cancel();
    }
}

fn short() -> ApiOptions {
    ApiOptions {
        handshake_timeout: Duration::from_millis(300),
        header_read_timeout: Duration::from_millis(300),
        request_timeout: Duration::from_millis(600),
        idle_timeout: Duration::from_millis(400),
        max_connections: 64,
    }
}

async fn start(options: ApiOptions) -> Server {
    let cert = rcgen::generate_simple_self_signed(vec!["localhost".to_owned()]).unwrap();
    let der = cert.cert.der().clone();
    let key = rustls::pki_types::PrivateKeyDer::Pkcs8(cert.signing_key.serialize_der().into());
    let tls = tls_config(vec![der.clone()], key).unwrap();
    let app = Router::new()
        .route("/ok", get(|| async { "ok" }))
        .route("/echo", post(|body: String| async move { body }));
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let shutdown = CancellationToken::new();
    tokio::spawn(serve(listener, tls, app, shutdown.clone(), options));
    let mut roots = rustls::RootCertStore::empty();
    roots.add(der).unwrap();
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let client = |alpn: &[u8]| {
        let mut config = rustls::ClientConfig::builder_with_provider(provider.clone())
            .with_safe_default_protocol_versions()
            .unwrap()
            .with_root_certificates(roots.clone())
            .with_no_client_auth();
        config.alpn_protocols = vec![alpn.to_vec()];
        TlsConnector::from(Arc::new(config))
    };
    Server {
        addr,
        connector: client(b"http/1.1"),
        h2: client(b"h2"),
        shutdown,
    }
}

impl Server {
    async fn tls(&self, connector: &TlsConnector) -> std::io::Result<TlsStream<TcpStream>> {
        let tcp = TcpStream::connect(self.addr).await?;
        let name = ServerName::try_from("localhost").unwrap();
        connector.connect(name, tcp).await
    }
}

/// Reads until the peer closes (EOF or an error): what it sent, or `None` when it was still
/// open after [`BOUND`].
async fn until_closed(stream: &mut (impl AsyncRead + Unpin)) -> Option<Vec<u8>> {
    let mut all = Vec::new();
    let mut buf = [0u8; 4096];
    let read = tokio::time::timeout(BOUND, async {
        loop {
            match stream.read(&mut buf).await {
                Ok(0) | Err(_) => return,
                Ok(n) => all.extend_from_slice(&buf[..n]),
            }
        }
    })
    .await;
    read.ok().map(|()| all)
}

#[tokio::test]
async fn a_silent_tcp_connection_is_closed_at_the_handshake_deadline() {
    let server = start(short()).await;
    let mut tcp = TcpStream::connect(server.addr).await.unwrap();
    assert!(
        until_closed(&mut tcp).await.is_some(),
        "a connection that never started TLS is still open"
    );
}

#[tokio::test]
async fn a_silent_tls_connection_is_closed_when_idle() {
    let server = start(short()).await;
    let mut tls = server.tls(&server.connector).await.unwrap();
    assert!(
        until_closed(&mut tls).await.is_some(),
        "a TLS connection that sent no request is still open"
    );
}

#[tokio::test]
async fn an_idle_keep_alive_connection_is_closed() {
    let server = start(short()).await;
    let mut tls = server.tls(&server.connector).await.unwrap();
    tls.write_all(b"GET /ok HTTP/1.1\r\nhost: localhost\r\n\r\n")
        .await
        .unwrap();
    let got = until_closed(&mut tls)
        .await
        .expect("the keep-alive connection stayed open after its idle deadline");
    let text = String::from_utf8_lossy(&got);
    assert!(text.starts_with("HTTP/1.1 200"), "{text}");
}

#[tokio::test]
async fn an_idle_http2_connection_is_closed() {
    let server = start(short()).await;
    let mut tls = server.tls(&server.h2).await.unwrap();
    assert_eq!(tls.get_ref().1.alpn_protocol(), Some(&b"h2"[..]));
    // The client preface and an empty SETTINGS frame, then nothing.
    tls.write_all(b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n\0\0\0\x04\0\0\0\0\0")
        .await
        .unwrap();
    assert!(
        until_closed(&mut tls).await.is_some(),
        "an idle HTTP/2 connection is still open"
    );
}

#[tokio::test]
async fn a_trickled_body_is_cut_at_the_request_deadline() {
    let server = start(short()).await;
    let mut tls = server.tls(&server.connector).await.unwrap();
    tls.write_all(
        b"POST /echo HTTP/1.1\r\nhost: localhost\r\ncontent-type: text/plain\r\n\
          content-length: 1000\r\n\r\n",
    )
    .await
    .unwrap();
    // One byte every 100 ms: never idle, never done.
    let (mut reader, mut writer) = tokio::io::split(tls);
    let trickle = async {
        for _ in 0..100 {
            if writer.write_all(b"x").await.is_err() {
                break;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    };
    let answer = tokio::select! {
        got = until_closed(&mut reader) => got,
        () = trickle => None,
    };
    let answer = answer.expect("the trickled request was never cut");
    let text = String::from_utf8_lossy(&answer);
    assert!(text.starts_with("HTTP/1.1 408"), "{text}");
    assert!(text.contains("request_timeout"), "{text}");
}

#[tokio::test]
async fn connections_beyond_the_cap_are_closed_and_a_freed_slot_is_reused() {
    let server = start(ApiOptions {
        max_connections: 2,
        idle_timeout: Duration::from_secs(30),
        ..short()
    })
    .await;
    let first = server.tls(&server.connector).await.unwrap();
    let _second = server.tls(&server.connector).await.unwrap();
    let third = server.tls(&server.connector).await;
    assert!(third.is_err(), "a third connection got through a cap of 2");
    drop(first);
    // The slot is freed once the server notices the close.
    let mut reused = None;
    for _ in 0..50 {
        if let Ok(tls) = server.tls(&server.connector).await {
            reused = Some(tls);
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let mut tls = reused.expect("the freed slot was never reused");
    tls.write_all(b"GET /ok HTTP/1.1\r\nhost: localhost\r\nconnection: close\r\n\r\n")
        .await
        .unwrap();
    let got = until_closed(&mut tls).await.unwrap();
    assert!(String::from_utf8_lossy(&got).starts_with("HTTP/1.1 200"));
}

#[test]
fn the_descriptor_budget_is_split_with_room_for_both() {
    // A systemd service's default soft limit, and this machine's hard limit.
    assert_eq!(split_descriptors(1024), (64, 832));
    assert_eq!(split_descriptors(20_000), (625, 19_247));
    let (api, gateway) = split_descriptors(1 << 20);
    assert_eq!(api, 1024);
    assert!(gateway > 1_000_000);
    // Never zero, even on an absurd limit.
    assert_eq!(split_descriptors(10), (64, 1));
}
