//! The AdmissionReview v1 wire format (`admission.k8s.io/v1`): the request fields the
//! injector reads, and the response it writes.

use serde::{Deserialize, Serialize};
use serde_json::Value;

/// The only AdmissionReview version served; the webhook configuration must list just this
/// one in `admissionReviewVersions`.
pub const API_VERSION: &str = "admission.k8s.io/v1";
const KIND: &str = "AdmissionReview";

/// Why a request body is not an AdmissionReview the injector can answer.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ReviewError {
    #[error("the body is not an AdmissionReview: {0}")]
    Syntax(String),
    #[error("apiVersion {0:?} is not served; configure admissionReviewVersions: [v1]")]
    Version(String),
    #[error("kind {0:?} is not AdmissionReview")]
    Kind(String),
    #[error("the AdmissionReview has no request")]
    NoRequest,
}

/// An AdmissionReview as the API server sends it; the request is read once the version is
/// known to be v1.
#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "camelCase")]
struct AdmissionReviewIn {
    api_version: String,
    kind: String,
    #[serde(default)]
    request: Option<Value>,
}

/// The request of an AdmissionReview (the fields the injector uses).
#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct AdmissionRequest {
    pub uid: String,
    pub kind: GroupVersionKind,
    pub resource: GroupVersionResource,
    #[serde(default)]
    pub sub_resource: Option<String>,
    pub operation: String,
    #[serde(default)]
    pub namespace: Option<String>,
    #[serde(default)]
    pub name: Option<String>,
    /// The object being admitted: for a Pod CREATE, the whole Pod.
    #[serde(default)]
    pub object: Option<Value>,
    #[serde(default)]
    pub dry_run: Option<bool>,
}

#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
pub struct GroupVersionKind {
    #[serde(default)]
    pub group: String,
    pub version: String,
    pub kind: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
pub struct GroupVersionResource {
    #[serde(default)]
    pub group: String,
    pub version: String,
    pub resource: String,
}

/// Reads an AdmissionReview v1 with a request.
pub fn parse_review(body: &[u8]) -> Result<AdmissionRequest, ReviewError> {
    let review: AdmissionReviewIn =
        serde_json::from_slice(body).map_err(|e| ReviewError::Syntax(e.to_string()))?;
    if review.api_version != API_VERSION {
        return Err(ReviewError::Version(review.api_version));
    }
    if review.kind != KIND {
        return Err(ReviewError::Kind(review.kind));
    }
    let request = review.request.ok_or(ReviewError::NoRequest)?;
    AdmissionRequest::deserialize(request).map_err(|e| ReviewError::Syntax(format!("request: {e}")))
}

/// The answer to one request.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct AdmissionResponse {
    pub uid: String,
    pub allowed: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub patch_type: Option<&'static str>,
    /// The JSONPatch, base64 (standard alphabet, padded), as the API expects.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub patch: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub status: Option<Status>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub warnings: Vec<String>,
}

/// A `metav1.Status` for a denial: the code and message `kubectl` shows the pod author.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Status {
    pub code: u16,
    pub message: String,
}

impl AdmissionResponse {
    /// Admitted unchanged.
    pub fn allow(uid: &str) -> Self {
        Self {
            uid: uid.to_owned(),
            allowed: true,
            patch_type: None,
            patch: None,
            status: None,
            warnings: Vec::new(),
        }
    }

    /// Admitted with a JSONPatch (the JSON text of the operations).
    pub fn patched(uid: &str, patch_json: &[u8]) -> Self {
        use base64::Engine as _;
        Self {
            patch_type: Some("JSONPatch"),
            patch: Some(base64::engine::general_purpose::STANDARD.encode(patch_json)),
            ..Self::allow(uid)
        }
    }

    /// Refused, with an HTTP-style code and a message for the pod author.
    pub fn deny(uid: &str, code: u16, message: String) -> Self {
        Self {
            allowed: false,
            status: Some(Status { code, message }),
            ..Self::allow(uid)
        }
    }

    pub fn with_warning(mut self, warning: String) -> Self {
        self.warnings.push(warning);
        self
    }

    /// The whole AdmissionReview that carries this response.
    pub fn into_review(self) -> Value {
        serde_json::json!({
            "apiVersion": API_VERSION,
            "kind": KIND,
            "response": self,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_review_without_request_or_of_another_version_is_refused() {
        let v1beta1 =
            br#"{"apiVersion":"admission.k8s.io/v1beta1","kind":"AdmissionReview","request":{}}"#;
        assert!(matches!(
            parse_review(v1beta1),
            Err(ReviewError::Version(_))
        ));
        let empty = br#"{"apiVersion":"admission.k8s.io/v1","kind":"AdmissionReview"}"#;
        assert!(matches!(parse_review(empty), Err(ReviewError::NoRequest)));
        let other = br#"{"apiVersion":"admission.k8s.io/v1","kind":"Pod"}"#;
        assert!(matches!(parse_review(other), Err(ReviewError::Kind(_))));
        assert!(matches!(
            parse_review(b"\xff\x00garbage"),
            Err(ReviewError::Syntax(_))
        ));
    }

    #[test]
    fn responses_carry_only_the_fields_set() {
        let allow = serde_json::to_value(AdmissionResponse::allow("u-1")).unwrap();
        assert_eq!(allow, serde_json::json!({"uid": "u-1", "allowed": true}));
        let deny = AdmissionResponse::deny("u-2", 400, "no".into()).into_review();
        assert_eq!(deny["apiVersion"], API_VERSION);
        assert_eq!(deny["response"]["status"]["code"], 400);
        assert_eq!(deny["response"]["allowed"], false);
        let patched = serde_json::to_value(AdmissionResponse::patched("u-3", b"[]")).unwrap();
        assert_eq!(patched["patchType"], "JSONPatch");
        assert_eq!(patched["patch"], "W10=");
    }
}
