//! Object lifecycle: Create, Register, Get, Activate, Revoke, Destroy, ReKey.
//!
//! ```text
//! Pre-Active ──Activate──► Active ──Revoke──► Deactivated ──Destroy──► Destroyed
//!     │                      │                    │
//!     └──────Revoke(compromise)──────────────────►└──► Compromised ──Destroy──► Destroyed Compromised
//! ```

use kmip::message::payloads::*;
use kmip::message::{
    Attribute, Attributes, DateTime, Interval, KeyBlock, KeyMaterial, KeyValue, Link,
    ManagedObject, ResponsePayload, SymmetricKey, UsageLimits,
};
use kmip::spec::{
    CryptographicAlgorithm, CryptographicUsageMask, KeyFormatType, LinkType, ObjectType,
    ResultReason, RevocationReasonCode, State,
};
use kmip::{Item, Tag};

use super::keypairs;
use super::maintained::{self, Origin};
use super::object::{is_server_attribute, KeyObject};
use super::{Engine, OpError, Request};
use crate::cryptosvc;

pub(super) fn wrong_state(uid: &str, state: State, operation: &str) -> OpError {
    OpError::new(
        ResultReason::WrongKeyLifecycleState,
        format!(
            "{operation} is not allowed for object {uid} in state {}",
            state.name()
        ),
    )
}

/// Refuses attributes a client may not set (server-maintained ones).
pub(super) fn check_client_attributes(attrs: &Attributes, allowed: &[Tag]) -> Result<(), OpError> {
    for a in attrs.iter() {
        if let Some(tag) = a.tag() {
            if is_server_attribute(tag) && !allowed.contains(&tag) {
                return Err(OpError::new(
                    ResultReason::AttributeReadOnly,
                    format!(
                        "attribute {} is set by the server",
                        tag.name().unwrap_or("?")
                    ),
                ));
            }
        }
    }
    Ok(())
}

/// The attributes every new object starts with, plus the client's. An Activation Date in
/// the past (or now) makes the object Active at once.
pub(super) fn new_object_attributes(
    uid: &str,
    object_type: ObjectType,
    client: Option<&Attributes>,
    now: DateTime,
) -> Result<Attributes, OpError> {
    let mut attrs = client.cloned().unwrap_or_default();
    attrs.template_names.clear();
    attrs.remove(Tag::OBJECT_TYPE);
    let activation: Option<DateTime> = attrs
        .typed(Tag::ACTIVATION_DATE)
        .map_err(|e| OpError::invalid_field(e.to_string()))?;
    let state = match activation {
        Some(date) if date.seconds() <= now.seconds() => State::Active,
        _ => State::PreActive,
    };
    attrs.set_typed(
        Tag::UNIQUE_IDENTIFIER,
        &kmip::message::UniqueIdentifier::from(uid),
    );
    attrs.set_typed(Tag::OBJECT_TYPE, &object_type);
    attrs.set_typed(Tag::STATE, &state);
    attrs.set_typed(Tag::INITIAL_DATE, &now);
    attrs.set_typed(Tag::LAST_CHANGE_DATE, &now);
    if let Some(limits) = field(attrs.typed::<UsageLimits>(Tag::USAGE_LIMITS))? {
        // The whole Total is available to a new object; a Count from the client is ignored
        // (KMIP 2.1 §4.59), and Re-key starts the replacement afresh (§6.1.46).
        attrs.set_typed(Tag::USAGE_LIMITS, &fresh_usage_limits(limits));
    }
    Ok(attrs)
}

/// Usage Limits with the whole Total remaining.
pub(super) fn fresh_usage_limits(limits: UsageLimits) -> UsageLimits {
    UsageLimits {
        count: Some(limits.total),
        ..limits
    }
}

pub(super) fn new_uid() -> String {
    uuid::Uuid::new_v4().to_string()
}

/// Default usage for a new key when the client names none.
fn default_usage(algorithm: CryptographicAlgorithm) -> CryptographicUsageMask {
    if matches!(
        algorithm,
        CryptographicAlgorithm::Aes | CryptographicAlgorithm::Des3
    ) {
        CryptographicUsageMask::ENCRYPT | CryptographicUsageMask::DECRYPT
    } else {
        CryptographicUsageMask::MAC_GENERATE | CryptographicUsageMask::MAC_VERIFY
    }
}

pub(super) fn field<T>(
    r: Result<Option<T>, kmip::message::MessageError>,
) -> Result<Option<T>, OpError> {
    r.map_err(|e| OpError::invalid_field(e.to_string()))
}

