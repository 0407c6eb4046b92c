"""Offline checks of the rendered Kubernetes manifests (called by scripts/validate-manifests.sh).

    validate.py OUT_DIR RENDERED.yaml...

For every document of every rendered overlay:
  * built-in kinds: strict schema validation (unknown fields refused) for each Kubernetes
    version in K8S_VERSIONS, with the schemas kubernetes-validate bundles;
  * cert-manager, Prometheus operator and CloudNativePG kinds: the vendored schemas in
    scripts/manifests/schemas/;
  * our platform-mesh.io kinds: the openAPIV3Schema of the CRD rendered alongside, with
    unknown fields refused;
  * a kind with no schema at all is an error.
Then: every PromQL expression (PrometheusRule alerts, the Grafana dashboard, the
prometheus-adapter rule) parses (promql-parser, the Rust PromQL parser's Python binding) and
every other series it reads comes from a known exporter; and the deployment rules of the
issue hold (replicas, probes, security context, rollout, spread, PDBs...), and where a
CloudNativePG Cluster serves keysvc, keysvc reaches it with verify-full and a client
certificate the Cluster accepts (check_database_tls).

Writes OUT_DIR/containers.json: every container of every overlay with its args, env,
ports and probes, for tests/manifests.rs to compare with `openkcm <cmd> --help`; and
OUT_DIR/metrics.json: every kmip_* / openkcm_* / injector_* series the expressions read, with where,
which tests/manifests.rs compares with the /metrics the binaries serve.
Exit 0 when everything holds; 1 with one line per problem otherwise.
"""

import copy
import json
import os
import re
import sys

import jsonschema
import kubernetes_validate
import promql_parser
import referencing
import yaml

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
SCHEMAS = os.path.join(ROOT, "scripts", "manifests", "schemas")
# The oldest Kubernetes the manifests support and a current one.
K8S_VERSIONS = ["1.29.0", "1.33.0"]
# Series of our binaries (gateway, keysvc: kmip_/openkcm_; the injector: injector_), checked
# by tests/manifests.rs against what the running binaries serve.
OWN_METRIC_PREFIXES = ("kmip_", "openkcm_", "injector_", "controller_")
# Series from other exporters the alerts and the dashboard may read.
EXTERNAL_METRIC_PREFIXES = ("container_", "kube_", "certmanager_", "cnpg_")
EXTERNAL_METRICS = {"up"}
WORKLOADS = ("Deployment", "StatefulSet", "Job")
# The minimum replica counts.
MIN_REPLICAS = {"openkcm-gateway": 3, "openkcm-keysvc": 2, "openkcm-injector": 2}

problems = []


def problem(where, text):
    problems.append(f"{where}: {text}")


# ------------------------------------------------------------------------------ schemas


def load_yaml(path):
    with open(path, encoding="utf-8") as f:
        return yaml.safe_load(f)


def vendored_registry():
    resources = []
    for name in os.listdir(SCHEMAS):
        if name.endswith(".yaml"):
            schema = load_yaml(os.path.join(SCHEMAS, name))
            resources.append((name, referencing.Resource.from_contents(schema)))
    return referencing.Registry().with_resources(resources)


def vendored_schema(api_version, kind):
    group_version = api_version.replace("/", "_")
    if kind == "Issuer":
        kind = "ClusterIssuer"
    name = f"{group_version}_{kind}.yaml"
    path = os.path.join(SCHEMAS, name)
    return (name, load_yaml(path)) if os.path.exists(path) else (None, None)


def strict(schema):
    """openAPIV3Schema → JSON Schema that refuses unknown fields (kubectl --validate=strict)."""
    schema = copy.deepcopy(schema)

    def walk(node):
        if not isinstance(node, dict):
            return
        if node.get("type") == "object" and "properties" in node:
            if "additionalProperties" not in node and not node.get(
                "x-kubernetes-preserve-unknown-fields"
            ):
                node["additionalProperties"] = False
        for key in ("properties",):
            for child in node.get(key, {}).values():
                walk(child)
        for key in ("items", "additionalProperties"):
            walk(node.get(key))
        # metadata is the API server's: leave it open.
    walk(schema)
    return schema


