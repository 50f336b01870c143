//! Command line of `heex-loadgen`.

use std::net::{Ipv4Addr, SocketAddr};
use std::path::PathBuf;
use std::time::Duration;

use clap::{Args, Parser, Subcommand, ValueEnum};
use serde::{Deserialize, Serialize};

/// Load generator for the Heex cloud: enrollments, held sessions and reconnect storms with
/// the real protocol and real mTLS.
#[derive(Debug, Parser)]
#[command(name = "heex-loadgen", version, about)]
pub(crate) struct Cli {
    /// What to do.
    #[command(subcommand)]
    pub command: Cmd,
}

/// Subcommands.
#[derive(Debug, Subcommand)]
pub(crate) enum Cmd {
    /// N enrollments at a given concurrency; prints the rate and latency percentiles.
    Enroll(EnrollArgs),
    /// Hold N mTLS sessions with heartbeats; prints handshakes/s, latencies and failures.
    Hold(HoldArgs),
    /// Hold N sessions, wait for the gateway to be restarted, measure until all are back.
    Storm(StormArgs),
    /// Hold N sessions on one gateway, revoke each device through an API (possibly another
    /// replica's) and measure, per device, revoke request to the session's Close.
    Revocations(RevocationsArgs),
    /// The agent's durable enqueue rate (grouped fsync) in a scratch directory.
    Outbox(OutboxArgs),
    /// Prints the side-by-side table of two `hold --json` summaries (heex and its peer).
    Table(TableArgs),
    /// One load-generating process of `hold`/`storm` (started by them).
    #[command(hide = true)]
    Worker {
        /// The job, JSON.
        #[arg(long)]
        job: String,
    },
}

/// `heex-loadgen enroll`.
#[derive(Debug, Args)]
pub(crate) struct EnrollArgs {
    /// API base URL, e.g. https://127.0.0.1:8443. Repeat it for several replicas: the
    /// requests go to them in turn.
    #[arg(long, required = true)]
    pub server: Vec<String>,
    /// The cloud CA certificate (PEM).
    #[arg(long)]
    pub ca_file: PathBuf,
    /// The API key (enroll or admin scope).
    #[arg(long, env = "HEEX_API_KEY", hide_env_values = true)]
    pub api_key: String,
    /// API keys, one a line, used instead of `--api-key`: request worker k uses line
    /// k mod the number of lines (one key per worker: no two requests in flight count uses
    /// on the same key).
    #[arg(long, value_name = "FILE")]
    pub keys_file: Option<PathBuf>,
    /// Enrollments per run.
    #[arg(short = 'n', long, default_value_t = 5000)]
    pub count: usize,
    /// Requests in flight at once.
    #[arg(short = 'c', long, default_value_t = 64)]
    pub concurrency: usize,
    /// Repeat the measurement this many times and report the median run.
    #[arg(long, default_value_t = 3)]
    pub runs: usize,
    /// Worker threads of the load generator's runtime.
    #[arg(long, default_value_t = 2)]
    pub threads: usize,
    /// Keep the credentials of the devices enrolled by the last run in this directory
    /// (`devices.jsonl`, mode 0600, and `meta.json`), for `hold` and `storm`.
    #[arg(long, value_name = "DIR")]
    pub out: Option<PathBuf>,
    /// Also write the summary of the median run as JSON to this file.
    #[arg(long, value_name = "FILE")]
    pub json: Option<PathBuf>,
}

/// Which server the sessions talk to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub(crate) enum Peer {
    /// The Heex gateway: ALPN heex/1, Hello → Welcome, Heartbeat → HeartbeatAck.
    Heex,
    /// An HTTP/1.1 server with keep-alive: ALPN http/1.1, `GET /hb` → 200 per heartbeat.
    Http,
}

