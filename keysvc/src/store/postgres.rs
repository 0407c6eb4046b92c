//! PostgreSQL store: shared by every keysvc replica, isolated per tenant by row-level security.
//!
//! ```text
//!  begin(ctx) ──► pool (main database, or ctx.database's own pool, created on first use)
//!                  BEGIN; SELECT set_config('app.current_tenant', tenant, true)
//!                  … statements: every table FORCE ROW LEVEL SECURITY, policy on the setting
//!  commit     ──► pg_notify('openkcm_object_changed', 'tenant:uid') per change; COMMIT
//!                  └─► every replica's listener ──► subscribe()
//! ```
//!
//! Statements still name the tenant explicitly (and the policies' WITH CHECK refuses a row
//! for another tenant), so RLS is a second, independent wall rather than the only one.
//! keysvc runs as a role that owns no table and has no BYPASSRLS: [`PostgresStore::connect`]
//! checks that, and that the tables force RLS, before serving anything. [`migrate`] creates
//! the schema as the owner and grants the app role what it needs.
//!
//! Dedicated databases (a route's `database`) live on the same server and are reached with
//! the same credentials. Their pools are created on first use and kept in a map of at most
//! [`PostgresOptions::max_dedicated_pools`] (least recently used evicted). Before a pool
//! serves, the role and schema checks run on that database too. A store from
//! [`PostgresStore::connect_dev`] holds owner rights, so it creates and migrates a missing
//! dedicated database; a production store requires it to have been migrated (`openkcm keysvc
//! migrate --database …/NAME`) and refuses it otherwise.
//!
//! Change notifications of a dedicated database are sent on the main database, right after
//! the dedicated transaction commits, so one listener per replica hears every database. A
//! crash between that COMMIT and the NOTIFY loses the notification (other replicas keep a
//! stale cache entry until it is evicted); in the main database NOTIFY is transactional.
//!
//! TLS: every URL (runtime, dev, owner) keeps libpq's `sslmode`, `sslrootcert`, `sslcert` and
//! `sslkey`; [`check_url`] refuses, before anything connects, what the driver would not
//! honour as libpq does. sqlx reads the three files at every TLS handshake, so every new
//! connection (pools, dedicated pools, the listener's reconnects) uses the files as they are
//! then: a renewed client certificate needs no restart.
//!
//! The `tenants` table lists tenant ids for `rotate-root`. It is under forced RLS like the
//! others: the runtime role reads a tenant's row only with that tenant set, so it cannot
//! enumerate tenants. Listing them ([`Store::tenants`]) takes the owner's connection: a dev
//! store has it, a production store has it when opened by
//! [`PostgresStore::connect_with_owner`] (`rotate-root --owner-database`).

mod listener;
mod lru;
mod roles;
mod tls;

use std::collections::HashSet;
use std::fmt;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use sqlx::postgres::{PgArguments, PgConnectOptions, PgPool, PgPoolOptions};
use sqlx::{Postgres, Row};
use tokio::sync::broadcast;
use tokio::task::JoinHandle;

use self::lru::Lru;
use self::roles::{parse_url, unavailable};
use super::columns::locate_query;
use super::columns::{
    db_error, enum_from_sql, enum_to_sql, material_from_sql, material_to_sql,
    optional_enum_from_sql, order_clause, page, position, root_key_checks, RootKeyRow,
    CHANGES_CAPACITY, SELECT_ROOT_KEYS,
};
use super::{LocateFilter, ObjectRecord, RootKeyCheck, Store, StoreError, StoreEvent, Transaction};
use crate::tenant::{DatabaseName, TenantContext, TenantId};

pub use self::tls::check_url;

/// The login role [`PostgresStore::connect_dev`] creates and runs as.
pub const DEV_APP_ROLE: &str = "openkcm_app";

/// Tenants known to be registered in a database's `tenants` table, remembered so a Create
/// does not re-insert its tenant every time. Past this many the memory is simply cleared:
/// re-registering is an idempotent insert.
const MAX_KNOWN_TENANTS: usize = 100_000;

