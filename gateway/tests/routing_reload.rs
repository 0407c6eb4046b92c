//! RoutingWatcher: rule changes on disk reach decisions without a restart; broken changes
//! do not.

use std::fs;
use std::os::unix::fs::symlink;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use gateway::identity::PeerIdentity;
use gateway::routing::{Decision, RoutingWatcher};
use pki::{CertSpec, CertificateAuthority};

/// Fast polling keeps the tests quick; the bound below is what they assert.
const POLL: Duration = Duration::from_millis(25);
/// How long an asynchronous effect may take before the test fails.
const PATIENCE: Duration = Duration::from_secs(10);

fn rules(ou_to_tenant: &[(&str, &str)]) -> String {
    let mut text = String::from(
        "apiVersion: platform-mesh.io/v1\nkind: TenantRouting\nmetadata: { name: t }\n\
         spec:\n  service: kmip-crypto-service\n  routing:\n",
    );
    for (ou, tenant) in ou_to_tenant {
        text.push_str(&format!(
            "    - match: {{ certificate: {{ subject: {{ organizationalUnit: {ou} }} }} }}\n      \
             route: {{ tenant: {tenant} }}\n"
        ));
    }
    text
}

fn peer(ou: &str) -> PeerIdentity {
    let ca = CertificateAuthority::create("platform-mesh-ca").expect("CA");
    let issued = ca
        .issue(&CertSpec {
            organizational_units: vec![ou.into()],
            client: true,
            ..CertSpec::new("app")
        })
        .expect("issue");
    PeerIdentity::from_der(&issued.cert_der).expect("identity")
}

fn tenant_of(watcher: &RoutingWatcher, peer: &PeerIdentity) -> Option<String> {
    match watcher.current().decide(peer) {
        Decision::Allow(route) => Some(route.tenant),
        Decision::Deny { .. } => None,
    }
}

