//! What is already on disk: an existing enrollment (so a re-run is a no-op), and the agent
//! configuration file the installer writes.

use std::io;
use std::path::{Path, PathBuf};

use heex_proto::DeviceId;
use serde::Deserialize;
use time::OffsetDateTime;

use crate::device::{check_device_cert_by_any, pem_certificates, DeviceKey};
use crate::error::InstallError;

pub use heex_proto::device_files::{
    AGENT_TOML, CA_CRT, DEVICE_CRT, DEVICE_KEY, DEVICE_KEY_PENDING,
};
use heex_proto::device_files::{OWNED_KEYS, SETTINGS};

/// The part of `agent.toml` the installer reads back.
#[derive(Debug, Deserialize)]
struct AgentToml {
    server: String,
    device_id: DeviceId,
    state_dir: PathBuf,
}

/// A complete, usable enrollment found on disk.
#[derive(Debug, Clone)]
pub struct Enrollment {
    /// The enrolled device.
    pub device_id: DeviceId,
    /// The API base URL it enrolled with.
    pub server: String,
    /// Where its credentials are.
    pub state_dir: PathBuf,
    /// Its certificate's expiry.
    pub not_after: OffsetDateTime,
}

/// What the config and state directories hold.
#[derive(Debug)]
pub enum Existing {
    /// No `agent.toml`: never enrolled.
    Nothing,
    /// Enrolled, with a valid certificate matching its key and CA.
    Enrolled(Enrollment),
    /// Something is there but cannot be used; the text says what.
    Unusable(String),
}

/// Reads a file; `Ok(None)` when it does not exist.
fn read_optional(path: &Path) -> Result<Option<String>, InstallError> {
    match std::fs::read_to_string(path) {
        Ok(text) => Ok(Some(text)),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
        Err(e) if e.kind() == io::ErrorKind::InvalidData => Ok(Some(String::new())),
        Err(e) => Err(InstallError::file("cannot read", path, e)),
    }
}

/// Inspects `<config_dir>/agent.toml` and the credentials it points to. Unreadable files
/// (permissions) are errors; missing, corrupt, mismatched or expired ones make the enrollment
/// [`Existing::Unusable`].
pub fn inspect(config_dir: &Path, now: OffsetDateTime) -> Result<Existing, InstallError> {
    let config_path = config_dir.join(AGENT_TOML);
    let Some(text) = read_optional(&config_path)? else {
        return Ok(Existing::Nothing);
    };
    let config: AgentToml = match toml::from_str(&text) {
        Ok(c) => c,
        Err(e) => {
            let first_line = e.to_string().lines().next().unwrap_or_default().to_owned();
            return Ok(Existing::Unusable(format!(
                "{} does not parse: {first_line}",
                config_path.display()
            )));
        }
    };
    let dir = &config.state_dir;
    let unusable = |what: String| Ok(Existing::Unusable(what));
    let mut texts = Vec::new();
    for name in [DEVICE_CRT, CA_CRT, DEVICE_KEY] {
        let path = dir.join(name);
        match read_optional(&path)? {
            Some(t) => texts.push(t),
            None => return unusable(format!("{} is missing", path.display())),
        }
    }
    let [cert_pem, ca_pem, key_pem] = &texts[..] else {
        return unusable("credentials are incomplete".to_owned());
    };
    let first = |pem: &str| {
        pem_certificates(pem.as_bytes())
            .ok()
            .and_then(|c| c.into_iter().next())
    };
    let Some(cert_der) = first(cert_pem) else {
        return unusable(format!(
            "{} holds no certificate",
            dir.join(DEVICE_CRT).display()
        ));
    };
    // Every CA of the bundle: after a rotation the device certificate may be from any.
    let cas = pem_certificates(ca_pem.as_bytes()).unwrap_or_default();
    if cas.is_empty() {
        return unusable(format!(
            "{} holds no certificate",
            dir.join(CA_CRT).display()
        ));
    }
    let key = match DeviceKey::from_pem(key_pem) {
        Ok(k) => k,
        Err(e) => {
            return unusable(format!(
                "{} is not a usable key: {e}",
                dir.join(DEVICE_KEY).display()
            ))
        }
    };
    let ca_refs: Vec<&[u8]> = cas.iter().map(Vec::as_slice).collect();
    let cert = match check_device_cert_by_any(&cert_der, &ca_refs, &key.spki()) {
        Ok(c) => c,
        Err(e) => return unusable(format!("{}: {e}", dir.join(DEVICE_CRT).display())),
    };
    if cert.common_name != config.device_id.as_str() {
        return unusable(format!(
            "{} is for {:?}, not {}",
            dir.join(DEVICE_CRT).display(),
            cert.common_name,
            config.device_id
        ));
    }
    if cert.not_after <= now {
        return unusable(format!(
            "the device certificate expired on {}",
            rfc3339(cert.not_after)
        ));
    }
    Ok(Existing::Enrolled(Enrollment {
        device_id: config.device_id,
        server: config.server,
        state_dir: config.state_dir,
        not_after: cert.not_after,
    }))
}

/// A timestamp as RFC 3339 (UTC), for messages.
pub fn rfc3339(t: OffsetDateTime) -> String {
    t.format(&time::format_description::well_known::Rfc3339)
        .unwrap_or_else(|_| t.to_string())
}

/// The contents of `agent.toml` for a new enrollment. Keys other than the four the installer
/// owns are carried over from `previous` (the current file), so a re-enrollment keeps the
/// administrator's intervals.
pub fn agent_toml(
    previous: Option<&str>,
    server: &str,
    gateway: &str,
    device_id: &DeviceId,
    state_dir: &Path,
) -> Result<String, InstallError> {
    let state_dir = state_dir.to_str().ok_or_else(|| {
        InstallError::Usage(format!(
            "--state-dir {} is not valid UTF-8; choose another path",
            state_dir.display()
        ))
    })?;
    let mut owned = toml::Table::new();
    owned.insert("server".into(), server.into());
    owned.insert("gateway".into(), gateway.into());
    owned.insert("device_id".into(), device_id.as_str().into());
    owned.insert("state_dir".into(), state_dir.into());

    let mut kept: toml::Table = previous
        .and_then(|t| toml::from_str::<toml::Table>(t).ok())
        .unwrap_or_default();
    kept.retain(|k, _| !OWNED_KEYS.contains(&k));
    // A key the agent does not know would make it refuse the whole file: drop it, and say so.
    kept.retain(|k, _| {
        let known = SETTINGS.contains(&k);
        if !known {
            tracing::warn!(
                "agent.toml: dropping the setting {:?}, which the agent does not know",
                k
            );
        }
        known
    });

    let ser = |t: &toml::Table| {
        toml::to_string(t)
            .map_err(|e| InstallError::Unexpected(format!("cannot write agent.toml: {e}")))
    };
    let mut text = String::from(
        "# Heex agent configuration, written by heex-installer.\n\
         # server, gateway, device_id and state_dir are rewritten on re-enrollment;\n\
         # other settings are kept.\n",
    );
    // Fixed order for the owned keys, so the file reads the same on every machine.
    for key in OWNED_KEYS {
        if let Some(v) = owned.get(key) {
            text.push_str(&format!("{key} = {v}\n"));
        }
    }
    if !kept.is_empty() {
        text.push('\n');
        text.push_str(&ser(&kept)?);
    }
    Ok(text)
}

#[cfg(test)]
mod tests;
