//! The KMIP gateway: mTLS termination, TenantRouting and per-request forwarding to the
//! keysvc pool. The tenant decision:
//!
//! ```text
//!  client cert (DER, verified by TLS)
//!        │ identity::PeerIdentity::from_der
//!        ▼
//!  PeerIdentity ──routing::RoutingTable::decide──► Decision::Allow(Route { tenant, database, rule })
//!                        ▲                          Decision::Deny { reason }
//!                        │ current()
//!              routing::RoutingWatcher (polls the TenantRouting rule files)
//! ```
//!
//! - [`identity`]: the names in a peer certificate (subject CN/O/OU, SAN DNS/URI, issuer).
//! - [`routing`]: TenantRouting rule files, the tenant decision, live reload.
//! - [`tls`]: the KMIP listener's mTLS settings and the peer-identity capture.
//! - [`kmip_app`]: the TTLV listener (Pingora `ServerApp`): framing, denial, forwarding.
//! - [`upstream`]: the keysvc pool (HTTP/2 + mTLS, round robin, retry rules, `/ready`
//!   health checks).
//! - [`https_app`]: the management + KMIP-over-HTTPS listener (/health, /ready, /metrics,
//!   POST /kmip).
//! - [`reload`]: server certificate, client CA and upstream client certificate reload.
//! - [`config`], [`server`], [`metrics`]: flags, Pingora wiring, Prometheus counters.

pub mod config;
pub mod https_app;
/// Peer certificate facts (subject, SANs, issuer, serial, notAfter), shared with keysvc and
/// the sidecar.
pub use tlsmaterial::identity;
pub mod kmip_app;
pub mod metrics;
pub mod reload;
pub mod routing;
pub mod server;
pub mod tls;
pub mod upstream;
