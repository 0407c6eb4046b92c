//! The management + KMIP-over-HTTPS listener, certificate reload, and the per-connection
//! routing decision under a rules change.

mod support;

use kmip::message::ResponseMessage;
use kmip::spec::ResultReason;
use kmip::{Limits, ProtocolVersion};
use support::{
    eventually, https_request, kmip_client, start_keysvc, Pki, RunningGateway, EVENTUALLY,
};
use testkit::kmip_client::get_request_in;

fn get_request(uid: &str) -> Vec<u8> {
    get_request_in(ProtocolVersion::V2_0, uid)
}

/// The DER of the certificate the gateway presents to a new TLS connection on `addr`.
async fn presented_certificate(pki: &Pki, addr: std::net::SocketAddr) -> Vec<u8> {
    let tcp = tokio::net::TcpStream::connect(addr).await.expect("connect");
    let name = rustls::pki_types::ServerName::try_from("localhost").expect("name");
    let tls = tokio::time::timeout(EVENTUALLY, pki.connector("tenant-a").connect(name, tcp))
        .await
        .expect("handshake in time")
        .expect("handshake");
    tls.get_ref()
        .1
        .peer_certificates()
        .expect("server certificate")[0]
        .to_vec()
}

fn pem_der(path: &std::path::Path) -> Vec<u8> {
    kmip::client::tls::certs_from_pem(path).expect("PEM")[0].to_vec()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn management_endpoints_answer_without_a_client_certificate_and_kmip_requires_one() {
    let pki = Pki::generate();
    let keysvc = start_keysvc(&pki).await;
    let gateway = RunningGateway::start(&pki, &[keysvc.api_addr()]).await;
    let anonymous = pki.anonymous_connector();
    let https = gateway.https_addr;

    let (status, body) = https_request(&anonymous, https, "GET", "/health", b"").await;
    assert_eq!((status, &body[..]), (200, &b"ok\n"[..]));
    let (status, body) = https_request(&anonymous, https, "GET", "/management/health", b"").await;
    assert_eq!((status, &body[..]), (200, &b"ok\n"[..]));
    // Ready once a health check of the replica succeeded (every 2 s, first one at once).
    eventually("gateway /ready", || async {
        https_request(&anonymous, https, "GET", "/ready", b"")
            .await
            .0
            == 200
    })
    .await;

    // KMIP over HTTPS: no certificate → 401; tenant certificate → keysvc's answer.
    let (status, _) = https_request(&anonymous, https, "POST", "/kmip", &get_request("x")).await;
    assert_eq!(status, 401);
    let tenant = pki.connector("tenant-a");
    let (status, body) = https_request(&tenant, https, "POST", "/kmip", &get_request("x")).await;
    assert_eq!(status, 200);
    let response = ResponseMessage::from_ttlv(&body, &Limits::default()).expect("KMIP answer");
    assert_eq!(
        response.batch_items[0].result_reason,
        Some(ResultReason::ObjectNotFound)
    );
    let stranger = pki.connector("stranger");
    let (status, body) = https_request(&stranger, https, "POST", "/kmip", &get_request("x")).await;
    assert_eq!(status, 403);
    let response = ResponseMessage::from_ttlv(&body, &Limits::default()).expect("KMIP answer");
    assert_eq!(
        response.batch_items[0].result_reason,
        Some(ResultReason::PermissionDenied)
    );
    let (status, _) = https_request(&anonymous, https, "GET", "/nowhere", b"").await;
    assert_eq!(status, 404);

    // The KMIP port counts too, and a connection is active while it is open.
    let mut a = kmip_client(&pki, &gateway.addr_text(), "tenant-a").await;
    a.get("missing").await.expect_err("no such key");
    assert_eq!(gateway.metrics.active_connections(), 1);

    let (status, body) = https_request(&anonymous, https, "GET", "/metrics", b"").await;
    assert_eq!(status, 200);
    let text = String::from_utf8(body).expect("UTF-8");
    for needle in [
        "kmip_requests_total{tenant=\"tenant-a\",operation=\"Get\",result=\"OperationFailed\"} 2",
        "kmip_requests_total{tenant=\"-\",operation=\"Get\",result=\"OperationFailed\"} 1",
        "kmip_request_duration_seconds_count 3",
        "kmip_active_connections 1",
        "openkcm_tenant_denials_total{reason=\"no_matching_rule\"} 1",
        &format!(
            "openkcm_upstream_healthy{{upstream=\"{}\"}} 1",
            keysvc.api_addr()
        ),
        "openkcm_certificate_expiry_timestamp_seconds{cert=\"server\"}",
        "openkcm_certificate_expiry_timestamp_seconds{cert=\"client_ca\"}",
        "openkcm_certificate_expiry_timestamp_seconds{cert=\"upstream_client\"}",
    ] {
        assert!(text.contains(needle), "{needle} not in\n{text}");
    }
    drop(a);
    drop(gateway);
    keysvc.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rotated_server_certificate_is_used_by_new_connections_while_open_ones_keep_working() {
    let pki = Pki::generate();
    let keysvc = start_keysvc(&pki).await;
    let gateway = RunningGateway::start(&pki, &[keysvc.api_addr()]).await;
    let old = pem_der(&pki.path("gateway.pem"));
    assert_eq!(presented_certificate(&pki, gateway.addr).await, old);

    let mut open = kmip_client(&pki, &gateway.addr_text(), "tenant-a").await;
    let uid = open.create_aes_key(128, None).await.expect("create");

    // Rotate: new files written aside, then renamed into place (key first).
    pki.issue_gateway_cert("gateway-new");
    std::fs::rename(pki.path("gateway-new-key.pem"), pki.path("gateway-key.pem")).expect("key");
    std::fs::rename(pki.path("gateway-new.pem"), pki.path("gateway.pem")).expect("cert");
    let new = pem_der(&pki.path("gateway.pem"));
    assert_ne!(new, old);

    eventually("new connections see the new certificate", || async {
        presented_certificate(&pki, gateway.addr).await == new
    })
    .await;
    assert_eq!(presented_certificate(&pki, gateway.https_addr).await, new);
    // The connection opened before the rotation still works.
    open.get(&uid).await.expect("get on the old connection");

    // A broken replacement keeps the certificate in force.
    std::fs::write(pki.path("gateway.pem"), "not a certificate").expect("break");
    tokio::time::sleep(std::time::Duration::from_secs(3)).await;
    assert_eq!(presented_certificate(&pki, gateway.addr).await, new);
    let mut fresh = kmip_client(&pki, &gateway.addr_text(), "tenant-a").await;
    fresh.get(&uid).await.expect("get on a new connection");
    drop((open, fresh));
    drop(gateway);
    keysvc.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_routing_change_applies_to_new_and_open_connections() {
    let pki = Pki::generate();
    let keysvc = start_keysvc(&pki).await;
    let gateway = RunningGateway::start(&pki, &[keysvc.api_addr()]).await;

    let mut denied = kmip_client(&pki, &gateway.addr_text(), "stranger").await;
    let err = denied.get("x").await.expect_err("denied");
    assert_eq!(err.result_reason(), Some(ResultReason::PermissionDenied));

    let rules = format!(
        "{}    - match:\n        certificate:\n          subject:\n            organizationalUnit: \"nobody\"\n      route:\n        tenant: tenant-n\n",
        support::routing_yaml()
    );
    let tmp = pki.path("policies/routing.yaml.tmp");
    std::fs::write(&tmp, rules).expect("rules");
    std::fs::rename(&tmp, pki.path("policies/routing.yaml")).expect("rename");

    eventually("a new stranger connection is admitted", || async {
        let mut fresh = kmip_client(&pki, &gateway.addr_text(), "stranger").await;
        fresh.get("x").await.err().and_then(|e| e.result_reason())
            == Some(ResultReason::ItemNotFound)
    })
    .await;
    // Open connections are decided again before their next request: the one denied
    // before the change is admitted now.
    let err = denied.get("x").await.expect_err("no such object");
    assert_eq!(err.result_reason(), Some(ResultReason::ItemNotFound));
    drop(denied);
    drop(gateway);
    keysvc.shutdown().await;
}
