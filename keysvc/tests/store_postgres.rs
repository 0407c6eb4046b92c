//! The PostgreSQL store against a real server: a throwaway database per test (dropped at the
//! end, best effort), the common store behaviour, and what only PostgreSQL does — row-level
//! security, the start-up role check, the dev role, LISTEN/NOTIFY across stores, dedicated
//! databases, durability across `kill -9`.
//!
//! The server is required: without it these tests fail. `OPENKCM_TEST_POSTGRES` names a
//! superuser connection (default `postgres://postgres@127.0.0.1:5432/postgres`).

mod store_common;

use std::sync::Arc;
use std::time::Duration;

use keysvc::store::postgres::{self, PostgresOptions, PostgresStore, DEV_APP_ROLE};
use keysvc::store::{LocateFilter, Store, StoreError};
use keysvc::DatabaseName;
use sqlx::postgres::{PgConnection, PgPoolOptions};
use sqlx::{Connection, Executor};

use store_common as common;

/// Set in the child process of the `kill -9` test: the database URL it writes to.
const CHILD_DATABASE: &str = "OPENKCM_TEST_POSTGRES_CHILD_URL";
/// The brief's bar for a change to reach another store.
const CROSS_STORE_DEADLINE: Duration = Duration::from_secs(1);

fn url_for(database: &str, user: &str) -> String {
    let mut url = url::Url::parse(&admin_url()).expect("admin URL");
    url.set_path(database);
    url.set_username(user).expect("user");
    url.to_string()
}

/// The test kit's admin connection and URL (`OPENKCM_TEST_POSTGRES` or the local server),
/// and its unique names.
use testkit::postgres::{admin, admin_url, unique_name as unique};

/// Small pools: tests run in parallel against a server with 100 connections.
fn small() -> PostgresOptions {
    PostgresOptions {
        max_connections: 4,
        dedicated_max_connections: 2,
        ..PostgresOptions::default()
    }
}

/// A throwaway database, dropped (with its connections) when the guard goes.
struct TestDb {
    name: String,
}

impl TestDb {
    async fn create() -> Self {
        Self::create_owned_by("postgres").await
    }

