//! The KMIP load generator.
//!
//! Built by the issue "Load generator and benchmarks".
