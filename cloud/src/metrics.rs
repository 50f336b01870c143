//! Prometheus metrics, served on their own listener (`serve --metrics-listen`, off by
//! default; never on the API's port) in the OpenMetrics text format.
//!
//! Names follow Prometheus's conventions (`heex_…`, counters ending `_total`, durations in
//! seconds). No label carries a device id, key id, member or any other per-entity value: the
//! label values are the fixed sets below and the API's route templates, so the number of
//! series stays bounded whatever the fleet's size.

use std::net::SocketAddr;
use std::sync::LazyLock;
use std::time::Instant;

use axum::extract::{MatchedPath, Request};
use axum::http::{header, StatusCode};
use axum::middleware::Next;
use axum::response::Response;
use heex_proto::frame::CloseReason;
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{exponential_buckets, Histogram};
use prometheus_client::registry::{Registry, Unit};
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

/// One label, `reason` or `outcome`, from a fixed set.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct Reason {
    reason: &'static str,
}

/// The outcome of an enrollment or a renewal.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct Outcome {
    outcome: &'static str,
}

/// An API request: its route template (`/v1/devices/{id}`, never the id), method and status.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ApiRequest {
    route: String,
    method: String,
    status: u16,
}

/// An API route and method.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct Route {
    route: String,
    method: String,
}

/// A store operation.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct Operation {
    operation: &'static str,
}

type Histograms<L> = Family<L, Histogram, fn() -> Histogram>;

fn latency_buckets() -> Histogram {
    // 0.5 ms to about 8 s.
    Histogram::new(exponential_buckets(0.0005, 2.0, 15))
}

/// Every metric of the process.
pub struct Metrics {
    registry: Registry,
    sessions: Gauge,
    sessions_opened: Counter,
    sessions_closed: Family<Reason, Counter>,
    handshake_failures: Family<Reason, Counter>,
    enrollments: Family<Outcome, Counter>,
    renewals: Family<Outcome, Counter>,
    reports_stored: Counter,
    reports_duplicate: Counter,
    api_requests: Family<ApiRequest, Counter>,
    api_duration: Histograms<Route>,
    store_duration: Histograms<Operation>,
    revocation_propagation: Histogram,
}

static METRICS: LazyLock<Metrics> = LazyLock::new(Metrics::new);

/// The process's metrics.
pub fn get() -> &'static Metrics {
    &METRICS
}

impl Metrics {
    fn new() -> Metrics {
        let mut registry = Registry::default();
        let m = Metrics {
            sessions: Gauge::default(),
            sessions_opened: Counter::default(),
            sessions_closed: Family::default(),
            handshake_failures: Family::default(),
            enrollments: Family::default(),
            renewals: Family::default(),
            reports_stored: Counter::default(),
            reports_duplicate: Counter::default(),
            api_requests: Family::default(),
            api_duration: Family::new_with_constructor(latency_buckets as fn() -> Histogram),
            store_duration: Family::new_with_constructor(latency_buckets as fn() -> Histogram),
            // 1 ms to about 16 s.
            revocation_propagation: Histogram::new(exponential_buckets(0.001, 2.0, 15)),
            registry: Registry::default(),
        };
        registry.register(
            "heex_gateway_sessions",
            "Agent sessions this process holds now (welcomed, not yet ended)",
            m.sessions.clone(),
        );
        registry.register(
            "heex_gateway_sessions_opened",
            "Agent sessions welcomed",
            m.sessions_opened.clone(),
        );
        registry.register(
            "heex_gateway_sessions_closed",
            "Agent sessions ended, by reason (the Close the gateway sent, closed_by_agent, connection_lost)",
            m.sessions_closed.clone(),
        );
        registry.register(
            "heex_gateway_handshake_failures",
            "Connections refused before a session began, by reason",
            m.handshake_failures.clone(),
        );
        registry.register(
            "heex_enrollments",
            "Enrollment requests, by outcome",
            m.enrollments.clone(),
        );
        registry.register(
            "heex_renewals",
            "Certificate renewals over agent sessions, by outcome",
            m.renewals.clone(),
        );
        registry.register(
            "heex_reports_stored",
            "Device reports stored (first delivery of a sequence number)",
            m.reports_stored.clone(),
        );
        registry.register(
            "heex_reports_duplicate",
            "Device reports received again after they were stored (acknowledged, not stored twice)",
            m.reports_duplicate.clone(),
        );
        registry.register(
            "heex_api_requests",
            "API requests, by route template, method and status",
            m.api_requests.clone(),
        );
        registry.register_with_unit(
            "heex_api_request_duration",
            "API request latency, by route template and method",
            Unit::Seconds,
            m.api_duration.clone(),
        );
        registry.register_with_unit(
            "heex_store_operation_duration",
            "Store operation latency (transactions retried included), by operation",
            Unit::Seconds,
            m.store_duration.clone(),
        );
        registry.register_with_unit(
            "heex_revocation_propagation",
            "Time from a revocation or deletion committed through another replica to the close \
             of the device's session here (by the two replicas' clocks)",
            Unit::Seconds,
            m.revocation_propagation.clone(),
        );
        Metrics { registry, ..m }
    }

