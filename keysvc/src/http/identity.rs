//! Who is on the other end of an mTLS connection, and whether that is a gateway allowed to
//! speak for tenants.

pub use tlsmaterial::{IdentityError, PeerIdentity};

/// The gateway identities whose tenant headers keysvc trusts.
///
/// Matching rule: an entry matches a certificate when it equals one of the certificate's
/// SAN URIs, exactly. Subject names and DNS names never match: they are what whoever
/// requests a certificate writes into the request, so a tenant certificate from a shared CA
/// could carry the gateway's CN (issue 17). The gateway→keysvc hop also has its own CA
/// (docs/security.md); the URI is the second lock. No wildcards, no prefixes.
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
            .find(|allowed| peer.san_uri.iter().any(|u| u == *allowed))
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
    fn the_allow_list_matches_san_uris_exactly_and_nothing_else() {
        const GATEWAY: &str = "spiffe://cluster.local/ns/openkcm-system/sa/gateway";
        let list = GatewayAllowList::new([GATEWAY]);
        assert!(list.permits(&peer(&[], &[GATEWAY], &[])).is_some());
        for intruder in [
            peer(
                &[],
                &["spiffe://cluster.local/ns/openkcm-system/sa/gateway2"],
                &[],
            ),
            // The gateway's URI as a CN or a DNS name: names a requester chooses.
            peer(&[GATEWAY], &[], &[GATEWAY]),
            peer(
                &[],
                &["SPIFFE://cluster.local/ns/openkcm-system/sa/gateway"],
                &[],
            ),
            peer(&[], &[&format!("{GATEWAY} ")], &[]),
            PeerIdentity::default(),
        ] {
            assert_eq!(list.permits(&intruder), None, "{intruder:?}");
        }
    }
}
