//! End-to-end tests of hostile input from devices and people: terminal escapes and bidi or
//! zero-width characters in facts, names, labels and emails; oversized facts; directories
//! others can write into; secrets kept off the command line. Real `heex-cloud`,
//! `heex-installer` and `heex` processes, and raw TLS sessions to the gateway.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::fs::{self, Permissions};
use std::io::{Read, Write};
use std::net::TcpStream;
use std::os::unix::fs::PermissionsExt;
use std::process::{Command, Output, Stdio};
use std::sync::Arc;
use std::time::Duration;

use heex_proto::frame::{self, CloseReason, Message};
use heex_tests::{bin, token, Cloud, Machine};
use rcgen::{CertificateParams, DnType, KeyPair};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName};
use rustls::{ClientConfig, ClientConnection, RootCertStore, StreamOwned};
use serde_json::{json, Value};

const TIMEOUT: Duration = Duration::from_secs(60);

/// OSC 52 (write the clipboard), a screen clear, a forged field line and a bidi override.
const HOSTILE: &str = "robot\x1b]52;c;ZXZpbA==\x07\x1b[2J\nName: forged\u{202E}gpj.exe";

/// Characters that must never reach the terminal from server data: every C0 control but the
/// line break, DEL, C1 controls, bidi controls, zero-width characters, separators, BOM.
fn is_dangerous(c: char) -> bool {
    c != '\n' && heex_proto::text::is_control_or_format(c)
}

