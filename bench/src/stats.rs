//! Measurements and their aggregation: latency samples with percentiles, counters by reason,
//! and the per-worker reports that the coordinator merges into one.

use std::collections::BTreeMap;
use std::time::Duration;

use serde::{Deserialize, Serialize};

/// Latency samples in microseconds. Kept raw (a few hundred thousand values at most per run)
/// so that merged percentiles are exact.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(transparent)]
pub(crate) struct Samples(pub Vec<u64>);

impl Samples {
    /// Records one latency.
    pub(crate) fn push(&mut self, d: Duration) {
        self.0
            .push(u64::try_from(d.as_micros()).unwrap_or(u64::MAX));
    }

    /// Adds every sample of `other`.
    pub(crate) fn merge(&mut self, other: Samples) {
        self.0.extend(other.0);
    }

    /// Number of samples.
    pub(crate) fn len(&self) -> usize {
        self.0.len()
    }

    /// Sorted copy, for several percentile queries.
    pub(crate) fn sorted(&self) -> Sorted {
        let mut v = self.0.clone();
        v.sort_unstable();
        Sorted(v)
    }
}

/// Samples in ascending order.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Sorted(Vec<u64>);

impl Sorted {
    /// The `p`th percentile (nearest rank, `p` in 0..=100) in milliseconds; 0 when empty.
    pub(crate) fn pct_ms(&self, p: f64) -> f64 {
        let Some(last) = self.0.len().checked_sub(1) else {
            return 0.0;
        };
        let p = p.clamp(0.0, 100.0);
        // Nearest rank: the smallest value with at least p% of the samples at or below it.
        let rank = ((p / 100.0) * self.0.len() as f64).ceil() as usize;
        let idx = rank.saturating_sub(1).min(last);
        self.0[idx] as f64 / 1000.0
    }

    /// The percentiles the JSON summary carries.
    pub(crate) fn percentiles(&self) -> Percentiles {
        Percentiles {
            count: self.0.len(),
            p50_ms: self.pct_ms(50.0),
            p90_ms: self.pct_ms(90.0),
            p99_ms: self.pct_ms(99.0),
            max_ms: self.pct_ms(100.0),
        }
    }
}

/// Percentiles of a latency distribution, for machine-readable summaries.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub(crate) struct Percentiles {
    /// Number of samples.
    pub count: usize,
    /// Median.
    pub p50_ms: f64,
    /// 90th percentile.
    pub p90_ms: f64,
    /// 99th percentile.
    pub p99_ms: f64,
    /// Largest sample.
    pub max_ms: f64,
}

/// Counts by reason (e.g. failures: "connect: refused" → 3).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(transparent)]
pub(crate) struct Reasons(pub BTreeMap<String, u64>);

impl Reasons {
    /// Counts one occurrence of `reason`.
    pub(crate) fn add(&mut self, reason: impl Into<String>) {
        *self.0.entry(reason.into()).or_default() += 1;
    }

    /// Adds every count of `other`.
    pub(crate) fn merge(&mut self, other: Reasons) {
        for (k, v) in other.0 {
            *self.0.entry(k).or_default() += v;
        }
    }

    /// Sum of all counts.
    pub(crate) fn total(&self) -> u64 {
        self.0.values().sum()
    }

    /// "reason ×n, reason ×m" or "none".
    pub(crate) fn describe(&self) -> String {
        if self.0.is_empty() {
            return "none".to_owned();
        }
        self.0
            .iter()
            .map(|(k, v)| format!("{k} ×{v}"))
            .collect::<Vec<_>>()
            .join(", ")
    }
}

/// A span of wall-clock time, in Unix milliseconds (workers are separate processes on the
/// same machine, so wall-clock times are comparable between them).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct Span {
    /// Start, Unix ms; 0 when nothing happened.
    pub start_ms: u64,
    /// End, Unix ms.
    pub end_ms: u64,
}

impl Span {
    /// The smallest span covering both (an empty span is ignored).
    pub(crate) fn union(self, other: Span) -> Span {
        match (self.start_ms, other.start_ms) {
            (0, _) => other,
            (_, 0) => self,
            _ => Span {
                start_ms: self.start_ms.min(other.start_ms),
                end_ms: self.end_ms.max(other.end_ms),
            },
        }
    }

