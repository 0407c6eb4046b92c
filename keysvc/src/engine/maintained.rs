//! Attributes the server maintains: those it sets on every new object (KMIP 2.1 §4: "SHALL
//! always have a value", "Initially set by: Server") and those that follow other changes
//! (Fresh after a Get, Always Sensitive / Never Extractable after Sensitive / Extractable).
//!
//! ```text
//! Create, Re-key ──► set_on_new_object(Generated)  Digest, Short Unique Identifier, Key Format
//! Register       ──► set_on_new_object(Registered) Type, Sensitive…, Fresh, Lease Time, Protection
//!                                                  Storage Mask (+ Original Creation Date and
//!                                                  Random Number Generator when generated here)
//! Add/Modify/Set ──► follow_change                 Always Sensitive, Never Extractable
//! Get            ──► Fresh = false                 (lifecycle::get)
//! ```
//!
//! Which of them a client sees is decided at encoding: an attribute its protocol version does
//! not define is left out of the response (Key Format Type and Short Unique Identifier are
//! 2.x attributes, Sensitive and its companions 1.4 ones).

use kmip::message::{Attributes, DateTime, Digest, Interval, ManagedObject, RngParameters};
use kmip::spec::{
    HashingAlgorithm, KeyFormatType, ProtectionStorageMask, ResultReason, RngAlgorithm,
};
use kmip::{Item, Tag, Value};

use super::OpError;
use crate::cryptosvc;

/// How a new object came to be.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Origin {
    /// Its key material was generated here (Create, Re-key).
    Generated,
    /// A client brought it (Register).
    Registered,
}

/// The Lease Time of every object: zero, which KMIP defines as "no lease interval is
/// effective, and the client MAY use the object without any lease time limit" (2.1 §6.1.35).
/// The service has no leases (Obtain Lease is not offered): a client learns of a revocation
/// when it next asks, not when a lease runs out.
pub(super) const LEASE_TIME: Interval = Interval(0);

/// Where objects are protected: by software, under the service's envelope encryption (key
/// material is stored wrapped under a software root key, never in hardware).
pub(super) const PROTECTION_STORAGE: ProtectionStorageMask = ProtectionStorageMask::SOFTWARE;

/// The generator behind key material made here: `rand`'s thread-local CSPRNG (ChaCha12
/// seeded and reseeded from the operating system), which is none of the RNG Algorithms
/// KMIP names (FIPS 186-2, SP 800-90A DRBG, NRBG, X9.31, X9.62): KMIP 2.1 §4.46 and §7.36
/// ask for Unspecified then.
fn random_number_generator() -> RngParameters {
    RngParameters {
        rng_algorithm: RngAlgorithm::Unspecified,
        cryptographic_algorithm: None,
        cryptographic_length: None,
        hashing_algorithm: None,
        drbg_algorithm: None,
        recommended_curve: None,
        fips186_variation: None,
        prediction_resistance: None,
    }
}

fn flag(attrs: &Attributes, tag: Tag) -> Result<Option<bool>, OpError> {
    attrs
        .typed(tag)
        .map_err(|e| OpError::invalid_field(e.to_string()))
}

/// Sets the server's attributes on a new object whose attributes (the client's, plus the
/// identity and lifecycle ones) are `attrs`. `object` is its material in clear.
pub(super) fn set_on_new_object(
    attrs: &mut Attributes,
    uid: &str,
    object: &ManagedObject,
    origin: Origin,
    now: DateTime,
) -> Result<(), OpError> {
    // KMIP 2.1 §4.56: "SHOULD be generated as a SHA-256 hash of the Unique Identifier".
    attrs.set_typed(
        Tag::SHORT_UNIQUE_IDENTIFIER,
        &kmip::message::ByteString::new(cryptosvc::sha256(uid.as_bytes())),
    );
    let (digest, format) = digest_of(object);
    if let Some(digest) = digest {
        attrs.set_typed(Tag::DIGEST, &digest);
    }
    if let Some(format) = format {
        attrs.set_typed(Tag::KEY_FORMAT_TYPE, &format);
    }
    if origin == Origin::Generated {
        // §4.38: mandatory for generated objects, "the same as the Initial Date".
        attrs.set_typed(Tag::ORIGINAL_CREATION_DATE, &now);
        attrs.set_typed(Tag::RANDOM_NUMBER_GENERATOR, &random_number_generator());
    }
    // §4.55 / §4.23: False / True unless the client said otherwise; the "always" / "never"
    // companions start from that value (§4.3, §4.33).
    let sensitive = flag(attrs, Tag::SENSITIVE)?.unwrap_or(false);
    let extractable = flag(attrs, Tag::EXTRACTABLE)?.unwrap_or(true);
    attrs.set_typed(Tag::SENSITIVE, &sensitive);
    attrs.set_typed(Tag::ALWAYS_SENSITIVE, &sensitive);
    attrs.set_typed(Tag::EXTRACTABLE, &extractable);
    attrs.set_typed(Tag::NEVER_EXTRACTABLE, &!extractable);
    // §4.24: True "unless the client provides a False value in Register".
    let fresh = match origin {
        Origin::Registered => flag(attrs, Tag::FRESH)?.unwrap_or(true),
        Origin::Generated => true,
    };
    attrs.set_typed(Tag::FRESH, &fresh);
    attrs.set_typed(Tag::LEASE_TIME, &LEASE_TIME);
    attrs.set(kmip::message::Attribute::new(
        Tag::PROTECTION_STORAGE_MASK,
        Value::Integer(PROTECTION_STORAGE.0 as i32),
    ));
    Ok(())
}

