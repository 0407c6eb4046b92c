//! Root key rotation (`keysvc::rotate::rotate_root`, behind `openkcm keysvc rotate-root`):
//! objects wrapped under key A stay readable through the rotation and, afterwards, with
//! key B alone.

mod support;

use std::sync::Arc;

use keysvc::envelope::{Keyring, RootKey};
use keysvc::rotate::{rotate_root, RotateReport};
use keysvc::store::sqlite::SqliteStore;
use keysvc::store::Store;
use keysvc::{Engine, EngineConfig, TenantContext, TenantId};
use kmip::message::payloads::IdRequest;
use kmip::message::{RequestPayload, ResponseMessage, UniqueIdentifier};
use kmip::spec::{ResultReason, ResultStatus};
use kmip::ttlv::Limits;
use support::{create_aes, get, kmip_request, success_uid};

/// More than one rotation batch (500) for one tenant.
const TENANT_A_OBJECTS: usize = 620;
const TENANT_B_OBJECTS: usize = 15;

struct Keys {
    a: String,
    b: String,
}

impl Keys {
    fn new() -> Self {
        let b64 = |id: &str| RootKey::generate(id).expect("key").to_base64().to_string();
        Self {
            a: b64("root-a"),
            b: b64("root-b"),
        }
    }

    fn a(&self) -> RootKey {
        RootKey::from_base64("root-a", &self.a).expect("key A")
    }

    fn b(&self) -> RootKey {
        RootKey::from_base64("root-b", &self.b).expect("key B")
    }
}

fn ctx(tenant: &str) -> TenantContext {
    TenantContext::new(TenantId::parse(tenant).expect("tenant"))
}

/// A fresh engine (so a fresh cache: every read goes to the store and unwraps).
fn engine(store: &Arc<dyn Store>, keyring: Keyring) -> Engine {
    Engine::new(store.clone(), Arc::new(keyring), EngineConfig::default())
}

async fn call(engine: &Engine, tenant: &str, payloads: Vec<RequestPayload>) -> ResponseMessage {
    let (bytes, _) = engine.handle(&ctx(tenant), &kmip_request(payloads)).await;
    ResponseMessage::from_ttlv(&bytes, &Limits::default()).expect("response")
}

/// Batches of at most this many items (the engine's default batch limit).
const BATCH: usize = 200;

async fn create(engine: &Engine, tenant: &str, n: usize) -> Vec<String> {
    let mut uids = Vec::with_capacity(n);
    for start in (0..n).step_by(BATCH) {
        let size = BATCH.min(n - start);
        let response = call(engine, tenant, (0..size).map(|_| create_aes()).collect()).await;
        uids.extend(response.batch_items.iter().map(success_uid));
    }
    uids
}

/// Asserts every uid reads back (Get returns the key).
async fn assert_readable(engine: &Engine, tenant: &str, uids: &[String], when: &str) {
    for chunk in uids.chunks(BATCH) {
        let response = call(engine, tenant, chunk.iter().map(|u| get(u)).collect()).await;
        for (item, uid) in response.batch_items.iter().zip(chunk) {
            assert_eq!(
                item.result_status,
                ResultStatus::Success,
                "{when}: {uid}: {item:?}"
            );
        }
        assert_eq!(response.batch_items.len(), chunk.len(), "{when}");
    }
}

#[tokio::test]
async fn objects_wrapped_under_the_old_root_key_are_rewrapped_under_the_new_one() {
    let dir = tempfile::tempdir().expect("temporary directory");
    let store: Arc<dyn Store> = Arc::new(
        SqliteStore::open(&format!(
            "sqlite://{}",
            dir.path().join("keys.db").display()
        ))
        .await
        .expect("store"),
    );
    let keys = Keys::new();

    let under_a = engine(&store, Keyring::new(keys.a()));
    let a_uids = create(&under_a, "tenant-a", TENANT_A_OBJECTS).await;
    let b_uids = create(&under_a, "tenant-b", TENANT_B_OBJECTS).await;
    // A destroyed object keeps its metadata but has no material to rewrap.
    let destroyed = create(&under_a, "tenant-b", 1).await.remove(0);
    let response = call(
        &under_a,
        "tenant-b",
        vec![RequestPayload::Destroy(IdRequest {
            unique_identifier: Some(UniqueIdentifier::from(destroyed.as_str())),
        })],
    )
    .await;
    assert_eq!(response.batch_items[0].result_status, ResultStatus::Success);

    // Before rotation: B + A reads everything; B alone reads nothing.
    let rotating = || Keyring::new(keys.b()).with_previous(keys.a());
    assert_readable(
        &engine(&store, rotating()),
        "tenant-a",
        &a_uids,
        "B+A before",
    )
    .await;
    assert_readable(
        &engine(&store, rotating()),
        "tenant-b",
        &b_uids,
        "B+A before",
    )
    .await;
    let b_only = engine(&store, Keyring::new(keys.b()));
    let item = &call(&b_only, "tenant-a", vec![get(&a_uids[0])])
        .await
        .batch_items[0];
    assert_eq!(
        item.result_reason,
        Some(ResultReason::GeneralFailure),
        "{item:?}"
    );

    let report = rotate_root(store.as_ref(), &rotating())
        .await
        .expect("rotation");
    assert_eq!(
        report,
        RotateReport {
            tenants: 2,
            objects: TENANT_A_OBJECTS + TENANT_B_OBJECTS + 1,
            rewrapped: TENANT_A_OBJECTS + TENANT_B_OBJECTS,
            already_current: 0,
            without_material: 1,
        }
    );

    // After: B + A still reads everything, and so does B alone.
    assert_readable(
        &engine(&store, rotating()),
        "tenant-a",
        &a_uids,
        "B+A after",
    )
    .await;
    for (tenant, uids) in [("tenant-a", &a_uids), ("tenant-b", &b_uids)] {
        let b_only = engine(&store, Keyring::new(keys.b()));
        assert_readable(&b_only, tenant, uids, "B alone after").await;
    }
    // Objects created under A before still answer the same identity, tenants stay apart.
    let item = &call(
        &engine(&store, Keyring::new(keys.b())),
        "tenant-b",
        vec![get(&a_uids[0])],
    )
    .await
    .batch_items[0];
    // A 2.1 request: Object Not Found (1.x clients get Item Not Found).
    assert_eq!(
        item.result_reason,
        Some(ResultReason::ObjectNotFound),
        "{item:?}"
    );

    // Idempotent: a second run finds everything under B already.
    let again = rotate_root(store.as_ref(), &rotating())
        .await
        .expect("second rotation");
    assert_eq!(again.rewrapped, 0);
    assert_eq!(again.already_current, TENANT_A_OBJECTS + TENANT_B_OBJECTS);
}

#[tokio::test]
async fn rotation_without_the_old_key_fails_and_writes_nothing_of_the_batch() {
    let dir = tempfile::tempdir().expect("temporary directory");
    let store: Arc<dyn Store> = Arc::new(
        SqliteStore::open(&format!(
            "sqlite://{}",
            dir.path().join("keys.db").display()
        ))
        .await
        .expect("store"),
    );
    let keys = Keys::new();
    let uids = create(&engine(&store, Keyring::new(keys.a())), "tenant-a", 3).await;

    let err = rotate_root(store.as_ref(), &Keyring::new(keys.b()))
        .await
        .expect_err("A is not loaded");
    assert!(err.to_string().contains("tenant-a"), "{err}");
    // Nothing was half-rotated: A alone still reads all of them.
    assert_readable(
        &engine(&store, Keyring::new(keys.a())),
        "tenant-a",
        &uids,
        "after failure",
    )
    .await;
}
