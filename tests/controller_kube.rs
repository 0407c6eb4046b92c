//! `openkcm controller` against a real Kubernetes API server (kube-apiserver v1.20.2 + etcd,
//! `testkit::kube`): the CRDs and the users' three resources applied verbatim; TenantRouting
//! → ConfigMap openkcm-routing and status; conflicts leave other tenants' rules alone;
//! TenantCertificate → cert-manager Certificates (the test plays cert-manager); leader
//! hand-over; the API server calling `openkcm injector`; `kubectl apply --dry-run=server` of
//! the base. The controller runs as its ServiceAccount with exactly the manifests' RBAC.
//!
//! One API server at a time (each is ~450 MB and a core at start): the tests take a lock.

mod dev_support;

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use serde_json::Value;
use testkit::certs::TestPki;
use testkit::kube::ApiServer;
use testkit::net::{free_addr, http_get};
use testkit::process::{command, Process};

const BIN: &str = env!("CARGO_BIN_EXE_openkcm");
const NS: &str = "openkcm-system";
const SA_USER: &str = "system:serviceaccount:openkcm-system:openkcm-controller";
/// What the issue asks: a change is in the ConfigMap and in status within this.
const WITHIN: Duration = Duration::from_secs(5);

static ONE_AT_A_TIME: Mutex<()> = Mutex::new(());

fn repo() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

fn rel(path: &str) -> String {
    repo().join(path).display().to_string()
}

/// An API server with our CRDs, the controller's namespace and the manifests' RBAC for it.
fn cluster() -> ApiServer {
    let api = ApiServer::start(&[SA_USER]);
    api.kubectl_ok(&["apply", "-f", &rel("manifests/base/crds")]);
    api.wait_for_crds();
    api.kubectl_ok(&["apply", "-f", &rel("manifests/base/namespace.yaml")]);
    api.kubectl_ok(&[
        "apply",
        "-n",
        NS,
        "-f",
        &rel("manifests/base/controller/rbac.yaml"),
    ]);
    api
}

/// An `openkcm controller` process as the controller's ServiceAccount.
fn controller(api: &ApiServer, identity: &str, extra: &[&str]) -> (Process, SocketAddr) {
    let management = free_addr();
    let mut args = vec![
        "controller".to_owned(),
        format!("--namespace={NS}"),
        format!("--identity={identity}"),
        format!("--management={management}"),
        "--lease-duration=10s".to_owned(),
        "--probe-interval=2s".to_owned(),
    ];
    args.extend(extra.iter().map(|s| (*s).to_owned()));
    let refs: Vec<&str> = args.iter().map(String::as_str).collect();
    let mut cmd = command(BIN, &refs);
    cmd.env("KUBECONFIG", api.kubeconfig_for(SA_USER))
        .env("OPENKCM_LOG_LEVEL", "info,kube=warn");
    let mut process = Process::spawn(&format!("controller {identity}"), cmd);
    process
        .wait_for(Duration::from_secs(30), |_| {
            http_get(management, "/ready").filter(|(code, _)| *code == 200)
        })
        .unwrap_or_else(|e| panic!("{e}"));
    (process, management)
}

fn routing_text(api: &ApiServer) -> Option<String> {
    api.get_json(&["configmap", "openkcm-routing", "-n", NS])
        .and_then(|cm| {
            cm["data"]["tenant-routing.yaml"]
                .as_str()
                .map(str::to_owned)
        })
}

fn accepted(api: &ApiServer, name: &str) -> Option<(String, String, String)> {
    let tr = api.get_json(&["tenantrouting", name, "-n", NS])?;
    let conditions = tr["status"]["conditions"].as_array()?;
    let c = conditions.iter().find(|c| c["type"] == "Accepted")?;
    if c["observedGeneration"] != tr["metadata"]["generation"] {
        return None;
    }
    Some((
        c["status"].as_str()?.to_owned(),
        c["reason"].as_str()?.to_owned(),
        c["message"].as_str()?.to_owned(),
    ))
}

/// The tenant the rules in `text` give a certificate of `tenant`'s (OU = tenant), by
/// `openkcm routing check`, the gateway's own decision code; `None` when denied.
fn route(pki: &TestPki, text: &str, tenant: &str) -> Option<String> {
    let dir = tempfile::tempdir().expect("temporary directory");
    let rules = dir.path().join("tenant-routing.yaml");
    std::fs::write(&rules, text).expect("write rules");
    let cert = pki.path(&format!("{tenant}.pem"));
    if !cert.exists() {
        pki.issue(tenant, &testkit::certs::tenant(tenant));
    }
    let out = command(
        BIN,
        &[
            "routing",
            "check",
            "--policies",
            &rules.display().to_string(),
            "--cert",
            &cert.display().to_string(),
        ],
    )
    .output()
    .expect("routing check");
    let stdout = String::from_utf8_lossy(&out.stdout);
    match out.status.code() {
        Some(0) => stdout
            .lines()
            .find_map(|l| l.trim().strip_prefix("tenant: "))
            .map(|t| t.split_whitespace().next().unwrap_or_default().to_owned()),
        Some(3) => None,
        other => panic!(
            "routing check exit {other:?}: {stdout}{}",
            String::from_utf8_lossy(&out.stderr)
        ),
    }
}

