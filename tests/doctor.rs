//! `openkcm doctor` against a real `openkcm dev` (and a real sidecar), over real sockets:
//! all steps pass with the dev tenant certificate (with --write, the probe key gone
//! afterwards), and each broken set-up fails at the step that names it, with exit code 1.

mod dev_support;
mod sidecar_support;

use std::path::{Path, PathBuf};
use std::process::Output;
use std::time::Duration;

use dev_support::DevProcess;
use kmip::client::Client;
use kmip::spec::ResultReason;
use pki::{CertSpec, CertificateAuthority};
use sidecar_support::{install_tenant_cert, SidecarProcess};
use testkit::process::command;

const TIMEOUT: Duration = Duration::from_secs(15);

/// Every step in the order the doctor prints them.
const STEPS: [&str; 8] = [
    "dns",
    "connect",
    "tls",
    "certificate",
    "tenant",
    "kmip",
    "write",
    "latency",
];

fn doctor(args: &[&str]) -> Output {
    let mut cmd = command(env!("CARGO_BIN_EXE_openkcm"), &["doctor"]);
    cmd.args(args);
    cmd.output().expect("run openkcm doctor")
}

fn stdout(out: &Output) -> String {
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// The step lines (`✔ name: ...`, `✘ ...`, `⚠ ...`, `- ...`), by step name.
fn step_line<'a>(text: &'a str, step: &str) -> &'a str {
    text.lines()
        .find(|line| {
            line.split_once(' ')
                .is_some_and(|(_, rest)| rest.starts_with(&format!("{step}:")))
        })
        .unwrap_or_else(|| panic!("no {step} line in:\n{text}"))
}

/// The `step` line contains `needle`.
fn assert_step(text: &str, step: &str, needle: &str) {
    let line = step_line(text, step);
    assert!(
        line.contains(needle),
        "{step}: {needle:?} not in {line:?}; all:\n{text}"
    );
}

/// `--addr`, `--ca`, `--cert`, `--key`, `--server-name` for `who`'s files in `pki`.
fn flags(dev: &DevProcess, cert: &Path, key: &Path) -> Vec<String> {
    vec![
        "--addr".into(),
        dev.kmip_addr.to_string(),
        "--ca".into(),
        path(&dev.pki("ca.pem")),
        "--cert".into(),
        path(cert),
        "--key".into(),
        path(key),
        "--timeout".into(),
        "10s".into(),
    ]
}

fn path(p: &Path) -> String {
    p.to_str().expect("utf-8 path").to_owned()
}

fn tenant_flags(dev: &DevProcess, who: &str) -> Vec<String> {
    flags(
        dev,
        &dev.pki(&format!("{who}.pem")),
        &dev.pki(&format!("{who}-key.pem")),
    )
}

fn run(args: &[String], more: &[&str]) -> (i32, String) {
    let mut all: Vec<&str> = args.iter().map(String::as_str).collect();
    all.extend_from_slice(more);
    let out = doctor(&all);
    let text = stdout(&out);
    eprintln!(
        "openkcm doctor {}:\n{text}{}",
        all.join(" "),
        String::from_utf8_lossy(&out.stderr)
    );
    (out.status.code().unwrap_or(-1), text)
}

/// The uid the write step printed.
fn probe_uid(text: &str) -> String {
    let line = step_line(text, "write");
    let start = line.find("(uid ").expect("uid in the write line") + "(uid ".len();
    line[start..]
        .split(')')
        .next()
        .expect("uid ends with )")
        .to_owned()
}

async fn assert_gone(dev: &DevProcess, uid: &str) {
    let connector = kmip::client::tls::connector_from_pem_files(
        dev.pki("ca.pem"),
        dev.pki("tenant-a.pem"),
        dev.pki("tenant-a-key.pem"),
    )
    .expect("connector");
    let mut client = Client::connect_tls(&dev.kmip_addr.to_string(), "localhost", &connector)
        .await
        .expect("connect");
    client.set_timeout(TIMEOUT);
    let err = client.get(uid).await.expect_err("the probe key is gone");
    assert!(
        matches!(
            err.result_reason(),
            Some(ResultReason::ItemNotFound | ResultReason::ObjectNotFound)
        ),
        "Get of the destroyed probe key: {err}"
    );
}