/// Pool sizes and limits.
///
/// Worst-case connections per replica: `max_connections` + `max_dedicated_pools` ×
/// `dedicated_max_connections` + 2 (listener); with the defaults 16 + 64 × 4 + 2 = 274.
/// Dedicated pools close idle connections after `dedicated_idle_timeout`, so in practice
/// only busy silo tenants hold connections; size the server's `max_connections` (or these
/// limits) for the number of replicas.
#[derive(Clone, Debug)]
pub struct PostgresOptions {
    /// Connections to the main database. 16 keeps two cores busy while others wait on I/O.
    pub max_connections: u32,
    /// How long `begin` waits for a free connection before answering `Unavailable`.
    pub acquire_timeout: Duration,
    /// Dedicated-database pools kept open at once.
    pub max_dedicated_pools: usize,
    /// Connections per dedicated database: one silo tenant's load.
    pub dedicated_max_connections: u32,
    /// Idle connections of a dedicated pool close after this long.
    pub dedicated_idle_timeout: Duration,
}

impl Default for PostgresOptions {
    fn default() -> Self {
        Self {
            max_connections: 16,
            acquire_timeout: Duration::from_secs(5),
            max_dedicated_pools: 64,
            dedicated_max_connections: 4,
            dedicated_idle_timeout: Duration::from_secs(60),
        }
    }
}

/// Runs the migrations on the database of `owner_url`, connected as its owner, and grants
/// `app_role` (which must exist and be a plain role) SELECT/INSERT/UPDATE on the tables,
/// DELETE on `object_index` only (an update replaces its rows) and USAGE on the sequence.
/// Idempotent; concurrent runs serialise on an advisory lock.
pub async fn migrate(owner_url: &str, app_role: &str) -> Result<(), StoreError> {
    roles::migrate_with(&parse_url(owner_url)?, app_role).await
}

/// Key store on PostgreSQL (`postgres://…`), with row-level security per tenant.
pub struct PostgresStore {
    inner: Arc<Inner>,
}

struct Inner {
    main: PgPool,
    /// The app role's options for the main database; dedicated pools change the database.
    app: PgConnectOptions,
    /// Dev stores only: owner rights, to create and migrate dedicated databases.
    owner: Option<PgConnectOptions>,
    options: PostgresOptions,
    dedicated: Mutex<Lru<DatabaseName, PgPool>>,
    /// Serialises the creation of dedicated pools (rare), so two requests for a new
    /// database do not both create it.
    opening: tokio::sync::Mutex<()>,
    known_tenants: Mutex<HashSet<(Option<DatabaseName>, TenantId)>>,
    changes: broadcast::Sender<StoreEvent>,
    listener: JoinHandle<()>,
    /// The owner's connection options, for listing tenants (dev stores, rotate-root).
    lister: Option<PgConnectOptions>,
}

impl Drop for Inner {
    fn drop(&mut self) {
        self.listener.abort();
    }
}

fn locked<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    // The guarded maps stay consistent even if a holder panicked.
    mutex.lock().unwrap_or_else(PoisonError::into_inner)
}

impl PostgresStore {
    /// Connects as the runtime (app) role of `url`. Refuses with [`StoreError::UnsafeRole`] a
    /// role that is superuser, has BYPASSRLS, belongs to such a role or owns a table, and
    /// with [`StoreError::Migration`] a database that is not migrated.
    pub async fn connect(url: &str, options: PostgresOptions) -> Result<Self, StoreError> {
        Self::start(parse_url(url)?, None, None, options).await
    }

    /// [`PostgresStore::connect`], plus the table owner's URL, used only to list tenants
    /// (`rotate-root`): the runtime role cannot read the tenant list. The owner connection
    /// is opened per listing and closed after it.
    pub async fn connect_with_owner(
        url: &str,
        owner_url: &str,
        options: PostgresOptions,
    ) -> Result<Self, StoreError> {
        Self::start(parse_url(url)?, None, Some(parse_url(owner_url)?), options).await
    }

