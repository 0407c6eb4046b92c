//! TenantCertificate resources → cert-manager Certificates in the tenants' namespaces, the
//! approver-policy CertificateRequestPolicy per tenant that locks issuance down, the
//! injector's tenant map, and each resource's status; decided without I/O ([`plan`]).
//!
//! Where a service runs: a Service of that name in a namespace labelled
//! `platform-mesh.io/tenant=true` that may hold the tenant's services — listed in the
//! tenant's `namespaces` if given, else any such namespace whose `platform-mesh.io/tenant-id`
//! label (if set) names the tenant. Found in no such namespace: not issued (status says so).
//! Found in several: issued in none unless `namespaces` or the label decides — otherwise
//! anyone able to create a Service of that name in another tenant namespace would receive
//! the tenant's certificate.

use std::collections::{BTreeMap, BTreeSet};

use serde_json::{json, Value as Json};

use crate::resources::{
    CertificateTenant, IssuerRef, MANAGED_BY, MANAGER, SOURCE_LABEL, TENANT_LABEL,
};
use crate::routing::Key;

/// The URI SAN that carries a tenant id (cert-manager cannot issue custom X.509
/// extensions; a URI SAN it can, and the gateway's rules can match it: `sanUri`).
pub fn tenant_uri(tenant_id: &str) -> String {
    format!("urn:platform-mesh:tenant:{tenant_id}")
}

/// The Certificate (and Secret) name for a service.
pub fn certificate_name(service: &str) -> String {
    format!("openkcm-kmip-{service}")
}

/// A tenant namespace as the planner needs it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TenantNamespace {
    pub name: String,
    /// Its `platform-mesh.io/tenant-id` label.
    pub tenant_id: Option<String>,
}

/// A cert-manager Certificate the controller owns, as read back.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ExistingCertificate {
    pub namespace: String,
    pub name: String,
    pub ready: bool,
    pub not_after: Option<String>,
    pub not_before: Option<String>,
    pub message: Option<String>,
}

/// One TenantCertificate resource.
#[derive(Clone, Debug)]
pub struct Resource {
    pub key: Key,
    pub generation: i64,
    pub created: String,
    pub tenants: Vec<CertificateTenant>,
    pub issuer: Option<IssuerRef>,
}

/// What the cluster looks like to the planner.
#[derive(Clone, Debug, Default)]
pub struct World {
    pub namespaces: Vec<TenantNamespace>,
    /// Services by (namespace, name), in tenant namespaces only.
    pub services: BTreeSet<(String, String)>,
    pub certificates: Vec<ExistingCertificate>,
}

/// What should exist.
#[derive(Clone, Debug, Default)]
pub struct Plan {
    /// Certificates to apply, keyed by (namespace, name).
    pub certificates: BTreeMap<(String, String), Json>,
    /// Owned Certificates to delete.
    pub delete: Vec<(String, String)>,
    /// CertificateRequestPolicy objects to apply, by name.
    pub policies: BTreeMap<String, Json>,
    /// The injector's tenant map (`tenants.yaml`).
    pub injector_tenants: String,
    /// Status per TenantCertificate.
    pub statuses: BTreeMap<Key, Json>,
}

const USAGES: [&str; 3] = ["digital signature", "key encipherment", "client auth"];

