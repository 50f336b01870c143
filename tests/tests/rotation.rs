//! The cloud's own certificates over time: the API's and the gateway's server certificate is
//! re-issued while serving, and neither a connected agent nor a new one notices — real
//! `heex-cloud`, `heex-installer` and `heex-agent` processes.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use heex_tests::{wait_for, Cloud, Machine};

const TIMEOUT: Duration = Duration::from_secs(30);

/// Serial of the certificate the server at `addr` presents (openssl's hex).
fn presented_serial(addr: &str) -> String {
    let hello = Command::new("openssl")
        .args(["s_client", "-connect", addr, "-servername", "localhost"])
        .stdin(Stdio::null())
        .output()
        .unwrap();
    let mut x509 = Command::new("openssl")
        .args(["x509", "-noout", "-serial"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    use std::io::Write;
    x509.stdin.take().unwrap().write_all(&hello.stdout).unwrap();
    let out = x509.wait_with_output().unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    text.trim()
        .strip_prefix("serial=")
        .unwrap_or_else(|| panic!("no certificate from {addr}: {text}"))
        .to_owned()
}

fn file_serial(path: &std::path::Path) -> String {
    let out = Command::new("openssl")
        .args(["x509", "-noout", "-serial", "-in"])
        .arg(path)
        .output()
        .unwrap();
    String::from_utf8_lossy(&out.stdout)
        .trim()
        .trim_start_matches("serial=")
        .to_owned()
}

/// The serial the API presents, once it is also the one in the data directory (a re-issue
/// writes the file just before presenting it, so a read may fall between the two).
fn presented_and_stored(cloud: &Cloud, api: &str) -> String {
    wait_for(
        TIMEOUT,
        "the presented certificate in the data directory",
        || {
            let presented = presented_serial(api);
            (presented == file_serial(&cloud.data().join("server.crt"))).then_some(presented)
        },
    )
}

fn enrolled(cloud: &Cloud, key: &str, name: &str) -> Machine {
    Machine::enrolled(cloud, key, name, ("250ms", "1s")).0
}

#[test]
fn the_server_certificate_is_reissued_while_serving_and_no_agent_notices() {
    // Six seconds: re-issued two seconds before each expiry, so about every four.
    let cloud = Cloud::start_with(&["--server-cert-lifetime", "6s"]);
    let api = cloud.api_url.trim_start_matches("https://").to_owned();
    let (key, _) = cloud.create_key("fleet", "enroll", None);
    let first_robot = enrolled(&cloud, &key, "robot-1");
    let agent = first_robot.agent(&cloud.logs);
    let pid = u64::from(agent.pid());
    wait_for(TIMEOUT, "the first robot's session", || {
        let s = first_robot.status_file();
        (s["pid"].as_u64() == Some(pid) && s["state"] == "connected").then_some(())
    });
    let first = presented_and_stored(&cloud, &api);

    // Over three lifetimes the session stays the one it was, acknowledging heartbeats.
    let start = Instant::now();
    let mut serials = vec![first.clone()];
    while start.elapsed() < Duration::from_secs(18) {
        let s = first_robot.status_file();
        assert_eq!(s["state"], "connected", "the session dropped: {s}");
        assert_eq!(s["sessions"], 1, "the agent reconnected: {s}");
        let now = presented_serial(&api);
        if serials.last() != Some(&now) {
            serials.push(now);
        }
        std::thread::sleep(Duration::from_millis(500));
    }
    assert!(
        serials.len() >= 3,
        "re-issued fewer than twice: {serials:?}"
    );
    let acked_before = first_robot.status_file()["heartbeats_acked"]
        .as_u64()
        .unwrap();
    wait_for(TIMEOUT, "heartbeats still acknowledged", || {
        (first_robot.status_file()["heartbeats_acked"]
            .as_u64()
            .unwrap()
            > acked_before)
            .then_some(())
    });
    // The data directory holds the certificate presented now.
    presented_and_stored(&cloud, &api);

    // The first certificate expired long ago: a new robot installs over the API and its
    // agent connects to the gateway with the certificates presented now.
    let second_robot = enrolled(&cloud, &key, "robot-2");
    let second = second_robot.agent(&cloud.logs);
    let pid2 = u64::from(second.pid());
    wait_for(TIMEOUT, "the second robot's session", || {
        let s = second_robot.status_file();
        (s["pid"].as_u64() == Some(pid2) && s["state"] == "connected").then_some(())
    });
    let log = cloud.proc().stderr();
    assert!(
        log.matches("re-issued the server certificate").count() >= 2,
        "{log}"
    );
}
