//! Helpers for programs that relay KMIP requests they do not interpret (the gateway, the
//! sidecar): a KMIP failure answer for a request that could not be served, whether a
//! request may safely be sent twice, and what an answer says (for counting it).

use crate::contract::header_version;
use crate::message::{RequestMessage, ResponseBatchItem, ResponseMessage};
use crate::spec::{Operation, ResultReason, ResultStatus};
use crate::ttlv::{self, ItemType, RawItem};
use crate::{Limits, ProtocolVersion, Tag};

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

/// The operation (when present and known) and result status of every batch item of a TTLV
/// Response Message, read without decoding the payloads: what a relay counts, at a
/// fraction of a full decode's cost (no key material is copied). `None` when `answer` is
/// not one well-framed Response Message or a batch item lacks a known Result Status.
pub fn answer_outcomes(answer: &[u8]) -> Option<Vec<(Option<Operation>, ResultStatus)>> {
    let mut rest = answer;
    let message = RawItem::take(&mut rest)?;
    if message.tag != Tag::RESPONSE_MESSAGE
        || message.item_type != Some(ItemType::Structure)
        || !rest.is_empty()
    {
        return None;
    }
    let mut outcomes = Vec::with_capacity(1);
    let mut items = message.value;
    while !items.is_empty() {
        let item = RawItem::take(&mut items)?;
        if item.tag != Tag::BATCH_ITEM {
            continue;
        }
        if item.item_type != Some(ItemType::Structure) {
            return None;
        }
        let (mut operation, mut status) = (None, None);
        let mut fields = item.value;
        while !fields.is_empty() {
            let field = RawItem::take(&mut fields)?;
            if field.tag == Tag::OPERATION {
                operation = field.enumeration().and_then(Operation::from_value);
            } else if field.tag == Tag::RESULT_STATUS {
                status = field.enumeration().and_then(ResultStatus::from_value);
            }
        }
        outcomes.push((operation, status?));
    }
    Some(outcomes)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::message::payloads::GetRequest;
    use crate::message::{RequestPayload, UniqueIdentifier};

    fn get() -> RequestPayload {
        RequestPayload::Get(GetRequest {
            unique_identifier: Some(UniqueIdentifier::Text("k".into())),
            key_format_type: None,
            key_wrap_type: None,
            key_compression_type: None,
            key_wrapping_specification: None,
        })
    }

    #[test]
    fn denial_answers_every_batch_item_in_the_request_version() {
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

    fn outcomes_by_full_decode(answer: &[u8]) -> Vec<(Option<Operation>, ResultStatus)> {
        ResponseMessage::from_ttlv(answer, &Limits::default())
            .expect("TTLV")
            .batch_items
            .iter()
            .map(|item| {
                (
                    item.operation.and_then(Operation::from_value),
                    item.result_status,
                )
            })
            .collect()
    }

    #[test]
    fn answer_outcomes_agree_with_a_full_decode() {
        for version in [ProtocolVersion::V1_2, ProtocolVersion::V2_0] {
            let request = RequestMessage::new(version, vec![get(), get(), get()]);
            let failed = error_response(&request.to_ttlv(), ResultReason::ItemNotFound, "gone");
            let mixed = ResponseMessage::new(
                version,
                vec![
                    ResponseBatchItem::failure(
                        Some(Operation::Get.value()),
                        ResultReason::ItemNotFound,
                        "x",
                    ),
                    ResponseBatchItem::failure(None, ResultReason::InvalidMessage, "y"),
                ],
            )
            .to_ttlv();
            for answer in [failed, mixed] {
                let outcomes = answer_outcomes(&answer).expect("well framed");
                assert_eq!(outcomes, outcomes_by_full_decode(&answer));
                assert!(!outcomes.is_empty());
            }
        }
        let undecodable = error_response(b"garbage!", ResultReason::GeneralFailure, "x");
        assert_eq!(
            answer_outcomes(&undecodable),
            Some(vec![(None, ResultStatus::OperationFailed)])
        );
    }

    #[test]
    fn answer_outcomes_refuse_what_is_not_one_framed_response() {
        let request = RequestMessage::new(ProtocolVersion::V1_4, vec![get()]).to_ttlv();
        let answer = error_response(&request, ResultReason::ItemNotFound, "gone");
        assert!(answer_outcomes(&answer).is_some());
        // A request is not a response.
        assert_eq!(answer_outcomes(&request), None);
        // Cut short anywhere, or followed by more bytes.
        for len in [0, 3, 8, answer.len() / 2, answer.len() - 1] {
            assert_eq!(answer_outcomes(&answer[..len]), None, "cut at {len}");
        }
        let mut longer = answer.clone();
        longer.extend_from_slice(&[0; 8]);
        assert_eq!(answer_outcomes(&longer), None);
        // A length field that points past the end (or overflows) is refused, not trusted.
        let mut lying = answer.clone();
        lying[4..8].copy_from_slice(&u32::MAX.to_be_bytes());
        assert_eq!(answer_outcomes(&lying), None);
        assert_eq!(answer_outcomes(b"garbage!"), None);
    }
}
