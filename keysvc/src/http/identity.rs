//! Who is on the other end of an mTLS connection, and whether that is a gateway allowed to
//! speak for tenants.

pub use tlsmaterial::{IdentityError, PeerIdentity};

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
                peer.san_uri.iter().any(|u| u == *allowed)
                    || peer.san_dns.iter().any(|d| d.eq_ignore_ascii_case(allowed))
                    || peer.subject_cn.iter().any(|cn| cn == *allowed)
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
            san_dns: own(dns),
            san_uri: own(uris),
            subject_cn: own(cns),
            ..PeerIdentity::default()
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
        assert_eq!(peer.san_dns, ["gw.openkcm-system.svc"]);
        assert_eq!(peer.san_uri, ["spiffe://cluster.local/sa/gw"]);
        assert_eq!(peer.subject_cn, ["openkcm-gateway"]);
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
