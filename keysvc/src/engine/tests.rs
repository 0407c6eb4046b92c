//! Engine tests over TTLV bytes, on a real SQLite store: every operation, every refusal,
//! tenant isolation, batches, version gating.

use std::sync::Arc;
use std::time::{Duration, Instant};

use kmip::message::payloads::*;
use kmip::message::{
    Attribute, AttributeName, Attributes, ByteString, CryptographicParameters, KeyBlock,
    ManagedObject, Name, OpaqueObject, RawEnum, RequestBatchItem, RequestMessage, RequestPayload,
    ResponseMessage, ResponsePayload, SecretData, SymmetricKey, TtlvValue, UniqueIdentifier,
};
use kmip::spec::{
    BatchErrorContinuationOption, BlockCipherMode, CryptographicAlgorithm, CryptographicUsageMask,
    KeyFormatType, LinkType, ObjectType, Operation, QueryFunction, ResultReason, ResultStatus,
    RevocationReasonCode, SecretDataType, State,
};
use kmip::{Item, ProtocolVersion, Tag, Value};

use super::*;
use crate::envelope::{Keyring, RootKey};
use crate::store::sqlite::SqliteStore;
use crate::tenant::{TenantContext, TenantId};

const V1_0: ProtocolVersion = ProtocolVersion::V1_0;
const V1_2: ProtocolVersion = ProtocolVersion::V1_2;
const V1_4: ProtocolVersion = ProtocolVersion::V1_4;
const V2_0: ProtocolVersion = ProtocolVersion::V2_0;
const V2_1: ProtocolVersion = ProtocolVersion::V2_1;

struct Fixture {
    engine: Engine,
    _dir: tempfile::TempDir,
}

async fn fixture() -> Fixture {
    let dir = tempfile::tempdir().expect("temp dir");
    let store = SqliteStore::open(dir.path().join("keys.db").to_str().expect("utf-8 path"))
        .await
        .expect("store opens");
    let keyring = Keyring::new(RootKey::generate("test-root").expect("root key"));
    Fixture {
        engine: Engine::new(Arc::new(store), Arc::new(keyring), EngineConfig::default()),
        _dir: dir,
    }
}

fn tenant(name: &str) -> TenantContext {
    TenantContext::new(TenantId::parse(name).expect("valid tenant"))
}

/// Sends a request as bytes, as the HTTP layer does, and decodes the answer.
async fn send(engine: &Engine, ctx: &TenantContext, request: &RequestMessage) -> ResponseMessage {
    let (bytes, outcomes) = engine.handle(ctx, &request.to_ttlv()).await;
    let response =
        ResponseMessage::from_ttlv(&bytes, &kmip::Limits::default()).expect("response decodes");
    assert_eq!(outcomes.len(), response.batch_items.len());
    response
}

async fn call(
    engine: &Engine,
    ctx: &TenantContext,
    v: ProtocolVersion,
    payload: RequestPayload,
) -> ResponseMessage {
    send(engine, ctx, &RequestMessage::new(v, vec![payload])).await
}

/// The payload of a successful single-item response.
async fn ok(
    engine: &Engine,
    ctx: &TenantContext,
    v: ProtocolVersion,
    payload: RequestPayload,
) -> ResponsePayload {
    let response = call(engine, ctx, v, payload).await;
    assert_eq!(response.version(), v);
    let item = response.batch_items.into_iter().next().expect("one item");
    assert_eq!(
        item.result_status,
        ResultStatus::Success,
        "{:?}: {:?}",
        item.result_reason,
        item.result_message
    );
    item.payload.expect("payload").expect("typed payload")
}

/// The reason and message of a failed single-item response.
async fn fails(
    engine: &Engine,
    ctx: &TenantContext,
    v: ProtocolVersion,
    payload: RequestPayload,
) -> (ResultReason, String) {
    let response = call(engine, ctx, v, payload).await;
    let item = response.batch_items.into_iter().next().expect("one item");
    assert_eq!(
        item.result_status,
        ResultStatus::OperationFailed,
        "expected a failure"
    );
    (
        item.result_reason.expect("reason"),
        item.result_message.unwrap_or_default(),
    )
}

fn key_attributes(algorithm: CryptographicAlgorithm, bits: i32) -> Attributes {
    Attributes::new()
        .with(Tag::CRYPTOGRAPHIC_ALGORITHM, &algorithm)
        .with(Tag::CRYPTOGRAPHIC_LENGTH, &bits)
}

fn create(attributes: Attributes) -> RequestPayload {
    RequestPayload::Create(CreateRequest {
        object_type: ObjectType::SymmetricKey,
        attributes: Some(attributes),
        protection_storage_masks: None,
    })
}

fn id(uid: &str) -> Option<UniqueIdentifier> {
    Some(uid.into())
}

fn get(uid: &str, format: Option<KeyFormatType>) -> RequestPayload {
    RequestPayload::Get(GetRequest {
        unique_identifier: id(uid),
        key_format_type: format,
        key_wrap_type: None,
        key_compression_type: None,
        key_wrapping_specification: None,
    })
}

fn activate(uid: &str) -> RequestPayload {
    RequestPayload::Activate(IdRequest {
        unique_identifier: id(uid),
    })
}

fn destroy(uid: &str) -> RequestPayload {
    RequestPayload::Destroy(IdRequest {
        unique_identifier: id(uid),
    })
}

fn revoke(uid: &str, code: RevocationReasonCode) -> RequestPayload {
    RequestPayload::Revoke(RevokeRequest {
        unique_identifier: id(uid),
        revocation_reason: RevocationReason {
            code,
            message: None,
        },
        compromise_occurrence_date: None,
    })
}

fn get_attributes(uid: &str, names: &[Tag]) -> RequestPayload {
    RequestPayload::GetAttributes(GetAttributesRequest {
        unique_identifier: id(uid),
        attribute_names: names.iter().map(|t| AttributeName::Standard(*t)).collect(),
    })
}

fn encrypt(
    uid: &str,
    data: &[u8],
    params: Option<CryptographicParameters>,
    iv: Option<&[u8]>,
) -> RequestPayload {
    RequestPayload::Encrypt(EncryptRequest {
        unique_identifier: id(uid),
        cryptographic_parameters: params,
        data: Some(data.into()),
        iv_counter_nonce: iv.map(ByteString::from),
        correlation_value: None,
        init_indicator: None,
        final_indicator: None,
        authenticated_encryption_additional_data: None,
    })
}

fn decrypt(
    uid: &str,
    data: &[u8],
    params: Option<CryptographicParameters>,
    iv: Option<&[u8]>,
    tag: Option<&[u8]>,
) -> RequestPayload {
    RequestPayload::Decrypt(DecryptRequest {
        unique_identifier: id(uid),
        cryptographic_parameters: params,
        data: Some(data.into()),
        iv_counter_nonce: iv.map(ByteString::from),
        authenticated_encryption_tag: tag.map(ByteString::from),
        ..DecryptRequest::default()
    })
}

fn locate(attributes: Attributes, max: Option<i32>, offset: Option<i32>) -> RequestPayload {
    RequestPayload::Locate(LocateRequest {
        maximum_items: max,
        offset_items: offset,
        storage_status_mask: None,
        object_group_member: None,
        attributes: Some(attributes),
    })
}

async fn new_key(
    engine: &Engine,
    ctx: &TenantContext,
    v: ProtocolVersion,
    attributes: Attributes,
) -> String {
    match ok(engine, ctx, v, create(attributes)).await {
        ResponsePayload::Create(r) => r.unique_identifier.as_text().expect("text uid").to_owned(),
        other => panic!("unexpected {other:?}"),
    }
}

async fn active_aes_key(engine: &Engine, ctx: &TenantContext) -> String {
    let uid = new_key(
        engine,
        ctx,
        V1_4,
        key_attributes(CryptographicAlgorithm::Aes, 256),
    )
    .await;
    ok(engine, ctx, V1_4, activate(&uid)).await;
    uid
}

async fn state_of(engine: &Engine, ctx: &TenantContext, uid: &str) -> State {
    match ok(engine, ctx, V1_4, get_attributes(uid, &[Tag::STATE])).await {
        ResponsePayload::GetAttributes(r) => r
            .attributes
            .expect("attributes")
            .state()
            .expect("state")
            .expect("set"),
        other => panic!("unexpected {other:?}"),
    }
}

async fn key_of(engine: &Engine, ctx: &TenantContext, uid: &str) -> (ObjectType, ManagedObject) {
    match ok(engine, ctx, V1_4, get(uid, None)).await {
        ResponsePayload::Get(r) => (r.object_type, r.object.expect("object")),
        other => panic!("unexpected {other:?}"),
    }
}

// ------------------------------------------------------------------ discovery

