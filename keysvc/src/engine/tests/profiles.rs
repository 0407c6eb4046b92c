//! What the KMIP profiles (Symmetric Key Lifecycle, Symmetric Key Foundry, Cryptographic
//! Services Basic Cipher, Baseline) require of the engine: server-maintained attributes,
//! usage limits and date windows, Locate's exclusions and order, Check, Log, Interop.

use kmip::message::{DateTime, Digest, Interval, RngParameters, UsageLimits};
use kmip::spec::{InteropFunction, RngAlgorithm, StorageStatusMask, UsageLimitsUnit};

use super::*;

/// KMIP 2.1 test key `0123456789abcdef0123456789abcdef` (CS-BC-M-4…9).
const PROFILE_KEY: &str = "0123456789abcdef0123456789abcdef";

fn bytes(hex_text: &str) -> Vec<u8> {
    hex::decode(hex_text).expect("hex")
}

async fn register_key(
    engine: &Engine,
    ctx: &TenantContext,
    v: ProtocolVersion,
    algorithm: CryptographicAlgorithm,
    material: Vec<u8>,
    attributes: Attributes,
) -> String {
    let bits = (material.len() * 8) as i32;
    let register = RequestPayload::Register(RegisterRequest {
        object_type: ObjectType::SymmetricKey,
        attributes: Some(attributes),
        object: Some(ManagedObject::SymmetricKey(SymmetricKey {
            key_block: KeyBlock::raw(material, Some(algorithm), Some(bits)),
        })),
        protection_storage_masks: None,
    });
    match ok(engine, ctx, v, register).await {
        ResponsePayload::Register(r) => r.unique_identifier.as_text().expect("uid").to_owned(),
        other => panic!("unexpected {other:?}"),
    }
}

fn usage(mask: CryptographicUsageMask) -> Attributes {
    Attributes::new().with(Tag::CRYPTOGRAPHIC_USAGE_MASK, &mask)
}

fn ago(seconds: i64) -> DateTime {
    DateTime::Seconds(DateTime::now().seconds() - seconds)
}

fn ecb() -> Option<CryptographicParameters> {
    Some(CryptographicParameters {
        block_cipher_mode: Some(BlockCipherMode::Ecb),
        ..Default::default()
    })
}

async fn attributes_of(
    engine: &Engine,
    ctx: &TenantContext,
    v: ProtocolVersion,
    uid: &str,
) -> Attributes {
    match ok(engine, ctx, v, get_attributes(uid, &[])).await {
        ResponsePayload::GetAttributes(r) => r.attributes.expect("attributes"),
        other => panic!("unexpected {other:?}"),
    }
}

async fn located(
    engine: &Engine,
    ctx: &TenantContext,
    attributes: Attributes,
    mask: Option<StorageStatusMask>,
) -> Vec<String> {
    let request = RequestPayload::Locate(LocateRequest {
        maximum_items: None,
        offset_items: None,
        storage_status_mask: mask.map(|m| m.0 as i32),
        object_group_member: None,
        attributes: Some(attributes),
    });
    match ok(engine, ctx, V2_1, request).await {
        ResponsePayload::Locate(r) => r
            .unique_identifiers
            .iter()
            .map(|u| u.as_text().expect("uid").to_owned())
            .collect(),
        other => panic!("unexpected {other:?}"),
    }
}

