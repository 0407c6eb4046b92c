//! The kinds the controller reads and writes: our three `platform-mesh.io/v1` resources
//! (schemas in manifests/base/crds/), and cert-manager's Certificate and approver-policy's
//! CertificateRequestPolicy, handled as dynamic objects (no cert-manager crate needed).

use std::collections::BTreeMap;

use kube::api::{ApiResource, GroupVersionKind};
use kube::CustomResource;
use serde::{Deserialize, Serialize};
use serde_json::Value as Json;

/// `platform-mesh.io/v1` TenantRouting: the spec is kept as the API server stored it and
/// validated by the gateway's rule loader (crate::routing).
#[derive(CustomResource, Deserialize, Serialize, Clone, Debug, PartialEq)]
#[kube(
    group = "platform-mesh.io",
    version = "v1",
    kind = "TenantRouting",
    namespaced,
    schema = "disabled",
    status = "Json"
)]
pub struct TenantRoutingSpec {
    #[serde(flatten)]
    pub fields: serde_json::Map<String, Json>,
}

/// `platform-mesh.io/v1` TenantCertificate.
#[derive(CustomResource, Deserialize, Serialize, Clone, Debug, PartialEq)]
#[kube(
    group = "platform-mesh.io",
    version = "v1",
    kind = "TenantCertificate",
    namespaced,
    schema = "disabled",
    status = "Json"
)]
#[serde(rename_all = "camelCase")]
pub struct TenantCertificateSpec {
    #[serde(default)]
    pub tenants: Vec<CertificateTenant>,
    #[serde(default)]
    pub issuer_ref: Option<IssuerRef>,
}

/// One tenant of a TenantCertificate.
#[derive(Deserialize, Serialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct CertificateTenant {
    pub name: String,
    #[serde(default)]
    pub services: Vec<String>,
    #[serde(default)]
    pub namespaces: Option<Vec<String>>,
    #[serde(default)]
    pub certificate_template: Option<CertificateTemplate>,
}

#[derive(Deserialize, Serialize, Clone, Debug, PartialEq, Default)]
#[serde(rename_all = "camelCase")]
pub struct CertificateTemplate {
    #[serde(default)]
    pub subject: Option<TemplateSubject>,
    #[serde(default)]
    pub extensions: Option<BTreeMap<String, String>>,
    #[serde(default)]
    pub duration: Option<String>,
    #[serde(default)]
    pub renew_before: Option<String>,
}

#[derive(Deserialize, Serialize, Clone, Debug, PartialEq, Default)]
#[serde(rename_all = "camelCase")]
pub struct TemplateSubject {
    #[serde(default)]
    pub organizational_unit: Vec<String>,
    #[serde(default)]
    pub organization: Vec<String>,
}

/// A cert-manager issuer reference.
#[derive(Deserialize, Serialize, Clone, Debug, PartialEq, Eq)]
pub struct IssuerRef {
    pub name: String,
    #[serde(default)]
    pub kind: Option<String>,
    #[serde(default)]
    pub group: Option<String>,
}

/// `platform-mesh.io/v1` ServiceDiscovery.
#[derive(CustomResource, Deserialize, Serialize, Clone, Debug, PartialEq)]
#[kube(
    group = "platform-mesh.io",
    version = "v1",
    kind = "ServiceDiscovery",
    namespaced,
    schema = "disabled",
    status = "Json"
)]
#[serde(rename_all = "camelCase")]
pub struct ServiceDiscoverySpec {
    pub service_name: String,
    #[serde(default)]
    pub namespace: Option<String>,
    #[serde(default)]
    pub endpoints: Vec<DiscoveryEndpoint>,
}

#[derive(Deserialize, Serialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct DiscoveryEndpoint {
    pub protocol: String,
    pub port: u16,
    #[serde(default)]
    pub health_check: Option<String>,
    #[serde(default)]
    pub host: Option<String>,
}

/// cert-manager's `Certificate`.
pub fn certificate_resource() -> ApiResource {
    ApiResource::from_gvk_with_plural(
        &GroupVersionKind::gvk("cert-manager.io", "v1", "Certificate"),
        "certificates",
    )
}

/// cert-manager approver-policy's `CertificateRequestPolicy` (cluster-scoped).
pub fn request_policy_resource() -> ApiResource {
    ApiResource::from_gvk_with_plural(
        &GroupVersionKind::gvk(
            "policy.cert-manager.io",
            "v1alpha1",
            "CertificateRequestPolicy",
        ),
        "certificaterequestpolicies",
    )
}

/// The label on every object the controller owns, with the value [`MANAGER`].
pub const MANAGED_BY: &str = "app.kubernetes.io/managed-by";
/// Who writes: the label value and the server-side-apply field manager.
pub const MANAGER: &str = "openkcm-controller";
/// Label: the tenant an owned object belongs to.
pub const TENANT_LABEL: &str = "platform-mesh.io/tenant-id";
/// Label: the TenantCertificate (`namespace.name`) an owned object comes from.
pub const SOURCE_LABEL: &str = "platform-mesh.io/tenantcertificate";
/// Namespace label that marks tenant namespaces (the users' NetworkPolicy selects on it).
pub const TENANT_NAMESPACE_LABEL: &str = "platform-mesh.io/tenant";
