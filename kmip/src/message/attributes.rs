//! Attributes in one internal form, read from and written to both wire forms:
//!
//! ```text
//! KMIP 1.x  TemplateAttribute { Attribute { AttributeName "Cryptographic Length",
//!                                           AttributeIndex?, AttributeValue 256 } ... }
//! KMIP 2.x  Attributes { CryptographicLength 256, ... }
//! ```
//!
//! Writing for a protocol version leaves out attributes that version does not define, so
//! a 1.0 client never receives a 1.1+ attribute (Percona and others break on that).

use crate::spec::{
    CryptographicAlgorithm, CryptographicUsageMask, LinkType, NameType, ObjectType, State, Tag,
};
use crate::ttlv::{Item, Value};
use crate::ProtocolVersion;

use super::codec::{fields, kmip_struct, wrong_type, ByteString, DateTime, TtlvValue};
use super::MessageError;
use crate::spec::{
    BlockCipherMode, DigitalSignatureAlgorithm, DrbgAlgorithm, Fips186Variation, HashingAlgorithm,
    KeyFormatType, KeyRoleType, MaskGenerator, PaddingMethod, RecommendedCurve, RngAlgorithm,
    UsageLimitsUnit,
};

/// Which attribute: one the spec defines (by its tag) or a custom one (`x-…`/`y-…` in
/// 1.x, a Vendor Attribute — an `Attribute` with a Vendor Identification — in 2.x).
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum AttributeName {
    Standard(Tag),
    Custom(String),
}

impl AttributeName {
    /// Reads a 1.x attribute name: the spec's name (`"Cryptographic Length"`) or a custom one.
    pub fn from_text(name: &str) -> Self {
        match Tag::from_name(name) {
            Some(tag) => Self::Standard(tag),
            None => Self::Custom(name.to_owned()),
        }
    }

    /// The 1.x text form.
    pub fn to_text(&self) -> String {
        match self {
            Self::Standard(tag) => tag
                .name()
                .map(str::to_owned)
                .unwrap_or_else(|| format!("{:#08x}", tag.0)),
            Self::Custom(name) => name.clone(),
        }
    }

    /// Whether protocol version `v` defines this attribute (custom ones always are).
    pub fn defined_in(&self, v: ProtocolVersion) -> bool {
        match self {
            Self::Custom(_) => true,
            Self::Standard(tag) => {
                let became_attribute = ATTRIBUTES_SINCE
                    .iter()
                    .find(|(t, _)| t == tag)
                    .is_none_or(|(_, since)| *since <= v);
                became_attribute
                    && match tag.info() {
                        Some(info) => info.since <= v && info.removed_in.is_none_or(|r| v < r),
                        None => true,
                    }
            }
        }
    }

    /// Whether an answer whose attributes the server chooses (Get Attributes naming none)
    /// carries this attribute for a client speaking `v`: the version
    /// defines it and widely used clients of that version can read it (see
    /// [`UNREADABLE_1X`], [`UNREADABLE_2_0`]). A request naming the attribute gets it
    /// whenever [`Self::defined_in`] holds.
    pub fn volunteered_in(&self, v: ProtocolVersion) -> bool {
        self.defined_in(v)
            && match self {
                // PyKMIP 0.11 reads a 1.x custom attribute (`x-` name, Text String) but
                // fails on any 2.0 Vendor Attribute (an `Attribute` inside `Attributes`).
                Self::Custom(_) => v != ProtocolVersion::V2_0,
                // PyKMIP 0.11 reads no certificate name part, in 1.x or 2.0 ("No value type
                // for CERTIFICATE_SUBJECT_CN", "Unrecognized attribute type").
                Self::Standard(tag) => {
                    let name_part = v < ProtocolVersion::V2_1 && is_certificate_name_part(*tag);
                    !(unreadable_in(v).contains(tag) || name_part)
                }
            }
    }

    /// Splits a custom name into 2.x Vendor Identification and Attribute Name
    /// (`x-colour` ↔ vendor `x`, name `colour`).
    fn vendor_parts(name: &str) -> (&str, &str) {
        name.split_once('-').unwrap_or(("x", name))
    }

    /// A 2.x vendor attribute. An empty Vendor Identification is read as the standard
    /// attribute of that name: PyKMIP 0.11 names standard attributes that way.
    fn from_vendor(vendor: &str, name: &str) -> Self {
        if vendor.is_empty() {
            return Self::from_text(name);
        }
        Self::Custom(format!("{vendor}-{name}"))
    }

    /// Reads a 2.x Attribute Reference: an Enumeration holding the attribute's tag, or a
    /// structure naming a vendor attribute. A 1.x Attribute Name text is accepted too.
    pub(crate) fn from_reference(item: &Item) -> Result<Self, MessageError> {
        match &item.value {
            Value::Enumeration(tag) => Ok(Self::Standard(Tag(*tag))),
            Value::TextString(name) => Ok(Self::from_text(name)),
            Value::Structure(_) => {
                let vendor: String = read_field(item, Tag::VENDOR_IDENTIFICATION)?;
                let name: String = read_field(item, Tag::ATTRIBUTE_NAME)?;
                Ok(Self::from_vendor(&vendor, &name))
            }
            _ => Err(wrong_type(item, crate::ttlv::ItemType::Enumeration)),
        }
    }

