//! Full disks under the real binaries: the agent's outbox and the cloud's data directory on
//! tiny tmpfs mounts. A full disk must give a clear refusal (never a half-written record or a
//! 500), corrupt nothing, and stop mattering once space returns.
//!
//! Root only: they run with `HEEX_FAULT_TESTS=1` (CI: `require`) and are skipped with a
//! message otherwise (docs/testing-faults.md).
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::fs;
use std::io::{BufRead, BufReader, Write};
use std::os::unix::net::UnixStream;
use std::time::Duration;

use heex_tests::faults::{self, assert_stored_exactly_once, Tmpfs};
use heex_tests::{wait_for, Cloud, Logs, Machine};
use serde_json::{json, Value};

const TIMEOUT: Duration = Duration::from_secs(60);
/// `heex-agent report`'s exit code for "full, retry later" (README, Exit codes).
const TEMPFAIL: i32 = 75;

fn report(tag: &str, i: usize, pad: usize) -> Value {
    json!({"id": format!("{tag}-{i}"), "pad": "z".repeat(pad)})
}

/// Bytes the outbox's segments take.
fn segment_bytes(outbox: &std::path::Path) -> u64 {
    fs::read_dir(outbox)
        .unwrap()
        .flatten()
        .filter(|e| e.file_name().to_string_lossy().starts_with("seg-"))
        .map(|e| e.metadata().unwrap().len())
        .sum()
}

/// Bytes a report takes in the outbox: a 16-byte header and its compact JSON.
fn record_len(r: &Value) -> u64 {
    16 + r.to_string().len() as u64
}

fn acked(machine: &Machine) -> u64 {
    let bytes = fs::read(machine.state_dir().join("outbox/acked")).unwrap_or_default();
    bytes
        .get(..8)
        .map(|b| u64::from_le_bytes(b.try_into().unwrap()))
        .unwrap_or(0)
}

#[test]
fn a_full_disk_under_the_outbox_refuses_clearly_keeps_every_report_and_recovers() {
    if !faults::enabled(
        "a_full_disk_under_the_outbox_refuses_clearly_keeps_every_report_and_recovers",
    ) {
        return;
    }
    let cloud = Cloud::start();
    let machine = Machine::new();
    let (key, _) = cloud.create_key("robots", "enroll", None);
    let id = machine.enroll(&cloud, &key, "robot-disk");
    machine.configure("heartbeat_interval = \"1s\"");
    machine.configure("backoff_initial = \"100ms\"");
    machine.configure("backoff_max = \"500ms\"");
    let outbox = machine.state_dir().join("outbox");
    let disk = Tmpfs::mount(&outbox, "256k");
    let filler = disk.fill_leaving("filler", 48 * 1024);

    // The agent is not running: reports pile up until the disk is full.
    let mut accepted = Vec::new();
    let refusal = loop {
        let r = report("early", accepted.len(), 2000);
        let (code, out, err) = machine.report(&r);
        if code == 0 {
            accepted.push(r);
            assert!(
                accepted.len() < 100,
                "a 48 KiB disk took 100 reports of 2 KB"
            );
            continue;
        }
        break (code, out, err);
    };
    let (code, out, err) = refusal;
    assert_eq!(code, TEMPFAIL, "exit code on a full disk: {out}{err}");
    assert!(out.is_empty(), "nothing on stdout when refused: {out}");
    assert_eq!(err.trim().lines().count(), 1, "one line: {err}");
    assert!(
        err.contains("no space left") && err.contains(&outbox.display().to_string()),
        "the refusal names the cause and the place: {err}"
    );
    assert!(!err.contains("panicked"), "{err}");
    assert!(accepted.len() >= 5, "only {} reports fit", accepted.len());
    // Nothing half-written: the segments hold exactly the accepted records.
    let expected: u64 = accepted.iter().map(record_len).sum();
    assert_eq!(
        segment_bytes(&outbox),
        expected,
        "the refused report left bytes behind"
    );
    // Still full: a second attempt is refused the same way, and changes nothing.
    let (code, _, err) = machine.report(&report("refused", 1, 2000));
    assert_eq!(code, TEMPFAIL, "{err}");
    assert_eq!(segment_bytes(&outbox), expected);

    // The daemon on the full disk: it delivers what was queued, and its socket refuses new
    // reports with the same reason.
    let logs = Logs::new();
    let mut agent = machine.agent(&logs);
    assert_stored_exactly_once(&cloud, &id, &accepted, TIMEOUT);
    let sock = machine.state_dir().join("agent.sock");
    let mut stream = wait_for(TIMEOUT, "the report socket", || {
        UnixStream::connect(&sock).ok()
    });
    stream.set_read_timeout(Some(TIMEOUT)).unwrap();
    let mut line = report("socket", 0, 2000).to_string();
    line.push('\n');
    stream.write_all(line.as_bytes()).unwrap();
    let mut answer = String::new();
    BufReader::new(stream.try_clone().unwrap())
        .read_line(&mut answer)
        .unwrap();
    let answer: Value = serde_json::from_str(&answer).unwrap();
    assert_eq!(answer["ok"], false, "{answer}");
    assert!(
        answer["error"]
            .as_str()
            .is_some_and(|e| e.contains("no space left")),
        "{answer}"
    );

    // Space returns: reports are accepted again and delivered, each exactly once.
    fs::remove_file(&filler).unwrap();
    for i in 0..5 {
        let r = report("late", i, 2000);
        machine.queue(&r);
        accepted.push(r);
    }
    assert_stored_exactly_once(&cloud, &id, &accepted, TIMEOUT);
    wait_for(TIMEOUT, "the agent to record every ack", || {
        (acked(&machine) >= accepted.len() as u64).then_some(())
    });
    assert!(agent.try_wait().is_none(), "the agent exited");
    drop(agent);
    drop(disk);
}

