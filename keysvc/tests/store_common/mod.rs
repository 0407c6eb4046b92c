//! Behaviour every store must have, written once over `dyn Store` and run against SQLite
//! (`store_sqlite.rs`) and PostgreSQL (`store_postgres.rs`).

use std::io::{BufRead, BufReader, Write};
use std::process::{Child, Command, Stdio};
use std::sync::{mpsc, Arc};
use std::time::{Duration, Instant};

use keysvc::envelope::WrappedKey;
use keysvc::store::{LocateFilter, ObjectChanged, ObjectRecord, Store, StoreError, StoreEvent};
use keysvc::{TenantContext, TenantId};
use tokio::sync::broadcast;

/// KMIP enumeration values used in the fixtures.
const SYMMETRIC_KEY: u32 = 2;
const SECRET_DATA: u32 = 7;
const PRE_ACTIVE: u32 = 1;
const ACTIVE: u32 = 2;
const AES: u32 = 3;
const HMAC_SHA256: u32 = 9;

/// How long an asynchronous effect (a change notification) may take before the test fails.
pub const CHANGE_DEADLINE: Duration = Duration::from_secs(5);

pub fn tenant(id: &str) -> TenantContext {
    TenantContext::new(TenantId::parse(id).expect("valid tenant id"))
}

/// A symmetric key record of about 300 bytes with two index pairs, like a Create makes.
pub fn key(uid: &str) -> ObjectRecord {
    ObjectRecord {
        uid: uid.to_owned(),
        object_type: SYMMETRIC_KEY,
        state: PRE_ACTIVE,
        cryptographic_algorithm: Some(AES),
        cryptographic_length: Some(256),
        index: vec![
            ("Name".into(), format!("name-{uid}")),
            ("Object Group".into(), "default".into()),
        ],
        attributes: vec![0x42; 180],
        material: Some(WrappedKey {
            root_key_id: "root-1".into(),
            blob: vec![0x17; 61],
        }),
        created_at: 1_700_000_000,
        version: 1,
        integrity: Some(vec![0x01; 40]),
    }
}

pub async fn insert(store: &dyn Store, ctx: &TenantContext, records: &[ObjectRecord]) {
    let mut tx = store.begin(ctx).await.expect("begin");
    for record in records {
        tx.insert(record).await.expect("insert");
    }
    tx.commit().await.expect("commit");
}

pub async fn get(store: &dyn Store, ctx: &TenantContext, uid: &str) -> Option<ObjectRecord> {
    let mut tx = store.begin(ctx).await.expect("begin");
    let record = tx.get(uid).await.expect("get");
    tx.commit().await.expect("commit a read");
    record
}

pub async fn locate(store: &dyn Store, ctx: &TenantContext, filter: &LocateFilter) -> Vec<String> {
    let mut tx = store.begin(ctx).await.expect("begin");
    let uids = tx.locate(filter).await.expect("locate");
    tx.commit().await.expect("commit a read");
    uids
}

/// The next change for `uid`, skipping others; fails the test after `deadline`.
pub async fn next_change_for(
    changes: &mut broadcast::Receiver<StoreEvent>,
    uid: &str,
    deadline: Duration,
) -> ObjectChanged {
    let wait = async {
        loop {
            match changes.recv().await {
                Ok(StoreEvent::Changed(change)) if change.uid == uid => return change,
                Ok(_) | Err(broadcast::error::RecvError::Lagged(_)) => {}
                Err(broadcast::error::RecvError::Closed) => panic!("change channel closed"),
            }
        }
    };
    tokio::time::timeout(deadline, wait)
        .await
        .unwrap_or_else(|_| panic!("no change for {uid} within {deadline:?}"))
}

