//! Measurements: latency histograms (HDR, microseconds), error counts by Result Reason and
//! transport failure, and the live counters the progress line reads.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;
use std::time::Duration;

use hdrhistogram::Histogram;

use crate::workload::OP_SLOTS;

/// Highest latency tracked exactly (10 min, the longest request timeout); longer ones are
/// recorded as this.
const MAX_TRACKED_US: u64 = 600_000_000;
/// Three significant digits: 0.1% resolution at every scale (a p99 of 1.234 ms is that).
const SIGNIFICANT_DIGITS: u8 = 3;
/// Histograms are sharded so connections on different worker threads rarely share a lock;
/// a histogram per connection would cost ~150 KB each, too much at 20,000 connections.
pub const SHARDS: usize = 16;

pub fn new_histogram() -> Histogram<u64> {
    match Histogram::new_with_bounds(1, MAX_TRACKED_US, SIGNIFICANT_DIGITS) {
        Ok(h) => h,
        // The bounds are constants hdrhistogram accepts; unreachable in practice.
        Err(e) => unreachable!("histogram bounds: {e}"),
    }
}

/// What one connection's requests end in, collected under one of [`SHARDS`] locks.
#[derive(Debug)]
pub struct Shard {
    /// Latency of answered requests (success or KMIP failure), per operation slot.
    pub latency: [Histogram<u64>; OP_SLOTS],
    /// Open loop: how late requests were sent after they were due.
    pub send_lag: Histogram<u64>,
    pub ok: [u64; OP_SLOTS],
    pub errors: BTreeMap<String, u64>,
}

impl Shard {
    fn new() -> Self {
        Self {
            latency: std::array::from_fn(|_| new_histogram()),
            send_lag: new_histogram(),
            ok: [0; OP_SLOTS],
            errors: BTreeMap::new(),
        }
    }
}

/// The run's measurements.
#[derive(Debug)]
pub struct Recorder {
    shards: Vec<Mutex<Shard>>,
    /// Live counters for the progress line (include the warm-up).
    pub answered: AtomicU64,
    pub failed: AtomicU64,
    pub connected: AtomicU64,
}

impl Default for Recorder {
    fn default() -> Self {
        Self {
            shards: (0..SHARDS).map(|_| Mutex::new(Shard::new())).collect(),
            answered: AtomicU64::new(0),
            failed: AtomicU64::new(0),
            connected: AtomicU64::new(0),
        }
    }
}

fn micros(d: Duration) -> u64 {
    (d.as_micros() as u64).clamp(1, MAX_TRACKED_US)
}

impl Recorder {
    fn with_shard<R>(&self, connection: usize, f: impl FnOnce(&mut Shard) -> R) -> R {
        let mut shard = match self.shards[connection % SHARDS].lock() {
            Ok(g) => g,
            // A panicking recorder holds no invariant worth refusing the data for.
            Err(poisoned) => poisoned.into_inner(),
        };
        f(&mut shard)
    }

    /// An answered request; `failure` is its Result Reason when it failed.
    pub fn answered(
        &self,
        connection: usize,
        slot: usize,
        latency: Duration,
        lag: Option<Duration>,
        failure: Option<String>,
    ) {
        self.with_shard(connection, |s| {
            s.latency[slot].saturating_record(micros(latency));
            if let Some(lag) = lag {
                s.send_lag.saturating_record(micros(lag));
            }
            match failure {
                None => s.ok[slot] += 1,
                Some(reason) => *s.errors.entry(reason).or_default() += 1,
            }
        });
    }

    /// A request that got no KMIP answer (or could not be sent).
    pub fn failed(&self, connection: usize, label: &str) {
        self.with_shard(connection, |s| {
            *s.errors.entry(label.to_owned()).or_default() += 1
        });
    }

    /// Everything recorded, merged.
    pub fn merged(&self) -> Shard {
        let mut all = Shard::new();
        for shard in &self.shards {
            let s = match shard.lock() {
                Ok(g) => g,
                Err(poisoned) => poisoned.into_inner(),
            };
            for i in 0..OP_SLOTS {
                // Same bounds everywhere: adding cannot fail.
                let _ = all.latency[i].add(&s.latency[i]);
                all.ok[i] += s.ok[i];
            }
            let _ = all.send_lag.add(&s.send_lag);
            for (k, v) in &s.errors {
                *all.errors.entry(k.clone()).or_default() += v;
            }
        }
        all
    }