#[tokio::test]
async fn ecb_encrypts_single_blocks_and_usage_limits_run_out() {
    let f = fixture().await;
    let t = tenant("tenant-a");
    let both = CryptographicUsageMask::ENCRYPT | CryptographicUsageMask::DECRYPT;
    let limits = UsageLimits {
        total: 16,
        // A client's Count is ignored: the whole Total is available (KMIP 2.1 §4.59).
        count: Some(1),
        unit: UsageLimitsUnit::Byte,
    };
    let attrs = usage(both)
        .with(Tag::ACTIVATION_DATE, &ago(3600))
        .with(Tag::USAGE_LIMITS, &limits);
    let uid = register_key(
        &f.engine,
        &t,
        V2_1,
        CryptographicAlgorithm::Aes,
        bytes(PROFILE_KEY),
        attrs,
    )
    .await;
    let block = bytes("01020304050607080910111213141516");
    // CS-BC-M-4: AES-128-ECB, no padding by default.
    let ResponsePayload::Encrypt(sealed) =
        ok(&f.engine, &t, V2_1, encrypt(&uid, &block, ecb(), None)).await
    else {
        panic!()
    };
    assert_eq!(
        sealed.data.as_deref(),
        Some(&bytes("d9bcce11b0b437b90239552df3a360c9")[..])
    );
    assert_eq!(sealed.iv_counter_nonce, None);
    let left: UsageLimits = attributes_of(&f.engine, &t, V2_1, &uid)
        .await
        .typed(Tag::USAGE_LIMITS)
        .expect("decodes")
        .expect("present");
    assert_eq!(left.count, Some(0));
    // The 16 bytes are spent: the next Encrypt is refused in every version, Decrypt is not
    // limited.
    for v in [V1_4, V2_0, V2_1] {
        assert_eq!(
            fails(&f.engine, &t, v, encrypt(&uid, &block, ecb(), None))
                .await
                .0,
            ResultReason::PermissionDenied
        );
    }
    let ResponsePayload::Decrypt(plain) = ok(
        &f.engine,
        &t,
        V2_1,
        decrypt(
            &uid,
            sealed.data.as_deref().expect("data"),
            ecb(),
            None,
            None,
        ),
    )
    .await
    else {
        panic!()
    };
    assert_eq!(plain.data.as_deref(), Some(&block[..]));
    // Setting the limits again does not give the used bytes back.
    let reset = RequestPayload::SetAttribute(SetAttributeRequest {
        unique_identifier: id(&uid),
        attribute: Some(Attribute::typed(
            Tag::USAGE_LIMITS,
            &UsageLimits {
                total: 32,
                count: Some(32),
                unit: UsageLimitsUnit::Byte,
            },
        )),
    });
    ok(&f.engine, &t, V2_1, reset).await;
    let left: UsageLimits = attributes_of(&f.engine, &t, V2_1, &uid)
        .await
        .typed(Tag::USAGE_LIMITS)
        .expect("decodes")
        .expect("present");
    assert_eq!(left.count, Some(16));
}

#[tokio::test]
async fn protect_stop_and_process_start_dates_bound_encrypt_and_decrypt() {
    let f = fixture().await;
    let t = tenant("tenant-a");
    let both = CryptographicUsageMask::ENCRYPT | CryptographicUsageMask::DECRYPT;
    // CS-BC-M-14: active, but past its Protect Stop Date and before its Process Start Date.
    let attrs = usage(both)
        .with(Tag::ACTIVATION_DATE, &ago(3600))
        .with(Tag::PROCESS_START_DATE, &ago(-3600))
        .with(Tag::PROTECT_STOP_DATE, &ago(3600));
    let uid = register_key(
        &f.engine,
        &t,
        V2_1,
        CryptographicAlgorithm::Aes,
        bytes(PROFILE_KEY),
        attrs,
    )
    .await;
    assert_eq!(state_of(&f.engine, &t, &uid).await, State::Active);
    let block = [0u8; 16];
    for (v, reason) in [
        (V2_1, ResultReason::WrongKeyLifecycleState),
        (V2_0, ResultReason::PermissionDenied),
        (V1_4, ResultReason::PermissionDenied),
    ] {
        let (got, message) = fails(&f.engine, &t, v, encrypt(&uid, &block, ecb(), None)).await;
        assert_eq!(got, reason, "{v}");
        assert!(message.contains("Protect Stop Date"), "{message}");
        let (got, message) =
            fails(&f.engine, &t, v, decrypt(&uid, &block, ecb(), None, None)).await;
        assert_eq!(got, reason, "{v}");
        assert!(message.contains("Process Start Date"), "{message}");
    }
    // A key inside both windows works.
    let open = register_key(
        &f.engine,
        &t,
        V2_1,
        CryptographicAlgorithm::Aes,
        bytes(PROFILE_KEY),
        usage(both)
            .with(Tag::ACTIVATION_DATE, &ago(3600))
            .with(Tag::PROCESS_START_DATE, &ago(60))
            .with(Tag::PROTECT_STOP_DATE, &ago(-3600)),
    )
    .await;
    ok(&f.engine, &t, V2_1, encrypt(&open, &block, ecb(), None)).await;
    ok(
        &f.engine,
        &t,
        V2_1,
        decrypt(&open, &block, ecb(), None, None),
    )
    .await;
}

