//! End-to-end tests of durable reports: the real `heex-cloud`, `heex-installer` and
//! `heex-agent` as separate processes. Reports submitted on the machine (socket or
//! `heex-agent report`) reach the cloud exactly once through cloud downtime, cloud and agent
//! crashes, a corrupted outbox tail and a full outbox. Every machine here was enrolled with a
//! key whose owner was then removed from the workspace (which revoked the key): nothing in
//! reporting depends on it.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::{BTreeMap, BTreeSet};
use std::io::{BufRead, BufReader, Write};
use std::os::unix::net::UnixStream;
use std::path::PathBuf;
use std::process::Command;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use heex_tests::{bin, device_command, stored_reports, wait_for, Cloud, Logs, Machine, Proc};
use serde_json::{json, Value};

const TIMEOUT: Duration = Duration::from_secs(60);

// ---------------------------------------------------------------- helpers

/// A machine enrolled with the key of a member who was then removed (revoking the key),
/// with fast agent timings.
fn enrolled(cloud: &Cloud, name: &str) -> (Machine, String) {
    let email = format!("{name}@example.com");
    let (status, inv) = cloud.post(
        "/v1/invitations",
        &cloud.owner_key,
        &json!({"email": email, "role": "admin"}),
    );
    assert_eq!(status, 201, "invite: {inv}");
    let resp = cloud
        .http()
        .post(format!("{}/v1/invitations/accept", cloud.api_url))
        .json(&json!({"token": inv["token"]}))
        .send()
        .unwrap();
    assert_eq!(resp.status().as_u16(), 201);
    let accepted: Value = resp.json().unwrap();
    let key = accepted["key"]["key"].as_str().unwrap().to_owned();
    let member = accepted["member"]["id"].as_str().unwrap().to_owned();

    let machine = Machine::new();
    let id = machine.enroll(cloud, &key, name);
    machine.configure("heartbeat_interval = \"1s\"");
    machine.configure("backoff_initial = \"100ms\"");
    machine.configure("backoff_max = \"500ms\"");

    let (status, removed) = cloud.post(
        &format!("/v1/members/{member}/remove"),
        &cloud.owner_key,
        &Value::Null,
    );
    assert_eq!(status, 200, "remove member: {removed}");
    let (status, _) = cloud.get("/v1/whoami", &key);
    assert_eq!(status, 401, "the enrolling key must be unusable now");
    (machine, id)
}

/// Waits until the cloud holds at least `n` reports of `device`; returns them.
fn wait_stored(cloud: &Cloud, device: &str, n: usize) -> Vec<(u64, Value)> {
    wait_for(TIMEOUT, &format!("{n} reports stored"), || {
        let got = stored_reports(cloud, device);
        (got.len() >= n).then_some(got)
    })
}

/// Asserts sequence numbers are distinct and increasing (each (device, seq) once).
fn assert_exactly_once(reports: &[(u64, Value)]) {
    let seqs: BTreeSet<u64> = reports.iter().map(|r| r.0).collect();
    assert_eq!(seqs.len(), reports.len(), "duplicate sequence numbers");
    let ids: Vec<&Value> = reports.iter().map(|r| &r.1["id"]).collect();
    let distinct: BTreeSet<String> = ids.iter().map(|v| v.to_string()).collect();
    assert_eq!(distinct.len(), ids.len(), "a report was stored twice");
}

fn socket_path(machine: &Machine) -> PathBuf {
    machine.state_dir().join("agent.sock")
}

/// A client of the agent's report socket.
struct Client {
    stream: UnixStream,
    reader: BufReader<UnixStream>,
}

impl Client {
    fn connect(machine: &Machine) -> Client {
        let path = socket_path(machine);
        let stream = wait_for(TIMEOUT, "the report socket", || {
            UnixStream::connect(&path).ok()
        });
        stream.set_read_timeout(Some(TIMEOUT)).unwrap();
        Client {
            reader: BufReader::new(stream.try_clone().unwrap()),
            stream,
        }
    }

    /// Sends every report (pipelined), then reads one answer per report.
    fn submit_all(&mut self, reports: &[Value]) -> std::io::Result<Vec<Value>> {
        let mut text = String::new();
        for r in reports {
            text.push_str(&r.to_string());
            text.push('\n');
        }
        self.stream.write_all(text.as_bytes())?;
        let mut answers = Vec::new();
        for _ in reports {
            let mut line = String::new();
            if self.reader.read_line(&mut line)? == 0 {
                return Err(std::io::ErrorKind::UnexpectedEof.into());
            }
            answers.push(serde_json::from_str(&line).unwrap());
        }
        Ok(answers)
    }
}

