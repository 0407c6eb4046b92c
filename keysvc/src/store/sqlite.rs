//! SQLite store, the embedded default: one file, one writer, commits grouped per fsync.
//!
//! ```text
//!  begin ──► writer queue (FIFO async mutex) ──► one connection
//!              batch: BEGIN IMMEDIATE (opened by the first request after a COMMIT)
//!                ├─ request 1: SAVEPOINT request … statements … RELEASE request
//!                ├─ request 2: SAVEPOINT request … (dropped: ROLLBACK TO request)
//!                └─ request 3: …
//!  commit ──► a closer task queues behind them ──► COMMIT: one fsync for the whole batch,
//!             then wakes every request waiting on it and publishes their changes
//! ```
//!
//! At most one closer waits for the writer at a time: a request that commits while one is
//! queued was ahead of it in the queue, so that closer's COMMIT covers it. (With a closer
//! per request, the closers interleaved with new requests and each committed the few
//! requests since the previous one: many small fsyncs instead of a few large ones.)
//!
//! Why one writer rather than a pool of writers: SQLite has one write lock per file, and
//! writers competing for it through `busy_timeout` sleep in millisecond steps; an async queue
//! hands it over in microseconds. Every transaction takes the write side from its start,
//! because the engine reads then writes (Modify, Activate, Revoke): a deferred read
//! transaction that later writes fails with `SQLITE_BUSY_SNAPSHOT` whenever another write
//! came in between, which the store cannot retry on the engine's behalf.
//!
//! Statements take microseconds; what costs is the fsync that `synchronous=FULL` does at
//! COMMIT, which makes an acknowledged Create survive `kill -9` and power loss. So requests
//! that queue behind one another share one COMMIT, and a request's `commit` returns only once
//! the COMMIT containing it is durable. A request that only read, from a batch nobody has
//! written to, returns at once. Two small reader connections serve `ready` and `tenants`
//! without queueing behind writes.
//!
//! SQLite has no row-level security, so every statement binds the tenant: all SQL that
//! touches tenant data lives in [`TenantRows`], which only a transaction's own tenant builds.

use std::str::FromStr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use sqlx::sqlite::{
    SqliteConnectOptions, SqliteConnection, SqliteJournalMode, SqlitePool, SqlitePoolOptions,
    SqliteSynchronous,
};
use sqlx::{Connection, QueryBuilder, Row, Sqlite};
use tokio::sync::{broadcast, watch, Mutex, OwnedMutexGuard};

use super::columns::locate_query;
use super::columns::{
    db_error, enum_from_sql, enum_to_sql, material_from_sql, material_to_sql,
    optional_enum_from_sql, order_clause, page, position, root_key_checks, RootKeyRow,
    CHANGES_CAPACITY, INDEX_ROWS_PER_INSERT, SELECT_ROOT_KEYS,
};
use super::{
    LocateFilter, ObjectChanged, ObjectRecord, RootKeyCheck, Store, StoreError, StoreEvent,
    Transaction,
};
use crate::tenant::{TenantContext, TenantId};

/// How long a statement waits for another process's write lock on the file (a CLI run, a
/// second keysvc on the same file) before failing; inside one process requests queue on the
/// writer mutex instead.
const BUSY_TIMEOUT: Duration = Duration::from_secs(5);

/// How long `begin` waits for its turn at the writer. Requests hold it for microseconds, so
/// reaching this means a stuck request (or one task holding two transactions at once).
const WRITER_WAIT: Duration = Duration::from_secs(30);

/// Connections for `ready` and `tenants`: both are rare and short.
const READER_CONNECTIONS: u32 = 2;

/// The schema, in order; `PRAGMA user_version` records how many have been applied.
const MIGRATIONS: &[&str] = &[
    include_str!("../../migrations/sqlite/0001_objects.sql"),
    include_str!("../../migrations/sqlite/0002_versions.sql"),
    include_str!("../../migrations/sqlite/0003_root_keys.sql"),
    include_str!("../../migrations/sqlite/0004_integrity.sql"),
];

/// Embedded key store on one SQLite file (`sqlite://PATH`).
pub struct SqliteStore {
    shared: Arc<Shared>,
    readers: SqlitePool,
    path: String,
}

