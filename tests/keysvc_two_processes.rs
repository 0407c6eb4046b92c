//! Two real `openkcm keysvc` processes on one throwaway PostgreSQL database (schema and
//! grants by `openkcm keysvc migrate`): a key revoked through one process stops working
//! through the other within a second, although the other had it cached.

mod keysvc_support;

use std::time::{Duration, Instant};

use keysvc_support::harness::*;
use keysvc_support::{migrate, Keysvc};
use kmip::spec::{ResultReason, ResultStatus};

/// The bound the issue sets for cross-replica invalidation (PostgreSQL LISTEN/NOTIFY).
const INVALIDATION_DEADLINE: Duration = Duration::from_secs(1);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_revocation_through_one_process_reaches_the_others_cache_within_a_second() {
    let pki = Pki::generate();
    let db = PgDatabase::create(false).await;
    migrate(&db.owner_url(), &db.role);

    let mut one = Keysvc::spawn(&pki.args(&db.app_url()));
    let mut two = Keysvc::spawn(&pki.args(&db.app_url()));
    let mut gw1 = Http2::connect(one.api, &pki, Who::Gateway)
        .await
        .expect("gateway → 1");
    let mut gw2 = Http2::connect(two.api, &pki, Who::Gateway)
        .await
        .expect("gateway → 2");

    let uid = success_uid(&gw1.call("tenant-a", create_aes()).await);
    success_uid(&gw1.call("tenant-a", activate(&uid)).await);
    // Twice through process 2: the first reads the key into its cache, the second is served
    // from it.
    for _ in 0..2 {
        let item = gw2.call("tenant-a", encrypt(&uid, b"payload")).await;
        assert_eq!(item.result_status, ResultStatus::Success, "{item:?}");
    }
    let (_, metrics) = http1_get(two.management, "/metrics")
        .await
        .expect("metrics");
    assert!(
        !metrics.contains("openkcm_keysvc_cache_hits_total 0\n"),
        "process 2 served the key from its cache:\n{metrics}"
    );

    success_uid(&gw1.call("tenant-a", revoke(&uid)).await);
    let revoked = Instant::now();
    let refusal = loop {
        let item = gw2.call("tenant-a", encrypt(&uid, b"payload")).await;
        if item.result_status != ResultStatus::Success {
            break item;
        }
        assert!(
            revoked.elapsed() < INVALIDATION_DEADLINE,
            "process 2 still encrypts with a key revoked {:?} ago",
            revoked.elapsed()
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    };
    assert_eq!(
        refusal.result_reason,
        Some(ResultReason::WrongKeyLifecycleState),
        "{refusal:?}"
    );
    eprintln!(
        "revocation visible in process 2 after {:?}",
        revoked.elapsed()
    );

    for p in [&mut one, &mut two] {
        let status = p.terminate(Duration::from_secs(30));
        assert!(status.success(), "graceful exit on SIGTERM: {status:?}");
    }
    db.drop().await;
}