def crd_schemas(docs):
    out = {}
    for doc in docs:
        if doc.get("kind") != "CustomResourceDefinition":
            continue
        group = doc["spec"]["group"]
        kind = doc["spec"]["names"]["kind"]
        for version in doc["spec"]["versions"]:
            schema = version["schema"]["openAPIV3Schema"]
            try:
                jsonschema.Draft7Validator.check_schema(schema)
            except jsonschema.SchemaError as e:
                problem(f"CRD {doc['metadata']['name']}", f"openAPIV3Schema is not a schema: {e.message}")
            out[(f"{group}/{version['name']}", kind)] = strict(schema)
    return out


def validate_document(where, doc, crds, registry):
    api_version, kind = doc.get("apiVersion", ""), doc.get("kind", "")
    if (api_version, kind) in crds:
        errors = jsonschema.Draft7Validator(crds[(api_version, kind)]).iter_errors(doc)
        for e in errors:
            problem(where, f"{'.'.join(map(str, e.path)) or '<root>'}: {e.message}")
        return
    name, schema = vendored_schema(api_version, kind)
    if schema is not None:
        validator = jsonschema.Draft202012Validator(schema, registry=registry)
        for e in validator.iter_errors(doc):
            problem(where, f"{'.'.join(map(str, e.path)) or '<root>'}: {e.message} ({name})")
        return
    for version in K8S_VERSIONS:
        try:
            kubernetes_validate.validate(doc, version, True)
        except kubernetes_validate.SchemaNotFoundError:
            problem(where, f"no schema for {api_version} {kind} (Kubernetes {version} or vendored)")
            return
        except kubernetes_validate.ValidationError as e:
            path = ".".join(map(str, e.path))
            problem(where, f"Kubernetes {version}: {path or '<root>'}: {e.message.splitlines()[0]}")


# ------------------------------------------------------------------------------- PromQL


def check_promql(where, expr, exported):
    try:
        ast = promql_parser.parse(expr)
    except ValueError as e:
        problem(where, f"PromQL does not parse: {e}: {expr}")
        return
    seen = []

    def visit(node):
        if isinstance(node, promql_parser.VectorSelector) and node.name:
            seen.append(node.name)

    promql_parser.walk(ast, visit)
    for name in seen:
        if name.startswith(OWN_METRIC_PREFIXES):
            exported.setdefault(name, []).append(where)
        elif not (name.startswith(EXTERNAL_METRIC_PREFIXES) or name in EXTERNAL_METRICS):
            problem(where, f"metric {name} comes from no known exporter")
    return seen


def promql_checks(where, doc, exported):
    kind = doc.get("kind")
    if kind == "PrometheusRule":
        for group in doc["spec"].get("groups", []):
            for rule in group.get("rules", []):
                check_promql(f"{where} {rule.get('alert') or rule.get('record')}", str(rule["expr"]), exported)
    if kind == "ConfigMap":
        for key, text in (doc.get("data") or {}).items():
            if key.endswith(".json"):
                dashboard = json.loads(text)
                for panel in dashboard.get("panels", []):
                    for target in panel.get("targets", []):
                        expr = target["expr"].replace("$__rate_interval", "5m")
                        check_promql(f"{where} panel {panel.get('title')!r}", expr, exported)
            elif "<<.Series>>" in text:
                config = yaml.safe_load(text)
                for rule in config.get("rules", []):
                    series = re.match(r"\s*([a-zA-Z_:][a-zA-Z0-9_:]*)", rule["seriesQuery"]).group(1)
                    check_promql(f"{where} seriesQuery", rule["seriesQuery"], exported)
                    expr = (
                        rule["metricsQuery"]
                        .replace("<<.Series>>", series)
                        .replace("<<.LabelMatchers>>", 'namespace="openkcm-system",pod=~"openkcm-.*"')
                        .replace("<<.GroupBy>>", "pod")
                    )
                    check_promql(f"{where} metricsQuery", expr, exported)


# ---------------------------------------------------------------------- deployment rules


def pod_spec(doc):
    if doc["kind"] in ("Deployment", "StatefulSet", "Job"):
        return doc["spec"]["template"]["spec"]
    return None


# The only service accounts that call the Kubernetes API (manifests/base/controller/rbac.yaml).
API_USERS = {"openkcm-controller"}


