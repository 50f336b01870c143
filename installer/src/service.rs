//! `--systemd`: run the agent as the hardened `heex-agent.service`.
//!
//! The unit is `packaging/systemd/heex-agent.service`, embedded here so that the installer and
//! the Debian package install the same file. It runs the agent as the static system user
//! `heex`, which must own the state directory (see the unit's comments for why a static user).
//!
//! [`Service::prepare`] checks everything that can fail without side effects (systemd running,
//! `systemctl` and `heex-agent` found, default directories) before the API key is spent.
//! [`Service::install`] then writes the unit only if it changed, makes sure the user exists and
//! owns the state directory, reloads systemd only if the unit changed, enables the service and
//! starts it, or restarts it when the credentials or the unit changed under an agent that may
//! be running. A re-run with nothing changed only repeats the idempotent `enable` and `start`.

use std::ffi::{OsStr, OsString};
use std::fs;
use std::io;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use crate::cli::{DEFAULT_CONFIG_DIR, DEFAULT_STATE_DIR};
use crate::error::InstallError;
use crate::files;
use crate::progress::Progress;

/// The unit's name.
pub const UNIT_NAME: &str = "heex-agent.service";
/// The unit as packaged (`ExecStart` names [`PACKAGED_AGENT`]).
pub const UNIT_TEMPLATE: &str = include_str!("../../packaging/systemd/heex-agent.service");
/// The system user the service runs as.
pub const SERVICE_USER: &str = "heex";
/// Where the packaged unit expects the agent binary.
pub const PACKAGED_AGENT: &str = "/usr/bin/heex-agent";

/// Where the installer puts the unit, under the root.
const UNIT_DIR: &str = "etc/systemd/system";
/// Where a package puts it; a packaged unit is used as it is.
const PACKAGED_UNIT_DIRS: [&str; 2] = ["usr/lib/systemd/system", "lib/systemd/system"];
/// Exists only while systemd is the running init (what `sd_booted()` checks).
const BOOTED_MARKER: &str = "run/systemd/system";
/// The service user, as `systemd-sysusers` creates it (same line as the package's file).
const SYSUSERS_LINE: &str = "u heex - \"Heex agent\" /var/lib/heex";
/// First line of a unit the installer wrote.
const HEADER: &str = "# Written by heex-installer --systemd, which rewrites this file.\n\
                      # Put local changes in a drop-in: systemctl edit heex-agent\n";
/// Directories the hardened unit hides from the service (ProtectHome=, PrivateTmp=).
const HIDDEN_FROM_SERVICE: [&str; 5] = ["/home", "/root", "/run/user", "/tmp", "/var/tmp"];

/// What happened to the unit file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum UnitFile {
    /// No unit existed; the installer wrote one.
    Created,
    /// The installer's unit differed and was replaced.
    Updated,
    /// The installer's unit was already as it should be; not rewritten.
    Unchanged,
    /// A package installed the unit at this path; used as it is.
    Packaged(PathBuf),
}

/// A systemd service installation, checked and ready to apply.
#[derive(Debug)]
pub struct Service {
    root: PathBuf,
    path_var: Option<OsString>,
    systemctl: PathBuf,
    state_dir: PathBuf,
    unit_text: String,
    start: bool,
}

impl Service {
    /// Checks that the service can be installed on this machine, before anything is written.
    /// `config_dir` and `state_dir` must be the unit's (`/etc/heex`, `/var/lib/heex` under
    /// `root`); `start` is false for `--no-start`.
    pub fn prepare(
        root: &Path,
        config_dir: &Path,
        state_dir: &Path,
        start: bool,
    ) -> Result<Service, InstallError> {
        let installer_dir = std::env::current_exe()
            .ok()
            .and_then(|p| p.parent().map(Path::to_owned));
        Self::prepare_with(
            root,
            config_dir,
            state_dir,
            start,
            std::env::var_os("PATH"),
            installer_dir.as_deref(),
        )
    }

