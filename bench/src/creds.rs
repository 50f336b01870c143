//! Credentials of enrolled devices, kept by `enroll --out` for `hold` and `storm`:
//! `devices.jsonl` (one device a line: id, private key and certificate, PEM; mode 0600) and
//! `meta.json` (the cloud CA and the gateway address from the enrollment answers).

use std::fmt;
use std::fs;
use std::io::{BufRead, BufReader};
use std::path::Path;
use std::sync::Arc;

use anyhow::{bail, Context};
use rustls::client::Resumption;
use rustls::crypto::ring;
use rustls::{ClientConfig, RootCertStore};
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};
use serde::{Deserialize, Serialize};

use crate::cli::Peer;

/// File of the device lines.
pub(crate) const DEVICES: &str = "devices.jsonl";
/// File of the shared data.
pub(crate) const META: &str = "meta.json";

/// One enrolled device.
#[derive(Clone, Serialize, Deserialize)]
pub(crate) struct Device {
    /// Device id.
    pub device_id: String,
    /// Private key, PKCS#8 PEM.
    pub key_pem: String,
    /// Certificate, PEM.
    pub cert_pem: String,
}

impl fmt::Debug for Device {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Device")
            .field("device_id", &self.device_id)
            .finish_non_exhaustive()
    }
}

/// What all devices share.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub(crate) struct Meta {
    /// The cloud CA, PEM.
    pub ca_pem: String,
    /// `host:port` of the gateway, as the cloud announced it.
    pub gateway: String,
}

/// Writes the credentials atomically ([`heex_fs::Swap`], 0600 from creation).
pub(crate) fn save(dir: &Path, meta: &Meta, devices: &[Device]) -> anyhow::Result<()> {
    fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    let private = heex_fs::Options::private();
    let mut swap = heex_fs::Swap::new();
    swap.stage_with(&dir.join(DEVICES), private, |w| {
        for d in devices {
            serde_json::to_writer(&mut *w, d)?;
            w.write_all(b"\n")?;
        }
        Ok(())
    })?;
    swap.stage_with(&dir.join(META), private, |w| {
        Ok(serde_json::to_writer_pretty(&mut *w, meta)?)
    })?;
    swap.commit()?;
    Ok(())
}

/// Reads the shared data.
pub(crate) fn load_meta(dir: &Path) -> anyhow::Result<Meta> {
    let path = dir.join(META);
    let text = fs::read(&path).with_context(|| {
        format!(
            "cannot read {}; enroll devices first with `heex-loadgen enroll --out {}`",
            path.display(),
            dir.display()
        )
    })?;
    serde_json::from_slice(&text).with_context(|| format!("{} is corrupt", path.display()))
}

/// Reads devices `offset..offset+count` (fewer if the file has fewer).
pub(crate) fn load_devices(dir: &Path, offset: usize, count: usize) -> anyhow::Result<Vec<Device>> {
    let path = dir.join(DEVICES);
    let file = fs::File::open(&path).with_context(|| format!("cannot read {}", path.display()))?;
    let mut out = Vec::with_capacity(count);
    for (i, line) in BufReader::new(file)
        .lines()
        .enumerate()
        .skip(offset)
        .take(count)
    {
        let line = line.with_context(|| format!("reading {}", path.display()))?;
        let device: Device = serde_json::from_str(&line)
            .with_context(|| format!("{} line {} is corrupt", path.display(), i + 1))?;
        out.push(device);
    }
    Ok(out)
}

/// Number of devices in the directory.
pub(crate) fn count_devices(dir: &Path) -> anyhow::Result<usize> {
    let path = dir.join(DEVICES);
    let file = fs::File::open(&path).with_context(|| format!("cannot read {}", path.display()))?;
    Ok(BufReader::new(file).lines().count())
}

/// The pinned CA as a root store.
pub(crate) fn roots(ca_pem: &str) -> anyhow::Result<Arc<RootCertStore>> {
    let mut roots = RootCertStore::empty();
    for cert in CertificateDer::pem_slice_iter(ca_pem.as_bytes()) {
        roots.add(cert.context("the CA in meta.json is not PEM")?)?;
    }
    if roots.is_empty() {
        bail!("meta.json holds no CA certificate");
    }
    Ok(Arc::new(roots))
}

