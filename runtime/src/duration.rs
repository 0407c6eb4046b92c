//! Durations as configuration files, environment variables and flags write them.

use std::time::Duration;

/// `"30s"`, `"500ms"`, `"2m"`, `"1h"`; a bare number is seconds (`"30"`), so flags that
/// took whole seconds keep working.
pub fn parse(s: &str) -> Result<Duration, String> {
    let s = s.trim();
    let split = s.find(|c: char| !c.is_ascii_digit()).unwrap_or(s.len());
    let (number, unit) = s.split_at(split);
    let n: u64 = number
        .parse()
        .map_err(|_| "expected a duration such as 30s, 500ms or 2m".to_owned())?;
    let d = match unit.trim() {
        "" | "s" => Duration::from_secs(n),
        "ms" => Duration::from_millis(n),
        "m" => Duration::from_secs(n.saturating_mul(60)),
        "h" => Duration::from_secs(n.saturating_mul(3600)),
        other => return Err(format!("unknown unit {other:?}: use ms, s, m or h")),
    };
    Ok(d)
}

#[cfg(test)]
mod tests {
    use super::*;

    // Moved from keysvc's configuration tests, with the cases the other components' flags
    // (whole seconds) rely on.
    #[test]
    fn durations_take_units() {
        assert_eq!(parse("30s"), Ok(Duration::from_secs(30)));
        assert_eq!(parse("45"), Ok(Duration::from_secs(45)));
        assert_eq!(parse(" 30 "), Ok(Duration::from_secs(30)));
        assert_eq!(parse("500ms"), Ok(Duration::from_millis(500)));
        assert_eq!(parse("2m"), Ok(Duration::from_secs(120)));
        assert_eq!(parse("1h"), Ok(Duration::from_secs(3600)));
        assert!(parse("").is_err());
        assert!(parse("-1s").is_err());
        assert!(parse("soon").is_err());
        assert!(parse("3 weeks").is_err());
        assert!(parse("1.5s").is_err());
    }
}
