//! The KMIP XML encoding (KMIP Profiles, "XML Message Encoding"): parse and print.
//!
//! ```xml
//! <CryptographicAlgorithm type="Enumeration" value="AES"/>
//! <AttributeValue type="Integer" value="Encrypt Decrypt"/>      <!-- a mask, by names -->
//! <TTLV tag="0x540001" type="TextString" value="vendor"/>       <!-- a tag with no name -->
//! ```
//!
//! Element names are tag names, `type` defaults to Structure, enumerations and masks are
//! written by name (hex for values without one). The enumeration of an `AttributeValue` is
//! the one of the attribute its sibling `AttributeName` names. The OASIS test cases also
//! hold placeholders (`$NOW-3600`, `$UNIQUE_IDENTIFIER_0`, `$KEY_MATERIAL_0`); where a
//! placeholder stands in a value that is not text, the caller's [`Placeholders`] decides.

use std::fmt::Write as _;

use quick_xml::events::{BytesStart, Event};
use quick_xml::Reader;
use time::format_description::well_known::Rfc3339;
use time::OffsetDateTime;
use zeroize::Zeroizing;

use crate::spec::{self, Tag};
use crate::ttlv::{Item, ItemType, Value};

/// Why an XML document is not a KMIP message.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("XML at byte {position}: {reason}")]
pub struct XmlError {
    pub position: u64,
    pub reason: String,
}

/// Resolves placeholders (values starting with `$`) in values that are not text strings.
pub trait Placeholders {
    /// The value standing for `placeholder` in an item of `item_type`, or `None` if unknown.
    fn resolve(&mut self, item_type: ItemType, placeholder: &str) -> Option<Value>;
}

/// Stand-ins for loading test cases without running them: `$NOW±n` is a fixed instant
/// plus n seconds, byte-string placeholders become their own name's bytes.
#[derive(Clone, Copy, Debug)]
pub struct StandIns {
    pub now: i64,
}

impl Default for StandIns {
    fn default() -> Self {
        // 2008-03-14T11:56:40Z, the spec's own Date-Time example.
        Self { now: 0x47DA_67F8 }
    }
}

impl Placeholders for StandIns {
    fn resolve(&mut self, item_type: ItemType, placeholder: &str) -> Option<Value> {
        match item_type {
            ItemType::DateTime => {
                parse_now_offset(placeholder).map(|d| Value::DateTime(self.now + d))
            }
            ItemType::ByteString => Some(Value::ByteString(Zeroizing::new(
                placeholder.as_bytes().to_vec(),
            ))),
            _ => None,
        }
    }
}

/// `$NOW`, `$NOW+60`, `$NOW-3600` → the offset in seconds.
pub fn parse_now_offset(placeholder: &str) -> Option<i64> {
    let rest = placeholder.strip_prefix("$NOW")?;
    if rest.is_empty() {
        return Some(0);
    }
    let (sign, digits) = rest.split_at(1);
    let n: i64 = digits.parse().ok()?;
    match sign {
        "+" => Some(n),
        "-" => Some(-n),
        _ => None,
    }
}

/// Parses a document whose root (`<KMIP>`, `<KmipTestCase>`, ...) holds messages, and
/// returns the messages in order. A document whose root is itself a message returns it.
pub fn parse_messages(
    xml: &str,
    placeholders: &mut dyn Placeholders,
) -> Result<Vec<Item>, XmlError> {
    let root = parse_tree(xml)?;
    let is_message = |e: &Element| e.name == "RequestMessage" || e.name == "ResponseMessage";
    let elements: Vec<&Element> = if is_message(&root) {
        vec![&root]
    } else {
        root.children.iter().collect()
    };
    let mut parser = Parser { placeholders };
    elements.into_iter().map(|e| parser.item(e, None)).collect()
}

/// Parses one element (a message or any item) into an item tree.
pub fn parse_item(xml: &str, placeholders: &mut dyn Placeholders) -> Result<Item, XmlError> {
    let root = parse_tree(xml)?;
    Parser { placeholders }.item(&root, None)
}

/// An XML element with the attributes KMIP uses.
#[derive(Debug)]
struct Element {
    name: String,
    tag_attr: Option<String>,
    type_attr: Option<String>,
    value_attr: Option<String>,
    position: u64,
    children: Vec<Element>,
}

fn err(position: u64, reason: impl Into<String>) -> XmlError {
    XmlError {
        position,
        reason: reason.into(),
    }
}

