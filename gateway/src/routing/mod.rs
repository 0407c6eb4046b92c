//! TenantRouting: which tenant a verified client certificate belongs to. The tenant
//! decision is made here and nowhere else.
//!
//! ```text
//!  rule files ──RoutingTable::load──► RoutingTable ──decide(&PeerIdentity)──► Decision
//!  (YAML files,                       (validated,                             Allow(Route)
//!   directories,                       immutable)                             Deny { reason }
//!   ConfigMap mounts) ◄── polled by RoutingWatcher, which swaps in a new table (arc-swap)
//! ```
//!
//! A rule matches when all its conditions hold; a subject condition holds when any of the
//! certificate's values for that attribute equals it.
//!
//! **Precedence is refinement, nothing else.** Rule N *refines* rule B when every
//! certificate N matches is provably matched by B too, and not the other way round: for
//! every condition of B, N has a condition **on the same attribute** that implies it — the
//! same value, or for `sanUri` an exact URI or a prefix that starts with B's prefix — and
//! N is not B's equal. So {OU=x, CN=y} refines {OU=x}, `sanUri: …/ns/b/sa/*` and
//! `sanUri: …/ns/b/sa/web` refine `sanUri: …/ns/b/*`; but nothing crosses attributes: an
//! exact CN rule does not outrank a `sanUri` prefix rule, and two conditions do not outrank
//! one unless they include (an implication of) it. A tenant that can choose one attribute
//! of its certificate therefore cannot use it to outrank the rule another attribute
//! routes it by.
//!
//! Deciding: of the rules that match a certificate, those refined by another matching rule
//! are set aside. The rest (the *deciding* rules) must all agree on the route (tenant and
//! database): then the first of them in file order is reported. If they disagree the
//! certificate is denied as [`DenyReason::Ambiguous`]. No match: denied. Rules for
//! different routes that can match one certificate without either refining the other are
//! legal (they deny the overlap); loading reports them as [`RoutingWarning`]s, as it does
//! rules that match only on fields the certificate's requester chooses. `docs/routing.md`
//! has worked examples.

mod config;
mod ou_rules;
mod watch;

use std::fmt::{self, Write as _};
use std::path::PathBuf;

pub use config::{
    is_valid_database_name, is_valid_tenant_id, RoutingError, RoutingProblem, RoutingWarning,
    WarningKind, API_VERSION, KIND, MAX_DATABASE_NAME_LEN, MAX_TENANT_ID_LEN, MAX_WARNINGS,
};
pub use ou_rules::tenant_ou_rules;
pub use watch::RoutingWatcher;

use crate::identity::PeerIdentity;
use config::{Checked, Sources};

/// Where a rule is written: file, 1-based YAML document, 1-based index in `spec.routing`.
/// Carried into every decision for the audit log and `explain`.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct RuleRef {
    pub file: PathBuf,
    pub doc: usize,
    pub index: usize,
}

impl fmt::Display for RuleRef {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{} doc {} rule {}",
            self.file.display(),
            self.doc,
            self.index
        )
    }
}

/// The certificate attribute a condition reads. A rule has at most one condition per
/// attribute.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
enum Attribute {
    SubjectOu,
    SubjectCn,
    SubjectO,
    SanUri,
    Issuer,
}

impl Attribute {
    /// One bit per attribute, for sets of attributes.
    fn bit(self) -> u8 {
        match self {
            Self::SubjectOu => 1,
            Self::SubjectCn => 2,
            Self::SubjectO => 4,
            Self::SanUri => 8,
            Self::Issuer => 16,
        }
    }

    /// As written in a rule (and in messages).
    fn name(self) -> &'static str {
        match self {
            Self::SubjectOu => "subject.organizationalUnit",
            Self::SubjectCn => "subject.commonName",
            Self::SubjectO => "subject.organization",
            Self::SanUri => "sanUri",
            Self::Issuer => "issuer",
        }
    }

    /// Whoever requests a certificate writes its subject CN and O, and a CA that is not
    /// told otherwise signs them as asked. (OU and URI SANs are what the platform's issuance
    /// controls; the issuer alone says nothing about the tenant.)
    fn chosen_by_requester(self) -> bool {
        matches!(self, Self::SubjectCn | Self::SubjectO)
    }
}