/// `heex-agent report --data JSON`: (exit code, stdout+stderr).
fn report_cli(machine: &Machine, data: &Value) -> (i32, String) {
    let out = device_command("heex-agent")
        .arg("report")
        .arg("--config")
        .arg(machine.agent_config())
        .arg("--data")
        .arg(data.to_string())
        .env("RUST_LOG", "warn")
        .output()
        .unwrap();
    (
        out.status.code().unwrap_or(-1),
        format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        ),
    )
}

fn agent(machine: &Machine, logs: &Logs) -> Proc {
    machine.agent(logs)
}

// ---------------------------------------------------------------- tests

#[test]
fn reports_submitted_while_the_cloud_is_down_arrive_exactly_once() {
    let mut cloud = Cloud::start();
    let (machine, id) = enrolled(&cloud, "down");
    cloud.kill9();
    let logs = Logs::new();
    let _agent = agent(&machine, &logs);

    let reports: Vec<Value> = (0..995)
        .map(|i| json!({"id": format!("s{i}"), "battery": i as f64 / 1000.0, "tags": ["a", i]}))
        .collect();
    let mut client = Client::connect(&machine);
    let answers = client.submit_all(&reports).unwrap();
    for a in &answers {
        assert_eq!(a["ok"], true, "{a}");
    }
    let mut expected: BTreeMap<String, Value> = reports
        .iter()
        .map(|r| (r["id"].as_str().unwrap().to_owned(), r.clone()))
        .collect();
    // The command works next to the daemon, under the same lock.
    for i in 0..5 {
        let r = json!({"id": format!("c{i}"), "via": "cli"});
        let (code, out) = report_cli(&machine, &r);
        assert_eq!(code, 0, "{out}");
        assert!(out.contains("queued report"), "{out}");
        expected.insert(format!("c{i}"), r);
    }
    // A report over the maximum is refused at intake with a clear error.
    let huge = json!({"id": "huge", "blob": "x".repeat(70_000)});
    let a = client.submit_all(std::slice::from_ref(&huge)).unwrap();
    assert_eq!(a[0]["ok"], false);
    assert!(
        a[0]["error"].as_str().unwrap().contains("maximum"),
        "{}",
        a[0]
    );
    let (code, out) = report_cli(&machine, &huge);
    assert_eq!(code, heex_proto::exit::DATA_ERROR, "{out}");

    cloud.serve();
    let got = wait_stored(&cloud, &id, 1000);
    std::thread::sleep(Duration::from_millis(500));
    let got_again = stored_reports(&cloud, &id);
    assert_eq!(got_again.len(), 1000, "more than 1,000 stored");
    assert_exactly_once(&got);
    let seqs: Vec<u64> = got.iter().map(|r| r.0).collect();
    assert_eq!(seqs, (1..=1000).collect::<Vec<_>>());
    for (_, payload) in &got {
        let id = payload["id"].as_str().unwrap();
        assert_eq!(Some(payload), expected.get(id), "content of {id}");
    }
    // The CLI lists them.
    let out = Command::new(bin("heex"))
        .args([
            "reports", "list", "--device", &id, "--after", "995", "--json",
        ])
        .env("HEEX_SERVER", &cloud.api_url)
        .env("HEEX_API_KEY", &cloud.owner_key)
        .env("HEEX_CA_FINGERPRINT", &cloud.fingerprint)
        .env("HOME", machine.root().join("cli"))
        .env("XDG_CONFIG_HOME", machine.root().join("cli"))
        .output()
        .unwrap();
    let listed: Value = serde_json::from_slice(&out.stdout).unwrap_or(Value::Null);
    assert_eq!(
        listed["reports"].as_array().map(Vec::len),
        Some(5),
        "heex reports list: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn killing_the_agent_repeatedly_loses_and_duplicates_nothing_acknowledged() {
    let cloud = Cloud::start();
    let (machine, id) = enrolled(&cloud, "crashy");
    let logs = Logs::new();
    let agent = Arc::new(Mutex::new(Some(agent(&machine, &logs))));
    Client::connect(&machine);

    let stop = Arc::new(AtomicBool::new(false));
    let succeeded = Arc::new(Mutex::new(Vec::<String>::new()));
    let submitters: Vec<_> = (0..3)
        .map(|t| {
            let stop = stop.clone();
            let succeeded = succeeded.clone();
            let path = socket_path(&machine);
            std::thread::spawn(move || {
                let mut n = 0;
                while !stop.load(Ordering::Relaxed) {
                    let Ok(stream) = UnixStream::connect(&path) else {
                        std::thread::sleep(Duration::from_millis(20));
                        continue;
                    };
                    stream
                        .set_read_timeout(Some(Duration::from_secs(10)))
                        .unwrap();
                    let mut c = Client {
                        reader: BufReader::new(stream.try_clone().unwrap()),
                        stream,
                    };
                    while !stop.load(Ordering::Relaxed) {
                        let batch: Vec<Value> = (0..20)
                            .map(|i| json!({"id": format!("t{t}-{}", n + i)}))
                            .collect();
                        n += 20;
                        match c.submit_all(&batch) {
                            Ok(answers) => {
                                let mut ok = succeeded.lock().unwrap();
                                for (r, a) in batch.iter().zip(answers) {
                                    if a["ok"] == true {
                                        ok.push(r["id"].as_str().unwrap().to_owned());
                                    }
                                }
                            }
                            Err(_) => break,
                        }
                    }
                }
            })
        })
        .collect();
    // And one process-per-report submitter.
    let cli = {
        let stop = stop.clone();
        let succeeded = succeeded.clone();
        let config = machine.agent_config();
        std::thread::spawn(move || {
            let mut n = 0;
            while !stop.load(Ordering::Relaxed) {
                let r = json!({"id": format!("cli-{n}")});
                n += 1;
                let out = device_command("heex-agent")
                    .arg("report")
                    .arg("--config")
                    .arg(&config)
                    .arg("--data")
                    .arg(r.to_string())
                    .output()
                    .unwrap();
                if out.status.success() {
                    succeeded
                        .lock()
                        .unwrap()
                        .push(r["id"].as_str().unwrap().to_owned());
                }
            }
        })
    };

    for round in 0..4 {
        std::thread::sleep(Duration::from_millis(400 + 100 * round));
        let mut a = agent.lock().unwrap();
        if let Some(mut p) = a.take() {
            p.kill9();
        }
        *a = Some(machine.agent(&logs));
    }
    std::thread::sleep(Duration::from_millis(400));
    stop.store(true, Ordering::Relaxed);
    for s in submitters {
        s.join().unwrap();
    }
    cli.join().unwrap();

    let succeeded = succeeded.lock().unwrap().clone();
    assert!(
        succeeded.len() > 200,
        "only {} reports submitted",
        succeeded.len()
    );
    let all = wait_for(TIMEOUT, "every acknowledged submission stored", || {
        let got = stored_reports(&cloud, &id);
        let ids: BTreeSet<String> = got
            .iter()
            .map(|r| r.1["id"].as_str().unwrap().to_owned())
            .collect();
        succeeded.iter().all(|s| ids.contains(s)).then_some(got)
    });
    assert_exactly_once(&all);
}

#[test]
fn killing_the_cloud_while_reports_flow_duplicates_nothing() {
    let mut cloud = Cloud::start();
    let (machine, id) = enrolled(&cloud, "flow");
    let logs = Logs::new();
    let _agent = agent(&machine, &logs);
    let mut client = Client::connect(&machine);

    let reports: Vec<Value> = (0..3000).map(|i| json!({"id": format!("f{i}")})).collect();
    for chunk in reports.chunks(500) {
        for a in client.submit_all(chunk).unwrap() {
            assert_eq!(a["ok"], true, "{a}");
        }
    }
    // Kill the cloud as soon as it has stored more, while the rest still flows; several times.
    let mut first = 0;
    for _ in 0..3 {
        let before = first;
        first = wait_for(TIMEOUT, "more reports stored", || {
            let n = stored_reports(&cloud, &id).len();
            (n > before || n == 3000).then_some(n)
        });
        cloud.kill9();
        cloud.serve();
    }
    let got = wait_stored(&cloud, &id, 3000);
    std::thread::sleep(Duration::from_millis(500));
    let got = if got.len() == 3000 {
        stored_reports(&cloud, &id)
    } else {
        got
    };
    assert_eq!(got.len(), 3000, "stored {} (first pass {first})", got.len());
    assert_exactly_once(&got);
    let ids: BTreeSet<String> = got
        .iter()
        .map(|r| r.1["id"].as_str().unwrap().to_owned())
        .collect();
    assert_eq!(ids.len(), 3000);
    eprintln!(
        "stored before the kill: {first}; redelivered reports ignored by the cloud: {}",
        cloud.logs.all().contains("delivered again and ignored")
    );
}

#[test]
fn a_corrupted_outbox_tail_is_cut_and_earlier_reports_delivered() {
    let cloud = Cloud::start();
    let (machine, id) = enrolled(&cloud, "corrupt");
    for i in 0..20 {
        let (code, out) = report_cli(&machine, &json!({"id": format!("r{i}")}));
        assert_eq!(code, 0, "{out}");
    }
    // Damage the last record: flip a byte of its payload and cut it short.
    let outbox = machine.state_dir().join("outbox");
    let seg = std::fs::read_dir(&outbox)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.file_name().unwrap().to_str().unwrap().starts_with("seg-"))
        .max()
        .unwrap();
    let mut bytes = std::fs::read(&seg).unwrap();
    let n = bytes.len();
    bytes[n - 3] ^= 0xff;
    bytes.truncate(n - 1);
    std::fs::write(&seg, &bytes).unwrap();

    let logs = Logs::new();
    let _agent = agent(&machine, &logs);
    let got = wait_stored(&cloud, &id, 19);
    assert_eq!(
        got.iter().map(|r| r.0).collect::<Vec<_>>(),
        (1..=19).collect::<Vec<_>>()
    );
    // Numbering continues after the last valid record.
    let (code, out) = report_cli(&machine, &json!({"id": "after"}));
    assert_eq!(code, 0, "{out}");
    let got = wait_stored(&cloud, &id, 20);
    assert_eq!(got[19], (20, json!({"id": "after"})));
    assert_exactly_once(&got);
    assert!(logs.all().contains("cutting"), "the repair is logged");
}

