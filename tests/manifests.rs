//! The Kubernetes manifests (manifests/) against the tools and against the binary, offline.
//!
//! `scripts/validate-manifests.sh` renders every overlay with `kubectl kustomize`, validates
//! every document (Kubernetes 1.29 and 1.33 schemas, the vendored CRD schemas, our CRDs'
//! own schemas), parses every PromQL expression and lints the Dockerfile; it writes what
//! the containers run (`containers.json`) and which series the alerts, the dashboard and the
//! autoscaler read (`metrics.json`). This file then holds those against the real
//! `openkcm`: every flag and environment variable a container uses is one the binary reads,
//! every container port is a port its flags listen on, the probe paths answer, the series
//! exist on the real /metrics endpoints, and the routing ConfigMap routes as intended.
//!
//! The validators come from the project venv (`make bootstrap`); without them these tests
//! fail and say so.

mod keysvc_support;

use std::collections::{BTreeMap, BTreeSet};
use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::{mpsc, Arc, OnceLock};
use std::time::Duration;

use keysvc_support::harness::{http1_get, PgDatabase, Pki};
use keysvc_support::{run, Keysvc, BIN};
use serde_json::Value;

/// How long `openkcm dev` may take to say it is ready (debug build, busy machine).
const DEV_START_TIMEOUT: Duration = Duration::from_secs(60);
/// keysvc's and the gateway's --drain-period and --grace-period when the flags are absent
/// (docs/keysvc.md, docs/gateway.md).
const DEFAULT_DRAIN_SECONDS: u64 = 5;
const DEFAULT_GRACE_SECONDS: u64 = 25;

fn repo() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

/// The validation script's output, run once per test binary (into Cargo's per-target
/// scratch directory, so that nothing is left behind in /tmp).
struct Rendered {
    containers: Vec<Value>,
    metrics: BTreeMap<String, Vec<String>>,
}

fn rendered() -> &'static Rendered {
    static RENDERED: OnceLock<Rendered> = OnceLock::new();
    RENDERED.get_or_init(|| {
        let dir = Path::new(env!("CARGO_TARGET_TMPDIR")).join("manifests");
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).expect("scratch directory");
        let out = Command::new("bash")
            .arg(repo().join("scripts/validate-manifests.sh"))
            .arg(&dir)
            .output()
            .expect("run scripts/validate-manifests.sh");
        assert!(
            out.status.success(),
            "scripts/validate-manifests.sh failed ({}):\n{}\n{}",
            out.status,
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        let read = |name: &str| -> Value {
            let path = dir.join(name);
            let text = std::fs::read_to_string(&path)
                .unwrap_or_else(|e| panic!("{}: {e}", path.display()));
            serde_json::from_str(&text).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
        };
        let containers = read("containers.json")
            .as_array()
            .expect("containers.json is a list")
            .clone();
        let metrics = serde_json::from_value(read("metrics.json")).expect("metrics.json");
        Rendered {
            containers,
            metrics,
        }
    })
}

#[test]
fn every_overlay_renders_and_validates() {
    let r = rendered();
    let workloads: BTreeSet<&str> = r
        .containers
        .iter()
        .map(|c| c["workload"].as_str().expect("workload"))
        .collect();
    for expected in [
        "Deployment/openkcm-gateway",
        "Deployment/openkcm-keysvc",
        "Deployment/openkcm-injector",
        "Job/openkcm-keysvc-migrate",
    ] {
        assert!(
            workloads.contains(expected),
            "{expected} not rendered: {workloads:?}"
        );
    }
    for overlay in ["dev", "production"] {
        assert!(
            r.containers.iter().any(|c| c["overlay"] == overlay),
            "overlay {overlay} has no openkcm container"
        );
    }
}

// ------------------------------------------------------------------- flags, env, ports

/// What `openkcm <subcommand> --help` says the command reads.
struct Help {
    flags: BTreeSet<String>,
    /// Flags that take no value (`--quiet`).
    switches: BTreeSet<String>,
    env: BTreeSet<String>,
}

