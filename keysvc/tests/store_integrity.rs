//! Holding the trust boundary against a hostile tenant, in the store (issue 17), on a real
//! PostgreSQL server and on SQLite:
//!
//! - no lost updates: a Destroy racing root-key rotation and first Gets stays destroyed;
//!
//! The PostgreSQL server is required (`OPENKCM_TEST_POSTGRES`, default the local one).

mod support;

use std::sync::Arc;
use std::time::{Duration, Instant};

use keysvc::envelope::{Keyring, RootKey};
use keysvc::rotate::rotate_root;
use keysvc::store::postgres::PostgresStore;
use keysvc::store::Store;
use keysvc::{Engine, EngineConfig, TenantContext, TenantId};
use kmip::message::payloads::{GetAttributesRequest, IdRequest};
use kmip::message::{RequestPayload, ResponseBatchItem, ResponseMessage, UniqueIdentifier};
use kmip::spec::{ResultReason, ResultStatus};
use kmip::ttlv::Limits;
use support::{create_aes, get, kmip_request, success_uid, PgDatabase};

const TENANT: &str = "tenant-a";

fn ctx(tenant: &str) -> TenantContext {
    TenantContext::new(TenantId::parse(tenant).expect("tenant"))
}

/// Two root keys, as base64, so each test can build as many keyrings as it needs.
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

    /// A current, B previous.
    fn ab(&self) -> Keyring {
        Keyring::new(self.a()).with_previous(self.b())
    }

    /// B current, A previous.
    fn ba(&self) -> Keyring {
        Keyring::new(self.b()).with_previous(self.a())
    }
}

/// A fresh engine: its own cache, like another replica.
fn engine(store: &Arc<dyn Store>, keyring: Keyring) -> Engine {
    Engine::new(store.clone(), Arc::new(keyring), EngineConfig::default())
}

async fn call(engine: &Engine, tenant: &str, payloads: Vec<RequestPayload>) -> ResponseMessage {
    let (bytes, _) = engine.handle(&ctx(tenant), &kmip_request(payloads)).await;
    ResponseMessage::from_ttlv(&bytes, &Limits::default()).expect("response")
}

async fn one(engine: &Engine, tenant: &str, payload: RequestPayload) -> ResponseBatchItem {
    call(engine, tenant, vec![payload])
        .await
        .batch_items
        .remove(0)
}

fn destroy(uid: &str) -> RequestPayload {
    RequestPayload::Destroy(IdRequest {
        unique_identifier: Some(UniqueIdentifier::from(uid)),
    })
}

fn get_attributes(uid: &str) -> RequestPayload {
    RequestPayload::GetAttributes(GetAttributesRequest {
        unique_identifier: Some(UniqueIdentifier::from(uid)),
        attribute_names: Vec::new(),
    })
}

/// A dev store on a throwaway database: the plain runtime role under RLS, with the
/// owner's connection for listing tenants (rotate-root).
async fn postgres_store(db: &PgDatabase) -> Arc<dyn Store> {
    Arc::new(
        PostgresStore::connect_dev(&db.owner_url())
            .await
            .expect("dev store"),
    )
}

// ------------------------------------------------------------------ item 4: lost updates

/// Keys per round: enough that rotate-root's read-to-write window of some key overlaps
/// that key's Destroy.
const RACE_KEYS: usize = 60;
/// Rounds, bounded also by [`RACE_BUDGET`].
const RACE_ROUNDS: usize = 6;
const RACE_BUDGET: Duration = Duration::from_secs(5);

/// Destroy races rotate-root (which rewrites every object) and first Gets served from a
/// replica's cache (which clear Fresh): under READ COMMITTED a write based on a read made
/// before the Destroy committed would put the material back. Every destroyed key must stay
/// destroyed: no material in the store, and Get answers Object Destroyed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_destroyed_key_never_comes_back_on_postgres() {
    let db = PgDatabase::create(true).await;
    let store = postgres_store(&db).await;
    let keys = Keys::new();
    let started = Instant::now();
    let mut rounds = 0;
    let mut destroyed_total = 0;
    while rounds < RACE_ROUNDS && started.elapsed() < RACE_BUDGET {
        rounds += 1;
        // Alternate the current key so every rotation rewrites every live object.
        let (current, rotation) = if rounds % 2 == 1 {
            (keys.ab(), keys.ba())
        } else {
            (keys.ba(), keys.ab())
        };
        let creator = engine(&store, current);
        let created = call(
            &creator,
            TENANT,
            (0..RACE_KEYS).map(|_| create_aes()).collect(),
        )
        .await;
        let uids: Vec<String> = created.batch_items.iter().map(success_uid).collect();
        // Two replicas that have every key cached, still Fresh.
        let replicas = [engine(&store, keys.ab()), engine(&store, keys.ba())];
        for replica in &replicas {
            for uid in &uids {
                let item = one(replica, TENANT, get_attributes(uid)).await;
                assert_eq!(item.result_status, ResultStatus::Success, "{item:?}");
            }
        }

        let destroyer = {
            let (engine, uids) = (engine(&store, keys.ab()), uids.clone());
            tokio::spawn(async move {
                for uid in &uids {
                    let item = one(&engine, TENANT, destroy(uid)).await;
                    assert_eq!(item.result_status, ResultStatus::Success, "{uid}: {item:?}");
                }
            })
        };
        let rotator = {
            let store = store.clone();
            tokio::spawn(async move { rotate_root(store.as_ref(), &rotation).await })
        };
        let getters: Vec<_> = replicas
            .into_iter()
            .enumerate()
            .map(|(n, replica)| {
                let mut order = uids.clone();
                if n == 1 {
                    order.reverse();
                }
                tokio::spawn(async move {
                    for uid in &order {
                        // Success (served before the Destroy) or Object Destroyed; never
                        // anything else.
                        let item = one(&replica, TENANT, get(uid)).await;
                        assert!(
                            item.result_status == ResultStatus::Success
                                || item.result_reason == Some(ResultReason::ObjectDestroyed),
                            "{uid}: {item:?}"
                        );
                    }
                })
            })
            .collect();
        destroyer.await.expect("destroyer");
        rotator
            .await
            .expect("rotator")
            .expect("rotate-root succeeds while keys are destroyed");
        for getter in getters {
            getter.await.expect("getter");
        }

        let fresh = engine(&store, keys.ab());
        let mut tx = store.begin(&ctx(TENANT)).await.expect("begin");
        for uid in &uids {
            let record = tx.get(uid).await.expect("get").expect("metadata kept");
            assert!(
                record.material.is_none(),
                "round {rounds}: destroyed key {uid} has material again"
            );
            let item = one(&fresh, TENANT, get(uid)).await;
            assert_eq!(
                item.result_reason,
                Some(ResultReason::ObjectDestroyed),
                "round {rounds}: {uid}: {item:?}"
            );
        }
        drop(tx);
        destroyed_total += uids.len();
    }
    eprintln!(
        "{destroyed_total} keys destroyed in {rounds} rounds racing rotate-root and Gets, {:?}",
        started.elapsed()
    );
}