pub(super) async fn create(
    req: &mut Request<'_>,
    r: &CreateRequest,
) -> Result<ResponsePayload, OpError> {
    if r.object_type != ObjectType::SymmetricKey {
        return Err(OpError::new(
            ResultReason::InvalidObjectType,
            format!(
                "Create of {} is not supported; symmetric keys only",
                r.object_type.name()
            ),
        ));
    }
    let client = r.attributes.clone().unwrap_or_default();
    check_client_attributes(
        &client,
        &[Tag::CRYPTOGRAPHIC_ALGORITHM, Tag::CRYPTOGRAPHIC_LENGTH],
    )?;
    maintained::storage_acceptable(r.protection_storage_masks.as_ref())?;
    let algorithm = field(client.cryptographic_algorithm())?
        .ok_or_else(|| OpError::invalid_field("Cryptographic Algorithm is required"))?;
    let length = field(client.cryptographic_length())?
        .ok_or_else(|| OpError::invalid_field("Cryptographic Length is required"))?;
    let material = cryptosvc::generate_key(algorithm, length).map_err(|e| {
        OpError::invalid_field(format!(
            "cannot create {} key of {length} bits: {e}",
            algorithm.name()
        ))
    })?;

    let uid = new_uid();
    let now = DateTime::now();
    let mut attrs = new_object_attributes(&uid, ObjectType::SymmetricKey, Some(&client), now)?;
    if field(attrs.cryptographic_usage_mask())?.is_none() {
        attrs.set_typed(Tag::CRYPTOGRAPHIC_USAGE_MASK, &default_usage(algorithm));
    }
    let key = ManagedObject::SymmetricKey(SymmetricKey {
        key_block: KeyBlock::raw(material.to_vec(), Some(algorithm), Some(length)),
    });
    maintained::set_on_new_object(&mut attrs, &uid, &key, Origin::Generated, now)?;
    let object = KeyObject {
        uid: uid.clone(),
        object_type: ObjectType::SymmetricKey,
        attributes: attrs,
        object: Some(key),
        created_at: now.seconds(),
        version: 0,
    };
    req.insert(&object).await?;
    req.placeholder = Some(uid.clone());
    Ok(ResponsePayload::Create(CreateResponse {
        object_type: ObjectType::SymmetricKey,
        unique_identifier: uid.into(),
        attributes: None,
    }))
}