    pub fn count_answered(&self) {
        self.answered.fetch_add(1, Ordering::Relaxed);
    }

    pub fn count_failed(&self) {
        self.failed.fetch_add(1, Ordering::Relaxed);
    }
}

/// Latency percentiles in milliseconds.
#[derive(Clone, Copy, Debug, Default, PartialEq, serde::Serialize)]
pub struct Percentiles {
    pub count: u64,
    pub mean_ms: f64,
    pub p50_ms: f64,
    pub p90_ms: f64,
    pub p95_ms: f64,
    pub p99_ms: f64,
    pub p999_ms: f64,
    pub max_ms: f64,
}

impl Percentiles {
    pub fn of(h: &Histogram<u64>) -> Self {
        if h.is_empty() {
            return Self::default();
        }
        let ms = |us: u64| us as f64 / 1000.0;
        Self {
            count: h.len(),
            mean_ms: h.mean() / 1000.0,
            p50_ms: ms(h.value_at_quantile(0.50)),
            p90_ms: ms(h.value_at_quantile(0.90)),
            p95_ms: ms(h.value_at_quantile(0.95)),
            p99_ms: ms(h.value_at_quantile(0.99)),
            p999_ms: ms(h.value_at_quantile(0.999)),
            max_ms: ms(h.max()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percentiles_of_a_known_distribution() {
        // 1..=1000 µs, once each: pN is N% of 1000 µs, to hdr's 0.1% resolution.
        let mut h = new_histogram();
        for us in 1..=1000u64 {
            h.record(us).expect("in range");
        }
        let p = Percentiles::of(&h);
        assert_eq!(p.count, 1000);
        assert!((p.p50_ms - 0.500).abs() <= 0.001, "{p:?}");
        assert!((p.p95_ms - 0.950).abs() <= 0.001, "{p:?}");
        assert!((p.p99_ms - 0.990).abs() <= 0.001, "{p:?}");
        assert!((p.p999_ms - 0.999).abs() <= 0.001, "{p:?}");
        assert!((p.max_ms - 1.000).abs() <= 0.001, "{p:?}");
        assert!((p.mean_ms - 0.5005).abs() <= 0.001, "{p:?}");
        assert_eq!(Percentiles::of(&new_histogram()), Percentiles::default());
    }

    #[test]
    fn a_slow_tail_shows_in_the_high_percentiles_only() {
        let mut h = new_histogram();
        for _ in 0..9_900 {
            h.record(200).expect("in range");
        }
        for _ in 0..100 {
            h.record(50_000).expect("in range");
        }
        let p = Percentiles::of(&h);
        assert!((p.p50_ms - 0.2).abs() < 0.001, "{p:?}");
        assert!((p.p99_ms - 0.2).abs() < 0.001, "{p:?}");
        assert!((p.p999_ms - 50.0).abs() < 0.05, "{p:?}");
    }

    #[test]
    fn shards_merge_and_errors_add_up() {
        let r = Recorder::default();
        for c in 0..40 {
            r.answered(c, 0, Duration::from_micros(100), None, None);
            r.answered(
                c,
                2,
                Duration::from_millis(3),
                Some(Duration::from_micros(5)),
                Some("Item Not Found".into()),
            );
            r.failed(c, "transport: timeout");
        }
        let m = r.merged();
        assert_eq!(m.ok, [40, 0, 0, 0, 0, 0]);
        assert_eq!(m.latency[0].len(), 40);
        assert_eq!(m.latency[2].len(), 40);
        assert_eq!(m.send_lag.len(), 40);
        assert_eq!(m.errors["Item Not Found"], 40);
        assert_eq!(m.errors["transport: timeout"], 40);
        // Latencies beyond the tracked range saturate instead of being lost.
        r.answered(0, 1, Duration::from_secs(7200), None, None);
        assert_eq!(r.merged().latency[1].len(), 1);
    }
}
