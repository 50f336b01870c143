//! Heex's public-key infrastructure, in one place: the cloud's CA ([`ca`]: signing device
//! and server certificates), the intake of certificate requests ([`csr`]), the device's key
//! and CSR ([`key`], made by the installer and by renewals), and the reading of certificates
//! ([`cert`]: one [`cert::DeviceCertificate::parse`] for the gateway, the installer and the
//! agent). With the `test-kit` feature, [`test_kit::TestCa`] is the test CA every test uses.

pub mod ca;
pub mod cert;
pub mod csr;
pub mod key;
#[cfg(any(test, feature = "test-kit"))]
pub mod test_kit;

pub use cert::{Certificate, DeviceCertificate, IdentityError};
pub use key::DeviceKey;
