//! One load-generating process: connects its share of the sessions, holds them with
//! heartbeats (checking every answer), and in storm mode reconnects lost sessions with
//! jittered backoff like the agent. It talks to the coordinator with JSON lines on stdout:
//! `{"event":"ready",…}` once its connect phase is over, then `{"event":"report",…}`.

use std::io::Write;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::PathBuf;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use anyhow::Context;
use rand::{Rng, SeedableRng};
use serde::{Deserialize, Serialize};
use tokio::sync::{Notify, OwnedSemaphorePermit, Semaphore};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use crate::cli::Peer;
use crate::creds;
use crate::session::{self, Conn, Reply};
use crate::stats::{now_ms, RunStats, StormStats};

/// What a worker does.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub(crate) struct Job {
    /// Credentials directory.
    pub creds: PathBuf,
    /// First device (line) of this worker.
    pub offset: usize,
    /// Sessions of this worker.
    pub count: usize,
    /// Server addresses; session `i` (global) goes to `gateways[i % len]`.
    pub gateways: Vec<SocketAddr>,
    /// Protocol.
    pub peer: Peer,
    /// Source addresses of the whole run; session `i` (global) uses `source_ips[i % len]`.
    pub source_ips: Vec<Ipv4Addr>,
    /// Heartbeat period, ms.
    pub interval_ms: u64,
    /// Hold (or storm wait) after the connect phase, ms.
    pub duration_ms: u64,
    /// Ack bound, ms.
    pub ack_timeout_ms: u64,
    /// Connections per second of this worker (0: unlimited).
    pub connect_rate: f64,
    /// Connections being set up at once by this worker.
    pub connect_concurrency: usize,
    /// Reconnect storms: backoff and settle time; `None` for a plain hold.
    pub storm: Option<StormJob>,
}

/// Storm parameters of a job.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct StormJob {
    /// First backoff ceiling, ms.
    pub backoff_initial_ms: u64,
    /// Largest backoff ceiling, ms.
    pub backoff_max_ms: u64,
    /// Hold after all are back, ms.
    pub settle_ms: u64,
}

/// A line a worker prints.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "event", rename_all = "snake_case")]
pub(crate) enum Event {
    /// The connect phase is over.
    Ready {
        /// Sessions established.
        established: u64,
        /// Sessions that failed to connect.
        failed: u64,
    },
    /// The final measurements.
    Report {
        /// Everything measured.
        stats: Box<RunStats>,
    },
}

/// Full-jitter exponential backoff, as the agent does it.
#[derive(Debug)]
pub(crate) struct Backoff {
    initial: Duration,
    max: Duration,
    attempt: u32,
}

impl Backoff {
    /// Starts at `initial`, never beyond `max`.
    pub(crate) fn new(initial: Duration, max: Duration) -> Backoff {
        Backoff {
            initial,
            max: max.max(initial),
            attempt: 0,
        }
    }

    /// The current ceiling (doubles per attempt, capped).
    pub(crate) fn ceiling(&self) -> Duration {
        let factor = 1u32 << self.attempt.min(20);
        self.initial.saturating_mul(factor).min(self.max)
    }

    /// A uniform delay in `0..=ceiling`, then the ceiling grows.
    pub(crate) fn next_delay(&mut self, rng: &mut impl Rng) -> Duration {
        let ceiling = self.ceiling();
        self.attempt = self.attempt.saturating_add(1);
        ceiling.mul_f64(rng.gen_range(0.0..=1.0))
    }
}

/// Mutable measurements of the worker, shared by its session tasks (one thread).
struct Tally {
    stats: RunStats,
    /// Initial connection attempts still running.
    connecting: usize,
    /// Sessions lost and not back yet.
    down: u64,
    storm_active: bool,
}

struct Shared {
    job: Job,
    tally: Mutex<Tally>,
    changed: Notify,
    cancel: CancellationToken,
}

impl Shared {
    fn tally(&self) -> MutexGuard<'_, Tally> {
        // Poisoning needs a panic in a session task, which would already have aborted.
        self.tally.lock().unwrap_or_else(|p| p.into_inner())
    }
}

