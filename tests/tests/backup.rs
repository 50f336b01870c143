//! `heex-cloud backup` while the cloud serves enrollments and reports, `heex-cloud restore`
//! into a fresh directory, and the restored cloud serving the agents enrolled before the
//! backup — real processes; plus the refusals (damaged file, occupied target, existing
//! output, a PostgreSQL data directory).
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::BTreeSet;
use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use heex_tests::{device_command, stored_reports, wait_for, Cloud, Machine};
use serde_json::json;

const TIMEOUT: Duration = Duration::from_secs(60);

fn heex_cloud(cloud: &Cloud, args: &[&str]) -> std::process::Output {
    let mut cmd = cloud.command();
    cmd.args(args);
    cloud.logs.run("heex-cloud", &mut cmd, TIMEOUT)
}

fn device_ids(cloud: &Cloud) -> BTreeSet<String> {
    cloud
        .devices()
        .iter()
        .map(|d| d["id"].as_str().unwrap().to_owned())
        .collect()
}

#[test]
fn a_backup_under_load_restores_every_acknowledged_enrollment_and_report() {
    if heex_tests::sqlite_only(
        "backup under load",
        "heex-cloud backup copies SQLite data directories; PostgreSQL's is pg_dump",
    ) {
        return;
    }
    let mut cloud = Cloud::start();
    let (api_url, fingerprint) = (cloud.api_url.clone(), cloud.fingerprint.clone());
    let (key, _) = cloud.create_key("fleet", "enroll", None);
    let robot = Machine::new();
    let robot_id = robot.enroll(&cloud, &key, "robot");
    robot.configure("heartbeat_interval = \"1s\"");
    robot.configure("backoff_initial = \"250ms\"");
    robot.configure("backoff_max = \"1s\"");
    let _agent = robot.agent(&cloud.logs);
    wait_for(TIMEOUT, "the robot's session", || {
        (robot.status_file()["state"] == "connected").then_some(())
    });

    // Load: enrollments and reports keep coming while the backup runs.
    let stop = Arc::new(AtomicBool::new(false));
    let enrolled = Arc::new(Mutex::new(Vec::<String>::new()));
    let enroller = {
        let (stop, enrolled, key) = (stop.clone(), enrolled.clone(), key.clone());
        std::thread::spawn(move || {
            let mut n = 0;
            while !stop.load(Ordering::Relaxed) {
                n += 1;
                let m = Machine::new();
                let out = m
                    .installer_at(&api_url, &fingerprint, &key)
                    .arg("--name")
                    .arg(format!("load-{n}"))
                    .output()
                    .unwrap();
                assert!(out.status.success(), "{out:?}");
                enrolled.lock().unwrap().push(m.device_id());
            }
        })
    };
    let config = robot.agent_config();
    let reporter = {
        let stop = stop.clone();
        std::thread::spawn(move || {
            let mut n = 0u64;
            while !stop.load(Ordering::Relaxed) {
                n += 1;
                let out = device_command("heex-agent")
                    .arg("report")
                    .arg("--config")
                    .arg(&config)
                    .arg("--data")
                    .arg(json!({ "id": n }).to_string())
                    .env("RUST_LOG", "warn")
                    .output()
                    .unwrap();
                assert!(out.status.success(), "{out:?}");
                std::thread::sleep(Duration::from_millis(20));
            }
            n
        })
    };
    // Wait for some of each, then note what the cloud acknowledged before the backup began.
    let (devices_before, reports_before) = wait_for(TIMEOUT, "load under way", || {
        let reports = stored_reports(&cloud, &robot_id);
        let devices = device_ids(&cloud);
        (reports.len() >= 10 && devices.len() >= 4).then_some((devices, reports))
    });
    let backups = tempfile::tempdir().unwrap();
    let file = backups.path().join("cloud.heex-backup");
    let data = cloud.data();
    let out = heex_cloud(
        &cloud,
        &[
            "backup",
            "--data-dir",
            data.to_str().unwrap(),
            "--out",
            file.to_str().unwrap(),
        ],
    );
    assert!(out.status.success(), "{out:?}");
    std::thread::sleep(Duration::from_millis(500));
    stop.store(true, Ordering::Relaxed);
    enroller.join().unwrap();
    let queued = reporter.join().unwrap();
    let mode = fs::metadata(&file).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode, 0o600, "the backup holds the CA key");
    let before_restore = device_ids(&cloud);
    assert!(
        before_restore.len() > devices_before.len(),
        "enrollments went on during the backup"
    );
    assert!(queued as usize > reports_before.len());

    // The cloud is lost; its backup goes into an empty directory under the same ports.
    cloud.stop();
    fs::remove_dir_all(&data).unwrap();
    let out = heex_cloud(
        &cloud,
        &[
            "restore",
            "--from",
            file.to_str().unwrap(),
            "--data-dir",
            data.to_str().unwrap(),
        ],
    );
    assert!(out.status.success(), "{out:?}");
    cloud.serve();

    // Every enrollment and report acknowledged before the backup began is there, once.
    let restored = device_ids(&cloud);
    assert!(
        devices_before.is_subset(&restored),
        "missing after restore: {:?}",
        devices_before.difference(&restored).collect::<Vec<_>>()
    );
    // Nothing invented: every restored device existed, and the load did enroll some.
    assert!(restored.iter().all(|d| before_restore.contains(d)));
    assert!(!enrolled.lock().unwrap().is_empty());
    let reports_after = stored_reports(&cloud, &robot_id);
    for (seq, payload) in &reports_before {
        assert!(
            reports_after.iter().any(|(s, p)| s == seq && p == payload),
            "report {seq} ({payload}) was acknowledged before the backup and is missing"
        );
    }
    let seqs: BTreeSet<u64> = reports_after.iter().map(|r| r.0).collect();
    assert_eq!(seqs.len(), reports_after.len(), "a report stored twice");

    // The robot enrolled before the backup reconnects to the restored cloud by itself, and
    // what it queued after the backup point arrives (the restored cloud tells it where its
    // numbers start).
    let pid = u64::from(_agent.pid());
    wait_for(TIMEOUT, "the robot back on the restored cloud", || {
        let s = robot.status_file();
        (s["pid"].as_u64() == Some(pid) && s["state"] == "connected").then_some(())
    });
    let id = format!("after-restore-{queued}");
    let out = device_command("heex-agent")
        .arg("report")
        .arg("--config")
        .arg(robot.agent_config())
        .arg("--data")
        .arg(json!({ "id": id }).to_string())
        .output()
        .unwrap();
    assert!(out.status.success(), "{out:?}");
    wait_for(TIMEOUT, "a new report on the restored cloud", || {
        stored_reports(&cloud, &robot_id)
            .iter()
            .any(|(_, p)| p["id"] == id.as_str())
            .then_some(())
    });
}

