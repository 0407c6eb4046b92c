//! `openkcm loadtest` against the real stack (`openkcm dev`: gateway + keysvc on SQLite): a
//! one-second mixed run through the gateway over KMIP/mTLS, and one straight to keysvc's
//! HTTP/2 API. Checks the report a user would read, never the timing.

mod dev_support;

use std::path::Path;
use std::process::Command;

use dev_support::DevProcess;

fn loadtest(dev: &DevProcess, extra: &[&str], json: &Path) -> serde_json::Value {
    // Straight to keysvc, the server certificate is the internal CA's.
    let ca = match extra.contains(&"--http2-keysvc") {
        true => dev.pki("internal/ca.pem"),
        false => dev.pki("ca.pem"),
    };
    let output = Command::new(env!("CARGO_BIN_EXE_openkcm"))
        .arg("loadtest")
        .arg("--ca")
        .arg(ca)
        .args(["--duration", "1s", "--quiet", "--json"])
        .arg(json)
        .args(extra)
        .output()
        .expect("run openkcm loadtest");
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        output.status.success(),
        "loadtest failed ({}):\n{stdout}\n{stderr}",
        output.status
    );
    assert!(stdout.contains("ops/s"), "summary on stdout:\n{stdout}");
    let text = std::fs::read_to_string(json).expect("JSON report written");
    serde_json::from_str(&text).unwrap_or_else(|e| panic!("JSON report: {e}\n{text}"))
}

fn assert_clean_run(report: &serde_json::Value, op: &str, connections: u64) {
    let ops = report["ops_per_sec"].as_f64().expect("ops_per_sec");
    assert!(ops > 0.0, "no successful operations: {report:#}");
    assert_eq!(report["errors"], 0, "errors: {report:#}");
    assert_eq!(report["op"], op);
    assert_eq!(report["connections"], connections);
    let duration = report["duration_s"].as_f64().expect("duration_s");
    assert!((duration - 1.0).abs() < 0.01, "{report:#}");
    for field in ["p50_ms", "p95_ms", "p99_ms", "p999_ms"] {
        let v = report[field].as_f64().expect(field);
        assert!(v > 0.0, "{field}: {report:#}");
    }
    let p50 = report["p50_ms"].as_f64().unwrap_or_default();
    let p99 = report["p99_ms"].as_f64().unwrap_or_default();
    assert!(p50 <= p99, "{report:#}");
}

#[test]
fn mixed_load_through_the_gateway_and_straight_to_keysvc() {
    let dir = tempfile::tempdir().expect("temp dir");
    let dev = DevProcess::start(dir.path());
    let kmip = dev.kmip_addr.to_string();

    let json = dir.path().join("mix.json");
    let report = loadtest(
        &dev,
        &[
            "--addr",
            &kmip,
            "--cert",
            &dev.pki("tenant-a.pem").display().to_string(),
            "--key",
            &dev.pki("tenant-a-key.pem").display().to_string(),
            "--connections",
            "2",
            "--op",
            "mix",
            "--keys",
            "4",
        ],
        &json,
    );
    assert_clean_run(&report, "mix", 2);
    for op in ["get", "encrypt", "decrypt"] {
        let ok = report["by_op"][op]["ok"].as_u64().unwrap_or_default();
        assert!(ok > 0, "no {op} in the mix: {report:#}");
    }

    // keysvc's internal API, as the gateway calls it (its client certificate).
    let api = dev
        .banner
        .lines()
        .find_map(|l| l.strip_prefix("keysvc API"))
        .and_then(|rest| rest.split_whitespace().next())
        .unwrap_or_else(|| panic!("keysvc API address in the banner:\n{}", dev.banner))
        .to_owned();
    let json = dir.path().join("keysvc.json");
    let report = loadtest(
        &dev,
        &[
            "--http2-keysvc",
            &format!("https://{api}"),
            "--server-name",
            "keysvc",
            "--cert",
            &dev.pki("gateway-upstream.pem").display().to_string(),
            "--key",
            &dev.pki("gateway-upstream-key.pem").display().to_string(),
            "--connections",
            "2",
            "--op",
            "get",
        ],
        &json,
    );
    assert_clean_run(&report, "get", 2);
}

#[test]
fn a_refused_certificate_is_reported_by_result_reason() {
    let dir = tempfile::tempdir().expect("temp dir");
    let dev = DevProcess::start(dir.path());
    // The stranger certificate matches no routing rule: set-up cannot create keys.
    let output = Command::new(env!("CARGO_BIN_EXE_openkcm"))
        .arg("loadtest")
        .args(["--addr", &dev.kmip_addr.to_string(), "--ca"])
        .arg(dev.pki("ca.pem"))
        .arg("--cert")
        .arg(dev.pki("stranger.pem"))
        .arg("--key")
        .arg(dev.pki("stranger-key.pem"))
        .args(["--duration", "1s", "--quiet"])
        .output()
        .expect("run openkcm loadtest");
    assert_eq!(output.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("Permission Denied"), "{stderr}");

    // A non-loopback target is refused before anything is sent.
    let output = Command::new(env!("CARGO_BIN_EXE_openkcm"))
        .args(["loadtest", "--addr", "192.0.2.1:5696"])
        .args(["--ca", "ca.pem", "--cert", "c.pem", "--key", "k.pem"])
        .output()
        .expect("run openkcm loadtest");
    assert_eq!(output.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&output.stderr).contains("--allow-remote"));
}
