//! End-to-end tests of the agent daemon and the mTLS gateway: the real `heex-cloud`,
//! `heex-installer` and `heex-agent` binaries as separate processes on loopback.
//!
//! They check the promise the design makes: once enrolled, a machine holds its session with
//! its own certificate, so revoking or expiring the API key that enrolled it changes nothing;
//! the agent survives the cloud going away; the gateway admits only certificates of its own CA,
//! over TLS 1.3, and one misbehaving client costs only its own session.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::fs;
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::os::unix::net::UnixDatagram;
use std::path::Path;
use std::process::Command;
use std::sync::Arc;
use std::time::{Duration, Instant};

use heex_proto::frame::{self, CloseReason, Message};
use heex_tests::{device_command, wait_for, Cloud, Logs, Machine, Proc};
use rcgen::{
    BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair,
    SanType,
};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer, ServerName};
use rustls::{ClientConfig, ClientConnection, RootCertStore, StreamOwned};
use serde_json::Value;
use time::format_description::well_known::Rfc3339;
use time::OffsetDateTime;

const TIMEOUT: Duration = Duration::from_secs(30);

// ---------------------------------------------------------------- helpers

/// An enrolled machine whose agent uses fast timings.
fn enrolled(cloud: &Cloud, key: &str, name: &str) -> (Machine, String) {
    Machine::enrolled(cloud, key, name, ("250ms", "2s"))
}

fn time_of(v: &Value) -> Option<OffsetDateTime> {
    OffsetDateTime::parse(v.as_str()?, &Rfc3339).ok()
}

/// Waits until the daemon reports a session with at least `sessions` established and an
/// acknowledged heartbeat; returns the status.
fn wait_connected(machine: &Machine, sessions: u64, what: &str) -> Value {
    wait_for(TIMEOUT, what, || {
        let s = machine.status_file();
        (s["state"] == "connected"
            && s["sessions"].as_u64() >= Some(sessions)
            && !s["last_heartbeat_ack"].is_null())
        .then_some(s)
    })
}

/// Waits until the cloud lists `id` as connected (or not).
fn wait_listed(cloud: &Cloud, id: &str, connected: bool) -> Value {
    wait_for(
        TIMEOUT,
        &format!("{id} connected={connected} in /v1/devices"),
        || {
            cloud
                .device(id)
                .filter(|d| d["connected"].as_bool() == Some(connected))
        },
    )
}

/// A cloud on IPv6 loopback that advertises its gateway as `[::1]:PORT`: a machine enrolls
/// over IPv6 and its agent connects, because the address the cloud accepts is one the
/// installer and the agent read the same way. The unbracketed form is refused at start,
/// with the fix.
#[test]
fn a_cloud_on_ipv6_loopback_advertising_its_gateway_connects_machines() {
    let port = std::net::TcpListener::bind("[::1]:0")
        .expect("IPv6 loopback (::1) is needed by this test")
        .local_addr()
        .unwrap()
        .port();
    let advertised = format!("[::1]:{port}");
    let mut cloud = Cloud::start_at(
        "[::1]:0".parse().unwrap(),
        advertised.parse().unwrap(),
        &["--gateway-advertise", &advertised],
    );
    assert!(
        cloud.api_url.starts_with("https://[::1]:"),
        "{}",
        cloud.api_url
    );
    let (machine, id) = enrolled(&cloud, &cloud.owner_key.clone(), "v6-robot");
    let toml = fs::read_to_string(machine.agent_config()).unwrap();
    assert!(
        toml.contains(&format!("gateway = \"{advertised}\"")),
        "{toml}"
    );
    let mut agent = machine.agent(&cloud.logs);
    wait_connected(&machine, 1, "the agent to connect over IPv6");
    wait_listed(&cloud, &id, true);
    agent.signal("TERM");
    agent
        .wait_timeout(TIMEOUT)
        .expect("the agent stops on SIGTERM");

    cloud.stop();
    let out = cloud.logs.run(
        "cloud-serve-unbracketed",
        cloud
            .command()
            .arg("serve")
            .arg("--data-dir")
            .arg(cloud.data())
            .args(["--listen", "[::1]:0", "--gateway-listen", "[::1]:0"])
            .args(["--gateway-advertise", &format!("::1:{port}")]),
        TIMEOUT,
    );
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(64), "{stderr}");
    assert!(
        stderr.contains("without brackets") && stderr.contains("[::1]:8444"),
        "{stderr}"
    );
}