    /// For the local dev stack, whose URL names a superuser (`postgres://postgres@…`):
    /// migrates as that role, creates the plain login role [`DEV_APP_ROLE`] if absent (with
    /// the URL's password, if it has one), grants it, and connects as it, so RLS applies.
    pub async fn connect_dev(url: &str) -> Result<Self, StoreError> {
        Self::connect_dev_with(url, PostgresOptions::default()).await
    }

    pub async fn connect_dev_with(url: &str, options: PostgresOptions) -> Result<Self, StoreError> {
        let owner = parse_url(url)?;
        let mut app_url = url::Url::parse(url)
            .map_err(|e| StoreError::Database(format!("bad PostgreSQL URL: {e}")))?;
        let password = app_url.password().map(|p| {
            percent_encoding::percent_decode_str(p)
                .decode_utf8_lossy()
                .into_owned()
        });
        app_url
            .set_username(DEV_APP_ROLE)
            .map_err(|()| StoreError::Database("PostgreSQL URL cannot carry a user name".into()))?;

        let mut conn = sqlx::Connection::connect_with(&owner)
            .await
            .map_err(unavailable)?;
        let created = roles::ensure_login_role(&mut conn, DEV_APP_ROLE, password.as_deref()).await;
        let _ = sqlx::Connection::close(conn).await;
        created?;
        roles::migrate_with(&owner, DEV_APP_ROLE).await?;
        Self::start(
            parse_url(app_url.as_str())?,
            Some(owner.clone()),
            Some(owner),
            options,
        )
        .await
    }

    async fn start(
        app: PgConnectOptions,
        owner: Option<PgConnectOptions>,
        lister: Option<PgConnectOptions>,
        options: PostgresOptions,
    ) -> Result<Self, StoreError> {
        let main = PgPoolOptions::new()
            .max_connections(options.max_connections)
            .acquire_timeout(options.acquire_timeout)
            // sqlx pings every connection as it returns to the pool and drops broken ones;
            // pinging again on the way out costs a round trip per request (here it halved
            // the Create rate). `begin` retries instead when a connection turns out dead.
            .test_before_acquire(false)
            .connect_with(app.clone())
            .await
            .map_err(unavailable)?;
        if let Err(refused) = verify(&main).await {
            main.close().await;
            return Err(refused);
        }
        let (changes, _) = broadcast::channel(CHANGES_CAPACITY);
        let listener = match listener::start(&app, changes.clone()).await {
            Ok(listener) => listener,
            Err(e) => {
                main.close().await;
                return Err(e);
            }
        };
        Ok(Self {
            inner: Arc::new(Inner {
                main,
                app,
                owner,
                dedicated: Mutex::new(Lru::new(options.max_dedicated_pools)),
                options,
                opening: tokio::sync::Mutex::new(()),
                known_tenants: Mutex::new(HashSet::new()),
                changes,
                listener,
                lister,
            }),
        })
    }

    /// The role the store runs as (`current_user` of its connections).
    pub async fn connected_role(&self) -> Result<String, StoreError> {
        sqlx::query_scalar("SELECT current_user::text")
            .fetch_one(&self.inner.main)
            .await
            .map_err(db_error)
    }

    /// The pool for the main database or for a dedicated one, opening the latter on first
    /// use (see the module docs).
    async fn pool(&self, database: Option<&DatabaseName>) -> Result<PgPool, StoreError> {
        let Some(name) = database else {
            return Ok(self.inner.main.clone());
        };
        if let Some(pool) = locked(&self.inner.dedicated).get(name) {
            return Ok(pool);
        }
        let _opening = self.inner.opening.lock().await;
        if let Some(pool) = locked(&self.inner.dedicated).get(name) {
            return Ok(pool);
        }
        let pool = self.open_dedicated(name).await?;
        let evicted = locked(&self.inner.dedicated).insert(name.clone(), pool.clone());
        if let Some(evicted) = evicted {
            // Waits for the evicted pool's transactions in flight, off the request path.
            tokio::spawn(async move { evicted.close().await });
        }
        Ok(pool)
    }