#[tokio::test]
async fn new_objects_carry_the_attributes_the_server_maintains() {
    let f = fixture().await;
    let t = tenant("tenant-a");
    let uid = new_key(
        &f.engine,
        &t,
        V2_1,
        key_attributes(CryptographicAlgorithm::Aes, 256),
    )
    .await;
    let attrs = attributes_of(&f.engine, &t, V2_1, &uid).await;
    let flag = |tag: Tag| {
        let value = attrs.typed::<bool>(tag).expect("boolean");
        value.unwrap_or_else(|| panic!("{} is not set", tag.name().unwrap_or("?")))
    };
    assert!(!flag(Tag::SENSITIVE) && !flag(Tag::ALWAYS_SENSITIVE));
    assert!(flag(Tag::EXTRACTABLE) && !flag(Tag::NEVER_EXTRACTABLE));
    assert!(flag(Tag::FRESH));
    let initial: DateTime = attrs.typed(Tag::INITIAL_DATE).expect("date").expect("set");
    let original: DateTime = attrs
        .typed(Tag::ORIGINAL_CREATION_DATE)
        .expect("date")
        .expect("set");
    assert_eq!(original, initial);
    let rng: RngParameters = attrs
        .typed(Tag::RANDOM_NUMBER_GENERATOR)
        .expect("decodes")
        .expect("set");
    assert_eq!(rng.rng_algorithm, RngAlgorithm::Unspecified);
    assert_eq!(
        attrs.typed::<Interval>(Tag::LEASE_TIME).expect("interval"),
        Some(Interval(0))
    );
    assert_eq!(
        attrs
            .typed::<KeyFormatType>(Tag::KEY_FORMAT_TYPE)
            .expect("enum"),
        Some(KeyFormatType::Raw)
    );
    assert_eq!(
        attrs.get(Tag::PROTECTION_STORAGE_MASK).map(|a| &a.value),
        Some(&Value::Integer(1))
    );
    let short: ByteString = attrs
        .typed(Tag::SHORT_UNIQUE_IDENTIFIER)
        .expect("bytes")
        .expect("set");
    assert_eq!(&short[..], &crate::cryptosvc::sha256(uid.as_bytes())[..]);
    // The Digest is SHA-256 over the Raw key material.
    let digest: Digest = attrs.typed(Tag::DIGEST).expect("decodes").expect("set");
    let (_, key) = key_of(&f.engine, &t, &uid).await;
    let material = key
        .key_block()
        .and_then(|b| b.key_bytes())
        .expect("material");
    assert_eq!(
        digest.hashing_algorithm,
        kmip::spec::HashingAlgorithm::Sha256
    );
    assert_eq!(digest.key_format_type, Some(KeyFormatType::Raw));
    assert_eq!(
        digest.digest_value.as_deref(),
        Some(&crate::cryptosvc::sha256(material)[..])
    );
    // Served once by Get: no longer Fresh.
    let attrs = attributes_of(&f.engine, &t, V2_1, &uid).await;
    assert_eq!(attrs.typed::<bool>(Tag::FRESH).expect("bool"), Some(false));
    // A 1.2 client sees none of the 1.4 and 2.x attributes; 1.4 sees no 2.x attribute.
    let old = attributes_of(&f.engine, &t, V1_2, &uid).await;
    for tag in [
        Tag::SENSITIVE,
        Tag::ALWAYS_SENSITIVE,
        Tag::EXTRACTABLE,
        Tag::NEVER_EXTRACTABLE,
        Tag::KEY_FORMAT_TYPE,
        Tag::SHORT_UNIQUE_IDENTIFIER,
        Tag::PROTECTION_STORAGE_MASK,
        Tag::RANDOM_NUMBER_GENERATOR,
    ] {
        assert!(old.get(tag).is_none(), "{tag:?} reached a 1.2 client");
    }
    assert!(old.get(Tag::DIGEST).is_some() && old.get(Tag::FRESH).is_some());
    let v14 = attributes_of(&f.engine, &t, V1_4, &uid).await;
    assert!(v14.get(Tag::SENSITIVE).is_some());
    assert!(v14.get(Tag::KEY_FORMAT_TYPE).is_none());
    assert!(v14.get(Tag::SHORT_UNIQUE_IDENTIFIER).is_none());
    // A registered object was not generated here: no generator, no original creation date.
    let registered = register_key(
        &f.engine,
        &t,
        V2_1,
        CryptographicAlgorithm::Aes,
        bytes(PROFILE_KEY),
        Attributes::new(),
    )
    .await;
    let attrs = attributes_of(&f.engine, &t, V2_1, &registered).await;
    assert!(attrs.get(Tag::RANDOM_NUMBER_GENERATOR).is_none());
    assert!(attrs.get(Tag::ORIGINAL_CREATION_DATE).is_none());
    assert!(attrs.get(Tag::DIGEST).is_some());
    // None of them is the client's to change.
    let forge = RequestPayload::ModifyAttribute(ModifyAttributeRequest {
        unique_identifier: id(&uid),
        current_attribute: None,
        attribute: Some(Attribute::typed(Tag::FRESH, &true)),
    });
    assert_eq!(
        fails(&f.engine, &t, V2_1, forge).await.0,
        ResultReason::AttributeReadOnly
    );
}