/// One condition of a rule's `match.certificate`. The derived order (by variant, then
/// value) is the canonical order of a rule's conditions.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
enum Condition {
    SubjectOu(String),
    SubjectCn(String),
    SubjectO(String),
    SanUriExact(String),
    /// `sanUri` written with a trailing `*`; holds the part before it.
    SanUriPrefix(String),
    /// RFC 4514, normalised by a parse/print round trip.
    Issuer(String),
}

impl Condition {
    fn attribute(&self) -> Attribute {
        match self {
            Self::SubjectOu(_) => Attribute::SubjectOu,
            Self::SubjectCn(_) => Attribute::SubjectCn,
            Self::SubjectO(_) => Attribute::SubjectO,
            Self::SanUriExact(_) | Self::SanUriPrefix(_) => Attribute::SanUri,
            Self::Issuer(_) => Attribute::Issuer,
        }
    }

    /// Whether every certificate this condition holds for also satisfies `other`: only
    /// ever for a condition on the same attribute — the same value, or a `sanUri` (exact or
    /// prefix) that starts with `other`'s prefix.
    fn implies(&self, other: &Condition) -> bool {
        match (self, other) {
            (Self::SubjectOu(a), Self::SubjectOu(b))
            | (Self::SubjectCn(a), Self::SubjectCn(b))
            | (Self::SubjectO(a), Self::SubjectO(b))
            | (Self::SanUriExact(a), Self::SanUriExact(b))
            | (Self::Issuer(a), Self::Issuer(b)) => a == b,
            (Self::SanUriExact(a) | Self::SanUriPrefix(a), Self::SanUriPrefix(b)) => {
                a.starts_with(b.as_str())
            }
            _ => false,
        }
    }

    fn holds(&self, peer: &PeerIdentity) -> bool {
        let any = |values: &[String], wanted: &str| values.iter().any(|v| v == wanted);
        match self {
            Self::SubjectOu(ou) => any(&peer.subject_ou, ou),
            Self::SubjectCn(cn) => any(&peer.subject_cn, cn),
            Self::SubjectO(o) => any(&peer.subject_o, o),
            Self::SanUriExact(uri) => any(&peer.san_uri, uri),
            Self::SanUriPrefix(prefix) => peer.san_uri.iter().any(|u| u.starts_with(prefix)),
            Self::Issuer(dn) => peer.issuer == *dn,
        }
    }

    /// What the certificate has for this condition's attribute, for `explain`.
    fn certificate_side(&self, peer: &PeerIdentity) -> String {
        match self {
            Self::SubjectOu(_) => format!("OU {:?}", peer.subject_ou),
            Self::SubjectCn(_) => format!("CN {:?}", peer.subject_cn),
            Self::SubjectO(_) => format!("O {:?}", peer.subject_o),
            Self::SanUriExact(_) | Self::SanUriPrefix(_) => format!("SAN URI {:?}", peer.san_uri),
            Self::Issuer(_) => format!("issuer {:?}", peer.issuer),
        }
    }
}

impl fmt::Display for Condition {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::SubjectOu(v) => write!(f, "subject.organizationalUnit = {v:?}"),
            Self::SubjectCn(v) => write!(f, "subject.commonName = {v:?}"),
            Self::SubjectO(v) => write!(f, "subject.organization = {v:?}"),
            Self::SanUriExact(v) => write!(f, "sanUri = {v:?}"),
            Self::SanUriPrefix(v) => write!(f, "sanUri starts with {v:?}"),
            Self::Issuer(v) => write!(f, "issuer = {v:?}"),
        }
    }
}

/// Where a rule sends a matching client.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
struct RouteTarget {
    tenant: String,
    database: Option<String>,
}

impl fmt::Display for RouteTarget {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "tenant {}", self.tenant)?;
        if let Some(db) = &self.database {
            write!(f, " (database {db})")?;
        }
        Ok(())
    }
}

