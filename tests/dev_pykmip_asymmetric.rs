//! `openkcm dev` driven by the real PyKMIP 0.11 client with RSA key pairs (KMIP 1.2, 1.4 and
//! 2.0, tests/pykmip/asymmetric_flow.py): Create Key Pair with names and usage masks, Activate,
//! Locate, Sign and Signature Verify (PKCS#1 v1.5 and PSS, SHA-256), Get of the public key
//! (PKCS#1) checked against the signatures by the `cryptography` package, RSA-OAEP (SHA-256)
//! Encrypt with the public key and Decrypt with the private key, each crossed with
//! `cryptography` (the private key from Get), Revoke and Destroy.

mod dev_support;

use std::time::Duration;

use dev_support::{pykmip_failed_with, pykmip_ok, run_pykmip_script, DevProcess};
use kmip::message::AttributeName;
use kmip::ProtocolVersion;
use serde_json::{json, Value};

/// Runs tests/pykmip/asymmetric_flow.py against `dev` (PyKMIP's socket timeout is 30 s per
/// call; RSA key generation is well under).
fn asymmetric_flow(dev: &DevProcess, version: &str) -> Value {
    run_pykmip_script(
        dev,
        "asymmetric_flow.py",
        version,
        &[],
        Duration::from_secs(180),
    )
}

/// The value of step `name`, which must have succeeded.
fn ok<'a>(result: &'a Value, name: &str) -> &'a Value {
    pykmip_ok(result, &format!("/{name}"))
}

/// Step `name` failed, with one of the PyKMIP ResultReason names `reasons`.
fn failed_with(result: &Value, name: &str, reasons: &[&str]) {
    pykmip_failed_with(result, &format!("/{name}"), reasons)
}

