//! End-to-end tests of the outbox's promise: a report answered "queued" is stored in the
//! cloud, or the agent says why not. The real `heex-cloud`, `heex-installer` and
//! `heex-agent` run as separate processes; the outbox is damaged or rewound on disk while
//! the agent is stopped, as a bad sector or a restored backup would.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

use heex_tests::{device_command, stored_reports, wait_for, Cloud, Logs, Machine, Proc};
use serde_json::json;

const TIMEOUT: Duration = Duration::from_secs(60);

/// A machine enrolled with the owner's key, with fast agent timings.
fn enrolled(cloud: &Cloud, name: &str) -> (Machine, String) {
    Machine::enrolled(cloud, &cloud.owner_key, name, ("100ms", "500ms"))
}

/// Waits until the cloud holds exactly the reports with these ids, each once; returns
/// id → seq.
fn wait_for_ids(cloud: &Cloud, device: &str, ids: &[String], logs: &Logs) -> BTreeMap<String, u64> {
    wait_for(TIMEOUT, "the reports to be stored", || {
        (stored_reports(cloud, device).len() >= ids.len()).then_some(())
    });
    // Nothing more arrives late.
    std::thread::sleep(Duration::from_millis(500));
    let got = stored_reports(cloud, device);
    let mut by_id = BTreeMap::new();
    for (seq, payload) in &got {
        let id = payload["id"].as_str().unwrap().to_owned();
        assert!(
            by_id.insert(id.clone(), *seq).is_none(),
            "report {id} stored twice: {got:?}"
        );
    }
    let mut want: Vec<&String> = ids.iter().collect();
    want.sort();
    assert_eq!(
        by_id.keys().collect::<Vec<_>>(),
        want,
        "stored reports (agent logs:\n{})",
        logs.all()
    );
    by_id
}

/// `heex-agent report --data {"id": id}`, asserting success; returns the answered seq.
fn report(machine: &Machine, id: &str) -> u64 {
    let out = device_command("heex-agent")
        .arg("report")
        .arg("--config")
        .arg(machine.agent_config())
        .arg("--data")
        .arg(json!({ "id": id }).to_string())
        .env("RUST_LOG", "warn")
        .output()
        .unwrap();
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(out.status.success(), "heex-agent report {id}: {text}");
    // "queued report N"
    text.split("queued report ")
        .nth(1)
        .and_then(|rest| rest.split(|c: char| !c.is_ascii_digit()).next())
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("no sequence number in {text:?}"))
}

fn ids(prefix: &str, range: std::ops::Range<usize>) -> Vec<String> {
    range.map(|i| format!("{prefix}{i}")).collect()
}

fn outbox(machine: &Machine) -> PathBuf {
    machine.state_dir().join("outbox")
}

fn newest_segment(machine: &Machine) -> PathBuf {
    std::fs::read_dir(outbox(machine))
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.file_name().unwrap().to_str().unwrap().starts_with("seg-"))
        .max()
        .unwrap()
}

/// Flips a payload byte of record `nth` (0-based) of the newest segment (records are
/// `len u32 LE | crc u32 | seq u64 | payload`).
fn flip_payload_byte(machine: &Machine, nth: usize) {
    let seg = newest_segment(machine);
    let mut bytes = std::fs::read(&seg).unwrap();
    let mut at = 0;
    for _ in 0..nth {
        let len = u32::from_le_bytes(bytes[at..at + 4].try_into().unwrap()) as usize;
        at += 16 + len;
    }
    bytes[at + 16 + 3] ^= 0x20;
    std::fs::write(&seg, &bytes).unwrap();
}

fn stop(agent: &mut Proc) {
    agent.signal("TERM");
    assert!(agent.wait_timeout(TIMEOUT).is_some(), "agent did not stop");
}

fn wait_connected(machine: &Machine, logs: &Logs) {
    wait_for(TIMEOUT, "the agent to connect", || {
        (machine.status(logs)["connected"] == true).then_some(())
    });
}

fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for e in std::fs::read_dir(from).unwrap() {
        let e = e.unwrap();
        std::fs::copy(e.path(), to.join(e.file_name())).unwrap();
    }
}