struct Shared {
    writer: Arc<Mutex<Writer>>,
    changes: broadcast::Sender<StoreEvent>,
    /// A closer is queued for the writer and has not taken it yet.
    closer_queued: AtomicBool,
}

/// What a batch's COMMIT came to; `None` until it ran.
type BatchOutcome = Option<Result<(), Arc<str>>>;

/// The SQLite transaction that the requests queued behind one another share.
struct Batch {
    /// Some request in the batch wrote. Later requests may have read its rows, so they wait
    /// for the COMMIT too before answering.
    dirty: bool,
    changes: Vec<ObjectChanged>,
    done: watch::Sender<BatchOutcome>,
}

/// The one connection that writes, and the state of the batch open on it.
struct Writer {
    conn: SqliteConnection,
    batch: Option<Batch>,
    /// A request was dropped inside its savepoint: undo it before anything else runs.
    abandoned: bool,
}

impl SqliteStore {
    /// Opens (creating if absent) the store at `sqlite://PATH`, `sqlite:PATH` or a plain path,
    /// and brings its schema up to date.
    pub async fn open(url_or_path: &str) -> Result<Self, StoreError> {
        if url_or_path.contains(":memory:") || url_or_path.contains("mode=memory") {
            // Every connection would get its own empty database.
            return Err(StoreError::Database(
                "the SQLite store needs a file, not an in-memory database".into(),
            ));
        }
        let options = if url_or_path.starts_with("sqlite:") {
            SqliteConnectOptions::from_str(url_or_path)
                .map_err(|e| StoreError::Database(format!("bad SQLite URL: {e}")))?
        } else {
            SqliteConnectOptions::new().filename(url_or_path)
        };
        let options = options
            .create_if_missing(true)
            .journal_mode(SqliteJournalMode::Wal)
            .synchronous(SqliteSynchronous::Full)
            .busy_timeout(BUSY_TIMEOUT)
            .foreign_keys(true);
        let path = options.get_filename().display().to_string();

        let mut conn = SqliteConnection::connect_with(&options)
            .await
            .map_err(|e| StoreError::Unavailable(format!("cannot open {path}: {e}")))?;
        migrate(&mut conn).await?;
        let readers = SqlitePoolOptions::new()
            .max_connections(READER_CONNECTIONS)
            .connect_lazy_with(options);
        let (changes, _) = broadcast::channel(CHANGES_CAPACITY);
        let writer = Writer {
            conn,
            batch: None,
            abandoned: false,
        };
        Ok(Self {
            shared: Arc::new(Shared {
                writer: Arc::new(Mutex::new(writer)),
                changes,
                closer_queued: AtomicBool::new(false),
            }),
            readers,
            path,
        })
    }
}

impl std::fmt::Debug for SqliteStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SqliteStore")
            .field("path", &self.path)
            .finish_non_exhaustive()
    }
}

async fn exec(conn: &mut SqliteConnection, sql: &str) -> Result<(), sqlx::Error> {
    sqlx::Executor::execute(conn, sql).await.map(drop)
}

/// Applies the migrations not yet applied, all in one write transaction, so two processes
/// opening a new file at once cannot both apply them.
async fn migrate(conn: &mut SqliteConnection) -> Result<(), StoreError> {
    let failed = |e: sqlx::Error| StoreError::Migration(e.to_string());
    exec(conn, "BEGIN IMMEDIATE").await.map_err(failed)?;
    let applied = apply_migrations(conn).await;
    let end = if applied.is_ok() {
        "COMMIT"
    } else {
        "ROLLBACK"
    };
    let ended = exec(conn, end).await.map_err(failed);
    applied.and(ended)
}

async fn apply_migrations(conn: &mut SqliteConnection) -> Result<(), StoreError> {
    let failed = |e: sqlx::Error| StoreError::Migration(e.to_string());
    let version: i64 = sqlx::query_scalar("PRAGMA user_version")
        .fetch_one(&mut *conn)
        .await
        .map_err(failed)?;
    let applied = usize::try_from(version).unwrap_or(usize::MAX);
    if applied > MIGRATIONS.len() {
        return Err(StoreError::Migration(format!(
            "schema version {version} is newer than this keysvc knows ({})",
            MIGRATIONS.len()
        )));
    }
    for (number, sql) in MIGRATIONS.iter().enumerate().skip(applied) {
        exec(conn, sql).await.map_err(failed)?;
        let version = format!("PRAGMA user_version = {}", number + 1);
        exec(conn, &version).await.map_err(failed)?;
    }
    Ok(())
}

