//! Several `heex-cloud` replicas over one PostgreSQL store (each test starts its own server):
//! revocation through one replica reaches the session another holds, a device holds one
//! session across the cluster, a killed replica's devices stop showing connected within its
//! lease, a one-use key raced across replicas enrolls one device, and the database going
//! away for a while costs API answers (503, one line) but no held session.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::fs;
use std::time::{Duration, Instant};

use heex_tests::metrics::{metrics_addr, scrape, value};
use heex_tests::{wait_for, Cloud, Logs, Machine, Proc};
use serde_json::{json, Value};

const TIMEOUT: Duration = Duration::from_secs(30);

fn enrolled(replica: &Cloud, key: &str, name: &str) -> (Machine, String) {
    Machine::enrolled(replica, key, name, ("250ms", "1s"))
}

fn wait_connected(machine: &Machine, agent: &Proc, what: &str) {
    wait_for(TIMEOUT, what, || {
        let s = machine.status_file();
        (s["pid"].as_u64() == Some(u64::from(agent.pid()))
            && s["state"] == "connected"
            && !s["last_heartbeat_ack"].is_null())
        .then_some(())
    });
}

fn connected(replica: &Cloud, id: &str) -> bool {
    replica.device(id).is_some_and(|d| d["connected"] == true)
}

/// Revoking a device through replica 1 closes the session replica 3 holds, woken by the
/// store's notification (replica 3's periodic check is an hour away), and the device
/// cannot come back through any replica. Every replica lists the device as connected
/// while replica 3 holds it.
#[test]
fn revocation_through_one_replica_closes_the_session_another_holds() {
    let r1 = Cloud::start_on_postgres(&[]);
    let r2 = r1.replica(&[]);
    let r3 = r1.replica(&[
        "--session-check-interval",
        "1h",
        "--metrics-listen",
        "127.0.0.1:0",
    ]);
    let metrics = metrics_addr(&r3);
    let propagated = |what| value(&scrape(metrics), what, &[]);
    assert_eq!(propagated("heex_revocation_propagation_seconds_count"), 0.0);
    let (key, _) = r1.create_key("fleet", "enroll", None);
    // Enrolled through replica 3's API: its agent uses replica 3's gateway.
    let (machine, id) = enrolled(&r3, &key, "robot-1");
    let logs = Logs::new();
    let mut agent = machine.agent(&logs);
    wait_connected(&machine, &agent, "the agent to connect to replica 3");
    for r in [&r1, &r2, &r3] {
        assert!(connected(r, &id), "not listed connected on {}", r.api_url);
    }

    let asked = Instant::now();
    let (status, body) = r1.post(
        &format!("/v1/devices/{id}/revoke"),
        &r1.owner_key,
        &Value::Null,
    );
    assert_eq!(status, 200, "{body}");
    let revoked = Instant::now();
    wait_for(TIMEOUT, "replica 3 to close the revoked session", || {
        (machine.status_file()["state"] != "connected").then_some(())
    });
    let closed_after = revoked.elapsed();
    assert!(closed_after < Duration::from_secs(1), "{closed_after:?}");
    // Replica 3 measured how long the revocation took to reach the session it held: from
    // the commit, inside the API call, so less than the time from asking to seeing it closed.
    assert_eq!(propagated("heex_revocation_propagation_seconds_count"), 1.0);
    let delay = propagated("heex_revocation_propagation_seconds_sum");
    let since_asked = asked.elapsed();
    assert!(
        (0.0..since_asked.as_secs_f64()).contains(&delay),
        "propagation {delay} s, the session seen closed {since_asked:?} after the request"
    );
    eprintln!(
        "revocation committed through replica 1 closed replica 3's session after {:.1} ms \
         (heex_revocation_propagation_seconds); the agent saw it {:.1} ms after the API answered",
        delay * 1000.0,
        closed_after.as_secs_f64() * 1000.0
    );
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
    machine.set_gateway(r2.gateway);
    let mut again = machine.agent(&logs);
    wait_for(TIMEOUT, "replica 2 to refuse the revoked device", || {
        again
            .stderr()
            .contains("this device was revoked")
            .then_some(())
    });
    assert_ne!(machine.status_file()["state"], "connected");
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
    copy.set_gateway(r2.gateway);
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

/// PostgreSQL stopped for a while: held sessions stay up (heartbeats acknowledged, reports
/// kept unacknowledged until they can be stored, then stored once), the API
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
    let acks_before = machine.status_file()["last_heartbeat_ack"].clone();

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
    // The session lives on: heartbeats are still acknowledged, and reports submitted now
    // wait in the outbox, unacknowledged, without the session closing.
    let sessions = machine.status_file()["sessions"].clone();
    for n in 0..5 {
        let (code, out, err) = machine.report(&json!({"n": n}));
        assert_eq!(code, 0, "{out}{err}");
    }
    wait_for(
        TIMEOUT,
        "a heartbeat acknowledged without the database",
        || (machine.status_file()["last_heartbeat_ack"] != acks_before).then_some(()),
    );
    std::thread::sleep(Duration::from_secs(3));
    let during = machine.status_file();
    assert_eq!(during["state"], "connected");
    assert_eq!(
        during["sessions"], sessions,
        "the session was closed: {during}"
    );

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
    let stored = wait_for(TIMEOUT, "the waiting reports to be stored", || {
        let got = heex_tests::stored_reports(&r1, &id);
        (got.len() >= 5).then_some(got)
    });
    let seqs: Vec<u64> = stored.iter().map(|(seq, _)| *seq).collect();
    assert_eq!(seqs, [1, 2, 3, 4, 5]);
    assert_eq!(machine.status_file()["sessions"], sessions);
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
        || (machine.status_file()["state"] != "connected").then_some(()),
    );
}