#[test]
fn a_full_outbox_refuses_clearly_and_drains_when_the_cloud_returns() {
    let mut cloud = Cloud::start();
    let (machine, id) = enrolled(&cloud, "full");
    machine.configure(&format!(
        "outbox_max_bytes = {}",
        2 * (heex_proto::frame::MAX_REPORT_BYTES + 16)
    ));
    cloud.kill9();
    let logs = Logs::new();
    let mut agent = agent(&machine, &logs);
    let mut client = Client::connect(&machine);

    let pad = "p".repeat(2000);
    let mut accepted = 0;
    let mut refusal = None;
    for i in 0..200 {
        let a = client
            .submit_all(&[json!({"id": format!("q{i}"), "pad": pad})])
            .unwrap();
        if a[0]["ok"] == true {
            accepted += 1;
        } else {
            refusal = Some(a[0]["error"].as_str().unwrap().to_owned());
            break;
        }
    }
    let refusal = refusal.expect("the outbox never filled up");
    assert!(refusal.contains("outbox is full"), "{refusal}");
    assert!(accepted > 10, "{accepted}");
    let (code, out) = report_cli(&machine, &json!({"id": "cli", "pad": pad}));
    assert_eq!(code, heex_proto::exit::TEMPFAIL, "{out}");
    assert!(out.contains("outbox is full"), "{out}");
    assert!(agent.try_wait().is_none(), "the agent keeps running");

    cloud.serve();
    let got = wait_stored(&cloud, &id, accepted);
    assert_eq!(got.len(), accepted);
    assert_exactly_once(&got);
    // Room again once the cloud acknowledged them.
    let started = Instant::now();
    wait_for(TIMEOUT, "room in the outbox", || {
        let a = client
            .submit_all(&[
                json!({"id": format!("later-{}", started.elapsed().as_micros()), "pad": pad}),
            ])
            .unwrap();
        (a[0]["ok"] == true).then_some(())
    });
    assert!(agent.try_wait().is_none(), "the agent keeps running");
}

