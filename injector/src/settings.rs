//! The per-pod sidecar settings — KMIP port, resources, log level — and their parsers,
//! shared by the configuration file's `defaults` and the pod annotations that override them.

use std::cmp::Ordering;
use std::fmt;

/// The longest quantity text accepted. Real values (`250m`, `128Mi`, `1.5Gi`) are a few
/// characters; the bound keeps hostile annotations from costing anything.
const MAX_QUANTITY_LEN: usize = 32;

/// Largest decimal exponent accepted in `1e3`-style quantities: 10^18 is Kubernetes' own
/// ceiling (the `E` suffix); anything larger is a typo, not a resource amount.
const MAX_QUANTITY_EXPONENT: i32 = 18;

/// Most characters of a rejected value quoted back in a message: annotations can be large,
/// and a denial message is shown by kubectl and stored in events.
const MAX_QUOTED_CHARS: usize = 40;

/// `text` quoted for a message, cut at [`MAX_QUOTED_CHARS`].
pub(crate) fn quoted(text: &str) -> String {
    match text.char_indices().nth(MAX_QUOTED_CHARS) {
        None => format!("{text:?}"),
        Some((cut, _)) => format!("{:?}…", &text[..cut]),
    }
}

/// What the sidecar of one pod runs with.
#[derive(Debug, Clone, PartialEq)]
pub struct SidecarSettings {
    /// The sidecar's localhost KMIP-over-TLS port (`--listen 127.0.0.1:<port>`).
    pub port: u16,
    pub cpu_request: Quantity,
    pub memory_request: Quantity,
    pub memory_limit: Quantity,
    pub log_level: LogLevel,
}

impl Default for SidecarSettings {
    /// The defaults documented in docs/injector.md: small enough for every tenant pod, the
    /// proxy holds a handful of connections and no key material beyond the tenant pair.
    fn default() -> Self {
        let quantity = |text: &str, value| Quantity {
            text: text.to_owned(),
            value,
        };
        Self {
            port: 5696,
            cpu_request: quantity("10m", 0.01),
            memory_request: quantity("16Mi", 16.0 * 2f64.powi(20)),
            memory_limit: quantity("64Mi", 64.0 * 2f64.powi(20)),
            log_level: LogLevel::Info,
        }
    }
}

/// A Kubernetes resource quantity (`10m`, `16Mi`, `0.5`, `1e3`), kept as written.
#[derive(Debug, Clone)]
pub struct Quantity {
    text: String,
    /// The amount in base units, for comparing a request with its limit.
    value: f64,
}

impl Quantity {
    /// Accepts the non-negative forms of Kubernetes' quantity grammar: a decimal number and
    /// one suffix of `m k M G T P E`, `Ki Mi Gi Ti Pi Ei`, or `e<exponent>`.
    pub fn parse(text: &str) -> Result<Self, String> {
        let invalid = || {
            let text = quoted(text);
            format!("{text} is not a Kubernetes quantity (e.g. 10m, 16Mi, 0.5)")
        };
        if text.is_empty() || text.len() > MAX_QUANTITY_LEN {
            return Err(invalid());
        }
        let split = text
            .find(|c: char| !(c.is_ascii_digit() || c == '.'))
            .unwrap_or(text.len());
        let (number, suffix) = text.split_at(split);
        let digits = number.bytes().filter(u8::is_ascii_digit).count();
        if digits == 0 || number.len() - digits > 1 {
            return Err(invalid());
        }
        let mantissa: f64 = number.parse().map_err(|_| invalid())?;
        let scale = match suffix {
            "" => 1.0,
            "m" => 1e-3,
            "k" => 1e3,
            "M" => 1e6,
            "G" => 1e9,
            "T" => 1e12,
            "P" => 1e15,
            "E" => 1e18,
            "Ki" => 2f64.powi(10),
            "Mi" => 2f64.powi(20),
            "Gi" => 2f64.powi(30),
            "Ti" => 2f64.powi(40),
            "Pi" => 2f64.powi(50),
            "Ei" => 2f64.powi(60),
            exponent => {
                let exponent = exponent
                    .strip_prefix(['e', 'E'])
                    .filter(|e| {
                        let unsigned = e.strip_prefix(['+', '-']).unwrap_or(e);
                        !unsigned.is_empty() && unsigned.bytes().all(|b| b.is_ascii_digit())
                    })
                    .and_then(|e| e.parse::<i32>().ok())
                    .filter(|e| e.abs() <= MAX_QUANTITY_EXPONENT)
                    .ok_or_else(invalid)?;
                10f64.powi(exponent)
            }
        };
        Ok(Self {
            text: text.to_owned(),
            value: mantissa * scale,
        })
    }

    pub fn as_str(&self) -> &str {
        &self.text
    }

    fn is_zero(&self) -> bool {
        self.value == 0.0
    }
}

impl PartialEq for Quantity {
    fn eq(&self, other: &Self) -> bool {
        self.value == other.value
    }
}

impl PartialOrd for Quantity {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        self.value.partial_cmp(&other.value)
    }
}

impl fmt::Display for Quantity {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.text)
    }
}

/// The sidecar's `--log-level`: a fixed set, so a pod cannot pass arbitrary tracing
/// directives (or flags) into the sidecar's command line.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LogLevel {
    Error,
    Warn,
    Info,
    Debug,
    Trace,
}