    async fn open_dedicated(&self, name: &DatabaseName) -> Result<PgPool, StoreError> {
        if let Some(owner) = &self.inner.owner {
            roles::ensure_database(owner, name.as_str()).await?;
            roles::migrate_with(&owner.clone().database(name.as_str()), DEV_APP_ROLE).await?;
        }
        let options = &self.inner.options;
        let pool = PgPoolOptions::new()
            .max_connections(options.dedicated_max_connections)
            .min_connections(0)
            .test_before_acquire(false)
            .idle_timeout(Some(options.dedicated_idle_timeout))
            .acquire_timeout(options.acquire_timeout)
            .connect_with(self.inner.app.clone().database(name.as_str()))
            .await
            .map_err(|e| match e.as_database_error().and_then(|d| d.code()) {
                Some(code) if code == "3D000" => StoreError::Migration(format!(
                    "dedicated database {} does not exist: create it and run \
                     `openkcm keysvc migrate` on it",
                    name.as_str()
                )),
                _ => unavailable(e),
            })?;
        if let Err(refused) = verify(&pool).await {
            pool.close().await;
            return Err(refused);
        }
        Ok(pool)
    }

    fn knows_tenant(&self, database: &Option<DatabaseName>, tenant: &TenantId) -> bool {
        locked(&self.inner.known_tenants).contains(&(database.clone(), tenant.clone()))
    }

    fn remember_tenant(&self, database: Option<DatabaseName>, tenant: TenantId) {
        let mut known = locked(&self.inner.known_tenants);
        if known.len() >= MAX_KNOWN_TENANTS {
            known.clear();
        }
        known.insert((database, tenant));
    }
}

/// Starts a transaction whose statements all run as `tenant` under row-level security:
/// the setting is transaction-local, so it ends with the transaction and never leaks to
/// the connection's next user.
async fn begin_as(
    pool: &PgPool,
    tenant: &TenantId,
) -> Result<sqlx::Transaction<'static, Postgres>, sqlx::Error> {
    let mut tx = pool.begin().await?;
    sqlx::query("SELECT set_config('app.current_tenant', $1, true)")
        .bind(tenant.as_str())
        .execute(&mut *tx)
        .await?;
    Ok(tx)
}

/// The connection is gone: an I/O error, or the server ended the session (SQLSTATE class
/// 57, operator intervention, e.g. `pg_terminate_backend` or a shutdown; class 08,
/// connection exception).
fn connection_lost(error: &sqlx::Error) -> bool {
    match error {
        sqlx::Error::Io(_) => true,
        sqlx::Error::Database(e) => e
            .code()
            .is_some_and(|code| code.starts_with("57") || code.starts_with("08")),
        _ => false,
    }
}

/// The start-up checks, on one connection of `pool`.
async fn verify(pool: &PgPool) -> Result<(), StoreError> {
    let mut conn = pool.acquire().await.map_err(unavailable)?;
    roles::check_role(&mut conn).await?;
    roles::check_schema(&mut conn).await
}

impl fmt::Debug for PostgresStore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // Connection options hold the password: print only what identifies the store.
        f.debug_struct("PostgresStore")
            .field("host", &self.inner.app.get_host())
            .field("database", &self.inner.app.get_database())
            .field("role", &self.inner.app.get_username())
            .field("dev", &self.inner.owner.is_some())
            .finish_non_exhaustive()
    }
}