fn tenant_routing(name: &str, rules: &[(&str, &str)]) -> String {
    let mut yaml = format!(
        "apiVersion: platform-mesh.io/v1\nkind: TenantRouting\nmetadata:\n  name: {name}\n  namespace: {NS}\nspec:\n  routing:\n"
    );
    for (ou, tenant) in rules {
        yaml.push_str(&format!(
            "    - match: {{ certificate: {{ subject: {{ organizationalUnit: \"{ou}\" }} }} }}\n      route: {{ tenant: \"{tenant}\" }}\n"
        ));
    }
    yaml
}

#[test]
fn the_users_resources_apply_verbatim_and_tenantrouting_drives_the_gateway_rules() {
    let _one = ONE_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner());
    let api = cluster();
    let pki = TestPki::new("tenant-ca");

    // The three resources exactly as the users write them.
    let applied = api.kubectl_ok(&["apply", "-k", &rel("manifests/examples/platform-mesh")]);
    for kind in ["servicediscovery", "tenantcertificate", "tenantrouting"] {
        assert!(applied.contains(kind), "{applied}");
    }
    // The schema still refuses what the gateway would: a tenant id with a space.
    let refused = api.kubectl_stdin(
        &["apply", "-f", "-"],
        &tenant_routing("bad", &[("x", "bad tenant")]),
    );
    assert!(!refused.status.success());
    assert!(
        String::from_utf8_lossy(&refused.stderr).contains("spec.routing"),
        "{}",
        String::from_utf8_lossy(&refused.stderr)
    );

    let (_controller, management) = controller(&api, "a", &["--certificates=false"]);

    // The users' TenantRouting becomes the gateway's rule file, and says so in status.
    let (text, took) = api.eventually(WITHIN, "openkcm-routing written", || routing_text(&api));
    println!("first rules written {took:?} after the controller was ready");
    let (status, took) = api.eventually(WITHIN, "Accepted on the users' resource", || {
        accepted(&api, "crypto-service-routing")
    });
    println!("status written in {took:?}");
    assert_eq!(status.0, "True", "{status:?}");
    assert_eq!(route(&pki, &text, "tenant-a").as_deref(), Some("tenant-a"));
    assert!(text.contains("tenant_a_keys"), "{text}");
    assert_eq!(route(&pki, &text, "tenant-b"), None);
    let printed = api.kubectl_ok(&["get", "tenantrouting", "-n", NS]);
    assert!(
        printed.contains("ACCEPTED") && printed.contains("True"),
        "{printed}"
    );

    // Created: a second resource's rules join within 5 s.
    let started = Instant::now();
    api.apply(&tenant_routing("tenant-b", &[("tenant-b", "tenant-b")]));
    let (text, _) = api.eventually(WITHIN, "tenant-b routed", || {
        routing_text(&api).filter(|t| route(&pki, t, "tenant-b").as_deref() == Some("tenant-b"))
    });
    println!("created → routed in {:?}", started.elapsed());
    assert_eq!(route(&pki, &text, "tenant-a").as_deref(), Some("tenant-a"));

    // A conflicting resource: Accepted=False naming the rule in force; nothing changes.
    let before = text.clone();
    api.apply(&tenant_routing("evil", &[("tenant-a", "tenant-b")]));
    let (status, _) = api.eventually(WITHIN, "Conflict on evil", || accepted(&api, "evil"));
    assert_eq!(status.0, "False");
    assert_eq!(status.1, "Conflict", "{status:?}");
    assert!(
        status
            .2
            .contains("openkcm-system/crypto-service-routing doc 1 rule 1"),
        "{status:?}"
    );
    assert_eq!(routing_text(&api).as_deref(), Some(before.as_str()));
    assert_eq!(
        accepted(&api, "crypto-service-routing")
            .map(|s| s.0)
            .as_deref(),
        Some("True")
    );

    // Changed: tenant-b's certificates now go to tenant-b2.
    let started = Instant::now();
    api.apply(&tenant_routing("tenant-b", &[("tenant-b", "tenant-b2")]));
    api.eventually(WITHIN, "tenant-b → tenant-b2", || {
        routing_text(&api).filter(|t| route(&pki, t, "tenant-b").as_deref() == Some("tenant-b2"))
    });
    println!("changed → routed in {:?}", started.elapsed());

    // An invalid change (an issuer that is not a DN: the schema lets it through, the rule
    // loader does not) keeps the last accepted rules in force.
    api.apply(
        "apiVersion: platform-mesh.io/v1\nkind: TenantRouting\nmetadata: { name: tenant-b, namespace: openkcm-system }\n\
         spec:\n  routing:\n    - match: { certificate: { issuer: \"not a DN\" } }\n      route: { tenant: tenant-b3 }\n",
    );
    let (status, _) = api.eventually(WITHIN, "Invalid on tenant-b", || {
        accepted(&api, "tenant-b").filter(|s| s.1 != "Accepted")
    });
    assert_eq!(status.1, "Invalid", "{status:?}");
    assert!(status.2.contains("stay in force"), "{status:?}");
    let tb = api
        .get_json(&["tenantrouting", "tenant-b", "-n", NS])
        .expect("tenant-b");
    assert_eq!(tb["status"]["acceptedGeneration"], 2, "{tb}");
    assert_eq!(
        route(&pki, &routing_text(&api).expect("rules"), "tenant-b").as_deref(),
        Some("tenant-b2")
    );

    // Deleted: its rules go, the others stay.
    let started = Instant::now();
    api.kubectl_ok(&["delete", "tenantrouting", "tenant-b", "-n", NS]);
    let (text, _) = api.eventually(WITHIN, "tenant-b no longer routed", || {
        routing_text(&api).filter(|t| route(&pki, t, "tenant-b").is_none())
    });
    println!("deleted → unrouted in {:?}", started.elapsed());
    assert_eq!(route(&pki, &text, "tenant-a").as_deref(), Some("tenant-a"));

    // With the conflicting resource's rival gone? No: evil still conflicts with tenant-a.
    assert_eq!(
        accepted(&api, "evil").map(|s| s.1).as_deref(),
        Some("Conflict")
    );

    let (_, metrics) = http_get(management, "/metrics").expect("metrics");
    let successes = metrics
        .lines()
        .find(|l| {
            l.starts_with("controller_reconciles_total{")
                && l.contains("routing")
                && l.contains("success")
        })
        .and_then(|l| l.split_whitespace().last())
        .and_then(|v| v.parse::<f64>().ok())
        .expect("routing reconciles counted");
    assert!(successes >= 5.0, "{metrics}");
    assert!(metrics.contains("controller_leader 1"), "{metrics}");
}

