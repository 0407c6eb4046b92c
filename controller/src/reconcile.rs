//! The controller process: API client, leader election, and the three reconcilers, each a
//! loop that recomputes everything it owns from the API after any change it watches (and
//! every [`RESYNC`] regardless), debounced by [`DEBOUNCE`].

use std::collections::{BTreeMap, BTreeSet};
use std::future::Future;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context as _;
use futures::StreamExt as _;
use k8s_openapi::api::core::v1::{ConfigMap, Namespace, Service};
use kube::api::{Api, DeleteParams, DynamicObject, ListParams, Patch, PatchParams};
use kube::core::PartialObjectMeta;
use kube::runtime::predicates;
use kube::runtime::utils::PredicateConfig;
use kube::runtime::watcher::{self, watcher};
use kube::runtime::WatchStreamExt as _;
use kube::{Client, Resource, ResourceExt as _};
use kube_lease_manager::LeaseManagerBuilder;
use serde_json::{json, Value as Json};
use tokio::net::TcpListener;
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;

use crate::certs::{self, ExistingCertificate, TenantNamespace, World};
use crate::discovery::{self, ProbeTls};
use crate::resources::{
    certificate_resource, request_policy_resource, ServiceDiscovery, TenantCertificate,
    TenantRouting, MANAGED_BY, MANAGER, TENANT_NAMESPACE_LABEL,
};
use crate::routing::{self, Key, Verdict};
use crate::{
    ControllerArgs, ControllerMetrics, Shared, State, INJECTOR_CONFIGMAP, INJECTOR_KEY,
    ROUTING_CONFIGMAP, ROUTING_KEY,
};

/// A pass runs this long after the change that triggered it, so a burst is one pass.
const DEBOUNCE: Duration = Duration::from_millis(100);
/// A pass runs at least this often, whatever the watches say.
const RESYNC: Duration = Duration::from_secs(60);
/// After a failed pass, the next one is tried after this long.
const RETRY: Duration = Duration::from_secs(2);
/// How often the API's reachability (`/ready`) is checked.
const API_CHECK: Duration = Duration::from_secs(5);

/// A started controller: API client configured, management port bound.
pub(crate) struct Controller {
    args: ControllerArgs,
    client: Client,
    state: Shared,
    management: TcpListener,
}

impl Controller {
    pub(crate) async fn start(args: ControllerArgs) -> anyhow::Result<Self> {
        let client = Client::try_default()
            .await
            .context("Kubernetes API client (in-cluster service account, else KUBECONFIG)")?;
        let management = TcpListener::bind(args.management)
            .await
            .with_context(|| format!("cannot listen on {}", args.management))?;
        tracing::info!(
            namespace = %args.namespace,
            identity = %args.identity,
            lease = %args.lease_name,
            management = %management.local_addr().map_or(args.management, |a| a),
            "controller starting"
        );
        Ok(Self {
            args,
            client,
            state: Arc::new(State {
                metrics: ControllerMetrics::new(),
                api_ok: false.into(),
                leader: false.into(),
            }),
            management,
        })
    }

