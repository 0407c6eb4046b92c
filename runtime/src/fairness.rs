//! Per-tenant slots: a bound on how much of a shared process one tenant may hold at once
//! (the gateway's connections, keysvc's executing requests), so a flooding tenant queues
//! behind its own work instead of everyone's.
//!
//! ```text
//! TenantSlots(per_tenant = N)
//!   tenant-a ─► Semaphore(N) ─► permit held while the connection / request lives
//!   tenant-b ─► Semaphore(N)      (each tenant's own; one tenant never waits for another's)
//! ```
//!
//! Tenants are known names (routing rules decide them), so the map only grows with the
//! configuration, never with what a client sends.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::registry::Registry;
use tokio::sync::{OwnedSemaphorePermit, Semaphore};

/// `openkcm_tenant_throttled_total{tenant,reason}`, named alike in every component: each
/// time a tenant hit one of its limits (the reason says which).
#[derive(Clone, Debug, Default)]
pub struct ThrottleMetrics {
    family: Family<ThrottleLabels, Counter>,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ThrottleLabels {
    tenant: String,
    reason: &'static str,
}

impl ThrottleMetrics {
    pub fn register(&self, registry: &mut Registry) {
        registry.register(
            "openkcm_tenant_throttled",
            "Requests or connections of a tenant held back or refused by a per-tenant limit",
            self.family.clone(),
        );
    }

    pub fn throttled(&self, tenant: &str, reason: &'static str) {
        self.family
            .get_or_create(&ThrottleLabels {
                tenant: tenant.to_owned(),
                reason,
            })
            .inc();
    }

    /// The count so far (tests).
    pub fn count(&self, tenant: &str, reason: &'static str) -> u64 {
        self.family
            .get_or_create(&ThrottleLabels {
                tenant: tenant.to_owned(),
                reason,
            })
            .get()
    }
}

/// A tenant's slot; freed on drop.
#[derive(Debug)]
pub struct Slot(#[allow(dead_code)] OwnedSemaphorePermit);

/// How a wait for a slot ended.
#[derive(Debug)]
pub enum Waited {
    /// A slot was free.
    AtOnce(Slot),
    /// The tenant's slots were all taken; one came free within the wait.
    Queued(Slot),
    /// None came free within the wait.
    TimedOut,
}

/// Up to `per_tenant` slots for each tenant.
#[derive(Debug)]
pub struct TenantSlots {
    per_tenant: usize,
    tenants: Mutex<HashMap<String, Arc<Semaphore>>>,
}

impl TenantSlots {
    pub fn new(per_tenant: usize) -> Self {
        Self {
            per_tenant: per_tenant.max(1),
            tenants: Mutex::new(HashMap::new()),
        }
    }

    /// Slots per tenant.
    pub fn per_tenant(&self) -> usize {
        self.per_tenant
    }

    fn semaphore(&self, tenant: &str) -> Arc<Semaphore> {
        // The map is only read and inserted into; a panic elsewhere cannot leave it torn.
        let mut tenants = self.tenants.lock().unwrap_or_else(PoisonError::into_inner);
        if let Some(s) = tenants.get(tenant) {
            return s.clone();
        }
        let s = Arc::new(Semaphore::new(self.per_tenant));
        tenants.insert(tenant.to_owned(), s.clone());
        s
    }

    /// A slot if one is free now.
    pub fn try_take(&self, tenant: &str) -> Option<Slot> {
        self.semaphore(tenant).try_acquire_owned().ok().map(Slot)
    }

    /// A slot, waiting at most `wait` for one (first come, first served).
    pub async fn take_within(&self, tenant: &str, wait: Duration) -> Waited {
        let semaphore = self.semaphore(tenant);
        if let Ok(permit) = semaphore.clone().try_acquire_owned() {
            return Waited::AtOnce(Slot(permit));
        }
        match tokio::time::timeout(wait, semaphore.acquire_owned()).await {
            Ok(Ok(permit)) => Waited::Queued(Slot(permit)),
            // Never closed; a timeout and a closed semaphore both mean no slot.
            Ok(Err(_)) | Err(_) => Waited::TimedOut,
        }
    }

    /// Slots of `tenant` in use now.
    pub fn in_use(&self, tenant: &str) -> usize {
        self.per_tenant - self.semaphore(tenant).available_permits()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_tenant_waits_for_its_own_slots_only() {
        let slots = Arc::new(TenantSlots::new(2));
        let a1 = slots.try_take("a").expect("first slot");
        let _a2 = slots.try_take("a").expect("second slot");
        assert!(slots.try_take("a").is_none(), "a has no third slot");
        // b is not affected by a being full.
        assert!(slots.try_take("b").is_some());
        assert_eq!(slots.in_use("a"), 2);

        assert!(matches!(
            slots.take_within("a", Duration::from_millis(20)).await,
            Waited::TimedOut
        ));
        let waiting = slots.clone();
        let waiter =
            tokio::spawn(async move { waiting.take_within("a", Duration::from_secs(10)).await });
        tokio::time::sleep(Duration::from_millis(50)).await;
        assert!(!waiter.is_finished(), "a's third request waits");
        drop(a1);
        assert!(matches!(waiter.await, Ok(Waited::Queued(_))));
    }
}
