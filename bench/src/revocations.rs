//! `revocations`: how fast a revocation reaches the session it ends. N devices hold sessions
//! on one gateway (with several replicas, typically not the replica whose API is called);
//! each device is then revoked through the API, and the time from sending the revoke request
//! to its session receiving the gateway's Close is measured per device.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use serde::Serialize;
use tokio::sync::{oneshot, Mutex, Semaphore};
use tokio_util::sync::CancellationToken;

use crate::cli::{Peer, RevocationsArgs};
use crate::creds;
use crate::session::{self, Reply};
use crate::stats::{Percentiles, Reasons, Samples};

/// Heartbeat period of the held sessions (well under the gateway's idle limit).
const HEARTBEAT: Duration = Duration::from_secs(20);

/// The reason the gateway gives when it closes a revoked device's session.
const REVOKED: &str = "device_revoked";

/// The machine-readable summary (`--json`).
#[derive(Debug, Serialize)]
struct Summary {
    devices: usize,
    established: usize,
    concurrency: usize,
    /// Revoke request sent → Close (device revoked) received, per device.
    propagation: Percentiles,
    /// Revoke request sent → its 200 answer.
    api_latency: Percentiles,
    /// Sessions that ended otherwise (other Close reasons, errors, timeouts).
    other_endings: Reasons,
    /// Revoke requests that failed.
    api_failures: Reasons,
}

/// How a held session ended: when, and the Close reason or the error.
type Ending = (Instant, Result<String, String>);

/// Runs `revocations`.
pub(crate) fn run(args: RevocationsArgs) -> anyhow::Result<()> {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(args.threads.max(1))
        .enable_all()
        .build()?;
    rt.block_on(revocations(args))
}

