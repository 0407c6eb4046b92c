//! Typed KMIP messages: request/response headers, batch items and the payloads of the
//! operations this library types, read from and written to TTLV [`Item`] trees.
//!
//! ```text
//! RequestMessage { RequestHeader, BatchItem { Operation, UniqueBatchItemID?, RequestPayload }* }
//!        │ decode(version-aware)                         ▲ encode(for the header's version)
//!        ▼                                               │
//! RequestMessage { header, batch_items: [ RequestBatchItem { payload: Result<RequestPayload, _> } ] }
//! ```
//!
//! A batch item whose operation is unknown, or whose payload does not decode, does not
//! fail the message: it keeps its raw payload and the error, so a server can answer that
//! one item (`Operation Not Supported`, `Invalid Field`) and still serve the rest.

pub mod attributes;
pub(crate) mod codec;
pub mod objects;
pub mod payloads;

use std::fmt;

use crate::spec::{
    BatchErrorContinuationOption, CredentialType, Operation, ResultReason, ResultStatus, Tag,
};
use crate::ttlv::{self, Item, ItemType, Limits, TtlvError, Value};
use crate::ProtocolVersion;

pub use attributes::{
    Attribute, AttributeName, Attributes, CryptographicParameters, Digest, Link, Name,
    RngParameters, UsageLimits, CERTIFICATE_ISSUER_PARTS, CERTIFICATE_SUBJECT_PARTS, UNREADABLE_1X,
    UNREADABLE_2_0,
};
use codec::{fields, kmip_struct, wrong_type};
pub use codec::{ByteString, DateTime, Interval, TtlvValue};
pub use objects::{
    Certificate, KeyBlock, KeyMaterial, KeyValue, ManagedObject, OpaqueObject, PrivateKey,
    PublicKey, SecretData, SymmetricKey,
};
pub use payloads::{RequestPayload, ResponsePayload};

/// Why an item tree is not the KMIP message (or field) it should be.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[non_exhaustive]
pub enum MessageError {
    #[error(transparent)]
    Ttlv(#[from] TtlvError),
    #[error("{field} is required in {within}")]
    MissingField { within: Tag, field: Tag },
    #[error("{tag} must be {expected:?}, not {found:?}")]
    WrongType {
        tag: Tag,
        expected: ItemType,
        found: ItemType,
    },
    #[error("{value:#x} is not a valid value of {tag}")]
    InvalidEnumeration { tag: Tag, value: u32 },
    #[error("{tag}: {reason}")]
    InvalidValue { tag: Tag, reason: String },
    #[error("expected a {expected}, found {found}")]
    UnexpectedMessage { expected: Tag, found: Tag },
    #[error("operation {0:#x} is not supported")]
    UnsupportedOperation(u32),
}

impl MessageError {
    /// The Result Reason a server answers this error with — the one place that mapping lives.
    pub fn result_reason(&self) -> ResultReason {
        match self {
            Self::UnsupportedOperation(_) => ResultReason::OperationNotSupported,
            Self::WrongType { .. }
            | Self::InvalidEnumeration { .. }
            | Self::InvalidValue { .. } => ResultReason::InvalidField,
            Self::Ttlv(_) | Self::MissingField { .. } | Self::UnexpectedMessage { .. } => {
                ResultReason::InvalidMessage
            }
        }
    }
}

/// An Enumeration value kept as its number: for fields where extensions (`0x8xxxxxxx`) are
/// normal, or whose value set this library does not need to interpret.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct RawEnum(pub u32);

impl TtlvValue for RawEnum {
    fn decode(item: &Item, _: ProtocolVersion) -> Result<Self, MessageError> {
        match item.value {
            Value::Enumeration(v) => Ok(Self(v)),
            _ => Err(wrong_type(item, ItemType::Enumeration)),
        }
    }
    fn encode(&self, tag: Tag, _: ProtocolVersion) -> Item {
        Item::enumeration(tag, self.0)
    }
}

/// Unique Identifier: a text string; in 2.x also an Enumeration (e.g. `ID Placeholder`) or
/// an Integer index into the placeholder stack.
#[derive(Clone, PartialEq, Eq, Hash)]
pub enum UniqueIdentifier {
    Text(String),
    Enumeration(u32),
    Index(i32),
}

impl UniqueIdentifier {
    pub fn as_text(&self) -> Option<&str> {
        match self {
            Self::Text(s) => Some(s),
            _ => None,
        }
    }
}

impl fmt::Debug for UniqueIdentifier {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Text(s) => write!(f, "{s:?}"),
            Self::Enumeration(e) => write!(f, "UniqueIdentifier::Enumeration({e:#x})"),
            Self::Index(i) => write!(f, "UniqueIdentifier::Index({i})"),
        }
    }
}

