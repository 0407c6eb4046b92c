//! A managed object as the engine works with it — attributes in clear, key material
//! unwrapped — and its conversion to and from the stored, wrapped record.
//!
//! Stored records are authenticated: `integrity` is an HMAC (key derived from the tenant
//! KEK) over tenant, uid, object type, version, creation time, every attribute (state,
//! usage mask, Sensitive, Extractable, usage limits, dates, …) and the wrapped material,
//! and the columns derived from the attributes (state, algorithm, length, index) must agree
//! with them. A record changed behind keysvc's back answers as tampered — General Failure
//! "stored object failed integrity check", logged with tenant and uid, counted in
//! [`integrity_failures`] — and only that object is affected. Rows written before records
//! were authenticated (`integrity` NULL, version 0) are read the old way only under a root
//! key whose verified record allows it (`Keyring::legacy_rows_permitted`), and are sealed
//! on their next write or by rotate-root.

use kmip::message::{
    Attribute, AttributeName, Attributes, DateTime, ManagedObject, Name, TtlvValue,
};
use kmip::spec::{CryptographicUsageMask, ObjectType, State};
use kmip::ttlv::{self, Limits};
use kmip::{ProtocolVersion, Tag, Value};

use std::sync::atomic::{AtomicU64, Ordering};

use super::OpError;
use crate::envelope::{Binding, EnvelopeError, Keyring, SealedRecord};
use crate::store::ObjectRecord;
use crate::tenant::TenantId;

/// Attributes only the server sets: a client may read them, never add, modify or delete them
/// ([`is_server_attribute`]: these, and the certificate name parts read from the certificate,
/// KMIP 2.1 §4.9-4.13).
const SERVER_ATTRIBUTES: [Tag; 25] = [
    Tag::UNIQUE_IDENTIFIER,
    Tag::OBJECT_TYPE,
    Tag::CRYPTOGRAPHIC_ALGORITHM,
    Tag::CRYPTOGRAPHIC_LENGTH,
    Tag::STATE,
    Tag::INITIAL_DATE,
    Tag::LAST_CHANGE_DATE,
    Tag::DESTROY_DATE,
    Tag::COMPROMISE_DATE,
    Tag::COMPROMISE_OCCURRENCE_DATE,
    Tag::REVOCATION_REASON,
    Tag::DIGEST,
    Tag::ORIGINAL_CREATION_DATE,
    Tag::KEY_VALUE_PRESENT,
    Tag::KEY_VALUE_LOCATION,
    Tag::RANDOM_NUMBER_GENERATOR,
    Tag::FRESH,
    Tag::ALWAYS_SENSITIVE,
    Tag::NEVER_EXTRACTABLE,
    Tag::SHORT_UNIQUE_IDENTIFIER,
    Tag::KEY_FORMAT_TYPE,
    Tag::PROTECTION_STORAGE_MASK,
    Tag::LEASE_TIME,
    Tag::CERTIFICATE_TYPE,
    Tag::CERTIFICATE_LENGTH,
];

/// Whether only the server sets attribute `tag`.
pub(crate) fn is_server_attribute(tag: Tag) -> bool {
    SERVER_ATTRIBUTES.contains(&tag) || kmip::message::attributes::is_certificate_name_part(tag)
}

/// Records that failed their integrity check, since the process started.
static INTEGRITY_FAILURES: AtomicU64 = AtomicU64::new(0);

/// How many stored records failed their integrity check (the metric
/// `openkcm_keysvc_integrity_failures_total`).
pub fn integrity_failures() -> u64 {
    INTEGRITY_FAILURES.load(Ordering::Relaxed)
}

/// The answer for a record changed outside keysvc: logged (tenant, uid, what; never
/// material) and counted.
fn tampered(tenant: &TenantId, uid: &str, what: &str) -> OpError {
    INTEGRITY_FAILURES.fetch_add(1, Ordering::Relaxed);
    tracing::error!(%tenant, uid, what, "stored object failed integrity check");
    OpError::new(
        kmip::spec::ResultReason::GeneralFailure,
        "stored object failed integrity check",
    )
}