pub async fn insert_get_update_round_trip(store: &dyn Store) {
    let a = tenant("tenant-a");
    let mut record = key("k1");
    insert(store, &a, std::slice::from_ref(&record)).await;
    assert_eq!(get(store, &a, "k1").await.as_ref(), Some(&record));

    // Activate, re-index, then destroy the material: the stored record follows each time.
    record.version = 2;
    record.state = ACTIVE;
    record.index = vec![
        ("Name".into(), "renamed".into()),
        ("x-team".into(), "payments".into()),
    ];
    let mut tx = store.begin(&a).await.expect("begin");
    tx.update(&record).await.expect("update");
    assert_eq!(
        tx.get("k1").await.expect("get").as_ref(),
        Some(&record),
        "own write visible"
    );
    tx.commit().await.expect("commit");
    assert_eq!(get(store, &a, "k1").await.as_ref(), Some(&record));

    // An update based on a version that is no longer stored writes nothing.
    let mut stale = record.clone();
    stale.material = stale.material.clone().map(|mut w| {
        w.blob = vec![0x99; 61];
        w
    });
    let mut tx = store.begin(&a).await.expect("begin");
    match tx.update(&stale).await {
        Err(StoreError::Conflict(uid)) => assert_eq!(uid, "k1"),
        other => panic!("expected Conflict, got {other:?}"),
    }
    drop(tx);
    assert_eq!(get(store, &a, "k1").await.as_ref(), Some(&record));

    record.version = 3;
    record.material = None;
    record.cryptographic_algorithm = None;
    record.cryptographic_length = None;
    record.index.clear();
    let mut tx = store.begin(&a).await.expect("begin");
    tx.update(&record).await.expect("update");
    tx.commit().await.expect("commit");
    assert_eq!(get(store, &a, "k1").await.as_ref(), Some(&record));

    // Enumerations above i32::MAX (KMIP extension values) survive.
    let mut extension = key("k2");
    extension.object_type = 0x8000_0001;
    insert(store, &a, std::slice::from_ref(&extension)).await;
    assert_eq!(get(store, &a, "k2").await, Some(extension));

    assert_eq!(get(store, &a, "missing").await, None);
    let mut tx = store.begin(&a).await.expect("begin");
    match tx.update(&key("missing")).await {
        Err(StoreError::NotFound(uid)) => assert_eq!(uid, "missing"),
        other => panic!("expected NotFound, got {other:?}"),
    }
}

pub async fn locate_filters_and_pages(store: &dyn Store) {
    let a = tenant("tenant-a");
    // Uids deliberately out of alphabetical order: results follow creation order.
    let mut records = Vec::new();
    for (i, uid) in ["z1", "a2", "m3", "b4", "y5", "c6"].iter().enumerate() {
        let mut record = key(uid);
        if i % 2 == 1 {
            record.object_type = SECRET_DATA;
            record.cryptographic_algorithm = Some(HMAC_SHA256);
            record.cryptographic_length = Some(512);
        }
        if i >= 3 {
            record.state = ACTIVE;
        }
        record.index = vec![
            ("Name".into(), format!("name-{uid}")),
            (
                "Object Group".into(),
                if i < 4 { "g1" } else { "g2" }.into(),
            ),
        ];
        records.push(record);
    }
    // Two transactions: order holds across commits too.
    insert(store, &a, &records[..3]).await;
    insert(store, &a, &records[3..]).await;

    let all = locate(store, &a, &LocateFilter::default()).await;
    assert_eq!(all, ["z1", "a2", "m3", "b4", "y5", "c6"]);
    let by = |f: LocateFilter| async move { locate(store, &tenant("tenant-a"), &f).await };
    assert_eq!(
        by(LocateFilter {
            object_type: Some(SECRET_DATA),
            ..Default::default()
        })
        .await,
        ["a2", "b4", "c6"]
    );
    assert_eq!(
        by(LocateFilter {
            state: Some(ACTIVE),
            ..Default::default()
        })
        .await,
        ["b4", "y5", "c6"]
    );
    assert_eq!(
        by(LocateFilter {
            cryptographic_algorithm: Some(AES),
            ..Default::default()
        })
        .await,
        ["z1", "m3", "y5"]
    );
    assert_eq!(
        by(LocateFilter {
            cryptographic_length: Some(512),
            ..Default::default()
        })
        .await,
        ["a2", "b4", "c6"]
    );
    assert_eq!(
        by(LocateFilter {
            index: vec![("Name".into(), "name-m3".into())],
            ..Default::default()
        })
        .await,
        ["m3"]
    );
    let group_one = vec![("Object Group".into(), "g1".into())];
    assert_eq!(
        by(LocateFilter {
            index: group_one.clone(),
            ..Default::default()
        })
        .await,
        ["z1", "a2", "m3", "b4"]
    );
    // Every pair must match, and combine with the columns.
    assert_eq!(
        by(LocateFilter {
            index: vec![
                ("Object Group".into(), "g1".into()),
                ("Name".into(), "name-b4".into())
            ],
            ..Default::default()
        })
        .await,
        ["b4"]
    );
    assert_eq!(
        by(LocateFilter {
            index: vec![
                ("Object Group".into(), "g1".into()),
                ("Name".into(), "name-y5".into())
            ],
            ..Default::default()
        })
        .await,
        Vec::<String>::new()
    );
    assert_eq!(
        by(LocateFilter {
            object_type: Some(SECRET_DATA),
            state: Some(ACTIVE),
            index: group_one.clone(),
            ..Default::default()
        })
        .await,
        ["b4"]
    );
    // Pages, in creation order.
    let page = |offset, limit| LocateFilter {
        offset,
        limit,
        ..Default::default()
    };
    assert_eq!(by(page(0, Some(2))).await, ["z1", "a2"]);
    assert_eq!(by(page(2, Some(2))).await, ["m3", "b4"]);
    assert_eq!(by(page(4, Some(2))).await, ["y5", "c6"]);
    assert_eq!(by(page(6, Some(2))).await, Vec::<String>::new());
    assert_eq!(by(page(3, None)).await, ["b4", "y5", "c6"]);
    assert_eq!(by(page(0, Some(0))).await, Vec::<String>::new());
    assert_eq!(
        by(LocateFilter {
            index: group_one,
            offset: 1,
            limit: Some(2),
            ..Default::default()
        })
        .await,
        ["a2", "m3"]
    );
}

