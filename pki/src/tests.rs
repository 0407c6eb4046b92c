//! Issued certificates checked the way their users check them: rustls/webpki verification
//! against the CA, and the gateway's own reading of the identity.

use std::fs;
use std::net::{IpAddr, Ipv4Addr};
use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::sync::Arc;

use gateway::identity::PeerIdentity;
use rustls::client::danger::ServerCertVerifier;
use rustls::client::WebPkiServerVerifier;
use rustls::crypto::CryptoProvider;
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::server::WebPkiClientVerifier;
use rustls::{CertificateError, RootCertStore};
use time::{Duration, OffsetDateTime};
use x509_cert::der::oid::ObjectIdentifier;
use x509_cert::der::Decode;
use x509_cert::ext::pkix::{BasicConstraints, ExtendedKeyUsage};
use x509_cert::Certificate;

use crate::{CertSpec, CertificateAuthority, PkiError, CA_CERT_FILE, CA_KEY_FILE};

const SERVER_AUTH: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.3.6.1.5.5.7.3.1");
const CLIENT_AUTH: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.3.6.1.5.5.7.3.2");
const BASIC_CONSTRAINTS: ObjectIdentifier = ObjectIdentifier::new_unwrap("2.5.29.19");

fn provider() -> Arc<CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

fn roots(ca_der: &[u8]) -> Arc<RootCertStore> {
    let mut roots = RootCertStore::empty();
    roots
        .add(CertificateDer::from(ca_der.to_vec()))
        .expect("CA is a valid trust anchor");
    Arc::new(roots)
}

fn verify_client(ca_der: &[u8], leaf: &[u8]) -> Result<(), rustls::Error> {
    let verifier = WebPkiClientVerifier::builder_with_provider(roots(ca_der), provider())
        .build()
        .expect("verifier");
    verifier
        .verify_client_cert(&CertificateDer::from(leaf.to_vec()), &[], UnixTime::now())
        .map(|_| ())
}

fn verify_server(ca_der: &[u8], leaf: &[u8], name: &str) -> Result<(), rustls::Error> {
    let verifier = WebPkiServerVerifier::builder_with_provider(roots(ca_der), provider())
        .build()
        .expect("verifier");
    let name = ServerName::try_from(name.to_owned()).expect("server name");
    verifier
        .verify_server_cert(
            &CertificateDer::from(leaf.to_vec()),
            &[],
            &name,
            &[],
            UnixTime::now(),
        )
        .map(|_| ())
}

fn extended_key_usages(der: &[u8]) -> Vec<ObjectIdentifier> {
    let cert = Certificate::from_der(der).expect("parses");
    match cert.tbs_certificate.get::<ExtendedKeyUsage>() {
        Ok(Some((_, eku))) => eku.0,
        other => panic!("no extended key usage: {other:?}"),
    }
}

fn has_extension(der: &[u8], oid: ObjectIdentifier) -> bool {
    let cert = Certificate::from_der(der).expect("parses");
    cert.tbs_certificate
        .extensions
        .unwrap_or_default()
        .iter()
        .any(|e| e.extn_id == oid)
}

fn mode(path: &Path) -> u32 {
    fs::metadata(path).expect("metadata").permissions().mode() & 0o777
}

fn client(cn: &str) -> CertSpec {
    CertSpec {
        client: true,
        ..CertSpec::new(cn)
    }
}