#[tokio::test]
async fn sensitive_and_non_extractable_keys_are_not_served() {
    let f = fixture().await;
    let t = tenant("tenant-a");
    let sensitive = new_key(
        &f.engine,
        &t,
        V2_1,
        key_attributes(CryptographicAlgorithm::Aes, 128).with(Tag::SENSITIVE, &true),
    )
    .await;
    assert_eq!(
        fails(&f.engine, &t, V2_1, get(&sensitive, None)).await.0,
        ResultReason::Sensitive
    );
    let attrs = attributes_of(&f.engine, &t, V2_1, &sensitive).await;
    assert_eq!(
        attrs.typed::<bool>(Tag::ALWAYS_SENSITIVE).expect("bool"),
        Some(true)
    );
    assert_eq!(attrs.typed::<bool>(Tag::FRESH).expect("bool"), Some(true));
    // Once Sensitive has been False, Always Sensitive stays False.
    let relax = RequestPayload::SetAttribute(SetAttributeRequest {
        unique_identifier: id(&sensitive),
        attribute: Some(Attribute::typed(Tag::SENSITIVE, &false)),
    });
    ok(&f.engine, &t, V2_1, relax).await;
    ok(&f.engine, &t, V2_1, get(&sensitive, None)).await;
    let attrs = attributes_of(&f.engine, &t, V2_1, &sensitive).await;
    assert_eq!(
        attrs.typed::<bool>(Tag::ALWAYS_SENSITIVE).expect("bool"),
        Some(false)
    );
    // Sensitive always has a value: it may change, not go.
    let delete = RequestPayload::DeleteAttribute(DeleteAttributeRequest {
        unique_identifier: id(&sensitive),
        current_attribute: None,
        attribute_names: vec![AttributeName::Standard(Tag::SENSITIVE)],
        attribute_index: None,
    });
    assert_eq!(
        fails(&f.engine, &t, V2_1, delete).await.0,
        ResultReason::AttributeReadOnly
    );
    let sealed_in = new_key(
        &f.engine,
        &t,
        V2_1,
        key_attributes(CryptographicAlgorithm::Aes, 128).with(Tag::EXTRACTABLE, &false),
    )
    .await;
    assert_eq!(
        fails(&f.engine, &t, V2_1, get(&sealed_in, None)).await.0,
        ResultReason::NotExtractable
    );
    let attrs = attributes_of(&f.engine, &t, V2_1, &sealed_in).await;
    assert_eq!(
        attrs.typed::<bool>(Tag::NEVER_EXTRACTABLE).expect("bool"),
        Some(true)
    );
}