fn element(start: &BytesStart<'_>, position: u64) -> Result<Element, XmlError> {
    let name = String::from_utf8_lossy(start.name().as_ref()).into_owned();
    let mut e = Element {
        name,
        tag_attr: None,
        type_attr: None,
        value_attr: None,
        position,
        children: Vec::new(),
    };
    for attr in start.attributes() {
        let attr = attr.map_err(|x| err(position, x.to_string()))?;
        let value = attr
            .unescape_value()
            .map_err(|x| err(position, x.to_string()))?
            .into_owned();
        match attr.key.as_ref() {
            b"tag" => e.tag_attr = Some(value),
            b"type" => e.type_attr = Some(value),
            b"value" => e.value_attr = Some(value),
            _ => {}
        }
    }
    Ok(e)
}

/// Reads the whole document into elements; the first element is the root.
fn parse_tree(xml: &str) -> Result<Element, XmlError> {
    let mut reader = Reader::from_str(xml);
    reader.config_mut().trim_text(true);
    let mut stack: Vec<Element> = Vec::new();
    loop {
        let position = reader.buffer_position();
        let event = reader
            .read_event()
            .map_err(|x| err(position, x.to_string()))?;
        match event {
            Event::Start(start) => stack.push(element(&start, position)?),
            Event::Empty(start) => {
                let e = element(&start, position)?;
                match stack.last_mut() {
                    Some(parent) => parent.children.push(e),
                    None => return Ok(e),
                }
            }
            Event::End(_) => {
                let done = stack
                    .pop()
                    .ok_or_else(|| err(position, "unbalanced end tag"))?;
                match stack.last_mut() {
                    Some(parent) => parent.children.push(done),
                    None => return Ok(done),
                }
            }
            Event::Text(t) if !t.iter().all(u8::is_ascii_whitespace) => {
                return Err(err(position, "unexpected text content"));
            }
            Event::Eof => return Err(err(position, "document ended before its root closed")),
            _ => {}
        }
    }
}

struct Parser<'a> {
    placeholders: &'a mut dyn Placeholders,
}

impl Parser<'_> {
    /// `attribute_name`: the `AttributeName` sibling of an `AttributeValue`, which decides
    /// how its enumeration or mask names read.
    fn item(&mut self, e: &Element, attribute_name: Option<&str>) -> Result<Item, XmlError> {
        let tag = match &e.tag_attr {
            Some(hex) => parse_hex_u32(hex).map(Tag),
            None => Tag::from_xml_name(&e.name),
        }
        .ok_or_else(|| err(e.position, format!("unknown tag <{}>", e.name)))?;
        let item_type = match &e.type_attr {
            None => ItemType::Structure,
            Some(t) => ItemType::from_name(t)
                .ok_or_else(|| err(e.position, format!("unknown type {t:?} on <{}>", e.name)))?,
        };
        if item_type == ItemType::Structure {
            let mut children = Vec::with_capacity(e.children.len());
            let mut name: Option<&str> = None;
            for child in &e.children {
                if child.name == "AttributeName" {
                    name = child.value_attr.as_deref();
                }
                let context = (child.name == "AttributeValue").then_some(name).flatten();
                children.push(self.item(child, context)?);
            }
            return Ok(Item::structure(tag, children));
        }
        let text = e
            .value_attr
            .as_deref()
            .ok_or_else(|| err(e.position, format!("<{}> has no value", e.name)))?;
        let value = value_from_text(self.placeholders, tag, item_type, text, attribute_name)
            .map_err(|reason| err(e.position, format!("<{}>: {reason}", e.name)))?;
        Ok(Item::new(tag, value))
    }
}

/// A leaf value from its text form (shared by the XML and JSON encodings).
/// `attribute_name`: the `AttributeName` sibling when the item is an `AttributeValue`.
pub(crate) fn value_from_text(
    placeholders: &mut dyn Placeholders,
    tag: Tag,
    item_type: ItemType,
    text: &str,
    attribute_name: Option<&str>,
) -> Result<Value, String> {
    if text.starts_with('$') && item_type != ItemType::TextString {
        return placeholders
            .resolve(item_type, text)
            .ok_or_else(|| format!("unresolved placeholder {text}"));
    }
    // The tag whose enumeration/mask applies: the attribute's for an AttributeValue.
    let meaning = attribute_name.and_then(Tag::from_name).unwrap_or(tag);
    let bad = || format!("{text:?} is not a valid {}", item_type.name());
    Ok(match item_type {
        ItemType::Structure => return Err("a structure has no value".into()),
        ItemType::Integer => match spec::mask_for_tag(meaning) {
            Some(mask) => Value::Integer(mask.from_xml(text).ok_or_else(bad)? as i32),
            None => Value::Integer(parse_int(text).ok_or_else(bad)? as i32),
        },
        ItemType::LongInteger => Value::LongInteger(parse_int(text).ok_or_else(bad)?),
        ItemType::BigInteger => {
            let digits = text.strip_prefix("0x").unwrap_or(text);
            Value::BigInteger(hex::decode(digits).map_err(|_| bad())?)
        }
        ItemType::Enumeration => Value::Enumeration(enum_value(meaning, text).ok_or_else(bad)?),
        ItemType::Boolean => match text {
            "true" | "1" => Value::Boolean(true),
            "false" | "0" => Value::Boolean(false),
            _ => return Err(bad()),
        },
        ItemType::TextString => Value::TextString(text.to_owned()),
        ItemType::ByteString => {
            Value::ByteString(Zeroizing::new(hex::decode(text).map_err(|_| bad())?))
        }
        ItemType::DateTime => {
            Value::DateTime(parse_date_time(text).ok_or_else(bad)?.unix_timestamp())
        }
        ItemType::DateTimeExtended => {
            let t = parse_date_time(text).ok_or_else(bad)?;
            Value::DateTimeExtended((t.unix_timestamp_nanos() / 1000) as i64)
        }
        ItemType::Interval => Value::Interval(
            parse_int(text)
                .and_then(|v| u32::try_from(v).ok())
                .ok_or_else(bad)?,
        ),
    })
}