    /// Length in seconds.
    pub(crate) fn secs(self) -> f64 {
        self.end_ms.saturating_sub(self.start_ms) as f64 / 1000.0
    }
}

/// The current wall-clock time in Unix milliseconds.
pub(crate) fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}

/// What happened during a reconnect storm (in one worker, or merged).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub(crate) struct StormStats {
    /// From the first session lost to the last one back.
    pub window: Span,
    /// Sessions that were lost.
    pub dropped: u64,
    /// Lost sessions that came back.
    pub back: u64,
    /// Per session: time from its loss to its new Welcome.
    pub recovery: Samples,
    /// Connection attempts while reconnecting (including failed ones).
    pub attempts: u64,
    /// Why reconnection attempts failed.
    pub attempt_failures: Reasons,
    /// Heartbeats sent during the storm window by sessions already back.
    pub heartbeats_sent: u64,
    /// Of those, acknowledged.
    pub heartbeats_acked: u64,
    /// Ack latencies of those heartbeats.
    pub ack_latency: Samples,
}

impl StormStats {
    /// Adds `other` (another worker's storm).
    pub(crate) fn merge(&mut self, other: StormStats) {
        self.window = self.window.union(other.window);
        self.dropped += other.dropped;
        self.back += other.back;
        self.recovery.merge(other.recovery);
        self.attempts += other.attempts;
        self.attempt_failures.merge(other.attempt_failures);
        self.heartbeats_sent += other.heartbeats_sent;
        self.heartbeats_acked += other.heartbeats_acked;
        self.ack_latency.merge(other.ack_latency);
    }
}

/// Everything one worker (or, merged, the whole run) measured.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub(crate) struct RunStats {
    /// Sessions the run was asked for.
    pub sessions: u64,
    /// Sessions established in the connect phase.
    pub established: u64,
    /// The connect phase: first connection started to last session established.
    pub connect_window: Span,
    /// TCP connect + full TLS handshake (+ Welcome for heex) per session.
    pub connect_latency: Samples,
    /// Why connections of the connect phase failed.
    pub connect_failures: Reasons,
    /// Established sessions lost while holding, by reason (reconnect storms excluded).
    pub drops: Reasons,
    /// Heartbeats sent.
    pub heartbeats_sent: u64,
    /// Heartbeats acknowledged correctly.
    pub heartbeats_acked: u64,
    /// Heartbeats not acknowledged correctly, by reason.
    pub heartbeat_failures: Reasons,
    /// Heartbeat round trips.
    pub ack_latency: Samples,
    /// The reconnect storm, in storm mode.
    pub storm: Option<StormStats>,
}

impl RunStats {
    /// Adds `other` (another worker's report).
    pub(crate) fn merge(&mut self, other: RunStats) {
        self.sessions += other.sessions;
        self.established += other.established;
        self.connect_window = self.connect_window.union(other.connect_window);
        self.connect_latency.merge(other.connect_latency);
        self.connect_failures.merge(other.connect_failures);
        self.drops.merge(other.drops);
        self.heartbeats_sent += other.heartbeats_sent;
        self.heartbeats_acked += other.heartbeats_acked;
        self.heartbeat_failures.merge(other.heartbeat_failures);
        self.ack_latency.merge(other.ack_latency);
        match (&mut self.storm, other.storm) {
            (Some(a), Some(b)) => a.merge(b),
            (a @ None, b) => *a = b,
            (Some(_), None) => {}
        }
    }

