//! `table`: heex-cloud and its peer side by side (Markdown), from the JSON summaries of one
//! benchmark run, with the enrollment, storm and agent figures of the same run.

use std::fmt::Write as _;
use std::path::Path;

use anyhow::Context;
use serde::de::DeserializeOwned;

use crate::cli::TableArgs;
use crate::hold::Summary;

/// Runs `table`.
pub(crate) fn run(args: TableArgs) -> anyhow::Result<()> {
    let heex: Summary = read(&args.heex)?;
    let peer: Summary = read(&args.peer)?;
    let enroll: Option<serde_json::Value> = args.enroll.as_deref().map(read).transpose()?;
    let storm: Option<Summary> = args.storm.as_deref().map(read).transpose()?;
    print!(
        "{}",
        render(
            &heex,
            &peer,
            enroll.as_ref(),
            storm.as_ref(),
            args.agent_size,
            args.agent_rss_kib
        )
    );
    Ok(())
}

fn read<T: DeserializeOwned>(path: &Path) -> anyhow::Result<T> {
    let bytes = std::fs::read(path).with_context(|| format!("cannot read {}", path.display()))?;
    serde_json::from_slice(&bytes).with_context(|| format!("{} is not a summary", path.display()))
}

fn ratio(a: f64, b: f64) -> String {
    if b == 0.0 {
        "–".to_owned()
    } else {
        format!("{:.2}", a / b)
    }
}

