//! Network faults between a real `heex-agent` and the real `heex-cloud` gateway: the agent
//! runs in its own network namespace, joined to the cloud's by a veth pair; iptables drops
//! packets (30 % loss, a blackhole without RST, a one-way partition), `tc tbf` limits the
//! rate, and a delaying relay adds 500 ms each way. During each fault reports are queued
//! with `heex-agent report`; afterwards every one of them is stored in the cloud exactly
//! once and the agent is connected again.
//!
//! Root only: they run with `HEEX_FAULT_TESTS=1` (CI: `require`) and are skipped with a
//! message otherwise (docs/testing-faults.md).
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::fs;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use heex_tests::faults::{self, assert_stored_exactly_once, DelayRelay, Netns};
use heex_tests::{wait_for, Cloud, Logs, Machine, Proc};
use serde_json::{json, Value};

/// The agent's heartbeat interval in these tests.
const HEARTBEAT: Duration = Duration::from_secs(1);
/// How long a heartbeat may go unanswered before the agent calls the path dead: the
/// agent's rule (`session::ack_timeout_for`) is one interval more, at least five seconds.
const ACK_TIMEOUT: Duration = Duration::from_secs(6);
/// Slack for the status file to be written and polled.
const SLACK: Duration = Duration::from_secs(2);
const TIMEOUT: Duration = Duration::from_secs(60);

/// A cloud on the root side of a fresh namespace and an enrolled machine whose agent runs
/// inside it (not started yet).
struct Rig {
    ns: Netns,
    cloud: Cloud,
    machine: Machine,
    id: String,
    logs: Logs,
}

impl Rig {
    fn new() -> Rig {
        let ns = Netns::new();
        let cloud = Cloud::start_on(ns.host_ip());
        let machine = Machine::new();
        let (key, _) = cloud.create_key("robots", "enroll", None);
        let id = machine.enroll(&cloud, &key, "robot-net");
        machine.configure("heartbeat_interval = \"1s\"");
        machine.configure("backoff_initial = \"250ms\"");
        machine.configure("backoff_max = \"2s\"");
        Rig {
            ns,
            cloud,
            machine,
            id,
            logs: Logs::new(),
        }
    }

    fn agent(&self) -> Proc {
        self.machine.agent_in(&self.ns, &self.logs)
    }

    /// Waits until the agent has a session numbered at least `sessions` with an
    /// acknowledged heartbeat in it; returns the status.
    fn connected(&self, sessions: u64, within: Duration) -> Value {
        wait_for(within, &format!("agent session #{sessions}"), || {
            let s = self.machine.status_file();
            (s["state"] == "connected"
                && s["sessions"].as_u64() >= Some(sessions)
                && s["heartbeats_acked"].as_u64() >= Some(1))
            .then_some(s)
        })
    }

    /// Queues `n` reports tagged `tag` with `heex-agent report`; returns their payloads.
    fn queue(&self, tag: &str, n: usize) -> Vec<Value> {
        (0..n)
            .map(|i| {
                let r = json!({"id": format!("{tag}-{i}"), "pad": "x".repeat(200)});
                self.machine.queue(&r);
                r
            })
            .collect()
    }

    /// The highest sequence number the agent recorded as acknowledged by the cloud
    /// (`outbox/acked`: seq u64 LE, crc32 u32 LE).
    fn acked(&self) -> u64 {
        let bytes = fs::read(self.machine.state_dir().join("outbox/acked")).unwrap_or_default();
        bytes
            .get(..8)
            .map(|b| u64::from_le_bytes(b.try_into().unwrap()))
            .unwrap_or(0)
    }

    fn assert_still_running(&self, agent: &mut Proc) {
        if let Some(status) = agent.try_wait() {
            panic!(
                "heex-agent exited with {status}:\n{}{}",
                agent.stdout(),
                agent.stderr()
            );
        }
    }

    fn diagnostics(&self) -> String {
        format!(
            "agent status: {}\nlogs:\n{}\ncloud logs:\n{}",
            self.machine.status_file(),
            self.logs.all(),
            self.cloud.logs.all()
        )
    }
}