pub(super) async fn register(
    req: &mut Request<'_>,
    r: &RegisterRequest,
) -> Result<ResponsePayload, OpError> {
    let object = r
        .object
        .clone()
        .ok_or_else(|| OpError::new(ResultReason::InvalidMessage, "Register needs an object"))?;
    let size = object.to_item(req.version).encoded_len();
    let max = req.engine.config.caps.max_object_size;
    if size > max {
        return Err(OpError::invalid_field(format!(
            "an object of {size} bytes exceeds this server's limit of {max} bytes"
        )));
    }
    let actual_type = object.object_type();
    if actual_type != Some(r.object_type) {
        return Err(OpError::invalid_field(
            "Object Type does not match the object",
        ));
    }
    // The list Query answers decides; an object with no typed form could not be kept even if
    // the list named its type (the Query test then fails: the list would promise too much).
    if !Engine::serves_object_type(r.object_type) || matches!(object, ManagedObject::Other(_)) {
        return Err(OpError::new(
            ResultReason::InvalidObjectType,
            format!("Register of {} is not supported", r.object_type.name()),
        ));
    }
    let client = r.attributes.clone().unwrap_or_default();
    // A client may describe where and how it made the object (KMIP 2.1 §4.38, §4.46) and
    // say it has already seen it (Fresh False, §4.24).
    check_client_attributes(
        &client,
        &[
            Tag::CRYPTOGRAPHIC_ALGORITHM,
            Tag::CRYPTOGRAPHIC_LENGTH,
            Tag::ORIGINAL_CREATION_DATE,
            Tag::RANDOM_NUMBER_GENERATOR,
            Tag::FRESH,
            Tag::CERTIFICATE_TYPE,
        ],
    )?;
    maintained::storage_acceptable(r.protection_storage_masks.as_ref())?;

    let uid = new_uid();
    let now = DateTime::now();
    let mut attrs = new_object_attributes(&uid, r.object_type, Some(&client), now)?;
    if let Some(block) = object.key_block() {
        if matches!(block.key_value, Some(KeyValue::Wrapped(_)))
            || block.key_wrapping_data.is_some()
        {
            return Err(OpError::new(
                ResultReason::FeatureNotSupported,
                "wrapped key material cannot be registered",
            ));
        }
    }
    if let ManagedObject::Certificate(c) = &object {
        keypairs::certificate_attributes(c, &mut attrs)?;
    } else if matches!(
        object,
        ManagedObject::PublicKey(_) | ManagedObject::PrivateKey(_)
    ) {
        keypairs::check_registered_key(&object, &mut attrs)?;
    } else if let Some(block) = object.key_block() {
        let bytes = block
            .key_bytes()
            .ok_or_else(|| OpError::invalid_field("the key block holds no key material"))?;
        if let Some(algorithm) = block.cryptographic_algorithm {
            if field(attrs.cryptographic_algorithm())?.is_none() {
                attrs.set_typed(Tag::CRYPTOGRAPHIC_ALGORITHM, &algorithm);
            }
        }
        if r.object_type == ObjectType::SymmetricKey {
            let bits = (bytes.len() * 8) as i32;
            let declared = block
                .cryptographic_length
                .or(field(attrs.cryptographic_length())?);
            // A Triple DES key is 192 bits on the wire and 168 in strength; either is its
            // length.
            let des3 = field(attrs.cryptographic_algorithm())?
                == Some(CryptographicAlgorithm::Des3)
                && bits == cryptosvc::DES3_KEY_BITS_WITH_PARITY;
            let length = match declared {
                Some(d) if d == bits || (des3 && d == cryptosvc::DES3_KEY_BITS) => d,
                None => bits,
                Some(_) => {
                    return Err(OpError::invalid_field(format!(
                        "Cryptographic Length does not match the {bits}-bit key"
                    )))
                }
            };
            attrs.set_typed(Tag::CRYPTOGRAPHIC_LENGTH, &length);
            if field(attrs.cryptographic_algorithm())?.is_none() {
                return Err(OpError::invalid_field(
                    "Cryptographic Algorithm is required for a symmetric key",
                ));
            }
        }
    }
    maintained::set_on_new_object(&mut attrs, &uid, &object, Origin::Registered, now)?;
    let record = KeyObject {
        uid: uid.clone(),
        object_type: r.object_type,
        attributes: attrs,
        object: Some(object),
        created_at: now.seconds(),
        version: 0,
    };
    req.insert(&record).await?;
    req.placeholder = Some(uid.clone());
    Ok(ResponsePayload::Register(RegisterResponse {
        unique_identifier: uid.into(),
        attributes: None,
    }))
}

pub(super) async fn get(req: &mut Request<'_>, r: &GetRequest) -> Result<ResponsePayload, OpError> {
    let uid = req.target(&r.unique_identifier)?;
    if r.key_wrapping_specification.is_some() || r.key_wrap_type.is_some() {
        return Err(OpError::new(
            ResultReason::FeatureNotSupported,
            "key wrapping on Get is not supported",
        ));
    }
    if r.key_compression_type.is_some() {
        return Err(OpError::new(
            ResultReason::KeyCompressionTypeNotSupported,
            "key compression is not supported",
        ));
    }
    let stored = req.load(&uid).await?;
    if stored.object.is_some() {
        maintained::refuse_get(&stored.attributes, &uid)?;
        if maintained::is_fresh(&stored.attributes) {
            // Served once: no longer Fresh (KMIP 2.1 §4.24).
            req.update_attributes(&uid, "served", |a| a.set_typed(Tag::FRESH, &false))
                .await?;
        }
    }
    let object = stored.object.as_ref().ok_or_else(|| {
        OpError::new(
            ResultReason::ObjectDestroyed,
            format!("object {uid} has been destroyed"),
        )
    })?;
    let object = match (object, r.key_format_type) {
        (_, None) => object.clone(),
        (ManagedObject::PublicKey(_) | ManagedObject::PrivateKey(_), Some(format)) => {
            keypairs::key_in(object, format)?
        }
        (ManagedObject::SymmetricKey(k), Some(format)) => {
            ManagedObject::SymmetricKey(SymmetricKey {
                key_block: symmetric_key_in(&k.key_block, format)?,
            })
        }
        (other, Some(format)) => match other.key_block() {
            Some(block) if block.key_format_type == format => other.clone(),
            _ => {
                return Err(OpError::new(
                    ResultReason::KeyFormatTypeNotSupported,
                    format!(
                        "{} cannot be returned as {}",
                        stored.object_type.name(),
                        format.name()
                    ),
                ))
            }
        },
    };
    req.placeholder = Some(uid.clone());
    Ok(ResponsePayload::Get(GetResponse {
        object_type: stored.object_type,
        unique_identifier: uid.into(),
        object: Some(object),
    }))
}