impl Writer {
    /// Undoes an abandoned request, then joins the open batch (or opens one) and starts this
    /// request's savepoint.
    async fn start_request(&mut self) -> Result<(), StoreError> {
        self.settle().await;
        if self.batch.is_none() {
            if let Err(e) = exec(&mut self.conn, "BEGIN IMMEDIATE").await {
                // Leave the connection outside any transaction whatever went wrong.
                let _ = exec(&mut self.conn, "ROLLBACK").await;
                return Err(db_error(e));
            }
            let (done, _) = watch::channel(None);
            self.batch = Some(Batch {
                dirty: false,
                changes: Vec::new(),
                done,
            });
        }
        exec(&mut self.conn, "SAVEPOINT request")
            .await
            .map_err(db_error)
    }

    async fn settle(&mut self) {
        if std::mem::take(&mut self.abandoned) {
            if let Err(e) = exec(&mut self.conn, "ROLLBACK TO request; RELEASE request").await {
                self.fail_batch(&e.to_string()).await;
            }
        }
    }

    /// Commits the open batch, if any: one fsync for every request in it.
    async fn close_batch(&mut self, changes: &broadcast::Sender<StoreEvent>) {
        let Some(batch) = self.batch.take() else {
            return;
        };
        match exec(&mut self.conn, "COMMIT").await {
            Ok(()) => {
                for change in batch.changes {
                    // No receiver is fine: nobody caches yet.
                    let _ = changes.send(StoreEvent::Changed(change));
                }
                batch.done.send_replace(Some(Ok(())));
            }
            Err(e) => {
                let _ = exec(&mut self.conn, "ROLLBACK").await;
                batch.done.send_replace(Some(Err(e.to_string().into())));
            }
        }
    }

    /// Rolls the whole batch back and tells its requests; used when SQLite lost track of the
    /// request savepoint (it rolls a transaction back by itself after I/O errors).
    async fn fail_batch(&mut self, why: &str) {
        let _ = exec(&mut self.conn, "ROLLBACK").await;
        if let Some(batch) = self.batch.take() {
            batch.done.send_replace(Some(Err(why.into())));
        }
    }
}

/// Queues a task that undoes an abandoned request and commits the open batch, unless one is
/// queued already. Queued behind the requests already waiting for the writer, it lets them
/// join the batch first. Called after the caller's last statement (writer just released).
fn spawn_closer(shared: &Arc<Shared>) {
    // Outside a runtime (a transaction dropped by synchronous code) the next request closes
    // the batch instead.
    let Ok(runtime) = tokio::runtime::Handle::try_current() else {
        return;
    };
    // A queued closer has not taken the writer yet (it clears the flag once it has), so it
    // takes it after the caller's statements and commits them.
    if shared.closer_queued.swap(true, Ordering::AcqRel) {
        return;
    }
    let queued = CloserQueued(Arc::clone(shared));
    runtime.spawn(async move {
        let shared = Arc::clone(&queued.0);
        let mut writer = shared.writer.lock().await;
        // From here a request that commits runs after this COMMIT: it queues its own closer.
        drop(queued);
        writer.settle().await;
        writer.close_batch(&shared.changes).await;
    });
}

/// Clears [`Shared::closer_queued`] when the closer takes the writer, or when its task is
/// dropped before that (runtime shutdown): a flag left set would stop every later commit.
struct CloserQueued(Arc<Shared>);

impl Drop for CloserQueued {
    fn drop(&mut self) {
        self.0.closer_queued.store(false, Ordering::Release);
    }
}

