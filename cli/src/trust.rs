//! How `heex` decides to trust the cloud before it sends an API key: the shared [`heex_trust`]
//! verifier, with the CLI's wording of a refusal.
//!
//! Set-up errors ([`heex_trust::TrustError`]) become [`crate::error::CliError`]s through its
//! `From` impl.

pub use heex_trust::{client_config, AnchoredVerifier, TrustAnchor, Verdict, VerdictLog};

/// The one line explaining why the server's identity was refused, or `None` if the last
/// check did not refuse it.
pub fn explain_refusal(anchor: &TrustAnchor, verdict: Option<&Verdict>) -> Option<String> {
    heex_trust::explain_refusal(anchor, verdict)
}
