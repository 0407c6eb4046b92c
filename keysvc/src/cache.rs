//! A bounded cache of unwrapped objects per (tenant, uid), so hot keys skip the database
//! and the unwrap. Entries expire after a TTL and are dropped as soon as any keysvc process
//! sharing the database reports a change (the store's `subscribe`, PostgreSQL
//! LISTEN/NOTIFY across replicas).
//!
//! The cache does not look inside what it holds: the engine caches its `KeyObject`s here,
//! and this module depends on nothing of the engine's.

use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use dashmap::DashMap;
use tokio::sync::broadcast;

use crate::store::{ObjectChanged, StoreEvent};
use crate::tenant::{TenantContext, TenantId};

/// Cache bounds: in entries and in bytes, whichever is reached first.
#[derive(Clone, Copy, Debug)]
pub struct CacheConfig {
    /// Most entries.
    pub capacity: usize,
    /// Most bytes of cached objects (each weighed by [`Weigh`]). A tenant that registers
    /// large objects and reads them in a loop fills this, not the process's memory; an
    /// object heavier than a sixteenth of it is never cached.
    pub max_bytes: usize,
    /// How long an entry may serve without being re-read. Invalidation normally arrives
    /// within milliseconds; the TTL bounds staleness if a notification is ever lost.
    pub ttl: Duration,
}

impl Default for CacheConfig {
    fn default() -> Self {
        Self {
            capacity: 100_000,
            max_bytes: 64 * 1024 * 1024,
            ttl: Duration::from_secs(30),
        }
    }
}

/// Which object an entry is: the tenant is part of the key, so a hit can never cross
/// tenants.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct CacheKey {
    tenant: TenantId,
    uid: String,
}

/// How many bytes a cached object holds, roughly (its encoded size).
pub trait Weigh {
    fn weight(&self) -> usize;
}

#[derive(Debug)]
struct Entry<T> {
    object: Arc<T>,
    inserted: Instant,
    weight: usize,
}

/// The cache. Shared by every request of a process.
#[derive(Debug)]
pub struct ObjectCache<T> {
    entries: DashMap<CacheKey, Entry<T>>,
    config: CacheConfig,
    /// Bumped on every invalidation: a read that began before it must not be cached,
    /// since it may have read the object as it was before the change.
    epoch: AtomicU64,
    /// Sum of the entries' weights.
    bytes: AtomicUsize,
    hits: AtomicU64,
    misses: AtomicU64,
}

impl<T: Weigh + Send + Sync + 'static> ObjectCache<T> {
    pub fn new(config: CacheConfig) -> Self {
        Self {
            entries: DashMap::new(),
            config,
            epoch: AtomicU64::new(0),
            bytes: AtomicUsize::new(0),
            hits: AtomicU64::new(0),
            misses: AtomicU64::new(0),
        }
    }

    pub fn key(&self, ctx: &TenantContext, uid: &str) -> CacheKey {
        CacheKey {
            tenant: ctx.tenant.clone(),
            uid: uid.to_owned(),
        }
    }

    pub fn get(&self, key: &CacheKey) -> Option<Arc<T>> {
        let found = self
            .entries
            .get(key)
            .and_then(|e| (e.inserted.elapsed() < self.config.ttl).then(|| e.object.clone()));
        match &found {
            Some(_) => self.hits.fetch_add(1, Ordering::Relaxed),
            None => {
                let removed = self
                    .entries
                    .remove_if(key, |_, e| e.inserted.elapsed() >= self.config.ttl);
                self.forget(removed.map(|(_, e)| e));
                self.misses.fetch_add(1, Ordering::Relaxed)
            }
        };
        found
    }

    /// The current epoch; pass it to [`ObjectCache::insert`] with what was read after it.
    pub fn epoch(&self) -> u64 {
        self.epoch.load(Ordering::Acquire)
    }

    /// Caches an object read at `read_epoch`, unless something changed since.
    pub fn insert(&self, key: CacheKey, object: Arc<T>, read_epoch: u64) {
        if self.epoch() != read_epoch {
            return;
        }
        let weight = object.weight();
        if weight > self.config.max_bytes / 16 {
            return;
        }
        if !self.has_room(weight) {
            let ttl = self.config.ttl;
            self.entries.retain(|_, e| {
                let keep = e.inserted.elapsed() < ttl;
                if !keep {
                    self.bytes.fetch_sub(e.weight, Ordering::Relaxed);
                }
                keep
            });
            if !self.has_room(weight) {
                return;
            }
        }
        self.bytes.fetch_add(weight, Ordering::Relaxed);
        let replaced = self.entries.insert(
            key,
            Entry {
                object,
                inserted: Instant::now(),
                weight,
            },
        );
        self.forget(replaced);
    }

    fn has_room(&self, weight: usize) -> bool {
        self.entries.len() < self.config.capacity
            && self.bytes.load(Ordering::Relaxed) + weight <= self.config.max_bytes
    }

    /// Takes a removed entry's weight off the total.
    fn forget(&self, removed: Option<Entry<T>>) {
        if let Some(e) = removed {
            self.bytes.fetch_sub(e.weight, Ordering::Relaxed);
        }
    }

    pub fn invalidate(&self, key: &CacheKey) {
        self.epoch.fetch_add(1, Ordering::AcqRel);
        let removed = self.entries.remove(key);
        self.forget(removed.map(|(_, e)| e));
    }

    fn clear(&self) {
        self.epoch.fetch_add(1, Ordering::AcqRel);
        self.entries.retain(|_, e| {
            self.bytes.fetch_sub(e.weight, Ordering::Relaxed);
            false
        });
    }

    /// Bytes held, as weighed when cached.
    pub fn bytes(&self) -> usize {
        self.bytes.load(Ordering::Relaxed)
    }

    /// Drops entries as change notifications arrive (needs a tokio runtime; without one,
    /// only this process's own changes and the TTL keep the cache fresh).
    pub fn follow(self: &Arc<Self>, mut changes: broadcast::Receiver<StoreEvent>) {
        let Ok(runtime) = tokio::runtime::Handle::try_current() else {
            tracing::warn!("no runtime: cache does not follow change notifications");
            return;
        };
        let cache = Arc::downgrade(self);
        runtime.spawn(async move {
            loop {
                let event = changes.recv().await;
                let Some(cache) = cache.upgrade() else { return };
                match event {
                    Ok(StoreEvent::Changed(ObjectChanged { tenant, uid })) => {
                        cache.invalidate(&CacheKey { tenant, uid })
                    }
                    // Missed notifications (the change feed reconnected, or this receiver
                    // fell behind): anything may have changed.
                    Ok(StoreEvent::Missed) | Err(broadcast::error::RecvError::Lagged(_)) => {
                        tracing::warn!("change notifications were missed: key cache cleared");
                        cache.clear()
                    }
                    Err(broadcast::error::RecvError::Closed) => return,
                }
            }
        });
    }

    pub fn len(&self) -> usize {
        self.entries.len()
    }

    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    pub fn hits(&self) -> u64 {
        self.hits.load(Ordering::Relaxed)
    }

    pub fn misses(&self) -> u64 {
        self.misses.load(Ordering::Relaxed)
    }
}