impl LogLevel {
    const ALL: [Self; 5] = [
        Self::Error,
        Self::Warn,
        Self::Info,
        Self::Debug,
        Self::Trace,
    ];

    pub fn parse(text: &str) -> Result<Self, String> {
        Self::ALL
            .into_iter()
            .find(|level| level.as_str() == text)
            .ok_or_else(|| {
                let text = quoted(text);
                format!("{text} is not a log level (error, warn, info, debug, trace)")
            })
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Self::Error => "error",
            Self::Warn => "warn",
            Self::Info => "info",
            Self::Debug => "debug",
            Self::Trace => "trace",
        }
    }
}

/// A TCP port, 1–65535.
pub fn parse_port(text: &str) -> Result<u16, String> {
    match text.parse::<u16>() {
        Ok(port) if port > 0 => Ok(port),
        _ => Err(format!("{} is not a port (1-65535)", quoted(text))),
    }
}

/// Checks that hold between settings: what Kubernetes would reject later with a message
/// naming the injected container instead of the setting to fix.
/// Returns `(setting, problem)` pairs; `names` says how each setting is spelled where it
/// came from (an annotation or a configuration key).
pub(crate) fn consistency_problems(
    settings: &SidecarSettings,
    management_port: u16,
    names: &SettingNames,
) -> Vec<(&'static str, String)> {
    let mut problems = Vec::new();
    if settings.port == management_port {
        problems.push((
            names.port,
            format!(
                "port {} is the sidecar's management port; choose another",
                settings.port
            ),
        ));
    }
    if settings.memory_limit.is_zero() {
        problems.push((
            names.memory_limit,
            "a memory limit of 0 is not allowed".into(),
        ));
    } else if settings.memory_request > settings.memory_limit {
        problems.push((
            names.memory_request,
            format!(
                "memory request {} is larger than the memory limit {} ({})",
                settings.memory_request, settings.memory_limit, names.memory_limit
            ),
        ));
    }
    problems
}

/// How the settings are spelled in one source, for messages.
#[derive(Debug, Clone, Copy)]
pub(crate) struct SettingNames {
    pub port: &'static str,
    pub memory_request: &'static str,
    pub memory_limit: &'static str,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quantities_follow_the_kubernetes_grammar() {
        for good in [
            "10m", "16Mi", "0.5", "1", "1.5Gi", "100k", "1e3", "2E-3", ".5", "1.",
        ] {
            assert!(Quantity::parse(good).is_ok(), "{good}");
        }
        for bad in [
            "", "-1", "1.2.3", "Mi", "16MB", "16 Mi", "1e", "1e99", "ten", "1mi", "0x10", "+1",
        ] {
            assert!(Quantity::parse(bad).is_err(), "{bad}");
        }
        let long = "1".repeat(MAX_QUANTITY_LEN + 1);
        assert!(Quantity::parse(&long).is_err());
    }

    #[test]
    fn quantities_compare_by_amount() {
        let q = |t| Quantity::parse(t).unwrap();
        assert!(q("16Mi") < q("64Mi"));
        assert!(q("1Gi") > q("1000Mi"));
        assert!(q("1k") == q("1000"));
        assert!(q("500m") < q("1"));
        assert_eq!(q("16Mi").to_string(), "16Mi");
    }

    #[test]
    fn log_levels_are_a_fixed_set() {
        assert_eq!(LogLevel::parse("debug"), Ok(LogLevel::Debug));
        assert!(LogLevel::parse("DEBUG").is_err());
        assert!(LogLevel::parse("info,sidecar=trace").is_err());
        assert!(LogLevel::parse("info --gateway evil:1").is_err());
    }

    #[test]
    fn long_values_are_cut_in_messages() {
        let long = "x".repeat(10_000);
        assert!(parse_port(&long).unwrap_err().len() < 100);
        assert!(LogLevel::parse(&long).unwrap_err().len() < 100);
        assert!(Quantity::parse(&long).unwrap_err().len() < 100);
        assert_eq!(quoted("5696"), "\"5696\"");
    }

    #[test]
    fn ports_are_1_to_65535() {
        assert_eq!(parse_port("5696"), Ok(5696));
        for bad in ["0", "65536", "-1", "", "80a", " 80"] {
            assert!(parse_port(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn request_above_limit_and_port_clash_are_reported() {
        let names = SettingNames {
            port: "port",
            memory_request: "memoryRequest",
            memory_limit: "memoryLimit",
        };
        let settings = SidecarSettings {
            port: 15696,
            memory_request: Quantity::parse("128Mi").unwrap(),
            ..SidecarSettings::default()
        };
        let problems = consistency_problems(&settings, 15696, &names);
        let fields: Vec<_> = problems.iter().map(|(f, _)| *f).collect();
        assert_eq!(fields, ["port", "memoryRequest"]);
        assert!(consistency_problems(&SidecarSettings::default(), 15696, &names).is_empty());
        // The hand-written defaults agree with the parser.
        let defaults = SidecarSettings::default();
        assert_eq!(defaults.memory_request, Quantity::parse("16Mi").unwrap());
        assert_eq!(defaults.memory_limit, Quantity::parse("64Mi").unwrap());
        assert_eq!(defaults.cpu_request, Quantity::parse("10m").unwrap());
    }
}