    pub(crate) fn to_reference(&self, v: ProtocolVersion) -> Item {
        match self {
            _ if !v.uses_typed_attributes() => Item::text(Tag::ATTRIBUTE_NAME, self.to_text()),
            Self::Standard(tag) => Item::enumeration(Tag::ATTRIBUTE_REFERENCE, tag.0),
            Self::Custom(name) => {
                let (vendor, name) = Self::vendor_parts(name);
                Item::structure(
                    Tag::ATTRIBUTE_REFERENCE,
                    vec![
                        Item::text(Tag::VENDOR_IDENTIFICATION, vendor),
                        Item::text(Tag::ATTRIBUTE_NAME, name),
                    ],
                )
            }
        }
    }
}

/// Tags older than their use as an attribute: 1.x has Key Format Type and Opaque Data Type
/// only as fields of a Key Block and an Opaque Object; KMIP 2.0 made them attributes (2.0
/// §4.26, §4.37; absent from the 1.4 §3 attribute list).
const ATTRIBUTES_SINCE: [(Tag, ProtocolVersion); 2] = [
    (Tag::KEY_FORMAT_TYPE, ProtocolVersion::V2_0),
    (Tag::OPAQUE_DATA_TYPE, ProtocolVersion::V2_0),
];

/// Standard attributes that the PyKMIP 0.11 client cannot read in a KMIP 1.x response: it
/// fails the whole Get Attributes answer ("No value type for RANDOM_NUMBER_GENERATOR",
/// NotImplementedError for Link, Revocation Reason, Usage Limits, ...). Found by trying
/// (`tests/pykmip/unreadable_attributes.py`, checked by `tests/dev_pykmip.rs`); left out of
/// Get Attributes answers naming no attribute, for 1.0–1.4 requests. Names alone (Get
/// Attribute List) PyKMIP reads whatever the attribute.
pub const UNREADABLE_1X: &[Tag] = &[
    Tag::CRYPTOGRAPHIC_DOMAIN_PARAMETERS,
    Tag::X_509_CERTIFICATE_IDENTIFIER,
    Tag::X_509_CERTIFICATE_SUBJECT,
    Tag::X_509_CERTIFICATE_ISSUER,
    Tag::CERTIFICATE_IDENTIFIER,
    Tag::CERTIFICATE_SUBJECT,
    Tag::CERTIFICATE_ISSUER,
    Tag::DIGITAL_SIGNATURE_ALGORITHM,
    Tag::USAGE_LIMITS,
    Tag::REVOCATION_REASON,
    Tag::LINK,
    Tag::ALTERNATIVE_NAME,
    Tag::KEY_VALUE_PRESENT,
    Tag::KEY_VALUE_LOCATION,
    Tag::RANDOM_NUMBER_GENERATOR,
    Tag::PKCS_12_FRIENDLY_NAME,
    Tag::DESCRIPTION,
    Tag::COMMENT,
];

/// The same for KMIP 2.0 ("Unrecognized attribute type: Tags.SHORT_UNIQUE_IDENTIFIER"):
/// left out of Get Attributes answers naming no attribute, for 2.0 requests. PyKMIP does
/// not speak 2.1, and 2.1 answers leave nothing out.
pub const UNREADABLE_2_0: &[Tag] = &[
    Tag::CRYPTOGRAPHIC_DOMAIN_PARAMETERS,
    Tag::CERTIFICATE_TYPE,
    Tag::X_509_CERTIFICATE_IDENTIFIER,
    Tag::X_509_CERTIFICATE_SUBJECT,
    Tag::X_509_CERTIFICATE_ISSUER,
    Tag::DIGITAL_SIGNATURE_ALGORITHM,
    Tag::USAGE_LIMITS,
    Tag::REVOCATION_REASON,
    Tag::LINK,
    Tag::ALTERNATIVE_NAME,
    Tag::KEY_VALUE_PRESENT,
    Tag::KEY_VALUE_LOCATION,
    Tag::ORIGINAL_CREATION_DATE,
    Tag::RANDOM_NUMBER_GENERATOR,
    Tag::PKCS_12_FRIENDLY_NAME,
    Tag::DESCRIPTION,
    Tag::COMMENT,
    Tag::ALWAYS_SENSITIVE,
    Tag::EXTRACTABLE,
    Tag::NEVER_EXTRACTABLE,
    Tag::SHORT_UNIQUE_IDENTIFIER,
    Tag::KEY_FORMAT_TYPE,
    Tag::OPAQUE_DATA_TYPE,
    Tag::PROTECTION_STORAGE_MASK,
    Tag::PROTECTION_LEVEL,
    Tag::PROTECTION_PERIOD,
    Tag::QUANTUM_SAFE,
    Tag::NIST_KEY_TYPE,
];

