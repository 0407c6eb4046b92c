//! Holding the trust boundary against a hostile tenant, in the store (issue 17), on a real
//! PostgreSQL server and on SQLite:
//!
//! - no lost updates: a Destroy racing root-key rotation and first Gets stays destroyed;
//! - the key cache is cleared when the change feed reconnects;
//! - a wrong root key (same id, other bytes; or an id the data never saw) is refused at
//!   start; rotation records the new key;
//! - the runtime role may not have CREATEROLE, and cannot read the tenant list;
//! - a record changed behind keysvc's back (state column, attributes) answers as tampered,
//!   counted, and nothing else is affected; rows that predate authentication still read
//!   where allowed and are sealed on their next write.
//!
//! The PostgreSQL server is required (`OPENKCM_TEST_POSTGRES`, default the local one).

mod support;

use std::sync::Arc;
use std::time::{Duration, Instant};

use keysvc::config::{self, ConfigSources};
use keysvc::envelope::{Keyring, RootKey};
use keysvc::rotate::rotate_root;
use keysvc::server::{self, verify_root_keys, KeysvcServer, RootKeyError};
use keysvc::store::postgres::{PostgresOptions, PostgresStore};
use keysvc::store::sqlite::SqliteStore;
use keysvc::store::{Store, StoreError};
use keysvc::{Engine, EngineConfig, TenantContext, TenantId};
use kmip::message::payloads::{GetAttributesRequest, IdRequest};
use kmip::message::TtlvValue;
use kmip::message::{
    RequestPayload, ResponseBatchItem, ResponseMessage, ResponsePayload, UniqueIdentifier,
};
use kmip::spec::{ResultReason, ResultStatus, State};
use kmip::ttlv::Limits;
use sqlx::Connection;
use support::{
    activate, create_aes, encrypt, get, kmip_request, revoke, success_uid, PgDatabase, Pki,
};
use testkit::postgres::{admin, admin_execute};

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

// ------------------------------------------------------------- item 5a: change feed gaps

/// The State a replica answers for `uid` (GetAttributes, served from its cache if cached).
async fn state(engine: &Engine, uid: &str) -> State {
    let item = one(engine, TENANT, get_attributes(uid)).await;
    match item.payload {
        Some(Ok(ResponsePayload::GetAttributes(r))) => r
            .attributes
            .expect("attributes")
            .state()
            .expect("State decodes")
            .expect("State present"),
        other => panic!("GetAttributes {uid}: {other:?} ({:?})", item.result_reason),
    }
}

async fn listeners(db: &str) -> i64 {
    sqlx::query_scalar(
        "SELECT count(*) FROM pg_stat_activity \
         WHERE datname = $1 AND application_name = 'openkcm-listener'",
    )
    .bind(db)
    .fetch_one(&mut admin().await)
    .await
    .expect("pg_stat_activity")
}

