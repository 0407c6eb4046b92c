//! TTLV, the binary encoding of KMIP: Tag (3 bytes), Type (1), Length (4), Value (padded to 8).
//!
//! This module is I/O-free. [`decode`] turns bytes into an [`Item`] tree under explicit
//! [`Limits`]; [`Item::to_ttlv`] writes one back, byte-exact to the spec (KMIP 1.4 §9.1,
//! 2.1 §10.1). Every length is checked against the bytes actually present before anything
//! is allocated, so a peer cannot make the decoder reserve more than it sent.

use std::fmt;

use zeroize::Zeroizing;

use crate::spec::Tag;

/// Bytes of tag + type + length that precede every value.
pub const HEADER_LEN: usize = 8;

/// Default largest message we accept: real requests are a few hundred bytes, a batch of
/// registered keys a few KiB; 1 MiB leaves room for large Opaque Objects and certificates
/// while bounding what one peer can make us buffer.
pub const DEFAULT_MAX_MESSAGE_SIZE: usize = 1024 * 1024;

/// Default deepest nesting of structures. The deepest message in the OASIS test cases
/// nests 9 levels (message → batch item → payload → object → key block → key value →
/// attribute → value → field); 32 gives generous headroom and bounds decoder recursion.
pub const DEFAULT_MAX_DEPTH: usize = 32;

/// Default most items in one message. A 1 MiB message can hold at most 131,072 items
/// (16 bytes each), so this only bites on messages built to exhaust the server with tiny items.
pub const DEFAULT_MAX_ITEMS: usize = 65_536;

/// The hard limits applied while decoding one message.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Limits {
    /// Largest encoded message, header included.
    pub max_message_size: usize,
    /// Deepest nesting; the top-level item is depth 1.
    pub max_depth: usize,
    /// Most items, structures included.
    pub max_items: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            max_message_size: DEFAULT_MAX_MESSAGE_SIZE,
            max_depth: DEFAULT_MAX_DEPTH,
            max_items: DEFAULT_MAX_ITEMS,
        }
    }
}

/// The TTLV item types of KMIP 1.0–2.1.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[repr(u8)]
pub enum ItemType {
    Structure = 0x01,
    Integer = 0x02,
    LongInteger = 0x03,
    BigInteger = 0x04,
    Enumeration = 0x05,
    Boolean = 0x06,
    TextString = 0x07,
    ByteString = 0x08,
    DateTime = 0x09,
    Interval = 0x0A,
    /// KMIP 2.0: microseconds since the epoch.
    DateTimeExtended = 0x0B,
}

impl ItemType {
    pub fn from_byte(b: u8) -> Option<Self> {
        Some(match b {
            0x01 => Self::Structure,
            0x02 => Self::Integer,
            0x03 => Self::LongInteger,
            0x04 => Self::BigInteger,
            0x05 => Self::Enumeration,
            0x06 => Self::Boolean,
            0x07 => Self::TextString,
            0x08 => Self::ByteString,
            0x09 => Self::DateTime,
            0x0A => Self::Interval,
            0x0B => Self::DateTimeExtended,
            _ => return None,
        })
    }

    /// The name used by the KMIP XML and JSON encodings.
    pub fn name(self) -> &'static str {
        match self {
            Self::Structure => "Structure",
            Self::Integer => "Integer",
            Self::LongInteger => "LongInteger",
            Self::BigInteger => "BigInteger",
            Self::Enumeration => "Enumeration",
            Self::Boolean => "Boolean",
            Self::TextString => "TextString",
            Self::ByteString => "ByteString",
            Self::DateTime => "DateTime",
            Self::Interval => "Interval",
            Self::DateTimeExtended => "DateTimeExtended",
        }
    }

    pub fn from_name(s: &str) -> Option<Self> {
        [
            Self::Structure,
            Self::Integer,
            Self::LongInteger,
            Self::BigInteger,
            Self::Enumeration,
            Self::Boolean,
            Self::TextString,
            Self::ByteString,
            Self::DateTime,
            Self::Interval,
            Self::DateTimeExtended,
        ]
        .into_iter()
        .find(|t| t.name() == s)
    }
}