/// The parts of a certificate's subject name KMIP keeps as attributes (2.x; from 1.4 in this
/// crate's version table): CN, O, OU, email, C, ST, L, UID, serial number, title, DC, DN
/// qualifier.
pub const CERTIFICATE_SUBJECT_PARTS: [Tag; 12] = [
    Tag::CERTIFICATE_SUBJECT_CN,
    Tag::CERTIFICATE_SUBJECT_O,
    Tag::CERTIFICATE_SUBJECT_OU,
    Tag::CERTIFICATE_SUBJECT_EMAIL,
    Tag::CERTIFICATE_SUBJECT_C,
    Tag::CERTIFICATE_SUBJECT_ST,
    Tag::CERTIFICATE_SUBJECT_L,
    Tag::CERTIFICATE_SUBJECT_UID,
    Tag::CERTIFICATE_SUBJECT_SERIAL_NUMBER,
    Tag::CERTIFICATE_SUBJECT_TITLE,
    Tag::CERTIFICATE_SUBJECT_DC,
    Tag::CERTIFICATE_SUBJECT_DN_QUALIFIER,
];

/// The same parts of a certificate's issuer name, in the same order.
pub const CERTIFICATE_ISSUER_PARTS: [Tag; 12] = [
    Tag::CERTIFICATE_ISSUER_CN,
    Tag::CERTIFICATE_ISSUER_O,
    Tag::CERTIFICATE_ISSUER_OU,
    Tag::CERTIFICATE_ISSUER_EMAIL,
    Tag::CERTIFICATE_ISSUER_C,
    Tag::CERTIFICATE_ISSUER_ST,
    Tag::CERTIFICATE_ISSUER_L,
    Tag::CERTIFICATE_ISSUER_UID,
    Tag::CERTIFICATE_ISSUER_SERIAL_NUMBER,
    Tag::CERTIFICATE_ISSUER_TITLE,
    Tag::CERTIFICATE_ISSUER_DC,
    Tag::CERTIFICATE_ISSUER_DN_QUALIFIER,
];

/// Whether `tag` is a part of a certificate's subject or issuer name.
pub fn is_certificate_name_part(tag: Tag) -> bool {
    CERTIFICATE_SUBJECT_PARTS.contains(&tag) || CERTIFICATE_ISSUER_PARTS.contains(&tag)
}

/// The attributes left out of Get Attributes answers naming none, for a client speaking `v`.
pub fn unreadable_in(v: ProtocolVersion) -> &'static [Tag] {
    match v {
        _ if v.major == 1 => UNREADABLE_1X,
        ProtocolVersion::V2_0 => UNREADABLE_2_0,
        _ => &[],
    }
}

fn read_field<T: TtlvValue>(item: &Item, tag: Tag) -> Result<T, MessageError> {
    super::codec::kind::req::read(item.tag, fields(item)?, tag, ProtocolVersion::V2_1)
}

/// One attribute instance. `value` is the attribute's value as TTLV (a structure's
/// children for Name, Link, Cryptographic Parameters, ...).
#[derive(Clone, Debug, PartialEq)]
pub struct Attribute {
    pub name: AttributeName,
    /// 1.x Attribute Index; absent in 2.x.
    pub index: Option<i32>,
    pub value: Value,
}

impl Attribute {
    pub fn new(tag: Tag, value: Value) -> Self {
        Self {
            name: AttributeName::Standard(tag),
            index: None,
            value,
        }
    }

    /// An attribute from a typed value, e.g. `Attribute::typed(Tag::STATE, &State::Active)`.
    pub fn typed<T: TtlvValue>(tag: Tag, value: &T) -> Self {
        Self::new(tag, value.encode(tag, ProtocolVersion::V2_1).value)
    }

    pub fn custom(name: impl Into<String>, value: Value) -> Self {
        Self {
            name: AttributeName::Custom(name.into()),
            index: None,
            value,
        }
    }

    /// Whether a Get Attributes answer naming no attribute carries this one for a client
    /// speaking `v`: its name is volunteered ([`AttributeName::volunteered_in`]), and below
    /// 2.1 a Digest carries a Key Format Type — PyKMIP 0.11 (1.x and 2.0) reads that field
    /// unconditionally and fails the whole answer without it ("unpack requires a buffer of 4
    /// bytes"), yet KMIP requires it only for keys and secret data, so a certificate's or
    /// opaque object's Digest has none.
    pub fn volunteered_in(&self, v: ProtocolVersion) -> bool {
        if !self.name.volunteered_in(v) {
            return false;
        }
        let digest_without_format = self.tag() == Some(Tag::DIGEST)
            && !matches!(&self.value, Value::Structure(items)
                if items.iter().any(|i| i.tag == Tag::KEY_FORMAT_TYPE));
        !(v < ProtocolVersion::V2_1 && digest_without_format)
    }

    pub fn tag(&self) -> Option<Tag> {
        match self.name {
            AttributeName::Standard(tag) => Some(tag),
            AttributeName::Custom(_) => None,
        }
    }

