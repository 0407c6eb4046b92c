//! A real `openkcm keysvc` process on SQLite: every Create it acknowledged survives a
//! SIGKILL in the middle of a stream of requests; its logs are JSON lines with the audit
//! trail; SIGTERM exits cleanly; `rotate-root` moves every key to a new root key.

mod keysvc_support;

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use keysvc_support::harness::*;
use keysvc_support::{run, Keysvc};
use kmip::message::ResponsePayload;
use kmip::spec::ResultStatus;

/// Acknowledged Creates before the kill: enough that the kill lands mid-stream.
const ACKED_BEFORE_KILL: usize = 150;
/// Concurrent request streams (HTTP/2 streams on separate connections).
const WRITERS: usize = 4;
/// Gets per verification request.
const GETS_PER_REQUEST: usize = 50;

fn sqlite_url(pki: &Pki) -> String {
    format!("sqlite://{}", pki.path("keys.db").display())
}

/// Time from spawn until `/ready` answers 200 on the management port.
async fn time_to_ready(p: &Keysvc) -> Duration {
    eventually(EVENTUALLY, "/ready", || async {
        let (status, _) = http1_get(p.management, "/ready").await.ok()?;
        (status == 200).then_some(())
    })
    .await;
    p.spawned.elapsed()
}

/// Every uid answers Get through a fresh process.
async fn assert_all_readable(p: &Keysvc, pki: &Pki, uids: &[String]) {
    let mut gw = Http2::connect(p.api, pki, Who::Gateway)
        .await
        .expect("gateway");
    for chunk in uids.chunks(GETS_PER_REQUEST) {
        let reply = gw
            .kmip(
                "tenant-a",
                kmip_request(chunk.iter().map(|u| get(u)).collect()),
            )
            .await;
        for (item, uid) in reply.kmip().batch_items.iter().zip(chunk) {
            assert_eq!(item.result_status, ResultStatus::Success, "{uid}: {item:?}");
            assert!(matches!(item.payload, Some(Ok(ResponsePayload::Get(_)))));
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn acknowledged_keys_survive_sigkill_and_a_root_key_rotation() {
    let pki = Pki::generate();
    let args = pki.args(&sqlite_url(&pki));

    let mut first = Keysvc::spawn(&args);
    let ready_after = time_to_ready(&first).await;
    eprintln!("keysvc (SQLite, debug build): spawn to /ready 200 in {ready_after:?}");

    let acked = Arc::new(Mutex::new(Vec::<String>::new()));
    let mut writers = Vec::new();
    for _ in 0..WRITERS {
        let mut gw = Http2::connect(first.api, &pki, Who::Gateway)
            .await
            .expect("gateway");
        let acked = acked.clone();
        writers.push(tokio::spawn(async move {
            loop {
                let reply = match gw
                    .request(
                        "POST",
                        kmip::contract::KMIP_PATH,
                        &tenant_headers("tenant-a"),
                        kmip_request(vec![create_aes()]),
                    )
                    .await
                {
                    Ok(r) if r.status == 200 => r,
                    // The process is gone: what was acknowledged is what counts.
                    _ => return,
                };
                let uid = success_uid(&reply.kmip().batch_items[0]);
                acked.lock().expect("acked").push(uid);
            }
        }));
    }
    eventually(Duration::from_secs(60), "Creates acknowledged", || async {
        (acked.lock().expect("acked").len() >= ACKED_BEFORE_KILL).then_some(())
    })
    .await;
    first.kill9();
    for w in writers {
        w.await.expect("writer task");
    }
    let acked = acked.lock().expect("acked").clone();
    assert!(acked.len() >= ACKED_BEFORE_KILL);

    // Logs: every line JSON; the audit trail is there, with the request id.
    let logs = first.logs();
    let mut audit_created = 0;
    for line in &logs {
        let v: serde_json::Value =
            serde_json::from_str(line).unwrap_or_else(|e| panic!("not JSON ({e}): {line}"));
        if v["target"] == "audit" && v["event"] == "created" {
            assert_eq!(v["tenant"], "tenant-a", "{line}");
            assert!(
                v["request_id"].as_str().is_some_and(|id| !id.is_empty()),
                "{line}"
            );
            assert_eq!(v["span"]["request_id"], v["request_id"], "{line}");
            audit_created += 1;
        }
    }
    assert!(
        audit_created >= acked.len(),
        "{audit_created} audit lines for {} creates",
        acked.len()
    );

    // Restart on the same file: nothing acknowledged was lost.
    let mut second = Keysvc::spawn(&args);
    assert_all_readable(&second, &pki, &acked).await;
    let started = Instant::now();
    let status = second.terminate(Duration::from_secs(30));
    assert!(status.success(), "SIGTERM ends keysvc cleanly: {status:?}");
    eprintln!("graceful stop in {:?}", started.elapsed());

    // Rotate to root key B with the CLI, then serve with B alone.
    pki.write_root_key("root-b.key", "root-b");
    let rotated = run(&[
        "keysvc".into(),
        "rotate-root".into(),
        "--database".into(),
        sqlite_url(&pki),
        "--root-key-id".into(),
        "root-a".into(),
        "--root-key-file".into(),
        pki.path_text("root.key"),
        "--new-key-id".into(),
        "root-b".into(),
        "--new-key-file".into(),
        pki.path_text("root-b.key"),
    ]);
    let stdout = String::from_utf8_lossy(&rotated.stdout);
    assert!(
        rotated.status.success(),
        "rotate-root: {stdout}{}",
        String::from_utf8_lossy(&rotated.stderr)
    );
    assert!(stdout.contains("rewrapped"), "{stdout}");

    let b_only: Vec<String> = args
        .iter()
        .map(|a| match a.as_str() {
            "root-a" => "root-b".to_owned(),
            _ if a == &pki.path_text("root.key") => pki.path_text("root-b.key"),
            _ => a.clone(),
        })
        .collect();
    let third = Keysvc::spawn(&b_only);
    assert_all_readable(&third, &pki, &acked).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_bad_configuration_is_refused_with_every_problem_listed() {
    let out = run(&[
        "keysvc".into(),
        "--listen-api".into(),
        "nowhere".into(),
        "--max-body-size".into(),
        "lots".into(),
        "--database".into(),
        "oracle://db".into(),
    ]);
    assert_eq!(out.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&out.stderr);
    for key in [
        "listen.api",
        "limits.max_body_size",
        "database.url",
        "tls.cert",
        "root_key.id",
    ] {
        assert!(stderr.contains(key), "{key} missing from:\n{stderr}");
    }
}
