//! The replica set: replicas from `IP:PORT` upstreams and from the addresses `HOST:PORT`
//! upstreams resolve to (re-resolved on an interval), and the client certificate their
//! peers present.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU64};
use std::sync::Arc;
use std::time::Duration;

use arc_swap::ArcSwap;
use pingora::utils::tls::{CertKey, WrappedX509};

use super::session::{make_peer, ReplicaPeer};
use super::{Replica, UpstreamPool, RESOLVE_TIMEOUT};
use crate::metrics::GatewayMetrics;

impl UpstreamPool {
    /// Uses `cert_key` for new upstream connections (pooled ones keep theirs: the pool
    /// key includes the certificate serial).
    pub fn set_client_cert(&self, cert_key: Arc<CertKey>) {
        let mut in_force = self.cert_key.lock().unwrap_or_else(|e| e.into_inner());
        *in_force = cert_key.clone();
        for replica in self.replicas.load().iter() {
            replica.peer.store(Arc::new(ReplicaPeer::new(make_peer(
                replica.addr,
                &self.server_name,
                &self.ca,
                cert_key.clone(),
            ))));
        }
    }

    /// Makes the replicas exactly `desired` (order kept for the replicas that stay, new
    /// ones appended); replicas that stay keep their health state. Returns what changed.
    pub fn set_addresses(&self, desired: &[SocketAddr]) -> Reconciliation {
        let cert_key = self.cert_key.lock().unwrap_or_else(|e| e.into_inner());
        let current = self.replicas.load_full();
        let addrs: Vec<SocketAddr> = current.iter().map(|r| r.addr).collect();
        let change = reconcile(&addrs, desired);
        if change.is_empty() {
            return change;
        }
        let replicas: Vec<Arc<Replica>> = current
            .iter()
            .filter(|r| !change.removed.contains(&r.addr))
            .cloned()
            .chain(change.added.iter().map(|&addr| {
                Arc::new(new_replica(
                    addr,
                    &self.server_name,
                    &self.ca,
                    cert_key.clone(),
                ))
            }))
            .collect();
        self.replicas.store(Arc::new(replicas));
        change
    }

    /// Resolves the `HOST:PORT` upstreams now and every `interval` (a tokio task; the first
    /// lookup starts at once), updating the replicas. `None` when every upstream is an
    /// `IP:PORT`.
    pub fn start_resolver(
        self: &Arc<Self>,
        interval: Duration,
        metrics: Arc<GatewayMetrics>,
    ) -> Option<tokio::task::AbortHandle> {
        if self.dns.is_empty() {
            return None;
        }
        let pool = Arc::downgrade(self);
        let static_addrs = self.static_addrs.clone();
        let dns = self.dns.clone();
        let task = tokio::spawn(async move {
            // What each name last resolved to (kept when a lookup fails or is empty).
            let mut resolved: Vec<Vec<SocketAddr>> = vec![Vec::new(); dns.len()];
            let mut tick = tokio::time::interval(interval);
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                tick.tick().await;
                for ((host, port), last) in dns.iter().zip(resolved.iter_mut()) {
                    let lookup = tokio::time::timeout(
                        RESOLVE_TIMEOUT,
                        tokio::net::lookup_host((host.as_str(), *port)),
                    )
                    .await;
                    match lookup {
                        Ok(Ok(addrs)) => {
                            let mut addrs: Vec<SocketAddr> = addrs.collect();
                            addrs.sort();
                            addrs.dedup();
                            if addrs.is_empty() {
                                tracing::warn!(upstream = %host, "upstream name resolved to no address; keeping the previous ones");
                            } else {
                                *last = addrs;
                            }
                        }
                        Ok(Err(e)) => {
                            tracing::warn!(upstream = %host, error = %e, "cannot resolve upstream name; keeping the previous addresses");
                        }
                        Err(_) => {
                            tracing::warn!(upstream = %host, "upstream name lookup timed out; keeping the previous addresses");
                        }
                    }
                }
                let Some(pool) = pool.upgrade() else {
                    return;
                };
                let mut desired = static_addrs.clone();
                for addr in resolved.iter().flatten() {
                    if !desired.contains(addr) {
                        desired.push(*addr);
                    }
                }
                let change = pool.set_addresses(&desired);
                for addr in &change.added {
                    tracing::info!(upstream = %addr, "keysvc replica added (DNS)");
                    metrics.set_upstream_healthy(&addr.to_string(), true);
                }
                for addr in &change.removed {
                    tracing::info!(upstream = %addr, "keysvc replica removed (DNS)");
                    metrics.set_upstream_healthy(&addr.to_string(), false);
                }
            }
        });
        Some(task.abort_handle())
    }
}