    /// The value decoded as `T`.
    pub fn get<T: TtlvValue>(&self) -> Result<T, MessageError> {
        let tag = self.tag().unwrap_or(Tag::ATTRIBUTE_VALUE);
        T::decode(&Item::new(tag, self.value.clone()), ProtocolVersion::V2_1)
    }

    /// Reads the 1.x form `Attribute { Attribute Name, Attribute Index?, Attribute Value }`.
    pub fn from_v1(item: &Item) -> Result<Self, MessageError> {
        let f = fields(item)?;
        let name: String = super::codec::kind::req::read(item.tag, f, Tag::ATTRIBUTE_NAME, V1)?;
        let index = super::codec::kind::opt::read(item.tag, f, Tag::ATTRIBUTE_INDEX, V1)?;
        let value = f
            .iter()
            .find(|i| i.tag == Tag::ATTRIBUTE_VALUE)
            .map(|i| i.value.clone())
            .ok_or(MessageError::MissingField {
                within: item.tag,
                field: Tag::ATTRIBUTE_VALUE,
            })?;
        Ok(Self {
            name: AttributeName::from_text(&name),
            index,
            value,
        })
    }

    pub fn to_v1(&self) -> Item {
        let mut out = vec![Item::text(Tag::ATTRIBUTE_NAME, self.name.to_text())];
        if let Some(index) = self.index {
            out.push(Item::integer(Tag::ATTRIBUTE_INDEX, index));
        }
        out.push(Item::new(Tag::ATTRIBUTE_VALUE, self.value.clone()));
        Item::structure(Tag::ATTRIBUTE, out)
    }

    /// Reads the 2.x form: the item itself, or a Vendor Attribute
    /// (`Attribute { Vendor Identification, Attribute Name, Attribute Value }`).
    pub fn from_v2(item: &Item) -> Result<Self, MessageError> {
        if item.tag == Tag::ATTRIBUTE && item.child(Tag::VENDOR_IDENTIFICATION).is_some() {
            let vendor: String = read_field(item, Tag::VENDOR_IDENTIFICATION)?;
            let name: String = read_field(item, Tag::ATTRIBUTE_NAME)?;
            let value = item
                .child(Tag::ATTRIBUTE_VALUE)
                .map(|i| i.value.clone())
                .ok_or(MessageError::MissingField {
                    within: item.tag,
                    field: Tag::ATTRIBUTE_VALUE,
                })?;
            return Ok(Self {
                name: AttributeName::from_vendor(&vendor, &name),
                index: None,
                value,
            });
        }
        Ok(Self::new(item.tag, item.value.clone()))
    }

    pub fn to_v2(&self) -> Item {
        match &self.name {
            AttributeName::Standard(tag) => Item::new(*tag, self.value.clone()),
            AttributeName::Custom(name) => {
                let (vendor, name) = AttributeName::vendor_parts(name);
                Item::structure(
                    Tag::ATTRIBUTE,
                    vec![
                        Item::text(Tag::VENDOR_IDENTIFICATION, vendor),
                        Item::text(Tag::ATTRIBUTE_NAME, name),
                        Item::new(Tag::ATTRIBUTE_VALUE, self.value.clone()),
                    ],
                )
            }
        }
    }

    fn to_form(&self, v: ProtocolVersion) -> Item {
        if v.uses_typed_attributes() {
            self.to_v2()
        } else {
            self.to_v1()
        }
    }
}

const V1: ProtocolVersion = ProtocolVersion::V1_4;

/// An ordered list of attribute instances.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Attributes {
    list: Vec<Attribute>,
    /// 1.x only: names of Template objects whose attributes apply too (`Name` items in a
    /// `TemplateAttribute`; templates were removed in 2.0).
    pub template_names: Vec<Name>,
}

impl Attributes {
    pub fn new() -> Self {
        Self::default()
    }

