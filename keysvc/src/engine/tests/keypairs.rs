//! Asymmetric keys through the engine: Create Key Pair, Sign / Signature Verify, RSA-OAEP,
//! Register and Get of public keys, private keys and certificates, and their refusals.

use kmip::message::{Certificate, Link, PrivateKey, PublicKey};
use kmip::spec::{
    CertificateType, DigitalSignatureAlgorithm, HashingAlgorithm, PaddingMethod, RecommendedCurve,
    ValidityIndicator,
};

use super::*;

/// A self-signed X.509 certificate (DER), made by rcgen: an independent encoder.
pub(super) fn certificate_der() -> Vec<u8> {
    let key = rcgen::KeyPair::generate().expect("key");
    let params = rcgen::CertificateParams::new(vec!["kmip.example".to_string()]).expect("params");
    params
        .self_signed(&key)
        .expect("certificate")
        .der()
        .to_vec()
}

fn pair_request(
    common: Attributes,
    private_name: Option<&str>,
    public_name: Option<&str>,
) -> RequestPayload {
    let named = |n: Option<&str>| n.map(|n| Attributes::new().with(Tag::NAME, &Name::text(n)));
    RequestPayload::CreateKeyPair(CreateKeyPairRequest {
        common_attributes: Some(common),
        private_key_attributes: named(private_name),
        public_key_attributes: named(public_name),
        ..CreateKeyPairRequest::default()
    })
}

/// Creates a pair under `v` and answers (private uid, public uid).
async fn new_pair(
    engine: &Engine,
    ctx: &TenantContext,
    v: ProtocolVersion,
    common: Attributes,
) -> (String, String) {
    match ok(engine, ctx, v, pair_request(common, None, None)).await {
        ResponsePayload::CreateKeyPair(r) => (
            r.private_key_unique_identifier
                .as_text()
                .expect("uid")
                .to_owned(),
            r.public_key_unique_identifier
                .as_text()
                .expect("uid")
                .to_owned(),
        ),
        other => panic!("unexpected {other:?}"),
    }
}

fn sign(uid: &str, data: &[u8], params: Option<CryptographicParameters>) -> RequestPayload {
    RequestPayload::Sign(SignRequest {
        unique_identifier: id(uid),
        cryptographic_parameters: params,
        data: Some(data.into()),
        ..SignRequest::default()
    })
}

fn verify(
    uid: &str,
    data: &[u8],
    signature: &[u8],
    params: Option<CryptographicParameters>,
) -> RequestPayload {
    RequestPayload::SignatureVerify(SignatureVerifyRequest {
        unique_identifier: id(uid),
        cryptographic_parameters: params,
        data: Some(data.into()),
        signature_data: Some(signature.into()),
        ..SignatureVerifyRequest::default()
    })
}

async fn signature(
    engine: &Engine,
    ctx: &TenantContext,
    v: ProtocolVersion,
    request: RequestPayload,
) -> Vec<u8> {
    match ok(engine, ctx, v, request).await {
        ResponsePayload::Sign(r) => r.signature_data.expect("signature").to_vec(),
        other => panic!("unexpected {other:?}"),
    }
}

async fn validity(
    engine: &Engine,
    ctx: &TenantContext,
    v: ProtocolVersion,
    request: RequestPayload,
) -> ValidityIndicator {
    match ok(engine, ctx, v, request).await {
        ResponsePayload::SignatureVerify(r) => r.validity_indicator.expect("validity"),
        other => panic!("unexpected {other:?}"),
    }
}

async fn attributes_of(
    engine: &Engine,
    ctx: &TenantContext,
    v: ProtocolVersion,
    uid: &str,
    names: &[Tag],
) -> Attributes {
    match ok(engine, ctx, v, get_attributes(uid, names)).await {
        ResponsePayload::GetAttributes(r) => r.attributes.expect("attributes"),
        other => panic!("unexpected {other:?}"),
    }
}

fn active_now() -> Attributes {
    Attributes::new().with(Tag::ACTIVATION_DATE, &kmip::message::DateTime::now())
}

fn rsa_2048() -> Attributes {
    key_attributes(CryptographicAlgorithm::Rsa, 2048)
}