#[tokio::test]
async fn discover_versions_answers_shared_versions_in_the_clients_order() {
    let f = fixture().await;
    let t = tenant("tenant-a");
    let all = ok(
        &f.engine,
        &t,
        V1_2,
        RequestPayload::DiscoverVersions(DiscoverVersionsRequest {
            protocol_versions: vec![],
        }),
    )
    .await;
    let ResponsePayload::DiscoverVersions(all) = all else {
        panic!()
    };
    assert_eq!(all.protocol_versions, ProtocolVersion::SUPPORTED.to_vec());
    let asked = vec![ProtocolVersion::new(3, 0), V1_2, V2_1];
    let some = ok(
        &f.engine,
        &t,
        V1_2,
        RequestPayload::DiscoverVersions(DiscoverVersionsRequest {
            protocol_versions: asked,
        }),
    )
    .await;
    let ResponsePayload::DiscoverVersions(some) = some else {
        panic!()
    };
    assert_eq!(some.protocol_versions, vec![V1_2, V2_1]);
}

#[tokio::test]
async fn query_lists_operations_objects_and_server_information() {
    let f = fixture().await;
    let t = tenant("tenant-a");
    let functions = vec![
        QueryFunction::QueryOperations,
        QueryFunction::QueryObjects,
        QueryFunction::QueryServerInformation,
    ];
    let ResponsePayload::Query(q) = ok(
        &f.engine,
        &t,
        V1_4,
        RequestPayload::Query(QueryRequest {
            query_functions: functions,
        }),
    )
    .await
    else {
        panic!()
    };
    for op in [
        Operation::Create,
        Operation::Get,
        Operation::Encrypt,
        Operation::Locate,
        Operation::RngRetrieve,
    ] {
        assert!(q.operations.contains(&op), "{op:?}");
    }
    assert!(q.object_types.contains(&ObjectType::SymmetricKey));
    assert!(q
        .vendor_identification
        .expect("vendor")
        .starts_with("OpenKCM"));
    // A 1.0 client is not told about operations 1.0 does not define (Set Attribute is 2.0).
    let ResponsePayload::Query(q10) = ok(
        &f.engine,
        &t,
        V1_0,
        RequestPayload::Query(QueryRequest {
            query_functions: vec![QueryFunction::QueryOperations],
        }),
    )
    .await
    else {
        panic!()
    };
    assert!(!q10.operations.contains(&Operation::SetAttribute));
    assert!(!q10.operations.contains(&Operation::RngRetrieve));
}

// ------------------------------------------------------------------ Query = what is served

/// A request payload for `op` that decodes, for the operations whose empty payload does not
/// (a required field): only so the request reaches the dispatcher; its answer may be any
/// error but Operation Not Supported.
fn minimal_payload(op: Operation) -> Option<RequestPayload> {
    Some(match op {
        Operation::Create => create(key_attributes(CryptographicAlgorithm::Aes, 128)),
        Operation::Register => register_opaque(16),
        Operation::Revoke => revoke("no-such-object", RevocationReasonCode::Unspecified),
        Operation::RngRetrieve => rng(16),
        Operation::Log => RequestPayload::Log(LogRequest {
            log_message: "probe".into(),
        }),
        Operation::Interop => RequestPayload::Interop(InteropRequest {
            interop_function: kmip::spec::InteropFunction::Reset,
            interop_identifier: "probe".into(),
        }),
        _ => return None,
    })
}

/// Sends `op` under version `v` with an empty payload (or [`minimal_payload`] when the empty
/// one does not decode) and answers whether the server refused it as Operation Not Supported.
/// An operation the codec has no typed payload for is sent as received, untyped.
async fn not_supported(
    engine: &Engine,
    ctx: &TenantContext,
    v: ProtocolVersion,
    op: Operation,
) -> bool {
    let empty = Item::structure(Tag::REQUEST_PAYLOAD, Vec::new());
    let item = match RequestPayload::decode(op, &empty, v) {
        Ok(Some(payload)) => RequestBatchItem::new(payload),
        Ok(None) => RequestBatchItem {
            operation: op.value(),
            unique_batch_item_id: None,
            payload: Err(kmip::message::UntypedPayload {
                error: kmip::message::MessageError::UnsupportedOperation(op.value()),
                raw: Some(empty),
            }),
            message_extension: None,
        },
        Err(e) => RequestBatchItem::new(minimal_payload(op).unwrap_or_else(|| {
            panic!("{op:?}: an empty payload does not decode ({e}); add one to minimal_payload")
        })),
    };
    let mut request = RequestMessage::new(v, Vec::new());
    request.batch_items.push(item);
    request.header.batch_count = 1;
    let response = send(engine, ctx, &request).await;
    let answer = &response.batch_items[0];
    assert_eq!(
        answer.operation,
        Some(op.value()),
        "{v}: answered for {op:?}"
    );
    answer.result_reason == Some(ResultReason::OperationNotSupported)
}

async fn query(
    engine: &Engine,
    ctx: &TenantContext,
    v: ProtocolVersion,
    function: QueryFunction,
) -> QueryResponse {
    let ResponsePayload::Query(q) = ok(
        engine,
        ctx,
        v,
        RequestPayload::Query(QueryRequest {
            query_functions: vec![function],
        }),
    )
    .await
    else {
        panic!("not a Query answer")
    };
    q
}

/// Every KMIP operation is sent to the engine, with and without Interop configured: in each
/// version, the operations Query lists are exactly those the version defines that do not
/// answer Operation Not Supported. An operation sent under an older header than defines it is
/// still served (the dispatcher tolerates it; Query just does not list it there).
#[tokio::test]
async fn query_lists_exactly_the_operations_served() {
    let f = fixture().await;
    let t = tenant("tenant-a");
    for interop in [false, true] {
        let engine = Engine::new(
            f.engine.store().clone(),
            f.engine.keyring.clone(),
            EngineConfig {
                interop,
                ..EngineConfig::default()
            },
        );
        let mut newest_served = Vec::new();
        for v in ProtocolVersion::SUPPORTED {
            let listed = query(&engine, &t, v, QueryFunction::QueryOperations)
                .await
                .operations;
            let mut served = Vec::new();
            for &op in Operation::ALL.iter().filter(|o| o.is_defined_in(v)) {
                if !not_supported(&engine, &t, v, op).await {
                    served.push(op);
                }
            }
            for op in &listed {
                assert!(
                    served.contains(op),
                    "{v} (interop {interop}): Query lists {op:?}, which answers Operation Not Supported"
                );
                assert_eq!(
                    listed.iter().filter(|o| *o == op).count(),
                    1,
                    "{op:?} twice"
                );
            }
            for op in &served {
                assert!(
                    listed.contains(op),
                    "{v} (interop {interop}): {op:?} is served but Query does not list it"
                );
            }
            assert!(listed.contains(&Operation::Query), "{v}: sanity");
            assert_eq!(
                listed.contains(&Operation::Interop),
                interop && Operation::Interop.is_defined_in(v),
                "{v}"
            );
            if v == ProtocolVersion::V2_1 {
                newest_served = served;
            }
        }
        for v in ProtocolVersion::SUPPORTED {
            for &op in newest_served.iter().filter(|o| !o.is_defined_in(v)) {
                assert!(
                    !not_supported(&engine, &t, v, op).await,
                    "{op:?} under a {v} header answers Operation Not Supported"
                );
            }
        }
    }
}

/// An object of type `t` for Register: a real one for the types with a typed form, an empty
/// structure of the type's tag for the others.
fn sample_object(t: ObjectType) -> ManagedObject {
    match t {
        ObjectType::SymmetricKey => ManagedObject::SymmetricKey(SymmetricKey {
            key_block: KeyBlock::raw(vec![1u8; 16], Some(CryptographicAlgorithm::Aes), Some(128)),
        }),
        ObjectType::SecretData => ManagedObject::SecretData(SecretData {
            secret_data_type: SecretDataType::Password,
            key_block: KeyBlock {
                key_format_type: KeyFormatType::Opaque,
                ..KeyBlock::raw(b"a password".to_vec(), None, None)
            },
        }),
        ObjectType::OpaqueObject => ManagedObject::OpaqueObject(OpaqueObject {
            opaque_data_type: RawEnum(0x8000_0001),
            opaque_data_value: ByteString::new(vec![7u8; 16]),
        }),
        ObjectType::PublicKey | ObjectType::PrivateKey => {
            let pair = crate::asymmetric::generate(CryptographicAlgorithm::Ec, Some(256), None)
                .expect("a P-256 pair");
            if t == ObjectType::PublicKey {
                ManagedObject::PublicKey(kmip::message::PublicKey {
                    key_block: pair.public,
                })
            } else {
                ManagedObject::PrivateKey(kmip::message::PrivateKey {
                    key_block: pair.private,
                })
            }
        }
        ObjectType::Certificate => ManagedObject::Certificate(kmip::message::Certificate {
            certificate_type: kmip::spec::CertificateType::X509,
            certificate_value: ByteString::new(keypairs::certificate_der()),
        }),
        other => {
            let tag = Tag::from_name(other.name())
                .unwrap_or_else(|| panic!("no object structure tag named {}", other.name()));
            ManagedObject::Other(Item::structure(tag, Vec::new()))
        }
    }
}