#[async_trait::async_trait]
impl Store for SqliteStore {
    async fn begin(&self, ctx: &TenantContext) -> Result<Box<dyn Transaction>, StoreError> {
        if let Some(database) = &ctx.database {
            // Storing a silo tenant's keys in the shared file would quietly break the route's
            // promise; refuse instead.
            return Err(StoreError::Database(format!(
                "tenant {} is routed to dedicated database {}, which needs the PostgreSQL store",
                ctx.tenant,
                database.as_str()
            )));
        }
        let writer = Arc::clone(&self.shared.writer);
        let mut writer = tokio::time::timeout(WRITER_WAIT, writer.lock_owned())
            .await
            .map_err(|_| {
                StoreError::Unavailable("timed out waiting for the SQLite writer".into())
            })?;
        writer.start_request().await?;
        Ok(Box::new(SqliteTransaction {
            writer: Some(writer),
            shared: Arc::clone(&self.shared),
            tenant: ctx.tenant.clone(),
            wrote: false,
            failed: false,
            changed: Vec::new(),
        }))
    }

    async fn ready(&self) -> Result<(), StoreError> {
        sqlx::query("SELECT 1")
            .execute(&self.readers)
            .await
            .map(drop)
            .map_err(db_error)
    }

    async fn tenants(&self) -> Result<Vec<TenantId>, StoreError> {
        // The one query across tenants: rotate-root must visit each of them.
        let ids: Vec<String> =
            sqlx::query_scalar("SELECT DISTINCT tenant_id FROM objects ORDER BY tenant_id")
                .fetch_all(&self.readers)
                .await
                .map_err(db_error)?;
        ids.iter()
            .map(|id| TenantId::parse(id).map_err(|e| StoreError::Database(e.to_string())))
            .collect()
    }

    async fn root_key_checks(&self) -> Result<Vec<RootKeyCheck>, StoreError> {
        let rows: Vec<RootKeyRow> = sqlx::query_as(SELECT_ROOT_KEYS)
            .fetch_all(&self.readers)
            .await
            .map_err(db_error)?;
        Ok(root_key_checks(rows))
    }

    async fn record_root_key_check(&self, check: &RootKeyCheck) -> Result<(), StoreError> {
        // Through the writer, so it is ordered with (and durable like) every other write.
        let writer = Arc::clone(&self.shared.writer);
        let mut writer = tokio::time::timeout(WRITER_WAIT, writer.lock_owned())
            .await
            .map_err(|_| {
                StoreError::Unavailable("timed out waiting for the SQLite writer".into())
            })?;
        writer.settle().await;
        writer.close_batch(&self.shared.changes).await;
        sqlx::query(RECORD_ROOT_KEY)
            .bind(check.root_key_id.as_str())
            .bind(check.check_value.as_slice())
            .bind(check.legacy_rows)
            .bind(unix_now())
            .execute(&mut writer.conn)
            .await
            .map(drop)
            .map_err(db_error)
    }

    async fn predates_integrity(&self) -> Result<bool, StoreError> {
        sqlx::query_scalar("SELECT IFNULL(MAX(legacy_rows), 0) != 0 FROM integrity_upgrade")
            .fetch_one(&self.readers)
            .await
            .map_err(db_error)
    }

    fn subscribe(&self) -> broadcast::Receiver<StoreEvent> {
        self.shared.changes.subscribe()
    }
}

/// One request: the writer (held until commit or drop) and the tenant it acts for.
struct SqliteTransaction {
    writer: Option<OwnedMutexGuard<Writer>>,
    shared: Arc<Shared>,
    tenant: TenantId,
    wrote: bool,
    /// A statement failed: like PostgreSQL, the transaction can only be rolled back now.
    failed: bool,
    changed: Vec<String>,
}

fn finished() -> StoreError {
    StoreError::Database("transaction already finished".into())
}

impl SqliteTransaction {
    fn rows(&mut self) -> Result<TenantRows<'_>, StoreError> {
        if self.failed {
            return Err(StoreError::Database(
                "an earlier statement of this transaction failed".into(),
            ));
        }
        let writer = self.writer.as_mut().ok_or_else(finished)?;
        Ok(TenantRows {
            conn: &mut writer.conn,
            tenant: self.tenant.as_str(),
        })
    }

    /// Records the outcome of a statement: an error poisons the transaction.
    fn track<T>(&mut self, result: Result<T, StoreError>) -> Result<T, StoreError> {
        self.failed |= result.is_err();
        result
    }

    /// Gives up the writer, leaving the request to be undone by whoever comes next.
    fn abandon(&mut self) {
        if let Some(mut writer) = self.writer.take() {
            writer.abandoned = true;
            drop(writer);
            spawn_closer(&self.shared);
        }
    }
}