/// Krill's request (1.2: Template-Attributes, names per key), then the whole life of the
/// pair: linked, named, usage masks by role, Pre-Active until activated, signs and verifies,
/// revoked and destroyed one by one.
#[tokio::test]
async fn a_key_pair_is_linked_named_and_signs_in_every_version() {
    let f = fixture().await;
    let t = tenant("tenant-a");
    for v in [V1_2, V1_4, V2_0, V2_1] {
        let request = pair_request(rsa_2048(), Some("krill-private"), Some("krill-public"));
        let (private, public) = match ok(&f.engine, &t, v, request).await {
            ResponsePayload::CreateKeyPair(r) => (
                r.private_key_unique_identifier
                    .as_text()
                    .unwrap()
                    .to_owned(),
                r.public_key_unique_identifier.as_text().unwrap().to_owned(),
            ),
            other => panic!("unexpected {other:?}"),
        };
        let names = [
            Tag::OBJECT_TYPE,
            Tag::LINK,
            Tag::NAME,
            Tag::CRYPTOGRAPHIC_ALGORITHM,
            Tag::CRYPTOGRAPHIC_LENGTH,
            Tag::CRYPTOGRAPHIC_USAGE_MASK,
            Tag::STATE,
        ];
        for (uid, other, ty, link, name, usage) in [
            (
                &private,
                &public,
                ObjectType::PrivateKey,
                LinkType::PublicKeyLink,
                "krill-private",
                CryptographicUsageMask::SIGN,
            ),
            (
                &public,
                &private,
                ObjectType::PublicKey,
                LinkType::PrivateKeyLink,
                "krill-public",
                CryptographicUsageMask::VERIFY,
            ),
        ] {
            let a = attributes_of(&f.engine, &t, v, uid, &names).await;
            assert_eq!(
                a.typed::<ObjectType>(Tag::OBJECT_TYPE).unwrap(),
                Some(ty),
                "{v}"
            );
            let l: Link = a.typed(Tag::LINK).unwrap().expect("link");
            assert_eq!(l.link_type, link);
            assert_eq!(l.linked_object_identifier.as_text(), Some(other.as_str()));
            let n: Name = a.typed(Tag::NAME).unwrap().expect("name");
            assert_eq!(n.value, name);
            assert_eq!(
                a.cryptographic_algorithm().unwrap(),
                Some(CryptographicAlgorithm::Rsa)
            );
            assert_eq!(a.cryptographic_length().unwrap(), Some(2048));
            assert_eq!(a.cryptographic_usage_mask().unwrap(), Some(usage));
            assert_eq!(a.state().unwrap(), Some(State::PreActive));
        }
        // Pre-Active: no signature yet.
        let (reason, _) = fails(&f.engine, &t, v, sign(&private, b"m", None)).await;
        assert!(
            matches!(
                reason,
                ResultReason::WrongKeyLifecycleState | ResultReason::PermissionDenied
            ),
            "{v}: {reason:?}"
        );
        ok(&f.engine, &t, v, activate(&private)).await;
        ok(&f.engine, &t, v, activate(&public)).await;
        let sig = signature(&f.engine, &t, v, sign(&private, b"a route origin", None)).await;
        assert_eq!(sig.len(), 256);
        assert_eq!(
            validity(
                &f.engine,
                &t,
                v,
                verify(&public, b"a route origin", &sig, None)
            )
            .await,
            ValidityIndicator::Valid
        );
        assert_eq!(
            validity(
                &f.engine,
                &t,
                v,
                verify(&public, b"another origin", &sig, None)
            )
            .await,
            ValidityIndicator::Invalid
        );
        // Each key does its own job only.
        let (reason, _) = fails(&f.engine, &t, v, sign(&public, b"m", None)).await;
        assert_ne!(reason, ResultReason::OperationNotSupported);
        let (reason, _) = fails(&f.engine, &t, v, verify(&private, b"m", &sig, None)).await;
        assert_ne!(reason, ResultReason::OperationNotSupported);
        for uid in [&private, &public] {
            ok(
                &f.engine,
                &t,
                v,
                revoke(uid, RevocationReasonCode::CessationOfOperation),
            )
            .await;
            ok(&f.engine, &t, v, destroy(uid)).await;
        }
        let (reason, _) = fails(&f.engine, &t, v, get(&private, None)).await;
        assert_eq!(
            reason,
            OpError::new(ResultReason::ObjectDestroyed, "").for_version(v)
        );
    }
}

