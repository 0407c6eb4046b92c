//! The facts of a certificate, read one way for every component: who is on the other end
//! of a verified mTLS connection (the names the gateway's TenantRouting rules and keysvc's
//! gateway allow-list match on), and the serial and notAfter that logs and metrics report.
//!
//! The TLS layer has already verified the chain; this module only reads the leaf. It never
//! panics on bad input: a certificate is peer-controlled bytes.

use std::fmt;

use x509_cert::der::asn1::{
    Any, BmpString, Ia5StringRef, ObjectIdentifier, PrintableStringRef, Utf8StringRef,
};
use x509_cert::der::{Decode, DecodePem, Tag, Tagged};
use x509_cert::ext::pkix::name::GeneralName;
use x509_cert::ext::pkix::SubjectAltName;
use x509_cert::name::Name;
use x509_cert::Certificate;

/// id-at-commonName (RFC 4519).
const COMMON_NAME: ObjectIdentifier = ObjectIdentifier::new_unwrap("2.5.4.3");
/// id-at-organizationName (RFC 4519).
const ORGANIZATION: ObjectIdentifier = ObjectIdentifier::new_unwrap("2.5.4.10");
/// id-at-organizationalUnitName (RFC 4519).
const ORGANIZATIONAL_UNIT: ObjectIdentifier = ObjectIdentifier::new_unwrap("2.5.4.11");

/// The identity a verified peer certificate carries.
///
/// Subject attributes are collected from every RDN, multi-valued ones included, in
/// certificate order. Values in UTF8String, PrintableString, IA5String and BMPString are
/// read; a value in another string type (or not valid in its own) is left out, so a rule
/// can never match it: unreadable names fail closed.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct PeerIdentity {
    /// Subject commonName values.
    pub subject_cn: Vec<String>,
    /// Subject organizationName values.
    pub subject_o: Vec<String>,
    /// Subject organizationalUnitName values.
    pub subject_ou: Vec<String>,
    /// subjectAltName dNSName entries.
    pub san_dns: Vec<String>,
    /// subjectAltName uniformResourceIdentifier entries (SPIFFE ids).
    pub san_uri: Vec<String>,
    /// The issuer DN as an RFC 4514 string, most significant RDN last (`CN=ca,O=Example`).
    pub issuer: String,
    /// The serial number in lowercase hex, without the sign-padding zero byte.
    pub serial: String,
    /// End of validity, Unix seconds.
    pub not_after: i64,
    /// The subject DN as an RFC 4514 string.
    pub subject: String,
}

/// Why a certificate yields no identity.
///
/// Messages carry their cause; no variant also exposes it as a `source`.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum IdentityError {
    #[error("not a DER X.509 certificate: {0}")]
    Malformed(x509_cert::der::Error),
    #[error("unreadable subjectAltName extension: {0}")]
    SubjectAltName(x509_cert::der::Error),
    #[error("the {0} name cannot be written as an RFC 4514 string")]
    UnprintableName(&'static str),
    #[error("no CERTIFICATE block in the PEM input")]
    NoPemCertificate,
}

impl PeerIdentity {
    /// Reads the identity of a DER certificate (the TLS layer verified it already).
    pub fn from_der(der: &[u8]) -> Result<Self, IdentityError> {
        let cert = Certificate::from_der(der).map_err(IdentityError::Malformed)?;
        Self::from_certificate(&cert)
    }

    /// Reads the identity of the first certificate of a PEM file (the leaf of a chain).
    /// Text around the block (`openssl x509 -text` output, comments) is ignored.
    pub fn from_pem(pem: &[u8]) -> Result<Self, IdentityError> {
        // Not `Certificate::load_pem_chain`: x509-cert 0.2.5 panics on an empty input.
        let block = first_pem_certificate(pem).ok_or(IdentityError::NoPemCertificate)?;
        let cert = Certificate::from_pem(block).map_err(IdentityError::Malformed)?;
        Self::from_certificate(&cert)
    }

    /// Every SAN URI, SAN DNS name and subject Common Name, most specific first.
    pub fn names(&self) -> impl Iterator<Item = &str> {
        self.san_uri
            .iter()
            .chain(&self.san_dns)
            .chain(&self.subject_cn)
            .map(String::as_str)
    }

