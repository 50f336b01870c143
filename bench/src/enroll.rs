//! `enroll`: enrollments per second. Each request carries a fresh CSR (generated before the
//! clock starts, so the figure is the cloud's, not the CSR maker's) and the cloud stores every
//! device durably before answering. With `--out`, the credentials of the last run's devices
//! are kept for `hold` and `storm`.

use std::path::Path;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use heex_proto::api::{EnrollRequest, EnrollResponse};
use serde::Serialize;

use crate::cli::EnrollArgs;
use crate::creds::{self, Device, Meta};
use crate::stats::{Percentiles, Samples};

/// Runs `enroll`.
pub(crate) fn run(args: EnrollArgs) -> anyhow::Result<()> {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(args.threads.max(1))
        .enable_all()
        .build()?;
    rt.block_on(enroll(args))
}

pub(crate) fn client(ca_file: &Path, pool: usize) -> anyhow::Result<reqwest::Client> {
    use rustls_pki_types::pem::PemObject;
    let mut roots = rustls::RootCertStore::empty();
    for cert in rustls_pki_types::CertificateDer::pem_file_iter(ca_file)
        .with_context(|| format!("reading {}", ca_file.display()))?
    {
        roots.add(cert?)?;
    }
    let tls = rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()?
    .with_root_certificates(roots)
    .with_no_client_auth();
    Ok(reqwest::Client::builder()
        .use_preconfigured_tls(tls)
        .pool_max_idle_per_host(pool)
        .http1_only()
        .timeout(Duration::from_secs(60))
        .build()?)
}

/// A device key (PKCS#8 PEM) and its CSR (PEM).
struct Pending {
    key_pem: String,
    csr_pem: String,
}

fn make_csrs(n: usize) -> anyhow::Result<Vec<Pending>> {
    (0..n)
        .map(|_| {
            let key = rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256)?;
            let csr_pem = rcgen::CertificateParams::default()
                .serialize_request(&key)?
                .pem()?;
            Ok(Pending {
                key_pem: key.serialize_pem(),
                csr_pem,
            })
        })
        .collect()
}

struct RunResult {
    rate: f64,
    latencies: Samples,
    failures: usize,
    first_error: Option<String>,
    /// Index into the CSRs and the cloud's answer, per success.
    enrolled: Vec<(usize, EnrollResponse)>,
}

/// The machine-readable summary of the median run.
#[derive(Debug, Serialize)]
struct Summary {
    enrollments: usize,
    concurrency: usize,
    runs: usize,
    rate_per_sec: f64,
    latency: Percentiles,
    failures: usize,
}

async fn enroll(args: EnrollArgs) -> anyhow::Result<()> {
    let (count, concurrency, runs) = (args.count, args.concurrency.max(1), args.runs.max(1));
    let client = client(&args.ca_file, concurrency)?;
    let urls: Vec<String> = args
        .server
        .iter()
        .map(|s| format!("{}/v1/enroll", s.trim_end_matches('/')))
        .collect();
    if urls.is_empty() {
        bail!("give at least one --server");
    }
    let urls = Arc::new(urls);
    let keys: Vec<String> = match &args.keys_file {
        None => vec![args.api_key.clone()],
        Some(path) => std::fs::read_to_string(path)
            .with_context(|| format!("reading {}", path.display()))?
            .lines()
            .map(str::trim)
            .filter(|l| !l.is_empty())
            .map(str::to_owned)
            .collect(),
    };
    if keys.is_empty() {
        bail!("no API key in the keys file");
    }
    eprintln!("generating {count} CSRs…");
    let csrs = Arc::new(make_csrs(count)?);
    let mut results = Vec::new();
    for run in 1..=runs {
        let r = one_run(&client, &urls, &keys, &csrs, concurrency).await;
        let s = r.latencies.sorted();
        println!(
            "run {run}: {count} enrollments, concurrency {concurrency}: {:.0}/s, p50 {:.1} ms, p99 {:.1} ms, failures {}",
            r.rate,
            s.pct_ms(50.0),
            s.pct_ms(99.0),
            r.failures
        );
        if let Some(e) = &r.first_error {
            println!("  first failure: {e}");
        }
        results.push(r);
    }
    let any_failed = results.iter().any(|r| r.failures > 0);
    if let (Some(dir), Some(last)) = (&args.out, results.last_mut()) {
        let enrolled = std::mem::take(&mut last.enrolled);
        save(dir, &csrs, enrolled)?;
    }
    results.sort_by(|a, b| a.rate.total_cmp(&b.rate));
    let median = &results[results.len() / 2];
    let s = median.latencies.sorted();
    println!(
        "median of {runs} runs: {:.0} enrollments/s (p50 {:.1} ms, p90 {:.1} ms, p99 {:.1} ms, failures {})",
        median.rate,
        s.pct_ms(50.0),
        s.pct_ms(90.0),
        s.pct_ms(99.0),
        median.failures
    );
    if let Some(path) = &args.json {
        let summary = Summary {
            enrollments: count,
            concurrency,
            runs,
            rate_per_sec: median.rate,
            latency: s.percentiles(),
            failures: median.failures,
        };
        std::fs::write(path, serde_json::to_vec_pretty(&summary)?)
            .with_context(|| format!("writing {}", path.display()))?;
    }
    if any_failed {
        bail!("some enrollments failed");
    }
    Ok(())
}

