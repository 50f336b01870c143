//! This process as one replica among several over a shared store.
//!
//! - **Lease.** A replica holding device sessions renews a lease in the store every third
//!   of its length; the connection marks of a replica whose lease lapsed (it died, or lost
//!   the store for longer than the lease) are cleared by the next replica renewing its own,
//!   so a dead replica's devices do not stay "connected". A replica whose lease was ended
//!   while it lived records it again and marks its sessions connected again. Writes: one
//!   per replica per renewal, plus one per connect and disconnect — none per heartbeat.
//! - **Sessions checked against the others' changes.** When the store is shared
//!   ([`Store::watch`]), every change another replica makes to a device this one holds a
//!   session for (revoked, deleted, connected to another replica) arrives as a notification
//!   and the device's record is read again: the database is the truth, the notification
//!   only the wake-up. After the feed reconnects, and every `check_interval` in any case, all
//!   held sessions are checked, so a lost notification costs seconds, not forever.

use std::sync::Arc;
use std::time::Duration;

use heex_proto::frame::CloseReason;
use heex_proto::DeviceId;
use time::OffsetDateTime;
use tokio_util::sync::CancellationToken;

use crate::gateway::SessionRegistry;
use crate::store::{Change, Store, StoreError};

/// How a replica keeps its lease and checks its sessions.
#[derive(Debug, Clone)]
pub struct ReplicaOptions {
    /// Stable name of the replica (e.g. `host:port`): a restart under the same name clears
    /// the marks its earlier run left at once, instead of after the lease.
    pub name: String,
    /// How long the replica's marks outlive its last renewal.
    pub lease: Duration,
    /// How often every held session is checked against the store when the store is shared.
    pub check_interval: Duration,
}

/// Devices checked per store read.
const CHECK_BATCH: usize = 1000;

fn lease_end(now: OffsetDateTime, lease: Duration) -> OffsetDateTime {
    now + time::Duration::try_from(lease).unwrap_or(time::Duration::MAX)
}

/// Starts the replica's lease; returns how many stale connection marks were cleared (those
/// of lapsed replicas, of this name's earlier run, and of processes holding no lease).
pub async fn start(
    store: &Store,
    registry: &SessionRegistry,
    options: &ReplicaOptions,
) -> Result<u64, StoreError> {
    let now = OffsetDateTime::now_utc();
    store
        .start_replica(
            registry.instance(),
            &options.name,
            now,
            lease_end(now, options.lease),
        )
        .await
}

/// Keeps the lease and checks the held sessions until `shutdown`; then ends the lease,
/// clearing whatever marks this replica's sessions left.
pub async fn run(
    store: Arc<Store>,
    registry: SessionRegistry,
    options: ReplicaOptions,
    shutdown: CancellationToken,
) {
    let lease = keep_lease(&store, &registry, &options, &shutdown);
    let watch = watch_sessions(&store, &registry, &options, &shutdown);
    tokio::join!(lease, watch);
}

/// Ends the lease (a clean stop): the marks of this replica's sessions are cleared.
pub async fn stop(store: &Store, registry: &SessionRegistry) {
    match store.stop_replica(registry.instance()).await {
        Ok(0) => {}
        Ok(cleared) => tracing::info!(cleared, "cleared the connection marks left at stop"),
        Err(e) => tracing::warn!(error = %e, "cannot end the replica's lease; it lapses"),
    }
}

async fn keep_lease(
    store: &Store,
    registry: &SessionRegistry,
    options: &ReplicaOptions,
    shutdown: &CancellationToken,
) {
    let every = (options.lease / 3).max(Duration::from_millis(100));
    let mut failing = false;
    loop {
        tokio::select! {
            () = shutdown.cancelled() => return,
            () = tokio::time::sleep(every) => {}
        }
        let now = OffsetDateTime::now_utc();
        let renewed = store
            .renew_replica(
                registry.instance(),
                &options.name,
                now,
                lease_end(now, options.lease),
            )
            .await;
        match renewed {
            Ok(true) => {
                if std::mem::take(&mut failing) {
                    tracing::info!("replica lease renewed again");
                }
            }
            Ok(false) => {
                failing = false;
                let held: Vec<_> = registry
                    .live_sessions()
                    .into_iter()
                    .map(|(id, connection, _)| (id, connection))
                    .collect();
                tracing::warn!(
                    sessions = held.len(),
                    "the replica's lease had lapsed (the store was out of reach for longer \
                     than --replica-lease); marking its sessions connected again"
                );
                if let Err(e) = store.mark_sessions_again(held, now).await {
                    tracing::warn!(error = %e, "cannot mark the sessions connected again");
                }
            }
            Err(e) => {
                if !std::mem::replace(&mut failing, true) {
                    tracing::warn!(
                        error = %e,
                        "cannot renew the replica's lease; sessions stay up, and other \
                         replicas show them disconnected once the lease lapses"
                    );
                }
            }
        }
    }
}

