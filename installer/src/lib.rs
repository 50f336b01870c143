//! `heex-installer`: enrolls one machine with a Heex cloud, once.
//!
//! It generates the device's private key locally, proves the cloud's identity (pinned CA
//! fingerprint or CA file) before sending anything, spends the user's API key on
//! `POST /v1/enroll` to obtain a device certificate, and writes `device.key` (0600),
//! `device.crt`, `ca.crt` and `agent.toml` atomically. The API key is never written, logged or
//! printed (only its public id). A re-run on an enrolled machine does nothing unless `--force`.
//!
//! With `--systemd` it then installs the hardened `heex-agent.service`, enables and starts it
//! ([`service`]); that too is idempotent.
//!
//! Exit codes are those of [`heex_proto::exit`]: 0 enrolled or already enrolled; 64 bad usage
//! or malformed key (and `--systemd` on a machine not running systemd, or without
//! `heex-agent`: checked before the key is spent); 69 server unreachable or untrusted; 77 key
//! refused by the server; 73 local file error; 70 unexpected, or the service manager failed.
#![forbid(unsafe_code)]

pub mod apikey_source;
pub mod cli;
pub mod device;
pub mod enroll;
pub mod error;
pub mod facts;
pub mod files;
pub mod progress;
pub mod service;
pub mod state;
pub mod trust;

use std::collections::BTreeMap;
use std::io::Write;
use std::path::{Path, PathBuf};

use heex_proto::api::EnrollRequest;
use heex_proto::{ApiKey, DeviceId, SpiffeId};
use time::OffsetDateTime;

pub use apikey_source::KeyEnv;
pub use cli::Cli;
pub use error::InstallError;

use apikey_source::KeySource;
use device::{DeviceKey, Issued};
use enroll::Cloud;
use progress::Progress;
use service::Service;
use state::{Enrollment, Existing, AGENT_TOML, CA_CRT, DEVICE_CRT, DEVICE_KEY, DEVICE_KEY_PENDING};
use trust::TrustAnchor;

/// Longest device name accepted.
const MAX_NAME_CHARS: usize = 128;
/// Mode of the state directory (device key, outbox, socket): the agent's alone.
const STATE_DIR_MODE: u32 = 0o700;
/// Mode of the configuration directory.
const CONFIG_DIR_MODE: u32 = 0o755;

/// What a successful run did.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub enum Outcome {
    /// The machine was enrolled now.
    Enrolled {
        /// The new device id.
        device_id: DeviceId,
        /// Its SPIFFE ID.
        spiffe_id: SpiffeId,
        /// Its certificate's expiry.
        not_after: OffsetDateTime,
    },
    /// The machine was already enrolled; nothing was done and the key was not spent.
    AlreadyEnrolled(Enrollment),
}

/// Runs the installer: `env` supplies the key sources outside the command line, progress goes
/// to `out`. The error's [`InstallError::exit_code`] is the process exit code.
pub fn run(cli: &Cli, env: &KeyEnv, out: &mut dyn Write) -> Result<Outcome, InstallError> {
    let mut progress = Progress::new(out);

    // Everything that can be checked offline is checked before any file or network access.
    let server = enroll::parse_server_url(&cli.server)?;
    let server_text = enroll::display_url(&server);
    let name = device_name(cli.name.as_deref())?;
    let labels = labels(&cli.labels)?;
    let config_dir = absolute(&cli.config_dir, "--config-dir")?;
    let state_dir = absolute(&cli.state_dir, "--state-dir")?;
    let source = apikey_source::select(cli.api_key.as_ref(), env)?;
    if matches!(source, Some(KeySource::Flag(_))) {
        tracing::warn!(
            "--api-key is visible to other local users in the process list; prefer $HEEX_API_KEY_FILE or the prompt"
        );
    }
    // A key that was given is always checked, even if it turns out not to be needed: a typo
    // is better found on the first run than on the day someone passes --force.
    let given_key = match &source {
        Some(s) => Some(check_key(&mut progress, s)?),
        None => None,
    };
    let anchor = match (&cli.ca_fingerprint, &cli.ca_file) {
        (Some(fp), None) => TrustAnchor::Pinned(*fp),
        (None, Some(path)) => TrustAnchor::from_ca_file(path)?,
        _ => {
            return Err(InstallError::Usage(
                "pass exactly one of --ca-fingerprint or --ca-file".to_owned(),
            ))
        }
    };
    let service = if cli.systemd {
        Some(Service::prepare(
            &cli.systemd_root,
            &config_dir,
            &state_dir,
            !cli.no_start,
        )?)
    } else {
        None
    };

    // Before the key is spent: directories others could write into are refused (and
    // checked again when the files are written).
    let owners = files::Owners::trusted(service::lookup_user(&cli.systemd_root)?);
    files::check_dir(&state_dir, STATE_DIR_MODE, &owners)?;
    files::check_dir(&config_dir, CONFIG_DIR_MODE, &owners)?;

    let request = Request {
        server,
        server_text,
        name,
        labels,
        config_dir,
        state_dir,
        owners,
        given_key,
        anchor,
    };
    let outcome = enroll_unless_enrolled(&mut progress, cli.force, env, request)?;
    if let Some(service) = service {
        service.install(&mut progress, matches!(outcome, Outcome::Enrolled { .. }))?;
    }
    Ok(outcome)
}

