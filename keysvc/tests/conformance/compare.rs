//! Compares the server's response with the test case's expected response, item tree
//! against item tree, binding placeholders as it goes.
//!
//! A case passes only if every batch item has the expected Operation, Result Status and
//! Result Reason and every expected field is present with an equal value, in the expected
//! order. What may differ is exactly what the test-case rules let a server vary — the
//! "Permitted Test Case Variations" of the KMIP profiles (quoted from the Symmetric Key
//! Lifecycle Profile v1.0 §4.7.1, `shared/kmip/spec/kmip-sym-key-profile-v1.0-os.md`; item
//! numbers below are that list's) — plus the placeholders:
//!
//! - placeholders: `$UNIQUE_IDENTIFIER_n` and the other named ones match any value of their
//!   type the first time (binding it) and must equal the binding afterwards; a new
//!   `$UNIQUE_IDENTIFIER_n` must not be an identifier already bound to another name;
//!   `$NOW±n` matches any Date-Time (items 1-6, 9);
//! - response header: Time Stamp (6) is not compared; Server Correlation Value is
//!   server-generated (KMIP 2.1 §9.10) — not compared, its absence is a note; the echo of the
//!   Client Correlation Value is a tolerated extra;
//! - Result Message (25) is not compared; a Result Reason on a success is a tolerated extra;
//! - Get Attributes / Get Attribute List: attributes are a multiset; attributes the test
//!   case lacks are tolerated extras (19, 21), as are Message Extensions (22); a Template
//!   Attribute (23) and an Attribute Index of 0 (24) may be present or absent;
//! - values that vary: key material of an object the server generated (7; compared by
//!   length), Digest Value and Hashing Algorithm (11, 13), the Key Format Type of a generated
//!   object (12), Data / IV / MAC / signature / tag outputs of a cryptographic operation on
//!   a generated key or with a server-generated IV, and RNG Retrieve data (8), Date-Time
//!   attributes whose value no request fixed (9), a literal Linked Object Identifier (10),
//!   Vendor Identification in Query (27); the contents (not the presence) of the Random
//!   Number Generator attribute of a generated object, which KMIP 2.1 §4.46 requires to
//!   describe the server's own generator: its fields are the server's, only the REQUIRED RNG
//!   Algorithm (§7.36) must be there. Such values must still have the expected type;
//! - Query lists (Operation, Object Type) are sets, extras tolerated (16, 17); Discover
//!   Versions may list more versions when the request listed none (26).
//!
//! Any other field the server adds is a difference (a Locate that finds one object too many
//! fails).

use std::collections::HashSet;

use kmip::spec::{Operation, ResultReason, ResultStatus};
use kmip::xml;
use kmip::{Item, Tag, Value};

use super::placeholders::{placeholder, Bindings, Placeholder};

/// One difference between expected and actual.
#[derive(Debug, Clone)]
pub struct Diff {
    pub path: String,
    pub text: String,
    /// Batch item Operation / Result Status / Result Reason: reported first.
    pub primary: bool,
}

impl std::fmt::Display for Diff {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}: {}", self.path, self.text)
    }
}

/// The result of comparing one response.
#[derive(Debug, Default)]
pub struct Outcome {
    pub diffs: Vec<Diff>,
    /// Tolerated fields the test case lacks ("operation: generic path").
    pub extras: Vec<String>,
    /// Expected values not compared exactly ("operation: generic path (why)").
    pub waived: Vec<String>,
    pub notes: Vec<String>,
}

impl Outcome {
    /// The difference to report: status/reason first, then traversal order.
    pub fn first(&self) -> Option<&Diff> {
        self.diffs
            .iter()
            .find(|d| d.primary)
            .or_else(|| self.diffs.first())
    }
}

/// Compares `actual` with `expected` for `request` (all three whole messages).
/// `fixed_dates`: the Date-Time values the case's requests write literally.
pub fn compare_response(
    expected: &Item,
    actual: &Item,
    request: &Item,
    bindings: &mut Bindings,
    fixed_dates: &HashSet<i64>,
) -> Outcome {
    note_generated(actual, bindings);
    let mut cmp = Cmp {
        b: std::mem::take(bindings),
        out: Outcome::default(),
        op: String::new(),
        generated: false,
        variable_output: false,
        fixed_dates,
    };
    cmp.message(expected, actual, request);
    *bindings = cmp.b;
    cmp.out
}

