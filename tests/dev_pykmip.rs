//! `openkcm dev` driven by the real PyKMIP 0.11 client (KMIP 1.2, 1.4 and 2.0): the tenant
//! flow, tenant isolation, the unrouted certificate, SIGTERM, and keys surviving a restart.

mod dev_support;

use std::path::Path;
use std::process::Command;
use std::time::Duration;

use dev_support::{
    pykmip_failed_with as failed_with, pykmip_ok as ok, pykmip_python, run_pykmip_script,
    DevProcess,
};
use kmip::message::{
    AttributeName, CERTIFICATE_ISSUER_PARTS, CERTIFICATE_SUBJECT_PARTS, UNREADABLE_1X,
    UNREADABLE_2_0,
};
use kmip::ProtocolVersion;
use serde_json::{json, Value};

/// Runs tests/pykmip/dev_flow.py; returns the JSON it printed.
fn dev_flow(dev: &DevProcess, version: &str, extra: &[&str]) -> Value {
    run_script(dev, "dev_flow.py", version, extra)
}

/// Runs one of the tests/pykmip scripts against `dev` (PyKMIP's own socket timeout is 30 s
/// per call; the whole script gets 120 s).
fn run_script(dev: &DevProcess, name: &str, version: &str, extra: &[&str]) -> Value {
    run_pykmip_script(dev, name, version, extra, Duration::from_secs(120))
}

/// KMIP 1.x says Item Not Found, 2.x Object Not Found.
const NOT_FOUND: &[&str] = &["ITEM_NOT_FOUND", "OBJECT_NOT_FOUND"];

fn check_flow(result: &Value, version: &str) {
    ok(result, "/tenant_a/open");
    let uid = ok(result, "/tenant_a/create")
        .as_str()
        .unwrap_or_else(|| panic!("{version}: no uid: {result}"))
        .to_owned();
    assert_eq!(
        ok(result, "/tenant_a/get"),
        32,
        "{version}: AES-256 key length"
    );
    ok(result, "/tenant_a/activate");
    assert!(ok(result, "/tenant_a/encrypt").as_u64().unwrap_or(0) >= 16);
    assert_eq!(
        ok(result, "/tenant_a/decrypt"),
        true,
        "{version}: round trip"
    );
    assert_eq!(
        ok(result, "/tenant_a/locate"),
        &serde_json::json!([uid]),
        "{version}: locate by name"
    );
    // tenant-b neither sees nor touches tenant-a's key.
    assert_eq!(
        ok(result, "/tenant_b/locate"),
        &serde_json::json!([]),
        "{version}"
    );
    for op in ["get", "activate", "destroy"] {
        failed_with(result, &format!("/tenant_b/{op}"), NOT_FOUND);
    }
    // The certificate no rule matches is denied on every operation.
    for op in ["create", "get", "locate", "destroy"] {
        failed_with(result, &format!("/stranger/{op}"), &["PERMISSION_DENIED"]);
    }
    ok(result, "/tenant_a_end/revoke");
    ok(result, "/tenant_a_end/destroy");
    failed_with(
        result,
        "/tenant_a_end/get_after_destroy",
        &["ITEM_NOT_FOUND", "OBJECT_NOT_FOUND", "OBJECT_DESTROYED"],
    );
}

#[test]
fn pykmip_against_openkcm_dev_then_restart_keeps_keys() {
    let dir = tempfile::Builder::new()
        .prefix("openkcm-dev-pykmip-")
        .tempdir()
        .expect("temporary directory");
    let mut dev = DevProcess::start(dir.path());
    eprintln!("openkcm dev ready in {:?}", dev.startup);
    for file in [
        "ca.pem",
        "tenant-a.pem",
        "tenant-a-key.pem",
        "tenant-a-bundle.pem",
        "tenant-b.pem",
        "stranger.pem",
    ] {
        assert!(dev.pki(file).is_file(), "{file} missing");
    }
    assert!(
        dev.banner.contains("enableEncryption: true"),
        "{}",
        dev.banner
    );
    assert!(dev.banner.contains("ProxyKmipClient("), "{}", dev.banner);

    for version in ["1.2", "1.4", "2.0"] {
        let result = dev_flow(&dev, version, &[]);
        check_flow(&result, version);
    }
    let kept = dev_flow(&dev, "1.4", &["keep"]);
    let uid = ok(&kept, "/create").as_str().expect("uid").to_owned();

    let (status, took) = dev.terminate();
    eprintln!("openkcm dev stopped {took:?} after SIGTERM");
    assert!(status.success(), "exit after SIGTERM: {status}");
    drop(dev);

    // Second run on the same directory: same CA, same root key, same database.
    let ca = std::fs::read(dir.path().join("pki/ca.pem")).expect("ca.pem");
    let mut again = DevProcess::start(dir.path());
    assert!(again.banner.contains("nothing created"), "{}", again.banner);
    assert_eq!(
        std::fs::read(dir.path().join("pki/ca.pem")).expect("ca.pem"),
        ca,
        "the CA is reused"
    );
    let found = dev_flow(&again, "2.0", &["get", &uid]);
    assert_eq!(ok(&found, "/get"), 32, "key {uid} after restart");
    let (status, _) = again.terminate();
    assert!(status.success(), "exit after SIGTERM: {status}");
}