/// The agent's TLS client configuration for `device`: TLS 1.3 only, the pinned CA only, the
/// device certificate, no resumption (every connection is a full handshake). ALPN `heex/1`
/// for the gateway, `http/1.1` for an HTTP peer.
pub(crate) fn client_config(
    roots: &Arc<RootCertStore>,
    device: &Device,
    peer: Peer,
) -> anyhow::Result<Arc<ClientConfig>> {
    let key = PrivateKeyDer::from_pem_slice(device.key_pem.as_bytes())
        .with_context(|| format!("key of {} is corrupt", device.device_id))?;
    let chain = CertificateDer::pem_slice_iter(device.cert_pem.as_bytes())
        .collect::<Result<Vec<_>, _>>()
        .with_context(|| format!("certificate of {} is corrupt", device.device_id))?;
    let mut tls = ClientConfig::builder_with_provider(Arc::new(ring::default_provider()))
        .with_protocol_versions(&[&rustls::version::TLS13])?
        .with_root_certificates(roots.clone())
        .with_client_auth_cert(chain, key)
        .with_context(|| format!("credentials of {}", device.device_id))?;
    tls.alpn_protocols = vec![match peer {
        Peer::Heex => heex_proto::ALPN.to_vec(),
        Peer::Http => b"http/1.1".to_vec(),
    }];
    tls.resumption = Resumption::disabled();
    Ok(Arc::new(tls))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn device(i: usize) -> (Device, String) {
        let ca = heex_pki::test_kit::TestCa::new();
        let key = rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).unwrap();
        let cert = ca.sign(
            &rcgen::CertificateParams::new(vec![format!("dev-{i}")]).unwrap(),
            &key,
        );
        (
            Device {
                device_id: format!("dev_{i}"),
                key_pem: key.serialize_pem(),
                cert_pem: cert.pem(),
            },
            ca.ca_pem,
        )
    }

    #[test]
    fn saved_credentials_load_back_in_slices() {
        let dir = tempfile::tempdir().unwrap();
        let mut devices = Vec::new();
        let mut ca_pem = String::new();
        for i in 0..5 {
            let (d, ca) = device(i);
            devices.push(d);
            ca_pem = ca;
        }
        let meta = Meta {
            ca_pem: ca_pem.clone(),
            gateway: "127.0.0.1:8444".into(),
        };
        save(dir.path(), &meta, &devices).unwrap();
        use std::os::unix::fs::PermissionsExt;
        let mode = fs::metadata(dir.path().join(DEVICES))
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o600);
        assert_eq!(count_devices(dir.path()).unwrap(), 5);
        let slice = load_devices(dir.path(), 3, 10).unwrap();
        assert_eq!(
            slice
                .iter()
                .map(|d| d.device_id.as_str())
                .collect::<Vec<_>>(),
            ["dev_3", "dev_4"]
        );
        let meta = load_meta(dir.path()).unwrap();
        assert_eq!(meta.gateway, "127.0.0.1:8444");
        let roots = roots(&meta.ca_pem).unwrap();
        let tls = client_config(&roots, &slice[0], Peer::Heex).unwrap();
        assert_eq!(tls.alpn_protocols, vec![b"heex/1".to_vec()]);
        let tls = client_config(&roots, &slice[0], Peer::Http).unwrap();
        assert_eq!(tls.alpn_protocols, vec![b"http/1.1".to_vec()]);
        // Keys never show in debug output.
        assert!(!format!("{:?}", slice[0]).contains("PRIVATE"));
    }

    #[test]
    fn missing_or_corrupt_files_are_errors() {
        let dir = tempfile::tempdir().unwrap();
        let e = load_meta(dir.path()).unwrap_err().to_string();
        assert!(e.contains("enroll devices first"), "{e}");
        fs::write(dir.path().join(DEVICES), "{not json\n").unwrap();
        assert!(load_devices(dir.path(), 0, 1).is_err());
        assert!(roots("no pem here").is_err());
    }
}
