//! Whether the database answers, as `openkcm_keysvc_database_up`: set by every store
//! operation that reached it or found it unreachable, and by a cheap probe every
//! [`PROBE_INTERVAL`] so that an idle replica still notices.
//!
//! ```text
//! Engine ──► ObservedStore ──► SqliteStore / PostgresStore
//!                 │ Ok → 1, Unavailable → 0, readiness failure → 0
//!                 │ while 0: a transaction waits ≤ 1 s for a connection (fail fast)
//! probe (10 s) ───┤ Store::ready (SELECT 1), 3 s timeout: Ok → 1, error or timeout → 0
//!                 ▼
//!           DatabaseHealth (gauge)
//! ```

use std::sync::Arc;
use std::time::Duration;

use prometheus_client::metrics::gauge::Gauge;
use tokio::sync::broadcast;
use tokio_util::sync::CancellationToken;

use crate::store::{
    LocateFilter, ObjectRecord, PoolConnections, RootKeyCheck, Store, StoreError, StoreEvent,
    Transaction,
};
use crate::tenant::{TenantContext, TenantId};

/// How often the database is probed when no request has touched it: as often as the
/// kubelet asks `/ready`, so the metric is never staler than readiness.
pub const PROBE_INTERVAL: Duration = Duration::from_secs(10);

/// How long `/ready` waits for the database before calling it unreachable: shorter than a
/// kubelet probe's default 1 s timeout would be too tight for a loaded database, longer
/// than its period (10 s) would overlap probes.
pub const READY_TIMEOUT: Duration = Duration::from_secs(3);

/// How long a probe waits for the database: the same bound `/ready` uses, well inside
/// [`PROBE_INTERVAL`] so probes never overlap.
pub const PROBE_TIMEOUT: Duration = READY_TIMEOUT;

/// While the database is known unreachable, how long a request waits for a connection
/// before it is answered "storage unavailable", instead of the pool's whole acquire timeout
/// (5 s): during an outage requests fail fast, and the first one after the database is
/// back (it reconnects within this) marks it up again.
pub const WHILE_DOWN_TIMEOUT: Duration = Duration::from_secs(1);

/// Whether the database answered the last store operation or probe (1) or not (0).
#[derive(Clone, Debug)]
pub struct DatabaseHealth {
    up: Gauge,
}

impl Default for DatabaseHealth {
    /// Starts as up: the store was opened (connected, role and schema checked) before
    /// anything serves.
    fn default() -> Self {
        let up = Gauge::default();
        up.set(1);
        Self { up }
    }
}

impl DatabaseHealth {
    pub fn new() -> Self {
        Self::default()
    }

    pub fn is_up(&self) -> bool {
        self.up.get() == 1
    }

    pub(crate) fn gauge(&self) -> Gauge {
        self.up.clone()
    }

    fn set(&self, up: bool) {
        let was = self.up.set(i64::from(up)) == 1;
        if was != up {
            if up {
                tracing::info!("database reachable again");
            } else {
                tracing::warn!("database unreachable");
            }
        }
    }

    /// Records what a store operation says about the database: an answer (even "not
    /// found" or a constraint violation) means it is up; only `Unavailable` (connection
    /// lost, pool timed out) means it is not.
    fn record<T>(&self, outcome: &Result<T, StoreError>) {
        match outcome {
            Ok(_) => self.set(true),
            Err(StoreError::Unavailable(_)) => self.set(false),
            Err(_) => {}
        }
    }

    /// Asks the database once (`Store::ready`, at most [`PROBE_TIMEOUT`]) and records the
    /// answer: any error or no answer in time is down.
    pub async fn probe(&self, store: &dyn Store) {
        let up = matches!(
            tokio::time::timeout(PROBE_TIMEOUT, store.ready()).await,
            Ok(Ok(()))
        );
        self.set(up);
    }

    /// Probes every [`PROBE_INTERVAL`] until `shutdown` fires.
    pub async fn probe_until(self, store: Arc<dyn Store>, shutdown: CancellationToken) {
        let mut tick = tokio::time::interval(PROBE_INTERVAL);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                _ = shutdown.cancelled() => return,
                _ = tick.tick() => self.probe(store.as_ref()).await,
            }
        }
    }
}

/// A store that reports each operation's outcome to a [`DatabaseHealth`]. Every method of
/// [`Store`] and [`Transaction`] is forwarded explicitly, defaults included: a default body
/// here would silently replace the inner store's own (PostgreSQL's row-locking
/// `get_for_update`).
#[derive(Debug)]
pub struct ObservedStore {
    inner: Arc<dyn Store>,
    health: DatabaseHealth,
}