    /// The OpenMetrics text of every metric.
    pub fn encode(&self) -> String {
        let mut out = String::new();
        // Writing to a String cannot fail.
        let _ = prometheus_client::encoding::text::encode(&mut out, &self.registry);
        out
    }

    /// A session was welcomed: counted live until the [`SessionGuard`] drops.
    pub fn session_opened(&self) -> SessionGuard {
        self.sessions_opened.inc();
        self.sessions.inc();
        SessionGuard(())
    }

    /// A session ended for `reason` (a label value of [`close_reason`] or
    /// `closed_by_agent`, `connection_lost`).
    pub fn session_closed(&self, reason: &'static str) {
        self.sessions_closed.get_or_create(&Reason { reason }).inc();
    }

    /// A connection was refused before its session began.
    pub fn handshake_failed(&self, reason: &'static str) {
        self.handshake_failures
            .get_or_create(&Reason { reason })
            .inc();
    }

    /// An enrollment request ended with `outcome`.
    pub fn enrollment(&self, outcome: &'static str) {
        self.enrollments.get_or_create(&Outcome { outcome }).inc();
    }

    /// A renewal ended with `outcome`.
    pub fn renewal(&self, outcome: &'static str) {
        self.renewals.get_or_create(&Outcome { outcome }).inc();
    }

    /// Reports written (`stored`) and received again (`duplicates`).
    pub fn reports(&self, stored: u64, duplicates: u64) {
        self.reports_stored.inc_by(stored);
        self.reports_duplicate.inc_by(duplicates);
    }

    /// A session was closed `secs` after its device's revocation (or deletion) was committed
    /// through another replica.
    pub fn revocation_propagated(&self, secs: f64) {
        self.revocation_propagation.observe(secs);
    }

    /// A store operation took `secs`.
    pub fn store_operation(&self, operation: &'static str, secs: f64) {
        self.store_duration
            .get_or_create(&Operation { operation })
            .observe(secs);
    }
}

/// One live session in the gauge; dropping it takes it out.
pub struct SessionGuard(());

impl Drop for SessionGuard {
    fn drop(&mut self) {
        get().sessions.dec();
    }
}

/// The label value of a Close reason.
pub fn close_reason(reason: CloseReason) -> &'static str {
    match reason {
        CloseReason::Shutdown => "shutdown",
        CloseReason::DeviceRevoked => "device_revoked",
        CloseReason::DeviceUnknown => "device_unknown",
        CloseReason::ProtocolError => "protocol_error",
        CloseReason::Replaced => "replaced",
        CloseReason::CertificateExpired => "certificate_expired",
        CloseReason::CertificateSuperseded => "certificate_superseded",
        _ => "other",
    }
}

