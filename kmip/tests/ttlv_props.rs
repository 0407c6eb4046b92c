//! Property tests of the TTLV codec: any item tree survives encode → decode, and no byte
//! sequence — random, truncated or corrupted — makes the decoder panic.

use kmip::ttlv::{decode, Item, Limits, TtlvError, Value};
use kmip::Tag;
use proptest::prelude::*;
use zeroize::Zeroizing;

fn tag() -> impl Strategy<Value = Tag> {
    prop_oneof![
        (0x420001u32..0x420160).prop_map(Tag),
        (0x540000u32..0x540010).prop_map(Tag),
    ]
}

fn leaf() -> impl Strategy<Value = Value> {
    prop_oneof![
        any::<i32>().prop_map(Value::Integer),
        any::<i64>().prop_map(Value::LongInteger),
        // Big Integers travel sign-extended to whole 8-byte words.
        prop::collection::vec(any::<[u8; 8]>(), 1..4).prop_map(|w| Value::BigInteger(w.concat())),
        any::<u32>().prop_map(Value::Enumeration),
        any::<bool>().prop_map(Value::Boolean),
        ".{0,40}".prop_map(Value::TextString),
        prop::collection::vec(any::<u8>(), 0..40)
            .prop_map(|b| Value::ByteString(Zeroizing::new(b))),
        any::<i64>().prop_map(Value::DateTime),
        any::<u32>().prop_map(Value::Interval),
        any::<i64>().prop_map(Value::DateTimeExtended),
    ]
}

fn item() -> impl Strategy<Value = Item> {
    let leaf = (tag(), leaf()).prop_map(|(tag, value)| Item { tag, value });
    leaf.prop_recursive(6, 64, 8, |inner| {
        (tag(), prop::collection::vec(inner, 0..8))
            .prop_map(|(tag, items)| Item::structure(tag, items))
    })
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(2000))]

    #[test]
    fn encode_then_decode_is_identity(item in item()) {
        let wire = item.to_ttlv();
        prop_assert_eq!(wire.len(), item.encoded_len());
        prop_assert_eq!(wire.len() % 8, 0);
        prop_assert_eq!(decode(&wire, &Limits::default()), Ok(item));
    }

    #[test]
    fn random_bytes_never_panic(bytes in prop::collection::vec(any::<u8>(), 0..512)) {
        let _ = decode(&bytes, &Limits::default());
    }

    #[test]
    fn every_truncation_is_an_error(item in item(), cut in any::<prop::sample::Index>()) {
        let wire = item.to_ttlv();
        let n = cut.index(wire.len());
        prop_assert!(decode(&wire[..n], &Limits::default()).is_err());
    }

    #[test]
    fn corrupted_bytes_never_panic(
        item in item(),
        flips in prop::collection::vec((any::<prop::sample::Index>(), any::<u8>()), 1..8),
    ) {
        let mut wire = item.to_ttlv();
        for (at, byte) in flips {
            let i = at.index(wire.len());
            wire[i] = byte;
        }
        let _ = decode(&wire, &Limits::default());
    }

    #[test]
    fn limits_are_enforced_for_any_tree(item in item(), max_depth in 1usize..6, max_items in 1usize..50) {
        let limits = Limits { max_depth, max_items, ..Limits::default() };
        match decode(&item.to_ttlv(), &limits) {
            Ok(decoded) => {
                prop_assert!(depth(&decoded) <= max_depth);
                prop_assert!(count(&decoded) <= max_items);
            }
            Err(TtlvError::TooDeep { .. }) => prop_assert!(depth(&item) > max_depth),
            Err(TtlvError::TooManyItems { .. }) => prop_assert!(count(&item) > max_items),
            Err(other) => prop_assert!(false, "unexpected {other}"),
        }
    }
}

fn depth(item: &Item) -> usize {
    match &item.value {
        Value::Structure(children) => 1 + children.iter().map(depth).max().unwrap_or(0),
        _ => 0,
    }
}

fn count(item: &Item) -> usize {
    1 + item.children().iter().map(count).sum::<usize>()
}
