//! Test set-up shared by the workspace's test suites and benches: written once here, used
//! as a dev-dependency only (never by production code).
//!
//! - [`certs`]: a throwaway CA (the `pki` crate) and named identities as PEM files in a
//!   temporary directory, with the rustls client and server configurations built on them.
//! - [`net`]: listeners bound before their address is handed out, and a retry on "address
//!   in use" for components that must bind a port themselves.
//! - [`postgres`]: throwaway PostgreSQL databases, dropped with their guard.
//! - [`pg_cluster`]: a PostgreSQL cluster of the test's own, TLS and client certificates
//!   only, that a test can stop, start, restart and reload.
//! - [`process`]: `openkcm` child processes, killed on drop.
//! - [`kube`]: a real kube-apiserver and etcd on loopback, and `kubectl` against it.
//! - [`kmip_client`]: KMIP client connections and the requests several suites send.
//!
//! Everything here panics on failure: a failed set-up is a failed test.

pub mod certs;
pub mod kmip_client;
pub mod kube;
pub mod net;
pub mod pg_cluster;
pub mod postgres;
pub mod process;
