//! The placeholders of the OASIS test cases: recognisable sentinel values at parse time,
//! then binding (expected responses) and substitution (requests) on the item trees.
//!
//! `xml::parse_messages` keeps Text String placeholders (`$UNIQUE_IDENTIFIER_0`) as their
//! own text and asks a [`Placeholders`] for every other one. [`Sentinels`] answers
//! `$NOW±n` with a Date-Time far outside any real date (so the offset survives) and a Byte
//! String placeholder with its name behind a marker no test case contains.

use std::collections::{HashMap, HashSet};

use kmip::xml::{parse_now_offset, Placeholders};
use kmip::{Item, ItemType, Value};
use zeroize::Zeroizing;

/// `$NOW` at parse time: about 34,800 years before the epoch; `$NOW±n` is this ± n.
const NOW_SENTINEL: i64 = -(1 << 40);
/// Offsets recognised around the sentinel (±136 years).
const NOW_WINDOW: i64 = 1 << 32;
/// Marks a Byte String placeholder; the placeholder's name follows.
const BYTES_MARK: &[u8] = b"\x00\xffkmip-placeholder:";

/// The `Placeholders` used to load the test cases for running.
#[derive(Debug, Default)]
pub struct Sentinels;

impl Placeholders for Sentinels {
    fn resolve(&mut self, item_type: ItemType, placeholder: &str) -> Option<Value> {
        match item_type {
            ItemType::DateTime => {
                parse_now_offset(placeholder).map(|d| Value::DateTime(NOW_SENTINEL + d))
            }
            ItemType::DateTimeExtended => parse_now_offset(placeholder)
                .map(|d| Value::DateTimeExtended((NOW_SENTINEL + d) * 1_000_000)),
            ItemType::ByteString => {
                let mut bytes = BYTES_MARK.to_vec();
                bytes.extend_from_slice(placeholder.as_bytes());
                Some(Value::ByteString(Zeroizing::new(bytes)))
            }
            _ => None,
        }
    }
}

/// What a value of a parsed test case stands for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Placeholder {
    /// `$NOW±n`: the offset in seconds.
    Now(i64),
    /// Any other placeholder, by name (`$UNIQUE_IDENTIFIER_0`, `$DATA_0`, ...).
    Named(String),
}

/// The placeholder a parsed value stands for, if any.
pub fn placeholder(value: &Value) -> Option<Placeholder> {
    match value {
        Value::TextString(s) if s.starts_with('$') => Some(Placeholder::Named(s.clone())),
        Value::DateTime(v) => {
            let d = v - NOW_SENTINEL;
            (d.abs() < NOW_WINDOW).then_some(Placeholder::Now(d))
        }
        Value::DateTimeExtended(v) => {
            let d = v / 1_000_000 - NOW_SENTINEL;
            (d.abs() < NOW_WINDOW).then_some(Placeholder::Now(d))
        }
        Value::ByteString(b) => b
            .strip_prefix(BYTES_MARK)
            .map(|name| Placeholder::Named(String::from_utf8_lossy(name).into_owned())),
        _ => None,
    }
}

/// The sentinel of a Byte String placeholder (for rewriting expected responses).
pub fn byte_sentinel(name: &str) -> Value {
    let mut bytes = BYTES_MARK.to_vec();
    bytes.extend_from_slice(name.as_bytes());
    Value::ByteString(Zeroizing::new(bytes))
}

/// Placeholder name → the value the server returned where the test case wrote it.
#[derive(Debug, Default, Clone)]
pub struct Bindings {
    values: HashMap<String, Value>,
    /// Placeholders a request used before any response bound them.
    pub unbound_uses: Vec<String>,
    /// Identifiers of objects whose key material the server generated (Create, ...).
    pub generated: HashSet<String>,
    fresh: usize,
}

impl Bindings {
    pub fn get(&self, name: &str) -> Option<&Value> {
        self.values.get(name)
    }

    pub fn bind(&mut self, name: &str, value: Value) {
        self.values.insert(name.to_owned(), value);
    }

    /// The placeholder already bound to `value`, other than `name`.
    pub fn bound_elsewhere(&self, name: &str, value: &Value) -> Option<&str> {
        self.values
            .iter()
            .find(|(n, v)| n.as_str() != name && *v == value)
            .map(|(n, _)| n.as_str())
    }

    /// Replaces the placeholders of a request by their bound values and `$NOW±n` by the
    /// current time ± n. A Text String placeholder no response has bound (e.g.
    /// `$UNIQUE_IDENTIFIER_RANDOM_0`, an identifier the server never issued) becomes a fresh
    /// identifier, bound so later uses agree.
    pub fn substitute(&mut self, item: &mut Item, now: i64) {
        if let Value::Structure(children) = &mut item.value {
            for child in children {
                self.substitute(child, now);
            }
            return;
        }
        match placeholder(&item.value) {
            None => {}
            Some(Placeholder::Now(d)) => {
                item.value = match item.value {
                    Value::DateTimeExtended(_) => Value::DateTimeExtended((now + d) * 1_000_000),
                    _ => Value::DateTime(now + d),
                }
            }
            Some(Placeholder::Named(name)) => match self.values.get(&name) {
                Some(v) if v.item_type() == item.value.item_type() => item.value = v.clone(),
                _ => {
                    self.unbound_uses.push(name.clone());
                    if let Value::TextString(_) = item.value {
                        self.fresh += 1;
                        let fresh = Value::TextString(format!(
                            "never-issued-{}-{}",
                            name.trim_start_matches('$'),
                            self.fresh
                        ));
                        self.values.insert(name, fresh.clone());
                        item.value = fresh;
                    }
                    // A Byte String stays the sentinel: the request then carries bytes
                    // the server has never seen, and the step fails visibly.
                }
            },
        }
    }
}

/// Every Byte String placeholder in a tree, with the tag of the item that holds it.
pub fn byte_placeholders(item: &Item, out: &mut Vec<(String, kmip::Tag)>) {
    match &item.value {
        Value::Structure(children) => {
            for c in children {
                byte_placeholders(c, out);
            }
        }
        Value::ByteString(_) => {
            if let Some(Placeholder::Named(name)) = placeholder(&item.value) {
                out.push((name, item.tag));
            }
        }
        _ => {}
    }
}

/// The first item with this tag, depth first.
pub fn find_tag_mut(item: &mut Item, tag: kmip::Tag) -> Option<&mut Item> {
    if item.tag == tag {
        return Some(item);
    }
    match &mut item.value {
        Value::Structure(children) => children.iter_mut().find_map(|c| find_tag_mut(c, tag)),
        _ => None,
    }
}