fn help(subcommand: &[String]) -> Help {
    let mut args = subcommand.to_vec();
    args.push("--help".into());
    let out = run(&args);
    assert!(out.status.success(), "openkcm {args:?} failed");
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    let mut flags = BTreeSet::new();
    let mut switches = BTreeSet::new();
    let mut env = BTreeSet::new();
    for line in text.lines() {
        let trimmed = line.trim_start();
        // "  -h, --help", "      --kmip-addr <ADDR>  ..."
        let option = trimmed.strip_prefix("-h, ").unwrap_or(trimmed);
        if let Some(rest) = option.strip_prefix("--") {
            let name: String = rest
                .chars()
                .take_while(|c| c.is_ascii_alphanumeric() || *c == '-')
                .collect();
            let after = &rest[name.len()..];
            if !after.trim_start().starts_with('<') {
                switches.insert(format!("--{name}"));
            }
            flags.insert(format!("--{name}"));
        }
        let mut rest = line;
        while let Some(at) = rest.find("[env: ") {
            rest = &rest[at + 6..];
            let name: String = rest
                .chars()
                .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
                .collect();
            env.insert(name);
        }
    }
    Help {
        flags,
        switches,
        env,
    }
}

/// The leading words of a container's args that name the subcommand (`keysvc migrate`).
fn subcommand(args: &[String]) -> Vec<String> {
    args.iter()
        .take_while(|a| !a.starts_with('-'))
        .cloned()
        .collect()
}

/// `--name=value` → (name, value). The manifests always use this form, so that a value can
/// never be mistaken for a flag.
fn flag_value(arg: &str) -> Option<(&str, &str)> {
    arg.strip_prefix("--")?;
    arg.split_once('=')
}

fn strings(v: &Value) -> Vec<String> {
    v.as_array()
        .map(|a| {
            a.iter()
                .map(|s| s.as_str().expect("string").to_owned())
                .collect()
        })
        .unwrap_or_default()
}

/// Whether `openkcm SUBCOMMAND` reads environment variable `name` (its --help lists flags
/// only): the configuration errors it reports with `name` set to a value no setting accepts
/// differ from those without it — they name it, or a requirement it satisfies disappears.
fn reads_env(subcommand: &str, name: &str) -> bool {
    let baseline = config_errors(subcommand, &[]);
    let with = config_errors(subcommand, &[(name, "%not-a-value%")]);
    let ignored = format!("ignoring environment variable {name}");
    !with.contains(&ignored) && (with.contains(name) || with != baseline)
}

fn keysvc_reads_env(name: &str) -> bool {
    reads_env("keysvc", name)
}

fn config_errors(subcommand: &str, env: &[(&str, &str)]) -> String {
    let dir = tempfile::tempdir().expect("temporary directory");
    let mut cmd = Command::new(BIN);
    for (k, _) in std::env::vars() {
        if k.starts_with("OPENKCM_")
            || k == "POSTGRES_CONNECTION"
            || k == "TENANT_ISOLATION_ENABLED"
        {
            cmd.env_remove(k);
        }
    }
    // The controller finds the API as kubectl does; here it must find none.
    cmd.env_remove("KUBERNETES_SERVICE_HOST")
        .env("KUBECONFIG", dir.path().join("no-kubeconfig"));
    let out = cmd
        .current_dir(dir.path())
        .arg(subcommand)
        .envs(env.iter().copied())
        .stdin(Stdio::null())
        .output()
        .expect("run openkcm");
    assert_eq!(
        out.status.code(),
        Some(2),
        "openkcm {subcommand} without configuration should refuse to start (exit 2): {}",
        String::from_utf8_lossy(&out.stderr)
    );
    // The messages only: JSON log lines carry timestamps.
    String::from_utf8_lossy(&out.stderr)
        .lines()
        .filter(|line| !line.starts_with('{') || line.contains("ignoring environment variable"))
        .collect::<Vec<_>>()
        .join("\n")
}