pub async fn tenants_are_isolated(store: &dyn Store) {
    let a = tenant("tenant-a");
    let b = tenant("tenant-b");
    insert(store, &a, &[key("a-secret"), key("shared-uid")]).await;

    assert_eq!(get(store, &b, "a-secret").await, None);
    let mut tx = store.begin(&b).await.expect("begin");
    let mut forged = key("a-secret");
    forged.state = ACTIVE;
    match tx.update(&forged).await {
        Err(StoreError::NotFound(_)) => {}
        other => panic!("tenant B updated tenant A's object: {other:?}"),
    }
    assert_eq!(
        tx.locate(&LocateFilter::default()).await.expect("locate"),
        Vec::<String>::new()
    );
    let by_name = LocateFilter {
        index: vec![("Name".into(), "name-a-secret".into())],
        ..Default::default()
    };
    assert_eq!(
        tx.locate(&by_name).await.expect("locate"),
        Vec::<String>::new()
    );
    // The same uid is free for B (no "already exists" oracle) and stays B's own.
    let mut own = key("shared-uid");
    own.attributes = b"tenant b".to_vec();
    tx.insert(&own).await.expect("B inserts its own shared-uid");
    tx.commit().await.expect("commit");

    assert_eq!(get(store, &b, "shared-uid").await, Some(own));
    assert_eq!(get(store, &a, "shared-uid").await, Some(key("shared-uid")));
    assert_eq!(
        get(store, &a, "a-secret").await,
        Some(key("a-secret")),
        "untouched"
    );
    assert_eq!(
        locate(store, &b, &LocateFilter::default()).await,
        ["shared-uid"]
    );

    let tenants = store.tenants().await.expect("tenants");
    let tenants: Vec<&str> = tenants.iter().map(TenantId::as_str).collect();
    assert_eq!(tenants, ["tenant-a", "tenant-b"]);
}