/// Every KMIP object type is Registered: the types Query Objects lists are exactly the ones
/// Register keeps. In 2.x an unkept type answers Invalid Object Type (anything else means the
/// type is accepted and only this object was wrong); 1.x has no such reason (the engine falls
/// back to Invalid Field), so there a listed type must register and an unlisted one must not.
#[tokio::test]
async fn query_lists_exactly_the_object_types_kept() {
    let f = fixture().await;
    let t = tenant("tenant-a");
    for v in ProtocolVersion::SUPPORTED {
        let listed = query(&f.engine, &t, v, QueryFunction::QueryObjects)
            .await
            .object_types;
        let mut kept = Vec::new();
        for &ty in ObjectType::ALL.iter().filter(|o| o.is_defined_in(v)) {
            let register = RequestPayload::Register(RegisterRequest {
                object_type: ty,
                attributes: None,
                object: Some(sample_object(ty)),
                protection_storage_masks: None,
            });
            let item = call(&f.engine, &t, v, register)
                .await
                .batch_items
                .into_iter()
                .next()
                .expect("one item");
            let accepted = if ResultReason::InvalidObjectType.is_defined_in(v) {
                item.result_reason != Some(ResultReason::InvalidObjectType)
            } else {
                item.result_status == ResultStatus::Success
            };
            if accepted {
                kept.push(ty);
            }
        }
        for ty in &listed {
            assert!(
                kept.contains(ty),
                "{v}: Query lists {ty:?}, which Register refuses"
            );
        }
        for ty in &kept {
            assert!(
                listed.contains(ty),
                "{v}: Register keeps {ty:?} but Query does not list it"
            );
        }
        assert!(listed.contains(&ObjectType::SymmetricKey), "{v}: sanity");
    }
}

/// Get Attributes naming none answers the attributes the request's version defines and its
/// clients read (`AttributeName::volunteered_in`); Get Attribute List names every attribute
/// the version defines; a request naming one the version defines gets it.
#[tokio::test]
async fn attributes_the_server_chooses_follow_the_version() {
    let f = fixture().await;
    let t = tenant("tenant-a");
    let uid = active_aes_key(&f.engine, &t).await;
    let all = |v| {
        let (engine, t, uid) = (f.engine.clone(), t.clone(), uid.clone());
        async move {
            let ResponsePayload::GetAttributes(r) =
                ok(&engine, &t, v, get_attributes(&uid, &[])).await
            else {
                panic!()
            };
            let ResponsePayload::GetAttributeList(l) = ok(
                &engine,
                &t,
                v,
                RequestPayload::GetAttributeList(GetAttributeListRequest {
                    unique_identifier: id(&uid),
                }),
            )
            .await
            else {
                panic!()
            };
            (r.attributes.expect("attributes"), l.attribute_names)
        }
    };
    let stored = f
        .engine
        .store()
        .begin(&t)
        .await
        .expect("tx")
        .get(&uid)
        .await
        .expect("get")
        .expect("stored");
    let stored = object::stored_attributes(&stored).expect("attributes");
    for v in ProtocolVersion::SUPPORTED {
        let (attributes, names) = all(v).await;
        let mut carried: Vec<AttributeName> = Vec::new();
        for a in attributes.iter() {
            assert!(a.name.volunteered_in(v), "{v}: {a:?}");
            if !carried.contains(&a.name) {
                carried.push(a.name.clone());
            }
        }
        // The list names every attribute the version defines, a superset of those.
        for name in &carried {
            assert!(names.contains(name), "{v}: {name:?} not listed");
        }
        for name in &names {
            assert!(name.defined_in(v), "{v}: {name:?} listed");
        }
        for a in stored.iter().filter(|a| a.name.defined_in(v)) {
            assert!(names.contains(&a.name), "{v}: {:?} not listed", a.name);
        }
        // Nothing the version lets the server volunteer is missing.
        for a in stored.iter().filter(|a| a.name.volunteered_in(v)) {
            assert!(attributes.iter().any(|b| b == a), "{v}: {a:?} missing");
        }
    }
    let (v10, _) = all(V1_0).await;
    assert!(v10.get(Tag::FRESH).is_none(), "Fresh is KMIP 1.1+");
    let (v14, _) = all(V1_4).await;
    assert!(v14.get(Tag::RANDOM_NUMBER_GENERATOR).is_none());
    let (v20, _) = all(V2_0).await;
    assert!(v20.get(Tag::SHORT_UNIQUE_IDENTIFIER).is_none());
    let (v21, _) = all(V2_1).await;
    assert!(v21.get(Tag::SHORT_UNIQUE_IDENTIFIER).is_some());
    // Named, they are answered where the version defines them, and only there.
    for (v, tag, present) in [
        (V1_4, Tag::RANDOM_NUMBER_GENERATOR, true),
        (V2_0, Tag::SHORT_UNIQUE_IDENTIFIER, true),
        (V1_0, Tag::FRESH, false),
        (V1_2, Tag::RANDOM_NUMBER_GENERATOR, false),
    ] {
        let answer = ok(&f.engine, &t, v, get_attributes(&uid, &[tag])).await;
        // What the client receives: the answer as written for its version, read back.
        let wire = answer.encode(v);
        let Some(ResponsePayload::GetAttributes(r)) =
            ResponsePayload::decode(Operation::GetAttributes, &wire, v).expect("decodes")
        else {
            panic!()
        };
        let got = r.attributes.unwrap_or_default().get(tag).is_some();
        assert_eq!(got, present, "{v} {tag:?}");
    }
}

// ------------------------------------------------------------------ create, register, get

#[tokio::test]
async fn create_makes_aes_and_hmac_keys_of_the_asked_size() {
    let f = fixture().await;
    let t = tenant("tenant-a");
    for (algorithm, bits) in [
        (CryptographicAlgorithm::Aes, 128),
        (CryptographicAlgorithm::Aes, 192),
        (CryptographicAlgorithm::Aes, 256),
        (CryptographicAlgorithm::HmacSha256, 256),
        (CryptographicAlgorithm::HmacSha384, 384),
        (CryptographicAlgorithm::HmacSha512, 512),
    ] {
        let uid = new_key(
            &f.engine,
            &t,
            V1_4,
            key_attributes(algorithm, bits)
                .with(Tag::NAME, &Name::text(format!("{algorithm:?}-{bits}"))),
        )
        .await;
        let (object_type, object) = key_of(&f.engine, &t, &uid).await;
        assert_eq!(object_type, ObjectType::SymmetricKey);
        let block = object.key_block().expect("key block");
        assert_eq!(block.key_format_type, KeyFormatType::Raw);
        assert_eq!(block.cryptographic_algorithm, Some(algorithm));
        assert_eq!(
            block.key_bytes().expect("material").len() * 8,
            bits as usize
        );
        assert_eq!(state_of(&f.engine, &t, &uid).await, State::PreActive);
    }
}

#[tokio::test]
async fn create_refuses_what_it_cannot_make() {
    let f = fixture().await;
    let t = tenant("tenant-a");
    let no_algorithm = Attributes::new().with(Tag::CRYPTOGRAPHIC_LENGTH, &256i32);
    assert_eq!(
        fails(&f.engine, &t, V1_4, create(no_algorithm)).await.0,
        ResultReason::InvalidField
    );
    let odd = key_attributes(CryptographicAlgorithm::Aes, 100);
    assert_eq!(
        fails(&f.engine, &t, V1_4, create(odd)).await.0,
        ResultReason::InvalidField
    );
    let secret = RequestPayload::Create(CreateRequest {
        object_type: ObjectType::SecretData,
        attributes: Some(key_attributes(CryptographicAlgorithm::Aes, 256)),
        protection_storage_masks: None,
    });
    assert_eq!(
        fails(&f.engine, &t, V1_4, secret.clone()).await.0,
        ResultReason::InvalidField
    );
    assert_eq!(
        fails(&f.engine, &t, V2_0, secret).await.0,
        ResultReason::InvalidObjectType
    );
    let read_only =
        key_attributes(CryptographicAlgorithm::Aes, 256).with(Tag::STATE, &State::Active);
    assert_eq!(
        fails(&f.engine, &t, V1_4, create(read_only.clone()))
            .await
            .0,
        ResultReason::PermissionDenied
    );
    assert_eq!(
        fails(&f.engine, &t, V2_1, create(read_only)).await.0,
        ResultReason::AttributeReadOnly
    );
}

#[tokio::test]
async fn registered_objects_come_back_byte_identical() {
    let f = fixture().await;
    let t = tenant("tenant-a");
    let key = ManagedObject::SymmetricKey(SymmetricKey {
        key_block: KeyBlock::raw(
            (0u8..32).collect::<Vec<_>>(),
            Some(CryptographicAlgorithm::Aes),
            Some(256),
        ),
    });
    let secret = ManagedObject::SecretData(SecretData {
        secret_data_type: SecretDataType::Password,
        key_block: KeyBlock {
            key_format_type: KeyFormatType::Opaque,
            ..KeyBlock::raw(b"correct horse battery staple".to_vec(), None, None)
        },
    });
    let opaque = ManagedObject::OpaqueObject(OpaqueObject {
        opaque_data_type: RawEnum(0x8000_0001),
        opaque_data_value: ByteString::new(vec![9u8; 96]),
    });
    for (v, object) in [(V1_2, key), (V1_4, secret), (V2_0, opaque)] {
        let register = RequestPayload::Register(RegisterRequest {
            object_type: object.object_type().expect("type"),
            attributes: Some(Attributes::new().with(Tag::NAME, &Name::text("registered"))),
            object: Some(object.clone()),
            protection_storage_masks: None,
        });
        let ResponsePayload::Register(r) = ok(&f.engine, &t, v, register).await else {
            panic!()
        };
        let uid = r.unique_identifier.as_text().expect("uid").to_owned();
        let ResponsePayload::Get(got) = ok(&f.engine, &t, v, get(&uid, None)).await else {
            panic!()
        };
        assert_eq!(got.object, Some(object));
    }
}