    fn from_certificate(cert: &Certificate) -> Result<Self, IdentityError> {
        let tbs = &cert.tbs_certificate;
        let mut identity = Self {
            subject_cn: attribute_values(&tbs.subject, COMMON_NAME),
            subject_o: attribute_values(&tbs.subject, ORGANIZATION),
            subject_ou: attribute_values(&tbs.subject, ORGANIZATIONAL_UNIT),
            issuer: rfc4514(&tbs.issuer, "issuer")?,
            serial: serial_hex(tbs.serial_number.as_bytes()),
            not_after: i64::try_from(tbs.validity.not_after.to_unix_duration().as_secs())
                .unwrap_or(i64::MAX),
            subject: rfc4514(&tbs.subject, "subject")?,
            ..Self::default()
        };
        let san = tbs
            .get::<SubjectAltName>()
            .map_err(IdentityError::SubjectAltName)?;
        for name in san.map(|(_critical, san)| san.0).unwrap_or_default() {
            match name {
                GeneralName::DnsName(n) => identity.san_dns.push(n.to_string()),
                GeneralName::UniformResourceIdentifier(u) => identity.san_uri.push(u.to_string()),
                _ => {}
            }
        }
        Ok(identity)
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

/// A name as RFC 4514 text. `to_string` would panic if x509-cert's `Display` failed (it
/// can, when a value does not re-encode); this returns an error instead.
fn rfc4514(name: &Name, which: &'static str) -> Result<String, IdentityError> {
    let mut text = String::new();
    fmt::write(&mut text, format_args!("{name}"))
        .map_err(|_| IdentityError::UnprintableName(which))?;
    Ok(text)
}

/// The first `CERTIFICATE` PEM block, boundaries included.
fn first_pem_certificate(input: &[u8]) -> Option<&[u8]> {
    const BEGIN: &[u8] = b"-----BEGIN CERTIFICATE-----";
    const END: &[u8] = b"-----END CERTIFICATE-----";
    let find = |haystack: &[u8], needle: &[u8]| {
        haystack
            .windows(needle.len())
            .position(|window| window == needle)
    };
    let start = find(input, BEGIN)?;
    let end = start + find(&input[start..], END)? + END.len();
    Some(&input[start..end])
}

/// Every readable value of one attribute type, across all RDNs (multi-valued included).
fn attribute_values(name: &Name, oid: ObjectIdentifier) -> Vec<String> {
    name.0
        .iter()
        .flat_map(|rdn| rdn.0.iter())
        .filter(|atv| atv.oid == oid)
        .filter_map(|atv| directory_string(&atv.value))
        .collect()
}

/// A DirectoryString (RFC 5280) as text. TeletexString and UniversalString are obsolete
/// and not decoded: nobody issues tenant certificates with them.
fn directory_string(value: &Any) -> Option<String> {
    match value.tag() {
        Tag::Utf8String => value
            .decode_as::<Utf8StringRef<'_>>()
            .ok()
            .map(|s| s.to_string()),
        Tag::PrintableString => value
            .decode_as::<PrintableStringRef<'_>>()
            .ok()
            .map(|s| s.to_string()),
        Tag::Ia5String => value
            .decode_as::<Ia5StringRef<'_>>()
            .ok()
            .map(|s| s.to_string()),
        Tag::BmpString => value.decode_as::<BmpString>().ok().map(|s| s.to_string()),
        _ => None,
    }
}

/// Lowercase hex of a serial's content octets, minus the zero byte DER adds to keep a
/// positive number positive (so it reads like `openssl x509 -serial`).
fn serial_hex(bytes: &[u8]) -> String {
    let significant = match bytes {
        [0, rest @ ..] if !rest.is_empty() => rest,
        all => all,
    };
    significant.iter().map(|b| format!("{b:02x}")).collect()
}

#[cfg(test)]
mod tests {
    use std::str::FromStr;

    use pki::{CertSpec, CertificateAuthority};
    use proptest::prelude::*;
    use x509_cert::attr::AttributeTypeAndValue;
    use x509_cert::der::asn1::SetOfVec;
    use x509_cert::der::Encode;
    use x509_cert::name::{RdnSequence, RelativeDistinguishedName};

    use super::*;

    fn ca() -> CertificateAuthority {
        CertificateAuthority::create("platform-mesh-ca").expect("CA")
    }

    fn tenant_cert(ca: &CertificateAuthority) -> Vec<u8> {
        let spec = CertSpec {
            organization: Some("Platform Mesh".into()),
            organizational_units: vec!["tenant-a".into()],
            dns_names: vec!["mongodb.tenant-a.svc".into()],
            uris: vec!["spiffe://mesh/ns/tenant-a/sa/mongodb".into()],
            client: true,
            ..CertSpec::new("mongodb.tenant-a.svc")
        };
        ca.issue(&spec).expect("issue").cert_der
    }

    /// Re-encodes `der` with another subject (no valid signature: identity never checks it).
    fn with_subject(der: &[u8], subject: Name) -> Vec<u8> {
        let mut cert = Certificate::from_der(der).expect("parses");
        cert.tbs_certificate.subject = subject;
        cert.to_der().expect("encodes")
    }

    #[test]
    fn reads_every_field_of_a_real_certificate() {
        let ca = ca();
        let der = tenant_cert(&ca);
        let id = PeerIdentity::from_der(&der).expect("identity");
        assert_eq!(id.subject_cn, ["mongodb.tenant-a.svc"]);
        assert_eq!(id.subject_o, ["Platform Mesh"]);
        assert_eq!(id.subject_ou, ["tenant-a"]);
        assert_eq!(id.san_dns, ["mongodb.tenant-a.svc"]);
        assert_eq!(id.san_uri, ["spiffe://mesh/ns/tenant-a/sa/mongodb"]);
        assert_eq!(id.issuer, "CN=platform-mesh-ca");
        assert_eq!(
            id.subject,
            "CN=mongodb.tenant-a.svc,OU=tenant-a,O=Platform Mesh"
        );
        assert!(!id.serial.is_empty());
        assert!(id
            .serial
            .bytes()
            .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b)));
        let in_a_year = 365 * 24 * 3600;
        let now = i64::try_from(
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .expect("clock")
                .as_secs(),
        )
        .expect("fits");
        assert!((id.not_after - now - in_a_year).abs() < 3600, "{id:?}");
    }