/// RSA 3072/4096, P-256 and P-384 (by curve and by length) and Ed25519; each signs with its
/// default scheme, and RSA also with PSS and SHA-512.
#[tokio::test]
async fn every_key_pair_kind_signs_and_verifies() {
    let f = fixture().await;
    let t = tenant("tenant-a");
    let curve = |c: RecommendedCurve| {
        Attributes::new()
            .with(Tag::CRYPTOGRAPHIC_ALGORITHM, &CryptographicAlgorithm::Ec)
            .with(
                Tag::CRYPTOGRAPHIC_DOMAIN_PARAMETERS,
                &Item::structure(
                    Tag::CRYPTOGRAPHIC_DOMAIN_PARAMETERS,
                    vec![Item::enumeration(Tag::RECOMMENDED_CURVE, c.value())],
                ),
            )
    };
    let pss = CryptographicParameters {
        padding_method: Some(PaddingMethod::Pss),
        hashing_algorithm: Some(HashingAlgorithm::Sha256),
        ..CryptographicParameters::default()
    };
    let sha512 = CryptographicParameters {
        digital_signature_algorithm: Some(DigitalSignatureAlgorithm::Sha512WithRsaEncryption),
        ..CryptographicParameters::default()
    };
    let cases: Vec<(Attributes, i32, Vec<Option<CryptographicParameters>>)> = vec![
        (
            key_attributes(CryptographicAlgorithm::Rsa, 3072),
            3072,
            vec![None, Some(pss.clone())],
        ),
        (
            key_attributes(CryptographicAlgorithm::Rsa, 4096),
            4096,
            vec![Some(sha512)],
        ),
        (curve(RecommendedCurve::P256), 256, vec![None]),
        (curve(RecommendedCurve::P384), 384, vec![None]),
        (
            key_attributes(CryptographicAlgorithm::Ecdsa, 256),
            256,
            vec![None],
        ),
        (
            Attributes::new().with(
                Tag::CRYPTOGRAPHIC_ALGORITHM,
                &CryptographicAlgorithm::Ed25519,
            ),
            256,
            vec![None],
        ),
    ];
    for (attrs, bits, schemes) in cases {
        let (private, public) = new_pair(&f.engine, &t, V2_1, attrs.merge(active_now())).await;
        let a = attributes_of(&f.engine, &t, V2_1, &public, &[Tag::CRYPTOGRAPHIC_LENGTH]).await;
        assert_eq!(a.cryptographic_length().unwrap(), Some(bits));
        for p in schemes {
            let sig = signature(&f.engine, &t, V2_1, sign(&private, b"m", p.clone())).await;
            assert_eq!(
                validity(&f.engine, &t, V2_1, verify(&public, b"m", &sig, p.clone())).await,
                ValidityIndicator::Valid,
                "{bits} {p:?}"
            );
            assert_eq!(
                validity(&f.engine, &t, V2_1, verify(&public, b"n", &sig, p)).await,
                ValidityIndicator::Invalid
            );
        }
    }
}

#[tokio::test]
async fn key_pairs_the_service_does_not_make_are_refused_clearly() {
    let f = fixture().await;
    let t = tenant("tenant-a");
    for attrs in [
        key_attributes(CryptographicAlgorithm::Rsa, 1024),
        key_attributes(CryptographicAlgorithm::Rsa, 8192),
        Attributes::new().with(Tag::CRYPTOGRAPHIC_ALGORITHM, &CryptographicAlgorithm::Rsa),
        key_attributes(CryptographicAlgorithm::Ec, 521),
        key_attributes(CryptographicAlgorithm::Aes, 256),
        key_attributes(CryptographicAlgorithm::Dsa, 2048),
        Attributes::new(),
    ] {
        let (reason, message) = fails(&f.engine, &t, V2_1, pair_request(attrs, None, None)).await;
        assert_eq!(reason, ResultReason::InvalidField, "{message}");
    }
    // The two keys of a pair cannot disagree on the algorithm.
    let request = RequestPayload::CreateKeyPair(CreateKeyPairRequest {
        common_attributes: Some(Attributes::new().with(Tag::CRYPTOGRAPHIC_LENGTH, &2048)),
        private_key_attributes: Some(
            Attributes::new().with(Tag::CRYPTOGRAPHIC_ALGORITHM, &CryptographicAlgorithm::Rsa),
        ),
        public_key_attributes: Some(
            Attributes::new().with(Tag::CRYPTOGRAPHIC_ALGORITHM, &CryptographicAlgorithm::Ec),
        ),
        ..CreateKeyPairRequest::default()
    });
    let (reason, _) = fails(&f.engine, &t, V2_1, request).await;
    assert_eq!(reason, ResultReason::InvalidField);
}