#[tokio::test]
async fn register_refuses_a_key_whose_length_does_not_match() {
    let f = fixture().await;
    let t = tenant("tenant-a");
    let key = ManagedObject::SymmetricKey(SymmetricKey {
        key_block: KeyBlock::raw(vec![1u8; 16], Some(CryptographicAlgorithm::Aes), Some(256)),
    });
    let register = RequestPayload::Register(RegisterRequest {
        object_type: ObjectType::SymmetricKey,
        attributes: None,
        object: Some(key),
        protection_storage_masks: None,
    });
    assert_eq!(
        fails(&f.engine, &t, V1_4, register).await.0,
        ResultReason::InvalidField
    );
}

#[tokio::test]
async fn get_serves_raw_and_transparent_symmetric_keys_and_refuses_other_formats() {
    let f = fixture().await;
    let t = tenant("tenant-a");
    let uid = new_key(
        &f.engine,
        &t,
        V1_4,
        key_attributes(CryptographicAlgorithm::Aes, 128),
    )
    .await;
    let (_, raw) = key_of(&f.engine, &t, &uid).await;
    let ResponsePayload::Get(transparent) = ok(
        &f.engine,
        &t,
        V1_4,
        get(&uid, Some(KeyFormatType::TransparentSymmetricKey)),
    )
    .await
    else {
        panic!()
    };
    let block = transparent
        .object
        .as_ref()
        .and_then(|o| o.key_block())
        .expect("block")
        .clone();
    assert_eq!(
        block.key_format_type,
        KeyFormatType::TransparentSymmetricKey
    );
    assert_eq!(
        block.key_bytes(),
        raw.key_block().and_then(|b| b.key_bytes())
    );
    let (reason, _) = fails(&f.engine, &t, V1_4, get(&uid, Some(KeyFormatType::Pkcs8))).await;
    assert_eq!(reason, ResultReason::KeyFormatTypeNotSupported);
}

// ------------------------------------------------------------------ lifecycle

#[tokio::test]
async fn create_then_activate_in_one_batch_uses_the_id_placeholder() {
    let f = fixture().await;
    let t = tenant("tenant-a");
    let request = RequestMessage::new(
        V1_2,
        vec![
            create(key_attributes(CryptographicAlgorithm::Aes, 256)),
            RequestPayload::Activate(IdRequest {
                unique_identifier: None,
            }),
            RequestPayload::GetAttributes(GetAttributesRequest {
                unique_identifier: None,
                attribute_names: vec![AttributeName::Standard(Tag::STATE)],
            }),
        ],
    );
    let response = send(&f.engine, &t, &request).await;
    assert!(
        response
            .batch_items
            .iter()
            .all(|b| b.result_status == ResultStatus::Success),
        "{response:?}"
    );
    let Some(Ok(ResponsePayload::GetAttributes(attrs))) = &response.batch_items[2].payload else {
        panic!()
    };
    assert_eq!(
        attrs
            .attributes
            .as_ref()
            .expect("attrs")
            .state()
            .expect("state"),
        Some(State::Active)
    );
}

#[tokio::test]
async fn the_lifecycle_is_enforced() {
    let f = fixture().await;
    let t = tenant("tenant-a");
    let uid = active_aes_key(&f.engine, &t).await;
    // 2.1 names the reason; 1.x (KMIP 1.4 §11.20, §11.22) and 2.0 (its profile test cases)
    // answer Permission Denied.
    assert_eq!(
        fails(&f.engine, &t, V2_1, activate(&uid)).await.0,
        ResultReason::WrongKeyLifecycleState
    );
    for v in [V1_4, V2_0] {
        assert_eq!(
            fails(&f.engine, &t, v, activate(&uid)).await.0,
            ResultReason::PermissionDenied
        );
    }
    let (reason, message) = fails(&f.engine, &t, V2_1, destroy(&uid)).await;
    assert_eq!(reason, ResultReason::WrongKeyLifecycleState);
    assert!(message.contains("Active"), "{message}");

    ok(
        &f.engine,
        &t,
        V1_4,
        revoke(&uid, RevocationReasonCode::CessationOfOperation),
    )
    .await;
    assert_eq!(state_of(&f.engine, &t, &uid).await, State::Deactivated);
    ok(&f.engine, &t, V1_4, destroy(&uid)).await;
    assert_eq!(state_of(&f.engine, &t, &uid).await, State::Destroyed);
    // Material is gone, metadata stays: Get fails, Get Attributes still answers.
    assert_eq!(
        fails(&f.engine, &t, V1_4, get(&uid, None)).await.0,
        ResultReason::ItemNotFound
    );
    assert_eq!(
        fails(&f.engine, &t, V2_0, get(&uid, None)).await.0,
        ResultReason::ObjectDestroyed
    );
    assert_eq!(
        fails(&f.engine, &t, V1_4, destroy(&uid)).await.0,
        ResultReason::PermissionDenied
    );

    let compromised = active_aes_key(&f.engine, &t).await;
    ok(
        &f.engine,
        &t,
        V1_4,
        revoke(&compromised, RevocationReasonCode::KeyCompromise),
    )
    .await;
    assert_eq!(
        state_of(&f.engine, &t, &compromised).await,
        State::Compromised
    );
    ok(&f.engine, &t, V1_4, destroy(&compromised)).await;
    assert_eq!(
        state_of(&f.engine, &t, &compromised).await,
        State::DestroyedCompromised
    );
}

#[tokio::test]
async fn rekey_makes_a_linked_replacement_that_takes_the_names() {
    let f = fixture().await;
    let t = tenant("tenant-a");
    let uid = new_key(
        &f.engine,
        &t,
        V1_4,
        key_attributes(CryptographicAlgorithm::Aes, 256).with(Tag::NAME, &Name::text("orders")),
    )
    .await;
    ok(&f.engine, &t, V1_4, activate(&uid)).await;
    let ResponsePayload::ReKey(r) = ok(
        &f.engine,
        &t,
        V1_4,
        RequestPayload::ReKey(ReKeyRequest {
            unique_identifier: id(&uid),
            offset: None,
            attributes: None,
            protection_storage_masks: None,
        }),
    )
    .await
    else {
        panic!()
    };
    let new = r.unique_identifier.as_text().expect("uid").to_owned();
    assert_ne!(new, uid);
    let attrs = |uid: String| {
        let engine = f.engine.clone();
        let t = t.clone();
        async move {
            let ResponsePayload::GetAttributes(r) =
                // Named: Link is left out of 1.x answers the server chooses (PyKMIP 0.11
                // cannot read it), never out of one that asks for it.
                ok(&engine, &t, V1_4, get_attributes(&uid, &[Tag::LINK, Tag::NAME, Tag::STATE]))
                    .await
            else {
                panic!()
            };
            r.attributes.expect("attributes")
        }
    };
    let (old_attrs, new_attrs) = (attrs(uid.clone()).await, attrs(new.clone()).await);
    let link = |a: &Attributes| {
        a.typed::<kmip::message::Link>(Tag::LINK)
            .expect("link")
            .expect("present")
    };
    assert_eq!(link(&old_attrs).link_type, LinkType::ReplacementObjectLink);
    assert_eq!(
        link(&old_attrs).linked_object_identifier,
        new.clone().into()
    );
    assert_eq!(link(&new_attrs).link_type, LinkType::ReplacedObjectLink);
    assert_eq!(new_attrs.names().expect("names")[0].value, "orders");
    assert!(old_attrs.names().expect("names").is_empty());
    assert_eq!(new_attrs.state().expect("state"), Some(State::Active));
    assert_ne!(
        key_of(&f.engine, &t, &uid).await.1,
        key_of(&f.engine, &t, &new).await.1
    );
}

// ------------------------------------------------------------------ cryptographic services

#[tokio::test]
async fn mongodb_encrypt_with_only_uid_and_data_returns_data_and_iv() {
    let f = fixture().await;
    let t = tenant("tenant-a");
    let uid = active_aes_key(&f.engine, &t).await;
    let plain = b"the MongoDB master key, 96 bytes of it, as mongod sends: 0123456789abcdef0123456789abcdef!!";
    let ResponsePayload::Encrypt(e) =
        ok(&f.engine, &t, V1_2, encrypt(&uid, plain, None, None)).await
    else {
        panic!()
    };
    let iv = e.iv_counter_nonce.expect("the server chose an IV");
    assert_eq!(iv.len(), 16);
    let data = e.data.expect("ciphertext");
    assert_ne!(&data[..], &plain[..]);
    assert_eq!(data.len() % 16, 0);
    let ResponsePayload::Decrypt(d) = ok(
        &f.engine,
        &t,
        V1_2,
        decrypt(&uid, &data, None, Some(&iv), None),
    )
    .await
    else {
        panic!()
    };
    assert_eq!(&d.data.expect("plaintext")[..], &plain[..]);
    // A second encryption uses a fresh IV.
    let ResponsePayload::Encrypt(again) =
        ok(&f.engine, &t, V1_2, encrypt(&uid, plain, None, None)).await
    else {
        panic!()
    };
    assert_ne!(again.iv_counter_nonce.expect("iv")[..], iv[..]);
}

