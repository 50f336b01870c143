//! End-to-end tests of the device lifecycle: certificate renewal over the session (with short
//! lifetimes), renewal after expiry within the grace, refusal past it, device revocation,
//! and crash safety of the key/certificate swap — real `heex-cloud`, `heex-installer`,
//! `heex-agent` and `heex` processes on loopback.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::BTreeSet;
use std::fs;
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use heex_proto::frame::{self, CloseReason, Message};
use heex_tests::{wait_for, Cloud, Logs, Machine, Proc};
use rcgen::{CertificateParams, DnType, KeyPair, PublicKeyData};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName};
use rustls::{ClientConfig, ClientConnection, RootCertStore, StreamOwned};
use serde_json::{json, Value};

const TIMEOUT: Duration = Duration::from_secs(30);

// ---------------------------------------------------------------- helpers

/// An enrolled machine whose agent uses fast timings.
fn enrolled(cloud: &Cloud, key: &str, name: &str) -> (Machine, String) {
    Machine::enrolled(cloud, key, name, ("250ms", "2s"))
}

/// Waits until the daemon with `pid` is connected with an acknowledged heartbeat.
fn wait_connected(machine: &Machine, pid: u32, what: &str) -> Value {
    wait_for(TIMEOUT, what, || {
        let s = machine.status_file();
        (s["pid"].as_u64() == Some(u64::from(pid))
            && s["state"] == "connected"
            && !s["last_heartbeat_ack"].is_null())
        .then_some(s)
    })
}

/// Serial (hex) and SubjectPublicKeyInfo of the machine's certificate.
fn cert_of(machine: &Machine) -> Option<(String, Vec<u8>)> {
    let pem = fs::read(machine.state_dir().join("device.crt")).ok()?;
    let (_, block) = x509_parser::pem::parse_x509_pem(&pem).ok()?;
    let (_, cert) = x509_parser::parse_x509_certificate(&block.contents).ok()?;
    Some((
        cert.raw_serial_as_string(),
        cert.tbs_certificate.subject_pki.raw.to_vec(),
    ))
}

/// True when device.key and device.crt parse and the certificate certifies the key.
fn pair_matches(state: &Path) -> bool {
    let Ok(key) = fs::read_to_string(state.join("device.key")) else {
        return false;
    };
    let Ok(key) = KeyPair::from_pem(&key) else {
        return false;
    };
    let Ok(pem) = fs::read(state.join("device.crt")) else {
        return false;
    };
    let Ok((_, block)) = x509_parser::pem::parse_x509_pem(&pem) else {
        return false;
    };
    let Ok((_, cert)) = x509_parser::parse_x509_certificate(&block.contents) else {
        return false;
    };
    cert.tbs_certificate.subject_pki.raw == key.subject_public_key_info().as_slice()
}

/// A pseudo-random number below `n`, from the clock.
fn random_below(n: u64) -> u64 {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .subsec_nanos();
    u64::from(nanos.wrapping_mul(2_654_435_761)) % n
}

fn count(text: &str, needle: &str) -> usize {
    text.lines().filter(|l| l.contains(needle)).count()
}

fn stop_agent(agent: &mut Proc) {
    agent.signal("TERM");
    agent
        .wait_timeout(Duration::from_secs(10))
        .expect("heex-agent exits after SIGTERM");
}

/// `heex ARGS` with the owner's key in the environment.
fn heex(cloud: &Cloud, args: &[&str]) -> std::process::Output {
    cloud.heex(args)
}

fn request(
    cloud: &Cloud,
    method: reqwest::Method,
    path: &str,
    body: Option<Value>,
) -> (u16, Value) {
    let mut req = cloud
        .http()
        .request(method, format!("{}{path}", cloud.api_url))
        .bearer_auth(&cloud.owner_key);
    if let Some(b) = body {
        req = req.json(&b);
    }
    let resp = req.send().unwrap();
    let status = resp.status().as_u16();
    (status, resp.json().unwrap_or(Value::Null))
}

// ---------------------------------------------------------------- raw sessions

type Tls = StreamOwned<ClientConnection, TcpStream>;

