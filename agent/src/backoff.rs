//! Reconnect delays: exponential with full jitter, capped, reset once a session proved stable.
//!
//! Full jitter (a uniform delay between zero and the current ceiling) spreads a fleet that
//! lost the gateway at the same instant over the whole window instead of having it return
//! in synchronized waves.

use std::time::Duration;

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

/// Why backoff parameters are unusable.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum BackoffError {
    /// The initial ceiling is zero.
    #[error("backoff_initial must be greater than zero")]
    ZeroInitial,
    /// The cap is below the initial ceiling.
    #[error("backoff_max must not be shorter than backoff_initial")]
    MaxBelowInitial,
}

/// Reconnect delay generator.
#[derive(Debug)]
pub struct Backoff {
    initial: Duration,
    max: Duration,
    stable_after: Duration,
    attempt: u32,
    rng: StdRng,
}

impl Backoff {
    /// Delays start with a ceiling of `initial`, double per failed attempt up to `max`, and
    /// start over once a session stayed up for `stable_after`.
    pub fn try_new(
        initial: Duration,
        max: Duration,
        stable_after: Duration,
    ) -> Result<Backoff, BackoffError> {
        Backoff::with_rng(initial, max, stable_after, StdRng::from_entropy())
    }

    /// Like [`Backoff::try_new`] with a given random source (tests use a fixed seed).
    pub fn with_rng(
        initial: Duration,
        max: Duration,
        stable_after: Duration,
        rng: StdRng,
    ) -> Result<Backoff, BackoffError> {
        if initial.is_zero() {
            return Err(BackoffError::ZeroInitial);
        }
        if max < initial {
            return Err(BackoffError::MaxBelowInitial);
        }
        Ok(Backoff {
            initial,
            max,
            stable_after,
            attempt: 0,
            rng,
        })
    }

    /// Number of delays handed out since the last reset.
    pub fn attempt(&self) -> u32 {
        self.attempt
    }

    /// The upper bound of the next delay.
    pub fn ceiling(&self) -> Duration {
        // 2^20 × initial exceeds any sensible cap; stop doubling there to avoid overflow.
        let factor = 1u32 << self.attempt.min(20);
        self.initial.saturating_mul(factor).min(self.max)
    }

    /// The next delay: uniform in `[0, ceiling]`; raises the ceiling for the one after.
    pub fn next_delay(&mut self) -> Duration {
        let ceiling = self.ceiling();
        self.attempt = self.attempt.saturating_add(1);
        let nanos = u64::try_from(ceiling.as_nanos()).unwrap_or(u64::MAX);
        Duration::from_nanos(self.rng.gen_range(0..=nanos))
    }

    /// A session ended after being up for `up_for`: a stable one resets the delays, a short
    /// one (accepted, then dropped at once) keeps them growing.
    pub fn session_ended(&mut self, up_for: Duration) {
        if up_for >= self.stable_after {
            self.reset();
        }
    }

    /// Goes straight to the largest delays, for refusals that will not heal quickly
    /// (e.g. the device is revoked or unknown).
    pub fn max_out(&mut self) {
        while self.ceiling() < self.max {
            self.attempt += 1;
        }
    }

    /// Starts over from the initial ceiling.
    pub fn reset(&mut self) {
        self.attempt = 0;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn backoff(seed: u64) -> Backoff {
        Backoff::with_rng(
            Duration::from_secs(1),
            Duration::from_secs(60),
            Duration::from_secs(90),
            StdRng::seed_from_u64(seed),
        )
        .unwrap()
    }

    #[test]
    fn ceilings_double_up_to_the_cap() {
        let mut b = backoff(1);
        let mut ceilings = Vec::new();
        for _ in 0..10 {
            ceilings.push(b.ceiling().as_secs());
            let _ = b.next_delay();
        }
        assert_eq!(ceilings, [1, 2, 4, 8, 16, 32, 60, 60, 60, 60]);
        for _ in 0..100 {
            assert!(b.next_delay() <= Duration::from_secs(60));
        }
    }

    #[test]
    fn delays_are_jittered_within_the_ceiling() {
        let mut b = backoff(2);
        b.max_out();
        let delays: Vec<Duration> = (0..50).map(|_| b.next_delay()).collect();
        assert!(delays.iter().all(|d| *d <= Duration::from_secs(60)));
        let distinct: std::collections::HashSet<_> = delays.iter().collect();
        assert!(distinct.len() > 40, "delays are not jittered: {delays:?}");
        // Full jitter: both halves of the window are used.
        assert!(delays.iter().any(|d| *d < Duration::from_secs(30)));
        assert!(delays.iter().any(|d| *d > Duration::from_secs(30)));
        // Two agents do not share a schedule.
        let mut a = backoff(3);
        let mut c = backoff(4);
        let a: Vec<_> = (0..5).map(|_| a.next_delay()).collect();
        let c: Vec<_> = (0..5).map(|_| c.next_delay()).collect();
        assert_ne!(a, c);
    }

    #[test]
    fn only_a_stable_session_resets() {
        let mut b = backoff(5);
        for _ in 0..4 {
            let _ = b.next_delay();
        }
        b.session_ended(Duration::from_secs(2));
        assert_eq!(b.ceiling(), Duration::from_secs(16));
        b.session_ended(Duration::from_secs(90));
        assert_eq!(b.ceiling(), Duration::from_secs(1));
    }

    #[test]
    fn invalid_parameters_are_refused() {
        let s = Duration::from_secs(1);
        assert_eq!(
            Backoff::try_new(Duration::ZERO, s, s).unwrap_err(),
            BackoffError::ZeroInitial
        );
        assert_eq!(
            Backoff::try_new(s * 2, s, s).unwrap_err(),
            BackoffError::MaxBelowInitial
        );
    }

    #[test]
    fn huge_attempt_counts_do_not_overflow() {
        let mut b = Backoff::try_new(Duration::from_secs(1), Duration::MAX, Duration::MAX).unwrap();
        for _ in 0..100 {
            let _ = b.next_delay();
        }
        assert_eq!(b.ceiling(), Duration::from_secs(1 << 20));
    }

    /// Drives a reconnect loop on a paused clock: the time spent waiting stays within the
    /// sum of the ceilings and the loop never spins.
    #[tokio::test(start_paused = true)]
    async fn schedule_on_a_paused_clock() {
        let mut b = backoff(6);
        let start = tokio::time::Instant::now();
        let mut bound = Duration::ZERO;
        let mut at = Vec::new();
        for _ in 0..8 {
            bound += b.ceiling();
            tokio::time::sleep(b.next_delay()).await;
            at.push(start.elapsed());
        }
        let waited = start.elapsed();
        assert!(waited <= bound, "{waited:?} > {bound:?}");
        assert!(
            waited >= Duration::from_secs(10),
            "suspiciously short: {at:?}"
        );
        b.session_ended(Duration::from_secs(120));
        let before = tokio::time::Instant::now();
        tokio::time::sleep(b.next_delay()).await;
        assert!(before.elapsed() <= Duration::from_secs(1));
    }
}