#[test]
fn thirty_percent_packet_loss_delivers_every_report_exactly_once() {
    if !faults::enabled("thirty_percent_packet_loss_delivers_every_report_exactly_once") {
        return;
    }
    let rig = Rig::new();
    let mut agent = rig.agent();
    rig.connected(1, TIMEOUT);

    rig.ns.loss(0.3);
    let mut queued = Vec::new();
    for round in 0..5 {
        queued.extend(rig.queue(&format!("loss{round}"), 6));
        std::thread::sleep(Duration::from_secs(2));
    }
    // TCP carries the session through the loss (or the agent reconnects): everything
    // arrives while the loss goes on.
    assert_stored_exactly_once(&rig.cloud, &rig.id, &queued, Duration::from_secs(90));
    rig.assert_still_running(&mut agent);

    rig.ns.clear_iptables();
    let more = rig.queue("after", 3);
    queued.extend(more);
    assert_stored_exactly_once(&rig.cloud, &rig.id, &queued, TIMEOUT);
    rig.connected(1, TIMEOUT);
    let last = rig.machine.status_file()["sessions"].as_u64().unwrap();
    wait_for(
        TIMEOUT,
        "every stored report acknowledged to the agent",
        || (rig.acked() >= queued.len() as u64).then_some(()),
    );
    eprintln!("sessions after 30 % loss: {last}");
}

#[test]
fn half_a_second_of_latency_each_way_is_not_a_dead_path() {
    if !faults::enabled("half_a_second_of_latency_each_way_is_not_a_dead_path") {
        return;
    }
    let rig = Rig::new();
    let relay = DelayRelay::start(
        SocketAddr::from((rig.ns.host_ip(), 0)),
        rig.cloud.gateway,
        Duration::from_millis(500),
    );
    rig.machine.set_gateway(relay.addr());
    let mut agent = rig.agent();
    let status = rig.connected(1, TIMEOUT);
    assert_eq!(status["gateway"], relay.addr().to_string());

    let queued = rig.queue("slow", 20);
    assert_stored_exactly_once(&rig.cloud, &rig.id, &queued, TIMEOUT);
    // A second-long round trip is well inside the dead-path bound: the first session holds
    // while heartbeats keep being acknowledged.
    let before = rig.machine.status_file()["heartbeats_acked"]
        .as_u64()
        .unwrap();
    std::thread::sleep(ACK_TIMEOUT + 2 * HEARTBEAT);
    let s = rig.machine.status_file();
    rig.assert_still_running(&mut agent);
    assert_eq!(s["state"], "connected", "{}", rig.diagnostics());
    assert_eq!(
        s["sessions"],
        1,
        "the slow path was taken for a dead one: {}",
        rig.diagnostics()
    );
    assert!(
        s["heartbeats_acked"].as_u64().unwrap() > before + 3,
        "heartbeats stopped being acknowledged: {s}"
    );
    wait_for(TIMEOUT, "every report acknowledged to the agent", || {
        (rig.acked() >= queued.len() as u64).then_some(())
    });
}

#[test]
fn a_silent_blackhole_is_detected_within_the_bound_and_heals() {
    if !faults::enabled("a_silent_blackhole_is_detected_within_the_bound_and_heals") {
        return;
    }
    const BLACKHOLE: Duration = Duration::from_secs(60);
    let rig = Rig::new();
    let mut agent = rig.agent();
    rig.connected(1, TIMEOUT);
    let mut queued = rig.queue("before", 5);
    assert_stored_exactly_once(&rig.cloud, &rig.id, &queued, TIMEOUT);

    // Packets vanish both ways: no RST, no ICMP, nothing tells either side.
    let start = Instant::now();
    rig.ns.blackhole();
    queued.extend(rig.queue("dark", 10));
    let detected = wait_for(
        HEARTBEAT + ACK_TIMEOUT + SLACK + Duration::from_secs(3),
        "the agent to notice the dead path",
        || {
            let s = rig.machine.status_file();
            (s["state"] != "connected").then_some(s)
        },
    );
    let took = start.elapsed();
    eprintln!("dead path noticed after {took:?}: {detected}");
    // The bound: the next heartbeat is due within one interval, and is given up on after
    // the ack timeout; the status file is written on the state change.
    assert!(
        took <= HEARTBEAT + ACK_TIMEOUT + SLACK,
        "the dead path was noticed after {took:?}, beyond the bound of {:?}: {detected}",
        HEARTBEAT + ACK_TIMEOUT + SLACK
    );
    let why = detected["last_error"]
        .as_str()
        .unwrap_or_default()
        .to_owned();
    assert!(
        why.contains("presumed dead") || why.contains("timed out"),
        "unexpected reason: {detected}"
    );

    // It keeps trying for the rest of the blackhole, without giving up or exiting.
    while start.elapsed() < BLACKHOLE {
        rig.assert_still_running(&mut agent);
        assert_ne!(
            rig.machine.status_file()["state"],
            "connected",
            "connected through a blackhole?"
        );
        std::thread::sleep(Duration::from_secs(1));
    }
    rig.ns.clear_iptables();
    // Reconnects within one backoff ceiling plus a connect attempt (10 s), with margin.
    rig.connected(2, Duration::from_secs(30));
    queued.extend(rig.queue("after", 3));
    assert_stored_exactly_once(&rig.cloud, &rig.id, &queued, TIMEOUT);
    wait_for(TIMEOUT, "every report acknowledged to the agent", || {
        (rig.acked() >= queued.len() as u64).then_some(())
    });
    let listed = wait_for(TIMEOUT, "the cloud to list the device connected", || {
        rig.cloud.device(&rig.id).filter(|d| d["connected"] == true)
    });
    assert_eq!(listed["id"], rig.id.as_str());
}