/// A raw TLS session to the gateway with the machine's current key and certificate.
fn raw_session(cloud: &Cloud, machine: &Machine) -> Tls {
    raw_session_from(cloud, &machine.state_dir())
}

/// A raw session with the device.crt and device.key in `dir`.
fn raw_session_from(cloud: &Cloud, dir: &Path) -> Tls {
    let chain = CertificateDer::pem_file_iter(dir.join("device.crt"))
        .unwrap()
        .collect::<Result<Vec<_>, _>>()
        .unwrap();
    let key = PrivateKeyDer::from_pem_file(dir.join("device.key")).unwrap();
    let mut roots = RootCertStore::empty();
    roots
        .add(CertificateDer::from_pem_file(cloud.ca_file()).unwrap())
        .unwrap();
    let mut config =
        ClientConfig::builder_with_provider(Arc::new(rustls::crypto::ring::default_provider()))
            .with_protocol_versions(&[&rustls::version::TLS13])
            .unwrap()
            .with_root_certificates(roots)
            .with_client_auth_cert(chain, key)
            .unwrap();
    config.alpn_protocols = vec![heex_proto::ALPN.to_vec()];
    let addr: SocketAddr = cloud.gateway;
    let tcp = TcpStream::connect(addr).unwrap();
    tcp.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    let name = ServerName::try_from("127.0.0.1").unwrap().to_owned();
    let conn = ClientConnection::new(Arc::new(config), name).unwrap();
    let mut tls = StreamOwned::new(conn, tcp);
    while tls.conn.is_handshaking() {
        tls.conn.complete_io(&mut tls.sock).unwrap();
    }
    tls
}

fn send(tls: &mut Tls, msg: &Message) {
    tls.write_all(&frame::to_frame(msg).unwrap()).unwrap();
    tls.flush().unwrap();
}

fn recv(tls: &mut Tls) -> Message {
    let mut header = [0u8; frame::HEADER_LEN];
    tls.read_exact(&mut header).unwrap();
    let mut payload = vec![0; frame::payload_len(header).unwrap()];
    tls.read_exact(&mut payload).unwrap();
    frame::decode_payload(&payload).unwrap()
}

fn hello() -> Message {
    Message::Hello {
        agent_version: "e2e".into(),
        facts: Default::default(),
        next_report_seq: 0,
        ca_bundle: None,
    }
}

fn welcomed(cloud: &Cloud, machine: &Machine) -> Tls {
    let mut tls = raw_session(cloud, machine);
    send(&mut tls, &hello());
    let got = recv(&mut tls);
    assert!(matches!(got, Message::Welcome { .. }), "{got:?}");
    tls
}

fn closed_with(msg: Message, want: CloseReason) -> String {
    match msg {
        Message::Close { reason, message } if reason == want => message,
        other => panic!("expected Close({want:?}), got {other:?}"),
    }
}

