//! End-to-end test of who may submit reports: the real `heex-cloud`, `heex-installer` and
//! `heex-agent`, with `heex-agent report` run as other system users. A user in the report
//! socket's group (`socket_group`) who cannot write the outbox has the report carried over
//! the socket to the cloud; a user outside the group is refused with one line naming the fix
//! and exit 73. The socket is 0660 in that group, its directory 0750, and the state directory
//! (which holds the device key) stays 0700.
//!
//! Needs root (to create users and switch to them): skipped with a message otherwise, and a
//! failure when `CI` is set. The system users `heex-sock-in`, `heex-sock-out` and the group
//! `heex-sock-grp` are created when missing and left in place (no home, no login shell).
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::fs;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use heex_tests::{bin, mode, wait_for, Cloud, Logs, Machine};
use serde_json::{json, Value};

const TIMEOUT: Duration = Duration::from_secs(60);
const GROUP: &str = "heex-sock-grp";
const USER_IN: &str = "heex-sock-in";
const USER_OUT: &str = "heex-sock-out";

fn is_root() -> bool {
    let out = Command::new("id").arg("-u").output().unwrap();
    String::from_utf8_lossy(&out.stdout).trim() == "0"
}

fn exists(db: &str, name: &str) -> bool {
    Command::new("getent")
        .arg(db)
        .arg(name)
        .output()
        .unwrap()
        .status
        .success()
}

fn ensure_accounts() {
    if !exists("group", GROUP) {
        let st = Command::new("groupadd")
            .arg("--system")
            .arg(GROUP)
            .status()
            .unwrap();
        assert!(st.success(), "groupadd {GROUP}");
    }
    for (user, extra) in [(USER_IN, Some(GROUP)), (USER_OUT, None)] {
        if !exists("passwd", user) {
            let mut cmd = Command::new("useradd");
            cmd.args([
                "--system",
                "--no-create-home",
                "--shell",
                "/usr/sbin/nologin",
            ])
            .args(["--user-group", user]);
            let st = cmd.status().unwrap();
            assert!(st.success(), "useradd {user}");
        }
        if let Some(g) = extra {
            let st = Command::new("usermod")
                .args(["-a", "-G", g, user])
                .status()
                .unwrap();
            assert!(st.success(), "usermod -aG {g} {user}");
        }
    }
}

/// The gid of `group` from the group database.
fn gid(group: &str) -> u32 {
    let out = Command::new("getent")
        .arg("group")
        .arg(group)
        .output()
        .unwrap();
    String::from_utf8_lossy(&out.stdout)
        .split(':')
        .nth(2)
        .unwrap()
        .trim()
        .parse()
        .unwrap()
}

/// A runtime directory under /run that the agent creates; removed on drop.
struct RuntimeDir(PathBuf);

impl Drop for RuntimeDir {
    fn drop(&mut self) {
        let _ = fs::remove_dir_all(&self.0);
    }
}

