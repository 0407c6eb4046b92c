//! PostgreSQL store (placeholder, being written).