/// Runs a worker job to its end, printing its events to stdout.
pub(crate) fn run(job: &str) -> anyhow::Result<()> {
    let job: Job = serde_json::from_str(job).context("malformed worker job")?;
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    let stats = rt.block_on(work(job, &mut |e| emit(&e)))?;
    emit(&Event::Report {
        stats: Box::new(stats),
    })
}

fn emit(event: &Event) -> anyhow::Result<()> {
    let mut out = std::io::stdout().lock();
    serde_json::to_writer(&mut out, event)?;
    out.write_all(b"\n")?;
    out.flush()?;
    Ok(())
}

/// Connects, holds and (in storm mode) recovers the job's sessions; `ready` is called once
/// the connect phase is over. Returns the measurements.
pub(crate) async fn work(
    job: Job,
    ready: &mut dyn FnMut(Event) -> anyhow::Result<()>,
) -> anyhow::Result<RunStats> {
    let meta = creds::load_meta(&job.creds)?;
    let roots = creds::roots(&meta.ca_pem)?;
    let devices = creds::load_devices(&job.creds, job.offset, job.count)?;
    // Build every TLS configuration before the clock starts.
    let mut configs = Vec::with_capacity(devices.len());
    for d in &devices {
        configs.push((
            d.device_id.clone(),
            creds::client_config(&roots, d, job.peer)?,
        ));
    }
    drop(devices);
    let shared = Arc::new(Shared {
        tally: Mutex::new(Tally {
            stats: RunStats {
                sessions: job.count as u64,
                storm: job.storm.map(|_| StormStats::default()),
                ..RunStats::default()
            },
            connecting: configs.len(),
            down: 0,
            storm_active: false,
        }),
        job,
        changed: Notify::new(),
        cancel: CancellationToken::new(),
    });
    let job = &shared.job;
    if configs.len() < job.count {
        let mut t = shared.tally();
        for _ in configs.len()..job.count {
            t.stats.connect_failures.add("no credentials");
        }
    }

    let permits = Arc::new(Semaphore::new(job.connect_concurrency.max(1)));
    let gap = (job.connect_rate > 0.0).then(|| Duration::from_secs_f64(1.0 / job.connect_rate));
    let start = Instant::now();
    shared.tally().stats.connect_window.start_ms = now_ms();
    let mut tasks = tokio::task::JoinSet::new();
    for (i, (device_id, tls)) in configs.into_iter().enumerate() {
        if let Some(gap) = gap {
            tokio::time::sleep_until(start + gap.mul_f64(i as f64)).await;
        }
        let permit = permits.clone().acquire_owned().await?;
        let global = job.offset + i;
        let ip = job
            .source_ips
            .get(global % job.source_ips.len().max(1))
            .copied()
            .unwrap_or(Ipv4Addr::LOCALHOST);
        let Some(&gateway) = job.gateways.get(global % job.gateways.len().max(1)) else {
            anyhow::bail!("no gateway to connect to");
        };
        tasks.spawn(device(
            shared.clone(),
            IpAddr::V4(ip),
            gateway,
            device_id,
            tls,
            permit,
        ));
    }
    loop {
        let notified = shared.changed.notified();
        if shared.tally().connecting == 0 {
            break;
        }
        notified.await;
    }
    let (established, failed) = {
        let t = shared.tally();
        (t.stats.established, t.stats.connect_failures.total())
    };
    ready(Event::Ready {
        established,
        failed,
    })?;

    let deadline = Instant::now() + Duration::from_millis(job.duration_ms);
    match job.storm {
        None => tokio::time::sleep_until(deadline).await,
        Some(storm) => {
            // Until the storm has come and gone (then settle), or the deadline.
            let over = async {
                loop {
                    let notified = shared.changed.notified();
                    {
                        let t = shared.tally();
                        if t.stats.storm.as_ref().is_some_and(|s| s.dropped > 0) && t.down == 0 {
                            break;
                        }
                    }
                    notified.await;
                }
                tokio::time::sleep(Duration::from_millis(storm.settle_ms)).await;
            };
            tokio::select! {
                _ = over => {}
                _ = tokio::time::sleep_until(deadline) => {}
            }
        }
    }
    shared.cancel.cancel();
    let drain = async { while tasks.join_next().await.is_some() {} };
    let bound = Duration::from_millis(job.ack_timeout_ms) + Duration::from_secs(5);
    if tokio::time::timeout(bound, drain).await.is_err() {
        tasks.abort_all();
    }
    let stats = std::mem::take(&mut shared.tally().stats);
    Ok(stats)
}

