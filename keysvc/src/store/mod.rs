//! Where tenant isolation is enforced in the database: the storage trait and its two
//! implementations.
//!
//! ```text
//! Engine ──Store::begin(tenant)──► Transaction (one per request)
//!                                   │ PostgreSQL: BEGIN; SET LOCAL app.current_tenant = …;
//!                                   │             every table FORCE ROW LEVEL SECURITY
//!                                   │ SQLite:     BEGIN IMMEDIATE; every query filters tenant_id
//!                                   ▼
//!                                  insert / get / update / locate … commit
//! ```
//!
//! A transaction sees only its tenant's rows; another tenant's object is simply absent.
//! Records carry key material only in wrapped form ([`WrappedKey`]): the store never sees a
//! plaintext key.

mod columns;
pub mod postgres;
pub mod sqlite;

use std::fmt;

use tokio::sync::broadcast;

use crate::envelope::WrappedKey;
use crate::tenant::{TenantContext, TenantId};

/// One managed object as stored.
#[derive(Clone, Debug, PartialEq)]
pub struct ObjectRecord {
    pub uid: String,
    /// KMIP Object Type enumeration value.
    pub object_type: u32,
    /// KMIP State enumeration value.
    pub state: u32,
    /// Indexed copies of attributes that Locate filters on most (also inside `attributes`).
    pub cryptographic_algorithm: Option<u32>,
    pub cryptographic_length: Option<i32>,
    /// Every Name value, Object Group value and custom text attribute, as `(attribute name,
    /// value)` pairs — the equality filters Locate can push down to the database.
    pub index: Vec<(String, String)>,
    /// All attributes, KMIP 2.1 TTLV encoding of an `Attributes` structure.
    pub attributes: Vec<u8>,
    /// The object (key block, ...) wrapped under the tenant KEK; `None` once destroyed.
    pub material: Option<WrappedKey>,
    /// Seconds since the epoch; objects are listed in creation order.
    pub created_at: i64,
    /// How many times the record has been written: 1 when inserted, +1 per update; 0 for a
    /// row written before versions existed. [`Transaction::update`] writes a record only
    /// over `version - 1`, so a write based on a stale read fails instead of undoing a
    /// change committed in between.
    pub version: i64,
    /// The record's authenticator (`engine::object`): `None` only for a row written before
    /// records were authenticated.
    pub integrity: Option<Vec<u8>>,
}

/// Equality filters a store can evaluate; everything else is filtered by the engine.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct LocateFilter {
    pub object_type: Option<u32>,
    pub state: Option<u32>,
    pub cryptographic_algorithm: Option<u32>,
    pub cryptographic_length: Option<i32>,
    /// Every pair must be present in the object's index.
    pub index: Vec<(String, String)>,
    /// `Some(false)`: leave out destroyed objects (State Destroyed or Destroyed
    /// Compromised); `Some(true)`: only those; `None`: either.
    pub destroyed: Option<bool>,
    /// Newest first (Locate's order) instead of oldest first.
    pub newest_first: bool,
    /// Skip this many matches (in the order above).
    pub offset: usize,
    /// Return at most this many; `None` for all.
    pub limit: Option<usize>,
}

/// A change to an object, published so every keysvc replica can drop its cached copy.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ObjectChanged {
    pub tenant: TenantId,
    pub uid: String,
}

/// What a store publishes to the caches that follow it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum StoreEvent {
    /// One object changed: drop its cached copy.
    Changed(ObjectChanged),
    /// Changes may have been missed (the PostgreSQL change feed lost its connection and
    /// reconnected): every cached object may be stale.
    Missed,
}

/// A root key's check value as recorded in the database: proof, without the key, that a
/// key loaded under this id has the bytes the database's objects were sealed with.
#[derive(Clone, PartialEq, Eq)]
pub struct RootKeyCheck {
    pub root_key_id: String,
    /// HMAC of a fixed label under a key derived from the root key (never the key).
    pub check_value: Vec<u8>,
    /// Rows written before records were authenticated may be read under this key (see
    /// `engine::object`); part of what the check value authenticates.
    pub legacy_rows: bool,
}

impl fmt::Debug for RootKeyCheck {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RootKeyCheck")
            .field("root_key_id", &self.root_key_id)
            .field("legacy_rows", &self.legacy_rows)
            .finish_non_exhaustive()
    }
}

