//! The result of a run: the text summary on stdout and the `--json` file.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::time::Duration;

use crate::config::{Config, Rate};
use crate::stats::{new_histogram, Percentiles, Shard};
use crate::workload::Op;

/// One operation's figures within a run (`--op mix` has several).
#[derive(Clone, Debug, PartialEq, serde::Serialize)]
pub struct OpReport {
    pub ok: u64,
    pub ops_per_sec: f64,
    #[serde(flatten)]
    pub latency: Percentiles,
}

/// What `--json` writes. The first fields are the stable interface of `make bench`.
#[derive(Clone, Debug, PartialEq, serde::Serialize)]
pub struct Report {
    /// Successful operations per second over the measured period.
    pub ops_per_sec: f64,
    pub p50_ms: f64,
    pub p95_ms: f64,
    pub p99_ms: f64,
    pub p999_ms: f64,
    pub max_ms: f64,
    pub mean_ms: f64,
    /// Failed requests: KMIP failures plus requests with no answer.
    pub errors: u64,
    pub connections: u32,
    pub op: Op,
    pub duration_s: f64,
    /// `null` for closed loop (`--rate max`), else the offered rate per second.
    pub rate: Option<u32>,
    pub ok: u64,
    pub errors_by_reason: BTreeMap<String, u64>,
    pub by_op: BTreeMap<String, OpReport>,
    /// Open loop: percentiles of how late requests were sent after they were due (the
    /// generator's own share of the latency when the server keeps up).
    pub send_lag: Option<Percentiles>,
    pub target: String,
    pub kmip_version: String,
    pub keys: u32,
    pub warmup_s: f64,
    pub setup_s: f64,
    /// Connections open at the end (`--op idle`: how many were held).
    pub connected: u64,
}

impl Report {
    pub fn new(
        config: &Config,
        merged: &Shard,
        measured: Duration,
        setup: Duration,
        connected: u64,
    ) -> Self {
        let secs = measured.as_secs_f64().max(1e-9);
        let mut all = new_histogram();
        let mut by_op = BTreeMap::new();
        for &op in config.op.parts() {
            let h = &merged.latency[op.slot()];
            let _ = all.add(h);
            let ok = merged.ok[op.slot()];
            by_op.insert(
                op.name().to_owned(),
                OpReport {
                    ok,
                    ops_per_sec: ok as f64 / secs,
                    latency: Percentiles::of(h),
                },
            );
        }
        let p = Percentiles::of(&all);
        let ok: u64 = merged.ok.iter().sum();
        let round = |x: f64| (x * 1000.0).round() / 1000.0;
        Self {
            ops_per_sec: round(ok as f64 / secs),
            p50_ms: p.p50_ms,
            p95_ms: p.p95_ms,
            p99_ms: p.p99_ms,
            p999_ms: p.p999_ms,
            max_ms: p.max_ms,
            mean_ms: round(p.mean_ms),
            errors: merged.errors.values().sum(),
            connections: config.connections,
            op: config.op,
            duration_s: round(secs),
            rate: match config.rate {
                Rate::Max => None,
                Rate::PerSecond(r) => Some(r),
            },
            ok,
            errors_by_reason: merged.errors.clone(),
            by_op,
            send_lag: (!merged.send_lag.is_empty()).then(|| Percentiles::of(&merged.send_lag)),
            target: config.target.addr().to_owned(),
            kmip_version: config.version.to_string(),
            keys: if config.op.needs_keys() {
                config.keys
            } else {
                0
            },
            warmup_s: config.warmup.as_secs_f64(),
            setup_s: round(setup.as_secs_f64()),
            connected,
        }
    }

