//! Multi-part (streaming) AES-GCM Encrypt and Decrypt: Init Indicator, Correlation Value,
//! Final Indicator (KMIP 2.1 §6.1.17, §6.1.12). The state between parts travels in the
//! Correlation Value, sealed for the tenant, the key and the direction.

use kmip::message::UsageLimits;
use kmip::spec::UsageLimitsUnit;

use super::*;
use crate::cryptosvc::{CipherParams, GcmStream};
use crate::envelope::TokenPurpose;

fn gcm() -> Option<CryptographicParameters> {
    Some(CryptographicParameters {
        block_cipher_mode: Some(BlockCipherMode::Gcm),
        tag_length: Some(16),
        ..Default::default()
    })
}

/// An Encrypt part: the first (`init`), a later one (`correlation`), the last (`last`).
fn encrypt_part(
    uid: &str,
    data: &[u8],
    correlation: Option<&[u8]>,
    init: bool,
    last: bool,
) -> EncryptRequest {
    EncryptRequest {
        unique_identifier: id(uid),
        cryptographic_parameters: gcm(),
        data: Some(data.into()),
        correlation_value: correlation.map(ByteString::from),
        init_indicator: init.then_some(true),
        final_indicator: last.then_some(true),
        iv_counter_nonce: None,
        authenticated_encryption_additional_data: None,
    }
}

fn decrypt_part(
    uid: &str,
    data: &[u8],
    correlation: Option<&[u8]>,
    init: bool,
    last: bool,
) -> DecryptRequest {
    DecryptRequest {
        unique_identifier: id(uid),
        cryptographic_parameters: gcm(),
        data: Some(data.into()),
        correlation_value: correlation.map(ByteString::from),
        init_indicator: init.then_some(true),
        final_indicator: last.then_some(true),
        ..DecryptRequest::default()
    }
}

async fn encrypted(engine: &Engine, ctx: &TenantContext, r: EncryptRequest) -> EncryptResponse {
    match ok(engine, ctx, V2_1, RequestPayload::Encrypt(r)).await {
        ResponsePayload::Encrypt(e) => e,
        other => panic!("unexpected {other:?}"),
    }
}

async fn decrypted(engine: &Engine, ctx: &TenantContext, r: DecryptRequest) -> DecryptResponse {
    match ok(engine, ctx, V2_1, RequestPayload::Decrypt(r)).await {
        ResponsePayload::Decrypt(d) => d,
        other => panic!("unexpected {other:?}"),
    }
}

const AAD: &[u8] = b"record 17 of table t";

/// Encrypts `parts` as one multi-part stream (IV generated, AAD on the first part): the IV,
/// the ciphertext of each part and the tag.
async fn encrypt_stream(
    engine: &Engine,
    ctx: &TenantContext,
    uid: &str,
    parts: &[&[u8]],
) -> (Vec<u8>, Vec<Vec<u8>>, Vec<u8>) {
    let mut first = encrypt_part(uid, parts[0], None, true, false);
    first.authenticated_encryption_additional_data = Some(AAD.into());
    let e = encrypted(engine, ctx, first).await;
    let iv = e.iv_counter_nonce.expect("generated IV").to_vec();
    assert_eq!(e.authenticated_encryption_tag, None);
    let mut token = e.correlation_value.expect("correlation value").to_vec();
    let mut out = vec![e.data.expect("data").to_vec()];
    for (i, part) in parts.iter().enumerate().skip(1) {
        let last = i == parts.len() - 1;
        let e = encrypted(
            engine,
            ctx,
            encrypt_part(uid, part, Some(&token), false, last),
        )
        .await;
        assert_eq!(e.iv_counter_nonce, None);
        out.push(e.data.expect("data").to_vec());
        if last {
            assert_eq!(e.correlation_value, None);
            return (
                iv,
                out,
                e.authenticated_encryption_tag.expect("tag").to_vec(),
            );
        }
        assert_eq!(e.authenticated_encryption_tag, None);
        token = e
            .correlation_value
            .expect("next correlation value")
            .to_vec();
    }
    panic!("a stream needs at least two parts")
}