#[tokio::test]
async fn gcm_ctr_and_key_wrap_round_trip_and_tampering_fails() {
    let f = fixture().await;
    let t = tenant("tenant-a");
    let uid = active_aes_key(&f.engine, &t).await;
    let gcm = CryptographicParameters {
        block_cipher_mode: Some(BlockCipherMode::Gcm),
        tag_length: Some(16),
        ..Default::default()
    };
    let ResponsePayload::Encrypt(e) = ok(
        &f.engine,
        &t,
        V1_4,
        encrypt(&uid, b"attack at dawn", Some(gcm.clone()), None),
    )
    .await
    else {
        panic!()
    };
    let (data, iv, tag) = (
        e.data.expect("data"),
        e.iv_counter_nonce.expect("iv"),
        e.authenticated_encryption_tag.expect("tag"),
    );
    assert_eq!(iv.len(), 12);
    let ResponsePayload::Decrypt(d) = ok(
        &f.engine,
        &t,
        V1_4,
        decrypt(&uid, &data, Some(gcm.clone()), Some(&iv), Some(&tag)),
    )
    .await
    else {
        panic!()
    };
    assert_eq!(&d.data.expect("plain")[..], b"attack at dawn");
    let mut bad_tag = tag.to_vec();
    bad_tag[0] ^= 1;
    let (reason, _) = fails(
        &f.engine,
        &t,
        V1_4,
        decrypt(&uid, &data, Some(gcm), Some(&iv), Some(&bad_tag)),
    )
    .await;
    assert_eq!(reason, ResultReason::CryptographicFailure);

    let ctr = CryptographicParameters {
        block_cipher_mode: Some(BlockCipherMode::Ctr),
        ..Default::default()
    };
    let counter = [7u8; 16];
    let ResponsePayload::Encrypt(e) = ok(
        &f.engine,
        &t,
        V1_4,
        encrypt(
            &uid,
            b"seventeen bytes!!",
            Some(ctr.clone()),
            Some(&counter),
        ),
    )
    .await
    else {
        panic!()
    };
    let ResponsePayload::Decrypt(d) = ok(
        &f.engine,
        &t,
        V1_4,
        decrypt(
            &uid,
            &e.data.expect("data"),
            Some(ctr),
            Some(&counter),
            None,
        ),
    )
    .await
    else {
        panic!()
    };
    assert_eq!(&d.data.expect("plain")[..], b"seventeen bytes!!");

    let kw = CryptographicParameters {
        block_cipher_mode: Some(BlockCipherMode::NistKeyWrap),
        ..Default::default()
    };
    let ResponsePayload::Encrypt(e) = ok(
        &f.engine,
        &t,
        V1_4,
        encrypt(&uid, &[0x42; 32], Some(kw.clone()), None),
    )
    .await
    else {
        panic!()
    };
    let wrapped = e.data.expect("wrapped");
    assert_eq!(wrapped.len(), 40);
    let ResponsePayload::Decrypt(d) = ok(
        &f.engine,
        &t,
        V1_4,
        decrypt(&uid, &wrapped, Some(kw), None, None),
    )
    .await
    else {
        panic!()
    };
    assert_eq!(&d.data.expect("unwrapped")[..], &[0x42; 32]);
}

#[tokio::test]
async fn crypto_needs_an_active_key_with_the_right_usage() {
    let f = fixture().await;
    let t = tenant("tenant-a");
    let pre_active = new_key(
        &f.engine,
        &t,
        V1_4,
        key_attributes(CryptographicAlgorithm::Aes, 256),
    )
    .await;
    assert_eq!(
        fails(&f.engine, &t, V2_1, encrypt(&pre_active, b"x", None, None))
            .await
            .0,
        ResultReason::WrongKeyLifecycleState
    );
    assert_eq!(
        fails(&f.engine, &t, V2_0, encrypt(&pre_active, b"x", None, None))
            .await
            .0,
        ResultReason::PermissionDenied
    );
    assert_eq!(
        fails(&f.engine, &t, V1_2, encrypt(&pre_active, b"x", None, None))
            .await
            .0,
        ResultReason::PermissionDenied
    );
    let decrypt_only = new_key(
        &f.engine,
        &t,
        V1_4,
        key_attributes(CryptographicAlgorithm::Aes, 256).with(
            Tag::CRYPTOGRAPHIC_USAGE_MASK,
            &CryptographicUsageMask::DECRYPT,
        ),
    )
    .await;
    ok(&f.engine, &t, V1_4, activate(&decrypt_only)).await;
    assert_eq!(
        fails(
            &f.engine,
            &t,
            V2_0,
            encrypt(&decrypt_only, b"x", None, None)
        )
        .await
        .0,
        ResultReason::IncompatibleCryptographicUsageMask
    );
    let revoked = active_aes_key(&f.engine, &t).await;
    ok(
        &f.engine,
        &t,
        V1_4,
        revoke(&revoked, RevocationReasonCode::Superseded),
    )
    .await;
    assert_eq!(
        fails(&f.engine, &t, V2_1, encrypt(&revoked, b"x", None, None))
            .await
            .0,
        ResultReason::WrongKeyLifecycleState
    );
    let ecb = CryptographicParameters {
        block_cipher_mode: Some(BlockCipherMode::Ecb),
        ..Default::default()
    };
    let active = active_aes_key(&f.engine, &t).await;
    // ECB is unpadded unless PKCS5 is named: one byte is not a block.
    assert_eq!(
        fails(&f.engine, &t, V1_4, encrypt(&active, b"x", Some(ecb), None))
            .await
            .0,
        ResultReason::InvalidField
    );
    // A mode that needs an IV, without one: the request is incomplete.
    assert_eq!(
        fails(
            &f.engine,
            &t,
            V1_4,
            decrypt(&active, &[0u8; 16], None, None, None)
        )
        .await
        .0,
        ResultReason::InvalidMessage
    );
}

#[tokio::test]
async fn mac_matches_rfc_4231_and_rng_is_bounded() {
    let f = fixture().await;
    let t = tenant("tenant-a");
    // RFC 4231 test case 2: key "Jefe", data "what do ya want for nothing?".
    let register = RequestPayload::Register(RegisterRequest {
        object_type: ObjectType::SymmetricKey,
        attributes: Some(Attributes::new().with(
            Tag::CRYPTOGRAPHIC_USAGE_MASK,
            &CryptographicUsageMask::MAC_GENERATE,
        )),
        object: Some(ManagedObject::SymmetricKey(SymmetricKey {
            key_block: KeyBlock::raw(
                b"Jefe".to_vec(),
                Some(CryptographicAlgorithm::HmacSha256),
                None,
            ),
        })),
        protection_storage_masks: None,
    });
    let ResponsePayload::Register(r) = ok(&f.engine, &t, V1_4, register).await else {
        panic!()
    };
    let uid = r.unique_identifier.as_text().expect("uid").to_owned();
    ok(&f.engine, &t, V1_4, activate(&uid)).await;
    let mac = RequestPayload::Mac(MacRequest {
        unique_identifier: id(&uid),
        cryptographic_parameters: None,
        data: Some(b"what do ya want for nothing?".as_slice().into()),
        correlation_value: None,
        init_indicator: None,
        final_indicator: None,
    });
    let ResponsePayload::Mac(m) = ok(&f.engine, &t, V1_4, mac).await else {
        panic!()
    };
    assert_eq!(
        hex::encode(&m.mac_data.expect("mac")[..]),
        "5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843"
    );

    let ResponsePayload::RngRetrieve(rng) = ok(
        &f.engine,
        &t,
        V1_4,
        RequestPayload::RngRetrieve(RngRetrieveRequest { data_length: 32 }),
    )
    .await
    else {
        panic!()
    };
    assert_eq!(rng.data.len(), 32);
    for bad in [0, -1, MAX_RNG_BYTES + 1] {
        assert_eq!(
            fails(
                &f.engine,
                &t,
                V1_4,
                RequestPayload::RngRetrieve(RngRetrieveRequest { data_length: bad })
            )
            .await
            .0,
            ResultReason::InvalidField
        );
    }
}

// ------------------------------------------------------------------ attributes and locate