#[test]
fn an_expired_session_may_only_renew_and_a_revoked_one_nothing() {
    let cloud = Cloud::start_with(&["--device-cert-lifetime", "2s", "--renewal-grace", "30s"]);
    let (key, _) = cloud.create_key("fleet", "enroll", None);
    let (machine, id) = enrolled(&cloud, &key, "raw-robot");
    let (old_serial, _) = cert_of(&machine).unwrap();
    std::thread::sleep(Duration::from_secs(3));

    // Expired within the grace: welcomed, heartbeats answered, anything else refused.
    let mut tls = welcomed(&cloud, &machine);
    send(&mut tls, &Message::Heartbeat { seq: 1 });
    assert_eq!(recv(&mut tls), Message::HeartbeatAck { seq: 1 });
    send(
        &mut tls,
        &Message::Facts {
            facts: Default::default(),
        },
    );
    let why = closed_with(recv(&mut tls), CloseReason::CertificateExpired);
    assert!(why.contains("renew"), "{why}");

    // A malformed CSR is a protocol error.
    let mut tls = welcomed(&cloud, &machine);
    send(
        &mut tls,
        &Message::RenewRequest {
            csr_pem: "nonsense".into(),
        },
    );
    closed_with(recv(&mut tls), CloseReason::ProtocolError);

    // Renewal with a fresh key: same identity, new serial and key; then the session is
    // a full one.
    let mut tls = welcomed(&cloud, &machine);
    let fresh = KeyPair::generate().unwrap();
    let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
    params
        .distinguished_name
        .push(DnType::CommonName, "ignored");
    let csr_pem = params.serialize_request(&fresh).unwrap().pem().unwrap();
    send(&mut tls, &Message::RenewRequest { csr_pem });
    let Message::RenewResponse { certificate_pem } = recv(&mut tls) else {
        panic!("no RenewResponse");
    };
    let (_, block) = x509_parser::pem::parse_x509_pem(certificate_pem.as_bytes()).unwrap();
    let (_, cert) = x509_parser::parse_x509_certificate(&block.contents).unwrap();
    assert_ne!(cert.raw_serial_as_string(), old_serial);
    assert_eq!(
        cert.tbs_certificate.subject_pki.raw,
        fresh.subject_public_key_info().as_slice()
    );
    assert_eq!(
        cert.subject()
            .iter_common_name()
            .next()
            .unwrap()
            .as_str()
            .unwrap(),
        id
    );
    let old = fs::read(machine.state_dir().join("device.crt")).unwrap();
    let (_, old_block) = x509_parser::pem::parse_x509_pem(&old).unwrap();
    let (_, old_cert) = x509_parser::parse_x509_certificate(&old_block.contents).unwrap();
    assert_eq!(
        cert.subject_alternative_name().unwrap().unwrap().value,
        old_cert.subject_alternative_name().unwrap().unwrap().value
    );
    send(
        &mut tls,
        &Message::Facts {
            facts: Default::default(),
        },
    );
    send(&mut tls, &Message::Heartbeat { seq: 2 });
    assert_eq!(recv(&mut tls), Message::HeartbeatAck { seq: 2 });

    // Revoked: the live session is closed, and a new one refused before any frame.
    let (status, body) = cloud.post(
        &format!("/v1/devices/{id}/revoke"),
        &cloud.owner_key,
        &Value::Null,
    );
    assert_eq!(status, 200, "{body}");
    closed_with(recv(&mut tls), CloseReason::DeviceRevoked);
    let mut tls = raw_session(&cloud, &machine);
    closed_with(recv(&mut tls), CloseReason::DeviceRevoked);
}

// ---------------------------------------------------------------- renewal