fn save(
    dir: &Path,
    csrs: &[Pending],
    enrolled: Vec<(usize, EnrollResponse)>,
) -> anyhow::Result<()> {
    let Some((_, first)) = enrolled.first() else {
        bail!(
            "no device was enrolled; nothing to keep in {}",
            dir.display()
        );
    };
    let meta = Meta {
        ca_pem: first.ca_pem.clone(),
        gateway: first.gateway.clone(),
    };
    let devices: Vec<Device> = enrolled
        .into_iter()
        .filter_map(|(i, r)| {
            Some(Device {
                device_id: r.device_id.to_string(),
                key_pem: csrs.get(i)?.key_pem.clone(),
                cert_pem: r.certificate_pem,
            })
        })
        .collect();
    creds::save(dir, &meta, &devices)?;
    println!(
        "kept the credentials of {} devices in {}",
        devices.len(),
        dir.display()
    );
    Ok(())
}

async fn one_run(
    client: &reqwest::Client,
    urls: &Arc<Vec<String>>,
    keys: &[String],
    csrs: &Arc<Vec<Pending>>,
    concurrency: usize,
) -> RunResult {
    let next = Arc::new(AtomicUsize::new(0));
    let start = Instant::now();
    let mut tasks = tokio::task::JoinSet::new();
    for w in 0..concurrency {
        let (client, urls, key, next, csrs) = (
            client.clone(),
            urls.clone(),
            keys[w % keys.len()].clone(),
            next.clone(),
            csrs.clone(),
        );
        tasks.spawn(async move {
            let mut lat = Samples::default();
            let mut enrolled = Vec::new();
            let mut failures = 0;
            let mut first_error = None;
            loop {
                let i = next.fetch_add(1, Ordering::Relaxed);
                let Some(pending) = csrs.get(i) else { break };
                let body = EnrollRequest {
                    csr_pem: pending.csr_pem.clone(),
                    name: format!("load-{w}-{i}"),
                    labels: [("loadgen".to_owned(), "1".to_owned())].into(),
                    facts: None,
                };
                // Request i goes to server i mod the number of servers.
                let url = &urls[i % urls.len()];
                let t = Instant::now();
                let res = client.post(url).bearer_auth(&key).json(&body).send().await;
                let outcome = match res {
                    Ok(r) if r.status().as_u16() == 201 => {
                        r.json::<EnrollResponse>().await.map_err(|e| e.to_string())
                    }
                    Ok(r) => Err(format!(
                        "HTTP {}: {}",
                        r.status(),
                        r.text().await.unwrap_or_default()
                    )),
                    Err(e) => Err(e.to_string()),
                };
                match outcome {
                    Ok(resp) => {
                        lat.push(t.elapsed());
                        enrolled.push((i, resp));
                    }
                    Err(e) => {
                        failures += 1;
                        first_error.get_or_insert(e);
                    }
                }
            }
            (lat, enrolled, failures, first_error)
        });
    }
    let mut latencies = Samples::default();
    let mut all = Vec::new();
    let mut failures = 0;
    let mut first_error = None;
    while let Some(res) = tasks.join_next().await {
        match res {
            Ok((l, e, f, err)) => {
                latencies.merge(l);
                all.extend(e);
                failures += f;
                if first_error.is_none() {
                    first_error = err;
                }
            }
            Err(e) => {
                failures += 1;
                first_error.get_or_insert(e.to_string());
            }
        }
    }
    let elapsed = start.elapsed().as_secs_f64();
    all.sort_by_key(|(i, _)| *i);
    RunResult {
        rate: latencies.len() as f64 / elapsed,
        latencies,
        failures,
        first_error,
        enrolled: all,
    }
}
