//! End-to-end tests of the packaging: the Docker entrypoint and `heex-installer --systemd`,
//! against the real `heex-cloud`, `heex-installer` and `heex-agent` binaries.
//!
//! There is no Docker engine and no systemd as init here, so the real pieces are tested
//! directly: the entrypoint script runs as a process with temporary state and the container's
//! environment variables, and `--systemd` runs against a recording stand-in for `systemctl`
//! (and `systemd-sysusers`) first on PATH, under a temporary root.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::ffi::OsString;
use std::fs;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::Duration;

use heex_tests::{bin, files_containing, wait_for, Cloud, Proc};
use serde_json::Value;
use tempfile::TempDir;

const TIMEOUT: Duration = Duration::from_secs(60);

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .unwrap()
        .to_owned()
}

fn entrypoint_script() -> PathBuf {
    repo().join("packaging/docker/entrypoint.sh")
}

/// `dir` first on PATH, then the binaries' directory, then the usual PATH.
fn path_with(dirs: &[&Path]) -> OsString {
    let bins = bin("heex-agent").parent().unwrap().to_owned();
    let mut all: Vec<PathBuf> = dirs.iter().map(|d| d.to_path_buf()).collect();
    all.push(bins);
    all.extend(std::env::split_paths(
        &std::env::var_os("PATH").unwrap_or_default(),
    ));
    std::env::join_paths(all).unwrap()
}

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

fn describe(out: &Output) -> String {
    format!(
        "status {}\n--- stdout\n{}--- stderr\n{}",
        out.status,
        text(&out.stdout),
        text(&out.stderr)
    )
}

// ---------------------------------------------------------------- the Docker entrypoint

/// A container's volume: the state directory the entrypoint gets as HEEX_STATE_DIR.
struct Container {
    root: TempDir,
}

impl Container {
    fn new() -> Container {
        Container {
            root: tempfile::Builder::new()
                .prefix("heex-container-")
                .tempdir()
                .unwrap(),
        }
    }

    fn state_dir(&self) -> PathBuf {
        self.root.path().join("volume")
    }

    /// The entrypoint with the container environment for `cloud`, without any key variable.
    fn entrypoint(&self, cloud: &Cloud) -> Command {
        let mut cmd = Command::new("sh");
        cmd.arg(entrypoint_script())
            .env("PATH", path_with(&[]))
            .env("HEEX_STATE_DIR", self.state_dir())
            .env("HEEX_SERVER", &cloud.api_url)
            .env("HEEX_CA_FINGERPRINT", &cloud.fingerprint)
            .env("HEEX_DEVICE_NAME", "container-1")
            .env("HEEX_LABELS", "site=lyon, fleet=a")
            .env("RUST_LOG", "info")
            .env_remove("HEEX_CONFIG_DIR")
            .env_remove("HEEX_API_KEY")
            .env_remove("HEEX_API_KEY_FILE")
            .env_remove("HEEX_AGENT_CONFIG")
            .env_remove("NOTIFY_SOCKET");
        cmd
    }

    fn status(&self) -> Value {
        fs::read(self.state_dir().join("status.json"))
            .ok()
            .and_then(|b| serde_json::from_slice(&b).ok())
            .unwrap_or(Value::Null)
    }

    /// Waits until the agent running as process `pid` reports a session.
    fn wait_connected(&self, proc: &mut Proc) {
        let pid = proc.pid();
        wait_for(TIMEOUT, "the agent to connect", || {
            if let Some(status) = proc.try_wait() {
                panic!(
                    "entrypoint exited with {status}\n{}\n{}",
                    proc.stdout(),
                    proc.stderr()
                );
            }
            let s = self.status();
            (s["state"] == "connected" && s["pid"].as_u64() == Some(u64::from(pid))).then_some(())
        });
    }

    fn device_id(&self) -> String {
        let text = fs::read_to_string(self.state_dir().join("agent.toml")).unwrap();
        let t: toml::Table = text.parse().unwrap();
        t["device_id"].as_str().unwrap().to_owned()
    }
}

/// The environment of process `pid`, one `NAME=value` per entry.
fn environ(pid: u32) -> Vec<String> {
    fs::read(format!("/proc/{pid}/environ"))
        .unwrap()
        .split(|b| *b == 0)
        .filter(|e| !e.is_empty())
        .map(|e| String::from_utf8_lossy(e).into_owned())
        .collect()
}