/// The value of one TTLV item.
///
/// Byte strings are held in [`Zeroizing`] buffers because they carry key material; their
/// `Debug` output shows only the length.
#[derive(Clone, PartialEq, Eq)]
pub enum Value {
    Structure(Vec<Item>),
    Integer(i32),
    LongInteger(i64),
    /// Two's complement, big-endian, as on the wire (sign-extended to a multiple of 8 bytes
    /// when encoded).
    BigInteger(Vec<u8>),
    Enumeration(u32),
    Boolean(bool),
    TextString(String),
    ByteString(Zeroizing<Vec<u8>>),
    /// Seconds since the POSIX epoch.
    DateTime(i64),
    /// Seconds.
    Interval(u32),
    /// Microseconds since the POSIX epoch (KMIP 2.0+).
    DateTimeExtended(i64),
}

impl Value {
    pub fn item_type(&self) -> ItemType {
        match self {
            Self::Structure(_) => ItemType::Structure,
            Self::Integer(_) => ItemType::Integer,
            Self::LongInteger(_) => ItemType::LongInteger,
            Self::BigInteger(_) => ItemType::BigInteger,
            Self::Enumeration(_) => ItemType::Enumeration,
            Self::Boolean(_) => ItemType::Boolean,
            Self::TextString(_) => ItemType::TextString,
            Self::ByteString(_) => ItemType::ByteString,
            Self::DateTime(_) => ItemType::DateTime,
            Self::Interval(_) => ItemType::Interval,
            Self::DateTimeExtended(_) => ItemType::DateTimeExtended,
        }
    }

    /// Length of the value on the wire, without padding (the Item Length field).
    fn value_len(&self) -> usize {
        match self {
            Self::Structure(items) => items.iter().map(Item::encoded_len).sum(),
            Self::Integer(_) | Self::Enumeration(_) | Self::Interval(_) => 4,
            Self::LongInteger(_)
            | Self::Boolean(_)
            | Self::DateTime(_)
            | Self::DateTimeExtended(_) => 8,
            Self::BigInteger(b) => padded(b.len().max(1)),
            Self::TextString(s) => s.len(),
            Self::ByteString(b) => b.len(),
        }
    }
}

impl fmt::Debug for Value {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Structure(items) => f.debug_list().entries(items).finish(),
            Self::Integer(v) => write!(f, "Integer({v})"),
            Self::LongInteger(v) => write!(f, "LongInteger({v})"),
            Self::BigInteger(b) => write!(f, "BigInteger({} bytes)", b.len()),
            Self::Enumeration(v) => write!(f, "Enumeration({v:#x})"),
            Self::Boolean(v) => write!(f, "Boolean({v})"),
            Self::TextString(s) => write!(f, "TextString({s:?})"),
            Self::ByteString(b) => write!(f, "ByteString({} bytes)", b.len()),
            Self::DateTime(v) => write!(f, "DateTime({v})"),
            Self::Interval(v) => write!(f, "Interval({v})"),
            Self::DateTimeExtended(v) => write!(f, "DateTimeExtended({v})"),
        }
    }
}

/// One TTLV item: a tag and its value. A whole message is one `Structure` item.
#[derive(Clone, PartialEq, Eq)]
pub struct Item {
    pub tag: Tag,
    pub value: Value,
}

impl fmt::Debug for Item {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:?}: {:?}", self.tag, self.value)
    }
}

/// One item read in place, without decoding its value: tag, type (`None` if unknown) and
/// value bytes (padding excluded). For readers that need a field or two of a message.
pub(crate) struct RawItem<'a> {
    pub tag: Tag,
    pub item_type: Option<ItemType>,
    pub value: &'a [u8],
}

impl<'a> RawItem<'a> {
    /// Takes the next item off the front of `rest`; `None` when it is cut short.
    pub fn take(rest: &mut &'a [u8]) -> Option<Self> {
        let (tag, item_type, len) = header_fields(rest.first_chunk()?);
        let item = RawItem {
            tag,
            item_type: ItemType::from_byte(item_type),
            value: rest.get(HEADER_LEN..HEADER_LEN + len)?,
        };
        *rest = rest.get(HEADER_LEN + padded(len)..)?;
        Some(item)
    }

