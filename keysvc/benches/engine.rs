//! Engine benchmarks (issue "Key service"): Get of a cached key through the whole engine
//! path (TTLV in, TTLV out), and Create throughput with 16 concurrent requests on SQLite and
//! on PostgreSQL (a throwaway database on 127.0.0.1:5432, dropped afterwards).
//!
//! Run: `cargo bench -p keysvc --bench engine`. Targets: Get on a cached key ≤ 5 µs;
//! Create ≥ 2,000/s on each store.

use std::sync::Arc;
use std::time::{Duration, Instant};

use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use keysvc::envelope::{Keyring, RootKey};
use keysvc::store::postgres::PostgresStore;
use keysvc::store::sqlite::SqliteStore;
use keysvc::store::Store;
use keysvc::{Engine, EngineConfig, TenantContext, TenantId};
use kmip::message::payloads::{CreateRequest, GetRequest, IdRequest};
use kmip::message::{Attributes, RequestMessage, RequestPayload, ResponseMessage, ResponsePayload};
use kmip::spec::{CryptographicAlgorithm, ObjectType, ResultStatus};
use kmip::{ProtocolVersion, Tag};
use sqlx::Connection;

/// Concurrent requests in the Create benchmarks (the figure).
const CONCURRENCY: usize = 16;

fn engine(store: Arc<dyn Store>) -> Engine {
    let keyring = Keyring::new(RootKey::generate("bench").expect("root key"));
    Engine::new(store, Arc::new(keyring), EngineConfig::default())
}

fn tenant() -> TenantContext {
    TenantContext::new(TenantId::parse("bench-tenant").expect("tenant"))
}

fn create_request() -> Vec<u8> {
    let attributes = Attributes::new()
        .with(Tag::CRYPTOGRAPHIC_ALGORITHM, &CryptographicAlgorithm::Aes)
        .with(Tag::CRYPTOGRAPHIC_LENGTH, &256i32);
    RequestMessage::new(
        ProtocolVersion::V1_4,
        vec![RequestPayload::Create(CreateRequest {
            object_type: ObjectType::SymmetricKey,
            attributes: Some(attributes),
            protection_storage_masks: None,
        })],
    )
    .to_ttlv()
}

async fn single(engine: &Engine, ctx: &TenantContext, request: &[u8]) -> ResponsePayload {
    let (bytes, _) = engine.handle(ctx, request).await;
    let response = ResponseMessage::from_ttlv(&bytes, &kmip::Limits::default()).expect("response");
    let item = response.batch_items.into_iter().next().expect("item");
    assert_eq!(
        item.result_status,
        ResultStatus::Success,
        "{:?}",
        item.result_message
    );
    item.payload.expect("payload").expect("typed")
}

/// `n` Creates spread over `CONCURRENCY` tasks; returns the wall time.
async fn creates(engine: &Engine, n: u64) -> Duration {
    let request = Arc::new(create_request());
    let start = Instant::now();
    let mut tasks = Vec::new();
    for worker in 0..CONCURRENCY as u64 {
        let (engine, request) = (engine.clone(), request.clone());
        let share = n / CONCURRENCY as u64 + u64::from(worker < n % CONCURRENCY as u64);
        tasks.push(tokio::spawn(async move {
            let ctx = tenant();
            for _ in 0..share {
                single(&engine, &ctx, &request).await;
            }
        }));
    }
    for t in tasks {
        t.await.expect("worker");
    }
    start.elapsed()
}

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime")
}

fn get_cached(c: &mut Criterion) {
    let rt = runtime();
    let dir = tempfile::tempdir().expect("temp dir");
    let path = dir.path().join("bench.db");
    let engine = rt.block_on(async {
        let store = SqliteStore::open(path.to_str().expect("utf-8"))
            .await
            .expect("sqlite");
        engine(Arc::new(store))
    });
    let ctx = tenant();
    let uid = rt.block_on(async {
        let ResponsePayload::Create(created) = single(&engine, &ctx, &create_request()).await
        else {
            panic!("not a Create response")
        };
        created.unique_identifier.as_text().expect("uid").to_owned()
    });
    let activate = RequestMessage::new(
        ProtocolVersion::V1_4,
        vec![RequestPayload::Activate(IdRequest {
            unique_identifier: Some(uid.clone().into()),
        })],
    );
    rt.block_on(single(&engine, &ctx, &activate.to_ttlv()));
    let get = RequestMessage::new(
        ProtocolVersion::V1_4,
        vec![RequestPayload::Get(GetRequest {
            unique_identifier: Some(uid.into()),
            key_format_type: None,
            key_wrap_type: None,
            key_compression_type: None,
            key_wrapping_specification: None,
        })],
    )
    .to_ttlv();
    rt.block_on(single(&engine, &ctx, &get)); // warm the cache
    let local = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("rt");
    c.bench_function("engine_get_cached_key", |b| {
        b.iter(|| local.block_on(engine.handle(&ctx, &get)))
    });
    assert!(
        engine.cache().hits() > 0,
        "the benchmark must hit the cache"
    );
}

fn create_sqlite(c: &mut Criterion) {
    let rt = runtime();
    let dir = tempfile::tempdir().expect("temp dir");
    let path = dir.path().join("bench.db");
    let engine = rt.block_on(async {
        engine(Arc::new(
            SqliteStore::open(path.to_str().expect("utf-8"))
                .await
                .expect("sqlite"),
        ))
    });
    let mut group = c.benchmark_group("engine_create_16_concurrent");
    group.throughput(Throughput::Elements(1)).sample_size(10);
    group.bench_function("sqlite", |b| {
        b.iter_custom(|n| rt.block_on(creates(&engine, n)))
    });
    group.finish();
}

fn create_postgres(c: &mut Criterion) {
    let rt = runtime();
    let admin_url = std::env::var("OPENKCM_TEST_POSTGRES")
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/postgres".into());
    let name = format!("openkcm_bench_{}", std::process::id());
    let (engine, db_url) = rt.block_on(async {
        let mut admin = sqlx::PgConnection::connect(&admin_url)
            .await
            .expect("PostgreSQL reachable");
        sqlx::query(&format!("CREATE DATABASE {name}"))
            .execute(&mut admin)
            .await
            .expect("create db");
        let db_url = match admin_url.rsplit_once('/') {
            Some((base, _)) => format!("{base}/{name}"),
            None => panic!("database URL without a database"),
        };
        let store = PostgresStore::connect_dev(&db_url)
            .await
            .expect("connect_dev");
        (engine(Arc::new(store)), db_url)
    });
    let mut group = c.benchmark_group("engine_create_16_concurrent");
    group.throughput(Throughput::Elements(1)).sample_size(10);
    group.bench_function("postgres", |b| {
        b.iter_custom(|n| rt.block_on(creates(&engine, n)))
    });
    group.finish();
    drop(engine);
    rt.block_on(async {
        let _ = db_url;
        let mut admin = sqlx::PgConnection::connect(&admin_url)
            .await
            .expect("PostgreSQL reachable");
        let _ = sqlx::query(&format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)"))
            .execute(&mut admin)
            .await;
    });
}

criterion_group!(benches, get_cached, create_sqlite, create_postgres);
criterion_main!(benches);