fn sealed<'a>(record: &'a ObjectRecord, tenant: &'a TenantId) -> SealedRecord<'a> {
    SealedRecord {
        tenant,
        uid: &record.uid,
        object_type: record.object_type,
        version: record.version,
        created_at: record.created_at,
        attributes: &record.attributes,
        material: record.material.as_ref(),
    }
}

/// Checks a stored record's authenticator (or, for a row that predates them, that its root
/// key allows such rows) and that the derived columns agree with its attributes; answers the
/// decoded attributes. Does not unwrap the material.
pub(crate) fn verify_record(
    record: &ObjectRecord,
    keyring: &Keyring,
    tenant: &TenantId,
) -> Result<Attributes, OpError> {
    match &record.integrity {
        Some(integrity) => match keyring.verify_record(sealed(record, tenant), integrity) {
            Ok(()) => {}
            Err(EnvelopeError::UnknownRootKey(id)) => {
                tracing::error!(%tenant, uid = %record.uid, root_key = %id,
                    "stored object is sealed under a root key that is not loaded");
                return Err(OpError::unreadable());
            }
            Err(_) => return Err(tampered(tenant, &record.uid, "authenticator")),
        },
        None => {
            let permitted = record.version == 0
                && keyring.legacy_rows_permitted(
                    record.material.as_ref().map(|w| w.root_key_id.as_str()),
                );
            if !permitted {
                return Err(tampered(tenant, &record.uid, "authenticator missing"));
            }
        }
    }
    let attributes = stored_attributes(record)
        .map_err(|_| tampered(tenant, &record.uid, "attributes do not decode"))?;
    let state = attributes
        .state()
        .ok()
        .flatten()
        .unwrap_or(State::PreActive)
        .value();
    let consistent = record.state == state
        && record.cryptographic_algorithm
            == attributes
                .cryptographic_algorithm()
                .ok()
                .flatten()
                .map(|a| a.value())
        && record.cryptographic_length == attributes.cryptographic_length().ok().flatten()
        && record.index == index_pairs(&attributes);
    if !consistent {
        return Err(tampered(
            tenant,
            &record.uid,
            "indexed columns disagree with the attributes",
        ));
    }
    Ok(attributes)
}

/// Seals a record after its attributes changed (the material as stored).
pub(crate) fn reseal(record: &mut ObjectRecord, keyring: &Keyring, tenant: &TenantId) {
    record.integrity = Some(keyring.seal_record(sealed(record, tenant)));
}

/// A managed object in clear. Key material lives in `object` and is zeroized with it.
#[derive(Clone, Debug)]
pub struct KeyObject {
    pub uid: String,
    pub object_type: ObjectType,
    pub attributes: Attributes,
    /// `None` once destroyed (metadata is kept, material erased).
    pub object: Option<ManagedObject>,
    pub created_at: i64,
    /// The stored record's version this object was read at (0 for a new object): the
    /// record [`KeyObject::to_record`] writes is the next one, and the store writes it only
    /// over this one.
    pub version: i64,
}

impl KeyObject {
    pub fn state(&self) -> State {
        self.attributes
            .state()
            .ok()
            .flatten()
            .unwrap_or(State::PreActive)
    }

    pub fn usage_mask(&self) -> CryptographicUsageMask {
        self.attributes
            .cryptographic_usage_mask()
            .ok()
            .flatten()
            .unwrap_or(CryptographicUsageMask(0))
    }

    /// The raw key bytes, for cryptographic operations.
    pub fn key_bytes(&self) -> Option<&[u8]> {
        self.object.as_ref()?.key_block()?.key_bytes()
    }

    /// Sets State and the Last Change Date.
    pub fn set_state(&mut self, state: State, now: DateTime) {
        self.attributes.set_typed(Tag::STATE, &state);
        self.touch(now);
    }

    pub fn touch(&mut self, now: DateTime) {
        self.attributes.set_typed(Tag::LAST_CHANGE_DATE, &now);
    }