/// An enrollment whose inputs were all checked offline.
struct Request {
    server: reqwest::Url,
    server_text: String,
    name: String,
    labels: BTreeMap<String, String>,
    config_dir: PathBuf,
    state_dir: PathBuf,
    owners: files::Owners,
    given_key: Option<ApiKey>,
    anchor: TrustAnchor,
}

/// Enrolls, unless the machine already is (and `force` is off).
fn enroll_unless_enrolled(
    progress: &mut Progress<'_>,
    force: bool,
    env: &KeyEnv,
    request: Request,
) -> Result<Outcome, InstallError> {
    let Request {
        server,
        server_text,
        name,
        labels,
        config_dir,
        state_dir,
        owners,
        given_key,
        anchor,
    } = request;
    if !force {
        match state::inspect(&config_dir, OffsetDateTime::now_utc())? {
            Existing::Enrolled(e) => {
                if e.server.trim_end_matches('/') != server_text {
                    return Err(InstallError::Usage(format!(
                        "already enrolled as {} with {}, not {server_text}; pass --force to enroll with {server_text}",
                        e.device_id, e.server
                    )));
                }
                progress.line(&format!(
                    "already enrolled as {} (certificate valid until {})",
                    e.device_id,
                    state::rfc3339(e.not_after)
                ));
                return Ok(Outcome::AlreadyEnrolled(e));
            }
            Existing::Unusable(why) => {
                progress.line(&format!(
                    "Existing enrollment is not usable ({why}); enrolling again"
                ));
            }
            Existing::Nothing => {}
        }
    }

    let key = match given_key {
        Some(k) => k,
        None => {
            let entered = apikey_source::prompt_source(env)?.ask()?;
            check_key(progress, &entered)?
        }
    };

    let cloud = Cloud::new(server, anchor.clone())?;
    progress.step(&format!("Connecting to {server_text}"), || {
        cloud
            .probe()
            .map(|ca| ((), ca.map(|fp| format!("CA {fp}"))))
    })?;
    let device_key = progress.step("Generating device key (ECDSA P-256)", || {
        DeviceKey::generate().map(|k| (k, None))
    })?;
    let request = EnrollRequest {
        csr_pem: device_key.csr_pem(&name)?,
        name,
        labels,
        facts: Some(facts::gather()),
    };
    let issued = progress.step(
        &format!("Enrolling {:?} with API key {}", request.name, key.id()),
        || {
            let resp = cloud.enroll(&key, &request)?;
            let issued = device::check_response(&resp, &device_key, &anchor)?;
            let detail = issued.device_id.to_string();
            Ok::<_, InstallError>((issued, Some(detail)))
        },
    )?;
    progress.step("Writing credentials", || {
        let dirs = (config_dir.as_path(), state_dir.as_path(), &owners);
        write_credentials(dirs, &server_text, &issued, &device_key).map(|()| ((), None))
    })?;

    progress.line(&format!("Enrolled as {}", issued.device_id));
    progress.line(&format!("  SPIFFE ID:    {}", issued.spiffe_id));
    progress.line(&format!(
        "  Certificate:  valid until {}",
        state::rfc3339(issued.not_after)
    ));
    progress.line(&format!("  Gateway:      {}", issued.gateway));
    progress.line(&format!(
        "  Config:       {}",
        config_dir.join(AGENT_TOML).display()
    ));
    progress.line(&format!(
        "  Credentials:  {} ({DEVICE_KEY}, {DEVICE_CRT}, {CA_CRT})",
        state_dir.display()
    ));
    Ok(Outcome::Enrolled {
        device_id: issued.device_id,
        spiffe_id: issued.spiffe_id,
        not_after: issued.not_after,
    })
}

