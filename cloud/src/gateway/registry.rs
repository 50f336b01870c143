//! Who is connected: device id → the live session's handle.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};

use heex_proto::frame::CloseReason;
use heex_proto::DeviceId;
use tokio::sync::oneshot;

/// A live session's entry: its number and the way to ask it to close.
struct Entry {
    session: u64,
    close: oneshot::Sender<CloseReason>,
}

/// Who is connected right now. Cheap to clone; shared with the API.
#[derive(Clone, Default)]
pub struct SessionRegistry {
    inner: Arc<Mutex<HashMap<DeviceId, Entry>>>,
    next_session: Arc<AtomicU64>,
}

/// What a session gets when it registers.
pub(crate) struct Registration {
    /// The session's number (unique in this process, for logs).
    pub session: u64,
    /// Fires when the registry wants the session closed, with the reason to send.
    pub close: oneshot::Receiver<CloseReason>,
}

impl SessionRegistry {
    /// A registry with nobody connected.
    pub fn new() -> SessionRegistry {
        SessionRegistry::default()
    }

    // The critical sections below cannot panic, so a poisoned lock still holds a consistent
    // map; recover it rather than failing every later call.
    fn map(&self) -> MutexGuard<'_, HashMap<DeviceId, Entry>> {
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// True when a live session exists for `id`.
    pub fn is_connected(&self, id: &DeviceId) -> bool {
        self.map().contains_key(id)
    }

    /// Number of live sessions.
    pub fn connected_count(&self) -> usize {
        self.map().len()
    }

    /// The number of `id`'s live session, if any (the one gateway logs show).
    pub fn session_of(&self, id: &DeviceId) -> Option<u64> {
        self.map().get(id).map(|e| e.session)
    }

    /// Asks `id`'s live session to send Close with `reason` and end, e.g. when the device is
    /// revoked. Returns false when the device has no live session here. The device stops
    /// counting as connected at once.
    pub fn close(&self, id: &DeviceId, reason: CloseReason) -> bool {
        let entry = self.map().remove(id);
        match entry {
            Some(entry) => {
                // The session may be ending on its own; then nobody needs the message.
                let _ = entry.close.send(reason);
                true
            }
            None => false,
        }
    }

    /// Records a new live session for `id`; an older one of the same device is told to
    /// close with [`CloseReason::Replaced`].
    pub(crate) fn register(&self, id: &DeviceId) -> Registration {
        let session = self.next_session.fetch_add(1, Ordering::Relaxed) + 1;
        let (tx, rx) = oneshot::channel();
        let old = self.map().insert(id.clone(), Entry { session, close: tx });
        if let Some(old) = old {
            tracing::info!(device = %id, old_session = old.session, session, "session replaced by a newer one");
            let _ = old.close.send(CloseReason::Replaced);
        }
        Registration { session, close: rx }
    }

    /// Removes `id`'s entry if it still belongs to `session` (a newer session may own it).
    pub(crate) fn deregister(&self, id: &DeviceId, session: u64) {
        let mut map = self.map();
        if map.get(id).is_some_and(|e| e.session == session) {
            map.remove(id);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn register_replace_close() {
        let r = SessionRegistry::new();
        let id = DeviceId::generate();
        assert!(!r.is_connected(&id));

        let mut first = r.register(&id);
        assert!(r.is_connected(&id));
        assert_eq!(r.session_of(&id), Some(first.session));

        let mut second = r.register(&id);
        assert_ne!(first.session, second.session);
        assert_eq!(first.close.try_recv().unwrap(), CloseReason::Replaced);
        // The replaced session's cleanup must not remove the newer one.
        r.deregister(&id, first.session);
        assert!(r.is_connected(&id));
        assert_eq!(r.connected_count(), 1);

        assert!(r.close(&id, CloseReason::DeviceRevoked));
        assert_eq!(second.close.try_recv().unwrap(), CloseReason::DeviceRevoked);
        assert!(!r.is_connected(&id));
        assert!(!r.close(&id, CloseReason::DeviceRevoked));
        r.deregister(&id, second.session);
        assert_eq!(r.connected_count(), 0);
    }
}