    /// Runs until `stop`; then stops the reconcilers and releases the Lease.
    pub(crate) async fn run_until(self, stop: impl Future<Output = ()>) {
        let Self {
            args,
            client,
            state,
            management,
        } = self;
        let shutdown = CancellationToken::new();
        tokio::spawn(crate::server::serve(
            management,
            state.clone(),
            shutdown.clone(),
        ));
        tokio::spawn(check_api(client.clone(), state.clone(), shutdown.clone()));
        tokio::pin!(stop);

        let duration = args.lease_duration.as_secs();
        let manager = loop {
            let built = LeaseManagerBuilder::new(client.clone(), &args.lease_name)
                .with_namespace(&args.namespace)
                .with_identity(&args.identity)
                .with_duration(duration)
                .with_grace((duration / 3).max(1))
                .with_field_manager(MANAGER)
                .build()
                .await;
            match built {
                Ok(manager) => break manager,
                Err(e) => {
                    tracing::warn!(error = %e, "cannot set up the leader Lease; retrying");
                    tokio::select! {
                        () = &mut stop => { shutdown.cancel(); return; }
                        () = tokio::time::sleep(RETRY) => {}
                    }
                }
            }
        };
        let (mut leadership, lease_task) = manager.watch().await;
        let context = Arc::new(Context {
            client: client.clone(),
            state: state.clone(),
            args: args.clone(),
        });
        let mut leading: Option<CancellationToken> = None;
        loop {
            tokio::select! {
                () = &mut stop => break,
                changed = leadership.changed() => {
                    if changed.is_err() {
                        tracing::error!("leader election stopped");
                        break;
                    }
                    let leader = *leadership.borrow_and_update();
                    state.leader.store(leader, Ordering::Relaxed);
                    state.metrics.set_leader(leader);
                    if leader && leading.is_none() {
                        tracing::info!(identity = %args.identity, "leading: reconcilers started");
                        let token = CancellationToken::new();
                        tokio::spawn(lead(context.clone(), token.clone()));
                        leading = Some(token);
                    } else if !leader {
                        if let Some(token) = leading.take() {
                            tracing::warn!(identity = %args.identity, "leadership lost: reconcilers stopped");
                            token.cancel();
                        }
                    }
                }
            }
        }
        if let Some(token) = leading.take() {
            token.cancel();
        }
        // Closing the channel releases the Lease (the standby still waits out the expiry it
        // last saw: a hand-over takes up to the lease duration either way).
        drop(leadership);
        let _ = tokio::time::timeout(Duration::from_secs(5), lease_task).await;
        state.leader.store(false, Ordering::Relaxed);
        shutdown.cancel();
        tracing::info!("controller stopped");
    }
}

async fn check_api(client: Client, state: Shared, stop: CancellationToken) {
    let mut failures = 0u32;
    loop {
        match client.apiserver_version().await {
            Ok(_) => {
                failures = 0;
                state.api_ok.store(true, Ordering::Relaxed);
            }
            Err(e) => {
                failures += 1;
                if failures >= 3 {
                    state.api_ok.store(false, Ordering::Relaxed);
                }
                tracing::warn!(error = %e, "the Kubernetes API does not answer");
            }
        }
        tokio::select! {
            () = stop.cancelled() => return,
            () = tokio::time::sleep(API_CHECK) => {}
        }
    }
}

/// What every reconciler needs.
struct Context {
    client: Client,
    state: Shared,
    args: ControllerArgs,
}