impl ObservedStore {
    pub fn new(inner: Arc<dyn Store>, health: DatabaseHealth) -> Self {
        Self { inner, health }
    }
}

#[async_trait::async_trait]
impl Store for ObservedStore {
    async fn begin(&self, ctx: &TenantContext) -> Result<Box<dyn Transaction>, StoreError> {
        let inner = if self.health.is_up() {
            self.inner.begin(ctx).await
        } else {
            tokio::time::timeout(WHILE_DOWN_TIMEOUT, self.inner.begin(ctx))
                .await
                .unwrap_or_else(|_| {
                    Err(StoreError::Unavailable(format!(
                        "the database is unreachable: no connection within {} ms",
                        WHILE_DOWN_TIMEOUT.as_millis()
                    )))
                })
        };
        self.health.record(&inner);
        Ok(Box::new(ObservedTransaction {
            inner: inner?,
            health: self.health.clone(),
        }))
    }

    async fn ready(&self) -> Result<(), StoreError> {
        let ready = self.inner.ready().await;
        // Readiness asks nothing but "do you answer": any error is an unreachable database.
        self.health.set(ready.is_ok());
        ready
    }

    async fn tenants(&self) -> Result<Vec<TenantId>, StoreError> {
        let tenants = self.inner.tenants().await;
        self.health.record(&tenants);
        tenants
    }

    async fn root_key_checks(&self) -> Result<Vec<RootKeyCheck>, StoreError> {
        let checks = self.inner.root_key_checks().await;
        self.health.record(&checks);
        checks
    }

    async fn record_root_key_check(&self, check: &RootKeyCheck) -> Result<(), StoreError> {
        let recorded = self.inner.record_root_key_check(check).await;
        self.health.record(&recorded);
        recorded
    }

    async fn predates_integrity(&self) -> Result<bool, StoreError> {
        let predates = self.inner.predates_integrity().await;
        self.health.record(&predates);
        predates
    }

    fn subscribe(&self) -> broadcast::Receiver<StoreEvent> {
        self.inner.subscribe()
    }

    fn pool_connections(&self) -> Option<PoolConnections> {
        self.inner.pool_connections()
    }
}

struct ObservedTransaction {
    inner: Box<dyn Transaction>,
    health: DatabaseHealth,
}

impl ObservedTransaction {
    fn observed<T>(&self, outcome: Result<T, StoreError>) -> Result<T, StoreError> {
        self.health.record(&outcome);
        outcome
    }
}

#[async_trait::async_trait]
impl Transaction for ObservedTransaction {
    async fn insert(&mut self, record: &ObjectRecord) -> Result<(), StoreError> {
        let outcome = self.inner.insert(record).await;
        self.observed(outcome)
    }

    async fn get(&mut self, uid: &str) -> Result<Option<ObjectRecord>, StoreError> {
        let outcome = self.inner.get(uid).await;
        self.observed(outcome)
    }

    async fn get_for_update(&mut self, uid: &str) -> Result<Option<ObjectRecord>, StoreError> {
        let outcome = self.inner.get_for_update(uid).await;
        self.observed(outcome)
    }

    async fn update(&mut self, record: &ObjectRecord) -> Result<(), StoreError> {
        let outcome = self.inner.update(record).await;
        self.observed(outcome)
    }

    async fn locate(&mut self, filter: &LocateFilter) -> Result<Vec<String>, StoreError> {
        let outcome = self.inner.locate(filter).await;
        self.observed(outcome)
    }

    async fn count(&mut self, filter: &LocateFilter) -> Result<usize, StoreError> {
        let outcome = self.inner.count(filter).await;
        self.observed(outcome)
    }

    async fn commit(self: Box<Self>) -> Result<(), StoreError> {
        let outcome = self.inner.commit().await;
        self.health.record(&outcome);
        outcome
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_unavailable_counts_as_down() {
        let health = DatabaseHealth::new();
        assert!(health.is_up());
        health.record::<()>(&Err(StoreError::NotFound("x".into())));
        health.record::<()>(&Err(StoreError::Duplicate("x".into())));
        assert!(health.is_up(), "the database answered");
        health.record::<()>(&Err(StoreError::Unavailable("gone".into())));
        assert!(!health.is_up());
        health.record(&Ok(()));
        assert!(health.is_up());
    }
}
