//! TenantRouting rule files: reading them (files, directories, Kubernetes ConfigMap
//! mounts) and turning their YAML documents into validated rules, every problem at once.

use std::collections::{HashMap, HashSet};
use std::fmt;
use std::fs;
use std::io::Read;
use std::path::{Path, PathBuf};
use std::str::FromStr;

use serde::Deserialize;
use serde_norway::Value;
use x509_cert::name::RdnSequence;

use super::{Attribute, Condition, RouteTarget, RoutingRule, RuleRef};

/// The `apiVersion` of a TenantRouting document.
pub const API_VERSION: &str = "platform-mesh.io/v1";
/// The `kind` of a TenantRouting document.
pub const KIND: &str = "TenantRouting";
// The tenant-id and database-name rules are keysvc's (the gateway↔keysvc contract): a
// route that validates here is a route keysvc accepts.
pub use kmip::contract::{
    is_valid_database_name, is_valid_tenant_id, MAX_DATABASE_NAME_LEN, MAX_TENANT_ID_LEN,
};

/// Largest rule file read. Rule files are a few KiB; a ConfigMap cannot exceed 1 MiB.
const MAX_FILE_BYTES: u64 = 1 << 20;

/// One thing wrong with the rule files, located as precisely as known.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RoutingProblem {
    pub file: PathBuf,
    /// 1-based YAML document index within the file.
    pub doc: Option<usize>,
    /// 1-based index within the document's `spec.routing` list.
    pub rule: Option<usize>,
    pub message: String,
}

impl fmt::Display for RoutingProblem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.file.display())?;
        if let Some(doc) = self.doc {
            write!(f, " doc {doc}")?;
        }
        if let Some(rule) = self.rule {
            write!(f, " rule {rule}")?;
        }
        write!(f, ": {}", self.message)
    }
}

/// Something legal in the rules that is likely not meant; reported by `openkcm routing
/// check` and logged when the gateway loads the rules, never a reason to refuse them.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RoutingWarning {
    /// The rule the warning is about.
    pub rule: RuleRef,
    pub kind: WarningKind,
    pub message: String,
}

/// What a [`RoutingWarning`] is about.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum WarningKind {
    /// `rule` and `other` (a later rule) route differently, a certificate can match both,
    /// neither refines the other and no rule decides their overlap: such a certificate is
    /// denied as ambiguous.
    Overlap { other: RuleRef },
    /// The rule's only conditions are on the subject CN or O (which whoever requests a
    /// certificate writes), or on the issuer alone (every certificate of that CA).
    RequesterChosen,
}

impl fmt::Display for RoutingWarning {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.rule, self.message)
    }
}

/// The most warnings a table keeps (rule sets mixing attributes can overlap pairwise, so
/// their number can grow with the square of the rules); the rest are counted.
pub const MAX_WARNINGS: usize = 1000;

/// Validated rules and what is worth a warning about them.
pub(crate) struct Checked {
    pub(crate) rules: Vec<RoutingRule>,
    pub(crate) warnings: Vec<RoutingWarning>,
    pub(crate) warnings_left_out: usize,
}

/// Every problem found in a set of rule files. A table is built only when there is none.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub struct RoutingError {
    problems: Vec<RoutingProblem>,
}

impl RoutingError {
    pub fn problems(&self) -> &[RoutingProblem] {
        &self.problems
    }
}

impl fmt::Display for RoutingError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.problems.as_slice() {
            [one] => write!(f, "{one}"),
            many => {
                write!(f, "{} problems in the routing rules:", many.len())?;
                for problem in many {
                    write!(f, "\n  {problem}")?;
                }
                Ok(())
            }
        }
    }
}

/// Collects problems as they are found.
#[derive(Default)]
struct Problems(Vec<RoutingProblem>);

impl Problems {
    fn add(&mut self, file: &Path, doc: Option<usize>, rule: Option<usize>, message: String) {
        self.0.push(RoutingProblem {
            file: file.to_path_buf(),
            doc,
            rule,
            message,
        });
    }

    fn into_result<T>(self, ok: T) -> Result<T, RoutingError> {
        if self.0.is_empty() {
            Ok(ok)
        } else {
            Err(RoutingError { problems: self.0 })
        }
    }
}

/// A snapshot of the rule files: the bytes of every file in rule order, and what could not
/// be read. What a table is built from, and what the watcher compares to notice a change.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct Sources {
    files: Vec<(PathBuf, Vec<u8>)>,
    unreadable: Vec<RoutingProblem>,
}