#[async_trait::async_trait]
impl Store for PostgresStore {
    async fn begin(&self, ctx: &TenantContext) -> Result<Box<dyn Transaction>, StoreError> {
        let pool = self.pool(ctx.database.as_ref()).await?;
        // Connections that died while idle in the pool (server restart, failover) fail
        // their first statement; nothing of the request has run yet, so retrying on the
        // next connection is safe, at most once per connection the pool can hold.
        let mut attempts = pool.options().get_max_connections();
        let tx = loop {
            match begin_as(&pool, &ctx.tenant).await {
                Err(e) if attempts > 0 && connection_lost(&e) => attempts -= 1,
                started => break started.map_err(db_error)?,
            }
        };
        Ok(Box::new(PgTransaction {
            tx,
            store: Self {
                inner: Arc::clone(&self.inner),
            },
            tenant: ctx.tenant.clone(),
            database: ctx.database.clone(),
            registered_tenant: false,
            failed: false,
            changed: Vec::new(),
        }))
    }

    async fn ready(&self) -> Result<(), StoreError> {
        sqlx::query("SELECT 1")
            .execute(&self.inner.main)
            .await
            .map(drop)
            .map_err(db_error)
    }

    async fn tenants(&self) -> Result<Vec<TenantId>, StoreError> {
        // Tenants of the main database; silo tenants are known from their routes. The
        // runtime role sees no row without a tenant set: only the owner can list them.
        let Some(owner) = &self.inner.lister else {
            return Err(StoreError::Database(
                "listing tenants needs the table owner's connection (rotate-root \
                 --owner-database URL): the runtime role cannot read the tenant list"
                    .into(),
            ));
        };
        let mut conn = <sqlx::postgres::PgConnection as sqlx::Connection>::connect_with(owner)
            .await
            .map_err(unavailable)?;
        let ids = sqlx::query_scalar::<_, String>("SELECT tenant_id FROM tenants ORDER BY 1")
            .fetch_all(&mut conn)
            .await
            .map_err(db_error);
        let _ = sqlx::Connection::close(conn).await;
        ids?.iter()
            .map(|id| TenantId::parse(id).map_err(|e| StoreError::Database(e.to_string())))
            .collect()
    }

    async fn root_key_checks(&self) -> Result<Vec<RootKeyCheck>, StoreError> {
        let rows: Vec<RootKeyRow> = sqlx::query_as(SELECT_ROOT_KEYS)
            .fetch_all(&self.inner.main)
            .await
            .map_err(db_error)?;
        Ok(root_key_checks(rows))
    }

    async fn record_root_key_check(&self, check: &RootKeyCheck) -> Result<(), StoreError> {
        sqlx::query(
            "INSERT INTO root_keys (root_key_id, check_value, legacy_rows, recorded_at) \
             VALUES ($1, $2, $3, extract(epoch FROM now())::bigint) \
             ON CONFLICT (root_key_id) DO NOTHING",
        )
        .bind(check.root_key_id.as_str())
        .bind(check.check_value.as_slice())
        .bind(check.legacy_rows)
        .execute(&self.inner.main)
        .await
        .map(drop)
        .map_err(db_error)
    }

    async fn predates_integrity(&self) -> Result<bool, StoreError> {
        sqlx::query_scalar("SELECT bool_or(legacy_rows) IS TRUE FROM integrity_upgrade")
            .fetch_one(&self.inner.main)
            .await
            .map_err(db_error)
    }

    fn subscribe(&self) -> broadcast::Receiver<StoreEvent> {
        self.inner.changes.subscribe()
    }

    fn pool_connections(&self) -> Option<super::PoolConnections> {
        let size = self.inner.main.size();
        let idle = u32::try_from(self.inner.main.num_idle())
            .unwrap_or(u32::MAX)
            .min(size);
        Some(super::PoolConnections {
            in_use: size - idle,
            idle,
        })
    }
}

