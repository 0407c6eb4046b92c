//! How typed message fields map to TTLV items: the [`TtlvValue`] trait, the field kinds
//! (required, optional, repeated) and the `kmip_struct!` macro that the payload types are
//! declared with. Decoding is by tag, not position, so a client that sends fields out of
//! the spec's order is still understood; encoding always writes the spec's order.

use std::fmt;

use zeroize::Zeroizing;

use crate::spec::Tag;
use crate::ttlv::{Item, ItemType, Value};
use crate::ProtocolVersion;

use super::MessageError;

/// A value that is one TTLV item. `v` is the protocol version of the message, for the few
/// fields whose encoding changed between 1.x and 2.x.
pub trait TtlvValue: Sized {
    fn decode(item: &Item, v: ProtocolVersion) -> Result<Self, MessageError>;
    fn encode(&self, tag: Tag, v: ProtocolVersion) -> Item;
}

pub(crate) fn wrong_type(item: &Item, expected: ItemType) -> MessageError {
    MessageError::WrongType {
        tag: item.tag,
        expected,
        found: item.value.item_type(),
    }
}

impl TtlvValue for i32 {
    fn decode(item: &Item, _: ProtocolVersion) -> Result<Self, MessageError> {
        match item.value {
            Value::Integer(v) => Ok(v),
            _ => Err(wrong_type(item, ItemType::Integer)),
        }
    }
    fn encode(&self, tag: Tag, _: ProtocolVersion) -> Item {
        Item::integer(tag, *self)
    }
}

impl TtlvValue for i64 {
    fn decode(item: &Item, _: ProtocolVersion) -> Result<Self, MessageError> {
        match item.value {
            Value::LongInteger(v) => Ok(v),
            _ => Err(wrong_type(item, ItemType::LongInteger)),
        }
    }
    fn encode(&self, tag: Tag, _: ProtocolVersion) -> Item {
        Item::long_integer(tag, *self)
    }
}

impl TtlvValue for bool {
    fn decode(item: &Item, _: ProtocolVersion) -> Result<Self, MessageError> {
        match item.value {
            Value::Boolean(v) => Ok(v),
            _ => Err(wrong_type(item, ItemType::Boolean)),
        }
    }
    fn encode(&self, tag: Tag, _: ProtocolVersion) -> Item {
        Item::boolean(tag, *self)
    }
}

impl TtlvValue for String {
    fn decode(item: &Item, _: ProtocolVersion) -> Result<Self, MessageError> {
        match &item.value {
            Value::TextString(v) => Ok(v.clone()),
            _ => Err(wrong_type(item, ItemType::TextString)),
        }
    }
    fn encode(&self, tag: Tag, _: ProtocolVersion) -> Item {
        Item::text(tag, self.clone())
    }
}

/// A KMIP Interval, in seconds.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Interval(pub u32);

impl TtlvValue for Interval {
    fn decode(item: &Item, _: ProtocolVersion) -> Result<Self, MessageError> {
        match item.value {
            Value::Interval(v) => Ok(Self(v)),
            _ => Err(wrong_type(item, ItemType::Interval)),
        }
    }
    fn encode(&self, tag: Tag, _: ProtocolVersion) -> Item {
        Item::interval(tag, self.0)
    }
}

/// A KMIP Date-Time: seconds since the POSIX epoch. A 2.x Date-Time Extended
/// (microseconds) is accepted and kept as such.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum DateTime {
    Seconds(i64),
    Micros(i64),
}

impl DateTime {
    pub fn seconds(self) -> i64 {
        match self {
            Self::Seconds(s) => s,
            Self::Micros(us) => us.div_euclid(1_000_000),
        }
    }
    pub fn now() -> Self {
        Self::Seconds(time::OffsetDateTime::now_utc().unix_timestamp())
    }
}

impl TtlvValue for DateTime {
    fn decode(item: &Item, _: ProtocolVersion) -> Result<Self, MessageError> {
        match item.value {
            Value::DateTime(v) => Ok(Self::Seconds(v)),
            Value::DateTimeExtended(v) => Ok(Self::Micros(v)),
            _ => Err(wrong_type(item, ItemType::DateTime)),
        }
    }
    fn encode(&self, tag: Tag, _: ProtocolVersion) -> Item {
        match *self {
            Self::Seconds(s) => Item::date_time(tag, s),
            Self::Micros(us) => Item::new(tag, Value::DateTimeExtended(us)),
        }
    }
}

/// A Byte String field. Byte strings carry key material, plaintext and IVs, so the buffer
/// is zeroized on drop and `Debug` shows only its length.
#[derive(Clone, Default, PartialEq, Eq)]
pub struct ByteString(pub Zeroizing<Vec<u8>>);

