//! Attribute operations (Get Attributes, Get Attribute List, Add/Modify/Delete/Set
//! Attribute) and Locate.

use kmip::message::payloads::*;
use kmip::message::{Attribute, AttributeName, Attributes, DateTime, ResponsePayload, TtlvValue};
use kmip::spec::{ResultReason, Tag};
use kmip::ttlv::{self, Limits};
use kmip::{ProtocolVersion, Value};

use super::object::{index_pair, SERVER_ATTRIBUTES};
use super::{OpError, Request};
use crate::store::{LocateFilter, ObjectRecord};

/// Attributes an object may carry several instances of (KMIP 1.4 §3, 2.1 §4).
const MULTI_INSTANCE: [Tag; 6] = [
    Tag::NAME,
    Tag::OBJECT_GROUP,
    Tag::LINK,
    Tag::APPLICATION_SPECIFIC_INFORMATION,
    Tag::ALTERNATIVE_NAME,
    Tag::KEY_VALUE_LOCATION,
];

fn is_multi_instance(name: &AttributeName) -> bool {
    match name {
        AttributeName::Standard(tag) => MULTI_INSTANCE.contains(tag),
        AttributeName::Custom(_) => true,
    }
}

fn read_only(name: &AttributeName) -> Option<OpError> {
    match name {
        AttributeName::Standard(tag) if SERVER_ATTRIBUTES.contains(tag) => Some(OpError::new(
            ResultReason::AttributeReadOnly,
            format!("attribute {} is read-only", name.to_text()),
        )),
        // `y-` custom attributes belong to the server (KMIP 1.x §3.1, 2.x Vendor Attribute).
        AttributeName::Custom(n) if n.starts_with("y-") => Some(OpError::new(
            ResultReason::AttributeReadOnly,
            format!("attribute {n} is reserved for the server"),
        )),
        _ => None,
    }
}

pub(super) async fn get_attributes(
    req: &mut Request<'_>,
    r: &GetAttributesRequest,
) -> Result<ResponsePayload, OpError> {
    let uid = req.target(&r.unique_identifier)?;
    let object = req.load(&uid).await?;
    let attributes = if r.attribute_names.is_empty() {
        object.attributes.clone()
    } else {
        let mut selected = Attributes::new();
        for name in &r.attribute_names {
            for a in object.attributes.named(name) {
                selected.push(a.clone());
            }
        }
        selected
    };
    req.placeholder = Some(uid.clone());
    Ok(ResponsePayload::GetAttributes(GetAttributesResponse {
        unique_identifier: uid.into(),
        attributes: Some(attributes),
    }))
}

pub(super) async fn get_attribute_list(
    req: &mut Request<'_>,
    r: &GetAttributeListRequest,
) -> Result<ResponsePayload, OpError> {
    let uid = req.target(&r.unique_identifier)?;
    let object = req.load(&uid).await?;
    let mut names: Vec<AttributeName> = Vec::new();
    for a in object.attributes.iter() {
        if a.name.defined_in(req.version) && !names.contains(&a.name) {
            names.push(a.name.clone());
        }
    }
    req.placeholder = Some(uid.clone());
    Ok(ResponsePayload::GetAttributeList(
        GetAttributeListResponse {
            unique_identifier: uid.into(),
            attribute_names: names,
        },
    ))
}

fn required<'a>(a: &'a Option<Attribute>, what: &str) -> Result<&'a Attribute, OpError> {
    a.as_ref()
        .ok_or_else(|| OpError::new(ResultReason::InvalidMessage, format!("{what} is required")))
}

/// The response to an attribute change; 1.x echoes the attribute, 2.x only the object.
fn changed(
    req: &Request<'_>,
    uid: String,
    attribute: Option<Attribute>,
    payload: fn(AttributeChangeResponse) -> ResponsePayload,
) -> ResponsePayload {
    let attribute = attribute.filter(|_| !req.version.uses_typed_attributes());
    payload(AttributeChangeResponse {
        unique_identifier: uid.into(),
        attribute,
    })
}

pub(super) async fn add_attribute(
    req: &mut Request<'_>,
    r: &AddAttributeRequest,
) -> Result<ResponsePayload, OpError> {
    let uid = req.target(&r.unique_identifier)?;
    let attribute = required(&r.attribute, "the attribute to add")?;
    if let Some(e) = read_only(&attribute.name) {
        return Err(e);
    }
    let mut object = req.load_fresh(&uid).await?;
    let existing = object.attributes.named(&attribute.name).count();
    if existing > 0 && !is_multi_instance(&attribute.name) {
        return Err(OpError::new(
            ResultReason::AttributeSingleValued,
            format!(
                "{} is already set; use Modify or Set Attribute",
                attribute.name.to_text()
            ),
        ));
    }
    let mut added = attribute.clone();
    added.index = None;
    object.attributes.push(added.clone());
    object.touch(DateTime::now());
    req.update(&object, "attribute added").await?;
    added.index = (existing > 0).then_some(existing as i32);
    Ok(changed(
        req,
        uid,
        Some(added),
        ResponsePayload::AddAttribute,
    ))
}

