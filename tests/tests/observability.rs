//! Observing the cloud and the agent: the cloud's Prometheus metrics (`serve
//! --metrics-listen`), scraped while a real agent enrolls, connects, reports and is revoked
//! (the numbers move as the scenario does, and no scrape ever shows a key, a token or a
//! device id), and both daemons' JSON logs (`--log-format json`).
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::process::Command;
use std::time::Duration;

use heex_tests::metrics::{get, metrics_addr, scrape, value};
use heex_tests::{bin, wait_for, Cloud, Machine};

const TIMEOUT: Duration = Duration::from_secs(30);

/// No scrape shows a secret or a per-entity value.
fn assert_no_ids(text: &str, secrets: &[&str]) {
    for s in secrets {
        assert!(!text.contains(s), "the scrape shows {s:?}:\n{text}");
    }
    for line in text.lines().filter(|l| !l.starts_with('#')) {
        assert!(
            !["dev_", "ws_", "mem_", "spiffe:"]
                .iter()
                .any(|id| line.contains(id)),
            "a label looks like an id: {line}"
        );
    }
}

#[test]
fn metrics_follow_enrollment_sessions_reports_and_revocation() {
    // Device certificates short enough that the agent renews during the scenario.
    let cloud = Cloud::start_with(&[
        "--metrics-listen",
        "127.0.0.1:0",
        "--device-cert-lifetime",
        "6s",
    ]);
    let addr = metrics_addr(&cloud);

    // Only /metrics, and the API port does not serve them.
    let (status, _, _) = get(addr, "/");
    assert!(status.contains(" 404 "), "{status}");
    let (code, v) = cloud.get("/metrics", &cloud.owner_key);
    assert_eq!(code, 404, "{v}");

    let before = scrape(addr);
    assert_eq!(value(&before, "heex_gateway_sessions", &[]), 0.0);
    assert_eq!(
        value(&before, "heex_enrollments_total", &[("outcome", "ok")]),
        0.0
    );

    // A refused enrollment (revoked key) and a good one.
    let (revoked_key, revoked_id) = cloud.create_key("revoked", "enroll", None);
    cloud.revoke_key(&revoked_id);
    let refused = Machine::new();
    let out = refused
        .installer(&cloud, &revoked_key)
        .arg("--name")
        .arg("refused")
        .output()
        .unwrap();
    assert!(!out.status.success());
    let (key, key_id) = cloud.create_key("fleet", "enroll", None);
    let machine = Machine::new();
    let device = machine.enroll(&cloud, &key, "robot-1");
    machine.configure("heartbeat_interval = \"1s\"");
    machine.configure("backoff_initial = \"250ms\"");
    machine.configure("backoff_max = \"1s\"");
    let enrolled = scrape(addr);
    assert_eq!(
        value(&enrolled, "heex_enrollments_total", &[("outcome", "ok")]),
        1.0
    );
    assert_eq!(
        value(
            &enrolled,
            "heex_enrollments_total",
            &[("outcome", "key_revoked")]
        ),
        1.0
    );
    assert_eq!(
        value(
            &enrolled,
            "heex_api_requests_total",
            &[
                ("route", "/v1/enroll"),
                ("method", "POST"),
                ("status", "201")
            ]
        ),
        1.0
    );
    assert!(
        value(
            &enrolled,
            "heex_api_request_duration_seconds_count",
            &[("route", "/v1/enroll")]
        ) >= 2.0
    );
    assert!(
        value(
            &enrolled,
            "heex_store_operation_duration_seconds_count",
            &[("operation", "insert_device")]
        ) >= 1.0,
        "{enrolled}"
    );

    // The agent connects: one live session.
    let mut agent = machine.agent(&cloud.logs);
    let connected = wait_for(TIMEOUT, "the session in the metrics", || {
        let t = scrape(addr);
        (value(&t, "heex_gateway_sessions", &[]) == 1.0).then_some(t)
    });
    assert!(value(&connected, "heex_gateway_sessions_opened_total", &[]) >= 1.0);

    // A report is stored once.
    let out = Command::new(bin("heex-agent"))
        .arg("report")
        .arg("--config")
        .arg(machine.agent_config())
        .arg("--data")
        .arg(r#"{"battery": 97}"#)
        .env("RUST_LOG", "warn")
        .output()
        .unwrap();
    assert!(out.status.success(), "{out:?}");
    wait_for(TIMEOUT, "the report counted", || {
        (value(&scrape(addr), "heex_reports_stored_total", &[]) == 1.0).then_some(())
    });

    // The agent renews its certificate over the session.
    wait_for(TIMEOUT, "a renewal counted", || {
        (value(&scrape(addr), "heex_renewals_total", &[("outcome", "ok")]) >= 1.0).then_some(())
    });

    // A connection without a client certificate is a handshake failure.
    let gw = cloud.gateway.to_string();
    let s_client = Command::new("openssl")
        .args(["s_client", "-connect", &gw, "-alpn", "heex/1", "-tls1_3"])
        .stdin(std::process::Stdio::null())
        .output()
        .unwrap();
    drop(s_client);
    wait_for(TIMEOUT, "the certificate-less handshake counted", || {
        let t = scrape(addr);
        (value(
            &t,
            "heex_gateway_handshake_failures_total",
            &[("reason", "no_client_cert")],
        ) >= 1.0)
            .then_some(())
    });

    // Revoked: the session ends for that reason, and the agent's next attempts are refused.
    let out = cloud.heex(&["devices", "revoke", &device]);
    assert!(out.status.success(), "{out:?}");
    // The agent stops on its revocation; its credentials, presented again, are refused.
    let deadline = std::time::Instant::now() + TIMEOUT;
    let mut tried = false;
    let revoked = loop {
        let t = scrape(addr);
        if value(&t, "heex_gateway_sessions", &[]) == 0.0
            && value(
                &t,
                "heex_gateway_sessions_closed_total",
                &[("reason", "device_revoked")],
            ) == 1.0
            && value(
                &t,
                "heex_gateway_handshake_failures_total",
                &[("reason", "revoked")],
            ) >= 1.0
        {
            break t;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "timed out waiting for the revocation in the metrics:\n{t}"
        );
        if !tried && value(&t, "heex_gateway_sessions", &[]) == 0.0 {
            tried = true;
            let state = machine.state_dir();
            let cert = state.join("device.crt");
            let key = state.join("device.key");
            let out = Command::new("openssl")
                .args(["s_client", "-connect", &gw, "-alpn", "heex/1", "-tls1_3"])
                .arg("-cert")
                .arg(&cert)
                .arg("-key")
                .arg(&key)
                .stdin(std::process::Stdio::null())
                .output()
                .unwrap();
            drop(out);
        }
        std::thread::sleep(Duration::from_millis(50));
    };

    for text in [&before, &enrolled, &connected, &revoked] {
        assert_no_ids(
            text,
            &[
                &cloud.owner_key,
                &key,
                &key_id,
                &revoked_key,
                &revoked_id,
                &device,
            ],
        );
    }
    // Every series the packaged Grafana dashboard queries is one the cloud exports.
    let dashboard: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(
            std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
                .join("../packaging/grafana/heex-cloud.json"),
        )
        .unwrap(),
    )
    .unwrap();
    let mut queried = std::collections::BTreeSet::new();
    for panel in dashboard["panels"].as_array().unwrap() {
        for target in panel["targets"].as_array().unwrap() {
            let expr = target["expr"].as_str().unwrap();
            let mut rest = expr;
            while let Some(at) = rest.find("heex_") {
                let name: String = rest[at..]
                    .chars()
                    .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
                    .collect();
                rest = &rest[at + name.len()..];
                queried.insert(name);
            }
        }
    }
    assert!(queried.len() >= 8, "{queried:?}");
    for name in &queried {
        assert!(
            revoked
                .lines()
                .any(|l| l.starts_with(&format!("{name} ")) || l.starts_with(&format!("{name}{{"))),
            "the dashboard queries {name}, which the cloud does not export:\n{revoked}"
        );
    }
    agent.signal("TERM");
    agent.wait_timeout(Duration::from_secs(10));
}

