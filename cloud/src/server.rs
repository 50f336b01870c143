//! The HTTPS server: TLS accept loop, one task per connection serving the API router over
//! HTTP/1.1 or HTTP/2, and graceful shutdown on one cancellation token.

use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use axum::Router;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use hyper_util::service::TowerToHyperService;
use rustls::ServerConfig;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tokio::task::JoinSet;
use tokio::time::Instant;
use tokio_rustls::TlsAcceptor;
use tokio_util::sync::CancellationToken;

/// How long in-flight requests may take to finish at shutdown.
pub const SHUTDOWN_GRACE: Duration = Duration::from_secs(10);

/// Deadlines and the connection cap of the API listener. Every connection is bounded at
/// every stage: the TLS handshake, reading a request's headers, the whole request (a body
/// trickled byte by byte is cut), and silence between requests (HTTP/1 keep-alive and idle
/// HTTP/2 alike), so a client that opens connections and sends nothing holds nothing for long.
#[derive(Debug, Clone)]
pub struct ApiOptions {
    /// Bound on the TLS handshake.
    pub handshake_timeout: Duration,
    /// Bound on reading one request's headers (HTTP/1).
    pub header_read_timeout: Duration,
    /// Bound on one whole request, body included: answered 408 past it.
    pub request_timeout: Duration,
    /// A connection with no byte in either direction for this long is closed.
    pub idle_timeout: Duration,
    /// Most API connections open at once; further ones are closed right after accept, so
    /// the API cannot use the descriptors the gateway needs.
    pub max_connections: usize,
}

impl Default for ApiOptions {
    fn default() -> Self {
        ApiOptions {
            handshake_timeout: Duration::from_secs(10),
            header_read_timeout: Duration::from_secs(30),
            request_timeout: Duration::from_secs(30),
            idle_timeout: Duration::from_secs(60),
            max_connections: DEFAULT_MAX_CONNECTIONS,
        }
    }
}

/// Default cap on API connections.
pub const DEFAULT_MAX_CONNECTIONS: usize = 1024;

/// Descriptors kept for everything but connections: the store, log and data files.
pub const RESERVED_DESCRIPTORS: u64 = 128;

/// Raises the soft limit on open files to the hard limit (a systemd service starts with a
/// soft limit of 1024) and returns the limit now in force.
pub fn raise_open_files_limit() -> u64 {
    use rustix::process::{getrlimit, setrlimit, Resource};
    let limit = getrlimit(Resource::Nofile);
    let soft = limit.current.unwrap_or(u64::MAX);
    let Some(hard) = limit.maximum else {
        return soft;
    };
    if soft >= hard {
        return soft;
    }
    let raised = rustix::process::Rlimit {
        current: Some(hard),
        maximum: Some(hard),
    };
    match setrlimit(Resource::Nofile, raised) {
        Ok(()) => hard,
        Err(e) => {
            tracing::warn!(error = %e, soft, hard, "cannot raise the open-files limit");
            soft
        }
    }
}

/// How the descriptor budget `limit` is split when neither cap is given: the API gets 1/32
/// of it (64 to [`DEFAULT_MAX_CONNECTIONS`]), the gateway the rest, less
/// [`RESERVED_DESCRIPTORS`]. `(api, gateway)`.
pub fn split_descriptors(limit: u64) -> (usize, usize) {
    let api = (limit / 32).clamp(64, DEFAULT_MAX_CONNECTIONS as u64);
    let gateway = limit.saturating_sub(api + RESERVED_DESCRIPTORS).max(1);
    (
        usize::try_from(api).unwrap_or(DEFAULT_MAX_CONNECTIONS),
        usize::try_from(gateway).unwrap_or(usize::MAX),
    )
}

/// The API's TLS configuration: TLS 1.2/1.3 (ring), no client certificates, ALPN h2 and
/// http/1.1, presenting `chain` (leaf then CA, so clients pinning the CA find it).
pub fn tls_config(
    chain: Vec<CertificateDer<'static>>,
    key: PrivateKeyDer<'static>,
) -> Result<Arc<ServerConfig>, rustls::Error> {
    tls_config_with(crate::server_cert::ServerCert::new(chain, key)?)
}

/// Like [`tls_config`], presenting whatever `cert` holds at each handshake.
pub fn tls_config_with(
    cert: Arc<crate::server_cert::ServerCert>,
) -> Result<Arc<ServerConfig>, rustls::Error> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut config = ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()?
        .with_no_client_auth()
        .with_cert_resolver(cert);
    config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    Ok(Arc::new(config))
}