/// `heex-loadgen hold` (and the first part of `storm`).
#[derive(Debug, Clone, Args)]
pub(crate) struct HoldArgs {
    /// Directory written by `enroll --out`.
    #[arg(long, value_name = "DIR")]
    pub creds: PathBuf,
    /// Gateway (or peer) address; by default the gateway recorded by `enroll --out`. Given
    /// several times (replicas sharing one store), session `i` goes to the `i mod n`-th.
    #[arg(long = "gateway", value_name = "IP:PORT")]
    pub gateways: Vec<SocketAddr>,
    /// Sessions to hold (one enrolled device each).
    #[arg(short = 'n', long, default_value_t = 1000)]
    pub count: usize,
    /// Heartbeat period of each session.
    #[arg(long, default_value = "30s", value_parser = parse_duration)]
    pub interval: Duration,
    /// How long to hold the sessions once they are established.
    #[arg(long, default_value = "5m", value_parser = parse_duration)]
    pub duration: Duration,
    /// A heartbeat not acknowledged within this bound counts as failed and ends its session.
    #[arg(long, default_value = "10s", value_parser = parse_duration)]
    pub ack_timeout: Duration,
    /// Source addresses: a range `127.0.0.2-127.0.3.255` or a count of addresses from
    /// 127.0.0.2 on. Sessions are spread over them so ephemeral ports never run out.
    #[arg(long, default_value = "64", value_parser = parse_source_ips)]
    pub source_ips: SourceIps,
    /// New connections per second while connecting, over all processes (0: as fast as the
    /// concurrency allows).
    #[arg(long, default_value_t = 0.0)]
    pub connect_rate: f64,
    /// Connections being set up at once, over all processes.
    #[arg(long, default_value_t = 256)]
    pub connect_concurrency: usize,
    /// Load-generating processes (one process can hold at most about 19,000 sockets);
    /// by default one per 9,000 sessions.
    #[arg(long)]
    pub procs: Option<usize>,
    /// The protocol spoken over mTLS.
    #[arg(long, value_enum, default_value_t = Peer::Heex)]
    pub peer: Peer,
    /// Server process to measure: its RSS (with all its descendants') is read before the
    /// sessions connect, once they are established and at the end of the hold. Given once per
    /// gateway (same order) when there are several: each is reported, and their sum.
    #[arg(long = "server-pid", value_name = "PID")]
    pub server_pids: Vec<u32>,
    /// Name of the server in the output, e.g. "heex-cloud" or "nginx".
    #[arg(long, default_value = "server")]
    pub label: String,
    /// Also write the summary as JSON to this file.
    #[arg(long, value_name = "FILE")]
    pub json: Option<PathBuf>,
}

/// `heex-loadgen storm`.
#[derive(Debug, Clone, Args)]
pub(crate) struct StormArgs {
    /// Sessions, intervals and processes, as for `hold`; `--duration` bounds the wait for
    /// the storm (from the moment all sessions are established).
    #[command(flatten)]
    pub hold: HoldArgs,
    /// First reconnect delay ceiling (full jitter, like the agent).
    #[arg(long, default_value = "1s", value_parser = parse_duration)]
    pub backoff_initial: Duration,
    /// Largest reconnect delay ceiling.
    #[arg(long, default_value = "60s", value_parser = parse_duration)]
    pub backoff_max: Duration,
    /// Once every session is back, keep holding this long (heartbeats keep being checked).
    #[arg(long, default_value = "5s", value_parser = parse_duration)]
    pub settle: Duration,
}