    /// The attributes of an AES key of `bits` usable for Encrypt and Decrypt (what the
    /// client, the load generator and the tests create).
    pub fn aes_key(bits: i32) -> Self {
        Self::new()
            .with(Tag::CRYPTOGRAPHIC_ALGORITHM, &CryptographicAlgorithm::Aes)
            .with(Tag::CRYPTOGRAPHIC_LENGTH, &bits)
            .with(
                Tag::CRYPTOGRAPHIC_USAGE_MASK,
                &CryptographicUsageMask(
                    CryptographicUsageMask::ENCRYPT.0 | CryptographicUsageMask::DECRYPT.0,
                ),
            )
    }
    pub fn is_empty(&self) -> bool {
        self.list.is_empty()
    }
    pub fn len(&self) -> usize {
        self.list.len()
    }
    pub fn iter(&self) -> impl Iterator<Item = &Attribute> {
        self.list.iter()
    }
    pub fn push(&mut self, attribute: Attribute) {
        self.list.push(attribute);
    }
    /// Removes every instance of a standard attribute.
    pub fn remove(&mut self, tag: Tag) {
        self.list.retain(|a| a.tag() != Some(tag));
    }
    /// Keeps the instances for which `keep` is true.
    pub fn retain(&mut self, keep: impl FnMut(&Attribute) -> bool) {
        self.list.retain(keep);
    }
    /// Replaces every instance of the attribute's name with this one instance.
    pub fn set(&mut self, attribute: Attribute) {
        let name = attribute.name.clone();
        match self.list.iter().position(|a| a.name == name) {
            Some(at) => {
                self.list[at] = attribute;
                let mut seen = 0;
                self.list.retain(|a| {
                    seen += usize::from(a.name == name);
                    a.name != name || seen == 1
                });
            }
            None => self.list.push(attribute),
        }
    }
    /// Sets a typed standard attribute (one instance).
    pub fn set_typed<T: TtlvValue>(&mut self, tag: Tag, value: &T) {
        self.set(Attribute::typed(tag, value));
    }
    /// Every instance of the named attribute, standard or custom.
    pub fn named<'a>(
        &'a self,
        name: &'a AttributeName,
    ) -> impl Iterator<Item = &'a Attribute> + 'a {
        self.list.iter().filter(move |a| &a.name == name)
    }
    /// Adds a typed standard attribute, builder style.
    pub fn with<T: TtlvValue>(mut self, tag: Tag, value: &T) -> Self {
        self.push(Attribute::typed(tag, value));
        self
    }
    /// The first instance of a standard attribute.
    pub fn get(&self, tag: Tag) -> Option<&Attribute> {
        self.list.iter().find(|a| a.tag() == Some(tag))
    }
    /// Every instance of a standard attribute.
    pub fn get_all(&self, tag: Tag) -> impl Iterator<Item = &Attribute> {
        self.list.iter().filter(move |a| a.tag() == Some(tag))
    }
    /// The first instance of a standard attribute, decoded; `None` when absent.
    pub fn typed<T: TtlvValue>(&self, tag: Tag) -> Result<Option<T>, MessageError> {
        self.get(tag).map(Attribute::get).transpose()
    }

    pub fn object_type(&self) -> Result<Option<ObjectType>, MessageError> {
        self.typed(Tag::OBJECT_TYPE)
    }
    pub fn cryptographic_algorithm(&self) -> Result<Option<CryptographicAlgorithm>, MessageError> {
        self.typed(Tag::CRYPTOGRAPHIC_ALGORITHM)
    }
    pub fn cryptographic_length(&self) -> Result<Option<i32>, MessageError> {
        self.typed(Tag::CRYPTOGRAPHIC_LENGTH)
    }
    pub fn cryptographic_usage_mask(&self) -> Result<Option<CryptographicUsageMask>, MessageError> {
        self.typed(Tag::CRYPTOGRAPHIC_USAGE_MASK)
    }
    pub fn state(&self) -> Result<Option<State>, MessageError> {
        self.typed(Tag::STATE)
    }
    pub fn names(&self) -> Result<Vec<Name>, MessageError> {
        self.get_all(Tag::NAME).map(Attribute::get).collect()
    }

    /// The attributes that version `v` defines, in that version's wire form.
    fn items_for(&self, v: ProtocolVersion) -> impl Iterator<Item = Item> + '_ {
        self.list
            .iter()
            .filter(move |a| a.name.defined_in(v))
            .map(move |a| a.to_form(v))
    }

    /// Every attribute found in `fields`, whichever form the client used: a 2.x
    /// `Attributes` structure, a 1.x `TemplateAttribute`, or bare 1.x `Attribute` items
    /// (Locate filters arrive in all three, depending on the client). `None` when none of
    /// the forms is present.
    fn read_any(fields_of: &[Item], typed_tag: Tag) -> Result<Option<Self>, MessageError> {
        Self::read_any_in(fields_of, typed_tag, Tag::TEMPLATE_ATTRIBUTE)
    }

    /// [`Self::read_any`] where the 1.x form is a Template-Attribute structure tagged
    /// `template_tag` (Create Key Pair's Common / Private Key / Public Key Template-Attribute).
    fn read_any_in(
        fields_of: &[Item],
        typed_tag: Tag,
        template_tag: Tag,
    ) -> Result<Option<Self>, MessageError> {
        let mut found = false;
        let mut out = Self::new();
        for item in fields_of {
            if item.tag == typed_tag {
                found = true;
                for a in fields(item)? {
                    out.push(Attribute::from_v2(a)?);
                }
            } else if item.tag == template_tag {
                found = true;
                for a in fields(item)? {
                    match a.tag {
                        Tag::ATTRIBUTE => out.push(Attribute::from_v1(a)?),
                        Tag::NAME => out.template_names.push(Name::decode(a, V1)?),
                        _ => {}
                    }
                }
            } else if item.tag == Tag::ATTRIBUTE {
                found = true;
                out.push(Attribute::from_v1(item)?);
            }
        }
        Ok(found.then_some(out))
    }
}

/// An `Attributes` structure in the 2.x form with every attribute, whatever version defines
/// it: the lossless encoding for storage (`Tag::ATTRIBUTES`).
impl TtlvValue for Attributes {
    fn decode(item: &Item, _: ProtocolVersion) -> Result<Self, MessageError> {
        let mut out = Self::new();
        for a in fields(item)? {
            out.push(Attribute::from_v2(a)?);
        }
        Ok(out)
    }
    fn encode(&self, tag: Tag, _: ProtocolVersion) -> Item {
        Item::structure(tag, self.list.iter().map(Attribute::to_v2).collect())
    }
}

