//! TenantRouting resources → the gateway's rule file (ConfigMap `openkcm-routing`, key
//! `tenant-routing.yaml`), decided without I/O so that every rule of the contract is a unit
//! test: [`plan`].
//!
//! The contract (docs/controller.md):
//! - each resource is one YAML document of the file, validated by the code behind
//!   `openkcm routing check` (the gateway's own loader);
//! - what is in force stays in force: a resource whose new spec is invalid, or conflicts with
//!   another resource's rules in force, is not rendered; its last accepted rules (read back
//!   from the ConfigMap) stay, and nobody else's rules change;
//! - across resources, a rule that could match the same certificate as another resource's rule
//!   but routes elsewhere is a conflict (equal matches, overlaps, and refinements alike:
//!   each would take certificates from the tenant whose rules are in force); within one
//!   resource the gateway's own precedence applies (`docs/routing.md`);
//! - between two new resources, the older (creation time, then namespace/name) wins.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::path::PathBuf;

use gateway::routing::{RoutingRule, RoutingTable, API_VERSION, KIND};
use serde_json::Value as Json;
use serde_norway::Value;

/// The annotation on each rendered document naming the generation it was rendered from.
pub const GENERATION_ANNOTATION: &str = "platform-mesh.io/generation";

/// A resource by namespace and name, printed `namespace/name`.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Key {
    pub namespace: String,
    pub name: String,
}

impl std::fmt::Display for Key {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}/{}", self.namespace, self.name)
    }
}

/// One TenantRouting resource as the planner needs it.
#[derive(Clone, Debug)]
pub struct Resource {
    pub key: Key,
    pub generation: i64,
    /// Creation time as RFC 3339 (sorts by time); empty sorts first.
    pub created: String,
    /// `spec`, as the API server stored it.
    pub spec: Json,
}

/// What became of one resource.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Verdict {
    /// Its current generation is in force.
    Accepted,
    /// Its current generation does not validate; the message lists every problem.
    Invalid(String),
    /// Its current generation conflicts with rules of another resource in force.
    Conflict(String),
}

/// The verdict on a resource and what of it is in force.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Outcome {
    pub verdict: Verdict,
    /// The generation whose rules are in force, if any.
    pub in_force: Option<i64>,
    /// How many rules of it are in force.
    pub rules_in_force: usize,
    /// Warnings of `openkcm routing check` about its rules (overlaps within it, …).
    pub warnings: Vec<String>,
}

/// The new rule file and a verdict per resource.
#[derive(Clone, Debug)]
pub struct Plan {
    pub content: String,
    pub outcomes: BTreeMap<Key, Outcome>,
    /// Set when the current file could not be read back (hand-edited, say): it is replaced
    /// by what the resources say, as if nothing had been in force.
    pub current_unreadable: Option<String>,
}

/// A document in force: the generation it came from and its parsed form.
#[derive(Clone, Debug)]
struct InForce {
    generation: i64,
    document: Value,
}

/// Decides the rule file from `resources` and the file now in force (`current`, empty when
/// the ConfigMap does not exist yet).
pub fn plan(resources: &[Resource], current: &str) -> Plan {
    let (mut in_force, current_unreadable) = match read_back(current) {
        Ok(docs) => (docs, None),
        Err(why) => (BTreeMap::new(), Some(why)),
    };
    // Rules of deleted resources go.
    in_force.retain(|key, _| resources.iter().any(|r| &r.key == key));

    let mut ordered: Vec<&Resource> = resources.iter().collect();
    ordered.sort_by(|a, b| (&a.created, &a.key).cmp(&(&b.created, &b.key)));
    let mut outcomes = BTreeMap::new();
    for resource in ordered {
        let candidate = render(resource);
        let (verdict, warnings) = judge(resource, &candidate, &in_force);
        if verdict == Verdict::Accepted {
            in_force.insert(
                resource.key.clone(),
                InForce {
                    generation: resource.generation,
                    document: candidate,
                },
            );
        }
        let (generation, rules) = in_force.get(&resource.key).map_or((None, 0), |doc| {
            (Some(doc.generation), rule_count(&doc.document))
        });
        outcomes.insert(
            resource.key.clone(),
            Outcome {
                verdict,
                in_force: generation,
                rules_in_force: rules,
                warnings,
            },
        );
    }
    Plan {
        content: write(&in_force),
        outcomes,
        current_unreadable,
    }
}

