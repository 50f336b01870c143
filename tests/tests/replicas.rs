//! Several `heex-cloud` replicas over one PostgreSQL store (each test starts its own server):
//! revocation through one replica reaches the session another holds, a device holds one
//! session across the cluster, a killed replica's devices stop showing connected within its
//! lease, a one-use key raced across replicas enrolls one device, and the database going
//! away for a while costs API answers (503, one line) but no held session.

use std::fs;
use std::time::{Duration, Instant};

use heex_tests::{wait_for, Cloud, Logs, Machine, Proc};
use serde_json::{json, Value};

const TIMEOUT: Duration = Duration::from_secs(30);

fn enrolled(replica: &Cloud, key: &str, name: &str) -> (Machine, String) {
    let machine = Machine::new();
    let id = machine.enroll(replica, key, name);
    machine.configure("heartbeat_interval = \"1s\"");
    machine.configure("backoff_initial = \"250ms\"");
    machine.configure("backoff_max = \"1s\"");
    (machine, id)
}

fn status_file(machine: &Machine) -> Value {
    fs::read(machine.state_dir().join("status.json"))
        .ok()
        .and_then(|b| serde_json::from_slice(&b).ok())
        .unwrap_or(Value::Null)
}

fn wait_connected(machine: &Machine, agent: &Proc, what: &str) {
    wait_for(TIMEOUT, what, || {
        let s = status_file(machine);
        (s["pid"].as_u64() == Some(u64::from(agent.pid()))
            && s["state"] == "connected"
            && !s["last_heartbeat_ack"].is_null())
        .then_some(())
    });
}

fn connected(replica: &Cloud, id: &str) -> bool {
    replica.device(id).is_some_and(|d| d["connected"] == true)
}

/// Points the machine's agent at another gateway.
fn use_gateway(machine: &Machine, gateway: &str) {
    let path = machine.agent_config();
    let text = fs::read_to_string(&path).unwrap();
    let text: String = text
        .lines()
        .map(|l| {
            if l.starts_with("gateway ") || l.starts_with("gateway=") {
                format!("gateway = \"{gateway}\"")
            } else {
                l.to_owned()
            }
        })
        .collect::<Vec<_>>()
        .join("\n");
    fs::write(path, text + "\n").unwrap();
}

/// Revoking a device through replica 1 closes the session replica 3 holds, woken by the
/// store's notification (replica 3's periodic check is an hour away), and the device
/// cannot come back through any replica. Every replica lists the device as connected
/// while replica 3 holds it.
#[test]
fn revocation_through_one_replica_closes_the_session_another_holds() {
    let r1 = Cloud::start_on_postgres(&[]);
    let r2 = r1.replica(&[]);
    let r3 = r1.replica(&["--session-check-interval", "1h"]);
    let (key, _) = r1.create_key("fleet", "enroll", None);
    // Enrolled through replica 3's API: its agent uses replica 3's gateway.
    let (machine, id) = enrolled(&r3, &key, "robot-1");
    let logs = Logs::new();
    let mut agent = machine.agent(&logs);
    wait_connected(&machine, &agent, "the agent to connect to replica 3");
    for r in [&r1, &r2, &r3] {
        assert!(connected(r, &id), "not listed connected on {}", r.api_url);
    }

    let (status, body) = r1.post(
        &format!("/v1/devices/{id}/revoke"),
        &r1.owner_key,
        &Value::Null,
    );
    assert_eq!(status, 200, "{body}");
    let revoked = Instant::now();
    wait_for(TIMEOUT, "replica 3 to close the revoked session", || {
        (status_file(&machine)["state"] != "connected").then_some(())
    });
    let closed_after = revoked.elapsed();
    assert!(closed_after < Duration::from_secs(1), "{closed_after:?}");
    wait_for(TIMEOUT, "the agent to report the revocation", || {
        agent
            .stderr()
            .contains("this device was revoked")
            .then_some(())
    });
    assert!(
        r3.proc()
            .stderr()
            .contains("session closed: the device was revoked"),
        "{}",
        r3.proc().stderr()
    );
    assert!(!connected(&r2, &id));

    // Not through replica 2's gateway either.
    agent.kill9();
    use_gateway(&machine, &r2.gateway.to_string());
    let mut again = machine.agent(&logs);
    wait_for(TIMEOUT, "replica 2 to refuse the revoked device", || {
        again
            .stderr()
            .contains("this device was revoked")
            .then_some(())
    });
    assert_ne!(status_file(&machine)["state"], "connected");
    again.kill9();
}