def check_pod_security(where, spec, workload_labels):
    psc = spec.get("securityContext", {})
    if psc.get("seccompProfile", {}).get("type") != "RuntimeDefault":
        problem(where, "pod securityContext.seccompProfile.type must be RuntimeDefault")
    if not psc.get("runAsNonRoot"):
        problem(where, "pod securityContext.runAsNonRoot must be true")
    if spec.get("serviceAccountName") in API_USERS:
        if spec.get("automountServiceAccountToken") is False:
            problem(where, "the controller calls the Kubernetes API: it needs its token")
    elif spec.get("automountServiceAccountToken") is not False:
        problem(where, "automountServiceAccountToken must be false (only the controller uses the API)")
    for c in spec.get("containers", []) + spec.get("initContainers", []):
        sc = c.get("securityContext", {})
        cw = f"{where} container {c['name']}"
        if sc.get("allowPrivilegeEscalation") is not False:
            problem(cw, "allowPrivilegeEscalation must be false")
        if sc.get("readOnlyRootFilesystem") is not True:
            problem(cw, "readOnlyRootFilesystem must be true")
        if sc.get("capabilities", {}).get("drop") != ["ALL"]:
            problem(cw, "capabilities.drop must be [ALL]")
        if sc.get("privileged"):
            problem(cw, "must not be privileged")
        res = c.get("resources", {})
        for side in ("requests", "limits"):
            if "memory" not in res.get(side, {}):
                problem(cw, f"resources.{side}.memory missing")
        if "cpu" not in res.get("requests", {}):
            problem(cw, "resources.requests.cpu missing")


def check_deployment(where, doc, pdbs):
    name = doc["metadata"]["name"]
    spec = doc["spec"]
    pod = spec["template"]["spec"]
    if spec.get("replicas", 1) < MIN_REPLICAS.get(name, 2):
        problem(where, f"replicas {spec.get('replicas')} below {MIN_REPLICAS.get(name, 2)}")
    rolling = spec.get("strategy", {}).get("rollingUpdate", {})
    if spec.get("strategy", {}).get("type") != "RollingUpdate" or rolling.get("maxUnavailable") != 0 or rolling.get("maxSurge") != 1:
        problem(where, "strategy must be RollingUpdate maxUnavailable 0, maxSurge 1")
    keys = {t["topologyKey"] for t in pod.get("topologySpreadConstraints", [])}
    for key in ("topology.kubernetes.io/zone", "kubernetes.io/hostname"):
        if key not in keys:
            problem(where, f"no topologySpreadConstraint on {key}")
    for c in pod["containers"]:
        cw = f"{where} container {c['name']}"
        for probe in ("startupProbe", "livenessProbe", "readinessProbe"):
            if probe not in c:
                problem(cw, f"{probe} missing")
        sleep = c.get("lifecycle", {}).get("preStop", {}).get("sleep", {}).get("seconds")
        # A stop must not begin before the endpoint removal spreads: either a preStop
        # sleep, or the component's own drain period (/ready 503 while still serving).
        drains = any(a.startswith("--drain-period=") and a != "--drain-period=0s" for a in c.get("args", []))
        # The controller serves no traffic (only /metrics): nothing to drain.
        if not sleep and not drains and pod.get("serviceAccountName") not in API_USERS:
            problem(cw, "neither lifecycle.preStop.sleep nor --drain-period")
        if pod.get("terminationGracePeriodSeconds", 30) <= (sleep or 0):
            problem(where, "terminationGracePeriodSeconds must exceed the preStop sleep")
    labels = pod_labels(doc)
    if not any(selects(pdb["spec"]["selector"], labels) for pdb in pdbs):
        problem(where, "no PodDisruptionBudget selects its pods")


def pod_labels(doc):
    return doc["spec"]["template"]["metadata"].get("labels", {})


def selects(selector, labels):
    want = selector.get("matchLabels", {})
    return bool(want) and all(labels.get(k) == v for k, v in want.items())


def container_summary(overlay, doc):
    spec = pod_spec(doc)
    out = []
    for c in spec.get("containers", []):
        if not c.get("image", "").startswith(("ghcr.io/openkcm/openkcm", "openkcm")):
            continue  # third-party containers (PostgreSQL)
        probes = {}
        for probe in ("startupProbe", "livenessProbe", "readinessProbe"):
            if probe in c:
                get = c[probe].get("httpGet", {})
                probes[probe] = {"path": get.get("path"), "port": get.get("port"), "scheme": get.get("scheme", "HTTP")}
        out.append(
            {
                "overlay": overlay,
                "workload": f"{doc['kind']}/{doc['metadata']['name']}",
                "container": c["name"],
                "command": c.get("command", []),
                "args": c.get("args", []),
                "env": [
                    {"name": e["name"], "value": e.get("value"), "from": "valueFrom" in e}
                    for e in c.get("env", [])
                ],
                "ports": [{"name": p.get("name"), "containerPort": p["containerPort"]} for p in c.get("ports", [])],
                "probes": probes,
                "terminationGracePeriodSeconds": spec.get("terminationGracePeriodSeconds", 30),
                "preStopSleep": c.get("lifecycle", {}).get("preStop", {}).get("sleep", {}).get("seconds", 0),
            }
        )
    return out