fn lease_holder(api: &ApiServer) -> Option<String> {
    api.get_json(&["lease", "openkcm-controller", "-n", NS])
        .and_then(|l| l["spec"]["holderIdentity"].as_str().map(str::to_owned))
        .filter(|h| !h.is_empty())
}

#[test]
fn when_the_leader_is_killed_the_other_replica_takes_over_within_15_seconds() {
    let _one = ONE_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner());
    let api = cluster();
    let pki = TestPki::new("tenant-ca");
    api.apply(&tenant_routing("a", &[("tenant-a", "tenant-a")]));
    let (mut one, one_mgmt) = controller(&api, "one", &["--certificates=false"]);
    let (mut two, two_mgmt) = controller(&api, "two", &["--certificates=false"]);
    let (leader, _) = api.eventually(Duration::from_secs(15), "a lease holder", || {
        lease_holder(&api)
    });
    api.eventually(WITHIN, "rules of a", || routing_text(&api));
    let standby_mgmt = if leader == "one" { two_mgmt } else { one_mgmt };
    let (code, body) = http_get(standby_mgmt, "/ready").expect("standby ready");
    assert_eq!((code, body.trim()), (200, "ready (standby)"));

    let killed = Instant::now();
    if leader == "one" {
        one.kill();
    } else {
        two.kill();
    }
    api.apply(&tenant_routing("b", &[("tenant-b", "tenant-b")]));
    let (new_leader, _) = api.eventually(
        Duration::from_secs(15),
        "the other replica holds the lease",
        || lease_holder(&api).filter(|h| *h != leader),
    );
    api.eventually(
        Duration::from_secs(15).saturating_sub(killed.elapsed()),
        "the new leader acts on the change made while nobody led",
        || routing_text(&api).filter(|t| route(&pki, t, "tenant-b").as_deref() == Some("tenant-b")),
    );
    let took = killed.elapsed();
    println!("leader {leader} killed; {new_leader} took over and wrote the new rules in {took:?}");
    assert!(took < Duration::from_secs(15), "{took:?}");

    // A graceful stop: the killed replica, restarted, takes over (within the lease duration).
    let (restarted, _) = controller(&api, &leader, &["--certificates=false"]);
    let survivor = if leader == "one" { &mut two } else { &mut one };
    let stopped = Instant::now();
    survivor.terminate(Duration::from_secs(10));
    api.eventually(
        Duration::from_secs(15),
        "the restarted replica leads",
        || lease_holder(&api).filter(|h| *h == leader),
    );
    println!("graceful stop → hand-over in {:?}", stopped.elapsed());
    drop(restarted);
}

