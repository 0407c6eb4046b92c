//! Helpers for programs that relay KMIP requests they do not interpret (the gateway, the
//! sidecar): a KMIP failure answer for a request that could not be served, and whether a
//! request may safely be sent twice.

use crate::message::{RequestMessage, ResponseBatchItem, ResponseMessage};
use crate::spec::{Operation, ResultReason};
use crate::ttlv;
use crate::{Item, Limits, ProtocolVersion, Tag, Value};

/// A KMIP failure answer to `request` in the request's protocol version: one failed batch
/// item per request batch item (operation and batch item id echoed), or a single one when
/// the request does not decode.
pub fn error_response(request: &[u8], reason: ResultReason, message: &str) -> Vec<u8> {
    let limits = Limits {
        max_message_size: request.len(),
        ..Limits::default()
    };
    let response = match RequestMessage::from_ttlv(request, &limits) {
        Ok(parsed) if !parsed.batch_items.is_empty() => ResponseMessage::new(
            parsed.version(),
            parsed
                .batch_items
                .iter()
                .map(|item| ResponseBatchItem {
                    unique_batch_item_id: item.unique_batch_item_id.clone(),
                    ..ResponseBatchItem::failure(Some(item.operation), reason, message)
                })
                .collect(),
        ),
        _ => {
            let version = ttlv::decode(request, &limits)
                .map(|item| header_version(&item))
                .unwrap_or(ProtocolVersion::V1_0);
            ResponseMessage::new(
                version,
                vec![ResponseBatchItem::failure(None, reason, message)],
            )
        }
    };
    response.to_ttlv()
}

/// The protocol version in a request header, when it names a supported one.
fn header_version(item: &Item) -> ProtocolVersion {
    let int = |i: Option<&Item>| match i.map(|i| &i.value) {
        Some(Value::Integer(v)) => Some(*v),
        _ => None,
    };
    let pv = item
        .child(Tag::REQUEST_HEADER)
        .and_then(|h| h.child(Tag::PROTOCOL_VERSION));
    match (
        int(pv.and_then(|p| p.child(Tag::PROTOCOL_VERSION_MAJOR))),
        int(pv.and_then(|p| p.child(Tag::PROTOCOL_VERSION_MINOR))),
    ) {
        (Some(major), Some(minor)) if ProtocolVersion::new(major, minor).is_supported() => {
            ProtocolVersion::new(major, minor)
        }
        _ => ProtocolVersion::V1_0,
    }
}

/// Operations that change nothing on the server, so that sending one twice (after an
/// exchange failed mid-way) cannot be told from sending it once. RNGRetrieve qualifies:
/// the client never saw the first answer. Encrypt/Decrypt/MAC are stateless too, but are
/// left out until keysvc guarantees they never touch usage counters.
pub fn is_read_only_operation(op: Operation) -> bool {
    matches!(
        op,
        Operation::Get
            | Operation::GetAttributes
            | Operation::GetAttributeList
            | Operation::Locate
            | Operation::Query
            | Operation::DiscoverVersions
            | Operation::RngRetrieve
    )
}

/// Whether every batch item of a TTLV request is read-only (an undecodable request is not).
pub fn is_read_only(request: &[u8]) -> bool {
    let limits = Limits {
        max_message_size: request.len(),
        ..Limits::default()
    };
    match RequestMessage::from_ttlv(request, &limits) {
        Ok(message) => {
            !message.batch_items.is_empty()
                && message
                    .batch_items
                    .iter()
                    .all(|item| item.operation().is_some_and(is_read_only_operation))
        }
        Err(_) => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::message::payloads::GetRequest;
    use crate::message::{RequestPayload, UniqueIdentifier};
    use crate::spec::ResultStatus;

    #[test]
    fn denial_answers_every_batch_item_in_the_request_version() {
        let get = || {
            RequestPayload::Get(GetRequest {
                unique_identifier: Some(UniqueIdentifier::Text("k".into())),
                key_format_type: None,
                key_wrap_type: None,
                key_compression_type: None,
                key_wrapping_specification: None,
            })
        };
        let request = RequestMessage::new(ProtocolVersion::V2_0, vec![get(), get()]);
        let answer = error_response(&request.to_ttlv(), ResultReason::PermissionDenied, "denied");
        let response = ResponseMessage::from_ttlv(&answer, &Limits::default()).expect("TTLV");
        assert_eq!(response.version(), ProtocolVersion::V2_0);
        assert_eq!(response.batch_items.len(), 2);
        for item in &response.batch_items {
            assert_eq!(item.result_status, ResultStatus::OperationFailed);
            assert_eq!(item.result_reason, Some(ResultReason::PermissionDenied));
        }
    }

    #[test]
    fn undecodable_request_still_gets_a_kmip_answer() {
        let answer = error_response(b"garbage!", ResultReason::GeneralFailure, "x");
        let response = ResponseMessage::from_ttlv(&answer, &Limits::default()).expect("TTLV");
        assert_eq!(response.version(), ProtocolVersion::V1_0);
        assert_eq!(
            response.batch_items[0].result_reason,
            Some(ResultReason::GeneralFailure)
        );
    }
}