#[tokio::test]
async fn activation_date_is_fixed_once_the_key_has_left_pre_active() {
    let f = fixture().await;
    let t = tenant("tenant-a");
    let pre_active = new_key(
        &f.engine,
        &t,
        V2_1,
        key_attributes(CryptographicAlgorithm::Aes, 256),
    )
    .await;
    let set_activation = |uid: &str| {
        RequestPayload::SetAttribute(SetAttributeRequest {
            unique_identifier: id(uid),
            attribute: Some(Attribute::typed(Tag::ACTIVATION_DATE, &ago(-86_400))),
        })
    };
    ok(&f.engine, &t, V2_1, set_activation(&pre_active)).await;
    let active = active_aes_key(&f.engine, &t).await;
    assert_eq!(
        fails(&f.engine, &t, V2_1, set_activation(&active)).await.0,
        ResultReason::WrongKeyLifecycleState
    );
    // SKLC-M-3 in 1.4: Modify Attribute of the Activation Date.
    let modify = RequestPayload::ModifyAttribute(ModifyAttributeRequest {
        unique_identifier: id(&active),
        current_attribute: None,
        attribute: Some(Attribute::typed(Tag::ACTIVATION_DATE, &ago(0))),
    });
    assert_eq!(
        fails(&f.engine, &t, V1_4, modify).await.0,
        ResultReason::PermissionDenied
    );
}

#[tokio::test]
async fn locate_leaves_out_destroyed_objects_and_lists_the_newest_first() {
    let f = fixture().await;
    let t = tenant("tenant-a");
    let named =
        |n: &str| key_attributes(CryptographicAlgorithm::Aes, 256).with(Tag::NAME, &Name::text(n));
    let older = new_key(&f.engine, &t, V2_1, named("twin")).await;
    let newer = new_key(&f.engine, &t, V2_1, named("twin")).await;
    let gone = new_key(&f.engine, &t, V2_1, named("gone")).await;
    ok(&f.engine, &t, V2_1, destroy(&gone)).await;
    let by_name = |n: &str| Attributes::new().with(Tag::NAME, &Name::text(n));
    assert_eq!(
        located(&f.engine, &t, by_name("twin"), None).await,
        [newer.clone(), older.clone()]
    );
    assert!(located(&f.engine, &t, by_name("gone"), None)
        .await
        .is_empty());
    assert_eq!(
        located(
            &f.engine,
            &t,
            by_name("gone"),
            Some(StorageStatusMask::DESTROYED_STORAGE)
        )
        .await,
        std::slice::from_ref(&gone)
    );
    let everything = located(
        &f.engine,
        &t,
        Attributes::new(),
        Some(StorageStatusMask::ON_LINE_STORAGE | StorageStatusMask::DESTROYED_STORAGE),
    )
    .await;
    assert_eq!(everything, [gone.clone(), newer.clone(), older.clone()]);
    // Two matches empty the ID Placeholder: a batched Get naming no object fails.
    let batch = RequestMessage::new(
        V2_1,
        vec![
            RequestPayload::Locate(LocateRequest {
                maximum_items: None,
                offset_items: None,
                storage_status_mask: None,
                object_group_member: None,
                attributes: Some(by_name("twin")),
            }),
            RequestPayload::Get(GetRequest {
                unique_identifier: None,
                key_format_type: None,
                key_wrap_type: None,
                key_compression_type: None,
                key_wrapping_specification: None,
            }),
        ],
    );
    let response = send(&f.engine, &t, &batch).await;
    assert_eq!(response.batch_items[0].result_status, ResultStatus::Success);
    assert_eq!(
        response.batch_items[1].result_status,
        ResultStatus::OperationFailed
    );
}