/// cert-manager's Certificate and approver-policy's CertificateRequestPolicy, as minimal
/// CRDs (cert-manager does not run here; the test plays it by writing status).
const CERT_MANAGER_CRDS: &str = r#"
apiVersion: apiextensions.k8s.io/v1
kind: CustomResourceDefinition
metadata: { name: certificates.cert-manager.io }
spec:
  group: cert-manager.io
  scope: Namespaced
  names: { kind: Certificate, listKind: CertificateList, plural: certificates, singular: certificate }
  versions:
    - name: v1
      served: true
      storage: true
      subresources: { status: {} }
      schema:
        openAPIV3Schema:
          type: object
          properties:
            spec: { type: object, x-kubernetes-preserve-unknown-fields: true }
            status: { type: object, x-kubernetes-preserve-unknown-fields: true }
---
apiVersion: apiextensions.k8s.io/v1
kind: CustomResourceDefinition
metadata: { name: certificaterequestpolicies.policy.cert-manager.io }
spec:
  group: policy.cert-manager.io
  scope: Cluster
  names: { kind: CertificateRequestPolicy, listKind: CertificateRequestPolicyList, plural: certificaterequestpolicies, singular: certificaterequestpolicy }
  versions:
    - name: v1alpha1
      served: true
      storage: true
      schema:
        openAPIV3Schema:
          type: object
          properties:
            spec: { type: object, x-kubernetes-preserve-unknown-fields: true }
"#;

fn tenant_namespace(name: &str, tenant_id: Option<&str>, services: &[&str]) -> String {
    let mut yaml = format!(
        "apiVersion: v1\nkind: Namespace\nmetadata:\n  name: {name}\n  labels:\n    platform-mesh.io/tenant: \"true\"\n"
    );
    if let Some(id) = tenant_id {
        yaml.push_str(&format!("    platform-mesh.io/tenant-id: {id}\n"));
    }
    for service in services {
        yaml.push_str(&format!(
            "---\napiVersion: v1\nkind: Service\nmetadata: {{ name: {service}, namespace: {name} }}\n\
             spec: {{ ports: [{{ port: 27017 }}] }}\n"
        ));
    }
    yaml
}