    /// The human summary.
    pub fn text(&self) -> String {
        let mut out = String::new();
        let rate = self
            .rate
            .map_or("closed loop".to_owned(), |r| format!("open loop {r}/s"));
        let _ = writeln!(
            out,
            "{} {} x{} connections, {}, {:.1} s (KMIP {}, {} keys)",
            self.target,
            self.op.name(),
            self.connections,
            rate,
            self.duration_s,
            self.kmip_version,
            self.keys
        );
        if self.op == Op::Idle {
            let _ = writeln!(out, "connections held: {}", self.connected);
        } else {
            let _ = writeln!(
                out,
                "ops/s {:.0}   ok {}   errors {}",
                self.ops_per_sec, self.ok, self.errors
            );
            let _ = writeln!(
                out,
                "latency ms: p50 {:.3}  p95 {:.3}  p99 {:.3}  p99.9 {:.3}  max {:.3}  mean {:.3}",
                self.p50_ms, self.p95_ms, self.p99_ms, self.p999_ms, self.max_ms, self.mean_ms
            );
            if self.by_op.len() > 1 {
                for (name, op) in &self.by_op {
                    let _ = writeln!(
                        out,
                        "  {name:<8} ops/s {:>8.0}  p50 {:.3}  p99 {:.3}",
                        op.ops_per_sec, op.latency.p50_ms, op.latency.p99_ms
                    );
                }
            }
            if let Some(lag) = &self.send_lag {
                let _ = writeln!(
                    out,
                    "send lag ms (due → sent): p50 {:.3}  p99 {:.3}  max {:.3}",
                    lag.p50_ms, lag.p99_ms, lag.max_ms
                );
            }
        }
        for (reason, n) in &self.errors_by_reason {
            let _ = writeln!(out, "  error: {reason}: {n}");
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::stats::Recorder;
    use crate::LoadtestArgs;
    use clap::Parser;

    #[derive(Parser)]
    struct Cli {
        #[command(flatten)]
        args: LoadtestArgs,
    }

    fn config(extra: &[&str]) -> Config {
        let mut argv = vec![
            "loadtest",
            "--addr",
            "127.0.0.1:5696",
            "--ca",
            "ca.pem",
            "--cert",
            "c.pem",
            "--key",
            "k.pem",
        ];
        argv.extend_from_slice(extra);
        Config::from_args(&Cli::try_parse_from(argv).expect("parse").args).expect("valid")
    }

    #[test]
    fn json_has_the_documented_fields_and_figures() {
        let c = config(&["--op", "mix", "--connections", "4", "--rate", "500"]);
        let r = Recorder::default();
        // 2 s measured: 600 Gets at 1 ms, 200 Encrypts at 2 ms, 200 Decrypts at 4 ms, one
        // failure and one timeout.
        for i in 0..600 {
            r.answered(
                i,
                0,
                Duration::from_millis(1),
                Some(Duration::from_micros(20)),
                None,
            );
        }
        for i in 0..200 {
            r.answered(i, 2, Duration::from_millis(2), None, None);
            r.answered(i, 3, Duration::from_millis(4), None, None);
        }
        r.answered(
            0,
            0,
            Duration::from_millis(1),
            None,
            Some("Item Not Found".into()),
        );
        r.failed(1, "transport: timeout");
        let report = Report::new(
            &c,
            &r.merged(),
            Duration::from_secs(2),
            Duration::from_millis(1500),
            4,
        );
        let json: serde_json::Value =
            serde_json::from_str(&serde_json::to_string(&report).expect("serializes"))
                .expect("parses");
        for field in [
            "ops_per_sec",
            "p50_ms",
            "p95_ms",
            "p99_ms",
            "p999_ms",
            "errors",
            "connections",
            "op",
            "duration_s",
        ] {
            assert!(json.get(field).is_some(), "{field} missing: {json}");
        }
        assert_eq!(json["ops_per_sec"], 500.0);
        assert_eq!(json["errors"], 2);
        assert_eq!(json["connections"], 4);
        assert_eq!(json["op"], "mix");
        assert_eq!(json["duration_s"], 2.0);
        assert_eq!(json["rate"], 500);
        // HDR reports the top of the value's bucket: exact to 0.1%.
        let near = |v: &serde_json::Value, want: f64| {
            let got = v.as_f64().expect("number");
            assert!((got - want).abs() <= want * 0.001, "{got} vs {want}");
        };
        near(&json["p50_ms"], 1.0);
        // 1001 answers: the top 20% are at 4 ms, p95 and p99 among them.
        near(&json["p95_ms"], 4.0);
        near(&json["p99_ms"], 4.0);
        assert_eq!(json["errors_by_reason"]["Item Not Found"], 1);
        assert_eq!(json["errors_by_reason"]["transport: timeout"], 1);
        assert_eq!(json["by_op"]["get"]["ok"], 600);
        assert_eq!(json["by_op"]["get"]["ops_per_sec"], 300.0);
        near(&json["by_op"]["decrypt"]["p50_ms"], 4.0);
        near(&json["send_lag"]["p50_ms"], 0.02);
        let text = report.text();
        assert!(text.contains("ops/s 500"), "{text}");
        assert!(text.contains("error: Item Not Found: 1"), "{text}");
    }

    #[test]
    fn closed_loop_has_no_rate_and_no_send_lag() {
        let c = config(&[]);
        let r = Recorder::default();
        r.answered(0, 0, Duration::from_micros(300), None, None);
        let report = Report::new(&c, &r.merged(), Duration::from_secs(1), Duration::ZERO, 1);
        assert_eq!(report.rate, None);
        assert_eq!(report.send_lag, None);
        assert_eq!(report.ops_per_sec, 1.0);
        assert_eq!(report.errors, 0);
        assert!(report.text().contains("closed loop"));
    }
}