/// One device: connect; hold; in storm mode, reconnect whenever the session is lost.
async fn device(
    shared: Arc<Shared>,
    source: IpAddr,
    gateway: SocketAddr,
    device_id: String,
    tls: Arc<rustls::ClientConfig>,
    permit: OwnedSemaphorePermit,
) {
    let job = &shared.job;
    let t0 = Instant::now();
    let first = tokio::select! {
        _ = shared.cancel.cancelled() => Err("cancelled".to_owned()),
        r = session::connect(source, gateway, tls.clone(), job.peer, &device_id) => r,
    };
    drop(permit);
    let mut conn = {
        let mut t = shared.tally();
        t.connecting -= 1;
        let conn = match first {
            Ok(conn) => {
                t.stats.established += 1;
                t.stats.connect_latency.push(t0.elapsed());
                t.stats.connect_window.end_ms = now_ms();
                Some(conn)
            }
            Err(reason) => {
                t.stats.connect_failures.add(reason);
                None
            }
        };
        drop(t);
        shared.changed.notify_waiters();
        match conn {
            Some(c) => c,
            None => return,
        }
    };
    let mut rng = rand::rngs::StdRng::from_entropy();
    // Storm figures count the heartbeats of re-established sessions only (not those of
    // sessions still waiting to be closed by the gateway going down).
    let mut reconnected = false;
    loop {
        let lost = hold(&shared, &mut conn, reconnected).await;
        reconnected = true;
        let Some(reason) = lost else {
            conn.close().await;
            return;
        };
        let lost_at = Instant::now();
        {
            let mut t = shared.tally();
            t.stats.drops.add(reason);
            if t.stats.storm.is_some() {
                t.down += 1;
                t.storm_active = true;
                if let Some(s) = t.stats.storm.as_mut() {
                    s.dropped += 1;
                    if s.window.start_ms == 0 {
                        s.window.start_ms = now_ms();
                    }
                }
            }
        }
        let Some(storm) = job.storm else { return };
        let mut backoff = Backoff::new(
            Duration::from_millis(storm.backoff_initial_ms),
            Duration::from_millis(storm.backoff_max_ms),
        );
        conn = loop {
            let delay = backoff.next_delay(&mut rng);
            tokio::select! {
                _ = shared.cancel.cancelled() => return,
                _ = tokio::time::sleep(delay) => {}
            }
            let attempt = tokio::select! {
                _ = shared.cancel.cancelled() => return,
                r = session::connect(source, gateway, tls.clone(), job.peer, &device_id) => r,
            };
            let mut t = shared.tally();
            let Some(s) = t.stats.storm.as_mut() else {
                return;
            };
            s.attempts += 1;
            match attempt {
                Ok(c) => {
                    s.back += 1;
                    s.recovery.push(lost_at.elapsed());
                    s.window.end_ms = now_ms();
                    t.down -= 1;
                    if t.down == 0 {
                        t.storm_active = false;
                    }
                    drop(t);
                    shared.changed.notify_waiters();
                    break c;
                }
                Err(reason) => s.attempt_failures.add(reason),
            }
        };
    }
}