#[test]
fn json_logs_are_one_object_per_line_from_cloud_and_agent() {
    let cloud = Cloud::start_with(&["--log-format", "json"]);
    let (key, _) = cloud.create_key("fleet", "enroll", None);
    let machine = Machine::new();
    let device = machine.enroll(&cloud, &key, "robot-json");
    machine.configure("heartbeat_interval = \"1s\"");
    let mut agent = machine.agent_with(&cloud.logs, |cmd| {
        cmd.env("HEEX_LOG_FORMAT", "json");
    });
    wait_for(TIMEOUT, "the agent's session", || {
        cloud
            .proc()
            .stderr()
            .contains("session accepted")
            .then_some(())
    });
    agent.signal("TERM");
    agent.wait_timeout(Duration::from_secs(10));

    let events = |name: &str, text: &str| -> Vec<serde_json::Value> {
        assert!(!text.trim().is_empty(), "{name} logged nothing");
        text.lines()
            .map(|line| {
                let v: serde_json::Value = serde_json::from_str(line)
                    .unwrap_or_else(|e| panic!("{name}: not one JSON object ({e}): {line}"));
                for field in ["timestamp", "level", "target"] {
                    assert!(v[field].is_string(), "{name}: no {field} in {line}");
                }
                v
            })
            .collect()
    };
    let cloud_events = events("heex-cloud", &cloud.proc().stderr());
    let accepted = cloud_events
        .iter()
        .find(|e| e["message"] == "session accepted")
        .expect("the cloud logs the session");
    assert_eq!(accepted["device"], device.as_str(), "{accepted}");
    let agent_events = events("heex-agent", &agent.stderr());
    assert!(
        agent_events.iter().any(|e| e["level"] == "INFO"),
        "{agent_events:?}"
    );
}
