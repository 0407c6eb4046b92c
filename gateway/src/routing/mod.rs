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
//! certificate's values for that attribute equals it. Among matching rules the most
//! specific wins ([`Specificity`]: more conditions, then more exact conditions, then a
//! longer `sanUri` prefix). Equally specific matches that agree on the route: the first in
//! file order is reported. Equally specific matches that disagree: denied as
//! [`DenyReason::Ambiguous`]. No match: denied. `docs/routing.md` has worked examples.

mod config;
mod ou_rules;
mod watch;

use std::fmt::{self, Write as _};
use std::path::PathBuf;

pub use config::{
    is_valid_database_name, is_valid_tenant_id, RoutingError, RoutingProblem, API_VERSION, KIND,
    MAX_DATABASE_NAME_LEN, MAX_TENANT_ID_LEN,
};
pub use ou_rules::tenant_ou_rules;
pub use watch::RoutingWatcher;

use crate::identity::PeerIdentity;
use config::Sources;

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

/// One condition of a rule's `match.certificate`.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
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

/// How narrowly a rule selects certificates; compared field by field, in this order:
/// 1. the number of conditions (more is more specific);
/// 2. the number of exact conditions (all but a `sanUri` prefix are exact);
/// 3. the length of the `sanUri` prefix (a longer prefix selects fewer URIs).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub struct Specificity {
    conditions: usize,
    exact: usize,
    prefix_len: usize,
}

impl Specificity {
    fn of(conditions: &[Condition]) -> Self {
        let prefix_len = conditions
            .iter()
            .map(|c| match c {
                Condition::SanUriPrefix(p) => p.len(),
                _ => 0,
            })
            .sum();
        Self {
            conditions: conditions.len(),
            exact: conditions
                .iter()
                .filter(|c| !matches!(c, Condition::SanUriPrefix(_)))
                .count(),
            prefix_len,
        }
    }
}

impl fmt::Display for Specificity {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let plural = if self.conditions == 1 { "" } else { "s" };
        write!(
            f,
            "{} condition{plural}, {} exact",
            self.conditions, self.exact
        )?;
        if self.prefix_len > 0 {
            write!(f, ", sanUri prefix of {} bytes", self.prefix_len)?;
        }
        Ok(())
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

/// A validated rule: at least one condition, a valid tenant id and database name.
#[derive(Clone, Debug)]
pub struct RoutingRule {
    at: RuleRef,
    conditions: Vec<Condition>,
    route: RouteTarget,
    specificity: Specificity,
}

impl RoutingRule {
    fn new(at: RuleRef, conditions: Vec<Condition>, route: RouteTarget) -> Self {
        Self {
            specificity: Specificity::of(&conditions),
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

    pub fn specificity(&self) -> Specificity {
        self.specificity
    }

    pub fn matches(&self, peer: &PeerIdentity) -> bool {
        self.conditions.iter().all(|c| c.holds(peer))
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
    /// The most specific matching rules (all listed, in file order) route to different
    /// tenants or databases: picking one would be a guess.
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
                f.write_str("equally specific rules route to different tenants: ")?;
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
}

impl RoutingTable {
    /// Reads and validates every rule in `paths` (files, or directories whose `*.yaml` and
    /// `*.yml` files are read in name order). Fails with every problem found.
    pub fn load(paths: &[PathBuf]) -> Result<Self, RoutingError> {
        Self::from_sources(&Sources::read(paths))
    }

    fn from_sources(sources: &Sources) -> Result<Self, RoutingError> {
        Ok(Self {
            rules: sources.rules()?,
            files: sources.files().map(PathBuf::from).collect(),
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

    pub fn len(&self) -> usize {
        self.rules.len()
    }

    pub fn is_empty(&self) -> bool {
        self.rules.is_empty()
    }

    /// The tenant for `peer`, or why it has none.
    pub fn decide(&self, peer: &PeerIdentity) -> Decision {
        let best = self.most_specific_matches(peer);
        let Some(first) = best.first() else {
            return Decision::Deny {
                reason: DenyReason::NoMatchingRule,
            };
        };
        if best.iter().any(|rule| rule.route != first.route) {
            return Decision::Deny {
                reason: DenyReason::Ambiguous {
                    rules: best.iter().map(|rule| rule.at.clone()).collect(),
                },
            };
        }
        Decision::Allow(Route {
            tenant: first.route.tenant.clone(),
            database: first.route.database.clone(),
            rule: first.at.clone(),
        })
    }

    /// The matching rules of the highest specificity, in file order.
    fn most_specific_matches(&self, peer: &PeerIdentity) -> Vec<&RoutingRule> {
        let mut best: Vec<&RoutingRule> = Vec::new();
        for rule in self.rules.iter().filter(|rule| rule.matches(peer)) {
            match best.first().map(|b| rule.specificity.cmp(&b.specificity)) {
                None | Some(std::cmp::Ordering::Equal) => best.push(rule),
                Some(std::cmp::Ordering::Greater) => best = vec![rule],
                Some(std::cmp::Ordering::Less) => {}
            }
        }
        best
    }

    /// Every rule with whether and why it matches `peer`, then the decision. For humans
    /// (`openkcm routing check`); the format may change.
    pub fn explain(&self, peer: &PeerIdentity) -> String {
        let decision = self.decide(peer);
        let top = self
            .most_specific_matches(peer)
            .first()
            .map(|rule| rule.specificity);
        let mut out = String::new();
        let _ = writeln!(
            out,
            "{} rule(s) from {} file(s), in file order:",
            self.rules.len(),
            self.files.len()
        );
        for rule in &self.rules {
            let verdict = if !rule.matches(peer) {
                "no match"
            } else if Some(rule.specificity) != top {
                "matches, but a more specific rule also matches"
            } else {
                match &decision {
                    Decision::Allow(route) if route.rule == rule.at => "matches: CHOSEN",
                    Decision::Allow(_) => "matches, same route as an earlier rule",
                    Decision::Deny { .. } => "matches: AMBIGUOUS",
                }
            };
            let _ = writeln!(
                out,
                "- {}: {verdict}\n    route: {}; specificity: {}",
                rule.at, rule.route, rule.specificity
            );
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