async fn revocations(args: RevocationsArgs) -> anyhow::Result<()> {
    let meta = creds::load_meta(&args.creds)?;
    let gateway: SocketAddr = match args.gateway {
        Some(g) => g,
        None => meta
            .gateway
            .parse()
            .with_context(|| format!("gateway {} is not IP:PORT; pass --gateway", meta.gateway))?,
    };
    let roots = creds::roots(&meta.ca_pem)?;
    let devices = creds::load_devices(&args.creds, 0, args.count)?;
    if devices.len() < args.count {
        bail!(
            "{} holds {} devices, {} asked for",
            args.creds.display(),
            devices.len(),
            args.count
        );
    }
    let mut configs = Vec::with_capacity(devices.len());
    for d in &devices {
        configs.push((
            d.device_id.clone(),
            creds::client_config(&roots, d, Peer::Heex)?,
        ));
    }
    drop(devices);
    let client = crate::enroll::client(&args.ca_file, args.concurrency.max(1))?;
    let base = args.server.trim_end_matches('/').to_owned();

    // Connect every session; each then waits for its Close in its own task.
    println!(
        "connecting {} sessions to {gateway} from {} source addresses…",
        configs.len(),
        args.source_ips.0.len()
    );
    let cancel = CancellationToken::new();
    let permits = Arc::new(Semaphore::new(args.connect_concurrency.max(1)));
    let mut connecting = tokio::task::JoinSet::new();
    for (i, (device_id, tls)) in configs.into_iter().enumerate() {
        let ip = args
            .source_ips
            .0
            .get(i % args.source_ips.0.len().max(1))
            .copied()
            .unwrap_or(Ipv4Addr::LOCALHOST);
        let (permits, cancel) = (permits.clone(), cancel.clone());
        connecting.spawn(async move {
            let permit = permits.acquire_owned().await;
            let conn = session::connect(IpAddr::V4(ip), gateway, tls, Peer::Heex, &device_id).await;
            drop(permit);
            let conn = match conn {
                Ok(c) => c,
                Err(e) => return (i, device_id, Err(e)),
            };
            let (tx, rx) = oneshot::channel::<Ending>();
            tokio::spawn(watch(conn, tx, cancel));
            (i, device_id, Ok(rx))
        });
    }
    let mut held = Vec::new();
    let mut connect_failures = Reasons::default();
    while let Some(res) = connecting.join_next().await {
        match res {
            Ok((i, id, Ok(rx))) => held.push((i, id, rx)),
            Ok((_, _, Err(e))) => connect_failures.add(e),
            Err(e) => connect_failures.add(format!("task: {e}")),
        }
    }
    held.sort_by_key(|(i, _, _)| *i);
    let established = held.len();
    println!(
        "established {established}/{}{}",
        args.count,
        if connect_failures.total() > 0 {
            format!(" (failures: {})", connect_failures.describe())
        } else {
            String::new()
        }
    );
    if established == 0 {
        bail!("no session was established");
    }
    // Let the presence marks of the last sessions settle before the first revocation.
    tokio::time::sleep(Duration::from_secs(1)).await;

    // Revoke, `concurrency` at a time; each worker waits for its session's Close.
    let queue = Arc::new(Mutex::new(held.into_iter()));
    let start = Instant::now();
    let mut workers = tokio::task::JoinSet::new();
    for _ in 0..args.concurrency.max(1) {
        let (queue, client, base, key) = (
            queue.clone(),
            client.clone(),
            base.clone(),
            args.api_key.clone(),
        );
        let close_timeout = args.close_timeout;
        workers.spawn(async move {
            let mut out = Outcomes::default();
            loop {
                let Some((_, id, rx)) = queue.lock().await.next() else {
                    break;
                };
                let url = format!("{base}/v1/devices/{id}/revoke");
                let sent = Instant::now();
                let res = client.post(&url).bearer_auth(&key).send().await;
                match res {
                    Ok(r) if r.status().is_success() => out.api.push(sent.elapsed()),
                    Ok(r) => {
                        let status = r.status();
                        let body = r.text().await.unwrap_or_default();
                        out.api_failures.add(format!("HTTP {status}"));
                        out.first_api_error
                            .get_or_insert(format!("{id}: HTTP {status}: {body}"));
                        continue;
                    }
                    Err(e) => {
                        out.api_failures.add("request failed");
                        out.first_api_error.get_or_insert(format!("{id}: {e}"));
                        continue;
                    }
                }
                match tokio::time::timeout_at((sent + close_timeout).into(), rx).await {
                    Ok(Ok((at, Ok(reason)))) if reason == REVOKED => {
                        out.propagation.push(at.saturating_duration_since(sent));
                    }
                    Ok(Ok((_, Ok(reason)))) => out.other.add(format!("closed: {reason}")),
                    Ok(Ok((_, Err(e)))) => out.other.add(e),
                    Ok(Err(_)) => out.other.add("session task ended"),
                    Err(_) => out.other.add("no close within the timeout"),
                }
            }
            out
        });
    }
    let mut all = Outcomes::default();
    while let Some(res) = workers.join_next().await {
        let o = res.context("a revoking task failed")?;
        all.propagation.merge(o.propagation);
        all.api.merge(o.api);
        all.other.merge(o.other);
        all.api_failures.merge(o.api_failures);
        if all.first_api_error.is_none() {
            all.first_api_error = o.first_api_error;
        }
    }
    let elapsed = start.elapsed().as_secs_f64();
    cancel.cancel();

    let p = all.propagation.sorted();
    let a = all.api.sorted();
    println!(
        "{} revocations through {base} in {elapsed:.1} s (concurrency {}): {} sessions closed with device_revoked",
        established,
        args.concurrency.max(1),
        p.percentiles().count
    );
    println!(
        "revoke request → Close: p50 {:.1} ms, p90 {:.1} ms, p99 {:.1} ms, max {:.1} ms",
        p.pct_ms(50.0),
        p.pct_ms(90.0),
        p.pct_ms(99.0),
        p.pct_ms(100.0)
    );
    println!(
        "revoke request → 200: p50 {:.1} ms, p90 {:.1} ms, p99 {:.1} ms, max {:.1} ms",
        a.pct_ms(50.0),
        a.pct_ms(90.0),
        a.pct_ms(99.0),
        a.pct_ms(100.0)
    );
    if all.other.total() > 0 {
        println!("sessions that ended otherwise: {}", all.other.describe());
    }
    if all.api_failures.total() > 0 {
        println!("revoke requests failed: {}", all.api_failures.describe());
        if let Some(e) = &all.first_api_error {
            println!("  first failure: {e}");
        }
    }
    if let Some(path) = &args.json {
        let summary = Summary {
            devices: args.count,
            established,
            concurrency: args.concurrency.max(1),
            propagation: p.percentiles(),
            api_latency: a.percentiles(),
            other_endings: all.other.clone(),
            api_failures: all.api_failures.clone(),
        };
        std::fs::write(path, serde_json::to_vec_pretty(&summary)?)
            .with_context(|| format!("writing {}", path.display()))?;
    }
    if connect_failures.total() > 0 || all.other.total() > 0 || all.api_failures.total() > 0 {
        bail!("not every device was held, revoked and closed with device_revoked");
    }
    Ok(())
}

#[derive(Default)]
struct Outcomes {
    propagation: Samples,
    api: Samples,
    other: Reasons,
    api_failures: Reasons,
    first_api_error: Option<String>,
}

/// Holds one session (heartbeats every [`HEARTBEAT`]) until the gateway closes it or it
/// fails; reports when and how.
async fn watch(mut conn: session::Conn, tx: oneshot::Sender<Ending>, cancel: CancellationToken) {
    let mut seq = 0u64;
    let mut tick = tokio::time::interval_at(tokio::time::Instant::now() + HEARTBEAT, HEARTBEAT);
    let ending = loop {
        tokio::select! {
            r = conn.next_reply() => match r {
                Ok(Reply::Closed(reason)) => break Ok(reason),
                Ok(_) => {}
                Err(e) => break Err(e),
            },
            _ = tick.tick() => {
                seq += 1;
                if let Err(e) = conn.heartbeat(seq).await {
                    break Err(e);
                }
            }
            _ = cancel.cancelled() => {
                conn.close().await;
                return;
            }
        }
    };
    let _ = tx.send((Instant::now(), ending));
}
