//! The KMIP 1.0–2.1 tag, enumeration and bit mask tables.
//!
//! The tables live in `generated.rs`, written once by `tools/gen_kmip_tables.py` from the OASIS
//! specification text (`../shared/kmip/spec`); this file holds the hand-written types and
//! lookups around them.
//!
//! * [`Tag`] — one associated constant per tag of every version (`Tag::ACTIVATION_DATE`),
//!   including tags that were deprecated or removed (`Tag::TEMPLATE_ATTRIBUTE`, removed in 2.0).
//! * [`EnumDef`] / [`MaskDef`] — the dynamic tables (`defs::OPERATION`, ...), used by the
//!   TTLV/XML/JSON codecs through [`enum_for_tag`] and [`mask_for_tag`].
//! * Typed enums (`Operation`, `ResultReason`, ...), one per enumeration, and typed masks
//!   (`CryptographicUsageMask`, ...), one per bit mask.
//!
//! Every entry records the version that introduced it (`since`) and the first version that no
//! longer defines it (`removed_in`); use `is_defined_in` before sending anything to a peer that
//! negotiated an older protocol version.
//!
//! # Names
//!
//! * `name` is the spec name ("Cryptographic Algorithm", "SHA-256"); for values that were
//!   renamed, the newest spelling.
//! * `xml_name` is the KMIP XML/JSON profile form: brackets become spaces, a punctuation
//!   character becomes `_` when it follows a letter or digit and the alphanumeric run after it
//!   has no lower-case letter (`SHA_256`, `X_509`, `PKCS_1`, `HMAC_SHA1`, `Dual_EC`), other
//!   punctuation separates words (`PreActive`, `IVCounterNonce`, `MACSign`), then every word is
//!   capitalized and the spaces are dropped. Exceptions: `3DES` is `DES3`,
//!   "Content Commitment (Non Repudiation)" is `ContentCommitment`.
//! * Tag constants are the SCREAMING_SNAKE_CASE of the spec name: its alphanumeric runs joined
//!   by `_` (`X_509_CERTIFICATE_IDENTIFIER`, `PKCS_11_FUNCTION`, `IV_COUNTER_NONCE`).
//! * Typed enum variants are the UpperCamelCase of the XML name: it is split into words at `_`
//!   and at case changes (`ECPrivateKey` → `EC Private Key`), each word is capitalized and the
//!   rest lower-cased, and an `_` is kept only between two digits of different words:
//!   `SHA_256` → `Sha256`, `HMAC_SHA256` → `HmacSha256`, `ECPrivateKey` → `EcPrivateKey`,
//!   `DES3` → `Des3`, `SHA_512_224` → `Sha512_224`, `PreActive` → `PreActive`.
//! * Mask constants are the SCREAMING_SNAKE_CASE of the XML name's words (`WRAP_KEY`,
//!   `MAC_GENERATE`, `CRL_SIGN`).

use std::fmt;

use crate::ProtocolVersion;