/// Benchmark, not a check: end-to-end delivery rate of 20,000 reports submitted through the
/// socket while the cloud is down, then delivered when it returns. Run with
/// `cargo test --release -p heex-tests --test reports -- --ignored --nocapture delivery_rate`.
#[test]
#[ignore]
fn delivery_rate() {
    const N: usize = 20_000;
    let mut rates = Vec::new();
    for run in 0..3 {
        let mut cloud = Cloud::start();
        let (machine, id) = enrolled(&cloud, &format!("bench{run}"));
        cloud.kill9();
        let logs = Logs::new();
        let _agent = agent(&machine, &logs);
        let mut client = Client::connect(&machine);
        let reports: Vec<Value> = (0..N)
            .map(|i| json!({"id": format!("b{i}"), "pad": "x".repeat(180)}))
            .collect();
        let t = Instant::now();
        for chunk in reports.chunks(1000) {
            client.submit_all(chunk).unwrap();
        }
        let enqueue = N as f64 / t.elapsed().as_secs_f64();
        cloud.serve();
        let t = Instant::now();
        wait_for(Duration::from_secs(300), "all delivered", || {
            let (_, page) = cloud.get(
                &format!("/v1/devices/{id}/reports?after={}&limit=1", N - 1),
                &cloud.owner_key,
            );
            (page["reports"].as_array().map(Vec::len) == Some(1)).then_some(())
        });
        let deliver = N as f64 / t.elapsed().as_secs_f64();
        println!(
            "run {}: socket enqueue {enqueue:.0}/s, end-to-end delivery {deliver:.0}/s",
            run + 1
        );
        rates.push((enqueue, deliver));
    }
    let mut e: Vec<f64> = rates.iter().map(|r| r.0).collect();
    let mut d: Vec<f64> = rates.iter().map(|r| r.1).collect();
    e.sort_by(f64::total_cmp);
    d.sort_by(f64::total_cmp);
    println!(
        "median socket enqueue {:.0} reports/s, median delivery {:.0} reports/s",
        e[1], d[1]
    );
}