/// The leader's work: watches feeding the reconcilers, until `stop`.
async fn lead(ctx: Arc<Context>, stop: CancellationToken) {
    let routing = Arc::new(Notify::new());
    let certificates = Arc::new(Notify::new());
    let discovery = Arc::new(Notify::new());
    let ns = ctx.args.namespace.clone();
    let client = ctx.client.clone();
    let mut tasks = tokio::task::JoinSet::new();
    tasks.spawn(trigger(
        "TenantRouting",
        watcher(
            Api::<TenantRouting>::namespaced(client.clone(), &ns),
            watcher::Config::default(),
        ),
        routing.clone(),
    ));
    tasks.spawn(trigger(
        "ServiceDiscovery",
        // Spec changes only: the probes write status every pass, which must not wake the
        // next pass.
        watcher(
            Api::<ServiceDiscovery>::namespaced(client.clone(), &ns),
            watcher::Config::default(),
        )
        .default_backoff()
        .applied_objects()
        .predicate_filter(predicates::generation, PredicateConfig::default()),
        discovery.clone(),
    ));
    tasks.spawn(reconciler(
        "routing",
        ctx.clone(),
        routing,
        reconcile_routing,
        RESYNC,
    ));
    tasks.spawn(reconciler(
        "discovery",
        ctx.clone(),
        discovery,
        reconcile_discovery,
        ctx.args.probe_interval,
    ));
    if ctx.args.certificates {
        tasks.spawn(trigger(
            "TenantCertificate",
            watcher(
                Api::<TenantCertificate>::namespaced(client.clone(), &ns),
                watcher::Config::default(),
            )
            .default_backoff(),
            certificates.clone(),
        ));
        tasks.spawn(trigger(
            "Namespace",
            watcher(
                Api::<PartialObjectMeta<Namespace>>::all(client.clone()),
                watcher::Config::default().labels(&format!("{TENANT_NAMESPACE_LABEL}=true")),
            )
            .default_backoff(),
            certificates.clone(),
        ));
        tasks.spawn(trigger(
            "Service",
            watcher(
                Api::<PartialObjectMeta<Service>>::all(client.clone()),
                watcher::Config::default(),
            )
            .default_backoff(),
            certificates.clone(),
        ));
        tasks.spawn(trigger(
            "Certificate",
            watcher(
                Api::<DynamicObject>::all_with(client.clone(), &certificate_resource()),
                watcher::Config::default().labels(&format!("{MANAGED_BY}={MANAGER}")),
            )
            .default_backoff(),
            certificates.clone(),
        ));
        tasks.spawn(reconciler(
            "certificates",
            ctx.clone(),
            certificates,
            reconcile_certificates,
            RESYNC,
        ));
    }
    stop.cancelled().await;
    tasks.abort_all();
}

/// Wakes `notify` on every event of a watch; watch errors are logged and retried with
/// backoff (a kind whose CRD is missing keeps retrying).
async fn trigger<S, T>(what: &'static str, stream: S, notify: Arc<Notify>)
where
    S: futures::Stream<Item = Result<T, watcher::Error>> + Send,
{
    futures::pin_mut!(stream);
    let mut failing = false;
    while let Some(event) = stream.next().await {
        match event {
            Ok(_) => {
                failing = false;
                notify.notify_one();
            }
            Err(e) => {
                if !failing {
                    tracing::warn!(kind = what, error = %e, "watch failed; retrying with backoff");
                }
                failing = true;
            }
        }
    }
}

type Pass = for<'a> fn(&'a Context) -> futures::future::BoxFuture<'a, anyhow::Result<()>>;

/// Runs `pass` after every wake-up of `notify` (debounced) and at least every `resync`.
async fn reconciler(
    name: &'static str,
    ctx: Arc<Context>,
    notify: Arc<Notify>,
    pass: Pass,
    resync: Duration,
) {
    loop {
        let started = Instant::now();
        let result = pass(&ctx).await;
        let ok = result.is_ok();
        ctx.state
            .metrics
            .reconciled(name, ok, started.elapsed().as_secs_f64());
        let wait = match result {
            Ok(()) => resync,
            Err(e) => {
                tracing::warn!(controller = name, error = %format!("{e:#}"), "reconcile failed; retrying");
                RETRY
            }
        };
        tokio::select! {
            () = notify.notified() => tokio::time::sleep(DEBOUNCE).await,
            () = tokio::time::sleep(wait) => {}
        }
    }
}

// ------------------------------------------------------------------------- helpers

fn now() -> String {
    time::OffsetDateTime::now_utc()
        .replace_nanosecond(0)
        .ok()
        .and_then(|t| {
            t.format(&time::format_description::well_known::Rfc3339)
                .ok()
        })
        .unwrap_or_default()
}

fn created<K: Resource>(object: &K) -> String {
    object
        .meta()
        .creation_timestamp
        .as_ref()
        .map(|t| t.0.to_string())
        .unwrap_or_default()
}

