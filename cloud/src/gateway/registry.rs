//! Who is connected: device id → the live session's handle, and every connection of the
//! device that has not said Hello yet.
//!
//! A connection enters the registry as soon as its certificate names a device, before the
//! device record is checked, so a revocation that lands at any later point reaches it: a
//! revocation writes the store first and then closes the device here, and the connection
//! reads the store only after entering. It becomes the device's live session at Hello.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};

use heex_proto::frame::CloseReason;
use heex_proto::DeviceId;
use tokio::sync::oneshot;

/// A connection's entry: its number, the serial of the certificate it uses, and the way to
/// ask it to close.
struct Entry {
    session: u64,
    serial: String,
    close: oneshot::Sender<CloseReason>,
}

#[derive(Default)]
struct Maps {
    /// Sessions welcomed after Hello: at most one per device.
    live: HashMap<DeviceId, Entry>,
    /// Connections named by a verified certificate that have not been welcomed yet.
    pending: HashMap<DeviceId, Vec<Entry>>,
}

/// Who is connected right now. Cheap to clone; shared with the API.
#[derive(Clone)]
pub struct SessionRegistry {
    inner: Arc<Mutex<Maps>>,
    next_session: Arc<AtomicU64>,
    /// Random name of this registry (this process), in every connection name.
    instance: Arc<str>,
}

impl Default for SessionRegistry {
    fn default() -> Self {
        SessionRegistry {
            inner: Arc::default(),
            next_session: Arc::default(),
            instance: format!("{:016x}", rand::random::<u64>()).into(),
        }
    }
}

/// A connection's place in the registry; leaving it (on drop) removes the entry if it is
/// still this connection's.
pub(crate) struct Registration {
    registry: SessionRegistry,
    device: DeviceId,
    /// The connection's number (unique in this process, for logs).
    pub session: u64,
    /// The connection's name, unique across processes: the store's connection mark.
    pub connection: String,
    /// Fires when the registry wants the connection closed, with the reason to send.
    pub close: oneshot::Receiver<CloseReason>,
}

impl Drop for Registration {
    fn drop(&mut self) {
        self.registry.deregister(&self.device, self.session);
    }
}

/// The device already has the most connections allowed waiting for Hello.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct TooManyPending(pub usize);

impl SessionRegistry {
    /// A registry with nobody connected.
    pub fn new() -> SessionRegistry {
        SessionRegistry::default()
    }

    // The critical sections below cannot panic, so a poisoned lock still holds a consistent
    // map; recover it rather than failing every later call.
    fn map(&self) -> MutexGuard<'_, Maps> {
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// True when a live session exists for `id`.
    pub fn is_connected(&self, id: &DeviceId) -> bool {
        self.map().live.contains_key(id)
    }

    /// Number of live sessions.
    pub fn connected_count(&self) -> usize {
        self.map().live.len()
    }

    /// The number of `id`'s live session, if any (the one gateway logs show).
    pub fn session_of(&self, id: &DeviceId) -> Option<u64> {
        self.map().live.get(id).map(|e| e.session)
    }

    /// The serial (lowercase hex) of the certificate `id`'s live session uses: the one it
    /// presented, or the one it renewed to since.
    pub fn session_serial(&self, id: &DeviceId) -> Option<String> {
        self.map().live.get(id).map(|e| e.serial.clone())
    }

    /// Asks every connection of `id` (the live session and those waiting for Hello) to send
    /// Close with `reason` and end, e.g. when the device is revoked. Returns false when the
    /// device has no connection here. The device stops counting as connected at once.
    pub fn close(&self, id: &DeviceId, reason: CloseReason) -> bool {
        let (live, pending) = {
            let mut maps = self.map();
            (maps.live.remove(id), maps.pending.remove(id))
        };
        let mut closed = false;
        for entry in live.into_iter().chain(pending.into_iter().flatten()) {
            // The connection may be ending on its own; then nobody needs the message.
            let _ = entry.close.send(reason);
            closed = true;
        }
        closed
    }

    /// The name of this registry (this process): the prefix of its connection names.
    pub fn instance(&self) -> &str {
        &self.instance
    }

    /// Every live session: device, connection name and session number.
    pub fn live_sessions(&self) -> Vec<(DeviceId, String, u64)> {
        self.map()
            .live
            .iter()
            .map(|(id, e)| (id.clone(), self.connection_name(e.session), e.session))
            .collect()
    }

    /// True when `id` has a connection here, live or waiting for Hello.
    pub fn holds(&self, id: &DeviceId) -> bool {
        let maps = self.map();
        maps.live.contains_key(id) || maps.pending.contains_key(id)
    }

    /// The live session of `id` when there is one: its connection name and number.
    pub fn live_session(&self, id: &DeviceId) -> Option<(String, u64)> {
        self.map()
            .live
            .get(id)
            .map(|e| (self.connection_name(e.session), e.session))
    }

    /// Asks `id`'s live session to close with `reason` if it is still session `session`
    /// (a newer one may have replaced it meanwhile). True when it was.
    pub fn close_session(&self, id: &DeviceId, session: u64, reason: CloseReason) -> bool {
        let entry = {
            let mut maps = self.map();
            if maps.live.get(id).is_none_or(|e| e.session != session) {
                return false;
            }
            maps.live.remove(id)
        };
        match entry {
            Some(e) => {
                // The connection may be ending on its own; then nobody needs the message.
                let _ = e.close.send(reason);
                true
            }
            None => false,
        }
    }

