//! TLS material shared by every OpenKCM component (gateway, keysvc, sidecar, injector).
//!
//! ```text
//!  files ──read once──► FileBytes ──digest differs from the one in force?──► parse + check
//!   (cert-manager Secret)            (watch::Watched, polled)                  │ ok      │ failed
//!                                                                              ▼         ▼
//!            ServerCertResolver / ReloadingClientVerifier / a client config   kept; logged and
//!            swapped atomically; expiry gauge set; reload counted "ok"          counted once
//! ```
//!
//! - [`pem`]: PEM loading with a digest of the very bytes parsed.
//! - [`watch`]: change detection and reload bookkeeping (logs, [`TlsMetrics`]).
//! - [`material`]: loading a server certificate and a client CA bundle; the swappable
//!   [`ServerCertResolver`] and [`ReloadingClientVerifier`] that listeners hand rustls.
//! - [`identity`]: [`PeerIdentity`], the facts of a certificate (subject, SANs, issuer,
//!   serial, notAfter) read the same way everywhere.
//! - [`metrics`]: `openkcm_tls_reloads_total{cert,result}` and
//!   `openkcm_certificate_expiry_timestamp_seconds{cert}`, the same names in every component.

pub mod identity;
pub mod material;
pub mod metrics;
pub mod pem;
pub mod watch;

pub use identity::{IdentityError, PeerIdentity};
pub use material::{
    certified_key, client_verifier, not_after, ClientAuth, ReloadingClientVerifier,
    ServerCertResolver, TlsError,
};
pub use metrics::{ReloadResult, TlsMetrics};
pub use pem::{FileBytes, FileDigest, PemError, PemFile};
pub use watch::{Changes, Loaded, Watched};
