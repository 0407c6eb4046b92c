//! The decoder never allocates more than a small multiple of the bytes it was given,
//! whatever lengths the input claims. Measured with a counting allocator; this file is its
//! own test binary so the allocator sees only this test's work.

use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::Cell;

use kmip::framing::KmipCodec;
use kmip::ttlv::{decode, Item, Limits};
use kmip::Tag;
use proptest::prelude::*;
use tokio_util::codec::Decoder;

struct Counting;

thread_local! {
    static ALLOCATED: Cell<usize> = const { Cell::new(0) };
}

// SAFETY: delegates to the system allocator; only adds bookkeeping in a thread-local Cell.
#[allow(unsafe_code)]
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        let _ = ALLOCATED.try_with(|a| a.set(a.get() + layout.size()));
        System.alloc(layout)
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        System.dealloc(ptr, layout)
    }
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        let _ = ALLOCATED.try_with(|a| a.set(a.get() + new_size));
        System.realloc(ptr, layout, new_size)
    }
}

#[global_allocator]
static GLOBAL: Counting = Counting;

/// Bytes allocated on this thread while running `f`.
fn allocated_by<T>(f: impl FnOnce() -> T) -> (T, usize) {
    let before = ALLOCATED.with(Cell::get);
    let out = f();
    (out, ALLOCATED.with(Cell::get) - before)
}

/// Worst case per input byte: a 16-byte Integer item becomes one `Item` in a `Vec`
/// (about 48 bytes with growth slack); 8× input plus a fixed allowance covers it.
fn budget(input_len: usize) -> usize {
    8 * input_len + 4096
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(3000))]

    #[test]
    fn hostile_headers_do_not_allocate_what_they_claim(
        tag in 0x420000u32..0x420100,
        item_type in 1u8..12,
        claimed in any::<u32>(),
        body in prop::collection::vec(any::<u8>(), 0..256),
    ) {
        let mut wire = tag.to_be_bytes()[1..].to_vec();
        wire.push(item_type);
        wire.extend_from_slice(&claimed.to_be_bytes());
        wire.extend_from_slice(&body);
        let (_, used) = allocated_by(|| decode(&wire, &Limits::default()));
        prop_assert!(used <= budget(wire.len()), "{used} bytes for {} input bytes", wire.len());

        let (_, used) = allocated_by(|| {
            let mut buf = bytes::BytesMut::from(&wire[..]);
            KmipCodec::default().decode(&mut buf)
        });
        prop_assert!(used <= budget(wire.len()), "framing: {used} bytes");
    }

    #[test]
    fn random_input_stays_within_budget(bytes in prop::collection::vec(any::<u8>(), 0..2048)) {
        let (_, used) = allocated_by(|| decode(&bytes, &Limits::default()));
        prop_assert!(used <= budget(bytes.len()));
    }
}

#[test]
fn a_message_of_many_tiny_items_stays_within_budget() {
    let items = vec![Item::integer(Tag(0x420020), 7); 60_000];
    let wire = Item::structure(Tag(0x420078), items).to_ttlv();
    let (decoded, used) = allocated_by(|| decode(&wire, &Limits::default()));
    assert!(decoded.is_ok());
    assert!(
        used <= budget(wire.len()),
        "{used} bytes for {} input bytes",
        wire.len()
    );
}