#[test]
fn every_flag_env_and_port_the_manifests_use_exists_in_the_binary() {
    let mut helps: BTreeMap<Vec<String>, Help> = BTreeMap::new();
    let mut problems = Vec::new();
    for c in &rendered().containers {
        let who = format!(
            "{} {} container {}",
            c["overlay"].as_str().unwrap_or("?"),
            c["workload"].as_str().unwrap_or("?"),
            c["container"].as_str().unwrap_or("?")
        );
        if !strings(&c["command"]).is_empty() {
            problems.push(format!(
                "{who}: sets command; the image's entrypoint is openkcm"
            ));
        }
        let args = strings(&c["args"]);
        let sub = subcommand(&args);
        if sub.is_empty() {
            problems.push(format!("{who}: no subcommand in args {args:?}"));
            continue;
        }
        let h = helps.entry(sub.clone()).or_insert_with(|| help(&sub));

        // Flags.
        let mut listen_ports = BTreeSet::new();
        for arg in &args[sub.len()..] {
            let Some((name, value)) = flag_value(arg) else {
                // A switch (`--allow-remote`): one that takes no value in --help.
                if arg.starts_with("--") && h.switches.contains(arg.as_str()) {
                    continue;
                }
                problems.push(format!(
                    "{who}: argument {arg:?} is neither --flag=value nor a switch of `openkcm {}`",
                    sub.join(" ")
                ));
                continue;
            };
            if !h.flags.contains(name) {
                problems.push(format!(
                    "{who}: `openkcm {}` has no flag {name}",
                    sub.join(" ")
                ));
            }
            if let Ok(addr) = value.parse::<SocketAddr>() {
                if addr.ip().is_unspecified() {
                    listen_ports.insert(addr.port());
                }
            }
        }

        // Environment: --help lists clap's variables; the components on the configuration
        // dialect (keysvc, the injector) are asked directly. A variable that only feeds another one ($(NAME) references) is
        // fine as long as it does not look like one of ours.
        let env: Vec<&Value> = c["env"]
            .as_array()
            .map(|a| a.iter().collect())
            .unwrap_or_default();
        let referenced: BTreeSet<String> = env
            .iter()
            .filter_map(|e| e["value"].as_str())
            .chain(args.iter().map(String::as_str))
            .flat_map(|v| {
                v.split("$(")
                    .skip(1)
                    .filter_map(|s| s.split_once(')').map(|(n, _)| n.to_owned()))
                    .collect::<Vec<_>>()
            })
            .collect();
        for e in &env {
            let name = e["name"].as_str().expect("env name");
            let known = h.env.contains(name)
                || (matches!(sub.as_slice(), [s] if s == "keysvc" || s == "injector" || s == "controller")
                    && reads_env(&sub[0], name))
                || (referenced.contains(name) && !name.starts_with("OPENKCM_"));
            if !known {
                problems.push(format!(
                    "{who}: `openkcm {}` does not read environment variable {name}",
                    sub.join(" ")
                ));
            }
        }

        // Ports: each declared port is one the flags listen on, and the other way round.
        let declared: BTreeMap<String, u16> = c["ports"]
            .as_array()
            .map(|ports| {
                ports
                    .iter()
                    .map(|p| {
                        (
                            p["name"].as_str().unwrap_or("").to_owned(),
                            u16::try_from(p["containerPort"].as_u64().unwrap_or(0)).unwrap_or(0),
                        )
                    })
                    .collect()
            })
            .unwrap_or_default();
        let declared_ports: BTreeSet<u16> = declared.values().copied().collect();
        if declared_ports != listen_ports {
            problems.push(format!(
                "{who}: containerPorts {declared_ports:?} but the flags listen on {listen_ports:?}"
            ));
        }
        if let Some(probes) = c["probes"].as_object() {
            for (probe, p) in probes {
                let port = p["port"].as_str().unwrap_or("");
                if !declared.contains_key(port) {
                    problems.push(format!(
                        "{who}: {probe} uses port {port:?}, not a named containerPort"
                    ));
                }
            }
        }

        // Stopping: the pod's grace period covers the preStop sleep plus the drain.
        let grace = c["terminationGracePeriodSeconds"].as_u64().unwrap_or(30);
        let pre_stop = c["preStopSleep"].as_u64().unwrap_or(0);
        let seconds = |flag: &str, default: u64| {
            args.iter()
                .find_map(|a| a.strip_prefix(flag))
                .map(|v| {
                    runtime::parse_duration(v)
                        .unwrap_or_else(|e| panic!("{flag}{v}: {e}"))
                        .as_secs()
                })
                .unwrap_or(default)
        };
        // A graceful stop: the drain period (/ready 503, everything served), then the grace
        // period for in-flight requests.
        let drain = match sub.first().map(String::as_str) {
            Some("gateway") => {
                seconds("--drain-period=", DEFAULT_DRAIN_SECONDS)
                    + seconds("--grace-period=", DEFAULT_GRACE_SECONDS)
            }
            Some("keysvc") if sub.len() == 1 => {
                seconds("--drain-period=", DEFAULT_DRAIN_SECONDS)
                    + seconds("--grace-period=", DEFAULT_GRACE_SECONDS)
            }
            _ => 0,
        };
        if c["workload"]
            .as_str()
            .is_some_and(|w| w.starts_with("Deployment/"))
            && grace <= pre_stop + drain
        {
            problems.push(format!(
                "{who}: terminationGracePeriodSeconds {grace} must exceed preStop {pre_stop} s + drain {drain} s"
            ));
        }
    }
    assert!(problems.is_empty(), "{}", problems.join("\n"));
}