/// A replica whose LISTEN connection dies misses the notifications sent until it is back;
/// when it is back, it must drop its whole cache rather than serve what changed meanwhile
/// until the TTL (30 s) runs out.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_cache_is_cleared_when_the_change_feed_reconnects() {
    let db = PgDatabase::create(true).await;
    let keys = Keys::new();
    let open = || async {
        Arc::new(
            PostgresStore::connect(&db.app_url(), PostgresOptions::default())
                .await
                .expect("runtime-role store"),
        ) as Arc<dyn Store>
    };
    let (first, second) = (open().await, open().await);
    let replica = engine(&first, keys.ab());
    let other = engine(&second, keys.ab());
    let uid = success_uid(&one(&other, TENANT, create_aes()).await);
    assert_eq!(
        one(&other, TENANT, activate(&uid)).await.result_status,
        ResultStatus::Success
    );
    assert_eq!(
        state(&replica, &uid).await,
        State::Active,
        "cached as Active"
    );

    // Cut every listener off and keep the role from logging in again, so the gap lasts
    // until the change below has been made (existing pool connections keep working).
    admin_execute(&format!("ALTER ROLE {} NOLOGIN", db.role)).await;
    assert_eq!(
        terminate_listeners(&db.name).await,
        2,
        "one listener per store"
    );
    let revoked = one(&other, TENANT, revoke(&uid)).await;
    admin_execute(&format!("ALTER ROLE {} LOGIN", db.role)).await;
    assert_eq!(revoked.result_status, ResultStatus::Success, "{revoked:?}");

    // Bounded by far less than the cache TTL: a cleared cache answers at once.
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let seen = state(&replica, &uid).await;
        let listening = listeners(&db.name).await;
        // The cache is cleared when the feed is lost (so the revoked key may be read from
        // the database before any listener is back) and again when it listens anew.
        if seen == State::Deactivated {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the replica still serves the revoked key as {seen:?} from its cache \
             ({listening} listeners back)"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }

    // What is cached while nobody listens must go too, once the feed is back: a key read
    // (and cached) during the gap, then revoked during the gap.
    let second = success_uid(&one(&other, TENANT, create_aes()).await);
    one(&other, TENANT, activate(&second)).await;
    eventually_listening(&db.name, 2).await;
    admin_execute(&format!("ALTER ROLE {} NOLOGIN", db.role)).await;
    terminate_listeners(&db.name).await;
    // Give the replica's feed time to notice the loss (and clear), then cache in the gap.
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(state(&replica, &second).await, State::Active);
    assert_eq!(state(&replica, &second).await, State::Active, "cached");
    let revoked = one(&other, TENANT, revoke(&second)).await;
    assert_eq!(revoked.result_status, ResultStatus::Success, "{revoked:?}");
    admin_execute(&format!("ALTER ROLE {} LOGIN", db.role)).await;
    eventually_listening(&db.name, 2).await;
    let back = Instant::now();
    while state(&replica, &second).await != State::Deactivated {
        assert!(
            back.elapsed() < Duration::from_secs(5),
            "the key cached during the gap is still served as Active after the feed is back"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Terminates every change-feed listener connected to `database`; returns how many.
async fn terminate_listeners(database: &str) -> usize {
    let killed: Vec<bool> = sqlx::query_scalar(
        "SELECT pg_terminate_backend(pid) FROM pg_stat_activity \
         WHERE datname = $1 AND application_name = 'openkcm-listener'",
    )
    .bind(database)
    .fetch_all(&mut admin().await)
    .await
    .expect("terminate the listeners");
    killed.len()
}

/// Waits (bounded) until `n` change-feed listeners are connected to `database`.
async fn eventually_listening(database: &str, n: i64) {
    let deadline = Instant::now() + Duration::from_secs(30);
    while listeners(database).await < n {
        assert!(Instant::now() < deadline, "the listeners did not come back");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

// ----------------------------------------------------------- item 5b: root key checks

/// keysvc as `openkcm keysvc` starts it (store opened, then `KeysvcServer::start`), with
/// the PKI's root key file `root.key` under id `root-a`.
async fn start(pki: &Pki, database: &str) -> Result<KeysvcServer, String> {
    let (config, _) = config::load_serve(&ConfigSources::new(pki.flags(database)))
        .unwrap_or_else(|e| panic!("{e}"));
    let store = server::open_store(&config.store.database)
        .await
        .map_err(|e| e.to_string())?;
    KeysvcServer::start(&config, store)
        .await
        .map_err(|e| e.to_string())
}

async fn wrong_root_key_is_refused_at_start(database: &str) {
    let pki = Pki::generate();
    start(&pki, database)
        .await
        .expect("first start records root-a")
        .shutdown()
        .await;
    start(&pki, database)
        .await
        .expect("a normal restart")
        .shutdown()
        .await;
    // Other bytes under the same id.
    pki.write_root_key("root.key", "root-a");
    let refused = start(&pki, database).await.expect_err("wrong key bytes");
    assert!(
        refused.contains("root key root-a does not match"),
        "{refused}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_wrong_root_key_is_refused_at_start_on_sqlite() {
    let dir = tempfile::tempdir().expect("tempdir");
    let url = format!("sqlite://{}", dir.path().join("keys.db").display());
    wrong_root_key_is_refused_at_start(&url).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_wrong_root_key_is_refused_at_start_on_postgres() {
    let db = PgDatabase::create(true).await;
    wrong_root_key_is_refused_at_start(&db.app_url()).await;
}

/// The keyring checks that `rotate-root` and every start run, through a rotation from A to
/// B: a key id the database never saw is refused on its own, accepted (and recorded) next
/// to a known one, and known from then on.
async fn root_key_records_follow_a_rotation(store: Arc<dyn Store>) {
    let keys = Keys::new();
    let a = || Keyring::new(keys.a());
    verify_root_keys(store.as_ref(), &a())
        .await
        .expect("A recorded");
    let under_a = engine(&store, a());
    let uid = success_uid(&one(&under_a, TENANT, create_aes()).await);

    match verify_root_keys(store.as_ref(), &Keyring::new(keys.b())).await {
        Err(e @ RootKeyError::Unknown { .. }) => {
            let shown = e.to_string();
            assert!(
                shown.contains("root-b") && shown.contains("root-a"),
                "{shown}"
            );
        }
        other => panic!("a keyring the database never saw: {other:?}"),
    }
    let impostor = RootKey::generate("root-a").expect("key");
    match verify_root_keys(
        store.as_ref(),
        &Keyring::new(keys.b()).with_previous(impostor),
    )
    .await
    {
        Err(RootKeyError::Mismatch(id)) => assert_eq!(id, "root-a"),
        other => panic!("wrong bytes under a known id: {other:?}"),
    }

    // rotate-root with B current and A previous records B, and rewraps.
    let report = rotate_root(store.as_ref(), &keys.ba())
        .await
        .expect("rotate");
    assert_eq!(report.rewrapped, 1, "{report:?}");
    let b_only = Keyring::new(keys.b());
    verify_root_keys(store.as_ref(), &b_only)
        .await
        .expect("B is known after the rotation");
    let item = one(&engine(&store, b_only), TENANT, get(&uid)).await;
    assert_eq!(item.result_status, ResultStatus::Success, "{item:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn root_key_records_follow_a_rotation_on_sqlite() {
    let dir = tempfile::tempdir().expect("tempdir");
    let store = SqliteStore::open(dir.path().join("keys.db").to_str().expect("utf-8"))
        .await
        .expect("store");
    root_key_records_follow_a_rotation(Arc::new(store)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn root_key_records_follow_a_rotation_on_postgres() {
    let db = PgDatabase::create(true).await;
    let store = PostgresStore::connect_with_owner(
        &db.app_url(),
        &db.owner_url(),
        PostgresOptions::default(),
    )
    .await
    .expect("store");
    root_key_records_follow_a_rotation(Arc::new(store)).await;
}

// -------------------------------------------------- items 5c, 5d: the runtime role's rights

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_runtime_role_with_createrole_is_refused() {
    let db = PgDatabase::create(true).await;
    admin_execute(&format!("ALTER ROLE {} CREATEROLE", db.role)).await;
    match PostgresStore::connect(&db.app_url(), PostgresOptions::default()).await {
        Err(StoreError::UnsafeRole(why)) => {
            assert!(
                why.contains("CREATEROLE") && why.contains(&db.role),
                "{why}"
            )
        }
        Err(other) => panic!("unexpected error {other:?}"),
        Ok(_) => panic!("keysvc started as a CREATEROLE role"),
    }
    match keysvc::store::postgres::migrate(&db.owner_url(), &db.role).await {
        Err(StoreError::UnsafeRole(why)) => assert!(why.contains("CREATEROLE"), "{why}"),
        other => panic!("migrate granted a CREATEROLE role: {other:?}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_runtime_role_cannot_read_the_tenant_list() {
    let db = PgDatabase::create(true).await;
    let store: Arc<dyn Store> = Arc::new(
        PostgresStore::connect(&db.app_url(), PostgresOptions::default())
            .await
            .expect("store"),
    );
    let keyring = Keys::new().ab();
    let service = engine(&store, keyring);
    for tenant in ["tenant-a", "tenant-b"] {
        success_uid(&one(&service, tenant, create_aes()).await);
    }

    let mut conn = sqlx::PgConnection::connect(&db.app_url())
        .await
        .expect("connect as the runtime role");
    let all: Vec<String> = sqlx::query_scalar("SELECT tenant_id FROM tenants")
        .fetch_all(&mut conn)
        .await
        .expect("select");
    assert_eq!(all, Vec::<String>::new(), "no tenant set: no tenant listed");
    let mut tx = conn.begin().await.expect("begin");
    sqlx::query("SELECT set_config('app.current_tenant', 'tenant-a', true)")
        .execute(&mut *tx)
        .await
        .expect("set tenant");
    let own: Vec<String> = sqlx::query_scalar("SELECT tenant_id FROM tenants")
        .fetch_all(&mut *tx)
        .await
        .expect("select");
    assert_eq!(own, ["tenant-a"], "a tenant sees only itself");
    drop(tx);

    // The runtime-role store cannot list tenants; with the owner's URL (rotate-root) it can.
    match store.tenants().await {
        Err(StoreError::Database(why)) => assert!(why.contains("owner"), "{why}"),
        other => panic!("the runtime role listed tenants: {other:?}"),
    }
    let rotation = PostgresStore::connect_with_owner(
        &db.app_url(),
        &db.owner_url(),
        PostgresOptions::default(),
    )
    .await
    .expect("store with the owner's URL");
    let tenants = rotation.tenants().await.expect("tenants");
    let names: Vec<&str> = tenants.iter().map(TenantId::as_str).collect();
    assert_eq!(names, ["tenant-a", "tenant-b"]);
}

// ------------------------------------------------------ item 8: authenticated attributes

/// Runs one statement on the store's database behind keysvc's back (PostgreSQL: as the
/// superuser, past RLS; SQLite: on the file).
enum Backdoor {
    Postgres(String),
    Sqlite(String),
}

impl Backdoor {
    async fn execute(&self, sql: &str, uid: &str, blob: Option<Vec<u8>>) {
        match self {
            Backdoor::Postgres(url) => {
                let mut conn = sqlx::PgConnection::connect(url).await.expect("connect");
                let sql = sql.replace("?1", "$1").replace("?2", "$2");
                let mut query = sqlx::query(&sql).bind(uid);
                if let Some(blob) = blob {
                    query = query.bind(blob);
                }
                query.execute(&mut conn).await.expect("backdoor update");
            }
            Backdoor::Sqlite(path) => {
                let mut conn = sqlx::SqliteConnection::connect(&format!("sqlite://{path}"))
                    .await
                    .expect("connect");
                let mut query = sqlx::query(sql).bind(uid);
                if let Some(blob) = blob {
                    query = query.bind(blob);
                }
                query.execute(&mut conn).await.expect("backdoor update");
            }
        }
    }
}

fn is_tampered(item: &ResponseBatchItem) -> bool {
    item.result_reason == Some(ResultReason::GeneralFailure)
        && item
            .result_message
            .as_deref()
            .is_some_and(|m| m.contains("integrity"))
}

async fn tampering_is_detected(store: Arc<dyn Store>, backdoor: Backdoor) {
    let keys = Keys::new();
    let service = engine(&store, keys.ab());
    let mut uids = Vec::new();
    for _ in 0..4 {
        let uid = success_uid(&one(&service, TENANT, create_aes()).await);
        assert_eq!(
            one(&service, TENANT, activate(&uid)).await.result_status,
            ResultStatus::Success
        );
        uids.push(uid);
    }
    let [state_edited, attributes_edited, untouched, destroyed] =
        <[String; 4]>::try_from(uids).expect("four keys");
    // A destroyed object: metadata only.
    assert_eq!(
        one(&service, TENANT, revoke(&destroyed))
            .await
            .result_status,
        ResultStatus::Success
    );
    assert_eq!(
        one(&service, TENANT, destroy(&destroyed))
            .await
            .result_status,
        ResultStatus::Success
    );
    let before = keysvc::engine::integrity_failures();

    // Active → Pre-Active in the state column.
    backdoor
        .execute(
            "UPDATE objects SET state = 1 WHERE uid = ?1",
            &state_edited,
            None,
        )
        .await;
    // The usage mask in the attributes blob: Encrypt taken away... or given.
    let mut tx = store.begin(&ctx(TENANT)).await.expect("begin");
    let record = tx
        .get(&attributes_edited)
        .await
        .expect("get")
        .expect("present");
    drop(tx);
    let item = kmip::ttlv::decode(&record.attributes, &Limits::default()).expect("ttlv");
    let mut attributes =
        kmip::message::Attributes::decode(&item, kmip::ProtocolVersion::V2_1).expect("attrs");
    attributes.set_typed(
        kmip::Tag::CRYPTOGRAPHIC_USAGE_MASK,
        &kmip::spec::CryptographicUsageMask(0x7f_ffff),
    );
    let blob = attributes
        .encode(kmip::Tag::ATTRIBUTES, kmip::ProtocolVersion::V2_1)
        .to_ttlv();
    backdoor
        .execute(
            "UPDATE objects SET attributes = ?2 WHERE uid = ?1",
            &attributes_edited,
            Some(blob),
        )
        .await;
    // A destroyed object brought back to Active in its state column.
    backdoor
        .execute(
            "UPDATE objects SET state = 2 WHERE uid = ?1",
            &destroyed,
            None,
        )
        .await;

    let reader = engine(&store, keys.ab());
    for uid in [&state_edited, &attributes_edited] {
        for payload in [get(uid), encrypt(uid, b"sixteen byte msg")] {
            let item = one(&reader, TENANT, payload).await;
            assert!(is_tampered(&item), "{uid}: {item:?}");
        }
    }
    let item = one(&reader, TENANT, get_attributes(&destroyed)).await;
    assert!(is_tampered(&item), "destroyed {destroyed}: {item:?}");
    for payload in [get(&untouched), encrypt(&untouched, b"sixteen byte msg")] {
        let item = one(&reader, TENANT, payload).await;
        assert_eq!(item.result_status, ResultStatus::Success, "{item:?}");
    }
    let counted = keysvc::engine::integrity_failures() - before;
    assert!(counted >= 5, "integrity failures counted: {counted}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tampered_records_are_refused_on_postgres() {
    let db = PgDatabase::create(true).await;
    let store = PostgresStore::connect(&db.app_url(), PostgresOptions::default())
        .await
        .expect("store");
    tampering_is_detected(Arc::new(store), Backdoor::Postgres(db.owner_url())).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tampered_records_are_refused_on_sqlite() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("keys.db").display().to_string();
    let store = SqliteStore::open(&path).await.expect("store");
    tampering_is_detected(Arc::new(store), Backdoor::Sqlite(path)).await;
}

/// A row written before records were authenticated (no authenticator, version 0) reads
/// only under a root key whose verified record allows such rows, and is sealed by its next
/// write; stripping the authenticator of a row under any other key is tampering.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rows_that_predate_authentication_read_where_allowed_and_are_sealed_on_write() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("keys.db").display().to_string();
    let store: Arc<dyn Store> = Arc::new(SqliteStore::open(&path).await.expect("store"));
    let keys = Keys::new();
    let service = engine(&store, keys.ab());
    let uid = success_uid(&one(&service, TENANT, create_aes()).await);
    let backdoor = Backdoor::Sqlite(path.clone());
    // As an old keysvc wrote it, in a database the migration found rows in.
    backdoor
        .execute(
            "UPDATE objects SET integrity = NULL, version = 0 WHERE uid = ?1",
            &uid,
            None,
        )
        .await;
    backdoor
        .execute(
            "UPDATE integrity_upgrade SET legacy_rows = 1 WHERE ?1 = ?1",
            "",
            None,
        )
        .await;

    let unverified = engine(&store, keys.ab());
    assert!(is_tampered(&one(&unverified, TENANT, get(&uid)).await));

    let keyring = keys.ab();
    verify_root_keys(store.as_ref(), &keyring)
        .await
        .expect("first start: A and B recorded as allowing old rows");
    let upgraded = engine(&store, keyring);
    // The first Get clears Fresh: a write, which seals the row.
    let item = one(&upgraded, TENANT, get(&uid)).await;
    assert_eq!(item.result_status, ResultStatus::Success, "{item:?}");
    let mut tx = store.begin(&ctx(TENANT)).await.expect("begin");
    let record = tx.get(&uid).await.expect("get").expect("present");
    drop(tx);
    assert!(
        record.integrity.is_some() && record.version == 1,
        "{record:?}"
    );

    // A key recorded later (a rotation to C) does not allow them.
    let c = RootKey::generate("root-c").expect("key");
    let c_b64 = c.to_base64();
    let rotated = Keyring::new(c)
        .with_previous(keys.a())
        .with_previous(keys.b());
    rotate_root(store.as_ref(), &rotated).await.expect("rotate");
    let stripped = success_uid(&one(&engine(&store, rotated), TENANT, create_aes()).await);
    backdoor
        .execute(
            "UPDATE objects SET integrity = NULL, version = 0 WHERE uid = ?1",
            &stripped,
            None,
        )
        .await;
    let ring = Keyring::new(RootKey::from_base64("root-c", &c_b64).expect("C"))
        .with_previous(keys.a())
        .with_previous(keys.b());
    verify_root_keys(store.as_ref(), &ring)
        .await
        .expect("known keys");
    assert!(is_tampered(
        &one(&engine(&store, ring), TENANT, get(&stripped)).await
    ));
}
