//! TenantRouting rule files → decisions, on real certificates from the dev PKI.

use std::fs;
use std::path::{Path, PathBuf};

use gateway::identity::PeerIdentity;
use gateway::routing::{
    Decision, DenyReason, Route, RoutingTable, RoutingWarning, RuleRef, WarningKind,
};
use pki::{CertSpec, CertificateAuthority};

/// The seed's example, verbatim apart from the extensions it documents.
const SEED: &str = r#"
apiVersion: platform-mesh.io/v1
kind: TenantRouting
metadata: { name: tenant-routing }
spec:
  service: kmip-crypto-service          # informational
  routing:
    - match:
        certificate:
          subject:
            organizationalUnit: "tenant-a"
            commonName: "mongodb.tenant-a.svc"
            organization: "Platform Mesh"
          sanUri: "spiffe://mesh/ns/tenant-a/sa/mongodb"
          issuer: "CN=platform-mesh-ca"
      route:
        tenant: tenant-a
        database: tenant_a_keys
"#;

fn doc(rules: &str) -> String {
    format!(
        "apiVersion: platform-mesh.io/v1\nkind: TenantRouting\nmetadata: {{ name: test }}\n\
         spec:\n  service: kmip-crypto-service\n  routing:\n{rules}"
    )
}

/// One rule in the list, from a flow-style certificate match.
fn rule(certificate: &str, tenant: &str) -> String {
    format!("    - match: {{ certificate: {certificate} }}\n      route: {{ tenant: {tenant} }}\n")
}

struct Files(tempfile::TempDir);

impl Files {
    fn new() -> Self {
        Self(tempfile::tempdir().expect("tempdir"))
    }

    fn write(&self, name: &str, text: &str) -> PathBuf {
        let path = self.0.path().join(name);
        if let Some(parent) = path.parent() {
            fs::create_dir_all(parent).expect("mkdir");
        }
        fs::write(&path, text).expect("write");
        path
    }

    fn dir(&self) -> &Path {
        self.0.path()
    }

    fn table(&self, name: &str, text: &str) -> RoutingTable {
        let path = self.write(name, text);
        RoutingTable::load(&[path]).unwrap_or_else(|e| panic!("{e}"))
    }
}

struct Pki {
    ca: CertificateAuthority,
    other_ca: CertificateAuthority,
}

impl Pki {
    fn new() -> Self {
        Self {
            ca: CertificateAuthority::create("platform-mesh-ca").expect("CA"),
            other_ca: CertificateAuthority::create("other-ca").expect("CA"),
        }
    }

    /// A client certificate from the platform CA, shaped by `f`.
    fn peer(&self, f: impl FnOnce(&mut CertSpec)) -> PeerIdentity {
        self.peer_from(&self.ca, f)
    }

    fn peer_from(&self, ca: &CertificateAuthority, f: impl FnOnce(&mut CertSpec)) -> PeerIdentity {
        let mut spec = CertSpec {
            client: true,
            ..CertSpec::new("app")
        };
        f(&mut spec);
        let issued = ca.issue(&spec).expect("issue");
        PeerIdentity::from_der(&issued.cert_der).expect("identity")
    }
}

fn ou(spec: &mut CertSpec, ou: &str) {
    spec.organizational_units.push(ou.into());
}

fn tenant(decision: &Decision) -> Option<&str> {
    match decision {
        Decision::Allow(route) => Some(&route.tenant),
        Decision::Deny { .. } => None,
    }
}

fn label(decision: &Decision) -> &'static str {
    match decision {
        Decision::Allow(_) => "allow",
        Decision::Deny { reason } => reason.as_label(),
    }
}

#[test]
fn the_seed_format_parses_and_routes_a_matching_certificate() {
    let files = Files::new();
    let table = files.table("tenant-routing.yaml", SEED);
    assert_eq!(table.len(), 1);
    let pki = Pki::new();
    let mongodb = |spec: &mut CertSpec| {
        spec.common_name = "mongodb.tenant-a.svc".into();
        spec.organization = Some("Platform Mesh".into());
        ou(spec, "tenant-a");
        spec.uris
            .push("spiffe://mesh/ns/tenant-a/sa/mongodb".into());
    };
    assert_eq!(
        table.decide(&pki.peer(mongodb)),
        Decision::Allow(Route {
            tenant: "tenant-a".into(),
            database: Some("tenant_a_keys".into()),
            rule: RuleRef {
                file: files.dir().join("tenant-routing.yaml"),
                doc: 1,
                index: 1,
            },
        })
    );
    // All conditions must hold: lacking any one of them, no match.
    let without_uri = pki.peer(|spec| {
        mongodb(spec);
        spec.uris.clear();
    });
    let other_issuer = pki.peer_from(&pki.other_ca, mongodb);
    let other_org = pki.peer(|spec| {
        mongodb(spec);
        spec.organization = Some("Someone Else".into());
    });
    for peer in [without_uri, other_issuer, other_org] {
        assert_eq!(
            table.decide(&peer),
            Decision::Deny {
                reason: DenyReason::NoMatchingRule
            },
            "{peer:?}"
        );
    }
}