/// For each child of a structure, the `AttributeName` that applies to it when it is an
/// `AttributeValue` (1.x attributes name their value's meaning in the preceding sibling).
pub(crate) fn attribute_contexts(children: &[Item]) -> Vec<Option<&str>> {
    let mut name: Option<&str> = None;
    children
        .iter()
        .map(|child| {
            if let (Tag::ATTRIBUTE_NAME, Value::TextString(n)) = (child.tag, &child.value) {
                name = Some(n);
            }
            (child.tag == Tag::ATTRIBUTE_VALUE)
                .then_some(name)
                .flatten()
        })
        .collect()
}

fn parse_hex_u32(s: &str) -> Option<u32> {
    u32::from_str_radix(s.strip_prefix("0x")?, 16).ok()
}

fn parse_int(s: &str) -> Option<i64> {
    match s.strip_prefix("0x") {
        // Hex integers are written as the item's bits (0xFFFFFFFF is -1 for an Integer).
        Some(hex) if hex.len() <= 8 => u32::from_str_radix(hex, 16).ok().map(|v| v as i32 as i64),
        Some(hex) => u64::from_str_radix(hex, 16).ok().map(|v| v as i64),
        None => s.parse().ok(),
    }
}

/// An enumeration value by name, by hex, or — for fields whose values are tags (2.x
/// Attribute Reference) — by tag name.
fn enum_value(tag: Tag, text: &str) -> Option<u32> {
    if let Some(v) = parse_hex_u32(text) {
        return Some(v);
    }
    if let Some(def) = spec::enum_for_tag(tag) {
        if let Some(variant) = def.by_xml_name(text) {
            return Some(variant.value);
        }
    }
    if spec::enum_values_are_tags(tag) {
        return Tag::from_xml_name(text).map(|t| t.0);
    }
    None
}

fn parse_date_time(text: &str) -> Option<OffsetDateTime> {
    OffsetDateTime::parse(text, &Rfc3339).ok()
}

/// Prints an item tree in the KMIP XML encoding, indented by two spaces.
pub fn print(item: &Item) -> String {
    let mut out = String::new();
    print_item(item, None, 0, &mut out);
    out
}

fn print_item(item: &Item, attribute_name: Option<&str>, depth: usize, out: &mut String) {
    let indent = "  ".repeat(depth);
    let (open, close) = match item.tag.xml_name() {
        Some(name) => (name.to_owned(), name.to_owned()),
        None => (
            format!("TTLV tag=\"{:#08x}\"", item.tag.0),
            "TTLV".to_owned(),
        ),
    };
    if let Value::Structure(children) = &item.value {
        let _ = writeln!(out, "{indent}<{open}>");
        for (child, context) in children.iter().zip(attribute_contexts(children)) {
            print_item(child, context, depth + 1, out);
        }
        let _ = writeln!(out, "{indent}</{close}>");
        return;
    }
    let _ = writeln!(
        out,
        "{indent}<{open} type=\"{}\" value=\"{}\"/>",
        item.value.item_type().name(),
        quick_xml::escape::escape(value_to_text(item, attribute_name))
    );
}

