//! Attribute operations (Get Attributes, Get Attribute List, Add/Modify/Delete/Set
//! Attribute) and Locate.

use kmip::message::payloads::*;
use kmip::message::{Attribute, AttributeName, Attributes, DateTime, ResponsePayload, UsageLimits};

use kmip::spec::{ResultReason, State, StorageStatusMask, Tag};
use kmip::Value;

use super::maintained;
use super::object::{index_pair, is_server_attribute, stored_attributes, KeyObject};
use super::{OpError, Request};
use crate::store::LocateFilter;

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
        AttributeName::Standard(tag) if is_server_attribute(*tag) => Some(OpError::new(
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

/// Attributes that "SHALL always have a value" and that a client may change but not delete
/// (KMIP 2.1 §4.23, §4.55), and dates that are never deleted (§4.1, §4.40, §4.41).
const NOT_DELETABLE: [Tag; 5] = [
    Tag::SENSITIVE,
    Tag::EXTRACTABLE,
    Tag::ACTIVATION_DATE,
    Tag::PROCESS_START_DATE,
    Tag::PROTECT_STOP_DATE,
];

/// Lifecycle dates that stop being changeable once they matter: the Activation Date after
/// Pre-Active (KMIP 2.1 §4.1); the Process Start and Protect Stop Dates outside Pre-Active
/// and Active, or once reached (§4.40, §4.41).
fn check_date_change(object: &KeyObject, name: &AttributeName) -> Result<(), OpError> {
    let AttributeName::Standard(tag) = name else {
        return Ok(());
    };
    let state = object.state();
    let reached = || -> bool {
        matches!(object.attributes.get(*tag).map(|a| &a.value),
            Some(Value::DateTime(d)) if *d <= DateTime::now().seconds())
    };
    let refused = match *tag {
        Tag::ACTIVATION_DATE => state != State::PreActive,
        Tag::PROCESS_START_DATE | Tag::PROTECT_STOP_DATE => {
            !matches!(state, State::PreActive | State::Active) || reached()
        }
        _ => false,
    };
    if refused {
        return Err(OpError::new(
            ResultReason::WrongKeyLifecycleState,
            format!(
                "{} of object {} cannot change in state {}",
                name.to_text(),
                object.uid,
                state.name()
            ),
        ));
    }
    Ok(())
}

/// A client's Usage Limits with the server's Count (KMIP 2.1 §4.59: a client never sets
/// it): what was already used of the current limits stays used. Other attributes pass.
fn with_server_count(new: &Attribute, current: Option<&Attribute>) -> Result<Attribute, OpError> {
    if new.tag() != Some(Tag::USAGE_LIMITS) {
        return Ok(new.clone());
    }
    let bad = |e: kmip::message::MessageError| OpError::invalid_field(e.to_string());
    let mut limits: UsageLimits = new.get().map_err(bad)?;
    let used = match current.map(Attribute::get::<UsageLimits>).transpose() {
        Ok(Some(old)) => old.total - old.count.unwrap_or(old.total),
        _ => 0,
    };
    limits.count = Some((limits.total - used).max(0));
    Ok(Attribute {
        index: new.index,
        ..Attribute::typed(Tag::USAGE_LIMITS, &limits)
    })
}

pub(super) async fn get_attributes(
    req: &mut Request<'_>,
    r: &GetAttributesRequest,
) -> Result<ResponsePayload, OpError> {
    let uid = req.target(&r.unique_identifier)?;
    let object = req.load(&uid).await?;
    // Naming none, the client gets what the server chooses: only attributes its version
    // defines and its clients can read (kmip `Attribute::volunteered_in`). A named
    // attribute is answered whenever the version defines it (the encoder checks that).
    let attributes = if r.attribute_names.is_empty() {
        let mut chosen = Attributes::new();
        for a in object.attributes.iter() {
            if a.volunteered_in(req.version) {
                chosen.push(a.clone());
            }
        }
        chosen
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
        // Every attribute the version defines: a name is read by every client (PyKMIP
        // 0.11 included), and the OASIS test cases expect e.g. Random Number Generator
        // and Short Unique Identifier here. Get Attributes naming none leaves out more.
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
    check_date_change(&object, &attribute.name)?;
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
    // KMIP 2.1 §4.32: an object's Names are unique; adding one it already has is Non Unique
    // Name Attribute (BL-M-8), not a second copy of it.
    if attribute.tag() == Some(Tag::NAME)
        && object
            .attributes
            .named(&attribute.name)
            .any(|a| a.value == attribute.value)
    {
        return Err(OpError::new(
            ResultReason::NonUniqueNameAttribute,
            format!("object {uid} already has this Name"),
        ));
    }
    let mut added = with_server_count(attribute, None)?;
    added.index = None;
    object.attributes.push(added.clone());
    maintained::follow_change(&mut object.attributes)?;
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
    check_date_change(&object, &new.name)?;
    let new = &with_server_count(new, object.attributes.named(&new.name).next())?;
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
    maintained::follow_change(&mut object.attributes)?;
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
    if matches!(name, AttributeName::Standard(tag) if NOT_DELETABLE.contains(&tag)) {
        return Err(OpError::new(
            ResultReason::AttributeReadOnly,
            format!("attribute {} cannot be deleted", name.to_text()),
        ));
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
    check_date_change(&object, &new.name)?;
    if is_multi_instance(&new.name) && object.attributes.named(&new.name).count() > 1 {
        return Err(OpError::new(
            ResultReason::MultiValuedAttribute,
            format!(
                "{} has several values; use Modify Attribute",
                new.name.to_text()
            ),
        ));
    }
    let new = with_server_count(new, object.attributes.named(&new.name).next())?;
    object.attributes.set(Attribute { index: None, ..new });
    maintained::follow_change(&mut object.attributes)?;
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
    // Which storage the client searches (KMIP 2.1 §6.1.28; 1.4 §4.9: on-line only when
    // omitted). Destroyed objects keep their metadata here but are not on-line.
    let mask = r
        .storage_status_mask
        .map_or(StorageStatusMask::ON_LINE_STORAGE.0, |m| m as u32);
    let want_online = mask & StorageStatusMask::ON_LINE_STORAGE.0 != 0;
    let want_destroyed = mask & StorageStatusMask::DESTROYED_STORAGE.0 != 0;
    // Destroyed objects are left out (or kept only) by the database, which also orders the
    // matches newest first ("descending order of object creation") and cuts the page, so
    // a Locate reads only the identifiers it answers with: no tenant can make a replica
    // load every candidate while holding one of the pool's connections.
    filter.destroyed = match (want_online, want_destroyed) {
        (true, true) => None,
        (true, false) => Some(false),
        (false, true) => Some(true),
        (false, false) => return Ok(located_response(req, r, Vec::new(), 0)),
    };
    filter.newest_first = true;
    let wants_count = r.maximum_items.is_some() || r.offset_items.is_some();
    let (uids, located) = if residual.is_empty() {
        let page = LocateFilter {
            offset,
            limit,
            ..filter.clone()
        };
        let uids = req.tx().await?.locate(&page).await?;
        let located = match wants_count {
            true => req.tx().await?.count(&filter).await?,
            false => uids.len(),
        };
        (uids, located)
    } else {
        // Conditions the index does not hold are checked on each candidate's attributes,
        // page by page of candidates, at most MAX_LOCATE_SCAN of them.
        let wanted = offset.saturating_add(limit.unwrap_or(usize::MAX));
        let mut matched = Vec::new();
        let mut located = 0;
        let mut scanned = 0;
        loop {
            let batch = LocateFilter {
                offset: scanned,
                limit: Some(LOCATE_SCAN_PAGE),
                ..filter.clone()
            };
            let candidates = req.tx().await?.locate(&batch).await?;
            scanned += candidates.len();
            for uid in &candidates {
                let Some(record) = req.tx().await?.get(uid).await? else {
                    continue;
                };
                let attributes = stored_attributes(&record)?;
                if residual
                    .iter()
                    .all(|(name, wanted)| matches_in_memory(&attributes, name, wanted))
                {
                    if located >= offset && matched.len() < wanted - offset {
                        matched.push(uid.clone());
                    }
                    located += 1;
                }
            }
            let enough = !wants_count && located >= wanted;
            if candidates.len() < LOCATE_SCAN_PAGE || enough {
                break;
            }
            if scanned >= MAX_LOCATE_SCAN {
                return Err(OpError::invalid_field(format!(
                    "Locate would examine more than {MAX_LOCATE_SCAN} objects for conditions \
                     that are not indexed; add an Object Type, State, Cryptographic Algorithm \
                     or Length, Name, Object Group or custom text attribute condition"
                )));
            }
        }
        (matched, located)
    };
    Ok(located_response(req, r, uids, located))
}

/// Candidates read per query when Locate has conditions the index does not hold.
const LOCATE_SCAN_PAGE: usize = 256;
/// Most candidates one Locate examines for such conditions.
pub(super) const MAX_LOCATE_SCAN: usize = 10_000;

fn located_response(
    req: &mut Request<'_>,
    r: &LocateRequest,
    uids: Vec<String>,
    located: usize,
) -> ResponsePayload {
    // One identifier returned: it becomes the ID Placeholder. Several: the placeholder is
    // emptied, so that batched operations naming no object fail rather than pick one
    // (§6.1.28). None: emptied too, for the same reason.
    req.placeholder = match uids.as_slice() {
        [only] => Some(only.clone()),
        _ => None,
    };
    let located_items = Tag::LOCATED_ITEMS
        .is_defined_in(req.version)
        .then_some(i32::try_from(located).unwrap_or(i32::MAX));
    ResponsePayload::Locate(LocateResponse {
        located_items: located_items
            .filter(|_| r.maximum_items.is_some() || r.offset_items.is_some()),
        unique_identifiers: uids.into_iter().map(Into::into).collect(),
    })
}