/// Gateway log lines "session accepted" naming `id`, over every cloud process so far.
fn sessions_accepted(cloud: &Cloud, id: &str) -> usize {
    cloud
        .logs
        .all()
        .lines()
        .filter(|l| l.contains("session accepted") && l.contains(id))
        .count()
}

/// Waits until the daemon has had more heartbeats acknowledged than `after` on the
/// same session, proving the session is alive, not merely listed.
fn wait_acks_advance(machine: &Machine, after: &Value) -> Value {
    let acked = after["heartbeats_acked"].as_u64().unwrap();
    let last = time_of(&after["last_heartbeat_ack"]).unwrap();
    wait_for(TIMEOUT, "heartbeats to keep being acknowledged", || {
        let s = machine.status_file();
        (s["heartbeats_acked"].as_u64()? >= acked + 3 && time_of(&s["last_heartbeat_ack"])? > last)
            .then_some(s)
    })
}

fn stop_agent(agent: &mut Proc) {
    agent.signal("TERM");
    let status = agent
        .wait_timeout(Duration::from_secs(10))
        .expect("heex-agent exits after SIGTERM");
    assert!(status.success(), "heex-agent exited with {status}");
}

/// One log line of a daemon: its timestamp and text.
struct Line {
    at: OffsetDateTime,
    text: String,
}

/// Lines of `log` containing `needle`, with the timestamps tracing put at their start.
fn lines_with(log: &str, needle: &str) -> Vec<Line> {
    log.lines()
        .filter(|l| l.contains(needle))
        .filter_map(|l| {
            let at = OffsetDateTime::parse(l.split_whitespace().next()?, &Rfc3339).ok()?;
            Some(Line {
                at,
                text: l.to_owned(),
            })
        })
        .collect()
}

/// The numeric value of `name=` in a log line.
fn field(line: &str, name: &str) -> Option<u64> {
    let pat = format!("{name}=");
    let rest = &line[line.find(&pat)? + pat.len()..];
    rest.split(|c: char| !c.is_ascii_digit())
        .next()?
        .parse()
        .ok()
}

// ---------------------------------------------------------------- raw TLS clients

/// A client configuration: trusting `ca`, presenting `identity` if any.
fn client_config(
    ca: &CertificateDer<'static>,
    identity: Option<(Vec<CertificateDer<'static>>, PrivateKeyDer<'static>)>,
    versions: &[&'static rustls::SupportedProtocolVersion],
) -> Arc<ClientConfig> {
    let mut roots = RootCertStore::empty();
    roots.add(ca.clone()).unwrap();
    let builder =
        ClientConfig::builder_with_provider(Arc::new(rustls::crypto::ring::default_provider()))
            .with_protocol_versions(versions)
            .unwrap()
            .with_root_certificates(roots);
    let mut config = match identity {
        Some((chain, key)) => builder.with_client_auth_cert(chain, key).unwrap(),
        None => builder.with_no_client_auth(),
    };
    config.alpn_protocols = vec![heex_proto::ALPN.to_vec()];
    Arc::new(config)
}

/// The credentials an enrolled machine holds.
fn machine_identity(machine: &Machine) -> (Vec<CertificateDer<'static>>, PrivateKeyDer<'static>) {
    let chain = CertificateDer::pem_file_iter(machine.state_dir().join("device.crt"))
        .unwrap()
        .collect::<Result<Vec<_>, _>>()
        .unwrap();
    let key = PrivateKeyDer::from_pem_file(machine.state_dir().join("device.key")).unwrap();
    (chain, key)
}

fn cloud_ca(cloud: &Cloud) -> CertificateDer<'static> {
    CertificateDer::from_pem_file(cloud.ca_file()).unwrap()
}

type Tls = StreamOwned<ClientConnection, TcpStream>;

/// Connects and completes the TLS handshake.
fn tls_connect(addr: SocketAddr, config: Arc<ClientConfig>) -> std::io::Result<Tls> {
    let tcp = TcpStream::connect(addr)?;
    tcp.set_read_timeout(Some(Duration::from_secs(10)))?;
    let name = ServerName::try_from("127.0.0.1").unwrap().to_owned();
    let conn = ClientConnection::new(config, name).map_err(std::io::Error::other)?;
    let mut tls = StreamOwned::new(conn, tcp);
    while tls.conn.is_handshaking() {
        tls.conn.complete_io(&mut tls.sock)?;
    }
    Ok(tls)
}