#[test]
fn tenantcertificate_issues_each_service_a_certificate_in_its_own_namespace_only() {
    let _one = ONE_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner());
    let api = cluster();
    api.apply(CERT_MANAGER_CRDS);
    api.wait_for_crds();
    api.apply(&tenant_namespace(
        "tenant-a",
        None,
        &["mongodb-cluster-tenant-a", "redis-cluster-tenant-a"],
    ));
    // Another tenant's namespace with a Service of the same name: must get nothing.
    api.apply(&tenant_namespace(
        "intruder",
        Some("tenant-b"),
        &["mongodb-cluster-tenant-a"],
    ));
    // Not a tenant namespace at all.
    api.apply("apiVersion: v1\nkind: Namespace\nmetadata: { name: plain }\n---\napiVersion: v1\nkind: Service\nmetadata: { name: redis-cluster-tenant-a, namespace: plain }\nspec: { ports: [{ port: 1 }] }\n");
    api.kubectl_ok(&[
        "apply",
        "-n",
        NS,
        "-f",
        &rel("manifests/examples/platform-mesh/tenantcertificate.yaml"),
    ]);
    let (_controller, _) = controller(&api, "a", &[]);

    let certificates = |ns: &str| -> Vec<Value> {
        api.get_json(&["certificates.cert-manager.io", "-n", ns])
            .and_then(|l| l["items"].as_array().cloned())
            .unwrap_or_default()
    };
    let (issued, took) = api.eventually(WITHIN, "two Certificates in tenant-a", || {
        Some(certificates("tenant-a")).filter(|c| c.len() == 2)
    });
    println!("TenantCertificate → Certificates in {took:?}");
    for cert in &issued {
        let spec = &cert["spec"];
        assert_eq!(
            spec["subject"]["organizationalUnits"],
            serde_json::json!(["tenant-a"])
        );
        assert_eq!(
            spec["uris"],
            serde_json::json!(["urn:platform-mesh:tenant:tenant-a"])
        );
        assert_eq!(spec["issuerRef"]["name"], "platform-mesh-ca");
        assert_eq!(spec["secretName"], cert["metadata"]["name"]);
        assert!(spec["usages"]
            .as_array()
            .expect("usages")
            .contains(&"client auth".into()));
    }
    assert!(certificates("intruder").is_empty());
    assert!(certificates("plain").is_empty());

    let policy = api
        .get_json(&["certificaterequestpolicies", "openkcm-tenant-tenant-a"])
        .expect("the tenant's issuance policy");
    assert_eq!(
        policy["spec"]["selector"]["namespace"]["matchNames"],
        serde_json::json!(["tenant-a"])
    );
    assert_eq!(
        policy["spec"]["allowed"]["subject"]["organizationalUnits"]["values"],
        serde_json::json!(["tenant-a"])
    );
    let tenants = api
        .get_json(&["configmap", "openkcm-injector-tenants", "-n", NS])
        .expect("the injector's tenant map");
    let map = tenants["data"]["tenants.yaml"]
        .as_str()
        .expect("tenants.yaml");
    assert!(
        map.contains("tenant-a: { secret: openkcm-kmip-mongodb-cluster-tenant-a"),
        "{map}"
    );
    assert!(!map.contains("intruder"), "{map}");

    // Play cert-manager: one certificate issued.
    let not_after = "2027-03-01T00:00:00Z";
    api.kubectl_ok(&[
        "patch",
        "certificates.cert-manager.io",
        "openkcm-kmip-mongodb-cluster-tenant-a",
        "-n",
        "tenant-a",
        "--subresource=status",
        "--type=merge",
        "-p",
        &format!(
            r#"{{"status":{{"conditions":[{{"type":"Ready","status":"True","reason":"Ready","message":"issued"}}],"notAfter":"{not_after}","notBefore":"2026-12-01T00:00:00Z"}}}}"#
        ),
    ]);
    let (tc, _) = api.eventually(WITHIN, "1/2 ready in status", || {
        api.get_json(&["tenantcertificate", "tenant-certificates", "-n", NS])
            .filter(|tc| tc["status"]["tenants"][0]["certificatesReady"] == "1/2")
    });
    let tenant = &tc["status"]["tenants"][0];
    assert_eq!(tenant["notAfter"], not_after);
    assert_eq!(tenant["lastRenewal"], "2026-12-01T00:00:00Z");
    let services = tenant["services"].as_array().expect("services");
    assert!(
        services.iter().all(|s| s["namespace"] == "tenant-a"),
        "{tenant}"
    );

    // A service removed from the resource → its Certificate removed.
    api.kubectl_ok(&[
        "patch",
        "tenantcertificate",
        "tenant-certificates",
        "-n",
        NS,
        "--type=json",
        "-p",
        r#"[{"op":"remove","path":"/spec/tenants/0/services/1"}]"#,
    ]);
    api.eventually(WITHIN, "redis's Certificate removed", || {
        Some(certificates("tenant-a")).filter(|c| c.len() == 1)
    });
    // The tenant removed → no Certificate, no policy.
    api.kubectl_ok(&[
        "delete",
        "tenantcertificate",
        "tenant-certificates",
        "-n",
        NS,
    ]);
    api.eventually(WITHIN, "every Certificate removed", || {
        Some(certificates("tenant-a")).filter(Vec::is_empty)
    });
    api.eventually(WITHIN, "the policy removed", || {
        api.get_json(&["certificaterequestpolicies", "openkcm-tenant-tenant-a"])
            .is_none()
            .then_some(())
    });
}

/// The manifests' MutatingWebhookConfiguration, pointed at a local injector by URL (the API
/// server here has no Services to route through) with its CA as caBundle.
fn webhook_configuration(url: &str, ca_pem: &str) -> String {
    use base64::Engine as _;
    let text = std::fs::read_to_string(repo().join("manifests/base/injector/webhook.yaml"))
        .expect("webhook.yaml");
    let mut doc: Value = serde_norway::from_str(&text).expect("webhook YAML");
    for hook in doc["webhooks"].as_array_mut().expect("webhooks") {
        hook["clientConfig"] = serde_json::json!({
            "url": url,
            "caBundle": base64::engine::general_purpose::STANDARD.encode(ca_pem),
        });
    }
    serde_json::to_string(&doc).expect("JSON")
}

fn pod(namespace: &str, name: &str, annotations: &str) -> String {
    format!(
        "apiVersion: v1\nkind: Pod\nmetadata:\n  name: {name}\n  namespace: {namespace}\n  annotations: {{{annotations}}}\n\
         spec:\n  containers:\n    - name: app\n      image: mongo:7\n"
    )
}