#[tokio::test]
async fn attributes_can_be_added_modified_deleted_and_set_but_not_server_ones() {
    let f = fixture().await;
    let t = tenant("tenant-a");
    let uid = new_key(
        &f.engine,
        &t,
        V1_4,
        key_attributes(CryptographicAlgorithm::Aes, 256),
    )
    .await;
    let add = |a: Attribute| {
        RequestPayload::AddAttribute(AddAttributeRequest {
            unique_identifier: id(&uid),
            attribute: Some(a),
        })
    };
    ok(
        &f.engine,
        &t,
        V1_4,
        add(Attribute::typed(Tag::NAME, &Name::text("first"))),
    )
    .await;
    let ResponsePayload::AddAttribute(second) = ok(
        &f.engine,
        &t,
        V1_4,
        add(Attribute::typed(Tag::NAME, &Name::text("second"))),
    )
    .await
    else {
        panic!()
    };
    assert_eq!(
        second.attribute.expect("1.x echoes the attribute").index,
        Some(1)
    );
    ok(
        &f.engine,
        &t,
        V1_4,
        add(Attribute::custom(
            "x-owner",
            Value::TextString("payments".into()),
        )),
    )
    .await;
    assert_eq!(
        fails(
            &f.engine,
            &t,
            V1_4,
            add(Attribute::typed(Tag::STATE, &State::Active))
        )
        .await
        .0,
        ResultReason::PermissionDenied
    );
    assert_eq!(
        fails(
            &f.engine,
            &t,
            V2_1,
            add(Attribute::typed(
                Tag::UNIQUE_IDENTIFIER,
                &UniqueIdentifier::from("mine")
            ))
        )
        .await
        .0,
        ResultReason::AttributeReadOnly
    );

    let modify = RequestPayload::ModifyAttribute(ModifyAttributeRequest {
        unique_identifier: id(&uid),
        current_attribute: None,
        attribute: Some(Attribute {
            index: Some(1),
            ..Attribute::typed(Tag::NAME, &Name::text("renamed"))
        }),
    });
    ok(&f.engine, &t, V1_4, modify).await;
    let delete = RequestPayload::DeleteAttribute(DeleteAttributeRequest {
        unique_identifier: id(&uid),
        current_attribute: None,
        attribute_names: vec![AttributeName::Standard(Tag::NAME)],
        attribute_index: Some(0),
    });
    ok(&f.engine, &t, V1_4, delete).await;
    let missing = RequestPayload::DeleteAttribute(DeleteAttributeRequest {
        unique_identifier: id(&uid),
        current_attribute: None,
        attribute_names: vec![AttributeName::Standard(Tag::CONTACT_INFORMATION)],
        attribute_index: None,
    });
    assert_eq!(
        fails(&f.engine, &t, V1_4, missing.clone()).await.0,
        ResultReason::ItemNotFound
    );
    assert_eq!(
        fails(&f.engine, &t, V2_0, missing).await.0,
        ResultReason::AttributeNotFound
    );
    let set = RequestPayload::SetAttribute(SetAttributeRequest {
        unique_identifier: id(&uid),
        attribute: Some(Attribute::typed(
            Tag::CONTACT_INFORMATION,
            &"ops@example.com".to_string(),
        )),
    });
    ok(&f.engine, &t, V2_0, set).await;

    let ResponsePayload::GetAttributes(r) =
        ok(&f.engine, &t, V1_4, get_attributes(&uid, &[])).await
    else {
        panic!()
    };
    let attrs = r.attributes.expect("attrs");
    let names: Vec<String> = attrs
        .names()
        .expect("names")
        .into_iter()
        .map(|n| n.value)
        .collect();
    assert_eq!(names, ["renamed"]);
    assert_eq!(
        attrs
            .typed::<String>(Tag::CONTACT_INFORMATION)
            .expect("text"),
        Some("ops@example.com".into())
    );
    assert!(attrs
        .named(&AttributeName::Custom("x-owner".into()))
        .next()
        .is_some());

    let ResponsePayload::GetAttributeList(list) = ok(
        &f.engine,
        &t,
        V1_4,
        RequestPayload::GetAttributeList(GetAttributeListRequest {
            unique_identifier: id(&uid),
        }),
    )
    .await
    else {
        panic!()
    };
    for expected in [
        Tag::UNIQUE_IDENTIFIER,
        Tag::STATE,
        Tag::NAME,
        Tag::CONTACT_INFORMATION,
    ] {
        assert!(
            list.attribute_names
                .contains(&AttributeName::Standard(expected)),
            "{expected:?}"
        );
    }
}

#[tokio::test]
async fn responses_carry_only_attributes_the_clients_version_defines() {
    let f = fixture().await;
    let t = tenant("tenant-a");
    let uid = new_key(
        &f.engine,
        &t,
        V1_4,
        key_attributes(CryptographicAlgorithm::Aes, 256),
    )
    .await;
    // Sensitive is a KMIP 1.4 attribute, which every object has (False by default).
    let modify = RequestPayload::ModifyAttribute(ModifyAttributeRequest {
        unique_identifier: id(&uid),
        current_attribute: None,
        attribute: Some(Attribute::typed(Tag::SENSITIVE, &true)),
    });
    ok(&f.engine, &t, V1_4, modify).await;
    for (v, expected) in [(V1_0, false), (V1_4, true), (V2_0, true)] {
        let ResponsePayload::GetAttributes(r) =
            ok(&f.engine, &t, v, get_attributes(&uid, &[])).await
        else {
            panic!()
        };
        // Decoding re-reads what went over the wire for version v.
        assert_eq!(
            r.attributes.expect("attrs").get(Tag::SENSITIVE).is_some(),
            expected,
            "{v}"
        );
        let ResponsePayload::GetAttributeList(l) = ok(
            &f.engine,
            &t,
            v,
            RequestPayload::GetAttributeList(GetAttributeListRequest {
                unique_identifier: id(&uid),
            }),
        )
        .await
        else {
            panic!()
        };
        assert_eq!(
            l.attribute_names
                .contains(&AttributeName::Standard(Tag::SENSITIVE)),
            expected,
            "{v}"
        );
    }
}

#[tokio::test]
async fn locate_filters_pages_and_sees_only_the_callers_tenant() {
    let f = fixture().await;
    let (a, b) = (tenant("tenant-a"), tenant("tenant-b"));
    let mut aes = Vec::new();
    for i in 0..5 {
        let attrs = key_attributes(CryptographicAlgorithm::Aes, 256)
            .with(Tag::NAME, &Name::text(format!("key-{i}")))
            .with(Tag::OBJECT_GROUP, &"payments".to_string());
        aes.push(new_key(&f.engine, &a, V1_4, attrs).await);
    }
    let hmac = new_key(
        &f.engine,
        &a,
        V1_4,
        key_attributes(CryptographicAlgorithm::HmacSha256, 256),
    )
    .await;
    let other = new_key(
        &f.engine,
        &b,
        V1_4,
        key_attributes(CryptographicAlgorithm::Aes, 256).with(Tag::NAME, &Name::text("key-0")),
    )
    .await;

    let found = |p: ResponsePayload| match p {
        ResponsePayload::Locate(r) => r
            .unique_identifiers
            .into_iter()
            .map(|u| u.as_text().expect("uid").to_owned())
            .collect::<Vec<_>>(),
        other => panic!("{other:?}"),
    };
    let by_name = found(
        ok(
            &f.engine,
            &a,
            V1_4,
            locate(
                Attributes::new().with(Tag::NAME, &Name::text("key-3")),
                None,
                None,
            ),
        )
        .await,
    );
    assert_eq!(by_name, [aes[3].clone()]);
    let by_alg = found(
        ok(
            &f.engine,
            &a,
            V1_4,
            locate(
                Attributes::new().with(
                    Tag::CRYPTOGRAPHIC_ALGORITHM,
                    &CryptographicAlgorithm::HmacSha256,
                ),
                None,
                None,
            ),
        )
        .await,
    );
    assert_eq!(by_alg, std::slice::from_ref(&hmac));
    let group_page = found(
        ok(
            &f.engine,
            &a,
            V1_4,
            locate(
                Attributes::new().with(Tag::OBJECT_GROUP, &"payments".to_string()),
                Some(2),
                Some(1),
            ),
        )
        .await,
    );
    // Newest first (KMIP 2.1 §6.1.28): skip the newest, then two.
    assert_eq!(group_page, [aes[3].clone(), aes[2].clone()]);
    // A KMIP 2.0 Locate with no attributes finds everything the tenant owns — and only that.
    let everything = RequestPayload::Locate(LocateRequest {
        maximum_items: None,
        offset_items: None,
        storage_status_mask: None,
        object_group_member: None,
        attributes: None,
    });
    let all = found(ok(&f.engine, &a, V2_0, everything.clone()).await);
    assert_eq!(all.len(), 6);
    assert!(!all.contains(&other));
    assert_eq!(found(ok(&f.engine, &b, V2_0, everything).await), [other]);
    // A filter the store cannot evaluate (State is indexed; Initial Date is not).
    ok(&f.engine, &a, V1_4, activate(&aes[4])).await;
    let active = found(
        ok(
            &f.engine,
            &a,
            V1_4,
            locate(
                Attributes::new().with(Tag::STATE, &State::Active),
                None,
                None,
            ),
        )
        .await,
    );
    assert_eq!(active, [aes[4].clone()]);
}

// ------------------------------------------------------------------ isolation

