//! `openkcm dev` driven by Krill's own KMIP client: NLnet Labs' `kmip-protocol` 0.4.3 with the
//! OpenSSL TLS connection Krill builds it with, through the `Client` methods Krill's KMIP signer
//! calls, in Krill's order: Query (the operations Krill requires), Create Key Pair (RSA-2048,
//! named), Get of the public key read as Krill reads it (PKCS#1 bytes or Transparent RSA), the
//! rename of both keys (Modify Attribute Name), Activate of the private key, Sign (PKCS#1 v1.5,
//! SHA-256) checked independently with `ring`, signing on 5 connections at once (Krill's pool),
//! RNG Retrieve, and Krill's key pair destruction (Destroy the public key; Revoke then Destroy
//! the private key), also its clean-up of a pair never activated (Destroy both, no Revoke).
//!
//! The crate sends KMIP 1.0 request headers for most operations and 1.2 for Query, Sign and
//! RNG Retrieve, each request on one kept connection, as Krill's pooled connections do.

mod dev_support;

use std::time::Duration;

use dev_support::DevProcess;
use kmip_protocol::client::tls::openssl::connect;
use kmip_protocol::client::{Client, ClientCertificate, ConnectionSettings, Error};
use kmip_protocol::types::common::{
    AttributeName, AttributeValue, KeyFormatType, KeyMaterial, NameValue, ObjectType, Operation,
    UniqueIdentifier,
};
use kmip_protocol::types::request::{Attribute, RequestPayload};
use kmip_protocol::types::response::{ManagedObject, ResponsePayload};
use ring::signature::{RsaPublicKeyComponents, UnparsedPublicKey, RSA_PKCS1_2048_8192_SHA256};

/// Krill's `KmipTlsClient`: `Client<openssl::ssl::SslStream<TcpStream>>`.
trait Stream: std::io::Read + std::io::Write {}
impl<T: std::io::Read + std::io::Write> Stream for T {}

const TIMEOUT: Duration = Duration::from_secs(15);

/// What Krill's signer refuses to work without (its probe of the server's Query answer).
const KRILL_REQUIRED: [Operation; 7] = [
    Operation::CreateKeyPair,
    Operation::Activate,
    Operation::Sign,
    Operation::Revoke,
    Operation::Destroy,
    Operation::Get,
    Operation::ModifyAttribute,
];

/// A connection as Krill makes one (`kmip::client::tls::openssl::connect` with its
/// `ConnectionSettings`), verifying the server against the dev CA, as tenant `who`.
fn krill(dev: &DevProcess, who: &str) -> Client<impl Stream> {
    let read = |name: &str| std::fs::read(dev.pki(name)).unwrap_or_else(|e| panic!("{name}: {e}"));
    let settings = ConnectionSettings {
        host: dev.kmip_addr.ip().to_string(),
        port: dev.kmip_addr.port(),
        insecure: false,
        client_cert: Some(ClientCertificate::SeparatePem {
            cert_bytes: read(&format!("{who}.pem")),
            key_bytes: Some(read(&format!("{who}-key.pem"))),
        }),
        ca_cert: Some(read("ca.pem")),
        connect_timeout: Some(TIMEOUT),
        read_timeout: Some(TIMEOUT),
        write_timeout: Some(TIMEOUT),
        // Krill's setting.
        max_response_bytes: Some(64 * 1024),
        ..ConnectionSettings::default()
    };
    connect(&settings).unwrap_or_else(|e| panic!("Krill's client connects as {who}: {e}"))
}

/// The request and answer as the crate pretty-prints them, for a failure message: a call
/// that fails to parse an answer is a finding, and this is its evidence.
fn diag<S>(c: &Client<S>) -> String {
    format!(
        "\nrequest:  {}\nresponse: {}",
        c.last_req_diag_str().unwrap_or_default(),
        c.last_res_diag_str().unwrap_or_default()
    )
}