#[tokio::test]
async fn check_and_undo_keep_the_batch_honest() {
    let f = fixture().await;
    let t = tenant("tenant-a");
    let uid = new_key(
        &f.engine,
        &t,
        V2_1,
        key_attributes(CryptographicAlgorithm::Aes, 128).with(
            Tag::CRYPTOGRAPHIC_USAGE_MASK,
            &CryptographicUsageMask::ENCRYPT,
        ),
    )
    .await;
    let check = |mask: CryptographicUsageMask| {
        RequestPayload::Check(CheckRequest {
            unique_identifier: id(&uid),
            usage_limits_count: None,
            cryptographic_usage_mask: Some(mask),
            lease_time: None,
        })
    };
    let ResponsePayload::Check(r) =
        ok(&f.engine, &t, V2_1, check(CryptographicUsageMask::ENCRYPT)).await
    else {
        panic!()
    };
    assert_eq!(r.unique_identifier, id(&uid));
    assert_eq!(
        fails(&f.engine, &t, V2_1, check(CryptographicUsageMask::DECRYPT))
            .await
            .0,
        ResultReason::IncompatibleCryptographicUsageMask
    );
    assert_eq!(
        fails(&f.engine, &t, V1_4, check(CryptographicUsageMask::DECRYPT))
            .await
            .0,
        ResultReason::PermissionDenied
    );
    // BL-M-2: Activate + Check + failing Check under Undo. The undone items keep their
    // payloads; the key is still Pre-Active, in the store and in the cache.
    let mut batch = RequestMessage::new(
        V2_1,
        vec![
            activate(&uid),
            check(CryptographicUsageMask::ENCRYPT),
            check(CryptographicUsageMask::DECRYPT),
        ],
    );
    batch.header.batch_error_continuation_option = Some(BatchErrorContinuationOption::Undo);
    let response = send(&f.engine, &t, &batch).await;
    let statuses: Vec<_> = response
        .batch_items
        .iter()
        .map(|i| i.result_status)
        .collect();
    assert_eq!(
        statuses,
        [
            ResultStatus::OperationUndone,
            ResultStatus::OperationUndone,
            ResultStatus::OperationFailed
        ]
    );
    assert!(matches!(
        &response.batch_items[0].payload,
        Some(Ok(ResponsePayload::Activate(r))) if r.unique_identifier == uid.as_str().into()
    ));
    assert_eq!(state_of(&f.engine, &t, &uid).await, State::PreActive);
}

#[tokio::test]
async fn log_is_accepted_and_interop_only_when_configured() {
    let f = fixture().await;
    let t = tenant("tenant-a");
    let log = RequestPayload::Log(LogRequest {
        log_message: "rotated the payments key".into(),
    });
    ok(&f.engine, &t, V2_1, log).await;
    let interop = || {
        RequestPayload::Interop(InteropRequest {
            interop_function: InteropFunction::Begin,
            interop_identifier: "BL-M-1-21".into(),
        })
    };
    // KMIP 2.1 §6.1.26: not in a production server.
    assert_eq!(
        fails(&f.engine, &t, V2_1, interop()).await.0,
        ResultReason::OperationNotSupported
    );
    let testing = Engine::new(
        f.engine.store().clone(),
        f.engine.keyring.clone(),
        EngineConfig {
            interop: true,
            ..EngineConfig::default()
        },
    );
    ok(&testing, &t, V2_1, interop()).await;
}

#[tokio::test]
async fn triple_des_keys_are_created_and_chacha20_encrypts() {
    let f = fixture().await;
    let t = tenant("tenant-a");
    // SKFF-M-4: a 168-bit 3DES key is 24 bytes with DES parity.
    let des3 = new_key(
        &f.engine,
        &t,
        V2_1,
        key_attributes(CryptographicAlgorithm::Des3, 168),
    )
    .await;
    let (_, key) = key_of(&f.engine, &t, &des3).await;
    let material = key
        .key_block()
        .and_then(|b| b.key_bytes())
        .expect("material");
    assert_eq!(material.len(), 24);
    assert!(material.iter().all(|b| b.count_ones() % 2 == 1));
    // CS-BC-M-CHACHA20-1: the all-zero key and 64-bit nonce, empty Cryptographic Parameters.
    let chacha = register_key(
        &f.engine,
        &t,
        V2_1,
        CryptographicAlgorithm::ChaCha20,
        vec![0u8; 32],
        usage(CryptographicUsageMask::ENCRYPT | CryptographicUsageMask::DECRYPT)
            .with(Tag::ACTIVATION_DATE, &ago(60)),
    )
    .await;
    let empty = Some(CryptographicParameters::default());
    let ResponsePayload::Encrypt(sealed) = ok(
        &f.engine,
        &t,
        V2_1,
        encrypt(&chacha, &[0u8; 32], empty.clone(), Some(&[0u8; 8])),
    )
    .await
    else {
        panic!()
    };
    assert_eq!(
        sealed.data.as_deref(),
        Some(&bytes("76b8e0ada0f13d90405d6ae55386bd28bdd219b8a08ded1aa836efcc8b770dc7")[..])
    );
    // A block cipher mode makes no sense for a stream cipher.
    assert_eq!(
        fails(
            &f.engine,
            &t,
            V2_1,
            encrypt(&chacha, &[0u8; 16], ecb(), None)
        )
        .await
        .0,
        ResultReason::InvalidField
    );
}