/// One request: a PostgreSQL transaction with `app.current_tenant` set.
struct PgTransaction {
    tx: sqlx::Transaction<'static, Postgres>,
    store: PostgresStore,
    tenant: TenantId,
    database: Option<DatabaseName>,
    /// This transaction inserted the tenant into `tenants`; remembered once committed.
    registered_tenant: bool,
    /// A statement failed: PostgreSQL has aborted the transaction, and a COMMIT would
    /// silently roll back, so `commit` must answer with an error.
    failed: bool,
    changed: Vec<String>,
}

// Statements name the tenant as $1 even though RLS would filter without it.
const REGISTER_TENANT: &str = "INSERT INTO tenants (tenant_id) VALUES ($1) ON CONFLICT DO NOTHING";
const INSERT_OBJECT: &str = "INSERT INTO objects (tenant_id, uid, object_type, state, \
     cryptographic_algorithm, cryptographic_length, attributes, root_key_id, material, \
     created_at, version, integrity) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, \
     $12) \
     ON CONFLICT (tenant_id, uid) DO NOTHING";
/// Applies only over the version the record was based on (`version - 1`).
const UPDATE_OBJECT: &str = "UPDATE objects SET object_type = $3, state = $4, \
     cryptographic_algorithm = $5, cryptographic_length = $6, attributes = $7, \
     root_key_id = $8, material = $9, created_at = $10, version = $11, integrity = $12 \
     WHERE tenant_id = $1 AND uid = $2 AND version = $11 - 1";
const OBJECT_EXISTS: &str =
    "SELECT EXISTS (SELECT 1 FROM objects WHERE tenant_id = $1 AND uid = $2)";
/// One object with its index rows (a macro, so the locking variant can extend the text).
macro_rules! get_object_sql {
    () => {
        "SELECT o.object_type, o.state, o.cryptographic_algorithm, \
         o.cryptographic_length, o.attributes, o.root_key_id, o.material, o.created_at, \
         o.version, o.integrity, ARRAY(SELECT i.name FROM object_index i WHERE i.tenant_id = o.tenant_id \
               AND i.uid = o.uid ORDER BY i.position) AS index_names, \
         ARRAY(SELECT i.value FROM object_index i WHERE i.tenant_id = o.tenant_id \
               AND i.uid = o.uid ORDER BY i.position) AS index_values \
         FROM objects o WHERE o.tenant_id = $1 AND o.uid = $2"
    };
}
const GET_OBJECT: &str = get_object_sql!();
/// [`GET_OBJECT`] locking the object's row until the transaction ends.
const GET_OBJECT_FOR_UPDATE: &str = concat!(get_object_sql!(), " FOR UPDATE OF o");
const DELETE_INDEX: &str = "DELETE FROM object_index WHERE tenant_id = $1 AND uid = $2";
const INSERT_INDEX: &str = "INSERT INTO object_index (tenant_id, uid, position, name, value) \
     SELECT $1, $2, t.position, t.name, t.value \
     FROM UNNEST($3::int4[], $4::text[], $5::text[]) AS t(position, name, value)";
const NOTIFY: &str = "SELECT pg_notify($1, $2 || ':' || uid) FROM UNNEST($3::text[]) AS uid";

type PgQuery<'q> = sqlx::query::Query<'q, Postgres, PgArguments>;

/// Binds $1..$12 of [`INSERT_OBJECT`] and [`UPDATE_OBJECT`].
fn bind_record<'q>(sql: &'q str, tenant: &'q str, record: &'q ObjectRecord) -> PgQuery<'q> {
    let (root_key_id, material) = material_to_sql(record.material.as_ref());
    sqlx::query(sql)
        .bind(tenant)
        .bind(record.uid.as_str())
        .bind(enum_to_sql(record.object_type))
        .bind(enum_to_sql(record.state))
        .bind(record.cryptographic_algorithm.map(enum_to_sql))
        .bind(record.cryptographic_length)
        .bind(record.attributes.as_slice())
        .bind(root_key_id)
        .bind(material)
        .bind(record.created_at)
        .bind(record.version)
        .bind(record.integrity.as_deref())
}