/// Decides everything from the resources and the world.
pub fn plan(resources: &[Resource], world: &World, default_issuer: &IssuerRef) -> Plan {
    let mut out = Plan::default();
    let mut ordered: Vec<&Resource> = resources.iter().collect();
    ordered.sort_by(|a, b| (&a.created, &a.key).cmp(&(&b.created, &b.key)));
    // Which (namespace, service) is already claimed, by "tenant in namespace/name".
    let mut claimed: BTreeMap<(String, String), String> = BTreeMap::new();
    // namespace -> (tenant, service -> secret)
    let mut injector: BTreeMap<String, (String, BTreeMap<String, String>)> = BTreeMap::new();
    // tenant -> (issuer, OUs, organizations, uri, namespaces)
    let mut policies: BTreeMap<String, PolicyParts> = BTreeMap::new();
    let existing: BTreeMap<(String, String), &ExistingCertificate> = world
        .certificates
        .iter()
        .map(|c| ((c.namespace.clone(), c.name.clone()), c))
        .collect();

    for resource in ordered {
        let issuer = resource
            .issuer
            .clone()
            .unwrap_or_else(|| default_issuer.clone());
        let mut tenant_statuses = Vec::new();
        let (mut all_ready, mut all_total) = (0usize, 0usize);
        for tenant in &resource.tenants {
            let template = tenant.certificate_template.clone().unwrap_or_default();
            let subject = template.subject.clone().unwrap_or_default();
            let ous = if subject.organizational_unit.is_empty() {
                vec![tenant.name.clone()]
            } else {
                subject.organizational_unit.clone()
            };
            let tenant_id = template
                .extensions
                .as_ref()
                .and_then(|e| e.get("tenantId"))
                .cloned()
                .unwrap_or_else(|| tenant.name.clone());
            let eligible: Vec<&TenantNamespace> = world
                .namespaces
                .iter()
                .filter(|ns| match &tenant.namespaces {
                    Some(listed) => listed.contains(&ns.name),
                    None => ns.tenant_id.as_deref().is_none_or(|id| id == tenant.name),
                })
                .collect();
            let mut services = Vec::new();
            let (mut ready, mut total) = (0usize, 0usize);
            let mut earliest_not_after: Option<String> = None;
            let mut last_renewal: Option<String> = None;
            for service in &tenant.services {
                let found: Vec<&TenantNamespace> = eligible
                    .iter()
                    .copied()
                    .filter(|ns| world.services.contains(&(ns.name.clone(), service.clone())))
                    .collect();
                let namespace = match found.as_slice() {
                    [] => {
                        services.push(json!({
                            "name": service, "ready": false,
                            "message": "no Service of this name in a tenant namespace (label platform-mesh.io/tenant=true) this tenant may use",
                        }));
                        total += 1;
                        continue;
                    }
                    [one] => one.name.clone(),
                    many => {
                        let names: Vec<&str> = many.iter().map(|ns| ns.name.as_str()).collect();
                        services.push(json!({
                            "name": service, "ready": false,
                            "message": format!(
                                "a Service of this name is in several tenant namespaces ({}): not issued; \
                                 list the tenant's namespaces or label them platform-mesh.io/tenant-id",
                                names.join(", ")),
                        }));
                        total += 1;
                        continue;
                    }
                };
                total += 1;
                let name = certificate_name(service);
                let owner = format!("tenant {} in {}", tenant.name, resource.key);
                if let Some(first) = claimed.get(&(namespace.clone(), service.clone())) {
                    if first != &owner {
                        services.push(json!({
                            "name": service, "namespace": namespace, "ready": false,
                            "message": format!("also claimed by {first}, which came first: not issued for this tenant"),
                        }));
                        continue;
                    }
                }
                claimed.insert((namespace.clone(), service.clone()), owner);
                out.certificates.insert(
                    (namespace.clone(), name.clone()),
                    certificate(
                        &namespace,
                        service,
                        &tenant.name,
                        &ous,
                        &subject.organization,
                        &tenant_id,
                        &template,
                        &issuer,
                        &resource.key,
                    ),
                );
                let entry = injector
                    .entry(namespace.clone())
                    .or_insert_with(|| (tenant.name.clone(), BTreeMap::new()));
                entry.1.insert(service.clone(), name.clone());
                policies
                    .entry(tenant.name.clone())
                    .or_insert_with(|| PolicyParts {
                        issuer: issuer.clone(),
                        ous: ous.clone(),
                        organizations: subject.organization.clone(),
                        uri: tenant_uri(&tenant_id),
                        namespaces: BTreeSet::new(),
                    })
                    .namespaces
                    .insert(namespace.clone());
                let seen = existing.get(&(namespace.clone(), name.clone()));
                let is_ready = seen.is_some_and(|c| c.ready);
                if is_ready {
                    ready += 1;
                }
                if let Some(not_after) = seen.and_then(|c| c.not_after.clone()) {
                    if earliest_not_after.as_ref().is_none_or(|e| &not_after < e) {
                        earliest_not_after = Some(not_after.clone());
                    }
                }
                if let Some(not_before) = seen.and_then(|c| c.not_before.clone()) {
                    if last_renewal.as_ref().is_none_or(|l| &not_before > l) {
                        last_renewal = Some(not_before);
                    }
                }
                let mut status = json!({
                    "name": service, "namespace": namespace, "certificate": name,
                    "secretName": name, "ready": is_ready,
                });
                if let Some(c) = seen {
                    if let Some(not_after) = &c.not_after {
                        status["notAfter"] = json!(not_after);
                    }
                    if let Some(message) = &c.message {
                        status["message"] = json!(message);
                    }
                } else {
                    status["message"] = json!("Certificate created; waiting for cert-manager");
                }
                services.push(status);
            }
            all_ready += ready;
            all_total += total;
            let mut status = json!({
                "name": tenant.name,
                "certificatesReady": format!("{ready}/{total}"),
                "ready": ready, "total": total, "services": services,
            });
            if let Some(not_after) = earliest_not_after {
                status["notAfter"] = json!(not_after);
            }
            if let Some(renewal) = last_renewal {
                status["lastRenewal"] = json!(renewal);
            }
            tenant_statuses.push(status);
        }
        out.statuses.insert(
            resource.key.clone(),
            json!({
                "observedGeneration": resource.generation,
                "tenantCount": resource.tenants.len(),
                "certificatesReady": format!("{all_ready}/{all_total}"),
                "tenants": tenant_statuses,
            }),
        );
    }

    for c in &world.certificates {
        let key = (c.namespace.clone(), c.name.clone());
        if !out.certificates.contains_key(&key) {
            out.delete.push(key);
        }
    }
    for (tenant, parts) in policies {
        out.policies
            .insert(policy_name(&tenant), parts.policy(&tenant));
    }
    out.injector_tenants = injector_map(&injector);
    out
}