/// `heex-loadgen revocations`.
#[derive(Debug, Args)]
pub(crate) struct RevocationsArgs {
    /// Directory written by `enroll --out`; its first N devices are used (and revoked).
    #[arg(long, value_name = "DIR")]
    pub creds: PathBuf,
    /// Gateway holding the sessions; by default the gateway recorded by `enroll --out`.
    #[arg(long, value_name = "IP:PORT")]
    pub gateway: Option<SocketAddr>,
    /// API base URL the revocations are sent to.
    #[arg(long)]
    pub server: String,
    /// The cloud CA certificate (PEM), for the API.
    #[arg(long)]
    pub ca_file: PathBuf,
    /// An admin API key.
    #[arg(long, env = "HEEX_API_KEY", hide_env_values = true)]
    pub api_key: String,
    /// Devices to hold and revoke.
    #[arg(short = 'n', long, default_value_t = 1000)]
    pub count: usize,
    /// Revocations in flight at once (each waits for its session's Close before the next).
    #[arg(short = 'c', long, default_value_t = 1)]
    pub concurrency: usize,
    /// A Close not received within this bound after the revoke request counts as missed.
    #[arg(long, default_value = "10s", value_parser = parse_duration)]
    pub close_timeout: Duration,
    /// Source addresses of the sessions (as for `hold`).
    #[arg(long, default_value = "64", value_parser = parse_source_ips)]
    pub source_ips: SourceIps,
    /// Connections being set up at once.
    #[arg(long, default_value_t = 64)]
    pub connect_concurrency: usize,
    /// Worker threads of the load generator's runtime.
    #[arg(long, default_value_t = 2)]
    pub threads: usize,
    /// Also write the summary as JSON to this file.
    #[arg(long, value_name = "FILE")]
    pub json: Option<PathBuf>,
}

/// `heex-loadgen table`.
#[derive(Debug, Args)]
pub(crate) struct TableArgs {
    /// `hold --json` summary of heex-cloud.
    #[arg(long, value_name = "FILE")]
    pub heex: PathBuf,
    /// `hold --json` summary of the peer.
    #[arg(long, value_name = "FILE")]
    pub peer: PathBuf,
    /// `enroll --json` summary.
    #[arg(long, value_name = "FILE")]
    pub enroll: Option<PathBuf>,
    /// `storm --json` summary.
    #[arg(long, value_name = "FILE")]
    pub storm: Option<PathBuf>,
    /// Size of the stripped agent binary, bytes.
    #[arg(long)]
    pub agent_size: Option<u64>,
    /// Idle RSS of a connected agent, KiB.
    #[arg(long)]
    pub agent_rss_kib: Option<u64>,
}

/// Source addresses for outgoing connections.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct SourceIps(pub Vec<Ipv4Addr>);

/// Most source addresses a run may use (a /8 minus a few).
const MAX_SOURCE_IPS: u32 = 1 << 24;

/// Parses `A-B` (inclusive IPv4 range), a single address, or a count of loopback addresses
/// from 127.0.0.2 on.
pub(crate) fn parse_source_ips(s: &str) -> Result<SourceIps, String> {
    let s = s.trim();
    if let Ok(count) = s.parse::<u32>() {
        if count == 0 {
            return Err("the count of source addresses must be at least 1".to_owned());
        }
        let first = u32::from(Ipv4Addr::new(127, 0, 0, 2));
        let last = u32::from(Ipv4Addr::new(127, 255, 255, 254));
        if count > last - first + 1 {
            return Err(format!(
                "at most {} loopback source addresses",
                last - first + 1
            ));
        }
        return Ok(SourceIps(
            (first..first + count).map(Ipv4Addr::from).collect(),
        ));
    }
    let (a, b) = s.split_once('-').unwrap_or((s, s));
    let parse = |x: &str| {
        x.trim().parse::<Ipv4Addr>().map_err(|_| {
            format!("`{x}` is not an IPv4 address (examples: 64, 127.0.0.2-127.0.1.255)")
        })
    };
    let (a, b) = (u32::from(parse(a)?), u32::from(parse(b)?));
    if b < a {
        return Err("the range's end is below its start".to_owned());
    }
    if b - a >= MAX_SOURCE_IPS {
        return Err(format!("at most {MAX_SOURCE_IPS} source addresses"));
    }
    Ok(SourceIps((a..=b).map(Ipv4Addr::from).collect()))
}