fn expect<S, T>(c: &Client<S>, what: &str, r: Result<T, Error>) -> T {
    r.unwrap_or_else(|e| panic!("{what}: {e}{}", diag(c)))
}

/// The (modulus, public exponent) of a DER PKCS#1 RSAPublicKey, read here rather than with the
/// server's DER library: SEQUENCE { INTEGER n, INTEGER e }.
fn pkcs1_parts(der: &[u8]) -> (Vec<u8>, Vec<u8>) {
    fn tlv(b: &[u8], tag: u8) -> (&[u8], &[u8]) {
        assert_eq!(b.first(), Some(&tag), "DER tag in {b:02x?}");
        let (len, at) = match b[1] {
            l if l < 0x80 => (l as usize, 2),
            0x81 => (b[2] as usize, 3),
            0x82 => (((b[2] as usize) << 8) | b[3] as usize, 4),
            l => panic!("DER length form {l:#x}"),
        };
        (&b[at..at + len], &b[at + len..])
    }
    let (seq, rest) = tlv(der, 0x30);
    assert!(rest.is_empty(), "bytes after the RSAPublicKey");
    let (n, seq) = tlv(seq, 0x02);
    let (e, seq) = tlv(seq, 0x02);
    assert!(seq.is_empty(), "more than n and e in the RSAPublicKey");
    let unsigned = |i: &[u8]| {
        let mut i = i.to_vec();
        while i.len() > 1 && i[0] == 0 {
            i.remove(0);
        }
        i
    };
    (unsigned(n), unsigned(e))
}

/// DER of a PKCS#1 RSAPublicKey from its parts (what Krill builds from Transparent RSA).
fn pkcs1_der(n: &[u8], e: &[u8]) -> Vec<u8> {
    fn len(l: usize) -> Vec<u8> {
        match l {
            l if l < 0x80 => vec![l as u8],
            l if l < 0x100 => vec![0x81, l as u8],
            l => vec![0x82, (l >> 8) as u8, l as u8],
        }
    }
    fn int(v: &[u8]) -> Vec<u8> {
        let mut body = v.to_vec();
        if body.first().is_some_and(|b| b & 0x80 != 0) {
            body.insert(0, 0);
        }
        let mut out = vec![0x02];
        out.extend(len(body.len()));
        out.extend(body);
        out
    }
    let mut body = int(n);
    body.extend(int(e));
    let mut out = vec![0x30];
    out.extend(len(body.len()));
    out.extend(body);
    out
}

/// The public key of `public_id` as Krill takes it from a Get answer: the DER PKCS#1
/// RSAPublicKey (Krill accepts the key material as bytes, or Transparent RSA public or private
/// key parts).
fn krill_public_key(c: &Client<impl Stream>, public_id: &str) -> Vec<u8> {
    let got = expect(c, "Get public key", c.get_key(public_id));
    assert_eq!(got.object_type, ObjectType::PublicKey, "{}", diag(c));
    assert_eq!(*got.unique_identifier, public_id);
    let ManagedObject::PublicKey(key) = got.cryptographic_object else {
        panic!("Get answered no Public Key object{}", diag(c));
    };
    let block = key.key_block;
    match block.key_value.key_material {
        KeyMaterial::Bytes(bytes) => {
            // Krill reads these bytes as PKCS#1 whatever the Key Format Type says.
            assert_eq!(block.key_format_type, KeyFormatType::PKCS1, "{}", diag(c));
            bytes
        }
        KeyMaterial::TransparentRSAPublicKey(t) => pkcs1_der(&t.modulus, &t.public_exponent),
        other => panic!("key material Krill cannot use: {other:?}{}", diag(c)),
    }
}

/// Locate by name and Get Attributes (Name), sent with the crate's own request types.
fn names_of(c: &Client<impl Stream>, uid: &str) -> Vec<String> {
    let answer = expect(
        c,
        "Get Attributes (Name)",
        c.do_request(RequestPayload::GetAttributes(
            Some(UniqueIdentifier(uid.to_owned())),
            Some(vec![AttributeName("Name".into())]),
        )),
    );
    let ResponsePayload::GetAttributes(payload) = answer else {
        panic!("not a Get Attributes answer{}", diag(c));
    };
    payload
        .attributes
        .unwrap_or_default()
        .into_iter()
        .filter_map(|a| match a.value {
            AttributeValue::Name(NameValue(name), _) => Some(name),
            _ => None,
        })
        .collect()
}