    /// The value of an Enumeration item.
    pub fn enumeration(&self) -> Option<u32> {
        match (self.item_type, self.value) {
            (Some(ItemType::Enumeration), &[a, b, c, d]) => Some(u32::from_be_bytes([a, b, c, d])),
            _ => None,
        }
    }
}

/// An item header's tag, type byte (not checked here) and value length.
fn header_fields(header: &[u8; HEADER_LEN]) -> (Tag, u8, usize) {
    let [t0, t1, t2, item_type, l0, l1, l2, l3] = *header;
    (
        Tag(u32::from_be_bytes([0, t0, t1, t2])),
        item_type,
        u32::from_be_bytes([l0, l1, l2, l3]) as usize,
    )
}

/// Rounds a length up to the 8-byte TTLV alignment.
const fn padded(len: usize) -> usize {
    (len + 7) & !7
}

impl Item {
    pub fn new(tag: Tag, value: Value) -> Self {
        Self { tag, value }
    }
    pub fn structure(tag: Tag, items: Vec<Item>) -> Self {
        Self::new(tag, Value::Structure(items))
    }
    pub fn integer(tag: Tag, v: i32) -> Self {
        Self::new(tag, Value::Integer(v))
    }
    pub fn long_integer(tag: Tag, v: i64) -> Self {
        Self::new(tag, Value::LongInteger(v))
    }
    pub fn enumeration(tag: Tag, v: u32) -> Self {
        Self::new(tag, Value::Enumeration(v))
    }
    pub fn boolean(tag: Tag, v: bool) -> Self {
        Self::new(tag, Value::Boolean(v))
    }
    pub fn text(tag: Tag, v: impl Into<String>) -> Self {
        Self::new(tag, Value::TextString(v.into()))
    }
    pub fn bytes(tag: Tag, v: impl Into<Vec<u8>>) -> Self {
        Self::new(tag, Value::ByteString(Zeroizing::new(v.into())))
    }
    pub fn date_time(tag: Tag, v: i64) -> Self {
        Self::new(tag, Value::DateTime(v))
    }
    pub fn interval(tag: Tag, v: u32) -> Self {
        Self::new(tag, Value::Interval(v))
    }

    /// The children of a structure; empty for any other type.
    pub fn children(&self) -> &[Item] {
        match &self.value {
            Value::Structure(items) => items,
            _ => &[],
        }
    }

    /// The first child with this tag.
    pub fn child(&self, tag: Tag) -> Option<&Item> {
        self.children().iter().find(|i| i.tag == tag)
    }

    /// Every child with this tag, in order.
    pub fn children_with(&self, tag: Tag) -> impl Iterator<Item = &Item> {
        self.children().iter().filter(move |i| i.tag == tag)
    }

    /// Bytes this item takes on the wire, header and padding included.
    pub fn encoded_len(&self) -> usize {
        HEADER_LEN + padded(self.value.value_len())
    }

    /// Encodes this item as TTLV.
    pub fn to_ttlv(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(self.encoded_len());
        self.write_to(&mut out);
        out
    }

    /// Appends this item's TTLV encoding to `out`.
    pub fn write_to(&self, out: &mut Vec<u8>) {
        let [_, t0, t1, t2] = self.tag.0.to_be_bytes();
        out.extend_from_slice(&[t0, t1, t2, self.value.item_type() as u8]);
        match &self.value {
            Value::Structure(items) => {
                // Back-patch the length rather than walking the subtree twice.
                let len_at = out.len();
                out.extend_from_slice(&[0; 4]);
                for item in items {
                    item.write_to(out);
                }
                let len = (out.len() - len_at - 4) as u32;
                out[len_at..len_at + 4].copy_from_slice(&len.to_be_bytes());
            }
            Value::Integer(v) => put_4(out, v.to_be_bytes()),
            Value::Enumeration(v) | Value::Interval(v) => put_4(out, v.to_be_bytes()),
            Value::LongInteger(v) | Value::DateTime(v) | Value::DateTimeExtended(v) => {
                put_8(out, v.to_be_bytes())
            }
            Value::Boolean(v) => put_8(out, u64::from(*v).to_be_bytes()),
            Value::BigInteger(b) => {
                let len = padded(b.len().max(1));
                out.extend_from_slice(&(len as u32).to_be_bytes());
                let negative = b.first().is_some_and(|b| b & 0x80 != 0);
                let fill = if negative { 0xFF } else { 0x00 };
                out.resize(out.len() + len - b.len(), fill);
                out.extend_from_slice(b);
            }
            Value::TextString(s) => put_var(out, s.as_bytes()),
            Value::ByteString(b) => put_var(out, b),
        }
    }
}