def own_crds():
    """Our CRDs (manifests/base/crds): an example applied on its own is checked against them."""
    folder = os.path.join(ROOT, "manifests", "base", "crds")
    docs = []
    for name in sorted(os.listdir(folder)):
        with open(os.path.join(folder, name), encoding="utf-8") as f:
            docs += [d for d in yaml.safe_load_all(f) if d]
    return crd_schemas(docs)


def check_overlay(overlay, docs, registry, exported):
    crds = {**own_crds(), **crd_schemas(docs)}
    pdbs = [d for d in docs if d.get("kind") == "PodDisruptionBudget"]
    containers = []
    names = set()
    for doc in docs:
        where = f"{overlay}: {doc.get('kind')}/{doc.get('metadata', {}).get('namespace', '')}/{doc.get('metadata', {}).get('name')}"
        key = (doc.get("apiVersion"), doc.get("kind"), doc.get("metadata", {}).get("namespace"), doc.get("metadata", {}).get("name"))
        if key in names:
            problem(where, "defined twice")
        names.add(key)
        validate_document(where, doc, crds, registry)
        promql_checks(where, doc, exported)
        if doc.get("kind") in WORKLOADS:
            spec = pod_spec(doc)
            check_pod_security(where, spec, pod_labels(doc))
            containers += container_summary(overlay, doc)
            if doc["kind"] == "Deployment":
                check_deployment(where, doc, pdbs)
    if overlay.startswith("example-"):
        return containers  # a stand-alone example, not a whole installation
    check_database_tls(overlay, docs)
    kinds = {d.get("kind") for d in docs}
    for required in ("HorizontalPodAutoscaler", "NetworkPolicy", "MutatingWebhookConfiguration", "ServiceMonitor", "PrometheusRule"):
        if required not in kinds:
            problem(overlay, f"no {required}")
    for hpa in (d for d in docs if d.get("kind") == "HorizontalPodAutoscaler"):
        where = f"{overlay}: HPA {hpa['metadata']['name']}"
        spec = hpa["spec"]
        if spec["minReplicas"] < 3 or spec["maxReplicas"] != 20:
            problem(where, "replicas must be 3..20")
        metrics = [m["pods"]["metric"]["name"] for m in spec["metrics"] if m["type"] == "Pods"]
        if metrics != ["kmip_requests_per_second"]:
            problem(where, f"Pods metric must be kmip_requests_per_second, is {metrics}")
        up = spec.get("behavior", {}).get("scaleUp", {})
        if up.get("stabilizationWindowSeconds", 0) > 0 or max((p["periodSeconds"] for p in up.get("policies", [])), default=60) > 60:
            problem(where, "scale-up must react within two minutes (no stabilization, periods <= 60 s)")
    return containers


