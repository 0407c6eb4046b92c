use super::*;

fn params() -> CryptographicParameters {
    CryptographicParameters::default()
}

fn rsa(bits: i32) -> GeneratedPair {
    generate(CryptographicAlgorithm::Rsa, Some(bits), None).unwrap()
}

fn ec(curve: RecommendedCurve) -> GeneratedPair {
    generate(CryptographicAlgorithm::Ec, None, Some(curve)).unwrap()
}

#[test]
fn generated_keys_have_their_sizes_and_formats() {
    let pair = rsa(2048);
    assert_eq!(pair.length, 2048);
    assert_eq!(pair.private.key_format_type, KeyFormatType::Pkcs1);
    assert_eq!(pair.public.key_format_type, KeyFormatType::Pkcs1);
    assert_eq!(private_length(&pair.private).unwrap(), (KeyKind::Rsa, 2048));
    assert_eq!(public_length(&pair.public).unwrap(), (KeyKind::Rsa, 2048));
    let pair = ec(RecommendedCurve::P384);
    assert_eq!(pair.length, 384);
    assert_eq!(pair.private.key_format_type, KeyFormatType::Pkcs8);
    assert_eq!(pair.public.key_format_type, KeyFormatType::X509);
    assert_eq!(
        private_length(&pair.private).unwrap().0,
        KeyKind::Ec(Curve::P384)
    );
    // A length names the curve when no curve is given.
    let p256 = generate(CryptographicAlgorithm::Ecdsa, Some(256), None).unwrap();
    assert_eq!(
        public_length(&p256.public).unwrap().0,
        KeyKind::Ec(Curve::P256)
    );
}

#[test]
fn unsupported_sizes_and_algorithms_are_refused() {
    for bits in [1024, 2047, 8192] {
        assert!(matches!(
            generate(CryptographicAlgorithm::Rsa, Some(bits), None),
            Err(AsymError::Unsupported(_))
        ));
    }
    assert!(matches!(
        generate(CryptographicAlgorithm::Rsa, None, None),
        Err(AsymError::Unsupported(_))
    ));
    assert!(matches!(
        generate(
            CryptographicAlgorithm::Ec,
            None,
            Some(RecommendedCurve::P521)
        ),
        Err(AsymError::Unsupported(_))
    ));
    assert!(matches!(
        generate(CryptographicAlgorithm::Aes, Some(256), None),
        Err(AsymError::Unsupported(_))
    ));
}

#[test]
fn every_scheme_signs_and_verifies_and_detects_tampering() {
    let rsa = rsa(2048);
    let p256 = ec(RecommendedCurve::P256);
    let p384 = ec(RecommendedCurve::P384);
    let ed = generate(CryptographicAlgorithm::Ed25519, None, None).unwrap();
    let pss = |h| CryptographicParameters {
        padding_method: Some(PaddingMethod::Pss),
        hashing_algorithm: Some(h),
        ..params()
    };
    let dsa = |d| CryptographicParameters {
        digital_signature_algorithm: Some(d),
        ..params()
    };
    let cases: Vec<(&GeneratedPair, CryptographicParameters)> = vec![
        (&rsa, params()),
        (
            &rsa,
            dsa(DigitalSignatureAlgorithm::Sha384WithRsaEncryption),
        ),
        (
            &rsa,
            dsa(DigitalSignatureAlgorithm::Sha512WithRsaEncryption),
        ),
        (&rsa, pss(HashingAlgorithm::Sha256)),
        (&rsa, pss(HashingAlgorithm::Sha512)),
        // The largest salt a 2048-bit key takes with SHA-256: 256 - 32 - 2.
        (
            &rsa,
            CryptographicParameters {
                salt_length: Some(222),
                ..pss(HashingAlgorithm::Sha256)
            },
        ),
        (&p256, params()),
        (&p256, dsa(DigitalSignatureAlgorithm::EcdsaWithSha256)),
        (&p384, dsa(DigitalSignatureAlgorithm::EcdsaWithSha384)),
        (&p384, params()),
        (&ed, params()),
    ];
    for (pair, p) in cases {
        let msg = b"the message";
        let sig = sign(&pair.private, &p, msg).unwrap();
        assert!(verify(&pair.public, &p, msg, &sig).unwrap(), "{p:?}");
        assert!(!verify(&pair.public, &p, b"another message", &sig).unwrap());
        let mut bad = sig.clone();
        let last = bad.len() - 1;
        bad[last] ^= 1;
        assert!(!verify(&pair.public, &p, msg, &bad).unwrap());
    }
    // PSS with no salt length named verifies either common salt.
    let max_salt = CryptographicParameters {
        salt_length: Some(222),
        ..pss(HashingAlgorithm::Sha256)
    };
    let sig = sign(&rsa.private, &max_salt, b"m").unwrap();
    assert!(verify(&rsa.public, &pss(HashingAlgorithm::Sha256), b"m", &sig).unwrap());
    let digest_salt = CryptographicParameters {
        salt_length: Some(32),
        ..pss(HashingAlgorithm::Sha256)
    };
    assert!(!verify(&rsa.public, &digest_salt, b"m", &sig).unwrap());
    // A signature made with one hash does not verify under another.
    let sig = sign(&rsa.private, &params(), b"m").unwrap();
    let sha512 = dsa(DigitalSignatureAlgorithm::Sha512WithRsaEncryption);
    assert!(!verify(&rsa.public, &sha512, b"m", &sig).unwrap());
    // Another key's signature does not verify.
    let other = generate(CryptographicAlgorithm::Ec, Some(256), None).unwrap();
    let sig = sign(&other.private, &params(), b"m").unwrap();
    assert!(!verify(&p256.public, &params(), b"m", &sig).unwrap());
}