#[test]
fn the_env_check_tells_a_component_variable_from_an_unknown_one() {
    assert!(keysvc_reads_env("OPENKCM_LOG__LEVEL"));
    assert!(keysvc_reads_env("POSTGRES_CONNECTION"));
    assert!(keysvc_reads_env("OPENKCM_ROOT_KEY__ID"));
    assert!(!keysvc_reads_env("OPENKCM_ROOT_KEY_ID"));
    assert!(!keysvc_reads_env("DATABASE_URL"));
    // The injector speaks the same dialect: its aliases and the OPENKCM_A__B form.
    assert!(reads_env("injector", "OPENKCM_LOG_LEVEL"));
    assert!(reads_env("injector", "OPENKCM_INJECTOR_LISTEN"));
    assert!(reads_env("injector", "OPENKCM_LISTEN__MANAGEMENT"));
    assert!(!reads_env("injector", "OPENKCM_INJECTOR_LOGLEVEL"));
}

// --------------------------------------------------------------------------- routing

fn openkcm(args: &[&str]) -> Output {
    run(&args.iter().map(|s| s.to_string()).collect::<Vec<_>>())
}

/// What `openkcm controller` writes to ConfigMap openkcm-routing for the TenantRouting
/// resources in `files` (the same planner the controller runs).
fn rendered_routing(files: &[&str]) -> String {
    let resources: Vec<controller::routing::Resource> = files
        .iter()
        .enumerate()
        .map(|(i, rel)| {
            let text = std::fs::read_to_string(repo().join(rel)).expect(rel);
            let doc: serde_json::Value = serde_norway::from_str(&text).expect("YAML");
            controller::routing::Resource {
                key: controller::routing::Key {
                    namespace: "openkcm-system".into(),
                    name: doc["metadata"]["name"].as_str().expect("name").into(),
                },
                generation: 1,
                created: format!("2026-01-0{}T00:00:00Z", i + 1),
                spec: doc["spec"].clone(),
            }
        })
        .collect();
    let plan = controller::routing::plan(&resources, "");
    for (key, outcome) in &plan.outcomes {
        assert_eq!(
            outcome.verdict,
            controller::routing::Verdict::Accepted,
            "{key}"
        );
    }
    plan.content
}