#[test]
fn a_flipped_byte_mid_segment_costs_only_its_report() {
    let cloud = Cloud::start();
    let (machine, id) = enrolled(&cloud, "flip");
    let queued = ids("r", 0..20);
    for (i, r) in queued.iter().enumerate() {
        assert_eq!(report(&machine, r), i as u64 + 1);
    }
    // Damage report 5 (seq 5) in the middle of the segment, agent stopped.
    flip_payload_byte(&machine, 4);

    let logs = Logs::new();
    let _agent = machine.agent(&logs);
    let mut want: Vec<String> = queued.iter().filter(|r| *r != "r4").cloned().collect();
    wait_for_ids(&cloud, &id, &want, &logs);
    // New reports get fresh numbers and arrive too.
    assert_eq!(report(&machine, "after"), 21);
    want.push("after".into());
    let got = wait_for_ids(&cloud, &id, &want, &logs);
    assert_eq!(got["after"], 21);
    assert_eq!(got["r19"], 20);
    // The loss is said loudly: in the log and in `heex-agent status`.
    assert!(logs.all().contains("damaged"), "{}", logs.all());
    let status = machine.status(&logs);
    let notice = status["outbox"]["notice"]["message"].as_str().unwrap_or("");
    assert!(notice.contains("numbered 5"), "{status}");
    assert_eq!(status["outbox"]["next_seq"], 22, "{status}");
}

#[test]
fn a_damaged_acknowledged_record_does_not_swallow_new_reports() {
    let cloud = Cloud::start();
    let (machine, id) = enrolled(&cloud, "acked");
    let logs = Logs::new();
    let mut agent = machine.agent(&logs);
    let mut want = ids("a", 0..10);
    for r in &want {
        report(&machine, r);
    }
    wait_for_ids(&cloud, &id, &want, &logs);
    wait_for(TIMEOUT, "the acknowledgements to be recorded", || {
        (machine.status(&logs)["outbox"]["acked"] == 10).then_some(())
    });
    stop(&mut agent);
    // The newest record, already acknowledged, is damaged: numbering must not fall back to
    // it (a report numbered 10 again would be taken for acknowledged and never sent).
    flip_payload_byte(&machine, 9);
    let _agent = machine.agent(&logs);
    wait_connected(&machine, &logs);
    for r in ids("n", 0..3) {
        assert!(report(&machine, &r) > 10);
        want.push(r);
    }
    wait_for_ids(&cloud, &id, &want, &logs);
}

#[test]
fn a_restored_older_outbox_loses_and_duplicates_nothing() {
    let cloud = Cloud::start();
    let (machine, id) = enrolled(&cloud, "rewound");
    let logs = Logs::new();
    let mut agent = machine.agent(&logs);
    let mut want = ids("b", 0..5);
    for r in &want {
        report(&machine, r);
    }
    wait_for_ids(&cloud, &id, &want, &logs);
    stop(&mut agent);
    // Three reports wait in the outbox when the snapshot is taken.
    for r in ids("b", 5..8) {
        report(&machine, &r);
        want.push(r);
    }
    let snapshot = machine.root().join("snapshot");
    copy_dir(&outbox(&machine), &snapshot);

    // Life goes on: they are delivered, and four more after them (seqs 9..=12).
    let mut agent = machine.agent(&logs);
    for r in ids("b", 8..12) {
        report(&machine, &r);
        want.push(r);
    }
    wait_for_ids(&cloud, &id, &want, &logs);
    stop(&mut agent);

    // The old copy comes back, and reports are queued before the agent has talked to the
    // cloud: they get numbers (9, 10) that the cloud holds with other reports.
    std::fs::remove_dir_all(outbox(&machine)).unwrap();
    copy_dir(&snapshot, &outbox(&machine));
    for r in ids("n", 0..2) {
        assert!(
            report(&machine, &r) <= 12,
            "the rewound outbox reuses numbers"
        );
        want.push(r);
    }
    let _agent = machine.agent(&logs);
    wait_connected(&machine, &logs);
    for r in ids("n", 2..4) {
        assert!(
            report(&machine, &r) > 12,
            "numbering moved up after Welcome"
        );
        want.push(r);
    }
    // Every report is stored exactly once: the old ones under their numbers, the ones
    // queued on the rewound outbox under fresh ones.
    let got = wait_for_ids(&cloud, &id, &want, &logs);
    for (i, r) in ids("b", 0..12).iter().enumerate() {
        assert_eq!(got[r], i as u64 + 1, "{r}");
    }
    for r in ids("n", 0..4) {
        assert!(got[&r] > 12, "{r} at {}", got[&r]);
    }
    // Both sides say so.
    assert!(cloud.logs.all().contains("rewound"), "the gateway warns");
    let status = machine.status(&logs);
    let notice = status["outbox"]["notice"]["message"].as_str().unwrap_or("");
    assert!(
        notice.contains("rewound") || notice.contains("queued again"),
        "{status}"
    );
    assert!(logs.all().contains("queued again"), "{}", logs.all());
    assert_eq!(status["outbox"]["pending"], 0, "{status}");
}