#[test]
fn a_partition_that_loses_the_clouds_answers_heals_without_duplicates() {
    if !faults::enabled("a_partition_that_loses_the_clouds_answers_heals_without_duplicates") {
        return;
    }
    let rig = Rig::new();
    let mut agent = rig.agent();
    rig.connected(1, TIMEOUT);
    let mut queued = rig.queue("before", 3);
    assert_stored_exactly_once(&rig.cloud, &rig.id, &queued, TIMEOUT);
    wait_for(TIMEOUT, "the first reports acknowledged", || {
        (rig.acked() >= 3).then_some(())
    });
    let acked_before = rig.acked();

    // One way only: what the agent sends reaches the cloud, nothing comes back. Reports are
    // stored, but their acks are lost, so the agent must send them again after the heal
    // and the cloud must not store them twice.
    rig.ns
        .iptables(&["INPUT", "-i", rig.ns.ns_if(), "-j", "DROP"]);
    let sent_dark = rig.queue("dark", 10);
    queued.extend(sent_dark);
    assert_stored_exactly_once(&rig.cloud, &rig.id, &queued, TIMEOUT);
    assert_eq!(
        rig.acked(),
        acked_before,
        "the agent heard acks through a partition"
    );
    wait_for(
        HEARTBEAT + ACK_TIMEOUT + SLACK + Duration::from_secs(3),
        "the agent to notice the partition",
        || (rig.machine.status_file()["state"] != "connected").then_some(()),
    );
    std::thread::sleep(Duration::from_secs(10));
    rig.assert_still_running(&mut agent);

    rig.ns.clear_iptables();
    rig.connected(2, Duration::from_secs(30));
    queued.extend(rig.queue("after", 3));
    assert_stored_exactly_once(&rig.cloud, &rig.id, &queued, TIMEOUT);
    wait_for(TIMEOUT, "the redelivered reports acknowledged", || {
        (rig.acked() >= queued.len() as u64).then_some(())
    });
}

#[test]
fn a_slow_uplink_delivers_every_report_exactly_once() {
    if !faults::enabled("a_slow_uplink_delivers_every_report_exactly_once") {
        return;
    }
    let rig = Rig::new();
    let mut agent = rig.agent();
    rig.connected(1, TIMEOUT);
    // 1 Mbit/s out of the robot, and 24 reports of 16 KiB: a few seconds of queue.
    rig.ns.rate_limit("1mbit");
    let queued: Vec<Value> = (0..24)
        .map(|i| {
            let r = json!({"id": format!("bulk-{i}"), "pad": "y".repeat(16 * 1024)});
            rig.machine.queue(&r);
            r
        })
        .collect();
    assert_stored_exactly_once(&rig.cloud, &rig.id, &queued, Duration::from_secs(90));
    rig.assert_still_running(&mut agent);
    rig.ns.clear_rate_limit();
    rig.connected(1, TIMEOUT);
    wait_for(TIMEOUT, "every report acknowledged to the agent", || {
        (rig.acked() >= queued.len() as u64).then_some(())
    });
    eprintln!(
        "sessions after the slow uplink: {}",
        rig.machine.status_file()["sessions"]
    );
}