#[test]
fn the_routing_configmap_routes_tenant_certificates_and_denies_others() {
    let dir = tempfile::tempdir().expect("temporary directory");
    let rules = dir.path().join("tenant-routing.yaml");
    std::fs::write(
        &rules,
        rendered_routing(&["manifests/base/platform-mesh/tenantrouting.yaml"]),
    )
    .expect("write the rendered rules");
    let ca = dir.path().join("ca");
    let certs = dir.path().join("certs");
    let path = |p: &Path| p.display().to_string();
    let init = openkcm(&["pki", "init", "--dir", &path(&ca)]);
    assert!(init.status.success(), "pki init: {init:?}");
    for (tenant, expected_exit) in [("tenant-a", 0), ("tenant-b", 0), ("tenant-x", 3)] {
        let issued = openkcm(&[
            "pki",
            "issue",
            "--ca-dir",
            &path(&ca),
            "--tenant",
            tenant,
            "--out",
            &path(&certs),
        ]);
        assert!(issued.status.success(), "pki issue: {issued:?}");
        let cert = certs.join(format!("{tenant}.pem"));
        let checked = openkcm(&[
            "routing",
            "check",
            "--policies",
            &path(&rules),
            "--cert",
            &path(&cert),
        ]);
        let stdout = String::from_utf8_lossy(&checked.stdout);
        assert_eq!(
            checked.status.code(),
            Some(expected_exit),
            "{tenant}: {stdout}{}",
            String::from_utf8_lossy(&checked.stderr)
        );
        if expected_exit == 0 {
            assert!(stdout.contains(&format!("tenant: {tenant}")), "{stdout}");
        }
    }
}

/// docs/routing.md's example rules ("Precedence", "Examples").
const DOCUMENTED_RULES: &str = r#"apiVersion: platform-mesh.io/v1
kind: TenantRouting
metadata: { name: docs-example }
spec:
  routing:
    - match: { certificate: { subject: { organizationalUnit: tenant-a } } }
      route: { tenant: tenant-a }
    - match: { certificate: { subject: { organizationalUnit: tenant-a, commonName: reporting } } }
      route: { tenant: tenant-a-reporting }
    - match: { certificate: { sanUri: "spiffe://mesh/ns/b/*" } }
      route: { tenant: tenant-b }
    - match: { certificate: { sanUri: "spiffe://mesh/ns/b/sa/batch" } }
      route: { tenant: tenant-b-batch }
    - match: { certificate: { subject: { commonName: shared } } }
      route: { tenant: tenant-c }
"#;

#[test]
fn routing_check_warns_about_overlapping_rules_and_rules_on_requester_chosen_fields() {
    let dir = tempfile::tempdir().expect("temporary directory");
    let rules = dir.path().join("rules.yaml");
    std::fs::write(&rules, DOCUMENTED_RULES).expect("write rules");
    let path = |p: &Path| p.display().to_string();
    let r = path(&rules);
    let warned = |stderr: &str| {
        for expected in [
            format!("warning: {r} doc 1 rule 3: overlaps {r} doc 1 rule 5: this rule routes to tenant tenant-b, that one to tenant tenant-c"),
            format!("warning: {r} doc 1 rule 1: overlaps {r} doc 1 rule 5: "),
            format!("warning: {r} doc 1 rule 5: matches only on subject.commonName, which whoever requests a certificate chooses"),
        ] {
            assert!(stderr.contains(&expected), "missing {expected:?} in:\n{stderr}");
        }
        assert_eq!(stderr.matches("warning: ").count(), 8, "{stderr}");
    };

    // Without a certificate: the rules are checked; warnings do not fail them.
    let checked = openkcm(&["routing", "check", "--policies", &r]);
    let stdout = String::from_utf8_lossy(&checked.stdout);
    let stderr = String::from_utf8_lossy(&checked.stderr);
    assert_eq!(checked.status.code(), Some(0), "{stdout}{stderr}");
    assert!(
        stdout.contains("5 rule(s) from 1 file(s): valid, 8 warning(s)"),
        "{stdout}"
    );
    warned(&stderr);

    // With one: the same warnings, and the overlap they warn about denied (exit 3).
    let ca = dir.path().join("ca");
    let certs = dir.path().join("certs");
    let init = openkcm(&["pki", "init", "--dir", &path(&ca)]);
    assert!(init.status.success(), "pki init: {init:?}");
    let issued = openkcm(&[
        "pki",
        "issue",
        "--ca-dir",
        &path(&ca),
        "--tenant",
        "tenant-a",
        "--cn",
        "shared",
        "--out",
        &path(&certs),
    ]);
    assert!(issued.status.success(), "pki issue: {issued:?}");
    let cert = path(&certs.join("tenant-a.pem"));
    let checked = openkcm(&["routing", "check", "--policies", &r, "--cert", &cert]);
    let stdout = String::from_utf8_lossy(&checked.stdout);
    let stderr = String::from_utf8_lossy(&checked.stderr);
    assert_eq!(checked.status.code(), Some(3), "{stdout}{stderr}");
    assert!(stdout.contains("DENIED: ambiguous"), "{stdout}");
    warned(&stderr);

    // A sanUri prefix that does not end at a path boundary is refused (exit 2).
    let loose = dir.path().join("loose.yaml");
    std::fs::write(
        &loose,
        DOCUMENTED_RULES.replace("spiffe://mesh/ns/b/*", "spiffe://mesh/ns/b*"),
    )
    .expect("write rules");
    let checked = openkcm(&["routing", "check", "--policies", &path(&loose)]);
    let stderr = String::from_utf8_lossy(&checked.stderr);
    assert_eq!(checked.status.code(), Some(2), "{stderr}");
    assert!(
        stderr.contains(&format!(
            "{} doc 1 rule 3: match.certificate.sanUri \"spiffe://mesh/ns/b*\" is a prefix that does not end at a path boundary",
            path(&loose)
        )),
        "{stderr}"
    );
}

