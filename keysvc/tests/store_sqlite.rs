//! The SQLite store against a real file: the common store behaviour, durability across
//! `kill -9`, and (by hand, `--release --ignored`) the Create rate.

mod store_common;

use std::sync::Arc;

use keysvc::store::sqlite::SqliteStore;
use keysvc::store::{Store, StoreError};
use keysvc::DatabaseName;
use tempfile::TempDir;

use store_common as common;

/// Set in the child process of the `kill -9` test: the database file it writes to.
const CHILD_DATABASE: &str = "OPENKCM_TEST_SQLITE_CHILD_DB";

async fn open() -> (TempDir, SqliteStore) {
    let dir = tempfile::tempdir().expect("tempdir");
    let url = format!("sqlite://{}", dir.path().join("keys.db").display());
    let store = SqliteStore::open(&url).await.expect("open store");
    (dir, store)
}

#[tokio::test]
async fn insert_get_update_round_trip() {
    let (_dir, store) = open().await;
    common::insert_get_update_round_trip(&store).await;
}

#[tokio::test]
async fn locate_filters_and_pages_in_creation_order() {
    let (_dir, store) = open().await;
    common::locate_filters_and_pages(&store).await;
}

#[tokio::test]
async fn tenants_are_isolated() {
    let (_dir, store) = open().await;
    common::tenants_are_isolated(&store).await;
}

#[tokio::test]
async fn duplicate_uid_is_refused() {
    let (_dir, store) = open().await;
    common::duplicate_uid_is_refused(&store).await;
}

#[tokio::test]
async fn dropped_transaction_leaves_nothing() {
    let (_dir, store) = open().await;
    common::dropped_transaction_leaves_nothing(&store).await;
}

#[tokio::test]
async fn commit_is_published() {
    let (_dir, store) = open().await;
    common::commit_is_published(&store).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_creates_all_land() {
    let (_dir, store) = open().await;
    common::concurrent_creates_all_land(Arc::new(store)).await;
}

#[tokio::test]
async fn data_survives_reopening_and_a_plain_path_works() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("plain.db");
    let path = path.to_str().expect("utf-8 path");
    let a = common::tenant("tenant-a");
    {
        let store = SqliteStore::open(path).await.expect("open");
        common::insert(&store, &a, &[common::key("k1")]).await;
    }
    let store = SqliteStore::open(&format!("sqlite://{path}"))
        .await
        .expect("reopen");
    assert_eq!(common::get(&store, &a, "k1").await, Some(common::key("k1")));
    store.ready().await.expect("ready");
}

#[tokio::test]
async fn a_dedicated_database_route_is_refused() {
    let (_dir, store) = open().await;
    let mut ctx = common::tenant("tenant-a");
    ctx.database = Some(DatabaseName::parse("tenant_a_keys").expect("name"));
    match store.begin(&ctx).await {
        Err(StoreError::Database(why)) => assert!(why.contains("PostgreSQL"), "{why}"),
        Err(other) => panic!("unexpected error {other:?}"),
        Ok(_) => panic!("a silo tenant's keys went into the shared SQLite file"),
    }
}

#[tokio::test]
async fn acknowledged_creates_survive_kill_9() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("keys.db");
    let path = path.to_str().expect("utf-8 path");
    let acknowledged =
        common::acknowledged_before_kill_9("sqlite_child", &[(CHILD_DATABASE, path)], 300);
    let store = SqliteStore::open(path).await.expect("reopen after kill -9");
    common::all_present(&store, &acknowledged).await;
}

/// The child of `acknowledged_creates_survive_kill_9`; does nothing in a normal run.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sqlite_child() {
    let Ok(path) = std::env::var(CHILD_DATABASE) else {
        return;
    };
    let store = SqliteStore::open(&path).await.expect("open in child");
    common::create_until_killed(Arc::new(store)).await;
}

/// `cargo test --release -p keysvc --test store_sqlite -- --ignored --nocapture create_rate`
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "timing, run by hand in release mode"]
async fn create_rate() {
    let (_dir, store) = open().await;
    let rate = common::creates_per_second(Arc::new(store), 16, 1_000).await;
    println!("SQLite: {rate:.0} creates/s with 16 concurrent tasks");
}
