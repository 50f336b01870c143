//! Rotating the cloud's CA under a connected fleet — real `heex-cloud`, `heex-installer` and
//! `heex-agent` processes: `heex-cloud ca rotate` while 50 agents hold their sessions, every
//! agent receives the new CA over its session and renews onto it, `ca status` counts the one
//! machine that was offline, `ca retire` refuses to strand it unless forced, and after the
//! retirement no session has dropped, new machines enroll against the new CA and the
//! offline machine is refused with the reason and the way out.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::fs;
use std::path::Path;
use std::process::{Command, Output};
use std::time::{Duration, Instant};

use heex_tests::{wait_for, Cloud, Machine, Proc};
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::CertificateDer;
use sha2::{Digest, Sha256};

const AGENTS: usize = 50;
const TIMEOUT: Duration = Duration::from_secs(60);

fn enrolled(cloud: &Cloud, key: &str, name: &str) -> Machine {
    Machine::enrolled(cloud, key, name, ("250ms", "1s")).0
}

/// The certificates of a PEM file, DER.
fn certificates(path: &Path) -> Vec<CertificateDer<'static>> {
    let pem = fs::read(path).unwrap_or_default();
    CertificateDer::pem_slice_iter(&pem)
        .filter_map(Result::ok)
        .collect()
}

fn fingerprint(der: &CertificateDer<'_>) -> String {
    format!("sha256:{}", hex::encode(Sha256::digest(der.as_ref())))
}

/// `openssl verify -CAfile ca cert` succeeds (the chain ends at `ca`, nothing else).
fn verifies(ca: &Path, cert: &Path) -> bool {
    Command::new("openssl")
        .args(["verify", "-no-CApath", "-no-CAstore", "-CAfile"])
        .arg(ca)
        .arg(cert)
        .output()
        .unwrap()
        .status
        .success()
}

fn ca(cloud: &Cloud, args: &[&str]) -> Output {
    let mut cmd = cloud.command();
    cmd.arg("ca")
        .args(args)
        .arg("--data-dir")
        .arg(cloud.data())
        .env("RUST_LOG", "warn");
    cloud
        .logs
        .run("cloud-ca", &mut cmd, Duration::from_secs(30))
}