/// Defines a typed enumeration over one [`EnumDef`].
macro_rules! kmip_enum {
    ($(#[$doc:meta])* $ty:ident => $def:path { }) => {
        $(#[$doc])*
        ///
        /// The specifications define no values for this enumeration (only extensions, or values
        /// defined by another standard), so the typed enum is empty; use the raw `u32`.
        #[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
        #[non_exhaustive]
        pub enum $ty {}

        impl $ty {
            /// The dynamic table for this enumeration.
            pub const DEF: &'static $crate::spec::EnumDef = &$def;
            /// Every variant, sorted by value.
            pub const ALL: &'static [$ty] = &[];

            pub const fn value(self) -> u32 {
                match self {}
            }

            pub fn from_value(_v: u32) -> Option<Self> {
                None
            }

            pub fn from_xml_name(_s: &str) -> Option<Self> {
                None
            }

            pub fn variant(self) -> &'static $crate::spec::EnumVariant {
                match self {}
            }

            pub fn name(self) -> &'static str {
                match self {}
            }

            pub fn xml_name(self) -> &'static str {
                match self {}
            }

            pub fn since(self) -> $crate::ProtocolVersion {
                match self {}
            }

            pub fn removed_in(self) -> Option<$crate::ProtocolVersion> {
                match self {}
            }

            pub fn is_defined_in(self, _version: $crate::ProtocolVersion) -> bool {
                match self {}
            }
        }

        impl From<$ty> for u32 {
            fn from(v: $ty) -> u32 {
                v.value()
            }
        }

        impl TryFrom<u32> for $ty {
            type Error = u32;

            fn try_from(v: u32) -> Result<Self, u32> {
                Err(v)
            }
        }

        impl ::std::fmt::Display for $ty {
            fn fmt(&self, _f: &mut ::std::fmt::Formatter<'_>) -> ::std::fmt::Result {
                match *self {}
            }
        }
    };
    ($(#[$doc:meta])* $ty:ident => $def:path { $($(#[$vdoc:meta])* $var:ident = $val:literal,)+ }) => {
        $(#[$doc])*
        #[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
        #[non_exhaustive]
        #[allow(clippy::enum_variant_names)]
        pub enum $ty {
            $($(#[$vdoc])* $var,)+
        }

        impl $ty {
            /// The dynamic table for this enumeration.
            pub const DEF: &'static $crate::spec::EnumDef = &$def;
            /// Every variant, sorted by value.
            pub const ALL: &'static [$ty] = &[$($ty::$var,)+];

            /// The wire value.
            pub const fn value(self) -> u32 {
                match self {
                    $($ty::$var => $val,)+
                }
            }

            /// The variant for a wire value (`None` for unknown values and extensions).
            pub fn from_value(v: u32) -> Option<Self> {
                match v {
                    $($val => Some($ty::$var),)+
                    _ => None,
                }
            }

            /// The variant for an XML/JSON name (current or older spelling).
            pub fn from_xml_name(s: &str) -> Option<Self> {
                Self::DEF.by_xml_name(s).and_then(|v| Self::from_value(v.value))
            }

            /// This value's row in [`Self::DEF`].
            pub fn variant(self) -> &'static $crate::spec::EnumVariant {
                match Self::DEF.by_value(self.value()) {
                    Some(v) => v,
                    None => unreachable!("typed enum and its table disagree"),
                }
            }

            /// The spec name ("Create Key Pair").
            pub fn name(self) -> &'static str {
                self.variant().name
            }

            /// The XML/JSON name ("CreateKeyPair").
            pub fn xml_name(self) -> &'static str {
                self.variant().xml_name
            }

            /// The version that introduced this value.
            pub fn since(self) -> $crate::ProtocolVersion {
                self.variant().since
            }

            /// The first version that no longer defines this value.
            pub fn removed_in(self) -> Option<$crate::ProtocolVersion> {
                self.variant().removed_in
            }

            /// Whether `version` defines this value.
            pub fn is_defined_in(self, version: $crate::ProtocolVersion) -> bool {
                self.variant().is_defined_in(version)
            }
        }

        impl From<$ty> for u32 {
            fn from(v: $ty) -> u32 {
                v.value()
            }
        }

        impl TryFrom<u32> for $ty {
            type Error = u32;

            fn try_from(v: u32) -> Result<Self, u32> {
                Self::from_value(v).ok_or(v)
            }
        }

        /// The XML/JSON name.
        impl ::std::fmt::Display for $ty {
            fn fmt(&self, f: &mut ::std::fmt::Formatter<'_>) -> ::std::fmt::Result {
                f.write_str(self.xml_name())
            }
        }
    };
}