def check_database_tls(overlay, docs):
    """Where a CloudNativePG Cluster serves keysvc (production): keysvc's POSTGRES_CONNECTION
    has no password and sslmode=verify-full; sslrootcert, sslcert and sslkey are files of one
    mounted Secret that a cert-manager Certificate issues with CN = the URL's role (client
    auth, a key sqlx reads); the Cluster trusts that Certificate's issuer's CA for client
    certificates and admits the role by `hostssl DB ROLE all cert` only."""
    clusters = [d for d in docs if d.get("kind") == "Cluster" and d.get("apiVersion", "").startswith("postgresql.cnpg.io/")]
    if not clusters:
        return
    where = f"{overlay}: database TLS"
    from urllib.parse import parse_qs, urlsplit

    keysvc = next((d for d in docs if d.get("kind") == "Deployment" and d["metadata"]["name"] == "openkcm-keysvc"), None)
    if keysvc is None:
        problem(where, "no openkcm-keysvc Deployment")
        return
    pod = keysvc["spec"]["template"]["spec"]
    container = pod["containers"][0]
    url = next((e.get("value") for e in container.get("env", []) if e["name"] == "POSTGRES_CONNECTION"), None)
    if not url:
        problem(where, "keysvc has no POSTGRES_CONNECTION value")
        return
    parts = urlsplit(url)
    query = {k: v[-1] for k, v in parse_qs(parts.query).items()}
    if parts.password is not None:
        problem(where, "keysvc's POSTGRES_CONNECTION carries a password; it logs in by certificate")
    if query.get("sslmode") != "verify-full":
        problem(where, f"keysvc's sslmode is {query.get('sslmode')!r}, not verify-full")
    volumes = {v["name"]: v for v in pod.get("volumes", [])}
    secrets = set()
    for param in ("sslrootcert", "sslcert", "sslkey"):
        path = query.get(param)
        mount = next(
            (m for m in container.get("volumeMounts", []) if path and path.startswith(m["mountPath"].rstrip("/") + "/")),
            None,
        )
        secret = volumes.get(mount["name"], {}).get("secret", {}).get("secretName") if mount else None
        if not secret:
            problem(where, f"{param}={path!r} is not a file of a mounted Secret")
        else:
            secrets.add(secret)
    if len(secrets) != 1:
        problem(where, f"sslrootcert, sslcert and sslkey come from {sorted(secrets)}, not one Secret")
        return
    secret = secrets.pop()
    cert = next((d for d in docs if d.get("kind") == "Certificate" and d["spec"]["secretName"] == secret), None)
    if cert is None:
        problem(where, f"no Certificate issues Secret {secret}")
        return
    role = parts.username
    if cert["spec"].get("commonName") != role:
        problem(where, f"Certificate {cert['metadata']['name']} has CN {cert['spec'].get('commonName')!r}, the URL's role is {role!r}")
    if "client auth" not in cert["spec"].get("usages", []):
        problem(where, f"Certificate {cert['metadata']['name']} lacks the client auth usage")
    issuer = next(
        (d for d in docs if d.get("kind") == cert["spec"]["issuerRef"].get("kind", "Issuer") and d["metadata"]["name"] == cert["spec"]["issuerRef"]["name"]),
        None,
    )
    ca_secret = (issuer or {}).get("spec", {}).get("ca", {}).get("secretName")
    host = parts.hostname or ""
    database = parts.path.lstrip("/")
    for cluster in clusters:
        name = cluster["metadata"]["name"]
        if not host.startswith(f"{name}-rw."):
            continue
        certs = cluster["spec"].get("certificates", {})
        if ca_secret is None or certs.get("clientCASecret") != ca_secret:
            problem(where, f"Cluster {name} clientCASecret {certs.get('clientCASecret')!r} is not the CA {ca_secret!r} that issues keysvc's certificate")
        if certs.get("serverCASecret") != ca_secret:
            problem(where, f"Cluster {name} serverCASecret {certs.get('serverCASecret')!r} is not the CA {ca_secret!r} in keysvc's ca.crt")
        server = next((d for d in docs if d.get("kind") == "Certificate" and d["spec"]["secretName"] == certs.get("serverTLSSecret")), None)
        if server is None or host not in server["spec"].get("dnsNames", []):
            problem(where, f"Cluster {name}'s server certificate does not name {host} (verify-full)")
        hba = [" ".join(line.split()) for line in cluster["spec"].get("postgresql", {}).get("pg_hba", [])]
        if f"hostssl {database} {role} all cert" not in hba:
            problem(where, f"Cluster {name} pg_hba lacks `hostssl {database} {role} all cert`")
        first = next((line for line in hba if line.split()[2:3] in ([role], ["all"])), "")
        if first != f"hostssl {database} {role} all cert":
            problem(where, f"Cluster {name} pg_hba: the first rule for {role} is {first!r}, not certificate authentication")
        break
    else:
        problem(where, f"no CloudNativePG Cluster serves {host}")


def main():
    out_dir, files = sys.argv[1], sys.argv[2:]
    registry = vendored_registry()
    exported = {}
    containers = []
    for path in files:
        overlay = os.path.splitext(os.path.basename(path))[0]
        with open(path, encoding="utf-8") as f:
            docs = [d for d in yaml.safe_load_all(f) if d]
        containers += check_overlay(overlay, docs, registry, exported)
        print(f"validate: {overlay}: {len(docs)} documents checked")
    with open(os.path.join(out_dir, "containers.json"), "w", encoding="utf-8") as f:
        json.dump(containers, f, indent=1)
    with open(os.path.join(out_dir, "metrics.json"), "w", encoding="utf-8") as f:
        json.dump(exported, f, indent=1, sort_keys=True)
    for p in problems:
        print(f"validate: {p}", file=sys.stderr)
    if problems:
        print(f"validate: {len(problems)} problem(s)", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