/// A symmetric key block in the requested format: Raw or Transparent Symmetric Key.
fn symmetric_key_in(block: &KeyBlock, format: KeyFormatType) -> Result<KeyBlock, OpError> {
    let bytes = block
        .key_bytes()
        .ok_or_else(|| OpError::new(ResultReason::GeneralFailure, "key material unavailable"))?;
    let material = match format {
        KeyFormatType::Raw => KeyMaterial::Bytes(bytes.into()),
        KeyFormatType::TransparentSymmetricKey => {
            KeyMaterial::Structure(vec![Item::bytes(Tag::KEY, bytes.to_vec())])
        }
        other => {
            return Err(OpError::new(
                ResultReason::KeyFormatTypeNotSupported,
                format!(
                    "symmetric keys are available as Raw or Transparent Symmetric Key, not {}",
                    other.name()
                ),
            ))
        }
    };
    Ok(KeyBlock {
        key_format_type: format,
        key_value: Some(KeyValue::Plain {
            key_material: material,
            attributes: None,
        }),
        ..block.clone()
    })
}

pub(super) async fn activate(
    req: &mut Request<'_>,
    r: &IdRequest,
) -> Result<ResponsePayload, OpError> {
    let uid = req.target(&r.unique_identifier)?;
    let mut object = req.load_fresh(&uid).await?;
    let state = object.state();
    if state != State::PreActive {
        return Err(wrong_state(&uid, state, "Activate"));
    }
    let now = DateTime::now();
    object.attributes.set_typed(Tag::ACTIVATION_DATE, &now);
    object.set_state(State::Active, now);
    req.update(&object, "activated").await?;
    req.placeholder = Some(uid.clone());
    Ok(ResponsePayload::Activate(IdResponse {
        unique_identifier: uid.into(),
    }))
}

pub(super) async fn revoke(
    req: &mut Request<'_>,
    r: &RevokeRequest,
) -> Result<ResponsePayload, OpError> {
    let uid = req.target(&r.unique_identifier)?;
    let mut object = req.load_fresh(&uid).await?;
    let state = object.state();
    let now = DateTime::now();
    let compromised = matches!(
        r.revocation_reason.code,
        RevocationReasonCode::KeyCompromise | RevocationReasonCode::CaCompromise
    );
    if compromised {
        if !matches!(state, State::PreActive | State::Active | State::Deactivated) {
            return Err(wrong_state(&uid, state, "Revoke"));
        }
        let occurred = r.compromise_occurrence_date.unwrap_or(now);
        object
            .attributes
            .set_typed(Tag::COMPROMISE_OCCURRENCE_DATE, &occurred);
        object.attributes.set_typed(Tag::COMPROMISE_DATE, &now);
        object.set_state(State::Compromised, now);
    } else {
        if state != State::Active {
            return Err(wrong_state(&uid, state, "Revoke"));
        }
        object.attributes.set_typed(Tag::DEACTIVATION_DATE, &now);
        object.set_state(State::Deactivated, now);
    }
    object
        .attributes
        .set_typed(Tag::REVOCATION_REASON, &r.revocation_reason);
    req.update(&object, "revoked").await?;
    req.placeholder = Some(uid.clone());
    Ok(ResponsePayload::Revoke(IdResponse {
        unique_identifier: uid.into(),
    }))
}

pub(super) async fn destroy(
    req: &mut Request<'_>,
    r: &IdRequest,
) -> Result<ResponsePayload, OpError> {
    let uid = req.target(&r.unique_identifier)?;
    let mut object = req.load_fresh(&uid).await?;
    let state = object.state();
    let next = match state {
        State::PreActive | State::Deactivated => State::Destroyed,
        State::Compromised => State::DestroyedCompromised,
        State::Active => {
            return Err(OpError::new(
                ResultReason::WrongKeyLifecycleState,
                format!("object {uid} is Active: revoke it before destroying it"),
            ))
        }
        _ => return Err(wrong_state(&uid, state, "Destroy")),
    };
    let now = DateTime::now();
    // Material is erased (dropping it zeroizes the buffers); metadata stays.
    object.object = None;
    object.attributes.set_typed(Tag::DESTROY_DATE, &now);
    object.set_state(next, now);
    req.update(&object, "destroyed").await?;
    req.placeholder = Some(uid.clone());
    Ok(ResponsePayload::Destroy(IdResponse {
        unique_identifier: uid.into(),
    }))
}