#[test]
fn the_users_tenantrouting_renders_to_rules_the_gateway_loads() {
    let dir = tempfile::tempdir().expect("temporary directory");
    let rules = dir.path().join("tenant-routing.yaml");
    std::fs::write(
        &rules,
        rendered_routing(&["manifests/examples/platform-mesh/tenantrouting.yaml"]),
    )
    .expect("write the rendered rules");
    let checked = openkcm(&[
        "routing",
        "check",
        "--policies",
        &rules.display().to_string(),
    ]);
    assert!(
        checked.status.success(),
        "{}",
        String::from_utf8_lossy(&checked.stderr)
    );
    assert!(
        String::from_utf8_lossy(&checked.stdout).starts_with("1 rule(s) from 1 file(s): valid"),
        "{checked:?}"
    );
}

// ------------------------------------------------------------------- metrics and probes

/// Series a /metrics page serves, from its `# TYPE` lines (families exist before traffic).
fn series(page: &str) -> BTreeSet<String> {
    let mut out = BTreeSet::new();
    for line in page.lines() {
        let mut words = line.split_whitespace();
        if words.next() != Some("#") || words.next() != Some("TYPE") {
            continue;
        }
        let (Some(name), Some(kind)) = (words.next(), words.next()) else {
            continue;
        };
        match kind {
            "counter" => {
                out.insert(format!("{name}_total"));
            }
            "histogram" => {
                for suffix in ["_bucket", "_sum", "_count"] {
                    out.insert(format!("{name}{suffix}"));
                }
            }
            _ => {
                out.insert(name.to_owned());
            }
        }
    }
    out
}

/// Counter families only a failure creates a child in (`openkcm_upstream_failures_total`:
/// keysvc unreachable after the request left): accepted when the gateway or keysvc
/// registers the family as a counter (`registry.register("NAME", …)` after a
/// `Family::<…, Counter>`).
fn registered_counter(series: &str) -> bool {
    let Some(family) = series.strip_suffix("_total") else {
        return false;
    };
    ["gateway/src/metrics.rs", "keysvc/src/metrics.rs"]
        .iter()
        .any(|rel| {
            let text = std::fs::read_to_string(repo().join(rel)).unwrap_or_default();
            let Some(at) = text.find(&format!("\"{family}\"")) else {
                return false;
            };
            let before = &text[..at];
            let statement = before.rfind("let ").map_or("", |s| &before[s..]);
            statement.contains("Counter>") && statement.contains("registry.register(")
        })
}

/// `openkcm dev` (gateway + keysvc on SQLite) as a child process; killed on drop.
struct Dev {
    child: Child,
    kmip: SocketAddr,
    https: SocketAddr,
    dir: tempfile::TempDir,
}