fn check_key(progress: &mut Progress<'_>, source: &KeySource) -> Result<ApiKey, InstallError> {
    progress.step("Checking API key format", || {
        source.load().map(|k| {
            let detail = format!("key id {}, from {source}", k.id());
            (k, Some(detail))
        })
    })
}

fn device_name(given: Option<&str>) -> Result<String, InstallError> {
    let name = match given {
        Some(n) => n.trim().to_owned(),
        None => facts::hostname().ok_or_else(|| {
            InstallError::Usage("cannot determine the host name; pass --name".to_owned())
        })?,
    };
    // The cloud's own rule, checked before the key is spent.
    heex_proto::text::check_name("--name", &name, MAX_NAME_CHARS)
        .map_err(|e| InstallError::Usage(e.to_string()))?;
    Ok(name)
}

fn labels(given: &[(String, String)]) -> Result<BTreeMap<String, String>, InstallError> {
    let mut labels = BTreeMap::new();
    for (k, v) in given {
        if labels.insert(k.clone(), v.clone()).is_some() {
            return Err(InstallError::Usage(format!(
                "label {k:?} is given twice; keep one --label {k}=…"
            )));
        }
    }
    Ok(labels)
}

fn absolute(path: &Path, flag: &str) -> Result<PathBuf, InstallError> {
    // The agent runs from another working directory: paths in agent.toml must be absolute.
    std::path::absolute(path).map_err(|e| {
        InstallError::Usage(format!("{flag} {} cannot be resolved: {e}", path.display()))
    })
}

/// Writes the new credentials and config. Everything is staged (written and synced under
/// temporary names) before anything is replaced, so a failure leaves the previous enrollment
/// intact. The key and certificate are renamed back to back, and `agent.toml` last: its
/// presence means the files it points to are complete. A crash between two renames leaves a
/// key/certificate mismatch that the next run detects and repairs by enrolling again.
fn write_credentials(
    (config_dir, state_dir, owners): (&Path, &Path, &files::Owners),
    server: &str,
    issued: &Issued,
    key: &DeviceKey,
) -> Result<(), InstallError> {
    files::ensure_dir(state_dir, STATE_DIR_MODE, owners)?;
    files::ensure_dir(config_dir, CONFIG_DIR_MODE, owners)?;
    let config_path = config_dir.join(AGENT_TOML);
    let previous = std::fs::read_to_string(&config_path).ok();
    let config = state::agent_toml(
        previous.as_deref(),
        server,
        &issued.gateway,
        &issued.device_id,
        state_dir,
    )?;
    let private_key = key.private_pem();
    let mut swap = heex_fs::Swap::new();
    for (dest, contents, mode) in [
        (
            state_dir.join(DEVICE_KEY),
            private_key.as_str(),
            files::PRIVATE,
        ),
        (
            state_dir.join(DEVICE_CRT),
            issued.certificate_pem.as_str(),
            files::PUBLIC,
        ),
        (
            state_dir.join(CA_CRT),
            issued.ca_pem.as_str(),
            files::PUBLIC,
        ),
        (config_path, config.as_str(), files::PUBLIC),
    ] {
        swap.stage(&dest, contents.as_bytes(), files::options(mode))?;
    }
    // The previous enrollment's renewal in flight, if any: its key is not this one's.
    let pending = state_dir.join(DEVICE_KEY_PENDING);
    match std::fs::remove_file(&pending) {
        Ok(()) => {}
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => return Err(InstallError::file("cannot remove", &pending, e)),
    }
    Ok(swap.commit()?)
}