pub async fn duplicate_uid_is_refused(store: &dyn Store) {
    let a = tenant("tenant-a");
    insert(store, &a, &[key("dup")]).await;
    let mut tx = store.begin(&a).await.expect("begin");
    let mut again = key("dup");
    again.attributes = b"second".to_vec();
    match tx.insert(&again).await {
        Err(StoreError::Duplicate(uid)) => assert_eq!(uid, "dup"),
        other => panic!("expected Duplicate, got {other:?}"),
    }
    // The refusal does not spoil the transaction.
    tx.insert(&key("after-dup"))
        .await
        .expect("insert after a duplicate");
    match tx.insert(&key("after-dup")).await {
        Err(StoreError::Duplicate(_)) => {}
        other => panic!("expected Duplicate within one transaction, got {other:?}"),
    }
    tx.commit().await.expect("commit");
    assert_eq!(
        get(store, &a, "dup").await,
        Some(key("dup")),
        "first one kept"
    );
    assert!(get(store, &a, "after-dup").await.is_some());
}

pub async fn dropped_transaction_leaves_nothing(store: &dyn Store) {
    let a = tenant("tenant-a");
    insert(store, &a, &[key("kept")]).await;

    let mut tx = store.begin(&a).await.expect("begin");
    tx.insert(&key("ghost")).await.expect("insert");
    let mut changed = key("kept");
    changed.state = ACTIVE;
    changed.version = 2;
    tx.update(&changed).await.expect("update");
    drop(tx);

    assert_eq!(get(store, &a, "ghost").await, None);
    assert_eq!(get(store, &a, "kept").await, Some(key("kept")));
    assert_eq!(locate(store, &a, &LocateFilter::default()).await, ["kept"]);
    // And the store goes on working.
    insert(store, &a, &[key("next")]).await;
    assert_eq!(
        locate(store, &a, &LocateFilter::default()).await,
        ["kept", "next"]
    );
}

pub async fn commit_is_published(store: &dyn Store) {
    let a = tenant("tenant-a");
    let mut changes = store.subscribe();

    let mut tx = store.begin(&a).await.expect("begin");
    tx.insert(&key("never")).await.expect("insert");
    drop(tx);
    insert(store, &a, &[key("created")]).await;
    let change = next_change_for(&mut changes, "created", CHANGE_DEADLINE).await;
    assert_eq!(change.tenant.as_str(), "tenant-a");

    let mut updated = key("created");
    updated.state = ACTIVE;
    updated.version = 2;
    let mut tx = store.begin(&a).await.expect("begin");
    tx.update(&updated).await.expect("update");
    tx.commit().await.expect("commit");
    next_change_for(&mut changes, "created", CHANGE_DEADLINE).await;

    // Nothing was published for the rolled-back insert: drain what has arrived so far.
    while let Ok(change) = changes.try_recv() {
        assert_ne!(
            change,
            StoreEvent::Changed(ObjectChanged {
                tenant: a.tenant.clone(),
                uid: "never".into()
            }),
            "a rolled-back insert was published"
        );
    }
}

/// 16 tasks creating at once: every acknowledged create is there, none twice.
pub async fn concurrent_creates_all_land(store: Arc<dyn Store>) {
    const TASKS: usize = 16;
    const PER_TASK: usize = 25;
    let mut handles = Vec::new();
    for t in 0..TASKS {
        let store = Arc::clone(&store);
        handles.push(tokio::spawn(async move {
            let ctx = tenant(if t % 2 == 0 { "tenant-a" } else { "tenant-b" });
            for i in 0..PER_TASK {
                let mut tx = store.begin(&ctx).await.expect("begin");
                tx.insert(&key(&format!("t{t}-{i}"))).await.expect("insert");
                // A read in the middle, as the engine does for batches.
                assert!(tx.get(&format!("t{t}-{i}")).await.expect("get").is_some());
                tx.commit().await.expect("commit");
            }
        }));
    }
    for handle in handles {
        handle.await.expect("task");
    }
    for id in ["tenant-a", "tenant-b"] {
        let uids = locate(store.as_ref(), &tenant(id), &LocateFilter::default()).await;
        assert_eq!(uids.len(), TASKS / 2 * PER_TASK, "{id}");
        let mut unique = uids.clone();
        unique.sort();
        unique.dedup();
        assert_eq!(unique.len(), uids.len());
    }
}