    /// [`Service::prepare`] with the search path and the installer's directory given.
    pub fn prepare_with(
        root: &Path,
        config_dir: &Path,
        state_dir: &Path,
        start: bool,
        path_var: Option<OsString>,
        installer_dir: Option<&Path>,
    ) -> Result<Service, InstallError> {
        let unit_config_dir = under(root, DEFAULT_CONFIG_DIR);
        let unit_state_dir = under(root, DEFAULT_STATE_DIR);
        if config_dir != unit_config_dir || state_dir != unit_state_dir {
            return Err(InstallError::Usage(format!(
                "--systemd runs the agent with {} and {} (the unit's directories); leave out --config-dir and --state-dir",
                unit_config_dir.join(crate::state::AGENT_TOML).display(),
                unit_state_dir.display()
            )));
        }
        if !root.join(BOOTED_MARKER).is_dir() {
            return Err(InstallError::Usage(format!(
                "--systemd needs systemd, but this machine is not running it (no {}); leave out --systemd and start `heex-agent run` with this machine's own service manager",
                under(root, "/run/systemd/system").display()
            )));
        }
        let Some(systemctl) = find_program("systemctl", path_var.as_deref()) else {
            return Err(InstallError::Usage(
                "--systemd needs systemctl, which is not on PATH; add its directory to PATH, or leave out --systemd and start `heex-agent run` yourself".to_owned(),
            ));
        };
        let agent = installer_dir
            .map(|d| d.join("heex-agent"))
            .filter(|p| is_executable(p))
            .or_else(|| find_program("heex-agent", path_var.as_deref()))
            .ok_or_else(|| {
                InstallError::Usage(
                    "heex-agent is neither beside heex-installer nor on PATH; install it (e.g. in /usr/local/bin) and run again".to_owned(),
                )
            })?;
        let unit_text = unit_for(&agent)?;
        if let Some(hidden) = HIDDEN_FROM_SERVICE
            .iter()
            .find(|h| agent.starts_with(Path::new(h)))
        {
            tracing::warn!(
                "{} is under {hidden}, which the hardened service cannot see; install heex-agent in /usr/local/bin",
                agent.display()
            );
        }
        Ok(Service {
            root: root.to_owned(),
            path_var,
            systemctl,
            state_dir: unit_state_dir,
            unit_text,
            start,
        })
    }

    /// The unit text the installer writes.
    pub fn unit_text(&self) -> &str {
        &self.unit_text
    }

    /// Installs, enables and (unless `--no-start`) starts the service. `credentials_changed`
    /// says whether this run wrote new credentials, which a running agent must reload.
    pub fn install(
        &self,
        progress: &mut Progress<'_>,
        credentials_changed: bool,
    ) -> Result<(), InstallError> {
        let unit = progress.step(&format!("Installing {UNIT_NAME}"), || {
            self.place_unit().map(|u| {
                let detail = match &u {
                    UnitFile::Created | UnitFile::Updated => self.unit_path().display().to_string(),
                    UnitFile::Unchanged => "unchanged".to_owned(),
                    UnitFile::Packaged(p) => format!("packaged {}", p.display()),
                };
                (u, Some(detail))
            })
        })?;
        let (uid, gid) = match lookup_user(&self.root)? {
            Some(ids) => ids,
            None => progress.step(&format!("Creating system user {SERVICE_USER}"), || {
                self.create_user().map(|ids| (ids, None))
            })?,
        };
        progress.step(
            &format!("Giving {} to user {SERVICE_USER}", self.state_dir.display()),
            || {
                give_tree(&self.state_dir, uid, gid)
                    .map(|n| ((), (n == 0).then(|| "already".to_owned())))
            },
        )?;
        if matches!(unit, UnitFile::Created | UnitFile::Updated) {
            progress.step("Reloading systemd", || {
                self.systemctl(&["daemon-reload"]).map(|()| ((), None))
            })?;
        }
        progress.step(&format!("Enabling {UNIT_NAME}"), || {
            self.systemctl(&["enable", UNIT_NAME]).map(|()| ((), None))
        })?;
        if !self.start {
            progress.line(&format!(
                "Service {UNIT_NAME} is installed and enabled, not started (--no-start); start it with: systemctl start heex-agent"
            ));
            return Ok(());
        }
        // A running agent keeps the credentials and unit it started with: restart it when
        // either changed. `restart` also starts a stopped service.
        let may_run_stale =
            (credentials_changed && unit != UnitFile::Created) || unit == UnitFile::Updated;
        let (verb, title) = if may_run_stale {
            ("restart", "Restarting")
        } else {
            ("start", "Starting")
        };
        progress.step(&format!("{title} {UNIT_NAME}"), || {
            self.systemctl(&[verb, UNIT_NAME]).map(|()| ((), None))
        })?;
        progress.line(&format!(
            "Service {UNIT_NAME} is enabled and running; check it with: systemctl status heex-agent"
        ));
        Ok(())
    }