/// Why a store operation failed. Messages never contain key material.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum StoreError {
    #[error("database unavailable: {0}")]
    Unavailable(String),
    #[error("object {0} already exists")]
    Duplicate(String),
    #[error("object {0} does not exist")]
    NotFound(String),
    /// The stored object is not the version the update was based on: it changed since it
    /// was read. Nothing was written.
    #[error("object {0} was changed concurrently")]
    Conflict(String),
    /// The runtime role could bypass Row-Level Security; keysvc refuses to start.
    #[error("unsafe database role: {0}")]
    UnsafeRole(String),
    #[error("migration failed: {0}")]
    Migration(String),
    #[error("database error: {0}")]
    Database(String),
}

/// A key store. Cheap to share (`Arc`); every request opens its own [`Transaction`].
#[async_trait::async_trait]
pub trait Store: Send + Sync + fmt::Debug + 'static {
    /// Opens the unit of work for one request of `ctx.tenant` (in `ctx.database` if set).
    async fn begin(&self, ctx: &TenantContext) -> Result<Box<dyn Transaction>, StoreError>;

    /// Whether the database answers (readiness).
    async fn ready(&self) -> Result<(), StoreError>;

    /// Tenants that own at least one object (for `rotate-root`, which must visit each).
    /// PostgreSQL answers this only to a store holding the owner's connection: the runtime
    /// role cannot read the tenant list.
    async fn tenants(&self) -> Result<Vec<TenantId>, StoreError>;

    /// The root key check values recorded in the (main) database.
    async fn root_key_checks(&self) -> Result<Vec<RootKeyCheck>, StoreError>;

    /// Records a root key's check value unless one is recorded for its id already (then
    /// nothing changes: the caller re-reads and compares).
    async fn record_root_key_check(&self, check: &RootKeyCheck) -> Result<(), StoreError>;

    /// Whether the database held objects when authenticated records were introduced
    /// (decided once, by the migration).
    async fn predates_integrity(&self) -> Result<bool, StoreError>;

    /// Changes made by any process sharing this database (PostgreSQL LISTEN/NOTIFY), or by
    /// this process only (SQLite).
    fn subscribe(&self) -> broadcast::Receiver<StoreEvent>;

    /// The main connection pool's connections, for metrics; `None` for a store without a
    /// pool worth reporting (SQLite has one writer connection).
    fn pool_connections(&self) -> Option<PoolConnections> {
        None
    }
}

/// Connections of a pool at one moment.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PoolConnections {
    pub in_use: u32,
    pub idle: u32,
}

/// One request's view of one tenant's objects.
#[async_trait::async_trait]
pub trait Transaction: Send {
    async fn insert(&mut self, record: &ObjectRecord) -> Result<(), StoreError>;
    /// `None` for a missing object and for another tenant's object alike.
    async fn get(&mut self, uid: &str) -> Result<Option<ObjectRecord>, StoreError>;
    /// [`Transaction::get`] for a read that will be followed by an update: the row stays
    /// locked until the transaction ends, so two requests changing one object (on any
    /// replica) run one after the other instead of the later write silently undoing the
    /// earlier one. The default suits a store whose transactions already exclude each other
    /// (SQLite: one writer).
    async fn get_for_update(&mut self, uid: &str) -> Result<Option<ObjectRecord>, StoreError> {
        self.get(uid).await
    }
    /// Replaces the record with the same uid, provided the stored one is at version
    /// `record.version - 1`; `NotFound` if it is not this tenant's, `Conflict` if its
    /// version differs (changed since it was read).
    async fn update(&mut self, record: &ObjectRecord) -> Result<(), StoreError>;
    /// Uids matching the filter, in creation order (newest first if the filter says so),
    /// the filter's page only: offset and limit are applied by the database.
    async fn locate(&mut self, filter: &LocateFilter) -> Result<Vec<String>, StoreError>;
    /// How many objects match the filter, its page ignored (Locate's Located Items).
    async fn count(&mut self, filter: &LocateFilter) -> Result<usize, StoreError>;
    /// Makes the request's changes durable and publishes them; dropping without commit
    /// rolls back.
    async fn commit(self: Box<Self>) -> Result<(), StoreError>;
}
