//! `hold` and `storm`: split the sessions over worker processes (one process can hold at most
//! about 19,000 sockets), collect their JSON lines, sample the server's memory, and print one
//! merged report.

use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use serde::{Deserialize, Serialize};

use crate::cli::{HoldArgs, Peer, StormArgs};
use crate::creds;
use crate::rss;
use crate::stats::{Percentiles, Reasons, RunStats};
use crate::worker::{Event, Job, StormJob};

/// Most sessions one worker process holds by default.
pub(crate) const SESSIONS_PER_PROC: usize = 9000;

/// Server memory, KiB.
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize, Deserialize)]
pub(crate) struct ServerRss {
    /// Before any session connected.
    pub before_kib: u64,
    /// Once all sessions were established.
    pub established_kib: u64,
    /// Near the end of the hold (after heartbeats ran).
    pub end_kib: u64,
}

impl ServerRss {
    /// Memory per established session, bytes: the larger of the two deltas, divided.
    pub(crate) fn per_session_bytes(&self, sessions: u64) -> f64 {
        if sessions == 0 {
            return 0.0;
        }
        let held = self.established_kib.max(self.end_kib);
        held.saturating_sub(self.before_kib) as f64 * 1024.0 / sessions as f64
    }
}

/// One of several servers in the summary.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub(crate) struct PerServer {
    /// Its process id.
    pub pid: u32,
    /// Its memory.
    pub rss: ServerRss,
    /// Sessions sent to it (session `i` to server `i mod n`).
    pub sessions: u64,
    /// Its memory per session, bytes.
    pub bytes_per_session: f64,
}

/// Reconnect storm figures of the summary.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub(crate) struct StormSummary {
    /// Sessions lost.
    pub dropped: u64,
    /// Of those, back.
    pub back: u64,
    /// First loss to last session back, seconds.
    pub all_back_secs: f64,
    /// Per-session loss-to-Welcome times.
    pub recovery: Percentiles,
    /// Connection attempts while reconnecting.
    pub attempts: u64,
    /// Why attempts failed.
    pub attempt_failures: Reasons,
    /// Heartbeats of re-established sessions during the storm.
    pub heartbeats_sent: u64,
    /// Of those, acked.
    pub heartbeats_acked: u64,
    /// Their ack latencies.
    pub ack_latency: Percentiles,
}

/// The machine-readable summary of `hold`/`storm` (`--json`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub(crate) struct Summary {
    /// Server name.
    pub label: String,
    /// Protocol.
    pub peer: Peer,
    /// Worker processes.
    pub procs: usize,
    /// Sessions asked for.
    pub sessions: u64,
    /// Sessions established.
    pub established: u64,
    /// Full mTLS handshakes per second in the connect phase.
    pub handshakes_per_sec: f64,
    /// Connect phase length, seconds.
    pub connect_secs: f64,
    /// TCP + TLS + first exchange, per session.
    pub connect_latency: Percentiles,
    /// Why connections failed.
    pub connect_failures: Reasons,
    /// Established sessions lost, by reason.
    pub drops: Reasons,
    /// Heartbeats sent.
    pub heartbeats_sent: u64,
    /// Heartbeats acked.
    pub heartbeats_acked: u64,
    /// Heartbeat failures by reason.
    pub heartbeat_failures: Reasons,
    /// Heartbeat round trips.
    pub ack_latency: Percentiles,
    /// Server memory, when `--server-pid` was given (the sum over the servers when several).
    pub server_rss: Option<ServerRss>,
    /// Server memory per session, bytes.
    pub bytes_per_session: Option<f64>,
    /// Each server's memory and memory per session (of the sessions sent to it), when
    /// several were given.
    #[serde(default)]
    pub per_server: Vec<PerServer>,
    /// The storm, for `storm`.
    pub storm: Option<StormSummary>,
}

/// Runs `hold`.
pub(crate) fn hold(args: HoldArgs) -> anyhow::Result<()> {
    coordinate(&args, None)
}

/// Runs `storm`.
pub(crate) fn storm(args: StormArgs) -> anyhow::Result<()> {
    let job = StormJob {
        backoff_initial_ms: millis(args.backoff_initial),
        backoff_max_ms: millis(args.backoff_max),
        settle_ms: millis(args.settle),
    };
    coordinate(&args.hold, Some(job))
}

fn millis(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
}

/// Splits `count` sessions over `procs` workers: (offset, count) each, sizes differing by at
/// most one.
pub(crate) fn split(count: usize, procs: usize) -> Vec<(usize, usize)> {
    let procs = procs.clamp(1, count.max(1));
    let (base, extra) = (count / procs, count % procs);
    let mut offset = 0;
    (0..procs)
        .map(|k| {
            let n = base + usize::from(k < extra);
            let slot = (offset, n);
            offset += n;
            slot
        })
        .collect()
}

