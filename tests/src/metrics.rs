//! The cloud's Prometheus endpoint (`serve --metrics-listen`), as the tests scrape it.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::Duration;

use crate::{wait_for, Cloud};

const TIMEOUT: Duration = Duration::from_secs(30);

/// The metrics address the cloud printed at start-up.
pub fn metrics_addr(cloud: &Cloud) -> SocketAddr {
    wait_for(TIMEOUT, "the metrics address", || {
        cloud
            .proc()
            .stdout()
            .lines()
            .find_map(|l| l.strip_prefix("Metrics listening on http://"))
            .and_then(|rest| rest.strip_suffix("/metrics"))
            .and_then(|a| a.parse().ok())
    })
}

/// `GET path` over plain HTTP: (status line, content type, body).
pub fn get(addr: SocketAddr, path: &str) -> (String, String, String) {
    let mut s = TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(TIMEOUT)).unwrap();
    write!(
        s,
        "GET {path} HTTP/1.1\r\nHost: metrics\r\nConnection: close\r\n\r\n"
    )
    .unwrap();
    let mut text = String::new();
    s.read_to_string(&mut text).unwrap();
    let (head, body) = text.split_once("\r\n\r\n").unwrap();
    let status = head.lines().next().unwrap().to_owned();
    let content_type = head
        .lines()
        .find_map(|l| l.strip_prefix("content-type: "))
        .unwrap_or("")
        .to_owned();
    (status, content_type, body.to_owned())
}

/// `GET /metrics`, asserting a 200 in the OpenMetrics text format; the body.
pub fn scrape(addr: SocketAddr) -> String {
    let (status, content_type, body) = get(addr, "/metrics");
    assert!(status.contains(" 200 "), "{status}");
    assert!(
        content_type.starts_with("application/openmetrics-text"),
        "{content_type}"
    );
    assert!(body.ends_with("# EOF\n"), "{body}");
    body
}

/// The value of the sample `name` whose labels include every `labels` pair (0 if none).
pub fn value(text: &str, name: &str, labels: &[(&str, &str)]) -> f64 {
    text.lines()
        .filter(|l| !l.starts_with('#'))
        .filter_map(|l| {
            let (series, v) = l.rsplit_once(' ')?;
            let (n, rest) = series.split_once('{').unwrap_or((series, ""));
            (n == name
                && labels
                    .iter()
                    .all(|(k, want)| rest.contains(&format!("{k}=\"{want}\""))))
            .then(|| v.parse::<f64>().ok())
            .flatten()
        })
        .sum()
}