/// A validated rule: at least one condition and at most one per attribute, a valid tenant
/// id and database name.
#[derive(Clone, Debug)]
pub struct RoutingRule {
    at: RuleRef,
    /// In canonical order (see [`Condition`]).
    conditions: Vec<Condition>,
    route: RouteTarget,
}

impl RoutingRule {
    fn new(at: RuleRef, mut conditions: Vec<Condition>, route: RouteTarget) -> Self {
        conditions.sort();
        Self {
            at,
            conditions,
            route,
        }
    }

    pub fn at(&self) -> &RuleRef {
        &self.at
    }

    pub fn tenant(&self) -> &str {
        &self.route.tenant
    }

    pub fn database(&self) -> Option<&str> {
        self.route.database.as_deref()
    }

    /// Whether both rules send a client to the same tenant and database.
    pub fn same_route(&self, other: &RoutingRule) -> bool {
        self.route == other.route
    }

    pub fn matches(&self, peer: &PeerIdentity) -> bool {
        self.conditions.iter().all(|c| c.holds(peer))
    }

    /// The attributes the rule has conditions on, one [`Attribute::bit`] each.
    fn attributes(&self) -> u8 {
        self.conditions
            .iter()
            .fold(0, |set, c| set | c.attribute().bit())
    }

    /// Whether this rule refines `other`: every certificate it matches provably matches
    /// `other` (each of `other`'s conditions is implied by one of this rule's, on the same
    /// attribute), and the two are not equal. Only a refining rule outranks another.
    pub fn refines(&self, other: &RoutingRule) -> bool {
        self.within(other) && !other.within(self)
    }

    /// Whether every certificate this rule matches also matches `other`.
    fn within(&self, other: &RoutingRule) -> bool {
        other
            .conditions
            .iter()
            .all(|broad| self.conditions.iter().any(|narrow| narrow.implies(broad)))
    }

    /// Whether one certificate with one value per attribute (one OU, one URI SAN…) can
    /// match both rules: their conditions on a shared attribute are compatible (equal
    /// values; an exact URI under a prefix; nested prefixes).
    pub fn overlaps(&self, other: &RoutingRule) -> bool {
        self.conditions.iter().all(|mine| {
            other.conditions.iter().all(|theirs| {
                theirs.attribute() != mine.attribute()
                    || mine.implies(theirs)
                    || theirs.implies(mine)
            })
        })
    }

    /// The conditions a certificate with one value per attribute must meet to match both
    /// rules, in canonical order: per attribute, the narrower condition. `None` when no
    /// such certificate exists (see [`overlaps`](Self::overlaps)).
    fn intersection(&self, other: &RoutingRule) -> Option<Vec<Condition>> {
        let mut both: Vec<Condition> = Vec::with_capacity(self.conditions.len() + 1);
        for mine in &self.conditions {
            match other
                .conditions
                .iter()
                .find(|theirs| theirs.attribute() == mine.attribute())
            {
                None => both.push(mine.clone()),
                Some(theirs) if mine.implies(theirs) => both.push(mine.clone()),
                Some(theirs) if theirs.implies(mine) => both.push(theirs.clone()),
                Some(_) => return None,
            }
        }
        both.extend(
            other
                .conditions
                .iter()
                .filter(|theirs| {
                    !self
                        .conditions
                        .iter()
                        .any(|mine| mine.attribute() == theirs.attribute())
                })
                .cloned(),
        );
        both.sort();
        Some(both)
    }
}

impl fmt::Display for RoutingRule {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, condition) in self.conditions.iter().enumerate() {
            if i > 0 {
                f.write_str(" and ")?;
            }
            write!(f, "{condition}")?;
        }
        write!(f, " -> {}", self.route)
    }
}

/// An allowed client's destination, and the rule that decided it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Route {
    pub tenant: String,
    pub database: Option<String>,
    pub rule: RuleRef,
}

/// The routing decision for one client certificate.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Decision {
    Allow(Route),
    Deny { reason: DenyReason },
}

impl fmt::Display for Decision {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Allow(route) => {
                write!(f, "ALLOW tenant {}", route.tenant)?;
                if let Some(db) = &route.database {
                    write!(f, " (database {db})")?;
                }
                write!(f, " by {}", route.rule)
            }
            Self::Deny { reason } => write!(f, "DENY ({}): {reason}", reason.as_label()),
        }
    }
}

