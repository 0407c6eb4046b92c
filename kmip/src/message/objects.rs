//! Managed objects: Symmetric Key, Public Key, Private Key, Secret Data, Certificate, Opaque
//! Object, and the Key Block / Key Value / Key Material structures inside them. Other object
//! types (split keys, templates, PGP keys, ...) pass through as item trees.

use crate::spec::{
    CertificateType, CryptographicAlgorithm, KeyCompressionType, KeyFormatType, ObjectType,
    SecretDataType, Tag,
};
use crate::ttlv::{Item, ItemType, Value};
use crate::ProtocolVersion;

use super::attributes::kinds::attr_list;
use super::attributes::Attributes;
use super::codec::{fields, kmip_struct, wrong_type, ByteString, TtlvValue};
use super::{MessageError, RawEnum};

/// Key Material: raw bytes (Raw, Opaque, PKCS#8, ... formats) or a structure (Transparent
/// formats, e.g. `Transparent Symmetric Key { Key }`).
#[derive(Clone, Debug, PartialEq)]
pub enum KeyMaterial {
    Bytes(ByteString),
    Structure(Vec<Item>),
}

impl TtlvValue for KeyMaterial {
    fn decode(item: &Item, _: ProtocolVersion) -> Result<Self, MessageError> {
        match &item.value {
            Value::ByteString(b) => Ok(Self::Bytes(ByteString(b.clone()))),
            Value::Structure(items) => Ok(Self::Structure(items.clone())),
            _ => Err(wrong_type(item, ItemType::ByteString)),
        }
    }
    fn encode(&self, tag: Tag, v: ProtocolVersion) -> Item {
        match self {
            Self::Bytes(b) => b.encode(tag, v),
            Self::Structure(items) => Item::structure(tag, items.clone()),
        }
    }
}

/// Key Value: a structure of key material and attributes, or — when the key is wrapped —
/// one opaque byte string.
#[derive(Clone, Debug, PartialEq)]
pub enum KeyValue {
    Plain {
        key_material: KeyMaterial,
        attributes: Option<Attributes>,
    },
    Wrapped(ByteString),
}

impl TtlvValue for KeyValue {
    fn decode(item: &Item, v: ProtocolVersion) -> Result<Self, MessageError> {
        if let Value::ByteString(b) = &item.value {
            return Ok(Self::Wrapped(ByteString(b.clone())));
        }
        let f = fields(item)?;
        Ok(Self::Plain {
            key_material: super::codec::kind::req::read(item.tag, f, Tag::KEY_MATERIAL, v)?,
            attributes: attr_list::read(item.tag, f, Tag::ATTRIBUTES, v)?,
        })
    }
    fn encode(&self, tag: Tag, v: ProtocolVersion) -> Item {
        match self {
            Self::Wrapped(b) => b.encode(tag, v),
            Self::Plain {
                key_material,
                attributes,
            } => {
                let mut out = vec![key_material.encode(Tag::KEY_MATERIAL, v)];
                attr_list::write(attributes, Tag::ATTRIBUTES, v, &mut out);
                Item::structure(tag, out)
            }
        }
    }
}

kmip_struct! {
    /// Key Block: the key value with its format and algorithm.
    pub struct KeyBlock {
        key_format_type: req KeyFormatType = KEY_FORMAT_TYPE,
        key_compression_type: opt KeyCompressionType = KEY_COMPRESSION_TYPE,
        key_value: opt KeyValue = KEY_VALUE,
        cryptographic_algorithm: opt CryptographicAlgorithm = CRYPTOGRAPHIC_ALGORITHM,
        cryptographic_length: opt i32 = CRYPTOGRAPHIC_LENGTH,
        key_wrapping_data: opt Item = KEY_WRAPPING_DATA,
    }
}

impl KeyBlock {
    /// A Raw-format key block holding `material`.
    pub fn raw(
        material: impl Into<ByteString>,
        algorithm: Option<CryptographicAlgorithm>,
        length: Option<i32>,
    ) -> Self {
        Self {
            key_format_type: KeyFormatType::Raw,
            key_compression_type: None,
            key_value: Some(KeyValue::Plain {
                key_material: KeyMaterial::Bytes(material.into()),
                attributes: None,
            }),
            cryptographic_algorithm: algorithm,
            cryptographic_length: length,
            key_wrapping_data: None,
        }
    }

    /// The key bytes, whether Raw/Opaque (a byte string) or Transparent Symmetric Key
    /// (`Key` inside the structure). `None` when wrapped or absent.
    pub fn key_bytes(&self) -> Option<&[u8]> {
        match &self.key_value {
            Some(KeyValue::Plain {
                key_material: KeyMaterial::Bytes(b),
                ..
            }) => Some(b),
            Some(KeyValue::Plain {
                key_material: KeyMaterial::Structure(items),
                ..
            }) => items
                .iter()
                .find(|i| i.tag == Tag::KEY)
                .and_then(|i| match &i.value {
                    Value::ByteString(b) => Some(b.as_slice()),
                    _ => None,
                }),
            _ => None,
        }
    }
}

kmip_struct! {
    pub struct SymmetricKey {
        key_block: req KeyBlock = KEY_BLOCK,
    }
}

kmip_struct! {
    pub struct PublicKey {
        key_block: req KeyBlock = KEY_BLOCK,
    }
}

kmip_struct! {
    pub struct PrivateKey {
        key_block: req KeyBlock = KEY_BLOCK,
    }
}