    /// Full handshakes per second over the connect phase.
    pub(crate) fn handshakes_per_sec(&self) -> f64 {
        let secs = self.connect_window.secs();
        if secs <= 0.0 {
            return 0.0;
        }
        self.established as f64 / secs
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sorted(v: &[u64]) -> Sorted {
        Samples(v.to_vec()).sorted()
    }

    #[test]
    fn percentiles_use_nearest_rank() {
        // 1..=100 ms.
        let s = sorted(&(1..=100).rev().map(|ms| ms * 1000).collect::<Vec<_>>());
        assert_eq!(s.pct_ms(50.0), 50.0);
        assert_eq!(s.pct_ms(90.0), 90.0);
        assert_eq!(s.pct_ms(99.0), 99.0);
        assert_eq!(s.pct_ms(100.0), 100.0);
        assert_eq!(s.pct_ms(0.0), 1.0);
        assert_eq!(s.pct_ms(0.5), 1.0);
        assert_eq!(s.pct_ms(1.5), 2.0);
    }

    #[test]
    fn percentiles_of_tiny_and_empty_sets() {
        assert_eq!(sorted(&[]).pct_ms(50.0), 0.0);
        let one = sorted(&[2500]);
        assert_eq!(one.pct_ms(0.0), 2.5);
        assert_eq!(one.pct_ms(99.9), 2.5);
        let two = sorted(&[1000, 3000]);
        assert_eq!(two.pct_ms(50.0), 1.0);
        assert_eq!(two.pct_ms(51.0), 3.0);
        // Out-of-range p is clamped, not a panic.
        assert_eq!(two.pct_ms(250.0), 3.0);
        assert_eq!(two.pct_ms(-3.0), 1.0);
    }

    #[test]
    fn merged_percentiles_equal_percentiles_of_the_union() {
        let mut a = Samples(vec![5, 1, 9]);
        a.merge(Samples(vec![7, 3]));
        a.push(Duration::from_micros(11));
        assert_eq!(a.len(), 6);
        assert_eq!(a.sorted(), sorted(&[1, 3, 5, 7, 9, 11]));
        assert_eq!(a.sorted().pct_ms(50.0), 0.005);
    }

    #[test]
    fn reasons_merge_and_describe() {
        let mut a = Reasons::default();
        assert_eq!(a.describe(), "none");
        a.add("tls");
        a.add("tls");
        let mut b = Reasons::default();
        b.add("refused");
        b.add("tls");
        a.merge(b);
        assert_eq!(a.total(), 4);
        assert_eq!(a.describe(), "refused ×1, tls ×3");
    }

    #[test]
    fn spans_union_ignores_empty_ones() {
        let a = Span {
            start_ms: 1_000,
            end_ms: 3_000,
        };
        let b = Span {
            start_ms: 500,
            end_ms: 2_000,
        };
        assert_eq!(
            a.union(b),
            Span {
                start_ms: 500,
                end_ms: 3_000
            }
        );
        assert_eq!(Span::default().union(a), a);
        assert_eq!(a.union(Span::default()), a);
        assert_eq!(a.secs(), 2.0);
    }

    #[test]
    fn run_stats_merge_adds_workers_up() {
        let w1 = RunStats {
            sessions: 10,
            established: 10,
            connect_window: Span {
                start_ms: 1_000,
                end_ms: 2_000,
            },
            heartbeats_sent: 20,
            heartbeats_acked: 20,
            ..RunStats::default()
        };
        let mut w2 = RunStats {
            sessions: 10,
            established: 9,
            connect_window: Span {
                start_ms: 1_100,
                end_ms: 3_000,
            },
            heartbeats_sent: 18,
            heartbeats_acked: 17,
            storm: Some(StormStats {
                dropped: 9,
                back: 9,
                ..StormStats::default()
            }),
            ..RunStats::default()
        };
        w2.connect_failures.add("connect: refused");
        let mut all = RunStats::default();
        all.merge(w1);
        all.merge(w2);
        assert_eq!(all.sessions, 20);
        assert_eq!(all.established, 19);
        assert_eq!(all.connect_failures.total(), 1);
        assert_eq!(all.heartbeats_acked, 37);
        assert_eq!(all.storm.as_ref().map(|s| s.back), Some(9));
        // 19 sessions over 2 s.
        assert_eq!(all.handshakes_per_sec(), 9.5);
        // JSON lines between processes round-trip.
        let line = serde_json::to_string(&all).unwrap();
        assert_eq!(serde_json::from_str::<RunStats>(&line).unwrap(), all);
    }
}