/// Worker processes for `count` sessions unless given.
pub(crate) fn default_procs(count: usize) -> usize {
    count.div_ceil(SESSIONS_PER_PROC).max(1)
}

enum Msg {
    Line(usize, String),
    Eof,
}

struct Children(Vec<Child>);

impl Drop for Children {
    fn drop(&mut self) {
        for c in &mut self.0 {
            if let Ok(None) = c.try_wait() {
                let _ = c.kill();
            }
            let _ = c.wait();
        }
    }
}

fn coordinate(args: &HoldArgs, storm: Option<StormJob>) -> anyhow::Result<()> {
    let available = creds::count_devices(&args.creds)?;
    if available < args.count {
        bail!(
            "{} holds {available} devices but {} sessions were asked for; enroll more with `heex-loadgen enroll --out`",
            args.creds.display(),
            args.count
        );
    }
    let gateways: Vec<SocketAddr> = if args.gateways.is_empty() {
        let meta = creds::load_meta(&args.creds)?;
        vec![meta
            .gateway
            .parse()
            .with_context(|| format!("gateway {} is not IP:PORT; pass --gateway", meta.gateway))?]
    } else {
        args.gateways.clone()
    };
    if args.server_pids.len() > 1 && args.server_pids.len() != gateways.len() {
        bail!(
            "{} --server-pid for {} --gateway: give one server process per gateway, in the same order",
            args.server_pids.len(),
            gateways.len()
        );
    }
    let procs = args
        .procs
        .unwrap_or_else(|| default_procs(args.count))
        .max(1);
    let slots = split(args.count, procs);
    let procs = slots.len();
    let exe = std::env::current_exe().context("cannot find my own executable")?;

    let sample = || -> Vec<u64> {
        args.server_pids
            .iter()
            .map(|&pid| rss::tree_rss_kib(pid).unwrap_or(0))
            .collect()
    };
    let before = sample();
    let to = gateways
        .iter()
        .map(SocketAddr::to_string)
        .collect::<Vec<_>>()
        .join(", ");
    println!(
        "{}: {} sessions ({:?}) to {to} from {} source addresses, {procs} processes, heartbeat every {}",
        args.label,
        args.count,
        args.peer,
        args.source_ips.0.len(),
        humantime::format_duration(args.interval)
    );

    let (tx, rx) = mpsc::channel();
    let mut children = Children(Vec::new());
    for (k, (offset, count)) in slots.iter().copied().enumerate() {
        let job = Job {
            creds: args.creds.clone(),
            offset,
            count,
            gateways: gateways.clone(),
            peer: args.peer,
            source_ips: args.source_ips.0.clone(),
            interval_ms: millis(args.interval),
            duration_ms: millis(args.duration),
            ack_timeout_ms: millis(args.ack_timeout),
            connect_rate: args.connect_rate / procs as f64,
            connect_concurrency: (args.connect_concurrency / procs).max(1),
            storm,
        };
        let mut child = Command::new(&exe)
            .arg("worker")
            .arg("--job")
            .arg(serde_json::to_string(&job)?)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .context("cannot start a worker process")?;
        let stdout = child.stdout.take().context("worker without stdout")?;
        children.0.push(child);
        let tx = tx.clone();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                if tx.send(Msg::Line(k, line)).is_err() {
                    return;
                }
            }
            let _ = tx.send(Msg::Eof);
        });
    }
    drop(tx);

    let mut ready = 0;
    let mut reports: Vec<Option<RunStats>> = vec![None; procs];
    let mut open = procs;
    let mut established_rss = None;
    let mut end_rss = None;
    // Sample the server's memory near the end of the hold (not in storms: it restarts).
    let mut sample_at: Option<Instant> = None;
    while open > 0 {
        let msg = match sample_at {
            Some(at) => match rx.recv_timeout(at.saturating_duration_since(Instant::now())) {
                Ok(m) => m,
                Err(mpsc::RecvTimeoutError::Timeout) => {
                    end_rss = Some(sample());
                    sample_at = None;
                    continue;
                }
                Err(mpsc::RecvTimeoutError::Disconnected) => break,
            },
            None => match rx.recv() {
                Ok(m) => m,
                Err(_) => break,
            },
        };
        match msg {
            Msg::Eof => open -= 1,
            Msg::Line(k, line) => match serde_json::from_str::<Event>(&line) {
                Ok(Event::Ready { .. }) => {
                    ready += 1;
                    if ready == procs {
                        established_rss = Some(sample());
                        println!(
                            "all workers connected; holding for up to {}",
                            humantime::format_duration(args.duration)
                        );
                        if storm.is_some() {
                            println!("ready: restart the gateway now");
                        } else {
                            let margin = (args.duration / 10).min(Duration::from_secs(5));
                            sample_at = Some(Instant::now() + args.duration.saturating_sub(margin));
                        }
                    }
                }
                Ok(Event::Report { stats }) => reports[k] = Some(*stats),
                Err(e) => tracing::warn!(worker = k, error = %e, "unreadable worker line"),
            },
        }
    }
    let mut all = RunStats::default();
    for (k, r) in reports.into_iter().enumerate() {
        match r {
            Some(r) => all.merge(r),
            None => bail!("worker {k} ended without a report (see its errors above)"),
        }
    }
    let servers: Vec<ServerRss> = before
        .iter()
        .enumerate()
        .map(|(i, &before_kib)| {
            let at = |s: &Option<Vec<u64>>| s.as_ref().and_then(|v| v.get(i).copied());
            ServerRss {
                before_kib,
                established_kib: at(&established_rss).unwrap_or(0),
                end_kib: at(&end_rss).unwrap_or(0),
            }
        })
        .collect();
    let summary = summarize(args, procs, &all, &servers);
    print_report(&summary);
    if let Some(path) = &args.json {
        std::fs::write(path, serde_json::to_vec_pretty(&summary)?)
            .with_context(|| format!("writing {}", path.display()))?;
    }
    Ok(())
}