kmip_struct! {
    /// Certificate: its type (X.509, PGP) and its encoding (DER for X.509).
    pub struct Certificate {
        certificate_type: req CertificateType = CERTIFICATE_TYPE,
        certificate_value: req ByteString = CERTIFICATE_VALUE,
    }
}

kmip_struct! {
    pub struct SecretData {
        secret_data_type: req SecretDataType = SECRET_DATA_TYPE,
        key_block: req KeyBlock = KEY_BLOCK,
    }
}

kmip_struct! {
    pub struct OpaqueObject {
        /// Raw: the spec defines only extension values here (e.g. `0x80000001`).
        opaque_data_type: req RawEnum = OPAQUE_DATA_TYPE,
        opaque_data_value: req ByteString = OPAQUE_DATA_VALUE,
    }
}

/// A managed object in a Register request or a Get response.
#[derive(Clone, Debug, PartialEq)]
pub enum ManagedObject {
    SymmetricKey(SymmetricKey),
    PublicKey(PublicKey),
    PrivateKey(PrivateKey),
    SecretData(SecretData),
    Certificate(Certificate),
    OpaqueObject(OpaqueObject),
    /// Another object type (split key, template, PGP key, ...), as received.
    Other(Item),
}

/// Tags of the managed-object structures (KMIP 1.0–2.1).
const OBJECT_TAGS: [Tag; 10] = [
    Tag::SYMMETRIC_KEY,
    Tag::SECRET_DATA,
    Tag::OPAQUE_OBJECT,
    Tag::CERTIFICATE,
    Tag::PUBLIC_KEY,
    Tag::PRIVATE_KEY,
    Tag::SPLIT_KEY,
    Tag::TEMPLATE,
    Tag::PGP_KEY,
    Tag::CERTIFICATE_REQUEST,
];

impl ManagedObject {
    pub fn object_type(&self) -> Option<ObjectType> {
        Some(match self {
            Self::SymmetricKey(_) => ObjectType::SymmetricKey,
            Self::PublicKey(_) => ObjectType::PublicKey,
            Self::PrivateKey(_) => ObjectType::PrivateKey,
            Self::SecretData(_) => ObjectType::SecretData,
            Self::Certificate(_) => ObjectType::Certificate,
            Self::OpaqueObject(_) => ObjectType::OpaqueObject,
            Self::Other(item) => match item.tag {
                Tag::SPLIT_KEY => ObjectType::SplitKey,
                Tag::TEMPLATE => ObjectType::Template,
                Tag::PGP_KEY => ObjectType::PgpKey,
                Tag::CERTIFICATE_REQUEST => ObjectType::CertificateRequest,
                _ => return None,
            },
        })
    }

    /// The key block, for objects that have one.
    pub fn key_block(&self) -> Option<&KeyBlock> {
        match self {
            Self::SymmetricKey(k) => Some(&k.key_block),
            Self::PublicKey(k) => Some(&k.key_block),
            Self::PrivateKey(k) => Some(&k.key_block),
            Self::SecretData(s) => Some(&s.key_block),
            _ => None,
        }
    }

    /// Reads an object from its item (the tag says which object it is).
    pub fn from_item(item: &Item, v: ProtocolVersion) -> Result<Self, MessageError> {
        Ok(match item.tag {
            Tag::SYMMETRIC_KEY => Self::SymmetricKey(SymmetricKey::decode(item, v)?),
            Tag::PUBLIC_KEY => Self::PublicKey(PublicKey::decode(item, v)?),
            Tag::PRIVATE_KEY => Self::PrivateKey(PrivateKey::decode(item, v)?),
            Tag::CERTIFICATE => Self::Certificate(Certificate::decode(item, v)?),
            Tag::SECRET_DATA => Self::SecretData(SecretData::decode(item, v)?),
            Tag::OPAQUE_OBJECT => Self::OpaqueObject(OpaqueObject::decode(item, v)?),
            _ => Self::Other(item.clone()),
        })
    }

    /// The object as an item tagged with its object type.
    pub fn to_item(&self, v: ProtocolVersion) -> Item {
        match self {
            Self::SymmetricKey(k) => k.encode(Tag::SYMMETRIC_KEY, v),
            Self::PublicKey(k) => k.encode(Tag::PUBLIC_KEY, v),
            Self::PrivateKey(k) => k.encode(Tag::PRIVATE_KEY, v),
            Self::Certificate(c) => c.encode(Tag::CERTIFICATE, v),
            Self::SecretData(s) => s.encode(Tag::SECRET_DATA, v),
            Self::OpaqueObject(o) => o.encode(Tag::OPAQUE_OBJECT, v),
            Self::Other(item) => item.clone(),
        }
    }
}

/// Field kind for `kmip_struct!`: the one managed object in a payload, whatever its tag.
pub(crate) mod object {
    use super::*;
    pub fn read(
        _within: Tag,
        f: &[Item],
        _tag: Tag,
        v: ProtocolVersion,
    ) -> Result<Option<ManagedObject>, MessageError> {
        f.iter()
            .find(|i| OBJECT_TAGS.contains(&i.tag))
            .map(|i| ManagedObject::from_item(i, v))
            .transpose()
    }
    pub fn write(
        value: &Option<ManagedObject>,
        _tag: Tag,
        v: ProtocolVersion,
        out: &mut Vec<Item>,
    ) {
        if let Some(object) = value {
            out.push(object.to_item(v));
        }
    }
}