fn check(result: &Value, version: &str) {
    let v = version;
    ok(result, "open");
    ok(result, "create_sign_pair");
    ok(result, "create_oaep_pair");
    let uids: Vec<&str> = ok(result, "uids")
        .as_array()
        .expect("uids")
        .iter()
        .map(|u| u.as_str().expect("uid"))
        .collect();
    assert_eq!(uids.len(), 4, "{v}");
    let mut distinct = uids.clone();
    distinct.sort_unstable();
    distinct.dedup();
    assert_eq!(distinct.len(), 4, "{v}: four distinct keys: {uids:?}");
    let [sign_pub, sign_priv, oaep_pub, oaep_priv] = uids[..] else {
        unreachable!()
    };
    ok(result, "activate");
    assert_eq!(
        ok(result, "locate"),
        &json!({
            "sign-pub": [sign_pub], "sign-priv": [sign_priv],
            "oaep-pub": [oaep_pub], "oaep-priv": [oaep_priv],
        }),
        "{v}: each key found by its own name"
    );

    // Get Attributes of everything parses in PyKMIP for both keys, carries what identifies
    // them, and only attributes this version defines (Link, which PyKMIP cannot read, is
    // left out: docs/kmip.md "Which attributes an answer carries").
    let pv = match v {
        "1.2" => ProtocolVersion::V1_2,
        "1.4" => ProtocolVersion::V1_4,
        _ => ProtocolVersion::V2_0,
    };
    for (step, uid, object_type) in [
        ("get_attributes_all_private", sign_priv, "PRIVATE_KEY"),
        ("get_attributes_all_public", sign_pub, "PUBLIC_KEY"),
    ] {
        let all = ok(result, step)
            .as_object()
            .unwrap_or_else(|| panic!("{v} {step}"));
        for (name, expected) in [
            ("Unique Identifier", json!([uid])),
            ("Object Type", json!([object_type])),
            ("Cryptographic Algorithm", json!(["RSA"])),
            ("Cryptographic Length", json!([2048])),
            ("State", json!(["ACTIVE"])),
        ] {
            assert_eq!(all.get(name), Some(&expected), "{v} {step} {name}: {all:?}");
        }
        for name in all.keys() {
            assert!(
                AttributeName::from_text(name).defined_in(pv),
                "{v} {step}: {name} is not a KMIP {v} attribute"
            );
        }
    }

    // A certificate PyKMIP registers comes back byte for byte, and its attributes parse.
    ok(result, "register_certificate");
    assert_eq!(ok(result, "get_certificate"), &json!(true), "{v}");
    let all = ok(result, "get_attributes_all_certificate")
        .as_object()
        .unwrap_or_else(|| panic!("{v} certificate attributes"));
    assert_eq!(
        all.get("Object Type"),
        Some(&json!(["CERTIFICATE"])),
        "{v}: {all:?}"
    );
    for name in all.keys() {
        assert!(
            AttributeName::from_text(name).defined_in(pv),
            "{v} certificate: {name} is not a KMIP {v} attribute"
        );
    }

    // The server signs and verifies; a tampered message is INVALID, not an error.
    for scheme in ["pkcs1v15", "pss"] {
        assert_eq!(ok(result, &format!("sign_{scheme}")), 256, "{v} {scheme}");
        assert_eq!(
            ok(result, &format!("verify_{scheme}")),
            "VALID",
            "{v} {scheme}"
        );
        assert_eq!(
            ok(result, &format!("verify_{scheme}_tampered")),
            "INVALID",
            "{v} {scheme}"
        );
    }

    // The public key from Get: PKCS#1, RSA-2048, and `cryptography` agrees with the server.
    let public = ok(result, "get_sign_public");
    assert_eq!(public["object_type"], "PUBLIC_KEY", "{v}: {public}");
    assert_eq!(public["key_format_type"], "PKCS_1", "{v}: {public}");
    assert_eq!(public["cryptographic_length"], 2048, "{v}: {public}");
    assert_eq!(public["key_size"], 2048, "{v}: {public}");
    assert_eq!(ok(result, "local_verify_pkcs1v15"), true, "{v}");
    assert_eq!(ok(result, "local_verify_pkcs1v15_tampered"), false, "{v}");
    // PSS with no salt length named: the hash's length (32 bytes for SHA-256).
    assert_eq!(ok(result, "local_pss_salt"), "digest", "{v}");
    assert_eq!(ok(result, "local_pss_salt_tampered"), &Value::Null, "{v}");

    // RSA-OAEP (SHA-256, MGF1 SHA-256) through the server and across to `cryptography`.
    assert_eq!(ok(result, "encrypt_oaep"), 256, "{v}: one RSA-2048 block");
    assert_eq!(ok(result, "decrypt_oaep"), true, "{v}: round trip");
    // A tampered ciphertext: the server refuses it (Cryptographic Failure), never a plaintext.
    failed_with(result, "decrypt_oaep_tampered", &["CRYPTOGRAPHIC_FAILURE"]);
    assert_eq!(ok(result, "get_oaep_public")["key_size"], 2048, "{v}");
    assert_eq!(ok(result, "server_decrypts_local"), true, "{v}");
    let private = ok(result, "get_oaep_private");
    assert_eq!(private["object_type"], "PRIVATE_KEY", "{v}: {private}");
    assert_eq!(private["matches_public"], true, "{v}: {private}");
    assert_eq!(ok(result, "local_decrypts_server"), true, "{v}");

    ok(result, "revoke");
    failed_with(
        result,
        "sign_after_revoke",
        &["WRONG_KEY_LIFECYCLE_STATE", "PERMISSION_DENIED"],
    );
    ok(result, "destroy");
    failed_with(
        result,
        "get_after_destroy",
        &["ITEM_NOT_FOUND", "OBJECT_NOT_FOUND", "OBJECT_DESTROYED"],
    );
}

#[test]
fn pykmip_rsa_key_pairs_sign_verify_oaep() {
    let dir = tempfile::Builder::new()
        .prefix("openkcm-dev-pykmip-rsa-")
        .tempdir()
        .expect("temporary directory");
    let mut dev = DevProcess::start(dir.path());
    for version in ["1.2", "1.4", "2.0"] {
        let result = asymmetric_flow(&dev, version);
        check(&result, version);
    }
    let (status, _) = dev.terminate();
    assert!(status.success(), "exit after SIGTERM: {status}");
}