/// Holds an established session: a heartbeat every interval, each answer checked. Returns
/// `None` when cancelled, or why the session was lost. Heartbeats of a `reconnected`
/// session sent while others are still down count in the storm figures.
async fn hold(shared: &Shared, conn: &mut Conn, reconnected: bool) -> Option<String> {
    let job = &shared.job;
    let interval = Duration::from_millis(job.interval_ms);
    let ack_timeout = Duration::from_millis(job.ack_timeout_ms);
    let mut next = Instant::now() + interval;
    let mut seq = 0u64;
    // The heartbeat awaiting its answer: seq, when sent, sent during a storm.
    let mut pending: Option<(u64, Instant, bool)> = None;
    // Once cancelled, the heartbeat in flight still gets its answer checked.
    let mut draining = false;
    loop {
        if draining && pending.is_none() {
            return None;
        }
        let ack_deadline = pending.map(|(_, at, _)| at + ack_timeout);
        tokio::select! {
            biased;
            _ = shared.cancel.cancelled(), if !draining => {
                draining = true;
                continue;
            }
            reply = conn.next_reply() => {
                let reply = match reply {
                    Ok(r) => r,
                    Err(reason) => {
                        if pending.is_some() {
                            heartbeat_failed(shared, "lost before ack");
                        }
                        return Some(reason);
                    }
                };
                let verdict = match (&reply, pending) {
                    (Reply::Ack(got), Some((want, _, _))) if *got == want => Ok(()),
                    (Reply::Ack(_), Some(_)) => Err("wrong seq"),
                    (Reply::Status(200), Some(_)) => Ok(()),
                    (Reply::Status(_), Some(_)) => Err("http status not 200"),
                    (Reply::Closed(reason), _) => {
                        if pending.is_some() {
                            heartbeat_failed(shared, "lost before ack");
                        }
                        return Some(format!("closed: {reason}"));
                    }
                    (Reply::Ack(_) | Reply::Status(_), None) => {
                        let mut t = shared.tally();
                        t.stats.heartbeat_failures.add("unsolicited answer");
                        continue;
                    }
                    (Reply::Welcome(_) | Reply::Other(_), _) => continue,
                };
                let Some((_, sent, in_storm)) = pending.take() else { continue };
                match verdict {
                    Ok(()) => {
                        let lat = sent.elapsed();
                        let mut t = shared.tally();
                        t.stats.heartbeats_acked += 1;
                        t.stats.ack_latency.push(lat);
                        if in_storm {
                            if let Some(s) = t.stats.storm.as_mut() {
                                s.heartbeats_acked += 1;
                                s.ack_latency.push(lat);
                            }
                        }
                    }
                    Err(why) => heartbeat_failed(shared, why),
                }
            }
            _ = sleep_until_some(ack_deadline) => {
                heartbeat_failed(shared, "ack timeout");
                return Some("ack timeout".to_owned());
            }
            _ = tokio::time::sleep_until(next), if !draining => {
                next += interval;
                if pending.is_some() {
                    // Still waiting for the previous answer; the ack bound decides.
                    continue;
                }
                seq += 1;
                let in_storm = {
                    let mut t = shared.tally();
                    t.stats.heartbeats_sent += 1;
                    let active = reconnected && t.storm_active;
                    if let (true, Some(s)) = (active, t.stats.storm.as_mut()) {
                        s.heartbeats_sent += 1;
                    }
                    active
                };
                if let Err(reason) = conn.heartbeat(seq).await {
                    heartbeat_failed(shared, "send failed");
                    return Some(reason);
                }
                pending = Some((seq, Instant::now(), in_storm));
            }
        }
    }
}

/// Counts a heartbeat that got no correct answer (storm heartbeats show as sent but not
/// acked in the storm figures).
fn heartbeat_failed(shared: &Shared, why: &str) {
    shared.tally().stats.heartbeat_failures.add(why);
}

async fn sleep_until_some(at: Option<Instant>) {
    match at {
        Some(at) => tokio::time::sleep_until(at).await,
        None => std::future::pending().await,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_doubles_with_full_jitter_and_caps() {
        let mut rng = rand::rngs::StdRng::seed_from_u64(7);
        let mut b = Backoff::new(Duration::from_secs(1), Duration::from_secs(5));
        let ceilings: Vec<_> = (0..5)
            .map(|_| {
                let c = b.ceiling();
                let d = b.next_delay(&mut rng);
                assert!(d <= c, "{d:?} > {c:?}");
                c.as_secs()
            })
            .collect();
        assert_eq!(ceilings, [1, 2, 4, 5, 5]);
        // Huge attempt counts neither overflow nor exceed the cap.
        b.attempt = u32::MAX;
        assert_eq!(b.ceiling(), Duration::from_secs(5));
    }

    #[test]
    fn events_round_trip_as_json_lines() {
        let e = Event::Ready {
            established: 3,
            failed: 1,
        };
        let line = serde_json::to_string(&e).unwrap();
        assert!(line.starts_with(r#"{"event":"ready""#), "{line}");
        assert_eq!(serde_json::from_str::<Event>(&line).unwrap(), e);
    }
}