#[tokio::test]
async fn multi_part_gcm_round_trips_in_three_parts_and_equals_one_shot() {
    let f = fixture().await;
    let t = tenant("tenant-a");
    let uid = active_aes_key(&f.engine, &t).await;
    let plain = b"a message of forty-five bytes, in 3 parts..!";
    // Cut inside a block, then at a block boundary.
    let parts: [&[u8]; 3] = [&plain[..5], &plain[5..32], &plain[32..]];
    let (iv, ciphertext, tag) = encrypt_stream(&f.engine, &t, &uid, &parts).await;
    assert_eq!(iv.len(), 12);
    for (c, p) in ciphertext.iter().zip(parts) {
        assert_eq!(c.len(), p.len());
    }
    let ciphertext = ciphertext.concat();
    // The same as one single-part Encrypt with that IV and AAD.
    let mut one = encrypt_part(&uid, plain, None, false, false);
    one.iv_counter_nonce = Some(iv.as_slice().into());
    one.authenticated_encryption_additional_data = Some(AAD.into());
    let one = encrypted(&f.engine, &t, one).await;
    assert_eq!(one.data.as_deref(), Some(&ciphertext[..]));
    assert_eq!(one.authenticated_encryption_tag.as_deref(), Some(&tag[..]));

    // Decrypt in three other parts, the tag with the last one.
    let cuts = [&ciphertext[..16], &ciphertext[16..17], &ciphertext[17..]];
    let mut first = decrypt_part(&uid, cuts[0], None, true, false);
    first.iv_counter_nonce = Some(iv.as_slice().into());
    first.authenticated_encryption_additional_data = Some(AAD.into());
    let d1 = decrypted(&f.engine, &t, first).await;
    let token = d1.correlation_value.expect("correlation value").to_vec();
    let d2 = decrypted(
        &f.engine,
        &t,
        decrypt_part(&uid, cuts[1], Some(&token), false, false),
    )
    .await;
    let token = d2.correlation_value.expect("correlation value").to_vec();
    let mut last = decrypt_part(&uid, cuts[2], Some(&token), false, true);
    last.authenticated_encryption_tag = Some(tag.as_slice().into());
    let d3 = decrypted(&f.engine, &t, last.clone()).await;
    assert_eq!(d3.correlation_value, None);
    let mut opened = d1.data.expect("data").to_vec();
    opened.extend_from_slice(&d2.data.expect("data"));
    opened.extend_from_slice(&d3.data.expect("data"));
    assert_eq!(opened, plain);

    // The last part checks the tag over the whole stream: a wrong tag, or a tampered part,
    // is a Cryptographic Failure.
    let mut bad_tag = last.clone();
    let mut wrong = tag.clone();
    wrong[15] ^= 1;
    bad_tag.authenticated_encryption_tag = Some(wrong.into());
    let (reason, _) = fails(&f.engine, &t, V2_1, RequestPayload::Decrypt(bad_tag)).await;
    assert_eq!(reason, ResultReason::CryptographicFailure);
    let mut tampered = last.clone();
    let mut data = cuts[2].to_vec();
    data[0] ^= 1;
    tampered.data = Some(data.into());
    let (reason, _) = fails(&f.engine, &t, V2_1, RequestPayload::Decrypt(tampered)).await;
    assert_eq!(reason, ResultReason::CryptographicFailure);
    let mut no_tag = last;
    no_tag.authenticated_encryption_tag = None;
    let (reason, _) = fails(&f.engine, &t, V2_1, RequestPayload::Decrypt(no_tag)).await;
    assert_eq!(reason, ResultReason::InvalidMessage);

    // KMIP's way: the tag with the first part (KMIP 2.1 Table 196), kept in the Correlation
    // Value; the last part may carry no data (Data is optional in a multi-part operation).
    let mut first = decrypt_part(&uid, &ciphertext[..40], None, true, false);
    first.iv_counter_nonce = Some(iv.as_slice().into());
    first.authenticated_encryption_additional_data = Some(AAD.into());
    first.authenticated_encryption_tag = Some(tag.as_slice().into());
    let d1 = decrypted(&f.engine, &t, first.clone()).await;
    let token = d1.correlation_value.expect("correlation value").to_vec();
    let d2 = decrypted(
        &f.engine,
        &t,
        decrypt_part(&uid, &ciphertext[40..], Some(&token), false, false),
    )
    .await;
    let token = d2.correlation_value.expect("correlation value").to_vec();
    let mut end = decrypt_part(&uid, b"", Some(&token), false, true);
    end.data = None;
    let d3 = decrypted(&f.engine, &t, end).await;
    assert_eq!(d3.data.as_deref(), Some(&[][..]));
    let mut opened = d1.data.expect("data").to_vec();
    opened.extend_from_slice(&d2.data.expect("data"));
    assert_eq!(opened, plain);
    // A wrong tag given first fails at the end.
    let mut wrong = tag.clone();
    wrong[0] ^= 1;
    first.data = Some(ciphertext.as_slice().into());
    first.authenticated_encryption_tag = Some(wrong.into());
    let d = decrypted(&f.engine, &t, first).await;
    let token = d.correlation_value.expect("correlation value").to_vec();
    let (reason, _) = fails(
        &f.engine,
        &t,
        V2_1,
        RequestPayload::Decrypt(decrypt_part(&uid, b"", Some(&token), false, true)),
    )
    .await;
    assert_eq!(reason, ResultReason::CryptographicFailure);

    // Init and Final Indicator both true: one single part.
    let mut single = encrypt_part(&uid, plain, None, true, true);
    single.iv_counter_nonce = Some(iv.as_slice().into());
    single.authenticated_encryption_additional_data = Some(AAD.into());
    let single = encrypted(&f.engine, &t, single).await;
    assert_eq!(single.correlation_value, None);
    assert_eq!(single.data.as_deref(), Some(&ciphertext[..]));
    assert_eq!(
        single.authenticated_encryption_tag.as_deref(),
        Some(&tag[..])
    );
}

