//! How the installer decides to trust the cloud before it sends the API key: the shared
//! [`heex_trust`] verifier, with the installer's wording of a refusal.
//!
//! Set-up errors ([`heex_trust::TrustError`]) become [`crate::error::InstallError`]s through
//! its `From` impl.

pub use heex_trust::{client_config, AnchoredVerifier, TrustAnchor, Verdict, VerdictLog};

/// The one line explaining why the server's identity was refused, or `None` if the last
/// check did not refuse it.
pub fn explain_refusal(anchor: &TrustAnchor, verdict: Option<&Verdict>) -> Option<String> {
    heex_trust::explain_refusal(anchor, verdict)
}