/// Asserts that the entrypoint has become the agent (`exec`) and that the key is not in the
/// agent's environment.
fn assert_agent_without_key(pid: u32, key: &str) {
    let exe = fs::read_link(format!("/proc/{pid}/exe")).unwrap();
    assert!(
        exe.ends_with("heex-agent"),
        "the entrypoint execs the agent: {exe:?}"
    );
    let env = environ(pid);
    assert!(
        env.iter().any(|e| e.starts_with("HEEX_SERVER=")),
        "read the right environment: {env:?}"
    );
    for e in &env {
        assert!(
            !e.contains(key),
            "the API key is in the agent's environment"
        );
        assert!(
            !e.starts_with("HEEX_API_KEY=") && !e.starts_with("HEEX_API_KEY_FILE="),
            "{e}"
        );
    }
}

#[test]
fn entrypoint_enrolls_once_then_restarts_without_the_key() {
    let cloud = Cloud::start();
    let (key, key_id) = cloud.create_key("docker-fleet-a", "enroll", None);
    let container = Container::new();

    // First start: enrolls with the key, then runs the agent without it.
    let mut first = cloud.logs.spawn(
        "entrypoint",
        container.entrypoint(&cloud).env("HEEX_API_KEY", &key),
    );
    container.wait_connected(&mut first);
    assert_agent_without_key(first.pid(), &key);
    assert!(
        first.stdout().contains("Enrolled as dev_"),
        "{}",
        first.stdout()
    );
    let id = container.device_id();
    let devices = cloud.devices();
    assert_eq!(devices.len(), 1, "{devices:?}");
    assert_eq!(devices[0]["id"], id.as_str());
    assert_eq!(devices[0]["name"], "container-1");
    assert_eq!(
        devices[0]["labels"],
        serde_json::json!({"site": "lyon", "fleet": "a"})
    );
    assert!(files_containing(container.root.path(), &key).is_empty());
    let device_key = fs::read(container.state_dir().join("device.key")).unwrap();
    assert_eq!(
        heex_tests::mode(&container.state_dir().join("device.key")),
        0o600
    );

    first.signal("TERM");
    let status = first
        .wait_timeout(TIMEOUT)
        .expect("the agent stops on SIGTERM");
    assert!(status.success(), "{status}");

    // Second start, HEEX_API_KEY removed: no enrollment, same identity, connected again.
    let mut second = cloud
        .logs
        .spawn("entrypoint", &mut container.entrypoint(&cloud));
    container.wait_connected(&mut second);
    assert!(
        !second.stdout().contains("Enrolling"),
        "{}",
        second.stdout()
    );
    assert_eq!(container.device_id(), id);
    assert_eq!(
        fs::read(container.state_dir().join("device.key")).unwrap(),
        device_key
    );
    assert_eq!(cloud.devices().len(), 1);
    second.signal("TERM");
    second.wait_timeout(TIMEOUT).expect("the agent stops");

    // Third start with the key revoked meanwhile but still set: the state is all it needs.
    cloud.revoke_key(&key_id);
    let mut third = cloud.logs.spawn(
        "entrypoint",
        container.entrypoint(&cloud).env("HEEX_API_KEY", &key),
    );
    container.wait_connected(&mut third);
    assert_agent_without_key(third.pid(), &key);
    assert_eq!(container.device_id(), id);
    assert_eq!(cloud.devices().len(), 1);
}

#[test]
fn entrypoint_reads_the_key_from_a_file() {
    let cloud = Cloud::start();
    let (key, _) = cloud.create_key("docker-secret", "enroll", None);
    let container = Container::new();
    let secret = container.root.path().join("heex_api_key");
    fs::write(&secret, format!("{key}\n")).unwrap();
    let mut proc = cloud.logs.spawn(
        "entrypoint",
        container
            .entrypoint(&cloud)
            .env("HEEX_API_KEY_FILE", &secret),
    );
    container.wait_connected(&mut proc);
    assert_agent_without_key(proc.pid(), &key);
    assert_eq!(cloud.devices().len(), 1);
}

#[test]
fn fresh_container_with_a_revoked_key_says_so_in_one_line() {
    let cloud = Cloud::start();
    let (key, key_id) = cloud.create_key("docker-fleet-b", "enroll", None);
    cloud.revoke_key(&key_id);
    let container = Container::new();

    let out = cloud.logs.run(
        "entrypoint",
        container.entrypoint(&cloud).env("HEEX_API_KEY", &key),
        TIMEOUT,
    );
    assert_eq!(out.status.code(), Some(77), "{}", describe(&out));
    let all = format!("{}{}", text(&out.stdout), text(&out.stderr));
    let lines: Vec<&str> = all.lines().filter(|l| !l.trim().is_empty()).collect();
    assert_eq!(lines.len(), 1, "one line: {}", describe(&out));
    let line = lines[0];
    assert!(line.contains(&key_id), "{line}");
    assert!(line.contains("revoked"), "{line}");
    assert!(
        line.contains("HEEX_API_KEY") && line.contains("active team member"),
        "{line}"
    );
    assert!(
        !line.contains(&key[5..]),
        "the key's secret is never printed"
    );
    assert!(cloud.devices().is_empty());
    assert!(!container.state_dir().join("agent.toml").exists());
}