impl ByteString {
    pub fn new(bytes: impl Into<Vec<u8>>) -> Self {
        Self(Zeroizing::new(bytes.into()))
    }
}

impl std::ops::Deref for ByteString {
    type Target = [u8];
    fn deref(&self) -> &[u8] {
        &self.0
    }
}

impl From<Vec<u8>> for ByteString {
    fn from(v: Vec<u8>) -> Self {
        Self::new(v)
    }
}

impl From<&[u8]> for ByteString {
    fn from(v: &[u8]) -> Self {
        Self::new(v.to_vec())
    }
}

impl fmt::Debug for ByteString {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "ByteString({} bytes)", self.0.len())
    }
}

impl TtlvValue for ByteString {
    fn decode(item: &Item, _: ProtocolVersion) -> Result<Self, MessageError> {
        match &item.value {
            Value::ByteString(v) => Ok(Self(v.clone())),
            _ => Err(wrong_type(item, ItemType::ByteString)),
        }
    }
    fn encode(&self, tag: Tag, _: ProtocolVersion) -> Item {
        Item::new(tag, Value::ByteString(self.0.clone()))
    }
}

/// A field kept as the item tree it arrived as: structures this library does not model
/// (Server Information, Key Wrapping Data, ...) pass through unchanged.
impl TtlvValue for Item {
    fn decode(item: &Item, _: ProtocolVersion) -> Result<Self, MessageError> {
        Ok(item.clone())
    }
    fn encode(&self, tag: Tag, _: ProtocolVersion) -> Item {
        Item::new(tag, self.value.clone())
    }
}

/// The children of a structure item, or a type error naming it.
pub(crate) fn fields(item: &Item) -> Result<&[Item], MessageError> {
    match &item.value {
        Value::Structure(children) => Ok(children),
        _ => Err(wrong_type(item, ItemType::Structure)),
    }
}

/// Field kinds used by `kmip_struct!`: how many times a tag may appear in a structure.
pub(crate) mod kind {
    use super::*;
    pub(crate) use crate::message::attributes::kinds::*;
    pub(crate) use crate::message::objects::object;

    /// Exactly one (the first is taken if a client repeats it).
    pub mod req {
        use super::*;
        pub fn read<T: TtlvValue>(
            within: Tag,
            fields: &[Item],
            tag: Tag,
            v: ProtocolVersion,
        ) -> Result<T, MessageError> {
            match fields.iter().find(|i| i.tag == tag) {
                Some(item) => T::decode(item, v),
                None => Err(MessageError::MissingField { within, field: tag }),
            }
        }
        pub fn write<T: TtlvValue>(value: &T, tag: Tag, v: ProtocolVersion, out: &mut Vec<Item>) {
            out.push(value.encode(tag, v));
        }
    }

    /// Zero or one.
    pub mod opt {
        use super::*;
        pub fn read<T: TtlvValue>(
            _within: Tag,
            fields: &[Item],
            tag: Tag,
            v: ProtocolVersion,
        ) -> Result<Option<T>, MessageError> {
            fields
                .iter()
                .find(|i| i.tag == tag)
                .map(|item| T::decode(item, v))
                .transpose()
        }
        pub fn write<T: TtlvValue>(
            value: &Option<T>,
            tag: Tag,
            v: ProtocolVersion,
            out: &mut Vec<Item>,
        ) {
            if let Some(value) = value {
                out.push(value.encode(tag, v));
            }
        }
    }

    /// Zero or more, in order.
    pub mod rep {
        use super::*;
        pub fn read<T: TtlvValue>(
            _within: Tag,
            fields: &[Item],
            tag: Tag,
            v: ProtocolVersion,
        ) -> Result<Vec<T>, MessageError> {
            fields
                .iter()
                .filter(|i| i.tag == tag)
                .map(|item| T::decode(item, v))
                .collect()
        }
        pub fn write<T: TtlvValue>(
            values: &[T],
            tag: Tag,
            v: ProtocolVersion,
            out: &mut Vec<Item>,
        ) {
            out.extend(values.iter().map(|value| value.encode(tag, v)));
        }
    }
}

/// The Rust type of a field of the given kind.
macro_rules! field_type {
    (req $t:ty) => { $t };
    (opt $t:ty) => { Option<$t> };
    (rep $t:ty) => { Vec<$t> };
    (attrs $t:ty) => { Option<$t> };
    (pair_attrs $t:ty) => { Option<$t> };
    (attr_list $t:ty) => { Option<$t> };
    (attr_one $t:ty) => { Option<$t> };
    (attr_v1 $t:ty) => { Option<$t> };
    (attr_refs $t:ty) => { Vec<$t> };
    (object $t:ty) => { Option<$t> };
}
pub(crate) use field_type;