fn send(tls: &mut Tls, msg: &Message) -> std::io::Result<()> {
    tls.write_all(&frame::to_frame(msg).unwrap())?;
    tls.flush()
}

/// The next frame; an error when the connection fails or ends first.
fn recv(tls: &mut Tls) -> std::io::Result<Message> {
    let mut header = [0u8; frame::HEADER_LEN];
    tls.read_exact(&mut header)?;
    let len = frame::payload_len(header).map_err(std::io::Error::other)?;
    let mut payload = vec![0; len];
    tls.read_exact(&mut payload)?;
    frame::decode_payload(&payload).map_err(std::io::Error::other)
}

fn hello() -> Message {
    Message::Hello {
        agent_version: "e2e".into(),
        facts: Default::default(),
        next_report_seq: 0,
        ca_bundle: None,
    }
}

/// True when the gateway refuses this configuration: at the handshake, or (TLS 1.3 sends the
/// client-certificate verdict after the client's Finished) at the first exchange.
fn refused(addr: SocketAddr, config: Arc<ClientConfig>) -> bool {
    let Ok(mut tls) = tls_connect(addr, config) else {
        return true;
    };
    if send(&mut tls, &hello()).is_err() {
        return true;
    }
    recv(&mut tls).is_err()
}

/// True when the peer has closed the connection (EOF or error) within the read timeout.
fn closed(tls: &mut Tls) -> bool {
    let mut byte = [0u8; 1];
    matches!(tls.read(&mut byte), Ok(0) | Err(_))
}

fn foreign_identity(device_id: &str) -> (Vec<CertificateDer<'static>>, PrivateKeyDer<'static>) {
    let ca_key = KeyPair::generate().unwrap();
    let mut ca = CertificateParams::new(Vec::<String>::new()).unwrap();
    ca.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    ca.distinguished_name
        .push(DnType::CommonName, "Impostor CA");
    let ca_cert = ca.self_signed(&ca_key).unwrap();
    let issuer = Issuer::new(ca, ca_key);
    let key = KeyPair::generate().unwrap();
    let mut leaf = CertificateParams::new(Vec::<String>::new()).unwrap();
    leaf.distinguished_name.push(DnType::CommonName, device_id);
    leaf.subject_alt_names = vec![SanType::URI(
        format!("spiffe://heex.local/ws/ws_AAAAAAAAAAAA/device/{device_id}")
            .try_into()
            .unwrap(),
    )];
    leaf.extended_key_usages = vec![ExtendedKeyUsagePurpose::ClientAuth];
    let cert = leaf.signed_by(&key, &issuer).unwrap();
    (
        vec![cert.der().clone(), ca_cert.der().clone()],
        PrivatePkcs8KeyDer::from(key.serialize_der()).into(),
    )
}

// ---------------------------------------------------------------- tests

#[test]
fn enrolled_agent_connects_reports_facts_and_status() {
    let cloud = Cloud::start();
    let (machine, id) = enrolled(&cloud, &cloud.owner_key, "robot-1");
    let mut agent = machine.agent(&cloud.logs);

    let device = wait_for(
        TIMEOUT,
        "the device to be listed connected with facts",
        || {
            cloud
                .device(&id)
                .filter(|d| d["connected"] == true && d["facts"]["cpus"].as_u64().is_some())
        },
    );
    let hostname = fs::read_to_string("/proc/sys/kernel/hostname").unwrap();
    let facts = &device["facts"];
    assert_eq!(
        facts["hostname"].as_str(),
        Some(hostname.trim()),
        "{device}"
    );
    for key in [
        "os",
        "kernel",
        "arch",
        "memory_total_bytes",
        "memory_available_bytes",
        "uptime_secs",
    ] {
        assert!(!facts[key].is_null(), "fact {key} missing: {facts}");
    }
    assert_eq!(
        facts["arch"].as_str(),
        Some(heex_tests::device_arch().as_str()),
        "the agent that ran is not the build under test: {facts}"
    );
    assert!(!device["last_seen_at"].is_null());

    wait_connected(&machine, 1, "the agent to report a session");
    let status = machine.status(&cloud.logs);
    assert_eq!(status["connected"], true, "{status}");
    assert_eq!(status["device_id"], id.as_str());
    assert_eq!(status["gateway"], cloud.gateway.to_string());
    assert!(time_of(&status["connected_since"]).is_some(), "{status}");
    assert!(time_of(&status["last_heartbeat_ack"]).is_some(), "{status}");
    let expiry = time_of(&status["certificate_expires_at"]).unwrap();
    assert_eq!(
        Some(expiry),
        time_of(&device["certificate_expires_at"]),
        "status and cloud disagree on the certificate"
    );

    let human = cloud.logs.run(
        "agent-status",
        device_command("heex-agent")
            .arg("status")
            .arg("--config")
            .arg(machine.agent_config()),
        TIMEOUT,
    );
    let text = String::from_utf8_lossy(&human.stdout);
    assert!(human.status.success());
    assert!(text.contains("connected since"), "{text}");
    assert!(text.contains(&id), "{text}");

    stop_agent(&mut agent);
    let status = machine.status(&cloud.logs);
    assert_eq!(status["connected"], false, "{status}");
    assert_eq!(status["state"], "stopped", "{status}");
}