/// Sign needs the Sign usage and an Active private key; another tenant's key is the same
/// Object Not Found as a missing one; Digested Data and multi-part are refused.
#[tokio::test]
async fn signing_is_refused_without_usage_state_or_tenant() {
    let f = fixture().await;
    let (a, b) = (tenant("tenant-a"), tenant("tenant-b"));
    let usage_verify_only = Attributes::new().with(
        Tag::CRYPTOGRAPHIC_USAGE_MASK,
        &CryptographicUsageMask::VERIFY,
    );
    let request = RequestPayload::CreateKeyPair(CreateKeyPairRequest {
        common_attributes: Some(
            key_attributes(CryptographicAlgorithm::Ec, 256).merge(active_now()),
        ),
        private_key_attributes: Some(usage_verify_only),
        ..CreateKeyPairRequest::default()
    });
    let private = match ok(&f.engine, &a, V2_1, request).await {
        ResponsePayload::CreateKeyPair(r) => r
            .private_key_unique_identifier
            .as_text()
            .unwrap()
            .to_owned(),
        other => panic!("unexpected {other:?}"),
    };
    let (reason, _) = fails(&f.engine, &a, V2_1, sign(&private, b"m", None)).await;
    assert_eq!(reason, ResultReason::IncompatibleCryptographicUsageMask);

    let (private, _) = new_pair(
        &f.engine,
        &a,
        V2_1,
        key_attributes(CryptographicAlgorithm::Ec, 256).merge(active_now()),
    )
    .await;
    let foreign = fails(&f.engine, &b, V2_1, sign(&private, b"m", None)).await;
    let missing = fails(&f.engine, &b, V2_1, sign("no-such-key", b"m", None)).await;
    assert_eq!(foreign.0, ResultReason::ObjectNotFound);
    assert_eq!(
        foreign.1.replace(&private, "X"),
        missing.1.replace("no-such-key", "X")
    );

    let digested = RequestPayload::Sign(SignRequest {
        unique_identifier: id(&private),
        digested_data: Some(vec![0u8; 32].into()),
        ..SignRequest::default()
    });
    let (reason, _) = fails(&f.engine, &a, V2_1, digested).await;
    assert_eq!(reason, ResultReason::FeatureNotSupported);
    let streamed = RequestPayload::Sign(SignRequest {
        unique_identifier: id(&private),
        data: Some(b"part".to_vec().into()),
        init_indicator: Some(true),
        ..SignRequest::default()
    });
    let (reason, _) = fails(&f.engine, &a, V2_1, streamed).await;
    assert_eq!(reason, ResultReason::FeatureNotSupported);
    // An RSA scheme on an EC key: a clear Invalid Field.
    let rsa_scheme = CryptographicParameters {
        padding_method: Some(PaddingMethod::Pkcs1V1_5),
        ..CryptographicParameters::default()
    };
    let (reason, _) = fails(&f.engine, &a, V2_1, sign(&private, b"m", Some(rsa_scheme))).await;
    assert_eq!(reason, ResultReason::InvalidField);
}

/// RSA-OAEP: Encrypt with the public key, Decrypt with the private one; a changed
/// ciphertext is one Cryptographic Failure; PKCS#1 v1.5 encryption and IVs are refused.
#[tokio::test]
async fn rsa_oaep_encrypts_with_the_public_key_and_decrypts_with_the_private() {
    let f = fixture().await;
    let t = tenant("tenant-a");
    let common = rsa_2048().merge(active_now()).with(
        Tag::CRYPTOGRAPHIC_USAGE_MASK,
        &(CryptographicUsageMask::ENCRYPT | CryptographicUsageMask::DECRYPT),
    );
    let (private, public) = new_pair(&f.engine, &t, V1_4, common).await;
    let oaep = CryptographicParameters {
        padding_method: Some(PaddingMethod::Oaep),
        hashing_algorithm: Some(HashingAlgorithm::Sha256),
        ..CryptographicParameters::default()
    };
    let ciphertext = match ok(
        &f.engine,
        &t,
        V1_4,
        encrypt(&public, b"a data key", Some(oaep.clone()), None),
    )
    .await
    {
        ResponsePayload::Encrypt(r) => {
            assert!(r.iv_counter_nonce.is_none());
            r.data.expect("data").to_vec()
        }
        other => panic!("unexpected {other:?}"),
    };
    assert_eq!(ciphertext.len(), 256);
    match ok(
        &f.engine,
        &t,
        V1_4,
        decrypt(&private, &ciphertext, Some(oaep.clone()), None, None),
    )
    .await
    {
        ResponsePayload::Decrypt(r) => assert_eq!(&r.data.expect("data")[..], b"a data key"),
        other => panic!("unexpected {other:?}"),
    }
    let mut changed = ciphertext.clone();
    changed[100] ^= 1;
    let (reason, _) = fails(
        &f.engine,
        &t,
        V1_4,
        decrypt(&private, &changed, Some(oaep.clone()), None, None),
    )
    .await;
    assert_eq!(reason, ResultReason::CryptographicFailure);
    // The wrong key for each direction, PKCS#1 v1.5, an IV: refused.
    let (reason, _) = fails(
        &f.engine,
        &t,
        V2_1,
        encrypt(&private, b"x", Some(oaep.clone()), None),
    )
    .await;
    assert_eq!(reason, ResultReason::InvalidObjectType);
    let (reason, _) = fails(
        &f.engine,
        &t,
        V2_1,
        decrypt(&public, &ciphertext, Some(oaep.clone()), None, None),
    )
    .await;
    assert_eq!(reason, ResultReason::InvalidObjectType);
    let v15 = CryptographicParameters {
        padding_method: Some(PaddingMethod::Pkcs1V1_5),
        ..CryptographicParameters::default()
    };
    let (reason, _) = fails(&f.engine, &t, V1_4, encrypt(&public, b"x", Some(v15), None)).await;
    assert_eq!(reason, ResultReason::InvalidField);
    let (reason, _) = fails(
        &f.engine,
        &t,
        V1_4,
        encrypt(&public, b"x", Some(oaep), Some(&[0u8; 16])),
    )
    .await;
    assert_eq!(reason, ResultReason::InvalidField);
}