#[test]
fn mismatched_schemes_are_refused() {
    let rsa = rsa(2048);
    let p256 = ec(RecommendedCurve::P256);
    let ecdsa = CryptographicParameters {
        digital_signature_algorithm: Some(DigitalSignatureAlgorithm::EcdsaWithSha256),
        ..params()
    };
    assert!(matches!(
        sign(&rsa.private, &ecdsa, b"m"),
        Err(AsymError::Unsupported(_))
    ));
    let pkcs1 = CryptographicParameters {
        padding_method: Some(PaddingMethod::Pkcs1V1_5),
        ..params()
    };
    assert!(matches!(
        sign(&p256.private, &pkcs1, b"m"),
        Err(AsymError::Unsupported(_))
    ));
    let md5 = CryptographicParameters {
        hashing_algorithm: Some(HashingAlgorithm::Md5),
        ..params()
    };
    assert!(matches!(
        sign(&rsa.private, &md5, b"m"),
        Err(AsymError::Unsupported(_))
    ));
    let odd_salt = CryptographicParameters {
        padding_method: Some(PaddingMethod::Pss),
        salt_length: Some(20),
        ..params()
    };
    assert!(matches!(
        sign(&rsa.private, &odd_salt, b"m"),
        Err(AsymError::Unsupported(_))
    ));
    let sha384 = CryptographicParameters {
        digital_signature_algorithm: Some(DigitalSignatureAlgorithm::EcdsaWithSha384),
        ..params()
    };
    assert!(matches!(
        sign(&p256.private, &sha384, b"m"),
        Err(AsymError::Unsupported(_))
    ));
}

#[test]
fn keys_convert_between_formats_and_still_work() {
    let pair = rsa(2048);
    let msg = b"converted";
    for format in [
        KeyFormatType::Pkcs1,
        KeyFormatType::Pkcs8,
        KeyFormatType::TransparentRsaPrivateKey,
    ] {
        let private = private_in(&pair.private, format).unwrap();
        assert_eq!(private.key_format_type, format);
        // Back to PKCS#1: the same bytes as generated.
        let back = private_in(&private, KeyFormatType::Pkcs1).unwrap();
        assert_eq!(back.key_bytes(), pair.private.key_bytes());
        let sig = sign(&private, &params(), msg).unwrap();
        for public_format in [
            KeyFormatType::Pkcs1,
            KeyFormatType::X509,
            KeyFormatType::TransparentRsaPublicKey,
        ] {
            let public = public_in(&pair.public, public_format).unwrap();
            assert!(verify(&public, &params(), msg, &sig).unwrap());
        }
    }
    assert!(matches!(
        private_in(&pair.private, KeyFormatType::X509),
        Err(AsymError::Format(_))
    ));

    let pair = ec(RecommendedCurve::P256);
    for format in [
        KeyFormatType::Pkcs8,
        KeyFormatType::EcPrivateKey,
        KeyFormatType::TransparentEcPrivateKey,
    ] {
        let private = private_in(&pair.private, format).unwrap();
        let sig = sign(&private, &params(), msg).unwrap();
        for public_format in [KeyFormatType::X509, KeyFormatType::TransparentEcPublicKey] {
            let public = public_in(&pair.public, public_format).unwrap();
            assert!(verify(&public, &params(), msg, &sig).unwrap());
        }
    }
}