impl From<&str> for UniqueIdentifier {
    fn from(s: &str) -> Self {
        Self::Text(s.to_owned())
    }
}

impl From<String> for UniqueIdentifier {
    fn from(s: String) -> Self {
        Self::Text(s)
    }
}

impl TtlvValue for UniqueIdentifier {
    fn decode(item: &Item, _: ProtocolVersion) -> Result<Self, MessageError> {
        match &item.value {
            Value::TextString(s) => Ok(Self::Text(s.clone())),
            Value::Enumeration(e) => Ok(Self::Enumeration(*e)),
            Value::Integer(i) => Ok(Self::Index(*i)),
            _ => Err(wrong_type(item, ItemType::TextString)),
        }
    }
    fn encode(&self, tag: Tag, _: ProtocolVersion) -> Item {
        match self {
            Self::Text(s) => Item::text(tag, s.clone()),
            Self::Enumeration(e) => Item::enumeration(tag, *e),
            Self::Index(i) => Item::integer(tag, *i),
        }
    }
}

impl TtlvValue for ProtocolVersion {
    fn decode(item: &Item, v: ProtocolVersion) -> Result<Self, MessageError> {
        let f = fields(item)?;
        Ok(Self {
            major: codec::kind::req::read(item.tag, f, Tag::PROTOCOL_VERSION_MAJOR, v)?,
            minor: codec::kind::req::read(item.tag, f, Tag::PROTOCOL_VERSION_MINOR, v)?,
        })
    }
    fn encode(&self, tag: Tag, _: ProtocolVersion) -> Item {
        Item::structure(
            tag,
            vec![
                Item::integer(Tag::PROTOCOL_VERSION_MAJOR, self.major),
                Item::integer(Tag::PROTOCOL_VERSION_MINOR, self.minor),
            ],
        )
    }
}

/// A Credential from the request header's Authentication. The value (passwords, device
/// secrets) is kept as received and never printed.
#[derive(Clone, PartialEq)]
pub struct Credential {
    pub credential_type: CredentialType,
    pub credential_value: Item,
}

impl fmt::Debug for Credential {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Credential")
            .field("credential_type", &self.credential_type)
            .field("credential_value", &"<redacted>")
            .finish()
    }
}

impl TtlvValue for Credential {
    fn decode(item: &Item, v: ProtocolVersion) -> Result<Self, MessageError> {
        let f = fields(item)?;
        // Some clients nest a Credential inside a Credential; read the innermost.
        if let Some(inner) = f.iter().find(|i| i.tag == Tag::CREDENTIAL) {
            return Self::decode(inner, v);
        }
        Ok(Self {
            credential_type: codec::kind::req::read(item.tag, f, Tag::CREDENTIAL_TYPE, v)?,
            credential_value: codec::kind::req::read(item.tag, f, Tag::CREDENTIAL_VALUE, v)?,
        })
    }
    fn encode(&self, tag: Tag, v: ProtocolVersion) -> Item {
        Item::structure(
            tag,
            vec![
                self.credential_type.encode(Tag::CREDENTIAL_TYPE, v),
                self.credential_value.encode(Tag::CREDENTIAL_VALUE, v),
            ],
        )
    }
}

kmip_struct! {
    /// Authentication: one Credential in 1.0/1.1, one or more from 1.2.
    pub struct Authentication {
        credentials: rep Credential = CREDENTIAL,
    }
}

kmip_struct! {
    pub struct RequestHeader {
        protocol_version: req ProtocolVersion = PROTOCOL_VERSION,
        maximum_response_size: opt i32 = MAXIMUM_RESPONSE_SIZE,
        client_correlation_value: opt String = CLIENT_CORRELATION_VALUE,
        server_correlation_value: opt String = SERVER_CORRELATION_VALUE,
        asynchronous_indicator: opt bool = ASYNCHRONOUS_INDICATOR,
        attestation_capable_indicator: opt bool = ATTESTATION_CAPABLE_INDICATOR,
        attestation_types: rep RawEnum = ATTESTATION_TYPE,
        authentication: opt Authentication = AUTHENTICATION,
        batch_error_continuation_option: opt BatchErrorContinuationOption = BATCH_ERROR_CONTINUATION_OPTION,
        batch_order_option: opt bool = BATCH_ORDER_OPTION,
        time_stamp: opt DateTime = TIME_STAMP,
        batch_count: req i32 = BATCH_COUNT,
    }
}