/// Get Attributes naming no attribute (the server chooses) and Get Attribute List, read by
/// the real PyKMIP 0.11 client in KMIP 1.2, 1.4 and 2.0: both answers parse and carry the
/// key's attributes, only attributes the version defines; the list names every attribute
/// returned; a request naming attributes gets exactly those.
#[test]
fn pykmip_reads_get_attributes_and_get_attribute_list() {
    let dir = tempfile::Builder::new()
        .prefix("openkcm-dev-pykmip-attrs-")
        .tempdir()
        .expect("temporary directory");
    let mut dev = DevProcess::start(dir.path());
    for (version, v) in [
        ("1.2", ProtocolVersion::V1_2),
        ("1.4", ProtocolVersion::V1_4),
        ("2.0", ProtocolVersion::V2_0),
    ] {
        let result = run_script(&dev, "attributes_flow.py", version, &[]);
        ok(&result, "/open");
        let uid = ok(&result, "/create").clone();
        ok(&result, "/activate");
        let all = ok(&result, "/get_attributes_all");
        let all = all
            .as_object()
            .unwrap_or_else(|| panic!("{version}: {all}"));
        for (name, expected) in [
            ("Unique Identifier", json!([uid])),
            ("Object Type", json!(["SYMMETRIC_KEY"])),
            ("Cryptographic Algorithm", json!(["AES"])),
            ("Cryptographic Length", json!([256])),
            ("State", json!(["ACTIVE"])),
        ] {
            assert_eq!(all.get(name), Some(&expected), "{version} {name}: {all:?}");
        }
        for name in [
            "Name",
            "Cryptographic Usage Mask",
            "Initial Date",
            "Activation Date",
            "Last Change Date",
        ] {
            assert!(all.contains_key(name), "{version}: {name} missing: {all:?}");
        }
        for name in all.keys() {
            assert!(
                AttributeName::from_text(name).defined_in(v),
                "{version}: {name} is not a KMIP {version} attribute"
            );
        }
        let list: Vec<&str> = ok(&result, "/get_attribute_list")
            .as_array()
            .unwrap_or_else(|| panic!("{version}: {result}"))
            .iter()
            .map(|n| n.as_str().expect("attribute name"))
            .collect();
        // The list names every attribute the version defines: those returned and more.
        for name in all.keys() {
            assert!(
                list.contains(&name.as_str()),
                "{version}: {name} not listed"
            );
        }
        for name in &list {
            assert!(
                AttributeName::from_text(name).defined_in(v),
                "{version}: {name} listed"
            );
        }
        let named = ok(&result, "/get_attributes_named");
        assert_eq!(
            named,
            &json!({"Cryptographic Algorithm": ["AES"], "State": ["ACTIVE"]}),
            "{version}"
        );
        assert_eq!(ok(&result, "/locate"), &json!([uid]), "{version}");
    }
    let (status, _) = dev.terminate();
    assert!(status.success(), "exit after SIGTERM: {status}");
}

/// The attributes left out for PyKMIP's sake are exactly ones the real PyKMIP 0.11 cannot
/// read (tests/pykmip/unreadable_attributes.py follows its decoding path): none left out
/// needlessly.
#[test]
fn attributes_left_out_are_unreadable_by_pykmip() {
    let script =
        Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/pykmip/unreadable_attributes.py");
    let names: Vec<&str> = UNREADABLE_1X
        .iter()
        .chain(UNREADABLE_2_0)
        .map(|t| t.name().expect("a spec tag"))
        .collect();
    let out = Command::new(pykmip_python())
        .arg(&script)
        .args(&names)
        .output()
        .expect("run unreadable_attributes.py");
    assert!(out.status.success(), "{out:?}");
    let readable: Value = serde_json::from_slice(&out.stdout).expect("JSON");
    for (list, version) in [(UNREADABLE_1X, "1.x"), (UNREADABLE_2_0, "2.0")] {
        for tag in list {
            let name = tag.name().expect("a spec tag");
            assert_eq!(
                readable[name][version], false,
                "{name} is left out of {version} answers, yet PyKMIP reads it"
            );
        }
    }
    // A certificate's name parts are left out of every answer PyKMIP may read (1.x, 2.0).
    let parts: Vec<&str> = CERTIFICATE_SUBJECT_PARTS
        .iter()
        .chain(&CERTIFICATE_ISSUER_PARTS)
        .map(|t| t.name().expect("a spec tag"))
        .collect();
    let out = Command::new(pykmip_python())
        .arg(&script)
        .args(&parts)
        .output()
        .expect("run unreadable_attributes.py");
    let readable: Value = serde_json::from_slice(&out.stdout).expect("JSON");
    for name in parts {
        assert_eq!(
            readable[name],
            json!({"1.x": false, "2.0": false}),
            "{name} is left out of 1.x and 2.0 answers, yet PyKMIP reads it"
        );
    }
    // And the attributes every key carries are read (Get Attributes above shows it end to
    // end): a sanity check that the probe does not call everything unreadable.
    let common = [
        "State",
        "Cryptographic Algorithm",
        "Cryptographic Length",
        "Name",
    ];
    let out = Command::new(pykmip_python())
        .arg(&script)
        .args(common)
        .output()
        .expect("run unreadable_attributes.py");
    let readable: Value = serde_json::from_slice(&out.stdout).expect("JSON");
    for name in common {
        assert_eq!(readable[name], json!({"1.x": true, "2.0": true}), "{name}");
    }
}