#[test]
fn client_certificates_chain_to_the_ca_and_carry_the_requested_names() {
    let ca = CertificateAuthority::create("platform-mesh-ca").expect("CA");
    let spec = CertSpec {
        organization: Some("Platform Mesh".into()),
        organizational_units: vec!["tenant-a".into(), "databases".into()],
        dns_names: vec!["mongodb.tenant-a.svc".into()],
        ip_addresses: vec![IpAddr::V4(Ipv4Addr::LOCALHOST)],
        uris: vec!["spiffe://mesh/ns/tenant-a/sa/mongodb".into()],
        ..client("mongodb.tenant-a.svc")
    };
    let issued = ca.issue(&spec).expect("issue");
    verify_client(ca.cert_der(), &issued.cert_der).expect("chains to the CA");

    let id = PeerIdentity::from_der(&issued.cert_der).expect("identity");
    assert_eq!(id.subject_cn, ["mongodb.tenant-a.svc"]);
    assert_eq!(id.subject_o, ["Platform Mesh"]);
    assert_eq!(id.subject_ou, ["tenant-a", "databases"]);
    assert_eq!(id.san_dns, ["mongodb.tenant-a.svc"]);
    assert_eq!(id.san_uri, ["spiffe://mesh/ns/tenant-a/sa/mongodb"]);
    assert_eq!(id.issuer, "CN=platform-mesh-ca");
    assert_eq!(id.issuer, ca.subject());
    assert_eq!(extended_key_usages(&issued.cert_der), [CLIENT_AUTH]);

    let from_pem = PeerIdentity::from_pem(issued.cert_pem.as_bytes()).expect("PEM");
    assert_eq!(from_pem, id);
}

#[test]
fn a_certificate_from_another_ca_does_not_verify() {
    let ca = CertificateAuthority::create("platform-mesh-ca").expect("CA");
    let impostor = CertificateAuthority::create("platform-mesh-ca").expect("CA");
    let issued = impostor.issue(&client("mallory")).expect("issue");
    let err = verify_client(ca.cert_der(), &issued.cert_der).expect_err("other CA");
    assert!(
        matches!(
            err,
            rustls::Error::InvalidCertificate(CertificateError::BadSignature)
                | rustls::Error::InvalidCertificate(CertificateError::UnknownIssuer)
        ),
        "{err:?}"
    );
}

#[test]
fn server_certificates_verify_for_their_names_only() {
    let ca = CertificateAuthority::create("dev-ca").expect("CA");
    let spec = CertSpec {
        dns_names: vec!["keysvc.openkcm-system.svc".into()],
        ip_addresses: vec![IpAddr::V4(Ipv4Addr::LOCALHOST)],
        server: true,
        ..CertSpec::new("keysvc")
    };
    let issued = ca.issue(&spec).expect("issue");
    verify_server(ca.cert_der(), &issued.cert_der, "keysvc.openkcm-system.svc").expect("DNS");
    verify_server(ca.cert_der(), &issued.cert_der, "127.0.0.1").expect("IP");
    let err = verify_server(ca.cert_der(), &issued.cert_der, "other.openkcm-system.svc")
        .expect_err("wrong name");
    assert!(
        matches!(
            err,
            rustls::Error::InvalidCertificate(
                CertificateError::NotValidForName | CertificateError::NotValidForNameContext { .. }
            )
        ),
        "{err:?}"
    );
}

#[test]
fn extended_key_usage_is_what_was_asked_for() {
    let ca = CertificateAuthority::create("dev-ca").expect("CA");
    let server_only = ca
        .issue(&CertSpec {
            dns_names: vec!["gw.local".into()],
            server: true,
            ..CertSpec::new("gw")
        })
        .expect("issue");
    let client_only = ca
        .issue(&CertSpec {
            dns_names: vec!["gw.local".into()],
            ..client("gw")
        })
        .expect("issue");
    let both = ca
        .issue(&CertSpec {
            dns_names: vec!["gw.local".into()],
            server: true,
            ..client("gw")
        })
        .expect("issue");

    assert_eq!(extended_key_usages(&server_only.cert_der), [SERVER_AUTH]);
    assert_eq!(
        extended_key_usages(&both.cert_der),
        [SERVER_AUTH, CLIENT_AUTH]
    );

    let purpose = |r: Result<(), rustls::Error>| match r {
        Err(rustls::Error::InvalidCertificate(
            CertificateError::InvalidPurpose | CertificateError::InvalidPurposeContext { .. },
        )) => true,
        other => panic!("expected a purpose error, got {other:?}"),
    };
    assert!(purpose(verify_client(ca.cert_der(), &server_only.cert_der)));
    assert!(purpose(verify_server(
        ca.cert_der(),
        &client_only.cert_der,
        "gw.local"
    )));
    verify_client(ca.cert_der(), &both.cert_der).expect("client use");
    verify_server(ca.cert_der(), &both.cert_der, "gw.local").expect("server use");
}

