//! Enrollment throughput against the real binary: durable enrollments per second with the
//! client on the same machine. Ignored by default (it measures, and takes a while):
//!
//! ```text
//! cargo test -p heex-cloud --test throughput -- --ignored --nocapture
//! HEEX_ENROLLMENTS=10000 HEEX_CONCURRENCY=128 cargo test ... (to change the load)
//! ```
#![allow(clippy::unwrap_used, clippy::expect_used, missing_docs)]

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use rcgen::{CertificateParams, KeyPair, PKCS_ECDSA_P256_SHA256};
use serde_json::json;

fn env_or(name: &str, default: usize) -> usize {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "measures throughput; run explicitly"]
async fn durable_enrollments_per_second() {
    let total = env_or("HEEX_ENROLLMENTS", 4000);
    let concurrency = env_or("HEEX_CONCURRENCY", 64);
    let connections = env_or("HEEX_CONNECTIONS", 4);

    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("data");
    let mut child = Command::new(env!("CARGO_BIN_EXE_heex-cloud"))
        .arg("serve")
        .arg("--data-dir")
        .arg(&dir)
        .args(["--listen", "127.0.0.1:0", "--gateway-listen", "127.0.0.1:0"])
        .env("RUST_LOG", "warn")
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .unwrap();
    let mut key = String::new();
    let mut api = String::new();
    for line in BufReader::new(child.stdout.take().unwrap()).lines() {
        let line = line.unwrap();
        if let Some(k) = line.strip_prefix("Owner API key:") {
            key = k.trim().to_owned();
        }
        if let Some(a) = line.strip_prefix("API listening on ") {
            api = a.replace("127.0.0.1", "localhost");
        }
        if line.starts_with("Gateway listening on ") {
            break;
        }
    }

    // CSRs are made up front so the measurement is the server's work.
    let csrs: Vec<String> = (0..total)
        .map(|_| {
            let k = KeyPair::generate_for(&PKCS_ECDSA_P256_SHA256).unwrap();
            CertificateParams::new(Vec::<String>::new())
                .unwrap()
                .serialize_request(&k)
                .unwrap()
                .pem()
                .unwrap()
        })
        .collect();
    let ca = reqwest::Certificate::from_pem(&std::fs::read(dir.join("ca.crt")).unwrap()).unwrap();
    let clients: Vec<reqwest::Client> = (0..connections)
        .map(|_| {
            reqwest::Client::builder()
                .tls_built_in_root_certs(false)
                .add_root_certificate(ca.clone())
                .build()
                .unwrap()
        })
        .collect();
    // Warm up every connection.
    for c in &clients {
        c.get(format!("{api}/healthz")).send().await.unwrap();
    }

    let csrs = Arc::new(std::sync::Mutex::new(csrs));
    let started = Instant::now();
    let mut tasks = tokio::task::JoinSet::new();
    for i in 0..concurrency {
        let client = clients[i % clients.len()].clone();
        let csrs = Arc::clone(&csrs);
        let url = format!("{api}/v1/enroll");
        let key = key.clone();
        tasks.spawn(async move {
            let mut done = 0usize;
            loop {
                let Some(csr) = csrs.lock().unwrap().pop() else {
                    return done;
                };
                let resp = client
                    .post(&url)
                    .bearer_auth(&key)
                    .json(&json!({"csr_pem": csr, "name": "bench"}))
                    .send()
                    .await
                    .unwrap();
                assert_eq!(resp.status(), 201);
                resp.bytes().await.unwrap();
                done += 1;
            }
        });
    }
    let mut done = 0;
    while let Some(n) = tasks.join_next().await {
        done += n.unwrap();
    }
    let elapsed = started.elapsed();
    let rate = done as f64 / elapsed.as_secs_f64();
    println!(
        "{done} durable enrollments in {elapsed:.2?}: {rate:.0}/s \
         (concurrency {concurrency}, {connections} connections)"
    );
    let _ = child.kill();
    let _ = child.wait();
    assert_eq!(done, total);
    assert!(elapsed < Duration::from_secs(600));
}
