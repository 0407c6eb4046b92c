//! Messages produced by the real PyKMIP 0.11 client (requests) and server engine
//! (responses), for KMIP 1.2, 1.4 and 2.0, decode into the typed messages with the values
//! the PyKMIP caller passed in, and re-encode byte for byte.
//!
//! The fixtures are `tests/pykmip/*.json`. When `PYKMIP_PYTHON` names a Python with PyKMIP
//! (`make test` sets it to the bootstrap venv), the test first re-runs the generator and
//! checks that PyKMIP still produces exactly the checked-in bytes.

use std::path::Path;
use std::process::Command;

use kmip::message::payloads::*;
use kmip::message::{
    Attributes, ByteString, CryptographicParameters, ManagedObject, RequestMessage, RequestPayload,
    ResponseMessage, ResponsePayload, UniqueIdentifier,
};
use kmip::{Item, Limits, ProtocolVersion, Tag, Value};
use serde_json::{json, Map, Value as Json};

fn fixture_dir() -> &'static Path {
    Path::new(concat!(env!("CARGO_MANIFEST_DIR"), "/tests/pykmip"))
}

fn load(name: &str) -> Vec<Json> {
    let path = fixture_dir().join(name);
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    serde_json::from_str(&text).expect("fixture is JSON")
}