impl Drop for SqliteTransaction {
    fn drop(&mut self) {
        self.abandon();
    }
}

#[async_trait::async_trait]
impl Transaction for SqliteTransaction {
    async fn insert(&mut self, record: &ObjectRecord) -> Result<(), StoreError> {
        let inserted = self.rows()?.insert(record).await;
        if !self.track(inserted)? {
            return Err(StoreError::Duplicate(record.uid.clone()));
        }
        self.wrote = true;
        self.changed.push(record.uid.clone());
        Ok(())
    }

    async fn get(&mut self, uid: &str) -> Result<Option<ObjectRecord>, StoreError> {
        let record = self.rows()?.get(uid).await;
        self.track(record)
    }

    async fn update(&mut self, record: &ObjectRecord) -> Result<(), StoreError> {
        let updated = self.rows()?.update(record).await;
        if !self.track(updated)? {
            return Err(StoreError::NotFound(record.uid.clone()));
        }
        self.wrote = true;
        self.changed.push(record.uid.clone());
        Ok(())
    }

    async fn locate(&mut self, filter: &LocateFilter) -> Result<Vec<String>, StoreError> {
        let uids = self.rows()?.locate(filter).await;
        self.track(uids)
    }

    async fn count(&mut self, filter: &LocateFilter) -> Result<usize, StoreError> {
        let count = self.rows()?.count(filter).await;
        self.track(count)
    }

    async fn commit(mut self: Box<Self>) -> Result<(), StoreError> {
        if self.failed {
            self.abandon();
            return Err(StoreError::Database(
                "an earlier statement of this transaction failed; rolled back".into(),
            ));
        }
        let mut writer = self.writer.take().ok_or_else(finished)?;
        if let Err(e) = exec(&mut writer.conn, "RELEASE request").await {
            self.writer = Some(writer);
            self.abandon();
            return Err(db_error(e));
        }
        // The batch this request joined at `begin`: only closers take it, and they need the
        // writer, which this request has held since.
        let Some(batch) = writer.batch.as_mut() else {
            return Err(StoreError::Database("the SQLite batch vanished".into()));
        };
        batch.dirty |= self.wrote;
        let tenant = &self.tenant;
        batch
            .changes
            .extend(self.changed.drain(..).map(|uid| ObjectChanged {
                tenant: tenant.clone(),
                uid,
            }));
        let waiting = batch.dirty.then(|| batch.done.subscribe());
        drop(writer);
        spawn_closer(&self.shared);

        let Some(mut done) = waiting else {
            // Read only, from rows already durable.
            return Ok(());
        };
        let outcome = done
            .wait_for(Option::is_some)
            .await
            .map_err(|_| StoreError::Unavailable("the SQLite writer went away".into()))?;
        match &*outcome {
            Some(Ok(())) => Ok(()),
            Some(Err(why)) => Err(StoreError::Database(format!("commit failed: {why}"))),
            None => Err(StoreError::Unavailable("commit outcome unknown".into())),
        }
    }
}

const RECORD_ROOT_KEY: &str = "INSERT INTO root_keys (root_key_id, check_value, legacy_rows, \
     recorded_at) VALUES (?1, ?2, ?3, ?4) ON CONFLICT (root_key_id) DO NOTHING";

fn unix_now() -> i64 {
    time::OffsetDateTime::now_utc().unix_timestamp()
}

// Every statement on tenant data binds the tenant as ?1.
const INSERT_OBJECT: &str = "INSERT INTO objects (tenant_id, uid, object_type, state, \
     cryptographic_algorithm, cryptographic_length, attributes, root_key_id, material, \
     created_at, version, integrity, seq) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, \
     ?11, ?12, \
     (SELECT IFNULL(MAX(seq), 0) + 1 FROM objects WHERE tenant_id = ?1)) \
     ON CONFLICT (tenant_id, uid) DO NOTHING";