    #[test]
    fn pem_input_gives_the_leaf() {
        let ca = ca();
        let issued = ca
            .issue(&CertSpec {
                organizational_units: vec!["tenant-b".into()],
                client: true,
                ..CertSpec::new("app")
            })
            .expect("issue");
        let chain = format!("subject=CN=app\n{}{}", issued.cert_pem, ca.cert_pem());
        let id = PeerIdentity::from_pem(chain.as_bytes()).expect("identity");
        assert_eq!(id.subject_ou, ["tenant-b"]);
        for nothing in [&b""[..], b"\n", b"\r\n", b"-----BEGIN CERTIFICATE-----"] {
            assert!(matches!(
                PeerIdentity::from_pem(nothing),
                Err(IdentityError::NoPemCertificate)
            ));
        }
        let garbled = "-----BEGIN CERTIFICATE-----\n@@@@\n-----END CERTIFICATE-----\n";
        assert!(matches!(
            PeerIdentity::from_pem(garbled.as_bytes()),
            Err(IdentityError::Malformed(_))
        ));
    }

    #[test]
    fn multi_valued_rdns_and_repeated_attributes_are_all_read() {
        let der = tenant_cert(&ca());
        let subject =
            RdnSequence::from_str("CN=svc+OU=tenant-a+OU=tenant-x,OU=ops,O=Platform Mesh")
                .expect("DN");
        let id = PeerIdentity::from_der(&with_subject(&der, subject)).expect("identity");
        assert_eq!(id.subject_cn, ["svc"]);
        assert_eq!(id.subject_o, ["Platform Mesh"]);
        let mut ous = id.subject_ou.clone();
        ous.sort();
        assert_eq!(ous, ["ops", "tenant-a", "tenant-x"]);
    }

