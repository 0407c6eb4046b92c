//! Who is on the other end of an mTLS connection, and whether that is a gateway allowed to
//! speak for tenants.

use std::fmt;

use x509_cert::der::asn1::{Any, Ia5String, ObjectIdentifier};
use x509_cert::der::{Decode, Tag, Tagged};
use x509_cert::ext::pkix::name::GeneralName;
use x509_cert::ext::pkix::SubjectAltName;
use x509_cert::Certificate;

/// id-at-commonName (RFC 4519).
const COMMON_NAME: ObjectIdentifier = ObjectIdentifier::new_unwrap("2.5.4.3");

/// The identities a verified client certificate carries: its SAN DNS names, SAN URIs
/// (SPIFFE IDs) and subject Common Names.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct PeerIdentity {
    pub dns_names: Vec<String>,
    pub uris: Vec<String>,
    pub common_names: Vec<String>,
}

#[derive(Debug, thiserror::Error)]
#[error("client certificate does not parse: {0}")]
pub struct BadCertificate(String);

impl PeerIdentity {
    /// Reads the identities of a DER certificate (already verified by the TLS layer).
    pub fn from_der(der: &[u8]) -> Result<Self, BadCertificate> {
        let cert = Certificate::from_der(der).map_err(|e| BadCertificate(e.to_string()))?;
        let mut identity = Self::default();
        for rdn in &cert.tbs_certificate.subject.0 {
            for atv in rdn.0.iter().filter(|atv| atv.oid == COMMON_NAME) {
                if let Some(cn) = text_value(&atv.value) {
                    identity.common_names.push(cn);
                }
            }
        }
        let san = cert
            .tbs_certificate
            .get::<SubjectAltName>()
            .map_err(|e| BadCertificate(e.to_string()))?;
        for name in san.map(|(_, san)| san.0).unwrap_or_default() {
            match name {
                GeneralName::DnsName(n) => identity.dns_names.push(ia5(n)),
                GeneralName::UniformResourceIdentifier(u) => identity.uris.push(ia5(u)),
                _ => {}
            }
        }
        Ok(identity)
    }

    /// Every identity, for matching and for logs.
    pub fn names(&self) -> impl Iterator<Item = &str> {
        self.uris
            .iter()
            .chain(&self.dns_names)
            .chain(&self.common_names)
            .map(String::as_str)
    }
}

impl fmt::Display for PeerIdentity {
    /// The most specific identity: a SPIFFE/URI SAN, else a DNS SAN, else the CN.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.names().next() {
            Some(name) => f.write_str(name),
            None => f.write_str("<no identity>"),
        }
    }
}

fn ia5(s: Ia5String) -> String {
    s.to_string()
}

/// A DirectoryString as text: UTF8String, PrintableString and IA5String (all UTF-8
/// compatible) are read; the obsolete Teletex/BMP/Universal forms are not identities we
/// match on.
fn text_value(value: &Any) -> Option<String> {
    match value.tag() {
        Tag::Utf8String | Tag::PrintableString | Tag::Ia5String => {
            std::str::from_utf8(value.value()).ok().map(str::to_owned)
        }
        _ => None,
    }
}

/// The gateway identities whose tenant headers keysvc trusts.
///
/// Matching rule: an entry matches a certificate when it equals one of the certificate's
/// SAN URIs (exactly), SAN DNS names (ignoring ASCII case, as DNS does) or subject Common
/// Names (exactly). No wildcards, no prefixes: the list names gateways, not patterns.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct GatewayAllowList {
    identities: Vec<String>,
}

impl GatewayAllowList {
    pub fn new(identities: impl IntoIterator<Item = impl Into<String>>) -> Self {
        Self {
            identities: identities.into_iter().map(Into::into).collect(),
        }
    }

    pub fn identities(&self) -> &[String] {
        &self.identities
    }

    /// The allow-list entry the peer matches, if any.
    pub fn permits(&self, peer: &PeerIdentity) -> Option<&str> {
        self.identities
            .iter()
            .find(|allowed| {
                peer.uris.iter().any(|u| u == *allowed)
                    || peer
                        .dns_names
                        .iter()
                        .any(|d| d.eq_ignore_ascii_case(allowed))
                    || peer.common_names.iter().any(|cn| cn == *allowed)
            })
            .map(String::as_str)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn peer(dns: &[&str], uris: &[&str], cns: &[&str]) -> PeerIdentity {
        let own = |v: &[&str]| v.iter().map(|s| s.to_string()).collect();
        PeerIdentity {
            dns_names: own(dns),
            uris: own(uris),
            common_names: own(cns),
        }
    }

    #[test]
    fn identities_are_read_from_a_real_certificate() {
        let key = rcgen::KeyPair::generate().expect("key");
        let mut params = rcgen::CertificateParams::new(vec!["gw.openkcm-system.svc".to_owned()])
            .expect("params");
        params.subject_alt_names.push(rcgen::SanType::URI(
            rcgen::Ia5String::try_from("spiffe://cluster.local/sa/gw").expect("uri"),
        ));
        params
            .distinguished_name
            .push(rcgen::DnType::CommonName, "openkcm-gateway");
        let cert = params.self_signed(&key).expect("certificate");
        let peer = PeerIdentity::from_der(cert.der()).expect("parses");
        assert_eq!(peer.dns_names, ["gw.openkcm-system.svc"]);
        assert_eq!(peer.uris, ["spiffe://cluster.local/sa/gw"]);
        assert_eq!(peer.common_names, ["openkcm-gateway"]);
        assert_eq!(peer.to_string(), "spiffe://cluster.local/sa/gw");
        assert!(PeerIdentity::from_der(b"not a certificate").is_err());
    }

    #[test]
    fn the_allow_list_matches_san_dns_uri_or_cn_exactly() {
        let list = GatewayAllowList::new([
            "spiffe://cluster.local/ns/openkcm-system/sa/gateway",
            "gateway.openkcm-system.svc",
            "openkcm-gateway",
        ]);
        assert!(list
            .permits(&peer(
                &[],
                &["spiffe://cluster.local/ns/openkcm-system/sa/gateway"],
                &[]
            ))
            .is_some());
        assert!(list
            .permits(&peer(&["Gateway.OpenKCM-System.svc"], &[], &[]))
            .is_some());
        assert!(list
            .permits(&peer(&[], &[], &["openkcm-gateway"]))
            .is_some());
        for intruder in [
            peer(
                &[],
                &["spiffe://cluster.local/ns/openkcm-system/sa/gateway2"],
                &[],
            ),
            peer(&["evil.gateway.openkcm-system.svc"], &[], &[]),
            peer(&[], &[], &["OpenKCM-Gateway"]),
            peer(&[], &[], &["openkcm-gateway "]),
            PeerIdentity::default(),
        ] {
            assert_eq!(list.permits(&intruder), None, "{intruder:?}");
        }
    }
}