#[test]
fn transparent_integers_are_positive_big_integers() {
    let pair = rsa(2048);
    let t = private_in(&pair.private, KeyFormatType::TransparentRsaPrivateKey).unwrap();
    let Some(KeyValue::Plain {
        key_material: KeyMaterial::Structure(items),
        ..
    }) = &t.key_value
    else {
        panic!("not a structure")
    };
    let modulus = items.iter().find(|i| i.tag == Tag::MODULUS).unwrap();
    let Value::BigInteger(n) = &modulus.value else {
        panic!("not a big integer")
    };
    // 2048-bit modulus: top bit set, so a leading zero byte keeps it positive.
    assert_eq!(n.len(), 257);
    assert_eq!(n[0], 0);
    // Encoded and decoded as TTLV, the key still signs.
    let encoded = kmip::message::TtlvValue::encode(&t, Tag::KEY_BLOCK, kmip::ProtocolVersion::V2_1);
    let decoded: KeyBlock = kmip::message::TtlvValue::decode(
        &kmip::ttlv::decode(&encoded.to_ttlv(), &kmip::ttlv::Limits::default()).unwrap(),
        kmip::ProtocolVersion::V2_1,
    )
    .unwrap();
    sign(&decoded, &params(), b"m").unwrap();
}

#[test]
fn oaep_round_trips_and_fails_closed() {
    let pair = rsa(2048);
    let oaep_params = |h| CryptographicParameters {
        padding_method: Some(PaddingMethod::Oaep),
        hashing_algorithm: Some(h),
        ..params()
    };
    for h in [
        HashingAlgorithm::Sha1,
        HashingAlgorithm::Sha256,
        HashingAlgorithm::Sha512,
    ] {
        let p = oaep_params(h);
        let ct = oaep_encrypt(&pair.public, &p, b"a data key").unwrap();
        assert_eq!(ct.len(), 256);
        assert_eq!(
            &oaep_decrypt(&pair.private, &p, &ct).unwrap()[..],
            b"a data key"
        );
        let mut bad = ct.clone();
        bad[10] ^= 1;
        assert_eq!(
            oaep_decrypt(&pair.private, &p, &bad),
            Err(AsymError::Failed("RSA-OAEP decryption failed"))
        );
    }
    // A label binds: decrypting with another fails.
    let labelled = CryptographicParameters {
        p_source: Some(ByteString::new(b"label".to_vec())),
        ..oaep_params(HashingAlgorithm::Sha256)
    };
    let ct = oaep_encrypt(&pair.public, &labelled, b"x").unwrap();
    assert!(oaep_decrypt(&pair.private, &oaep_params(HashingAlgorithm::Sha256), &ct).is_err());
    // Too long for the key, and PKCS#1 v1.5 encryption: refused.
    let p = oaep_params(HashingAlgorithm::Sha256);
    assert!(matches!(
        oaep_encrypt(&pair.public, &p, &[0u8; 300]),
        Err(AsymError::Unsupported(_))
    ));
    assert!(matches!(
        oaep_encrypt(&pair.public, &params(), b"x"),
        Err(AsymError::Unsupported(_))
    ));
}

#[test]
fn malformed_keys_are_refused_without_panicking() {
    let junk = |format| KeyBlock {
        key_format_type: format,
        ..KeyBlock::raw(
            vec![0x30, 0x03, 0x02, 0x01],
            Some(CryptographicAlgorithm::Rsa),
            None,
        )
    };
    for format in [
        KeyFormatType::Pkcs1,
        KeyFormatType::Pkcs8,
        KeyFormatType::X509,
        KeyFormatType::EcPrivateKey,
        KeyFormatType::TransparentRsaPrivateKey,
    ] {
        assert!(sign(&junk(format), &params(), b"m").is_err());
        assert!(verify(&junk(format), &params(), b"m", b"s").is_err());
        if format != KeyFormatType::Pkcs1 {
            assert!(private_in(&junk(format), KeyFormatType::Pkcs1).is_err());
        }
    }
}