/// Revokes or expires the enrolling key while the agent runs, and checks the session is
/// untouched; then the agent restarts and connects again with the same certificate.
fn assert_session_outlives_key(cloud: &Cloud, key: &str, wait_key_dead: impl FnOnce()) {
    let (machine, id) = enrolled(cloud, key, "robot-key");
    let mut agent = machine.agent(&cloud.logs);
    let before = wait_connected(&machine, 1, "the agent to connect");
    wait_listed(cloud, &id, true);

    wait_key_dead();

    let after = wait_acks_advance(&machine, &before);
    assert_eq!(
        after["sessions"], 1,
        "the session was re-established: {after}"
    );
    assert_eq!(
        after["connected_since"], before["connected_since"],
        "the session changed"
    );
    assert_eq!(
        sessions_accepted(cloud, &id),
        1,
        "gateway saw a new session"
    );
    wait_listed(cloud, &id, true);
    assert!(agent.try_wait().is_none(), "agent exited");

    // A restarted agent connects again: the certificate alone is enough.
    stop_agent(&mut agent);
    wait_listed(cloud, &id, false);
    let _agent = machine.agent(&cloud.logs);
    wait_connected(&machine, 1, "the restarted agent to connect");
    wait_listed(cloud, &id, true);
    assert_eq!(sessions_accepted(cloud, &id), 2);
}

#[test]
fn revoking_the_enrolling_key_does_not_disturb_the_machine() {
    let cloud = Cloud::start();
    let (key, key_id) = cloud.create_key("fleet-a", "enroll", None);
    assert_session_outlives_key(&cloud, &key, || {
        cloud.revoke_key(&key_id);
        let (status, body) = cloud.get("/v1/whoami", &key);
        assert_eq!(status, 401, "{body}");
        assert_eq!(body["error"], "key_revoked", "{body}");
    });
}

#[test]
fn expiry_of_the_enrolling_key_does_not_disturb_the_machine() {
    let cloud = Cloud::start();
    let (key, _) = cloud.create_key("short-lived", "enroll", Some(2));
    assert_session_outlives_key(&cloud, &key, || {
        wait_for(TIMEOUT, "the key to expire", || {
            let (status, body) = cloud.get("/v1/whoami", &key);
            (status == 401 && body["error"] == "key_expired").then_some(())
        });
    });
}

#[test]
fn agent_reconnects_after_the_cloud_is_killed() {
    let mut cloud = Cloud::start();
    let (machine, id) = enrolled(&cloud, &cloud.owner_key, "robot-restart");
    let _agent = machine.agent(&cloud.logs);
    wait_connected(&machine, 1, "the agent to connect");

    cloud.kill9();
    wait_for(TIMEOUT, "the agent to notice", || {
        (machine.status_file()["state"] != "connected").then_some(())
    });
    cloud.serve();
    let back = Instant::now();
    let status = wait_connected(&machine, 2, "the agent to reconnect");
    // The cloud is back: the next attempt comes within the largest delay (2 s) plus the
    // time the attempt takes.
    assert!(
        back.elapsed() < Duration::from_secs(8),
        "{:?}",
        back.elapsed()
    );
    assert_eq!(status["sessions"], 2);
    wait_listed(&cloud, &id, true);
}