#[test]
fn a_full_disk_under_the_cloud_answers_503_corrupts_nothing_and_recovers() {
    if !faults::enabled("a_full_disk_under_the_cloud_answers_503_corrupts_nothing_and_recovers")
        || heex_tests::sqlite_only(
            "a_full_disk_under_the_cloud_answers_503_corrupts_nothing_and_recovers",
            "it fills the disk under the SQLite store in the data directory",
        )
    {
        return;
    }
    let dir = tempfile::Builder::new()
        .prefix("heex-cloud-")
        .tempdir()
        .unwrap();
    let disk = Tmpfs::mount(&dir.path().join("data"), "16m");
    let mut cloud = Cloud::start_in(dir);
    let machine = Machine::new();
    let (key, _) = cloud.create_key("robots", "enroll", None);
    let id = machine.enroll(&cloud, &key, "robot-cloud-disk");
    machine.configure("heartbeat_interval = \"1s\"");
    machine.configure("backoff_initial = \"100ms\"");
    machine.configure("backoff_max = \"1s\"");
    let logs = Logs::new();
    let mut agent = machine.agent(&logs);
    let mut queued: Vec<Value> = (0..5).map(|i| report("before", i, 100)).collect();
    for r in &queued {
        machine.queue(r);
    }
    assert_stored_exactly_once(&cloud, &id, &queued, TIMEOUT);

    let filler = disk.fill("filler");
    // SQLite reuses the space its write-ahead log already has, so some writes may still
    // succeed; keep writing until the disk is really full. Every answer is 201 or 503,
    // never a 500.
    let http = cloud.http();
    let mut refused = None;
    for i in 0..3000 {
        let resp = http
            .post(format!("{}/v1/keys", cloud.api_url))
            .bearer_auth(&cloud.owner_key)
            .json(&json!({"name": format!("k{i}"), "scope": "enroll"}))
            .send()
            .unwrap();
        let status = resp.status().as_u16();
        let retry_after = resp
            .headers()
            .get("retry-after")
            .map(|v| v.to_str().unwrap().to_owned());
        let body: Value = resp.json().unwrap_or(Value::Null);
        match status {
            201 => continue,
            503 => {
                refused = Some((body, retry_after));
                break;
            }
            other => panic!(
                "writing to a full disk answered {other}: {body}\n{}",
                cloud.logs.all()
            ),
        }
    }
    let (body, retry_after) = refused.expect("the disk never filled up");
    assert_eq!(body["error"], "unavailable", "{body}");
    let message = body["message"].as_str().unwrap();
    assert!(
        message.contains("disk") && message.contains("full"),
        "the message names the cause: {message}"
    );
    assert!(!message.contains('\n'), "{message}");
    assert_eq!(retry_after.as_deref(), Some("30"));
    // Reads still work.
    let (status, _) = cloud.get("/v1/devices", &cloud.owner_key);
    assert_eq!(status, 200);
    // Reports the agent sends now cannot be stored: the agent keeps them.
    let dark: Vec<Value> = (0..5).map(|i| report("full", i, 100)).collect();
    for r in &dark {
        machine.queue(r);
    }
    queued.extend(dark);
    std::thread::sleep(Duration::from_secs(3));
    assert!(agent.try_wait().is_none(), "the agent exited");

    // Space returns: writes work again and the held-back reports arrive, once each.
    fs::remove_file(&filler).unwrap();
    disk.resize("64m");
    let (status, created) = wait_for(TIMEOUT, "writes to work again", || {
        let (status, v) = cloud.post(
            "/v1/keys",
            &cloud.owner_key,
            &json!({"name": "after", "scope": "enroll"}),
        );
        (status != 503).then_some((status, v))
    });
    assert_eq!(status, 201, "{created}");
    assert_stored_exactly_once(&cloud, &id, &queued, TIMEOUT);

    // Nothing corrupted: SQLite's own check, after a clean stop.
    drop(agent);
    let code = cloud.stop();
    assert!(code.success(), "heex-cloud serve exited with {code}");
    let db = rusqlite::Connection::open(cloud.data().join("heex.db")).unwrap();
    let check: String = db
        .query_row("PRAGMA integrity_check", [], |r| r.get(0))
        .unwrap();
    assert_eq!(check, "ok");
    drop(db);
    drop(cloud);
    drop(disk);
}