    /// The stored record: attributes in the lossless 2.x form, material wrapped for this
    /// tenant and object.
    pub fn to_record(&self, keyring: &Keyring, tenant: &TenantId) -> ObjectRecord {
        let attributes = self
            .attributes
            .encode(Tag::ATTRIBUTES, ProtocolVersion::V2_1)
            .to_ttlv();
        let material = self.object.as_ref().map(|object| {
            let plain = zeroize::Zeroizing::new(object.to_item(ProtocolVersion::V2_1).to_ttlv());
            keyring.wrap(self.binding(tenant), &plain)
        });
        let mut record = ObjectRecord {
            uid: self.uid.clone(),
            object_type: self.object_type.value(),
            state: self.state().value(),
            cryptographic_algorithm: self
                .attributes
                .cryptographic_algorithm()
                .ok()
                .flatten()
                .map(|a| a.value()),
            cryptographic_length: self.attributes.cryptographic_length().ok().flatten(),
            index: index_pairs(&self.attributes),
            attributes,
            material,
            created_at: self.created_at,
            version: self.version + 1,
            integrity: None,
        };
        reseal(&mut record, keyring, tenant);
        record
    }

    pub fn from_record(
        record: ObjectRecord,
        keyring: &Keyring,
        tenant: &TenantId,
    ) -> Result<Self, OpError> {
        let corrupt = |what: &str| {
            tracing::error!(uid = %record.uid, what, "stored object does not decode");
            OpError::unreadable()
        };
        let attributes = verify_record(&record, keyring, tenant)?;
        let object_type =
            ObjectType::from_value(record.object_type).ok_or_else(|| corrupt("object type"))?;
        let limits = Limits::default();
        let mut object = Self {
            uid: record.uid.clone(),
            object_type,
            attributes,
            object: None,
            created_at: record.created_at,
            version: record.version,
        };
        if let Some(wrapped) = &record.material {
            let plain = keyring
                .unwrap(object.binding(tenant), wrapped)
                .map_err(|_| corrupt("material does not unwrap"))?;
            let item = ttlv::decode(&plain, &limits).map_err(|_| corrupt("material"))?;
            let decoded = ManagedObject::from_item(&item, ProtocolVersion::V2_1);
            object.object = Some(decoded.map_err(|_| corrupt("material"))?);
        }
        Ok(object)
    }

    fn binding<'a>(&'a self, tenant: &'a TenantId) -> Binding<'a> {
        Binding {
            tenant,
            uid: &self.uid,
            object_type: self.object_type.value(),
        }
    }
}

/// The attributes of a stored record, without unwrapping its material.
pub(crate) fn stored_attributes(record: &ObjectRecord) -> Result<Attributes, OpError> {
    let item =
        ttlv::decode(&record.attributes, &Limits::default()).map_err(|_| OpError::unreadable())?;
    Attributes::decode(&item, ProtocolVersion::V2_1).map_err(|_| OpError::unreadable())
}

/// The equality filters Locate can push down: every Name, Object Group and custom text
/// attribute.
pub(crate) fn index_pairs(attributes: &Attributes) -> Vec<(String, String)> {
    attributes.iter().filter_map(index_pair).collect()
}

pub(crate) fn index_pair(a: &Attribute) -> Option<(String, String)> {
    match (&a.name, &a.value) {
        (AttributeName::Standard(Tag::NAME), _) => {
            let name: Name = a.get().ok()?;
            Some(("Name".into(), name.value))
        }
        (AttributeName::Standard(Tag::OBJECT_GROUP), Value::TextString(g)) => {
            Some(("Object Group".into(), g.clone()))
        }
        (AttributeName::Custom(n), Value::TextString(v)) => Some((n.clone(), v.clone())),
        _ => None,
    }
}

impl crate::cache::Weigh for KeyObject {
    /// The object's and its attributes' encoded sizes: what a cached copy holds, give or
    /// take the structures around them.
    fn weight(&self) -> usize {
        let object = self
            .object
            .as_ref()
            .map_or(0, |o| o.to_item(ProtocolVersion::V2_1).encoded_len());
        let attributes = self
            .attributes
            .encode(Tag::ATTRIBUTES, ProtocolVersion::V2_1)
            .encoded_len();
        self.uid.len() + object + attributes
    }
}