impl Sources {
    /// Reads `paths` in order. A file is read whatever its name; a directory contributes
    /// its `*.yaml` and `*.yml` files sorted by name, skipping hidden entries (a ConfigMap
    /// mount's `..data` and `..2024_…` directories). Symlinks are followed.
    pub(crate) fn read(paths: &[PathBuf]) -> Self {
        let mut problems = Problems::default();
        let mut files = Vec::new();
        if paths.is_empty() {
            problems.add(Path::new("-"), None, None, "no rule files given".into());
        }
        for path in paths {
            match fs::metadata(path) {
                Ok(meta) if meta.is_dir() => match rule_files_in(path) {
                    Ok(found) if found.is_empty() => problems.add(
                        path,
                        None,
                        None,
                        "directory has no *.yaml or *.yml files".into(),
                    ),
                    Ok(found) => files.extend(found),
                    Err(e) => problems.add(path, None, None, format!("cannot list: {e}")),
                },
                Ok(_) => files.push(path.clone()),
                Err(e) => problems.add(path, None, None, format!("cannot read: {e}")),
            }
        }
        let mut sources = Vec::with_capacity(files.len());
        for file in files {
            match read_limited(&file) {
                Ok(bytes) => sources.push((file, bytes)),
                Err(message) => problems.add(&file, None, None, message),
            }
        }
        Self {
            files: sources,
            unreadable: problems.0,
        }
    }

    /// Documents held in memory, each under a name that stands for its file in every
    /// problem and rule reference (`openkcm controller` names them NAMESPACE/NAME).
    pub(crate) fn in_memory(documents: Vec<(PathBuf, Vec<u8>)>) -> Self {
        Self {
            files: documents,
            unreadable: Vec::new(),
        }
    }

    pub(crate) fn files(&self) -> impl Iterator<Item = &Path> {
        self.files.iter().map(|(path, _)| path.as_path())
    }

    /// Every rule of every document of every file, validated, with the warnings about
    /// them; or every problem, those met while reading included.
    pub(crate) fn rules(&self) -> Result<Checked, RoutingError> {
        let mut problems = Problems(self.unreadable.clone());
        let mut rules = Vec::new();
        for (file, bytes) in &self.files {
            match std::str::from_utf8(bytes) {
                Ok(text) => parse_file(file, text, &mut rules, &mut problems),
                Err(e) => problems.add(file, None, None, format!("not UTF-8: {e}")),
            }
        }
        let mut warnings = Warnings::default();
        check_conflicts(&rules, &mut problems, &mut warnings);
        problems.into_result(Checked {
            rules,
            warnings: warnings.kept,
            warnings_left_out: warnings.left_out,
        })
    }
}

fn rule_files_in(dir: &Path) -> std::io::Result<Vec<PathBuf>> {
    let mut names = Vec::new();
    for entry in fs::read_dir(dir)? {
        let name = entry?.file_name();
        let text = name.to_string_lossy();
        let is_rule_file = !text.starts_with('.')
            && (text.ends_with(".yaml") || text.ends_with(".yml"))
            // Follows symlinks: ConfigMap files are links into `..data/`.
            && fs::metadata(dir.join(&name)).is_ok_and(|m| m.is_file());
        if is_rule_file {
            names.push(name);
        }
    }
    names.sort();
    Ok(names.into_iter().map(|name| dir.join(name)).collect())
}

