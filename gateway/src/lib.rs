//! The Pingora-based KMIP gateway: mTLS termination, TenantRouting and per-request
//! forwarding to the keysvc pool.
//!
//! Built by the issue "Gateway on Pingora and `openkcm dev`".