/// A free port on 127.0.0.1 (bound and released: HAProxy binds it next).
fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// HAProxy with the repository's configuration (packaging/haproxy/heex.cfg) in front of
/// three replicas.
struct Haproxy {
    /// Stopped when dropped.
    _proc: Proc,
    api_url: String,
}

impl Haproxy {
    fn start(logs: &Logs, api_port: u16, gateway_port: u16, replicas: [&Cloud; 3]) -> Haproxy {
        let config = concat!(env!("CARGO_MANIFEST_DIR"), "/../packaging/haproxy/heex.cfg");
        let mut cmd = std::process::Command::new("haproxy");
        cmd.args(["-db", "-f", config])
            .env("HEEX_API_BIND", format!("127.0.0.1:{api_port}"))
            .env("HEEX_GATEWAY_BIND", format!("127.0.0.1:{gateway_port}"));
        for (i, r) in replicas.iter().enumerate() {
            let n = i + 1;
            let api = r.api_url.trim_start_matches("https://").to_owned();
            let health = api.rsplit(':').next().unwrap().to_owned();
            cmd.env(format!("HEEX_R{n}_API"), api)
                .env(format!("HEEX_R{n}_GATEWAY"), r.gateway.to_string())
                .env(format!("HEEX_R{n}_HEALTH"), health);
        }
        let proc = logs.spawn("haproxy", &mut cmd);
        let api_url = format!("https://127.0.0.1:{api_port}");
        let front = Haproxy {
            _proc: proc,
            api_url,
        };
        // Every replica up in both backends before the test goes on.
        wait_for(TIMEOUT, "HAProxy to reach the replicas", || {
            (std::net::TcpStream::connect(("127.0.0.1", api_port)).is_ok()
                && replicas.iter().all(|r| r.get("/readyz", "").0 == 200))
            .then_some(())
        });
        std::thread::sleep(Duration::from_secs(3));
        front
    }
}