/// Field kinds for `kmip_struct!` that hold attributes.
pub(crate) mod kinds {
    use super::*;

    /// Attributes that 1.x sends in a `TemplateAttribute` and 2.x in the structure named by
    /// the field's tag (`Attributes`, `Common Attributes`, ...). Type `Option<Attributes>`.
    pub mod attrs {
        use super::*;
        pub fn read(
            _within: Tag,
            f: &[Item],
            tag: Tag,
            _v: ProtocolVersion,
        ) -> Result<Option<Attributes>, MessageError> {
            Attributes::read_any(f, tag)
        }
        pub fn write(
            value: &Option<Attributes>,
            tag: Tag,
            v: ProtocolVersion,
            out: &mut Vec<Item>,
        ) {
            write_in(value, tag, Tag::TEMPLATE_ATTRIBUTE, v, out)
        }

        /// 2.x: the structure tagged `tag`; 1.x: a Template-Attribute tagged `template_tag`.
        pub(super) fn write_in(
            value: &Option<Attributes>,
            tag: Tag,
            template_tag: Tag,
            v: ProtocolVersion,
            out: &mut Vec<Item>,
        ) {
            let Some(attrs) = value else { return };
            if v.uses_typed_attributes() {
                out.push(Item::structure(tag, attrs.items_for(v).collect()));
                return;
            }
            let names = attrs.template_names.iter().map(|n| n.encode(Tag::NAME, v));
            out.push(Item::structure(
                template_tag,
                names.chain(attrs.items_for(v)).collect(),
            ));
        }
    }

    /// Create Key Pair's attribute sets: 2.x `Common Attributes`, `Private Key Attributes`,
    /// `Public Key Attributes` (the field's tag); 1.x the matching `... Template-Attribute`.
    pub mod pair_attrs {
        use super::*;

        /// The 1.x Template-Attribute tag of a 2.x Create Key Pair attribute set.
        fn template_tag(tag: Tag) -> Tag {
            match tag {
                Tag::PRIVATE_KEY_ATTRIBUTES => Tag::PRIVATE_KEY_TEMPLATE_ATTRIBUTE,
                Tag::PUBLIC_KEY_ATTRIBUTES => Tag::PUBLIC_KEY_TEMPLATE_ATTRIBUTE,
                _ => Tag::COMMON_TEMPLATE_ATTRIBUTE,
            }
        }
        pub fn read(
            _within: Tag,
            f: &[Item],
            tag: Tag,
            _v: ProtocolVersion,
        ) -> Result<Option<Attributes>, MessageError> {
            Attributes::read_any_in(f, tag, template_tag(tag))
        }
        pub fn write(
            value: &Option<Attributes>,
            tag: Tag,
            v: ProtocolVersion,
            out: &mut Vec<Item>,
        ) {
            super::attrs::write_in(value, tag, template_tag(tag), v, out)
        }
    }

    /// Attributes that 1.x lists as bare `Attribute` items in the enclosing structure and
    /// 2.x wraps in an `Attributes` structure (Locate, Get Attributes response, Key Value).
    pub mod attr_list {
        use super::*;
        pub fn read(
            _within: Tag,
            f: &[Item],
            tag: Tag,
            _v: ProtocolVersion,
        ) -> Result<Option<Attributes>, MessageError> {
            Attributes::read_any(f, tag)
        }
        pub fn write(
            value: &Option<Attributes>,
            tag: Tag,
            v: ProtocolVersion,
            out: &mut Vec<Item>,
        ) {
            let Some(attrs) = value else { return };
            if v.uses_typed_attributes() {
                out.push(Item::structure(tag, attrs.items_for(v).collect()));
            } else {
                out.extend(attrs.items_for(v));
            }
        }
    }

    /// Attribute names: 1.x `Attribute Name` text strings, 2.x `Attribute Reference`s.
    pub mod attr_refs {
        use super::*;
        pub fn read(
            _within: Tag,
            f: &[Item],
            _tag: Tag,
            _v: ProtocolVersion,
        ) -> Result<Vec<AttributeName>, MessageError> {
            f.iter()
                .filter(|i| i.tag == Tag::ATTRIBUTE_NAME || i.tag == Tag::ATTRIBUTE_REFERENCE)
                .map(AttributeName::from_reference)
                .collect()
        }
        pub fn write(value: &[AttributeName], _tag: Tag, v: ProtocolVersion, out: &mut Vec<Item>) {
            out.extend(value.iter().map(|n| n.to_reference(v)));
        }
    }