    fn connection_name(&self, session: u64) -> String {
        format!("{}-{session}", self.instance)
    }

    /// Records a connection of `id` using the certificate with `serial`, not welcomed yet;
    /// refused when `id` already has `max_pending` such connections.
    pub(crate) fn enter(
        &self,
        id: &DeviceId,
        serial: &str,
        max_pending: usize,
    ) -> Result<Registration, TooManyPending> {
        let (tx, rx) = oneshot::channel();
        let session = {
            let mut maps = self.map();
            let pending = maps.pending.entry(id.clone()).or_default();
            // Entries of connections that went away are removed on drop; none linger here.
            if pending.len() >= max_pending {
                return Err(TooManyPending(max_pending));
            }
            let session = self.next_session.fetch_add(1, Ordering::Relaxed) + 1;
            pending.push(Entry {
                session,
                serial: serial.to_owned(),
                close: tx,
            });
            session
        };
        Ok(Registration {
            registry: self.clone(),
            device: id.clone(),
            session,
            connection: self.connection_name(session),
            close: rx,
        })
    }

    /// Makes the waiting connection `reg` the device's live session; an older one is told to
    /// close with [`CloseReason::Replaced`]. False when `reg` was closed meanwhile (its
    /// `close` holds the reason).
    pub(crate) fn promote(&self, reg: &Registration) -> bool {
        let old = {
            let mut maps = self.map();
            let Some(pending) = maps.pending.get_mut(&reg.device) else {
                return false;
            };
            let Some(at) = pending.iter().position(|e| e.session == reg.session) else {
                return false;
            };
            let entry = pending.swap_remove(at);
            if pending.is_empty() {
                maps.pending.remove(&reg.device);
            }
            maps.live.insert(reg.device.clone(), entry)
        };
        if let Some(old) = old {
            tracing::info!(device = %reg.device, old_session = old.session, session = reg.session, "session replaced by a newer one");
            let _ = old.close.send(CloseReason::Replaced);
        }
        true
    }

    /// Records that `id`'s live session `session` now uses the certificate with `serial`.
    pub(crate) fn set_serial(&self, id: &DeviceId, session: u64, serial: &str) {
        if let Some(e) = self.map().live.get_mut(id) {
            if e.session == session {
                serial.clone_into(&mut e.serial);
            }
        }
    }

    /// Removes `id`'s entry of `session`, live or waiting (a newer session may own the live
    /// one).
    fn deregister(&self, id: &DeviceId, session: u64) {
        let mut maps = self.map();
        if maps.live.get(id).is_some_and(|e| e.session == session) {
            maps.live.remove(id);
        }
        if let Some(pending) = maps.pending.get_mut(id) {
            pending.retain(|e| e.session != session);
            if pending.is_empty() {
                maps.pending.remove(id);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn enter_promote_replace_close() {
        let r = SessionRegistry::new();
        let id = DeviceId::generate();
        assert!(!r.is_connected(&id));

        let mut first = r.enter(&id, "41aa", 4).unwrap();
        assert!(!r.is_connected(&id), "not connected before Hello");
        assert!(r.promote(&first));
        assert!(r.is_connected(&id));
        assert_eq!(r.session_of(&id), Some(first.session));
        assert_eq!(r.session_serial(&id).as_deref(), Some("41aa"));

        let mut second = r.enter(&id, "41bb", 4).unwrap();
        assert!(r.promote(&second));
        assert_ne!(first.session, second.session);
        assert_eq!(first.close.try_recv().unwrap(), CloseReason::Replaced);
        // The replaced session's cleanup must not remove the newer one.
        drop(first);
        assert!(r.is_connected(&id));
        assert_eq!(r.connected_count(), 1);
        r.set_serial(&id, second.session, "41cc");
        assert_eq!(r.session_serial(&id).as_deref(), Some("41cc"));

        // Closing reaches the connections waiting for Hello too; they cannot be promoted.
        let mut waiting = r.enter(&id, "41cc", 4).unwrap();
        assert!(r.close(&id, CloseReason::DeviceRevoked));
        assert_eq!(second.close.try_recv().unwrap(), CloseReason::DeviceRevoked);
        assert_eq!(
            waiting.close.try_recv().unwrap(),
            CloseReason::DeviceRevoked
        );
        assert!(!r.promote(&waiting));
        assert!(!r.is_connected(&id));
        assert!(!r.close(&id, CloseReason::DeviceRevoked));
        drop(second);
        drop(waiting);
        assert_eq!(r.connected_count(), 0);
    }

    #[test]
    fn waiting_connections_are_capped_per_device() {
        let r = SessionRegistry::new();
        let (id, other) = (DeviceId::generate(), DeviceId::generate());
        let held: Vec<_> = (0..4).map(|_| r.enter(&id, "41aa", 4).unwrap()).collect();
        assert_eq!(r.enter(&id, "41aa", 4).err(), Some(TooManyPending(4)));
        // Another device is not affected, and a welcomed one frees its place.
        assert!(r.enter(&other, "41bb", 4).is_ok());
        assert!(r.promote(&held[0]));
        let again = r.enter(&id, "41aa", 4).unwrap();
        drop(held);
        drop(again);
        assert!(r.map().pending.is_empty() && r.map().live.is_empty());
    }
}