fn locate_by_name(c: &Client<impl Stream>, name: &str) -> Vec<String> {
    let answer = expect(
        c,
        "Locate by Name",
        c.do_request(RequestPayload::Locate(vec![Attribute::Name(
            name.to_owned(),
        )])),
    );
    let ResponsePayload::Locate(payload) = answer else {
        panic!("not a Locate answer{}", diag(c));
    };
    payload
        .unique_identifiers
        .into_iter()
        .map(|u| u.0)
        .collect()
}

#[test]
fn krill_kmip_signer_flow_against_openkcm_dev() {
    let dir = tempfile::Builder::new()
        .prefix("openkcm-dev-krill-")
        .tempdir()
        .expect("temporary directory");
    let mut dev = DevProcess::start(dir.path());
    let c = krill(&dev, "tenant-a");

    // Krill's probe: Query (operations, objects, server information), sent as KMIP 1.2.
    let query = expect(&c, "Query", c.query());
    let operations = query.operations.clone().unwrap_or_default();
    let missing: Vec<_> = KRILL_REQUIRED
        .iter()
        .filter(|op| !operations.contains(op))
        .collect();
    assert!(
        missing.is_empty(),
        "Krill finds {missing:?} missing from Query (it warns and goes on){}",
        diag(&c)
    );
    let vendor = query.vendor_identification.clone().unwrap_or_default();
    assert!(vendor.starts_with("OpenKCM"), "vendor {vendor:?}");
    eprintln!("Krill would report: KMIP Signer [vendor: {vendor}]");

    // Krill's build_key: a 2048-bit RSA pair with provisional names.
    let (private_id, public_id) = expect(
        &c,
        "Create Key Pair",
        c.create_rsa_key_pair(
            2048,
            "krill_new_key_priv".into(),
            "krill_new_key_pub".into(),
        ),
    );
    assert_ne!(private_id, public_id);

    let public_der = krill_public_key(&c, &public_id);
    let (n, e) = pkcs1_parts(&public_der);
    assert_eq!(n.len() * 8, 2048, "RSA-2048 modulus");
    assert!(n[0] & 0x80 != 0, "a full 2048-bit modulus");
    assert_eq!(e, [0x01, 0x00, 0x01], "public exponent 65537");

    // Krill renames both keys after the key identifier, then activates the private key.
    let new_public = "krill-public-key-0123abcd".to_owned();
    let new_private = "krill-private-key-0123abcd".to_owned();
    for (uid, name) in [(&public_id, &new_public), (&private_id, &new_private)] {
        let renamed = expect(&c, "Modify Attribute Name", c.rename_key(uid, name.clone()));
        assert_eq!(*renamed.unique_identifier, **uid);
        assert!(
            matches!(&renamed.attribute.value, AttributeValue::Name(NameValue(v), _) if v == name),
            "{renamed:?}"
        );
        assert_eq!(names_of(&c, uid), vec![name.clone()], "{uid} renamed");
        assert_eq!(locate_by_name(&c, name), vec![uid.clone()], "Locate {name}");
    }
    assert!(
        locate_by_name(&c, "krill_new_key_priv").is_empty(),
        "the old name is gone"
    );
    expect(&c, "Activate", c.activate_key(&private_id));

    // Krill's sign_with_key: PKCS#1 v1.5 with SHA-256 over the data itself.
    let data = b"Krill signs an RPKI manifest with OpenKCM";
    let signed = expect(&c, "Sign", c.sign(&private_id, data));
    assert_eq!(*signed.unique_identifier, private_id);
    let signature = signed.signature_data;
    assert_eq!(signature.len(), 256, "an RSA-2048 signature");
    let key = UnparsedPublicKey::new(&RSA_PKCS1_2048_8192_SHA256, &public_der);
    key.verify(data, &signature)
        .expect("ring verifies the server's signature with the key Get returned");
    let parts = RsaPublicKeyComponents { n: &n, e: &e };
    parts
        .verify(&RSA_PKCS1_2048_8192_SHA256, data, &signature)
        .expect("and from the modulus and exponent");
    let mut tampered = data.to_vec();
    tampered[0] ^= 1;
    assert!(
        key.verify(&tampered, &signature).is_err(),
        "a tampered message must not verify"
    );
    let mut bad = signature.clone();
    bad[100] ^= 1;
    assert!(
        key.verify(data, &bad).is_err(),
        "a tampered signature must not verify"
    );

    // Krill's get_random_bytes (used when Query lists RNG Retrieve; sent in KMIP 1.2).
    let listed_rng = operations.contains(&Operation::RNGRetrieve);
    let random = expect(&c, "RNG Retrieve", c.rng_retrieve(32));
    assert_eq!(random.data.len(), 32);
    let again = expect(&c, "RNG Retrieve", c.rng_retrieve(32));
    assert_ne!(random.data, again.data, "fresh random bytes");
    eprintln!("Query lists RNG Retrieve: {listed_rng} (Krill uses it only if listed)");

    // Krill's pool: up to 5 connections at once, each signing with the same key.
    std::thread::scope(|scope| {
        let workers: Vec<_> = (0..5u8)
            .map(|i| {
                let (dev, private_id, key) = (&dev, &private_id, &key);
                scope.spawn(move || {
                    let conn = krill(dev, "tenant-a");
                    for j in 0..4u8 {
                        let data = [b'k', i, j];
                        let signed = expect(&conn, "Sign (pooled)", conn.sign(private_id, &data));
                        key.verify(&data, &signed.signature_data)
                            .unwrap_or_else(|_| panic!("connection {i} signature {j}"));
                    }
                })
            })
            .collect();
        for w in workers {
            w.join().expect("pooled connection");
        }
    });

    // A key of another tenant is not there for this one (Krill's "item not found").
    let b = krill(&dev, "tenant-b");
    match b.get_key(&public_id) {
        Err(Error::ItemNotFound(_)) => {}
        other => panic!("tenant-b gets tenant-a's key: {other:?}{}", diag(&b)),
    }

    // Krill's destroy_key_pair: Destroy the public key (never activated), Revoke the active
    // private key, then Destroy it.
    expect(&c, "Destroy public key", c.destroy_key(&public_id));
    expect(&c, "Revoke private key", c.revoke_key(&private_id));
    let refused = c.sign(&private_id, data);
    assert!(refused.is_err(), "a revoked key signs: {refused:?}");
    expect(&c, "Destroy private key", c.destroy_key(&private_id));
    for uid in [&public_id, &private_id] {
        match c.get_key(uid) {
            Err(Error::ItemNotFound(_)) | Err(Error::ServerError(_)) => {}
            other => panic!("Get of destroyed {uid}: {other:?}{}", diag(&c)),
        }
    }
    assert!(locate_by_name(&c, &new_private).is_empty());

    // Krill's clean-up when preparing a new pair fails (destroy_key_pair, key not activated):
    // Destroy the public key, then the Pre-Active private key, with no Revoke.
    let (private_id, public_id) = expect(
        &c,
        "Create Key Pair",
        c.create_rsa_key_pair(2048, "krill_failed_priv".into(), "krill_failed_pub".into()),
    );
    expect(&c, "Destroy public key", c.destroy_key(&public_id));
    expect(
        &c,
        "Destroy Pre-Active private key",
        c.destroy_key(&private_id),
    );
    assert!(locate_by_name(&c, "krill_failed_priv").is_empty());

    drop((c, b));
    let (status, _) = dev.terminate();
    assert!(status.success(), "exit after SIGTERM: {status}");
}