fn read_limited(path: &Path) -> Result<Vec<u8>, String> {
    let file = fs::File::open(path).map_err(|e| format!("cannot read: {e}"))?;
    let mut bytes = Vec::new();
    file.take(MAX_FILE_BYTES + 1)
        .read_to_end(&mut bytes)
        .map_err(|e| format!("cannot read: {e}"))?;
    if bytes.len() as u64 > MAX_FILE_BYTES {
        return Err(format!("larger than {MAX_FILE_BYTES} bytes"));
    }
    Ok(bytes)
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
#[serde(expecting = "a TenantRouting document (apiVersion, kind, metadata, spec)")]
struct RawDocument {
    api_version: String,
    kind: String,
    /// Checked for unknown fields, otherwise unused.
    #[serde(rename = "metadata")]
    _metadata: Option<RawMetadata>,
    spec: RawSpec,
}

/// Kubernetes object metadata: accepted so a rule file can be a real manifest.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawMetadata {
    #[serde(rename = "name")]
    _name: Option<String>,
    #[serde(rename = "namespace")]
    _namespace: Option<String>,
    #[serde(rename = "labels")]
    _labels: Option<HashMap<String, String>>,
    #[serde(rename = "annotations")]
    _annotations: Option<HashMap<String, String>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
#[serde(expecting = "a spec with service and routing")]
struct RawSpec {
    /// Informational: the service the rules route to.
    #[serde(rename = "service")]
    _service: Option<String>,
    routing: Vec<Value>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
#[serde(expecting = "a rule with match and route")]
struct RawRule {
    #[serde(rename = "match")]
    match_: Option<RawMatch>,
    route: RawRoute,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
#[serde(expecting = "a match with certificate")]
struct RawMatch {
    certificate: Option<RawCertificate>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
#[serde(expecting = "certificate conditions (subject, sanUri, issuer)")]
struct RawCertificate {
    subject: Option<RawSubject>,
    san_uri: Option<String>,
    issuer: Option<String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
#[serde(expecting = "subject conditions (organizationalUnit, commonName, organization)")]
struct RawSubject {
    organizational_unit: Option<String>,
    common_name: Option<String>,
    organization: Option<String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
#[serde(expecting = "a route with tenant and optional database")]
struct RawRoute {
    tenant: String,
    database: Option<String>,
}

fn parse_file(file: &Path, text: &str, rules: &mut Vec<RoutingRule>, problems: &mut Problems) {
    let mut documents = 0;
    for (i, document) in serde_norway::Deserializer::from_str(text).enumerate() {
        let doc = i + 1;
        // Two steps: YAML to a value (a syntax error here ends the file: nothing after it
        // can be trusted), then the value to typed rules, one rule at a time so that every
        // rule's problems are reported.
        let value = match Option::<Value>::deserialize(document) {
            Ok(Some(value)) => value,
            Ok(None) => continue, // An empty document, e.g. after a trailing `---`.
            Err(e) => {
                problems.add(file, Some(doc), None, format!("invalid YAML: {e}"));
                return;
            }
        };
        documents += 1;
        let raw: RawDocument = match serde_norway::from_value(value) {
            Ok(raw) => raw,
            Err(e) => {
                problems.add(file, Some(doc), None, e.to_string());
                continue;
            }
        };
        if raw.api_version != API_VERSION || raw.kind != KIND {
            problems.add(
                file,
                Some(doc),
                None,
                format!(
                    "expected apiVersion {API_VERSION} kind {KIND}, found apiVersion {} kind {}",
                    raw.api_version, raw.kind
                ),
            );
            continue;
        }
        for (j, value) in raw.spec.routing.into_iter().enumerate() {
            let at = RuleRef {
                file: file.to_path_buf(),
                doc,
                index: j + 1,
            };
            match serde_norway::from_value::<RawRule>(value) {
                Ok(raw) => {
                    if let Some(rule) = validate_rule(raw, at, problems) {
                        rules.push(rule);
                    }
                }
                Err(e) => problems.add(file, Some(doc), Some(at.index), e.to_string()),
            }
        }
    }
    if documents == 0 {
        // Most likely a file caught while being written, or emptied by mistake; denying
        // every tenant would need `routing: []`, written on purpose.
        problems.add(file, None, None, "has no TenantRouting document".into());
    }
}

/// Builds a condition from its checked value (a `Condition` variant).
type MakeCondition = fn(String) -> Condition;

/// A typed rule, or its problems (all of them) added to `problems`.
fn validate_rule(raw: RawRule, at: RuleRef, problems: &mut Problems) -> Option<RoutingRule> {
    let mut errors = Vec::new();
    let mut conditions = Vec::new();
    if let Some(certificate) = raw.match_.and_then(|m| m.certificate) {
        if let Some(subject) = certificate.subject {
            let fields: [(&str, Option<String>, MakeCondition); 3] = [
                (
                    "subject.organizationalUnit",
                    subject.organizational_unit,
                    Condition::SubjectOu,
                ),
                (
                    "subject.commonName",
                    subject.common_name,
                    Condition::SubjectCn,
                ),
                (
                    "subject.organization",
                    subject.organization,
                    Condition::SubjectO,
                ),
            ];
            for (field, value, condition) in fields {
                let Some(value) = value else { continue };
                match check_text(&value) {
                    Ok(()) => conditions.push(condition(value)),
                    Err(why) => errors.push(format!("match.certificate.{field} {value:?} {why}")),
                }
            }
        }
        if let Some(uri) = certificate.san_uri {
            match san_uri_condition(&uri) {
                Ok(condition) => conditions.push(condition),
                Err(why) => errors.push(format!("match.certificate.sanUri {uri:?} {why}")),
            }
        }
        if let Some(dn) = certificate.issuer {
            // The certificate's issuer is printed the same way, so equal DNs compare equal
            // whatever the attribute names' case or the values' string types. (Printed
            // with `fmt::write`: `to_string` panics if `Display` fails.)
            let mut normalised = String::new();
            let printed = RdnSequence::from_str(&dn).ok().filter(|parsed| {
                !parsed.0.is_empty()
                    && fmt::write(&mut normalised, format_args!("{parsed}")).is_ok()
            });
            match printed {
                Some(_) => conditions.push(Condition::Issuer(normalised)),
                None => errors.push(format!(
                    "match.certificate.issuer {dn:?} is not an RFC 4514 DN (write it like \
                     CN=platform-mesh-ca,O=Platform Mesh, as `openkcm routing check` prints it)"
                )),
            }
        }
    }
    if conditions.is_empty() && errors.is_empty() {
        errors.push(
            "match has no conditions, so it would route every client certificate; name at \
             least one of subject.organizationalUnit, subject.commonName, \
             subject.organization, sanUri, issuer"
                .into(),
        );
    }
    let RawRoute { tenant, database } = raw.route;
    if !is_valid_tenant_id(&tenant) {
        errors.push(format!(
            "route.tenant {tenant:?} is not a valid tenant id (1-{MAX_TENANT_ID_LEN} of A-Z a-z 0-9 . _ -)"
        ));
    }
    if let Some(db) = &database {
        if !is_valid_database_name(db) {
            errors.push(format!(
                "route.database {db:?} is not a valid database name (1-{MAX_DATABASE_NAME_LEN} of A-Z a-z 0-9 _)"
            ));
        }
    }
    if errors.is_empty() {
        Some(RoutingRule::new(
            at,
            conditions,
            RouteTarget { tenant, database },
        ))
    } else {
        for message in errors {
            problems.add(&at.file, Some(at.doc), Some(at.index), message);
        }
        None
    }
}

/// An exact subject value: not empty, no stray whitespace (a certificate value with it is
/// far less likely than a typo in the rule).
fn check_text(value: &str) -> Result<(), &'static str> {
    if value.is_empty() {
        Err("is empty")
    } else if value.trim() != value {
        Err("has leading or trailing whitespace")
    } else {
        Ok(())
    }
}

/// `spiffe://…/sa/app` is exact; `spiffe://…/ns/tenant-a/*` matches by prefix. A prefix
/// ends at a path boundary: `…/ns/b*` would also match namespace `b-evil`.
fn san_uri_condition(uri: &str) -> Result<Condition, &'static str> {
    check_text(uri)?;
    match uri.strip_suffix('*') {
        Some("") => Err("is only a wildcard, which would match every certificate with a URI SAN"),
        Some(prefix) if prefix.contains('*') => {
            Err("has a * before the end; only a trailing * is supported")
        }
        Some(prefix) if !prefix.ends_with('/') => Err(
            "is a prefix that does not end at a path boundary: the part before the * must end \
             with / (`spiffe://mesh/ns/b/*`, not `spiffe://mesh/ns/b*`, which also matches \
             namespace b-evil)",
        ),
        Some(prefix) => Ok(Condition::SanUriPrefix(prefix.to_owned())),
        None if uri.contains('*') => Err("has a * before the end; only a trailing * is supported"),
        None => Ok(Condition::SanUriExact(uri.to_owned())),
    }
}

/// Warnings as they are found, the first [`MAX_WARNINGS`] kept.
#[derive(Default)]
struct Warnings {
    kept: Vec<RoutingWarning>,
    left_out: usize,
}

impl Warnings {
    /// `message` is only written for a warning that is kept.
    fn add(&mut self, rule: &RoutingRule, kind: WarningKind, message: impl FnOnce() -> String) {
        if self.kept.len() < MAX_WARNINGS {
            self.kept.push(RoutingWarning {
                rule: rule.at.clone(),
                kind,
                message: message(),
            });
        } else {
            self.left_out += 1;
        }
    }
}

/// What can be told about rule pairs without a certificate.
///
/// - Two rules with the same conditions but different routes can never be told apart:
///   every certificate that matches one matches the other, and neither refines the other.
///   That is a load error rather than a run-time denial.
/// - Two rules for different routes that one certificate can match (conditions on
///   different attributes, or compatible ones on the same: equal values, nested `sanUri`
///   prefixes) where neither refines the other deny that certificate as ambiguous. Legal —
///   it is how a tenant that obtains another tenant's attribute is refused — but worth a
///   warning, unless a rule with exactly the overlap's conditions decides it (it refines
///   both). Only certificates with one value per attribute are considered: with two OUs
///   or two URI SANs almost any two rules overlap, and are denied.
/// - A rule whose only conditions are ones the certificate's requester writes (CN, O),
///   or the issuer alone, is a warning.
fn check_conflicts(rules: &[RoutingRule], problems: &mut Problems, warnings: &mut Warnings) {
    let mut first_with: HashMap<&[Condition], &RoutingRule> = HashMap::new();
    for rule in rules {
        match first_with.get(rule.conditions.as_slice()) {
            Some(earlier) if earlier.route != rule.route => problems.add(
                &rule.at.file,
                Some(rule.at.doc),
                Some(rule.at.index),
                format!(
                    "has the same match as {} but routes to {} instead of {}",
                    earlier.at, rule.route, earlier.route
                ),
            ),
            Some(_) => {}
            None => {
                first_with.insert(&rule.conditions, rule);
            }
        }
    }
    // A rule decides an overlap when its conditions are exactly the overlap's: it refines
    // both rules. Which attribute sets such rules have, to skip building most overlaps.
    let decided: HashSet<&[Condition]> = first_with.keys().copied().collect();
    let mut decided_attributes = [false; 32];
    for conditions in &decided {
        let set = conditions
            .iter()
            .fold(0, |set, c| set | c.attribute().bit());
        decided_attributes[usize::from(set)] = true;
    }
    for (i, rule) in rules.iter().enumerate() {
        warn_if_requester_chosen(rule, warnings);
        for other in &rules[i + 1..] {
            // Equal conditions (within each other) are the error above.
            if rule.route == other.route || rule.within(other) || other.within(rule) {
                continue;
            }
            if !rule.overlaps(other) {
                continue;
            }
            let attributes = rule.attributes() | other.attributes();
            if decided_attributes[usize::from(attributes)]
                && rule
                    .intersection(other)
                    .is_some_and(|both| decided.contains(both.as_slice()))
            {
                continue;
            }
            warnings.add(
                rule,
                WarningKind::Overlap {
                    other: other.at.clone(),
                },
                || {
                    let conditions = rule
                        .intersection(other)
                        .unwrap_or_default()
                        .iter()
                        .map(ToString::to_string)
                        .collect::<Vec<_>>()
                        .join(" and ");
                    format!(
                        "overlaps {}: this rule routes to {}, that one to {}, and a \
                         certificate with {conditions} matches both; neither refines the \
                         other, so such a certificate is denied as ambiguous (to route it, \
                         add a rule with exactly these conditions)",
                        other.at, rule.route, other.route
                    )
                },
            );
        }
    }
}

/// Warns about a rule that matches only on the subject CN/O (and perhaps the issuer), or on
/// the issuer alone.
fn warn_if_requester_chosen(rule: &RoutingRule, warnings: &mut Warnings) {
    let attributes: Vec<Attribute> = rule.conditions.iter().map(Condition::attribute).collect();
    let chosen: Vec<&str> = attributes
        .iter()
        .filter(|a| a.chosen_by_requester())
        .map(|a| a.name())
        .collect();
    let issuer = attributes.contains(&Attribute::Issuer);
    if chosen.len() + usize::from(issuer) != attributes.len() {
        return; // It has an OU or sanUri condition.
    }
    warnings.add(rule, WarningKind::RequesterChosen, || {
        if chosen.is_empty() {
            format!(
                "matches only on issuer, so every certificate that CA issues is routed to {}; \
                 add a subject.organizationalUnit or sanUri condition, or make sure that CA \
                 issues certificates for this tenant only",
                rule.route
            )
        } else {
            let fields = chosen.join(" and ");
            let and_issuer = if issuer { " (and issuer)" } else { "" };
            format!(
                "matches only on {fields}{and_issuer}, which whoever requests a certificate \
                 chooses; add a subject.organizationalUnit or sanUri condition, or make sure \
                 the issuer controls {fields}",
            )
        }
    });
}