/// Sends one change notification per uid (delivered when the surrounding transaction, if
/// any, commits).
async fn notify<'e>(
    executor: impl sqlx::PgExecutor<'e>,
    tenant: &TenantId,
    uids: &[String],
) -> Result<(), sqlx::Error> {
    sqlx::query(NOTIFY)
        .bind(listener::CHANNEL)
        .bind(tenant.as_str())
        .bind(uids)
        .execute(executor)
        .await
        .map(drop)
}

impl PgTransaction {
    async fn fetch_object(
        &mut self,
        sql: &'static str,
        uid: &str,
    ) -> Result<Option<ObjectRecord>, StoreError> {
        self.usable()?;
        let row = sqlx::query(sql)
            .bind(self.tenant.as_str())
            .bind(uid)
            .fetch_optional(&mut *self.tx)
            .await;
        match self.track(row)? {
            Some(row) => Self::record_from_row(uid, &row).map(Some),
            None => Ok(None),
        }
    }

    fn usable(&self) -> Result<(), StoreError> {
        if self.failed {
            return Err(StoreError::Database(
                "an earlier statement of this transaction failed".into(),
            ));
        }
        Ok(())
    }

    /// Records the outcome of a statement: an error aborts the transaction.
    fn track<T>(&mut self, result: Result<T, sqlx::Error>) -> Result<T, StoreError> {
        result.map_err(|e| {
            self.failed = true;
            db_error(e)
        })
    }

    async fn insert_index(
        &mut self,
        uid: &str,
        index: &[(String, String)],
    ) -> Result<(), StoreError> {
        if index.is_empty() {
            return Ok(());
        }
        position(index.len())?;
        let positions: Vec<i32> = (0..index.len())
            .map(|i| position(i).unwrap_or(i32::MAX))
            .collect();
        let names: Vec<&str> = index.iter().map(|(name, _)| name.as_str()).collect();
        let values: Vec<&str> = index.iter().map(|(_, value)| value.as_str()).collect();
        let inserted = sqlx::query(INSERT_INDEX)
            .bind(self.tenant.as_str())
            .bind(uid)
            .bind(positions)
            .bind(names)
            .bind(values)
            .execute(&mut *self.tx)
            .await;
        self.track(inserted).map(drop)
    }

    fn record_from_row(uid: &str, row: &sqlx::postgres::PgRow) -> Result<ObjectRecord, StoreError> {
        let names: Vec<String> = row.try_get("index_names").map_err(db_error)?;
        let values: Vec<String> = row.try_get("index_values").map_err(db_error)?;
        Ok(ObjectRecord {
            uid: uid.to_owned(),
            object_type: enum_from_sql(
                "object_type",
                row.try_get("object_type").map_err(db_error)?,
            )?,
            state: enum_from_sql("state", row.try_get("state").map_err(db_error)?)?,
            cryptographic_algorithm: optional_enum_from_sql(
                "cryptographic_algorithm",
                row.try_get("cryptographic_algorithm").map_err(db_error)?,
            )?,
            cryptographic_length: row.try_get("cryptographic_length").map_err(db_error)?,
            index: names.into_iter().zip(values).collect(),
            attributes: row.try_get("attributes").map_err(db_error)?,
            material: material_from_sql(
                uid,
                row.try_get("root_key_id").map_err(db_error)?,
                row.try_get("material").map_err(db_error)?,
            )?,
            created_at: row.try_get("created_at").map_err(db_error)?,
            version: row.try_get("version").map_err(db_error)?,
            integrity: row.try_get("integrity").map_err(db_error)?,
        })
    }
}