/// How the children of a structure are matched.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Ctx {
    Plain,
    Header,
    /// A payload whose children with these tags form a multiset (the rest are ordered);
    /// `extras_ok`: the server may list more than the test case.
    Sets {
        tags: &'static [Tag],
        extras_ok: bool,
    },
    /// The 2.x `Attributes` of a Get Attributes payload: all children form the multiset.
    AttrSet,
}

const ATTRIBUTE_LISTS: &[Tag] = &[
    Tag::ATTRIBUTE,
    Tag::ATTRIBUTE_NAME,
    Tag::ATTRIBUTE_REFERENCE,
];
const QUERY_LISTS: &[Tag] = &[Tag::OPERATION, Tag::OBJECT_TYPE];
const VERSION_LIST: &[Tag] = &[Tag::PROTOCOL_VERSION];

/// Operations whose new objects hold key material the server chose at random.
const GENERATING: [Operation; 5] = [
    Operation::Create,
    Operation::CreateKeyPair,
    Operation::ReKey,
    Operation::ReKeyKeyPair,
    Operation::CreateSplitKey,
];

/// Cryptographic operations whose output varies with the key (item 8).
const CRYPTO_OPS: [&str; 4] = ["Encrypt", "Decrypt", "MAC", "Sign"];

/// Outputs of a cryptographic operation (item 8).
const CRYPTO_OUTPUTS: [Tag; 5] = [
    Tag::DATA,
    Tag::IV_COUNTER_NONCE,
    Tag::MAC_DATA,
    Tag::SIGNATURE_DATA,
    Tag::AUTHENTICATED_ENCRYPTION_TAG,
];

/// Date-Time attributes that vary unless a request fixed them (item 9), spaces removed.
const VARIABLE_DATES: [&str; 14] = [
    "ActivationDate",
    "ArchiveDate",
    "CompromiseDate",
    "CompromiseOccurrenceDate",
    "DeactivationDate",
    "DestroyDate",
    "InitialDate",
    "LastChangeDate",
    "ProtectStartDate",
    "ProtectStopDate",
    "ProcessStartDate",
    "ProcessStopDate",
    "ValidityDate",
    "OriginalCreationDate",
];

struct Cmp<'a> {
    b: Bindings,
    out: Outcome,
    /// The current batch item's operation.
    op: String,
    /// The current batch item is about an object whose key the server generated.
    generated: bool,
    /// The current batch item's cryptographic output varies (item 8).
    variable_output: bool,
    fixed_dates: &'a HashSet<i64>,
}

/// Records the identifiers of objects the server generated in this response.
fn note_generated(actual: &Item, bindings: &mut Bindings) {
    for item in actual.children_with(Tag::BATCH_ITEM) {
        let generating = matches!(
            item.child(Tag::OPERATION).map(|o| &o.value),
            Some(Value::Enumeration(v)) if GENERATING.iter().any(|g| g.value() == *v)
        );
        let Some(payload) = item.child(Tag::RESPONSE_PAYLOAD).filter(|_| generating) else {
            continue;
        };
        for c in payload.children() {
            if let (
                Tag::UNIQUE_IDENTIFIER
                | Tag::PRIVATE_KEY_UNIQUE_IDENTIFIER
                | Tag::PUBLIC_KEY_UNIQUE_IDENTIFIER,
                Value::TextString(uid),
            ) = (c.tag, &c.value)
            {
                bindings.generated.insert(uid.clone());
            }
        }
    }
}

fn tag_name(tag: Tag) -> String {
    tag.xml_name()
        .map(str::to_owned)
        .unwrap_or_else(|| format!("0x{:06X}", tag.0))
}

fn op_name(item: &Item) -> Option<String> {
    match item.child(Tag::OPERATION).map(|o| &o.value) {
        Some(Value::Enumeration(v)) => Some(
            Operation::from_value(*v)
                .map(|o| o.xml_name().to_owned())
                .unwrap_or_else(|| format!("0x{v:08X}")),
        ),
        _ => None,
    }
}

fn text_of(item: Option<&Item>) -> Option<&str> {
    match item.map(|i| &i.value) {
        Some(Value::TextString(s)) => Some(s),
        _ => None,
    }
}