fn judge(
    resource: &Resource,
    candidate: &Value,
    in_force: &BTreeMap<Key, InForce>,
) -> (Verdict, Vec<String>) {
    let label = resource.key.to_string();
    let alone = match table(&[(label.clone(), candidate)]) {
        Ok(table) => table,
        Err(why) => return (Verdict::Invalid(why), Vec::new()),
    };
    let warnings: Vec<String> = alone.warnings().iter().map(ToString::to_string).collect();
    if in_force
        .get(&resource.key)
        .is_some_and(|doc| doc.generation == resource.generation && &doc.document == candidate)
    {
        return (Verdict::Accepted, warnings);
    }
    let others: Vec<(String, &Value)> = in_force
        .iter()
        .filter(|(key, _)| **key != resource.key)
        .map(|(key, doc)| (key.to_string(), &doc.document))
        .collect();
    let mut all = others.clone();
    all.push((label, candidate));
    let combined = match table(&all) {
        Ok(table) => table,
        Err(why) => return (Verdict::Conflict(why), warnings),
    };
    let (mine, theirs): (Vec<&RoutingRule>, Vec<&RoutingRule>) = combined
        .rules()
        .iter()
        .partition(|rule| rule.at().file == std::path::Path::new(&resource.key.to_string()));
    let mut clashes = Vec::new();
    for rule in &mine {
        for other in &theirs {
            if !rule.same_route(other) && rule.overlaps(other) {
                clashes.push(format!(
                    "rule {} ({rule}) can match the same certificates as {} ({other}), which \
                     is in force and routes elsewhere",
                    rule.at().index,
                    other.at()
                ));
            }
        }
    }
    if clashes.is_empty() {
        (Verdict::Accepted, warnings)
    } else {
        (Verdict::Conflict(clashes.join("; ")), warnings)
    }
}

/// Validates documents with the gateway's loader; `Err` carries every problem, one per line.
fn table(documents: &[(String, &Value)]) -> Result<RoutingTable, String> {
    let mut texts = Vec::with_capacity(documents.len());
    for (label, document) in documents {
        let text = serde_norway::to_string(document).map_err(|e| e.to_string())?;
        texts.push((PathBuf::from(label), text.into_bytes()));
    }
    RoutingTable::from_documents(texts).map_err(|e| {
        e.problems()
            .iter()
            .map(ToString::to_string)
            .collect::<Vec<_>>()
            .join("\n")
    })
}

/// The document a resource renders to: its spec under the gateway's file header.
fn render(resource: &Resource) -> Value {
    let document = serde_json::json!({
        "apiVersion": API_VERSION,
        "kind": KIND,
        "metadata": {
            "namespace": resource.key.namespace,
            "name": resource.key.name,
            "annotations": { GENERATION_ANNOTATION: resource.generation.to_string() },
        },
        "spec": resource.spec,
    });
    serde_norway::to_value(document).unwrap_or(Value::Null)
}

fn rule_count(document: &Value) -> usize {
    document
        .get("spec")
        .and_then(|spec| spec.get("routing"))
        .and_then(Value::as_sequence)
        .map_or(0, Vec::len)
}

/// The name of the document written when there is no resource.
const PLACEHOLDER: &str = "no-tenantrouting-resources";

/// The header of the file; the gateway ignores comments.
const HEADER: &str = "# Written by openkcm controller from the TenantRouting resources \
(docs/controller.md); edits here are overwritten.\n";

fn write(in_force: &BTreeMap<Key, InForce>) -> String {
    let mut out = String::from(HEADER);
    if in_force.is_empty() {
        // No resource: no tenant is routed. `routing: []` says so on purpose (an empty file
        // is refused by the gateway as a likely accident).
        let _ = write!(
            out,
            "apiVersion: {API_VERSION}\nkind: {KIND}\nmetadata:\n  name: {PLACEHOLDER}\n\
             spec:\n  routing: []\n"
        );
        return out;
    }
    for (i, doc) in in_force.values().enumerate() {
        if i > 0 {
            out.push_str("---\n");
        }
        out.push_str(&serde_norway::to_string(&doc.document).unwrap_or_default());
    }
    out
}