/// Why a client gets no tenant.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum DenyReason {
    /// No rule matches the certificate.
    NoMatchingRule,
    /// The deciding matching rules (those no other matching rule refines; all listed, in
    /// file order) route to different tenants or databases: picking one would be a guess,
    /// and one a tenant could steer by choosing a certificate attribute.
    Ambiguous { rules: Vec<RuleRef> },
    /// The verified certificate did not yield a [`PeerIdentity`] (for the gateway, which
    /// parses the certificate before asking for a decision): it does not parse, or — on a
    /// resumed TLS session — it no longer verifies against the client CA bundle in force.
    UnreadableCertificate,
}

impl DenyReason {
    /// The value of the `reason` label of `openkcm_tenant_denials_total`.
    pub fn as_label(&self) -> &'static str {
        match self {
            Self::NoMatchingRule => "no_matching_rule",
            Self::Ambiguous { .. } => "ambiguous",
            Self::UnreadableCertificate => "unreadable_certificate",
        }
    }
}

impl fmt::Display for DenyReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::NoMatchingRule => f.write_str("no rule matches the client certificate"),
            Self::Ambiguous { rules } => {
                f.write_str("matching rules route differently and none refines another: ")?;
                for (i, rule) in rules.iter().enumerate() {
                    if i > 0 {
                        f.write_str(", ")?;
                    }
                    write!(f, "{rule}")?;
                }
                Ok(())
            }
            Self::UnreadableCertificate => f.write_str("the client certificate cannot be read"),
        }
    }
}

/// A validated, immutable set of rules in file order.
#[derive(Clone, Debug)]
pub struct RoutingTable {
    rules: Vec<RoutingRule>,
    files: Vec<PathBuf>,
    warnings: Vec<RoutingWarning>,
    warnings_left_out: usize,
}

impl RoutingTable {
    /// Reads and validates every rule in `paths` (files, or directories whose `*.yaml` and
    /// `*.yml` files are read in name order). Fails with every problem found.
    pub fn load(paths: &[PathBuf]) -> Result<Self, RoutingError> {
        Self::from_sources(&Sources::read(paths))
    }

    /// Validates documents held in memory exactly as [`load`](Self::load) validates files;
    /// each document's name stands for its file in problems and rule references.
    pub fn from_documents(documents: Vec<(PathBuf, Vec<u8>)>) -> Result<Self, RoutingError> {
        Self::from_sources(&Sources::in_memory(documents))
    }

    fn from_sources(sources: &Sources) -> Result<Self, RoutingError> {
        let Checked {
            rules,
            warnings,
            warnings_left_out,
        } = sources.rules()?;
        Ok(Self {
            rules,
            files: sources.files().map(PathBuf::from).collect(),
            warnings,
            warnings_left_out,
        })
    }

    /// The rules, in file order.
    pub fn rules(&self) -> &[RoutingRule] {
        &self.rules
    }

    /// The files the rules were read from, in order.
    pub fn files(&self) -> &[PathBuf] {
        &self.files
    }

    /// What is legal but likely not meant: rules for different routes that can match one
    /// certificate without either refining the other (such a certificate is denied as
    /// ambiguous), and rules that match only on fields the requester of a certificate
    /// chooses. In file order of the rule they are about; at most [`MAX_WARNINGS`].
    pub fn warnings(&self) -> &[RoutingWarning] {
        &self.warnings
    }

    /// How many warnings were found beyond the [`MAX_WARNINGS`] kept.
    pub fn warnings_left_out(&self) -> usize {
        self.warnings_left_out
    }

    pub fn len(&self) -> usize {
        self.rules.len()
    }

    pub fn is_empty(&self) -> bool {
        self.rules.is_empty()
    }