/// Applies only over the version the record was based on (`version - 1`).
const UPDATE_OBJECT: &str = "UPDATE objects SET object_type = ?3, state = ?4, \
     cryptographic_algorithm = ?5, cryptographic_length = ?6, attributes = ?7, \
     root_key_id = ?8, material = ?9, created_at = ?10, version = ?11, integrity = ?12 \
     WHERE tenant_id = ?1 AND uid = ?2 AND version = ?11 - 1";
const OBJECT_EXISTS: &str =
    "SELECT EXISTS (SELECT 1 FROM objects WHERE tenant_id = ?1 AND uid = ?2)";
const GET_OBJECT: &str = "SELECT object_type, state, cryptographic_algorithm, \
     cryptographic_length, attributes, root_key_id, material, created_at, version, integrity \
     FROM objects WHERE tenant_id = ?1 AND uid = ?2";
const GET_INDEX: &str =
    "SELECT name, value FROM object_index WHERE tenant_id = ?1 AND uid = ?2 ORDER BY position";
const DELETE_INDEX: &str = "DELETE FROM object_index WHERE tenant_id = ?1 AND uid = ?2";

/// One tenant's rows: the only code that reads or writes tenant data in SQLite.
struct TenantRows<'a> {
    conn: &'a mut SqliteConnection,
    tenant: &'a str,
}

type SqliteQuery<'q> = sqlx::query::Query<'q, Sqlite, sqlx::sqlite::SqliteArguments<'q>>;

/// Binds ?1..?12 of [`INSERT_OBJECT`] and [`UPDATE_OBJECT`].
fn bind_record<'q>(sql: &'q str, tenant: &'q str, record: &'q ObjectRecord) -> SqliteQuery<'q> {
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

