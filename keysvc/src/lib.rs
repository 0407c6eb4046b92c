//! The stateless KMIP engine: executes decoded requests for a tenant, wraps key material
//! per tenant and stores it in SQLite or PostgreSQL with Row-Level Security.
//!
//! Built by the issue "Key service (keysvc/)"; this crate exists so the workspace has its
//! final shape from the start.