/// The Markdown report.
pub(crate) fn render(
    heex: &Summary,
    peer: &Summary,
    enroll: Option<&serde_json::Value>,
    storm: Option<&Summary>,
    agent_size: Option<u64>,
    agent_rss_kib: Option<u64>,
) -> String {
    let mut out = String::new();
    let kib = |s: &Summary| s.bytes_per_session.unwrap_or(0.0) / 1024.0;
    let rss = |s: &Summary, f: fn(&crate::hold::ServerRss) -> u64| {
        s.server_rss.as_ref().map_or(0, f).to_string()
    };
    let _ = writeln!(
        out,
        "| measure | {} | {} | {}/{} |",
        heex.label, peer.label, heex.label, peer.label
    );
    let _ = writeln!(out, "|---|---:|---:|---:|");
    let mut row = |name: &str, a: String, b: String, r: String| {
        let _ = writeln!(out, "| {name} | {a} | {b} | {r} |");
    };
    row(
        "sessions established",
        format!("{}/{}", heex.established, heex.sessions),
        format!("{}/{}", peer.established, peer.sessions),
        String::new(),
    );
    row(
        "server RSS before / held (KiB)",
        format!(
            "{} / {}",
            rss(heex, |r| r.before_kib),
            rss(heex, |r| r.established_kib.max(r.end_kib))
        ),
        format!(
            "{} / {}",
            rss(peer, |r| r.before_kib),
            rss(peer, |r| r.established_kib.max(r.end_kib))
        ),
        String::new(),
    );
    row(
        "memory per session (KiB)",
        format!("{:.2}", kib(heex)),
        format!("{:.2}", kib(peer)),
        ratio(kib(heex), kib(peer)),
    );
    row(
        "full mTLS handshakes/s",
        format!("{:.0}", heex.handshakes_per_sec),
        format!("{:.0}", peer.handshakes_per_sec),
        ratio(heex.handshakes_per_sec, peer.handshakes_per_sec),
    );
    row(
        "connect p50 / p99 (ms)",
        format!(
            "{:.1} / {:.1}",
            heex.connect_latency.p50_ms, heex.connect_latency.p99_ms
        ),
        format!(
            "{:.1} / {:.1}",
            peer.connect_latency.p50_ms, peer.connect_latency.p99_ms
        ),
        String::new(),
    );
    row(
        "heartbeats acked / sent",
        format!("{} / {}", heex.heartbeats_acked, heex.heartbeats_sent),
        format!("{} / {}", peer.heartbeats_acked, peer.heartbeats_sent),
        String::new(),
    );
    row(
        "ack p50 / p99 (ms)",
        format!(
            "{:.2} / {:.2}",
            heex.ack_latency.p50_ms, heex.ack_latency.p99_ms
        ),
        format!(
            "{:.2} / {:.2}",
            peer.ack_latency.p50_ms, peer.ack_latency.p99_ms
        ),
        String::new(),
    );
    row(
        "drops / connect failures",
        format!("{} / {}", heex.drops.total(), heex.connect_failures.total()),
        format!("{} / {}", peer.drops.total(), peer.connect_failures.total()),
        String::new(),
    );
    let _ = writeln!(out);
    if let Some(e) = enroll {
        let _ = writeln!(
            out,
            "- enrollment: {:.0} enrollments/s durable ({} per run, concurrency {}, p99 {:.1} ms, failures {})",
            e["rate_per_sec"].as_f64().unwrap_or(0.0),
            e["enrollments"],
            e["concurrency"],
            e["latency"]["p99_ms"].as_f64().unwrap_or(0.0),
            e["failures"]
        );
    }
    if let Some(st) = storm.and_then(|s| s.storm.as_ref()) {
        let _ = writeln!(
            out,
            "- gateway restart: {}/{} back, the last {:.2} s after the first loss (recovery p50 {:.0} ms, p99 {:.0} ms); {} of {} heartbeats of re-established sessions acked during the storm",
            st.back, st.dropped, st.all_back_secs, st.recovery.p50_ms, st.recovery.p99_ms,
            st.heartbeats_acked, st.heartbeats_sent
        );
    }
    if let Some(size) = agent_size {
        let _ = writeln!(
            out,
            "- agent: stripped binary {:.2} MiB ({size} bytes)",
            size as f64 / 1048576.0
        );
    }
    if let Some(rss) = agent_rss_kib {
        let _ = writeln!(
            out,
            "- agent: idle RSS {:.2} MiB ({rss} KiB), connected",
            rss as f64 / 1024.0
        );
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cli::Peer;
    use crate::hold::ServerRss;
    use crate::stats::{Percentiles, Reasons};

    fn summary(label: &str, per_session: f64, hs: f64) -> Summary {
        Summary {
            label: label.into(),
            peer: Peer::Heex,
            procs: 1,
            sessions: 100,
            established: 100,
            handshakes_per_sec: hs,
            connect_secs: 1.0,
            connect_latency: Percentiles::default(),
            connect_failures: Reasons::default(),
            drops: Reasons::default(),
            heartbeats_sent: 200,
            heartbeats_acked: 200,
            heartbeat_failures: Reasons::default(),
            ack_latency: Percentiles::default(),
            server_rss: Some(ServerRss {
                before_kib: 1000,
                established_kib: 2000,
                end_kib: 2100,
            }),
            bytes_per_session: Some(per_session),
            per_server: Vec::new(),
            storm: None,
        }
    }

    #[test]
    fn table_has_both_columns_and_ratios() {
        let t = render(
            &summary("heex-cloud", 4096.0, 3000.0),
            &summary("nginx", 8192.0, 1500.0),
            Some(
                &serde_json::json!({"rate_per_sec": 2100.0, "enrollments": 500, "concurrency": 64,
                "latency": {"p99_ms": 40.0}, "failures": 0}),
            ),
            None,
            Some(3 * 1048576),
            Some(3072),
        );
        assert!(
            t.contains("| memory per session (KiB) | 4.00 | 8.00 | 0.50 |"),
            "{t}"
        );
        assert!(
            t.contains("| full mTLS handshakes/s | 3000 | 1500 | 2.00 |"),
            "{t}"
        );
        assert!(
            t.contains("| server RSS before / held (KiB) | 1000 / 2100 |"),
            "{t}"
        );
        assert!(t.contains("2100 enrollments/s"), "{t}");
        assert!(t.contains("stripped binary 3.00 MiB"), "{t}");
        assert!(t.contains("idle RSS 3.00 MiB"), "{t}");
    }

    #[test]
    fn zero_peer_figures_give_no_ratio() {
        let t = render(
            &summary("heex-cloud", 4096.0, 3000.0),
            &summary("nginx", 0.0, 0.0),
            None,
            None,
            None,
            None,
        );
        assert!(
            t.contains("| full mTLS handshakes/s | 3000 | 0 | – |"),
            "{t}"
        );
    }
}