/// A path without `[...]`, so the same field aggregates across cases.
fn strip_indices(path: &str) -> String {
    let mut generic = String::new();
    let mut depth = 0;
    for c in path.chars() {
        match c {
            '[' => depth += 1,
            ']' => depth -= 1,
            _ if depth == 0 => generic.push(c),
            _ => {}
        }
    }
    generic
}

/// A value as the XML encoding writes it, in one line.
pub fn show(item: &Item, attr_name: Option<&str>) -> String {
    if let Some(p) = placeholder(&item.value) {
        return match p {
            Placeholder::Now(0) => "$NOW".into(),
            Placeholder::Now(d) => format!("$NOW{d:+}"),
            Placeholder::Named(n) => n,
        };
    }
    let printed = match (attr_name, &item.value) {
        (Some(name), v) if !matches!(v, Value::Structure(_)) => {
            let wrapped = Item::structure(
                Tag::ATTRIBUTE,
                vec![Item::text(Tag::ATTRIBUTE_NAME, name), item.clone()],
            );
            xml::print(&wrapped)
                .lines()
                .find(|l| l.trim_start().starts_with("<AttributeValue"))
                .unwrap_or_default()
                .to_owned()
        }
        _ => xml::print(item),
    };
    let one_line: String = printed.lines().map(str::trim).collect();
    let shown = match &item.value {
        Value::Structure(_) => one_line,
        v => {
            let raw = one_line
                .split_once("value=\"")
                .and_then(|(_, rest)| rest.rsplit_once('"'))
                .map(|(v, _)| v.to_owned())
                .unwrap_or(one_line.clone());
            match v {
                Value::TextString(_) => format!("{raw:?}"),
                Value::ByteString(b) if b.len() > 24 => {
                    format!("{}…({} bytes)", &raw[..48.min(raw.len())], b.len())
                }
                Value::ByteString(_) if raw.is_empty() => "(empty ByteString)".into(),
                _ => raw,
            }
        }
    };
    if shown.chars().count() > 240 {
        format!("{}…", shown.chars().take(240).collect::<String>())
    } else {
        shown
    }
}

fn byte_len(v: &Value) -> usize {
    match v {
        Value::ByteString(b) => b.len(),
        Value::BigInteger(b) => b.len(),
        _ => 0,
    }
}

