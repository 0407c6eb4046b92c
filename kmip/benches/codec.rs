//! Decode + encode of the hottest messages: a Get request, and a Get response carrying a
//! 256-bit AES key — bytes → typed message → bytes, the work a server does per request.
//! Target (issue 2): ≤ 2 µs each. Run: `cargo bench -p kmip --bench codec`.

use criterion::{black_box, criterion_group, criterion_main, Criterion};
use kmip::message::payloads::{GetRequest, GetResponse};
use kmip::message::{
    KeyBlock, ManagedObject, RequestMessage, RequestPayload, ResponseBatchItem, ResponseMessage,
    ResponsePayload, SymmetricKey,
};
use kmip::spec::{CryptographicAlgorithm, KeyFormatType, ObjectType};
use kmip::{Limits, ProtocolVersion};

fn get_request() -> Vec<u8> {
    RequestMessage::new(
        ProtocolVersion::V1_4,
        vec![RequestPayload::Get(GetRequest {
            unique_identifier: Some("5b0b8c9e-3f5d-4b8e-9a51-0c1c8d0e7f42".into()),
            key_format_type: Some(KeyFormatType::Raw),
            key_wrap_type: None,
            key_compression_type: None,
            key_wrapping_specification: None,
        })],
    )
    .to_ttlv()
}

fn get_response() -> Vec<u8> {
    let key = SymmetricKey {
        key_block: KeyBlock::raw(vec![0x5a; 32], Some(CryptographicAlgorithm::Aes), Some(256)),
    };
    ResponseMessage::new(
        ProtocolVersion::V1_4,
        vec![ResponseBatchItem::success(ResponsePayload::Get(
            GetResponse {
                object_type: ObjectType::SymmetricKey,
                unique_identifier: "5b0b8c9e-3f5d-4b8e-9a51-0c1c8d0e7f42".into(),
                object: Some(ManagedObject::SymmetricKey(key)),
            },
        ))],
    )
    .to_ttlv()
}

fn codec(c: &mut Criterion) {
    let limits = Limits::default();
    let request = get_request();
    c.bench_function("get_request_decode_encode", |b| {
        b.iter(|| {
            let m = RequestMessage::from_ttlv(black_box(&request), &limits).expect("valid");
            black_box(m.to_ttlv())
        })
    });
    let response = get_response();
    c.bench_function("get_response_decode_encode", |b| {
        b.iter(|| {
            let m = ResponseMessage::from_ttlv(black_box(&response), &limits).expect("valid");
            black_box(m.to_ttlv())
        })
    });
    c.bench_function("get_response_ttlv_only", |b| {
        b.iter(|| {
            let item = kmip::ttlv::decode(black_box(&response), &limits).expect("valid");
            black_box(item.to_ttlv())
        })
    });
}

criterion_group!(benches, codec);
criterion_main!(benches);
