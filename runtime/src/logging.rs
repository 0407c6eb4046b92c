//! Logging set-up: JSON lines on stderr, one object per event, fields flattened, the current
//! span's fields (request_id, tenant) under `span`. Audit events (`target: "audit"`) always
//! pass, whatever the level.

/// A validated `tracing` filter; `audit=info` is always added so that the audit trail
/// cannot be filtered away by a quieter level.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LogFilter(String);

impl LogFilter {
    pub fn parse(directives: &str) -> Result<Self, String> {
        let full = format!("{directives},audit=info");
        tracing_subscriber::EnvFilter::try_new(&full).map_err(|e| e.to_string())?;
        Ok(Self(full))
    }

    pub fn directives(&self) -> &str {
        &self.0
    }
}

/// Installs the process's subscriber (once; a second call fails).
pub fn init(filter: &LogFilter) -> Result<(), String> {
    let env_filter =
        tracing_subscriber::EnvFilter::try_new(filter.directives()).map_err(|e| e.to_string())?;
    tracing_subscriber::fmt()
        .json()
        .flatten_event(true)
        .with_current_span(true)
        .with_span_list(false)
        .with_env_filter(env_filter)
        .with_writer(std::io::stderr)
        .try_init()
        .map_err(|e| e.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_audit_target_is_always_kept_and_bad_filters_are_refused() {
        let filter = LogFilter::parse("warn").expect("valid");
        assert_eq!(filter.directives(), "warn,audit=info");
        assert!(LogFilter::parse("info,[").is_err());
    }
}