fn text(out: &Output) -> String {
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn describe(out: &Output) -> String {
    format!(
        "status {}\n--- stdout\n{}--- stderr\n{}",
        out.status,
        text(out),
        String::from_utf8_lossy(&out.stderr)
    )
}

/// `heex ARGS` with the owner's key in the environment, and `extra` variables.
fn heex_with(cloud: &Cloud, args: &[&str], extra: &[(&str, &str)], stdin: &[u8]) -> Output {
    let home = tempfile::tempdir().unwrap();
    let mut cmd = Command::new(bin("heex"));
    cmd.args(args)
        .env("HEEX_SERVER", &cloud.api_url)
        .env("HEEX_CA_FINGERPRINT", &cloud.fingerprint)
        .env("HEEX_API_KEY", &cloud.owner_key)
        .env("XDG_CONFIG_HOME", home.path())
        .env("HOME", home.path())
        .env_remove("HEEX_INVITATION_TOKEN")
        .env_remove("RUST_LOG")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    for (k, v) in extra {
        cmd.env(k, v);
    }
    let mut child = cmd.spawn().unwrap();
    child.stdin.take().unwrap().write_all(stdin).unwrap();
    child.wait_with_output().unwrap()
}

fn heex(cloud: &Cloud, args: &[&str]) -> Output {
    heex_with(cloud, args, &[], b"")
}

fn csr() -> String {
    let key = KeyPair::generate().unwrap();
    let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
    params.distinguished_name.push(DnType::CommonName, "x");
    params.serialize_request(&key).unwrap().pem().unwrap()
}

// ---------------------------------------------------------------- enrollment

#[test]
fn hostile_names_labels_and_facts_are_refused_at_enrollment() {
    let cloud = Cloud::start();
    let (key, _) = cloud.create_key("fleet", "enroll", None);
    let enroll = |body: Value| cloud.post("/v1/enroll", &key, &body);
    let body = |name: &str, labels: Value, facts: Value| json!({"csr_pem": csr(), "name": name, "labels": labels, "facts": facts});

    let (status, v) = enroll(body("r1", json!({}), json!({"hostname": HOSTILE})));
    assert_eq!(status, 400, "{v}");
    let msg = v["message"].as_str().unwrap();
    assert!(
        msg.contains("facts.hostname") && msg.contains("U+001B"),
        "{msg}"
    );

    let (status, v) = enroll(body("r1", json!({}), json!({"kernel": "6".repeat(300)})));
    assert_eq!(status, 400, "{v}");
    let msg = v["message"].as_str().unwrap();
    assert!(msg.contains("facts.kernel") && msg.contains("256"), "{msg}");

    for (name, bad) in [
        ("evil\u{202E}gpj.exe", "U+202E"),
        ("robot\u{200B}7", "U+200B"),
        ("robot\u{2066}7", "U+2066"),
        ("robot\u{FEFF}", "U+FEFF"),
    ] {
        let (status, v) = enroll(body(name, json!({}), json!({})));
        assert_eq!(status, 400, "{name:?}: {v}");
        let msg = v["message"].as_str().unwrap();
        assert!(msg.contains("name") && msg.contains(bad), "{msg}");
    }
    let (status, v) = enroll(body("r1", json!({"site": "ly\u{200F}on"}), json!({})));
    assert_eq!(status, 400, "{v}");
    assert!(v["message"].as_str().unwrap().contains("U+200F"), "{v}");

    // Nothing was stored, and the same request with clean text enrolls.
    assert!(cloud.devices().is_empty());
    let (status, v) = enroll(body(
        "robot-7",
        json!({"site": "lyon"}),
        json!({"hostname": "robot-7", "os": "Debian GNU/Linux"}),
    ));
    assert_eq!(status, 201, "{v}");
}

#[test]
fn hostile_emails_key_names_and_renames_are_refused() {
    let cloud = Cloud::start();
    let owner = &cloud.owner_key;
    let (status, v) = cloud.post(
        "/v1/invitations",
        owner,
        &json!({"email": "bob\u{202E}@example.com", "role": "member"}),
    );
    assert_eq!(status, 400, "{v}");
    assert!(v["message"].as_str().unwrap().contains("U+202E"), "{v}");
    let (status, v) = cloud.post("/v1/keys", owner, &json!({"name": "ci\u{200D}"}));
    assert_eq!(status, 400, "{v}");
    assert!(v["message"].as_str().unwrap().contains("U+200D"), "{v}");

    let (key, _) = cloud.create_key("fleet", "enroll", None);
    let machine = Machine::new();
    let id = machine.enroll(&cloud, &key, "robot-7");
    let out = heex(&cloud, &["devices", "rename", &id, "robot\u{2067}-8"]);
    assert_eq!(out.status.code(), Some(64), "{}", describe(&out));
    assert!(String::from_utf8_lossy(&out.stderr).contains("U+2067"));
    assert_eq!(cloud.device(&id).unwrap()["name"], "robot-7");

    // The installer applies the same rule before spending the key.
    let other = Machine::new();
    let out = cloud.logs.run(
        "installer",
        other
            .installer(&cloud, &key)
            .args(["--name", "evil\u{202E}7"]),
        TIMEOUT,
    );
    assert_eq!(out.status.code(), Some(64), "{}", describe(&out));
    assert!(String::from_utf8_lossy(&out.stderr).contains("U+202E"));
    assert!(!other.agent_config().exists());
}

// ---------------------------------------------------------------- gateway

type Tls = StreamOwned<ClientConnection, TcpStream>;

fn raw_session(cloud: &Cloud, machine: &Machine) -> Tls {
    let chain = CertificateDer::pem_file_iter(machine.state_dir().join("device.crt"))
        .unwrap()
        .collect::<Result<Vec<_>, _>>()
        .unwrap();
    let key = PrivateKeyDer::from_pem_file(machine.state_dir().join("device.key")).unwrap();
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
    let tcp = TcpStream::connect(cloud.gateway).unwrap();
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

fn hello(facts: Value) -> Message {
    Message::Hello {
        agent_version: "e2e".into(),
        facts: serde_json::from_value(facts).unwrap(),
        next_report_seq: 0,
        ca_bundle: None,
    }
}

fn protocol_error(msg: Message) -> String {
    match msg {
        Message::Close {
            reason: CloseReason::ProtocolError,
            message,
        } => message,
        other => panic!("expected Close(ProtocolError), got {other:?}"),
    }
}

#[test]
fn hostile_or_oversized_facts_close_the_session_at_hello_and_later() {
    let cloud = Cloud::start();
    let (key, _) = cloud.create_key("fleet", "enroll", None);
    let machine = Machine::new();
    let id = machine.enroll(&cloud, &key, "robot-7");
    let stored = || cloud.device(&id).unwrap()["facts"].clone();
    let before = stored();

    let mut tls = raw_session(&cloud, &machine);
    send(&mut tls, &hello(json!({"hostname": HOSTILE})));
    let why = protocol_error(recv(&mut tls));
    assert!(
        why.contains("facts.hostname") && why.contains("U+001B"),
        "{why}"
    );

    // 900 KiB of facts fit in one frame, not in the bounds.
    let mut tls = raw_session(&cloud, &machine);
    send(&mut tls, &hello(json!({"os": "x".repeat(900 * 1024)})));
    let why = protocol_error(recv(&mut tls));
    assert!(why.contains("facts.os") && why.contains("256"), "{why}");

    // A welcomed session that sends hostile facts later is closed the same way.
    let mut tls = raw_session(&cloud, &machine);
    send(&mut tls, &hello(json!({"hostname": "robot-7"})));
    assert!(matches!(recv(&mut tls), Message::Welcome { .. }));
    send(
        &mut tls,
        &Message::Facts {
            facts: serde_json::from_value(json!({"kernel": "6.1\u{202E}"})).unwrap(),
        },
    );
    let why = protocol_error(recv(&mut tls));
    assert!(
        why.contains("facts.kernel") && why.contains("U+202E"),
        "{why}"
    );

    let after = stored();
    assert_eq!(
        after["hostname"], "robot-7",
        "the clean Hello's facts were kept"
    );
    assert_ne!(after, Value::Null);
    let shown = after.to_string();
    assert!(
        !shown.contains("forged") && !shown.contains("xxxx"),
        "{shown}"
    );
    assert_ne!(before, Value::Null);
}

// ---------------------------------------------------------------- CLI output

#[test]
fn devices_show_and_list_escape_control_and_format_characters() {
    let mut cloud = Cloud::start();
    let (key, _) = cloud.create_key("fleet", "enroll", None);
    let machine = Machine::new();
    let id = machine.enroll(&cloud, &key, "robot-7");

    // Data stored before the cloud checked it: written straight into the store.
    cloud.stop();
    let name = "evil\u{202E}gpj.exe\x1b[2J";
    let facts = json!({"hostname": HOSTILE, "os": "Linux\u{200B}\u{2066}", "kernel": "6\u{9b}2J"})
        .to_string();
    let labels = json!({"site": "ly\u{202E}on\x1b[31m"}).to_string();
    let changed = match cloud.pg() {
        Some(pg) => pg
            .connect()
            .execute(
                "UPDATE devices SET name = $1, labels = $2, facts = $3 WHERE id = $4",
                &[&name, &labels, &facts, &id],
            )
            .unwrap(),
        None => rusqlite::Connection::open(cloud.data().join("heex.db"))
            .unwrap()
            .execute(
                "UPDATE devices SET name = ?1, labels = ?2, facts = ?3 WHERE id = ?4",
                rusqlite::params![name, labels, facts, id],
            )
            .unwrap() as u64,
    };
    assert_eq!(changed, 1);
    cloud.serve();

    let show = heex(&cloud, &["devices", "show", &id]);
    assert_eq!(show.status.code(), Some(0), "{}", describe(&show));
    let list = heex(&cloud, &["devices", "list"]);
    assert_eq!(list.status.code(), Some(0), "{}", describe(&list));
    let json_out = heex(&cloud, &["--json", "devices", "show", &id]);
    assert_eq!(json_out.status.code(), Some(0), "{}", describe(&json_out));

    for out in [&show, &list, &json_out] {
        let stdout = text(out);
        let bad: Vec<String> = stdout
            .chars()
            .filter(|&c| is_dangerous(c))
            .map(heex_proto::text::code_point)
            .collect();
        assert!(bad.is_empty(), "{bad:?} reached the terminal:\n{stdout}");
    }

    let shown = text(&show);
    assert!(
        shown.contains("robot\\x1b]52;c;ZXZpbA==\\x07\\x1b[2J\\nName: forged\\u{202e}gpj.exe"),
        "{shown}"
    );
    assert!(shown.contains("evil\\u{202e}gpj.exe\\x1b[2J"), "{shown}");
    assert!(shown.contains("ly\\u{202e}on\\x1b[31m"), "{shown}");
    assert!(shown.contains("Linux\\u{200b}\\u{2066}"), "{shown}");
    assert!(shown.contains("6\\u{9b}2J"), "{shown}");
    let name_lines = shown.lines().filter(|l| l.starts_with("Name:")).count();
    assert_eq!(name_lines, 1, "a forged field line:\n{shown}");

    let listed = text(&list);
    assert_eq!(listed.lines().count(), 2, "{listed}");
    assert!(listed.contains("evil\\u{202e}gpj.exe\\x1b[2J"), "{listed}");

    // The JSON is the same value, with the characters escaped the JSON way.
    let v: Value = serde_json::from_slice(&json_out.stdout).unwrap();
    assert_eq!(v["facts"]["hostname"], HOSTILE);
    assert_eq!(v["name"], "evil\u{202E}gpj.exe\x1b[2J");
    assert!(text(&json_out).contains("\\u202e"), "{}", text(&json_out));
}

// ---------------------------------------------------------------- invitation tokens

fn invite(cloud: &Cloud, email: &str) -> String {
    let out = heex(cloud, &["members", "invite", email, "--role", "member"]);
    assert_eq!(out.status.code(), Some(0), "{}", describe(&out));
    token(&text(&out), "heexinv_", 8 + 32).expect("an invitation token")
}

fn accept(cloud: &Cloud, args: &[&str], env: &[(&str, &str)], stdin: &[u8]) -> Output {
    let mut all = vec![
        "invitations",
        "accept",
        "--server",
        &cloud.api_url,
        "--ca-fingerprint",
        &cloud.fingerprint,
    ];
    all.extend_from_slice(args);
    let mut env = env.to_vec();
    env.push(("HEEX_API_KEY", ""));
    heex_with(cloud, &all, &env, stdin)
}

#[test]
fn invitation_tokens_come_from_stdin_or_the_environment() {
    let cloud = Cloud::start();
    let joined = |out: &Output, email: &str| {
        assert_eq!(out.status.code(), Some(0), "{}", describe(out));
        assert!(text(out).contains("Joined workspace"), "{}", describe(out));
        assert!(text(out).contains(email), "{}", describe(out));
    };

    let t = invite(&cloud, "stdin@example.com");
    let out = accept(&cloud, &["--token-stdin"], &[], format!("{t}\n").as_bytes());
    joined(&out, "stdin@example.com");

    let t = invite(&cloud, "dash@example.com");
    let out = accept(&cloud, &["-"], &[], t.as_bytes());
    joined(&out, "dash@example.com");

    let t = invite(&cloud, "env@example.com");
    let out = accept(&cloud, &[], &[("HEEX_INVITATION_TOKEN", &t)], b"");
    joined(&out, "env@example.com");

    // A used token is refused whichever way it comes.
    let out = accept(&cloud, &["--token-stdin"], &[], t.as_bytes());
    assert_eq!(out.status.code(), Some(64), "{}", describe(&out));

    // No token, and no terminal to prompt on: one line saying how to give it.
    let out = accept(&cloud, &[], &[], b"");
    assert_eq!(out.status.code(), Some(64), "{}", describe(&out));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("--token-stdin") && err.contains("HEEX_INVITATION_TOKEN"),
        "{err}"
    );
    let out = accept(&cloud, &["--token-stdin"], &[], b"\n");
    assert_eq!(out.status.code(), Some(64), "{}", describe(&out));

    // The argument still works.
    let t = invite(&cloud, "arg@example.com");
    let out = accept(&cloud, &[&t], &[], b"");
    joined(&out, "arg@example.com");
}

// ---------------------------------------------------------------- installer directories

#[test]
fn the_installer_refuses_directories_others_can_write_and_creates_its_own_exactly() {
    let cloud = Cloud::start();
    let (key, key_id) = cloud.create_key("fleet", "enroll", Some(3600));
    let uses = || {
        cloud
            .list_all("/v1/keys", &cloud.owner_key, "keys")
            .iter()
            .find(|k| k["id"] == key_id.as_str())
            .unwrap()["uses"]
            .as_u64()
            .unwrap()
    };

    for (dir_of, fix) in [
        (
            Machine::state_dir as fn(&Machine) -> std::path::PathBuf,
            "0700",
        ),
        (Machine::config_dir, "0755"),
    ] {
        for mode in [0o777, 0o1777, 0o703] {
            let machine = Machine::new();
            let dir = dir_of(&machine);
            fs::create_dir_all(&dir).unwrap();
            fs::set_permissions(&dir, Permissions::from_mode(mode)).unwrap();
            let out = cloud.logs.run(
                "installer",
                machine.installer(&cloud, &key).args(["--name", "robot"]),
                TIMEOUT,
            );
            assert_eq!(out.status.code(), Some(73), "{mode:o}: {}", describe(&out));
            let err = String::from_utf8_lossy(&out.stderr);
            let line = err.lines().last().unwrap_or_default();
            assert!(line.contains(&dir.display().to_string()), "{err}");
            assert!(
                line.contains(&format!("chmod {fix} {}", dir.display())),
                "{err}"
            );
            assert!(
                fs::read_dir(&dir).unwrap().next().is_none(),
                "nothing written"
            );
            assert!(!machine.agent_config().exists());
        }
    }
    assert_eq!(uses(), 0, "the key was not spent");

    // Directories it creates get their exact modes, whatever the umask.
    let machine = Machine::new();
    let mut cmd = machine.installer(&cloud, &key);
    cmd.args(["--name", "robot"]);
    let out = Command::new("sh")
        .arg("-c")
        .arg("umask 077 && exec \"$0\" \"$@\"")
        .arg(cmd.get_program())
        .args(cmd.get_args())
        .envs(cmd.get_envs().filter_map(|(k, v)| Some((k, v?))))
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(0), "{}", describe(&out));
    assert_eq!(heex_tests::mode(&machine.state_dir()), 0o700);
    assert_eq!(heex_tests::mode(&machine.config_dir()), 0o755);
    assert_eq!(uses(), 1);
}