/// Defines a typed bit mask over one [`MaskDef`].
macro_rules! kmip_mask {
    ($(#[$doc:meta])* $ty:ident => $def:path { $($(#[$vdoc:meta])* $bit:ident = $val:literal,)+ }) => {
        $(#[$doc])*
        ///
        /// A plain `u32` wrapper: unknown and extension bits are kept as they are.
        #[derive(Clone, Copy, Default, PartialEq, Eq, Hash)]
        pub struct $ty(pub u32);

        impl $ty {
            /// The dynamic table for this mask.
            pub const DEF: &'static $crate::spec::MaskDef = &$def;
            /// No bit set.
            pub const EMPTY: $ty = $ty(0);
            $($(#[$vdoc])* pub const $bit: $ty = $ty($val);)+

            pub const fn bits(self) -> u32 {
                self.0
            }

            /// Whether every bit of `other` is set in `self`.
            pub const fn contains(self, other: Self) -> bool {
                self.0 & other.0 == other.0
            }

            /// Whether any bit of `other` is set in `self`.
            pub const fn intersects(self, other: Self) -> bool {
                self.0 & other.0 != 0
            }

            pub const fn is_empty(self) -> bool {
                self.0 == 0
            }

            pub fn insert(&mut self, other: Self) {
                self.0 |= other.0;
            }

            pub fn remove(&mut self, other: Self) {
                self.0 &= !other.0;
            }

            /// Bits that no known version defines.
            pub fn unknown_bits(self) -> u32 {
                self.0 & !Self::DEF.known_bits()
            }

            /// XML/JSON form: "Encrypt Decrypt" (see [`MaskDef::to_xml`]).
            pub fn to_xml(self) -> ::std::string::String {
                Self::DEF.to_xml(self.0)
            }

            /// Parses the XML/JSON form (see [`MaskDef::from_xml`]).
            pub fn from_xml(s: &str) -> Option<Self> {
                Self::DEF.from_xml(s).map($ty)
            }
        }

        impl ::std::ops::BitOr for $ty {
            type Output = $ty;

            fn bitor(self, rhs: $ty) -> $ty {
                $ty(self.0 | rhs.0)
            }
        }

        impl ::std::ops::BitOrAssign for $ty {
            fn bitor_assign(&mut self, rhs: $ty) {
                self.0 |= rhs.0;
            }
        }

        impl ::std::ops::BitAnd for $ty {
            type Output = $ty;

            fn bitand(self, rhs: $ty) -> $ty {
                $ty(self.0 & rhs.0)
            }
        }

        impl ::std::ops::BitAndAssign for $ty {
            fn bitand_assign(&mut self, rhs: $ty) {
                self.0 &= rhs.0;
            }
        }

        impl From<u32> for $ty {
            fn from(v: u32) -> $ty {
                $ty(v)
            }
        }

        impl From<$ty> for u32 {
            fn from(v: $ty) -> u32 {
                v.0
            }
        }

        /// `CryptographicUsageMask(Encrypt Decrypt)`.
        impl ::std::fmt::Debug for $ty {
            fn fmt(&self, f: &mut ::std::fmt::Formatter<'_>) -> ::std::fmt::Result {
                write!(f, "{}({})", stringify!($ty), self.to_xml())
            }
        }

        /// The XML/JSON form.
        impl ::std::fmt::Display for $ty {
            fn fmt(&self, f: &mut ::std::fmt::Formatter<'_>) -> ::std::fmt::Result {
                f.write_str(&self.to_xml())
            }
        }
    };
}

mod generated;

#[cfg(test)]
mod tests;

pub use generated::defs;
pub use generated::*;

use generated::{TAGS, TAGS_BY_NAME, TAGS_BY_XML, TAG_VALUED};

/// A KMIP tag: `0x42xxxx` spec-defined, `0x54xxxx` extensions.
///
/// Three bytes on the wire; the associated constants name every tag of KMIP 1.0–2.1.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Tag(pub u32);

/// One row of the tag table.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct TagInfo {
    pub tag: Tag,
    /// Spec name, e.g. "Activation Date" (the 1.x `Attribute Name` form).
    pub name: &'static str,
    /// XML element name, e.g. "ActivationDate".
    pub xml_name: &'static str,
    /// The version that introduced the tag.
    pub since: ProtocolVersion,
    /// The first version whose tag table no longer lists it ("(Reserved)").
    pub removed_in: Option<ProtocolVersion>,
}

impl TagInfo {
    /// Whether `version` defines this tag.
    pub fn is_defined_in(&self, version: ProtocolVersion) -> bool {
        defined_in(self.since, self.removed_in, version)
    }
}

fn defined_in(
    since: ProtocolVersion,
    removed_in: Option<ProtocolVersion>,
    v: ProtocolVersion,
) -> bool {
    since <= v && removed_in.is_none_or(|r| v < r)
}

/// Row constructor used by the generated tables.
const fn tag_info(
    tag: u32,
    name: &'static str,
    xml_name: &'static str,
    since: ProtocolVersion,
    removed_in: Option<ProtocolVersion>,
) -> TagInfo {
    TagInfo {
        tag: Tag(tag),
        name,
        xml_name,
        since,
        removed_in,
    }
}

/// Parses `0x420001`-style hex (at most three bytes).
fn parse_hex_tag(s: &str) -> Option<Tag> {
    let hex = s.strip_prefix("0x").or_else(|| s.strip_prefix("0X"))?;
    if hex.is_empty() || hex.len() > 6 {
        return None;
    }
    u32::from_str_radix(hex, 16).ok().map(Tag)
}

impl Tag {
    /// The wire value.
    pub const fn value(self) -> u32 {
        self.0
    }

    /// The table row, if the tag is defined by any version of the spec.
    pub fn info(self) -> Option<&'static TagInfo> {
        TAGS.binary_search_by_key(&self.0, |t| t.tag.0)
            .ok()
            .map(|i| &TAGS[i])
    }

    /// The spec name ("Activation Date").
    pub fn name(self) -> Option<&'static str> {
        self.info().map(|i| i.name)
    }

    /// The XML element name ("ActivationDate").
    pub fn xml_name(self) -> Option<&'static str> {
        self.info().map(|i| i.xml_name)
    }

    /// The version that introduced the tag (`None` for unknown and extension tags).
    pub fn since(self) -> Option<ProtocolVersion> {
        self.info().map(|i| i.since)
    }

    /// Whether `version` defines this tag (false for unknown and extension tags).
    pub fn is_defined_in(self, version: ProtocolVersion) -> bool {
        self.info().is_some_and(|i| i.is_defined_in(version))
    }

    /// The tag for an XML element name ("ActivationDate"); also accepts hex ("0x420001",
    /// "0x540001"), which yields the tag even if no table lists it.
    pub fn from_xml_name(s: &str) -> Option<Tag> {
        if let Some(t) = parse_hex_tag(s) {
            return Some(t);
        }
        TAGS_BY_XML
            .binary_search_by(|&i| TAGS[usize::from(i)].xml_name.cmp(s))
            .ok()
            .map(|k| TAGS[usize::from(TAGS_BY_XML[k])].tag)
    }

    /// The tag for a spec name as used in the 1.x `Attribute Name` ("Cryptographic Algorithm",
    /// case-sensitive); also accepts the XML form and hex.
    pub fn from_name(s: &str) -> Option<Tag> {
        TAGS_BY_NAME
            .binary_search_by(|&i| TAGS[usize::from(i)].name.cmp(s))
            .ok()
            .map(|k| TAGS[usize::from(TAGS_BY_NAME[k])].tag)
            .or_else(|| Tag::from_xml_name(s))
    }

    /// Vendor extension tag (`0x54xxxx`).
    pub fn is_extension(self) -> bool {
        self.0 >> 16 == 0x54
    }
}