#[test]
fn renews_repeatedly_over_the_session_without_any_api_key() {
    let cloud = Cloud::start_with(&["--device-cert-lifetime", "6s", "--renewal-grace", "20s"]);
    // Bob joins, enrolls the machine with his key, and is removed (which revokes his keys)
    // before any renewal: the device's identity does not depend on him.
    let (status, invite) = cloud.post(
        "/v1/invitations",
        &cloud.owner_key,
        &json!({"email": "bob@example.com", "role": "admin"}),
    );
    assert_eq!(status, 201, "{invite}");
    let (status, joined) = cloud.post(
        "/v1/invitations/accept",
        "",
        &json!({"token": invite["token"]}),
    );
    assert_eq!(status, 201, "{joined}");
    let bob_key = joined["key"]["key"].as_str().unwrap().to_owned();
    let (machine, id) = enrolled(&cloud, &bob_key, "renewing-robot");
    cloud.revoke_key(joined["key"]["id"].as_str().unwrap());
    let (status, removed) = cloud.post(
        &format!(
            "/v1/members/{}/remove",
            joined["member"]["id"].as_str().unwrap()
        ),
        &cloud.owner_key,
        &Value::Null,
    );
    assert_eq!(status, 200, "{removed}");

    let logs = Logs::new();
    let mut agent = machine.agent(&logs);
    let first = wait_connected(&machine, agent.pid(), "the agent to connect");
    let initial = cert_of(&machine).unwrap();
    let expiry0 = cloud.device(&id).unwrap()["certificate_expires_at"].clone();

    // Watch the certificate file through at least three renewals.
    let mut seen = vec![initial.clone()];
    let deadline = Instant::now() + Duration::from_secs(40);
    while seen.len() < 4 {
        assert!(
            Instant::now() < deadline,
            "only {} certificates seen; agent log:\n{}",
            seen.len(),
            agent.stderr()
        );
        if let Some(c) = cert_of(&machine) {
            if seen.last() != Some(&c) {
                seen.push(c);
            }
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    let serials: BTreeSet<_> = seen.iter().map(|(s, _)| s.clone()).collect();
    let keys: BTreeSet<_> = seen.iter().map(|(_, k)| k.clone()).collect();
    assert_eq!(serials.len(), seen.len(), "every renewal has a new serial");
    assert_eq!(keys.len(), seen.len(), "every renewal has a new key");
    assert!(pair_matches(&machine.state_dir()));

    // The session was never lost, heartbeats kept flowing, and the cloud saw the renewals.
    let now = machine.status_file();
    assert_eq!(now["state"], "connected", "{now}");
    assert_eq!(now["sessions"], first["sessions"], "no reconnect: {now}");
    assert!(
        now["heartbeats_acked"].as_u64().unwrap()
            >= first["heartbeats_acked"].as_u64().unwrap() + 5,
        "{now}"
    );
    assert!(count(&agent.stderr(), "device certificate renewed") >= 3);
    assert!(count(&cloud.logs.all(), "device certificate renewed") >= 3);
    let listed = cloud.device(&id).unwrap();
    assert_eq!(listed["connected"], true);
    assert_ne!(listed["certificate_expires_at"], expiry0);
    assert!(!agent.stderr().contains(&bob_key));
    stop_agent(&mut agent);
    assert!(pair_matches(&machine.state_dir()));
}

#[test]
fn renews_after_expiry_within_the_grace_and_is_refused_past_it() {
    let cloud = Cloud::start_with(&["--device-cert-lifetime", "4s", "--renewal-grace", "6s"]);
    let (key, _) = cloud.create_key("fleet", "enroll", None);
    let (machine, id) = enrolled(&cloud, &key, "sleepy-robot");
    let before = cert_of(&machine).unwrap();

    // Powered off past expiry (4 s), back within the grace (4 + 6 s).
    std::thread::sleep(Duration::from_secs(6));
    let logs = Logs::new();
    let mut agent = machine.agent(&logs);
    wait_connected(
        &machine,
        agent.pid(),
        "the agent to reconnect within the grace",
    );
    wait_for(TIMEOUT, "the expired certificate to be renewed", || {
        cert_of(&machine).filter(|c| c.0 != before.0)
    });
    assert!(count(&agent.stderr(), "device certificate renewed") >= 1);
    assert_eq!(cloud.device(&id).unwrap()["connected"], true);
    stop_agent(&mut agent);
    assert!(pair_matches(&machine.state_dir()));

    // Off again, now past expiry plus the grace.
    std::thread::sleep(Duration::from_secs(11));
    let mut agent = machine.agent(&logs);
    let refused = wait_for(TIMEOUT, "a clear refusal", || {
        let s = machine.status_file();
        (s["pid"].as_u64() == Some(u64::from(agent.pid())) && s["state"] == "backoff").then_some(s)
    });
    let why = refused["last_error"]
        .as_str()
        .unwrap_or_default()
        .to_owned();
    assert!(why.contains("beyond the renewal grace"), "{why}");
    assert!(why.contains("heex-installer --force"), "{why}");
    assert!(agent.stderr().contains("beyond the renewal grace"));
    // No tight retry loop: one attempt in the next few seconds.
    std::thread::sleep(Duration::from_secs(3));
    assert_eq!(
        count(&agent.stderr(), "connecting to gateway"),
        1,
        "{}",
        agent.stderr()
    );
    let shown = machine.status(&logs);
    assert!(
        shown.to_string().contains("beyond the renewal grace"),
        "heex-agent status: {shown}"
    );
    stop_agent(&mut agent);
}

// ---------------------------------------------------------------- revocation

#[test]
fn revoking_a_device_closes_its_session_at_once_and_spares_the_others() {
    let cloud = Cloud::start_with(&["--device-cert-lifetime", "1h"]);
    let (key, _) = cloud.create_key("fleet", "enroll", None);
    let (a, a_id) = enrolled(&cloud, &key, "robot-a");
    let (b, b_id) = enrolled(&cloud, &key, "robot-b");
    let logs = Logs::new();
    let mut agent_a = a.agent(&logs);
    let mut agent_b = b.agent(&logs);
    wait_connected(&a, agent_a.pid(), "robot-a to connect");
    let b_before = wait_connected(&b, agent_b.pid(), "robot-b to connect");

    // Not revoked yet: deleting is refused with a clear message.
    let out = heex(&cloud, &["devices", "delete", &a_id]);
    assert!(!out.status.success());
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("not revoked"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );

    let out = heex(&cloud, &["devices", "revoke", &a_id]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let revoked_at = Instant::now();
    wait_for(Duration::from_secs(1), "robot-a's session to close", || {
        (a.status_file()["state"] != "connected").then_some(())
    });
    let closed_after = revoked_at.elapsed();
    assert!(closed_after < Duration::from_secs(1), "{closed_after:?}");
    wait_for(TIMEOUT, "robot-a to report the revocation", || {
        let s = a.status_file();
        s["last_error"]
            .as_str()
            .is_some_and(|e| e.contains("revoked") && e.contains("reinstall"))
            .then_some(())
    });
    let listed = cloud.device(&a_id).unwrap();
    assert_eq!(listed["connected"], false);
    assert!(listed["revoked_at"].is_string());
    // No hammering: the agent waits long before trying again.
    std::thread::sleep(Duration::from_secs(3));
    let attempts = count(&agent_a.stderr(), "connecting to gateway");
    assert_eq!(attempts, 1, "{}", agent_a.stderr());
    // A fresh start is refused too.
    stop_agent(&mut agent_a);
    let mut agent_a = a.agent(&logs);
    wait_for(TIMEOUT, "the restarted agent to be refused", || {
        agent_a
            .stderr()
            .contains("this device was revoked")
            .then_some(())
    });
    assert_ne!(a.status_file()["state"], "connected");
    stop_agent(&mut agent_a);

    // The other device never noticed.
    let b_now = b.status_file();
    assert_eq!(b_now["state"], "connected");
    assert_eq!(b_now["sessions"], b_before["sessions"]);
    assert_eq!(cloud.device(&b_id).unwrap()["connected"], true);

    // Rename and relabel, then delete the revoked device.
    let out = heex(&cloud, &["devices", "rename", &b_id, "robot-b2"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let out = heex(&cloud, &["devices", "label", &b_id, "site=lab", "team=arm"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let listed = cloud.device(&b_id).unwrap();
    assert_eq!(listed["name"], "robot-b2");
    assert_eq!(listed["labels"], json!({"site": "lab", "team": "arm"}));
    let (status, body) = request(
        &cloud,
        reqwest::Method::PATCH,
        &format!("/v1/devices/{b_id}"),
        Some(json!({"labels": {"bad key": "x"}})),
    );
    assert_eq!(status, 400, "{body}");
    let out = heex(&cloud, &["devices", "delete", &a_id]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(cloud.device(&a_id).is_none());
    let (status, _) = request(
        &cloud,
        reqwest::Method::DELETE,
        &format!("/v1/devices/{a_id}"),
        None,
    );
    assert_eq!(status, 404);
    let (status, audit) = cloud.get("/v1/audit", &cloud.owner_key);
    if status == 200 {
        let text = audit.to_string();
        for action in ["device.revoke", "device.update", "device.delete"] {
            assert!(text.contains(action), "{action} missing from {text}");
        }
    }
    stop_agent(&mut agent_b);
}

// ---------------------------------------------------------------- crash safety

#[test]
fn kill_9_during_renewals_always_leaves_a_usable_pair() {
    let cloud = Cloud::start_with(&["--device-cert-lifetime", "3s", "--renewal-grace", "60s"]);
    let (key, _) = cloud.create_key("fleet", "enroll", None);
    let (machine, _id) = enrolled(&cloud, &key, "crashy-robot");
    let logs = Logs::new();
    let mut renewals = 0;
    for round in 0..10 {
        let mut agent = machine.agent(&logs);
        wait_connected(
            &machine,
            agent.pid(),
            &format!("round {round}: the agent to connect"),
        );
        // Renewals come every 2.1 to 2.7 s; kill at any point of that.
        std::thread::sleep(Duration::from_millis(random_below(2700)));
        agent.kill9();
        renewals += count(&agent.stderr(), "device certificate renewed");
    }
    // One last start: the files it finds are a usable, matching pair.
    let mut agent = machine.agent(&logs);
    wait_connected(
        &machine,
        agent.pid(),
        "the agent to connect after the last kill",
    );
    stop_agent(&mut agent);
    assert!(pair_matches(&machine.state_dir()));
    assert!(
        renewals >= 3,
        "only {renewals} renewals happened between kills"
    );
}

/// The window a kill -9 can hit in a renewal, made exact: the cloud recorded the renewed
/// certificate and the agent died before installing it. After a real renewal, the machine's
/// disk is put back to the certificate it renewed from, with the renewed certificate's key
/// kept as the request's (`device.key.pending`, as the agent writes it before sending its
/// CSR). The restarted agent connects on the old certificate (within the overlap), asks
/// again at once for the kept key, and the cloud answers that repeat: the machine ends on
/// the cloud's current certificate, for the kept key.
#[test]
fn an_agent_killed_before_installing_a_recorded_renewal_renews_again_for_the_same_key() {
    let cloud = Cloud::start_with(&["--device-cert-lifetime", "8s", "--renewal-grace", "60s"]);
    let (machine, id) = enrolled(&cloud, &cloud.owner_key.clone(), "interrupted-robot");
    let state = machine.state_dir();
    let (old_cert, old_key) = (
        fs::read(state.join("device.crt")).unwrap(),
        fs::read(state.join("device.key")).unwrap(),
    );
    let old_serial = serial_in(&state);
    let logs = Logs::new();
    let mut agent = machine.agent(&logs);
    wait_connected(&machine, agent.pid(), "the agent to connect");
    wait_for(TIMEOUT, "the agent to renew", || {
        (cert_of(&machine).is_some() && serial_in(&state) != old_serial).then_some(())
    });
    // The next renewal is seconds away: stopped now, the files are the first renewal's.
    stop_agent(&mut agent);
    let recorded = serial_in(&state);
    assert_eq!(cloud.device(&id).unwrap()["certificate_serial"], recorded);
    let kept_key = fs::read(state.join("device.key")).unwrap();
    fs::write(state.join("device.key.pending"), &kept_key).unwrap();
    fs::write(state.join("device.crt"), &old_cert).unwrap();
    fs::write(state.join("device.key"), &old_key).unwrap();

    let mut agent = machine.agent(&logs);
    let renewed = wait_for(TIMEOUT, "the agent to renew again for the kept key", || {
        let serial = serial_in(&state);
        (serial != old_serial && serial != recorded).then_some(serial)
    });
    wait_connected(&machine, agent.pid(), "the agent to stay connected");
    let log = agent.stderr();
    assert!(log.contains("renewal was interrupted"), "{log}");
    assert!(
        cloud
            .proc()
            .stderr()
            .contains("renewal repeated from the superseded certificate for the same key"),
        "{}",
        cloud.proc().stderr()
    );
    assert_eq!(fs::read(state.join("device.key")).unwrap(), kept_key);
    assert!(pair_matches(&state));
    assert!(!state.join("device.key.pending").exists());
    let listed = cloud.device(&id).unwrap();
    assert_eq!(listed["certificate_serial"], renewed, "{listed}");
    stop_agent(&mut agent);
}

// ---------------------------------------------------------------- superseded certificates

/// Lowercase hex serial of the certificate in `dir`, as the cloud records it.
fn serial_in(dir: &Path) -> String {
    let pem = fs::read(dir.join("device.crt")).unwrap();
    let (_, block) = x509_parser::pem::parse_x509_pem(&pem).unwrap();
    let (_, cert) = x509_parser::parse_x509_certificate(&block.contents).unwrap();
    cert.raw_serial()
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// A copy of device.crt/device.key taken before the agent renewed (a backup, a stolen
/// disk) may not renew itself during the short overlap and is refused after it; the real
/// agent keeps working, and the cloud shows which serial its session uses.
#[test]
fn a_copy_of_a_superseded_certificate_cannot_renew_and_is_refused_after_the_overlap() {
    let cloud = Cloud::start_with(&[
        "--device-cert-lifetime",
        "10s",
        "--renewal-grace",
        "20s",
        "--cert-overlap",
        "3s",
    ]);
    let (machine, id) = enrolled(&cloud, &cloud.owner_key.clone(), "copied-robot");
    let copy = tempfile::tempdir().unwrap();
    for file in ["device.crt", "device.key"] {
        fs::copy(machine.state_dir().join(file), copy.path().join(file)).unwrap();
    }
    let old_serial = serial_in(copy.path());
    assert_eq!(cloud.device(&id).unwrap()["certificate_serial"], old_serial);

    let logs = Logs::new();
    let mut agent = machine.agent(&logs);
    wait_connected(&machine, agent.pid(), "the agent to connect");
    wait_for(TIMEOUT, "the agent to renew", || {
        (cert_of(&machine).is_some() && serial_in(&machine.state_dir()) != old_serial).then_some(())
    });

    // Within the overlap the copy is admitted (a reconnect of the real agent right after
    // the renewal looks the same), but it cannot renew itself into a fresh certificate.
    let mut stolen = raw_session_from(&cloud, copy.path());
    send(&mut stolen, &hello());
    let got = recv(&mut stolen);
    assert!(matches!(got, Message::Welcome { .. }), "{got:?}");
    let csr = {
        let key = KeyPair::generate().unwrap();
        let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
        params
            .distinguished_name
            .push(DnType::CommonName, id.as_str());
        params.serialize_request(&key).unwrap().pem().unwrap()
    };
    send(&mut stolen, &Message::RenewRequest { csr_pem: csr });
    let why = closed_with(recv(&mut stolen), CloseReason::CertificateSuperseded);
    assert!(why.contains(&old_serial), "{why}");
    assert!(why.contains("only the current certificate"), "{why}");

    // Past the overlap the copy is refused before any frame.
    std::thread::sleep(Duration::from_millis(3500));
    let mut stolen = raw_session_from(&cloud, copy.path());
    let why = closed_with(recv(&mut stolen), CloseReason::CertificateSuperseded);
    assert!(why.contains(&old_serial), "{why}");

    // The real agent (replaced for a moment by the copy) is back on its current certificate.
    let listed = wait_for(
        TIMEOUT,
        "the agent's session on its current certificate",
        || {
            let d = cloud.device(&id)?;
            (d["connected"] == true
                && d["session_serial"].is_string()
                && d["session_serial"] == d["certificate_serial"])
                .then_some(d)
        },
    );
    assert_ne!(listed["certificate_serial"], old_serial);
    wait_connected(&machine, agent.pid(), "the agent to stay connected");
    let out = heex(&cloud, &["devices", "show", &id]);
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{text}");
    assert!(text.contains("Session cert"), "{text}");
    assert!(text.contains("current certificate"), "{text}");
    stop_agent(&mut agent);
}

// ---------------------------------------------------------------- revocation before Hello

/// A spare connection that finished TLS (and the device check) but never said Hello does
/// not survive revocation: its Hello afterwards is answered with Close(DeviceRevoked),
/// never Welcome, and the device does not show as connected.
#[test]
fn a_connection_waiting_for_hello_does_not_survive_revocation() {
    let cloud = Cloud::start();
    let (machine, id) = enrolled(&cloud, &cloud.owner_key.clone(), "spare-robot");
    let mut spare = raw_session(&cloud, &machine);
    // Let the gateway finish its device check on the spare connection.
    std::thread::sleep(Duration::from_millis(300));
    let (status, body) = cloud.post(
        &format!("/v1/devices/{id}/revoke"),
        &cloud.owner_key,
        &Value::Null,
    );
    assert_eq!(status, 200, "{body}");
    // The gateway closes it at once; a Hello sent now finds it closed, never a Welcome.
    let _ = spare.write_all(&frame::to_frame(&hello()).unwrap());
    let _ = spare.flush();
    let why = closed_with(recv(&mut spare), CloseReason::DeviceRevoked);
    assert!(why.contains("revoked"), "{why}");
    let mut rest = Vec::new();
    let _ = spare.read_to_end(&mut rest);
    assert!(rest.is_empty(), "more after Close: {rest:?}");
    let listed = cloud.device(&id).unwrap();
    assert_eq!(listed["connected"], false, "{listed}");
    assert!(!listed["revoked_at"].is_null());
}