/// The label value of a failed TLS handshake.
pub fn handshake_error(e: &std::io::Error) -> &'static str {
    use rustls::{CertificateError, Error};
    match e.get_ref().and_then(|inner| inner.downcast_ref::<Error>()) {
        Some(Error::NoCertificatesPresented) => "no_client_cert",
        Some(Error::NoApplicationProtocol) => "alpn",
        Some(Error::InvalidCertificate(c)) => match c {
            CertificateError::Expired | CertificateError::ExpiredContext { .. } => "expired",
            CertificateError::Revoked => "revoked",
            CertificateError::UnknownIssuer
            | CertificateError::BadSignature
            | CertificateError::BadEncoding => "unknown_ca",
            _ => "bad_certificate",
        },
        Some(Error::PeerIncompatible(_)) => "incompatible",
        Some(_) => "tls_error",
        None => "connection_lost",
    }
}

/// Middleware: counts each API request by route template and status, and times it.
pub async fn track(request: Request, next: Next) -> Response {
    let route = request
        .extensions()
        .get::<MatchedPath>()
        .map_or_else(|| "unmatched".to_owned(), |p| p.as_str().to_owned());
    let method = request.method().as_str().to_owned();
    let started = Instant::now();
    let response = next.run(request).await;
    let m = get();
    m.api_duration
        .get_or_create(&Route {
            route: route.clone(),
            method: method.clone(),
        })
        .observe(started.elapsed().as_secs_f64());
    m.api_requests
        .get_or_create(&ApiRequest {
            route,
            method,
            status: response.status().as_u16(),
        })
        .inc();
    response
}

/// Serves `GET /metrics` on `listener` (plain HTTP: bind it to loopback or a private
/// network) until `shutdown`.
pub async fn serve(listener: TcpListener, shutdown: CancellationToken) {
    let app = axum::Router::new().route(
        "/metrics",
        axum::routing::get(|| async {
            (
                [(
                    header::CONTENT_TYPE,
                    "application/openmetrics-text; version=1.0.0; charset=utf-8",
                )],
                get().encode(),
            )
        }),
    );
    let app = app.fallback(|| async { (StatusCode::NOT_FOUND, "metrics are at /metrics\n") });
    if let Err(e) = axum::serve(listener, app.into_make_service())
        .with_graceful_shutdown(async move { shutdown.cancelled().await })
        .await
    {
        tracing::warn!(error = %e, "the metrics listener failed");
    }
}

/// Where the metrics listen, for the startup line.
pub fn describe(addr: SocketAddr) -> String {
    format!("http://{addr}/metrics")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn handshake_errors_are_named_by_their_cause() {
        let tls = |e: rustls::Error| std::io::Error::new(std::io::ErrorKind::InvalidData, e);
        assert_eq!(
            handshake_error(&tls(rustls::Error::NoCertificatesPresented)),
            "no_client_cert"
        );
        assert_eq!(
            handshake_error(&tls(rustls::Error::InvalidCertificate(
                rustls::CertificateError::UnknownIssuer
            ))),
            "unknown_ca"
        );
        assert_eq!(
            handshake_error(&tls(rustls::Error::InvalidCertificate(
                rustls::CertificateError::Expired
            ))),
            "expired"
        );
        assert_eq!(
            handshake_error(&tls(rustls::Error::NoApplicationProtocol)),
            "alpn"
        );
        assert_eq!(
            handshake_error(&std::io::ErrorKind::UnexpectedEof.into()),
            "connection_lost"
        );
        assert_eq!(close_reason(CloseReason::DeviceRevoked), "device_revoked");
    }

    #[test]
    fn the_text_names_follow_the_conventions() {
        let m = Metrics::new();
        m.enrollment("ok");
        m.sessions.inc();
        m.store_operation("insert_device", 0.003);
        let text = m.encode();
        for line in [
            "heex_enrollments_total{outcome=\"ok\"} 1",
            "heex_gateway_sessions 1",
            "# UNIT heex_store_operation_duration_seconds seconds",
            "heex_store_operation_duration_seconds_count{operation=\"insert_device\"} 1",
        ] {
            assert!(text.contains(line), "{line} in {text}");
        }
        assert!(text.ends_with("# EOF\n"));
    }
}