fn put_4(out: &mut Vec<u8>, v: [u8; 4]) {
    out.extend_from_slice(&4u32.to_be_bytes());
    out.extend_from_slice(&v);
    out.extend_from_slice(&[0; 4]);
}

fn put_8(out: &mut Vec<u8>, v: [u8; 8]) {
    out.extend_from_slice(&8u32.to_be_bytes());
    out.extend_from_slice(&v);
}

fn put_var(out: &mut Vec<u8>, v: &[u8]) {
    out.extend_from_slice(&(v.len() as u32).to_be_bytes());
    out.extend_from_slice(v);
    out.resize(out.len() + padded(v.len()) - v.len(), 0);
}

/// Why a byte sequence is not an acceptable TTLV message. Offsets count from the start of
/// the message.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum TtlvError {
    #[error("message of {size} bytes exceeds the limit of {limit} bytes")]
    MessageTooLarge { size: usize, limit: usize },
    #[error("message truncated at offset {offset}: {needed} more bytes expected")]
    Truncated { offset: usize, needed: usize },
    #[error("unknown item type {item_type:#04x} at offset {offset}")]
    UnknownItemType { offset: usize, item_type: u8 },
    #[error("invalid length {length} for {item_type:?} at offset {offset}")]
    InvalidLength {
        offset: usize,
        item_type: ItemType,
        length: usize,
    },
    #[error("invalid boolean value at offset {offset}")]
    InvalidBoolean { offset: usize },
    #[error("text string at offset {offset} is not valid UTF-8")]
    InvalidUtf8 { offset: usize },
    #[error("structures nested deeper than {limit} levels")]
    TooDeep { limit: usize },
    #[error("more than {limit} items in one message")]
    TooManyItems { limit: usize },
    #[error("{extra} unexpected bytes after the message at offset {offset}")]
    TrailingBytes { offset: usize, extra: usize },
}

/// Reads the 8-byte header of a TTLV item and returns the total size of the item on the
/// wire (header included, padded). Used by framing to learn how much to read next —
/// checked against `max_message_size` before any body is read.
pub fn message_len(header: &[u8; HEADER_LEN], max_message_size: usize) -> Result<usize, TtlvError> {
    let (_, type_byte, length) = header_fields(header);
    let item_type = ItemType::from_byte(type_byte).ok_or(TtlvError::UnknownItemType {
        offset: 3,
        item_type: type_byte,
    })?;
    if item_type != ItemType::Structure || length % 8 != 0 {
        return Err(TtlvError::InvalidLength {
            offset: 0,
            item_type,
            length,
        });
    }
    let size = HEADER_LEN + length;
    if size > max_message_size {
        return Err(TtlvError::MessageTooLarge {
            size,
            limit: max_message_size,
        });
    }
    Ok(size)
}

/// Decodes one complete TTLV message; bytes after it are an error.
pub fn decode(bytes: &[u8], limits: &Limits) -> Result<Item, TtlvError> {
    if bytes.len() > limits.max_message_size {
        return Err(TtlvError::MessageTooLarge {
            size: bytes.len(),
            limit: limits.max_message_size,
        });
    }
    let mut decoder = Decoder {
        bytes,
        pos: 0,
        items: 0,
        limits,
    };
    let item = decoder.item(1)?;
    if decoder.pos != bytes.len() {
        return Err(TtlvError::TrailingBytes {
            offset: decoder.pos,
            extra: bytes.len() - decoder.pos,
        });
    }
    Ok(item)
}

struct Decoder<'a> {
    bytes: &'a [u8],
    pos: usize,
    items: usize,
    limits: &'a Limits,
}