impl From<Tag> for u32 {
    fn from(t: Tag) -> u32 {
        t.0
    }
}

/// `ActivationDate(0x420001)`, or `Tag(0x540001)` for tags no table lists.
impl fmt::Debug for Tag {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.xml_name() {
            Some(n) => write!(f, "{n}(0x{:06X})", self.0),
            None => write!(f, "Tag(0x{:06X})", self.0),
        }
    }
}

/// The XML name, or `0x540001` for tags no table lists.
impl fmt::Display for Tag {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.xml_name() {
            Some(n) => f.write_str(n),
            None => write!(f, "0x{:06X}", self.0),
        }
    }
}

/// One value of an enumeration, or one bit of a mask.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct EnumVariant {
    pub value: u32,
    /// Spec name ("SHA-256"; the newest spelling if it was renamed).
    pub name: &'static str,
    /// XML/JSON name ("SHA_256").
    pub xml_name: &'static str,
    /// The version that introduced the value.
    pub since: ProtocolVersion,
    /// The first version that no longer defines it ("(Reserved)" there).
    pub removed_in: Option<ProtocolVersion>,
}

impl EnumVariant {
    /// Whether `version` defines this value.
    pub fn is_defined_in(&self, version: ProtocolVersion) -> bool {
        defined_in(self.since, self.removed_in, version)
    }
}