#[test]
fn agents_back_off_with_jitter_while_the_cloud_is_down() {
    let mut cloud = Cloud::start();
    let machines: Vec<(Machine, String)> = (0..3)
        .map(|i| enrolled(&cloud, &cloud.owner_key, &format!("robot-{i}")))
        .collect();
    let logs: Vec<Logs> = (0..3).map(|_| Logs::new()).collect();
    let agents: Vec<Proc> = machines
        .iter()
        .zip(&logs)
        .map(|((m, _), l)| m.agent(l))
        .collect();
    for (m, _) in &machines {
        wait_connected(m, 1, "every agent to connect");
    }

    // Taken before the kill: the agents log their first wait at once.
    let down_at = OffsetDateTime::now_utc();
    cloud.kill9();
    // Keep the cloud down until every agent made at least five attempts.
    wait_for(Duration::from_secs(60), "five attempts per agent", || {
        agents
            .iter()
            .all(|a| {
                lines_with(&a.stderr(), "reconnecting after backoff")
                    .iter()
                    .filter(|l| l.at > down_at)
                    .count()
                    >= 5
            })
            .then_some(())
    });
    cloud.serve();
    for (m, id) in &machines {
        wait_connected(m, 2, "every agent to reconnect");
        wait_listed(&cloud, id, true);
    }

    let mut schedules = Vec::new();
    for agent in &agents {
        let log = agent.stderr();
        let waits: Vec<Line> = lines_with(&log, "reconnecting after backoff")
            .into_iter()
            .filter(|l| l.at > down_at)
            .collect();
        let attempts: Vec<Line> = lines_with(&log, "connecting to gateway")
            .into_iter()
            .filter(|l| l.at > down_at)
            .collect();
        let delays: Vec<u64> = waits
            .iter()
            .map(|l| field(&l.text, "delay_ms").unwrap())
            .collect();
        let ceilings: Vec<u64> = waits
            .iter()
            .map(|l| field(&l.text, "ceiling_ms").unwrap())
            .collect();
        // Exponential and capped: 250, 500, 1000, 2000, 2000, ...
        for (i, c) in ceilings.iter().enumerate() {
            let want = (250u64 << i.min(16)).min(2000);
            assert_eq!(*c, want, "ceilings {ceilings:?}; log:\n{log}");
        }
        for (d, c) in delays.iter().zip(&ceilings) {
            assert!(d <= c, "delay {d} above ceiling {c}");
        }
        // Each attempt comes after its wait's delay (and not much later).
        for (w, a) in waits
            .iter()
            .zip(attempts.iter().filter(|a| a.at >= waits[0].at))
        {
            let gap = (a.at - w.at).whole_milliseconds();
            let delay = field(&w.text, "delay_ms").unwrap() as i128;
            assert!(
                gap + 5 >= delay,
                "attempt {gap} ms after a {delay} ms delay"
            );
            assert!(
                gap <= delay + 1500,
                "attempt {gap} ms after a {delay} ms delay"
            );
        }
        schedules.push(delays);
    }
    // Full jitter: the delays are not fixed steps, and no two agents share a schedule.
    for s in &schedules {
        let distinct: std::collections::HashSet<_> = s.iter().collect();
        assert!(distinct.len() >= 3, "delays look fixed: {s:?}");
    }
    assert_ne!(schedules[0][..4], schedules[1][..4]);
    assert_ne!(schedules[1][..4], schedules[2][..4]);
}