#[async_trait::async_trait]
impl Transaction for PgTransaction {
    async fn insert(&mut self, record: &ObjectRecord) -> Result<(), StoreError> {
        self.usable()?;
        if !self.registered_tenant && !self.store.knows_tenant(&self.database, &self.tenant) {
            let registered = sqlx::query(REGISTER_TENANT)
                .bind(self.tenant.as_str())
                .execute(&mut *self.tx)
                .await;
            self.track(registered)?;
            self.registered_tenant = true;
        }
        let inserted = bind_record(INSERT_OBJECT, self.tenant.as_str(), record)
            .execute(&mut *self.tx)
            .await;
        if self.track(inserted)?.rows_affected() == 0 {
            return Err(StoreError::Duplicate(record.uid.clone()));
        }
        self.insert_index(&record.uid, &record.index).await?;
        self.changed.push(record.uid.clone());
        Ok(())
    }

    async fn get(&mut self, uid: &str) -> Result<Option<ObjectRecord>, StoreError> {
        self.fetch_object(GET_OBJECT, uid).await
    }

    async fn get_for_update(&mut self, uid: &str) -> Result<Option<ObjectRecord>, StoreError> {
        self.fetch_object(GET_OBJECT_FOR_UPDATE, uid).await
    }

    async fn update(&mut self, record: &ObjectRecord) -> Result<(), StoreError> {
        self.usable()?;
        let updated = bind_record(UPDATE_OBJECT, self.tenant.as_str(), record)
            .execute(&mut *self.tx)
            .await;
        if self.track(updated)?.rows_affected() == 0 {
            let exists = sqlx::query_scalar::<_, bool>(OBJECT_EXISTS)
                .bind(self.tenant.as_str())
                .bind(record.uid.as_str())
                .fetch_one(&mut *self.tx)
                .await;
            return Err(if self.track(exists)? {
                StoreError::Conflict(record.uid.clone())
            } else {
                StoreError::NotFound(record.uid.clone())
            });
        }
        let deleted = sqlx::query(DELETE_INDEX)
            .bind(self.tenant.as_str())
            .bind(record.uid.as_str())
            .execute(&mut *self.tx)
            .await;
        self.track(deleted)?;
        self.insert_index(&record.uid, &record.index).await?;
        self.changed.push(record.uid.clone());
        Ok(())
    }

    async fn locate(&mut self, filter: &LocateFilter) -> Result<Vec<String>, StoreError> {
        self.usable()?;
        let mut query = locate_query::<Postgres>("SELECT uid", self.tenant.as_str(), filter);
        let (limit, offset) = page(filter);
        query.push(order_clause(filter));
        if let Some(limit) = limit {
            query.push(" LIMIT ").push_bind(limit);
        }
        query.push(" OFFSET ").push_bind(offset);
        let uids = query.build_query_scalar().fetch_all(&mut *self.tx).await;
        self.track(uids)
    }

    async fn count(&mut self, filter: &LocateFilter) -> Result<usize, StoreError> {
        self.usable()?;
        let mut query = locate_query::<Postgres>("SELECT COUNT(*)", self.tenant.as_str(), filter);
        let count: Result<i64, _> = query.build_query_scalar().fetch_one(&mut *self.tx).await;
        self.track(count).map(|n| usize::try_from(n).unwrap_or(0))
    }

    async fn commit(self: Box<Self>) -> Result<(), StoreError> {
        let PgTransaction {
            mut tx,
            store,
            tenant,
            database,
            registered_tenant,
            failed,
            changed,
        } = *self;
        if failed {
            // Dropping `tx` rolls back.
            return Err(StoreError::Database(
                "an earlier statement of this transaction failed; rolled back".into(),
            ));
        }
        if database.is_none() && !changed.is_empty() {
            notify(&mut *tx, &tenant, &changed)
                .await
                .map_err(db_error)?;
        }
        tx.commit().await.map_err(db_error)?;
        if registered_tenant {
            store.remember_tenant(database.clone(), tenant.clone());
        }
        if database.is_some() && !changed.is_empty() {
            if let Err(error) = notify(&store.inner.main, &tenant, &changed).await {
                // The change is committed; failing the request now would mislead the client.
                tracing::warn!(%error, tenant = %tenant, "change notification for a dedicated database was not sent");
            }
        }
        Ok(())
    }
}