    /// One attribute: 2.x wraps it in the field's tag (`New Attribute`, `Current
    /// Attribute`); 1.x sends a plain `Attribute` in the place of `New Attribute` and has no
    /// `Current Attribute`. Type `Option<Attribute>`.
    pub mod attr_one {
        use super::*;
        pub fn read(
            _within: Tag,
            f: &[Item],
            tag: Tag,
            _v: ProtocolVersion,
        ) -> Result<Option<Attribute>, MessageError> {
            if let Some(wrapper) = f.iter().find(|i| i.tag == tag) {
                let inner = fields(wrapper)?.first().ok_or(MessageError::MissingField {
                    within: tag,
                    field: Tag::ATTRIBUTE,
                })?;
                return Attribute::from_v2(inner).map(Some);
            }
            if tag == Tag::NEW_ATTRIBUTE {
                if let Some(a) = f.iter().find(|i| i.tag == Tag::ATTRIBUTE) {
                    return Attribute::from_v1(a).map(Some);
                }
            }
            Ok(None)
        }
        pub fn write(value: &Option<Attribute>, tag: Tag, v: ProtocolVersion, out: &mut Vec<Item>) {
            let Some(a) = value else { return };
            if v.uses_typed_attributes() {
                out.push(Item::structure(tag, vec![a.to_v2()]));
            } else if tag == Tag::NEW_ATTRIBUTE {
                out.push(a.to_v1());
            }
        }
    }

    /// The 1.x-only `Attribute` echoed in Add/Modify/Delete Attribute responses.
    pub mod attr_v1 {
        use super::*;
        pub fn read(
            _within: Tag,
            f: &[Item],
            _tag: Tag,
            _v: ProtocolVersion,
        ) -> Result<Option<Attribute>, MessageError> {
            f.iter()
                .find(|i| i.tag == Tag::ATTRIBUTE)
                .map(Attribute::from_v1)
                .transpose()
        }
        pub fn write(
            value: &Option<Attribute>,
            _tag: Tag,
            v: ProtocolVersion,
            out: &mut Vec<Item>,
        ) {
            if let (Some(a), false) = (value, v.uses_typed_attributes()) {
                out.push(a.to_v1());
            }
        }
    }
}

kmip_struct! {
    /// The Name attribute.
    pub struct Name {
        value: req String = NAME_VALUE,
        name_type: req NameType = NAME_TYPE,
    }
}

impl Name {
    pub fn text(value: impl Into<String>) -> Self {
        Self {
            value: value.into(),
            name_type: NameType::UninterpretedTextString,
        }
    }
}

kmip_struct! {
    /// The Link attribute.
    pub struct Link {
        link_type: req LinkType = LINK_TYPE,
        linked_object_identifier: req super::UniqueIdentifier = LINKED_OBJECT_IDENTIFIER,
    }
}

kmip_struct! {
    /// Cryptographic Parameters (attribute, and request field of Encrypt/Decrypt/MAC).
    #[derive(Default)]
    pub struct CryptographicParameters {
        block_cipher_mode: opt BlockCipherMode = BLOCK_CIPHER_MODE,
        padding_method: opt PaddingMethod = PADDING_METHOD,
        hashing_algorithm: opt HashingAlgorithm = HASHING_ALGORITHM,
        key_role_type: opt KeyRoleType = KEY_ROLE_TYPE,
        digital_signature_algorithm: opt DigitalSignatureAlgorithm = DIGITAL_SIGNATURE_ALGORITHM,
        cryptographic_algorithm: opt CryptographicAlgorithm = CRYPTOGRAPHIC_ALGORITHM,
        random_iv: opt bool = RANDOM_IV,
        iv_length: opt i32 = IV_LENGTH,
        tag_length: opt i32 = TAG_LENGTH,
        fixed_field_length: opt i32 = FIXED_FIELD_LENGTH,
        invocation_field_length: opt i32 = INVOCATION_FIELD_LENGTH,
        counter_length: opt i32 = COUNTER_LENGTH,
        initial_counter_value: opt i32 = INITIAL_COUNTER_VALUE,
        salt_length: opt i32 = SALT_LENGTH,
        mask_generator: opt MaskGenerator = MASK_GENERATOR,
        mask_generator_hashing_algorithm: opt HashingAlgorithm = MASK_GENERATOR_HASHING_ALGORITHM,
        p_source: opt ByteString = P_SOURCE,
        trailer_field: opt i32 = TRAILER_FIELD,
    }
}

impl CryptographicParameters {
    /// AES-CBC with PKCS#5 padding: the mode every KMIP server implements (MongoDB's
    /// default).
    pub fn aes_cbc_pkcs5() -> Self {
        Self {
            block_cipher_mode: Some(BlockCipherMode::Cbc),
            padding_method: Some(PaddingMethod::Pkcs5),
            cryptographic_algorithm: Some(CryptographicAlgorithm::Aes),
            ..Self::default()
        }
    }
}

kmip_struct! {
    /// The Digest attribute (KMIP 2.1 §4.21): a hash of the Key Material (of the Opaque Data
    /// Value, Certificate Value) in the named Key Format Type.
    pub struct Digest {
        hashing_algorithm: req HashingAlgorithm = HASHING_ALGORITHM,
        digest_value: opt ByteString = DIGEST_VALUE,
        key_format_type: opt KeyFormatType = KEY_FORMAT_TYPE,
    }
}