/// Three replicas behind HAProxy (TCP mode) and a fleet of agents enrolled and connected
/// through it (300 unless `HEEX_FAILOVER_AGENTS` says otherwise). One replica is killed
/// with -9 while reports flow: its agents are back on the others within 10 s, every report
/// is stored exactly once, and every device lists as connected again.
#[test]
fn a_killed_replica_behind_haproxy_loses_no_agent_and_no_report() {
    let agents: usize = std::env::var("HEEX_FAILOVER_AGENTS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(300);
    let (api_port, gateway_port) = (free_port(), free_port());
    let advertise = format!("127.0.0.1:{gateway_port}");
    let args = [
        "--gateway-advertise",
        advertise.as_str(),
        "--replica-lease",
        "3s",
    ];
    let r1 = Cloud::start_on_postgres(&args);
    let r2 = r1.replica(&args);
    let mut r3 = r1.replica(&args);
    let logs = Logs::new();
    let front = Haproxy::start(&logs, api_port, gateway_port, [&r1, &r2, &r3]);
    let (key, _) = r1.create_key("fleet", "enroll", None);

    // Enroll through HAProxy, eight installers at a time.
    let machines: Vec<Machine> = (0..agents).map(|_| Machine::new()).collect();
    std::thread::scope(|s| {
        for (t, chunk) in machines.chunks(agents.div_ceil(8)).enumerate() {
            let (key, front) = (&key, &front);
            let fingerprint = &r1.fingerprint;
            s.spawn(move || {
                for (i, m) in chunk.iter().enumerate() {
                    let out = m
                        .installer_at(&front.api_url, fingerprint, key)
                        .arg("--name")
                        .arg(format!("robot-{t}-{i}"))
                        .output()
                        .unwrap();
                    assert!(out.status.success(), "{out:?}");
                    m.configure("heartbeat_interval = \"1s\"");
                    m.configure("backoff_initial = \"250ms\"");
                    m.configure("backoff_max = \"1s\"");
                }
            });
        }
    });
    let procs: Vec<Proc> = machines.iter().map(|m| m.agent(&logs)).collect();
    for (m, p) in machines.iter().zip(&procs) {
        wait_connected(m, p, "every agent to connect through HAProxy");
    }
    let listed = |r: &Cloud| {
        r.list_all("/v1/devices?connected=true", &r.owner_key, "devices")
            .len()
    };
    assert_eq!(listed(&r2), agents);
    let held = |r: &Cloud| r.proc().stderr().matches("session accepted").count();
    eprintln!(
        "sessions accepted: r1 {}, r2 {}, r3 {}",
        held(&r1),
        held(&r2),
        held(&r3)
    );

    // Reports flow from ten agents across the kill.
    let reporters = &machines[..10.min(agents)];
    const PER_AGENT: u64 = 20;
    let acked_before: Vec<u64> = std::thread::scope(|s| {
        let flow = s.spawn(|| {
            for n in 0..PER_AGENT {
                for m in reporters {
                    let (code, out, err) = m.report(&json!({"n": n}));
                    assert_eq!(code, 0, "{out}{err}");
                }
                std::thread::sleep(Duration::from_millis(50));
            }
        });
        std::thread::sleep(Duration::from_millis(300));
        let acked: Vec<u64> = machines
            .iter()
            .map(|m| m.status_file()["heartbeats_acked"].as_u64().unwrap_or(0))
            .collect();
        r3.kill9();
        flow.join().unwrap();
        acked
    });
    let killed = Instant::now();
    // Back: every agent has two heartbeats acknowledged since the kill.
    wait_for(TIMEOUT, "every agent to be back", || {
        machines
            .iter()
            .zip(&acked_before)
            .all(|(m, before)| {
                let s = m.status_file();
                s["state"] == "connected"
                    && s["heartbeats_acked"].as_u64().unwrap_or(0) > before + 2
            })
            .then_some(())
    });
    let back_after = killed.elapsed();
    let moved = machines
        .iter()
        .filter(|m| m.status_file()["sessions"].as_u64().unwrap_or(0) > 1)
        .count();
    eprintln!("{moved} of {agents} agents moved; all back {back_after:?} after the kill");
    assert!(moved > 0, "no agent was on the killed replica");
    assert!(back_after < Duration::from_secs(10), "{back_after:?}");
    wait_for(TIMEOUT, "every device to list as connected again", || {
        (listed(&r1) == agents).then_some(())
    });
    for m in reporters {
        let id = m.device_id();
        let stored = wait_for(TIMEOUT, "every report to be stored", || {
            let got = heex_tests::stored_reports(&r1, &id);
            (got.len() as u64 >= PER_AGENT).then_some(got)
        });
        let seqs: Vec<u64> = stored.iter().map(|(seq, _)| *seq).collect();
        assert_eq!(seqs, (1..=PER_AGENT).collect::<Vec<_>>(), "{id}");
        let ns: std::collections::BTreeSet<u64> = stored
            .iter()
            .map(|(_, p)| p["n"].as_u64().unwrap())
            .collect();
        assert_eq!(ns.len() as u64, PER_AGENT, "{id}: {stored:?}");
    }
    drop(procs);
    drop(front);
}

/// What ties a replica to its cluster: `init` refuses a database that holds a cloud, a
/// replica with other secrets refuses to start (exit 78, one line naming both CAs), a data
/// directory of a PostgreSQL cloud refuses to run without its URL, and `workspaces create`
/// works on any replica's copy while they serve.
#[test]
fn replicas_need_the_same_secrets_and_the_same_store() {
    let r1 = Cloud::start_on_postgres(&[]);
    let tmp = tempfile::tempdir().unwrap();
    let other = tmp.path().join("other");
    let run = |args: &[&std::ffi::OsStr]| {
        let out = r1.command().args(args).output().unwrap();
        (
            out.status.code(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    };
    let (code, err) = run(&["init".as_ref(), "--data-dir".as_ref(), other.as_os_str()]);
    assert_eq!(code, Some(78), "{err}");
    assert!(err.contains("already holds a Heex cloud"), "{err}");
    assert!(!other.join("cloud.toml").exists());

    // Secrets of another cloud: a directory initialized on its own, marked PostgreSQL.
    let foreign = Cloud::start_on_postgres(&[]);
    let copy = tmp.path().join("foreign");
    let out = std::process::Command::new("cp")
        .arg("-a")
        .arg(foreign.data())
        .arg(&copy)
        .output()
        .unwrap();
    assert!(out.status.success());
    let serve = |dir: &std::path::Path, store: bool| {
        let mut cmd = r1.command();
        if !store {
            cmd.env_remove("HEEX_STORE_URL");
        }
        let out = cmd
            .args([
                "serve",
                "--listen",
                "127.0.0.1:0",
                "--gateway-listen",
                "127.0.0.1:0",
            ])
            .arg("--data-dir")
            .arg(dir)
            .output()
            .unwrap();
        (
            out.status.code(),
            String::from_utf8_lossy(&out.stderr).trim().to_owned(),
        )
    };
    let (code, err) = serve(&copy, true);
    assert_eq!(code, Some(78), "{err}");
    assert_eq!(err.lines().count(), 1, "{err}");
    assert!(
        err.contains(&r1.fingerprint) && err.contains(&foreign.fingerprint),
        "{err}"
    );
    let (code, err) = serve(&r1.data(), false);
    assert_eq!(code, Some(78), "{err}");
    assert!(err.contains("--store or HEEX_STORE_URL"), "{err}");

    let r2 = r1.replica(&[]);
    let out = r2
        .command()
        .args([
            "workspaces",
            "create",
            "robots-b",
            "--owner",
            "bo@example.com",
        ])
        .arg("--data-dir")
        .arg(r2.data())
        .output()
        .unwrap();
    assert!(out.status.success(), "{out:?}");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let key = heex_tests::token(&stdout, "heex_", heex_proto::apikey::KEY_LEN).unwrap();
    let (status, body) = r1.get("/v1/devices", &key);
    assert_eq!(status, 200, "{body}");
}