impl RequestHeader {
    pub fn new(protocol_version: ProtocolVersion, batch_count: i32) -> Self {
        Self {
            protocol_version,
            maximum_response_size: None,
            client_correlation_value: None,
            server_correlation_value: None,
            asynchronous_indicator: None,
            attestation_capable_indicator: None,
            attestation_types: Vec::new(),
            authentication: None,
            batch_error_continuation_option: None,
            batch_order_option: None,
            time_stamp: None,
            batch_count,
        }
    }
}

kmip_struct! {
    pub struct ResponseHeader {
        protocol_version: req ProtocolVersion = PROTOCOL_VERSION,
        time_stamp: req DateTime = TIME_STAMP,
        nonce: opt Item = NONCE,
        server_hashed_password: opt ByteString = SERVER_HASHED_PASSWORD,
        attestation_types: rep RawEnum = ATTESTATION_TYPE,
        client_correlation_value: opt String = CLIENT_CORRELATION_VALUE,
        server_correlation_value: opt String = SERVER_CORRELATION_VALUE,
        batch_count: req i32 = BATCH_COUNT,
    }
}

impl ResponseHeader {
    pub fn new(protocol_version: ProtocolVersion, time_stamp: DateTime, batch_count: i32) -> Self {
        Self {
            protocol_version,
            time_stamp,
            nonce: None,
            server_hashed_password: None,
            attestation_types: Vec::new(),
            client_correlation_value: None,
            server_correlation_value: None,
            batch_count,
        }
    }
}

/// A payload this library could not type: the error that stopped it and the payload as
/// received, so the message still re-encodes unchanged.
#[derive(Clone, Debug, PartialEq)]
pub struct UntypedPayload {
    pub error: MessageError,
    pub raw: Option<Item>,
}

/// One operation in a request.
#[derive(Clone, Debug, PartialEq)]
pub struct RequestBatchItem {
    /// The Operation enumeration as received (it may be one this library does not know).
    pub operation: u32,
    pub unique_batch_item_id: Option<ByteString>,
    pub payload: Result<RequestPayload, UntypedPayload>,
    pub message_extension: Option<Item>,
}

impl RequestBatchItem {
    pub fn new(payload: RequestPayload) -> Self {
        Self {
            operation: payload.operation().value(),
            unique_batch_item_id: None,
            payload: Ok(payload),
            message_extension: None,
        }
    }

    pub fn operation(&self) -> Option<Operation> {
        Operation::from_value(self.operation)
    }

    fn decode(item: &Item, v: ProtocolVersion) -> Result<Self, MessageError> {
        let f = fields(item)?;
        let operation: RawEnum = codec::kind::req::read(item.tag, f, Tag::OPERATION, v)?;
        let raw = f.iter().find(|i| i.tag == Tag::REQUEST_PAYLOAD);
        let payload = decode_payload(operation.0, raw, v, RequestPayload::decode);
        Ok(Self {
            operation: operation.0,
            unique_batch_item_id: codec::kind::opt::read(
                item.tag,
                f,
                Tag::UNIQUE_BATCH_ITEM_ID,
                v,
            )?,
            payload,
            message_extension: f.iter().find(|i| i.tag == Tag::MESSAGE_EXTENSION).cloned(),
        })
    }

    fn encode(&self, v: ProtocolVersion) -> Item {
        let mut out = vec![Item::enumeration(Tag::OPERATION, self.operation)];
        codec::kind::opt::write(
            &self.unique_batch_item_id,
            Tag::UNIQUE_BATCH_ITEM_ID,
            v,
            &mut out,
        );
        match &self.payload {
            Ok(p) => out.push(p.encode(v)),
            Err(untyped) => out.extend(untyped.raw.clone()),
        }
        out.extend(self.message_extension.clone());
        Item::structure(Tag::BATCH_ITEM, out)
    }
}