#[test]
fn entrypoint_refuses_two_key_sources_and_missing_settings() {
    // Neither case reaches the network: an unused loopback port stands in for the cloud.
    let container = Container::new();
    let mut base = Command::new("sh");
    base.arg(entrypoint_script())
        .env("PATH", path_with(&[]))
        .env("HEEX_STATE_DIR", container.state_dir())
        .env("HEEX_SERVER", "https://127.0.0.1:9")
        .env("HEEX_CA_FINGERPRINT", format!("sha256:{}", "0".repeat(64)))
        .env_remove("HEEX_CONFIG_DIR");
    let logs = heex_tests::Logs::new();

    let out = logs.run(
        "entrypoint",
        base.env("HEEX_API_KEY", "heex_x")
            .env("HEEX_API_KEY_FILE", "/run/secrets/k"),
        TIMEOUT,
    );
    assert_eq!(out.status.code(), Some(64), "{}", describe(&out));
    assert!(out.stdout.is_empty());
    assert_eq!(text(&out.stderr).lines().count(), 1, "{}", describe(&out));
    assert!(text(&out.stderr).contains("both HEEX_API_KEY and HEEX_API_KEY_FILE"));

    let out = logs.run(
        "entrypoint",
        base.env_remove("HEEX_API_KEY")
            .env_remove("HEEX_API_KEY_FILE")
            .env_remove("HEEX_SERVER"),
        TIMEOUT,
    );
    assert_eq!(out.status.code(), Some(78), "{}", describe(&out));
    let err = text(&out.stderr);
    assert_eq!(err.lines().count(), 1, "{}", describe(&out));
    assert!(
        err.contains("HEEX_SERVER") && err.contains("HEEX_API_KEY"),
        "{err}"
    );
    assert!(!container.state_dir().exists(), "nothing written");
}

// ---------------------------------------------------------------- heex-installer --systemd

/// A machine image under a temporary root, with recording stand-ins for `systemctl` and
/// `systemd-sysusers` first on PATH.
struct SystemdHost {
    root: TempDir,
}

impl SystemdHost {
    fn new(booted: bool) -> SystemdHost {
        let host = SystemdHost {
            root: tempfile::Builder::new()
                .prefix("heex-systemd-")
                .tempdir()
                .unwrap(),
        };
        if booted {
            fs::create_dir_all(host.path("run/systemd/system")).unwrap();
        }
        fs::create_dir_all(host.path("stubs")).unwrap();
        fs::create_dir_all(host.path("etc")).unwrap();
        host.stub(
            "systemctl",
            &format!("echo \"$*\" >> '{}'", host.path("systemctl.log").display()),
        );
        // Like the real tool with --root: adds the user to <root>/etc/passwd (here with this
        // test's own uid and gid, so handing files over needs no privilege).
        host.stub(
            "systemd-sysusers",
            &format!(
                "echo \"$*\" >> '{log}'\necho \"heex:x:$(id -u):$(id -g):Heex agent:/var/lib/heex:/usr/sbin/nologin\" >> '{passwd}'",
                log = host.path("sysusers.log").display(),
                passwd = host.path("etc/passwd").display()
            ),
        );
        host
    }

    fn path(&self, rel: &str) -> PathBuf {
        self.root.path().join(rel)
    }

    fn stub(&self, name: &str, body: &str) {
        let p = self.path("stubs").join(name);
        fs::write(&p, format!("#!/bin/sh\n{body}\n")).unwrap();
        fs::set_permissions(&p, fs::Permissions::from_mode(0o755)).unwrap();
    }

    fn log(&self, name: &str) -> Vec<String> {
        fs::read_to_string(self.path(name))
            .unwrap_or_default()
            .lines()
            .map(str::to_owned)
            .collect()
    }

    fn unit(&self) -> PathBuf {
        self.path("etc/systemd/system/heex-agent.service")
    }

    fn installer(&self, cloud: &Cloud, key: &str) -> Command {
        let mut cmd = Command::new(bin("heex-installer"));
        cmd.arg("--server")
            .arg(&cloud.api_url)
            .arg("--ca-fingerprint")
            .arg(&cloud.fingerprint)
            .arg("--config-dir")
            .arg(self.path("etc/heex"))
            .arg("--state-dir")
            .arg(self.path("var/lib/heex"))
            .arg("--name")
            .arg("robot-7")
            .arg("--systemd")
            .arg("--systemd-root")
            .arg(self.root.path())
            .env("PATH", path_with(&[&self.path("stubs")]))
            .env("HEEX_API_KEY", key)
            .env_remove("HEEX_API_KEY_FILE");
        cmd
    }
}

