//! `heex-loadgen`: drives a Heex cloud with the real protocol and reports rates and latency
//! percentiles. `enroll` measures enrollments per second: each request carries a fresh CSR
//! (generated before the clock starts, so the figure is the cloud's, not the CSR maker's) and
//! the cloud stores every device durably before answering.
#![forbid(unsafe_code)]

use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use clap::{Parser, Subcommand};
use heex_proto::api::{EnrollRequest, EnrollResponse};

#[derive(Parser)]
#[command(version, about = "Load generator for the Heex cloud")]
struct Cli {
    #[command(subcommand)]
    command: Cmd,
}

#[derive(Subcommand)]
enum Cmd {
    /// N enrollments at a given concurrency; prints the rate and latency percentiles.
    Enroll {
        /// API base URL, e.g. https://127.0.0.1:8443.
        #[arg(long)]
        server: String,
        /// The cloud CA certificate (PEM).
        #[arg(long)]
        ca_file: PathBuf,
        /// The API key (enroll or admin scope).
        #[arg(long, env = "HEEX_API_KEY", hide_env_values = true)]
        api_key: String,
        /// Enrollments per run.
        #[arg(short = 'n', long, default_value_t = 5000)]
        count: usize,
        /// Requests in flight at once.
        #[arg(short = 'c', long, default_value_t = 64)]
        concurrency: usize,
        /// Repeat the measurement this many times and report the median run.
        #[arg(long, default_value_t = 3)]
        runs: usize,
        /// Worker threads of the load generator's runtime.
        #[arg(long, default_value_t = 2)]
        threads: usize,
    },
}

fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    match cli.command {
        Cmd::Enroll {
            server,
            ca_file,
            api_key,
            count,
            concurrency,
            runs,
            threads,
        } => {
            let rt = tokio::runtime::Builder::new_multi_thread()
                .worker_threads(threads.max(1))
                .enable_all()
                .build()?;
            rt.block_on(enroll(
                &server,
                &ca_file,
                &api_key,
                count,
                concurrency.max(1),
                runs.max(1),
            ))
        }
    }
}

fn client(ca_file: &PathBuf, pool: usize) -> anyhow::Result<reqwest::Client> {
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

fn make_csrs(n: usize) -> anyhow::Result<Vec<String>> {
    (0..n)
        .map(|_| {
            let key = rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256)?;
            Ok(rcgen::CertificateParams::default()
                .serialize_request(&key)?
                .pem()?)
        })
        .collect()
}

struct RunResult {
    rate: f64,
    latencies: Vec<Duration>,
    failures: usize,
    first_error: Option<String>,
}

async fn enroll(
    server: &str,
    ca_file: &PathBuf,
    api_key: &str,
    count: usize,
    concurrency: usize,
    runs: usize,
) -> anyhow::Result<()> {
    let client = client(ca_file, concurrency)?;
    let url = format!("{}/v1/enroll", server.trim_end_matches('/'));
    eprintln!("generating {count} CSRs…");
    let csrs = make_csrs(count)?;
    let mut results = Vec::new();
    for run in 1..=runs {
        let r = one_run(&client, &url, api_key, &csrs, concurrency).await;
        println!(
            "run {run}: {count} enrollments, concurrency {concurrency}: {:.0}/s, p50 {:.1} ms, p99 {:.1} ms, failures {}",
            r.rate,
            pct(&r.latencies, 50.0),
            pct(&r.latencies, 99.0),
            r.failures
        );
        if let Some(e) = &r.first_error {
            println!("  first failure: {e}");
        }
        results.push(r);
    }
    results.sort_by(|a, b| a.rate.total_cmp(&b.rate));
    let median = &results[results.len() / 2];
    println!(
        "median of {runs} runs: {:.0} enrollments/s (p50 {:.1} ms, p90 {:.1} ms, p99 {:.1} ms, failures {})",
        median.rate,
        pct(&median.latencies, 50.0),
        pct(&median.latencies, 90.0),
        pct(&median.latencies, 99.0),
        median.failures
    );
    if results.iter().any(|r| r.failures > 0) {
        bail!("some enrollments failed");
    }
    Ok(())
}

async fn one_run(
    client: &reqwest::Client,
    url: &str,
    api_key: &str,
    csrs: &[String],
    concurrency: usize,
) -> RunResult {
    let next = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let csrs = Arc::new(csrs.to_vec());
    let start = Instant::now();
    let mut tasks = tokio::task::JoinSet::new();
    for w in 0..concurrency {
        let (client, url, key, next, csrs) = (
            client.clone(),
            url.to_owned(),
            api_key.to_owned(),
            next.clone(),
            csrs.clone(),
        );
        tasks.spawn(async move {
            let mut lat = Vec::new();
            let mut failures = 0;
            let mut first_error = None;
            loop {
                let i = next.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                let Some(csr) = csrs.get(i) else { break };
                let body = EnrollRequest {
                    csr_pem: csr.clone(),
                    name: format!("load-{w}-{i}"),
                    labels: [("loadgen".to_owned(), "1".to_owned())].into(),
                    facts: None,
                };
                let t = Instant::now();
                let res = client.post(&url).bearer_auth(&key).json(&body).send().await;
                let outcome = match res {
                    Ok(r) if r.status().as_u16() == 201 => r
                        .json::<EnrollResponse>()
                        .await
                        .map(|_| ())
                        .map_err(|e| e.to_string()),
                    Ok(r) => Err(format!("HTTP {}: {}", r.status(), r.text().await.unwrap_or_default())),
                    Err(e) => Err(e.to_string()),
                };
                match outcome {
                    Ok(()) => lat.push(t.elapsed()),
                    Err(e) => {
                        failures += 1;
                        first_error.get_or_insert(e);
                    }
                }
            }
            (lat, failures, first_error)
        });
    }
    let mut latencies = Vec::new();
    let mut failures = 0;
    let mut first_error = None;
    while let Some(res) = tasks.join_next().await {
        match res {
            Ok((l, f, e)) => {
                latencies.extend(l);
                failures += f;
                if first_error.is_none() {
                    first_error = e;
                }
            }
            Err(e) => {
                failures += 1;
                first_error.get_or_insert(e.to_string());
            }
        }
    }
    let elapsed = start.elapsed().as_secs_f64();
    latencies.sort();
    RunResult {
        rate: latencies.len() as f64 / elapsed,
        latencies,
        failures,
        first_error,
    }
}

/// The `p`th percentile of sorted latencies, in milliseconds.
fn pct(sorted: &[Duration], p: f64) -> f64 {
    if sorted.is_empty() {
        return 0.0;
    }
    let idx = ((p / 100.0) * (sorted.len() - 1) as f64).round() as usize;
    sorted[idx.min(sorted.len() - 1)].as_secs_f64() * 1000.0
}
