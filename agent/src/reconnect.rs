//! The reconnect policy: after a session ends (or fails to start), when to try again. One
//! pure decision, [`after`], over how the session ended and the [`Backoff`]:
//!
//! - **soon**: the usual case (the network, a gateway restart): the backoff's next delay;
//! - **slowly**: retrying soon will not help, but an operator may fix it (the gateway does not
//!   know the device, another agent holds its identity, a certificate expired on the
//!   gateway's clock but not on ours): the backoff goes straight to its ceiling;
//! - **refused**: a new identity is needed (revoked, expired past the grace by our own
//!   clock): at most once per [`REFUSED_RETRY`], in case an operator undoes it.
//!
//! Whether the line is logged as an error (an operator must act) or a warning is part of the
//! decision.

use std::time::Duration;

use heex_proto::frame::CloseReason;

use crate::backoff::Backoff;

/// How long a refused agent waits before trying again.
pub const REFUSED_RETRY: Duration = Duration::from_secs(3600);

/// How a session ended, as far as the policy cares.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Ending {
    /// The gateway sent Close with this reason. `expired_here`: the device's certificate
    /// has expired by this machine's clock too.
    Closed {
        /// The Close reason.
        reason: CloseReason,
        /// The certificate is expired by the local clock.
        expired_here: bool,
    },
    /// The connection failed or was lost. `needs_operator`: the TLS handshake showed the
    /// credentials themselves are refused (the gateway's CA is not trusted, or it refused
    /// the device certificate).
    Failed {
        /// The credentials, not the network, are the problem.
        needs_operator: bool,
    },
}

/// When to try again.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Retry {
    /// After the backoff's next delay.
    Soon,
    /// After the backoff's longest delay.
    Slowly,
    /// After [`REFUSED_RETRY`] at least.
    Refused,
}

/// The decision [`after`] made.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Decision {
    /// When to try again.
    pub retry: Retry,
    /// How long to wait first.
    pub delay: Duration,
    /// The backoff's ceiling the delay was drawn under.
    pub ceiling: Duration,
    /// Log the ending as an error (an operator must act) rather than a warning.
    pub error: bool,
}

/// Decides when to reconnect after `ending`, drawing the delay from `backoff` (whose
/// ceiling a hopeless ending raises to its maximum).
pub fn after(ending: Ending, backoff: &mut Backoff) -> Decision {
    let retry = match ending {
        Ending::Closed {
            reason: CloseReason::DeviceRevoked,
            ..
        }
        | Ending::Closed {
            reason: CloseReason::CertificateExpired,
            expired_here: true,
        } => Retry::Refused,
        Ending::Closed {
            reason:
                CloseReason::DeviceUnknown | CloseReason::CertificateExpired | CloseReason::Replaced,
            ..
        } => Retry::Slowly,
        Ending::Closed { .. } | Ending::Failed { .. } => Retry::Soon,
    };
    let error = match ending {
        Ending::Closed { .. } => retry != Retry::Soon,
        Ending::Failed { needs_operator } => needs_operator,
    };
    if retry == Retry::Slowly {
        backoff.max_out();
    }
    let ceiling = backoff.ceiling();
    let delay = match retry {
        Retry::Refused => REFUSED_RETRY.max(backoff.next_delay()),
        Retry::Soon | Retry::Slowly => backoff.next_delay(),
    };
    Decision {
        retry,
        delay,
        ceiling,
        error,
    }
}

#[cfg(test)]
mod tests {
    use rand::rngs::StdRng;
    use rand::SeedableRng;

    use super::*;

    const INITIAL: Duration = Duration::from_millis(500);
    const MAX: Duration = Duration::from_secs(60);

    fn backoff() -> Backoff {
        Backoff::with_rng(
            INITIAL,
            MAX,
            Duration::from_secs(30),
            StdRng::seed_from_u64(7),
        )
        .unwrap()
    }

    fn closed(reason: CloseReason, expired_here: bool) -> Ending {
        Ending::Closed {
            reason,
            expired_here,
        }
    }

    #[test]
    fn network_failures_and_ordinary_closes_retry_soon_with_a_growing_ceiling() {
        for ending in [
            Ending::Failed {
                needs_operator: false,
            },
            closed(CloseReason::Shutdown, false),
            closed(CloseReason::ProtocolError, false),
        ] {
            let mut b = backoff();
            let first = after(ending, &mut b);
            assert_eq!(first.retry, Retry::Soon, "{ending:?}");
            assert_eq!(first.ceiling, INITIAL, "{ending:?}");
            assert!(!first.error, "{ending:?}");
            assert!(first.delay <= INITIAL, "{ending:?}: {:?}", first.delay);
            // The ceiling doubles with each attempt, never past the maximum.
            for _ in 0..20 {
                let d = after(ending, &mut b);
                assert!(d.delay <= MAX, "{ending:?}: {:?}", d.delay);
            }
            assert_eq!(b.ceiling(), MAX);
        }
    }

    #[test]
    fn what_an_operator_must_fix_is_retried_slowly_and_logged_as_an_error() {
        for ending in [
            closed(CloseReason::DeviceUnknown, false),
            closed(CloseReason::Replaced, false),
            // Expired by the gateway's clock, not ours: a clock to fix, or a renewal to come.
            closed(CloseReason::CertificateExpired, false),
        ] {
            let mut b = backoff();
            let d = after(ending, &mut b);
            assert_eq!(d.retry, Retry::Slowly, "{ending:?}");
            assert!(d.error, "{ending:?}");
            assert_eq!(
                d.ceiling, MAX,
                "{ending:?}: the ceiling went straight to the top"
            );
            assert!(d.delay <= MAX);
        }
        // Credentials the gateway's TLS refuses: an error, retried on the usual backoff (a
        // CA rotation may catch up).
        let mut b = backoff();
        let d = after(
            Ending::Failed {
                needs_operator: true,
            },
            &mut b,
        );
        assert_eq!((d.retry, d.error), (Retry::Soon, true));
    }

    #[test]
    fn a_revoked_or_truly_expired_device_waits_at_least_an_hour() {
        for ending in [
            closed(CloseReason::DeviceRevoked, false),
            closed(CloseReason::DeviceRevoked, true),
            closed(CloseReason::CertificateExpired, true),
        ] {
            let mut b = backoff();
            for _ in 0..3 {
                let d = after(ending, &mut b);
                assert_eq!(d.retry, Retry::Refused, "{ending:?}");
                assert!(d.error);
                assert!(d.delay >= REFUSED_RETRY, "{ending:?}: {:?}", d.delay);
            }
        }
    }
}
