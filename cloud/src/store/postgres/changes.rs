//! The change feed: `LISTEN` on a dedicated connection (a pooled one would drop
//! notifications when it goes back to the pool), reconnected with backoff. After every
//! (re)connection the feed says [`Change::Resync`], since whatever was notified while it was
//! down is lost; a silent connection is noticed by a periodic round trip.

use std::time::Duration;

use heex_proto::DeviceId;
use tokio::sync::mpsc;
use tokio_postgres::{AsyncMessage, NoTls};

use crate::store::backend::Change;

/// The channel device changes are notified on; the payload is the device id, then, for a
/// connect, a space and the session's name.
pub(crate) const CHANNEL: &str = "heex_device_changes";

/// A round trip on the listening connection this often proves it is alive.
const PROBE_EVERY: Duration = Duration::from_secs(10);
/// A probe (or the connection and LISTEN) taking longer than this counts as a lost feed.
const PROBE_TIMEOUT: Duration = Duration::from_secs(5);
/// Longest wait between reconnection attempts.
const MAX_BACKOFF: Duration = Duration::from_secs(5);

/// Feeds `out` until its receiver is dropped.
pub(super) async fn listen(config: tokio_postgres::Config, out: mpsc::Sender<Change>) {
    let mut backoff = Duration::from_millis(100);
    let mut lost = false;
    loop {
        match listen_once(&config, &out, &mut lost).await {
            Ok(()) => return,
            Err(e) => {
                if !std::mem::replace(&mut lost, true) {
                    tracing::warn!(
                        error = %e,
                        "the store's change feed is down; reconnecting (sessions are checked \
                         against the store meanwhile)"
                    );
                }
            }
        }
        tokio::select! {
            () = out.closed() => return,
            () = tokio::time::sleep(backoff) => {}
        }
        backoff = (backoff * 2).min(MAX_BACKOFF);
    }
}

/// Why the feed stopped.
#[derive(Debug, thiserror::Error)]
enum FeedError {
    #[error("{0}")]
    Db(#[from] tokio_postgres::Error),
    #[error("the database did not answer within {PROBE_TIMEOUT:?}")]
    Timeout,
    #[error("the connection closed")]
    Closed,
}

/// One connection's worth of feed: `Ok` when the receiver is gone.
async fn listen_once(
    config: &tokio_postgres::Config,
    out: &mpsc::Sender<Change>,
    lost: &mut bool,
) -> Result<(), FeedError> {
    let (client, mut connection) = tokio::time::timeout(PROBE_TIMEOUT, config.connect(NoTls))
        .await
        .map_err(|_| FeedError::Timeout)??;
    let (tx, mut messages) = mpsc::unbounded_channel();
    // Drives the connection (the client's queries included) and forwards notifications.
    let driver = tokio::spawn(async move {
        loop {
            let message = std::future::poll_fn(|cx| connection.poll_message(cx)).await;
            let item = match message {
                Some(Ok(AsyncMessage::Notification(n))) => Ok(n.payload().to_owned()),
                Some(Ok(_)) => continue,
                Some(Err(e)) => Err(FeedError::Db(e)),
                None => Err(FeedError::Closed),
            };
            let end = item.is_err();
            if tx.send(item).is_err() || end {
                return;
            }
        }
    });
    let _abort = AbortOnDrop(driver);
    tokio::time::timeout(
        PROBE_TIMEOUT,
        client.batch_execute(&format!("LISTEN {CHANNEL}")),
    )
    .await
    .map_err(|_| FeedError::Timeout)??;
    if std::mem::take(lost) {
        tracing::info!("the store's change feed is back");
    }
    // Whatever was notified before LISTEN took effect is not coming.
    if out.send(Change::Resync).await.is_err() {
        return Ok(());
    }
    let mut probe = tokio::time::interval(PROBE_EVERY);
    probe.tick().await;
    loop {
        tokio::select! {
            () = out.closed() => return Ok(()),
            message = messages.recv() => match message {
                Some(Ok(payload)) => {
                    let Some(change) = parse(&payload) else {
                        tracing::debug!("ignoring a change notification that names no device");
                        continue;
                    };
                    if out.send(change).await.is_err() {
                        return Ok(());
                    }
                }
                Some(Err(e)) => return Err(e),
                None => return Err(FeedError::Closed),
            },
            _ = probe.tick() => {
                tokio::time::timeout(PROBE_TIMEOUT, client.simple_query(""))
                    .await
                    .map_err(|_| FeedError::Timeout)??;
            }
        }
    }
}

/// The change a notification's payload names (see `notify_device_changed`): `<device>`,
/// `<device> <session>` or `<device> @<unix ms>`.
fn parse(payload: &str) -> Option<Change> {
    let (id, rest) = match payload.split_once(' ') {
        Some((id, rest)) => (id, Some(rest)),
        None => (payload, None),
    };
    let id = id.parse::<DeviceId>().ok()?;
    Some(match rest {
        None => Change::Ended(id, None),
        Some(rest) => match rest.strip_prefix('@') {
            Some(millis) => Change::Ended(
                id,
                millis.parse::<i128>().ok().and_then(|ms| {
                    time::OffsetDateTime::from_unix_timestamp_nanos(ms * 1_000_000).ok()
                }),
            ),
            None => Change::Device(id, rest.to_owned()),
        },
    })
}

struct AbortOnDrop(tokio::task::JoinHandle<()>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn payloads_name_a_session_or_when_a_device_ended() {
        let id = DeviceId::generate();
        assert!(matches!(
            parse(&format!("{id} i1-7")),
            Some(Change::Device(d, c)) if d == id && c == "i1-7"
        ));
        let at = time::OffsetDateTime::from_unix_timestamp(1_800_000_000).unwrap();
        assert!(matches!(
            parse(&format!("{id} @1800000000000")),
            Some(Change::Ended(d, Some(t))) if d == id && t == at
        ));
        assert!(matches!(parse(&id.to_string()), Some(Change::Ended(d, None)) if d == id));
        assert!(matches!(
            parse(&format!("{id} @soon")),
            Some(Change::Ended(_, None))
        ));
        assert!(parse("not-a-device i1-7").is_none());
        assert!(parse("").is_none());
    }
}