#[test]
fn the_api_server_calls_the_injector_and_a_classic_sidecar_is_admitted_on_1_20() {
    let _one = ONE_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner());
    let api = cluster();
    api.apply(&tenant_namespace("tenant-a", None, &[]));
    api.apply("apiVersion: v1\nkind: Namespace\nmetadata: { name: plain }\n");

    // The injector as deployed, but classic mode and the controller's tenant map.
    let pki = TestPki::new("webhook-ca");
    pki.issue(
        "webhook",
        &testkit::certs::localhost_server("openkcm-injector"),
    );
    let base = std::fs::read_to_string(repo().join("manifests/base/injector/config.yaml"))
        .expect("injector config");
    let config = base.replace("sidecarMode: native", "sidecarMode: classic");
    assert_ne!(
        config, base,
        "the manifests' injector config names sidecarMode"
    );
    let config = pki.write("config.yaml", &config);
    let tenants = pki.write(
        "tenants.yaml",
        "tenants:\n  tenant-a: { secret: openkcm-kmip-mongodb-cluster-tenant-a, tenant: tenant-a, \
         services: { mongodb-cluster-tenant-a: openkcm-kmip-mongodb-cluster-tenant-a } }\n",
    );
    let listen = free_addr();
    let management = free_addr();
    let p = |path: PathBuf| path.display().to_string();
    let mut injector = Process::spawn(
        "injector",
        command(
            BIN,
            &[
                "injector",
                &format!("--listen={listen}"),
                &format!("--management={management}"),
                &format!("--cert={}", p(pki.path("webhook.pem"))),
                &format!("--key={}", p(pki.path("webhook-key.pem"))),
                &format!("--config={}", p(config)),
                &format!("--tenants={}", p(tenants)),
            ],
        ),
    );
    injector
        .wait_for(Duration::from_secs(30), |_| {
            http_get(management, "/ready").filter(|(code, _)| *code == 200)
        })
        .unwrap_or_else(|e| panic!("{e}"));
    api.apply(&webhook_configuration(
        &format!("https://127.0.0.1:{}/mutate", listen.port()),
        pki.ca.cert_pem(),
    ));

    // A tenant pod: injected by the API server's call, admitted by 1.20.
    api.apply(&pod("tenant-a", "mongo", ""));
    let created = api
        .get_json(&["pod", "mongo", "-n", "tenant-a"])
        .expect("the pod");
    let containers: Vec<&str> = created["spec"]["containers"]
        .as_array()
        .expect("containers")
        .iter()
        .filter_map(|c| c["name"].as_str())
        .collect();
    assert_eq!(containers, ["app", "openkcm-sidecar"], "{created}");
    assert!(created["spec"]["initContainers"].is_null(), "{created}");
    assert_eq!(
        created["metadata"]["annotations"]["kmip.platform-mesh.io/status"],
        "injected"
    );
    let secrets: Vec<&str> = created["spec"]["volumes"]
        .as_array()
        .expect("volumes")
        .iter()
        .filter_map(|v| v["secret"]["secretName"].as_str())
        .collect();
    assert!(
        secrets.contains(&"openkcm-kmip-mongodb-cluster-tenant-a"),
        "{secrets:?}"
    );

    // The native form, asked for by annotation: what 1.20 refuses (the reason classic exists).
    let native = api.kubectl_stdin(
        &["apply", "-f", "-"],
        &pod(
            "tenant-a",
            "native",
            "kmip.platform-mesh.io/native-sidecar: \"true\"",
        ),
    );
    assert!(!native.status.success());
    let err = String::from_utf8_lossy(&native.stderr);
    assert!(err.contains("must not be set for init containers"), "{err}");

    // Outside tenant namespaces the webhook is not called.
    api.apply(&pod("plain", "other", ""));
    let other = api.get_json(&["pod", "other", "-n", "plain"]).expect("pod");
    assert_eq!(
        other["spec"]["containers"].as_array().map(Vec::len),
        Some(1)
    );
}