#[tokio::test]
async fn a_correlation_value_opens_only_for_its_tenant_key_and_direction() {
    let f = fixture().await;
    let a = tenant("tenant-a");
    let b = tenant("tenant-b");
    let key_a = active_aes_key(&f.engine, &a).await;
    let other_key_a = active_aes_key(&f.engine, &a).await;
    let key_b = active_aes_key(&f.engine, &b).await;
    let e = encrypted(
        &f.engine,
        &a,
        encrypt_part(&key_a, b"first part", None, true, false),
    )
    .await;
    let token = e.correlation_value.expect("correlation value").to_vec();
    let next = |uid: &str, token: &[u8]| {
        RequestPayload::Encrypt(encrypt_part(uid, b"next", Some(token), false, true))
    };
    let garbage = fails(&f.engine, &a, V2_1, next(&key_a, b"not a token at all")).await;
    assert_eq!(garbage.0, ResultReason::InvalidField);
    assert!(
        garbage
            .1
            .contains("Correlation Value is not one this server issued"),
        "{}",
        garbage.1
    );
    let mut tampered = token.clone();
    let at = tampered.len() - 20;
    tampered[at] ^= 1;
    let mut truncated = token.clone();
    truncated.truncate(token.len() - 1);
    for (ctx, refused) in [
        (&b, next(&key_b, &token)),
        (&a, next(&other_key_a, &token)),
        (&a, next(&key_a, &tampered)),
        (&a, next(&key_a, &truncated)),
        (&a, next(&key_a, &[])),
        // An Encrypt's Correlation Value does not continue a Decrypt.
        (
            &a,
            RequestPayload::Decrypt(decrypt_part(&key_a, b"next", Some(&token), false, false)),
        ),
    ] {
        assert_eq!(fails(&f.engine, ctx, V2_1, refused).await, garbage);
    }
    // Tenant B cannot even name tenant A's key.
    let (reason, _) = fails(&f.engine, &b, V2_1, next(&key_a, &token)).await;
    assert_eq!(reason, ResultReason::ObjectNotFound);
    // The genuine token still continues the stream (tokens are not single-use: see
    // docs/conformance.md #3).
    let e = encrypted(
        &f.engine,
        &a,
        encrypt_part(&key_a, b"next", Some(&token), false, true),
    )
    .await;
    assert!(e.authenticated_encryption_tag.is_some());
}