/// The condition of type `kind` in a `status` (ours or cert-manager's: same shape).
fn find_condition<'a>(status: Option<&'a Json>, kind: &str) -> Option<&'a Json> {
    status
        .and_then(|s| s.get("conditions"))
        .and_then(Json::as_array)
        .and_then(|list| list.iter().find(|c| c["type"] == kind))
}

/// A condition for `status.conditions`, keeping the old transition time when its status
/// did not change.
fn condition(
    old: Option<&Json>,
    kind: &str,
    ok: bool,
    reason: &str,
    message: &str,
    generation: i64,
) -> Json {
    let status = if ok { "True" } else { "False" };
    let previous = find_condition(old, kind);
    let since = previous
        .filter(|c| c["status"] == status)
        .and_then(|c| c.get("lastTransitionTime").cloned())
        .unwrap_or_else(|| json!(now()));
    json!({
        "type": kind,
        "status": status,
        "reason": reason,
        "message": message,
        "observedGeneration": generation,
        "lastTransitionTime": since,
    })
}

/// Whether `new` differs from `old` in anything but volatile times.
fn status_changed(old: Option<&Json>, new: &Json) -> bool {
    fn strip(v: &Json) -> Json {
        match v {
            Json::Object(map) => Json::Object(
                map.iter()
                    .filter(|(k, _)| *k != "lastTransitionTime" && *k != "lastProbeTime")
                    .map(|(k, v)| (k.clone(), strip(v)))
                    .collect(),
            ),
            Json::Array(items) => Json::Array(items.iter().map(strip).collect()),
            other => other.clone(),
        }
    }
    old.is_none_or(|old| strip(old) != strip(new))
}

/// Writes `data` to a ConfigMap the controller owns, when it differs.
async fn write_configmap(
    client: &Client,
    namespace: &str,
    name: &str,
    key: &str,
    content: &str,
    current: Option<&ConfigMap>,
) -> anyhow::Result<bool> {
    let same = current
        .and_then(|cm| cm.data.as_ref())
        .and_then(|data| data.get(key))
        .is_some_and(|text| text == content);
    if same {
        return Ok(false);
    }
    let api: Api<ConfigMap> = Api::namespaced(client.clone(), namespace);
    let object = json!({
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": {
            "name": name,
            "namespace": namespace,
            "labels": { MANAGED_BY: MANAGER, "app.kubernetes.io/part-of": "openkcm" },
        },
        "data": { key: content },
    });
    api.patch(
        name,
        &PatchParams::apply(MANAGER).force(),
        &Patch::Apply(&object),
    )
    .await
    .with_context(|| format!("write ConfigMap {namespace}/{name}"))?;
    Ok(true)
}

// ------------------------------------------------------------------------- routing