    fn unit_path(&self) -> PathBuf {
        self.root.join(UNIT_DIR).join(UNIT_NAME)
    }

    /// Writes the unit unless a package installed one or it is already current.
    fn place_unit(&self) -> Result<UnitFile, InstallError> {
        let path = self.unit_path();
        let current = match fs::read_to_string(&path) {
            Ok(text) => Some(text),
            Err(e) if e.kind() == io::ErrorKind::NotFound => None,
            Err(e) if e.kind() == io::ErrorKind::InvalidData => Some(String::new()),
            Err(e) => return Err(InstallError::file("cannot read", &path, e)),
        };
        if current.is_none() {
            let packaged = PACKAGED_UNIT_DIRS
                .iter()
                .map(|d| self.root.join(d).join(UNIT_NAME))
                .find(|p| p.is_file());
            if let Some(p) = packaged {
                return Ok(UnitFile::Packaged(p));
            }
        }
        let wanted = format!("{HEADER}{}", self.unit_text);
        if current.as_deref() == Some(wanted.as_str()) {
            return Ok(UnitFile::Unchanged);
        }
        if let Some(dir) = path.parent() {
            files::ensure_dir(dir, 0o755, &files::Owners::trusted(None))?;
        }
        files::write_atomic(&path, wanted.as_bytes(), files::PUBLIC)?;
        Ok(if current.is_some() {
            UnitFile::Updated
        } else {
            UnitFile::Created
        })
    }

    /// Creates the service user with `systemd-sysusers` (idempotent, part of systemd).
    fn create_user(&self) -> Result<(u32, u32), InstallError> {
        let sysusers = find_program("systemd-sysusers", self.path_var.as_deref()).ok_or_else(|| {
            InstallError::Service(format!(
                "cannot create the system user {SERVICE_USER}: systemd-sysusers is not on PATH; create it (home {DEFAULT_STATE_DIR}, no login) and run again"
            ))
        })?;
        let mut cmd = Command::new(&sysusers);
        if self.root != Path::new("/") {
            cmd.arg(format!("--root={}", self.root.display()));
        }
        cmd.arg("--inline").arg(SYSUSERS_LINE);
        run(&mut cmd, "systemd-sysusers")?;
        lookup_user(&self.root)?.ok_or_else(|| {
            InstallError::Service(format!(
                "systemd-sysusers did not create the system user {SERVICE_USER}; create it (home {DEFAULT_STATE_DIR}, no login) and run again"
            ))
        })
    }

    fn systemctl(&self, args: &[&str]) -> Result<(), InstallError> {
        let what = format!("systemctl {}", args.join(" "));
        run(Command::new(&self.systemctl).args(args), &what)
    }
}

/// Runs a service-manager command; a failure is one line naming it and where to look.
fn run(cmd: &mut Command, what: &str) -> Result<(), InstallError> {
    let out = cmd
        .stdin(Stdio::null())
        .output()
        .map_err(|e| InstallError::Service(format!("cannot run `{what}`: {e}")))?;
    if out.status.success() {
        return Ok(());
    }
    let stderr = String::from_utf8_lossy(&out.stderr);
    let detail = stderr
        .lines()
        .map(str::trim)
        .rfind(|l| !l.is_empty())
        .map(|l| {
            let clean: String = l.chars().filter(|c| !c.is_control()).take(300).collect();
            format!(": {clean}")
        })
        .unwrap_or_default();
    Err(InstallError::Service(format!(
        "`{what}` failed ({}){detail}; see `systemctl status heex-agent` and `journalctl -u heex-agent`",
        out.status
    )))
}