#[test]
fn every_base_resource_kubernetes_1_20_serves_passes_a_server_side_dry_run() {
    let _one = ONE_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner());
    let api = cluster();
    let rendered = std::process::Command::new(testkit::kube::kubectl_binary())
        .args(["kustomize", &rel("manifests/base")])
        .output()
        .expect("kubectl kustomize");
    assert!(rendered.status.success(), "{rendered:?}");
    let text = String::from_utf8_lossy(&rendered.stdout).into_owned();
    let mut checked = std::collections::BTreeSet::new();
    let mut unserved = std::collections::BTreeSet::new();
    let mut unknown_fields = Vec::new();
    for document in text.split("\n---\n") {
        let doc: Value = serde_norway::from_str(document).expect("rendered YAML");
        let kind = format!(
            "{} {}",
            doc["apiVersion"].as_str().unwrap_or("?"),
            doc["kind"].as_str().unwrap_or("?")
        );
        let json = serde_json::to_string(&doc).expect("JSON");
        // The server's judgement: 1.20 drops fields it does not know (no strict field
        // validation before 1.25); kubectl's own check against the server's schema names
        // them, reported below.
        let out = api.kubectl_stdin(
            &["apply", "--dry-run=server", "--validate=false", "-f", "-"],
            &json,
        );
        let err = String::from_utf8_lossy(&out.stderr);
        if out.status.success() {
            checked.insert(kind);
            let validated = api.kubectl_stdin(&["apply", "--dry-run=server", "-f", "-"], &json);
            if !validated.status.success() {
                unknown_fields.push(format!(
                    "{} {}: {}",
                    doc["kind"].as_str().unwrap_or("?"),
                    doc["metadata"]["name"].as_str().unwrap_or("?"),
                    String::from_utf8_lossy(&validated.stderr).trim()
                ));
            }
        } else if err.contains("no matches for kind") || err.contains("ensure CRDs are installed") {
            unserved.insert(kind);
        } else {
            panic!("{kind} {}: {err}", doc["metadata"]["name"]);
        }
    }
    println!("fields Kubernetes 1.20 does not know (dropped there):");
    for line in &unknown_fields {
        println!("  {line}");
    }
    println!("server-side dry run passed: {checked:#?}\nnot served by 1.20 here: {unserved:#?}");
    for expected in [
        "apps/v1 Deployment",
        "rbac.authorization.k8s.io/v1 Role",
        "networking.k8s.io/v1 NetworkPolicy",
        "admissionregistration.k8s.io/v1 MutatingWebhookConfiguration",
        "platform-mesh.io/v1 TenantRouting",
        "platform-mesh.io/v1 ServiceDiscovery",
        "apiextensions.k8s.io/v1 CustomResourceDefinition",
    ] {
        assert!(
            checked.contains(expected),
            "{expected} not checked: {checked:?}"
        );
    }
}

/// A KMIP Create through the gateway at `dev` with `who`'s certificate: `Ok` or the error.
fn create_as(dev: &dev_support::DevProcess, who: &str) -> Result<(), String> {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    runtime.block_on(async {
        let connector = kmip::client::tls::connector_from_pem_files(
            dev.pki("ca.pem"),
            dev.pki(&format!("{who}.pem")),
            dev.pki(&format!("{who}-key.pem")),
        )
        .map_err(|e| e.to_string())?;
        let mut client =
            kmip::client::Client::connect_tls(&dev.kmip_addr.to_string(), "localhost", &connector)
                .await
                .map_err(|e| e.to_string())?;
        client.set_timeout(Duration::from_secs(10));
        client
            .create_aes_key(256, None)
            .await
            .map(|_| ())
            .map_err(|e| e.to_string())
    })
}

#[test]
fn the_rules_the_controller_writes_route_tenants_through_a_real_gateway() {
    let _one = ONE_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner());
    let api = cluster();
    api.kubectl_ok(&[
        "apply",
        "-n",
        NS,
        "-f",
        &rel("manifests/base/platform-mesh/tenantrouting.yaml"),
    ]);
    let (_controller, _) = controller(&api, "a", &["--certificates=false"]);
    let dir = tempfile::tempdir().expect("temporary directory");
    let dev = dev_support::DevProcess::start(&dir.path().join("dev"));
    // The kubelet's part: the ConfigMap's key as the file the gateway watches.
    let policy = dev.dir.join("policies/tenant-routing.yaml");
    let mount = |text: &str| std::fs::write(&policy, text).expect("write the rules file");

    let (text, _) = api.eventually(WITHIN, "rules written", || routing_text(&api));
    assert!(text.contains("openkcm-system"), "{text}");
    mount(&text);
    api.eventually(
        Duration::from_secs(10),
        "tenant-a and tenant-b served",
        || {
            (create_as(&dev, "tenant-a").is_ok() && create_as(&dev, "tenant-b").is_ok())
                .then_some(())
        },
    );
    assert!(create_as(&dev, "stranger").is_err());

    // tenant-b's rule removed from the resource: the gateway refuses it, tenant-a unaffected.
    api.kubectl_ok(&[
        "patch",
        "tenantrouting",
        "tenant-routing",
        "-n",
        NS,
        "--type=json",
        "-p",
        r#"[{"op":"remove","path":"/spec/routing/1"}]"#,
    ]);
    let (text, _) = api.eventually(WITHIN, "tenant-b's rule gone", || {
        routing_text(&api).filter(|t| !t.contains("tenant-b"))
    });
    mount(&text);
    let (denied, took) = api.eventually(Duration::from_secs(10), "tenant-b refused", || {
        create_as(&dev, "tenant-b").err()
    });
    println!("resource changed → gateway refuses tenant-b {took:?} after the file changed");
    assert!(
        denied.contains("Permission Denied") || denied.contains("PermissionDenied"),
        "{denied}"
    );
    assert_eq!(create_as(&dev, "tenant-a"), Ok(()));
}