async fn watch_sessions(
    store: &Store,
    registry: &SessionRegistry,
    options: &ReplicaOptions,
    shutdown: &CancellationToken,
) {
    let Some(mut changes) = store.watch() else {
        // The store is this process's alone: it closes its own sessions.
        return;
    };
    let mut poll = tokio::time::interval(options.check_interval);
    poll.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        // When the change being followed was committed, for a revocation or a deletion.
        let mut ended_at = None;
        let ids = tokio::select! {
            () = shutdown.cancelled() => return,
            change = changes.recv() => match change {
                // This replica's own new session: nothing to check (a reconnect storm
                // would otherwise read every device again).
                Some(Change::Device(id, connection))
                    if registry
                        .live_session(&id)
                        .is_some_and(|(mine, _)| mine == connection)
                        || !registry.holds(&id) =>
                {
                    continue;
                }
                Some(Change::Device(id, _)) => vec![id],
                Some(Change::Ended(id, at)) => {
                    ended_at = at;
                    vec![id]
                }
                Some(Change::Resync) => all_held(registry),
                None => return,
            },
            _ = poll.tick() => all_held(registry),
        };
        match check(store, registry, ids).await {
            Ok(ended) => {
                if let (Some(at), true) = (ended_at, ended > 0) {
                    let delay = time::OffsetDateTime::now_utc() - at;
                    crate::metrics::get().revocation_propagated(delay.as_seconds_f64().max(0.0));
                }
            }
            Err(e) => tracing::warn!(error = %e, "cannot check the sessions against the store"),
        }
    }
}

fn all_held(registry: &SessionRegistry) -> Vec<DeviceId> {
    registry
        .live_sessions()
        .into_iter()
        .map(|(id, _, _)| id)
        .collect()
}

/// Closes the sessions of `ids` the store says must end: the device revoked or gone, or its
/// connection mark held by another session (a newer one, on another replica). How many
/// sessions it closed because their device was revoked or deleted.
pub async fn check(
    store: &Store,
    registry: &SessionRegistry,
    ids: Vec<DeviceId>,
) -> Result<usize, StoreError> {
    let mut ended = 0;
    let ids: Vec<DeviceId> = ids.into_iter().filter(|id| registry.holds(id)).collect();
    for batch in ids.chunks(CHECK_BATCH) {
        // Sessions as they were before the read: one that took the mark after it cannot be
        // mistaken for the one the read saw replaced.
        let before: Vec<_> = batch
            .iter()
            .map(|id| (id.clone(), registry.live_session(id)))
            .collect();
        let marks = store.connection_marks(batch.to_vec()).await?;
        for (id, session) in before {
            let mark = marks.iter().find(|m| m.device == id);
            match mark {
                None => {
                    if registry.close(&id, CloseReason::DeviceRevoked) {
                        ended += 1;
                        tracing::info!(device = %id, "session closed: the device was deleted");
                    }
                }
                Some(m) if m.revoked => {
                    if registry.close(&id, CloseReason::DeviceRevoked) {
                        ended += 1;
                        tracing::info!(device = %id, "session closed: the device was revoked");
                    }
                }
                Some(m) => {
                    let (Some((connection, number)), Some(holder)) = (session, &m.connection)
                    else {
                        continue;
                    };
                    if *holder != connection
                        && registry.close_session(&id, number, CloseReason::Replaced)
                    {
                        tracing::info!(
                            device = %id,
                            session = number,
                            "session replaced by a newer one on another replica"
                        );
                    }
                }
            }
        }
    }
    Ok(ended)
}