#[test]
fn fixtures_are_what_pykmip_produces() {
    let Some(python) = std::env::var_os("PYKMIP_PYTHON") else {
        println!("PYKMIP_PYTHON not set: checked-in fixtures used without regeneration");
        return;
    };
    let out = Command::new(python)
        .arg(fixture_dir().join("gen_requests.py"))
        .arg("--check")
        .output()
        .expect("run the PyKMIP fixture generator");
    assert!(
        out.status.success(),
        "PyKMIP output differs from the checked-in fixtures:\n{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

fn version(fixture: &Json) -> ProtocolVersion {
    let text = fixture["kmip_version"].as_str().expect("kmip_version");
    let (major, minor) = text.split_once('.').expect("major.minor");
    ProtocolVersion::new(major.parse().expect("major"), minor.parse().expect("minor"))
}

fn bytes(fixture: &Json, key: &str) -> Vec<u8> {
    hex::decode(fixture[key].as_str().expect("hex string")).expect("valid hex")
}

/// Operation names as PyKMIP spells them (`Mac`, `Rekey`) compared loosely.
fn same_operation(pykmip: &str, ours: &str) -> bool {
    pykmip.eq_ignore_ascii_case(ours)
}

#[test]
fn pykmip_requests_decode_to_what_the_caller_asked_for() {
    let fixtures = load("requests.json");
    assert!(
        fixtures.len() >= 60,
        "only {} request fixtures",
        fixtures.len()
    );
    let mut per_version = std::collections::BTreeMap::<String, usize>::new();
    let mut failures = Vec::new();
    for f in &fixtures {
        let name = format!(
            "{} ({})",
            f["name"].as_str().unwrap_or("?"),
            f["kmip_version"]
        );
        let wire = bytes(f, "hex");
        let message = match RequestMessage::from_ttlv(&wire, &Limits::default()) {
            Ok(m) => m,
            Err(e) => {
                failures.push(format!("{name}: does not decode: {e}"));
                continue;
            }
        };
        *per_version
            .entry(f["kmip_version"].to_string())
            .or_default() += 1;
        assert_eq!(message.version(), version(f), "{name}");
        assert_eq!(
            i64::from(message.header.batch_count),
            f["batch_count"].as_i64().expect("count")
        );
        let ops: Vec<&str> = f["operations"]
            .as_array()
            .expect("operations")
            .iter()
            .map(|o| o.as_str().expect("name"))
            .collect();
        assert_eq!(ops.len(), message.batch_items.len(), "{name}");

        let mut facts = header_facts(&message);
        for (item, op) in message.batch_items.iter().zip(&ops) {
            let ours = item.operation().map(|o| o.xml_name()).unwrap_or("?");
            assert!(same_operation(op, ours), "{name}: {op} decoded as {ours}");
            match &item.payload {
                Ok(p) => payload_facts(p, &mut facts),
                Err(untyped) => {
                    // Only operations outside this library's list may stay untyped.
                    assert!(
                        matches!(
                            untyped.error,
                            kmip::message::MessageError::UnsupportedOperation(_)
                        ),
                        "{name}: {op} payload: {}",
                        untyped.error
                    );
                }
            }
        }
        // Every operation in PyKMIP's fixtures is typed (Create Key Pair and Sign were the last).
        for (key, expected) in f["expect"].as_object().expect("expect") {
            match facts.get(key) {
                Some(actual) if actual == expected => {}
                Some(actual) => {
                    failures.push(format!("{name}: {key} = {actual}, PyKMIP sent {expected}"))
                }
                None => failures.push(format!("{name}: {key} not found in the typed message")),
            }
        }

        // Byte-exact re-encoding, except where PyKMIP deviates from the spec (noted in the
        // fixture): there the typed message must at least survive its own round trip.
        let again = message.to_ttlv();
        if f.get("note").is_none() {
            if again != wire {
                failures.push(format!("{name}: re-encoding differs from PyKMIP's bytes"));
            }
        } else {
            let back = RequestMessage::from_ttlv(&again, &Limits::default()).expect("re-decodes");
            assert_eq!(back, message, "{name}");
        }
    }
    println!("PyKMIP requests decoded per version: {per_version:?}");
    assert!(
        failures.is_empty(),
        "{} failures:\n{}",
        failures.len(),
        failures.join("\n")
    );
    for v in ["\"1.2\"", "\"1.4\"", "\"2.0\""] {
        assert!(
            per_version.get(v).copied().unwrap_or(0) >= 20,
            "too few {v} fixtures"
        );
    }
}

#[test]
fn pykmip_server_responses_decode_and_re_encode_exactly() {
    let fixtures = load("responses.json");
    assert!(!fixtures.is_empty());
    for f in &fixtures {
        let name = format!(
            "{} ({})",
            f["name"].as_str().unwrap_or("?"),
            f["kmip_version"]
        );
        let wire = bytes(f, "hex");
        let message = ResponseMessage::from_ttlv(&wire, &Limits::default())
            .unwrap_or_else(|e| panic!("{name}: {e}"));
        assert_eq!(message.version(), version(f), "{name}");
        assert_eq!(message.to_ttlv(), wire, "{name}: re-encoding differs");
        let expect = f["expect"].as_object().expect("expect");
        assert_eq!(
            json!(message.header.time_stamp.seconds()),
            expect["time_stamp"],
            "{name}"
        );
        let item = &message.batch_items[0];
        assert_eq!(
            json!(item.result_status.value()),
            expect["result_status"],
            "{name}"
        );
        if let Some(reason) = expect.get("result_reason") {
            assert_eq!(
                json!(item.result_reason.map(|r| r.value())),
                *reason,
                "{name}"
            );
            assert_eq!(
                json!(item.result_message),
                expect["result_message"],
                "{name}"
            );
            continue;
        }
        let mut facts = Map::new();
        match item
            .payload
            .as_ref()
            .map(|p| p.as_ref().expect("typed payload"))
        {
            Some(ResponsePayload::DiscoverVersions(r)) => {
                facts.insert("protocol_versions".into(), versions(&r.protocol_versions));
            }
            Some(ResponsePayload::Query(r)) => {
                let ops: Vec<u32> = r.operations.iter().map(|o| o.value()).collect();
                facts.insert("operations".into(), json!(ops));
            }
            Some(ResponsePayload::Create(r)) => {
                facts.insert("object_type".into(), json!(r.object_type.value()));
                facts.insert("unique_identifier".into(), uid(&r.unique_identifier));
            }
            Some(ResponsePayload::Get(r)) => {
                facts.insert("object_type".into(), json!(r.object_type.value()));
                facts.insert("unique_identifier".into(), uid(&r.unique_identifier));
                object_facts(r.object.as_ref().expect("object"), &mut facts);
            }
            Some(ResponsePayload::Activate(r)) => {
                facts.insert("unique_identifier".into(), uid(&r.unique_identifier));
            }
            Some(ResponsePayload::Encrypt(r)) => {
                facts.insert("unique_identifier".into(), uid(&r.unique_identifier));
                facts.insert("data_hex".into(), hexs(r.data.as_ref()));
            }
            other => panic!("{name}: unexpected payload {other:?}"),
        }
        for (key, expected) in expect {
            if !["time_stamp", "result_status"].contains(&key.as_str()) {
                assert_eq!(facts.get(key), Some(expected), "{name}: {key}");
            }
        }
    }
}

// ------------------------------------------------------------ typed message → facts

fn uid(u: &UniqueIdentifier) -> Json {
    json!(u.as_text())
}

fn hexs(b: Option<&ByteString>) -> Json {
    json!(b.map(|b| hex::encode(&b[..])))
}

fn versions(v: &[ProtocolVersion]) -> Json {
    json!(v.iter().map(|v| [v.major, v.minor]).collect::<Vec<_>>())
}

fn header_facts(m: &RequestMessage) -> Map<String, Json> {
    let mut facts = Map::new();
    if let Some(credential) = m
        .header
        .authentication
        .as_ref()
        .and_then(|a| a.credentials.first())
    {
        facts.insert(
            "credential_type".into(),
            json!(credential.credential_type.value()),
        );
        let text = |tag| match credential.credential_value.child(tag).map(|i| &i.value) {
            Some(Value::TextString(s)) => json!(s),
            _ => Json::Null,
        };
        facts.insert("username".into(), text(Tag::USERNAME));
        facts.insert("password".into(), text(Tag::PASSWORD));
    }
    facts
}

fn put_uid(facts: &mut Map<String, Json>, u: &Option<UniqueIdentifier>) {
    if let Some(u) = u {
        facts.insert("unique_identifier".into(), uid(u));
    }
}

fn attribute_facts(attrs: Option<&Attributes>, facts: &mut Map<String, Json>) {
    let Some(attrs) = attrs else { return };
    if let Some(v) = attrs.object_type().expect("object type") {
        facts.insert("object_type".into(), json!(v.value()));
    }
    if let Some(v) = attrs.cryptographic_algorithm().expect("algorithm") {
        facts.insert("cryptographic_algorithm".into(), json!(v.value()));
    }
    if let Some(v) = attrs.cryptographic_length().expect("length") {
        facts.insert("cryptographic_length".into(), json!(v));
    }
    if let Some(v) = attrs.cryptographic_usage_mask().expect("mask") {
        facts.insert("cryptographic_usage_mask".into(), json!(v.0));
    }
    if let Some(n) = attrs.names().expect("names").first() {
        facts.insert("name".into(), json!(n.value));
        facts.insert("name_type".into(), json!(n.name_type.value()));
    }
    if let Some(d) = attrs
        .typed::<kmip::message::DateTime>(Tag::ACTIVATION_DATE)
        .expect("activation date")
    {
        facts.insert("activation_date".into(), json!(d.seconds()));
    }
}

fn parameter_facts(p: Option<&CryptographicParameters>, facts: &mut Map<String, Json>) {
    let Some(p) = p else { return };
    let mut put = |k: &str, v: Option<Json>| {
        if let Some(v) = v {
            facts.insert(k.into(), v);
        }
    };
    put(
        "block_cipher_mode",
        p.block_cipher_mode.map(|v| json!(v.value())),
    );
    put("padding_method", p.padding_method.map(|v| json!(v.value())));
    put(
        "hashing_algorithm",
        p.hashing_algorithm.map(|v| json!(v.value())),
    );
    put(
        "cryptographic_algorithm",
        p.cryptographic_algorithm.map(|v| json!(v.value())),
    );
    put("random_iv", p.random_iv.map(|v| json!(v)));
    put("iv_length", p.iv_length.map(|v| json!(v)));
    put("tag_length", p.tag_length.map(|v| json!(v)));
}

fn object_facts(object: &ManagedObject, facts: &mut Map<String, Json>) {
    if let ManagedObject::SecretData(s) = object {
        facts.insert("secret_data_type".into(), json!(s.secret_data_type.value()));
    }
    let block = object.key_block().expect("key block");
    facts.insert(
        "key_format_type".into(),
        json!(block.key_format_type.value()),
    );
    facts.insert(
        "key_material_hex".into(),
        json!(block.key_bytes().map(hex::encode)),
    );
    if let Some(a) = block.cryptographic_algorithm {
        facts
            .entry("cryptographic_algorithm")
            .or_insert(json!(a.value()));
    }
    if let Some(l) = block.cryptographic_length {
        facts.entry("cryptographic_length").or_insert(json!(l));
    }
}

fn attribute_change_facts(
    attribute: Option<&kmip::message::Attribute>,
    facts: &mut Map<String, Json>,
    key: &str,
) {
    let Some(a) = attribute else { return };
    facts.insert("attribute_name".into(), json!(a.name.to_text()));
    if let Some(i) = a.index {
        facts.insert("attribute_index".into(), json!(i));
    }
    match &a.value {
        Value::Boolean(b) => {
            facts.insert("attribute_value".into(), json!(b));
        }
        Value::Structure(_) => {
            let name: kmip::message::Name = a.get().expect("a Name");
            facts.insert(key.into(), json!(name.value));
        }
        _ => {}
    }
}

fn payload_facts(p: &RequestPayload, facts: &mut Map<String, Json>) {
    match p {
        RequestPayload::DiscoverVersions(r) => {
            facts.insert("protocol_versions".into(), versions(&r.protocol_versions));
        }
        RequestPayload::Query(r) => {
            let f: Vec<u32> = r.query_functions.iter().map(|q| q.value()).collect();
            facts.insert("query_functions".into(), json!(f));
        }
        RequestPayload::Create(r) => {
            facts.insert("object_type".into(), json!(r.object_type.value()));
            attribute_facts(r.attributes.as_ref(), facts);
        }
        RequestPayload::Register(r) => {
            attribute_facts(r.attributes.as_ref(), facts);
            facts.insert("object_type".into(), json!(r.object_type.value()));
            object_facts(r.object.as_ref().expect("object"), facts);
        }
        RequestPayload::Get(GetRequest {
            unique_identifier, ..
        })
        | RequestPayload::GetAttributeList(GetAttributeListRequest { unique_identifier })
        | RequestPayload::Activate(IdRequest { unique_identifier })
        | RequestPayload::Destroy(IdRequest { unique_identifier }) => {
            put_uid(facts, unique_identifier)
        }
        RequestPayload::GetAttributes(r) => {
            put_uid(facts, &r.unique_identifier);
            let names: Vec<String> = r.attribute_names.iter().map(|n| n.to_text()).collect();
            facts.insert("attribute_names".into(), json!(names));
            let tags: Vec<u32> = r
                .attribute_names
                .iter()
                .filter_map(|n| match n {
                    kmip::message::AttributeName::Standard(t) => Some(t.0),
                    _ => None,
                })
                .collect();
            facts.insert("attribute_reference_tags".into(), json!(tags));
        }
        RequestPayload::Revoke(r) => {
            put_uid(facts, &r.unique_identifier);
            facts.insert(
                "revocation_reason_code".into(),
                json!(r.revocation_reason.code.value()),
            );
            if let Some(m) = &r.revocation_reason.message {
                facts.insert("revocation_message".into(), json!(m));
            }
            if let Some(d) = r.compromise_occurrence_date {
                facts.insert("compromise_occurrence_date".into(), json!(d.seconds()));
            }
        }
        RequestPayload::Locate(r) => {
            facts.insert("maximum_items".into(), json!(r.maximum_items));
            if let Some(o) = r.offset_items {
                facts.insert("offset_items".into(), json!(o));
            }
            attribute_facts(r.attributes.as_ref(), facts);
        }
        RequestPayload::Encrypt(r) => {
            put_uid(facts, &r.unique_identifier);
            facts.insert("data_hex".into(), hexs(r.data.as_ref()));
            facts.insert(
                "iv_counter_nonce_hex".into(),
                hexs(r.iv_counter_nonce.as_ref()),
            );
            parameter_facts(r.cryptographic_parameters.as_ref(), facts);
        }
        RequestPayload::Decrypt(r) => {
            put_uid(facts, &r.unique_identifier);
            facts.insert("data_hex".into(), hexs(r.data.as_ref()));
            facts.insert(
                "iv_counter_nonce_hex".into(),
                hexs(r.iv_counter_nonce.as_ref()),
            );
            parameter_facts(r.cryptographic_parameters.as_ref(), facts);
        }
        RequestPayload::Mac(r) => {
            put_uid(facts, &r.unique_identifier);
            facts.insert("data_hex".into(), hexs(r.data.as_ref()));
            parameter_facts(r.cryptographic_parameters.as_ref(), facts);
        }
        RequestPayload::ReKey(r) => {
            put_uid(facts, &r.unique_identifier);
            if let Some(o) = r.offset {
                facts.insert("offset".into(), json!(o.0));
            }
            attribute_facts(r.attributes.as_ref(), facts);
        }
        RequestPayload::ModifyAttribute(r) => {
            put_uid(facts, &r.unique_identifier);
            attribute_change_facts(r.current_attribute.as_ref(), facts, "current_name");
            attribute_change_facts(r.attribute.as_ref(), facts, "new_name");
        }
        RequestPayload::DeleteAttribute(r) => {
            put_uid(facts, &r.unique_identifier);
            attribute_change_facts(r.current_attribute.as_ref(), facts, "current_name");
            if let Some(n) = r.attribute_names.first() {
                facts.insert("attribute_name".into(), json!(n.to_text()));
            }
            if let Some(i) = r.attribute_index {
                facts.insert("attribute_index".into(), json!(i));
            }
        }
        RequestPayload::SetAttribute(r) => {
            put_uid(facts, &r.unique_identifier);
            attribute_change_facts(r.attribute.as_ref(), facts, "new_name");
        }
        RequestPayload::CreateKeyPair(r) => {
            attribute_facts(r.common_attributes.as_ref(), facts);
            for (attrs, role) in [
                (r.public_key_attributes.as_ref(), "public"),
                (r.private_key_attributes.as_ref(), "private"),
            ] {
                let Some(attrs) = attrs else { continue };
                if let Some(n) = attrs.names().expect("names").first() {
                    facts.insert(format!("{role}_name"), json!(n.value));
                }
                if let Some(m) = attrs.cryptographic_usage_mask().expect("mask") {
                    facts.insert(format!("{role}_usage_mask"), json!(m.0));
                }
            }
        }
        RequestPayload::Sign(r) => {
            put_uid(facts, &r.unique_identifier);
            facts.insert("data_hex".into(), hexs(r.data.as_ref()));
            parameter_facts(r.cryptographic_parameters.as_ref(), facts);
        }
        RequestPayload::SignatureVerify(r) => {
            put_uid(facts, &r.unique_identifier);
            facts.insert("data_hex".into(), hexs(r.data.as_ref()));
            facts.insert("signature_hex".into(), hexs(r.signature_data.as_ref()));
            parameter_facts(r.cryptographic_parameters.as_ref(), facts);
        }
        other => panic!("no fact extraction for {:?}", other.operation()),
    }
}

/// The raw tree of a fixture is also a valid `Item` for the generic codec.
#[test]
fn pykmip_requests_are_valid_ttlv_trees() {
    for f in load("requests.json") {
        let wire = bytes(&f, "hex");
        let item = kmip::ttlv::decode(&wire, &Limits::default()).expect("TTLV");
        assert_eq!(item.tag, Tag::REQUEST_MESSAGE);
        assert_eq!(Item::to_ttlv(&item), wire);
    }
}