#[tokio::test]
async fn another_tenants_object_is_indistinguishable_from_a_missing_one() {
    let f = fixture().await;
    let (a, b) = (tenant("tenant-a"), tenant("tenant-b"));
    let uid = active_aes_key(&f.engine, &a).await;
    let missing = uuid::Uuid::new_v4().to_string();
    let probes: Vec<fn(&str) -> RequestPayload> = vec![
        |u| get(u, None),
        |u| get_attributes(u, &[]),
        |u| {
            RequestPayload::GetAttributeList(GetAttributeListRequest {
                unique_identifier: id(u),
            })
        },
        |u| activate(u),
        |u| revoke(u, RevocationReasonCode::KeyCompromise),
        |u| destroy(u),
        |u| encrypt(u, b"data", None, None),
        |u| decrypt(u, &[0u8; 16], None, Some(&[0u8; 16]), None),
        |u| {
            RequestPayload::AddAttribute(AddAttributeRequest {
                unique_identifier: id(u),
                attribute: Some(Attribute::typed(Tag::NAME, &Name::text("x"))),
            })
        },
        |u| {
            RequestPayload::ReKey(ReKeyRequest {
                unique_identifier: id(u),
                offset: None,
                attributes: None,
                protection_storage_masks: None,
            })
        },
    ];
    for probe in probes {
        for v in [V1_2, V2_1] {
            let theirs = fails(&f.engine, &b, v, probe(&uid)).await;
            let nobodys = fails(&f.engine, &b, v, probe(&missing)).await;
            assert_eq!(theirs.0, nobodys.0);
            assert_eq!(
                theirs.1.replace(&uid, "<uid>"),
                nobodys.1.replace(&missing, "<uid>")
            );
            // 1.x names it Item Not Found, 2.x Object Not Found (KMIP 2.1 Table 222, …).
            let expected = if v == V1_2 {
                ResultReason::ItemNotFound
            } else {
                ResultReason::ObjectNotFound
            };
            assert_eq!(theirs.0, expected);
        }
    }
    // And the owner's key is untouched.
    assert_eq!(state_of(&f.engine, &a, &uid).await, State::Active);
}

// ------------------------------------------------------------------ batches and bad input

#[tokio::test]
async fn batch_error_continuation_stop_continue_and_undo() {
    let f = fixture().await;
    let t = tenant("tenant-a");
    let batch = |option| {
        let mut m = RequestMessage::new(
            V1_4,
            vec![
                create(
                    key_attributes(CryptographicAlgorithm::Aes, 256)
                        .with(Tag::NAME, &Name::text(format!("{option:?}"))),
                ),
                get("no-such-object", None),
                RequestPayload::RngRetrieve(RngRetrieveRequest { data_length: 8 }),
            ],
        );
        m.header.batch_error_continuation_option = Some(option);
        m
    };
    let stop = send(&f.engine, &t, &batch(BatchErrorContinuationOption::Stop)).await;
    assert_eq!(stop.batch_items.len(), 2);
    let cont = send(
        &f.engine,
        &t,
        &batch(BatchErrorContinuationOption::Continue),
    )
    .await;
    let statuses: Vec<_> = cont.batch_items.iter().map(|b| b.result_status).collect();
    assert_eq!(
        statuses,
        [
            ResultStatus::Success,
            ResultStatus::OperationFailed,
            ResultStatus::Success
        ]
    );
    let undo = send(&f.engine, &t, &batch(BatchErrorContinuationOption::Undo)).await;
    assert_eq!(
        undo.batch_items[0].result_status,
        ResultStatus::OperationUndone
    );
    // Stop and Continue kept their Create; Undo did not.
    for (option, kept) in [("Stop", 1), ("Continue", 1), ("Undo", 0)] {
        let ResponsePayload::Locate(l) = ok(
            &f.engine,
            &t,
            V1_4,
            locate(
                Attributes::new().with(Tag::NAME, &Name::text(option)),
                None,
                None,
            ),
        )
        .await
        else {
            panic!()
        };
        assert_eq!(l.unique_identifiers.len(), kept, "{option}");
    }
}

#[tokio::test]
async fn malformed_and_unknown_requests_get_kmip_errors() {
    let f = fixture().await;
    let t = tenant("tenant-a");
    let decode = |bytes: Vec<u8>| {
        ResponseMessage::from_ttlv(&bytes, &kmip::Limits::default()).expect("a KMIP response")
    };
    // Not TTLV at all.
    let (bytes, _) = f.engine.handle(&t, b"GET / HTTP/1.1\r\n\r\n").await;
    assert_eq!(
        decode(bytes).batch_items[0].result_reason,
        Some(ResultReason::InvalidMessage)
    );
    // A message that is not a request.
    let (bytes, _) = f
        .engine
        .handle(
            &t,
            &Item::structure(Tag::RESPONSE_MESSAGE, vec![]).to_ttlv(),
        )
        .await;
    assert_eq!(
        decode(bytes).batch_items[0].result_reason,
        Some(ResultReason::InvalidMessage)
    );
    // An unknown operation next to a valid one: the valid one is still served.
    let mut m = RequestMessage::new(
        V1_4,
        vec![RequestPayload::RngRetrieve(RngRetrieveRequest {
            data_length: 4,
        })],
    );
    m.batch_items.insert(
        0,
        RequestBatchItem {
            operation: 0x7777,
            unique_batch_item_id: None,
            payload: Err(kmip::message::UntypedPayload {
                error: kmip::message::MessageError::UnsupportedOperation(0x7777),
                raw: None,
            }),
            message_extension: None,
        },
    );
    m.header.batch_count = 2;
    m.header.batch_error_continuation_option = Some(BatchErrorContinuationOption::Continue);
    let r = send(&f.engine, &t, &m).await;
    assert_eq!(
        r.batch_items[0].result_reason,
        Some(ResultReason::OperationNotSupported)
    );
    assert_eq!(r.batch_items[1].result_status, ResultStatus::Success);
    // A field of the wrong type, and a missing required field.
    let wrong_type = Item::structure(
        Tag::REQUEST_MESSAGE,
        vec![
            RequestMessage::new(V1_4, vec![])
                .header
                .encode(Tag::REQUEST_HEADER, V1_4),
            Item::structure(
                Tag::BATCH_ITEM,
                vec![
                    Item::enumeration(Tag::OPERATION, Operation::RngRetrieve.value()),
                    Item::structure(
                        Tag::REQUEST_PAYLOAD,
                        vec![Item::text(Tag::DATA_LENGTH, "eight")],
                    ),
                ],
            ),
            Item::structure(
                Tag::BATCH_ITEM,
                vec![
                    Item::enumeration(Tag::OPERATION, Operation::Revoke.value()),
                    Item::structure(
                        Tag::REQUEST_PAYLOAD,
                        vec![Item::text(Tag::UNIQUE_IDENTIFIER, "x")],
                    ),
                ],
            ),
        ],
    );
    let mut bytes = wrong_type.to_ttlv();
    let (answer, _) = f.engine.handle(&t, &bytes).await;
    let answer = decode(answer);
    assert_eq!(
        answer.batch_items[0].result_reason,
        Some(ResultReason::InvalidField)
    );
    // Truncated: never a panic, always an answer.
    for cut in [1, 8, 20, bytes.len() - 1] {
        let (answer, _) = f.engine.handle(&t, &bytes[..cut]).await;
        assert_eq!(
            decode(answer).batch_items[0].result_reason,
            Some(ResultReason::InvalidMessage)
        );
    }
    // Over the size limit.
    bytes.resize(kmip::ttlv::DEFAULT_MAX_MESSAGE_SIZE + 8, 0);
    let (answer, _) = f.engine.handle(&t, &bytes).await;
    assert_eq!(
        decode(answer).batch_items[0].result_reason,
        Some(ResultReason::InvalidMessage)
    );
}

#[tokio::test]
async fn a_response_over_the_maximum_response_size_is_refused() {
    let f = fixture().await;
    let t = tenant("tenant-a");
    let mut m = RequestMessage::new(
        V2_1,
        vec![RequestPayload::RngRetrieve(RngRetrieveRequest {
            data_length: 512,
        })],
    );
    m.header.maximum_response_size = Some(256);
    let r = send(&f.engine, &t, &m).await;
    assert_eq!(
        r.batch_items[0].result_reason,
        Some(ResultReason::ResponseTooLarge)
    );
}

// ------------------------------------------------------------------ caps

fn register_opaque(len: usize) -> RequestPayload {
    RequestPayload::Register(RegisterRequest {
        object_type: ObjectType::OpaqueObject,
        attributes: None,
        object: Some(ManagedObject::OpaqueObject(OpaqueObject {
            opaque_data_type: RawEnum(0x8000_0001),
            opaque_data_value: ByteString::new(vec![7u8; len]),
        })),
        protection_storage_masks: None,
    })
}

async fn registered_opaque(engine: &Engine, ctx: &TenantContext, len: usize) -> String {
    let ResponsePayload::Register(r) = ok(engine, ctx, V2_1, register_opaque(len)).await else {
        panic!("not a Register answer")
    };
    r.unique_identifier.as_text().expect("uid").to_owned()
}