/// Get answers a key in every format the spec defines for it that the service converts to,
/// the key as kept when none is named, and Key Format Type Not Supported otherwise.
#[tokio::test]
async fn get_serves_asymmetric_keys_in_their_formats() {
    let f = fixture().await;
    let t = tenant("tenant-a");
    let (private, public) = new_pair(&f.engine, &t, V2_1, rsa_2048()).await;
    let format_of = |object: &ManagedObject| object.key_block().expect("block").key_format_type;
    let (_, kept) = key_of(&f.engine, &t, &private).await;
    assert_eq!(format_of(&kept), KeyFormatType::Pkcs1);
    for (uid, formats) in [
        (
            &private,
            vec![
                KeyFormatType::Pkcs1,
                KeyFormatType::Pkcs8,
                KeyFormatType::TransparentRsaPrivateKey,
            ],
        ),
        (
            &public,
            vec![
                KeyFormatType::Pkcs1,
                KeyFormatType::X509,
                KeyFormatType::TransparentRsaPublicKey,
            ],
        ),
    ] {
        for format in formats {
            match ok(&f.engine, &t, V2_1, get(uid, Some(format))).await {
                ResponsePayload::Get(r) => {
                    assert_eq!(format_of(r.object.as_ref().expect("object")), format)
                }
                other => panic!("unexpected {other:?}"),
            }
        }
        let (reason, _) = fails(&f.engine, &t, V2_1, get(uid, Some(KeyFormatType::Raw))).await;
        assert_eq!(reason, ResultReason::KeyFormatTypeNotSupported);
    }
    // The X.509 public key is what an independent parser (rcgen's, via x509 SPKI in ring)
    // reads: check the DER decodes as a SubjectPublicKeyInfo of rsaEncryption.
    let spki = match ok(&f.engine, &t, V2_1, get(&public, Some(KeyFormatType::X509))).await {
        ResponsePayload::Get(r) => r
            .object
            .unwrap()
            .key_block()
            .unwrap()
            .key_bytes()
            .unwrap()
            .to_vec(),
        other => panic!("unexpected {other:?}"),
    };
    use der::Decode as _;
    let info = spki::SubjectPublicKeyInfoRef::from_der(&spki).expect("SPKI");
    assert_eq!(info.algorithm.oid.to_string(), "1.2.840.113549.1.1.1");
}