/// A device that connects to replica 2 while replica 3 holds a session for it: the older
/// session is closed as replaced, and the device shows connected by the newer one.
#[test]
fn a_device_holds_one_session_across_the_cluster() {
    let r1 = Cloud::start_on_postgres(&[]);
    let r2 = r1.replica(&[]);
    let r3 = r1.replica(&["--session-check-interval", "1h"]);
    let (key, _) = r1.create_key("fleet", "enroll", None);
    let (machine, id) = enrolled(&r3, &key, "robot-1");
    let logs = Logs::new();
    let mut first = machine.agent(&logs);
    wait_connected(&machine, &first, "the agent to connect to replica 3");

    // The same identity on another machine directory, pointed at replica 2.
    let copy = Machine::new();
    copy_dir(machine.root(), copy.root());
    let config = fs::read_to_string(machine.agent_config()).unwrap();
    let config = config.replace(
        machine.root().to_str().unwrap(),
        copy.root().to_str().unwrap(),
    );
    fs::write(copy.agent_config(), config).unwrap();
    use_gateway(&copy, &r2.gateway.to_string());
    let mut second = copy.agent(&logs);
    wait_for(TIMEOUT, "replica 3 to close the older session", || {
        first
            .stderr()
            .contains("another agent with this device's identity connected")
            .then_some(())
    });
    assert!(
        r3.proc()
            .stderr()
            .contains("session replaced by a newer one on another replica"),
        "{}",
        r3.proc().stderr()
    );
    first.kill9();
    wait_connected(&copy, &second, "the newer session to stay up");
    assert!(connected(&r1, &id));
    second.kill9();
}

fn copy_dir(from: &std::path::Path, to: &std::path::Path) {
    let out = std::process::Command::new("cp")
        .arg("-a")
        .arg(format!("{}/.", from.display()))
        .arg(to)
        .output()
        .unwrap();
    assert!(out.status.success(), "{out:?}");
}

/// A replica killed with -9 cannot clear its marks: the others do once its lease lapses.
#[test]
fn a_killed_replicas_devices_stop_showing_connected_within_its_lease() {
    let r1 = Cloud::start_on_postgres(&["--replica-lease", "2s"]);
    let mut r2 = r1.replica(&["--replica-lease", "2s"]);
    let (key, _) = r1.create_key("fleet", "enroll", None);
    let (machine, id) = enrolled(&r2, &key, "robot-1");
    let logs = Logs::new();
    let mut agent = machine.agent(&logs);
    wait_connected(&machine, &agent, "the agent to connect to replica 2");
    assert!(connected(&r1, &id));
    r2.kill9();
    let killed = Instant::now();
    wait_for(TIMEOUT, "replica 1 to show the device disconnected", || {
        (!connected(&r1, &id)).then_some(())
    });
    // The lease (2 s) and one renewal of replica 1 (every 2/3 s), with room for a slow
    // machine; far below what a mark left forever would take.
    let after = killed.elapsed();
    assert!(after < Duration::from_secs(10), "{after:?}");
    agent.kill9();
}