#[tokio::test]
async fn a_batch_over_the_item_limit_is_refused_whole() {
    let f = fixture().await;
    let t = tenant("tenant-a");
    let limit = Caps::default().max_batch_items;
    let items = (0..=limit).map(|_| rng(16)).collect();
    let r = send(&f.engine, &t, &RequestMessage::new(V2_1, items)).await;
    assert_eq!(r.batch_items.len(), 1);
    assert_eq!(
        r.batch_items[0].result_reason,
        Some(ResultReason::InvalidMessage)
    );
    let message = r.batch_items[0].result_message.clone().unwrap_or_default();
    assert!(message.contains(&limit.to_string()), "{message}");
    // At the limit, every item is served.
    let items = (0..limit).map(|_| rng(16)).collect();
    let r = send(&f.engine, &t, &RequestMessage::new(V2_1, items)).await;
    assert_eq!(r.batch_items.len(), limit);
    assert!(r
        .batch_items
        .iter()
        .all(|i| i.result_status == ResultStatus::Success));
}

fn rng(len: i32) -> RequestPayload {
    RequestPayload::RngRetrieve(RngRetrieveRequest { data_length: len })
}

#[test]
fn the_reserve_per_refused_item_covers_its_answer() {
    let item = RequestBatchItem {
        unique_batch_item_id: Some(ByteString::new(vec![0xff; 8])),
        ..RequestBatchItem::new(RequestPayload::RngRetrieve(RngRetrieveRequest {
            data_length: 1,
        }))
    };
    let mut failed = false;
    let ctx = tenant("tenant-a");
    for v in ProtocolVersion::SUPPORTED {
        let answer = item_response(&ctx, &item, Err(too_large(usize::MAX)), v, &mut failed);
        assert!(answer.encode(v).encoded_len() <= TOO_LARGE_ITEM_LEN);
    }
}

#[tokio::test]
async fn register_refuses_an_object_over_the_size_limit() {
    let f = fixture().await;
    let t = tenant("tenant-a");
    let max = Caps::default().max_object_size;
    let (reason, message) = fails(&f.engine, &t, V2_1, register_opaque(max)).await;
    assert_eq!(reason, ResultReason::InvalidField);
    assert!(message.contains("limit"), "{message}");
    // Comfortably below it is fine.
    registered_opaque(&f.engine, &t, max / 2).await;
}

#[tokio::test]
async fn gets_past_the_response_budget_answer_too_large_without_executing() {
    let f = fixture().await;
    let t = tenant("tenant-a");
    // Objects of 50 KiB; the server's response budget (1 MiB) holds about 20 of them.
    let uid = registered_opaque(&f.engine, &t, 50 * 1024).await;
    let items: Vec<_> = (0..200).map(|_| get(&uid, None)).collect();
    let mut m = RequestMessage::new(V2_1, items);
    m.header.batch_error_continuation_option = Some(BatchErrorContinuationOption::Continue);
    let (bytes, _) = f.engine.handle(&t, &m.to_ttlv()).await;
    assert!(
        bytes.len() <= Caps::default().max_response_size,
        "a response of {} bytes",
        bytes.len()
    );
    let r = ResponseMessage::from_ttlv(&bytes, &kmip::Limits::default()).expect("decodes");
    assert_eq!(r.batch_items.len(), 200, "every item answered");
    let served = r
        .batch_items
        .iter()
        .take_while(|i| i.result_status == ResultStatus::Success)
        .count();
    assert!(
        (10..30).contains(&served),
        "{served} Gets served; first: {:?}",
        r.batch_items[0].result_message
    );
    assert!(r.batch_items[served..]
        .iter()
        .all(|i| i.result_reason == Some(ResultReason::ResponseTooLarge)));

    // The client's own Maximum Response Size is the budget when it is smaller: the first
    // item fits, the second does not.
    let mut m = RequestMessage::new(V2_1, vec![get(&uid, None), get(&uid, None)]);
    m.header.maximum_response_size = Some(80 * 1024);
    m.header.batch_error_continuation_option = Some(BatchErrorContinuationOption::Continue);
    let r = send(&f.engine, &t, &m).await;
    assert_eq!(r.batch_items[0].result_status, ResultStatus::Success);
    assert_eq!(
        r.batch_items[1].result_reason,
        Some(ResultReason::ResponseTooLarge)
    );
}

#[tokio::test]
async fn the_change_of_an_item_answered_too_large_is_not_kept() {
    let f = fixture().await;
    let t = tenant("tenant-a");
    let uid = registered_opaque(&f.engine, &t, 4096).await;
    let fresh = |r: ResponsePayload| match r {
        ResponsePayload::GetAttributes(r) => r
            .attributes
            .expect("attributes")
            .typed::<bool>(Tag::FRESH)
            .expect("a Boolean"),
        other => panic!("unexpected {other:?}"),
    };
    assert_eq!(
        fresh(ok(&f.engine, &t, V2_1, get_attributes(&uid, &[Tag::FRESH])).await),
        Some(true)
    );
    // A first Get marks an object no longer Fresh; a first Get whose answer does not fit
    // the client's Maximum Response Size served nothing, so the object stays Fresh.
    let mut m = RequestMessage::new(V2_1, vec![get(&uid, None)]);
    m.header.maximum_response_size = Some(1024);
    let r = send(&f.engine, &t, &m).await;
    assert_eq!(
        r.batch_items[0].result_reason,
        Some(ResultReason::ResponseTooLarge)
    );
    assert_eq!(
        fresh(ok(&f.engine, &t, V2_1, get_attributes(&uid, &[Tag::FRESH])).await),
        Some(true),
        "a Get that delivered nothing cleared Fresh"
    );
    // An earlier item whose success was answered is kept: a Destroy before the Gets
    // that overflow.
    let big = registered_opaque(&f.engine, &t, 50 * 1024).await;
    let victim = active_aes_key(&f.engine, &t).await;
    ok(
        &f.engine,
        &t,
        V2_1,
        revoke(&victim, RevocationReasonCode::CessationOfOperation),
    )
    .await;
    let mut items = vec![destroy(&victim)];
    items.extend((0..40).map(|_| get(&big, None)));
    let mut m = RequestMessage::new(V2_1, items);
    m.header.batch_error_continuation_option = Some(BatchErrorContinuationOption::Continue);
    let r = send(&f.engine, &t, &m).await;
    assert_eq!(r.batch_items[0].result_status, ResultStatus::Success);
    assert_eq!(
        r.batch_items[40].result_reason,
        Some(ResultReason::ResponseTooLarge)
    );
    assert_eq!(state_of(&f.engine, &t, &victim).await, State::Destroyed);
}

#[tokio::test]
async fn the_cache_is_bounded_in_bytes() {
    let dir = tempfile::tempdir().expect("temp dir");
    let store = SqliteStore::open(dir.path().join("keys.db").to_str().expect("utf-8 path"))
        .await
        .expect("store opens");
    let keyring = Keyring::new(RootKey::generate("test-root").expect("root key"));
    let mut config = EngineConfig::default();
    config.cache.max_bytes = 1024 * 1024;
    let engine = Engine::new(Arc::new(store), Arc::new(keyring), config);
    let t = tenant("tenant-a");
    // 40 objects of 50 KiB (under a sixteenth of the bound, so each may be cached), read
    // twice each: 2 MB of objects against a 1 MiB bound.
    let mut uids = Vec::new();
    for _ in 0..40 {
        uids.push(registered_opaque(&engine, &t, 50 * 1024).await);
    }
    for uid in uids.iter().chain(uids.iter()) {
        ok(&engine, &t, V2_1, get(uid, None)).await;
    }
    assert!(!engine.cache().is_empty(), "something is cached");
    assert!(
        engine.cache().bytes() <= 1024 * 1024,
        "{} bytes cached",
        engine.cache().bytes()
    );
    assert!(engine.cache().len() < 40, "not everything fits");
    // An object over a sixteenth of the bound is never cached.
    let big = registered_opaque(&engine, &t, 100 * 1024).await;
    let before = engine.cache().len();
    ok(&engine, &t, V2_1, get(&big, None)).await;
    ok(&engine, &t, V2_1, get(&big, None)).await;
    assert!(engine.cache().len() <= before);
}

// ------------------------------------------------------------------ cache

#[tokio::test]
async fn a_revoke_through_one_engine_stops_encrypt_through_another_sharing_the_store() {
    let f = fixture().await;
    let t = tenant("tenant-a");
    let other = Engine::new(
        f.engine.store().clone(),
        f.engine.keyring.clone(),
        EngineConfig::default(),
    );
    let uid = active_aes_key(&f.engine, &t).await;
    // Warm the second engine's cache.
    ok(&other, &t, V1_4, encrypt(&uid, b"x", None, None)).await;
    ok(&other, &t, V1_4, encrypt(&uid, b"x", None, None)).await;
    assert!(other.cache().hits() >= 1);
    ok(
        &f.engine,
        &t,
        V1_4,
        revoke(&uid, RevocationReasonCode::CessationOfOperation),
    )
    .await;
    let deadline = Instant::now() + Duration::from_secs(1);
    loop {
        let response = call(&other, &t, V2_1, encrypt(&uid, b"x", None, None)).await;
        if response.batch_items[0].result_reason == Some(ResultReason::WrongKeyLifecycleState) {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the second engine still encrypts with a revoked key"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

mod keypairs;
mod multipart;
mod profiles;
