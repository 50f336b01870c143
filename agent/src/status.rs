//! `<state_dir>/status.json`: written by the daemon on every state change and heartbeat ack,
//! read by `heex-agent status`.

use std::path::{Path, PathBuf};

use heex_proto::DeviceId;
use serde::{Deserialize, Serialize};
use time::format_description::well_known::Rfc3339;
use time::OffsetDateTime;

use crate::config::Config;
use crate::credentials;

/// The daemon's connection state.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum State {
    /// Opening a session (TCP, TLS, Hello).
    Connecting,
    /// The gateway welcomed the session.
    Connected,
    /// Waiting before the next attempt.
    Backoff,
    /// The daemon exited.
    Stopped,
}

impl State {
    /// The state's name as shown to users.
    pub fn as_str(self) -> &'static str {
        match self {
            State::Connecting => "connecting",
            State::Connected => "connected",
            State::Backoff => "backoff",
            State::Stopped => "stopped",
        }
    }
}

/// What the daemon records about itself.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Status {
    /// Current state.
    pub state: State,
    /// When the current state began.
    #[serde(with = "time::serde::rfc3339")]
    pub since: OffsetDateTime,
    /// When the current session was welcomed (only while connected).
    #[serde(default, with = "time::serde::rfc3339::option")]
    pub connected_since: Option<OffsetDateTime>,
    /// Sessions established since the daemon started; the current one's number while connected.
    pub sessions: u64,
    /// Gateway address.
    pub gateway: String,
    /// This device.
    pub device_id: DeviceId,
    /// Device certificate expiry.
    #[serde(with = "time::serde::rfc3339")]
    pub certificate_expires_at: OffsetDateTime,
    /// Last heartbeat acknowledged by the gateway.
    #[serde(default, with = "time::serde::rfc3339::option")]
    pub last_heartbeat_ack: Option<OffsetDateTime>,
    /// Heartbeats acknowledged in the current session.
    pub heartbeats_acked: u64,
    /// Why the last session or attempt ended, if it failed.
    #[serde(default)]
    pub last_error: Option<String>,
    /// The daemon's process id.
    pub pid: u32,
    /// When this file was written.
    #[serde(with = "time::serde::rfc3339")]
    pub updated_at: OffsetDateTime,
}

/// Writes the status file atomically (temp file in the same directory, then rename), so a
/// reader sees the old or the new content, never a torn one.
#[derive(Debug)]
pub struct StatusFile {
    path: PathBuf,
    /// The content last written.
    pub status: Status,
    warned: bool,
}

impl StatusFile {
    /// Starts with `status` and writes it.
    pub fn create(path: PathBuf, status: Status) -> StatusFile {
        let mut file = StatusFile {
            path,
            status,
            warned: false,
        };
        file.write();
        file
    }

    /// Applies `change` and writes the result.
    pub fn update(&mut self, change: impl FnOnce(&mut Status)) {
        change(&mut self.status);
        self.write();
    }

    fn write(&mut self) {
        self.status.updated_at = OffsetDateTime::now_utc();
        match write_atomic(&self.path, &self.status) {
            Ok(()) => self.warned = false,
            // The status file is for humans and scripts; failing to write it must not stop
            // the daemon, and one warning per streak of failures is enough.
            Err(e) if !self.warned => {
                tracing::warn!(path = %self.path.display(), error = %e, "cannot write status file");
                self.warned = true;
            }
            Err(_) => {}
        }
    }
}

fn write_atomic(path: &Path, status: &Status) -> Result<(), heex_fs::Error> {
    // Not durable: the file is rewritten at every start and every heartbeat; after a power
    // loss a stale or missing status is harmless, and flash storage is spared.
    heex_fs::write_with(path, heex_fs::Options::public().not_durable(), |w| {
        serde_json::to_writer_pretty(&mut *w, status)?;
        w.write_all(b"\n")
    })
}

/// What `heex-agent status` reports.
#[derive(Debug, Clone, Serialize)]
pub struct Report {
    /// True when the daemon runs and holds a session.
    pub connected: bool,
    /// True when a daemon process is running.
    pub running: bool,
    /// "connected", "connecting", "backoff", "stopped" or "not running".
    pub state: String,
    /// When the current state began.
    #[serde(with = "time::serde::rfc3339::option")]
    pub since: Option<OffsetDateTime>,
    /// When the current session was welcomed.
    #[serde(with = "time::serde::rfc3339::option")]
    pub connected_since: Option<OffsetDateTime>,
    /// Sessions established since the daemon started.
    pub sessions: u64,
    /// Gateway address.
    pub gateway: String,
    /// Device id.
    pub device_id: DeviceId,
    /// Device certificate expiry, read from `device.crt`.
    #[serde(with = "time::serde::rfc3339::option")]
    pub certificate_expires_at: Option<OffsetDateTime>,
    /// Last heartbeat acknowledged.
    #[serde(with = "time::serde::rfc3339::option")]
    pub last_heartbeat_ack: Option<OffsetDateTime>,
    /// Last error.
    pub last_error: Option<String>,
    /// Daemon process id, when running.
    pub pid: Option<u32>,
    /// Where the report outbox stands (numbering, acknowledgements, its latest notice), when
    /// it can be read.
    pub outbox: Option<crate::outbox::Position>,
}