/// Waits until `check` holds, failing the test after [`PATIENCE`].
async fn eventually(what: &str, mut check: impl FnMut() -> bool) {
    let deadline = Instant::now() + PATIENCE;
    while !check() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// Replaces a file in one step, as editors and `kubectl cp` do (no half-written reads).
fn replace(path: &Path, text: &str) {
    let temp = path.with_extension("tmp");
    fs::write(&temp, text).expect("write");
    fs::rename(&temp, path).expect("rename");
}

#[tokio::test]
async fn a_changed_rule_file_applies_without_a_restart() {
    let dir = tempfile::tempdir().expect("tempdir");
    let file = dir.path().join("rules.yaml");
    fs::write(&file, rules(&[("tenant-a", "tenant-a")])).expect("write");
    let watcher = RoutingWatcher::start(std::slice::from_ref(&file), POLL).expect("start");
    let a = peer("tenant-a");
    let b = peer("tenant-b");
    assert_eq!(tenant_of(&watcher, &a).as_deref(), Some("tenant-a"));
    assert_eq!(tenant_of(&watcher, &b), None);

    replace(
        &file,
        &rules(&[("tenant-a", "tenant-a"), ("tenant-b", "tenant-b")]),
    );
    eventually("tenant-b to be routed", || {
        tenant_of(&watcher, &b).as_deref() == Some("tenant-b")
    })
    .await;

    // An in-place rewrite (same name, new content) is seen too.
    fs::write(&file, rules(&[("tenant-a", "tenant-z")])).expect("write");
    eventually("tenant-a to move to tenant-z", || {
        tenant_of(&watcher, &a).as_deref() == Some("tenant-z")
    })
    .await;
    eventually("tenant-b to be dropped", || {
        tenant_of(&watcher, &b).is_none()
    })
    .await;
    assert_eq!(watcher.problem(), None);
}

#[tokio::test]
async fn a_broken_change_keeps_the_previous_rules_until_it_is_fixed() {
    let dir = tempfile::tempdir().expect("tempdir");
    let file = dir.path().join("rules.yaml");
    fs::write(&file, rules(&[("tenant-a", "tenant-a")])).expect("write");
    let watcher = RoutingWatcher::start(&[dir.path().to_path_buf()], POLL).expect("start");
    let a = peer("tenant-a");
    let b = peer("tenant-b");

    replace(
        &file,
        &rules(&[("tenant-a", "tenant-a"), ("tenant-b", "\"not a tenant\"")]),
    );
    eventually("the problem to be reported", || {
        watcher.problem().is_some_and(|p| {
            p.contains("rules.yaml doc 1 rule 2") && p.contains("not a valid tenant id")
        })
    })
    .await;
    assert_eq!(tenant_of(&watcher, &a).as_deref(), Some("tenant-a"));
    assert_eq!(tenant_of(&watcher, &b), None);

    // A deleted file is a problem too; the rules in force stay.
    fs::remove_file(&file).expect("remove");
    eventually("the missing file to be reported", || {
        watcher
            .problem()
            .is_some_and(|p| p.contains("no *.yaml or *.yml files"))
    })
    .await;
    assert_eq!(tenant_of(&watcher, &a).as_deref(), Some("tenant-a"));

    replace(
        &file,
        &rules(&[("tenant-a", "tenant-a"), ("tenant-b", "tenant-b")]),
    );
    eventually("the fixed rules to apply", || {
        tenant_of(&watcher, &b).as_deref() == Some("tenant-b")
    })
    .await;
    assert_eq!(watcher.problem(), None);
}

/// The layout kubelet gives a ConfigMap volume:
///
/// ```text
/// mount/tenant-routing.yaml -> ..data/tenant-routing.yaml
/// mount/..data -> ..2024_01_01_00_00_00.1
/// mount/..2024_01_01_00_00_00.1/tenant-routing.yaml
/// ```
///
/// An update writes a new timestamped directory, points `..data_tmp` at it, renames
/// `..data_tmp` over `..data` (atomic) and deletes the old directory.
struct ConfigMapVolume {
    mount: PathBuf,
    generation: usize,
}

impl ConfigMapVolume {
    fn new(mount: PathBuf, text: &str) -> Self {
        fs::create_dir_all(&mount).expect("mkdir");
        let mut volume = Self {
            mount,
            generation: 0,
        };
        volume.update(text);
        symlink(
            "..data/tenant-routing.yaml",
            volume.mount.join("tenant-routing.yaml"),
        )
        .expect("symlink");
        volume
    }

    fn data_dir(&self, generation: usize) -> PathBuf {
        self.mount
            .join(format!("..2024_01_01_00_00_00.{generation}"))
    }

    fn update(&mut self, text: &str) {
        self.generation += 1;
        let new = self.data_dir(self.generation);
        fs::create_dir(&new).expect("mkdir");
        fs::write(new.join("tenant-routing.yaml"), text).expect("write");
        let tmp = self.mount.join("..data_tmp");
        symlink(new.file_name().expect("name"), &tmp).expect("symlink");
        fs::rename(&tmp, self.mount.join("..data")).expect("swap");
        if self.generation > 1 {
            fs::remove_dir_all(self.data_dir(self.generation - 1)).expect("cleanup");
        }
    }
}

#[tokio::test]
async fn a_configmap_symlink_swap_is_picked_up() {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut volume = ConfigMapVolume::new(
        dir.path().join("mount"),
        &rules(&[("tenant-a", "tenant-a")]),
    );
    let watcher = RoutingWatcher::start(&[volume.mount.clone()], POLL).expect("start");
    let current = watcher.current();
    assert_eq!(current.files(), [volume.mount.join("tenant-routing.yaml")]);
    let a = peer("tenant-a");
    assert_eq!(tenant_of(&watcher, &a).as_deref(), Some("tenant-a"));

    volume.update(&rules(&[("tenant-a", "tenant-a2")]));
    eventually("the swapped ConfigMap to apply", || {
        tenant_of(&watcher, &a).as_deref() == Some("tenant-a2")
    })
    .await;

    volume.update(&rules(&[("tenant-a", "tenant-a3")]));
    eventually("the second swap to apply", || {
        tenant_of(&watcher, &a).as_deref() == Some("tenant-a3")
    })
    .await;
    assert_eq!(watcher.problem(), None);
}

#[tokio::test]
async fn starting_on_broken_rules_fails_and_the_task_never_keeps_the_watcher_alive() {
    let dir = tempfile::tempdir().expect("tempdir");
    let file = dir.path().join("rules.yaml");
    fs::write(&file, "kind: [").expect("write");
    let err = RoutingWatcher::start(std::slice::from_ref(&file), POLL).expect_err("broken");
    assert!(err.to_string().contains("invalid YAML"), "{err}");

    fs::write(&file, rules(&[("tenant-a", "tenant-a")])).expect("write");
    let watcher = RoutingWatcher::start(std::slice::from_ref(&file), POLL).expect("start");
    // Let the task run a few polls, then check it holds no strong reference. On this
    // current-thread runtime the task is parked at an await whenever the test runs, and
    // it never holds the watcher across an await, so the count is exact.
    let start = Instant::now();
    eventually("a few polls", || start.elapsed() > POLL * 4).await;
    assert_eq!(Arc::strong_count(&watcher), 1);
    let weak = Arc::downgrade(&watcher);
    drop(watcher);
    assert!(weak.upgrade().is_none());
}