kmip_struct! {
    /// RNG Parameters (KMIP 2.1 §7.36), also the encoding of the Random Number Generator
    /// attribute (§4.46).
    pub struct RngParameters {
        rng_algorithm: req RngAlgorithm = RNG_ALGORITHM,
        cryptographic_algorithm: opt CryptographicAlgorithm = CRYPTOGRAPHIC_ALGORITHM,
        cryptographic_length: opt i32 = CRYPTOGRAPHIC_LENGTH,
        hashing_algorithm: opt HashingAlgorithm = HASHING_ALGORITHM,
        drbg_algorithm: opt DrbgAlgorithm = DRBG_ALGORITHM,
        recommended_curve: opt RecommendedCurve = RECOMMENDED_CURVE,
        fips186_variation: opt Fips186Variation = FIPS186_VARIATION,
        prediction_resistance: opt bool = PREDICTION_RESISTANCE,
    }
}

kmip_struct! {
    /// The Usage Limits attribute (KMIP 2.1 §4.59, §7.40). The Count is the server's: a
    /// client sends Total and Unit only, so it may be absent in a request.
    pub struct UsageLimits {
        total: req i64 = USAGE_LIMITS_TOTAL,
        count: opt i64 = USAGE_LIMITS_COUNT,
        unit: req UsageLimitsUnit = USAGE_LIMITS_UNIT,
    }
}

/// Attribute dates (Activation Date, ...) are Date-Time values.
pub type AttributeDate = DateTime;

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> Attributes {
        Attributes::new()
            .with(Tag::CRYPTOGRAPHIC_ALGORITHM, &CryptographicAlgorithm::Aes)
            .with(Tag::CRYPTOGRAPHIC_LENGTH, &256i32)
            .with(Tag::NAME, &Name::text("db-key"))
    }

    #[test]
    fn both_forms_read_into_the_same_attributes() {
        let attrs = sample();
        let mut v1 = Vec::new();
        kinds::attrs::write(
            &Some(attrs.clone()),
            Tag::ATTRIBUTES,
            ProtocolVersion::V1_2,
            &mut v1,
        );
        assert_eq!(v1[0].tag, Tag::TEMPLATE_ATTRIBUTE);
        let mut v2 = Vec::new();
        kinds::attrs::write(
            &Some(attrs.clone()),
            Tag::ATTRIBUTES,
            ProtocolVersion::V2_0,
            &mut v2,
        );
        assert_eq!(v2[0].tag, Tag::ATTRIBUTES);
        for form in [v1, v2] {
            let back = kinds::attrs::read(Tag::REQUEST_PAYLOAD, &form, Tag::ATTRIBUTES, V1)
                .expect("decodes")
                .expect("present");
            assert_eq!(back, attrs);
            assert_eq!(back.cryptographic_length().expect("int"), Some(256));
            assert_eq!(back.names().expect("names")[0].value, "db-key");
        }
    }

    #[test]
    fn attributes_newer_than_the_version_are_not_written() {
        // Object Group Member (2.0) must not reach a 1.x client, nor Key Value Present (1.2)
        // a 1.0 client.
        let attrs = sample()
            .with(Tag::KEY_VALUE_PRESENT, &true)
            .with(Tag::CRYPTOGRAPHIC_USAGE_MASK, &CryptographicUsageMask(12));
        let mut out = Vec::new();
        kinds::attr_list::write(
            &Some(attrs),
            Tag::ATTRIBUTES,
            ProtocolVersion::V1_0,
            &mut out,
        );
        let names: Vec<_> = out
            .iter()
            .map(|a| Attribute::from_v1(a).expect("v1 form").name.to_text())
            .collect();
        assert_eq!(
            names,
            [
                "Cryptographic Algorithm",
                "Cryptographic Length",
                "Name",
                "Cryptographic Usage Mask"
            ]
        );
    }

    #[test]
    fn fields_that_became_attributes_in_2_0_are_not_1_x_attributes() {
        let kft = AttributeName::Standard(Tag::KEY_FORMAT_TYPE);
        assert!(!kft.defined_in(ProtocolVersion::V1_4));
        assert!(kft.defined_in(ProtocolVersion::V2_0));
        let attrs = sample().with(Tag::KEY_FORMAT_TYPE, &crate::spec::KeyFormatType::Raw);
        let mut out = Vec::new();
        kinds::attr_list::write(&Some(attrs), Tag::ATTRIBUTES, V1, &mut out);
        assert_eq!(out.len(), 3, "Key Format Type is left out for 1.4");
    }

    #[test]
    fn custom_attributes_map_to_vendor_attributes() {
        let a = Attribute::custom("x-colour", Value::TextString("blue".into()));
        let v2 = a.to_v2();
        assert_eq!(v2.tag, Tag::ATTRIBUTE);
        assert!(v2.child(Tag::VENDOR_IDENTIFICATION).is_some());
        assert_eq!(Attribute::from_v2(&v2).expect("vendor attribute"), a);
        assert_eq!(Attribute::from_v1(&a.to_v1()).expect("v1"), a);
    }
}