fn reconcile_routing(ctx: &Context) -> futures::future::BoxFuture<'_, anyhow::Result<()>> {
    Box::pin(async move {
        let ns = &ctx.args.namespace;
        let api: Api<TenantRouting> = Api::namespaced(ctx.client.clone(), ns);
        let list = api
            .list(&ListParams::default())
            .await
            .context("list TenantRouting")?;
        let cms: Api<ConfigMap> = Api::namespaced(ctx.client.clone(), ns);
        let current = cms
            .get_opt(ROUTING_CONFIGMAP)
            .await
            .context("read ConfigMap openkcm-routing")?;
        let current_text = current
            .as_ref()
            .and_then(|cm| cm.data.as_ref())
            .and_then(|d| d.get(ROUTING_KEY))
            .cloned()
            .unwrap_or_default();
        let resources: Vec<routing::Resource> = list
            .items
            .iter()
            .map(|tr| routing::Resource {
                key: Key {
                    namespace: tr.namespace().unwrap_or_default(),
                    name: tr.name_any(),
                },
                generation: tr.metadata.generation.unwrap_or(0),
                created: created(tr),
                spec: Json::Object(tr.spec.fields.clone()),
            })
            .collect();
        let plan = routing::plan(&resources, &current_text);
        if let Some(why) = &plan.current_unreadable {
            tracing::warn!(problem = %why, "ConfigMap openkcm-routing was not written by the controller; replaced");
        }
        let written = write_configmap(
            &ctx.client,
            ns,
            ROUTING_CONFIGMAP,
            ROUTING_KEY,
            &plan.content,
            current.as_ref(),
        )
        .await?;
        if written {
            tracing::info!(
                resources = resources.len(),
                in_force = plan
                    .outcomes
                    .values()
                    .filter(|o| o.in_force.is_some())
                    .count(),
                "routing rules written to ConfigMap openkcm-routing"
            );
        }
        for tr in &list.items {
            let key = Key {
                namespace: tr.namespace().unwrap_or_default(),
                name: tr.name_any(),
            };
            let Some(outcome) = plan.outcomes.get(&key) else {
                continue;
            };
            let generation = tr.metadata.generation.unwrap_or(0);
            let kept = match outcome.in_force {
                Some(g) => format!("the rules of generation {g} stay in force"),
                None => "none of its rules are in force".to_owned(),
            };
            let (ok, reason, message) = match &outcome.verdict {
                Verdict::Accepted => {
                    let mut message = format!("{} rule(s) in force", outcome.rules_in_force);
                    if !outcome.warnings.is_empty() {
                        message.push_str("; warnings: ");
                        message.push_str(&outcome.warnings.join("; "));
                    }
                    (true, "Accepted", message)
                }
                Verdict::Invalid(why) => (false, "Invalid", format!("{why}\n({kept})")),
                Verdict::Conflict(why) => (false, "Conflict", format!("{why}\n({kept})")),
            };
            let old = tr.status.as_ref();
            let mut status = json!({
                "observedGeneration": generation,
                "rulesInForce": outcome.rules_in_force,
                "conditions": [condition(old, "Accepted", ok, reason, &message, generation)],
            });
            if let Some(g) = outcome.in_force {
                status["acceptedGeneration"] = json!(g);
            }
            if status_changed(old, &status) {
                if ok {
                    tracing::info!(resource = %key, message = %message, "TenantRouting accepted");
                } else {
                    tracing::warn!(resource = %key, reason, message = %message, "TenantRouting not accepted");
                }
                api.patch_status(
                    &key.name,
                    &PatchParams::default(),
                    &Patch::Merge(json!({ "status": status })),
                )
                .await
                .with_context(|| format!("status of TenantRouting {key}"))?;
            }
        }
        Ok(())
    })
}

// -------------------------------------------------------------------- certificates

