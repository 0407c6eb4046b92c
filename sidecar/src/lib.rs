//! The per-pod KMIP sidecar proxy and the admission webhook that injects it.
//!
//! Built by the issue "Sidecar and automatic injection".