/// The packaged unit with `ExecStart` pointing at `agent`.
pub fn unit_for(agent: &Path) -> Result<String, InstallError> {
    let text = agent.to_str().filter(|t| {
        t.starts_with('/')
            && !t
                .chars()
                .any(|c| c.is_whitespace() || c.is_control() || "%\\\"';$`".contains(c))
    });
    let Some(text) = text else {
        return Err(InstallError::Usage(format!(
            "{} cannot be named in a systemd unit (spaces or special characters); install heex-agent in /usr/local/bin",
            agent.display()
        )));
    };
    let from = format!("ExecStart={PACKAGED_AGENT} ");
    if !UNIT_TEMPLATE.contains(&from) {
        return Err(InstallError::Unexpected(format!(
            "the embedded unit has no `{from}` line"
        )));
    }
    Ok(UNIT_TEMPLATE.replace(&from, &format!("ExecStart={text} ")))
}

/// `path` (absolute) under `root`.
fn under(root: &Path, path: &str) -> PathBuf {
    root.join(path.trim_start_matches('/'))
}

fn is_executable(p: &Path) -> bool {
    fs::metadata(p).is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
}

/// The first executable `name` in the directories of `path_var` (like the shell's lookup).
pub fn find_program(name: &str, path_var: Option<&OsStr>) -> Option<PathBuf> {
    std::env::split_paths(path_var?)
        .filter(|d| d.is_absolute())
        .map(|d| d.join(name))
        .find(|p| is_executable(p))
}

/// The service user's uid and primary gid from `<root>/etc/passwd`, if it exists. System users
/// (systemd-sysusers, adduser --system) always live there, so no NSS lookup is needed.
pub fn lookup_user(root: &Path) -> Result<Option<(u32, u32)>, InstallError> {
    let path = root.join("etc/passwd");
    let text = match fs::read_to_string(&path) {
        Ok(t) => t,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(InstallError::file("cannot read", &path, e)),
    };
    Ok(passwd_entry(&text, SERVICE_USER))
}

/// uid and gid of `user` in passwd-format `text`.
fn passwd_entry(text: &str, user: &str) -> Option<(u32, u32)> {
    text.lines().find_map(|line| {
        let mut fields = line.split(':');
        if fields.next()? != user {
            return None;
        }
        let _password = fields.next()?;
        let uid = fields.next()?.parse().ok()?;
        let gid = fields.next()?.parse().ok()?;
        Some((uid, gid))
    })
}

/// Makes `dir` and everything below it (symlinks not followed) owned by `uid:gid`; returns
/// how many entries changed. systemd re-owns a StateDirectory= tree only when the directory
/// itself has the wrong owner, so files root adds later must be handed over here.
pub fn give_tree(dir: &Path, uid: u32, gid: u32) -> Result<usize, InstallError> {
    let mut changed = 0;
    let mut stack = vec![dir.to_owned()];
    while let Some(path) = stack.pop() {
        let meta = fs::symlink_metadata(&path)
            .map_err(|e| InstallError::file("cannot access", &path, e))?;
        if meta.uid() != uid || meta.gid() != gid {
            std::os::unix::fs::lchown(&path, Some(uid), Some(gid))
                .map_err(|e| InstallError::file("cannot change the owner of", &path, e))?;
            changed += 1;
        }
        if meta.is_dir() {
            let entries =
                fs::read_dir(&path).map_err(|e| InstallError::file("cannot list", &path, e))?;
            for entry in entries {
                let entry = entry.map_err(|e| InstallError::file("cannot list", &path, e))?;
                stack.push(entry.path());
            }
        }
    }
    Ok(changed)
}

#[cfg(test)]
mod tests;