/// Decodes a batch item's payload into its typed form, or keeps it raw with the reason.
fn decode_payload<P>(
    operation: u32,
    raw: Option<&Item>,
    v: ProtocolVersion,
    decode: fn(Operation, &Item, ProtocolVersion) -> Result<Option<P>, MessageError>,
) -> Result<P, UntypedPayload> {
    let untyped = |error| UntypedPayload {
        error,
        raw: raw.cloned(),
    };
    let op = Operation::from_value(operation)
        .ok_or_else(|| untyped(MessageError::UnsupportedOperation(operation)))?;
    // An absent payload decodes like an empty one: every field is then missing or empty.
    let empty;
    let item = match raw {
        Some(item) => item,
        None => {
            empty = Item::structure(Tag::REQUEST_PAYLOAD, Vec::new());
            &empty
        }
    };
    match decode(op, item, v) {
        Ok(Some(p)) => Ok(p),
        Ok(None) => Err(untyped(MessageError::UnsupportedOperation(operation))),
        Err(e) => Err(untyped(e)),
    }
}

/// A KMIP request message.
#[derive(Clone, Debug, PartialEq)]
pub struct RequestMessage {
    pub header: RequestHeader,
    pub batch_items: Vec<RequestBatchItem>,
}

impl RequestMessage {
    /// A request of one or more typed operations for `version`.
    pub fn new(version: ProtocolVersion, payloads: Vec<RequestPayload>) -> Self {
        let batch_items: Vec<_> = payloads.into_iter().map(RequestBatchItem::new).collect();
        Self {
            header: RequestHeader::new(version, batch_items.len() as i32),
            batch_items,
        }
    }

    pub fn version(&self) -> ProtocolVersion {
        self.header.protocol_version
    }

    pub fn from_item(item: &Item) -> Result<Self, MessageError> {
        expect_tag(item, Tag::REQUEST_MESSAGE)?;
        let f = fields(item)?;
        // The header is read first: its version decides how the batch items are read.
        let header: RequestHeader =
            codec::kind::req::read(item.tag, f, Tag::REQUEST_HEADER, ProtocolVersion::V1_0)?;
        let v = header.protocol_version;
        let batch_items = f
            .iter()
            .filter(|i| i.tag == Tag::BATCH_ITEM)
            .map(|i| RequestBatchItem::decode(i, v))
            .collect::<Result<_, _>>()?;
        Ok(Self {
            header,
            batch_items,
        })
    }

    pub fn to_item(&self) -> Item {
        let v = self.version();
        let mut out = vec![self.header.encode(Tag::REQUEST_HEADER, v)];
        out.extend(self.batch_items.iter().map(|b| b.encode(v)));
        Item::structure(Tag::REQUEST_MESSAGE, out)
    }

    pub fn from_ttlv(bytes: &[u8], limits: &Limits) -> Result<Self, MessageError> {
        Self::from_item(&ttlv::decode(bytes, limits)?)
    }

    pub fn to_ttlv(&self) -> Vec<u8> {
        self.to_item().to_ttlv()
    }
}

/// One operation's result in a response.
#[derive(Clone, Debug, PartialEq)]
pub struct ResponseBatchItem {
    pub operation: Option<u32>,
    pub unique_batch_item_id: Option<ByteString>,
    pub result_status: ResultStatus,
    pub result_reason: Option<ResultReason>,
    pub result_message: Option<String>,
    pub asynchronous_correlation_value: Option<ByteString>,
    /// `None` when the response carries no payload (failures, some operations).
    pub payload: Option<Result<ResponsePayload, UntypedPayload>>,
    pub message_extension: Option<Item>,
}

impl ResponseBatchItem {
    /// A successful result.
    pub fn success(payload: ResponsePayload) -> Self {
        Self {
            operation: Some(payload.operation().value()),
            unique_batch_item_id: None,
            result_status: ResultStatus::Success,
            result_reason: None,
            result_message: None,
            asynchronous_correlation_value: None,
            payload: Some(Ok(payload)),
            message_extension: None,
        }
    }

    /// A failed result with its reason and a message for humans.
    pub fn failure(
        operation: Option<u32>,
        reason: ResultReason,
        message: impl Into<String>,
    ) -> Self {
        Self {
            operation,
            unique_batch_item_id: None,
            result_status: ResultStatus::OperationFailed,
            result_reason: Some(reason),
            result_message: Some(message.into()),
            asynchronous_correlation_value: None,
            payload: None,
            message_extension: None,
        }
    }