/// A leaf value's text form (shared by the XML and JSON encodings).
pub(crate) fn value_to_text(item: &Item, attribute_name: Option<&str>) -> String {
    let meaning = attribute_name.and_then(Tag::from_name).unwrap_or(item.tag);
    match &item.value {
        Value::Structure(_) => String::new(),
        Value::Integer(v) => match spec::mask_for_tag(meaning) {
            Some(mask) => mask.to_xml(*v as u32),
            None => v.to_string(),
        },
        Value::LongInteger(v) => v.to_string(),
        Value::BigInteger(b) => hex::encode(b),
        Value::Enumeration(v) => enum_name(meaning, *v),
        Value::Boolean(v) => v.to_string(),
        Value::TextString(s) => s.clone(),
        Value::ByteString(b) => hex::encode(b.as_slice()),
        Value::DateTime(s) => format_date_time(i128::from(*s) * 1_000_000_000),
        Value::DateTimeExtended(us) => format_date_time(i128::from(*us) * 1000),
        Value::Interval(v) => v.to_string(),
    }
}

fn enum_name(tag: Tag, v: u32) -> String {
    if let Some(variant) = spec::enum_for_tag(tag).and_then(|d| d.by_value(v)) {
        return variant.xml_name.to_owned();
    }
    if spec::enum_values_are_tags(tag) {
        if let Some(name) = Tag(v).xml_name() {
            return name.to_owned();
        }
    }
    format!("{v:#010x}")
}

fn format_date_time(nanos: i128) -> String {
    OffsetDateTime::from_unix_timestamp_nanos(nanos)
        .ok()
        .and_then(|t| t.format(&Rfc3339).ok())
        .unwrap_or_else(|| "invalid".to_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    const CREATE: &str = r#"
<RequestMessage>
  <RequestHeader>
    <ProtocolVersion>
      <ProtocolVersionMajor type="Integer" value="1"/>
      <ProtocolVersionMinor type="Integer" value="4"/>
    </ProtocolVersion>
    <TimeStamp type="DateTime" value="$NOW-3600"/>
    <BatchCount type="Integer" value="1"/>
  </RequestHeader>
  <BatchItem>
    <Operation type="Enumeration" value="Create"/>
    <RequestPayload>
      <ObjectType type="Enumeration" value="SymmetricKey"/>
      <TemplateAttribute>
        <Attribute>
          <AttributeName type="TextString" value="Cryptographic Algorithm"/>
          <AttributeValue type="Enumeration" value="AES"/>
        </Attribute>
        <Attribute>
          <AttributeName type="TextString" value="Cryptographic Usage Mask"/>
          <AttributeValue type="Integer" value="Encrypt Decrypt"/>
        </Attribute>
      </TemplateAttribute>
      <TTLV tag="0x540001" type="ByteString" value="0102ff"/>
    </RequestPayload>
  </BatchItem>
</RequestMessage>"#;

    #[test]
    fn parses_names_masks_placeholders_and_unnamed_tags() {
        let item = parse_item(CREATE, &mut StandIns::default()).expect("parses");
        let header = item.child(Tag::REQUEST_HEADER).expect("header");
        assert_eq!(
            header.child(Tag::TIME_STAMP).map(|t| &t.value),
            Some(&Value::DateTime(StandIns::default().now - 3600))
        );
        let payload = item
            .child(Tag::BATCH_ITEM)
            .and_then(|b| b.child(Tag::REQUEST_PAYLOAD))
            .expect("payload");
        let attrs: Vec<_> = payload
            .child(Tag::TEMPLATE_ATTRIBUTE)
            .expect("template")
            .children()
            .iter()
            .map(|a| a.child(Tag::ATTRIBUTE_VALUE).expect("value").value.clone())
            .collect();
        // AES = 0x03; Encrypt (0x04) | Decrypt (0x08) = 12.
        assert_eq!(attrs, [Value::Enumeration(3), Value::Integer(12)]);
        assert_eq!(
            payload.child(Tag(0x540001)).map(|t| &t.value),
            Some(&Value::ByteString(Zeroizing::new(vec![1, 2, 0xff])))
        );
    }

    #[test]
    fn print_then_parse_is_identity() {
        let item = parse_item(CREATE, &mut StandIns::default()).expect("parses");
        let printed = print(&item);
        assert!(
            printed.contains(r#"<AttributeValue type="Integer" value="Encrypt Decrypt"/>"#),
            "{printed}"
        );
        assert!(printed.contains(r#"value="AES""#), "{printed}");
        assert_eq!(parse_item(&printed, &mut StandIns::default()), Ok(item));
    }

    #[test]
    fn bad_documents_are_errors() {
        for bad in [
            "<RequestMessage>",
            "<NoSuchTag type=\"Integer\" value=\"1\"/>",
            "<BatchCount type=\"Integer\" value=\"one\"/>",
            "<BatchCount type=\"Wobble\" value=\"1\"/>",
            "<Operation type=\"Enumeration\" value=\"Juggle\"/>",
            "<TimeStamp type=\"DateTime\" value=\"$LATER\"/>",
        ] {
            assert!(parse_item(bad, &mut StandIns::default()).is_err(), "{bad}");
        }
    }
}