#[tokio::test]
async fn an_expired_correlation_value_is_refused() {
    let f = fixture().await;
    let t = tenant("tenant-a");
    let uid = active_aes_key(&f.engine, &t).await;
    let key = [0u8; 32];
    let p = CipherParams::new(BlockCipherMode::Gcm);
    let (stream, _) = GcmStream::start_encrypt(&key, &p, None, None).expect("start");
    let seal = |issued: i64| {
        let mut payload = issued.to_be_bytes().to_vec();
        payload.extend_from_slice(&stream.to_bytes());
        f.engine
            .keyring
            .seal_token(&t.tenant, &uid, TokenPurpose::GcmEncryptStream, &payload)
    };
    let now = kmip::message::DateTime::now().seconds();
    for issued in [now - 601, now + 3600] {
        let (reason, message) = fails(
            &f.engine,
            &t,
            V2_1,
            RequestPayload::Encrypt(encrypt_part(&uid, b"x", Some(&seal(issued)), false, true)),
        )
        .await;
        assert_eq!(reason, ResultReason::InvalidField);
        assert!(message.contains("has expired"), "{message}");
    }
    let fresh = encrypted(
        &f.engine,
        &t,
        encrypt_part(&uid, b"x", Some(&seal(now - 590)), false, true),
    )
    .await;
    assert!(fresh.authenticated_encryption_tag.is_some());
}