/// The documents of a file this planner wrote, by resource; `Err` when the file is not
/// one (hand-edited or damaged) or does not validate as a whole.
fn read_back(current: &str) -> Result<BTreeMap<Key, InForce>, String> {
    use serde::Deserialize as _;
    let mut docs = BTreeMap::new();
    if current.trim().is_empty() {
        return Ok(docs);
    }
    for document in serde_norway::Deserializer::from_str(current) {
        let value = Option::<Value>::deserialize(document).map_err(|e| e.to_string())?;
        let Some(value) = value else { continue };
        let metadata = value.get("metadata");
        let text = |field: &str| {
            metadata
                .and_then(|m| m.get(field))
                .and_then(Value::as_str)
                .map(str::to_owned)
        };
        let generation = metadata
            .and_then(|m| m.get("annotations"))
            .and_then(|a| a.get(GENERATION_ANNOTATION))
            .and_then(Value::as_str)
            .and_then(|g| g.parse::<i64>().ok());
        match (text("namespace"), text("name"), generation) {
            (Some(namespace), Some(name), Some(generation)) => {
                docs.insert(
                    Key { namespace, name },
                    InForce {
                        generation,
                        document: value,
                    },
                );
            }
            // The placeholder for "no resources" has no namespace and no generation.
            (None, Some(name), None) if name == PLACEHOLDER && rule_count(&value) == 0 => {}
            _ => return Err("a document without namespace, name and generation".into()),
        }
    }
    let all: Vec<(String, &Value)> = docs
        .iter()
        .map(|(key, doc)| (key.to_string(), &doc.document))
        .collect();
    table(&all).map(|_| docs)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ou_rule(ou: &str, tenant: &str) -> Json {
        serde_json::json!({
            "match": { "certificate": { "subject": { "organizationalUnit": ou } } },
            "route": { "tenant": tenant },
        })
    }

    fn resource(name: &str, generation: i64, created: &str, rules: Vec<Json>) -> Resource {
        Resource {
            key: Key {
                namespace: "openkcm-system".into(),
                name: name.into(),
            },
            generation,
            created: created.into(),
            spec: serde_json::json!({ "service": "openkcm-crypto-service", "routing": rules }),
        }
    }

    fn key(name: &str) -> Key {
        Key {
            namespace: "openkcm-system".into(),
            name: name.into(),
        }
    }

    /// The tenant the gateway routes a certificate with `OU=ou` to, `content` in force.
    fn tenant_of(content: &str, ou: &str) -> Option<String> {
        let table = RoutingTable::from_documents(vec![(
            PathBuf::from("tenant-routing.yaml"),
            content.as_bytes().to_vec(),
        )])
        .expect("the planned file loads in the gateway");
        let peer = tlsmaterial::PeerIdentity {
            subject_ou: vec![ou.to_owned()],
            ..Default::default()
        };
        match table.decide(&peer) {
            gateway::routing::Decision::Allow(route) => Some(route.tenant),
            gateway::routing::Decision::Deny { .. } => None,
        }
    }

    #[test]
    fn every_accepted_resource_is_rendered_and_the_gateway_loads_the_file() {
        let a = resource(
            "a",
            1,
            "2026-01-01T00:00:00Z",
            vec![ou_rule("tenant-a", "tenant-a")],
        );
        let b = resource(
            "b",
            1,
            "2026-01-02T00:00:00Z",
            vec![ou_rule("tenant-b", "tenant-b")],
        );
        let plan = plan(&[a, b], "");
        assert_eq!(plan.outcomes[&key("a")].verdict, Verdict::Accepted);
        assert_eq!(plan.outcomes[&key("b")].rules_in_force, 1);
        assert_eq!(
            tenant_of(&plan.content, "tenant-a").as_deref(),
            Some("tenant-a")
        );
        assert_eq!(
            tenant_of(&plan.content, "tenant-b").as_deref(),
            Some("tenant-b")
        );
    }

    #[test]
    fn no_resources_is_a_file_that_routes_nobody() {
        let plan = plan(&[], "");
        let table = RoutingTable::from_documents(vec![(
            PathBuf::from("f.yaml"),
            plan.content.into_bytes(),
        )])
        .expect("loads");
        assert!(table.is_empty());
    }

    #[test]
    fn a_conflicting_resource_changes_nothing_in_force() {
        let a = resource(
            "a",
            1,
            "2026-01-01T00:00:00Z",
            vec![ou_rule("tenant-a", "tenant-a")],
        );
        let first = plan(std::slice::from_ref(&a), "");
        // A later resource claims OU tenant-a for tenant-b.
        let evil = resource(
            "evil",
            1,
            "2026-01-03T00:00:00Z",
            vec![ou_rule("tenant-a", "tenant-b")],
        );
        let second = plan(&[a.clone(), evil], &first.content);
        match &second.outcomes[&key("evil")].verdict {
            Verdict::Conflict(why) => {
                assert!(why.contains("openkcm-system/a doc 1 rule 1"), "{why}")
            }
            other => panic!("{other:?}"),
        }
        assert_eq!(second.outcomes[&key("evil")].in_force, None);
        assert_eq!(
            tenant_of(&second.content, "tenant-a").as_deref(),
            Some("tenant-a")
        );
        assert_eq!(second.content, first.content);
    }

    #[test]
    fn a_refinement_from_another_resource_routing_elsewhere_is_a_conflict() {
        let a = resource(
            "a",
            1,
            "2026-01-01T00:00:00Z",
            vec![ou_rule("tenant-a", "tenant-a")],
        );
        let first = plan(std::slice::from_ref(&a), "");
        let narrower = serde_json::json!({
            "match": { "certificate": { "subject": { "organizationalUnit": "tenant-a", "commonName": "x" } } },
            "route": { "tenant": "tenant-b" },
        });
        let b = resource("b", 1, "2026-01-02T00:00:00Z", vec![narrower]);
        let second = plan(&[a, b], &first.content);
        assert!(matches!(
            second.outcomes[&key("b")].verdict,
            Verdict::Conflict(_)
        ));
        assert_eq!(second.content, first.content);
    }

    #[test]
    fn an_invalid_change_keeps_the_last_accepted_rules_in_force() {
        let a1 = resource(
            "a",
            1,
            "2026-01-01T00:00:00Z",
            vec![ou_rule("tenant-a", "tenant-a")],
        );
        let first = plan(std::slice::from_ref(&a1), "");
        let a2 = resource(
            "a",
            2,
            "2026-01-01T00:00:00Z",
            vec![ou_rule("tenant-a", "bad tenant!")],
        );
        let second = plan(&[a2], &first.content);
        let outcome = &second.outcomes[&key("a")];
        match &outcome.verdict {
            Verdict::Invalid(why) => assert!(why.contains("not a valid tenant id"), "{why}"),
            other => panic!("{other:?}"),
        }
        assert_eq!(outcome.in_force, Some(1));
        assert_eq!(second.content, first.content);
    }

    #[test]
    fn a_change_is_accepted_and_a_deletion_removes_only_that_resource() {
        let a = resource(
            "a",
            1,
            "2026-01-01T00:00:00Z",
            vec![ou_rule("tenant-a", "tenant-a")],
        );
        let b1 = resource(
            "b",
            1,
            "2026-01-02T00:00:00Z",
            vec![ou_rule("tenant-b", "tenant-b")],
        );
        let first = plan(&[a.clone(), b1], "");
        let b2 = resource(
            "b",
            2,
            "2026-01-02T00:00:00Z",
            vec![ou_rule("tenant-b", "tenant-b2")],
        );
        let second = plan(&[a.clone(), b2], &first.content);
        assert_eq!(second.outcomes[&key("b")].in_force, Some(2));
        assert_eq!(
            tenant_of(&second.content, "tenant-b").as_deref(),
            Some("tenant-b2")
        );
        let third = plan(&[a], &second.content);
        assert_eq!(tenant_of(&third.content, "tenant-b"), None);
        assert_eq!(
            tenant_of(&third.content, "tenant-a").as_deref(),
            Some("tenant-a")
        );
    }

    #[test]
    fn between_two_new_conflicting_resources_the_older_wins() {
        let young = resource(
            "young",
            1,
            "2026-02-01T00:00:00Z",
            vec![ou_rule("x", "tenant-y")],
        );
        let old = resource(
            "old",
            1,
            "2026-01-01T00:00:00Z",
            vec![ou_rule("x", "tenant-o")],
        );
        let plan = plan(&[young, old], "");
        assert_eq!(plan.outcomes[&key("old")].verdict, Verdict::Accepted);
        assert!(matches!(
            plan.outcomes[&key("young")].verdict,
            Verdict::Conflict(_)
        ));
        assert_eq!(tenant_of(&plan.content, "x").as_deref(), Some("tenant-o"));
    }

    #[test]
    fn a_hand_edited_file_is_replaced_by_what_the_resources_say() {
        let a = resource(
            "a",
            1,
            "2026-01-01T00:00:00Z",
            vec![ou_rule("tenant-a", "tenant-a")],
        );
        let plan = plan(&[a], "apiVersion: v1\nkind: Nonsense\n");
        assert!(plan.current_unreadable.is_some());
        assert_eq!(
            tenant_of(&plan.content, "tenant-a").as_deref(),
            Some("tenant-a")
        );
    }
}