/// Row constructor used by the generated tables.
const fn variant(
    value: u32,
    name: &'static str,
    xml_name: &'static str,
    since: ProtocolVersion,
    removed_in: Option<ProtocolVersion>,
) -> EnumVariant {
    EnumVariant {
        value,
        name,
        xml_name,
        since,
        removed_in,
    }
}

/// An enumeration: every value any version defines, sorted by value.
#[derive(Debug)]
pub struct EnumDef {
    /// Spec name ("Cryptographic Algorithm").
    pub name: &'static str,
    /// XML form of the name ("CryptographicAlgorithm").
    pub xml_name: &'static str,
    /// The version that introduced the enumeration.
    pub since: ProtocolVersion,
    /// Every value, sorted by value.
    pub variants: &'static [EnumVariant],
    /// Other XML spellings accepted on input (older spec spellings, test-case spellings).
    pub aliases: &'static [(&'static str, u32)],
}

impl EnumDef {
    pub fn by_value(&self, v: u32) -> Option<&EnumVariant> {
        self.variants
            .binary_search_by_key(&v, |e| e.value)
            .ok()
            .map(|i| &self.variants[i])
    }

    /// Looks up an XML/JSON name; also accepts the aliases.
    pub fn by_xml_name(&self, s: &str) -> Option<&EnumVariant> {
        self.variants.iter().find(|e| e.xml_name == s).or_else(|| {
            let &(_, v) = self.aliases.iter().find(|&&(a, _)| a == s)?;
            self.by_value(v)
        })
    }

    /// Looks up a spec name ("Pre-Active").
    pub fn by_name(&self, s: &str) -> Option<&EnumVariant> {
        self.variants.iter().find(|e| e.name == s)
    }

    /// The values `version` defines.
    pub fn variants_in(&self, version: ProtocolVersion) -> impl Iterator<Item = &EnumVariant> {
        self.variants
            .iter()
            .filter(move |e| e.is_defined_in(version))
    }

    /// Vendor extension value (`0x8xxxxxxx`).
    pub fn is_extension_value(v: u32) -> bool {
        v >> 28 == 0x8
    }
}

/// A bit mask: every bit any version defines, sorted by value.
#[derive(Debug)]
pub struct MaskDef {
    /// Spec name ("Cryptographic Usage Mask").
    pub name: &'static str,
    /// XML form of the name ("CryptographicUsageMask").
    pub xml_name: &'static str,
    /// The version that introduced the mask.
    pub since: ProtocolVersion,
    /// Every bit, sorted by value.
    pub bits: &'static [EnumVariant],
}

impl MaskDef {
    /// The union of every bit any version defines.
    pub fn known_bits(&self) -> u32 {
        self.bits.iter().fold(0, |acc, b| acc | b.value)
    }

    /// The union of the bits `version` defines.
    pub fn bits_in(&self, version: ProtocolVersion) -> u32 {
        self.bits
            .iter()
            .filter(|b| b.is_defined_in(version))
            .fold(0, |acc, b| acc | b.value)
    }

    pub fn by_xml_name(&self, s: &str) -> Option<&EnumVariant> {
        self.bits.iter().find(|b| b.xml_name == s)
    }