#[allow(clippy::too_many_arguments)]
fn certificate(
    namespace: &str,
    service: &str,
    tenant: &str,
    ous: &[String],
    organizations: &[String],
    tenant_id: &str,
    template: &crate::resources::CertificateTemplate,
    issuer: &IssuerRef,
    source: &Key,
) -> Json {
    let name = certificate_name(service);
    let mut subject = json!({ "organizationalUnits": ous });
    if !organizations.is_empty() {
        subject["organizations"] = json!(organizations);
    }
    let mut spec = json!({
        "secretName": name,
        "commonName": service,
        "subject": subject,
        "uris": [tenant_uri(tenant_id)],
        "usages": USAGES,
        "privateKey": { "algorithm": "ECDSA", "size": 256, "rotationPolicy": "Always" },
        "issuerRef": issuer_json(issuer),
        "secretTemplate": { "labels": { TENANT_LABEL: tenant, MANAGED_BY: MANAGER } },
    });
    if let Some(duration) = &template.duration {
        spec["duration"] = json!(duration);
    }
    if let Some(renew) = &template.renew_before {
        spec["renewBefore"] = json!(renew);
    }
    json!({
        "apiVersion": "cert-manager.io/v1",
        "kind": "Certificate",
        "metadata": {
            "name": name,
            "namespace": namespace,
            "labels": {
                MANAGED_BY: MANAGER,
                TENANT_LABEL: tenant,
                SOURCE_LABEL: format!("{}.{}", source.namespace, source.name),
            },
        },
        "spec": spec,
    })
}

fn issuer_json(issuer: &IssuerRef) -> Json {
    json!({
        "name": issuer.name,
        "kind": issuer.kind.clone().unwrap_or_else(|| "ClusterIssuer".into()),
        "group": issuer.group.clone().unwrap_or_else(|| "cert-manager.io".into()),
    })
}

/// A CertificateRequestPolicy name for a tenant: lower case, only DNS-label characters.
pub fn policy_name(tenant: &str) -> String {
    let cleaned: String = tenant
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '-' || c == '.' {
                c.to_ascii_lowercase()
            } else {
                '-'
            }
        })
        .collect();
    format!(
        "openkcm-tenant-{}",
        cleaned.trim_matches(|c| c == '-' || c == '.')
    )
}