#[test]
fn backups_and_restores_refuse_what_would_lose_or_damage_data() {
    let cloud = Cloud::start();
    let tmp = tempfile::tempdir().unwrap();
    let file = tmp.path().join("b.heex-backup");
    let data = cloud.data();
    let backup = |out: &std::path::Path| {
        heex_cloud(
            &cloud,
            &[
                "backup",
                "--data-dir",
                data.to_str().unwrap(),
                "--out",
                out.to_str().unwrap(),
            ],
        )
    };
    let restore = |from: &std::path::Path, to: &std::path::Path| {
        heex_cloud(
            &cloud,
            &[
                "restore",
                "--from",
                from.to_str().unwrap(),
                "--data-dir",
                to.to_str().unwrap(),
            ],
        )
    };
    if cloud.pg().is_some() {
        let out = backup(&file);
        assert_eq!(out.status.code(), Some(64), "{out:?}");
        assert!(
            String::from_utf8_lossy(&out.stderr).contains("pg_dump"),
            "{out:?}"
        );
        assert!(!file.exists());
        return;
    }
    let out = backup(&file);
    assert!(out.status.success(), "{out:?}");
    // An existing file is never overwritten.
    let before = fs::read(&file).unwrap();
    let out = backup(&file);
    assert_eq!(out.status.code(), Some(64), "{out:?}");
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("exists"),
        "{out:?}"
    );
    assert_eq!(fs::read(&file).unwrap(), before);
    // No stray temporary file beside it.
    assert_eq!(fs::read_dir(tmp.path()).unwrap().count(), 1);

    // A target that holds anything is refused, and left as it was.
    let occupied = tmp.path().join("occupied");
    fs::create_dir(&occupied).unwrap();
    fs::write(occupied.join("notes.txt"), "mine").unwrap();
    let out = restore(&file, &occupied);
    assert_eq!(out.status.code(), Some(64), "{out:?}");
    assert_eq!(fs::read_dir(&occupied).unwrap().count(), 1);

    // One flipped byte in the records (here, in the CA certificate it carries) is found;
    // nothing is created.
    let mut damaged = before.clone();
    let at = damaged
        .windows(17)
        .position(|w| w == b"BEGIN CERTIFICATE")
        .unwrap();
    damaged[at + 40] ^= 0x01;
    let bad = tmp.path().join("damaged.heex-backup");
    fs::write(&bad, &damaged).unwrap();
    let target = tmp.path().join("restored");
    let out = restore(&bad, &target);
    assert_eq!(out.status.code(), Some(64), "{out:?}");
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("a byte differs"),
        "{out:?}"
    );
    assert!(!target.exists());
    assert!(
        fs::read_dir(tmp.path()).unwrap().all(|e| !e
            .unwrap()
            .file_name()
            .to_string_lossy()
            .starts_with(".heex-restore")),
        "a staging directory was left behind"
    );
    // Not a backup at all.
    let junk = tmp.path().join("junk");
    fs::write(&junk, b"not a database").unwrap();
    let out = restore(&junk, &target);
    assert_eq!(out.status.code(), Some(64), "{out:?}");
    assert!(!target.exists());

    // The good file restores, with the secrets' modes.
    let out = restore(&file, &target);
    assert!(out.status.success(), "{out:?}");
    for (name, mode) in [
        ("ca.key", 0o600),
        ("secret", 0o600),
        ("server.key", 0o600),
        ("heex.db", 0o600),
        ("ca.crt", 0o644),
    ] {
        let m = fs::metadata(target.join(name))
            .unwrap()
            .permissions()
            .mode()
            & 0o777;
        assert_eq!(m, mode, "{name}");
    }
    assert_eq!(
        fs::read(target.join("ca.key")).unwrap(),
        fs::read(data.join("ca.key")).unwrap()
    );
}
