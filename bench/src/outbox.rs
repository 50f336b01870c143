//! `heex-loadgen outbox`: the durable enqueue rate of the agent's outbox (grouped fsync), with
//! the agent's own outbox and intake in a scratch directory.

use std::path::Path;
use std::sync::Arc;
use std::time::Instant;

use heex_agent::intake::Intake;
use heex_agent::outbox::{self, Outbox, OutboxError};

use crate::cli::OutboxArgs;

/// `heex-loadgen outbox`: prints the runs and their median.
pub(crate) fn run(args: &OutboxArgs) -> anyhow::Result<()> {
    let text = bench(&args.dir, args.reports, args.threads, args.runs, args.size)?;
    print!("{text}");
    Ok(())
}

/// Runs the enqueue benchmark: `runs` times, `threads` threads submit `reports` reports of
/// `size` bytes in all through one group committer into a fresh outbox under `dir`.
/// Returns one line per run and the median.
fn bench(
    dir: &Path,
    reports: usize,
    threads: usize,
    runs: usize,
    size: usize,
) -> Result<String, OutboxError> {
    let payload = outbox::prepare(
        serde_json::json!({ "pad": "x".repeat(size.saturating_sub(10)) })
            .to_string()
            .as_bytes(),
    )?;
    let threads = threads.max(1);
    let per_thread = reports.div_ceil(threads);
    let mut rates = Vec::new();
    let mut out = String::new();
    for run in 0..runs.max(1) {
        let run_dir = dir.join(format!("bench-outbox-{}-{run}", std::process::id()));
        let _ = std::fs::remove_dir_all(&run_dir);
        let ob = Outbox::open(&run_dir, u64::MAX / 2)?;
        let intake = Intake::spawn(ob, Arc::new(tokio::sync::Notify::new()))?;
        let start = Instant::now();
        let handles: Vec<_> = (0..threads)
            .map(|_| {
                let intake = intake.clone();
                let payload = payload.clone();
                std::thread::spawn(move || {
                    for _ in 0..per_thread {
                        intake.submit_blocking(payload.clone())?;
                    }
                    Ok::<(), OutboxError>(())
                })
            })
            .collect();
        for h in handles {
            h.join().map_err(|_| OutboxError::Closed)??;
        }
        let secs = start.elapsed().as_secs_f64();
        let rate = (per_thread * threads) as f64 / secs;
        out.push_str(&format!(
            "run {}: {} reports of {} bytes from {threads} threads in {secs:.3}s = {rate:.0} reports/s\n",
            run + 1,
            per_thread * threads,
            payload.len()
        ));
        rates.push(rate);
        drop(intake);
        let _ = std::fs::remove_dir_all(&run_dir);
    }
    rates.sort_by(f64::total_cmp);
    out.push_str(&format!(
        "median durable enqueue rate: {:.0} reports/s\n",
        rates[rates.len() / 2]
    ));
    Ok(out)
}