/// Register keeps public and private keys (RSA, EC, and kinds the service only stores, such
/// as DSA) and X.509 certificates; their length comes from the key; material that is not
/// the key it claims to be, and a certificate that is not one, are refused.
#[tokio::test]
async fn register_keeps_asymmetric_keys_and_certificates() {
    let f = fixture().await;
    let t = tenant("tenant-a");
    let pair = crate::asymmetric::generate(CryptographicAlgorithm::Rsa, Some(2048), None).unwrap();
    let pkcs8 = crate::asymmetric::private_in(&pair.private, KeyFormatType::Pkcs8).unwrap();
    let register = |object_type, object| {
        RequestPayload::Register(RegisterRequest {
            object_type,
            attributes: Some(Attributes::new().merge(active_now()).with(
                Tag::CRYPTOGRAPHIC_USAGE_MASK,
                &(CryptographicUsageMask::SIGN | CryptographicUsageMask::VERIFY),
            )),
            object: Some(object),
            protection_storage_masks: None,
        })
    };
    let uid = |p: ResponsePayload| match p {
        ResponsePayload::Register(r) => r.unique_identifier.as_text().unwrap().to_owned(),
        other => panic!("unexpected {other:?}"),
    };
    let private = uid(ok(
        &f.engine,
        &t,
        V2_1,
        register(
            ObjectType::PrivateKey,
            ManagedObject::PrivateKey(PrivateKey {
                key_block: KeyBlock {
                    cryptographic_length: None,
                    ..pkcs8
                },
            }),
        ),
    )
    .await);
    let a = attributes_of(&f.engine, &t, V2_1, &private, &[Tag::CRYPTOGRAPHIC_LENGTH]).await;
    assert_eq!(a.cryptographic_length().unwrap(), Some(2048));
    let public = uid(ok(
        &f.engine,
        &t,
        V2_1,
        register(
            ObjectType::PublicKey,
            ManagedObject::PublicKey(PublicKey {
                key_block: crate::asymmetric::public_in(&pair.public, KeyFormatType::X509).unwrap(),
            }),
        ),
    )
    .await);
    // The registered pair works together.
    let sig = signature(&f.engine, &t, V2_1, sign(&private, b"m", None)).await;
    assert_eq!(
        validity(&f.engine, &t, V2_1, verify(&public, b"m", &sig, None)).await,
        ValidityIndicator::Valid
    );
    // A declared length that is not the key's, and bytes that are no RSA key: refused.
    let wrong_length = KeyBlock {
        cryptographic_length: Some(4096),
        ..pair.public.clone()
    };
    let (reason, _) = fails(
        &f.engine,
        &t,
        V2_1,
        register(
            ObjectType::PublicKey,
            ManagedObject::PublicKey(PublicKey {
                key_block: wrong_length,
            }),
        ),
    )
    .await;
    assert_eq!(reason, ResultReason::InvalidField);
    let junk = KeyBlock {
        key_format_type: KeyFormatType::Pkcs1,
        ..KeyBlock::raw(
            vec![0x30, 0x03, 0x02, 0x01, 0x01],
            Some(CryptographicAlgorithm::Rsa),
            None,
        )
    };
    let (reason, _) = fails(
        &f.engine,
        &t,
        V2_1,
        register(
            ObjectType::PrivateKey,
            ManagedObject::PrivateKey(PrivateKey { key_block: junk }),
        ),
    )
    .await;
    assert_eq!(reason, ResultReason::InvalidField);
    // A key larger than the service uses (every use would cost seconds of a core): refused.
    let huge = {
        use der::Encode as _;
        let modulus = [0xC3u8; 1100]; // 8800 bits
        let key = pkcs1::RsaPublicKey {
            modulus: der::asn1::UintRef::new(&modulus).unwrap(),
            public_exponent: der::asn1::UintRef::new(&[1, 0, 1]).unwrap(),
        };
        KeyBlock {
            key_format_type: KeyFormatType::Pkcs1,
            ..KeyBlock::raw(
                key.to_der().unwrap(),
                Some(CryptographicAlgorithm::Rsa),
                None,
            )
        }
    };
    let (reason, message) = fails(
        &f.engine,
        &t,
        V2_1,
        register(
            ObjectType::PublicKey,
            ManagedObject::PublicKey(PublicKey { key_block: huge }),
        ),
    )
    .await;
    assert_eq!(reason, ResultReason::InvalidField);
    assert!(message.contains("8800-bit"), "{message}");
    // A DSA key is stored as registered and comes back byte for byte.
    let dsa = KeyBlock {
        key_format_type: KeyFormatType::TransparentDsaPublicKey,
        key_compression_type: None,
        key_value: Some(kmip::message::KeyValue::Plain {
            key_material: kmip::message::KeyMaterial::Structure(vec![
                Item::new(
                    Tag::P,
                    Value::BigInteger(vec![0, 0, 0, 0, 0, 0, 0xC1, 0x02]),
                ),
                Item::new(Tag::Q, Value::BigInteger(vec![0, 0, 0, 0, 0, 0, 0, 0x11])),
                Item::new(Tag::G, Value::BigInteger(vec![0, 0, 0, 0, 0, 0, 0, 0x02])),
                Item::new(Tag::Y, Value::BigInteger(vec![0, 0, 0, 0, 0, 0, 0, 0x05])),
            ]),
            attributes: None,
        }),
        cryptographic_algorithm: Some(CryptographicAlgorithm::Dsa),
        cryptographic_length: Some(2048),
        key_wrapping_data: None,
    };
    let dsa_object = ManagedObject::PublicKey(PublicKey { key_block: dsa });
    let dsa_uid = uid(ok(
        &f.engine,
        &t,
        V2_1,
        register(ObjectType::PublicKey, dsa_object.clone()),
    )
    .await);
    assert_eq!(key_of(&f.engine, &t, &dsa_uid).await.1, dsa_object);

    // Certificates: kept whole, with type and length; a non-certificate is refused.
    let der = certificate_der();
    let cert = ManagedObject::Certificate(Certificate {
        certificate_type: CertificateType::X509,
        certificate_value: ByteString::new(der.clone()),
    });
    let cert_uid = uid(ok(
        &f.engine,
        &t,
        V2_1,
        register(ObjectType::Certificate, cert.clone()),
    )
    .await);
    assert_eq!(key_of(&f.engine, &t, &cert_uid).await.1, cert);
    let a = attributes_of(
        &f.engine,
        &t,
        V2_1,
        &cert_uid,
        &[Tag::CERTIFICATE_LENGTH, Tag::CERTIFICATE_TYPE],
    )
    .await;
    assert_eq!(
        a.typed::<i32>(Tag::CERTIFICATE_LENGTH).unwrap(),
        Some(der.len() as i32)
    );
    // The subject's and issuer's CN, read from the certificate; no client may change them.
    let a = attributes_of(
        &f.engine,
        &t,
        V2_1,
        &cert_uid,
        &[Tag::CERTIFICATE_SUBJECT_CN, Tag::CERTIFICATE_ISSUER_CN],
    )
    .await;
    for tag in [Tag::CERTIFICATE_SUBJECT_CN, Tag::CERTIFICATE_ISSUER_CN] {
        assert_eq!(
            a.typed::<String>(tag).unwrap().as_deref(),
            Some("rcgen self signed cert")
        );
    }
    let modify = RequestPayload::ModifyAttribute(ModifyAttributeRequest {
        unique_identifier: id(&cert_uid),
        current_attribute: None,
        attribute: Some(Attribute::typed(Tag::CERTIFICATE_LENGTH, &123i32)),
    });
    let (reason, _) = fails(&f.engine, &t, V2_1, modify).await;
    assert_eq!(reason, ResultReason::AttributeReadOnly);
    let not_a_cert = ManagedObject::Certificate(Certificate {
        certificate_type: CertificateType::X509,
        certificate_value: ByteString::new(b"-----BEGIN CERTIFICATE-----".to_vec()),
    });
    let (reason, _) = fails(
        &f.engine,
        &t,
        V2_1,
        register(ObjectType::Certificate, not_a_cert),
    )
    .await;
    assert_eq!(reason, ResultReason::InvalidField);
}