/// Parses a human duration ("30s", "5m", "250ms"); zero is refused.
pub(crate) fn parse_duration(s: &str) -> Result<Duration, String> {
    let d = humantime::parse_duration(s).map_err(|e| format!("{e} (examples: 30s, 5m, 250ms)"))?;
    if d.is_zero() {
        return Err("must be greater than zero".to_owned());
    }
    Ok(d)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(args: &[&str]) -> Result<Cli, clap::Error> {
        Cli::try_parse_from(std::iter::once("heex-loadgen").chain(args.iter().copied()))
    }

    #[test]
    fn source_ips_count_starts_at_127_0_0_2() {
        let ips = parse_source_ips("3").unwrap().0;
        assert_eq!(
            ips,
            vec![
                Ipv4Addr::new(127, 0, 0, 2),
                Ipv4Addr::new(127, 0, 0, 3),
                Ipv4Addr::new(127, 0, 0, 4)
            ]
        );
        assert!(parse_source_ips("0").is_err());
    }

    #[test]
    fn source_ips_ranges_cross_octets() {
        let ips = parse_source_ips("127.0.0.254-127.0.1.1").unwrap().0;
        assert_eq!(ips.len(), 4);
        assert_eq!(ips[2], Ipv4Addr::new(127, 0, 1, 0));
        assert_eq!(
            parse_source_ips("127.0.0.9").unwrap().0,
            vec![Ipv4Addr::new(127, 0, 0, 9)]
        );
        assert!(parse_source_ips("127.0.0.9-127.0.0.2").is_err());
        assert!(parse_source_ips("127.0.0.x-127.0.0.9").is_err());
        assert!(parse_source_ips("10.0.0.0-12.0.0.0").is_err());
    }

    #[test]
    fn durations() {
        assert_eq!(parse_duration("30s"), Ok(Duration::from_secs(30)));
        assert_eq!(parse_duration("5m"), Ok(Duration::from_secs(300)));
        assert_eq!(parse_duration("250ms"), Ok(Duration::from_millis(250)));
        assert!(parse_duration("0s").is_err());
        assert!(parse_duration("soon").is_err());
    }

    #[test]
    fn hold_defaults_and_flags() {
        let cli = parse(&["hold", "--creds", "c"]).unwrap();
        let Cmd::Hold(h) = cli.command else {
            panic!("not hold")
        };
        assert_eq!(h.count, 1000);
        assert_eq!(h.interval, Duration::from_secs(30));
        assert_eq!(h.duration, Duration::from_secs(300));
        assert_eq!(h.source_ips.0.len(), 64);
        assert_eq!(h.peer, Peer::Heex);
        assert_eq!(h.procs, None);
        assert!(h.gateways.is_empty());

        let cli = parse(&[
            "hold",
            "--creds",
            "c",
            "-n",
            "19000",
            "--gateway",
            "127.0.0.1:8444",
            "--interval",
            "5s",
            "--duration",
            "20s",
            "--source-ips",
            "127.0.0.2-127.0.0.200",
            "--connect-rate",
            "2500",
            "--procs",
            "3",
            "--peer",
            "http",
            "--server-pid",
            "42",
        ])
        .unwrap();
        let Cmd::Hold(h) = cli.command else {
            panic!("not hold")
        };
        assert_eq!(h.count, 19000);
        assert_eq!(h.gateways, ["127.0.0.1:8444".parse().unwrap()]);
        assert_eq!(h.interval, Duration::from_secs(5));
        assert_eq!(h.source_ips.0.len(), 199);
        assert_eq!(h.connect_rate, 2500.0);
        assert_eq!(h.procs, Some(3));
        assert_eq!(h.peer, Peer::Http);
        assert_eq!(h.server_pids, [42]);
    }

    #[test]
    fn storm_flags_extend_hold() {
        let cli = parse(&["storm", "--creds", "c", "-n", "10", "--backoff-max", "5s"]).unwrap();
        let Cmd::Storm(s) = cli.command else {
            panic!("not storm")
        };
        assert_eq!(s.hold.count, 10);
        assert_eq!(s.backoff_initial, Duration::from_secs(1));
        assert_eq!(s.backoff_max, Duration::from_secs(5));
    }

    #[test]
    fn bad_arguments_are_usage_errors() {
        for args in [
            &["hold"][..],
            &["hold", "--creds", "c", "--interval", "0s"],
            &["hold", "--creds", "c", "--peer", "gopher"],
            &["hold", "--creds", "c", "--gateway", "nowhere"],
            &["hold", "--creds", "c", "--source-ips", "0"],
            &["storm", "--creds", "c", "--settle", "x"],
        ] {
            let e = parse(args).unwrap_err();
            assert_ne!(e.exit_code(), 0, "{args:?}");
        }
        assert_eq!(parse(&["--help"]).unwrap_err().exit_code(), 0);
    }

    #[test]
    fn enroll_keeps_its_flags() {
        let cli = parse(&[
            "enroll",
            "--server",
            "https://x",
            "--ca-file",
            "ca",
            "--api-key",
            "k",
            "--out",
            "d",
        ])
        .unwrap();
        let Cmd::Enroll(e) = cli.command else {
            panic!("not enroll")
        };
        assert_eq!(e.out, Some(PathBuf::from("d")));
        assert_eq!(e.count, 5000);
        assert_eq!(e.server, ["https://x"]);

        let cli = parse(&[
            "enroll",
            "--server",
            "https://a",
            "--server",
            "https://b",
            "--ca-file",
            "ca",
            "--api-key",
            "k",
        ])
        .unwrap();
        let Cmd::Enroll(e) = cli.command else {
            panic!("not enroll")
        };
        assert_eq!(e.server, ["https://a", "https://b"]);
        assert_eq!(e.keys_file, None);
        let cli = parse(&[
            "enroll",
            "--server",
            "https://a",
            "--ca-file",
            "ca",
            "--api-key",
            "k",
            "--keys-file",
            "keys",
        ])
        .unwrap();
        let Cmd::Enroll(e) = cli.command else {
            panic!("not enroll")
        };
        assert_eq!(e.keys_file, Some(PathBuf::from("keys")));
        assert!(parse(&["enroll", "--ca-file", "ca", "--api-key", "k"]).is_err());
    }

    #[test]
    fn revocations_flags() {
        let cli = parse(&[
            "revocations",
            "--creds",
            "c",
            "--server",
            "https://a",
            "--ca-file",
            "ca",
            "--api-key",
            "k",
            "--gateway",
            "127.0.0.1:9444",
        ])
        .unwrap();
        let Cmd::Revocations(r) = cli.command else {
            panic!("not revocations")
        };
        assert_eq!(r.count, 1000);
        assert_eq!(r.concurrency, 1);
        assert_eq!(r.close_timeout, Duration::from_secs(10));
        assert_eq!(r.gateway, Some("127.0.0.1:9444".parse().unwrap()));
        assert!(parse(&["revocations", "--creds", "c", "--ca-file", "ca"]).is_err());
    }
}

/// `heex-loadgen outbox`.
#[derive(Debug, Args)]
pub(crate) struct OutboxArgs {
    /// Scratch directory (a fresh outbox is created inside, and removed after each run).
    #[arg(long)]
    pub dir: PathBuf,
    /// Reports per run.
    #[arg(long, default_value_t = 20_000)]
    pub reports: usize,
    /// Concurrent submitting threads.
    #[arg(long, default_value_t = 64)]
    pub threads: usize,
    /// Runs (the median is reported).
    #[arg(long, default_value_t = 5)]
    pub runs: usize,
    /// Payload size in bytes.
    #[arg(long, default_value_t = 200)]
    pub size: usize,
}