/// Twenty installers race for a one-use key, spread over three replicas: exactly one
/// machine is enrolled, the key counts one use, and the others are refused cleanly.
#[test]
fn a_one_use_key_raced_across_three_replicas_enrolls_one_device() {
    let r1 = Cloud::start_on_postgres(&[]);
    let r2 = r1.replica(&[]);
    let r3 = r1.replica(&[]);
    let (status, created) = r1.post(
        "/v1/keys",
        &r1.owner_key,
        &json!({"name": "one-shot", "scope": "enroll", "max_uses": 1}),
    );
    assert_eq!(status, 201, "{created}");
    let key = created["key"].as_str().unwrap().to_owned();
    let replicas = [&r1, &r2, &r3];
    let machines: Vec<Machine> = (0..20).map(|_| Machine::new()).collect();
    let outcomes: Vec<bool> = std::thread::scope(|s| {
        let runs: Vec<_> = machines
            .iter()
            .enumerate()
            .map(|(i, m)| {
                let replica = replicas[i % 3];
                let key = key.clone();
                s.spawn(move || {
                    let out = m
                        .installer(replica, &key)
                        .arg("--name")
                        .arg(format!("racer-{i}"))
                        .output()
                        .unwrap();
                    if !out.status.success() {
                        let err = String::from_utf8_lossy(&out.stderr);
                        assert_eq!(err.trim().lines().count(), 1, "{err}");
                        assert!(!m.agent_config().exists());
                    }
                    out.status.success()
                })
            })
            .collect();
        runs.into_iter().map(|r| r.join().unwrap()).collect()
    });
    assert_eq!(outcomes.iter().filter(|ok| **ok).count(), 1, "{outcomes:?}");
    for r in replicas {
        assert_eq!(r.devices().len(), 1);
    }
    let (_, keys) = r2.get("/v1/keys", &r2.owner_key);
    let one_shot = keys["keys"]
        .as_array()
        .unwrap()
        .iter()
        .find(|k| k["name"] == "one-shot")
        .cloned()
        .unwrap();
    assert_eq!(one_shot["uses"], 1, "{one_shot}");
}

/// PostgreSQL stopped for a while: held sessions stay up (heartbeats acknowledged), the API
/// answers 503 with one line (not a hang, not a driver message), an enrollment fails
/// cleanly; when the database is back everything resumes without restarting a replica —
/// the change feed reconnects, so a revocation reaches the session again.
#[test]
fn the_database_going_away_costs_answers_not_sessions() {
    let r1 = Cloud::start_on_postgres(&[]);
    let r2 = r1.replica(&["--session-check-interval", "1h"]);
    let (key, _) = r1.create_key("fleet", "enroll", None);
    let (machine, id) = enrolled(&r2, &key, "robot-1");
    let logs = Logs::new();
    let agent = machine.agent(&logs);
    wait_connected(&machine, &agent, "the agent to connect to replica 2");
    let acks_before = status_file(&machine)["last_heartbeat_ack"].clone();

    r1.pg().expect("a PostgreSQL store").stop();
    let started = Instant::now();
    let (status, body) = r1.get("/v1/devices", &r1.owner_key);
    assert_eq!(status, 503, "{body}");
    assert_eq!(body["error"], "unavailable", "{body}");
    let message = body["message"].as_str().unwrap_or_default();
    assert!(message.contains("cannot reach its database"), "{body}");
    assert!(!message.contains('\n'));
    assert!(started.elapsed() < Duration::from_secs(15));
    let (status, _) = r1.get("/readyz", "");
    assert_eq!(status, 503);
    let late = Machine::new();
    let out = late
        .installer(&r1, &key)
        .arg("--name")
        .arg("late")
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(!late.agent_config().exists());
    // The session lives on: heartbeats are still acknowledged.
    wait_for(
        TIMEOUT,
        "a heartbeat acknowledged without the database",
        || (status_file(&machine)["last_heartbeat_ack"] != acks_before).then_some(()),
    );
    std::thread::sleep(Duration::from_secs(3));
    assert_eq!(status_file(&machine)["state"], "connected");

    r1.pg().unwrap().start_again();
    wait_for(TIMEOUT, "the API to answer again", || {
        (r1.get("/readyz", "").0 == 200).then_some(())
    });
    let out = late
        .installer(&r1, &key)
        .arg("--name")
        .arg("late")
        .output()
        .unwrap();
    assert!(out.status.success(), "{out:?}");
    // The feed is back (replica 2's periodic check is an hour away).
    wait_for(TIMEOUT, "replica 2's change feed to reconnect", || {
        r2.proc()
            .stderr()
            .contains("the store's change feed is back")
            .then_some(())
    });
    let (status, body) = r1.post(
        &format!("/v1/devices/{id}/revoke"),
        &r1.owner_key,
        &Value::Null,
    );
    assert_eq!(status, 200, "{body}");
    wait_for(
        TIMEOUT,
        "the revocation to reach replica 2's session",
        || (status_file(&machine)["state"] != "connected").then_some(()),
    );
}