/// A certificate from `ca` written as NAME.pem / NAME-key.pem in `dir`.
fn issue(ca: &CertificateAuthority, spec: &CertSpec, dir: &Path, name: &str) -> (PathBuf, PathBuf) {
    let (cert, key) = (
        dir.join(format!("{name}.pem")),
        dir.join(format!("{name}-key.pem")),
    );
    ca.issue(spec)
        .expect("issue")
        .write(&cert, &key)
        .expect("write certificate");
    (cert, key)
}

fn tenant_a_spec() -> CertSpec {
    CertSpec {
        organizational_units: vec!["tenant-a".into()],
        client: true,
        ..CertSpec::new("tenant-a")
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn every_step_passes_for_the_dev_tenant_and_the_probe_key_is_destroyed() {
    let dir = tempfile::tempdir().expect("tempdir");
    let dev = DevProcess::start(&dir.path().join("dev"));
    let args = tenant_flags(&dev, "tenant-a");

    // Read-only: the write step is skipped, everything else passes; the server name
    // defaults to the address's host (127.0.0.1, in the dev certificate's IP SANs).
    let (code, text) = run(&args, &[]);
    assert_eq!(code, 0, "{text}");
    for step in STEPS {
        let line = step_line(&text, step);
        if step == "write" {
            assert!(line.starts_with("- write: skipped"), "{line}");
        } else {
            assert!(line.starts_with('✔'), "{line}");
        }
    }
    assert_step(&text, "tls", "openkcm-gateway-kmip");
    assert_step(&text, "certificate", "OU tenant-a");
    assert_step(&text, "certificate", "key matches");
    assert_step(&text, "tenant", "not checked");
    assert_step(&text, "kmip", "2.1");
    assert_step(&text, "latency", "median");

    // --write with --routing: the rules name the tenant; the probe key is created and gone.
    let policies = path(&dev.dir.join("policies"));
    let (code, text) = run(
        &args,
        &[
            "--write",
            "--routing",
            &policies,
            "--server-name",
            "localhost",
        ],
    );
    assert_eq!(code, 0, "{text}");
    assert!(
        text.lines().filter(|l| l.starts_with('✔')).count() == STEPS.len(),
        "{text}"
    );
    assert_step(&text, "tenant", "tenant tenant-a");
    assert_step(&text, "write", "openkcm-doctor-probe-");
    let uid = probe_uid(&text);
    assert_gone(&dev, &uid).await;
    // A second run makes (and destroys) another probe key.
    let (code, again) = run(&args, &["--write"]);
    assert_eq!(code, 0, "{again}");
    assert_ne!(probe_uid(&again), uid);
    assert_gone(&dev, &probe_uid(&again)).await;

    // --json: one document, one entry per step.
    let (code, json) = run(&args, &["--json", "--write"]);
    assert_eq!(code, 0, "{json}");
    let doc: serde_json::Value = serde_json::from_str(&json).expect("one JSON document");
    assert_eq!(doc["ok"], true);
    let steps = doc["steps"].as_array().expect("steps");
    let names: Vec<&str> = steps.iter().filter_map(|s| s["step"].as_str()).collect();
    assert_eq!(names, STEPS);
    assert!(steps.iter().all(|s| s["status"] == "pass"), "{json}");
    assert!(steps.iter().all(|s| s["ms"].is_u64()), "{json}");
}

#[tokio::test(flavor = "multi_thread")]
async fn broken_setups_fail_at_the_step_that_names_them() {
    let dir = tempfile::tempdir().expect("tempdir");
    let dev = DevProcess::start(&dir.path().join("dev"));
    let certs = dir.path().join("certs");
    std::fs::create_dir_all(&certs).expect("certs dir");

    // The dev PKI's stranger (OU nobody): TLS passes, the gateway routes it nowhere.
    let (code, text) = run(&tenant_flags(&dev, "stranger"), &["--write"]);
    assert_eq!(code, 1, "{text}");
    assert!(step_line(&text, "tls").starts_with('✔'), "{text}");
    let tenant = step_line(&text, "tenant");
    assert!(
        tenant.starts_with("✘ tenant: the gateway maps this certificate to no tenant"),
        "{tenant}"
    );
    for step in ["kmip", "write", "latency"] {
        assert!(step_line(&text, step).contains("skipped"), "{text}");
    }
    // With the rules at hand, they say the same.
    let policies = path(&dev.dir.join("policies"));
    let (code, text) = run(&tenant_flags(&dev, "stranger"), &["--routing", &policies]);
    assert_eq!(code, 1, "{text}");
    assert_step(&text, "tenant", "--routing denies it");

    // A tenant-a certificate from a CA the gateway does not trust.
    let foreign = CertificateAuthority::create("Foreign CA").expect("foreign CA");
    let (cert, key) = issue(&foreign, &tenant_a_spec(), &certs, "foreign");
    let (code, text) = run(&flags(&dev, &cert, &key), &[]);
    assert_eq!(code, 1, "{text}");
    let tls = step_line(&text, "tls");
    assert!(
        tls.starts_with("✘ tls: the gateway refused the client certificate"),
        "{tls}"
    );
    assert_step(&text, "certificate", "issuer CN=Foreign CA");
    assert_step(&text, "tenant", "skipped");

    // Our side refuses the server: --ca is not the gateway's CA.
    let mut wrong_ca = tenant_flags(&dev, "tenant-a");
    let foreign_ca = certs.join("foreign-ca.pem");
    std::fs::write(&foreign_ca, foreign.cert_pem()).expect("foreign ca.pem");
    wrong_ca[3] = path(&foreign_ca);
    let (code, text) = run(&wrong_ca, &[]);
    assert_eq!(code, 1, "{text}");
    let tls = step_line(&text, "tls");
    assert!(
        tls.contains("the gateway's certificate failed verification: UnknownIssuer"),
        "{tls}"
    );

    // An expired tenant-a certificate from the dev CA.
    let dev_ca = CertificateAuthority::load(&dev.dir.join("pki")).expect("dev CA");
    let now = time::OffsetDateTime::now_utc();
    let expired = CertSpec {
        validity: (
            now - time::Duration::days(30),
            now - time::Duration::days(1),
        ),
        ..tenant_a_spec()
    };
    let (cert, key) = issue(&dev_ca, &expired, &certs, "expired");
    let (code, text) = run(&flags(&dev, &cert, &key), &[]);
    assert_eq!(code, 1, "{text}");
    assert!(
        step_line(&text, "tls")
            .contains("refused the client certificate (TLS alert CertificateExpired)"),
        "{text}"
    );
    assert!(
        step_line(&text, "certificate").starts_with("✘ certificate: EXPIRED"),
        "{text}"
    );

    // No clientAuth usage; and a key that is not the certificate's.
    let server_only = CertSpec {
        client: false,
        server: true,
        ..tenant_a_spec()
    };
    let (cert, key) = issue(&dev_ca, &server_only, &certs, "server-only");
    let (code, text) = run(&flags(&dev, &cert, &key), &[]);
    assert_eq!(code, 1, "{text}");
    assert_step(&text, "certificate", "Extended Key Usage lacks clientAuth");
    let (code, text) = run(
        &flags(&dev, &dev.pki("tenant-a.pem"), &dev.pki("tenant-b-key.pem")),
        &[],
    );
    assert_eq!(code, 1, "{text}");
    assert_step(
        &text,
        "certificate",
        "the key does not belong to the certificate",
    );

    // Nothing listens there.
    let mut refused = tenant_flags(&dev, "tenant-a");
    let closed = testkit::net::free_addr();
    refused[1] = closed.to_string();
    let (code, text) = run(&refused, &[]);
    assert_eq!(code, 1, "{text}");
    let connect = step_line(&text, "connect");
    assert!(connect.starts_with("✘ connect:"), "{connect}");
    assert!(connect.to_lowercase().contains("refused"), "{connect}");
    assert!(text.contains("nothing listens there"), "{text}");
    assert_step(&text, "tls", "skipped");

    // A name that does not resolve, as JSON: still one entry per step.
    let mut unresolvable = tenant_flags(&dev, "tenant-a");
    unresolvable[1] = "no-such-host.invalid:5696".into();
    let (code, json) = run(&unresolvable, &["--json"]);
    assert_eq!(code, 1, "{json}");
    let doc: serde_json::Value = serde_json::from_str(&json).expect("JSON");
    assert_eq!(doc["ok"], false);
    let statuses: Vec<&str> = doc["steps"]
        .as_array()
        .expect("steps")
        .iter()
        .filter_map(|s| s["status"].as_str())
        .collect();
    assert_eq!(statuses.len(), STEPS.len(), "{json}");
    // The certificate step reads only files: it runs whatever the network does.
    assert_eq!(
        statuses,
        ["fail", "skipped", "skipped", "pass", "skipped", "skipped", "skipped", "skipped"],
        "{json}"
    );
}

#[test]
fn bad_arguments_exit_with_2() {
    const FILES: &str = "--ca a --cert b --key c";
    for args in [
        "--addr 127.0.0.1:5696".to_owned(),
        format!("--addr 127.0.0.1:0 {FILES}"),
        format!("--addr 127.0.0.1 {FILES} --timeout soon"),
        "--sidecar /tmp/x.sock --addr 127.0.0.1".to_owned(),
        format!("--addr h {FILES} --routing /nonexistent"),
    ] {
        let out = doctor(&args.split(' ').collect::<Vec<_>>());
        assert_eq!(
            out.status.code(),
            Some(2),
            "{args}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    // Unreadable certificate files are a failed check (exit 1), named in the output.
    let out = doctor(&[
        "--addr",
        "127.0.0.1:1",
        "--ca",
        "/nonexistent/ca.pem",
        "--cert",
        "/nonexistent/c.pem",
        "--key",
        "/nonexistent/k.pem",
    ]);
    assert_eq!(out.status.code(), Some(1));
    assert!(
        stdout(&out).contains("/nonexistent/c.pem"),
        "{}",
        stdout(&out)
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn through_the_sidecar_socket() {
    let dir = tempfile::tempdir().expect("tempdir");
    let dev = DevProcess::start(&dir.path().join("dev"));
    let tenant_dir = dir.path().join("tenant");
    install_tenant_cert(&dev.dir.join("pki"), "tenant-a", &tenant_dir);
    let sidecar = SidecarProcess::start(dev.https_addr, &tenant_dir, &dir.path().join("run"), &[]);
    sidecar.wait_ready(true, TIMEOUT);
    let socket = path(&sidecar.socket);

    let (code, text) = run(&[], &["--sidecar", &socket, "--write", "--timeout", "10s"]);
    assert_eq!(code, 0, "{text}");
    for step in ["connect", "tenant", "kmip", "write", "latency"] {
        assert!(step_line(&text, step).starts_with('✔'), "{text}");
    }
    for step in ["dns", "tls", "certificate"] {
        assert!(step_line(&text, step).contains("skipped"), "{text}");
    }
    assert_gone(&dev, &probe_uid(&text)).await;

    // A socket nobody serves.
    let missing = path(&dir.path().join("run").join("missing.sock"));
    let (code, text) = run(&[], &["--sidecar", &missing]);
    assert_eq!(code, 1, "{text}");
    assert!(
        step_line(&text, "connect").starts_with("✘ connect:"),
        "{text}"
    );

    // The stranger's certificate in the sidecar: the gateway's denial comes through.
    let stranger_dir = dir.path().join("stranger");
    install_tenant_cert(&dev.dir.join("pki"), "stranger", &stranger_dir);
    let stranger =
        SidecarProcess::start(dev.https_addr, &stranger_dir, &dir.path().join("run2"), &[]);
    let (code, text) = run(&[], &["--sidecar", &path(&stranger.socket)]);
    assert_eq!(code, 1, "{text}");
    assert_step(&text, "tenant", "maps this certificate to no tenant");
}