fn text(out: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

/// The fleet: machines with their running agents.
struct Fleet {
    machines: Vec<(Machine, Proc)>,
}

impl Fleet {
    /// Asserts that every agent still holds the one session it opened (never reconnected,
    /// connected now); returns the sum of acknowledged heartbeats.
    fn assert_all_held(&self, when: &str) -> u64 {
        let mut acked = 0;
        for (i, (m, agent)) in self.machines.iter().enumerate() {
            let s = m.status_file();
            assert_eq!(
                s["pid"].as_u64(),
                Some(u64::from(agent.pid())),
                "{when}: robot {i} status is not its agent's: {s}"
            );
            assert_eq!(
                s["sessions"], 1,
                "{when}: robot {i} opened another session (one dropped): {s}"
            );
            assert_eq!(
                s["state"], "connected",
                "{when}: robot {i} is not connected: {s}"
            );
            acked += s["heartbeats_acked"].as_u64().unwrap_or(0);
        }
        acked
    }

    /// Polls `done` every 200 ms until every machine satisfies it, checking at each round
    /// that no session dropped.
    fn wait_all(&self, what: &str, done: impl Fn(&Machine) -> bool) {
        let deadline = Instant::now() + TIMEOUT;
        loop {
            self.assert_all_held(what);
            let left: Vec<usize> = (0..self.machines.len())
                .filter(|&i| !done(&self.machines[i].0))
                .collect();
            if left.is_empty() {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "timed out after {TIMEOUT:?} waiting for {what}: robots {left:?} are not there"
            );
            std::thread::sleep(Duration::from_millis(200));
        }
    }
}

#[test]
fn fifty_connected_agents_move_to_a_new_ca_without_a_dropped_session() {
    let cloud = Cloud::start_with(&["--ca-reload-interval", "1s", "--ca-renew-spread", "5s"]);
    let old_ca = cloud.ca_file();
    let old = certificates(&old_ca);
    assert_eq!(old.len(), 1);
    let (key, _) = cloud.create_key("fleet", "enroll", None);

    // The machine that is off for the whole rotation: enrolled and connected once.
    let offline = enrolled(&cloud, &key, "offline-robot");
    {
        let mut agent = offline.agent(&cloud.logs);
        let pid = u64::from(agent.pid());
        wait_for(TIMEOUT, "the offline robot's first session", || {
            let s = offline.status_file();
            (s["pid"].as_u64() == Some(pid) && s["state"] == "connected").then_some(())
        });
        agent.signal("TERM");
        agent.wait_timeout(Duration::from_secs(10)).unwrap();
    }

    let machines: Vec<Machine> = (0..AGENTS)
        .map(|i| enrolled(&cloud, &key, &format!("robot-{i:02}")))
        .collect();
    let fleet = Fleet {
        machines: machines
            .into_iter()
            .map(|m| {
                let agent = m.agent(&cloud.logs);
                (m, agent)
            })
            .collect(),
    };
    let deadline = Instant::now() + TIMEOUT;
    while fleet.machines.iter().any(|(m, a)| {
        let s = m.status_file();
        s["pid"].as_u64() != Some(u64::from(a.pid())) || s["state"] != "connected"
    }) {
        assert!(Instant::now() < deadline, "the fleet did not connect");
        std::thread::sleep(Duration::from_millis(200));
    }
    fleet.assert_all_held("before the rotation");

    // Rotate: a new CA beside the current one.
    let rotated = ca(&cloud, &["rotate"]);
    assert!(rotated.status.success(), "{}", text(&rotated));
    let next_ca = cloud.data().join("ca-next.crt");
    let new = certificates(&next_ca);
    assert_eq!(new.len(), 1, "ca-next.crt holds one certificate");
    let new_fingerprint = fingerprint(&new[0]);
    assert!(
        text(&rotated).contains(&new_fingerprint),
        "{}",
        text(&rotated)
    );

    // Every agent hears of it over its session, trusts both CAs, and renews onto the new one.
    fleet.wait_all("every agent on the new CA", |m| {
        let trusted = certificates(&m.state_dir().join("ca.crt"));
        trusted.contains(&new[0])
            && trusted.contains(&old[0])
            && verifies(&next_ca, &m.state_dir().join("device.crt"))
    });
    let renewed = cloud
        .proc()
        .stderr()
        .matches("device certificate renewed")
        .count();
    assert!(renewed >= AGENTS, "{renewed} renewals for {AGENTS} agents");
    for (i, (m, _)) in fleet.machines.iter().enumerate() {
        assert!(
            !verifies(&old_ca, &m.state_dir().join("device.crt")),
            "robot {i}'s certificate is still from the old CA"
        );
    }

    // Only the offline machine is left on the old CA: retire refuses to strand it.
    let status = wait_for(TIMEOUT, "ca status to count only the offline robot", || {
        let out = ca(&cloud, &["status"]);
        assert!(out.status.success(), "{}", text(&out));
        text(&out)
            .contains("Devices still on the current CA: 1 ")
            .then(|| text(&out))
    });
    assert!(status.contains("CA rotation in progress"), "{status}");
    assert!(status.contains(&new_fingerprint), "{status}");
    let refused = ca(&cloud, &["retire"]);
    assert_eq!(refused.status.code(), Some(64), "{}", text(&refused));
    let why = String::from_utf8_lossy(&refused.stderr).into_owned();
    assert!(why.contains("1 device(s)"), "{why}");
    assert!(why.contains("--force"), "{why}");
    assert_eq!(why.trim().lines().count(), 1, "one line: {why}");
    assert!(next_ca.exists(), "a refused retire moved the new CA");
    assert_eq!(
        certificates(&old_ca),
        old,
        "a refused retire changed ca.crt"
    );

    // Forced: the new CA is the only one.
    let retired = ca(&cloud, &["retire", "--force"]);
    assert!(retired.status.success(), "{}", text(&retired));
    assert!(
        text(&retired).contains("1 device(s) still held a certificate from the retired CA"),
        "{}",
        text(&retired)
    );
    assert_eq!(certificates(&old_ca), new, "ca.crt is the new CA alone");
    assert!(!next_ca.exists());
    let acked = fleet.assert_all_held("right after the retirement");

    // The agents are told the one-CA bundle, keep their sessions, and heartbeats go on.
    fleet.wait_all("every agent trusting the new CA alone", |m| {
        certificates(&m.state_dir().join("ca.crt")) == new
            && verifies(&old_ca, &m.state_dir().join("device.crt"))
    });
    wait_for(
        TIMEOUT,
        "heartbeats acknowledged after the retirement",
        || (fleet.assert_all_held("after the retirement") >= acked + AGENTS as u64).then_some(()),
    );

    // A new machine enrolls against the new CA (pinned by its fingerprint) and connects.
    let newcomer = Machine::new();
    let out = cloud.logs.run(
        "installer",
        newcomer
            .installer_at(&cloud.api_url, &new_fingerprint, &key)
            .arg("--name")
            .arg("new-robot"),
        Duration::from_secs(60),
    );
    assert!(out.status.success(), "{}", text(&out));
    newcomer.configure("backoff_initial = \"250ms\"");
    let agent = newcomer.agent(&cloud.logs);
    let pid = u64::from(agent.pid());
    wait_for(TIMEOUT, "the new robot's session", || {
        let s = newcomer.status_file();
        (s["pid"].as_u64() == Some(pid) && s["state"] == "connected").then_some(())
    });
    // The old fingerprint no longer matches the cloud.
    let stale = Machine::new();
    let out = cloud.logs.run(
        "installer",
        stale.installer(&cloud, &key).arg("--name").arg("stale-pin"),
        Duration::from_secs(60),
    );
    assert!(!out.status.success(), "{}", text(&out));

    // The machine that was offline comes back: refused, with the reason and the way out.
    let id = offline.device_id();
    let back = offline.agent(&cloud.logs);
    let log = wait_for(TIMEOUT, "the offline robot's refusal", || {
        let log = back.stderr();
        log.contains("not signed by a CA this device trusts")
            .then_some(log)
    });
    assert!(log.contains("heex-installer --force"), "{log}");
    assert_ne!(offline.status_file()["state"], "connected");
    assert_eq!(cloud.device(&id).unwrap()["connected"], false);
    fleet.assert_all_held("at the end");
}