#[test]
fn leaves_carry_no_basic_constraints_and_the_ca_is_a_ca() {
    let ca = CertificateAuthority::create("dev-ca").expect("CA");
    let leaf = ca.issue(&client("app")).expect("issue");
    assert!(!has_extension(&leaf.cert_der, BASIC_CONSTRAINTS));

    let cert = Certificate::from_der(ca.cert_der()).expect("parses");
    let (_, bc) = cert
        .tbs_certificate
        .get::<BasicConstraints>()
        .expect("readable")
        .expect("present");
    assert!(bc.ca);
    assert_eq!(bc.path_len_constraint, Some(0));
}

#[test]
fn an_expired_validity_gives_a_certificate_rustls_rejects_as_expired() {
    let ca = CertificateAuthority::create("dev-ca").expect("CA");
    let now = OffsetDateTime::now_utc();
    let expired = ca
        .issue(&CertSpec {
            validity: (now - Duration::days(10), now - Duration::days(1)),
            ..client("old")
        })
        .expect("issue");
    let err = verify_client(ca.cert_der(), &expired.cert_der).expect_err("expired");
    assert!(
        matches!(
            err,
            rustls::Error::InvalidCertificate(
                CertificateError::Expired | CertificateError::ExpiredContext { .. }
            )
        ),
        "{err:?}"
    );
    let id = PeerIdentity::from_der(&expired.cert_der).expect("identity");
    assert!(id.not_after < now.unix_timestamp());
}

#[test]
fn a_saved_ca_loads_and_keeps_issuing_certificates_that_chain_to_the_saved_file() {
    let dir = tempfile::tempdir().expect("tempdir");
    let ca_dir = dir.path().join("ca");
    let (created, was_created) =
        CertificateAuthority::load_or_create(&ca_dir, "dev-ca").expect("create");
    assert!(was_created);
    assert_eq!(mode(&ca_dir.join(CA_KEY_FILE)), 0o600);
    assert_eq!(mode(&ca_dir.join(CA_CERT_FILE)), 0o644);

    let (loaded, was_created) =
        CertificateAuthority::load_or_create(&ca_dir, "ignored").expect("load");
    assert!(!was_created);
    assert_eq!(loaded.cert_pem(), created.cert_pem());
    assert_eq!(loaded.cert_der(), created.cert_der());
    assert_eq!(loaded.subject(), "CN=dev-ca");

    let saved_ca = fs::read_to_string(ca_dir.join(CA_CERT_FILE)).expect("ca.pem");
    let saved_der = Certificate::load_pem_chain(saved_ca.as_bytes()).expect("pem")[0].clone();
    let saved_der = x509_cert::der::Encode::to_der(&saved_der).expect("der");
    let issued = loaded.issue(&client("after-restart")).expect("issue");
    verify_client(&saved_der, &issued.cert_der).expect("chains to the saved CA");
}

#[test]
fn an_existing_ca_is_never_overwritten() {
    let dir = tempfile::tempdir().expect("tempdir");
    let first = CertificateAuthority::create("first").expect("CA");
    first.save(dir.path()).expect("save");
    let second = CertificateAuthority::create("second").expect("CA");
    assert!(matches!(
        second.save(dir.path()),
        Err(PkiError::AlreadyExists(_))
    ));
    assert_eq!(
        CertificateAuthority::load(dir.path())
            .expect("load")
            .subject(),
        "CN=first"
    );
}