    /// The tenant for `peer`, or why it has none.
    pub fn decide(&self, peer: &PeerIdentity) -> Decision {
        let deciding = self.deciding_matches(peer);
        let Some(first) = deciding.first() else {
            return Decision::Deny {
                reason: DenyReason::NoMatchingRule,
            };
        };
        if deciding.iter().any(|rule| rule.route != first.route) {
            return Decision::Deny {
                reason: DenyReason::Ambiguous {
                    rules: deciding.iter().map(|rule| rule.at.clone()).collect(),
                },
            };
        }
        Decision::Allow(Route {
            tenant: first.route.tenant.clone(),
            database: first.route.database.clone(),
            rule: first.at.clone(),
        })
    }

    /// The matching rules that no other matching rule refines, in file order.
    fn deciding_matches(&self, peer: &PeerIdentity) -> Vec<&RoutingRule> {
        let matching: Vec<&RoutingRule> = self
            .rules
            .iter()
            .filter(|rule| rule.matches(peer))
            .collect();
        matching
            .iter()
            .copied()
            .filter(|rule| !matching.iter().any(|other| other.refines(rule)))
            .collect()
    }

    /// Every rule with whether and why it matches `peer`, then the decision. For humans
    /// (`openkcm routing check`); the format may change.
    pub fn explain(&self, peer: &PeerIdentity) -> String {
        let decision = self.decide(peer);
        let deciding = self.deciding_matches(peer);
        let mut out = String::new();
        let _ = writeln!(
            out,
            "{} rule(s) from {} file(s), in file order:",
            self.rules.len(),
            self.files.len()
        );
        for rule in &self.rules {
            let refined_by = deciding.iter().find(|other| other.refines(rule));
            let verdict = if !rule.matches(peer) {
                "no match".to_owned()
            } else if let Some(refining) = refined_by {
                format!("matches, but {} refines it and also matches", refining.at)
            } else {
                match &decision {
                    Decision::Allow(route) if route.rule == rule.at => "matches: CHOSEN".into(),
                    Decision::Allow(_) => "matches, same route as an earlier rule".into(),
                    Decision::Deny { .. } => "matches: AMBIGUOUS".into(),
                }
            };
            let _ = writeln!(out, "- {}: {verdict}\n    route: {}", rule.at, rule.route);
            for condition in &rule.conditions {
                if condition.holds(peer) {
                    let _ = writeln!(out, "    {condition}: yes");
                } else {
                    let has = condition.certificate_side(peer);
                    let _ = writeln!(out, "    {condition}: no (certificate has {has})");
                }
            }
        }
        let _ = writeln!(out, "decision: {decision}");
        out
    }
}

#[cfg(test)]
mod tests {
    //! Refinement, overlap and intersection hold against every certificate of a small
    //! universe: what the rules claim without a certificate is what certificates do.

    use proptest::prelude::*;

    use super::*;

    const VALUES: [&str; 2] = ["a", "b"];
    const ISSUERS: [&str; 2] = ["CN=i1", "CN=i2"];
    const EXACT_URIS: [&str; 3] = ["s://m/a/x", "s://m/a/y/z", "s://m/b/x"];
    const PREFIXES: [&str; 4] = ["s://m/", "s://m/a/", "s://m/a/y/", "s://m/b/"];
    /// Every exact URI and, under every prefix, URIs other than each exact one.
    const URIS: [&str; 7] = [
        "s://m/a/x",
        "s://m/a/y/z",
        "s://m/a/y/w",
        "s://m/a/q",
        "s://m/b/x",
        "s://m/b/y",
        "s://m/c",
    ];

    fn rule(index: usize, conditions: Vec<Condition>, tenant: &str) -> RoutingRule {
        RoutingRule::new(
            RuleRef {
                file: PathBuf::from("r.yaml"),
                doc: 1,
                index,
            },
            conditions,
            RouteTarget {
                tenant: tenant.into(),
                database: None,
            },
        )
    }