#[test]
fn each_condition_type_matches_on_its_own() {
    let files = Files::new();
    let pki = Pki::new();
    type Shape = fn(&mut CertSpec);
    let cases: [(&str, Shape, Shape); 8] = [
        (
            r#"{ subject: { organizationalUnit: tenant-a } }"#,
            |s| ou(s, "tenant-a"),
            |s| ou(s, "tenant-b"),
        ),
        (
            // Any of the certificate's OUs may satisfy the condition.
            r#"{ subject: { organizationalUnit: tenant-a } }"#,
            |s| {
                ou(s, "ops");
                ou(s, "tenant-a");
            },
            |s| ou(s, "tenant-aa"),
        ),
        (
            r#"{ subject: { commonName: mongodb.tenant-a.svc } }"#,
            |s| s.common_name = "mongodb.tenant-a.svc".into(),
            |s| s.common_name = "mongodb.tenant-b.svc".into(),
        ),
        (
            r#"{ subject: { organization: "Platform Mesh" } }"#,
            |s| s.organization = Some("Platform Mesh".into()),
            |s| s.organization = Some("platform mesh".into()),
        ),
        (
            r#"{ sanUri: "spiffe://mesh/ns/tenant-a/sa/mongodb" }"#,
            |s| s.uris.push("spiffe://mesh/ns/tenant-a/sa/mongodb".into()),
            |s| s.uris.push("spiffe://mesh/ns/tenant-a/sa/mongodb2".into()),
        ),
        (
            r#"{ sanUri: "spiffe://mesh/ns/tenant-a/*" }"#,
            |s| s.uris.push("spiffe://mesh/ns/tenant-a/sa/anything".into()),
            |s| s.uris.push("spiffe://mesh/ns/tenant-ab/sa/x".into()),
        ),
        (
            r#"{ issuer: "CN=platform-mesh-ca" }"#,
            |_| {},
            |_| {}, // issued by the other CA below
        ),
        (
            // Attribute names are case-insensitive in a DN.
            r#"{ issuer: "cn=platform-mesh-ca" }"#,
            |_| {},
            |_| {},
        ),
    ];
    for (i, (certificate, matching, other)) in cases.into_iter().enumerate() {
        let table = files.table(&format!("case-{i}.yaml"), &doc(&rule(certificate, "t")));
        let yes = pki.peer(matching);
        assert_eq!(
            tenant(&table.decide(&yes)),
            Some("t"),
            "{certificate} {yes:?}"
        );
        let no = if certificate.contains("issuer") {
            pki.peer_from(&pki.other_ca, other)
        } else {
            pki.peer(other)
        };
        assert_eq!(
            label(&table.decide(&no)),
            "no_matching_rule",
            "{certificate} {no:?}"
        );
    }
}