impl Drop for Dev {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn start_dev() -> Dev {
    let dir = tempfile::tempdir().expect("temporary directory");
    let https = testkit::net::free_addr();
    let kmip = testkit::net::free_addr();
    let mut child = Command::new(BIN)
        .arg("dev")
        .arg("--dir")
        .arg(dir.path())
        .args(["--kmip-addr", &kmip.to_string()])
        .args(["--https-addr", &https.to_string()])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("spawn openkcm dev");
    let stdout = child.stdout.take().expect("stdout");
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            let _ = tx.send(line);
        }
    });
    let dev = Dev {
        child,
        kmip,
        https,
        dir,
    };
    loop {
        match rx.recv_timeout(DEV_START_TIMEOUT) {
            Ok(line) if line.starts_with("openkcm dev ready") => return dev,
            Ok(_) => {}
            Err(e) => panic!("openkcm dev not ready within {DEV_START_TIMEOUT:?}: {e}"),
        }
    }
}

/// `openkcm injector` on loopback with `manifests/base/injector/config.yaml` and a
/// certificate from `openkcm pki`; killed on drop.
struct Injector {
    child: Child,
    management: SocketAddr,
    _dir: tempfile::TempDir,
}

impl Drop for Injector {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn start_injector() -> Injector {
    let dir = tempfile::tempdir().expect("temporary directory");
    let path = |p: PathBuf| p.display().to_string();
    let ca = path(dir.path().join("ca"));
    let out = path(dir.path().join("certs"));
    for args in [
        vec!["pki", "init", "--dir", ca.as_str()],
        vec![
            "pki", "issue", "--ca-dir", &ca, "--tenant", "webhook", "--out", &out,
        ],
    ] {
        let done = openkcm(&args);
        assert!(done.status.success(), "openkcm {args:?}: {done:?}");
    }
    let management = testkit::net::free_addr();
    let child = Command::new(BIN)
        .arg("injector")
        .args(["--listen", &testkit::net::free_addr().to_string()])
        .args(["--management", &management.to_string()])
        .args(["--cert", &format!("{out}/webhook.pem")])
        .args(["--key", &format!("{out}/webhook-key.pem")])
        .arg("--config")
        .arg(repo().join("manifests/base/injector/config.yaml"))
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("spawn openkcm injector");
    let injector = Injector {
        child,
        management,
        _dir: dir,
    };
    let deadline = std::time::Instant::now() + DEV_START_TIMEOUT;
    while std::net::TcpStream::connect(management).is_err() {
        assert!(
            std::time::Instant::now() < deadline,
            "openkcm injector did not listen on {management} within {DEV_START_TIMEOUT:?}"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    injector
}

/// GET over HTTPS (HTTP/1.1, no client certificate), as the kubelet and Prometheus do.
async fn https_get(addr: SocketAddr, ca: &Path, path: &str) -> (u16, String) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut roots = rustls::RootCertStore::empty();
    let pem = std::fs::read(ca).expect("dev CA");
    for cert in rustls_pemfile_certs(&pem) {
        roots.add(cert).expect("CA certificate");
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .expect("protocol versions")
        .with_root_certificates(roots)
        .with_no_client_auth();
    let connector = tokio_rustls::TlsConnector::from(Arc::new(config));
    let tcp = tokio::net::TcpStream::connect(addr).await.expect("connect");
    let name = rustls::pki_types::ServerName::try_from("localhost").expect("name");
    let mut tls = connector.connect(name, tcp).await.expect("TLS handshake");
    let request = format!("GET {path} HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n");
    tls.write_all(request.as_bytes()).await.expect("write");
    let mut response = Vec::new();
    let _ = tls.read_to_end(&mut response).await;
    let text = String::from_utf8_lossy(&response).into_owned();
    let status = text
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(0);
    (status, text)
}

/// The certificates of a PEM file (rustls' own PEM reader).
fn rustls_pemfile_certs(pem: &[u8]) -> Vec<rustls::pki_types::CertificateDer<'static>> {
    use rustls::pki_types::pem::PemObject;
    rustls::pki_types::CertificateDer::pem_slice_iter(pem)
        .collect::<Result<_, _>>()
        .expect("PEM certificates")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn alert_dashboard_and_autoscaler_series_exist_and_probe_paths_answer() {
    let wanted = &rendered().metrics;
    assert!(
        wanted.contains_key("kmip_requests_total"),
        "the autoscaler's source series is not read anywhere: {wanted:?}"
    );

    // keysvc on PostgreSQL (the pool gauge exists only there), management port as in the
    // Deployment's probes.
    let pki = Pki::generate();
    let db = PgDatabase::create(true).await;
    let mut keysvc = Keysvc::spawn(&pki.args(&db.app_url()));
    let mut served = BTreeSet::new();
    for path in ["/health", "/ready"] {
        let (status, body) = http1_get(keysvc.management, path).await.expect(path);
        assert_eq!(status, 200, "keysvc {path}: {body}");
    }
    let (_, page) = http1_get(keysvc.management, "/metrics")
        .await
        .expect("metrics");
    served.extend(series(&page));

    // The gateway, in `openkcm dev`: probes and /metrics on its HTTPS listener.
    let dev = start_dev();
    let ca = dev.dir.path().join("pki/ca.pem");
    for path in ["/management/health", "/health", "/ready"] {
        let (status, body) = https_get(dev.https, &ca, path).await;
        assert_eq!(status, 200, "gateway {path}: {body}");
    }
    // Labelled families appear once they have a child: one tenant request, one denial.
    let pki = |name: &str| dev.dir.path().join("pki").join(name);
    for who in ["tenant-a", "stranger"] {
        let connector = kmip::client::tls::connector_from_pem_files(
            pki("ca.pem"),
            pki(&format!("{who}.pem")),
            pki(&format!("{who}-key.pem")),
        )
        .expect("client connector");
        let mut client = tokio::time::timeout(
            DEV_START_TIMEOUT,
            kmip::client::Client::connect_tls(&dev.kmip.to_string(), "localhost", &connector),
        )
        .await
        .expect("connect in time")
        .unwrap_or_else(|e| panic!("{who} connects: {e}"));
        client.set_timeout(DEV_START_TIMEOUT);
        let created = client.create_aes_key(256, None).await;
        assert_eq!(created.is_ok(), who == "tenant-a", "{who}: {created:?}");
    }
    let (status, page) = https_get(dev.https, &ca, "/metrics").await;
    assert_eq!(status, 200, "gateway /metrics: {page}");
    served.extend(series(&page));

    // The injector, with the manifests' own configuration file.
    let injector = start_injector();
    for path in ["/health", "/ready"] {
        let (status, body) = http1_get(injector.management, path).await.expect(path);
        assert_eq!(status, 200, "injector {path}: {body}");
    }
    let (_, page) = http1_get(injector.management, "/metrics")
        .await
        .expect("injector metrics");
    served.extend(series(&page));
    // The controller needs a Kubernetes API to run (tests/controller_kube.rs runs it against
    // one); its /metrics page is this registry's text.
    served.extend(series(&controller::ControllerMetrics::new().encode()));

    let missing: Vec<String> = wanted
        .iter()
        .filter(|(name, _)| !served.contains(*name) && !registered_counter(name))
        .map(|(name, at)| format!("{name} (read by {})", at.join("; ")))
        .collect();
    assert!(
        missing.is_empty(),
        "series the manifests read but no binary serves:\n{}\nserved: {served:?}",
        missing.join("\n")
    );
    drop(injector);
    drop(dev);
    keysvc.terminate(Duration::from_secs(30));
    db.drop().await;
}

#[test]
fn a_missing_validator_fails_loudly() {
    let out = Command::new("bash")
        .arg(repo().join("scripts/validate-manifests.sh"))
        .env("OPENKCM_VENV", PathBuf::from("/nonexistent-venv"))
        .output()
        .expect("run scripts/validate-manifests.sh");
    assert!(!out.status.success(), "passed without its tools");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("make bootstrap"), "{stderr}");
}