#[tokio::test]
async fn multi_part_gcm_is_bounded_and_other_modes_still_refuse_it() {
    let f = fixture().await;
    let t = tenant("tenant-a");
    let uid = active_aes_key(&f.engine, &t).await;
    // Up to 64 KiB in all; one byte more is refused, with a message saying why.
    let e = encrypted(
        &f.engine,
        &t,
        encrypt_part(&uid, &[7u8; 65535], None, true, false),
    )
    .await;
    let token = e.correlation_value.expect("correlation value").to_vec();
    let (reason, message) = fails(
        &f.engine,
        &t,
        V2_1,
        RequestPayload::Encrypt(encrypt_part(&uid, &[7u8; 2], Some(&token), false, true)),
    )
    .await;
    assert_eq!(reason, ResultReason::InvalidField);
    assert!(message.contains("at most 65536 bytes"), "{message}");
    let e = encrypted(
        &f.engine,
        &t,
        encrypt_part(&uid, &[7u8; 1], Some(&token), false, true),
    )
    .await;
    assert!(e.authenticated_encryption_tag.is_some());

    // Other modes: Feature Not Supported, as before.
    let cbc = CryptographicParameters {
        block_cipher_mode: Some(BlockCipherMode::Cbc),
        ..Default::default()
    };
    let mut first = encrypt_part(&uid, b"data", None, true, false);
    first.cryptographic_parameters = Some(cbc.clone());
    let (reason, _) = fails(&f.engine, &t, V2_1, RequestPayload::Encrypt(first)).await;
    assert_eq!(reason, ResultReason::FeatureNotSupported);
    let mut first = decrypt_part(&uid, &[0u8; 16], None, true, false);
    first.cryptographic_parameters = Some(cbc);
    first.iv_counter_nonce = Some([0u8; 16].as_slice().into());
    let (reason, _) = fails(&f.engine, &t, V2_1, RequestPayload::Decrypt(first)).await;
    assert_eq!(reason, ResultReason::FeatureNotSupported);

    // Malformed sequences.
    let e = encrypted(
        &f.engine,
        &t,
        encrypt_part(&uid, b"data", None, true, false),
    )
    .await;
    let token = e.correlation_value.expect("correlation value").to_vec();
    let mut both = encrypt_part(&uid, b"data", Some(&token), true, false);
    let (reason, _) = fails(&f.engine, &t, V2_1, RequestPayload::Encrypt(both.clone())).await;
    assert_eq!(reason, ResultReason::InvalidMessage);
    both.init_indicator = Some(false);
    both.correlation_value = None;
    let (reason, _) = fails(&f.engine, &t, V2_1, RequestPayload::Encrypt(both)).await;
    assert_eq!(reason, ResultReason::InvalidMessage);
    let mut late_iv = encrypt_part(&uid, b"data", Some(&token), false, false);
    late_iv.iv_counter_nonce = Some([1u8; 12].as_slice().into());
    let (reason, _) = fails(&f.engine, &t, V2_1, RequestPayload::Encrypt(late_iv)).await;
    assert_eq!(reason, ResultReason::InvalidField);
    let mut late_aad = encrypt_part(&uid, b"data", Some(&token), false, false);
    late_aad.authenticated_encryption_additional_data = Some(AAD.into());
    let (reason, _) = fails(&f.engine, &t, V2_1, RequestPayload::Encrypt(late_aad)).await;
    assert_eq!(reason, ResultReason::InvalidField);
    // A Decrypt's tag goes with its first part or its last, once; not with a middle one.
    let mut first = decrypt_part(&uid, b"data", None, true, false);
    first.iv_counter_nonce = Some([1u8; 12].as_slice().into());
    first.authenticated_encryption_tag = Some([0u8; 16].as_slice().into());
    let d = decrypted(&f.engine, &t, first.clone()).await;
    let with_tag = d.correlation_value.expect("correlation value").to_vec();
    first.authenticated_encryption_tag = None;
    let d = decrypted(&f.engine, &t, first).await;
    let without_tag = d.correlation_value.expect("correlation value").to_vec();
    for (token, last) in [(&with_tag, true), (&with_tag, false), (&without_tag, false)] {
        let mut part = decrypt_part(&uid, b"more", Some(token), false, last);
        part.authenticated_encryption_tag = Some([0u8; 16].as_slice().into());
        let (reason, message) = fails(&f.engine, &t, V2_1, RequestPayload::Decrypt(part)).await;
        assert_eq!(reason, ResultReason::InvalidField);
        assert!(
            message.contains("first part, or else its last"),
            "{message}"
        );
    }
}

#[tokio::test]
async fn each_part_of_a_multi_part_encrypt_takes_its_usage() {
    let f = fixture().await;
    let t = tenant("tenant-a");
    let uid = active_aes_key(&f.engine, &t).await;
    let limits = UsageLimits {
        total: 20,
        count: None,
        unit: UsageLimitsUnit::Byte,
    };
    let set = RequestPayload::SetAttribute(SetAttributeRequest {
        unique_identifier: id(&uid),
        attribute: Some(Attribute::typed(Tag::USAGE_LIMITS, &limits)),
    });
    ok(&f.engine, &t, V2_1, set).await;
    let e = encrypted(
        &f.engine,
        &t,
        encrypt_part(&uid, &[1u8; 8], None, true, false),
    )
    .await;
    let token = e.correlation_value.expect("correlation value").to_vec();
    let e = encrypted(
        &f.engine,
        &t,
        encrypt_part(&uid, &[1u8; 8], Some(&token), false, false),
    )
    .await;
    let token = e.correlation_value.expect("correlation value").to_vec();
    // 16 of 20 bytes spent: 8 more are refused.
    let (reason, _) = fails(
        &f.engine,
        &t,
        V2_1,
        RequestPayload::Encrypt(encrypt_part(&uid, &[1u8; 8], Some(&token), false, true)),
    )
    .await;
    assert_eq!(reason, ResultReason::PermissionDenied);
}