pub(super) async fn rekey(
    req: &mut Request<'_>,
    r: &ReKeyRequest,
) -> Result<ResponsePayload, OpError> {
    let uid = req.target(&r.unique_identifier)?;
    let mut old = req.load_fresh(&uid).await?;
    let state = old.state();
    if old.object_type != ObjectType::SymmetricKey || old.object.is_none() {
        return Err(OpError::new(
            ResultReason::InvalidObjectType,
            "only symmetric keys with material can be re-keyed",
        ));
    }
    if !matches!(state, State::PreActive | State::Active) {
        return Err(wrong_state(&uid, state, "ReKey"));
    }
    let algorithm = field(old.attributes.cryptographic_algorithm())?
        .ok_or_else(|| OpError::new(ResultReason::GeneralFailure, "the key has no algorithm"))?;
    let length = field(old.attributes.cryptographic_length())?
        .ok_or_else(|| OpError::new(ResultReason::GeneralFailure, "the key has no length"))?;
    let material = cryptosvc::generate_key(algorithm, length)
        .map_err(|e| OpError::new(ResultReason::GeneralFailure, e.to_string()))?;

    let new_uid = new_uid();
    let now = DateTime::now();
    maintained::storage_acceptable(r.protection_storage_masks.as_ref())?;
    let inherited = successor_attributes(&old, r.attributes.as_ref(), r.offset, now)?;
    let mut attrs =
        new_object_attributes(&new_uid, ObjectType::SymmetricKey, Some(&inherited), now)?;
    link(&mut attrs, LinkType::ReplacedObjectLink, &uid);
    let key = ManagedObject::SymmetricKey(SymmetricKey {
        key_block: KeyBlock::raw(material.to_vec(), Some(algorithm), Some(length)),
    });
    maintained::set_on_new_object(&mut attrs, &new_uid, &key, Origin::Generated, now)?;
    let replacement = KeyObject {
        uid: new_uid.clone(),
        object_type: ObjectType::SymmetricKey,
        attributes: attrs,
        object: Some(key),
        created_at: now.seconds(),
        version: 0,
    };
    req.insert(&replacement).await?;

    retire(&mut old, &new_uid, now);
    req.update(&old, "rekeyed").await?;
    req.placeholder = Some(new_uid.clone());
    Ok(ResponsePayload::ReKey(ReKeyResponse {
        unique_identifier: new_uid.into(),
        attributes: None,
    }))
}

/// The attributes a replacement (Re-key, Re-key Key Pair) starts from: the old object's
/// client attributes (its names move to the replacement), the algorithm and length, the
/// request's attributes over them; activated after `offset`, or now if the old one is Active.
pub(super) fn successor_attributes(
    old: &KeyObject,
    requested: Option<&Attributes>,
    offset: Option<Interval>,
    now: DateTime,
) -> Result<Attributes, OpError> {
    let mut inherited = Attributes::new();
    for a in old.attributes.iter() {
        let server_set = a.tag().is_some_and(|t| {
            is_server_attribute(t)
                || [
                    Tag::LINK,
                    Tag::ACTIVATION_DATE,
                    Tag::DEACTIVATION_DATE,
                    Tag::UNIQUE_IDENTIFIER,
                ]
                .contains(&t)
        });
        if !server_set
            || a.tag() == Some(Tag::CRYPTOGRAPHIC_ALGORITHM)
            || a.tag() == Some(Tag::CRYPTOGRAPHIC_LENGTH)
        {
            inherited.push(a.clone());
        }
    }
    if let Some(requested) = requested {
        check_client_attributes(requested, &[])?;
        for a in requested.iter() {
            inherited.set(a.clone());
        }
    }
    if let Some(Interval(offset)) = offset {
        let activation = DateTime::Seconds(now.seconds() + i64::from(offset));
        inherited.set_typed(Tag::ACTIVATION_DATE, &activation);
    } else if old.state() == State::Active {
        inherited.set_typed(Tag::ACTIVATION_DATE, &now);
    }
    Ok(inherited)
}

/// The replaced object after a re-key: its names have moved to the replacement, which it
/// links to (Replacement Object Link).
pub(super) fn retire(old: &mut KeyObject, replacement: &str, now: DateTime) {
    old.attributes.remove(Tag::NAME);
    link(
        &mut old.attributes,
        LinkType::ReplacementObjectLink,
        replacement,
    );
    old.touch(now);
}

/// Adds a Link of `link_type` to `target`.
pub(super) fn link(attrs: &mut Attributes, link_type: LinkType, target: &str) {
    attrs.push(Attribute::typed(
        Tag::LINK,
        &Link {
            link_type,
            linked_object_identifier: target.to_string().into(),
        },
    ));
}
