//! Connection limits of the gateway's accept loop: connections per source address not
//! admitted yet, and warnings that do not flood the log while a limit is hit.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// How often a limit's warning is logged at most while it keeps being hit.
const WARN_EVERY: Duration = Duration::from_secs(10);

/// Connections per source address that were accepted but not admitted yet.
#[derive(Clone)]
pub(crate) struct Sources {
    max: usize,
    counts: Arc<Mutex<HashMap<IpAddr, usize>>>,
}

/// One connection's place in its source's count; released on drop (or at admission).
pub(crate) struct SourceSlot {
    sources: Sources,
    ip: IpAddr,
}

impl Sources {
    pub(crate) fn new(max: usize) -> Sources {
        Sources {
            max,
            counts: Arc::default(),
        }
    }

    /// A place for one more connection from `ip`, or `None` when it has `max` already.
    pub(crate) fn enter(&self, ip: IpAddr) -> Option<SourceSlot> {
        let mut counts = self.counts.lock().unwrap_or_else(|e| e.into_inner());
        let n = counts.entry(ip).or_insert(0);
        if *n >= self.max {
            return None;
        }
        *n += 1;
        Some(SourceSlot {
            sources: self.clone(),
            ip,
        })
    }

    #[cfg(test)]
    pub(crate) fn count(&self, ip: IpAddr) -> usize {
        let counts = self.counts.lock().unwrap_or_else(|e| e.into_inner());
        counts.get(&ip).copied().unwrap_or(0)
    }
}

impl Drop for SourceSlot {
    fn drop(&mut self) {
        let mut counts = self
            .sources
            .counts
            .lock()
            .unwrap_or_else(|e| e.into_inner());
        if let Some(n) = counts.get_mut(&self.ip) {
            *n = n.saturating_sub(1);
            if *n == 0 {
                counts.remove(&self.ip);
            }
        }
    }
}

/// A warning logged at most every [`WARN_EVERY`], with how many times it was due.
pub(crate) struct RateLimitedWarn {
    last: Mutex<Option<Instant>>,
    due: AtomicU64,
}

impl RateLimitedWarn {
    pub(crate) fn new() -> RateLimitedWarn {
        RateLimitedWarn {
            last: Mutex::new(None),
            due: AtomicU64::new(0),
        }
    }

    /// Counts one occurrence; calls `log` with the count since the last line when a line
    /// is due.
    pub(crate) fn warn(&self, log: impl FnOnce(u64)) {
        let n = self.due.fetch_add(1, Ordering::Relaxed) + 1;
        let mut last = self.last.lock().unwrap_or_else(|e| e.into_inner());
        if last.is_none_or(|at| at.elapsed() >= WARN_EVERY) {
            *last = Some(Instant::now());
            self.due.fetch_sub(n, Ordering::Relaxed);
            log(n);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn source_slots_are_counted_and_released() {
        let sources = Sources::new(2);
        let ip: IpAddr = "127.0.0.2".parse().unwrap();
        let a = sources.enter(ip).unwrap();
        let b = sources.enter(ip).unwrap();
        assert!(sources.enter(ip).is_none());
        assert!(sources.enter("127.0.0.1".parse().unwrap()).is_some());
        drop(a);
        assert_eq!(sources.count(ip), 1);
        let _c = sources.enter(ip).unwrap();
        drop(b);
        assert_eq!(sources.count(ip), 1);
    }

    #[test]
    fn warnings_are_rate_limited() {
        let w = RateLimitedWarn::new();
        let mut lines = Vec::new();
        for _ in 0..100 {
            w.warn(|n| lines.push(n));
        }
        assert_eq!(lines, vec![1]);
    }
}
