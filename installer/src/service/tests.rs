use std::os::unix::fs::PermissionsExt;

use super::*;

/// A fake machine: a root with the systemd marker, a bin directory with recording stand-ins
/// for `systemctl` and `systemd-sysusers`, and a `heex-agent` beside the "installer".
struct Host {
    root: tempfile::TempDir,
}

impl Host {
    fn new() -> Host {
        let host = Host {
            root: tempfile::tempdir().unwrap(),
        };
        fs::create_dir_all(host.path("run/systemd/system")).unwrap();
        fs::create_dir_all(host.path("etc")).unwrap();
        fs::create_dir_all(host.path("var/lib/heex")).unwrap();
        fs::create_dir_all(host.path("bin")).unwrap();
        host.script("heex-agent", "exit 0");
        host.script(
            "systemctl",
            &format!(
                "echo \"$*\" >> '{}'\n[ ! -e \"{}/fail-$1\" ] || {{ echo 'Job failed. See journal.' >&2; exit 1; }}",
                host.path("systemctl.log").display(),
                host.root.path().display()
            ),
        );
        host.script(
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

    fn script(&self, name: &str, body: &str) {
        let p = self.path("bin").join(name);
        fs::write(&p, format!("#!/bin/sh\n{body}\n")).unwrap();
        fs::set_permissions(&p, fs::Permissions::from_mode(0o755)).unwrap();
    }

    fn prepare(&self, start: bool) -> Result<Service, InstallError> {
        Service::prepare_with(
            self.root.path(),
            &self.path("etc/heex"),
            &self.path("var/lib/heex"),
            start,
            Some(self.path("bin").into_os_string()),
            Some(&self.path("bin")),
        )
    }

    fn install(&self, start: bool, changed: bool) -> Result<String, InstallError> {
        let mut out = Vec::new();
        let service = self.prepare(start)?;
        service.install(&mut Progress::new(&mut out), changed)?;
        Ok(String::from_utf8(out).unwrap())
    }

    fn calls(&self, log: &str) -> Vec<String> {
        fs::read_to_string(self.path(log))
            .unwrap_or_default()
            .lines()
            .map(str::to_owned)
            .collect()
    }

    fn unit(&self) -> PathBuf {
        self.path("etc/systemd/system/heex-agent.service")
    }
}

#[test]
fn the_unit_has_the_hardening_the_agent_relies_on() {
    for line in [
        "Type=notify",
        "NotifyAccess=main",
        "ExecStart=/usr/bin/heex-agent run --config /etc/heex/agent.toml",
        "Restart=always",
        "User=heex",
        "StateDirectory=heex",
        "StateDirectoryMode=0700",
        "ConfigurationDirectory=heex",
        "RuntimeDirectory=heex",
        "UMask=0077",
        "ProtectSystem=strict",
        "NoNewPrivileges=yes",
        "WantedBy=multi-user.target",
    ] {
        assert!(
            UNIT_TEMPLATE.lines().any(|l| l == line),
            "unit lacks {line:?}"
        );
    }
    assert!(UNIT_TEMPLATE.lines().any(|l| l.starts_with("WatchdogSec=")));
    assert!(UNIT_TEMPLATE.lines().any(|l| l.starts_with("RestartSec=")));
}

#[test]
fn exec_start_follows_the_agent() {
    let unit = unit_for(Path::new("/usr/local/bin/heex-agent")).unwrap();
    assert!(unit
        .lines()
        .any(|l| l == "ExecStart=/usr/local/bin/heex-agent run --config /etc/heex/agent.toml"));
    assert_eq!(unit.matches("ExecStart=").count(), 1);
    assert_eq!(unit_for(Path::new(PACKAGED_AGENT)).unwrap(), UNIT_TEMPLATE);
    for bad in [
        "/opt/my tools/heex-agent",
        "/opt/100%/heex-agent",
        "rel/heex-agent",
    ] {
        assert_eq!(
            unit_for(Path::new(bad)).unwrap_err().exit_code(),
            64,
            "{bad}"
        );
    }
}

#[test]
fn first_install_writes_reloads_enables_starts() {
    let host = Host::new();
    let out = host.install(true, true).unwrap();
    assert_eq!(
        host.calls("systemctl.log"),
        [
            "daemon-reload",
            "enable heex-agent.service",
            "start heex-agent.service"
        ]
    );
    let unit = fs::read_to_string(host.unit()).unwrap();
    assert!(unit.starts_with("# Written by heex-installer"));
    let agent = host.path("bin/heex-agent");
    assert!(
        unit.contains(&format!("ExecStart={} run", agent.display())),
        "{unit}"
    );
    assert_eq!(
        fs::metadata(host.unit()).unwrap().permissions().mode() & 0o777,
        0o644
    );
    // The user did not exist: created with systemd-sysusers under the root.
    assert_eq!(host.calls("sysusers.log").len(), 1);
    assert!(host.calls("sysusers.log")[0].contains("--inline u heex"));
    assert!(out.contains("enabled and running"), "{out}");
}

#[test]
fn rerun_is_idempotent() {
    let host = Host::new();
    host.install(true, true).unwrap();
    let before = fs::metadata(host.unit()).unwrap();
    fs::remove_file(host.path("systemctl.log")).unwrap();

    let out = host.install(true, false).unwrap();
    assert_eq!(
        host.calls("systemctl.log"),
        ["enable heex-agent.service", "start heex-agent.service"]
    );
    let after = fs::metadata(host.unit()).unwrap();
    assert_eq!(before.ino(), after.ino(), "unit not rewritten");
    assert_eq!(before.mtime_nsec(), after.mtime_nsec());
    assert_eq!(host.calls("sysusers.log").len(), 1, "user created once");
    assert!(out.contains("(unchanged)"), "{out}");
}

#[test]
fn new_credentials_or_unit_restart_a_running_agent() {
    let host = Host::new();
    host.install(true, true).unwrap();
    fs::remove_file(host.path("systemctl.log")).unwrap();
    host.install(true, true).unwrap();
    assert_eq!(
        host.calls("systemctl.log"),
        ["enable heex-agent.service", "restart heex-agent.service"]
    );

    fs::write(host.unit(), "[Service]\nExecStart=/old\n").unwrap();
    fs::remove_file(host.path("systemctl.log")).unwrap();
    host.install(true, false).unwrap();
    assert_eq!(
        host.calls("systemctl.log"),
        [
            "daemon-reload",
            "enable heex-agent.service",
            "restart heex-agent.service"
        ]
    );
}

#[test]
fn no_start_installs_and_enables_only() {
    let host = Host::new();
    let out = host.install(false, true).unwrap();
    assert_eq!(
        host.calls("systemctl.log"),
        ["daemon-reload", "enable heex-agent.service"]
    );
    assert!(out.contains("not started (--no-start)"), "{out}");
}

#[test]
fn a_packaged_unit_is_used_as_it_is() {
    let host = Host::new();
    let packaged = host.path("lib/systemd/system/heex-agent.service");
    fs::create_dir_all(packaged.parent().unwrap()).unwrap();
    fs::write(&packaged, UNIT_TEMPLATE).unwrap();
    let out = host.install(true, true).unwrap();
    assert!(
        !host.unit().exists(),
        "no copy in /etc shadows the package's unit"
    );
    // Nothing new for systemd to load; the agent may have been started before enrolling.
    assert_eq!(
        host.calls("systemctl.log"),
        ["enable heex-agent.service", "restart heex-agent.service"]
    );
    assert!(out.contains("packaged"), "{out}");
}

#[test]
fn an_existing_user_is_not_created_again() {
    let host = Host::new();
    let (uid, gid) = {
        let m = fs::metadata(host.root.path()).unwrap();
        (m.uid(), m.gid())
    };
    fs::write(
        host.path("etc/passwd"),
        format!(
            "root:x:0:0:root:/root:/bin/sh\nheex:x:{uid}:{gid}::/var/lib/heex:/usr/sbin/nologin\n"
        ),
    )
    .unwrap();
    host.install(true, true).unwrap();
    assert!(host.calls("sysusers.log").is_empty());
}

#[test]
fn failures_of_the_service_manager_are_one_line_and_exit_70() {
    let host = Host::new();
    fs::write(host.path("fail-start"), b"").unwrap();
    let err = host.install(true, true).unwrap_err();
    assert_eq!(err.exit_code(), 70);
    let msg = err.to_string();
    assert!(
        msg.starts_with("`systemctl start heex-agent.service` failed"),
        "{msg}"
    );
    assert!(msg.contains("Job failed. See journal.") && msg.contains("journalctl -u heex-agent"));
    assert!(!msg.contains('\n'));
}

#[test]
fn machines_without_systemd_are_refused_before_anything() {
    let host = Host::new();
    fs::remove_dir(host.path("run/systemd/system")).unwrap();
    let err = host.prepare(true).unwrap_err();
    assert_eq!(err.exit_code(), 64);
    assert!(err.to_string().contains("not running it"), "{err}");

    let host = Host::new();
    fs::remove_file(host.path("bin/systemctl")).unwrap();
    let err = host.prepare(true).unwrap_err();
    assert_eq!(err.exit_code(), 64);
    assert!(err.to_string().contains("systemctl"), "{err}");

    let host = Host::new();
    fs::remove_file(host.path("bin/heex-agent")).unwrap();
    let err = host.prepare(true).unwrap_err();
    assert_eq!(err.exit_code(), 64);
    assert!(err.to_string().contains("heex-agent"), "{err}");
}

#[test]
fn only_the_units_directories_are_accepted() {
    let host = Host::new();
    let err = Service::prepare_with(
        host.root.path(),
        &host.path("elsewhere"),
        &host.path("var/lib/heex"),
        true,
        Some(host.path("bin").into_os_string()),
        None,
    )
    .unwrap_err();
    assert_eq!(err.exit_code(), 64);
    assert!(err.to_string().contains("leave out --config-dir"), "{err}");
}

#[test]
fn passwd_lines() {
    let text = "root:x:0:0:root:/root:/bin/bash\nheexer:x:5:5::/:/bin/sh\nheex:x:998:997:Heex agent:/var/lib/heex:/usr/sbin/nologin\n";
    assert_eq!(passwd_entry(text, "heex"), Some((998, 997)));
    assert_eq!(passwd_entry(text, "nobody"), None);
    assert_eq!(passwd_entry("heex:x:bad:1::/:/bin/sh", "heex"), None);
}

#[test]
fn give_tree_hands_over_every_entry() {
    let dir = tempfile::tempdir().unwrap();
    fs::create_dir(dir.path().join("outbox")).unwrap();
    fs::write(dir.path().join("outbox/1"), b"r").unwrap();
    fs::write(dir.path().join("device.key"), b"k").unwrap();
    std::os::unix::fs::symlink("/etc/passwd", dir.path().join("link")).unwrap();
    let m = fs::metadata(dir.path()).unwrap();
    assert_eq!(give_tree(dir.path(), m.uid(), m.gid()).unwrap(), 0);
    if m.uid() != 0 {
        return; // only root can give files away
    }
    let passwd_owner = fs::metadata("/etc/passwd").unwrap().uid();
    assert_eq!(give_tree(dir.path(), 65534, 65534).unwrap(), 5);
    for p in ["", "outbox", "outbox/1", "device.key"] {
        let m = fs::metadata(dir.path().join(p)).unwrap();
        assert_eq!((m.uid(), m.gid()), (65534, 65534), "{p}");
    }
    assert_eq!(
        fs::metadata("/etc/passwd").unwrap().uid(),
        passwd_owner,
        "symlinks are not followed"
    );
}

#[test]
fn the_user_is_the_one_the_package_creates() {
    let packaged = include_str!("../../../packaging/systemd/heex-agent.sysusers");
    let lines: Vec<&str> = packaged
        .lines()
        .filter(|l| !l.trim().is_empty() && !l.starts_with('#'))
        .collect();
    assert_eq!(lines, [SYSUSERS_LINE]);
    assert!(UNIT_TEMPLATE
        .lines()
        .any(|l| l == format!("User={SERVICE_USER}")));
}