pub(super) async fn modify_attribute(
    req: &mut Request<'_>,
    r: &ModifyAttributeRequest,
) -> Result<ResponsePayload, OpError> {
    let uid = req.target(&r.unique_identifier)?;
    let new = required(&r.attribute, "the new attribute")?;
    if let Some(e) = read_only(&new.name) {
        return Err(e);
    }
    let mut object = req.load_fresh(&uid).await?;
    // Which instance: 2.x names it by value (Current Attribute), 1.x by index (default 0).
    let positions: Vec<usize> = object
        .attributes
        .iter()
        .enumerate()
        .filter(|(_, a)| a.name == new.name)
        .map(|(i, _)| i)
        .collect();
    if positions.is_empty() {
        return Err(OpError::new(
            ResultReason::AttributeNotFound,
            format!("{} is not set; add it first", new.name.to_text()),
        ));
    }
    let nth = match &r.current_attribute {
        Some(current) => object
            .attributes
            .named(&new.name)
            .position(|a| a.value == current.value),
        None => Some(new.index.unwrap_or(0).max(0) as usize).filter(|i| *i < positions.len()),
    }
    .ok_or_else(|| {
        OpError::new(
            ResultReason::AttributeInstanceNotFound,
            format!("no such instance of {}", new.name.to_text()),
        )
    })?;
    let mut updated = Attributes::new();
    let mut seen = 0;
    for a in object.attributes.iter() {
        if a.name == new.name {
            if seen == nth {
                updated.push(Attribute {
                    index: None,
                    ..new.clone()
                });
            } else {
                updated.push(a.clone());
            }
            seen += 1;
        } else {
            updated.push(a.clone());
        }
    }
    object.attributes = updated;
    object.touch(DateTime::now());
    req.update(&object, "attribute modified").await?;
    let echoed = Attribute {
        index: (nth > 0).then_some(nth as i32),
        ..new.clone()
    };
    Ok(changed(
        req,
        uid,
        Some(echoed),
        ResponsePayload::ModifyAttribute,
    ))
}

pub(super) async fn delete_attribute(
    req: &mut Request<'_>,
    r: &DeleteAttributeRequest,
) -> Result<ResponsePayload, OpError> {
    let uid = req.target(&r.unique_identifier)?;
    let name = match (&r.current_attribute, r.attribute_names.first()) {
        (Some(current), _) => current.name.clone(),
        (None, Some(name)) => name.clone(),
        (None, None) => {
            return Err(OpError::new(
                ResultReason::InvalidMessage,
                "which attribute to delete is missing",
            ))
        }
    };
    if let Some(e) = read_only(&name) {
        return Err(e);
    }
    let mut object = req.load_fresh(&uid).await?;
    let instances: Vec<Attribute> = object.attributes.named(&name).cloned().collect();
    if instances.is_empty() {
        return Err(OpError::new(
            ResultReason::AttributeNotFound,
            format!("{} is not set", name.to_text()),
        ));
    }
    let nth = match &r.current_attribute {
        Some(current) => instances.iter().position(|a| a.value == current.value),
        None => {
            Some(r.attribute_index.unwrap_or(0).max(0) as usize).filter(|i| *i < instances.len())
        }
    }
    .ok_or_else(|| {
        OpError::new(
            ResultReason::AttributeInstanceNotFound,
            format!("no such instance of {}", name.to_text()),
        )
    })?;
    let mut seen = 0;
    object.attributes.retain(|a| {
        if a.name != name {
            return true;
        }
        seen += 1;
        seen - 1 != nth
    });
    object.touch(DateTime::now());
    req.update(&object, "attribute deleted").await?;
    let deleted = Attribute {
        index: (nth > 0).then_some(nth as i32),
        ..instances[nth].clone()
    };
    Ok(changed(
        req,
        uid,
        Some(deleted),
        ResponsePayload::DeleteAttribute,
    ))
}