impl Cmp<'_> {
    fn diff(&mut self, path: &str, text: String, primary: bool) {
        self.out.diffs.push(Diff {
            path: path.to_owned(),
            text,
            primary,
        });
    }

    fn extra(&mut self, path: &str, what: &str) {
        let op = if self.op.is_empty() { "-" } else { &self.op };
        let generic = strip_indices(path);
        self.out.extras.push(format!("{op}: {generic}/{what}"));
    }

    fn waive(&mut self, path: &str, why: &str) {
        let op = if self.op.is_empty() { "-" } else { &self.op };
        let generic = strip_indices(path);
        self.out.waived.push(format!("{op}: {generic} ({why})"));
    }

    fn message(&mut self, expected: &Item, actual: &Item, request: &Item) {
        if actual.tag != Tag::RESPONSE_MESSAGE {
            self.diff(
                "ResponseMessage",
                format!("server answered a {}", tag_name(actual.tag)),
                true,
            );
            return;
        }
        let exp_items: Vec<&Item> = expected.children_with(Tag::BATCH_ITEM).collect();
        let act_items: Vec<&Item> = actual.children_with(Tag::BATCH_ITEM).collect();
        let req_items: Vec<&Item> = request.children_with(Tag::BATCH_ITEM).collect();
        let count = format!(
            "expected {} batch items, the server answered {}",
            exp_items.len(),
            act_items.len()
        );
        for (i, e) in exp_items.iter().enumerate() {
            let path = format!("ResponseMessage/BatchItem[{i}]");
            match act_items.get(i) {
                Some(a) => self.batch_item(e, a, req_items.get(i).copied(), &path),
                None => self.diff(&path, count.clone(), true),
            }
        }
        if act_items.len() > exp_items.len() {
            self.diff("ResponseMessage", count, true);
        }
        self.op.clear();
        (self.generated, self.variable_output) = (false, false);
        match (
            expected.child(Tag::RESPONSE_HEADER),
            actual.child(Tag::RESPONSE_HEADER),
        ) {
            (Some(e), Some(a)) => {
                self.structure(e, a, "ResponseMessage/ResponseHeader", Ctx::Header)
            }
            (Some(_), None) => self.diff("ResponseMessage/ResponseHeader", "missing".into(), false),
            _ => {}
        }
    }

    fn batch_item(&mut self, e: &Item, a: &Item, request: Option<&Item>, path: &str) {
        self.op = op_name(e).unwrap_or_default();
        let payload = a.child(Tag::RESPONSE_PAYLOAD);
        self.generated = text_of(payload.and_then(|p| p.child(Tag::UNIQUE_IDENTIFIER)))
            .is_some_and(|uid| self.b.generated.contains(uid));
        let server_iv = payload.is_some_and(|p| p.child(Tag::IV_COUNTER_NONCE).is_some());
        self.variable_output = (CRYPTO_OPS.contains(&self.op.as_str())
            && (self.generated || server_iv))
            || self.op == "RNGRetrieve";

        // Status and reason first, with the server's own words when they differ.
        let reason_message = || {
            let reason = match a.child(Tag::RESULT_REASON).map(|r| &r.value) {
                Some(Value::Enumeration(v)) => ResultReason::from_value(*v)
                    .map(|r| r.xml_name().to_owned())
                    .unwrap_or_else(|| format!("0x{v:08X}")),
                _ => "no reason".into(),
            };
            match text_of(a.child(Tag::RESULT_MESSAGE)) {
                Some(m) => format!(" ({reason}: {m:?})"),
                None => format!(" ({reason})"),
            }
        };
        let status = |i: &Item| i.child(Tag::RESULT_STATUS).map(|s| s.value.clone());
        let same_status = status(e) == status(a);
        for tag in [Tag::OPERATION, Tag::RESULT_STATUS, Tag::RESULT_REASON] {
            let here = format!("{path}/{}", tag_name(tag));
            match (e.child(tag), a.child(tag)) {
                (Some(ev), Some(av)) if ev.value == av.value => {}
                (None, None) => {}
                // A reason on a failure the test case did not expect is covered by the
                // status difference; on a success it is OPTIONAL (KMIP 2.1 Table 399).
                (None, Some(_)) if same_status => self.extra(path, &tag_name(tag)),
                (None, Some(_)) => {}
                (Some(ev), av) => {
                    let got = av.map(|x| show(x, None)).unwrap_or("(absent)".into());
                    let success = Some(Value::Enumeration(ResultStatus::Success.value()));
                    let context = if tag == Tag::RESULT_STATUS && status(a) != success {
                        reason_message()
                    } else if tag == Tag::RESULT_REASON {
                        text_of(a.child(Tag::RESULT_MESSAGE))
                            .map(|m| format!(" ({m:?})"))
                            .unwrap_or_default()
                    } else {
                        String::new()
                    };
                    self.diff(
                        &here,
                        format!("expected {}, got {got}{context}", show(ev, None)),
                        true,
                    );
                }
            }
        }
        // A different status makes the rest of the batch item noise.
        if !same_status {
            return;
        }
        let request_payload = request.and_then(|r| r.child(Tag::REQUEST_PAYLOAD));
        let payload_ctx = match self.op.as_str() {
            "GetAttributes" | "GetAttributeList" => Ctx::Sets {
                tags: ATTRIBUTE_LISTS,
                extras_ok: true,
            },
            "Query" => Ctx::Sets {
                tags: QUERY_LISTS,
                extras_ok: true,
            },
            "DiscoverVersions" => Ctx::Sets {
                tags: VERSION_LIST,
                extras_ok: request_payload.is_none_or(|p| p.child(Tag::PROTOCOL_VERSION).is_none()),
            },
            _ => Ctx::Plain,
        };
        let skip = [
            Tag::OPERATION,
            Tag::RESULT_STATUS,
            Tag::RESULT_REASON,
            Tag::RESULT_MESSAGE,
        ];
        let rest = |i: &Item| -> Vec<Item> {
            i.children()
                .iter()
                .filter(|c| !skip.contains(&c.tag))
                .cloned()
                .collect()
        };
        self.ordered(&rest(e), &rest(a), path, Some(payload_ctx));
    }

    /// Compares two items with the same tag.
    fn item(&mut self, e: &Item, a: &Item, path: &str, ctx: Ctx, attr_name: Option<&str>) {
        match (&e.value, &a.value) {
            (Value::Structure(_), Value::Structure(_)) if self.own_generator(e, attr_name) => {
                match a.child(Tag::RNG_ALGORITHM).map(|r| &r.value) {
                    Some(Value::Enumeration(_)) => {
                        self.waive(path, "KMIP 2.1 §4.46, §7.36: the server's own generator")
                    }
                    _ => self.diff(
                        path,
                        format!("no RNG Algorithm (KMIP 2.1 §7.36), got {}", show(a, None)),
                        false,
                    ),
                }
            }
            (Value::Structure(_), Value::Structure(_)) => self.structure(e, a, path, ctx),
            (Value::Structure(_), _) | (_, Value::Structure(_)) => self.diff(
                path,
                format!(
                    "expected {}, got {} {}",
                    e.value.item_type().name(),
                    a.value.item_type().name(),
                    show(a, attr_name)
                ),
                false,
            ),
            _ => self.leaf(e, a, path, attr_name),
        }
    }

    /// Why the expected value of this leaf may vary (see the module docs), if it may.
    fn variation(&self, path: &str, e: &Item, attr_name: Option<&str>) -> Option<&'static str> {
        // The attribute this leaf is: the 1.x Attribute Name, or the 2.x tag.
        let attribute = match attr_name {
            Some(n) if e.tag == Tag::ATTRIBUTE_VALUE => n.replace(' ', ""),
            _ => tag_name(e.tag),
        };
        if self.generated && path.contains("/KeyMaterial") {
            return Some("item 7: key material of a server-generated object");
        }
        if path.contains("Digest") && matches!(e.tag, Tag::DIGEST_VALUE | Tag::HASHING_ALGORITHM) {
            return Some("items 11, 13: digest");
        }
        if self.generated && e.tag == Tag::KEY_FORMAT_TYPE {
            return Some("item 12: key format type of a server-generated object");
        }
        if self.variable_output && CRYPTO_OUTPUTS.contains(&e.tag) {
            return Some("item 8: cryptographic output that varies");
        }
        if let Value::DateTime(v) = e.value {
            if VARIABLE_DATES.contains(&attribute.as_str()) && !self.fixed_dates.contains(&v) {
                return Some("item 9: date not fixed by a request");
            }
        }
        if e.tag == Tag::LINKED_OBJECT_IDENTIFIER {
            return Some("item 10: linked object identifier");
        }
        if self.op == "Query" && e.tag == Tag::VENDOR_IDENTIFICATION {
            return Some("item 27: vendor identification");
        }
        None
    }

    /// Whether `e` is the Random Number Generator attribute of a generated object: KMIP 2.1
    /// §4.46 has the server describe the generator it used, so only the structure's one
    /// REQUIRED field (RNG Algorithm, §7.36) is checked — another generator is described
    /// with other fields (a DRBG by its DRBG Algorithm, an unnamed one by Unspecified alone).
    fn own_generator(&self, e: &Item, attr_name: Option<&str>) -> bool {
        self.generated
            && (e.tag == Tag::RANDOM_NUMBER_GENERATOR
                || (e.tag == Tag::ATTRIBUTE_VALUE && attr_name == Some("Random Number Generator")))
    }

    fn leaf(&mut self, e: &Item, a: &Item, path: &str, attr_name: Option<&str>) {
        let mismatch = |e: &Item, a: &Item| {
            format!(
                "expected {} {}, got {} {}",
                e.value.item_type().name(),
                show(e, attr_name),
                a.value.item_type().name(),
                show(a, attr_name)
            )
        };
        match placeholder(&e.value) {
            Some(Placeholder::Now(_)) => {
                if !matches!(a.value, Value::DateTime(_) | Value::DateTimeExtended(_)) {
                    self.diff(path, mismatch(e, a), false);
                }
            }
            Some(Placeholder::Named(name)) => {
                if a.value.item_type() != e.value.item_type() {
                    self.diff(path, mismatch(e, a), false);
                    return;
                }
                match self.b.get(&name) {
                    Some(bound) if *bound == a.value => {}
                    Some(bound) => {
                        let bound = show(&Item::new(a.tag, bound.clone()), attr_name);
                        let got = show(a, attr_name);
                        self.diff(
                            path,
                            format!("expected {name} (= {bound}), got {got}"),
                            false,
                        );
                    }
                    None => {
                        let is_id = matches!(a.value, Value::TextString(_))
                            && name.starts_with("$UNIQUE_IDENTIFIER");
                        if let (true, Some(other)) =
                            (is_id, self.b.bound_elsewhere(&name, &a.value))
                        {
                            let text = format!(
                                "expected a new identifier {name}, got {}, already {other}",
                                show(a, attr_name)
                            );
                            self.diff(path, text, false);
                        }
                        self.b.bind(&name, a.value.clone());
                    }
                }
            }
            None if e.value == a.value => {}
            None if e.value.item_type() != a.value.item_type() => {
                self.diff(path, mismatch(e, a), false)
            }
            None => match self.variation(path, e, attr_name) {
                Some(why) if why.starts_with("item 7") => {
                    if byte_len(&e.value) == byte_len(&a.value) {
                        self.waive(path, why);
                    } else {
                        let text = format!(
                            "expected {} bytes of server-generated material, got {}",
                            byte_len(&e.value),
                            byte_len(&a.value)
                        );
                        self.diff(path, text, false);
                    }
                }
                Some(why) => self.waive(path, why),
                None => {
                    let text = format!(
                        "expected {}, got {}",
                        show(e, attr_name),
                        show(a, attr_name)
                    );
                    self.diff(path, text, false);
                }
            },
        }
    }

    fn structure(&mut self, e: &Item, a: &Item, path: &str, ctx: Ctx) {
        match ctx {
            Ctx::AttrSet => self.multiset(e.children(), a.children(), path, true),
            Ctx::Sets { tags, extras_ok } => {
                let (em, eo): (Vec<Item>, Vec<Item>) = e
                    .children()
                    .iter()
                    .cloned()
                    .partition(|c| tags.contains(&c.tag));
                let (am, ao): (Vec<Item>, Vec<Item>) = a
                    .children()
                    .iter()
                    .cloned()
                    .partition(|c| tags.contains(&c.tag));
                self.ordered(&eo, &ao, path, None);
                self.multiset(&em, &am, path, extras_ok);
            }
            Ctx::Header => {
                let skip = [Tag::TIME_STAMP, Tag::SERVER_CORRELATION_VALUE];
                if e.child(Tag::SERVER_CORRELATION_VALUE).is_some()
                    && a.child(Tag::SERVER_CORRELATION_VALUE).is_none()
                {
                    self.out.notes.push(
                        "no Server Correlation Value in the response header (KMIP 2.1 §9.10: SHOULD)"
                            .into(),
                    );
                }
                let rest = |i: &Item| -> Vec<Item> {
                    i.children()
                        .iter()
                        .filter(|c| !skip.contains(&c.tag))
                        .cloned()
                        .collect()
                };
                self.ordered(&rest(e), &rest(a), path, None);
            }
            Ctx::Plain => self.ordered(e.children(), a.children(), path, None),
        }
    }

    /// Children matched by tag, the k-th expected with the k-th actual of that tag, in
    /// order. `payload_ctx`: the context for a Response Payload child.
    fn ordered(&mut self, exp: &[Item], act: &[Item], path: &str, payload_ctx: Option<Ctx>) {
        let mut used = vec![false; act.len()];
        let mut last: Option<(usize, Tag)> = None;
        let attr_name = text_of(exp.iter().find(|c| c.tag == Tag::ATTRIBUTE_NAME));
        let optional = |i: &Item| {
            i.tag == Tag::TEMPLATE_ATTRIBUTE
                || i.tag == Tag::MESSAGE_EXTENSION
                || (i.tag == Tag::ATTRIBUTE_INDEX && i.value == Value::Integer(0))
        };
        for (i, e) in exp.iter().enumerate() {
            let k = exp[..i].iter().filter(|c| c.tag == e.tag).count();
            let several = exp.iter().filter(|c| c.tag == e.tag).count() > 1;
            let here = if several || e.tag == Tag::BATCH_ITEM {
                format!("{path}/{}[{k}]", tag_name(e.tag))
            } else {
                format!("{path}/{}", tag_name(e.tag))
            };
            let found = act
                .iter()
                .enumerate()
                .filter(|(_, c)| c.tag == e.tag)
                .map(|(j, _)| j)
                .nth(k);
            let Some(j) = found else {
                if optional(e) {
                    self.waive(&here, "items 23, 24: may be omitted");
                } else {
                    let text = format!("expected {}, got (absent)", show(e, attr_name));
                    self.diff(&here, text, false);
                }
                continue;
            };
            used[j] = true;
            if let Some((prev, prev_tag)) = last {
                if j < prev {
                    let text = format!(
                        "out of order: the server wrote it before {}",
                        tag_name(prev_tag)
                    );
                    self.diff(&here, text, false);
                }
            }
            last = Some((j, e.tag));
            let child_ctx = match (e.tag, payload_ctx) {
                (Tag::RESPONSE_PAYLOAD, Some(p)) => p,
                (Tag::ATTRIBUTES, None) if self.op == "GetAttributes" => Ctx::AttrSet,
                _ => Ctx::Plain,
            };
            let name = (e.tag == Tag::ATTRIBUTE_VALUE)
                .then_some(attr_name)
                .flatten();
            self.item(e, &act[j], &here, child_ctx, name);
        }
        for (j, a) in act.iter().enumerate() {
            if used[j] {
                continue;
            }
            let tolerated = optional(a)
                || (path.ends_with("ResponseHeader") && a.tag == Tag::CLIENT_CORRELATION_VALUE);
            if tolerated {
                self.extra(path, &tag_name(a.tag));
            } else {
                let here = format!("{path}/{}", tag_name(a.tag));
                self.diff(
                    &here,
                    format!("unexpected field, got {}", show(a, None)),
                    false,
                );
            }
        }
    }

    /// Children compared as a multiset; `extras_ok`: items the test case lacks are tolerated.
    fn multiset(&mut self, exp: &[Item], act: &[Item], path: &str, extras_ok: bool) {
        let mut used = vec![false; act.len()];
        let label = |item: &Item| -> String {
            match text_of(item.child(Tag::ATTRIBUTE_NAME)) {
                Some(n) if item.tag == Tag::ATTRIBUTE => format!("Attribute[{n}]"),
                _ => tag_name(item.tag),
            }
        };
        let key = |item: &Item| -> (Tag, Option<String>) {
            (
                item.tag,
                text_of(item.child(Tag::ATTRIBUTE_NAME)).map(str::to_owned),
            )
        };
        for e in exp {
            let here = format!("{path}/{}", label(e));
            // An actual item that matches entirely, bindings included.
            let mut matched = false;
            for (j, a) in act.iter().enumerate() {
                if used[j] || a.tag != e.tag {
                    continue;
                }
                let mut trial = Cmp {
                    b: self.b.clone(),
                    out: Outcome::default(),
                    op: self.op.clone(),
                    generated: self.generated,
                    variable_output: self.variable_output,
                    fixed_dates: self.fixed_dates,
                };
                trial.item(e, a, &here, Ctx::Plain, None);
                if trial.out.diffs.is_empty() {
                    used[j] = true;
                    self.b = trial.b;
                    self.out.extras.extend(trial.out.extras);
                    self.out.waived.extend(trial.out.waived);
                    matched = true;
                    break;
                }
            }
            if matched {
                continue;
            }
            // Otherwise the closest candidate (the same attribute), for a precise
            // difference. A name, reference or list entry is its own identity: none.
            let keyed = !matches!(
                e.tag,
                Tag::ATTRIBUTE_NAME
                    | Tag::ATTRIBUTE_REFERENCE
                    | Tag::OPERATION
                    | Tag::OBJECT_TYPE
                    | Tag::PROTOCOL_VERSION
            );
            let candidate = act
                .iter()
                .enumerate()
                .find(|(j, a)| keyed && !used[*j] && key(a) == key(e));
            match candidate {
                Some((j, a)) => {
                    used[j] = true;
                    self.item(e, a, &here, Ctx::Plain, None);
                }
                None => {
                    let text = format!("expected {}, got (absent)", show(e, None));
                    self.diff(&here, text, false);
                }
            }
        }
        for (j, a) in act.iter().enumerate() {
            if used[j] {
                continue;
            }
            if extras_ok {
                let what = match text_of(a.child(Tag::ATTRIBUTE_NAME)) {
                    Some(n) => format!("Attribute({n})"),
                    None if matches!(a.value, Value::Structure(_)) => tag_name(a.tag),
                    None => format!("{}={}", tag_name(a.tag), show(a, None)),
                };
                self.extra(path, &what);
            } else {
                let here = format!("{path}/{}", label(a));
                self.diff(
                    &here,
                    format!("unexpected entry, got {}", show(a, None)),
                    false,
                );
            }
        }
    }
}
