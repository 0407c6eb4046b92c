//! Every request and response of the OASIS KMIP conformance test cases (v1.0 … v2.1):
//! parsed from the XML encoding, converted to typed messages where the operation is one
//! this library types, and round-tripped through TTLV, XML and JSON unchanged.
//!
//! The test cases live beside the repository in `shared/kmip/testcases` (override with
//! `OPENKCM_KMIP_TESTCASES`).

use std::path::{Path, PathBuf};

use kmip::message::{RequestMessage, ResponseMessage};
use kmip::ttlv::{decode, Item, Limits};
use kmip::xml::{self, StandIns};
use kmip::Tag;

fn testcase_dir() -> PathBuf {
    std::env::var_os("OPENKCM_KMIP_TESTCASES")
        .map(PathBuf::from)
        .unwrap_or_else(|| {
            Path::new(env!("CARGO_MANIFEST_DIR")).join("../../shared/kmip/testcases")
        })
}

fn xml_files(dir: &Path, out: &mut Vec<PathBuf>) {
    let mut entries: Vec<_> = std::fs::read_dir(dir)
        .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
        .map(|e| e.expect("directory entry").path())
        .collect();
    entries.sort();
    for path in entries {
        if path.is_dir() {
            xml_files(&path, out);
        } else if path.extension().is_some_and(|e| e == "xml") {
            out.push(path);
        }
    }
}

#[derive(Default, Debug)]
struct Counts {
    files: usize,
    messages: usize,
    batch_items: usize,
    typed_items: usize,
    typed_exact: usize,
}

#[test]
fn every_conformance_message_parses_types_and_round_trips() {
    let root = testcase_dir();
    let mut failures = Vec::new();
    let mut totals = Counts::default();
    for version in ["v1.0", "v1.3", "v1.4", "v2.0", "v2.1"] {
        let mut files = Vec::new();
        xml_files(&root.join(version), &mut files);
        assert!(
            !files.is_empty(),
            "no test cases under {}",
            root.join(version).display()
        );
        let mut counts = Counts::default();
        for path in &files {
            let name = path
                .strip_prefix(&root)
                .unwrap_or(path)
                .display()
                .to_string();
            let text = std::fs::read_to_string(path).expect("readable test case");
            counts.files += 1;
            let messages = match xml::parse_messages(&text, &mut StandIns::default()) {
                Ok(m) => m,
                Err(e) => {
                    failures.push(format!("{name}: XML: {e}"));
                    continue;
                }
            };
            for (i, message) in messages.iter().enumerate() {
                counts.messages += 1;
                let at = format!("{name} message {i}");
                check_message(message, &at, &mut counts, &mut failures);
            }
        }
        println!(
            "{version}: {} files, {} messages, {} batch items, {} typed, {} typed round trips exact",
            counts.files, counts.messages, counts.batch_items, counts.typed_items, counts.typed_exact
        );
        totals.files += counts.files;
        totals.messages += counts.messages;
        totals.batch_items += counts.batch_items;
        totals.typed_items += counts.typed_items;
        totals.typed_exact += counts.typed_exact;
    }
    println!("total: {totals:?}");
    assert!(
        failures.is_empty(),
        "{} failures:\n{}",
        failures.len(),
        failures.join("\n")
    );
    assert_eq!(totals.typed_items, totals.typed_exact);
}

fn check_message(message: &Item, at: &str, counts: &mut Counts, failures: &mut Vec<String>) {
    // TTLV: encode → decode gives the same tree.
    let wire = message.to_ttlv();
    match decode(&wire, &Limits::default()) {
        Ok(back) if &back == message => {}
        Ok(_) => failures.push(format!("{at}: TTLV round trip changed the message")),
        Err(e) => failures.push(format!("{at}: TTLV decode: {e}")),
    }
    // XML: print → parse gives the same tree.
    match xml::parse_item(&xml::print(message), &mut StandIns::default()) {
        Ok(back) if &back == message => {}
        Ok(_) => failures.push(format!("{at}: XML print/parse changed the message")),
        Err(e) => failures.push(format!("{at}: XML reparse: {e}")),
    }
    // JSON: print → parse gives the same tree.
    match kmip::json::parse(&kmip::json::print(message), &mut StandIns::default()) {
        Ok(back) if &back == message => {}
        Ok(_) => failures.push(format!("{at}: JSON print/parse changed the message")),
        Err(e) => failures.push(format!("{at}: JSON reparse: {e}")),
    }
    // Typed: the message decodes; typed payloads re-encode to the same tree.
    let typed = if message.tag == Tag::REQUEST_MESSAGE {
        RequestMessage::from_item(message).map(|m| {
            let typed: Vec<bool> = m.batch_items.iter().map(|b| b.payload.is_ok()).collect();
            let untyped: Vec<String> = m
                .batch_items
                .iter()
                .filter_map(|b| b.payload.as_ref().err())
                .filter(|u| {
                    !matches!(
                        u.error,
                        kmip::message::MessageError::UnsupportedOperation(_)
                    )
                })
                .map(|u| u.error.to_string())
                .collect();
            (typed, untyped, m.to_item())
        })
    } else {
        ResponseMessage::from_item(message).map(|m| {
            let typed: Vec<bool> = m
                .batch_items
                .iter()
                .map(|b| matches!(b.payload, Some(Ok(_))))
                .collect();
            let untyped: Vec<String> = m
                .batch_items
                .iter()
                .filter_map(|b| b.payload.as_ref().and_then(|p| p.as_ref().err()))
                .filter(|u| {
                    !matches!(
                        u.error,
                        kmip::message::MessageError::UnsupportedOperation(_)
                    )
                })
                .map(|u| u.error.to_string())
                .collect();
            (typed, untyped, m.to_item())
        })
    };
    match typed {
        Err(e) => failures.push(format!("{at}: typed decode: {e}")),
        Ok((typed, untyped, reencoded)) => {
            counts.batch_items += typed.len();
            let n_typed = typed.iter().filter(|t| **t).count();
            counts.typed_items += n_typed;
            for e in untyped {
                failures.push(format!(
                    "{at}: payload of a typed operation did not decode: {e}"
                ));
            }
            if &reencoded == message {
                counts.typed_exact += n_typed;
            } else {
                failures.push(format!(
                    "{at}: typed message re-encodes differently:\n{}",
                    diff(message, &reencoded)
                ));
            }
        }
    }
}

/// The first differing line of the two messages' XML, for a readable failure.
fn diff(a: &Item, b: &Item) -> String {
    let (a, b) = (xml::print(a), xml::print(b));
    for (n, (la, lb)) in a.lines().zip(b.lines()).enumerate() {
        if la != lb {
            return format!("  line {n}: expected {la}\n  line {n}:      got {lb}");
        }
    }
    format!(
        "  lengths differ: {} vs {} lines",
        a.lines().count(),
        b.lines().count()
    )
}