/// `heex-agent report --data JSON` as `user` (with its groups): (exit code, stdout, stderr).
fn report_as(user: &str, machine: &Machine, data: &Value) -> (i32, String, String) {
    let out = Command::new("setpriv")
        .arg(format!("--reuid={user}"))
        .arg(format!("--regid={user}"))
        .arg("--init-groups")
        .arg(bin("heex-agent"))
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
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// Every directory from `path` up to `/` traversable by others (the test binaries and the
/// machine's config must be reachable by the other users).
fn open_up_to_root(path: &Path) {
    for dir in path.ancestors() {
        if dir.as_os_str().is_empty() || dir == Path::new("/") {
            continue;
        }
        let m = mode(dir);
        if m & 0o005 != 0o005 {
            fs::set_permissions(dir, fs::Permissions::from_mode(m | 0o055)).unwrap();
        }
    }
}

#[test]
fn socket_group_members_report_others_are_refused() {
    if !is_root() {
        assert!(
            std::env::var_os("CI").is_none(),
            "socket_access needs root (to create users and run as them), and CI is set"
        );
        println!("SKIPPED socket_access: needs root to create users and run as them");
        return;
    }
    ensure_accounts();

    let cloud = Cloud::start();
    let logs = Logs::new();
    let machine = Machine::new();
    let device = machine.enroll(&cloud, &cloud.owner_key, "sock-robot");
    machine.configure("heartbeat_interval = \"1s\"");
    machine.configure("backoff_initial = \"100ms\"");
    machine.configure("backoff_max = \"500ms\"");

    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .subsec_nanos();
    let run = RuntimeDir(PathBuf::from(format!(
        "/run/heex-test-{}-{nanos}",
        std::process::id()
    )));
    let socket = run.0.join("agent.sock");
    machine.configure(&format!("socket_path = {:?}", socket.display().to_string()));
    machine.configure(&format!("socket_group = \"{GROUP}\""));

    // Other users must reach the binary and read agent.toml, never the state directory.
    open_up_to_root(&bin("heex-agent"));
    open_up_to_root(&machine.config_dir());
    fs::set_permissions(machine.config_dir(), fs::Permissions::from_mode(0o755)).unwrap();
    fs::set_permissions(machine.agent_config(), fs::Permissions::from_mode(0o644)).unwrap();
    let state = machine.state_dir();
    assert_eq!(
        mode(&state),
        0o700,
        "the installer makes the state directory 0700"
    );

    let mut agent = machine.agent(&logs);
    wait_for(TIMEOUT, "the report socket", || {
        std::os::unix::net::UnixStream::connect(&socket).ok()
    });

    // The socket and its directory: owner and socket_group only.
    let meta = fs::metadata(&socket).unwrap();
    assert_eq!(meta.mode() & 0o777, 0o660, "socket mode");
    assert_eq!(meta.gid(), gid(GROUP), "socket group");
    let dmeta = fs::metadata(&run.0).unwrap();
    assert_eq!(dmeta.mode() & 0o777, 0o750, "socket directory mode");
    assert_eq!(dmeta.gid(), gid(GROUP), "socket directory group");

    // In the group: the report goes over the socket and reaches the cloud.
    let (code, out, err) = report_as(USER_IN, &machine, &json!({"from": "in-group", "n": 1}));
    assert_eq!(code, 0, "in-group report: {out}{err}\n{}", logs.all());

    // Outside the group: refused, one line naming the fix, exit 73.
    let (code, out, err) = report_as(USER_OUT, &machine, &json!({"from": "outsider"}));
    assert_eq!(code, 73, "outsider report: {out}{err}");
    let text = format!("{out}{err}");
    let lines: Vec<&str> = text.lines().filter(|l| !l.trim().is_empty()).collect();
    assert_eq!(lines.len(), 1, "one line: {text}");
    assert!(lines[0].contains("socket_group"), "names the fix: {text}");
    assert!(!text.contains("panicked"), "{text}");

    let stored = wait_for(TIMEOUT, "the in-group report in the cloud", || {
        let (status, page) = cloud.get(
            &format!("/v1/devices/{device}/reports?after=0&limit=1000"),
            &cloud.owner_key,
        );
        assert_eq!(status, 200, "list reports: {page}");
        let reports = page["reports"].as_array().unwrap().clone();
        reports
            .iter()
            .any(|r| r["payload"]["from"] == "in-group")
            .then_some(reports)
    });
    assert!(
        !stored.iter().any(|r| r["payload"]["from"] == "outsider"),
        "the refused report must not be stored: {stored:?}"
    );
    assert_eq!(stored.len(), 1, "exactly the one report: {stored:?}");

    // The state directory (device key) was never opened up.
    assert_eq!(mode(&state), 0o700, "state directory mode");

    agent.signal("TERM");
    agent.wait_timeout(TIMEOUT);
}
