//! The gateway↔keysvc contract, in one place: what the gateway sends keysvc for every KMIP
//! request and what keysvc accepts. Both sides (and the load test and benchmarks that play
//! the gateway) use these items, so the two ends cannot drift apart.
//!
//! ```text
//!  gateway ── POST KMIP_PATH, TTLV body ──────────────────────────► keysvc
//!             TENANT_HEADER     (required, is_valid_tenant_id)
//!             DATABASE_HEADER   (optional, is_valid_database_name)
//!             CLIENT_HEADER     (audit, ≤ MAX_HEADER_VALUE_LEN)
//!             REQUEST_ID_HEADER (log correlation, ≤ MAX_HEADER_VALUE_LEN)
//! ```
//!
//! A request whose message does not decode is answered, by either side, in the version its
//! header names ([`header_version`]).

use crate::{Item, ProtocolVersion, Tag, Value};

/// keysvc's KMIP endpoint: one TTLV request per `POST`, one TTLV answer in the response body.
pub const KMIP_PATH: &str = "/v1/kmip";

/// The tenant the request is for (required): decided by the gateway from the client
/// certificate, never from anything inside the KMIP message.
pub const TENANT_HEADER: &str = "x-openkcm-tenant";
/// A dedicated database named by the tenant's route (optional).
pub const DATABASE_HEADER: &str = "x-openkcm-database";
/// The tenant client's certificate identity as the gateway saw it (audit only).
pub const CLIENT_HEADER: &str = "x-openkcm-client";
/// Correlates gateway and keysvc logs; keysvc generates one when absent and always echoes it.
pub const REQUEST_ID_HEADER: &str = "x-request-id";

/// Longest request id or client identity header keysvc accepts: ids are UUIDs or similar,
/// and identities are certificate names; 256 bytes keeps log lines bounded.
pub const MAX_HEADER_VALUE_LEN: usize = 256;

/// Longest tenant id: ids appear in HKDF info strings, SQL settings, metric labels and log
/// lines; 128 bytes is far more than any naming scheme needs.
pub const MAX_TENANT_ID_LEN: usize = 128;
/// Longest dedicated database name: PostgreSQL's identifier limit (NAMEDATALEN - 1).
pub const MAX_DATABASE_NAME_LEN: usize = 63;

/// Whether `s` is a tenant id: 1–128 characters of `A-Z a-z 0-9 . _ -`.
pub fn is_valid_tenant_id(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= MAX_TENANT_ID_LEN
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"._-".contains(&b))
}

/// Whether `s` is a dedicated database name: 1–63 characters of `A-Z a-z 0-9 _` (it becomes
/// part of a connection URL).
pub fn is_valid_database_name(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= MAX_DATABASE_NAME_LEN
        && s.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_')
}

/// The protocol version in a request header, when it names a supported one; KMIP 1.0
/// otherwise. The version in which a request that does not decode is answered.
pub fn header_version(item: &Item) -> ProtocolVersion {
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tenant_ids_are_restricted_to_a_safe_alphabet() {
        assert!(is_valid_tenant_id("tenant-a"));
        assert!(is_valid_tenant_id("org.team_1"));
        assert!(is_valid_tenant_id(&"x".repeat(MAX_TENANT_ID_LEN)));
        for bad in ["", "a b", "a'b", "tenant/a", "ä", &"x".repeat(129)] {
            assert!(!is_valid_tenant_id(bad), "{bad:?}");
        }
    }

    #[test]
    fn database_names_are_safe_identifiers() {
        assert!(is_valid_database_name("tenant_a_keys"));
        assert!(is_valid_database_name(&"d".repeat(MAX_DATABASE_NAME_LEN)));
        for bad in ["", "x;drop", "tenant-a", "a.b", &"d".repeat(64)] {
            assert!(!is_valid_database_name(bad), "{bad:?}");
        }
    }
}
