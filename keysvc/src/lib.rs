//! The key service: a stateless KMIP engine that executes decoded requests for one tenant at
//! a time, keeps key material wrapped per tenant, and stores it in SQLite or PostgreSQL.
//!
//! ```text
//!  POST /v1/kmip (TTLV, tenant headers from the gateway)
//!        │
//!        ▼
//!  engine::Engine ── batch items in order ── one store Transaction per request
//!        │                                         │
//!  envelope::Keyring (HKDF tenant KEK,       store::{sqlite, postgres}
//!   AES-256-GCM-SIV, aad = tenant/uid/type)  (RLS: app.current_tenant)
//! ```
//!
//! Tenant isolation is enforced here a second and third time, independently of the gateway:
//! every query runs inside the tenant's Row-Level Security scope, and material wrapped for
//! one tenant does not unwrap for another.
#![cfg_attr(not(test), warn(clippy::unwrap_used))]

pub mod asymmetric;
pub mod cache;
pub mod config;
pub mod cryptosvc;
pub mod engine;
pub mod envelope;
pub mod health;
pub mod http;
pub mod metrics;
pub mod rotate;
pub mod server;
pub mod store;
pub mod tenant;

pub use engine::{Engine, EngineConfig, OpError};
pub use tenant::{DatabaseName, TenantContext, TenantId};