impl<'a> Decoder<'a> {
    /// Takes `n` bytes, failing (not allocating) when fewer are present.
    fn take(&mut self, n: usize) -> Result<&'a [u8], TtlvError> {
        let available = self.bytes.len() - self.pos;
        if n > available {
            return Err(TtlvError::Truncated {
                offset: self.pos,
                needed: n - available,
            });
        }
        let slice = &self.bytes[self.pos..self.pos + n];
        self.pos += n;
        Ok(slice)
    }

    fn item(&mut self, depth: usize) -> Result<Item, TtlvError> {
        self.items += 1;
        if self.items > self.limits.max_items {
            return Err(TtlvError::TooManyItems {
                limit: self.limits.max_items,
            });
        }
        let start = self.pos;
        let mut header = [0u8; HEADER_LEN];
        header.copy_from_slice(self.take(HEADER_LEN)?);
        let (tag, type_byte, length) = header_fields(&header);
        let item_type = ItemType::from_byte(type_byte).ok_or(TtlvError::UnknownItemType {
            offset: start + 3,
            item_type: type_byte,
        })?;
        let bad_length = || TtlvError::InvalidLength {
            offset: start + 4,
            item_type,
            length,
        };
        let fixed = |want: usize| {
            if length == want {
                Ok(())
            } else {
                Err(bad_length())
            }
        };

        let value = match item_type {
            ItemType::Structure => {
                if depth > self.limits.max_depth {
                    return Err(TtlvError::TooDeep {
                        limit: self.limits.max_depth,
                    });
                }
                if length % 8 != 0 {
                    return Err(bad_length());
                }
                let end = self.pos.checked_add(length).ok_or_else(bad_length)?;
                if end > self.bytes.len() {
                    return Err(TtlvError::Truncated {
                        offset: self.pos,
                        needed: end - self.bytes.len(),
                    });
                }
                // Each child takes at least 16 bytes: the capacity is bounded by input size.
                let mut items = Vec::with_capacity(length / 16);
                while self.pos < end {
                    items.push(self.item(depth + 1)?);
                    if self.pos > end {
                        // A child ran past its parent's declared length.
                        return Err(bad_length());
                    }
                }
                Value::Structure(items)
            }
            ItemType::Integer => {
                fixed(4)?;
                let b = self.take(8)?;
                Value::Integer(i32::from_be_bytes([b[0], b[1], b[2], b[3]]))
            }
            ItemType::Enumeration => {
                fixed(4)?;
                let b = self.take(8)?;
                Value::Enumeration(u32::from_be_bytes([b[0], b[1], b[2], b[3]]))
            }
            ItemType::Interval => {
                fixed(4)?;
                let b = self.take(8)?;
                Value::Interval(u32::from_be_bytes([b[0], b[1], b[2], b[3]]))
            }
            ItemType::LongInteger => {
                fixed(8)?;
                Value::LongInteger(self.be_i64()?)
            }
            ItemType::DateTime => {
                fixed(8)?;
                Value::DateTime(self.be_i64()?)
            }
            ItemType::DateTimeExtended => {
                fixed(8)?;
                Value::DateTimeExtended(self.be_i64()?)
            }
            ItemType::Boolean => {
                fixed(8)?;
                match self.be_i64()? {
                    0 => Value::Boolean(false),
                    1 => Value::Boolean(true),
                    _ => return Err(TtlvError::InvalidBoolean { offset: start + 8 }),
                }
            }
            ItemType::BigInteger => {
                if length == 0 || length % 8 != 0 {
                    return Err(bad_length());
                }
                Value::BigInteger(self.take(length)?.to_vec())
            }
            ItemType::TextString => {
                let b = self.take_padded(length)?;
                let s = std::str::from_utf8(b)
                    .map_err(|_| TtlvError::InvalidUtf8 { offset: start + 8 })?;
                Value::TextString(s.to_owned())
            }
            ItemType::ByteString => {
                Value::ByteString(Zeroizing::new(self.take_padded(length)?.to_vec()))
            }
        };
        Ok(Item { tag, value })
    }

    fn be_i64(&mut self) -> Result<i64, TtlvError> {
        let b = self.take(8)?;
        let mut a = [0u8; 8];
        a.copy_from_slice(b);
        Ok(i64::from_be_bytes(a))
    }

    /// A variable-length value followed by padding to 8 bytes. The padding's content is
    /// not checked: some clients leave garbage there, and it carries no meaning.
    fn take_padded(&mut self, length: usize) -> Result<&'a [u8], TtlvError> {
        let value = self.take(length)?;
        self.take(padded(length) - length)?;
        Ok(value)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const T: Tag = Tag(0x420020);

    fn hex(s: &str) -> Vec<u8> {
        let clean: String = s.chars().filter(|c| c.is_ascii_hexdigit()).collect();
        hex::decode(clean).expect("test vector is hex")
    }

    /// KMIP 1.4 §9.1.2, every example, byte for byte, both directions.
    #[test]
    fn spec_examples_are_byte_exact() {
        let big = {
            // 1234567890000000000000000000 = 0x03FD35EB6BC2DF4618080000
            hex("00 00 00 00 03 FD 35 EB 6B C2 DF 46 18 08 00 00")
        };
        let cases: Vec<(Item, &str)> = vec![
            (Item::integer(T, 8), "42 00 20 | 02 | 00 00 00 04 | 00 00 00 08 00 00 00 00"),
            (
                Item::long_integer(T, 123456789000000000),
                "42 00 20 | 03 | 00 00 00 08 | 01 B6 9B 4B A5 74 92 00",
            ),
            (
                Item::new(T, Value::BigInteger(big)),
                "42 00 20 | 04 | 00 00 00 10 | 00 00 00 00 03 FD 35 EB 6B C2 DF 46 18 08 00 00",
            ),
            (Item::enumeration(T, 255), "42 00 20 | 05 | 00 00 00 04 | 00 00 00 FF 00 00 00 00"),
            (Item::boolean(T, true), "42 00 20 | 06 | 00 00 00 08 | 00 00 00 00 00 00 00 01"),
            (
                Item::text(T, "Hello World"),
                "42 00 20 | 07 | 00 00 00 0B | 48 65 6C 6C 6F 20 57 6F 72 6C 64 00 00 00 00 00",
            ),
            (Item::bytes(T, vec![1, 2, 3]), "42 00 20 | 08 | 00 00 00 03 | 01 02 03 00 00 00 00 00"),
            (
                // Friday, March 14, 2008, 11:56:40 GMT
                Item::date_time(T, 0x47DA67F8),
                "42 00 20 | 09 | 00 00 00 08 | 00 00 00 00 47 DA 67 F8",
            ),
            (
                Item::interval(T, 10 * 24 * 3600),
                "42 00 20 | 0A | 00 00 00 04 | 00 0D 2F 00 00 00 00 00",
            ),
            (
                Item::structure(
                    T,
                    vec![Item::enumeration(Tag(0x420004), 254), Item::integer(Tag(0x420005), 255)],
                ),
                "42 00 20 | 01 | 00 00 00 20 | 42 00 04 | 05 | 00 00 00 04 | 00 00 00 FE 00 00 00 00 | 42 00 05 | 02 | 00 00 00 04 | 00 00 00 FF 00 00 00 00",
            ),
        ];
        for (item, wire) in cases {
            let wire = hex(wire);
            assert_eq!(item.to_ttlv(), wire, "encoding {item:?}");
            assert_eq!(item.encoded_len(), wire.len());
            // decode() insists on a structure only in message_len(); any item decodes.
            assert_eq!(decode(&wire, &Limits::default()), Ok(item));
        }
    }

    #[test]
    fn date_time_extended_is_eight_bytes_of_microseconds() {
        let item = Item::new(T, Value::DateTimeExtended(1_205_495_800_000_001));
        let wire = item.to_ttlv();
        assert_eq!(&wire[..8], &hex("42 00 20 0B 00 00 00 08")[..]);
        assert_eq!(decode(&wire, &Limits::default()), Ok(item));
    }

    #[test]
    fn negative_big_integer_is_sign_extended() {
        let item = Item::new(T, Value::BigInteger(vec![0xFF, 0x01]));
        let wire = item.to_ttlv();
        assert_eq!(&wire[8..], &hex("FF FF FF FF FF FF FF 01")[..]);
    }

    #[test]
    fn truncated_input_is_an_error_not_a_panic() {
        let wire = Item::text(T, "Hello World").to_ttlv();
        for n in 0..wire.len() {
            assert!(matches!(
                decode(&wire[..n], &Limits::default()),
                Err(TtlvError::Truncated { .. })
            ));
        }
    }

    #[test]
    fn huge_declared_length_is_refused_without_allocating() {
        let mut wire = hex("42 00 20 08 7F FF FF FF");
        wire.extend_from_slice(&[0; 8]);
        assert!(matches!(
            decode(&wire, &Limits::default()),
            Err(TtlvError::Truncated { .. })
        ));
        let header: [u8; 8] = hex("42 00 78 01 7F FF FF F8").try_into().expect("8 bytes");
        assert!(matches!(
            message_len(&header, DEFAULT_MAX_MESSAGE_SIZE),
            Err(TtlvError::MessageTooLarge { .. })
        ));
    }

    #[test]
    fn wrong_fixed_lengths_and_bad_values_are_refused() {
        let bad_int = hex("42 00 20 02 00 00 00 08 00 00 00 00 00 00 00 08");
        assert!(matches!(
            decode(&bad_int, &Limits::default()),
            Err(TtlvError::InvalidLength { .. })
        ));
        let bad_bool = hex("42 00 20 06 00 00 00 08 00 00 00 00 00 00 00 02");
        assert_eq!(
            decode(&bad_bool, &Limits::default()),
            Err(TtlvError::InvalidBoolean { offset: 8 })
        );
        let bad_type = hex("42 00 20 0C 00 00 00 00");
        assert!(matches!(
            decode(&bad_type, &Limits::default()),
            Err(TtlvError::UnknownItemType {
                item_type: 0x0C,
                ..
            })
        ));
        let bad_utf8 = hex("42 00 20 07 00 00 00 01 FF 00 00 00 00 00 00 00");
        assert!(matches!(
            decode(&bad_utf8, &Limits::default()),
            Err(TtlvError::InvalidUtf8 { .. })
        ));
    }

    #[test]
    fn a_child_overrunning_its_structure_is_refused() {
        // Structure of length 8 holding a 16-byte integer item.
        let mut wire = hex("42 00 20 01 00 00 00 08");
        wire.extend(Item::integer(T, 1).to_ttlv());
        assert!(matches!(
            decode(&wire, &Limits::default()),
            Err(TtlvError::InvalidLength { .. })
        ));
    }

    #[test]
    fn depth_item_and_size_limits_hold() {
        let mut item = Item::integer(T, 1);
        for _ in 0..10 {
            item = Item::structure(T, vec![item]);
        }
        let wire = item.to_ttlv();
        let tight = Limits {
            max_depth: 5,
            ..Limits::default()
        };
        assert_eq!(decode(&wire, &tight), Err(TtlvError::TooDeep { limit: 5 }));
        let few = Limits {
            max_items: 3,
            ..Limits::default()
        };
        assert_eq!(
            decode(&wire, &few),
            Err(TtlvError::TooManyItems { limit: 3 })
        );
        let small = Limits {
            max_message_size: 16,
            ..Limits::default()
        };
        assert!(matches!(
            decode(&wire, &small),
            Err(TtlvError::MessageTooLarge { .. })
        ));
        assert_eq!(decode(&wire, &Limits::default()), Ok(item));
    }

    #[test]
    fn trailing_bytes_are_refused() {
        let mut wire = Item::integer(T, 1).to_ttlv();
        wire.extend_from_slice(&[0; 8]);
        assert_eq!(
            decode(&wire, &Limits::default()),
            Err(TtlvError::TrailingBytes {
                offset: 16,
                extra: 8
            })
        );
    }

    #[test]
    fn byte_strings_do_not_leak_through_debug() {
        let item = Item::bytes(T, b"super secret key".to_vec());
        let shown = format!("{item:?}");
        assert!(!shown.contains("super"), "{shown}");
        assert!(shown.contains("16 bytes"), "{shown}");
    }
}