fn reconcile_certificates(ctx: &Context) -> futures::future::BoxFuture<'_, anyhow::Result<()>> {
    Box::pin(async move {
        let client = &ctx.client;
        let ns = &ctx.args.namespace;
        let api: Api<TenantCertificate> = Api::namespaced(client.clone(), ns);
        let list = api
            .list(&ListParams::default())
            .await
            .context("list TenantCertificate")?;
        let namespaces = Api::<Namespace>::all(client.clone())
            .list_metadata(&ListParams::default().labels(&format!("{TENANT_NAMESPACE_LABEL}=true")))
            .await
            .context("list tenant namespaces")?;
        let mut world = World::default();
        for namespace in &namespaces.items {
            let name = namespace.name_any();
            world.namespaces.push(TenantNamespace {
                name: name.clone(),
                tenant_id: namespace
                    .labels()
                    .get(crate::resources::TENANT_LABEL)
                    .cloned(),
            });
            let services = Api::<Service>::namespaced(client.clone(), &name)
                .list_metadata(&ListParams::default())
                .await
                .with_context(|| format!("list Services in {name}"))?;
            for service in services.items {
                world.services.insert((name.clone(), service.name_any()));
            }
        }
        let cert_api = Api::<DynamicObject>::all_with(client.clone(), &certificate_resource());
        let owned = cert_api
            .list(&ListParams::default().labels(&format!("{MANAGED_BY}={MANAGER}")))
            .await
            .context("list cert-manager Certificates (are cert-manager's CRDs installed?)")?;
        let mut existing_specs: BTreeMap<(String, String), Json> = BTreeMap::new();
        for cert in &owned.items {
            let key = (cert.namespace().unwrap_or_default(), cert.name_any());
            let status = cert.data.get("status");
            let ready_condition = find_condition(status, "Ready");
            let text = |field: &str| {
                status
                    .and_then(|s| s.get(field))
                    .and_then(Json::as_str)
                    .map(str::to_owned)
            };
            world.certificates.push(ExistingCertificate {
                namespace: key.0.clone(),
                name: key.1.clone(),
                ready: ready_condition.is_some_and(|c| c["status"] == "True"),
                not_after: text("notAfter"),
                not_before: text("notBefore"),
                message: ready_condition
                    .and_then(|c| c.get("message"))
                    .and_then(Json::as_str)
                    .map(str::to_owned),
            });
            existing_specs.insert(key, cert.data.get("spec").cloned().unwrap_or(Json::Null));
        }
        let resources: Vec<certs::Resource> = list
            .items
            .iter()
            .map(|tc| certs::Resource {
                key: Key {
                    namespace: tc.namespace().unwrap_or_default(),
                    name: tc.name_any(),
                },
                generation: tc.metadata.generation.unwrap_or(0),
                created: created(tc),
                tenants: tc.spec.tenants.clone(),
                issuer: tc.spec.issuer_ref.clone(),
            })
            .collect();
        let plan = certs::plan(&resources, &world, &ctx.args.issuer);

        for ((namespace, name), object) in &plan.certificates {
            if existing_specs.get(&(namespace.clone(), name.clone())) == Some(&object["spec"]) {
                continue;
            }
            let api = Api::<DynamicObject>::namespaced_with(
                client.clone(),
                namespace,
                &certificate_resource(),
            );
            api.patch(
                name,
                &PatchParams::apply(MANAGER).force(),
                &Patch::Apply(object),
            )
            .await
            .with_context(|| format!("apply Certificate {namespace}/{name}"))?;
            tracing::info!(namespace = %namespace, certificate = %name, "Certificate applied");
        }
        for (namespace, name) in &plan.delete {
            let api = Api::<DynamicObject>::namespaced_with(
                client.clone(),
                namespace,
                &certificate_resource(),
            );
            api.delete(name, &DeleteParams::default())
                .await
                .with_context(|| format!("delete Certificate {namespace}/{name}"))?;
            tracing::info!(namespace = %namespace, certificate = %name, "Certificate removed (no TenantCertificate asks for it)");
        }
        let locked = apply_policies(client, &plan.policies).await;
        if let Err(e) = &locked {
            tracing::warn!(error = %format!("{e:#}"), "issuance policies not written");
        }

        let cms: Api<ConfigMap> = Api::namespaced(client.clone(), ns);
        let current = cms
            .get_opt(INJECTOR_CONFIGMAP)
            .await
            .context("read ConfigMap openkcm-injector-tenants")?;
        write_configmap(
            client,
            ns,
            INJECTOR_CONFIGMAP,
            INJECTOR_KEY,
            &plan.injector_tenants,
            current.as_ref(),
        )
        .await?;

        for tc in &list.items {
            let key = Key {
                namespace: tc.namespace().unwrap_or_default(),
                name: tc.name_any(),
            };
            let Some(planned) = plan.statuses.get(&key) else {
                continue;
            };
            let generation = tc.metadata.generation.unwrap_or(0);
            let old = tc.status.as_ref();
            let ready_text = planned["certificatesReady"]
                .as_str()
                .unwrap_or("0/0")
                .to_owned();
            let all_ready = ready_text.split_once('/').is_some_and(|(a, b)| a == b);
            let mut status = planned.clone();
            let mut conditions = vec![condition(
                old,
                "Ready",
                all_ready,
                if all_ready {
                    "CertificatesReady"
                } else {
                    "CertificatesPending"
                },
                &format!("{ready_text} certificates ready"),
                generation,
            )];
            conditions.push(match &locked {
                Ok(()) => condition(
                    old,
                    "IssuanceLocked",
                    true,
                    "PoliciesApplied",
                    "a CertificateRequestPolicy per tenant allows its OU only in its namespaces",
                    generation,
                ),
                Err(e) => condition(
                    old,
                    "IssuanceLocked",
                    false,
                    "PoliciesNotApplied",
                    &format!("{e:#}"),
                    generation,
                ),
            });
            status["conditions"] = json!(conditions);
            if status_changed(old, &status) {
                tracing::info!(resource = %key, ready = %ready_text, "TenantCertificate status");
                api.patch_status(
                    &key.name,
                    &PatchParams::default(),
                    &Patch::Merge(json!({ "status": status })),
                )
                .await
                .with_context(|| format!("status of TenantCertificate {key}"))?;
            }
        }
        Ok(())
    })
}

