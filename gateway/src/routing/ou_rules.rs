//! The simplest TenantRouting file: one rule per tenant, matching client certificates whose
//! subject has `OU=<tenant>`. Written by `openkcm dev` and used by the tests, so both run
//! the same rules.

use std::fmt::Write as _;

use super::{API_VERSION, KIND};

/// A TenantRouting document routing `OU=<tenant>` to `<tenant>` for each of `tenants`;
/// every other certificate matches no rule and is refused.
pub fn tenant_ou_rules(tenants: &[&str]) -> String {
    let mut yaml = format!(
        "apiVersion: {API_VERSION}\nkind: {KIND}\nmetadata:\n  name: tenant-routing\n\
         spec:\n  service: kmip-crypto-service\n  routing:\n"
    );
    for tenant in tenants {
        let _ = write!(
            yaml,
            "    - match:\n        certificate:\n          subject:\n            \
             organizationalUnit: \"{tenant}\"\n      route:\n        tenant: {tenant}\n"
        );
    }
    yaml
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_rules_load_and_route_each_tenant_by_its_ou() {
        let yaml = tenant_ou_rules(&["tenant-a", "tenant-b"]);
        let doc: serde_norway::Value = serde_norway::from_str(&yaml).expect("YAML");
        let rules = doc["spec"]["routing"].as_sequence().expect("rules");
        assert_eq!(rules.len(), 2);
        assert_eq!(
            rules[1]["match"]["certificate"]["subject"]["organizationalUnit"],
            "tenant-b"
        );
        assert_eq!(rules[1]["route"]["tenant"], "tenant-b");
    }
}