fn registered(api: &ApiServer, name: &str) -> Option<(String, String, Value)> {
    let sd = api.get_json(&["servicediscovery", name, "-n", NS])?;
    let c = sd["status"]["conditions"]
        .as_array()?
        .iter()
        .find(|c| c["type"] == "Registered")?
        .clone();
    Some((
        c["status"].as_str()?.to_owned(),
        c["reason"].as_str()?.to_owned(),
        sd["status"].clone(),
    ))
}

#[test]
fn servicediscovery_reports_each_endpoint_s_name_and_health() {
    let _one = ONE_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner());
    let api = cluster();
    let dir = tempfile::tempdir().expect("temporary directory");
    let mut dev = dev_support::DevProcess::start(&dir.path().join("dev"));
    let (kmip, https) = (dev.kmip_addr.port(), dev.https_addr.port());
    // A Service carrying the two ports, and a ServiceDiscovery naming it; `host: localhost`
    // because the dev gateway's certificate names localhost, not a cluster DNS name.
    api.apply(&format!(
        "apiVersion: v1\nkind: Service\nmetadata: {{ name: kmip-dev, namespace: {NS} }}\n\
         spec: {{ ports: [{{ name: kmip, port: {kmip} }}, {{ name: https, port: {https} }}] }}\n---\n\
         apiVersion: platform-mesh.io/v1\nkind: ServiceDiscovery\nmetadata: {{ name: kmip-dev, namespace: {NS} }}\n\
         spec:\n  serviceName: kmip-dev\n  endpoints:\n\
         \x20   - {{ protocol: KMIP, port: {kmip}, host: localhost }}\n\
         \x20   - {{ protocol: HTTPS, port: {https}, host: localhost, healthCheck: /management/health }}\n"
    ));
    // The users' resource, whose Service does not exist here.
    api.kubectl_ok(&[
        "apply",
        "-n",
        NS,
        "-f",
        &rel("manifests/examples/platform-mesh/servicediscovery.yaml"),
    ]);
    let p = |name: &str| dev.pki(name).display().to_string();
    let (_controller, _) = controller(
        &api,
        "a",
        &[
            "--certificates=false",
            &format!("--probe-ca={}", p("ca.pem")),
            // A certificate no rule routes, like the controller's own in the manifests.
            &format!("--probe-cert={}", p("stranger.pem")),
            &format!("--probe-key={}", p("stranger-key.pem")),
        ],
    );
    let (healthy, took) = api.eventually(Duration::from_secs(15), "Registered=True", || {
        registered(&api, "kmip-dev").filter(|r| r.0 == "True")
    });
    println!("Registered within {took:?}");
    let status = healthy.2;
    assert_eq!(status["healthyEndpoints"], "2/2", "{status}");
    let kmip_status = &status["endpoints"][0];
    assert_eq!(kmip_status["dnsName"], "localhost");
    assert_eq!(kmip_status["url"], format!("kmip://localhost:{kmip}"));
    assert!(
        kmip_status["message"]
            .as_str()
            .unwrap_or("")
            .starts_with("KMIP answered DiscoverVersions: PermissionDenied"),
        "{kmip_status}"
    );
    assert_eq!(
        status["endpoints"][1]["url"],
        format!("https://localhost:{https}/management/health")
    );
    let users = registered(&api, "openkcm-crypto-service").expect("status on the users' resource");
    assert_eq!(
        (users.0.as_str(), users.1.as_str()),
        ("False", "ServiceNotFound"),
        "{}",
        users.2
    );
    assert_eq!(
        users.2["endpoints"][0]["dnsName"],
        "openkcm-crypto-service.openkcm-system.svc.cluster.local"
    );

    // The gateway goes away: Registered=False within a probe interval and a probe timeout.
    let stopped = Instant::now();
    dev.terminate();
    let (down, _) = api.eventually(Duration::from_secs(15), "Registered=False", || {
        registered(&api, "kmip-dev").filter(|r| r.0 == "False")
    });
    println!(
        "unregistered {:?} after the gateway stopped",
        stopped.elapsed()
    );
    assert_eq!(down.1, "EndpointsUnhealthy", "{}", down.2);
    assert_eq!(down.2["healthyEndpoints"], "0/2", "{}", down.2);
}