#[test]
fn a_half_present_or_mismatched_ca_is_refused() {
    let dir = tempfile::tempdir().expect("tempdir");
    let a = dir.path().join("a");
    let b = dir.path().join("b");
    CertificateAuthority::create("a")
        .expect("CA")
        .save(&a)
        .expect("save");
    CertificateAuthority::create("b")
        .expect("CA")
        .save(&b)
        .expect("save");
    fs::copy(b.join(CA_KEY_FILE), a.join(CA_KEY_FILE)).expect("copy");
    let err = CertificateAuthority::load(&a).expect_err("mismatch");
    assert!(err.to_string().contains("does not belong"), "{err}");

    fs::remove_file(b.join(CA_KEY_FILE)).expect("remove");
    let err = CertificateAuthority::load_or_create(&b, "b").expect_err("half");
    assert!(err.to_string().contains("missing"), "{err}");

    let leaf_dir = dir.path().join("leaf");
    let ca = CertificateAuthority::create("c").expect("CA");
    let leaf = ca.issue(&client("not-a-ca")).expect("issue");
    leaf.write(&leaf_dir.join(CA_CERT_FILE), &leaf_dir.join(CA_KEY_FILE))
        .expect_err("no such directory");
    fs::create_dir(&leaf_dir).expect("mkdir");
    leaf.write(&leaf_dir.join(CA_CERT_FILE), &leaf_dir.join(CA_KEY_FILE))
        .expect("write");
    let err = CertificateAuthority::load(&leaf_dir).expect_err("not a CA");
    assert!(err.to_string().contains("not a CA"), "{err}");
}

#[test]
fn issued_key_files_are_private_even_when_replacing_a_readable_file() {
    let dir = tempfile::tempdir().expect("tempdir");
    let ca = CertificateAuthority::create("dev-ca").expect("CA");
    let issued = ca.issue(&client("app")).expect("issue");
    let cert = dir.path().join("app.pem");
    let key = dir.path().join("app-key.pem");
    fs::write(&key, "old").expect("write");
    fs::set_permissions(&key, fs::Permissions::from_mode(0o644)).expect("chmod");

    issued.write(&cert, &key).expect("write");
    assert_eq!(mode(&key), 0o600);
    assert_eq!(mode(&cert), 0o644);
    assert_eq!(
        fs::read_to_string(&key).expect("key"),
        issued.key_pem.expose()
    );
    assert_eq!(fs::read_to_string(&cert).expect("cert"), issued.cert_pem);
    let leftovers: Vec<_> = fs::read_dir(dir.path())
        .expect("list")
        .map(|e| e.expect("entry").file_name())
        .collect();
    assert_eq!(leftovers.len(), 2, "{leftovers:?}");
}

#[test]
fn keys_are_never_printed() {
    let ca = CertificateAuthority::create("dev-ca").expect("CA");
    let issued = ca.issue(&client("app")).expect("issue");
    assert!(issued.key_pem.expose().contains("PRIVATE KEY"));
    for shown in [format!("{issued:?}"), format!("{ca:?}")] {
        assert!(!shown.contains("PRIVATE KEY"), "{shown}");
    }
}

#[test]
fn impossible_requests_are_refused_before_signing() {
    let ca = CertificateAuthority::create("dev-ca").expect("CA");
    let now = OffsetDateTime::now_utc();
    let cases = [
        CertSpec::new("no usage"),
        client(""),
        CertSpec {
            organizational_units: vec!["a".into(), "b".into(), "c".into()],
            ..client("three OUs")
        },
        CertSpec {
            dns_names: vec!["bücher.example".into()],
            ..client("non-ASCII DNS")
        },
        CertSpec {
            validity: (now, now - Duration::hours(1)),
            ..client("backwards")
        },
    ];
    for spec in cases {
        assert!(
            matches!(ca.issue(&spec), Err(PkiError::InvalidSpec(_))),
            "{spec:?}"
        );
    }
    assert!(CertificateAuthority::create("").is_err());
}
