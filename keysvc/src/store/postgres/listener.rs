//! Cross-process cache invalidation: LISTEN on the change channel and forward every
//! notification to the store's in-process broadcast.
//!
//! ```text
//! commit (any replica) ── pg_notify('openkcm_object_changed', 'tenant:uid') ──► PostgreSQL
//!        ──► this task's PgListener ──► broadcast::Sender<ObjectChanged> ──► subscribe()
//! ```
//!
//! Notifications are not queued for a disconnected listener: changes made in the gap are not
//! seen, so the listener publishes [`StoreEvent::Missed`] — when the connection is lost and
//! again once it listens anew — and every cache following the store clears itself (logged
//! as a warning). Payloads are `tenant:uid`; tenant ids
//! cannot contain ':', so the first ':' separates them.

use std::time::Duration;

use sqlx::postgres::{PgConnectOptions, PgListener, PgPool, PgPoolOptions};
use tokio::sync::broadcast;
use tokio::task::JoinHandle;

use crate::store::{ObjectChanged, StoreError, StoreEvent};
use crate::tenant::TenantId;

/// The NOTIFY channel every replica listens on.
pub(super) const CHANNEL: &str = "openkcm_object_changed";

/// `application_name` of the listening connection, so operators (and tests) can find it in
/// `pg_stat_activity`.
pub(super) const APPLICATION_NAME: &str = "openkcm-listener";

/// First wait before reconnecting after a failure; doubled per failure up to
/// [`MAX_BACKOFF`], so a restarting server is not hammered but is picked up within seconds.
const MIN_BACKOFF: Duration = Duration::from_millis(100);
const MAX_BACKOFF: Duration = Duration::from_secs(10);

/// One connection listens; a second lets a replacement connect before the dead one is
/// reaped.
const LISTENER_CONNECTIONS: u32 = 2;

/// Starts listening (before returning, so no change committed afterwards is missed) and
/// spawns the forwarding task.
pub(super) async fn start(
    options: &PgConnectOptions,
    changes: broadcast::Sender<StoreEvent>,
) -> Result<JoinHandle<()>, StoreError> {
    let pool = PgPoolOptions::new()
        .max_connections(LISTENER_CONNECTIONS)
        .connect_lazy_with(options.clone().application_name(APPLICATION_NAME));
    let listener = subscribe(&pool)
        .await
        .map_err(|e| StoreError::Unavailable(format!("cannot LISTEN {CHANNEL}: {e}")))?;
    Ok(tokio::spawn(forward(pool, listener, changes)))
}

async fn subscribe(pool: &PgPool) -> Result<PgListener, sqlx::Error> {
    let mut listener = PgListener::connect_with(pool).await?;
    listener.listen(CHANNEL).await?;
    Ok(listener)
}

async fn forward(pool: PgPool, mut listener: PgListener, changes: broadcast::Sender<StoreEvent>) {
    let mut backoff = MIN_BACKOFF;
    loop {
        match listener.try_recv().await {
            Ok(Some(notification)) => {
                backoff = MIN_BACKOFF;
                match parse(notification.payload()) {
                    // No receiver is fine: nobody caches yet.
                    Some(change) => drop(changes.send(StoreEvent::Changed(change))),
                    None => tracing::warn!(
                        payload = notification.payload(),
                        "ignoring malformed change notification"
                    ),
                }
            }
            // The connection was lost (sqlx would reconnect inside the next `try_recv`,
            // with no word to us when it is back). Lost and failed alike: clear now, since
            // anything may change while nobody listens, reconnect here, and clear again once
            // listening — what was cached during the gap may already be stale.
            lost => {
                match lost {
                    Err(error) => {
                        tracing::warn!(%error, channel = CHANNEL, "LISTEN connection failed; caches cleared, reconnecting")
                    }
                    _ => tracing::warn!(
                        channel = CHANNEL,
                        "LISTEN connection lost; caches cleared, reconnecting"
                    ),
                }
                drop(changes.send(StoreEvent::Missed));
                listener = loop {
                    tokio::time::sleep(backoff).await;
                    backoff = (backoff * 2).min(MAX_BACKOFF);
                    match subscribe(&pool).await {
                        Ok(listener) => {
                            tracing::warn!(
                                channel = CHANNEL,
                                "LISTEN re-established; changes made meanwhile were missed: \
                                 caches cleared"
                            );
                            drop(changes.send(StoreEvent::Missed));
                            break listener;
                        }
                        Err(error) => tracing::warn!(%error, "reconnecting LISTEN failed"),
                    }
                };
            }
        }
    }
}

fn parse(payload: &str) -> Option<ObjectChanged> {
    let (tenant, uid) = payload.split_once(':')?;
    Some(ObjectChanged {
        tenant: TenantId::parse(tenant).ok()?,
        uid: uid.to_owned(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn payload_is_tenant_colon_uid() {
        let change = parse("tenant-a:uid:with:colons").expect("valid");
        assert_eq!(change.tenant.as_str(), "tenant-a");
        assert_eq!(change.uid, "uid:with:colons");
        assert_eq!(parse("no separator"), None);
        assert_eq!(parse("bad tenant:uid"), None);
    }
}
