//! Fuzzes the whole inbound path: framing header, TTLV decode, typed request and response
//! decoding, and re-encoding of whatever decoded.
#![no_main]

use kmip::message::{RequestMessage, ResponseMessage};
use kmip::ttlv::{decode, Limits};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let limits = Limits::default();
    if let Ok(header) = <[u8; 8]>::try_from(data.get(..8).unwrap_or_default()) {
        let _ = kmip::ttlv::message_len(&header, limits.max_message_size);
    }
    if let Ok(item) = decode(data, &limits) {
        // Padding content is ignored on input, so compare trees, not bytes.
        assert_eq!(decode(&item.to_ttlv(), &limits).ok(), Some(item.clone()));
        let _ = RequestMessage::from_item(&item).map(|m| m.to_ttlv());
        let _ = ResponseMessage::from_item(&item).map(|m| m.to_ttlv());
        let _ = kmip::xml::print(&item);
    }
});