#[test]
fn installer_systemd_installs_enables_and_starts_the_unit_idempotently() {
    let cloud = Cloud::start();
    let (key, _) = cloud.create_key("robots", "enroll", None);
    let host = SystemdHost::new(true);

    let out = cloud
        .logs
        .run("installer", &mut host.installer(&cloud, &key), TIMEOUT);
    assert!(out.status.success(), "{}", describe(&out));
    let stdout = text(&out.stdout);
    assert!(stdout.contains("Enrolled as dev_"), "{stdout}");

    // The unit lands where systemd looks, and is the packaged one with ExecStart pointing at
    // the agent beside the installer.
    let unit = fs::read_to_string(host.unit()).unwrap();
    let packaged = fs::read_to_string(repo().join("packaging/systemd/heex-agent.service")).unwrap();
    let agent = bin("heex-agent");
    let expected_body = packaged.replace(
        "ExecStart=/usr/bin/heex-agent ",
        &format!("ExecStart={} ", agent.display()),
    );
    assert!(unit.ends_with(&expected_body), "{unit}");
    assert_eq!(heex_tests::mode(&host.unit()), 0o644);

    // The service user was created under the root, then daemon-reload, enable and start, in
    // that order.
    assert_eq!(host.log("sysusers.log").len(), 1);
    assert!(host.log("sysusers.log")[0].contains(&format!("--root={}", host.root.path().display())));
    assert_eq!(
        host.log("systemctl.log"),
        [
            "daemon-reload",
            "enable heex-agent.service",
            "start heex-agent.service"
        ]
    );
    // The credentials belong to the service user (here: this test's uid) and stay private.
    let uid = fs::metadata(host.path("etc/passwd")).unwrap().uid();
    for f in ["", "device.key", "device.crt", "ca.crt"] {
        let p = host.path("var/lib/heex").join(f);
        assert_eq!(fs::metadata(&p).unwrap().uid(), uid, "{}", p.display());
    }
    assert_eq!(
        heex_tests::mode(&host.path("var/lib/heex/device.key")),
        0o600
    );
    assert_eq!(heex_tests::mode(&host.path("var/lib/heex")), 0o700);

    // Rerun: nothing rewritten, nothing reloaded, no key spent; enable and start repeated.
    let before = fs::metadata(host.unit()).unwrap();
    let out = cloud
        .logs
        .run("installer", &mut host.installer(&cloud, &key), TIMEOUT);
    assert!(out.status.success(), "{}", describe(&out));
    assert!(
        text(&out.stdout).contains("already enrolled"),
        "{}",
        describe(&out)
    );
    let after = fs::metadata(host.unit()).unwrap();
    assert_eq!(
        (before.ino(), before.mtime(), before.mtime_nsec()),
        (after.ino(), after.mtime(), after.mtime_nsec()),
        "the unit is not rewritten"
    );
    assert_eq!(
        host.log("systemctl.log"),
        [
            "daemon-reload",
            "enable heex-agent.service",
            "start heex-agent.service",
            "enable heex-agent.service",
            "start heex-agent.service"
        ]
    );
    assert_eq!(
        host.log("sysusers.log").len(),
        1,
        "the user is created once"
    );
    assert_eq!(cloud.devices().len(), 1);
}

#[test]
fn installer_no_start_enables_without_starting() {
    let cloud = Cloud::start();
    let (key, _) = cloud.create_key("robots", "enroll", None);
    let host = SystemdHost::new(true);
    let out = cloud.logs.run(
        "installer",
        host.installer(&cloud, &key).arg("--no-start"),
        TIMEOUT,
    );
    assert!(out.status.success(), "{}", describe(&out));
    assert_eq!(
        host.log("systemctl.log"),
        ["daemon-reload", "enable heex-agent.service"]
    );
    assert!(text(&out.stdout).contains("not started (--no-start)"));
}

#[test]
fn installer_systemd_on_a_machine_without_systemd_says_so_before_spending_the_key() {
    let cloud = Cloud::start();
    let (key, _) = cloud.create_key("robots", "enroll", None);
    let host = SystemdHost::new(false);
    let out = cloud
        .logs
        .run("installer", &mut host.installer(&cloud, &key), TIMEOUT);
    assert_eq!(out.status.code(), Some(64), "{}", describe(&out));
    let err = text(&out.stderr);
    assert_eq!(err.lines().count(), 1, "{}", describe(&out));
    assert!(
        err.contains("--systemd needs systemd") && err.contains("not running it"),
        "{err}"
    );
    assert!(cloud.devices().is_empty(), "the key was not spent");
    assert!(!host.path("etc/heex/agent.toml").exists());
    assert!(host.log("systemctl.log").is_empty());
}