/// What [`reconcile`] found: addresses to add (in `desired` order, once each) and to
/// remove (in `current` order).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Reconciliation {
    pub added: Vec<SocketAddr>,
    pub removed: Vec<SocketAddr>,
}

impl Reconciliation {
    pub fn is_empty(&self) -> bool {
        self.added.is_empty() && self.removed.is_empty()
    }
}

/// The changes that turn the replica addresses `current` into `desired`.
pub fn reconcile(current: &[SocketAddr], desired: &[SocketAddr]) -> Reconciliation {
    let mut added: Vec<SocketAddr> = Vec::new();
    for addr in desired {
        if !current.contains(addr) && !added.contains(addr) {
            added.push(*addr);
        }
    }
    let mut removed: Vec<SocketAddr> = Vec::new();
    for addr in current {
        if !desired.contains(addr) && !removed.contains(addr) {
            removed.push(*addr);
        }
    }
    Reconciliation { added, removed }
}

pub(super) fn new_replica(
    addr: SocketAddr,
    server_name: &str,
    ca: &Arc<[WrappedX509]>,
    cert_key: Arc<CertKey>,
) -> Replica {
    Replica {
        addr,
        peer: ArcSwap::from_pointee(ReplicaPeer::new(make_peer(addr, server_name, ca, cert_key))),
        down_since_ms: AtomicU64::new(0),
        healthy: AtomicBool::new(true),
        last_ok_ms: AtomicU64::new(0),
        acquire: tokio::sync::Mutex::new(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn addrs(list: &[&str]) -> Vec<SocketAddr> {
        list.iter()
            .map(|a| a.parse().expect("socket address"))
            .collect()
    }

    #[test]
    fn reconcile_adds_new_and_removes_gone_addresses() {
        let change = reconcile(
            &addrs(&["10.0.0.1:9443", "10.0.0.2:9443"]),
            &addrs(&["10.0.0.2:9443", "10.0.0.3:9443", "10.0.0.3:9443"]),
        );
        assert_eq!(
            change,
            Reconciliation {
                added: addrs(&["10.0.0.3:9443"]),
                removed: addrs(&["10.0.0.1:9443"]),
            }
        );
    }

    #[test]
    fn reconcile_of_the_same_set_changes_nothing() {
        let set = addrs(&["10.0.0.1:9443", "[::1]:9443"]);
        let reversed: Vec<_> = set.iter().rev().copied().collect();
        assert!(reconcile(&set, &reversed).is_empty());
        assert!(reconcile(&[], &[]).is_empty());
    }

    #[test]
    fn reconcile_from_and_to_nothing() {
        let set = addrs(&["10.0.0.1:9443", "10.0.0.2:9443"]);
        assert_eq!(reconcile(&[], &set).added, set);
        assert_eq!(reconcile(&set, &[]).removed, set);
        assert_eq!(
            reconcile(&addrs(&["10.0.0.1:9443"]), &addrs(&["10.0.0.1:9444"])),
            Reconciliation {
                added: addrs(&["10.0.0.1:9444"]),
                removed: addrs(&["10.0.0.1:9443"]),
            }
        );
    }
}