struct PolicyParts {
    issuer: IssuerRef,
    ous: Vec<String>,
    organizations: Vec<String>,
    uri: String,
    namespaces: BTreeSet<String>,
}

impl PolicyParts {
    /// Approves a request from the tenant's namespaces only, for exactly the tenant's OU and
    /// tenant URI, for client authentication.
    fn policy(&self, tenant: &str) -> Json {
        let mut subject = json!({
            "organizationalUnits": { "values": self.ous, "required": true },
        });
        if !self.organizations.is_empty() {
            subject["organizations"] = json!({ "values": self.organizations });
        }
        json!({
            "apiVersion": "policy.cert-manager.io/v1alpha1",
            "kind": "CertificateRequestPolicy",
            "metadata": {
                "name": policy_name(tenant),
                "labels": { MANAGED_BY: MANAGER, TENANT_LABEL: tenant },
            },
            "spec": {
                "allowed": {
                    "commonName": { "value": "*" },
                    "subject": subject,
                    "uris": { "values": [self.uri], "required": true },
                    "usages": USAGES,
                },
                "selector": {
                    "issuerRef": issuer_json(&self.issuer),
                    "namespace": { "matchNames": self.namespaces },
                },
            },
        })
    }
}

/// The injector's tenant map: per namespace the default Secret (its first service's), the
/// tenant, and every service's Secret.
fn injector_map(map: &BTreeMap<String, (String, BTreeMap<String, String>)>) -> String {
    let mut out = String::from(
        "# written by openkcm controller from TenantCertificate resources; do not edit\n",
    );
    if map.is_empty() {
        out.push_str("tenants: {}\n");
        return out;
    }
    out.push_str("tenants:\n");
    for (namespace, (tenant, services)) in map {
        let default = services.values().next().cloned().unwrap_or_default();
        let services: Vec<String> = services
            .iter()
            .map(|(s, secret)| format!("{s}: {secret}"))
            .collect();
        out.push_str(&format!(
            "  {namespace}: {{ secret: {default}, tenant: {}, services: {{ {} }} }}\n",
            serde_json::to_string(tenant).unwrap_or_default(),
            services.join(", ")
        ));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::resources::{CertificateTemplate, TemplateSubject};

    fn issuer() -> IssuerRef {
        IssuerRef {
            name: "platform-mesh-ca".into(),
            kind: Some("ClusterIssuer".into()),
            group: None,
        }
    }

    fn users_resource() -> Resource {
        Resource {
            key: Key {
                namespace: "openkcm-system".into(),
                name: "tenant-certificates".into(),
            },
            generation: 1,
            created: "2026-01-01T00:00:00Z".into(),
            tenants: vec![CertificateTenant {
                name: "tenant-a".into(),
                services: vec![
                    "mongodb-cluster-tenant-a".into(),
                    "redis-cluster-tenant-a".into(),
                ],
                namespaces: None,
                certificate_template: Some(CertificateTemplate {
                    subject: Some(TemplateSubject {
                        organizational_unit: vec!["tenant-a".into()],
                        organization: vec![],
                    }),
                    extensions: Some([("tenantId".to_string(), "tenant-a".to_string())].into()),
                    ..Default::default()
                }),
            }],
            issuer: None,
        }
    }

    fn ns(name: &str, id: Option<&str>) -> TenantNamespace {
        TenantNamespace {
            name: name.into(),
            tenant_id: id.map(str::to_owned),
        }
    }

    #[test]
    fn each_service_gets_a_certificate_in_its_namespace_with_the_tenant_subject() {
        let world = World {
            namespaces: vec![ns("tenant-a", None), ns("tenant-b", Some("tenant-b"))],
            services: [
                (
                    "tenant-a".to_string(),
                    "mongodb-cluster-tenant-a".to_string(),
                ),
                ("tenant-a".to_string(), "redis-cluster-tenant-a".to_string()),
            ]
            .into(),
            certificates: vec![],
        };
        let plan = plan(&[users_resource()], &world, &issuer());
        assert_eq!(plan.certificates.len(), 2);
        let cert = &plan.certificates[&(
            "tenant-a".into(),
            "openkcm-kmip-mongodb-cluster-tenant-a".into(),
        )];
        assert_eq!(
            cert["spec"]["subject"]["organizationalUnits"],
            json!(["tenant-a"])
        );
        assert_eq!(
            cert["spec"]["uris"],
            json!(["urn:platform-mesh:tenant:tenant-a"])
        );
        assert_eq!(cert["spec"]["issuerRef"]["name"], "platform-mesh-ca");
        let policy = &plan.policies["openkcm-tenant-tenant-a"];
        assert_eq!(
            policy["spec"]["selector"]["namespace"]["matchNames"],
            json!(["tenant-a"])
        );
        assert!(plan.injector_tenants.contains(
            "tenant-a: { secret: openkcm-kmip-mongodb-cluster-tenant-a, tenant: \"tenant-a\""
        ));
        let status = &plan.statuses[&users_resource().key];
        assert_eq!(status["certificatesReady"], "0/2");
    }

    #[test]
    fn a_service_in_a_namespace_labelled_for_another_tenant_gets_nothing() {
        let world = World {
            namespaces: vec![ns("tenant-b", Some("tenant-b"))],
            services: [(
                "tenant-b".to_string(),
                "mongodb-cluster-tenant-a".to_string(),
            )]
            .into(),
            certificates: vec![],
        };
        let plan = plan(&[users_resource()], &world, &issuer());
        assert!(plan.certificates.is_empty());
        let status = &plan.statuses[&users_resource().key];
        assert_eq!(status["tenants"][0]["certificatesReady"], "0/2");
    }

    #[test]
    fn a_service_name_in_two_unlabelled_namespaces_is_not_issued() {
        let world = World {
            namespaces: vec![ns("tenant-a", None), ns("intruder", None)],
            services: [
                (
                    "tenant-a".to_string(),
                    "mongodb-cluster-tenant-a".to_string(),
                ),
                (
                    "intruder".to_string(),
                    "mongodb-cluster-tenant-a".to_string(),
                ),
            ]
            .into(),
            certificates: vec![],
        };
        let plan = plan(&[users_resource()], &world, &issuer());
        assert!(plan.certificates.is_empty());
        let message = plan.statuses[&users_resource().key]["tenants"][0]["services"][0]["message"]
            .as_str()
            .unwrap()
            .to_owned();
        assert!(message.contains("several tenant namespaces"), "{message}");
    }

    #[test]
    fn an_owned_certificate_no_longer_wanted_is_deleted_and_ready_ones_counted() {
        let world = World {
            namespaces: vec![ns("tenant-a", None)],
            services: [(
                "tenant-a".to_string(),
                "mongodb-cluster-tenant-a".to_string(),
            )]
            .into(),
            certificates: vec![
                ExistingCertificate {
                    namespace: "tenant-a".into(),
                    name: "openkcm-kmip-mongodb-cluster-tenant-a".into(),
                    ready: true,
                    not_after: Some("2027-01-01T00:00:00Z".into()),
                    not_before: Some("2026-12-01T00:00:00Z".into()),
                    message: None,
                },
                ExistingCertificate {
                    namespace: "tenant-a".into(),
                    name: "openkcm-kmip-gone".into(),
                    ready: true,
                    not_after: None,
                    not_before: None,
                    message: None,
                },
            ],
        };
        let plan = plan(&[users_resource()], &world, &issuer());
        assert_eq!(
            plan.delete,
            vec![("tenant-a".into(), "openkcm-kmip-gone".into())]
        );
        let tenant = &plan.statuses[&users_resource().key]["tenants"][0];
        assert_eq!(tenant["certificatesReady"], "1/2");
        assert_eq!(tenant["notAfter"], "2027-01-01T00:00:00Z");
        assert_eq!(tenant["lastRenewal"], "2026-12-01T00:00:00Z");
    }
}