    fn conditions() -> impl Strategy<Value = Vec<Condition>> {
        let value = || proptest::option::of(prop::sample::select(&VALUES[..]));
        let uri = proptest::option::of(prop_oneof![
            prop::sample::select(&EXACT_URIS[..]).prop_map(|u| Condition::SanUriExact(u.into())),
            prop::sample::select(&PREFIXES[..]).prop_map(|p| Condition::SanUriPrefix(p.into())),
        ]);
        let issuer = proptest::option::of(prop::sample::select(&ISSUERS[..]));
        (value(), value(), value(), uri, issuer)
            .prop_map(|(ou, cn, o, uri, issuer)| {
                let mut all = Vec::new();
                all.extend(ou.map(|v| Condition::SubjectOu(v.into())));
                all.extend(cn.map(|v| Condition::SubjectCn(v.into())));
                all.extend(o.map(|v| Condition::SubjectO(v.into())));
                all.extend(uri);
                all.extend(issuer.map(|v| Condition::Issuer(v.into())));
                all
            })
            .prop_filter("a rule has a condition", |all| !all.is_empty())
    }

    /// Every certificate with at most one value per attribute from the pools.
    fn single_valued_peers() -> Vec<PeerIdentity> {
        let one = |pool: &[&str]| {
            std::iter::once(Vec::new())
                .chain(pool.iter().map(|v| vec![(*v).to_owned()]))
                .collect::<Vec<_>>()
        };
        let mut peers = Vec::new();
        for ou in one(&VALUES) {
            for cn in one(&VALUES) {
                for o in one(&VALUES) {
                    for uri in one(&URIS) {
                        for issuer in ISSUERS {
                            peers.push(PeerIdentity {
                                subject_ou: ou.clone(),
                                subject_cn: cn.clone(),
                                subject_o: o.clone(),
                                san_uri: uri.clone(),
                                issuer: issuer.into(),
                                ..PeerIdentity::default()
                            });
                        }
                    }
                }
            }
        }
        peers
    }

    proptest! {
        /// `within` is containment of match sets, exactly: never claimed when a
        /// certificate matches one rule and not the other (also with several values per
        /// attribute), and claimed whenever no certificate tells them apart.
        #[test]
        fn within_is_exactly_containment(
            narrow in conditions(),
            broad in conditions(),
            extra_ou in prop::sample::select(&VALUES[..]),
            extra_uri in prop::sample::select(&URIS[..]),
        ) {
            let (n, b) = (rule(1, narrow, "t1"), rule(2, broad, "t2"));
            let mut contained = true;
            for peer in single_valued_peers() {
                let mut multi = peer.clone();
                multi.subject_ou.push(extra_ou.into());
                multi.san_uri.push(extra_uri.into());
                for p in [&peer, &multi] {
                    if n.matches(p) && !b.matches(p) {
                        prop_assert!(!n.within(&b), "{n} within {b}, but not for {p:?}");
                        contained = false;
                    }
                }
            }
            prop_assert_eq!(contained, n.within(&b), "{} / {}", n, b);
            prop_assert_eq!(n.refines(&b), n.within(&b) && !b.within(&n));
        }

        /// A certificate with one value per attribute matches both rules exactly when it
        /// matches their intersection.
        #[test]
        fn the_intersection_is_what_matches_both(left in conditions(), right in conditions()) {
            let (l, r) = (rule(1, left, "t1"), rule(2, right, "t2"));
            let both = l.intersection(&r);
            prop_assert_eq!(l.overlaps(&r), both.is_some());
            for peer in single_valued_peers() {
                let in_both = l.matches(&peer) && r.matches(&peer);
                let in_intersection = both
                    .as_ref()
                    .is_some_and(|all| all.iter().all(|c| c.holds(&peer)));
                prop_assert_eq!(in_both, in_intersection, "{} / {} / {:?}", l, r, peer);
            }
        }
    }

    #[test]
    fn rules_on_different_attributes_never_refine_each_other() {
        let cn = rule(1, vec![Condition::SubjectCn("shared".into())], "t1");
        let uri = rule(
            2,
            vec![Condition::SanUriPrefix("spiffe://mesh/ns/b/".into())],
            "t2",
        );
        let two = rule(
            3,
            vec![
                Condition::SubjectCn("shared".into()),
                Condition::SubjectO("o".into()),
            ],
            "t3",
        );
        assert!(!cn.refines(&uri) && !uri.refines(&cn));
        assert!(!two.refines(&uri) && two.refines(&cn) && !cn.refines(&two));
    }
}