/// Declares a KMIP structure as a Rust struct whose fields map to tags, with its
/// [`TtlvValue`] implementation. Field syntax: `name: KIND Type = TAG_CONST`, where KIND is
/// `req`, `opt` or `rep` (or a version-aware kind from `super::attributes`/`objects`).
macro_rules! kmip_struct {
    (
        $(#[$meta:meta])*
        pub struct $name:ident {
            $( $(#[$fmeta:meta])* $field:ident : $kind:ident $ty:ty = $tag:ident ),* $(,)?
        }
    ) => {
        $(#[$meta])*
        #[derive(Clone, Debug, PartialEq)]
        pub struct $name {
            $( $(#[$fmeta])* pub $field: $crate::message::codec::field_type!($kind $ty), )*
        }

        impl $crate::message::codec::TtlvValue for $name {
            fn decode(
                item: &$crate::ttlv::Item,
                _v: $crate::ProtocolVersion,
            ) -> Result<Self, $crate::message::MessageError> {
                let _fields = $crate::message::codec::fields(item)?;
                Ok(Self {
                    $( $field: $crate::message::codec::kind::$kind::read(
                        item.tag, _fields, $crate::spec::Tag::$tag, _v)?, )*
                })
            }

            fn encode(&self, tag: $crate::spec::Tag, _v: $crate::ProtocolVersion) -> $crate::ttlv::Item {
                #[allow(unused_mut)]
                let mut out = Vec::new();
                $( $crate::message::codec::kind::$kind::write(
                    &self.$field, $crate::spec::Tag::$tag, _v, &mut out); )*
                $crate::ttlv::Item::structure(tag, out)
            }
        }
    };
}
pub(crate) use kmip_struct;

/// Implements [`TtlvValue`] for generated enumerations (Enumeration items). A value the
/// enumeration does not define is an error naming the tag and value, which the server
/// turns into `Invalid Field`.
macro_rules! enum_values {
    ($($t:ty),* $(,)?) => {$(
        impl TtlvValue for $t {
            fn decode(item: &Item, _: ProtocolVersion) -> Result<Self, MessageError> {
                match item.value {
                    Value::Enumeration(raw) => <$t>::from_value(raw)
                        .ok_or(MessageError::InvalidEnumeration { tag: item.tag, value: raw }),
                    _ => Err(wrong_type(item, ItemType::Enumeration)),
                }
            }
            fn encode(&self, tag: Tag, _: ProtocolVersion) -> Item {
                Item::enumeration(tag, self.value())
            }
        }
    )*};
}

use crate::spec::{
    BatchErrorContinuationOption, BlockCipherMode, CertificateType, CredentialType,
    CryptographicAlgorithm, DigitalSignatureAlgorithm, DrbgAlgorithm, EncodingOption,
    Fips186Variation, HashingAlgorithm, InteropFunction, KeyCompressionType, KeyFormatType,
    KeyRoleType, KeyWrapType, LinkType, MaskGenerator, NameType, ObjectGroupMember, ObjectType,
    OpaqueDataType, Operation, PaddingMethod, QueryFunction, RecommendedCurve, ResultReason,
    ResultStatus, RevocationReasonCode, RngAlgorithm, SecretDataType, State, UsageLimitsUnit,
    ValidityIndicator, WrappingMethod,
};

enum_values!(
    BatchErrorContinuationOption,
    BlockCipherMode,
    CertificateType,
    CryptographicAlgorithm,
    DigitalSignatureAlgorithm,
    HashingAlgorithm,
    KeyCompressionType,
    KeyFormatType,
    KeyRoleType,
    KeyWrapType,
    LinkType,
    MaskGenerator,
    NameType,
    ObjectGroupMember,
    ObjectType,
    OpaqueDataType,
    Operation,
    PaddingMethod,
    QueryFunction,
    ResultReason,
    ResultStatus,
    RevocationReasonCode,
    SecretDataType,
    State,
    WrappingMethod,
    CredentialType,
    EncodingOption,
    DrbgAlgorithm,
    Fips186Variation,
    InteropFunction,
    RecommendedCurve,
    RngAlgorithm,
    UsageLimitsUnit,
    ValidityIndicator,
);

/// The Cryptographic Usage Mask travels as an Integer holding bit flags.
impl TtlvValue for crate::spec::CryptographicUsageMask {
    fn decode(item: &Item, _: ProtocolVersion) -> Result<Self, MessageError> {
        match item.value {
            Value::Integer(v) => Ok(Self(v as u32)),
            _ => Err(wrong_type(item, ItemType::Integer)),
        }
    }
    fn encode(&self, tag: Tag, _: ProtocolVersion) -> Item {
        Item::integer(tag, self.0 as i32)
    }
}