#[tokio::test]
async fn chacha20poly1305_encrypts_and_decrypts() {
    let f = fixture().await;
    let t = tenant("tenant-a");
    let key = register_key(
        &f.engine,
        &t,
        V2_1,
        CryptographicAlgorithm::ChaCha20Poly1305,
        vec![9u8; 32],
        usage(CryptographicUsageMask::ENCRYPT | CryptographicUsageMask::DECRYPT)
            .with(Tag::ACTIVATION_DATE, &ago(60)),
    )
    .await;
    let aead = |tag_length: Option<i32>| {
        Some(CryptographicParameters {
            block_cipher_mode: Some(BlockCipherMode::Aead),
            tag_length,
            ..Default::default()
        })
    };
    // No parameters and no nonce: the server generates a 96-bit nonce and returns it.
    let ResponsePayload::Encrypt(sealed) =
        ok(&f.engine, &t, V2_1, encrypt(&key, b"secret", None, None)).await
    else {
        panic!()
    };
    let nonce = sealed.iv_counter_nonce.as_deref().expect("nonce").to_vec();
    let tag = sealed
        .authenticated_encryption_tag
        .as_deref()
        .expect("tag")
        .to_vec();
    let ct = sealed.data.as_deref().expect("data").to_vec();
    assert_eq!((nonce.len(), tag.len(), ct.len()), (12, 16, 6));
    let ResponsePayload::Decrypt(plain) = ok(
        &f.engine,
        &t,
        V2_1,
        decrypt(&key, &ct, aead(Some(16)), Some(&nonce), Some(&tag)),
    )
    .await
    else {
        panic!()
    };
    assert_eq!(plain.data.as_deref(), Some(&b"secret"[..]));
    // A truncated tag with the matching Tag Length (CS-BC-M-CHACHA20POLY1305-1 step 6).
    ok(
        &f.engine,
        &t,
        V2_1,
        decrypt(&key, &ct, aead(Some(12)), Some(&nonce), Some(&tag[..12])),
    )
    .await;
    let reason = |r: (ResultReason, String)| r.0;
    // No nonce on Decrypt: Invalid Message, as for GCM.
    assert_eq!(
        reason(
            fails(
                &f.engine,
                &t,
                V2_1,
                decrypt(&key, &ct, None, None, Some(&tag))
            )
            .await
        ),
        ResultReason::InvalidMessage
    );
    // Tampered tag: Cryptographic Failure.
    let mut bad = tag.clone();
    bad[0] ^= 1;
    assert_eq!(
        reason(
            fails(
                &f.engine,
                &t,
                V2_1,
                decrypt(&key, &ct, None, Some(&nonce), Some(&bad))
            )
            .await
        ),
        ResultReason::CryptographicFailure
    );
    // Tag Length other than 16 on Encrypt, a block cipher mode other than AEAD: Invalid Field.
    for params in [aead(Some(12)), aead(Some(32)), ecb()] {
        assert_eq!(
            reason(fails(&f.engine, &t, V2_1, encrypt(&key, b"x", params, None)).await),
            ResultReason::InvalidField
        );
    }
}

/// KMIP 2.1 §4.32 (BL-M-8): adding a Name the object already has is Non Unique Name
/// Attribute, not a second copy; another Name is added.
#[tokio::test]
async fn adding_a_name_the_object_already_has_is_refused() {
    let f = fixture().await;
    let t = tenant("tenant-a");
    let uid = new_key(
        &f.engine,
        &t,
        V2_1,
        key_attributes(CryptographicAlgorithm::Aes, 128).with(Tag::NAME, &Name::text("n")),
    )
    .await;
    let add = |name: &str| {
        RequestPayload::AddAttribute(AddAttributeRequest {
            unique_identifier: id(&uid),
            attribute: Some(Attribute::typed(Tag::NAME, &Name::text(name))),
        })
    };
    let (reason, _) = fails(&f.engine, &t, V2_1, add("n")).await;
    assert_eq!(reason, ResultReason::NonUniqueNameAttribute);
    ok(&f.engine, &t, V2_1, add("m")).await;
    let (reason, _) = fails(&f.engine, &t, V2_1, add("m")).await;
    assert_eq!(reason, ResultReason::NonUniqueNameAttribute);
}