/// The mandatory Digest of an object (SHA-256 in the object type's default Key Format Type,
/// KMIP 2.1 §4.21) and its Key Format Type attribute (§4.26; none for a certificate).
///
/// Symmetric keys and secret data: the default format is Raw, whose Key Material is the key
/// bytes (a Transparent Symmetric Key holds the same bytes in its Key field), so the digest
/// is over those bytes. Public and private keys: over the key as kept (PKCS#1, PKCS#8,
/// X.509, ...), in that format; none for a key kept in a Transparent structure. Opaque
/// objects and certificates: over the Opaque Data Value / Certificate Value, with no Key
/// Format Type in the Digest (it is for keys and secret data only).
fn digest_of(object: &ManagedObject) -> (Option<Digest>, Option<KeyFormatType>) {
    let digest = |bytes: &[u8], format| Digest {
        hashing_algorithm: HashingAlgorithm::Sha256,
        digest_value: Some(kmip::message::ByteString::new(cryptosvc::sha256(bytes))),
        key_format_type: format,
    };
    match object {
        ManagedObject::OpaqueObject(o) => (
            Some(digest(&o.opaque_data_value, None)),
            Some(KeyFormatType::Opaque),
        ),
        ManagedObject::Certificate(c) => (Some(digest(&c.certificate_value, None)), None),
        ManagedObject::PublicKey(_) | ManagedObject::PrivateKey(_) => {
            let block = object.key_block();
            let bytes = block.and_then(|b| match &b.key_value {
                Some(kmip::message::KeyValue::Plain {
                    key_material: kmip::message::KeyMaterial::Bytes(bytes),
                    ..
                }) => Some(bytes),
                _ => None,
            });
            let format = block.map(|b| b.key_format_type);
            (bytes.map(|b| digest(b, format)), format)
        }
        other => match other.key_block() {
            Some(block) => (
                block
                    .key_bytes()
                    .map(|bytes| digest(bytes, Some(KeyFormatType::Raw))),
                Some(block.key_format_type),
            ),
            None => (None, Some(KeyFormatType::Raw)),
        },
    }
}

/// After a client changed attributes: Always Sensitive turns False once Sensitive has been
/// False (§4.3), Never Extractable once Extractable has been True (§4.33). Neither turns back.
pub(super) fn follow_change(attrs: &mut Attributes) -> Result<(), OpError> {
    if flag(attrs, Tag::SENSITIVE)? == Some(false)
        && flag(attrs, Tag::ALWAYS_SENSITIVE)? == Some(true)
    {
        attrs.set_typed(Tag::ALWAYS_SENSITIVE, &false);
    }
    if flag(attrs, Tag::EXTRACTABLE)? == Some(true)
        && flag(attrs, Tag::NEVER_EXTRACTABLE)? == Some(true)
    {
        attrs.set_typed(Tag::NEVER_EXTRACTABLE, &false);
    }
    Ok(())
}

/// Why Get may not serve this object's material in clear, if it may not: Sensitive objects
/// only leave wrapped (§4.55), non-extractable ones not at all (§4.23).
pub(super) fn refuse_get(attrs: &Attributes, uid: &str) -> Result<(), OpError> {
    if flag(attrs, Tag::SENSITIVE)? == Some(true) {
        return Err(OpError::new(
            ResultReason::Sensitive,
            format!("object {uid} is Sensitive: its key material is not served in clear"),
        ));
    }
    if flag(attrs, Tag::EXTRACTABLE)? == Some(false) {
        return Err(OpError::new(
            ResultReason::NotExtractable,
            format!("object {uid} is not Extractable"),
        ));
    }
    Ok(())
}

/// Whether the object has not yet been served by Get (§4.24).
pub(super) fn is_fresh(attrs: &Attributes) -> bool {
    matches!(
        attrs.get(Tag::FRESH).map(|a| &a.value),
        Some(Value::Boolean(true))
    )
}

/// Whether a request's Protection Storage Masks (Create, Register, Re-key) allow software
/// protection; none given allows anything (KMIP 2.1 §7.33).
pub(super) fn storage_acceptable(masks: Option<&Item>) -> Result<(), OpError> {
    let Some(masks) = masks else { return Ok(()) };
    let offered: Vec<i32> = masks
        .children()
        .iter()
        .filter_map(|m| match m.value {
            Value::Integer(v) => Some(v),
            _ => None,
        })
        .collect();
    if offered.is_empty()
        || offered
            .iter()
            .any(|m| *m & PROTECTION_STORAGE.0 as i32 != 0)
    {
        return Ok(());
    }
    Err(OpError::new(
        ResultReason::ProtectionStorageUnavailable,
        "objects are protected in software only",
    ))
}