/// Applies the tenants' CertificateRequestPolicies and removes owned ones no tenant needs.
async fn apply_policies(client: &Client, wanted: &BTreeMap<String, Json>) -> anyhow::Result<()> {
    let api = Api::<DynamicObject>::all_with(client.clone(), &request_policy_resource());
    let owned = api
        .list(&ListParams::default().labels(&format!("{MANAGED_BY}={MANAGER}")))
        .await
        .context("list CertificateRequestPolicy (is cert-manager approver-policy installed?)")?;
    let existing: BTreeMap<String, Json> = owned
        .items
        .iter()
        .map(|p| {
            (
                p.name_any(),
                p.data.get("spec").cloned().unwrap_or(Json::Null),
            )
        })
        .collect();
    for (name, object) in wanted {
        if existing.get(name) == Some(&object["spec"]) {
            continue;
        }
        api.patch(
            name,
            &PatchParams::apply(MANAGER).force(),
            &Patch::Apply(object),
        )
        .await
        .with_context(|| format!("apply CertificateRequestPolicy {name}"))?;
    }
    let gone: BTreeSet<&String> = existing
        .keys()
        .filter(|n| !wanted.contains_key(*n))
        .collect();
    for name in gone {
        api.delete(name, &DeleteParams::default())
            .await
            .with_context(|| format!("delete CertificateRequestPolicy {name}"))?;
    }
    Ok(())
}

// ----------------------------------------------------------------------- discovery

