//! The client against a real TLS server on loopback (blocking rustls, a thread per server).

use std::io::{BufRead, BufReader, Write};
use std::net::{SocketAddr, TcpListener};
use std::sync::Arc;

use heex_pki::test_kit::TestCa;
use heex_proto::KeyId;
use rustls::{ServerConfig, ServerConnection, StreamOwned};

use super::*;

/// A TLS server answering every request with `answer`; returns its address and how many
/// requests it saw (with their header lines).
fn server(ca: &TestCa, answer: Vec<u8>) -> (SocketAddr, Arc<std::sync::Mutex<Vec<String>>>) {
    let (chain, key) = ca.server(&["127.0.0.1"]);
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let config = Arc::new(
        ServerConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .unwrap()
            .with_no_client_auth()
            .with_single_cert(chain, key)
            .unwrap(),
    );
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    let seen = Arc::new(std::sync::Mutex::new(Vec::new()));
    let log = Arc::clone(&seen);
    std::thread::spawn(move || {
        for tcp in listener.incoming() {
            let Ok(tcp) = tcp else { return };
            let conn = ServerConnection::new(Arc::clone(&config)).unwrap();
            let mut tls = StreamOwned::new(conn, tcp);
            let mut head = Vec::new();
            {
                let mut reader = BufReader::new(&mut tls);
                loop {
                    let mut line = String::new();
                    if reader.read_line(&mut line).unwrap_or(0) == 0 || line == "\r\n" {
                        break;
                    }
                    head.push(line.trim_end().to_owned());
                }
            }
            if head.is_empty() {
                continue; // no request arrived (the handshake was refused)
            }
            log.lock().unwrap().push(head.join("\n"));
            let _ = tls.write_all(&answer);
            let _ = tls.flush();
            tls.conn.send_close_notify();
            let _ = tls.flush();
        }
    });
    (addr, seen)
}

fn client_for(ca: &TestCa, addr: SocketAddr) -> Client {
    let base = parse_server_url(&format!("https://{addr}/base")).unwrap();
    let anchor = TrustAnchor::Pinned(Fingerprint::of_der(&ca.ca_der));
    Client::new(&base, anchor, "heex-test").unwrap()
}

#[test]
fn a_redirect_is_never_followed_so_the_key_goes_nowhere_else() {
    let ca = TestCa::new();
    let (elsewhere, stolen) = server(
        &ca,
        b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n".to_vec(),
    );
    let redirect = format!(
        "HTTP/1.1 307 Temporary Redirect\r\nLocation: https://{elsewhere}/steal\r\nContent-Length: 0\r\n\r\n"
    );
    let (addr, seen) = server(&ca, redirect.into_bytes());
    let client = client_for(&ca, addr);
    let key = ApiKey::derive(b"server secret", KeyId::generate());
    let answer = client.get("/v1/keys", &[], Some(&key)).unwrap();
    assert_eq!(answer.status, 307);
    let requests = seen.lock().unwrap().clone();
    assert_eq!(requests.len(), 1);
    assert!(
        requests[0].starts_with("GET /base/v1/keys HTTP/1.1"),
        "{}",
        requests[0]
    );
    assert!(requests[0].contains(&format!("Bearer {}", key.expose())));
    assert!(
        stolen.lock().unwrap().is_empty(),
        "the redirect target got a request"
    );
    assert_eq!(client.verified_ca(), Some(Fingerprint::of_der(&ca.ca_der)));
}

#[test]
fn an_answer_beyond_the_limit_is_refused_not_read_into_memory() {
    let ca = TestCa::new();
    let size = MAX_RESPONSE_BYTES + 10;
    let mut answer = format!("HTTP/1.1 200 OK\r\nContent-Length: {size}\r\n\r\n").into_bytes();
    answer.resize(answer.len() + size as usize, b'x');
    let (addr, _) = server(&ca, answer);
    let err = client_for(&ca, addr).get("healthz", &[], None).unwrap_err();
    assert!(matches!(err, RequestError::TooLarge { .. }), "{err:?}");
}

#[test]
fn another_ca_is_refused_before_anything_is_sent() {
    let (ca, impostor) = (TestCa::new(), TestCa::new());
    let (addr, seen) = server(
        &impostor,
        b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n".to_vec(),
    );
    let key = ApiKey::derive(b"server secret", KeyId::generate());
    let err = client_for(&ca, addr)
        .get("healthz", &[], Some(&key))
        .unwrap_err();
    let RequestError::Untrusted(why) = &err else {
        panic!("{err:?}");
    };
    assert!(why.ends_with("refusing to send the API key"), "{why}");
    assert!(seen.lock().unwrap().is_empty());
}

#[test]
fn a_closed_port_names_the_server_and_the_cause() {
    let ca = TestCa::new();
    let port = TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap();
    let err = client_for(&ca, port).get("healthz", &[], None).unwrap_err();
    assert!(matches!(err, RequestError::Connect { .. }), "{err:?}");
    assert!(
        err.to_string()
            .starts_with(&format!("cannot connect to https://{port}/base")),
        "{err}"
    );
}

#[test]
fn server_urls_and_messages() {
    assert_eq!(
        parse_server_url("https://h/heex").unwrap().as_str(),
        "https://h/heex/"
    );
    for (bad, why) in [
        ("http://h:8443", "must be an https:// URL"),
        ("https://user:pw@h", "must not contain credentials"),
        ("https://h/?x=1", "must not have a query or fragment"),
    ] {
        assert_eq!(parse_server_url(bad).unwrap_err(), why, "{bad}");
    }
    assert!(parse_server_url("h:8443").is_err() && parse_server_url("").is_err());
    assert_eq!(one_line("a\n\n b\x1b[31m  c"), "a b [31m c");
}