/// The summary of merged measurements.
pub(crate) fn summarize(
    args: &HoldArgs,
    procs: usize,
    all: &RunStats,
    servers: &[ServerRss],
) -> Summary {
    let server_rss = (!servers.is_empty()).then(|| ServerRss {
        before_kib: servers.iter().map(|s| s.before_kib).sum(),
        established_kib: servers.iter().map(|s| s.established_kib).sum(),
        end_kib: servers.iter().map(|s| s.end_kib).sum(),
    });
    let n = servers.len() as u64;
    let per_server = if servers.len() > 1 {
        servers
            .iter()
            .zip(&args.server_pids)
            .enumerate()
            .map(|(i, (rss, &pid))| {
                // Sessions i, i + n, i + 2n, … of those established.
                let sessions = all.established / n + u64::from((i as u64) < all.established % n);
                PerServer {
                    pid,
                    rss: *rss,
                    sessions,
                    bytes_per_session: rss.per_session_bytes(sessions),
                }
            })
            .collect()
    } else {
        Vec::new()
    };
    let storm = all.storm.as_ref().map(|s| StormSummary {
        dropped: s.dropped,
        back: s.back,
        all_back_secs: s.window.secs(),
        recovery: s.recovery.sorted().percentiles(),
        attempts: s.attempts,
        attempt_failures: s.attempt_failures.clone(),
        heartbeats_sent: s.heartbeats_sent,
        heartbeats_acked: s.heartbeats_acked,
        ack_latency: s.ack_latency.sorted().percentiles(),
    });
    Summary {
        label: args.label.clone(),
        peer: args.peer,
        procs,
        sessions: all.sessions,
        established: all.established,
        handshakes_per_sec: all.handshakes_per_sec(),
        connect_secs: all.connect_window.secs(),
        connect_latency: all.connect_latency.sorted().percentiles(),
        connect_failures: all.connect_failures.clone(),
        drops: all.drops.clone(),
        heartbeats_sent: all.heartbeats_sent,
        heartbeats_acked: all.heartbeats_acked,
        heartbeat_failures: all.heartbeat_failures.clone(),
        ack_latency: all.ack_latency.sorted().percentiles(),
        bytes_per_session: server_rss.map(|r| r.per_session_bytes(all.established)),
        server_rss,
        per_server,
        storm,
    }
}

fn pcts(p: &Percentiles) -> String {
    format!(
        "p50 {:.1} / p90 {:.1} / p99 {:.1} / max {:.1} ms ({} samples)",
        p.p50_ms, p.p90_ms, p.p99_ms, p.max_ms, p.count
    )
}