/// Attributes plus more of them.
trait Merge {
    fn merge(self, more: Attributes) -> Attributes;
}

impl Merge for Attributes {
    fn merge(mut self, more: Attributes) -> Attributes {
        for a in more.iter() {
            self.push(a.clone());
        }
        self
    }
}

/// Re-key Key Pair: a new pair of the same kind replaces the old one; names move, links
/// run both ways between old and new and within the new pair; the new pair signs.
#[tokio::test]
async fn rekey_key_pair_replaces_both_keys() {
    let f = fixture().await;
    let t = tenant("tenant-a");
    for (v, attrs) in [
        (V1_2, key_attributes(CryptographicAlgorithm::Ec, 256)),
        (V2_1, rsa_2048()),
    ] {
        let request = RequestPayload::CreateKeyPair(CreateKeyPairRequest {
            common_attributes: Some(attrs.merge(active_now())),
            private_key_attributes: Some(Attributes::new().with(Tag::NAME, &Name::text("sig-key"))),
            ..CreateKeyPairRequest::default()
        });
        let (old_private, old_public) = match ok(&f.engine, &t, v, request).await {
            ResponsePayload::CreateKeyPair(r) => (
                r.private_key_unique_identifier
                    .as_text()
                    .unwrap()
                    .to_owned(),
                r.public_key_unique_identifier.as_text().unwrap().to_owned(),
            ),
            other => panic!("unexpected {other:?}"),
        };
        let rekey = RequestPayload::ReKeyKeyPair(ReKeyKeyPairRequest {
            private_key_unique_identifier: id(&old_private),
            ..ReKeyKeyPairRequest::default()
        });
        let (private, public) = match ok(&f.engine, &t, v, rekey).await {
            ResponsePayload::ReKeyKeyPair(r) => (
                r.private_key_unique_identifier
                    .as_text()
                    .unwrap()
                    .to_owned(),
                r.public_key_unique_identifier.as_text().unwrap().to_owned(),
            ),
            other => panic!("unexpected {other:?}"),
        };
        let links = |a: &Attributes| -> Vec<(LinkType, String)> {
            a.iter()
                .filter(|x| x.tag() == Some(Tag::LINK))
                .map(|x| {
                    let l: Link = x.get().unwrap();
                    (
                        l.link_type,
                        l.linked_object_identifier.as_text().unwrap().to_owned(),
                    )
                })
                .collect()
        };
        let names = [Tag::LINK, Tag::NAME, Tag::STATE, Tag::CRYPTOGRAPHIC_LENGTH];
        let new_private = attributes_of(&f.engine, &t, v, &private, &names).await;
        assert!(links(&new_private).contains(&(LinkType::PublicKeyLink, public.clone())));
        assert!(links(&new_private).contains(&(LinkType::ReplacedObjectLink, old_private.clone())));
        assert_eq!(
            new_private.typed::<Name>(Tag::NAME).unwrap().unwrap().value,
            "sig-key"
        );
        assert_eq!(new_private.state().unwrap(), Some(State::Active), "{v}");
        let new_public = attributes_of(&f.engine, &t, v, &public, &names).await;
        assert!(links(&new_public).contains(&(LinkType::ReplacedObjectLink, old_public.clone())));
        let old = attributes_of(&f.engine, &t, v, &old_private, &names).await;
        assert!(links(&old).contains(&(LinkType::ReplacementObjectLink, private.clone())));
        assert!(
            old.typed::<Name>(Tag::NAME).unwrap().is_none(),
            "the name moved"
        );
        assert_eq!(
            old.cryptographic_length().unwrap(),
            new_private.cryptographic_length().unwrap()
        );
        let sig = signature(&f.engine, &t, v, sign(&private, b"m", None)).await;
        assert_eq!(
            validity(&f.engine, &t, v, verify(&public, b"m", &sig, None)).await,
            ValidityIndicator::Valid
        );
        assert_eq!(
            validity(&f.engine, &t, v, verify(&old_public, b"m", &sig, None)).await,
            ValidityIndicator::Invalid
        );
        // A public key is not re-keyed as a pair.
        let wrong = RequestPayload::ReKeyKeyPair(ReKeyKeyPairRequest {
            private_key_unique_identifier: id(&public),
            ..ReKeyKeyPairRequest::default()
        });
        let (reason, _) = fails(&f.engine, &t, V2_1, wrong).await;
        assert_eq!(reason, ResultReason::InvalidObjectType);
    }
}