    fn decode(item: &Item, v: ProtocolVersion) -> Result<Self, MessageError> {
        let f = fields(item)?;
        let operation: Option<RawEnum> = codec::kind::opt::read(item.tag, f, Tag::OPERATION, v)?;
        let raw = f.iter().find(|i| i.tag == Tag::RESPONSE_PAYLOAD);
        let payload = match (operation, raw) {
            (Some(op), Some(_)) => Some(decode_payload(op.0, raw, v, ResponsePayload::decode)),
            (None, Some(raw)) => Some(Err(UntypedPayload {
                error: MessageError::MissingField {
                    within: Tag::BATCH_ITEM,
                    field: Tag::OPERATION,
                },
                raw: Some(raw.clone()),
            })),
            (_, None) => None,
        };
        Ok(Self {
            operation: operation.map(|o| o.0),
            unique_batch_item_id: codec::kind::opt::read(
                item.tag,
                f,
                Tag::UNIQUE_BATCH_ITEM_ID,
                v,
            )?,
            result_status: codec::kind::req::read(item.tag, f, Tag::RESULT_STATUS, v)?,
            result_reason: codec::kind::opt::read(item.tag, f, Tag::RESULT_REASON, v)?,
            result_message: codec::kind::opt::read(item.tag, f, Tag::RESULT_MESSAGE, v)?,
            asynchronous_correlation_value: codec::kind::opt::read(
                item.tag,
                f,
                Tag::ASYNCHRONOUS_CORRELATION_VALUE,
                v,
            )?,
            payload,
            message_extension: f.iter().find(|i| i.tag == Tag::MESSAGE_EXTENSION).cloned(),
        })
    }

    /// The item as it is encoded in a response of version `v`.
    pub fn encode(&self, v: ProtocolVersion) -> Item {
        let mut out = Vec::new();
        if let Some(op) = self.operation {
            out.push(Item::enumeration(Tag::OPERATION, op));
        }
        codec::kind::opt::write(
            &self.unique_batch_item_id,
            Tag::UNIQUE_BATCH_ITEM_ID,
            v,
            &mut out,
        );
        out.push(self.result_status.encode(Tag::RESULT_STATUS, v));
        codec::kind::opt::write(&self.result_reason, Tag::RESULT_REASON, v, &mut out);
        codec::kind::opt::write(&self.result_message, Tag::RESULT_MESSAGE, v, &mut out);
        codec::kind::opt::write(
            &self.asynchronous_correlation_value,
            Tag::ASYNCHRONOUS_CORRELATION_VALUE,
            v,
            &mut out,
        );
        match &self.payload {
            Some(Ok(p)) => out.push(p.encode(v)),
            Some(Err(untyped)) => out.extend(untyped.raw.clone()),
            None => {}
        }
        out.extend(self.message_extension.clone());
        Item::structure(Tag::BATCH_ITEM, out)
    }
}

/// A KMIP response message.
#[derive(Clone, Debug, PartialEq)]
pub struct ResponseMessage {
    pub header: ResponseHeader,
    pub batch_items: Vec<ResponseBatchItem>,
}

impl ResponseMessage {
    pub fn new(version: ProtocolVersion, batch_items: Vec<ResponseBatchItem>) -> Self {
        Self {
            header: ResponseHeader::new(version, DateTime::now(), batch_items.len() as i32),
            batch_items,
        }
    }

    pub fn version(&self) -> ProtocolVersion {
        self.header.protocol_version
    }

    pub fn from_item(item: &Item) -> Result<Self, MessageError> {
        expect_tag(item, Tag::RESPONSE_MESSAGE)?;
        let f = fields(item)?;
        let header: ResponseHeader =
            codec::kind::req::read(item.tag, f, Tag::RESPONSE_HEADER, ProtocolVersion::V1_0)?;
        let v = header.protocol_version;
        let batch_items = f
            .iter()
            .filter(|i| i.tag == Tag::BATCH_ITEM)
            .map(|i| ResponseBatchItem::decode(i, v))
            .collect::<Result<_, _>>()?;
        Ok(Self {
            header,
            batch_items,
        })
    }

    pub fn to_item(&self) -> Item {
        let v = self.version();
        let mut out = vec![self.header.encode(Tag::RESPONSE_HEADER, v)];
        out.extend(self.batch_items.iter().map(|b| b.encode(v)));
        Item::structure(Tag::RESPONSE_MESSAGE, out)
    }

    pub fn from_ttlv(bytes: &[u8], limits: &Limits) -> Result<Self, MessageError> {
        Self::from_item(&ttlv::decode(bytes, limits)?)
    }

    pub fn to_ttlv(&self) -> Vec<u8> {
        self.to_item().to_ttlv()
    }
}

fn expect_tag(item: &Item, expected: Tag) -> Result<(), MessageError> {
    if item.tag == expected {
        Ok(())
    } else {
        Err(MessageError::UnexpectedMessage {
            expected,
            found: item.tag,
        })
    }
}