fn print_report(s: &Summary) {
    println!("== {} ({:?}, {} processes)", s.label, s.peer, s.procs);
    println!(
        "sessions established: {}/{} in {:.2} s → {:.0} full mTLS handshakes/s",
        s.established, s.sessions, s.connect_secs, s.handshakes_per_sec
    );
    println!("connect latency:      {}", pcts(&s.connect_latency));
    println!("connect failures:     {}", s.connect_failures.describe());
    println!("drops:                {}", s.drops.describe());
    println!(
        "heartbeats:           {} sent, {} acked",
        s.heartbeats_sent, s.heartbeats_acked
    );
    println!("ack latency:          {}", pcts(&s.ack_latency));
    println!("heartbeat failures:   {}", s.heartbeat_failures.describe());
    if let (Some(r), Some(b)) = (s.server_rss, s.bytes_per_session) {
        println!(
            "server RSS:           {} KiB before, {} KiB established, {} KiB at end → {:.0} bytes ({:.2} KiB) per session",
            r.before_kib,
            r.established_kib,
            r.end_kib,
            b,
            b / 1024.0
        );
    }
    for (i, p) in s.per_server.iter().enumerate() {
        println!(
            "  server {} (pid {}):   {} KiB before, {} KiB established, {} KiB at end, {} sessions → {:.0} bytes ({:.2} KiB) per session",
            i + 1,
            p.pid,
            p.rss.before_kib,
            p.rss.established_kib,
            p.rss.end_kib,
            p.sessions,
            p.bytes_per_session,
            p.bytes_per_session / 1024.0
        );
    }
    if let Some(st) = &s.storm {
        if st.back == st.dropped {
            println!(
                "storm:                {} lost, {} back; all back {:.2} s after the first loss",
                st.dropped, st.back, st.all_back_secs
            );
        } else {
            println!(
                "storm:                {} lost, only {} back (the last {:.2} s after the first loss)",
                st.dropped, st.back, st.all_back_secs
            );
        }
        println!("recovery per session: {}", pcts(&st.recovery));
        println!(
            "reconnect attempts:   {} ({} failed: {})",
            st.attempts,
            st.attempt_failures.total(),
            st.attempt_failures.describe()
        );
        println!(
            "during the storm:     {} heartbeats of re-established sessions, {} acked; {}",
            st.heartbeats_sent,
            st.heartbeats_acked,
            pcts(&st.ack_latency)
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    #[test]
    fn several_servers_are_each_measured_and_summed() {
        let cli = crate::cli::Cli::try_parse_from([
            "heex-loadgen",
            "hold",
            "--creds",
            "c",
            "-n",
            "10",
            "--gateway",
            "127.0.0.1:1",
            "--gateway",
            "127.0.0.1:2",
            "--gateway",
            "127.0.0.1:3",
            "--server-pid",
            "11",
            "--server-pid",
            "12",
            "--server-pid",
            "13",
        ])
        .unwrap();
        let crate::cli::Cmd::Hold(args) = cli.command else {
            panic!("not hold")
        };
        let all = RunStats {
            sessions: 10,
            established: 10,
            ..RunStats::default()
        };
        let rss = |before_kib, established_kib| ServerRss {
            before_kib,
            established_kib,
            end_kib: 0,
        };
        let servers = [rss(100, 140), rss(100, 130), rss(200, 230)];
        let s = summarize(&args, 1, &all, &servers);
        assert_eq!(s.server_rss, Some(rss(400, 500)));
        assert_eq!(s.bytes_per_session, Some(100.0 * 1024.0 / 10.0));
        let per: Vec<(u32, u64, f64)> = s
            .per_server
            .iter()
            .map(|p| (p.pid, p.sessions, p.bytes_per_session))
            .collect();
        assert_eq!(
            per,
            [
                (11, 4, 40.0 * 1024.0 / 4.0),
                (12, 3, 30.0 * 1024.0 / 3.0),
                (13, 3, 30.0 * 1024.0 / 3.0)
            ]
        );
        // One server: no per-server lines.
        let s = summarize(&args, 1, &all, &servers[..1]);
        assert!(s.per_server.is_empty());
    }

    #[test]
    fn split_is_balanced_and_covers_everything() {
        assert_eq!(split(10, 3), [(0, 4), (4, 3), (7, 3)]);
        assert_eq!(split(19000, 3), [(0, 6334), (6334, 6333), (12667, 6333)]);
        // Never more processes than sessions, never zero.
        assert_eq!(split(2, 5), [(0, 1), (1, 1)]);
        assert_eq!(split(5, 0), [(0, 5)]);
        assert_eq!(split(0, 3), [(0, 0)]);
    }

    #[test]
    fn default_procs_keep_each_under_the_file_limit() {
        assert_eq!(default_procs(1), 1);
        assert_eq!(default_procs(9000), 1);
        assert_eq!(default_procs(9001), 2);
        assert_eq!(default_procs(19000), 3);
        assert_eq!(default_procs(0), 1);
    }

    #[test]
    fn memory_per_session_uses_the_larger_delta() {
        let r = ServerRss {
            before_kib: 10_000,
            established_kib: 20_000,
            end_kib: 30_000,
        };
        assert_eq!(r.per_session_bytes(1024), 20_000.0);
        assert_eq!(r.per_session_bytes(0), 0.0);
        // A shrinking server does not report negative memory.
        let r = ServerRss {
            before_kib: 10_000,
            established_kib: 9_000,
            end_kib: 0,
        };
        assert_eq!(r.per_session_bytes(10), 0.0);
    }
}