/// A tenant's burst of key generations queues behind itself: another tenant's one request is
/// served after at most the generation already running, not after the whole burst.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_burst_of_generations_does_not_hold_up_another_tenant() {
    let f = fixture().await;
    let (busy, other) = (tenant("tenant-burst"), tenant("tenant-other"));
    let finished = Arc::new(std::sync::Mutex::new(Vec::new()));
    let mut tasks = Vec::new();
    for n in 0..4 {
        let (engine, ctx, finished) = (f.engine.clone(), busy.clone(), finished.clone());
        tasks.push(tokio::spawn(async move {
            let request = pair_request(
                key_attributes(CryptographicAlgorithm::Rsa, 3072),
                None,
                None,
            );
            ok(&engine, &ctx, V2_1, request).await;
            finished.lock().unwrap().push(format!("burst-{n}"));
        }));
    }
    // The burst is under way (its first generation running, the rest queued) before the
    // other tenant asks.
    tokio::time::sleep(Duration::from_millis(100)).await;
    let request = pair_request(key_attributes(CryptographicAlgorithm::Ec, 256), None, None);
    ok(&f.engine, &other, V2_1, request).await;
    finished.lock().unwrap().push("other".into());
    for t in tasks {
        t.await.expect("burst request");
    }
    let order = finished.lock().unwrap().clone();
    let position = order
        .iter()
        .position(|x| x == "other")
        .expect("other finished");
    assert!(
        position <= 1,
        "the other tenant waited for the burst: finished in order {order:?}"
    );
}
