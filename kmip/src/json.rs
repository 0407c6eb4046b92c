//! The KMIP JSON encoding (KMIP Profiles, "JSON Message Encoding"): parse and print.
//!
//! ```json
//! {"tag": "RequestMessage", "value": [
//!   {"tag": "BatchCount", "type": "Integer", "value": 1},
//!   {"tag": "CryptographicUsageMask", "type": "Integer", "value": "Encrypt Decrypt"}]}
//! ```
//!
//! Same names and text forms as the XML encoding ([`crate::xml`]); numbers travel as JSON
//! numbers, booleans as JSON booleans, everything else as strings.

use serde_json::{json, Map, Value as Json};

use crate::spec::Tag;
use crate::ttlv::{Item, ItemType, Value};
use crate::xml::{attribute_contexts, value_from_text, value_to_text, Placeholders};

/// Why a JSON document is not a KMIP item.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("JSON: {0}")]
pub struct JsonError(pub String);

/// Parses a JSON-encoded item (usually a whole message).
pub fn parse(text: &str, placeholders: &mut dyn Placeholders) -> Result<Item, JsonError> {
    let json: Json = serde_json::from_str(text).map_err(|e| JsonError(e.to_string()))?;
    from_json(&json, None, placeholders)
}

/// Prints an item tree as JSON.
pub fn print(item: &Item) -> String {
    to_json(item, None).to_string()
}

fn to_json(item: &Item, attribute_name: Option<&str>) -> Json {
    let tag = match item.tag.xml_name() {
        Some(name) => json!(name),
        None => json!(format!("{:#08x}", item.tag.0)),
    };
    let value = match &item.value {
        Value::Structure(children) => {
            let values: Vec<Json> = children
                .iter()
                .zip(attribute_contexts(children))
                .map(|(child, context)| to_json(child, context))
                .collect();
            return json!({ "tag": tag, "value": values });
        }
        Value::LongInteger(v) => json!(v),
        Value::Interval(v) => json!(v),
        Value::Boolean(v) => json!(v),
        // An Integer prints as text only when it is a mask written by names.
        Value::Integer(v) => match value_to_text(item, attribute_name) {
            text if text == v.to_string() => json!(v),
            text => json!(text),
        },
        _ => json!(value_to_text(item, attribute_name)),
    };
    json!({ "tag": tag, "type": item.value.item_type().name(), "value": value })
}

fn from_json(
    json: &Json,
    attribute_name: Option<&str>,
    placeholders: &mut dyn Placeholders,
) -> Result<Item, JsonError> {
    let object: &Map<String, Json> = json
        .as_object()
        .ok_or_else(|| JsonError(format!("expected an object, found {json}")))?;
    let tag_text = object
        .get("tag")
        .and_then(Json::as_str)
        .ok_or_else(|| JsonError("an item without a \"tag\"".into()))?;
    let tag = Tag::from_xml_name(tag_text)
        .ok_or_else(|| JsonError(format!("unknown tag {tag_text:?}")))?;
    let item_type = match object.get("type") {
        None => ItemType::Structure,
        Some(t) => t
            .as_str()
            .and_then(ItemType::from_name)
            .ok_or_else(|| JsonError(format!("{tag_text}: unknown type {t}")))?,
    };
    let value = object
        .get("value")
        .ok_or_else(|| JsonError(format!("{tag_text}: no \"value\"")))?;
    if item_type == ItemType::Structure {
        let children = value.as_array().ok_or_else(|| {
            JsonError(format!("{tag_text}: a structure's value must be an array"))
        })?;
        let mut items = Vec::with_capacity(children.len());
        let mut name: Option<String> = None;
        for child in children {
            let child_tag = child.get("tag").and_then(Json::as_str);
            if child_tag == Some("AttributeName") {
                name = child.get("value").and_then(Json::as_str).map(str::to_owned);
            }
            let context = (child_tag == Some("AttributeValue"))
                .then_some(name.as_deref())
                .flatten();
            items.push(from_json(child, context, placeholders)?);
        }
        return Ok(Item::structure(tag, items));
    }
    let text = match value {
        Json::String(s) => s.clone(),
        Json::Number(n) => n.to_string(),
        Json::Bool(b) => b.to_string(),
        other => return Err(JsonError(format!("{tag_text}: unexpected value {other}"))),
    };
    let value = value_from_text(placeholders, tag, item_type, &text, attribute_name)
        .map_err(|reason| JsonError(format!("{tag_text}: {reason}")))?;
    Ok(Item::new(tag, value))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::xml::StandIns;

    #[test]
    fn numbers_masks_and_names_use_the_profile_forms() {
        let item = Item::structure(
            Tag::TEMPLATE_ATTRIBUTE,
            vec![
                Item::integer(Tag::BATCH_COUNT, 2),
                Item::integer(Tag::CRYPTOGRAPHIC_USAGE_MASK, 12),
                Item::enumeration(Tag::CRYPTOGRAPHIC_ALGORITHM, 3),
                Item::boolean(Tag::SENSITIVE, true),
                Item::bytes(Tag::DATA, vec![0xde, 0xad]),
                Item::text(Tag(0x540001), "vendor"),
            ],
        );
        let printed = print(&item);
        for expected in [
            r#"{"tag":"BatchCount","type":"Integer","value":2}"#,
            r#""value":"Encrypt Decrypt""#,
            r#""value":"AES""#,
            r#""value":true"#,
            r#""value":"dead""#,
            r#""tag":"0x540001""#,
        ] {
            assert!(printed.contains(expected), "{expected} not in {printed}");
        }
        assert_eq!(parse(&printed, &mut StandIns::default()), Ok(item));
    }

    #[test]
    fn malformed_json_is_an_error() {
        for bad in [
            "[]",
            "{\"tag\":\"BatchCount\",\"type\":\"Integer\"}",
            "{\"tag\":\"Nope\",\"type\":\"Integer\",\"value\":1}",
            "{\"tag\":\"BatchCount\",\"type\":\"Integer\",\"value\":[1]}",
            "{\"tag\":\"RequestMessage\",\"value\":5}",
            "not json",
        ] {
            assert!(parse(bad, &mut StandIns::default()).is_err(), "{bad}");
        }
    }
}
