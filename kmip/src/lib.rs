//! KMIP 1.0–2.1 protocol library: the one place the wire format lives.
//!
//! ```text
//!  bytes ──ttlv::decode──► Item tree ──RequestMessage::from_item──► typed message
//!        ◄──Item::encode──           ◄──────────to_item──────────
//!  xml   ──xml::parse────► Item tree        (KMIP XML profile, test cases)
//!  json  ──json::parse───► Item tree        (KMIP JSON profile)
//!  framing: tokio codec and async message reader, size limit checked on the 8-byte header
//!  client:  async KMIP client over any stream, rustls mTLS connector
//!  relay:   helpers for programs that relay KMIP (error answers, retry safety)
//!  contract: the gateway↔keysvc HTTP contract (path, headers, tenant-id rule)
//! ```
//!
//! The codec ([`ttlv`], [`message`], [`xml`], [`json`]) does no I/O; [`framing`] and [`client`] add
//! tokio on top. Nothing a peer sends can make this crate panic: every malformed input is a
//! typed error ([`ttlv::TtlvError`], [`message::MessageError`]).
#![forbid(unsafe_code)]
#![cfg_attr(not(test), warn(clippy::unwrap_used, clippy::expect_used))]

pub mod message;
pub mod spec;
pub mod ttlv;
mod version;

pub use spec::Tag;
pub use ttlv::{Item, ItemType, Limits, Value};
pub use version::ProtocolVersion;
pub mod client;
pub mod contract;
pub mod framing;
pub mod json;
pub mod relay;
pub mod xml;
