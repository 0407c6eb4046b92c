//! Who a request is for: the tenant (decided by the gateway from the client certificate,
//! never from anything inside the KMIP message) and where its keys live.

use std::fmt;

pub use kmip::contract::MAX_TENANT_ID_LEN;
use kmip::contract::{is_valid_database_name, is_valid_tenant_id};

/// A validated tenant identifier: 1–128 characters of `[A-Za-z0-9._-]`
/// ([`kmip::contract::is_valid_tenant_id`], the rule the gateway's routing rules obey too).
#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct TenantId(String);

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid tenant id {0:?}: 1-128 characters of A-Z a-z 0-9 . _ -")]
pub struct InvalidTenantId(pub String);

impl TenantId {
    pub fn parse(s: &str) -> Result<Self, InvalidTenantId> {
        if is_valid_tenant_id(s) {
            Ok(Self(s.to_owned()))
        } else {
            Err(InvalidTenantId(s.to_owned()))
        }
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for TenantId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl fmt::Debug for TenantId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "TenantId({})", self.0)
    }
}

/// A dedicated database named by a TenantRouting route (`route.database`), same server.
/// Restricted to a safe identifier because it becomes part of a connection URL
/// ([`kmip::contract::is_valid_database_name`]).
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct DatabaseName(String);

impl DatabaseName {
    pub fn parse(s: &str) -> Result<Self, InvalidTenantId> {
        if is_valid_database_name(s) {
            Ok(Self(s.to_owned()))
        } else {
            Err(InvalidTenantId(s.to_owned()))
        }
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// Everything the engine knows about the caller of one request.
#[derive(Clone, Debug)]
pub struct TenantContext {
    pub tenant: TenantId,
    /// A dedicated database for this tenant, if its route names one.
    pub database: Option<DatabaseName>,
    /// The client certificate identity as the gateway saw it (for audit).
    pub client_identity: String,
    /// Carried from the gateway for log correlation.
    pub request_id: String,
}

impl TenantContext {
    pub fn new(tenant: TenantId) -> Self {
        Self {
            tenant,
            database: None,
            client_identity: String::new(),
            request_id: String::new(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tenant_ids_are_restricted_to_a_safe_alphabet() {
        assert!(TenantId::parse("tenant-a").is_ok());
        assert!(TenantId::parse("org.team_1").is_ok());
        for bad in ["", "a b", "a'b", "tenant/a", "ä", &"x".repeat(129)] {
            assert!(TenantId::parse(bad).is_err(), "{bad:?}");
        }
        assert!(DatabaseName::parse("tenant_a_keys").is_ok());
        assert!(DatabaseName::parse("x;drop").is_err());
    }
}