impl TenantRows<'_> {
    /// `false` if the tenant already has an object with this uid.
    async fn insert(&mut self, record: &ObjectRecord) -> Result<bool, StoreError> {
        let done = bind_record(INSERT_OBJECT, self.tenant, record)
            .execute(&mut *self.conn)
            .await
            .map_err(db_error)?;
        if done.rows_affected() == 0 {
            return Ok(false);
        }
        self.insert_index(&record.uid, &record.index).await?;
        Ok(true)
    }

    /// `false` if the tenant has no object with this uid; `Conflict` if it is not at
    /// `record.version - 1`.
    async fn update(&mut self, record: &ObjectRecord) -> Result<bool, StoreError> {
        let done = bind_record(UPDATE_OBJECT, self.tenant, record)
            .execute(&mut *self.conn)
            .await
            .map_err(db_error)?;
        if done.rows_affected() == 0 {
            let exists: bool = sqlx::query_scalar(OBJECT_EXISTS)
                .bind(self.tenant)
                .bind(record.uid.as_str())
                .fetch_one(&mut *self.conn)
                .await
                .map_err(db_error)?;
            if exists {
                return Err(StoreError::Conflict(record.uid.clone()));
            }
            return Ok(false);
        }
        sqlx::query(DELETE_INDEX)
            .bind(self.tenant)
            .bind(record.uid.as_str())
            .execute(&mut *self.conn)
            .await
            .map_err(db_error)?;
        self.insert_index(&record.uid, &record.index).await?;
        Ok(true)
    }

    async fn insert_index(
        &mut self,
        uid: &str,
        index: &[(String, String)],
    ) -> Result<(), StoreError> {
        for (chunk_number, chunk) in index.chunks(INDEX_ROWS_PER_INSERT).enumerate() {
            let first = chunk_number * INDEX_ROWS_PER_INSERT;
            let mut insert = QueryBuilder::<Sqlite>::new(
                "INSERT INTO object_index (tenant_id, uid, position, name, value) ",
            );
            insert.push_values(chunk.iter().enumerate(), |mut row, (i, (name, value))| {
                row.push_bind(self.tenant)
                    .push_bind(uid)
                    .push_bind(position(first + i).unwrap_or(i32::MAX))
                    .push_bind(name.as_str())
                    .push_bind(value.as_str());
            });
            insert
                .build()
                .execute(&mut *self.conn)
                .await
                .map_err(db_error)?;
        }
        Ok(())
    }

    async fn get(&mut self, uid: &str) -> Result<Option<ObjectRecord>, StoreError> {
        let Some(row) = sqlx::query(GET_OBJECT)
            .bind(self.tenant)
            .bind(uid)
            .fetch_optional(&mut *self.conn)
            .await
            .map_err(db_error)?
        else {
            return Ok(None);
        };
        let index: Vec<(String, String)> = sqlx::query_as(GET_INDEX)
            .bind(self.tenant)
            .bind(uid)
            .fetch_all(&mut *self.conn)
            .await
            .map_err(db_error)?;
        Ok(Some(ObjectRecord {
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
            index,
            attributes: row.try_get("attributes").map_err(db_error)?,
            material: material_from_sql(
                uid,
                row.try_get("root_key_id").map_err(db_error)?,
                row.try_get("material").map_err(db_error)?,
            )?,
            created_at: row.try_get("created_at").map_err(db_error)?,
            version: row.try_get("version").map_err(db_error)?,
            integrity: row.try_get("integrity").map_err(db_error)?,
        }))
    }

    async fn locate(&mut self, filter: &LocateFilter) -> Result<Vec<String>, StoreError> {
        let mut query = locate_query::<Sqlite>("SELECT uid", self.tenant, filter);
        let (limit, offset) = page(filter);
        // SQLite reads a negative LIMIT as "no limit".
        query
            .push(order_clause(filter))
            .push(" LIMIT ")
            .push_bind(limit.unwrap_or(-1))
            .push(" OFFSET ")
            .push_bind(offset);
        query
            .build_query_scalar()
            .fetch_all(&mut *self.conn)
            .await
            .map_err(db_error)
    }

    async fn count(&mut self, filter: &LocateFilter) -> Result<usize, StoreError> {
        let mut query = locate_query::<Sqlite>("SELECT COUNT(*)", self.tenant, filter);
        let count: i64 = query
            .build_query_scalar()
            .fetch_one(&mut *self.conn)
            .await
            .map_err(db_error)?;
        Ok(usize::try_from(count).unwrap_or(0))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_statement_on_tenant_data_binds_the_tenant_first() {
        for sql in [
            UPDATE_OBJECT,
            GET_OBJECT,
            GET_INDEX,
            DELETE_INDEX,
            OBJECT_EXISTS,
        ] {
            assert!(sql.contains("WHERE tenant_id = ?1"), "{sql}");
        }
        assert!(
            INSERT_OBJECT.contains("(tenant_id, uid,") && INSERT_OBJECT.contains("VALUES (?1,")
        );
    }

    #[tokio::test]
    async fn the_writer_is_durable_wal_with_foreign_keys() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("keys.db");
        let store = SqliteStore::open(path.to_str().expect("utf-8 path"))
            .await
            .expect("open");
        let mut writer = store.shared.writer.lock().await;
        let journal: String = sqlx::query_scalar("PRAGMA journal_mode")
            .fetch_one(&mut writer.conn)
            .await
            .expect("journal_mode");
        assert_eq!(journal, "wal");
        // synchronous 2 = FULL: the WAL is synced at every COMMIT.
        for (pragma, expected) in [("PRAGMA synchronous", 2), ("PRAGMA foreign_keys", 1)] {
            let value: i64 = sqlx::query_scalar(pragma)
                .fetch_one(&mut writer.conn)
                .await
                .expect(pragma);
            assert_eq!(value, expected, "{pragma}");
        }
    }

    #[tokio::test]
    async fn migrations_apply_once_and_refuse_a_newer_schema() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("keys.db");
        let path = path.to_str().expect("utf-8 path");
        drop(SqliteStore::open(path).await.expect("first open"));
        drop(SqliteStore::open(path).await.expect("second open"));

        let mut conn = SqliteConnection::connect(path).await.expect("connect");
        exec(&mut conn, "PRAGMA user_version = 99")
            .await
            .expect("bump");
        drop(conn);
        match SqliteStore::open(path).await {
            Err(StoreError::Migration(why)) => assert!(why.contains("newer"), "{why}"),
            other => panic!("expected a migration error, got {other:?}"),
        }
    }
}
