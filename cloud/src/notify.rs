//! systemd notifications (`sd_notify`) of `heex-cloud serve`: `READY=1` once the API and the
//! gateway listen, `STOPPING=1` when shutdown begins, so a `Type=notify` unit orders its
//! dependents after a cloud that accepts connections.
//!
//! Everything here is a no-op unless the service manager set `NOTIFY_SOCKET`.

use std::net::SocketAddr;

use sd_notify::NotifyState;

/// Both listeners are bound: the cloud accepts connections.
pub fn ready(api: SocketAddr, gateway: SocketAddr) {
    let status = format!("API on {api}, gateway on {gateway}");
    send(&[NotifyState::Ready, NotifyState::Status(&status)]);
}

/// Shutdown has begun: sessions are being closed and requests drained.
pub fn stopping() {
    send(&[NotifyState::Stopping, NotifyState::Status("stopping")]);
}

fn send(states: &[NotifyState<'_>]) {
    if std::env::var_os("NOTIFY_SOCKET").is_none_or(|s| s.is_empty()) {
        return;
    }
    if let Err(e) = sd_notify::notify(false, states) {
        tracing::debug!(error = %e, "sd_notify failed");
    }
}

#[cfg(test)]
mod tests {
    use std::os::unix::net::UnixDatagram;

    /// With `NOTIFY_SOCKET` set, READY then STOPPING arrive as datagrams in that order.
    #[test]
    fn ready_then_stopping_reach_the_notify_socket() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("notify");
        let socket = UnixDatagram::bind(&path).unwrap();
        // Only this test in the crate touches NOTIFY_SOCKET.
        std::env::set_var("NOTIFY_SOCKET", &path);
        super::ready(
            "127.0.0.1:8443".parse().unwrap(),
            "127.0.0.1:8444".parse().unwrap(),
        );
        super::stopping();
        std::env::remove_var("NOTIFY_SOCKET");
        let mut buf = [0u8; 512];
        let n = socket.recv(&mut buf).unwrap();
        let ready = std::str::from_utf8(&buf[..n]).unwrap();
        assert!(ready.contains("READY=1"), "{ready}");
        assert!(ready.contains("STATUS=API on 127.0.0.1:8443, gateway on 127.0.0.1:8444"));
        let n = socket.recv(&mut buf).unwrap();
        let stopping = std::str::from_utf8(&buf[..n]).unwrap();
        assert!(stopping.contains("STOPPING=1"), "{stopping}");
    }
}