    async fn create_owned_by(owner: &str) -> Self {
        let db = Self::named(unique("openkcm_test"));
        admin()
            .await
            .execute(format!(r#"CREATE DATABASE "{}" OWNER "{owner}""#, db.name).as_str())
            .await
            .expect("create test database");
        db
    }

    /// A guard for a database the code under test will create.
    fn named(name: String) -> Self {
        Self { name }
    }

    fn url(&self) -> String {
        self.url_as("postgres")
    }

    fn url_as(&self, user: &str) -> String {
        url_for(&self.name, user)
    }

    fn database_name(&self) -> DatabaseName {
        DatabaseName::parse(&self.name).expect("database name")
    }
}

/// Runs admin statements from a `Drop`, which may happen while a test unwinds.
fn admin_cleanup(statement: String) {
    let run = move || {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .ok()?;
        runtime.block_on(async {
            let mut conn = PgConnection::connect(&admin_url()).await.ok()?;
            conn.execute(statement.as_str()).await.ok()
        })
    };
    let _ = std::thread::spawn(run).join();
}

impl Drop for TestDb {
    fn drop(&mut self) {
        admin_cleanup(format!(
            r#"DROP DATABASE IF EXISTS "{}" WITH (FORCE)"#,
            self.name
        ));
    }
}

/// A throwaway login role; declare it before the databases it has rights in, so they are
/// dropped first.
struct TestRole {
    name: String,
}

impl TestRole {
    async fn create(prefix: &str, attributes: &str) -> Self {
        let role = Self {
            name: unique(prefix),
        };
        admin()
            .await
            .execute(format!(r#"CREATE ROLE "{}" LOGIN {attributes}"#, role.name).as_str())
            .await
            .expect("create test role");
        role
    }
}

impl Drop for TestRole {
    fn drop(&mut self) {
        admin_cleanup(format!(r#"DROP ROLE IF EXISTS "{}""#, self.name));
    }
}

async fn dev_store(db: &TestDb) -> PostgresStore {
    PostgresStore::connect_dev_with(&db.url(), small())
        .await
        .expect("connect_dev")
}

#[tokio::test]
async fn insert_get_update_round_trip() {
    let db = TestDb::create().await;
    common::insert_get_update_round_trip(&dev_store(&db).await).await;
}

#[tokio::test]
async fn locate_filters_and_pages_in_creation_order() {
    let db = TestDb::create().await;
    common::locate_filters_and_pages(&dev_store(&db).await).await;
}

#[tokio::test]
async fn tenants_are_isolated() {
    let db = TestDb::create().await;
    common::tenants_are_isolated(&dev_store(&db).await).await;
}

#[tokio::test]
async fn duplicate_uid_is_refused() {
    let db = TestDb::create().await;
    common::duplicate_uid_is_refused(&dev_store(&db).await).await;
}

#[tokio::test]
async fn dropped_transaction_leaves_nothing() {
    let db = TestDb::create().await;
    common::dropped_transaction_leaves_nothing(&dev_store(&db).await).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn commit_is_published() {
    let db = TestDb::create().await;
    common::commit_is_published(&dev_store(&db).await).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_creates_all_land() {
    let db = TestDb::create().await;
    common::concurrent_creates_all_land(Arc::new(dev_store(&db).await)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn row_level_security_filters_queries_that_forget_the_tenant() {
    let db = TestDb::create().await;
    let store = dev_store(&db).await;
    common::insert(
        &store,
        &common::tenant("tenant-a"),
        &[common::key("a1"), common::key("a2")],
    )
    .await;
    common::insert(&store, &common::tenant("tenant-b"), &[common::key("b1")]).await;

    // One connection, so the "no tenant" queries below also run where a tenant was set
    // before (the setting then reads '' rather than NULL).
    let app = PgPoolOptions::new()
        .max_connections(1)
        .connect(&db.url_as(DEV_APP_ROLE))
        .await
        .expect("connect as the app role");
    let as_tenant_a = || async {
        let mut tx = app.begin().await.expect("begin");
        tx.execute("SELECT set_config('app.current_tenant', 'tenant-a', true)")
            .await
            .expect("set tenant");
        tx
    };

    let mut tx = as_tenant_a().await;
    let uids: Vec<String> = sqlx::query_scalar("SELECT uid FROM objects ORDER BY uid")
        .fetch_all(&mut *tx)
        .await
        .expect("select");
    assert_eq!(uids, ["a1", "a2"]);
    let index_owners: Vec<String> =
        sqlx::query_scalar("SELECT DISTINCT tenant_id FROM object_index")
            .fetch_all(&mut *tx)
            .await
            .expect("select index");
    assert_eq!(index_owners, ["tenant-a"]);
    let touched = sqlx::query("UPDATE objects SET state = 7")
        .execute(&mut *tx)
        .await
        .expect("update without a filter");
    assert_eq!(touched.rows_affected(), 2, "only tenant-a's rows");
    tx.rollback().await.expect("rollback");

    let no_tenant = "SELECT count(*) FROM objects";
    let mut tx = app.begin().await.expect("begin");
    let count: i64 = sqlx::query_scalar(no_tenant)
        .fetch_one(&mut *tx)
        .await
        .expect("count");
    assert_eq!(count, 0, "no tenant set on a used connection: no rows");
    tx.rollback().await.expect("rollback");
    let mut fresh = PgConnection::connect(&db.url_as(DEV_APP_ROLE))
        .await
        .expect("connect");
    let count: i64 = sqlx::query_scalar(no_tenant)
        .fetch_one(&mut fresh)
        .await
        .expect("count");
    assert_eq!(count, 0, "no tenant set on a fresh connection: no rows");

    let refused = [
        // WITH CHECK: a row for another tenant.
        "INSERT INTO objects (tenant_id, uid, object_type, state, attributes, created_at) \
         VALUES ('tenant-b', 'forged', 2, 1, '\\x00', 0)",
        "UPDATE objects SET tenant_id = 'tenant-b' WHERE uid = 'a1'",
        // Grants: no DELETE on objects, and not the owner.
        "DELETE FROM objects",
        "ALTER TABLE objects NO FORCE ROW LEVEL SECURITY",
    ];
    for statement in refused {
        let mut tx = as_tenant_a().await;
        let error = tx.execute(statement).await.expect_err(statement);
        let code = error
            .as_database_error()
            .and_then(|e| e.code())
            .map(|c| c.into_owned());
        assert_eq!(code.as_deref(), Some("42501"), "{statement}: {error}");
    }

    // Nothing above changed tenant-b's object.
    assert_eq!(
        common::get(&store, &common::tenant("tenant-b"), "b1").await,
        Some(common::key("b1"))
    );
}

#[tokio::test]
async fn start_up_role_check_refuses_roles_that_can_bypass_rls() {
    // Roles first: dropped after the database they have rights in.
    let owner = TestRole::create("openkcm_test_owner", "NOSUPERUSER").await;
    let app = TestRole::create("openkcm_test_app", "NOSUPERUSER NOBYPASSRLS").await;
    let bypass = TestRole::create("openkcm_test_bypass", "NOSUPERUSER BYPASSRLS").await;
    let member = TestRole::create("openkcm_test_member", "NOSUPERUSER").await;
    let db = TestDb::create_owned_by(&owner.name).await;
    admin()
        .await
        .execute(format!(r#"GRANT "{}" TO "{}""#, owner.name, member.name).as_str())
        .await
        .expect("grant owner membership");

    // migrate refuses to hand the tables to an unsafe or missing role.
    let owner_url = db.url_as(&owner.name);
    match postgres::migrate(&owner_url, "postgres").await {
        Err(StoreError::UnsafeRole(why)) => assert!(why.contains("superuser"), "{why}"),
        other => panic!("granted to a superuser: {other:?}"),
    }
    match postgres::migrate(&owner_url, "openkcm_test_no_such_role").await {
        Err(StoreError::Migration(why)) => assert!(why.contains("does not exist"), "{why}"),
        other => panic!("expected a missing-role error: {other:?}"),
    }
    // Before migrating, even a safe role is refused: there is nothing RLS-protected yet.
    match PostgresStore::connect(&db.url_as(&app.name), small()).await {
        Err(StoreError::Migration(why)) => assert!(why.contains("no table"), "{why}"),
        other => panic!("expected a schema error: {other:?}"),
    }
    postgres::migrate(&owner_url, &app.name)
        .await
        .expect("migrate as the owner");
    postgres::migrate(&owner_url, &app.name)
        .await
        .expect("migrate is idempotent");

    let refusals = [
        (db.url(), "role postgres is superuser".to_owned()),
        (owner_url.clone(), format!("role {} owns table", owner.name)),
        (
            db.url_as(&bypass.name),
            format!("role {} has BYPASSRLS", bypass.name),
        ),
        (
            db.url_as(&member.name),
            format!("role {} is a member of role {}", member.name, owner.name),
        ),
    ];
    for (url, expected) in refusals {
        match PostgresStore::connect(&url, small()).await {
            Err(StoreError::UnsafeRole(why)) => assert!(why.contains(&expected), "{why}"),
            Err(other) => panic!("{expected}: unexpected error {other:?}"),
            Ok(_) => panic!("{expected}: the store started"),
        }
    }

    let store = PostgresStore::connect(&db.url_as(&app.name), small())
        .await
        .expect("the app role is accepted");
    assert_eq!(store.connected_role().await.expect("role"), app.name);
    common::insert(&store, &common::tenant("tenant-a"), &[common::key("k1")]).await;
    assert!(common::get(&store, &common::tenant("tenant-a"), "k1")
        .await
        .is_some());
    drop(store);

    // The owner (not a superuser: subject to the forced RLS) lists the tenants for
    // rotate-root; the runtime role alone cannot.
    let rotation = PostgresStore::connect_with_owner(&db.url_as(&app.name), &owner_url, small())
        .await
        .expect("the app role with the owner's URL");
    let tenants = rotation.tenants().await.expect("the owner lists tenants");
    assert_eq!(tenants, [common::tenant("tenant-a").tenant]);
}

#[tokio::test]
async fn connect_dev_runs_as_a_plain_role() {
    let db = TestDb::create().await;
    let store = dev_store(&db).await;
    let role = store.connected_role().await.expect("role");
    assert_eq!(role, DEV_APP_ROLE);
    let (superuser, bypassrls): (bool, bool) =
        sqlx::query_as("SELECT rolsuper, rolbypassrls FROM pg_roles WHERE rolname = $1")
            .bind(&role)
            .fetch_one(&mut admin().await)
            .await
            .expect("role attributes");
    assert!(!superuser && !bypassrls);
    // A second dev store on the same database (role and schema exist by now) works too.
    let again = dev_store(&db).await;
    again.ready().await.expect("ready");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_change_reaches_another_store_on_the_same_database() {
    let db = TestDb::create().await;
    let writer = dev_store(&db).await;
    let reader = dev_store(&db).await;
    let a = common::tenant("tenant-a");
    common::insert(&writer, &a, &[common::key("shared")]).await;

    let mut changes = reader.subscribe();
    let mut updated = common::key("shared");
    updated.state = 2;
    updated.version = 2;
    let mut tx = writer.begin(&a).await.expect("begin");
    tx.update(&updated).await.expect("update");
    tx.commit().await.expect("commit");
    let change = common::next_change_for(&mut changes, "shared", CROSS_STORE_DEADLINE).await;
    assert_eq!(change.tenant.as_str(), "tenant-a");
    assert_eq!(common::get(&reader, &a, "shared").await, Some(updated));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_listener_reconnects_after_losing_its_connection() {
    let db = TestDb::create().await;
    let store = dev_store(&db).await;
    let a = common::tenant("tenant-a");
    common::insert(&store, &a, &[common::key("k1")]).await;
    let mut changes = store.subscribe();

    let killed: Vec<bool> = sqlx::query_scalar(
        "SELECT pg_terminate_backend(pid) FROM pg_stat_activity \
         WHERE datname = $1 AND application_name = 'openkcm-listener'",
    )
    .bind(&db.name)
    .fetch_all(&mut admin().await)
    .await
    .expect("terminate the listener");
    assert_eq!(killed, [true], "one listener connection");

    // Notifications sent while it reconnects are lost, so keep changing until one arrives.
    const ATTEMPTS: u32 = 100;
    for attempt in 1..=ATTEMPTS {
        let mut tx = store.begin(&a).await.expect("begin");
        let mut next = common::key("k1");
        next.version = i64::from(attempt) + 1;
        tx.update(&next).await.expect("update");
        tx.commit().await.expect("commit");
        let wait = Duration::from_millis(200);
        match tokio::time::timeout(wait, changes.recv()).await {
            Ok(Ok(keysvc::store::StoreEvent::Changed(change))) if change.uid == "k1" => return,
            _ if attempt < ATTEMPTS => continue,
            other => panic!("no change after the listener was killed: {other:?}"),
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dev_store_creates_a_dedicated_database_on_first_use() {
    let main = TestDb::create().await;
    let silo = TestDb::named(unique("openkcm_test_silo"));
    let store = dev_store(&main).await;
    let other = dev_store(&main).await;
    let shared = common::tenant("tenant-a");
    let mut siloed = common::tenant("tenant-a");
    siloed.database = Some(silo.database_name());

    common::insert(&store, &siloed, &[common::key("silo-key")]).await;
    assert!(common::get(&store, &siloed, "silo-key").await.is_some());
    assert_eq!(
        common::get(&store, &shared, "silo-key").await,
        None,
        "not in the main database"
    );
    assert_eq!(
        common::locate(&store, &shared, &LocateFilter::default()).await,
        Vec::<String>::new()
    );

    // Another replica opens its own pool for the silo, and hears its changes on the main
    // database's channel.
    assert!(common::get(&other, &siloed, "silo-key").await.is_some());
    let mut changes = other.subscribe();
    let mut updated = common::key("silo-key");
    updated.state = 2;
    updated.version = 2;
    let mut tx = store.begin(&siloed).await.expect("begin");
    tx.update(&updated).await.expect("update");
    tx.commit().await.expect("commit");
    common::next_change_for(&mut changes, "silo-key", common::CHANGE_DEADLINE).await;
    assert_eq!(
        common::get(&other, &siloed, "silo-key").await,
        Some(updated)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_app_store_requires_dedicated_databases_to_be_migrated() {
    let main = TestDb::create().await;
    let silo_one = TestDb::create().await;
    let silo_two = TestDb::create().await;
    let missing = TestDb::named(unique("openkcm_test_missing"));
    drop(dev_store(&main).await); // role and main schema
    let options = PostgresOptions {
        max_dedicated_pools: 1,
        ..small()
    };
    let store = PostgresStore::connect(&main.url_as(DEV_APP_ROLE), options)
        .await
        .expect("connect as the app role");
    let in_silo = |db: &TestDb| {
        let mut ctx = common::tenant("tenant-a");
        ctx.database = Some(db.database_name());
        ctx
    };

    match store.begin(&in_silo(&silo_one)).await {
        Err(StoreError::Migration(why)) => assert!(why.contains("no table"), "{why}"),
        Err(other) => panic!("unexpected error {other:?}"),
        Ok(_) => panic!("served from an unmigrated database"),
    }
    match store.begin(&in_silo(&missing)).await {
        Err(StoreError::Migration(why)) => assert!(why.contains("does not exist"), "{why}"),
        Err(other) => panic!("unexpected error {other:?}"),
        Ok(_) => panic!("served from a missing database"),
    }

    postgres::migrate(&silo_one.url(), DEV_APP_ROLE)
        .await
        .expect("migrate silo one");
    postgres::migrate(&silo_two.url(), DEV_APP_ROLE)
        .await
        .expect("migrate silo two");
    common::insert(&store, &in_silo(&silo_one), &[common::key("one")]).await;
    // With room for one pool, this evicts silo one's pool; using silo one again reopens it.
    common::insert(&store, &in_silo(&silo_two), &[common::key("two")]).await;
    assert!(common::get(&store, &in_silo(&silo_one), "one")
        .await
        .is_some());
    assert_eq!(common::get(&store, &in_silo(&silo_one), "two").await, None);
    assert!(common::get(&store, &in_silo(&silo_two), "two")
        .await
        .is_some());
}

#[tokio::test]
async fn acknowledged_creates_survive_kill_9() {
    let db = TestDb::create().await;
    drop(dev_store(&db).await); // schema and role, before the child races to make them
    let url = db.url();
    let acknowledged =
        common::acknowledged_before_kill_9("postgres_child", &[(CHILD_DATABASE, &url)], 300);
    let store = dev_store(&db).await;
    common::all_present(&store, &acknowledged).await;
}

/// The child of `acknowledged_creates_survive_kill_9`; does nothing in a normal run.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_child() {
    let Ok(url) = std::env::var(CHILD_DATABASE) else {
        return;
    };
    let store = PostgresStore::connect_dev_with(&url, small())
        .await
        .expect("connect in child");
    common::create_until_killed(Arc::new(store)).await;
}

/// `cargo test --release -p keysvc --test store_postgres -- --ignored --nocapture create_rate`
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "timing, run by hand in release mode"]
async fn create_rate() {
    let db = TestDb::create().await;
    let store = PostgresStore::connect_dev(&db.url())
        .await
        .expect("connect_dev");
    let rate = common::creates_per_second(Arc::new(store), 16, 1_000).await;
    println!("PostgreSQL: {rate:.0} creates/s with 16 concurrent tasks");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connections_that_died_in_the_pool_are_replaced() {
    let db = TestDb::create().await;
    let store = dev_store(&db).await;
    let a = common::tenant("tenant-a");
    // Fill the pool: four transactions open at once.
    let mut open = Vec::new();
    for _ in 0..small().max_connections {
        open.push(store.begin(&a).await.expect("begin"));
    }
    for tx in open {
        tx.commit().await.expect("commit");
    }

    let killed: Vec<bool> = sqlx::query_scalar(
        "SELECT pg_terminate_backend(pid) FROM pg_stat_activity \
         WHERE datname = $1 AND usename = $2 AND application_name <> 'openkcm-listener'",
    )
    .bind(&db.name)
    .bind(DEV_APP_ROLE)
    .fetch_all(&mut admin().await)
    .await
    .expect("terminate the pool's connections");
    assert!(!killed.is_empty());

    common::insert(&store, &a, &[common::key("after-restart")]).await;
    assert!(common::get(&store, &a, "after-restart").await.is_some());
}

/// Two requests changing one object serialize: the second `get_for_update` waits for the
/// first transaction and then reads what it committed, instead of the old version (which
/// its update would silently overwrite).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn get_for_update_waits_for_the_transaction_holding_the_object() {
    let db = TestDb::create().await;
    let store = Arc::new(dev_store(&db).await);
    let a = common::tenant("tenant-a");
    common::insert(store.as_ref(), &a, &[common::key("contended")]).await;

    let mut first = store.begin(&a).await.expect("begin");
    let mut record = first
        .get_for_update("contended")
        .await
        .expect("get")
        .expect("present");

    let second = {
        let (store, a) = (store.clone(), a.clone());
        tokio::spawn(async move {
            let mut tx = store.begin(&a).await.expect("begin");
            let seen = tx.get_for_update("contended").await.expect("get");
            tx.commit().await.expect("commit");
            seen.expect("present").state
        })
    };
    // Bounded wait until the second transaction is blocked on the row lock.
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    loop {
        let waiting: i64 = sqlx::query_scalar(
            "SELECT count(*) FROM pg_stat_activity WHERE datname = $1 AND wait_event_type = 'Lock'",
        )
        .bind(&db.name)
        .fetch_one(&mut admin().await)
        .await
        .expect("pg_stat_activity");
        if waiting >= 1 {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "the second reader never waited"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(
        !second.is_finished(),
        "the second reader must wait for the first"
    );

    record.state += 1;
    record.version += 1;
    first.update(&record).await.expect("update");
    first.commit().await.expect("commit");
    let seen_by_second = tokio::time::timeout(Duration::from_secs(10), second)
        .await
        .expect("the second reader proceeds after the commit")
        .expect("task");
    assert_eq!(seen_by_second, record.state, "it read the committed change");
}