#[test]
fn a_refining_rule_wins_over_the_rule_it_refines() {
    let files = Files::new();
    let rules = [
        rule(
            r#"{ subject: { organizationalUnit: tenant-a } }"#,
            "tenant-a",
        ),
        rule(
            r#"{ subject: { organizationalUnit: tenant-a, commonName: admin } }"#,
            "tenant-a-admin",
        ),
        rule(r#"{ sanUri: "spiffe://mesh/ns/b/*" }"#, "tenant-b"),
        rule(
            r#"{ sanUri: "spiffe://mesh/ns/b/sa/batch/*" }"#,
            "tenant-b-batch",
        ),
        rule(
            r#"{ sanUri: "spiffe://mesh/ns/b/sa/batch/job" }"#,
            "tenant-b-job",
        ),
    ]
    .concat();
    let table = files.table("rules.yaml", &doc(&rules));
    let pki = Pki::new();
    let uri = |u: &'static str| move |s: &mut CertSpec| s.uris.push(u.into());

    // {OU, CN} refines {OU}.
    let admin = pki.peer(|s| {
        ou(s, "tenant-a");
        s.common_name = "admin".into();
    });
    assert_eq!(tenant(&table.decide(&admin)), Some("tenant-a-admin"));
    assert_eq!(
        tenant(&table.decide(&pki.peer(|s| ou(s, "tenant-a")))),
        Some("tenant-a")
    );
    // An exact URI refines a prefix it starts with, a longer prefix a shorter one it extends.
    for (u, expected) in [
        ("spiffe://mesh/ns/b/sa/batch/job", "tenant-b-job"),
        ("spiffe://mesh/ns/b/sa/batch/other", "tenant-b-batch"),
        ("spiffe://mesh/ns/b/sa/web", "tenant-b"),
    ] {
        assert_eq!(
            tenant(&table.decide(&pki.peer(uri(u)))),
            Some(expected),
            "{u}"
        );
    }
}

#[test]
fn matches_that_do_not_refine_each_other_are_allowed_when_they_agree_and_denied_when_they_do_not() {
    let files = Files::new();
    let pki = Pki::new();
    let both = |s: &mut CertSpec| {
        ou(s, "tenant-a");
        s.common_name = "shared".into();
    };

    // Agreeing: the first in file order is the one reported.
    let agreeing = [
        rule(
            r#"{ subject: { organizationalUnit: tenant-a } }"#,
            "tenant-a",
        ),
        rule(r#"{ subject: { commonName: shared } }"#, "tenant-a"),
    ]
    .concat();
    let table = files.table("agree.yaml", &doc(&agreeing));
    match table.decide(&pki.peer(both)) {
        Decision::Allow(route) => {
            assert_eq!(route.tenant, "tenant-a");
            assert_eq!(route.rule.index, 1);
        }
        other => panic!("{other:?}"),
    }

    // Disagreeing: denied, naming both rules.
    let disagreeing = [
        rule(
            r#"{ subject: { organizationalUnit: tenant-a } }"#,
            "tenant-a",
        ),
        rule(r#"{ subject: { commonName: shared } }"#, "tenant-b"),
    ]
    .concat();
    let path = files.write("disagree.yaml", &doc(&disagreeing));
    let table = RoutingTable::load(std::slice::from_ref(&path)).expect("loads");
    let at = |index| RuleRef {
        file: path.clone(),
        doc: 1,
        index,
    };
    let decision = table.decide(&pki.peer(both));
    assert_eq!(
        decision,
        Decision::Deny {
            reason: DenyReason::Ambiguous {
                rules: vec![at(1), at(2)]
            }
        }
    );
    assert_eq!(label(&decision), "ambiguous");
    // Certificates that match only one of them are routed as usual.
    assert_eq!(
        tenant(&table.decide(&pki.peer(|s| ou(s, "tenant-a")))),
        Some("tenant-a")
    );

    // A rule refining both settles the conflict for the certificates it covers.
    let settled = format!(
        "{disagreeing}{}",
        rule(
            r#"{ subject: { organizationalUnit: tenant-a, commonName: shared } }"#,
            "tenant-b"
        )
    );
    let table = files.table("settled.yaml", &doc(&settled));
    assert_eq!(tenant(&table.decide(&pki.peer(both))), Some("tenant-b"));

    // The same tenant with different databases is a conflict too.
    let databases =
        "    - match: { certificate: { subject: { organizationalUnit: tenant-a } } }\n      \
                     route: { tenant: tenant-a, database: keys_one }\n    \
                     - match: { certificate: { subject: { commonName: shared } } }\n      \
                     route: { tenant: tenant-a, database: keys_two }\n";
    let table = files.table("databases.yaml", &doc(databases));
    assert_eq!(label(&table.decide(&pki.peer(both))), "ambiguous");
}

/// docs/routing.md's example rules (rule for rule), as a list for `doc`.
fn documented_rules() -> String {
    [
        rule(
            r#"{ subject: { organizationalUnit: tenant-a } }"#,
            "tenant-a",
        ),
        rule(
            r#"{ subject: { organizationalUnit: tenant-a, commonName: reporting } }"#,
            "tenant-a-reporting",
        ),
        rule(r#"{ sanUri: "spiffe://mesh/ns/b/*" }"#, "tenant-b"),
        rule(
            r#"{ sanUri: "spiffe://mesh/ns/b/sa/batch" }"#,
            "tenant-b-batch",
        ),
        rule(r#"{ subject: { commonName: shared } }"#, "tenant-c"),
    ]
    .concat()
}

/// The hostile tenant: a pod of namespace b (routed by its SPIFFE id) that gets a
/// certificate with `CN=shared` must not become tenant-c because an exact CN condition
/// "outranks" a sanUri prefix. Rules on different attributes never outrank each other.
#[test]
fn a_pod_of_namespace_b_with_cn_shared_is_denied_not_routed_to_tenant_c() {
    let files = Files::new();
    let path = files.write("docs.yaml", &doc(&documented_rules()));
    let table = RoutingTable::load(std::slice::from_ref(&path)).unwrap_or_else(|e| panic!("{e}"));
    let pki = Pki::new();
    let pod = pki.peer(|s| {
        s.common_name = "shared".into();
        s.uris.push("spiffe://mesh/ns/b/pod".into());
    });
    let at = |index| RuleRef {
        file: path.clone(),
        doc: 1,
        index,
    };
    assert_eq!(
        table.decide(&pod),
        Decision::Deny {
            reason: DenyReason::Ambiguous {
                rules: vec![at(3), at(5)]
            }
        }
    );
    // An exact sanUri (rule 4) does not outrank the CN rule either.
    let batch = pki.peer(|s| {
        s.common_name = "shared".into();
        s.uris.push("spiffe://mesh/ns/b/sa/batch".into());
    });
    assert_eq!(label(&table.decide(&batch)), "ambiguous");
    let text = table.explain(&pod);
    assert!(text.contains("rule 3: matches: AMBIGUOUS"), "{text}");
    assert!(text.contains("rule 5: matches: AMBIGUOUS"), "{text}");
}

/// More conditions, or more exact ones, do not outrank a rule on other attributes; only a
/// rule whose conditions imply every condition of the other (a refinement) does.
#[test]
fn only_a_refining_rule_outranks_another() {
    let files = Files::new();
    let pki = Pki::new();
    let rules = [
        rule(r#"{ subject: { organizationalUnit: x } }"#, "tenant-x"),
        rule(
            r#"{ subject: { organizationalUnit: x, commonName: y } }"#,
            "tenant-y",
        ),
        rule(
            r#"{ subject: { commonName: z, organization: o } }"#,
            "tenant-z",
        ),
        rule(r#"{ sanUri: "spiffe://mesh/ns/x/*" }"#, "tenant-y"),
    ]
    .concat();
    let table = files.table("refine.yaml", &doc(&rules));
    let cert = |unit: &'static str, cn: &'static str, uri: Option<&'static str>| {
        pki.peer(move |s| {
            ou(s, unit);
            s.common_name = cn.into();
            s.organization = Some("o".into());
            s.uris.extend(uri.map(String::from));
        })
    };
    // Rule 2 refines rule 1 ({OU=x, CN=y} implies {OU=x}): it wins, and rule 1 still
    // routes what rule 2 does not cover.
    assert_eq!(
        tenant(&table.decide(&cert("x", "y", None))),
        Some("tenant-y")
    );
    assert_eq!(
        tenant(&table.decide(&cert("x", "app", None))),
        Some("tenant-x")
    );
    // Two conditions on other attributes (rule 3) do not outrank rule 1's one.
    assert_eq!(label(&table.decide(&cert("x", "z", None))), "ambiguous");
    // Rule 2 does not refine rule 4 (no sanUri condition), and they agree on the route:
    // rule 1 is refined by rule 2, so it does not count.
    let agreeing = table.decide(&cert("x", "y", Some("spiffe://mesh/ns/x/pod")));
    match agreeing {
        Decision::Allow(route) => {
            assert_eq!((route.tenant.as_str(), route.rule.index), ("tenant-y", 2))
        }
        other => panic!("{other:?}"),
    }
    // An exact OU (rule 1) does not outrank a sanUri prefix (rule 4) either.
    assert_eq!(
        label(&table.decide(&cert("x", "app", Some("spiffe://mesh/ns/x/pod")))),
        "ambiguous"
    );
}

#[test]
fn a_san_uri_prefix_must_end_at_a_path_boundary() {
    let files = Files::new();
    let rules = [
        rule(r#"{ sanUri: "spiffe://mesh/ns/b/*" }"#, "tenant-b"),
        rule(r#"{ sanUri: "spiffe://mesh/ns/b*" }"#, "tenant-b"),
        rule(r#"{ sanUri: "spiffe://mesh/ns/b" }"#, "tenant-b"),
    ]
    .concat();
    let path = files.write("prefix.yaml", &doc(&rules));
    let err = RoutingTable::load(std::slice::from_ref(&path)).expect_err("refused");
    assert_eq!(err.problems().len(), 1, "{err}");
    let problem = &err.problems()[0];
    assert_eq!((problem.doc, problem.rule), (Some(1), Some(2)));
    let shown = err.to_string();
    assert!(
        shown.starts_with(&format!(
            r#"{} doc 1 rule 2: match.certificate.sanUri "spiffe://mesh/ns/b*" "#,
            path.display()
        )),
        "{shown}"
    );
    assert!(shown.contains("path boundary"), "{shown}");
    assert!(shown.contains("must end with /"), "{shown}");
}

/// (rule, other rule) of every overlap warning, and the rules warned about as matching
/// only on requester-chosen fields.
fn warned(table: &RoutingTable) -> (Vec<(usize, usize)>, Vec<usize>) {
    let mut overlaps = Vec::new();
    let mut chosen = Vec::new();
    for warning in table.warnings() {
        match &warning.kind {
            WarningKind::Overlap { other } => overlaps.push((warning.rule.index, other.index)),
            WarningKind::RequesterChosen => chosen.push(warning.rule.index),
            other => panic!("{other:?}"),
        }
    }
    (overlaps, chosen)
}

fn find_warning(table: &RoutingTable, rule: usize, overlapping: Option<usize>) -> &RoutingWarning {
    table
        .warnings()
        .iter()
        .find(|w| {
            w.rule.index == rule
                && match &w.kind {
                    WarningKind::Overlap { other } => overlapping == Some(other.index),
                    _ => overlapping.is_none(),
                }
        })
        .unwrap_or_else(|| panic!("no warning for rule {rule}: {:?}", table.warnings()))
}

#[test]
fn loading_warns_about_overlapping_rules_and_rules_on_requester_chosen_fields() {
    let files = Files::new();
    let path = files.write("docs.yaml", &doc(&documented_rules()));
    let table = RoutingTable::load(std::slice::from_ref(&path)).unwrap_or_else(|e| panic!("{e}"));
    // Rules on different attributes for different tenants overlap; 2 refines 1 and 4
    // refines 3; 2 and 5 want different CNs, so one certificate (one CN) matches one.
    let (overlaps, chosen) = warned(&table);
    assert_eq!(
        overlaps,
        [(1, 3), (1, 4), (1, 5), (2, 3), (2, 4), (3, 5), (4, 5)]
    );
    assert_eq!(chosen, [5]);
    let p = path.display();
    let overlap = find_warning(&table, 3, Some(5)).to_string();
    assert!(
        overlap.starts_with(&format!(
            "{p} doc 1 rule 3: overlaps {p} doc 1 rule 5: this rule routes to tenant tenant-b, \
             that one to tenant tenant-c, and a certificate with subject.commonName = \"shared\" \
             and sanUri starts with \"spiffe://mesh/ns/b/\" matches both"
        )),
        "{overlap}"
    );
    assert!(overlap.contains("denied as ambiguous"), "{overlap}");
    let cn_only = find_warning(&table, 5, None).to_string();
    assert_eq!(
        cn_only,
        format!(
            "{p} doc 1 rule 5: matches only on subject.commonName, which whoever requests a \
             certificate chooses; add a subject.organizationalUnit or sanUri condition, or \
             make sure the issuer controls subject.commonName"
        )
    );
}

#[test]
fn overlap_warnings_leave_out_refinements_agreeing_routes_and_decided_overlaps() {
    let files = Files::new();
    let table = |name: &str, rules: &[String]| files.table(name, &doc(&rules.concat()));
    let ou_x = || rule(r#"{ subject: { organizationalUnit: x } }"#, "t1");

    // OU=x and CN=y overlap...
    let cn_y = rule(r#"{ subject: { commonName: y, organization: o } }"#, "t2");
    assert_eq!(
        warned(&table("a.yaml", &[ou_x(), cn_y.clone()])).0,
        [(1, 2)]
    );
    // ...unless a rule with exactly both conditions decides the overlap.
    let both = rule(
        r#"{ subject: { organizationalUnit: x, commonName: y, organization: o } }"#,
        "t3",
    );
    assert_eq!(
        warned(&table("b.yaml", &[ou_x(), cn_y.clone(), both])).0,
        []
    );
    // A narrower rule covering part of the overlap does not decide all of it.
    let part = rule(
        r#"{ subject: { organizationalUnit: x, commonName: y, organization: o }, sanUri: "spiffe://m/a/" }"#,
        "t3",
    );
    assert_eq!(warned(&table("c.yaml", &[ou_x(), cn_y, part])).0, [(1, 2)]);
    // The same route: no warning; the same tenant in another database: a warning.
    let same = rule(r#"{ sanUri: "spiffe://m/ns/x/*" }"#, "t1");
    assert_eq!(warned(&table("d.yaml", &[ou_x(), same])).0, []);
    let other_db = "    - match: { certificate: { sanUri: \"spiffe://m/ns/x/*\" } }\n      \
                    route: { tenant: t1, database: other_keys }\n";
    assert_eq!(
        warned(&table("e.yaml", &[ou_x(), other_db.into()])).0,
        [(1, 2)]
    );
    // Nested sanUri prefixes: the longer refines the shorter, unless the shorter has a
    // condition the longer lacks. Disjoint prefixes and different URIs never overlap.
    let nested = [
        rule(r#"{ sanUri: "spiffe://m/ns/b/sa/*" }"#, "t1"),
        rule(
            r#"{ sanUri: "spiffe://m/ns/b/*", subject: { organizationalUnit: z } }"#,
            "t2",
        ),
        rule(r#"{ sanUri: "spiffe://m/ns/b/sa/web/*" }"#, "t3"),
        rule(r#"{ sanUri: "spiffe://m/ns/c/*" }"#, "t4"),
        rule(r#"{ sanUri: "spiffe://m/ns/b/sa/job" }"#, "t5"),
    ];
    let t = table("f.yaml", &nested);
    assert_eq!(warned(&t).0, [(1, 2), (2, 3), (2, 5)]);
    assert!(
        find_warning(&t, 1, Some(2)).message.contains(
            r#"a certificate with subject.organizationalUnit = "z" and sanUri starts with "spiffe://m/ns/b/sa/" matches both"#
        ),
        "{:?}",
        t.warnings()
    );
}

#[test]
fn rules_on_requester_chosen_fields_alone_are_warned_about() {
    let files = Files::new();
    let rules = [
        rule(r#"{ subject: { commonName: app } }"#, "t1"),
        rule(r#"{ subject: { organization: Org } }"#, "t2"),
        rule(
            r#"{ subject: { commonName: app, organization: Org } }"#,
            "t3",
        ),
        rule(r#"{ issuer: "CN=platform-mesh-ca" }"#, "t4"),
        rule(
            r#"{ subject: { commonName: db }, issuer: "CN=platform-mesh-ca" }"#,
            "t4",
        ),
        rule(
            r#"{ subject: { organizationalUnit: ou, commonName: app } }"#,
            "t1",
        ),
        rule(
            r#"{ sanUri: "spiffe://m/ns/x/*", issuer: "CN=platform-mesh-ca" }"#,
            "t4",
        ),
    ]
    .concat();
    let table = files.table("chosen.yaml", &doc(&rules));
    assert_eq!(warned(&table).1, [1, 2, 3, 4, 5]);
    let message = |i| find_warning(&table, i, None).message.clone();
    assert!(
        message(3).starts_with(
            "matches only on subject.commonName and subject.organization, which whoever requests"
        ),
        "{}",
        message(3)
    );
    assert!(
        message(4).starts_with(
            "matches only on issuer, so every certificate that CA issues is routed to tenant t4"
        ),
        "{}",
        message(4)
    );
    assert!(
        message(5).starts_with("matches only on subject.commonName (and issuer), which"),
        "{}",
        message(5)
    );
}

#[test]
fn warnings_are_kept_up_to_a_limit_and_the_rest_counted() {
    let files = Files::new();
    // 100 OU rules and 20 sanUri rules for other tenants: 2000 overlapping pairs.
    let mut rules = String::new();
    for i in 0..100 {
        rules += &rule(
            &format!("{{ subject: {{ organizationalUnit: ou-{i} }} }}"),
            &format!("ou-{i}"),
        );
    }
    for i in 0..20 {
        rules += &rule(
            &format!(r#"{{ sanUri: "spiffe://mesh/ns/n{i}/*" }}"#),
            &format!("ns-{i}"),
        );
    }
    let table = files.table("many.yaml", &doc(&rules));
    assert_eq!(table.warnings().len(), gateway::routing::MAX_WARNINGS);
    assert_eq!(
        table.warnings_left_out(),
        2000 - gateway::routing::MAX_WARNINGS
    );
}

#[test]
fn every_problem_is_reported_at_once_with_file_document_and_rule() {
    let files = Files::new();
    let first = format!(
        "{}---\n{}---\n{}",
        doc(&[
            rule(
                r#"{ subject: { organisationalUnit: tenant-a } }"#,
                "tenant-a"
            ),
            rule(
                r#"{ subject: { organizationalUnit: tenant-a } }"#,
                "\"a b\""
            ),
            "    - match: {}\n      route: { tenant: everyone }\n".into(),
            "    - match: { certificate: { subject: { commonName: db } } }\n      \
             route: { tenant: tenant-a, database: tenant-a-keys }\n"
                .into(),
        ]
        .concat()),
        doc(&[
            rule(r#"{ sanUri: "*" }"#, "t"),
            rule(r#"{ sanUri: "spiffe://*/sa/x" }"#, "t"),
            rule(r#"{ issuer: "not a DN" }"#, "t"),
            rule(r#"{ subject: { commonName: " padded" } }"#, "t"),
            rule(r#"{ subject: { commonName: ok }, sanUri: "" }"#, "t"),
        ]
        .concat()),
        "apiVersion: platform-mesh.io/v1\nkind: TenantRouting\nspecs: {}\n",
    );
    let second = "apiVersion: v1\nkind: ConfigMap\nspec: { routing: [] }\n";
    let a = files.write("rules/a.yaml", &first);
    files.write("rules/b.yaml", second);
    let err = RoutingTable::load(&[files.dir().join("rules")]).expect_err("invalid");
    let shown = err.to_string();
    let a = a.display();
    let b = files.dir().join("rules/b.yaml");
    let b = b.display();
    let expected = [
        format!("{a} doc 1 rule 1: unknown field `organisationalUnit`, expected one of `organizationalUnit`, `commonName`, `organization`"),
        format!(r#"{a} doc 1 rule 2: route.tenant "a b" is not a valid tenant id (1-128 of A-Z a-z 0-9 . _ -)"#),
        format!("{a} doc 1 rule 3: match has no conditions"),
        format!(r#"{a} doc 1 rule 4: route.database "tenant-a-keys" is not a valid database name (1-63 of A-Z a-z 0-9 _)"#),
        format!(r#"{a} doc 2 rule 1: match.certificate.sanUri "*" is only a wildcard"#),
        format!(r#"{a} doc 2 rule 2: match.certificate.sanUri "spiffe://*/sa/x" has a * before the end"#),
        format!(r#"{a} doc 2 rule 3: match.certificate.issuer "not a DN" is not an RFC 4514 DN"#),
        format!(r#"{a} doc 2 rule 4: match.certificate.subject.commonName " padded" has leading or trailing whitespace"#),
        format!(r#"{a} doc 2 rule 5: match.certificate.sanUri "" is empty"#),
        format!("{a} doc 3: unknown field `specs`"),
        format!("{b} doc 1: expected apiVersion platform-mesh.io/v1 kind TenantRouting, found apiVersion v1 kind ConfigMap"),
    ];
    for line in &expected {
        assert!(
            shown.contains(line.as_str()),
            "missing {line:?} in:\n{shown}"
        );
    }
    assert_eq!(err.problems().len(), expected.len(), "{shown}");
    assert!(
        shown.starts_with("11 problems in the routing rules:"),
        "{shown}"
    );
    let problem = &err.problems()[1];
    assert_eq!((problem.doc, problem.rule), (Some(1), Some(2)));
}

#[test]
fn yaml_syntax_errors_and_unreadable_paths_are_reported() {
    let files = Files::new();
    let broken = files.write("broken.yaml", "apiVersion: [unclosed\n");
    let binary = files.write("binary.yaml", "\u{0}");
    fs::write(&binary, [0xff, 0xfe, 0x00]).expect("write");
    let empty_dir = files.dir().join("empty");
    fs::create_dir(&empty_dir).expect("mkdir");
    let missing = files.dir().join("missing.yaml");
    let comments = files.write("comments.yaml", "# nothing yet\n---\n");
    let no_routing = files.write(
        "no-routing.yaml",
        "apiVersion: platform-mesh.io/v1\nkind: TenantRouting\nspec: { service: x }\n",
    );
    let err = RoutingTable::load(&[
        broken.clone(),
        binary.clone(),
        empty_dir.clone(),
        missing.clone(),
        comments.clone(),
        no_routing.clone(),
    ])
    .expect_err("invalid");
    let shown = err.to_string();
    for needle in [
        format!("{} doc 1: invalid YAML", broken.display()),
        format!("{}: not UTF-8", binary.display()),
        format!(
            "{}: directory has no *.yaml or *.yml files",
            empty_dir.display()
        ),
        format!("{}: cannot read", missing.display()),
        format!("{}: has no TenantRouting document", comments.display()),
        format!("{} doc 1: missing field `routing`", no_routing.display()),
    ] {
        assert!(shown.contains(&needle), "missing {needle:?} in:\n{shown}");
    }
    assert!(RoutingTable::load(&[]).is_err());
}

#[test]
fn identical_matches_with_different_routes_are_a_load_error() {
    let files = Files::new();
    let rules = [
        rule(
            r#"{ subject: { organizationalUnit: tenant-a } }"#,
            "tenant-a",
        ),
        rule(
            r#"{ subject: { organizationalUnit: tenant-a } }"#,
            "tenant-a",
        ),
        rule(
            r#"{ subject: { organizationalUnit: tenant-a } }"#,
            "tenant-b",
        ),
    ]
    .concat();
    let path = files.write("dup.yaml", &doc(&rules));
    let err = RoutingTable::load(std::slice::from_ref(&path)).expect_err("conflict");
    assert_eq!(
        err.to_string(),
        format!(
            "{p} doc 1 rule 3: has the same match as {p} doc 1 rule 1 but routes to tenant tenant-b instead of tenant tenant-a",
            p = path.display()
        )
    );
}

#[test]
fn a_directory_is_read_in_file_name_order_skipping_other_files() {
    let files = Files::new();
    let pki = Pki::new();
    let ou_rule = |tenant: &str| {
        doc(&rule(
            r#"{ subject: { organizationalUnit: shared } }"#,
            tenant,
        ))
    };
    files.write("policies/20-second.yaml", &ou_rule("t"));
    files.write("policies/10-first.yml", &ou_rule("t"));
    files.write("policies/notes.txt", "not rules");
    files.write("policies/.hidden.yaml", "not: [valid");
    files.write("policies/sub/ignored.yaml", "not: [valid");
    let dir = files.dir().join("policies");
    let table = RoutingTable::load(std::slice::from_ref(&dir)).expect("loads");
    assert_eq!(
        table.files(),
        [dir.join("10-first.yml"), dir.join("20-second.yaml")]
    );
    let refs: Vec<_> = table.rules().iter().map(|r| r.at().file.clone()).collect();
    assert_eq!(refs, table.files());
    // Identical rules, same tenant: the first file's rule is the one reported.
    match table.decide(&pki.peer(|s| ou(s, "shared"))) {
        Decision::Allow(route) => assert_eq!(route.rule.file, dir.join("10-first.yml")),
        other => panic!("{other:?}"),
    }
}

#[test]
fn several_documents_per_file_and_empty_documents() {
    let files = Files::new();
    let text = format!(
        "---\n{}---\n# only a comment\n---\n{}---\n",
        doc(&rule(
            r#"{ subject: { organizationalUnit: tenant-a } }"#,
            "tenant-a"
        )),
        doc(&rule(
            r#"{ subject: { organizationalUnit: tenant-b } }"#,
            "tenant-b"
        )),
    );
    let table = files.table("multi.yaml", &text);
    let docs: Vec<_> = table
        .rules()
        .iter()
        .map(|r| (r.at().doc, r.at().index))
        .collect();
    assert_eq!(docs, [(1, 1), (3, 1)]);
    let pki = Pki::new();
    assert_eq!(
        tenant(&table.decide(&pki.peer(|s| ou(s, "tenant-b")))),
        Some("tenant-b")
    );
}

#[test]
fn explain_says_why_each_rule_matches_or_not() {
    let files = Files::new();
    let rules = [
        rule(
            r#"{ subject: { organizationalUnit: tenant-a } }"#,
            "tenant-a",
        ),
        rule(
            r#"{ subject: { organizationalUnit: tenant-b } }"#,
            "tenant-b",
        ),
    ]
    .concat();
    let table = files.table("rules.yaml", &doc(&rules));
    let pki = Pki::new();
    let text = table.explain(&pki.peer(|s| ou(s, "tenant-a")));
    assert!(text.contains("rule 1: matches: CHOSEN"), "{text}");
    assert!(
        text.contains(
            r#"subject.organizationalUnit = "tenant-b": no (certificate has OU ["tenant-a"])"#
        ),
        "{text}"
    );
    assert!(
        text.contains("decision: ALLOW tenant tenant-a by "),
        "{text}"
    );
    let denied = table.explain(&pki.peer(|s| ou(s, "tenant-c")));
    assert!(
        denied.contains("decision: DENY (no_matching_rule): no rule matches"),
        "{denied}"
    );
}

#[test]
fn the_example_policies_route_tenant_a_and_tenant_b_by_ou() {
    let policies = Path::new(env!("CARGO_MANIFEST_DIR")).join("../policies");
    let table = RoutingTable::load(&[policies]).unwrap_or_else(|e| panic!("{e}"));
    let pki = Pki::new();
    for t in ["tenant-a", "tenant-b"] {
        assert_eq!(tenant(&table.decide(&pki.peer(|s| ou(s, t)))), Some(t));
    }
    assert_eq!(
        label(&table.decide(&pki.peer(|s| ou(s, "tenant-c")))),
        "no_matching_rule"
    );
}

/// The example table in docs/routing.md, row for row.
#[test]
fn the_documented_precedence_examples_hold() {
    let files = Files::new();
    let table = files.table("docs.yaml", &doc(&documented_rules()));
    let pki = Pki::new();
    let subject = |unit: &'static str, cn: &'static str| {
        pki.peer(move |s| {
            ou(s, unit);
            s.common_name = cn.into();
        })
    };
    let uri = |u: &'static str| pki.peer(move |s| s.uris.push(u.into()));
    let uri_cn = |u: &'static str, cn: &'static str| {
        pki.peer(move |s| {
            s.uris.push(u.into());
            s.common_name = cn.into();
        })
    };
    let cases = [
        (subject("tenant-a", "app"), "tenant-a"),
        (subject("tenant-a", "reporting"), "tenant-a-reporting"),
        (uri("spiffe://mesh/ns/b/sa/web"), "tenant-b"),
        (uri("spiffe://mesh/ns/b/sa/batch"), "tenant-b-batch"),
        (subject("tenant-a", "shared"), "ambiguous"),
        (uri_cn("spiffe://mesh/ns/b/pod", "shared"), "ambiguous"),
        (uri("spiffe://mesh/ns/b-evil/pod"), "no_matching_rule"),
        (subject("tenant-x", "app"), "no_matching_rule"),
    ];
    for (peer, expected) in cases {
        let decision = table.decide(&peer);
        let got = tenant(&decision).unwrap_or(label(&decision));
        assert_eq!(got, expected, "{peer:?}");
    }
}