    #[test]
    fn printable_and_bmp_strings_are_read_other_types_are_skipped() {
        let der = tenant_cert(&ca());
        let atv = |oid, tag, bytes: &[u8]| AttributeTypeAndValue {
            oid,
            value: Any::new(tag, bytes).expect("value"),
        };
        let bmp: Vec<u8> = "tenant-ü"
            .encode_utf16()
            .flat_map(u16::to_be_bytes)
            .collect();
        let rdns = [
            atv(COMMON_NAME, Tag::PrintableString, b"printable cn"),
            atv(ORGANIZATIONAL_UNIT, Tag::BmpString, &bmp),
            atv(ORGANIZATION, Tag::TeletexString, b"teletex org"),
            // Not valid in its own type: '@' is outside PrintableString.
            atv(ORGANIZATIONAL_UNIT, Tag::PrintableString, b"bad@ou"),
            // Invalid UTF-8 in a UTF8String.
            atv(COMMON_NAME, Tag::Utf8String, &[0xff, 0xfe]),
        ]
        .into_iter()
        .map(|a| RelativeDistinguishedName(SetOfVec::try_from(vec![a]).expect("set")))
        .collect();
        let id = PeerIdentity::from_der(&with_subject(&der, RdnSequence(rdns))).expect("id");
        assert_eq!(id.subject_cn, ["printable cn"]);
        assert_eq!(id.subject_ou, ["tenant-ü"]);
        assert!(id.subject_o.is_empty());
    }

    #[test]
    fn missing_fields_give_empty_lists() {
        let der = tenant_cert(&ca());
        let mut cert = Certificate::from_der(&der).expect("parses");
        cert.tbs_certificate.subject = RdnSequence::default();
        cert.tbs_certificate.extensions = None;
        let id = PeerIdentity::from_der(&cert.to_der().expect("encodes")).expect("identity");
        assert!(id.subject_cn.is_empty() && id.subject_o.is_empty() && id.subject_ou.is_empty());
        assert!(id.san_dns.is_empty() && id.san_uri.is_empty());
        assert_eq!(id.subject, "");
        assert_eq!(id.issuer, "CN=platform-mesh-ca");
    }

    #[test]
    fn serials_read_like_openssl() {
        assert_eq!(serial_hex(&[0x00, 0x8f, 0x01]), "8f01");
        assert_eq!(serial_hex(&[0x7f, 0x00]), "7f00");
        assert_eq!(serial_hex(&[0x00]), "00");
        assert_eq!(serial_hex(&[]), "");
    }

    #[test]
    fn every_truncation_and_byte_flip_of_a_real_certificate_is_handled() {
        let der = tenant_cert(&ca());
        for len in 0..der.len() {
            assert!(PeerIdentity::from_der(&der[..len]).is_err(), "len {len}");
        }
        let mut extended = der.clone();
        extended.push(0);
        assert!(PeerIdentity::from_der(&extended).is_err());
        for i in 0..der.len() {
            for flip in [0x01, 0x80, 0xff] {
                let mut bad = der.clone();
                bad[i] ^= flip;
                let _ = PeerIdentity::from_der(&bad);
            }
        }
    }

    proptest! {
        #[test]
        fn random_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..2048)) {
            let _ = PeerIdentity::from_der(&bytes);
            let _ = PeerIdentity::from_pem(&bytes);
        }

        #[test]
        fn random_pem_bodies_never_panic(body in "[A-Za-z0-9+/=\n]{0,800}") {
            let pem = format!("-----BEGIN CERTIFICATE-----\n{body}\n-----END CERTIFICATE-----\n");
            let _ = PeerIdentity::from_pem(pem.as_bytes());
        }

        #[test]
        fn a_random_der_header_never_panics(
            body in proptest::collection::vec(any::<u8>(), 0..512),
            len in 0usize..600,
        ) {
            // A SEQUENCE header with a plausible length pushes the parser past the first byte.
            let mut bytes = vec![0x30, 0x82, (len >> 8) as u8, len as u8];
            bytes.extend_from_slice(&body);
            let _ = PeerIdentity::from_der(&bytes);
        }
    }
}