/// Builds the status report from the configuration, the status file and the certificate.
pub fn report(config: &Config) -> Report {
    let status: Option<Status> = std::fs::read(config.status_path())
        .ok()
        .and_then(|b| serde_json::from_slice(&b).ok());
    let cert = credentials::read_leaf(&config.cert_path());
    let running = status
        .as_ref()
        .is_some_and(|s| s.state != State::Stopped && process_is_agent(s.pid));
    let cert_error = cert.as_ref().err().map(|e| e.to_string());
    let state = match &status {
        Some(s) if running => s.state.as_str().to_owned(),
        Some(s) if s.state == State::Stopped => "stopped".into(),
        _ => "not running".into(),
    };
    let connected = running && status.as_ref().is_some_and(|s| s.state == State::Connected);
    Report {
        connected,
        running,
        state,
        since: status.as_ref().map(|s| s.since),
        connected_since: status
            .as_ref()
            .and_then(|s| s.connected_since)
            .filter(|_| connected),
        sessions: status.as_ref().map_or(0, |s| s.sessions),
        gateway: config.gateway.clone(),
        device_id: config.device_id.clone(),
        certificate_expires_at: cert.ok().map(|c| c.not_after),
        last_heartbeat_ack: status.as_ref().and_then(|s| s.last_heartbeat_ack),
        last_error: status
            .as_ref()
            .and_then(|s| s.last_error.clone())
            .or(cert_error),
        pid: status.as_ref().map(|s| s.pid).filter(|_| running),
        outbox: config
            .outbox_dir()
            .is_dir()
            .then(|| crate::outbox::position(&config.outbox_dir()).ok())
            .flatten(),
    }
}

/// True when `pid` is a live heex-agent process (so a status file left behind by a killed
/// daemon, whose pid may have been reused, is not taken for a live one).
fn process_is_agent(pid: u32) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/comm"))
        .is_ok_and(|comm| comm.trim_end().starts_with("heex-agent"))
}

impl Report {
    /// The human-readable form, one fact per line.
    pub fn render(&self) -> String {
        let ts = |t: Option<OffsetDateTime>| {
            t.and_then(|t| t.format(&Rfc3339).ok())
                .unwrap_or_else(|| "never".into())
        };
        let mut out = String::new();
        let headline = if self.connected {
            format!("connected since {}", ts(self.connected_since))
        } else if self.running {
            format!("not connected ({} since {})", self.state, ts(self.since))
        } else {
            format!("not connected (daemon {})", self.state)
        };
        let mut line = |k: &str, v: String| out.push_str(&format!("{k:<16}{v}\n"));
        line("Status:", headline);
        line("Gateway:", self.gateway.clone());
        line("Device:", self.device_id.to_string());
        line(
            "Certificate:",
            match self.certificate_expires_at {
                Some(t) => format!("expires {}", ts(Some(t))),
                None => "unreadable".into(),
            },
        );
        line("Last heartbeat:", ts(self.last_heartbeat_ack));
        if let Some(pid) = self.pid {
            line("PID:", pid.to_string());
        }
        if let Some(e) = &self.last_error {
            line("Last error:", e.clone());
        }
        if let Some(o) = &self.outbox {
            line(
                "Outbox:",
                format!(
                    "{} waiting, acknowledged up to {}, next report {}",
                    o.pending, o.acked, o.next_seq
                ),
            );
            if let Some(n) = &o.notice {
                line(
                    "Outbox notice:",
                    format!("{} {}", ts(Some(n.at)), n.message),
                );
            }
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use heex_pki::test_kit::TestCa;

    fn config(dir: &Path, device: &DeviceId) -> Config {
        let text = format!(
            "server = \"https://127.0.0.1:1\"\ngateway = \"127.0.0.1:2\"\n\
             device_id = \"{device}\"\nstate_dir = \"{}\"\n",
            dir.display()
        );
        Config::parse(&text, Path::new("agent.toml")).unwrap()
    }

    fn sample(device: &DeviceId, state: State) -> Status {
        let now = OffsetDateTime::now_utc();
        Status {
            state,
            since: now,
            connected_since: Some(now),
            sessions: 1,
            gateway: "127.0.0.1:2".into(),
            device_id: device.clone(),
            certificate_expires_at: now,
            last_heartbeat_ack: Some(now),
            heartbeats_acked: 3,
            last_error: None,
            pid: std::process::id(),
            updated_at: now,
        }
    }

    #[test]
    fn written_atomically_and_read_back() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let device = DeviceId::generate();
        let path = dir.path().join("status.json");
        let mut file = StatusFile::create(path.clone(), sample(&device, State::Connecting));
        file.update(|s| s.state = State::Connected);
        let back: Status = serde_json::from_slice(&std::fs::read(&path).unwrap()).unwrap();
        assert_eq!(back.state, State::Connected);
        let mode = std::fs::metadata(&path).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o644);
        let leftovers = std::fs::read_dir(dir.path()).unwrap().count();
        assert_eq!(leftovers, 1, "temp files left behind");
    }

    #[test]
    fn report_of_a_dead_daemon_is_not_connected() {
        let dir = tempfile::tempdir().unwrap();
        let device = DeviceId::generate();
        let pki = TestCa::new();
        pki.write_device(dir.path(), &device);
        let cfg = config(dir.path(), &device);

        let r = report(&cfg);
        assert!(!r.connected && !r.running);
        assert_eq!(r.state, "not running");
        assert!(r.certificate_expires_at.is_some());

        // The test process is not named heex-agent: a status naming it is stale.
        let mut s = sample(&device, State::Connected);
        s.pid = std::process::id();
        write_atomic(&cfg.status_path(), &s).unwrap();
        let r = report(&cfg);
        assert!(!r.connected, "{r:?}");
        assert!(r.render().contains("not connected"));
        assert!(r.render().contains(device.as_str()));
    }
}