fn reconcile_discovery(ctx: &Context) -> futures::future::BoxFuture<'_, anyhow::Result<()>> {
    Box::pin(async move {
        let ns = &ctx.args.namespace;
        let api: Api<ServiceDiscovery> = Api::namespaced(ctx.client.clone(), ns);
        let list = api
            .list(&ListParams::default())
            .await
            .context("list ServiceDiscovery")?;
        let tls = ProbeTls {
            ca: ctx.args.probe_ca.clone(),
            cert: ctx.args.probe_cert.clone(),
            key: ctx.args.probe_key.clone(),
        };
        for sd in &list.items {
            let name = sd.name_any();
            let generation = sd.metadata.generation.unwrap_or(0);
            let service_ns = sd
                .spec
                .namespace
                .clone()
                .unwrap_or_else(|| sd.namespace().unwrap_or_default());
            let service = Api::<Service>::namespaced(ctx.client.clone(), &service_ns)
                .get_opt(&sd.spec.service_name)
                .await
                .with_context(|| format!("read Service {service_ns}/{}", sd.spec.service_name))?;
            let ports: BTreeSet<i32> = service
                .as_ref()
                .and_then(|s| s.spec.as_ref())
                .and_then(|s| s.ports.as_ref())
                .map(|ports| ports.iter().map(|p| p.port).collect())
                .unwrap_or_default();
            let mut endpoints = Vec::new();
            let mut healthy = 0usize;
            let mut problems = Vec::new();
            for endpoint in &sd.spec.endpoints {
                let dns = endpoint.host.clone().unwrap_or_else(|| {
                    format!(
                        "{}.{service_ns}.svc.{}",
                        sd.spec.service_name, ctx.args.cluster_domain
                    )
                });
                let target = format!("{dns}:{}", endpoint.port);
                let connect = ctx
                    .args
                    .resolve
                    .iter()
                    .find(|(name, _)| *name == dns || *name == target)
                    .map_or(target.clone(), |(_, to)| to.clone());
                let health = if service.is_none() {
                    discovery::Health {
                        healthy: false,
                        message: format!("Service {service_ns}/{} not found", sd.spec.service_name),
                        latency: Duration::ZERO,
                    }
                } else if !ports.contains(&i32::from(endpoint.port)) {
                    discovery::Health {
                        healthy: false,
                        message: format!(
                            "Service {service_ns}/{} has no port {}",
                            sd.spec.service_name, endpoint.port
                        ),
                        latency: Duration::ZERO,
                    }
                } else if endpoint.protocol == "HTTPS" {
                    let path = endpoint
                        .health_check
                        .clone()
                        .unwrap_or_else(|| "/health".into());
                    discovery::probe_https(&tls, &dns, &connect, &path).await
                } else {
                    discovery::probe_kmip(&tls, &dns, &connect).await
                };
                if health.healthy {
                    healthy += 1;
                } else {
                    problems.push(format!(
                        "{} {target}: {}",
                        endpoint.protocol, health.message
                    ));
                }
                let scheme = if endpoint.protocol == "HTTPS" {
                    "https"
                } else {
                    "kmip"
                };
                let path = if endpoint.protocol == "HTTPS" {
                    endpoint.health_check.clone().unwrap_or_default()
                } else {
                    String::new()
                };
                endpoints.push(json!({
                    "protocol": endpoint.protocol,
                    "port": endpoint.port,
                    "dnsName": dns,
                    "url": format!("{scheme}://{target}{path}"),
                    "healthy": health.healthy,
                    "message": health.message,
                    "latencyMilliseconds": u64::try_from(health.latency.as_millis()).unwrap_or(u64::MAX),
                    "lastProbeTime": now(),
                }));
            }
            let total = sd.spec.endpoints.len();
            let all = healthy == total && total > 0;
            let old = sd.status.as_ref();
            let (reason, message) = if all {
                (
                    "EndpointsHealthy",
                    format!("{healthy}/{total} endpoints answer"),
                )
            } else if service.is_none() {
                ("ServiceNotFound", problems.join("; "))
            } else {
                ("EndpointsUnhealthy", problems.join("; "))
            };
            let status = json!({
                "observedGeneration": generation,
                "healthyEndpoints": format!("{healthy}/{total}"),
                "lastProbeTime": now(),
                "endpoints": endpoints,
                "conditions": [condition(old, "Registered", all, reason, &message, generation)],
            });
            // The probe times change every pass: written every pass, which is every
            // probe interval (30 s) per resource.
            api.patch_status(
                &name,
                &PatchParams::default(),
                &Patch::Merge(json!({ "status": status })),
            )
            .await
            .with_context(|| format!("status of ServiceDiscovery {ns}/{name}"))?;
            let was_registered = find_condition(old, "Registered").map(|c| c["status"] == "True");
            if was_registered != Some(all) {
                if all {
                    tracing::info!(resource = %format!("{ns}/{name}"), "ServiceDiscovery endpoints healthy");
                } else {
                    tracing::warn!(resource = %format!("{ns}/{name}"), problems = %message, "ServiceDiscovery endpoints unhealthy");
                }
            }
        }
        Ok(())
    })
}
