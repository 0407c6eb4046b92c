//! What every OpenKCM process (keysvc, gateway, sidecar, injector, `openkcm dev`) runs on,
//! written once:
//!
//! - [`logging`]: JSON log lines on stderr with a validated filter ([`LogFilter`]) that
//!   always keeps the audit trail;
//! - [`signal`]: the termination signal (SIGTERM from Kubernetes, or Ctrl-C);
//! - [`duration`]: durations as configuration writes them (`"30s"`, `"500ms"`, `"2m"`);
//! - [`config`]: the configuration dialect (defaults ← TOML file ← `OPENKCM_*` environment
//!   ← flags, every problem reported together);
//! - [`fairness`]: per-tenant slots, so one tenant cannot hold all of a shared process;
//! - [`http2`]: what an HTTP/2 client may conclude from a failed stream (never processed,
//!   so safe to send again, or perhaps applied);
//! - [`serve`]: the accept loop (back-off on accept errors, one task per connection) and
//!   the graceful drain after shutdown.

pub mod config;
pub mod duration;
pub mod fairness;
pub mod http2;
pub mod logging;
pub mod serve;
pub mod signal;

pub use duration::parse as parse_duration;
pub use logging::LogFilter;
pub use signal::terminated;