pub(super) async fn set_attribute(
    req: &mut Request<'_>,
    r: &SetAttributeRequest,
) -> Result<ResponsePayload, OpError> {
    let uid = req.target(&r.unique_identifier)?;
    let new = required(&r.attribute, "the new attribute")?;
    if let Some(e) = read_only(&new.name) {
        return Err(e);
    }
    let mut object = req.load_fresh(&uid).await?;
    if is_multi_instance(&new.name) && object.attributes.named(&new.name).count() > 1 {
        return Err(OpError::new(
            ResultReason::MultiValuedAttribute,
            format!(
                "{} has several values; use Modify Attribute",
                new.name.to_text()
            ),
        ));
    }
    object.attributes.set(Attribute {
        index: None,
        ..new.clone()
    });
    object.touch(DateTime::now());
    req.update(&object, "attribute set").await?;
    Ok(changed(req, uid, None, ResponsePayload::SetAttribute))
}

/// A Locate filter the store cannot evaluate: every instance must be matched.
fn matches_in_memory(attributes: &Attributes, name: &AttributeName, wanted: &[&Attribute]) -> bool {
    let have: Vec<&Attribute> = attributes.named(name).collect();
    // Two dates are a range (KMIP 1.x Locate: "between the two values").
    if let [low, high] = wanted {
        if let (Value::DateTime(a), Value::DateTime(b)) = (&low.value, &high.value) {
            return have
                .iter()
                .any(|h| matches!(h.value, Value::DateTime(d) if *a <= d && d <= *b));
        }
    }
    wanted
        .iter()
        .all(|w| have.iter().any(|h| h.value == w.value))
}

pub(super) async fn locate(
    req: &mut Request<'_>,
    r: &LocateRequest,
) -> Result<ResponsePayload, OpError> {
    let filters = r.attributes.clone().unwrap_or_default();
    let mut filter = LocateFilter::default();
    let mut residual: Vec<(AttributeName, Vec<&Attribute>)> = Vec::new();
    let bad = |e: kmip::message::MessageError| OpError::invalid_field(e.to_string());
    for a in filters.iter() {
        match a.tag() {
            Some(Tag::OBJECT_TYPE) => {
                filter.object_type = Some(a.get::<kmip::spec::ObjectType>().map_err(bad)?.value())
            }
            Some(Tag::STATE) => {
                filter.state = Some(a.get::<kmip::spec::State>().map_err(bad)?.value())
            }
            Some(Tag::CRYPTOGRAPHIC_ALGORITHM) => {
                filter.cryptographic_algorithm = Some(
                    a.get::<kmip::spec::CryptographicAlgorithm>()
                        .map_err(bad)?
                        .value(),
                )
            }
            Some(Tag::CRYPTOGRAPHIC_LENGTH) => {
                filter.cryptographic_length = Some(a.get::<i32>().map_err(bad)?)
            }
            _ => match index_pair(a) {
                Some(pair) => filter.index.push(pair),
                None => match residual.iter_mut().find(|(n, _)| *n == a.name) {
                    Some((_, list)) => list.push(a),
                    None => residual.push((a.name.clone(), vec![a])),
                },
            },
        }
    }
    let offset = r.offset_items.unwrap_or(0).max(0) as usize;
    let limit = r.maximum_items.filter(|m| *m >= 0).map(|m| m as usize);
    let uids: Vec<String> = if residual.is_empty() {
        filter.offset = offset;
        filter.limit = limit;
        req.tx().await?.locate(&filter).await?
    } else {
        let candidates = req.tx().await?.locate(&filter).await?;
        let mut matched = Vec::new();
        for uid in candidates {
            let Some(record) = req.tx().await?.get(&uid).await? else {
                continue;
            };
            let attributes = stored_attributes(&record)?;
            if residual
                .iter()
                .all(|(name, wanted)| matches_in_memory(&attributes, name, wanted))
            {
                matched.push(uid);
            }
        }
        matched
            .into_iter()
            .skip(offset)
            .take(limit.unwrap_or(usize::MAX))
            .collect()
    };
    if let Some(first) = uids.first() {
        req.placeholder = Some(first.clone());
    }
    let located_items = Tag::LOCATED_ITEMS
        .is_defined_in(req.version)
        .then_some(uids.len() as i32);
    Ok(ResponsePayload::Locate(LocateResponse {
        located_items: located_items
            .filter(|_| r.maximum_items.is_some() || r.offset_items.is_some()),
        unique_identifiers: uids.into_iter().map(Into::into).collect(),
    }))
}

/// The attributes of a stored record, without unwrapping its material.
fn stored_attributes(record: &ObjectRecord) -> Result<Attributes, OpError> {
    let item = ttlv::decode(&record.attributes, &Limits::default())
        .map_err(|_| OpError::new(ResultReason::GeneralFailure, "stored object is unreadable"))?;
    Attributes::decode(&item, ProtocolVersion::V2_1)
        .map_err(|_| OpError::new(ResultReason::GeneralFailure, "stored object is unreadable"))
}