/// Creates (16 tasks, one record + two index pairs per transaction) and returns the rate.
/// Not an assertion: run by hand in release mode.
pub async fn creates_per_second(store: Arc<dyn Store>, tasks: usize, per_task: usize) -> f64 {
    let started = Instant::now();
    let mut handles = Vec::new();
    for t in 0..tasks {
        let store = Arc::clone(&store);
        handles.push(tokio::spawn(async move {
            let ctx = tenant(&format!("tenant-{}", t % 4));
            for i in 0..per_task {
                let mut tx = store.begin(&ctx).await.expect("begin");
                tx.insert(&key(&format!("bench-{t}-{i}")))
                    .await
                    .expect("insert");
                tx.commit().await.expect("commit");
            }
        }));
    }
    for handle in handles {
        handle.await.expect("task");
    }
    (tasks * per_task) as f64 / started.elapsed().as_secs_f64()
}

/// What the child of a `kill -9` test prints once a create has committed.
const COMMITTED: &str = "committed ";
/// The child stops by itself after this many creates, should nobody kill it.
const CHILD_MAX_CREATES: usize = 20_000;

/// Runs in the child process: creates records from four tasks, printing each uid only
/// after its commit returned, until killed.
pub async fn create_until_killed(store: Arc<dyn Store>) {
    let mut handles = Vec::new();
    for t in 0..4 {
        let store = Arc::clone(&store);
        handles.push(tokio::spawn(async move {
            let ctx = tenant("tenant-k");
            for i in 0..CHILD_MAX_CREATES / 4 {
                let uid = format!("kill-{t}-{i}");
                let mut tx = store.begin(&ctx).await.expect("begin");
                tx.insert(&key(&uid)).await.expect("insert");
                tx.commit().await.expect("commit");
                let mut out = std::io::stdout().lock();
                writeln!(out, "{COMMITTED}{uid}").expect("stdout");
                out.flush().expect("stdout");
            }
        }));
    }
    for handle in handles {
        handle.await.expect("task");
    }
}

/// Kills the child if the test fails before it does.
struct ChildGuard(Child);

impl Drop for ChildGuard {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Runs in the parent: re-executes this test binary on `child_test` with `env`, lets it
/// acknowledge `kill_after` creates, SIGKILLs it, and returns every uid it acknowledged.
pub fn acknowledged_before_kill_9(
    child_test: &str,
    env: &[(&str, &str)],
    kill_after: usize,
) -> Vec<String> {
    const QUIET: Duration = Duration::from_secs(60);
    let exe = std::env::current_exe().expect("test binary");
    let mut command = Command::new(exe);
    command
        .args(["--exact", child_test, "--nocapture", "--test-threads=1"])
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit());
    for (name, value) in env {
        command.env(name, value);
    }
    let mut child = ChildGuard(command.spawn().expect("start child"));
    let stdout = child.0.stdout.take().expect("child stdout");
    let (lines_tx, lines) = mpsc::channel();
    let reader = std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            if let Some(uid) = line.strip_prefix(COMMITTED) {
                if lines_tx.send(uid.to_owned()).is_err() {
                    break;
                }
            }
        }
    });

    let mut acknowledged = Vec::new();
    while acknowledged.len() < kill_after {
        match lines.recv_timeout(QUIET) {
            Ok(uid) => acknowledged.push(uid),
            Err(e) => panic!(
                "child acknowledged only {} creates: {e}",
                acknowledged.len()
            ),
        }
    }
    child.0.kill().expect("SIGKILL the child");
    let status = child.0.wait().expect("reap the child");
    // Whatever it printed before dying counts as acknowledged too.
    acknowledged.extend(lines.iter());
    reader.join().expect("reader thread");
    {
        use std::os::unix::process::ExitStatusExt;
        assert_eq!(
            status.signal(),
            Some(9),
            "the child finished before it was killed"
        );
    }
    acknowledged
}

/// Every uid the killed child acknowledged is in the reopened store.
pub async fn all_present(store: &dyn Store, uids: &[String]) {
    let ctx = tenant("tenant-k");
    let mut tx = store.begin(&ctx).await.expect("begin");
    for uid in uids {
        assert!(
            tx.get(uid).await.expect("get").is_some(),
            "acknowledged create {uid} was lost"
        );
    }
}