    /// XML/JSON form: the names of the set bits in ascending order, space separated
    /// ("Encrypt Decrypt"); bits no table lists are appended as one hex value ("Sign 0x00100000");
    /// zero is "0x00000000".
    pub fn to_xml(&self, v: u32) -> String {
        let mut out = String::new();
        let mut rest = v;
        for b in self.bits {
            if v & b.value == b.value && b.value != 0 {
                if !out.is_empty() {
                    out.push(' ');
                }
                out.push_str(b.xml_name);
                rest &= !b.value;
            }
        }
        if rest != 0 || out.is_empty() {
            if !out.is_empty() {
                out.push(' ');
            }
            out.push_str(&format!("0x{rest:08X}"));
        }
        out
    }

    /// Parses names and hex values separated by spaces and/or `|` ("Encrypt Decrypt",
    /// "Encrypt|Decrypt", "0x0000000C", "Sign 0x00100000"); a decimal integer is accepted too.
    /// `None` if a token is unknown or the string has no token.
    pub fn from_xml(&self, s: &str) -> Option<u32> {
        let mut v = 0u32;
        let mut any = false;
        for tok in s
            .split(|c: char| c == '|' || c.is_ascii_whitespace())
            .filter(|t| !t.is_empty())
        {
            any = true;
            v |= if let Some(hex) = tok.strip_prefix("0x").or_else(|| tok.strip_prefix("0X")) {
                u32::from_str_radix(hex, 16).ok()?
            } else if tok.bytes().all(|b| b.is_ascii_digit()) {
                tok.parse().ok()?
            } else {
                self.by_xml_name(tok)?.value
            };
        }
        any.then_some(v)
    }
}

/// Which enumeration a tag's Enumeration value uses (`Tag::CRYPTOGRAPHIC_ALGORITHM` →
/// Cryptographic Algorithm, `Tag::MASK_GENERATOR_HASHING_ALGORITHM` → Hashing Algorithm,
/// `Tag::UNIQUE_IDENTIFIER` → the 2.x Unique Identifier enumeration, ...).
///
/// `None` for tags that are never Enumerations, and for [`enum_values_are_tags`] tags.
/// Note that `Asynchronous Indicator` is an Enumeration in 2.x but a Boolean in 1.x.
pub fn enum_for_tag(tag: Tag) -> Option<&'static EnumDef> {
    generated::lookup_enum_for_tag(tag)
}

/// Which bit mask a tag's Integer value is (Cryptographic Usage Mask, Storage Status Mask,
/// Protection Storage Mask).
pub fn mask_for_tag(tag: Tag) -> Option<&'static MaskDef> {
    generated::lookup_mask_for_tag(tag)
}

/// Tags whose Enumeration value is a tag value (2.x `Attribute Reference`); in XML/JSON the
/// value is written as the tag's XML name (`<AttributeReference type="Enumeration"
/// value="State"/>`) or as hex for extension tags.
pub fn enum_values_are_tags(tag: Tag) -> bool {
    TAG_VALUED.contains(&tag)
}

/// Every tag of KMIP 1.0–2.1, sorted by value.
pub fn tags() -> &'static [TagInfo] {
    TAGS
}

/// Every enumeration, sorted by name.
pub fn enum_defs() -> &'static [&'static EnumDef] {
    defs::ENUMS
}

/// Every bit mask, sorted by name.
pub fn mask_defs() -> &'static [&'static MaskDef] {
    defs::MASKS
}

/// An enumeration by spec name ("Hashing Algorithm") or XML name ("HashingAlgorithm").
pub fn enum_def(name: &str) -> Option<&'static EnumDef> {
    defs::ENUMS
        .iter()
        .copied()
        .find(|d| d.name == name || d.xml_name == name)
}

/// A bit mask by spec name or XML name.
pub fn mask_def(name: &str) -> Option<&'static MaskDef> {
    defs::MASKS
        .iter()
        .copied()
        .find(|d| d.name == name || d.xml_name == name)
}