#[test]
fn gateway_admits_only_its_own_devices_over_tls13() {
    let cloud = Cloud::start();
    let (machine, id) = enrolled(&cloud, &cloud.owner_key, "robot-good");
    // Raw clients use another device's credentials, so they never replace the agent's session.
    let (probe, probe_id) = enrolled(&cloud, &cloud.owner_key, "robot-probe");
    let _agent = machine.agent(&cloud.logs);
    let before = wait_connected(&machine, 1, "the agent to connect");
    let ca = cloud_ca(&cloud);
    let gw = cloud.gateway;
    let tls13: &[&'static rustls::SupportedProtocolVersion] = &[&rustls::version::TLS13];

    // The machine's real credentials work from a plain client: the refusals below are
    // about what each one changes, not the client.
    let mut ok = tls_connect(
        gw,
        client_config(&ca, Some(machine_identity(&probe)), tls13),
    )
    .unwrap();
    send(&mut ok, &hello()).unwrap();
    assert!(matches!(recv(&mut ok).unwrap(), Message::Welcome { .. }));
    drop(ok);

    // No client certificate.
    assert!(refused(gw, client_config(&ca, None, tls13)));
    // A certificate naming the same device, signed by another CA.
    assert!(refused(
        gw,
        client_config(&ca, Some(foreign_identity(&id)), tls13)
    ));
    // TLS 1.2 only, with the real credentials.
    let tls12 = client_config(
        &ca,
        Some(machine_identity(&probe)),
        &[&rustls::version::TLS12],
    );
    assert!(tls_connect(gw, tls12).is_err());
    // The same with OpenSSL's client.
    let out = Command::new("openssl")
        .args(["s_client", "-tls1_2", "-brief", "-connect", &gw.to_string()])
        .arg("-CAfile")
        .arg(cloud.ca_file())
        .arg("-cert")
        .arg(probe.state_dir().join("device.crt"))
        .arg("-key")
        .arg(probe.state_dir().join("device.key"))
        .stdin(std::process::Stdio::null())
        .output();
    if let Ok(out) = out {
        let text = String::from_utf8_lossy(&out.stderr).to_lowercase()
            + &String::from_utf8_lossy(&out.stdout).to_lowercase();
        assert!(!out.status.success(), "openssl -tls1_2 connected: {text}");
        assert!(text.contains("alert") || text.contains("version"), "{text}");
    }

    // The agent was never disturbed.
    let after = wait_acks_advance(&machine, &before);
    assert_eq!(after["sessions"], 1);
    assert_eq!(sessions_accepted(&cloud, &id), 1, "the impostor got in");
    assert_eq!(
        sessions_accepted(&cloud, &probe_id),
        1,
        "only TLS 1.3 got in"
    );
}

#[test]
fn a_misbehaving_client_loses_only_its_own_session() {
    let cloud = Cloud::start();
    let (good, good_id) = enrolled(&cloud, &cloud.owner_key, "robot-good");
    let (rogue, rogue_id) = enrolled(&cloud, &cloud.owner_key, "robot-rogue");
    let _agent = good.agent(&cloud.logs);
    let before = wait_connected(&good, 1, "the agent to connect");
    let config = client_config(
        &cloud_ca(&cloud),
        Some(machine_identity(&rogue)),
        &[&rustls::version::TLS13],
    );

    // Garbage after Welcome.
    let mut tls = tls_connect(cloud.gateway, config.clone()).unwrap();
    send(&mut tls, &hello()).unwrap();
    assert!(matches!(recv(&mut tls).unwrap(), Message::Welcome { .. }));
    wait_listed(&cloud, &rogue_id, true);
    tls.write_all(&[0, 0, 0, 6, b'{', 0xff, b'x', 0, 0, 0])
        .unwrap();
    tls.flush().unwrap();
    assert!(matches!(
        recv(&mut tls),
        Ok(Message::Close {
            reason: CloseReason::ProtocolError,
            ..
        })
    ));
    assert!(closed(&mut tls));
    wait_listed(&cloud, &rogue_id, false);

    // An oversized length prefix.
    let mut tls = tls_connect(cloud.gateway, config.clone()).unwrap();
    send(&mut tls, &hello()).unwrap();
    assert!(matches!(recv(&mut tls).unwrap(), Message::Welcome { .. }));
    tls.write_all(&u32::MAX.to_be_bytes()).unwrap();
    tls.flush().unwrap();
    assert!(matches!(
        recv(&mut tls),
        Ok(Message::Close {
            reason: CloseReason::ProtocolError,
            ..
        })
    ));
    assert!(closed(&mut tls));

    // Raw garbage instead of a first frame.
    let mut tls = tls_connect(cloud.gateway, config).unwrap();
    tls.write_all(b"\x00\x00\x00\x02{}").unwrap();
    tls.flush().unwrap();
    assert!(matches!(
        recv(&mut tls),
        Ok(Message::Close {
            reason: CloseReason::ProtocolError,
            ..
        })
    ));

    // The agent's session carried on throughout.
    let after = wait_acks_advance(&good, &before);
    assert_eq!(after["sessions"], 1);
    assert_eq!(after["connected_since"], before["connected_since"]);
    wait_listed(&cloud, &good_id, true);
}

/// What the agent sent to its NOTIFY_SOCKET so far.
struct Notifications {
    sock: UnixDatagram,
    seen: String,
}

impl Notifications {
    fn until(&mut self, what: &str, done: impl Fn(&str) -> bool) {
        let deadline = Instant::now() + TIMEOUT;
        let mut buf = [0u8; 4096];
        while !done(&self.seen) {
            assert!(Instant::now() < deadline, "no {what}; got:\n{}", self.seen);
            let n = self.sock.recv(&mut buf).expect("a notification");
            self.seen.push_str(&String::from_utf8_lossy(&buf[..n]));
        }
    }
}

#[test]
fn systemd_notifications_and_clean_stop() {
    let cloud = Cloud::start();
    let (machine, id) = enrolled(&cloud, &cloud.owner_key, "robot-systemd");
    let sock_dir = tempfile::tempdir().unwrap();
    let sock_path = sock_dir.path().join("notify.sock");
    let sock = UnixDatagram::bind(&sock_path).unwrap();
    sock.set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    let mut agent = machine.agent_with(&cloud.logs, |cmd| {
        cmd.env("NOTIFY_SOCKET", &sock_path)
            .env("WATCHDOG_USEC", "1000000");
    });

    let mut notes = Notifications {
        sock,
        seen: String::new(),
    };
    notes.until("READY=1", |s| s.contains("READY=1"));
    notes.until("STATUS=connected", |s| s.contains("STATUS=connected"));
    let started = Instant::now();
    let before = notes.seen.matches("WATCHDOG=1").count();
    notes.until("three watchdog pings", |s| {
        s.matches("WATCHDOG=1").count() >= before + 3
    });
    // Pings at half of WATCHDOG_USEC (1 s): three take about 1.5 s.
    let took = started.elapsed();
    assert!(took < Duration::from_secs(4), "{took:?}");
    wait_listed(&cloud, &id, true);

    agent.signal("TERM");
    notes.until("STOPPING=1", |s| s.contains("STOPPING=1"));
    let status = agent
        .wait_timeout(Duration::from_secs(10))
        .expect("heex-agent exits after SIGTERM");
    assert!(status.success(), "exit status {status}");
    // The agent said Close: the gateway drops the session at once (no idle timeout).
    let stopped = Instant::now();
    wait_listed(&cloud, &id, false);
    assert!(stopped.elapsed() < Duration::from_secs(5));
    let gateway_log = cloud.logs.all();
    assert!(
        gateway_log
            .lines()
            .any(|l| l.contains("session closed by agent")
                && l.contains(&id)
                && l.contains("Shutdown")),
        "no Close(Shutdown) in the gateway log"
    );
}

#[test]
fn agent_explains_missing_configuration_and_credentials() {
    let logs = Logs::new();
    let dir = tempfile::tempdir().unwrap();
    let run = |args: &[&str], config: &Path| {
        logs.run(
            "agent",
            device_command("heex-agent")
                .args(args)
                .arg("--config")
                .arg(config)
                .env_remove("NOTIFY_SOCKET"),
            TIMEOUT,
        )
    };

    let missing = dir.path().join("agent.toml");
    let out = run(&["run"], &missing);
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(heex_proto::exit::CONFIG), "{err}");
    assert_eq!(err.trim().lines().count(), 1, "{err}");
    assert!(
        err.contains(missing.to_str().unwrap()) && err.contains("heex-installer"),
        "{err}"
    );

    let state = dir.path().join("state");
    fs::create_dir(&state).unwrap();
    fs::write(
        &missing,
        format!(
            "server = \"https://127.0.0.1:1\"\ngateway = \"127.0.0.1:2\"\n\
             device_id = \"dev_AAAAAAAAAAAAAAAAAAAA\"\nstate_dir = \"{}\"\n",
            state.display()
        ),
    )
    .unwrap();
    let out = run(&["run"], &missing);
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(heex_proto::exit::CONFIG), "{err}");
    assert!(
        err.contains("device.key") && err.contains("heex-installer"),
        "{err}"
    );
    assert_eq!(err.trim().lines().count(), 1, "{err}");

    fs::write(&missing, "server = \"https://x:1\"\nsurprise = 1\n").unwrap();
    let out = run(&["run"], &missing);
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(heex_proto::exit::CONFIG), "{err}");
    assert!(err.contains("surprise"), "{err}");

    let out = logs.run(
        "agent",
        device_command("heex-agent").arg("run").arg("--bogus"),
        TIMEOUT,
    );
    assert_eq!(out.status.code(), Some(heex_proto::exit::USAGE));
    let out = logs.run("agent", device_command("heex-agent").arg("--help"), TIMEOUT);
    assert_eq!(out.status.code(), Some(0));
}