/// Accepts TLS connections on `listener` and serves `app` on each until `shutdown` is
/// cancelled; then stops accepting, lets in-flight requests finish (up to
/// [`SHUTDOWN_GRACE`]) and returns.
pub async fn serve(
    listener: TcpListener,
    tls: Arc<ServerConfig>,
    app: Router,
    shutdown: CancellationToken,
    options: ApiOptions,
) {
    let acceptor = TlsAcceptor::from(tls);
    let limit = options.request_timeout;
    let app = app.layer(axum::middleware::from_fn(
        move |req: axum::extract::Request, next: axum::middleware::Next| async move {
            match tokio::time::timeout(limit, next.run(req)).await {
                Ok(response) => response,
                Err(_) => axum::response::IntoResponse::into_response(
                    crate::error::ApiError::request_timeout(limit),
                ),
            }
        },
    ));
    let options = Arc::new(options);
    let slots = Arc::new(Semaphore::new(options.max_connections.max(1)));
    let mut last_refusal_log: Option<Instant> = None;
    let mut connections = JoinSet::new();
    loop {
        tokio::select! {
            () = shutdown.cancelled() => break,
            accepted = listener.accept() => match accepted {
                Ok((tcp, peer)) => {
                    let Ok(slot) = Arc::clone(&slots).try_acquire_owned() else {
                        // Closed at once: a waiting connection would hold its descriptor.
                        drop(tcp);
                        if last_refusal_log.is_none_or(|t| t.elapsed() >= Duration::from_secs(10)) {
                            last_refusal_log = Some(Instant::now());
                            tracing::warn!(
                                %peer,
                                max = options.max_connections,
                                "API connection refused: at the connection cap (--api-max-connections)"
                            );
                        }
                        continue;
                    };
                    connections.spawn(serve_connection(
                        acceptor.clone(),
                        tcp,
                        app.clone(),
                        shutdown.clone(),
                        Arc::clone(&options),
                        slot,
                    ));
                }
                Err(e) => {
                    // Usually out of file descriptors: back off instead of spinning.
                    tracing::warn!(error = %e, "accept failed");
                    tokio::select! {
                        () = shutdown.cancelled() => break,
                        () = tokio::time::sleep(Duration::from_millis(100)) => {}
                    }
                }
            },
            Some(_) = connections.join_next(), if !connections.is_empty() => {}
        }
    }
    drop(listener);
    let drained = tokio::time::timeout(SHUTDOWN_GRACE, async {
        while connections.join_next().await.is_some() {}
    })
    .await;
    if drained.is_err() {
        tracing::warn!(
            left = connections.len(),
            "closing API connections that outlived the shutdown grace period"
        );
        connections.shutdown().await;
    }
}

async fn serve_connection(
    acceptor: TlsAcceptor,
    tcp: TcpStream,
    app: Router,
    shutdown: CancellationToken,
    options: Arc<ApiOptions>,
    _slot: OwnedSemaphorePermit,
) {
    let _ = tcp.set_nodelay(true);
    let handshake = tokio::time::timeout(options.handshake_timeout, acceptor.accept(tcp));
    let tls = tokio::select! {
        () = shutdown.cancelled() => return,
        done = handshake => match done {
            Ok(Ok(tls)) => tls,
            Ok(Err(e)) => {
                tracing::debug!(error = %e, "TLS handshake failed");
                return;
            }
            Err(_) => {
                tracing::debug!("TLS handshake timed out");
                return;
            }
        },
    };
    let mut builder = auto::Builder::new(TokioExecutor::new());
    builder
        .http1()
        .timer(TokioTimer::new())
        .header_read_timeout(options.header_read_timeout);
    builder.http2().timer(TokioTimer::new());
    let activity = Activity::new();
    let io = Tracked {
        inner: tls,
        activity: activity.clone(),
    };
    let conn = builder.serve_connection(TokioIo::new(io), TowerToHyperService::new(app));
    tokio::pin!(conn);
    let idle = options.idle_timeout;
    let result = loop {
        tokio::select! {
            result = conn.as_mut() => break result,
            () = shutdown.cancelled() => {
                conn.as_mut().graceful_shutdown();
                break conn.await;
            }
            () = tokio::time::sleep_until(activity.last() + idle) => {
                if activity.last().elapsed() >= idle {
                    tracing::debug!(?idle, "closing a silent API connection");
                    return;
                }
            }
        }
    };
    if let Err(e) = result {
        tracing::debug!(error = %e, "API connection ended with an error");
    }
}

/// When a connection last moved a byte, shared by its I/O and its idle watch.
#[derive(Clone)]
struct Activity {
    start: Instant,
    /// Milliseconds after `start`.
    last_ms: Arc<AtomicU64>,
}

impl Activity {
    fn new() -> Activity {
        Activity {
            start: Instant::now(),
            last_ms: Arc::new(AtomicU64::new(0)),
        }
    }

    fn touch(&self) {
        let ms = u64::try_from(self.start.elapsed().as_millis()).unwrap_or(u64::MAX);
        self.last_ms.store(ms, Ordering::Relaxed);
    }

    fn last(&self) -> Instant {
        self.start + Duration::from_millis(self.last_ms.load(Ordering::Relaxed))
    }
}

/// A stream that records in [`Activity`] every read or write that moved bytes.
struct Tracked<S> {
    inner: S,
    activity: Activity,
}

impl<S: AsyncRead + Unpin> AsyncRead for Tracked<S> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        let before = buf.filled().len();
        let polled = Pin::new(&mut self.inner).poll_read(cx, buf);
        if buf.filled().len() > before {
            self.activity.touch();
        }
        polled
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for Tracked<S> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        let polled = Pin::new(&mut self.inner).poll_write(cx, buf);
        if matches!(polled, Poll::Ready(Ok(n)) if n > 0) {
            self.activity.touch();
        }
        polled
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[std::io::IoSlice<'_>],
    ) -> Poll<std::io::Result<usize>> {
        let polled = Pin::new(&mut self.inner).poll_write_vectored(cx, bufs);
        if matches!(polled, Poll::Ready(Ok(n)) if n > 0) {
            self.activity.touch();
        }
        polled
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests;
